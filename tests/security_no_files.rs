//! "Nothing written to disk", tried as a new user would: the real `runai` binary with the real
//! generator runs a whole session (greeting, auth, ping, models, a tiny-sd1 txt2img, bad
//! requests, a model path escaping the roots, quit) with HOME, the working directory and
//! TMPDIR set to fresh empty directories and an otherwise empty environment. Afterwards they
//! are still empty, the model root is byte-for-byte and mtime-for-mtime unchanged, and the
//! log never contained the token or the prompt. Loopback only.

mod server_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use server_common::*;

const TOKEN: &str = "tok-8c1d4e0f-never-logged";
const PROMPT: &str = "zebra-lighthouse-prompt-never-logged";

/// Every file and folder under `root`: size and modification time.
fn listing(root: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            out.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn a_whole_session_writes_no_file() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let models = fixtures_models();
    let before = listing(&models);

    let mut child = Command::new(env!("CARGO_BIN_EXE_runai"))
        .env_clear()
        .env("HOME", home.path())
        .env("TMPDIR", tmp.path())
        .env("RUST_LOG", "info")
        .env("RUNAI_TOKEN", TOKEN)
        .current_dir(cwd.path())
        .args(["--port", "0", "--model", "tiny-sd1", "--model-base-path"])
        .arg(&models)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The log is read on a thread; the first "listening on" line gives the port.
    let log = Arc::new(Mutex::new(String::new()));
    let (port_tx, port_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let log_w = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = port_tx.send(addr);
            }
            let mut l = log_w.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let addr: SocketAddr = port_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no listening line: {}", log.lock().unwrap()))
        .parse()
        .unwrap();

    let mut c = Client::connect(addr);
    c.send(&json!({"action": "auth", "token": TOKEN}));
    assert_eq!(c.recv().unwrap()["event"], json!("auth"));
    c.send(&json!({"action": "ping"}));
    assert_eq!(c.recv().unwrap()["event"], json!("pong"));
    c.send(&json!({"action": "models"}));
    let m = c.recv().unwrap();
    assert!(model_names(&m).contains(&"tiny-sd1"), "{m}");

    c.send(&txt2img("real", PROMPT, 4, 7, 64));
    let r = c.collect_job("real");
    assert_eq!(r.end_event(), "done", "{:?}", r.end);
    assert_eq!(r.progress.len(), 4);
    assert_eq!(r.images.len(), 1);
    let img = decode_png(&r.images[0]);
    assert_eq!((img.width(), img.height()), (64, 64));

    // Bad requests are answered and the session goes on.
    c.send_bytes(b"{not json");
    assert_eq!(c.recv().unwrap()["code"], json!("bad_request"));
    c.send(&txt2img("zero", PROMPT, 0, 7, 64));
    assert_eq!(c.recv().unwrap()["code"], json!("invalid_field"));
    let mut escape = txt2img("esc", PROMPT, 1, 7, 64);
    escape["options"]["txt2img_model"] = json!("../../../../etc");
    c.send(&escape);
    assert_eq!(
        c.collect_job("esc").end.unwrap()["code"],
        json!("forbidden_path")
    );
    let mut absolute = txt2img("abs", PROMPT, 1, 7, 64);
    absolute["options"]["txt2img_model"] = json!(home.path());
    c.send(&absolute);
    assert_eq!(
        c.collect_job("abs").end.unwrap()["code"],
        json!("forbidden_path")
    );

    // Quit from loopback: the server drains and exits 0.
    c.send_control(b'x');
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("server did not exit after quit: {}", log.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{log}");

    assert!(
        is_empty(home.path()),
        "files in HOME: {:?}",
        listing(home.path())
    );
    assert!(
        is_empty(cwd.path()),
        "files in the cwd: {:?}",
        listing(cwd.path())
    );
    assert!(
        is_empty(tmp.path()),
        "files in TMPDIR: {:?}",
        listing(tmp.path())
    );
    assert_eq!(listing(&models), before, "the model root changed");
    assert!(!log.contains(TOKEN), "the token was logged:\n{log}");
    assert!(
        !log.contains(PROMPT),
        "the prompt was logged at info:\n{log}"
    );
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(!stdout.contains(TOKEN));
}
