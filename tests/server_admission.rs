//! Fair admission and bounds over loopback with the fake generator: a session at its
//! per-client share gets `busy` while another session is admitted and served; idle sessions
//! are closed with `closing` unless a job of theirs is pending; a batch whose seeds would
//! wrap past 2^64 - 1 is refused, one ending exactly there is served.

mod server_common;

use std::time::{Duration, Instant};

use serde_json::json;
use server_common::*;

#[test]
fn a_client_at_its_share_gets_busy_while_another_is_served() {
    let mut config = test_config();
    config.max_jobs_per_client = 3;
    let server = start_with(config, Duration::from_millis(20));
    let mut a = Client::connect(server.local_addr);
    a.send(&txt2img("a-run", "a", 100, 1, 64));
    a.recv_until(|m| m["action"] == json!(4));
    a.send(&txt2img("a-q1", "a", 1, 1, 64));
    a.send(&txt2img("a-q2", "a", 1, 1, 64));
    // The running job counts: a fourth job is over the share of three.
    a.send(&txt2img("a-over", "a", 1, 1, 64));
    let e = a.recv_until(|m| m["job_id"] == json!("a-over"));
    assert_eq!(e["event"], json!("error"), "{e}");
    assert_eq!(e["code"], json!("busy"), "{e}");
    let text = e["message"].as_str().unwrap();
    assert!(
        text.contains("per-client") && text.contains("max_jobs_per_client") && text.contains('3'),
        "{text}"
    );
    // The queue itself has room: another user is admitted, behind one of A's waiting jobs
    // (round-robin), and served.
    let mut b = Client::connect(server.local_addr);
    b.send(&txt2img("b1", "b", 2, 5, 64));
    let q = b.recv().unwrap();
    assert_eq!(q["event"], json!("queued"), "{q}");
    assert_eq!(q["position"], json!(2), "{q}");
    // Once A cancels, B runs at once and A's share is free again.
    a.send(&json!({"action": "cancel"}));
    assert_eq!(a.collect_cancelled(3), ["a-q1", "a-q2", "a-run"]);
    let r = b.collect_job("b1");
    assert_eq!(r.end_event(), "done", "{:?}", r.end);
    a.send(&txt2img("a-again", "a", 1, 2, 64));
    assert_eq!(a.collect_job("a-again").end_event(), "done");
    server.shutdown();
}

#[test]
fn idle_sessions_are_closed_but_not_while_their_job_runs() {
    let mut config = test_config();
    config.idle_timeout_secs = 0.4;
    let server = start_with(config, Duration::from_millis(50));
    // Connected, never sends anything: `closing`, then the connection ends.
    let mut quiet = Client::connect(server.local_addr);
    // A job of 20 x 50 ms outlasts the idle limit: the session waits silently for it.
    let mut busy = Client::connect(server.local_addr);
    busy.send(&txt2img("long", "x", 20, 1, 64));
    let t0 = Instant::now();
    let m = quiet.recv().expect("a closing message");
    assert_eq!(m["event"], json!("closing"), "{m}");
    assert!(m["reason"].as_str().unwrap().contains("idle"), "{m}");
    assert!(quiet.recv().is_none(), "the idle connection must close");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "closed early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "closed late: {waited:?}");
    let r = busy.collect_job("long");
    assert_eq!(r.end_event(), "done", "{:?}", r.end);
    assert!(r.others.is_empty(), "{:?}", r.others);
    // After its job, the session is idle again and closed in turn.
    let m = busy.recv().expect("a closing message after the job");
    assert_eq!(m["event"], json!("closing"), "{m}");
    assert!(busy.recv().is_none());
    // Any message counts as activity: a client pinging more often than the limit stays.
    let mut chatty = Client::connect(server.local_addr);
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(150));
        chatty.send(&json!({"action": "ping"}));
        assert_eq!(chatty.recv().unwrap()["event"], json!("pong"));
    }
    server.shutdown();
}

#[test]
fn idle_timeout_zero_keeps_sessions() {
    let mut config = test_config();
    config.idle_timeout_secs = 0.0;
    let server = start_with(config, Duration::from_millis(1));
    let mut c = Client::connect(server.local_addr);
    std::thread::sleep(Duration::from_millis(800));
    c.send(&json!({"action": "ping"}));
    assert_eq!(c.recv().unwrap()["event"], json!("pong"));
    server.shutdown();
}

#[test]
fn seeds_at_the_top_of_the_range_are_refused_not_wrapped() {
    let server = start(Duration::from_millis(1));
    let mut c = Client::connect(server.local_addr);
    let with_seed = |job: &str, seed: u64, n: u32| {
        let mut v = txt2img(job, "x", 1, 0, 64);
        v["options"]["txt2img_seed"] = json!(seed);
        v["options"]["txt2img_n_samples"] = json!(n.to_string());
        v
    };
    c.send(&with_seed("wrap", u64::MAX, 2));
    let r = c.collect_job("wrap");
    let e = r.end.unwrap();
    assert_eq!(e["code"], json!("invalid_field"), "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("txt2img_seed"),
        "{e}"
    );
    assert!(r.images.is_empty());
    c.send(&with_seed("edge", u64::MAX - 1, 2));
    let r = c.collect_job("edge");
    assert_eq!(r.end_event(), "done", "{:?}", r.end);
    let seeds: Vec<_> = r.images.iter().map(|m| m["seed"].clone()).collect();
    assert_eq!(seeds, [json!(u64::MAX - 1), json!(u64::MAX)]);
    server.shutdown();
}
