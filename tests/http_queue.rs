//! The HTTP front end on the shared queue, over loopback with the fake generator's step
//! delay: a socket client and two HTTP users served round-robin; `/progress` answering at
//! once while a job runs; `/interrupt` stopping only the caller's job; a disconnect
//! cancelling the job; a full queue answering 503 with Retry-After; HTTPS with the socket's
//! certificate.

mod http_common;
mod server_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use http_common::*;
use runai::config::Config;
use runai::net::secret::Secret;
use serde_json::{json, Value};
use server_common::{start_with, test_config, txt2img, Client};

const TOKEN: &str = "tok";

fn config() -> Config {
    Config {
        http_port: Some(0),
        token: Secret::new(TOKEN),
        ..test_config()
    }
}

fn job(steps: u32, seed: u64) -> Value {
    json!({"prompt": "p", "steps": steps, "seed": seed, "width": 64, "height": 64})
}

/// Runs `body` as `user` on its own thread; returns when the reply came and the reply.
fn spawn_txt2img(
    addr: SocketAddr,
    user: &str,
    body: Value,
) -> thread::JoinHandle<(Instant, Reply)> {
    let auth = basic(user, TOKEN);
    thread::spawn(move || {
        let r = post_json_as(addr, "/sdapi/v1/txt2img", &auth, &body);
        (Instant::now(), r)
    })
}

fn progress_of(addr: SocketAddr, user: &str) -> Value {
    let r = request(
        addr,
        "GET",
        "/sdapi/v1/progress",
        &[("Authorization", &basic(user, TOKEN))],
        b"",
    );
    assert_eq!(r.status, 200);
    r.json()
}

/// Polls `user`'s progress until its job has taken a step.
fn wait_running(addr: SocketAddr, user: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let p = progress_of(addr, user);
        if p["state"]["sampling_step"].as_u64().unwrap_or(0) > 0 {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "job never started: {p}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn connect_socket(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    c.send(&json!({"action": "auth", "token": TOKEN}));
    assert_eq!(c.recv().unwrap()["ok"], true);
    c
}

#[test]
fn socket_and_two_http_users_are_served_round_robin() {
    let server = start_with(config(), Duration::from_millis(30));
    let http = server.http_addr.unwrap();
    let mut sock = connect_socket(server.local_addr);
    // The socket client's long job holds the worker while everyone queues.
    sock.send(&txt2img("s0", "p", 25, 1, 64));
    sock.recv_until(|m| m["action"] == json!(4));
    sock.send(&txt2img("s1", "p", 3, 2, 64));
    sock.send(&txt2img("s2", "p", 3, 3, 64));
    let a1 = spawn_txt2img(http, "ann", job(3, 10));
    thread::sleep(Duration::from_millis(60));
    let a2 = spawn_txt2img(http, "ann", job(3, 11));
    thread::sleep(Duration::from_millis(60));
    let b1 = spawn_txt2img(http, "bob", job(3, 20));
    let mut done = std::collections::HashMap::new();
    while done.len() < 3 {
        let m = sock.recv().expect("socket reply");
        if m["event"] == json!("done") {
            done.insert(m["job_id"].as_str().unwrap().to_string(), Instant::now());
        }
    }
    let finished = |h: thread::JoinHandle<(Instant, Reply)>| {
        let (t, r) = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        t
    };
    let (ta1, ta2, tb1) = (finished(a1), finished(a2), finished(b1));
    let (ts1, ts2) = (done["s1"], done["s2"]);
    // Served s1, a1, b1, s2, a2: every lane's first job before any lane's second.
    assert!(ts1 < ta1 && ta1 < tb1, "s1 {ts1:?} a1 {ta1:?} b1 {tb1:?}");
    assert!(tb1 < ts2 && ts2 < ta2, "b1 {tb1:?} s2 {ts2:?} a2 {ta2:?}");
    server.shutdown();
}

#[test]
fn progress_answers_at_once_and_per_caller() {
    let server = start_with(config(), Duration::from_millis(40));
    let http = server.http_addr.unwrap();
    let run = spawn_txt2img(http, "ann", job(30, 1));
    let first = wait_running(http, "ann");
    assert_eq!(first["state"]["sampling_steps"], 30);
    assert_eq!(first["state"]["job_count"], 1);
    assert!(first["textinfo"]
        .as_str()
        .unwrap()
        .starts_with("Sampling step"));
    let mut times = Vec::new();
    let mut last = 0.0;
    for _ in 0..7 {
        let t0 = Instant::now();
        let p = progress_of(http, "ann");
        times.push(t0.elapsed());
        let now = p["progress"].as_f64().unwrap();
        assert!(now > 0.0 && now < 1.0 && now >= last, "{p}");
        last = now;
        thread::sleep(Duration::from_millis(20));
    }
    times.sort();
    assert!(
        times[3] < Duration::from_millis(50),
        "median /progress took {:?}",
        times[3]
    );
    // Someone else sees no job of theirs.
    let other = progress_of(http, "bob");
    assert_eq!(
        (
            other["progress"].as_f64(),
            other["state"]["job_count"].as_u64()
        ),
        (Some(0.0), Some(0))
    );
    let (_, r) = run.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(progress_of(http, "ann")["state"]["job_count"], 0);
    server.shutdown();
}

#[test]
fn interrupt_stops_only_the_callers_job() {
    let server = start_with(config(), Duration::from_millis(40));
    let http = server.http_addr.unwrap();
    let ann = spawn_txt2img(http, "ann", job(40, 1));
    wait_running(http, "ann");
    // Bob has nothing running: his interrupt touches nobody.
    let r = request(
        http,
        "POST",
        "/sdapi/v1/interrupt",
        &[("Authorization", &basic("bob", TOKEN))],
        b"",
    );
    assert_eq!(r.status, 200);
    let before = progress_of(http, "ann")["state"]["sampling_step"]
        .as_u64()
        .unwrap();
    thread::sleep(Duration::from_millis(200));
    let after = progress_of(http, "ann")["state"]["sampling_step"]
        .as_u64()
        .unwrap();
    assert!(
        after > before,
        "ann's job stopped after bob's interrupt: {before} -> {after}"
    );
    let bob = spawn_txt2img(http, "bob", job(2, 5));
    thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    let r = request(
        http,
        "POST",
        "/sdapi/v1/skip",
        &[("Authorization", &basic("ann", TOKEN))],
        b"",
    );
    assert_eq!(r.status, 200);
    let (_, ar) = ann.join().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "interrupt took {:?}",
        t0.elapsed()
    );
    assert_eq!(ar.status, 200);
    assert_eq!(ar.info()["interrupted"], true);
    let (_, br) = bob.join().unwrap();
    assert_eq!(br.status, 200);
    assert_eq!(br.info()["interrupted"], false);
    assert_eq!(br.json()["images"].as_array().unwrap().len(), 1);
    server.shutdown();
}

#[test]
fn a_disconnect_cancels_the_job() {
    let server = start_with(config(), Duration::from_millis(30));
    let http = server.http_addr.unwrap();
    let mut s = connect(http);
    let body = job(80, 1).to_string();
    write_request(
        &mut s,
        "POST",
        "/sdapi/v1/txt2img",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &basic("ann", TOKEN)),
        ],
        body.as_bytes(),
    );
    wait_running(http, "ann");
    drop(s);
    // The job is cancelled, not left to run its remaining ~2 s.
    let t0 = Instant::now();
    while progress_of(http, "ann")["state"]["job_count"] != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "job still listed after the disconnect"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let (_, r) = spawn_txt2img(http, "bob", job(2, 5)).join().unwrap();
    assert_eq!(r.status, 200);
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "bob waited {:?}",
        t0.elapsed()
    );
    server.shutdown();
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let config = Config {
        queue_depth: 1,
        ..config()
    };
    let server = start_with(config, Duration::from_millis(30));
    let http = server.http_addr.unwrap();
    let ann = spawn_txt2img(http, "ann", job(40, 1));
    wait_running(http, "ann");
    let bob = spawn_txt2img(http, "bob", job(2, 2));
    let t0 = Instant::now();
    while progress_of(http, "bob")["state"]["job_count"] != 1 {
        assert!(t0.elapsed() < Duration::from_secs(5));
        thread::sleep(Duration::from_millis(10));
    }
    let r = post_json_as(http, "/sdapi/v1/txt2img", &basic("carl", TOKEN), &job(2, 3));
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(r.json()["error"], "busy");
    request(
        http,
        "POST",
        "/sdapi/v1/interrupt",
        &[("Authorization", &basic("ann", TOKEN))],
        b"",
    );
    assert_eq!(ann.join().unwrap().1.status, 200);
    assert_eq!(bob.join().unwrap().1.status, 200);
    server.shutdown();
}

#[test]
fn https_with_the_socket_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    let config = Config {
        tls_cert: cert.display().to_string(),
        tls_key: key.display().to_string(),
        ..config()
    };
    let server = start_with(config, Duration::ZERO);
    let http = server.http_addr.unwrap();
    let client = runai::net::tls::client_config(&cert).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(&client), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(http));
    use std::io::{Read, Write};
    let body = job(1, 1).to_string();
    write!(
        tls,
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let r = parse_reply(&raw);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["images"].as_array().unwrap().len(), 1);
    // Plain HTTP on the TLS port gets no answer.
    let mut plain = connect(http);
    write_request(&mut plain, "GET", "/health", &[], b"");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(
        !buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    server.shutdown();
}
