//! TLS: a live in-process server (fake generator, loopback) with a certificate made at test
//! time; an independent rustls client speaks the unchanged packet protocol inside TLS, clients
//! that do not speak TLS (or do not trust the certificate) are dropped without harming the
//! server, and `runai client --tls-ca --token` talks to it.

mod security_common;
mod server_common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use security_common as sec;
use server_common::*;

const STEP: Duration = Duration::from_millis(1);

fn tls_server(
    dir: &std::path::Path,
    token: &str,
    read_timeout: f64,
) -> (runai::app::ServerThread, sec::TestCert) {
    let cert = sec::self_signed(dir);
    let mut config = test_config();
    config.tls_cert = cert.cert_path.display().to_string();
    config.tls_key = cert.key_path.display().to_string();
    config.token = token.into();
    config.read_timeout_secs = read_timeout;
    (start_with(config, STEP), cert)
}

/// versions, txt2img, ping over one TLS connection.
fn full_session(c: &mut sec::TlsClient) {
    let hello = sec::recv(c).expect("versions");
    assert_eq!(hello["versions"]["latest_ksd_version"], json!("1.0.0"));
    sec::send(c, &txt2img("t1", "x", 3, 9, 64));
    let mut progress = 0;
    let mut image = None;
    loop {
        let m = sec::recv(c).expect("job replies");
        if m["action"] == json!(4) {
            progress += 1;
        } else if m.get("image").is_some() {
            image = Some(m);
        } else if m["event"] == json!("done") {
            break;
        } else {
            assert_ne!(m["event"], json!("error"), "{m}");
        }
    }
    assert_eq!(progress, 3);
    let img = decode_png(&image.expect("an image"));
    assert_eq!((img.width(), img.height()), (64, 64));
    assert_eq!(*img.get_pixel(0, 0), seed_colour(9));
    sec::send(c, &json!({"action": "ping"}));
    assert_eq!(sec::recv(c).unwrap()["event"], json!("pong"));
}

#[test]
fn the_protocol_runs_unchanged_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = tls_server(dir.path(), "", 30.0);
    for name in ["localhost", "127.0.0.1"] {
        let mut c = sec::tls_connect(server.local_addr, &cert.der, name);
        sec::handshake(&mut c).unwrap();
        full_session(&mut c);
    }
    server.shutdown();
}

#[test]
fn tls_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = tls_server(dir.path(), "tok-123", 30.0);
    let mut c = sec::tls_connect(server.local_addr, &cert.der, "localhost");
    assert!(sec::recv(&mut c).unwrap().get("versions").is_some());
    sec::send(&mut c, &json!({"action": "ping"}));
    assert_eq!(sec::recv(&mut c).unwrap()["code"], json!("unauthorized"));
    assert!(sec::recv(&mut c).is_none());
    let mut c = sec::tls_connect(server.local_addr, &cert.der, "localhost");
    assert!(sec::recv(&mut c).unwrap().get("versions").is_some());
    sec::send(&mut c, &json!({"action": "auth", "token": "tok-123"}));
    assert_eq!(sec::recv(&mut c).unwrap()["event"], json!("auth"));
    sec::send(&mut c, &json!({"action": "ping"}));
    assert_eq!(sec::recv(&mut c).unwrap()["event"], json!("pong"));
    server.shutdown();
}

#[test]
fn clients_without_tls_are_dropped_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = tls_server(dir.path(), "", 0.5);
    // A plugin-style clear-text client: its request is not a TLS hello.
    let mut plain = sec::tcp(server.local_addr);
    sec::send(&mut plain, &json!({"action": "ping"}));
    let got = sec::drain(&mut plain);
    assert!(
        !String::from_utf8_lossy(&got).contains("versions"),
        "clear-text greeting sent on a TLS port"
    );
    // A silent clear-text client is dropped after the handshake limit.
    let mut silent = sec::tcp(server.local_addr);
    let t0 = Instant::now();
    assert!(sec::drain(&mut silent).is_empty());
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Garbage that looks like nothing at all.
    let mut junk = sec::tcp(server.local_addr);
    let _ = junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3]);
    let _ = junk.write_all(&[0u8; 4096]);
    sec::drain(&mut junk);
    // A TLS client that trusts another certificate refuses the server.
    let other = tempfile::tempdir().unwrap();
    let stranger = sec::self_signed(other.path());
    let mut distrust = sec::tls_connect(server.local_addr, &stranger.der, "localhost");
    assert!(sec::handshake(&mut distrust).is_err());
    // A wrong server name is refused by the client as well.
    let mut wrong_name = sec::tls_connect(server.local_addr, &cert.der, "example.com");
    assert!(sec::handshake(&mut wrong_name).is_err());
    // Through all that the server kept serving.
    assert!(!server.is_finished());
    let mut c = sec::tls_connect(server.local_addr, &cert.der, "localhost");
    full_session(&mut c);
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
fn cli_client_speaks_tls_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = tls_server(dir.path(), "cli-token", 30.0);
    let port = server.local_addr.port().to_string();
    let ca = cert.cert_path.display().to_string();
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let out = runai()
            .args(["client", "--port", &port, "--wait", "10"])
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&["--tls-ca", &ca, "--token", "cli-token", "ping"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("pong"), "{out}");
    // The token from the environment works the same.
    let (code, _, err) = run(&["--tls-ca", &ca, "ping"], &[("RUNAI_TOKEN", "cli-token")]);
    assert_eq!(code, Some(0), "{err}");
    // Without the token: unauthorized, exit 1.
    let (code, _, err) = run(&["--tls-ca", &ca, "ping"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unauthorized"), "{err}");
    // Without TLS the client gets nothing it understands.
    let (code, _, _) = run(&["--token", "cli-token", "ping"], &[]);
    assert_ne!(code, Some(0));
    // A name the certificate does not cover is refused by the client.
    let (code, _, err) = run(
        &[
            "--tls-ca",
            &ca,
            "--tls-name",
            "example.com",
            "--token",
            "cli-token",
            "ping",
        ],
        &[],
    );
    assert_ne!(code, Some(0));
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!server.is_finished());
    server.shutdown();
}
