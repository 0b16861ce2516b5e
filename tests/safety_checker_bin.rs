//! The safety checker as the real one ships: `pytorch_model.bin` (a `torch.save` zip, read by
//! our bounded pickle reader, never executed) instead of `model.safetensors`. The tiny
//! fixture checker's weights are written as a `.bin` at test time; the checker loaded from
//! it gives the same distances, scores and flags, bit for bit, on every fixture image.

mod hostile_common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use runai::pipeline::safety::checker::SafetyChecker;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ext")
}

#[test]
fn a_pytorch_model_bin_checker_equals_the_safetensors_one() {
    let src = fixture().join("safety_checker/CompVis/stable-diffusion-safety-checker");
    let weights = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)
        .expect("fixture weights");
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .into_iter()
        .map(|n| {
            let t = &weights[n];
            let values = t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .unwrap();
            (n.clone(), t.dims().to_vec(), values)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("pytorch_model.bin"),
        hostile_common::f32_state_dict_zip(&tensors),
    )
    .unwrap();

    let from_safetensors = SafetyChecker::load(&src, &Device::Cpu).expect("safetensors checker");
    let from_bin = SafetyChecker::load(dir.path(), &Device::Cpu).expect(".bin checker");
    let mut checked = 0;
    for entry in std::fs::read_dir(fixture().join("inputs")).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("sc_")
        {
            continue;
        }
        let img = image::open(&path).unwrap().to_rgb8();
        let a = from_safetensors.check(&img).unwrap();
        let b = from_bin.check(&img).unwrap();
        assert_eq!(a.cos_dist, b.cos_dist, "{}", path.display());
        assert_eq!(a.special_cos_dist, b.special_cos_dist);
        assert_eq!(a.concept_scores, b.concept_scores);
        assert_eq!(a.nsfw, b.nsfw);
        checked += 1;
    }
    assert_eq!(checked, 8);
}
