//! End to end over loopback TCP with plugin-exact framing, on the real generator and the real
//! registry with the tiny fixture models: every legacy action returns real 8-bit RGB PNGs of
//! the requested size with per-step progress, position echo, seeds and `done`; outputs are
//! reproducible byte for byte; batches use seed + i.

mod e2e_common;
mod server_common;

use e2e_common::*;
use serde_json::json;
use server_common::{decode_png, Client};

#[test]
fn txt2img_square_and_non_square_are_real_reproducible_pngs() {
    let server = start_real();
    let mut c = Client::connect(server.local_addr);
    let t0 = std::time::Instant::now();
    let mut req = txt2img("sq", "tiny-sd1", 4, 1234, 64, 64);
    req["options"]["pos_x"] = json!(128);
    req["options"]["pos_y"] = json!("64");
    c.send(&req);
    let r = c.collect_job("sq");
    println!("first 64x64 txt2img (with model load): {:?}", t0.elapsed());
    assert_done(&r, 1, 4);
    let img = &r.images[0];
    assert_eq!(img["reqtype"], json!("txt2img"));
    assert_eq!(img["pos_x"], json!(128));
    assert_eq!(img["pos_y"], json!("64"));
    assert_eq!(img["seed"], json!(1234));
    let png = decode_png(img);
    assert_eq!(png.dimensions(), (64, 64));
    // Random weights still give a picture, not a flat colour.
    let first = *png.get_pixel(0, 0);
    assert!(
        png.pixels().any(|p| *p != first),
        "image is one flat colour"
    );

    // Same request again: identical bytes.
    c.send(&txt2img("sq2", "tiny-sd1", 4, 1234, 64, 64));
    let again = c.collect_job("sq2");
    assert_eq!(image_b64(&again, 0), image_b64(&r, 0));

    // Non-square 96x64: the requested width and height, in that order.
    let t0 = std::time::Instant::now();
    c.send(&txt2img("wide", "tiny-sd1", 4, 1234, 96, 64));
    let wide = c.collect_job("wide");
    println!("96x64 txt2img, 4 steps: {:?}", t0.elapsed());
    assert_done(&wide, 1, 4);
    assert_eq!(decode_png(&wide.images[0]).dimensions(), (96, 64));
    server.shutdown();
}

#[test]
fn batch_uses_consecutive_seeds_and_matches_solo_runs() {
    let server = start_real();
    let mut c = Client::connect(server.local_addr);
    let mut req = txt2img("batch", "", 3, 500, 64, 64);
    req["options"]["txt2img_n_samples"] = json!("2");
    c.send(&req);
    let batch = c.collect_job("batch");
    assert_done(&batch, 2, 3);
    assert_eq!(batch.images[0]["seed"], json!(500));
    assert_eq!(batch.images[1]["seed"], json!(501));
    assert_ne!(image_b64(&batch, 0), image_b64(&batch, 1));
    c.send(&txt2img("solo0", "", 3, 500, 64, 64));
    c.send(&txt2img("solo1", "", 3, 501, 64, 64));
    let solo0 = c.collect_job("solo0");
    let solo1 = c.collect_job("solo1");
    assert_eq!(image_b64(&batch, 0), image_b64(&solo0, 0));
    assert_eq!(image_b64(&batch, 1), image_b64(&solo1, 0));
    server.shutdown();
}

#[test]
fn numbers_as_json_numbers_or_strings_give_the_same_image() {
    let server = start_real();
    let mut c = Client::connect(server.local_addr);
    // Strings, as the plugin sends them.
    c.send(&txt2img("s", "tiny-sd1", 3, 77, 64, 64));
    // The same request with JSON numbers, a float step count and a legacy-style null.
    let req = json!({"action": "txt2img", "job_id": "n", "options": {
        "txt2img_prompt": "a lighthouse at dusk", "txt2img_negative_prompt": "blurry",
        "txt2img_steps": 3.0, "txt2img_scale": 7.5, "txt2img_seed": 77,
        "txt2img_width": 64, "txt2img_height": 64, "txt2img_n_samples": 1,
        "txt2img_scheduler": "euler_a", "txt2img_model": "tiny-sd1", "txt2img_ddim_eta": null,
        "do_nsfw_filter": false}});
    c.send(&req);
    let s = c.collect_job("s");
    let n = c.collect_job("n");
    assert_done(&s, 1, 3);
    assert_done(&n, 1, 3);
    assert_eq!(image_b64(&s, 0), image_b64(&n, 0));
    server.shutdown();
}

#[test]
fn img2img_runs_steps_times_strength_and_resizes() {
    let server = start_real();
    let mut c = Client::connect(server.local_addr);
    let mut o = options("img2img", "tiny-sd1", 10, 9, 64, 64);
    o.insert("img2img_strength".into(), json!("0.5"));
    o.insert("pixels".into(), json!(init_png()));
    o.insert("pos_x".into(), json!(5));
    c.send(&request("img2img", "i", o.clone()));
    let r = c.collect_job("i");
    // total = int(steps * strength)
    assert_done(&r, 1, 5);
    assert_eq!(r.images[0]["reqtype"], json!("img2img"));
    assert_eq!(r.images[0]["pos_x"], json!(5));
    assert_eq!(r.images[0]["seed"], json!(9));
    assert_eq!(decode_png(&r.images[0]).dimensions(), (64, 64));
    c.send(&request("img2img", "i-again", o.clone()));
    assert_eq!(image_b64(&c.collect_job("i-again"), 0), image_b64(&r, 0));

    // A 96x64 request from the 64x64 init image: resized to the requested size.
    o.insert("img2img_width".into(), json!("96"));
    o.insert("img2img_strength".into(), json!("0.75"));
    c.send(&request("img2img", "wide", o));
    let r = c.collect_job("wide");
    assert_done(&r, 1, 7);
    assert_eq!(decode_png(&r.images[0]).dimensions(), (96, 64));
    server.shutdown();
}

#[test]
fn inpaint_and_outpaint_on_9_and_4_channel_models() {
    let server = start_real();
    let mut c = Client::connect(server.local_addr);
    for (action, model, job) in [
        ("inpaint", "tiny-inpaint", "in9"),
        ("inpaint", "tiny-sd1", "in4"),
        ("outpaint", "tiny-inpaint", "out9"),
    ] {
        let mut o = options(action, model, 3, 21, 64, 64);
        o.insert("pixels".into(), json!(init_png()));
        o.insert("mask".into(), json!(mask_png()));
        o.insert("pos_y".into(), json!(32));
        c.send(&request(action, job, o.clone()));
        let r = c.collect_job(job);
        // Strength defaults to 1.0 for inpaint/outpaint: every step runs.
        assert_done(&r, 1, 3);
        assert_eq!(r.images[0]["reqtype"], json!(action));
        assert_eq!(r.images[0]["pos_y"], json!(32));
        assert_eq!(r.images[0]["seed"], json!(21));
        let png = decode_png(&r.images[0]);
        assert_eq!(png.dimensions(), (64, 64), "{job}");
        c.send(&request(action, &format!("{job}-again"), o));
        let again = c.collect_job(&format!("{job}-again"));
        assert_eq!(
            image_b64(&again, 0),
            image_b64(&r, 0),
            "{job} not reproducible"
        );
    }
    // Non-square inpaint on the 9-channel model, from the 64x64 image and mask.
    let mut o = options("inpaint", "tiny-inpaint", 2, 3, 96, 64);
    o.insert("pixels".into(), json!(init_png()));
    o.insert("mask".into(), json!(mask_png()));
    c.send(&request("inpaint", "in-wide", o));
    let r = c.collect_job("in-wide");
    assert_done(&r, 1, 2);
    assert_eq!(decode_png(&r.images[0]).dimensions(), (96, 64));
    server.shutdown();
}
