//! Loading diffusers folders: weight-file selection (plain, fp16 variant, PyTorch pickle),
//! missing files, and config validation. Works on temporary copies of the fixtures.

mod fixture_common;

use fixture_common::fixtures;

use std::path::Path;

use candle_core::DType;
use runai::pipeline::load::config::{UNetConfig, VaeConfig};
use runai::pipeline::load::loader::{component_weights, load_diffusers_folder};
use runai::pipeline::params::{GenerateParams, SchedulerKind, Task};
use runai::pipeline::{PipelineError, RuntimeOptions, StableDiffusion};

fn copy_dir(src: &Path, dst: &Path, rename: &dyn Fn(&str) -> String) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dst.join(&name), rename);
        } else {
            std::fs::copy(entry.path(), dst.join(rename(&name))).unwrap();
        }
    }
}

fn small_request() -> GenerateParams {
    GenerateParams {
        task: Task::Txt2Img,
        prompt: "a red fox".into(),
        negative_prompt: String::new(),
        steps: 2,
        guidance_scale: 5.0,
        seed: 3,
        width: Some(32),
        height: Some(32),
        n_samples: 1,
        scheduler: SchedulerKind::Euler,
        eta: 0.0,
        clip_skip: None,
        timestep_spacing: None,
        xl: Default::default(),
    }
}

fn image_of(dir: &Path) -> Vec<u8> {
    let m = StableDiffusion::load_folder(dir, &RuntimeOptions::default()).unwrap();
    m.generate(&small_request(), &mut |_, _| true).unwrap()[0]
        .image
        .as_raw()
        .clone()
}

#[test]
fn fp16_variant_files_are_found_and_plain_files_win() {
    let reference = image_of(&fixtures().join("models/tiny-sd1"));
    let tmp = tempfile::tempdir().unwrap();
    let variant = tmp.path().join("variant");
    copy_dir(&fixtures().join("models/tiny-sd1"), &variant, &|n| {
        n.replace(".safetensors", ".fp16.safetensors")
    });
    assert_eq!(image_of(&variant), reference);

    // A folder with both: the full-precision file is used, the variant is never read.
    let both = tmp.path().join("both");
    copy_dir(&fixtures().join("models/tiny-sd1"), &both, &|n| {
        n.to_owned()
    });
    for c in ["unet", "vae"] {
        std::fs::write(
            both.join(c)
                .join("diffusion_pytorch_model.fp16.safetensors"),
            b"not a safetensors file",
        )
        .unwrap();
    }
    assert_eq!(image_of(&both), reference);
}

#[test]
fn pytorch_pickle_weights_are_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let unet = tmp.path().join("unet");
    std::fs::create_dir_all(&unet).unwrap();
    // The single-file checkpoint is a zip pickle wrapped in {"state_dict": ...}.
    std::fs::copy(
        fixtures().join("single_file/tiny-sd1.ckpt"),
        unet.join("diffusion_pytorch_model.bin"),
    )
    .unwrap();
    let vb = component_weights(&unet, DType::F32, &RuntimeOptions::default()).unwrap();
    let name = "model.diffusion_model.input_blocks.0.0.weight";
    assert!(vb.contains_tensor(name));
    let w = vb.get((32, 4, 3, 3), name).unwrap();
    assert_eq!(w.dims(), &[32, 4, 3, 3]);
}

#[test]
fn missing_parts_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&fixtures().join("models/tiny-sd1"), &dir, &|n| n.to_owned());
    std::fs::remove_file(dir.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let err = load_diffusers_folder(&dir, &RuntimeOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, PipelineError::MissingFile(..)), "{err}");
    std::fs::remove_file(dir.join("unet/config.json")).unwrap();
    let err = load_diffusers_folder(&dir, &RuntimeOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, PipelineError::MissingFile(..)), "{err}");
}

#[test]
fn configs_map_lists_and_reject_unsupported_features() {
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(p)).unwrap()).unwrap()
    };
    let sd2 = UNetConfig::from_json(&read("models/tiny-sd2/unet/config.json")).unwrap();
    assert_eq!(sd2.num_attention_heads, vec![2, 4]);
    assert!(sd2.use_linear_projection);
    let sd1 = UNetConfig::from_json(&read("models/tiny-sd1/unet/config.json")).unwrap();
    assert_eq!(sd1.num_attention_heads, vec![4, 4]);
    assert_eq!(sd1.cross_attention_dim, vec![32, 32]);
    let inpaint = UNetConfig::from_json(&read("models/tiny-inpaint/unet/config.json")).unwrap();
    assert_eq!(inpaint.in_channels, 9);

    let mut sdxl_like = read("models/tiny-sd1/unet/config.json");
    sdxl_like["addition_embed_type"] = "text_time".into();
    assert!(matches!(
        UNetConfig::from_json(&sdxl_like),
        Err(PipelineError::Config(_))
    ));
    let mut bad_heads = read("models/tiny-sd1/unet/config.json");
    bad_heads["attention_head_dim"] = serde_json::json!([4, 4, 4]);
    assert!(UNetConfig::from_json(&bad_heads).is_err());

    let vae = VaeConfig::from_json(&read("models/tiny-sd1/vae/config.json")).unwrap();
    assert_eq!(vae.scale_factor(), 8);
    assert!((vae.scaling_factor - 0.18215).abs() < 1e-12);
}
