//! The HTTP front end and the socket protocol produce the same image for the same model,
//! seed and settings: the real generator on the tiny fixture models, the A1111 endpoints
//! against the legacy protocol. The HTTP PNG differs only by its `parameters` text chunk.

mod e2e_common;
mod http_common;
mod server_common;

use e2e_common::{
    fixtures, image_b64, init_png, mask_png, options, real_factory, request, start_real_with,
};
use http_common::{png_bytes, post_json};
use runai::config::Config;
use serde_json::{json, Value};
use server_common::{test_config, Client};

/// The PNG's chunks without its text chunks.
fn without_text(png: &[u8]) -> Vec<u8> {
    let mut out = png[..8].to_vec();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        if kind != b"tEXt" && kind != b"iTXt" {
            out.extend_from_slice(&png[at..at + 12 + len]);
        }
        at += 12 + len;
    }
    out
}

fn pixels(png: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8()
}

fn assert_same(legacy_b64: &str, http: &Value, what: &str) {
    let legacy = png_bytes(&json!(legacy_b64));
    let http = png_bytes(http);
    assert_eq!(
        pixels(&legacy).as_raw(),
        pixels(&http).as_raw(),
        "{what}: pixels differ"
    );
    assert_eq!(
        without_text(&http),
        legacy,
        "{what}: PNG differs beyond its text chunk"
    );
    assert_ne!(http, legacy, "{what}: the HTTP PNG carries its infotext");
}

#[test]
fn http_images_equal_the_legacy_protocols() {
    let config = Config {
        http_port: Some(0),
        ..test_config()
    };
    let server = start_real_with(config, real_factory(), &[fixtures().join("models")]);
    let http = server.http_addr.unwrap();
    let mut c = Client::connect(server.local_addr);
    let cases = [
        ("tiny-sd1", "euler_a", "Euler a", None, 64, 64),
        (
            "tiny-sd2",
            "dpmpp_2m_karras",
            "DPM++ 2M Karras",
            None,
            96,
            64,
        ),
        (
            "tiny-sd1",
            "dpmpp_2m_karras",
            "DPM++ 2M",
            Some("Karras"),
            64,
            64,
        ),
        ("tiny-sd1", "ddim", "DDIM", None, 64, 64),
    ];
    for (i, (model, legacy_sched, sampler, schedule, w, h)) in cases.into_iter().enumerate() {
        let job = format!("t{i}");
        let mut o = options("txt2img", model, 3, 9, w, h);
        o.insert("txt2img_scheduler".into(), json!(legacy_sched));
        c.send(&request("txt2img", &job, o));
        let legacy = c.collect_job(&job);
        let mut body = json!({
            "prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "steps": 3,
            "cfg_scale": 7.5, "seed": 9, "width": w, "height": h, "sampler_name": sampler,
            "override_settings": {"sd_model_checkpoint": model},
        });
        if let Some(s) = schedule {
            body["scheduler"] = json!(s);
        }
        let r = post_json(http, "/sdapi/v1/txt2img", &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_same(
            &image_b64(&legacy, 0),
            &r.json()["images"][0],
            &format!("{model} {sampler}"),
        );
    }
    // Inpainting on the 9-channel model: image + mask, strength 1, no mask blur.
    let mut o = options("inpaint", "tiny-inpaint", 3, 21, 64, 64);
    o.insert("pixels".into(), json!(init_png()));
    o.insert("mask".into(), json!(mask_png()));
    c.send(&request("inpaint", "in", o));
    let legacy = c.collect_job("in");
    let body = json!({
        "prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "steps": 3,
        "cfg_scale": 7.5, "seed": 21, "width": 64, "height": 64, "sampler_name": "Euler a",
        "init_images": [format!("data:image/png;base64,{}", init_png())], "mask": mask_png(),
        "denoising_strength": 1.0, "mask_blur": 0, "inpainting_fill": 1,
        "override_settings": {"sd_model_checkpoint": "tiny-inpaint"},
    });
    let r = post_json(http, "/sdapi/v1/img2img", &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_same(&image_b64(&legacy, 0), &r.json()["images"][0], "inpaint");
    // img2img at strength 0.5.
    let mut o = options("img2img", "tiny-sd1", 4, 5, 64, 64);
    o.insert("pixels".into(), json!(init_png()));
    o.insert("img2img_strength".into(), json!("0.5"));
    c.send(&request("img2img", "i2i", o));
    let legacy = c.collect_job("i2i");
    let body = json!({
        "prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "steps": 4,
        "cfg_scale": 7.5, "seed": 5, "width": 64, "height": 64, "sampler_index": "Euler a",
        "init_images": [init_png()], "denoising_strength": 0.5,
    });
    let r = post_json(http, "/sdapi/v1/img2img", &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_same(&image_b64(&legacy, 0), &r.json()["images"][0], "img2img");
    server.shutdown();
}
