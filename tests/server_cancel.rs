//! Cancel: the `c` control packet and `{"action": "cancel"}` stop the running job within a
//! step and drop queued ones; a disconnecting client frees the worker.

mod server_common;

use std::time::{Duration, Instant};

use serde_json::json;
use server_common::*;

const STEP: Duration = Duration::from_millis(20);

#[test]
fn cancel_packet_stops_running_and_queued_jobs() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("long", "x", 140, 1, 64));
    c.send(&txt2img("waiting", "x", 5, 1, 64));
    c.recv_until(|m| m["action"] == json!(4));
    c.send_control(b'c');
    let t0 = Instant::now();
    let mut ended = Vec::new();
    let mut progress_after = 0;
    while ended.len() < 2 {
        let m = c.recv().unwrap();
        assert!(m.get("image").is_none(), "no image after cancel");
        if m["action"] == json!(4) {
            progress_after += 1;
        }
        if m["event"] == json!("cancelled") {
            ended.push(m["job_id"].as_str().unwrap().to_string());
        }
    }
    ended.sort();
    assert_eq!(ended, ["long", "waiting"]);
    // Stopped within a step or two, not after the remaining ~4 s.
    assert!(
        progress_after <= 3,
        "{progress_after} progress messages after cancel"
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
    c.send(&txt2img("after", "x", 2, 1, 64));
    assert_eq!(c.collect_job("after").end_event(), "done");
    server.shutdown();
}

#[test]
fn cancel_action_all_and_by_job_id() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("j1", "x", 140, 1, 64));
    c.send(&txt2img("j2", "x", 3, 2, 64));
    c.recv_until(|m| m["action"] == json!(4));
    // Only j1: j2 must still run to completion afterwards.
    c.send(&json!({"action": "cancel", "job_id": "j1"}));
    let m = c.recv_until(|m| m.get("event").is_some() && m["job_id"] == json!("j1"));
    assert_eq!(m["event"], json!("cancelled"));
    assert_eq!(c.collect_job("j2").end_event(), "done");
    c.send(&txt2img("j3", "x", 140, 1, 64));
    c.recv_until(|m| m["action"] == json!(4));
    c.send(&json!({"action": "cancel"}));
    assert_eq!(c.collect_job("j3").end_event(), "cancelled");
    server.shutdown();
}

#[test]
fn cancel_only_touches_own_session() {
    let server = start(STEP);
    let mut a = Client::connect(server.local_addr);
    let mut b = Client::connect(server.local_addr);
    a.send(&txt2img("a", "x", 10, 1, 64));
    a.recv_until(|m| m["action"] == json!(4));
    b.send_control(b'c');
    b.send(&json!({"action": "cancel"}));
    assert_eq!(a.collect_job("a").end_event(), "done");
    server.shutdown();
}

#[test]
fn disconnect_mid_job_frees_the_worker() {
    let server = start(STEP);
    let mut a = Client::connect(server.local_addr);
    // 140 steps x 20 ms = 2.8 s if nobody cancelled it.
    a.send(&txt2img("gone", "x", 140, 1, 64));
    a.recv_until(|m| m["action"] == json!(4));
    drop(a);
    let mut b = Client::connect(server.local_addr);
    let t0 = Instant::now();
    b.send(&txt2img("next", "x", 3, 1, 64));
    assert_eq!(b.collect_job("next").end_event(), "done");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "worker was not freed: {:?}",
        t0.elapsed()
    );
    server.shutdown();
}
