//! SDXL parity with diffusers 0.42.1: every SDXL golden case of tests/fixtures/ext (txt2img
//! with three schedulers, ancestral noise, no negative / empty negative, img2img, inpaint),
//! replayed with its recorded noise on the tiny SDXL diffusers folder and on its SGM single
//! file (float16, OpenCLIP bigG layout), matches the reference within the pipeline issue's
//! tolerances; `runai replay --model FILE` writes the case's tensors under their names; a
//! v-prediction file made here (a `v_pred` key) is detected and runs as v-prediction.

mod fixture_common;
mod hostile_common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use fixture_common::{compare_traced, max_diff, png_diff};
use runai::cli::replay::{
    load_case, read_json, replay_case, run_with_loader, RecordedNoise, ReplayArgs,
};
use runai::pipeline::trace::Trace;
use runai::pipeline::{RuntimeOptions, StableDiffusion};
use runai::registry::identify::identify_diffusers;
use runai::registry::loader::load_model_parts;
use runai::registry::model::Prediction;
use runai::registry::single_file::SingleFile;

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

/// Runs `case`'s request with its recorded noise on `sd` with the model's own scheduler
/// config (not the case's), returning the traced tensors.
fn run_own_config(sd: &StableDiffusion, case: &runai::cli::replay::GoldenCase) -> Trace {
    let mut noise = RecordedNoise::from_case(case).unwrap();
    let mut trace = Trace::new();
    sd.run_with_noise(&case.params, &mut noise, Some(&mut trace), &mut |_, _| true)
        .unwrap();
    trace
}

/// A v-prediction SDXL file, made here from the fixture by adding a `v_pred` key (as ComfyUI
/// marks such files; diffusers has no golden for it): it is identified as v-prediction, and
/// its run of a case equals the diffusers folder's run with `prediction_type: v_prediction`
/// in its scheduler config (and differs from the epsilon golden). A `ztsnr` key turns on
/// zero-terminal-SNR rescaling.
#[test]
fn v_pred_and_ztsnr_keys_mark_a_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = ext().join("single_file/tiny-sdxl.safetensors");
    let mut tensors = candle_core::safetensors::load(&src, &Device::Cpu).unwrap();
    let marker = candle_core::Tensor::zeros(1, candle_core::DType::F16, &Device::Cpu).unwrap();
    tensors.insert("v_pred".into(), marker.clone());
    let vfile = dir.path().join("xl-v.safetensors");
    candle_core::safetensors::save(&tensors, &vfile).unwrap();
    tensors.insert("ztsnr".into(), marker);
    let zfile = dir.path().join("xl-vz.safetensors");
    candle_core::safetensors::save(&tensors, &zfile).unwrap();
    for stem in ["xl-v", "xl-vz"] {
        std::fs::copy(
            ext().join("single_file/tiny-sdxl.yaml"),
            dir.path().join(format!("{stem}.yaml")),
        )
        .unwrap();
    }

    let sf = SingleFile::open(&vfile).unwrap();
    assert_eq!(sf.identity.prediction, Prediction::VPrediction);
    assert_eq!(sf.configs.scheduler["prediction_type"], "v_prediction");
    assert!(sf.configs.scheduler.get("rescale_betas_zero_snr").is_none());
    let sz = SingleFile::open(&zfile).unwrap();
    assert_eq!(sz.identity.prediction, Prediction::VPrediction);
    assert_eq!(sz.configs.scheduler["rescale_betas_zero_snr"], true);

    // The folder with a v-prediction scheduler config.
    let folder = dir.path().join("xl-v-folder");
    let reference = ext().join("models/tiny-sdxl");
    for c in [
        "model_index.json",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "unet",
        "vae",
    ] {
        fixture_common::link(&reference.join(c), &folder.join(c));
    }
    let mut sched: serde_json::Value = serde_json::from_slice(
        &std::fs::read(reference.join("scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    sched["prediction_type"] = "v_prediction".into();
    std::fs::create_dir_all(folder.join("scheduler")).unwrap();
    std::fs::write(
        folder.join("scheduler/scheduler_config.json"),
        sched.to_string(),
    )
    .unwrap();
    assert_eq!(
        identify_diffusers(&folder).unwrap().prediction,
        Prediction::VPrediction
    );

    let opts = RuntimeOptions::default();
    let file_model =
        StableDiffusion::from_parts(load_model_parts(&vfile, &opts).unwrap(), &opts).unwrap();
    let folder_model = StableDiffusion::load_folder(&folder, &opts).unwrap();
    let case = load_case(&manifest(), "tiny-sdxl/txt2img_euler").unwrap();
    let ours = run_own_config(&file_model, &case);
    let theirs = run_own_config(&folder_model, &case);
    for (name, tol) in [
        ("unet_out_0", 5e-4),
        ("final_latents", 5e-3),
        ("image", 2e-3),
    ] {
        let d = max_diff(ours.get(name).unwrap(), theirs.get(name).unwrap());
        assert!(d <= tol, "{name}: file vs folder {d:e}");
    }
    let golden = candle_core::safetensors::load(&case.tensors_path, &Device::Cpu).unwrap();
    let d = max_diff(ours.get("final_latents").unwrap(), &golden["final_latents"]);
    assert!(d > 1e-2, "v-prediction gave the epsilon result ({d:e})");

    // v-prediction with zero terminal SNR runs to a finite image.
    let z_model =
        StableDiffusion::from_parts(load_model_parts(&zfile, &opts).unwrap(), &opts).unwrap();
    let img = run_own_config(&z_model, &case);
    let max = img.get("image").unwrap().abs().unwrap().max_all().unwrap();
    assert!(max.to_scalar::<f32>().unwrap().is_finite());
}

/// `clip_skip` as diffusers' SDXL pipeline applies it: the prompt's embeddings come from
/// further back in both encoders (so they change), the negative prompt's stay at the
/// penultimate layer (so they still equal the golden), and the pooled embedding is unchanged.
#[test]
fn clip_skip_moves_the_prompt_only() {
    let opts = RuntimeOptions::default();
    let sd = StableDiffusion::load_folder(&ext().join("models/tiny-sdxl"), &opts).unwrap();
    let mut case = load_case(&manifest(), "tiny-sdxl/txt2img_euler").unwrap();
    case.params.clip_skip = Some(1);
    let trace = replay_case(&sd, &case).unwrap().trace;
    let golden = candle_core::safetensors::load(&case.tensors_path, &Device::Cpu).unwrap();
    let d = |name: &str| max_diff(trace.get(name).unwrap(), &golden[name]);
    assert!(d("negative_prompt_embeds") <= 1e-4);
    assert!(d("pooled_prompt_embeds") <= 1e-4);
    assert!(d("prompt_embeds") > 1e-3, "clip_skip changed nothing");
    // Three layers per encoder: clip_skip 2 reads the embeddings, 3 is out of range.
    case.params.clip_skip = Some(3);
    assert!(replay_case(&sd, &case).is_err());
}
