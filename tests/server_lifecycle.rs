//! Lifecycle: `--timeout` idle exits, no exit without it, the quit packet, a graceful drain
//! (running job finishes, every client gets its final message, exit 0), the drain grace
//! period, and a client that stops reading being dropped.

mod server_common;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;
use server_common::*;

const STEP: Duration = Duration::from_millis(5);

fn timeout_config(grace: f64, idle: f64) -> runai::config::Config {
    let mut c = test_config();
    c.timeout = true;
    c.startup_grace_secs = grace;
    c.idle_secs = idle;
    c
}

#[test]
fn timeout_exits_when_nobody_connects() {
    let t0 = Instant::now();
    let server = start_with(timeout_config(0.3, 0.3), STEP);
    assert_eq!(join_within(server, Duration::from_secs(5)), 0);
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

#[test]
fn timeout_exits_after_last_client_leaves() {
    let server = start_with(timeout_config(0.2, 0.3), STEP);
    let mut c = Client::connect(server.local_addr);
    // Connected clients keep it alive well past the start-up grace.
    std::thread::sleep(Duration::from_millis(700));
    assert!(!server.is_finished());
    c.send(&txt2img("t", "x", 2, 1, 64));
    assert_eq!(c.collect_job("t").end_event(), "done");
    drop(c);
    assert_eq!(join_within(server, Duration::from_secs(5)), 0);
}

#[test]
fn without_timeout_it_keeps_running() {
    let mut config = test_config();
    config.startup_grace_secs = 0.1;
    config.idle_secs = 0.1;
    let server = start_with(config, STEP);
    std::thread::sleep(Duration::from_millis(600));
    assert!(!server.is_finished());
    let c = Client::connect(server.local_addr);
    drop(c);
    std::thread::sleep(Duration::from_millis(400));
    assert!(!server.is_finished());
    server.shutdown();
    assert_eq!(join_within(server, Duration::from_secs(5)), 0);
}

#[test]
fn quit_packet_from_loopback_shuts_down() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    c.send_control(b'x');
    let m = c.recv().unwrap();
    assert_eq!(m["event"], json!("closing"));
    assert!(c.recv().is_none());
    assert_eq!(join_within(server, Duration::from_secs(5)), 0);
}

#[test]
fn drain_lets_the_running_job_finish_and_says_goodbye() {
    let server = start(Duration::from_millis(20));
    let mut c = Client::connect(server.local_addr);
    let mut idle = Client::connect(server.local_addr);
    c.send(&txt2img("run", "x", 40, 1, 64));
    c.send(&txt2img("queued", "x", 5, 1, 64));
    c.recv_until(|m| m["action"] == json!(4));
    server.shutdown();
    // New connections are refused while the running job is still finishing.
    let t0 = Instant::now();
    while std::net::TcpStream::connect(server.local_addr).is_ok() {
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "still accepting during drain"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut run = None;
    let mut queued = None;
    let mut images = 0;
    loop {
        let m = c.recv().expect("closing message before EOF");
        if m.get("image").is_some() {
            images += 1;
        }
        if m["event"] == json!("closing") {
            break;
        }
        if m["job_id"] == json!("run") && m.get("event").is_some() {
            run = Some(m.clone());
        }
        if m["job_id"] == json!("queued")
            && m.get("event").is_some()
            && m["event"] != json!("queued")
        {
            queued = Some(m.clone());
        }
    }
    assert_eq!(run.unwrap()["event"], json!("done"));
    assert_eq!(images, 1);
    let q = queued.unwrap();
    assert_eq!(q["event"], json!("error"));
    assert_eq!(q["code"], json!("unavailable"));
    assert!(c.recv().is_none());
    assert_eq!(idle.recv().unwrap()["event"], json!("closing"));
    assert_eq!(join_within(server, Duration::from_secs(10)), 0);
}

#[test]
fn drain_grace_cancels_a_long_job() {
    let mut config = test_config();
    config.drain_grace_secs = 0.2;
    let server = start_with(config, Duration::from_millis(20));
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("long", "x", 140, 1, 64));
    c.recv_until(|m| m["action"] == json!(4));
    let t0 = Instant::now();
    server.shutdown();
    let r = c.collect_job("long");
    let end = r.end.unwrap();
    assert_eq!(end["event"], json!("error"));
    assert_eq!(end["code"], json!("unavailable"));
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(join_within(server, Duration::from_secs(10)), 0);
}

#[test]
fn client_that_stops_reading_is_dropped() {
    let mut config = test_config();
    config.write_timeout_secs = 0.5;
    config.max_outgoing_bytes = 64 * 1024;
    let server = start_with(config, STEP);
    let mut c = Client::connect(server.local_addr);
    c.stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    // Ask for many replies and never read them.
    let ping = {
        let mut p = br#"{"action": "ping"}"#.to_vec();
        p.resize(1024, 0);
        p.extend_from_slice(&[0u8; 1024]);
        p
    };
    let t0 = Instant::now();
    let mut dropped = false;
    while t0.elapsed() < Duration::from_secs(15) {
        if let Err(e) = c.stream.write_all(&ping) {
            // A timeout would only mean the server stopped reading; we want a closed socket.
            assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "server stalled instead of dropping the client: {e}"
            );
            dropped = true;
            break;
        }
    }
    assert!(dropped, "server kept a client that never reads");
    // The server is fine.
    let mut d = Client::connect(server.local_addr);
    d.send(&json!({"action": "ping"}));
    assert_eq!(d.recv().unwrap()["event"], json!("pong"));
    server.shutdown();
}
