//! Every bad-input case of issue #5 over the wire, against the real server: each gets exactly
//! one `error` with the right code and a message naming the field (or what is wrong with the
//! envelope), and the same connection then serves a valid request. Plus the one tolerated
//! oddity: a mask of another size is stretched and the job succeeds.

mod e2e_common;
mod server_common;

use e2e_common::*;
use serde_json::{json, Value};
use server_common::{decode_png, Client};

/// Standard CRC-32 (PNG chunks), so the crafted header is a well-formed PNG start.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG signature and IHDR chunk declaring 100000 x 100000 RGB, and no pixel data: a
/// decompression bomb must be refused from the header alone.
fn huge_png_header() -> String {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    b64(&png)
}

/// A valid request of `action` (1 step, 64x64) with `changes` applied to its options.
fn with(action: &str, changes: &[(&str, Value)]) -> Value {
    let mut o = options(action, "tiny-sd1", 1, 3, 64, 64);
    if action != "txt2img" {
        o.insert("pixels".into(), json!(init_png()));
        o.insert("mask".into(), json!(mask_png()));
    }
    for (k, v) in changes {
        if v.is_null() {
            o.remove(*k);
        } else {
            o.insert(k.to_string(), v.clone());
        }
    }
    request(action, "bad", o)
}

enum Input {
    Bytes(Vec<u8>),
    Json(Value),
}

#[test]
fn every_bad_input_gets_one_error_naming_the_field_and_the_session_goes_on() {
    let server = start_real();
    let mut c = Client::connect(server.local_addr);
    let text = b64(b"this is not an image at all");
    let huge = huge_png_header();
    let cases: Vec<(&str, Input, &str, &[&str])> = vec![
        (
            "not JSON",
            Input::Bytes(b"{not json".to_vec()),
            "bad_request",
            &["JSON"],
        ),
        (
            "array",
            Input::Bytes(b"[1, 2]".to_vec()),
            "bad_request",
            &["object"],
        ),
        (
            "string",
            Input::Bytes(b"\"txt2img\"".to_vec()),
            "bad_request",
            &["object"],
        ),
        (
            "invalid UTF-8",
            Input::Bytes(
                b"{\"action\": \"txt2img\", \"options\": {\"txt2img_prompt\": \"\xff\xfe\"}}"
                    .to_vec(),
            ),
            "bad_request",
            &["JSON"],
        ),
        (
            "missing action",
            Input::Json(json!({"options": {}})),
            "bad_request",
            &["action"],
        ),
        (
            "action not a string",
            Input::Json(json!({"action": 4})),
            "bad_request",
            &["action"],
        ),
        (
            "unknown action",
            Input::Json(json!({"action": "dance"})),
            "unknown_action",
            &["dance"],
        ),
        (
            "options a string",
            Input::Json(json!({"action": "txt2img", "options": "steps=3"})),
            "bad_request",
            &["options"],
        ),
        (
            "options an array",
            Input::Json(json!({"action": "img2img", "options": [1]})),
            "bad_request",
            &["options"],
        ),
        (
            "steps abc",
            Input::Json(with("txt2img", &[("txt2img_steps", json!("abc"))])),
            "invalid_field",
            &["txt2img_steps", "abc"],
        ),
        (
            "steps 0",
            Input::Json(with("txt2img", &[("txt2img_steps", json!("0"))])),
            "invalid_field",
            &["txt2img_steps", "0"],
        ),
        (
            "steps over",
            Input::Json(with("txt2img", &[("txt2img_steps", json!(151))])),
            "invalid_field",
            &["txt2img_steps", "150", "151"],
        ),
        (
            "width 0",
            Input::Json(with("txt2img", &[("txt2img_width", json!("0"))])),
            "invalid_field",
            &["txt2img_width"],
        ),
        (
            "height 0",
            Input::Json(with("txt2img", &[("txt2img_height", json!(0))])),
            "invalid_field",
            &["txt2img_height"],
        ),
        (
            "height 70",
            Input::Json(with("txt2img", &[("txt2img_height", json!("70"))])),
            "invalid_field",
            &["txt2img_height", "70"],
        ),
        (
            "too many pixels",
            Input::Json(with(
                "txt2img",
                &[
                    ("txt2img_width", json!("4096")),
                    ("txt2img_height", json!("4096")),
                ],
            )),
            "invalid_field",
            &["txt2img_width", "4096x4096"],
        ),
        (
            "n_samples 0",
            Input::Json(with("txt2img", &[("txt2img_n_samples", json!("0"))])),
            "invalid_field",
            &["txt2img_n_samples"],
        ),
        (
            "n_samples over",
            Input::Json(with("txt2img", &[("txt2img_n_samples", json!(9))])),
            "invalid_field",
            &["txt2img_n_samples", "8", "9"],
        ),
        (
            "scale nan",
            Input::Json(with("txt2img", &[("txt2img_scale", json!("nan"))])),
            "invalid_field",
            &["txt2img_scale", "NaN"],
        ),
        (
            "scale inf",
            Input::Json(with("txt2img", &[("txt2img_scale", json!("inf"))])),
            "invalid_field",
            &["txt2img_scale", "inf"],
        ),
        (
            "scale negative",
            Input::Json(with("txt2img", &[("txt2img_scale", json!(-1.5))])),
            "invalid_field",
            &["txt2img_scale", "-1.5"],
        ),
        (
            "seed negative",
            Input::Json(with("txt2img", &[("txt2img_seed", json!("-7"))])),
            "invalid_field",
            &["txt2img_seed", "-7"],
        ),
        (
            "unknown scheduler",
            Input::Json(with(
                "txt2img",
                &[("txt2img_scheduler", json!("warp_drive"))],
            )),
            "invalid_field",
            &["txt2img_scheduler", "warp_drive"],
        ),
        (
            "strength over 1",
            Input::Json(with("img2img", &[("img2img_strength", json!("1.5"))])),
            "invalid_field",
            &["img2img_strength", "1.5"],
        ),
        (
            "strength negative",
            Input::Json(with("img2img", &[("img2img_strength", json!(-0.1))])),
            "invalid_field",
            &["img2img_strength"],
        ),
        (
            "inpaint strength",
            Input::Json(with("inpaint", &[("inpaint_strength", json!(2))])),
            "invalid_field",
            &["inpaint_strength"],
        ),
        (
            "pixels not base64",
            Input::Json(with("img2img", &[("pixels", json!("%%%not base64%%%"))])),
            "bad_request",
            &["pixels", "base64"],
        ),
        (
            "pixels not an image",
            Input::Json(with("img2img", &[("pixels", json!(text))])),
            "bad_request",
            &["pixels", "PNG"],
        ),
        (
            "pixels huge",
            Input::Json(with("img2img", &[("pixels", json!(huge))])),
            "invalid_field",
            &["pixels", "100000x100000"],
        ),
        (
            "pixels a number",
            Input::Json(with("outpaint", &[("pixels", json!(12))])),
            "bad_request",
            &["pixels"],
        ),
        (
            "mask not base64",
            Input::Json(with("inpaint", &[("mask", json!("%%%"))])),
            "bad_request",
            &["mask", "base64"],
        ),
        (
            "mask not an image",
            Input::Json(with("inpaint", &[("mask", json!(text))])),
            "bad_request",
            &["mask", "PNG"],
        ),
        (
            "mask huge",
            Input::Json(with("outpaint", &[("mask", json!(huge))])),
            "invalid_field",
            &["mask", "100000x100000"],
        ),
        (
            "img2img without pixels",
            Input::Json(with("img2img", &[("pixels", Value::Null)])),
            "invalid_field",
            &["pixels"],
        ),
        (
            "inpaint without pixels",
            Input::Json(with("inpaint", &[("pixels", Value::Null)])),
            "invalid_field",
            &["pixels"],
        ),
        (
            "nonexistent model",
            Input::Json(with(
                "txt2img",
                &[("txt2img_model", json!("no-such-model"))],
            )),
            "model_not_found",
            &["no-such-model"],
        ),
    ];
    for (i, (name, input, code, words)) in cases.iter().enumerate() {
        match input {
            Input::Bytes(b) => c.send_bytes(b),
            Input::Json(v) => c.send(v),
        }
        let e = c.recv().expect("an answer");
        assert_eq!(e["event"], json!("error"), "{name}: {e}");
        assert_eq!(e["code"], json!(code), "{name}: {e}");
        let message = e["message"].as_str().unwrap_or("");
        for w in words.iter() {
            assert!(
                message.contains(w),
                "{name}: {message:?} does not name {w:?}"
            );
        }
        if matches!(input, Input::Json(v) if v.get("job_id").is_some()) {
            assert_eq!(e["job_id"], json!("bad"), "{name}: {e}");
        }
        // The very next message is about the next request: one error, and the session
        // serves a valid job.
        let job = format!("ok{i}");
        c.send(&txt2img(&job, "tiny-sd1", 1, 3, 64, 64));
        let r = c.collect_job(&job);
        assert!(r.others.is_empty(), "{name}: extra messages {:?}", r.others);
        assert_done(&r, 1, 1);
    }
    server.shutdown();
}

#[test]
fn mask_of_another_size_is_stretched_and_succeeds() {
    let server = start_real();
    let mut c = Client::connect(server.local_addr);
    let mask = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(40, 24, |x, _| {
        image::Luma([if x < 20 { 0 } else { 255 }])
    }));
    for (action, model) in [("inpaint", "tiny-inpaint"), ("outpaint", "tiny-sd1")] {
        let mut o = options(action, model, 2, 4, 64, 64);
        o.insert("pixels".into(), json!(init_png()));
        o.insert("mask".into(), json!(png_of(&mask)));
        c.send(&request(action, action, o));
        let r = c.collect_job(action);
        assert_done(&r, 1, 2);
        assert_eq!(decode_png(&r.images[0]).dimensions(), (64, 64));
    }
    server.shutdown();
}
