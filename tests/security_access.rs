//! Access control against a live in-process server (fake generator, loopback): the allow-list
//! closes other peers before a byte is exchanged, the token gates every request and control
//! packet (with pre-auth size and time limits), and the binary refuses bad access settings
//! with exit code 2.

mod security_common;
mod server_common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use security_common as sec;
use server_common::*;

const STEP: Duration = Duration::from_millis(1);

#[test]
fn peers_outside_the_allow_list_get_no_byte() {
    let mut config = test_config();
    config.allow = vec![
        "10.0.0.0/8".into(),
        "192.168.0.0/16".into(),
        "fd00::/8".into(),
    ];
    config.max_client_connections = 1;
    let server = start_with(config, STEP);
    for _ in 0..3 {
        let mut s = sec::tcp(server.local_addr);
        // Whatever the client sends is never read or answered; not even the greeting comes.
        let _ = s.write_all(&[b'x'; PACKET]);
        let t0 = Instant::now();
        assert!(sec::drain(&mut s).is_empty(), "refused peer received bytes");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    // The quit packet above was never read: the server is still up and counted no session.
    assert!(!server.is_finished());
    server.shutdown();
}

#[test]
fn allowed_peers_are_served() {
    // A loopback rule, and the same host written as an IPv4-mapped IPv6 rule.
    for rule in ["127.0.0.0/8", "::ffff:127.0.0.1", "10.0.0.0/8, 127.0.0.1"] {
        let mut config = test_config();
        config.allow = rule.split(',').map(|r| r.to_string()).collect();
        let server = start_with(config, STEP);
        let mut c = Client::connect(server.local_addr);
        c.send(&json!({"action": "ping"}));
        assert_eq!(c.recv().unwrap()["event"], json!("pong"), "{rule}");
        server.shutdown();
    }
}

fn token_server(read_timeout: f64) -> runai::app::ServerThread {
    let mut config = test_config();
    config.token = "correct horse".into();
    config.read_timeout_secs = read_timeout;
    start_with(config, STEP)
}

fn assert_refused(c: &mut Client) {
    let m = c.recv().expect("an unauthorized error");
    assert_eq!(m["event"], json!("error"), "{m}");
    assert_eq!(m["code"], json!("unauthorized"), "{m}");
    assert!(
        c.recv().is_none(),
        "connection stays open after unauthorized"
    );
}

#[test]
fn token_gates_requests_and_control_packets() {
    let server = token_server(30.0);
    let before_auth = [
        json!({"action": "ping"}),
        json!({"action": "models"}),
        txt2img("j", "x", 1, 1, 64),
        json!({"action": "auth"}),
        json!({"action": "auth", "token": ""}),
        json!({"action": "auth", "token": "correct hors"}),
        json!({"action": "auth", "token": "correct horse "}),
        json!({"action": "auth", "token": 12}),
    ];
    for msg in before_auth {
        let mut c = Client::connect(server.local_addr);
        c.send(&msg);
        assert_refused(&mut c);
    }
    // Not JSON at all.
    let mut c = Client::connect(server.local_addr);
    c.send_bytes(b"hello");
    assert_refused(&mut c);
    // Cancel and quit packets before auth are refused too; quit does not stop the server.
    for byte in [b'c', b'x'] {
        let mut c = Client::connect(server.local_addr);
        c.send_control(byte);
        assert_refused(&mut c);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(!server.is_finished(), "quit before auth stopped the server");
    // The right token, then the session is normal; a second auth is harmless.
    let mut c = Client::connect(server.local_addr);
    c.send(&json!({"action": "auth", "token": "correct horse"}));
    let ok = c.recv().unwrap();
    assert_eq!(
        (ok["event"].clone(), ok["ok"].clone()),
        (json!("auth"), json!(true))
    );
    c.send(&json!({"action": "ping"}));
    assert_eq!(c.recv().unwrap()["event"], json!("pong"));
    c.send(&txt2img("ok", "x", 2, 5, 64));
    let r = c.collect_job("ok");
    assert_eq!(r.end_event(), "done");
    assert_eq!(r.images.len(), 1);
    server.shutdown();
}

#[test]
fn auth_and_request_sent_together_both_work() {
    // A client may pipeline its request right behind the auth message.
    let server = token_server(30.0);
    let mut c = Client::connect(server.local_addr);
    let mut bytes = Vec::new();
    for v in [
        json!({"action": "auth", "token": "correct horse"}),
        json!({"action": "ping"}),
    ] {
        for chunk in v.to_string().as_bytes().chunks(PACKET) {
            let mut p = chunk.to_vec();
            p.resize(PACKET, 0);
            bytes.extend_from_slice(&p);
        }
        bytes.extend_from_slice(&[0u8; PACKET]);
    }
    c.stream.write_all(&bytes).unwrap();
    assert_eq!(c.recv().unwrap()["event"], json!("auth"));
    assert_eq!(c.recv().unwrap()["event"], json!("pong"));
    // After auth the full message size applies again (a 200 KiB message is fine; the bulk
    // is in a key the server ignores, as prompts have their own, smaller limit).
    let mut big = txt2img("big", "a fox", 1, 1, 64);
    big["options"]["ignored_padding"] = json!("a ".repeat(100 * 1024));
    c.send(&big);
    assert_eq!(c.collect_job("big").end_event(), "done");
    server.shutdown();
}

#[test]
fn unauthenticated_peers_cannot_make_the_server_buffer_much() {
    let server = token_server(30.0);
    let mut c = Client::connect(server.local_addr);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // 100 KiB of a first message, no end-of-message: without a pre-auth limit the server
    // would keep buffering (up to max_message_bytes) and answer nothing.
    let mut p = vec![b'a'; PACKET];
    p[0] = b'{';
    for _ in 0..100 {
        if c.stream.write_all(&p).is_err() {
            break;
        }
    }
    assert_refused(&mut c);
    server.shutdown();
}

#[test]
fn silent_unauthenticated_peer_is_dropped_after_the_read_timeout() {
    let server = token_server(0.5);
    let mut c = Client::connect(server.local_addr);
    let t0 = Instant::now();
    assert_refused(&mut c);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // An authenticated idle client is not dropped by that timer.
    let mut c = Client::connect(server.local_addr);
    c.send(&json!({"action": "auth", "token": "correct horse"}));
    assert_eq!(c.recv().unwrap()["event"], json!("auth"));
    std::thread::sleep(Duration::from_millis(900));
    c.send(&json!({"action": "ping"}));
    assert_eq!(c.recv().unwrap()["event"], json!("pong"));
    server.shutdown();
}

fn runai() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runai"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNAI_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn bad_access_settings_exit_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let cert = sec::self_signed(dir.path());
    // (flags, environment, text the error must contain)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--allow".into(), "10.0.0.0/33".into()],
            vec![],
            "10.0.0.0/33",
        ),
        (
            vec!["--allow".into(), "192.168.1.0/24,lan".into()],
            vec![],
            "lan",
        ),
        (vec![], vec![("RUNAI_ALLOW", "1.2.3")], "1.2.3"),
        (
            vec!["--tls-cert".into(), cert.cert_path.display().to_string()],
            vec![],
            "tls_key",
        ),
        (
            vec!["--tls-key".into(), cert.key_path.display().to_string()],
            vec![],
            "tls_cert",
        ),
        (
            vec![
                "--tls-cert".into(),
                missing.display().to_string(),
                "--tls-key".into(),
                cert.key_path.display().to_string(),
            ],
            vec![],
            "missing.pem",
        ),
        (
            vec![
                "--tls-cert".into(),
                junk.display().to_string(),
                "--tls-key".into(),
                cert.key_path.display().to_string(),
            ],
            vec![],
            "junk.pem",
        ),
        (
            vec![
                "--tls-cert".into(),
                cert.cert_path.display().to_string(),
                "--tls-key".into(),
                cert.cert_path.display().to_string(),
            ],
            vec![],
            "private key",
        ),
    ];
    for (args, env, expect) in cases {
        let out = runai()
            .args(["--port", "0", "--timeout", "--startup-grace", "0.2"])
            .args(&args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

#[test]
fn help_shows_the_access_flags_but_never_the_token_value() {
    let out = runai()
        .arg("--help")
        .env("RUNAI_TOKEN", "leak-check-7f3a")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--allow",
        "RUNAI_ALLOW",
        "--token",
        "RUNAI_TOKEN",
        "--tls-cert",
        "--tls-key",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    assert!(
        !text.contains("leak-check-7f3a"),
        "--help printed the token"
    );
    let out = runai()
        .args(["client", "--help"])
        .env("RUNAI_TOKEN", "leak-check-7f3a")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--tls-ca") && text.contains("--token"),
        "{text}"
    );
    assert!(
        !text.contains("leak-check-7f3a"),
        "client --help printed the token"
    );
}
