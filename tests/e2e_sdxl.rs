//! SDXL over loopback TCP with plugin-exact framing, on the real generator and registry: the
//! tiny SDXL as a diffusers folder and as its SGM single file is listed as `sdxl`, the
//! plugin's unchanged requests (512x512, other multiples of 8, inpaint) work on it, and the
//! folder and the single file give the same PNG bytes.

mod e2e_common;
mod fixture_common;
mod server_common;

use e2e_common::*;
use fixture_common::link;
use serde_json::json;
use server_common::{decode_png, test_config, Client};

fn sdxl_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ext = fixtures().join("ext");
    link(
        &ext.join("models/tiny-sdxl"),
        &dir.path().join("xl/tiny-sdxl"),
    );
    for e in ["safetensors", "yaml"] {
        link(
            &ext.join(format!("single_file/tiny-sdxl.{e}")),
            &dir.path().join(format!("xl/tiny-sdxl.{e}")),
        );
    }
    dir
}

#[test]
fn sdxl_folder_and_single_file_serve_the_plugin_unchanged() {
    let root = sdxl_root();
    let server = start_real_with(test_config(), real_factory(), &[root.path().to_path_buf()]);
    let mut c = Client::connect(server.local_addr);

    c.send(&json!({"action": "models"}));
    let models = c.recv().unwrap();
    let listed: Vec<_> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].clone(), m["version"].clone(), m["format"].clone()))
        .collect();
    assert_eq!(listed.len(), 2, "{models}");
    for (name, format) in [
        ("xl/tiny-sdxl", "diffusers"),
        ("xl/tiny-sdxl.safetensors", "safetensors"),
    ] {
        assert!(
            listed.contains(&(json!(name), json!("sdxl"), json!(format))),
            "{models}"
        );
    }

    // Folder and single file: the same PNG bytes (non-square, with the plugin's empty-string
    // negative prompt zeroed as AUTOMATIC1111 does).
    let mut pngs = Vec::new();
    for model in ["xl/tiny-sdxl", "xl/tiny-sdxl.safetensors"] {
        let mut req = txt2img(model, model, 3, 7, 96, 64);
        req["options"]["txt2img_negative_prompt"] = json!("");
        c.send(&req);
        let r = c.collect_job(model);
        assert_done(&r, 1, 3);
        assert_eq!(decode_png(&r.images[0]).dimensions(), (96, 64));
        pngs.push(image_b64(&r, 0));
    }
    assert_eq!(pngs[0], pngs[1], "folder and single file differ");

    // The plugin's 512x512, as it sends it (one step keeps the tiny VAE decode short).
    c.send(&txt2img(
        "p512",
        "xl/tiny-sdxl.safetensors",
        1,
        42,
        512,
        512,
    ));
    let r = c.collect_job("p512");
    assert_done(&r, 1, 1);
    assert_eq!(decode_png(&r.images[0]).dimensions(), (512, 512));

    // Inpaint and img2img with the plugin's options on the single file.
    let mut o = options("inpaint", "xl/tiny-sdxl.safetensors", 4, 3, 64, 64);
    o.insert("pixels".into(), json!(init_png()));
    o.insert("mask".into(), json!(mask_png()));
    c.send(&request("inpaint", "inp", o));
    let r = c.collect_job("inp");
    assert_eq!(r.end_event(), "done", "{:?}", r.end);
    assert_eq!(decode_png(&r.images[0]).dimensions(), (64, 64));
    let mut o = options("img2img", "xl/tiny-sdxl", 4, 3, 64, 64);
    o.insert("pixels".into(), json!(init_png()));
    c.send(&request("img2img", "i2i", o));
    let r = c.collect_job("i2i");
    assert_eq!(r.end_event(), "done", "{:?}", r.end);

    // Turbo-style: LCM and trailing spacing are accepted per request and change the image.
    let mut req = txt2img("lcm", "xl/tiny-sdxl", 2, 7, 64, 64);
    req["options"]["txt2img_scheduler"] = json!("lcm");
    req["options"]["txt2img_scale"] = json!("1.0");
    c.send(&req);
    let lcm = c.collect_job("lcm");
    assert_done(&lcm, 1, 2);
    let mut req = txt2img("trailing", "xl/tiny-sdxl", 2, 7, 64, 64);
    req["options"]["txt2img_timestep_spacing"] = json!("trailing");
    c.send(&req);
    let trailing = c.collect_job("trailing");
    let mut req = txt2img("leading", "xl/tiny-sdxl", 2, 7, 64, 64);
    req["options"]["txt2img_timestep_spacing"] = json!("leading");
    c.send(&req);
    let leading = c.collect_job("leading");
    assert_done(&trailing, 1, 2);
    assert_ne!(image_b64(&trailing, 0), image_b64(&leading, 0));
    server.shutdown();
}
