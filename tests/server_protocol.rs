//! Whole-server protocol tests over loopback TCP with plugin-exact framing: versions on
//! connect, a legacy txt2img, numbers as strings, control actions, and bad input that never
//! ends the session.

mod server_common;

use std::io::Write;
use std::time::Duration;

use serde_json::json;
use server_common::*;

const STEP: Duration = Duration::from_millis(2);

#[test]
fn versions_then_legacy_txt2img() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    // Plugin-style request: every number as a string, keys of the other tabs present.
    let mut req = txt2img("job-a", "a red fox", 5, 1234, 64);
    req["options"]["img2img_steps"] = json!("99");
    req["options"]["pos_x"] = json!(3);
    req["options"]["pos_y"] = json!("7");
    c.send(&req);
    let r = c.collect_job("job-a");
    assert_eq!(r.progress, (0..5).map(|i| (i, 5)).collect::<Vec<_>>());
    assert_eq!(r.images.len(), 1);
    let img = &r.images[0];
    // Legacy keys first, in order, then Part 2 keys.
    let keys: Vec<&String> = img.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["image", "reqtype", "pos_x", "pos_y", "job_id", "seed"]
    );
    assert_eq!(img["reqtype"], json!("txt2img"));
    assert_eq!(img["pos_x"], json!(3));
    assert_eq!(img["pos_y"], json!("7"));
    assert_eq!(img["seed"], json!(1234));
    let png = decode_png(img);
    assert_eq!(png.dimensions(), (64, 64));
    assert_eq!(*png.get_pixel(10, 10), seed_colour(1234));
    let done = r.end.unwrap();
    assert_eq!(done["event"], json!("done"));
    assert_eq!(done["images"], json!(1));
    assert_eq!(done["reqtype"], json!("txt2img"));
    server.shutdown();
}

#[test]
fn progress_message_shape_is_python_style() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("p1", "x", 2, 1, 64));
    // Read the raw bytes of the first progress message and compare byte-exactly.
    let mut packet = vec![0u8; PACKET];
    std::io::Read::read_exact(&mut c.stream, &mut packet).unwrap();
    let end = packet.iter().position(|b| *b == 0).unwrap();
    assert_eq!(
        &packet[..end],
        br#"{"action": 4, "step": 0, "total": 2, "reqtype": "txt2img", "job_id": "p1"}"#
    );
    server.shutdown();
}

#[test]
fn default_seed_size_and_assigned_job_id() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    c.send(
        &json!({"action": "txt2img", "options": {"txt2img_steps": 2, "txt2img_n_samples": "2"}}),
    );
    let first = c.recv_until(|m| m["action"] == json!(4));
    let job_id = first["job_id"].as_str().unwrap().to_string();
    assert!(!job_id.is_empty());
    let r = c.collect_job(&job_id);
    assert_eq!(r.images.len(), 2);
    // Legacy default seed 42; image i uses seed + i.
    assert_eq!(r.images[0]["seed"], json!(42));
    assert_eq!(r.images[1]["seed"], json!(43));
    assert_eq!(r.images[0]["pos_x"], json!(0));
    assert_eq!(r.end_event(), "done");
    server.shutdown();
}

#[test]
fn random_seed_is_reported() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    let mut req = txt2img("r", "x", 1, 0, 64);
    req["options"]["txt2img_seed"] = json!("");
    c.send(&req);
    let r = c.collect_job("r");
    let seed = r.images[0]["seed"].as_u64().unwrap();
    assert_eq!(*decode_png(&r.images[0]).get_pixel(0, 0), seed_colour(seed));
    server.shutdown();
}

#[test]
fn bad_input_never_kills_the_session() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    c.send_bytes(b"{not json");
    let e = c.recv().unwrap();
    assert_eq!(e["event"], json!("error"));
    assert_eq!(e["code"], json!("bad_request"));
    c.send(&json!({"action": "dance"}));
    assert_eq!(c.recv().unwrap()["code"], json!("unknown_action"));
    let mut bad = txt2img("bad", "x", 3, 1, 64);
    bad["options"]["txt2img_steps"] = json!("1000");
    c.send(&bad);
    let e = c.recv().unwrap();
    assert_eq!(e["code"], json!("invalid_field"));
    assert_eq!(e["job_id"], json!("bad"));
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("txt2img_steps") && msg.contains("150") && msg.contains("1000"),
        "{msg}"
    );
    let mut bad = txt2img("bad2", "x", 3, 1, 64);
    bad["options"]["txt2img_width"] = json!(100);
    c.send(&bad);
    assert_eq!(c.recv().unwrap()["code"], json!("invalid_field"));
    c.send(&json!({"action": "img2img", "job_id": "i", "options": {"pixels": "%%%"}}));
    assert_eq!(c.recv().unwrap()["code"], json!("bad_request"));
    c.send(&json!({"action": "img2img", "job_id": "i2", "options": {}}));
    let e = c.recv().unwrap();
    assert_eq!(e["code"], json!("invalid_field"));
    assert!(e["message"].as_str().unwrap().contains("pixels"));
    // Unknown model and a path outside the roots.
    let mut m = txt2img("m1", "x", 1, 1, 64);
    m["options"]["txt2img_model"] = json!("no-such-model");
    c.send(&m);
    assert_eq!(c.recv().unwrap()["code"], json!("model_not_found"));
    let mut m = txt2img("m2", "x", 1, 1, 64);
    m["options"]["txt2img_model"] = json!("../../etc");
    c.send(&m);
    assert_eq!(c.recv().unwrap()["code"], json!("forbidden_path"));
    // The same connection still serves a valid request.
    c.send(&txt2img("ok", "x", 2, 5, 64));
    assert_eq!(c.collect_job("ok").end_event(), "done");
    server.shutdown();
}

#[test]
fn img2img_and_inpaint_round_trip() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    let png = {
        let img = image::RgbImage::from_pixel(80, 80, image::Rgb([1, 2, 3]));
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
    };
    c.send(&json!({"action": "img2img", "job_id": "i", "options": {
        "img2img_steps": "10", "img2img_width": "64", "img2img_height": "64",
        "img2img_strength": "0.5", "pixels": png}}));
    let r = c.collect_job("i");
    // total is the number of steps actually run: int(steps * strength).
    assert_eq!(r.progress.len(), 5);
    assert_eq!(r.progress[0], (0, 5));
    assert_eq!(decode_png(&r.images[0]).dimensions(), (64, 64));
    assert_eq!(r.images[0]["reqtype"], json!("img2img"));
    c.send(&json!({"action": "inpaint", "job_id": "p", "options": {
        "inpaint_steps": 2, "inpaint_model": "tiny-inpaint", "pixels": png, "mask": null}}));
    let r = c.collect_job("p");
    assert_eq!(r.end_event(), "done");
    assert_eq!(decode_png(&r.images[0]).dimensions(), (80, 80));
    server.shutdown();
}

#[test]
fn ping_models_update() {
    let server = start(STEP);
    let mut c = Client::connect(server.local_addr);
    c.send(&json!({"action": "ping"}));
    let p = c.recv().unwrap();
    assert_eq!(p["event"], json!("pong"));
    assert_eq!(p["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(p["queue"], json!(0));
    c.send(&json!({"action": "models"}));
    let m = c.recv().unwrap();
    let names: Vec<&str> = m["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tiny-inpaint", "tiny-sd1", "tiny-sd2"]);
    assert_eq!(m["models"][2]["version"], json!("v2"));
    assert_eq!(m["models"][0]["kind"], json!("inpaint"));
    c.send(&json!({"action": "update"}));
    assert_eq!(c.recv().unwrap(), json!({"upgrade_complete": true}));
    server.shutdown();
}

#[test]
fn oversized_message_gets_too_large_and_close() {
    let mut config = test_config();
    config.max_message_bytes = 8 * 1024;
    let server = start_with(config, STEP);
    let mut c = Client::connect(server.local_addr);
    // Send 20 KiB of data packets without an EOM: refused once past the cap.
    let junk = vec![b'a'; PACKET];
    for _ in 0..20 {
        if c.stream.write_all(&junk).is_err() {
            break;
        }
    }
    let e = c.recv().unwrap();
    assert_eq!(e["code"], json!("too_large"));
    assert!(c.recv().is_none(), "connection must be closed");
    // Others are unaffected.
    let mut d = Client::connect(server.local_addr);
    d.send(&txt2img("fine", "x", 1, 1, 64));
    assert_eq!(d.collect_job("fine").end_event(), "done");
    server.shutdown();
}

#[test]
fn stalled_mid_message_client_is_dropped() {
    let mut config = test_config();
    config.read_timeout_secs = 0.3;
    let server = start_with(config, STEP);
    let mut c = Client::connect(server.local_addr);
    // Half a packet, then silence.
    c.stream.write_all(&[b'{'; 100]).unwrap();
    let t0 = std::time::Instant::now();
    assert!(c.recv().is_none());
    assert!(t0.elapsed() < Duration::from_secs(5));
    // An idle client between messages is not dropped.
    let mut idle = Client::connect(server.local_addr);
    std::thread::sleep(Duration::from_millis(600));
    idle.send(&json!({"action": "ping"}));
    assert_eq!(idle.recv().unwrap()["event"], json!("pong"));
    server.shutdown();
}

#[test]
fn auth_token_required_when_configured() {
    let mut config = test_config();
    config.token = "s3cret".into();
    let server = start_with(config, STEP);
    // Anything before auth: unauthorized, then the connection closes.
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("x", "x", 1, 1, 64));
    assert_eq!(c.recv().unwrap()["code"], json!("unauthorized"));
    assert!(c.recv().is_none());
    // A wrong token is refused the same way.
    let mut c = Client::connect(server.local_addr);
    c.send(&json!({"action": "auth", "token": "guess"}));
    assert_eq!(c.recv().unwrap()["code"], json!("unauthorized"));
    assert!(c.recv().is_none());
    // The right token unlocks the session.
    let mut c = Client::connect(server.local_addr);
    c.send(&json!({"action": "auth", "token": "s3cret"}));
    assert_eq!(c.recv().unwrap()["event"], json!("auth"));
    c.send(&txt2img("ok", "x", 1, 1, 64));
    assert_eq!(c.collect_job("ok").end_event(), "done");
    server.shutdown();
}
