//! SIGTERM drain with a real signal: stop accepting, let the running job finish, send every
//! client its final message, exit 0. Alone in its file because the signal goes to the whole
//! test process.

mod server_common;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use server_common::*;

#[cfg(unix)]
#[test]
fn sigterm_drains_and_exits_zero() {
    let server = start(Duration::from_millis(20));
    server.handle_signals();
    let addr = server.local_addr;
    let mut c = Client::connect(addr);
    c.send(&txt2img("run", "x", 15, 7, 64));
    c.recv_until(|m| m["action"] == json!(4));
    // Give the handler task a moment to be installed before signalling.
    std::thread::sleep(Duration::from_millis(100));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let r = c.collect_job("run");
    assert_eq!(r.end_event(), "done", "the running job finishes");
    assert_eq!(r.images.len(), 1);
    let last = c.recv().unwrap();
    assert_eq!(last["event"], json!("closing"));
    assert!(last["reason"].as_str().unwrap().contains("SIGTERM"));
    assert!(c.recv().is_none());
    assert_eq!(join_within(server, Duration::from_secs(10)), 0);
    // No longer accepting.
    assert!(TcpStream::connect(addr).is_err());
}
