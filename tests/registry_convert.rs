//! `convert`: a single file becomes a diffusers folder whose weights equal the reference
//! folder's exactly, which the registry identifies like the original and the pipeline loads
//! into the same images. It never overwrites, and leaves nothing behind when it fails.

mod fixture_common;

use fixture_common::fixtures;

use std::path::Path;

use candle_core::{DType, Device};
use runai::pipeline::params::{GenerateParams, SchedulerKind, Task};
use runai::pipeline::{RuntimeOptions, StableDiffusion};
use runai::registry::convert::{convert_single_file, default_destination, ConvertError};
use runai::registry::identify::identify_diffusers;
use runai::registry::model::{ModelKind, ModelVersion, Prediction};

fn assert_same_weights(ours: &Path, theirs: &Path) {
    let a = candle_core::safetensors::load(ours, &Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(theirs, &Device::Cpu).unwrap();
    let mut ka: Vec<_> = a.keys().collect();
    let mut kb: Vec<_> = b.keys().collect();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb, "{}", ours.display());
    for (name, t) in &a {
        let diff = (t.to_dtype(DType::F64).unwrap() - b[name].to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(diff, 0.0, "{name}");
    }
}

fn image_of(model: &Path) -> image::RgbImage {
    let opts = RuntimeOptions::default();
    let sd = StableDiffusion::load_folder(model, &opts).unwrap();
    let params = GenerateParams {
        task: Task::Txt2Img,
        prompt: "hello! a fox".into(),
        negative_prompt: String::new(),
        steps: 2,
        guidance_scale: 7.5,
        seed: 3,
        width: Some(64),
        height: Some(64),
        n_samples: 1,
        scheduler: SchedulerKind::Euler,
        eta: 0.0,
        clip_skip: None,
        timestep_spacing: None,
        xl: Default::default(),
    };
    sd.generate(&params, &mut |_, _| true).unwrap()[0]
        .image
        .clone()
}

fn check(model: &str, ext: &str, version: ModelVersion, prediction: Prediction) {
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join(model);
    let src = fixtures()
        .join("single_file")
        .join(format!("{model}.{ext}"));
    let report = convert_single_file(&src, &dst).unwrap();
    assert_eq!((report.version, report.kind), (version, ModelKind::Txt2Img));
    let reference = fixtures().join("models").join(model);
    for file in [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ] {
        assert_same_weights(&dst.join(file), &reference.join(file));
    }
    let id = identify_diffusers(&dst).unwrap();
    assert_eq!(
        (id.version, id.kind, id.prediction),
        (version, ModelKind::Txt2Img, prediction)
    );
    assert!(
        image_of(&dst) == image_of(&reference),
        "{model}: images differ"
    );
}

#[test]
fn sd1_ckpt_converts_to_the_reference_folder() {
    check("tiny-sd1", "ckpt", ModelVersion::V1, Prediction::Epsilon);
}

#[test]
fn sd2_safetensors_converts_to_the_reference_folder() {
    check(
        "tiny-sd2",
        "safetensors",
        ModelVersion::V2,
        Prediction::VPrediction,
    );
}

/// An SDXL single file (SGM layout, float16) becomes an SDXL folder: both text encoders and
/// tokenizers, the UNet's added embedding, weights equal to the reference folder's, the same
/// identity, and the same image as the reference folder.
#[test]
fn sdxl_safetensors_converts_to_the_reference_folder() {
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("tiny-sdxl");
    let ext = fixtures().join("ext");
    let report = convert_single_file(&ext.join("single_file/tiny-sdxl.safetensors"), &dst).unwrap();
    assert_eq!(
        (report.version, report.kind),
        (ModelVersion::Xl, ModelKind::Txt2Img)
    );
    let reference = ext.join("models/tiny-sdxl");
    for file in [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder_2/model.safetensors",
    ] {
        assert_same_weights(&dst.join(file), &reference.join(file));
    }
    let id = identify_diffusers(&dst).unwrap();
    assert_eq!(
        (id.version, id.kind, id.prediction),
        (ModelVersion::Xl, ModelKind::Txt2Img, Prediction::Epsilon)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.join("model_index.json")).unwrap()).unwrap();
    assert_eq!(index["_class_name"], "StableDiffusionXLPipeline");
    assert_eq!(index["force_zeros_for_empty_prompt"], true);
    assert!(
        image_of(&dst) == image_of(&reference),
        "tiny-sdxl: images differ"
    );
}

#[test]
fn never_overwrites_and_cleans_up_after_failure() {
    let out = tempfile::tempdir().unwrap();
    let existing = out.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("keep.txt"), b"mine").unwrap();
    let src = fixtures().join("single_file/tiny-sd1.safetensors");
    assert!(matches!(
        convert_single_file(&src, &existing),
        Err(ConvertError::DestinationExists(_))
    ));
    assert_eq!(std::fs::read(existing.join("keep.txt")).unwrap(), b"mine");

    let old = out.path().join("old.ckpt");
    std::fs::write(&old, b"\x80\x02}q\x00.").unwrap();
    let dst = default_destination(&old);
    assert_eq!(dst, out.path().join("old"));
    assert!(convert_single_file(&old, &dst).is_err());
    assert!(!dst.exists(), "partial output left behind");
}
