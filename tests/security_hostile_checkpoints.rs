//! Hostile checkpoint files against the real `runai` binary (a child process, so its memory
//! can be read from /proc and a crash would show as its exit): the generated corpus of
//! `hostile_common` lies in the model root from the start. `models` and generation work while
//! the files are merely present; each file requested over the wire (generate and `convert`)
//! gets `unavailable` with a message that quotes none of its bytes and no path outside the
//! model name, within 2 s; a normal generation succeeds right after each one; the server's
//! peak memory stays under 200 MB above its warmed-up baseline; and `runai convert` on each
//! file prints an error and exits 1 (not a panic's 101). Loopback only; writes only to a
//! temporary folder.

mod e2e_common;
mod hostile_common;
mod server_common;

use std::time::{Duration, Instant};

use e2e_common::{runai_command, spawn_runai, txt2img};
use hostile_common::{root_with_fixture, write_corpus, EXPECTED_CODE};
use serde_json::{json, Value};
use server_common::{model_names, Client};

const PER_FILE: Duration = Duration::from_secs(2);
const MEMORY_HEADROOM_KB: u64 = 200 * 1024;

/// A `VmRSS`/`VmHWM`-style line of /proc/<pid>/status, in kB.
fn vm_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

fn generate_ok(client: &mut Client, job: &str) {
    client.send(&txt2img(job, "tiny-sd1", 2, 7, 64, 64));
    let r = client.collect_job(job);
    assert_eq!(r.end_event(), "done", "{:?}", r.end);
    assert_eq!(r.images.len(), 1);
}

fn models_ok(client: &mut Client) {
    client.send(&json!({"action": "models"}));
    let m = client.recv().unwrap();
    assert_eq!(m["event"], json!("models"), "{m}");
    assert_eq!(model_names(&m), ["tiny-sd1"], "{m}");
}

fn assert_clean_error(end: &Value, secrets: &[&str], what: &str) {
    assert_eq!(end["event"], json!("error"), "{what}: {end}");
    assert_eq!(end["code"], json!(EXPECTED_CODE), "{what}: {end}");
    let message = end["message"].as_str().unwrap();
    for secret in secrets {
        assert!(
            !message.contains(secret),
            "{what} leaks {secret:?}: {message}"
        );
    }
    assert!(
        !message.contains("backtrace") && !message.contains("panicked"),
        "{what}: {message}"
    );
}

#[test]
fn hostile_checkpoints_get_clear_errors_and_never_hurt_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let root = root_with_fixture(tmp.path());
    let cases = write_corpus(&root, &tmp.path().join("outside"));
    let tmp_path = tmp.path().display().to_string();
    let (mut server, addr) = spawn_runai(&root);
    let pid = server.id();
    let mut client = Client::connect(addr);

    // Merely present, never requested: listing and generation are untouched.
    models_ok(&mut client);
    generate_ok(&mut client, "warm");
    let baseline = vm_kb(pid, "VmRSS:");

    for (i, case) in cases.iter().enumerate() {
        let secrets = [case.secret.as_str(), tmp_path.as_str()];
        let t0 = Instant::now();
        let job = format!("h{i}");
        client.send(&txt2img(&job, &case.name, 2, 1, 64, 64));
        let end = client.collect_job(&job).end.unwrap();
        assert_clean_error(&end, &secrets, &case.name);
        client.send(&json!({"action": "convert", "job_id": format!("c{i}"),
                            "options": {"model": case.name}}));
        let converted = client.collect_job(&format!("c{i}")).end.unwrap();
        assert_clean_error(&converted, &secrets, &format!("convert {}", case.name));
        let took = t0.elapsed();
        assert!(
            took < PER_FILE * 2,
            "{}: {took:?} for generate + convert",
            case.name
        );
        println!("{}: {took:?}: {}", case.name, end["message"]);
        generate_ok(&mut client, &format!("after{i}"));
        models_ok(&mut client);
    }
    let peak = vm_kb(pid, "VmHWM:");
    println!(
        "server memory: baseline {} MB, peak {} MB over {} hostile files",
        baseline / 1024,
        peak / 1024,
        cases.len()
    );
    assert!(
        peak < baseline + MEMORY_HEADROOM_KB,
        "peak {peak} kB vs baseline {baseline} kB"
    );
    assert!(
        server.try_wait().unwrap().is_none(),
        "the server is still running"
    );
    server.kill().unwrap();
    let _ = server.wait();

    for (i, case) in cases.iter().enumerate() {
        let dst = tmp.path().join(format!("converted-{i}"));
        let t0 = Instant::now();
        let out = runai_command()
            .arg("convert")
            .arg(root.join(&case.name))
            .arg(&dst)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        let took = t0.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", case.name);
        assert!(stderr.contains("runai convert"), "{}: {stderr}", case.name);
        assert!(
            !stderr.contains(&case.secret),
            "{} leaks: {stderr}",
            case.name
        );
        assert!(!dst.exists(), "{}: partial output left", case.name);
        assert!(took < PER_FILE, "{}: convert took {took:?}", case.name);
    }
}
