//! Many users at once: isolation of replies, round-robin fairness across sessions, the
//! bounded queue's `busy`, `queued` positions and the connection limit.

mod server_common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use server_common::*;

#[test]
fn concurrent_clients_receive_only_their_own_images() {
    let server = start(Duration::from_millis(3));
    let addr = server.local_addr;
    let handles: Vec<_> = (0..7u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let seed = 1000 + i * 37;
                let job = format!("client-{i}");
                c.send(&txt2img(&job, &format!("prompt {i}"), 4, seed, 64));
                let r = c.collect_job(&job);
                assert!(
                    r.others.is_empty(),
                    "client {i} got foreign messages: {:?}",
                    r.others
                );
                assert_eq!(r.end_event(), "done");
                assert_eq!(r.progress.len(), 4);
                assert_eq!(r.images.len(), 1);
                assert_eq!(r.images[0]["seed"], json!(seed));
                assert_eq!(*decode_png(&r.images[0]).get_pixel(5, 5), seed_colour(seed));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    server.shutdown();
}

#[test]
fn round_robin_fairness_late_user_is_not_starved() {
    // A holds six jobs at once here, above the default per-client share.
    let mut config = test_config();
    config.max_jobs_per_client = 6;
    let server = start_with(config, Duration::from_millis(15));
    let addr = server.local_addr;
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let mut a = Client::connect(addr);
    for j in 1..=6 {
        a.send(&txt2img(&format!("A{j}"), "a", 6, j, 64));
    }
    // Jobs 2..6 wait; make sure they are all queued before B arrives.
    let mut positions = Vec::new();
    while positions.len() < 5 {
        let m = a.recv().unwrap();
        if m["event"] == json!("queued") {
            positions.push(m["position"].as_u64().unwrap());
        }
    }
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    let tx_a = tx.clone();
    let reader_a = std::thread::spawn(move || {
        let mut seen = 0;
        while seen < 6 {
            let m = a.recv().unwrap();
            if m["event"] == json!("done") {
                tx_a.send((m["job_id"].as_str().unwrap().to_string(), Instant::now()))
                    .unwrap();
                seen += 1;
            }
        }
    });
    let mut b = Client::connect(addr);
    b.send(&txt2img("B1", "b", 6, 99, 64));
    let r = b.collect_job("B1");
    // B waits behind A's running job and one more of A's at most.
    assert_eq!(r.queued[0]["position"], json!(2));
    assert_eq!(r.end_event(), "done");
    tx.send(("B1".into(), Instant::now())).unwrap();
    reader_a.join().unwrap();
    drop(tx);
    let mut order: Vec<(String, Instant)> = rx.iter().collect();
    order.sort_by_key(|(_, t)| *t);
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(
        pos("B1") < pos("A3"),
        "B must finish before A's third job: {names:?}"
    );
    server.shutdown();
}

#[test]
fn full_queue_answers_busy() {
    let mut config = test_config();
    config.queue_depth = 2;
    let server = start_with(config, Duration::from_millis(20));
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("run", "x", 50, 1, 64));
    c.recv_until(|m| m["action"] == json!(4));
    c.send(&txt2img("q1", "x", 1, 1, 64));
    c.send(&txt2img("q2", "x", 1, 1, 64));
    c.send(&txt2img("over", "x", 1, 1, 64));
    let e = c.recv_until(|m| m["job_id"] == json!("over"));
    assert_eq!(e["event"], json!("error"));
    assert_eq!(e["code"], json!("busy"));
    // Another user is refused too while the queue is full.
    let mut d = Client::connect(server.local_addr);
    d.send(&txt2img("d", "x", 1, 1, 64));
    assert_eq!(d.recv().unwrap()["code"], json!("busy"));
    c.send_control(b'c');
    assert_eq!(c.collect_cancelled(3), ["q1", "q2", "run"]);
    // The queue has room again.
    d.send(&txt2img("d2", "x", 1, 1, 64));
    assert_eq!(d.collect_job("d2").end_event(), "done");
    server.shutdown();
}

#[test]
fn connection_limit_refuses_extra_clients_only() {
    let mut config = test_config();
    config.max_client_connections = 2;
    let server = start_with(config, Duration::from_millis(2));
    let mut a = Client::connect(server.local_addr);
    let mut b = Client::connect(server.local_addr);
    let mut extra = Client::connect_raw(server.local_addr);
    let e = extra.recv().unwrap();
    assert_eq!(e["code"], json!("busy"));
    assert!(extra.recv().is_none());
    for (c, id) in [(&mut a, "a"), (&mut b, "b")] {
        c.send(&txt2img(id, "x", 2, 1, 64));
        assert_eq!(c.collect_job(id).end_event(), "done");
    }
    // A slot frees up when a client leaves.
    drop(a);
    let t0 = Instant::now();
    loop {
        let mut c = Client::connect_raw(server.local_addr);
        let first = c.recv().unwrap();
        if first.get("versions").is_some() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.shutdown();
}
