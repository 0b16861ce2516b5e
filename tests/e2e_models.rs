//! End to end over loopback TCP: every model format served over the wire (diffusers folder,
//! `.safetensors` and `.ckpt` single files in the seed's and AUTOMATIC1111's layouts), the
//! `models` listing, refused model paths, a corrupt model that fails only its own job, and the
//! legacy `convert` action writing a diffusers folder that then generates the same image.

mod e2e_common;
mod server_common;

use std::path::PathBuf;

use e2e_common::*;
use serde_json::{json, Value};
use server_common::{decode_png, test_config, Client};

fn model_entry<'a>(models: &'a Value, name: &str) -> &'a Value {
    models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == json!(name))
        .unwrap_or_else(|| panic!("{name} not listed in {models}"))
}

#[test]
fn every_format_and_layout_is_listed_and_served() {
    let sf = SingleFileRoot::new();
    let roots = vec![fixtures().join("models"), sf.path().to_path_buf()];
    let server = start_real_with(test_config(), real_factory(), &roots);
    let mut c = Client::connect(server.local_addr);

    c.send(&json!({"action": "models"}));
    let models = c.recv().unwrap();
    assert_eq!(models["event"], json!("models"));
    for (name, version, kind, format) in [
        ("tiny-sd1", "v1", "txt2img", "diffusers"),
        ("tiny-sd2", "v2", "txt2img", "diffusers"),
        ("tiny-inpaint", "v1", "inpaint", "diffusers"),
        ("v1/tiny-sd1.safetensors", "v1", "txt2img", "safetensors"),
        ("v1/tiny-sd1.ckpt", "v1", "txt2img", "ckpt"),
        ("v2/tiny-sd2.safetensors", "v2", "txt2img", "safetensors"),
        ("v2/tiny-sd2.ckpt", "v2", "txt2img", "ckpt"),
        (
            "models/Stable-diffusion/tiny-sd1.ckpt",
            "v1",
            "txt2img",
            "ckpt",
        ),
    ] {
        let m = model_entry(&models, name);
        assert_eq!(m["version"], json!(version), "{m}");
        assert_eq!(m["kind"], json!(kind), "{m}");
        assert_eq!(m["format"], json!(format), "{m}");
        let path = PathBuf::from(m["path"].as_str().unwrap());
        assert!(path.is_absolute() && path.exists(), "{m}");
    }
    assert_eq!(models["models"].as_array().unwrap().len(), 8, "{models}");

    // Each single file generates over the wire, and every copy of the same weights gives the
    // diffusers folder's image byte for byte, whatever its container, folder or spelling.
    let sd2_abs = sf.path().join("v2/tiny-sd2.safetensors");
    let groups = [
        vec![
            "tiny-sd1".to_string(),
            "v1/tiny-sd1.safetensors".to_string(),
            "v1/tiny-sd1.ckpt".to_string(),
            "models/Stable-diffusion/tiny-sd1.ckpt".to_string(),
        ],
        vec![
            "tiny-sd2".to_string(),
            sd2_abs.to_string_lossy().into_owned(),
            "v2/tiny-sd2.ckpt".to_string(),
        ],
    ];
    let mut firsts = Vec::new();
    for group in &groups {
        let mut images = Vec::new();
        for (i, model) in group.iter().enumerate() {
            let job = format!("m{i}");
            c.send(&txt2img(&job, model, 3, 11, 64, 64));
            let r = c.collect_job(&job);
            assert_done(&r, 1, 3);
            assert_eq!(decode_png(&r.images[0]).dimensions(), (64, 64));
            images.push(image_b64(&r, 0));
        }
        for (model, img) in group.iter().zip(&images) {
            assert!(*img == images[0], "{model} differs from {}", group[0]);
        }
        firsts.push(images[0].clone());
    }
    assert_ne!(firsts[0], firsts[1], "SD1 and SD2 must differ");
    server.shutdown();
}

#[test]
fn refused_and_missing_models_then_service_continues() {
    let server = start_real();
    let mut c = Client::connect(server.local_addr);
    for (model, code) in [
        ("../models/tiny-sd1", "forbidden_path"),
        ("tiny-sd1/../../single_file/tiny-sd1.ckpt", "forbidden_path"),
        ("/etc/passwd", "forbidden_path"),
        ("no-such-model", "model_not_found"),
        ("v1/missing.safetensors", "model_not_found"),
    ] {
        c.send(&txt2img("m", model, 2, 1, 64, 64));
        let e = c.recv().unwrap();
        assert_eq!(e["event"], json!("error"), "{model}: {e}");
        assert_eq!(e["code"], json!(code), "{model}: {e}");
        assert_eq!(e["job_id"], json!("m"));
        assert_eq!(e["reqtype"], json!("txt2img"));
    }
    c.send(&txt2img("ok", "tiny-sd1", 2, 1, 64, 64));
    assert_done(&c.collect_job("ok"), 1, 2);
    server.shutdown();
}

#[test]
fn corrupt_model_fails_its_job_and_the_worker_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures().join("single_file/tiny-sd1.safetensors")).unwrap();
    std::fs::write(
        tmp.path().join("broken.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    // A header that is not JSON at all.
    let mut junk = 40u64.to_le_bytes().to_vec();
    junk.extend_from_slice(&[b'#'; 100]);
    std::fs::write(tmp.path().join("junk.safetensors"), junk).unwrap();
    let roots = vec![fixtures().join("models"), tmp.path().to_path_buf()];
    let server = start_real_with(test_config(), real_factory(), &roots);
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("before", "tiny-sd1", 2, 3, 64, 64));
    let before = c.collect_job("before");
    assert_done(&before, 1, 2);
    for model in ["broken.safetensors", "junk.safetensors"] {
        c.send(&txt2img("bad", model, 2, 3, 64, 64));
        let r = c.collect_job("bad");
        let end = r.end.unwrap();
        assert_eq!(end["event"], json!("error"), "{model}: {end}");
        assert_eq!(end["code"], json!("unavailable"), "{model}: {end}");
        assert!(r.images.is_empty());
        // Others keep being served, by the same (not rebuilt) generator.
        c.send(&txt2img("after", "tiny-sd1", 2, 3, 64, 64));
        let after = c.collect_job("after");
        assert_done(&after, 1, 2);
        assert_eq!(image_b64(&after, 0), image_b64(&before, 0));
    }
    server.shutdown();
}

#[test]
fn convert_over_the_wire_writes_a_folder_that_generates_the_same_image() {
    let sf = SingleFileRoot::new();
    let roots = vec![sf.path().to_path_buf()];
    let server = start_real_with(test_config(), real_factory(), &roots);
    let mut c = Client::connect(server.local_addr);

    c.send(&txt2img("single", "v1/tiny-sd1.safetensors", 3, 5, 64, 64));
    let single = c.collect_job("single");
    assert_done(&single, 1, 3);

    let t0 = std::time::Instant::now();
    c.send(&json!({"action": "convert", "job_id": "cv",
        "options": {"model_path": "v1/tiny-sd1.safetensors", "txt2img_steps": "20"}}));
    let done = c.recv().unwrap();
    println!("convert over the wire: {:?}", t0.elapsed());
    assert_eq!(done["event"], json!("done"), "{done}");
    assert_eq!(done["reqtype"], json!("convert"));
    assert_eq!(done["job_id"], json!("cv"));
    assert_eq!(done["model"], json!("v1/tiny-sd1"));
    // Nothing a legacy client would act on.
    for key in ["image", "versions", "action"] {
        assert!(done.get(key).is_none(), "{done}");
    }
    let folder = sf.path().join("v1/tiny-sd1");
    assert!(folder.join("model_index.json").is_file());
    assert!(sf.path().join("v1/tiny-sd1.safetensors").is_file());

    c.send(&json!({"action": "models"}));
    let models = c.recv().unwrap();
    let m = model_entry(&models, "v1/tiny-sd1");
    assert_eq!(m["format"], json!("diffusers"));
    assert_eq!(m["version"], json!("v1"));

    c.send(&txt2img("folder", "v1/tiny-sd1", 3, 5, 64, 64));
    let folder_run = c.collect_job("folder");
    assert_done(&folder_run, 1, 3);
    assert_eq!(image_b64(&folder_run, 0), image_b64(&single, 0));

    // A .ckpt converts too (its folder name comes from the file name).
    c.send(&json!({"action": "convert", "options": {"model_path": "models/Stable-diffusion/tiny-sd1.ckpt"}}));
    let done = c.recv().unwrap();
    assert_eq!(done["event"], json!("done"), "{done}");
    assert_eq!(done["model"], json!("models/Stable-diffusion/tiny-sd1"));

    // Refusals: the folder exists now, a diffusers folder, escapes, nothing named.
    for (opts, code) in [
        (
            json!({"model_path": "v1/tiny-sd1.safetensors"}),
            "unavailable",
        ),
        (json!({"model_path": "v1/tiny-sd1"}), "unavailable"),
        (
            json!({"model_path": "../v1/tiny-sd1.ckpt"}),
            "forbidden_path",
        ),
        (json!({"model_path": "v1/nothing.ckpt"}), "model_not_found"),
        (json!({}), "invalid_field"),
    ] {
        c.send(&json!({"action": "convert", "job_id": "bad", "options": opts}));
        let e = c.recv().unwrap();
        assert_eq!(e["event"], json!("error"), "{opts}: {e}");
        assert_eq!(e["code"], json!(code), "{opts}: {e}");
        assert_eq!(e["job_id"], json!("bad"));
        assert_eq!(e["reqtype"], json!("convert"));
    }
    // The session still serves generation.
    c.send(&txt2img("end", "v1/tiny-sd1", 2, 5, 64, 64));
    assert_done(&c.collect_job("end"), 1, 2);
    server.shutdown();
}

#[test]
fn cli_convert_writes_a_folder_the_server_then_serves() {
    let sf = SingleFileRoot::new();
    let src = sf.path().join("v2/tiny-sd2.safetensors");
    let dst = sf.path().join("v2/tiny-sd2-diffusers");
    let run = |dst: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_runai"))
            .arg("convert")
            .arg(&src)
            .arg(dst)
            .env("RUST_LOG", "warn")
            .output()
            .expect("runai convert runs")
    };
    let out = run(&dst);
    assert!(out.status.success(), "{out:?}");
    assert!(dst.join("model_index.json").is_file());
    // Never overwrites: a second run fails and leaves the folder alone.
    let again = run(&dst);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    assert!(dst.join("model_index.json").is_file());

    let server = start_real_with(test_config(), real_factory(), &[sf.path().to_path_buf()]);
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("file", "v2/tiny-sd2.safetensors", 3, 8, 64, 64));
    c.send(&txt2img("folder", "v2/tiny-sd2-diffusers", 3, 8, 64, 64));
    let file = c.collect_job("file");
    let folder = c.collect_job("folder");
    assert_done(&file, 1, 3);
    assert_done(&folder, 1, 3);
    assert_eq!(image_b64(&file, 0), image_b64(&folder, 0));
    server.shutdown();
}
