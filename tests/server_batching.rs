//! Continuous batching through the whole server (stepping fake generator, real worker,
//! real sockets on 127.0.0.1): jobs of several clients share steps and each still gets its
//! own images and its own progress; a job joins a running batch at a step boundary; cancel
//! removes one member; a panic in one job's scheduler fails that job only; a batch past
//! `--max-batch-mb` is not formed; a disconnect or a drain stops members at a step boundary;
//! `--max-batch 1` runs whole jobs.

mod server_common;

use std::sync::Arc;
use std::time::Duration;

use runai::app::spawn_server;
use runai::config::Config;
use runai::registry::Registry;
use serde_json::json;
use server_common::stepping::{stepping_factory, StepLog, SCHEDULER_PANIC_PROMPT};
use server_common::{
    decode_png, join_within, seed_colour, test_config, txt2img, Client, JobReplies,
};

const STEP: Duration = Duration::from_millis(30);

fn start(config: Config, log: &Arc<StepLog>) -> runai::app::ServerThread {
    let roots = config.model_roots();
    spawn_server(
        config,
        stepping_factory(STEP, log.clone()),
        Box::new(Registry::new(&roots)),
    )
    .expect("server starts")
}

fn assert_finished(r: &JobReplies, seed: u64, steps: u64) {
    assert_eq!(r.end_event(), "done", "{:?}", r.end);
    let expected: Vec<(u64, u64)> = (0..steps).map(|s| (s, steps)).collect();
    assert_eq!(
        r.progress, expected,
        "its own progress, every step in order"
    );
    assert_eq!(r.images.len(), 1);
    assert_eq!(decode_png(&r.images[0]).get_pixel(0, 0), &seed_colour(seed));
}

#[test]
fn four_clients_share_steps_and_each_gets_its_own_images_and_progress() {
    let log = Arc::new(StepLog::default());
    let server = start(test_config(), &log);
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(server.local_addr)).collect();
    // Other step counts per client; every client sends two jobs at once.
    for (i, c) in clients.iter_mut().enumerate() {
        for j in 0..2u64 {
            let seed = 100 * i as u64 + j;
            c.send(&txt2img(
                &format!("c{i}j{j}"),
                "fox",
                6 + i as u32,
                seed,
                64,
            ));
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        // A client's two jobs run side by side: sort its messages by job.
        let first = c.collect_job(&format!("c{i}j0"));
        let mut second = JobReplies::default();
        for m in first
            .others
            .iter()
            .filter(|m| m["job_id"] == json!(format!("c{i}j1")))
        {
            if m["action"] == json!(4) {
                let step = (m["step"].as_u64().unwrap(), m["total"].as_u64().unwrap());
                second.progress.push(step);
            } else if m.get("image").is_some() {
                second.images.push(m.clone());
            }
        }
        let rest = c.collect_job(&format!("c{i}j1"));
        second.progress.extend(rest.progress);
        second.images.extend(rest.images);
        second.end = rest.end;
        assert_finished(&first, 100 * i as u64, 6 + i as u64);
        assert_finished(&second, 100 * i as u64 + 1, 6 + i as u64);
    }
    let largest = log.largest_batch();
    assert!(largest > 1, "jobs shared steps (largest batch {largest})");
    assert!(largest <= 4, "never more than --max-batch (4): {largest}");
    // Sharing saved steps: fewer model calls than the jobs' steps added up.
    let all_steps: usize = (0..4).map(|i| 2 * (6 + i)).sum();
    assert!(log.count() < all_steps, "{} calls", log.count());
}

#[test]
fn a_job_joins_a_running_batch_at_a_step_boundary() {
    let log = Arc::new(StepLog::default());
    let server = start(test_config(), &log);
    let mut a = Client::connect(server.local_addr);
    let mut b = Client::connect(server.local_addr);
    a.send(&txt2img("long", "fox", 30, 1, 64));
    // Wait until the long job is a few steps in, then B's job arrives.
    a.recv_until(|m| m["action"] == json!(4) && m["step"] == json!(3));
    b.send(&txt2img("late", "fox", 5, 2, 64));
    let late = b.collect_job("late");
    assert_finished(&late, 2, 5);
    let long = a.collect_job("long");
    assert_eq!(long.end_event(), "done");
    assert!(
        log.shared(1, 2),
        "the late job shared the running job's steps"
    );
}

#[test]
fn cancel_removes_one_member_and_the_others_finish() {
    let log = Arc::new(StepLog::default());
    let server = start(test_config(), &log);
    let mut a = Client::connect(server.local_addr);
    let mut b = Client::connect(server.local_addr);
    a.send(&txt2img("gone", "fox", 40, 1, 64));
    b.send(&txt2img("stays", "fox", 12, 2, 64));
    a.recv_until(|m| m["action"] == json!(4) && m["step"] == json!(2));
    a.send(&json!({"action": "cancel", "job_id": "gone"}));
    let gone = a.collect_job("gone");
    assert_eq!(gone.end_event(), "cancelled");
    assert!(gone.progress.len() < 40);
    let stays = b.collect_job("stays");
    assert_finished(&stays, 2, 12);
    assert!(log.shared(1, 2));
}

#[test]
fn a_panic_in_one_jobs_scheduler_fails_only_that_job() {
    let log = Arc::new(StepLog::default());
    let server = start(test_config(), &log);
    let mut a = Client::connect(server.local_addr);
    let mut b = Client::connect(server.local_addr);
    a.send(&txt2img("boom", SCHEDULER_PANIC_PROMPT, 8, 1, 64));
    b.send(&txt2img("fine", "fox", 8, 2, 64));
    let boom = a.collect_job("boom");
    assert_eq!(boom.end_event(), "error", "{:?}", boom.end);
    let end = boom.end.unwrap();
    assert_eq!(end["code"], json!("internal"), "{end}");
    let fine = b.collect_job("fine");
    assert_finished(&fine, 2, 8);
    assert!(log.shared(1, 2), "the two jobs were in one batch");
    // The worker was not restarted: the same generator keeps serving.
    let before = log.count();
    a.send(&txt2img("after", "fox", 3, 3, 64));
    assert_finished(&a.collect_job("after"), 3, 3);
    assert_eq!(log.count(), before + 3);
}

#[test]
fn a_batch_past_max_batch_mb_is_not_formed() {
    // Each 64x64 job is estimated at 1 MiB: with a 1 MiB bound no two share a step.
    let log = Arc::new(StepLog::default());
    let config = Config {
        max_batch_mb: 1,
        ..test_config()
    };
    let server = start(config, &log);
    let mut a = Client::connect(server.local_addr);
    let mut b = Client::connect(server.local_addr);
    a.send(&txt2img("a", "fox", 5, 1, 64));
    b.send(&txt2img("b", "fox", 5, 2, 64));
    assert_finished(&a.collect_job("a"), 1, 5);
    assert_finished(&b.collect_job("b"), 2, 5);
    assert_eq!(log.largest_batch(), 1);
    assert_eq!(log.count(), 10);
    // A 2 MiB bound lets the same pair share.
    let log2 = Arc::new(StepLog::default());
    let config = Config {
        max_batch_mb: 2,
        ..test_config()
    };
    let server2 = start(config, &log2);
    let mut a = Client::connect(server2.local_addr);
    let mut b = Client::connect(server2.local_addr);
    a.send(&txt2img("a", "fox", 8, 1, 64));
    b.send(&txt2img("b", "fox", 8, 2, 64));
    assert_finished(&a.collect_job("a"), 1, 8);
    assert_finished(&b.collect_job("b"), 2, 8);
    assert_eq!(log2.largest_batch(), 2);
}

#[test]
fn jobs_of_other_sizes_do_not_share_a_step() {
    let log = Arc::new(StepLog::default());
    let server = start(test_config(), &log);
    let mut a = Client::connect(server.local_addr);
    let mut b = Client::connect(server.local_addr);
    a.send(&txt2img("small", "fox", 6, 1, 64));
    b.send(&txt2img("big", "fox", 6, 2, 128));
    assert_eq!(a.collect_job("small").end_event(), "done");
    assert_eq!(b.collect_job("big").end_event(), "done");
    assert!(!log.shared(1, 2));
}

#[test]
fn max_batch_one_runs_whole_jobs() {
    let log = Arc::new(StepLog::default());
    let config = Config {
        max_batch: 1,
        ..test_config()
    };
    let server = start(config, &log);
    let mut a = Client::connect(server.local_addr);
    let mut b = Client::connect(server.local_addr);
    // The first runs long enough (30 steps) for the other to arrive meanwhile, even on a
    // loaded machine.
    a.send(&txt2img("a", "fox", 30, 1, 64));
    b.send(&txt2img("b", "fox", 4, 2, 64));
    let ra = a.collect_job("a");
    assert_finished(&ra, 1, 30);
    let rb = b.collect_job("b");
    assert_finished(&rb, 2, 4);
    // One of the two (whichever the worker got second) waited in the queue behind the other
    // (one job at a time), and the step form was never used.
    assert_eq!(
        ra.queued.len() + rb.queued.len(),
        1,
        "{:?} / {:?}",
        ra.queued,
        rb.queued
    );
    assert_eq!(log.count(), 0);
}

#[test]
fn a_client_that_disconnects_leaves_the_batch_and_the_others_finish() {
    let log = Arc::new(StepLog::default());
    let server = start(test_config(), &log);
    let mut a = Client::connect(server.local_addr);
    let mut b = Client::connect(server.local_addr);
    a.send(&txt2img("abandoned", "fox", 60, 1, 64));
    b.send(&txt2img("kept", "fox", 15, 2, 64));
    a.recv_until(|m| m["action"] == json!(4) && m["step"] == json!(2));
    a.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(a);
    assert_finished(&b.collect_job("kept"), 2, 15);
    assert!(log.shared(1, 2));
    // The abandoned job left at a step boundary soon after its session went away.
    let with_a = log
        .steps
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.contains(&1))
        .count();
    assert!(
        with_a < 30,
        "the abandoned job ran {with_a} of its 60 steps"
    );
}

#[test]
fn a_drain_stops_every_member_after_its_grace_and_the_server_exits_zero() {
    let log = Arc::new(StepLog::default());
    let config = Config {
        drain_grace_secs: 0.2,
        ..test_config()
    };
    let server = start(config, &log);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(server.local_addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&txt2img(&format!("j{i}"), "fox", 150, i as u64, 64));
    }
    for c in clients.iter_mut() {
        c.recv_until(|m| m["action"] == json!(4) && m["step"] == json!(1));
    }
    server.shutdown();
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.collect_job(&format!("j{i}"));
        let end = r.end.unwrap();
        assert_eq!(end["code"], json!("unavailable"), "{end}");
        assert!(r.progress.len() < 150);
    }
    assert_eq!(join_within(server, Duration::from_secs(20)), 0);
    assert!(log.largest_batch() >= 2, "the jobs ran as one batch");
}
