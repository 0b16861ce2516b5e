//! SDXL parity with diffusers 0.42.1: every SDXL golden case of tests/fixtures/ext (txt2img
//! with three schedulers, ancestral noise, no negative / empty negative, img2img, inpaint),
//! replayed with its recorded noise on the tiny SDXL diffusers folder and on its SGM single
//! file (float16, OpenCLIP bigG layout), matches the reference within the pipeline issue's
//! tolerances; `runai replay --model FILE` writes the case's tensors under their names.

mod fixture_common;
mod hostile_common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use fixture_common::{compare_traced, max_diff, png_diff};
use runai::cli::replay::{load_case, read_json, replay_case, run_with_loader, ReplayArgs};
use runai::pipeline::{RuntimeOptions, StableDiffusion};
use runai::registry::loader::load_model_parts;

/// The pipeline issue's tolerances (pooled embeddings and time ids as the prompt embeddings).
const CHECKS: &[(&str, f32)] = &[
    ("prompt_embeds", 1e-4),
    ("negative_prompt_embeds", 1e-4),
    ("pooled_prompt_embeds", 1e-4),
    ("negative_pooled_prompt_embeds", 1e-4),
    ("add_time_ids", 0.0),
    ("unet_added_time_ids", 0.0),
    ("unet_added_text_embeds", 1e-4),
    ("unet_out_0", 5e-4),
    ("final_latents", 5e-3),
    ("image", 2e-3),
];

fn ext() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ext")
}

fn manifest() -> PathBuf {
    ext().join("manifest.json")
}

/// The manifest's SDXL pipeline cases (family `sdxl`).
fn sdxl_case_ids() -> Vec<String> {
    let doc = read_json(&manifest()).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["family"] == "sdxl")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn check_model(path: &Path, label: &str) {
    let opts = RuntimeOptions::default();
    let sd = StableDiffusion::from_parts(load_model_parts(path, &opts).unwrap(), &opts).unwrap();
    assert!(sd.is_xl(), "{label}: not built as SDXL");
    let ids = sdxl_case_ids();
    assert_eq!(ids.len(), 8, "{label}: {ids:?}");
    let mut failures = Vec::new();
    for id in &ids {
        let case = load_case(&manifest(), id).unwrap();
        let replay = match replay_case(&sd, &case) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{id} [{label}]: {e:#}"));
                continue;
            }
        };
        let png_diff = png_diff(id, &replay.images[0], &case);
        if png_diff > 1 {
            failures.push(format!("{id} [{label}] png differs by {png_diff} levels"));
        }
        let golden = candle_core::safetensors::load(&case.tensors_path, &Device::Cpu).unwrap();
        let tag = format!("{id} [{label}]");
        let mut line = format!("{tag}:");
        let compared = compare_traced(
            &tag,
            &replay.trace,
            &golden,
            CHECKS,
            &mut line,
            &mut failures,
        );
        assert_eq!(
            compared,
            CHECKS.len(),
            "{tag}: only {compared} tensors compared"
        );
        println!("{line}");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn sdxl_folder_reproduces_the_goldens() {
    check_model(&ext().join("models/tiny-sdxl"), "folder");
}

#[test]
fn sdxl_single_file_reproduces_the_goldens() {
    check_model(
        &ext().join("single_file/tiny-sdxl.safetensors"),
        "safetensors",
    );
}

/// The same weights as a zip `.ckpt` (f32 storages, written here: no second copy committed)
/// with the yaml beside it, read through our pickle reader.
#[test]
fn sdxl_ckpt_reproduces_the_goldens() {
    let src = ext().join("single_file/tiny-sdxl.safetensors");
    let tensors = candle_core::safetensors::load(&src, &Device::Cpu).unwrap();
    let mut entries: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let shape = t.dims().to_vec();
            let values = t
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (name, shape, values)
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("tiny-sdxl.ckpt");
    std::fs::write(&ckpt, hostile_common::f32_state_dict_zip(&entries)).unwrap();
    std::fs::copy(
        ext().join("single_file/tiny-sdxl.yaml"),
        dir.path().join("tiny-sdxl.yaml"),
    )
    .unwrap();
    check_model(&ckpt, "ckpt");
}

#[test]
fn replay_tool_writes_the_sdxl_tensors() {
    let out_dir = tempfile::tempdir().unwrap();
    for (model, case) in [
        (None, "tiny-sdxl/txt2img_euler_noneg"),
        (
            Some(ext().join("single_file/tiny-sdxl.safetensors")),
            "tiny-sdxl/inpaint_euler",
        ),
    ] {
        let out = out_dir.path().join("out.safetensors");
        let args = ReplayArgs {
            manifest: manifest(),
            case: case.to_string(),
            model,
            out: out.clone(),
        };
        let opts = RuntimeOptions::default();
        run_with_loader(args, &|p: &Path| Ok(load_model_parts(p, &opts)?)).unwrap();
        let ours = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
        let golden_case = load_case(&manifest(), case).unwrap();
        let golden =
            candle_core::safetensors::load(&golden_case.tensors_path, &Device::Cpu).unwrap();
        for name in [
            "prompt_embeds",
            "negative_prompt_embeds",
            "pooled_prompt_embeds",
            "negative_pooled_prompt_embeds",
            "add_time_ids",
            "unet_out_0",
            "final_latents",
            "vae_decode_out",
            "image",
        ] {
            let (a, b) = (&ours[name], &golden[name]);
            let tol = CHECKS
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(5e-3, |(_, t)| *t);
            let d = max_diff(a, b);
            assert!(d <= tol, "{case} {name} {d:e} > {tol:e}");
        }
    }
}
