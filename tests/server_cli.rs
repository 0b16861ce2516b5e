//! The `runai` binary: `--help` documents the flags, invalid values exit 2, and
//! `runai client ping` talks to a live server (started in-process on loopback).

mod server_common;

use std::process::Command;
use std::time::Duration;

use server_common::*;

fn runai() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runai"));
    // Keep the developer's environment out of the test.
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNAI_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn help_lists_every_flag() {
    let out = runai().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--host",
        "--port",
        "--timeout",
        "--packet-size",
        "--model-base-path",
        "--model",
        "--max-client-connections",
        "--queue-depth",
        "--max-message-bytes",
        "--startup-grace",
        "--idle",
        "--drain-grace",
        "--read-timeout",
        "--write-timeout",
        "--safety-checker",
        "--safety-checker-path",
        "RUNAI_PORT",
        "client",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn invalid_values_exit_2_with_a_message() {
    for args in [
        vec!["--packet-size", "0"],
        vec!["--port", "99999"],
        vec!["--host", "not a host"],
        vec!["--idle", "-3"],
        vec!["--max-client-connections", "0"],
    ] {
        let out = runai().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
    let out = runai()
        .args(["--config", "/nonexistent/runai.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = runai().env("RUNAI_PACKET_SIZE", "3").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The safety checker: a mode that does not exist, and an enabled checker with no folder
    // (start-up fails before listening, naming what it looked for).
    let out = runai()
        .env("RUNAI_SAFETY_CHECKER", "sometimes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = runai()
        .args([
            "--port",
            "0",
            "--model-base-path",
            "/nonexistent/runai-roots",
        ])
        .args(["--safety-checker", "black"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("safety checker") && err.contains("/nonexistent/runai-roots"),
        "{err}"
    );
}

#[test]
fn client_ping_and_generate() {
    let server = start(Duration::from_millis(1));
    let port = server.local_addr.port().to_string();
    let out = runai()
        .args(["client", "--port", &port, "ping"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pong"));
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("img");
    let out = runai()
        .args([
            "client", "--port", &port, "txt2img", "--prompt", "x", "--steps", "2",
        ])
        .args([
            "--width",
            "64",
            "--height",
            "64",
            "--out",
            prefix.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(dir.path().join("img-0.png")).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    server.shutdown();
}

#[test]
fn binary_timeout_exits_zero() {
    let out = runai()
        .args(["--timeout", "--port", "0", "--startup-grace", "0.3"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
