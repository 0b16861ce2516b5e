//! The safety checker over the wire, with the tiny checker of tests/fixtures/ext: a generator
//! that returns the checker's fixture images (image `seed % 8`, three of them flagged by
//! design: 3, 4 and 7) runs behind a real in-process server; the image messages carry
//! `nsfw` and the flagged images come back black or blurred as the administrator's mode says,
//! tightened but never loosened by the request's `do_nsfw_filter`.

mod server_common;

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;
use runai::app::{spawn_server, AppError, ServerThread};
use runai::config::Config;
use runai::engine::{GenerateError, GenerateJob, Generator, Progress};
use runai::pipeline::params::GeneratedImage;
use runai::registry::Registry;
use serde_json::{json, Value};
use server_common::*;

const INPUTS: [&str; 8] = [
    "sc_gradient_64x64.png",
    "sc_scene_512x512.png",
    "sc_tall_96x64.png",
    "sc_wide_64x96.png",
    "sc_nearblack_64x64.png",
    "sc_noise_64x64.png",
    "sc_blobs_256x256.png",
    "sc_checker_80x128.png",
];
const FLAGGED: [u64; 3] = [3, 4, 7];

fn ext() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ext")
}

fn fixture_image(seed: u64) -> RgbImage {
    let name = INPUTS[(seed % 8) as usize];
    image::open(ext().join("inputs").join(name))
        .unwrap()
        .to_rgb8()
}

/// Returns fixture image `seed % 8` for each sample.
struct FixtureImages;

impl Generator for FixtureImages {
    fn generate(
        &mut self,
        job: &GenerateJob,
        _progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>, GenerateError> {
        let p = &job.params;
        Ok((0..p.n_samples as u64)
            .map(|i| {
                let seed = p.seed.wrapping_add(i);
                GeneratedImage {
                    image: fixture_image(seed),
                    seed,
                    nsfw: None,
                }
            })
            .collect())
    }

    fn loaded_models(&self) -> Vec<String> {
        Vec::new()
    }

    fn device(&self) -> String {
        "cpu f32".into()
    }
}

fn config(mode: &str) -> Config {
    Config {
        safety_checker: mode.into(),
        // The checker is found under a model root, as the original server lays it out.
        model_base_path: vec![
            fixtures_models().to_string_lossy().to_string(),
            ext().join("safety_checker").to_string_lossy().to_string(),
        ],
        ..test_config()
    }
}

fn try_start(config: Config) -> Result<ServerThread, AppError> {
    let roots = config.model_roots();
    spawn_server(
        config,
        Arc::new(|| Ok(Box::new(FixtureImages) as Box<dyn Generator>)),
        Box::new(Registry::new(&roots)),
    )
}

fn start_mode(config: Config) -> ServerThread {
    try_start(config).expect("server starts")
}

/// One request for fixture image `seed`; returns its image message.
fn ask(client: &mut Client, seed: u64, nsfw_filter: Option<bool>) -> Value {
    let job = format!("j{seed}-{nsfw_filter:?}");
    let mut req = txt2img(&job, "a fox", 2, seed, 64);
    match nsfw_filter {
        Some(f) => req["options"]["do_nsfw_filter"] = json!(f.to_string()),
        None => {
            req["options"]
                .as_object_mut()
                .unwrap()
                .remove("do_nsfw_filter");
        }
    }
    client.send(&req);
    let r = client.collect_job(&job);
    assert_eq!(r.end_event(), "done", "{:?}", r.end);
    assert_eq!(r.images.len(), 1);
    r.images.into_iter().next().unwrap()
}

fn is_black(img: &RgbImage) -> bool {
    img.pixels().all(|p| p.0 == [0, 0, 0])
}

#[test]
fn black_mode_blacks_flagged_images_and_reports_every_verdict() {
    let server = start_mode(config("black"));
    let mut c = Client::connect(server.local_addr);
    for seed in 0..8u64 {
        // The request asks for no filtering: it cannot loosen the administrator's setting.
        let msg = ask(&mut c, seed, Some(false));
        let flagged = FLAGGED.contains(&seed);
        assert_eq!(msg["nsfw"], json!(flagged), "image {seed}");
        let img = decode_png(&msg);
        if flagged {
            assert!(is_black(&img), "flagged image {seed} not black");
            assert_eq!(img.dimensions(), fixture_image(seed).dimensions());
        } else {
            assert_eq!(img, fixture_image(seed), "clean image {seed} changed");
        }
        // `nsfw` comes after the legacy keys.
        let keys: Vec<&String> = msg.as_object().unwrap().keys().collect();
        assert_eq!(keys.last().map(|k| k.as_str()), Some("nsfw"));
    }
    drop(c);
    server.shutdown();
}

#[test]
fn blur_mode_blurs_flagged_images() {
    let server = start_mode(config("blur"));
    let mut c = Client::connect(server.local_addr);
    let msg = ask(&mut c, 7, None);
    assert_eq!(msg["nsfw"], json!(true));
    let img = decode_png(&msg);
    let original = fixture_image(7);
    assert!(!is_black(&img));
    assert_ne!(img, original);
    // The checkerboard's sharp 0/255 edges are gone: neighbouring pixels differ little.
    let edge = |im: &RgbImage| {
        (1..im.width())
            .map(|x| im.get_pixel(x, 40).0[0].abs_diff(im.get_pixel(x - 1, 40).0[0]))
            .max()
            .unwrap()
    };
    assert!(
        edge(&img) < edge(&original) / 4,
        "{} vs {}",
        edge(&img),
        edge(&original)
    );
    let clean = ask(&mut c, 0, None);
    assert_eq!(clean["nsfw"], json!(false));
    assert_eq!(decode_png(&clean), fixture_image(0));
    drop(c);
    server.shutdown();
}

#[test]
fn report_mode_returns_images_unchanged_unless_the_request_asks_to_filter() {
    let server = start_mode(config("report"));
    let mut c = Client::connect(server.local_addr);
    for filter in [None, Some(false)] {
        let msg = ask(&mut c, 4, filter);
        assert_eq!(msg["nsfw"], json!(true));
        assert_eq!(decode_png(&msg), fixture_image(4), "{filter:?}");
    }
    // do_nsfw_filter true tightens report to black.
    let msg = ask(&mut c, 4, Some(true));
    assert_eq!(msg["nsfw"], json!(true));
    assert!(is_black(&decode_png(&msg)));
    let msg = ask(&mut c, 1, Some(true));
    assert_eq!(msg["nsfw"], json!(false));
    assert_eq!(decode_png(&msg), fixture_image(1));
    drop(c);
    server.shutdown();
}

#[test]
fn off_mode_sends_the_legacy_message_unchanged() {
    let server = start_mode(config("off"));
    let mut c = Client::connect(server.local_addr);
    let msg = ask(&mut c, 4, Some(true));
    let keys: Vec<&str> = msg
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        ["image", "reqtype", "pos_x", "pos_y", "job_id", "seed"]
    );
    assert_eq!(decode_png(&msg), fixture_image(4));
    drop(c);
    server.shutdown();
}

#[test]
fn enabled_without_a_checker_folder_fails_start_up() {
    let mut cfg = config("black");
    cfg.model_base_path = vec![fixtures_models().to_string_lossy().to_string()];
    let err = try_start(cfg.clone()).err().expect("start-up must fail");
    let text = err.to_string();
    assert!(text.contains("safety checker"), "{text}");
    // An explicit path that is no checker fails the same way.
    cfg.safety_checker_path = ext().join("inputs").to_string_lossy().to_string();
    assert!(try_start(cfg).is_err());
}

#[test]
fn a_corrupt_checker_fails_jobs_clearly_and_the_server_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    let src = ext().join("safety_checker/CompVis/stable-diffusion-safety-checker");
    for name in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(src.join(name), tmp.path().join(name)).unwrap();
    }
    std::fs::write(
        tmp.path().join("model.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let mut cfg = config("black");
    cfg.safety_checker_path = tmp.path().to_string_lossy().to_string();
    let server = start_mode(cfg);
    let mut c = Client::connect(server.local_addr);
    c.send(&txt2img("bad", "a fox", 2, 4, 64));
    let r = c.collect_job("bad");
    let end = r.end.expect("terminal event");
    assert_eq!(end["event"], json!("error"));
    assert_eq!(end["code"], json!("unavailable"));
    assert!(
        end["message"].as_str().unwrap().contains("safety checker"),
        "{end}"
    );
    assert!(
        r.images.is_empty(),
        "no unchecked image may leave the server"
    );
    // The session is still served.
    c.send(&json!({"action": "ping"}));
    let pong = c.recv_until(|m| m.get("event").is_some());
    assert_eq!(pong["event"], json!("pong"), "{pong}");
    drop(c);
    server.shutdown();
}
