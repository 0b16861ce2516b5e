//! Load on the real generator: 32 concurrent plugin-style clients with 3 requests each, every
//! answer checked byte for byte against a solo run with the same seed, none lost, sessions
//! back to 0 and resident memory bounded afterwards; meanwhile 100 connection attempts beyond
//! `max_client_connections` are refused quickly. Prints the numbers for the record.

mod e2e_common;
mod server_common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use e2e_common::*;
use serde_json::json;
use server_common::{test_config, Client};

const CLIENTS: usize = 32;
const REQUESTS: usize = 3;
const REFUSALS: usize = 100;
const STEPS: u32 = 2;
const SIZE: u32 = 64;
const SEEDS: [u64; 4] = [100, 101, 102, 103];

/// Resident set size of this process (server included: it runs in-process), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, limit: Duration, mut pred: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !pred() {
        assert!(t0.elapsed() < limit, "{what} not reached within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn thirty_two_clients_three_requests_each_and_refusals_beyond_the_limit() {
    let mut config = test_config();
    config.max_client_connections = CLIENTS;
    let server = start_real_with(config, real_factory(), &[fixtures().join("models")]);
    let addr = server.local_addr;

    // Solo reference runs (also loads the model, so RSS is measured warm).
    let mut reference = HashMap::new();
    let mut solo = Client::connect(addr);
    let mut solo_latency = Duration::ZERO;
    for seed in SEEDS {
        let job = format!("ref{seed}");
        let t0 = Instant::now();
        solo.send(&txt2img(&job, "tiny-sd1", STEPS, seed, SIZE, SIZE));
        let r = solo.collect_job(&job);
        solo_latency = t0.elapsed();
        assert_done(&r, 1, STEPS as u64);
        reference.insert(seed, image_b64(&r, 0));
    }
    drop(solo);
    wait_for(
        "no sessions after the reference runs",
        Duration::from_secs(5),
        || server.open_sessions() == 0,
    );
    let reference = Arc::new(reference);
    let rss_before = rss_kib();

    // Everyone connected -> start; everyone done and refusals done -> disconnect, so the
    // limit stays full while the refusals run.
    let start = Arc::new(Barrier::new(CLIENTS + 2));
    let finish = Arc::new(Barrier::new(CLIENTS + 1));
    let t_load = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (start, finish, reference) = (start.clone(), finish.clone(), reference.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                start.wait();
                let mut latencies = Vec::new();
                for k in 0..REQUESTS {
                    let seed = SEEDS[(i * REQUESTS + k) % SEEDS.len()];
                    let job = format!("c{i}-{k}");
                    let t0 = Instant::now();
                    c.send(&txt2img(&job, "tiny-sd1", STEPS, seed, SIZE, SIZE));
                    let r = c.collect_job(&job);
                    latencies.push(t0.elapsed());
                    assert_done(&r, 1, STEPS as u64);
                    assert_eq!(r.images[0]["seed"], json!(seed));
                    assert!(
                        image_b64(&r, 0) == reference[&seed],
                        "{job}: image differs from the solo run with seed {seed}"
                    );
                    // Isolation: nothing about other sessions' jobs.
                    for m in &r.others {
                        assert!(m.get("job_id").is_none(), "{job} got {m}");
                    }
                }
                finish.wait();
                latencies
            })
        })
        .collect();

    let refuser = {
        let start = start.clone();
        std::thread::spawn(move || {
            start.wait();
            let mut times = Vec::new();
            for _ in 0..REFUSALS {
                let t0 = Instant::now();
                let mut c = Client::connect_raw(addr);
                let m = c.recv().expect("a reply to the refused connection");
                assert_eq!(m["event"], json!("error"), "{m}");
                assert_eq!(m["code"], json!("busy"), "{m}");
                assert!(c.recv().is_none(), "a refused connection must be closed");
                times.push(t0.elapsed());
            }
            times
        })
    };

    start.wait();
    wait_for("all clients admitted", Duration::from_secs(5), || {
        server.open_sessions() == CLIENTS
    });
    let mut refusals = refuser.join().expect("refusal thread");
    let refusal_total: Duration = refusals.iter().sum();
    // Every client still has to finish while the limit was full the whole time.
    finish.wait();
    let mut latencies: Vec<Duration> = Vec::new();
    for c in clients {
        latencies.extend(c.join().expect("client thread"));
    }
    let elapsed = t_load.elapsed();
    assert_eq!(latencies.len(), CLIENTS * REQUESTS, "answers lost");

    wait_for("sessions back to 0", Duration::from_secs(5), || {
        server.open_sessions() == 0
    });
    let mut probe = Client::connect(addr);
    probe.send(&json!({"action": "ping"}));
    let pong = probe.recv().unwrap();
    assert_eq!(pong["queue"], json!(0), "{pong}");
    drop(probe);
    let rss_after = rss_kib();

    latencies.sort();
    refusals.sort();
    let jobs = latencies.len();
    println!(
        "load: {CLIENTS} clients x {REQUESTS} requests, tiny-sd1 {SIZE}x{SIZE} {STEPS} steps, device {}",
        pong["device"]
    );
    println!(
        "load: {jobs} jobs in {:.2} s ({:.1} jobs/s); solo latency {:?}",
        elapsed.as_secs_f64(),
        jobs as f64 / elapsed.as_secs_f64(),
        solo_latency
    );
    println!(
        "load: per-request latency min {:?} p50 {:?} p95 {:?} max {:?}",
        latencies[0],
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies[jobs - 1]
    );
    println!(
        "load: {REFUSALS} refusals beyond the limit: total {:?}, p50 {:?}, max {:?}",
        refusal_total,
        percentile(&refusals, 0.5),
        refusals[REFUSALS - 1]
    );
    println!(
        "load: VmRSS before {} MiB, after {} MiB (delta {} KiB)",
        rss_before / 1024,
        rss_after / 1024,
        rss_after as i64 - rss_before as i64
    );
    // A refusal must not wait behind generation: well under one job's latency budget.
    assert!(
        refusals[REFUSALS - 1] < Duration::from_secs(1),
        "a refusal took {:?}",
        refusals[REFUSALS - 1]
    );
    // 96 jobs of a few MiB of images and buffers each must not pile up.
    assert!(
        rss_after < rss_before + 256 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    server.shutdown();
}
