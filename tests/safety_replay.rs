//! The safety checker against diffusers' goldens (tests/fixtures/ext, from fixtures-ext):
//! `runai replay` on the `safety_checker/safety_check` case writes every tensor under the
//! golden names; flags match exactly, distances, embeddings and scores within 1e-4,
//! `pixel_values` and output images within 2e-3. Our resize+crop is also compared with the
//! reference processor's 8-bit crops (`crop224_i.png`) for all eight images.

mod fixture_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use fixture_common::max_diff;
use runai::cli::replay::{run, ReplayArgs};
use runai::pipeline::safety::config::Preprocess;
use runai::pipeline::safety::preprocess::{normalize, resize_and_crop};

const IMAGES: usize = 8;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ext")
}

fn replay() -> HashMap<String, Tensor> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    run(ReplayArgs {
        manifest: root().join("manifest.json"),
        case: "safety_checker/safety_check".into(),
        model: None,
        out: out.clone(),
    })
    .unwrap();
    candle_core::safetensors::load(&out, &Device::Cpu).unwrap()
}

#[test]
fn replay_matches_the_diffusers_goldens() {
    let ours = replay();
    let golden = candle_core::safetensors::load(
        root().join("golden/safety_checker/safety_check.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut flagged = Vec::new();
    for i in 0..IMAGES {
        let ours_flag = ours[&format!("has_nsfw_concept_{i}")]
            .to_vec1::<i64>()
            .unwrap();
        let gold_flag = golden[&format!("has_nsfw_concept_{i}")]
            .to_vec1::<i64>()
            .unwrap();
        assert_eq!(ours_flag, gold_flag, "has_nsfw_concept_{i}");
        if gold_flag[0] != 0 {
            flagged.push(i);
        }
        for (name, tol) in [
            ("vision_pooled_output", 1e-4),
            ("image_embeds", 1e-4),
            ("cos_dist", 1e-4),
            ("special_cos_dist", 1e-4),
            ("concept_scores", 1e-4),
            ("special_scores", 1e-4),
            ("pixel_values", 2e-3),
            ("output_image", 2e-3),
        ] {
            let key = format!("{name}_{i}");
            // pixel_values and output images are stored for some images only.
            let Some(g) = golden.get(&key) else { continue };
            let d = max_diff(&ours[&key], g);
            eprintln!("{key}: max abs diff {d:e}");
            assert!(d <= tol, "{key}: max abs diff {d} > {tol}");
        }
    }
    assert_eq!(
        flagged,
        vec![3, 4, 7],
        "the fixture's designed flag pattern"
    );
}

/// Resize + center crop against the reference processor's 8-bit crops, all eight images;
/// prints the largest difference (in 8-bit levels and in pixel_values units).
#[test]
fn resize_and_crop_match_the_reference_crops() {
    // Python's JSON (the manifest holds `-Infinity`), read as the replay tool reads it.
    let manifest = runai::cli::replay::read_json(&root().join("manifest.json")).unwrap();
    let pre_doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join(
            "safety_checker/CompVis/stable-diffusion-safety-checker/preprocessor_config.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let modern: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join(
            "safety_checker/CompVis/stable-diffusion-safety-checker/feature_extractor/preprocessor_config.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let pre = Preprocess::from_json(&pre_doc).unwrap();
    assert_eq!(
        pre,
        Preprocess::from_json(&modern).unwrap(),
        "both config forms agree"
    );
    let case = manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "safety_checker/safety_check")
        .expect("the safety case");
    let images = case["images"].as_array().unwrap();
    let (mut worst_levels, mut worst_pv) = (0u8, 0f32);
    for (i, rel) in images.iter().enumerate() {
        let input = image::open(root().join(rel.as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let crop = resize_and_crop(&input, &pre).unwrap();
        let reference = image::open(root().join(format!("golden/safety_checker/crop224_{i}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(crop.dimensions(), reference.dimensions());
        let levels = crop
            .as_raw()
            .iter()
            .zip(reference.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let differing = crop
            .as_raw()
            .iter()
            .zip(reference.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        let pv = max_diff(
            &normalize(&crop, &pre, &Device::Cpu).unwrap(),
            &normalize(&reference, &pre, &Device::Cpu).unwrap(),
        );
        eprintln!("image {i}: max {levels} levels, {differing} values differ, pixel_values {pv:e}");
        worst_levels = worst_levels.max(levels);
        worst_pv = worst_pv.max(pv);
    }
    eprintln!("worst: {worst_levels} levels, pixel_values {worst_pv:e}");
    assert!(
        worst_pv <= 2e-3,
        "pixel_values differ by {worst_pv} ({worst_levels} levels)"
    );
}
