//! The real `runai` binary as the plugin runs it, on the fixture models: it serves real PNGs
//! over loopback, and SIGTERM while three clients have jobs in flight answers every job
//! (images, or `unavailable` for the queued ones), says `closing`, and the process exits 0.

mod e2e_common;
mod server_common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use e2e_common::*;
use serde_json::json;
use server_common::{decode_png, Client};

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("runai did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn binary_serves_real_images_and_sigterm_drains_three_clients() {
    // One job at a time, so two jobs are queued when SIGTERM comes (with continuous
    // batching they would run beside the first one).
    let (mut child, addr) = spawn_runai_with(&fixtures().join("models"), &["--max-batch", "1"]);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
    // A first job proves the binary serves the real model with the default model.
    clients[0].send(&txt2img("warm", "", 2, 1, 64, 64));
    let warm = clients[0].collect_job("warm");
    assert_done(&warm, 1, 2);
    assert_eq!(decode_png(&warm.images[0]).dimensions(), (64, 64));

    clients[0].send(&txt2img("j0", "", 60, 0, 64, 64));
    clients[0].recv_until(|m| m["action"] == json!(4));
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        c.send(&txt2img(&format!("j{i}"), "", 3, i as u64, 64, 64));
        let q = c.recv().unwrap();
        assert_eq!(q["event"], json!("queued"), "{q}");
    }
    let t0 = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.collect_job(&format!("j{i}"));
        let end = r.end.clone().unwrap();
        if i == 0 {
            // The running job finishes within the default drain grace.
            assert_eq!(end["event"], json!("done"), "{end}");
            assert_eq!(r.images.len(), 1);
        } else {
            assert_eq!(end["event"], json!("error"), "{end}");
            assert_eq!(end["code"], json!("unavailable"), "{end}");
        }
        let closing = c.recv().expect("closing");
        assert_eq!(closing["event"], json!("closing"), "{closing}");
        assert!(closing["reason"].as_str().unwrap().contains("SIGTERM"));
        assert!(c.recv().is_none());
    }
    let status = wait_exit(&mut child, Duration::from_secs(40));
    println!(
        "SIGTERM drain of the binary: exit {status} after {:?}",
        t0.elapsed()
    );
    assert_eq!(status.code(), Some(0));
}
