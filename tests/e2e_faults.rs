//! Faults on the real generator: a panic inside generation fails only its own job (`internal`)
//! and other users' queued jobs run, byte-exact, on the rebuilt worker; a client that
//! disconnects mid-job frees the worker within about one step; a graceful drain (the same one
//! SIGTERM starts) while three clients have jobs in flight answers every job and exits 0.

mod e2e_common;
mod server_common;

use std::net::Shutdown;
use std::time::{Duration, Instant};

use e2e_common::*;
use runai::config::Config;
use serde_json::json;
use server_common::{join_within, test_config, Client};

#[test]
fn panic_fails_only_its_job_and_queued_jobs_run_after_the_rebuild() {
    let server = start_real_with(
        test_config(),
        panicky_factory(),
        &[fixtures().join("models")],
    );
    let addr = server.local_addr;
    let mut b = Client::connect(addr);
    b.send(&txt2img("ref", "tiny-sd1", 3, 7, 64, 64));
    let reference = b.collect_job("ref");
    assert_done(&reference, 1, 3);

    let mut a = Client::connect(addr);
    let mut c = Client::connect(addr);
    let mut boom = txt2img("boom", "tiny-sd1", 40, 1, 64, 64);
    boom["options"]["txt2img_prompt"] = json!(PANIC_PROMPT);
    a.send(&boom);
    a.recv_until(|m| m["action"] == json!(4));
    // Queued behind the job that is about to crash.
    b.send(&txt2img("b1", "tiny-sd1", 3, 7, 64, 64));
    c.send(&txt2img("c1", "tiny-sd1", 3, 7, 64, 64));
    c.send(&txt2img("c2", "tiny-sd1", 3, 8, 64, 64));

    let r = a.collect_job("boom");
    let end = r.end.as_ref().unwrap();
    assert_eq!(end["event"], json!("error"), "{end}");
    assert_eq!(end["code"], json!("internal"), "{end}");
    assert!(r.images.is_empty());
    // It crashed after its last step's progress went out (step 0 was read above).
    assert_eq!(r.progress.first(), Some(&(1, 40)));
    assert_eq!(r.progress.last(), Some(&(39, 40)));

    let b1 = b.collect_job("b1");
    let c1 = c.collect_job("c1");
    let c2 = c.collect_job("c2");
    assert!(
        !b1.queued.is_empty() && !c1.queued.is_empty(),
        "b1 and c1 must have waited behind the crashing job"
    );
    for r in [&b1, &c1, &c2] {
        assert_done(r, 1, 3);
    }
    assert_eq!(image_b64(&b1, 0), image_b64(&reference, 0));
    assert_eq!(image_b64(&c1, 0), image_b64(&reference, 0));
    assert_ne!(image_b64(&c2, 0), image_b64(&reference, 0));
    // The crashing client's session survives too.
    a.send(&txt2img("a2", "tiny-sd1", 3, 7, 64, 64));
    assert_eq!(image_b64(&a.collect_job("a2"), 0), image_b64(&reference, 0));
    server.shutdown();
    assert_eq!(join_within(server, Duration::from_secs(20)), 0);
}

#[test]
fn disconnect_mid_job_frees_the_worker_within_a_step() {
    // One job at a time, so the next job waits behind the abandoned one (with continuous
    // batching it would join at once: tests/server_batching.rs covers that mode).
    let config = Config {
        max_batch: 1,
        ..test_config()
    };
    let server = start_real_with(config, real_factory(), &[fixtures().join("models")]);
    let addr = server.local_addr;
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    const STEPS: u64 = 60;
    a.send(&txt2img("long", "tiny-sd1", STEPS as u32, 1, 128, 128));
    // Time a few steps to know what "one step" is on this machine.
    a.recv_until(|m| m["action"] == json!(4) && m["step"] == json!(1));
    let t_steps = Instant::now();
    a.recv_until(|m| m["action"] == json!(4) && m["step"] == json!(4));
    let step = t_steps.elapsed() / 3;
    b.send(&txt2img("next", "tiny-sd1", 2, 1, 64, 64));
    let queued = b.recv().unwrap();
    assert_eq!(queued["event"], json!("queued"), "{queued}");
    let at_drop = Instant::now();
    a.stream.shutdown(Shutdown::Both).unwrap();
    drop(a);
    let first = b.recv().unwrap();
    let freed_after = at_drop.elapsed();
    assert_eq!(first["action"], json!(4), "{first}");
    assert_eq!(first["job_id"], json!("next"));
    let r = b.collect_job("next");
    assert_eq!(r.end_event(), "done");
    // The abandoned job had ~55 steps left; the worker moved on after the step in flight
    // (plus the new job's own first step).
    let remaining = step * (STEPS as u32 - 5);
    println!(
        "disconnect: one step {step:?}; worker freed and next job's first step done {freed_after:?} after the drop (abandoned job had ~{remaining:?} left)"
    );
    assert!(
        freed_after < step * 3 + Duration::from_millis(500),
        "worker freed only after {freed_after:?} (one step is {step:?})"
    );
    assert!(freed_after < remaining / 2);
    server.shutdown();
}

/// Each client's job ends in images + `done`, or `unavailable`/`cancelled`; then `closing`
/// and EOF. Returns the job's terminal event.
fn drained_job_end(c: &mut Client, job: &str) -> String {
    let r = c.collect_job(job);
    let end = r.end.clone().unwrap();
    let event = match end["event"].as_str().unwrap() {
        "done" => {
            assert_eq!(r.images.len(), 1);
            "done".to_string()
        }
        "cancelled" => "cancelled".to_string(),
        "error" => {
            assert_eq!(end["code"], json!("unavailable"), "{end}");
            assert!(r.images.is_empty());
            "unavailable".to_string()
        }
        other => panic!("unexpected end {other}: {end}"),
    };
    let last = c.recv().expect("closing message");
    assert_eq!(last["event"], json!("closing"), "{last}");
    assert!(c.recv().is_none(), "connection must close after closing");
    event
}

#[test]
fn drain_with_three_jobs_in_flight_answers_everyone_and_exits_zero() {
    for (grace, running_end) in [(30.0, "done"), (0.2, "unavailable")] {
        let mut config = test_config();
        config.drain_grace_secs = grace;
        // One job at a time, so two jobs wait in the queue when the drain starts.
        config.max_batch = 1;
        let server = start_real_with(config, real_factory(), &[fixtures().join("models")]);
        let addr = server.local_addr;
        let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
        // The first job runs long enough to be in flight when the drain starts; the other
        // two wait behind it.
        clients[0].send(&txt2img("j0", "tiny-sd1", 40, 0, 64, 64));
        clients[0].recv_until(|m| m["action"] == json!(4));
        for (i, c) in clients.iter_mut().enumerate().skip(1) {
            c.send(&txt2img(&format!("j{i}"), "tiny-sd1", 3, i as u64, 64, 64));
            let q = c.recv().unwrap();
            assert_eq!(q["event"], json!("queued"), "{q}");
        }
        let t0 = Instant::now();
        server.shutdown();
        let ends: Vec<String> = clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| drained_job_end(c, &format!("j{i}")))
            .collect();
        let code = join_within(server, Duration::from_secs(40));
        println!(
            "drain (grace {grace} s): job ends {ends:?}, exit {code} after {:?}",
            t0.elapsed()
        );
        assert_eq!(code, 0);
        assert_eq!(ends[0], running_end, "grace {grace}");
        // Queued jobs never start once the drain began.
        assert_eq!(ends[1], "unavailable");
        assert_eq!(ends[2], "unavailable");
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
