//! Supervision: a panicking job fails with `internal`, the worker thread is rebuilt and the
//! next request succeeds; a model that keeps crashing exhausts the restart budget, queued
//! jobs get `unavailable`, and the server exits non-zero.

mod server_common;

use std::time::Duration;

use serde_json::json;
use server_common::*;

const STEP: Duration = Duration::from_millis(2);

#[test]
fn panicking_job_then_success() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("boom", PANIC_PROMPT, 3, 1, 64));
    let r = c.collect_job("boom");
    let end = r.end.unwrap();
    assert_eq!(end["event"], json!("error"));
    assert_eq!(end["code"], json!("internal"));
    assert!(r.images.is_empty());
    c.send(&txt2img("fine", "a cat", 3, 1, 64));
    let r = c.collect_job("fine");
    assert_eq!(r.end_event(), "done");
    assert_eq!(r.images.len(), 1);
    // Twice more, to show every restart works.
    c.send(&txt2img("boom2", PANIC_PROMPT, 3, 1, 64));
    c.send(&txt2img("fine2", "a cat", 3, 1, 64));
    assert_eq!(
        c.collect_job("boom2").end.unwrap()["code"],
        json!("internal")
    );
    assert_eq!(c.collect_job("fine2").end_event(), "done");
    server.shutdown();
    assert_eq!(join_within(server, Duration::from_secs(10)), 0);
}

#[test]
fn restart_budget_exhausted_exits_non_zero() {
    let mut config = test_config();
    config.max_restarts = 1;
    let server = start_with(config, STEP);
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("p1", PANIC_PROMPT, 1, 1, 64));
    assert_eq!(c.collect_job("p1").end.unwrap()["code"], json!("internal"));
    // Second crash exceeds the budget of one restart; the job queued behind it is refused.
    c.send(&txt2img("p2", PANIC_PROMPT, 25, 1, 64));
    c.send(&txt2img("after", "a cat", 1, 1, 64));
    let p2 = c.collect_job("p2");
    assert_eq!(p2.end.unwrap()["code"], json!("internal"));
    assert!(
        p2.others
            .iter()
            .any(|m| m["event"] == json!("queued") && m["job_id"] == json!("after")),
        "the second job must be queued behind the crashing one"
    );
    let end = c.collect_job("after").end.unwrap();
    assert_eq!(end["event"], json!("error"));
    assert_eq!(end["code"], json!("unavailable"));
    let code = join_within(server, Duration::from_secs(15));
    assert_ne!(
        code, 0,
        "a model that always crashes must end the process non-zero"
    );
}
