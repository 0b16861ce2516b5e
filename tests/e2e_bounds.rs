//! Bounds against the real server on the tiny fixture models: a 60 MB request (30 million
//! characters of prompt and negative prompt) is refused at once while another user's job
//! finishes in its normal time; with the prompt limit raised, such a prompt costs about the
//! time of a short one (tokenization is bounded): read as literal text it runs (CLIP reads its
//! first 75 tokens), read with A1111's syntax (no truncation) it is refused as too long; txt2img and img2img on an inpainting model
//! get `invalid_field` before anything runs, with no backtrace and no server path.

mod e2e_common;
mod server_common;

use std::time::{Duration, Instant};

use e2e_common::*;
use serde_json::{json, Value};
use server_common::{test_config, Client};

const HUGE: usize = 30_000_000;

/// A one-step txt2img whose prompt and negative prompt are `HUGE` characters each, read with
/// `syntax`.
fn huge_request(job: &str, syntax: &str) -> Value {
    let mut o = options("txt2img", "tiny-sd1", 1, 1, 64, 64);
    o.insert("txt2img_prompt_syntax".into(), json!(syntax));
    o.insert("txt2img_prompt".into(), json!("a fox ".repeat(HUGE / 6)));
    o.insert("txt2img_negative_prompt".into(), json!("x".repeat(HUGE)));
    request("txt2img", job, o)
}

/// Runs B's two-step job and returns how long it took, end to end.
fn timed_small_job(c: &mut Client, job: &str) -> Duration {
    let t0 = Instant::now();
    c.send(&txt2img(job, "tiny-sd1", 2, 9, 64, 64));
    let r = c.collect_job(job);
    assert_done(&r, 1, 2);
    t0.elapsed()
}

#[test]
fn a_60_mb_prompt_is_refused_at_once_and_others_are_unaffected() {
    let server = start_real();
    let addr = server.local_addr;
    let mut b = Client::connect(addr);
    timed_small_job(&mut b, "warm-up");
    let baseline = timed_small_job(&mut b, "alone");

    let body = huge_request("huge", "literal").to_string();
    assert!(body.len() > 60_000_000, "{}", body.len());
    let attacker = std::thread::spawn(move || {
        let mut a = Client::connect(addr);
        a.send_bytes(body.as_bytes());
        let sent = Instant::now();
        let e = a.recv().expect("an answer to the huge request");
        (e, sent.elapsed())
    });
    let during = timed_small_job(&mut b, "during");
    let (e, answered_in) = attacker.join().unwrap();
    assert_eq!(e["event"], json!("error"), "{e}");
    assert_eq!(e["code"], json!("invalid_field"), "{e}");
    assert_eq!(e["job_id"], json!("huge"));
    let text = e["message"].as_str().unwrap();
    assert!(
        text.contains("txt2img_prompt") && text.contains("20000"),
        "{text}"
    );
    println!("huge request refused {answered_in:?} after it was sent; B alone {baseline:?}, during {during:?}");
    assert!(answered_in < Duration::from_secs(10), "{answered_in:?}");
    assert!(
        during < baseline * 3 + Duration::from_secs(5),
        "B took {during:?} next to the huge request, {baseline:?} alone"
    );
    server.shutdown();
}

#[test]
fn a_huge_allowed_prompt_costs_about_what_a_short_one_does() {
    let mut config = test_config();
    config.max_prompt_chars = HUGE;
    config.max_message_bytes = 128 << 20;
    let server = start_real_with(config, real_factory(), &[fixtures().join("models")]);
    let mut c = Client::connect(server.local_addr);
    timed_small_job(&mut c, "warm-up");
    let short = timed_small_job(&mut c, "short");
    let t0 = Instant::now();
    c.send(&huge_request("huge", "literal"));
    let r = c.collect_job("huge");
    let huge = t0.elapsed();
    assert_done(&r, 1, 1);
    let t0 = Instant::now();
    c.send(&huge_request("huge-a1111", "a1111"));
    let r = c.collect_job("huge-a1111");
    let refused = t0.elapsed();
    let e = r.end.clone().unwrap();
    assert_eq!(e["code"], json!("invalid_field"), "{e}");
    assert!(e["message"].as_str().unwrap().contains("too long"), "{e}");
    println!(
        "2-step job with a short prompt {short:?}; 1-step job with two 30M-char prompts \
         {huge:?} (literal), refused in {refused:?} (A1111)"
    );
    // Before the window, tokenizing these prompts alone took about a minute.
    assert!(huge < short * 4 + Duration::from_secs(10), "{huge:?}");
    assert!(refused < short * 4 + Duration::from_secs(10), "{refused:?}");
    server.shutdown();
}

#[test]
fn other_tasks_on_an_inpainting_model_are_invalid_before_they_run() {
    let server = start_real();
    let mut c = Client::connect(server.local_addr);
    for action in ["txt2img", "img2img"] {
        let mut o = options(action, "tiny-inpaint", 2, 1, 64, 64);
        if action == "img2img" {
            o.insert("pixels".into(), json!(init_png()));
        }
        let job = format!("{action}-on-inpaint");
        c.send(&request(action, &job, o));
        let r = c.collect_job(&job);
        let e = r.end.clone().unwrap();
        assert_eq!(e["code"], json!("invalid_field"), "{e}");
        assert_eq!(e["reqtype"], json!(action));
        let text = e["message"].as_str().unwrap();
        assert!(
            text.contains("tiny-inpaint") && text.contains("inpainting model"),
            "{text}"
        );
        assert!(text.contains(&format!("{action}_model")), "{text}");
        assert!(!text.contains('\n') && !text.contains(".rs:"), "{text}");
        assert!(text.len() < 300, "{text}");
        assert!(
            r.progress.is_empty() && r.queued.is_empty(),
            "it must not run: {r:?}"
        );
    }
    // The same model inpaints, on the same connection.
    let mut o = options("inpaint", "tiny-inpaint", 1, 1, 64, 64);
    o.insert("pixels".into(), json!(init_png()));
    o.insert("mask".into(), json!(mask_png()));
    c.send(&request("inpaint", "inpaint-ok", o));
    assert_done(&c.collect_job("inpaint-ok"), 1, 1);
    server.shutdown();
}
