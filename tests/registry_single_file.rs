//! Single-file conversion is exact: every tensor of the LDM-layout fixtures (`.safetensors`
//! and `.ckpt`, SD1 and SD2), renamed and reshaped by runai, equals the diffusers folder's
//! tensor of the same name, and the key sets are identical. Also checks the synthesized
//! configs against the folders' configs and the embedded tokenizer against the fixture cases.

mod fixture_common;

use fixture_common::fixtures;

use std::collections::BTreeSet;

use candle_core::{DType, Device, Tensor};
use runai::registry::model::{ModelFormat, ModelKind, ModelVersion, Prediction};
use runai::registry::single_file::{Component, SingleFile};
use runai::registry::tokenizer::{embedded_tokenizer, with_pad_convention};

fn folder_tensors(model: &str, file: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join("models").join(model).join(file),
        &Device::Cpu,
    )
    .unwrap()
}

fn assert_component_equal(sf: &SingleFile, component: Component, model: &str, file: &str) {
    let expected = folder_tensors(model, file);
    let ours: BTreeSet<&str> = sf.mapping(component).keys().map(String::as_str).collect();
    let theirs: BTreeSet<&str> = expected.keys().map(String::as_str).collect();
    let only_ours: Vec<_> = ours.difference(&theirs).collect();
    let only_theirs: Vec<_> = theirs.difference(&ours).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{model} {component:?}: only in single file {only_ours:?}, only in folder {only_theirs:?}"
    );
    for (name, want) in &expected {
        let got = sf.load(component, name, &Device::Cpu).unwrap();
        assert_eq!(got.dims(), want.dims(), "{model} {name} shape");
        assert_eq!(got.dtype(), want.dtype(), "{model} {name} dtype");
        let diff = (got.to_dtype(DType::F64).unwrap() - want.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(diff, 0.0, "{model} {name} differs");
    }
}

fn check_conversion(model: &str, ext: &str, version: ModelVersion, prediction: Prediction) {
    let path = fixtures()
        .join("single_file")
        .join(format!("{model}.{ext}"));
    let sf = SingleFile::open(&path).unwrap();
    let format = if ext == "ckpt" {
        ModelFormat::Ckpt
    } else {
        ModelFormat::Safetensors
    };
    assert_eq!(sf.format, format);
    assert_eq!(sf.identity.version, version);
    assert_eq!(sf.identity.kind, ModelKind::Txt2Img);
    assert_eq!(sf.identity.prediction, prediction);
    assert_component_equal(
        &sf,
        Component::Unet,
        model,
        "unet/diffusion_pytorch_model.safetensors",
    );
    assert_component_equal(
        &sf,
        Component::Vae,
        model,
        "vae/diffusion_pytorch_model.safetensors",
    );
    assert_component_equal(
        &sf,
        Component::TextEncoder,
        model,
        "text_encoder/model.safetensors",
    );
    check_configs(&sf, model);
}

/// Every field we synthesize that the folder's config also has must agree.
fn check_configs(sf: &SingleFile, model: &str) {
    let dir = fixtures().join("models").join(model);
    let pairs = [
        (&sf.configs.unet, "unet/config.json"),
        (&sf.configs.vae, "vae/config.json"),
        (&sf.configs.text_encoder, "text_encoder/config.json"),
        (&sf.configs.scheduler, "scheduler/scheduler_config.json"),
    ];
    for (ours, file) in pairs {
        let theirs: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap();
        let ours = ours.as_object().unwrap();
        let mut compared = 0;
        for (key, value) in ours {
            if let Some(expected) = theirs.get(key) {
                let same = match (value.as_f64(), expected.as_f64()) {
                    (Some(a), Some(b)) => (a - b).abs() < 1e-12,
                    _ => value == expected,
                };
                assert!(same, "{model} {file} {key}: ours {value} folder {expected}");
                compared += 1;
            }
        }
        assert!(
            compared >= 5,
            "{model} {file}: only {compared} fields compared"
        );
    }
}

#[test]
fn sd1_safetensors_matches_diffusers_folder() {
    check_conversion(
        "tiny-sd1",
        "safetensors",
        ModelVersion::V1,
        Prediction::Epsilon,
    );
}

#[test]
fn sd1_ckpt_matches_diffusers_folder() {
    check_conversion("tiny-sd1", "ckpt", ModelVersion::V1, Prediction::Epsilon);
}

#[test]
fn sd2_safetensors_matches_diffusers_folder() {
    check_conversion(
        "tiny-sd2",
        "safetensors",
        ModelVersion::V2,
        Prediction::VPrediction,
    );
}

#[test]
fn sd2_ckpt_matches_diffusers_folder() {
    check_conversion(
        "tiny-sd2",
        "ckpt",
        ModelVersion::V2,
        Prediction::VPrediction,
    );
}

#[test]
fn embedded_tokenizer_reproduces_sd1_and_sd2_ids() {
    let cases: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("tokenizer/tokenizer_cases.json")).unwrap(),
    )
    .unwrap();
    for (version, field, pad) in [
        (ModelVersion::V1, "ids_sd1", 49407u32),
        (ModelVersion::V2, "ids_sd2", 0u32),
    ] {
        let (tok, pad_id) =
            with_pad_convention(embedded_tokenizer().unwrap(), version, "t").unwrap();
        assert_eq!(pad_id, pad);
        for case in cases["cases"].as_array().unwrap() {
            let prompt = case["prompt"].as_str().unwrap();
            let n = case["n_tokens"].as_u64().unwrap() as usize;
            let want: Vec<u32> = case[field].as_array().unwrap()[..n - 1]
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let got = tok.encode(prompt, true).unwrap().get_ids().to_vec();
            assert_eq!(&got[..n - 1], &want[..], "{version:?} {prompt:?}");
        }
    }
}
