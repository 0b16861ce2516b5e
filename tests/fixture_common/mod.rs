//! Shared helpers for the tests that read the committed fixtures: their paths, the golden
//! case ids of the manifest, comparisons of a replay (traced tensors, 8-bit image) against
//! the goldens, and temporary model roots in the seed's layout. Never writes outside
//! temporary folders and never changes a tolerance: callers pass their own.
#![allow(dead_code)]

use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use runai::cli::replay::{read_json, GoldenCase};
use runai::pipeline::trace::Trace;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn manifest() -> PathBuf {
    fixtures().join("manifest.json")
}

/// The ids of the manifest's golden cases that start with `prefix` ("" for all).
pub fn case_ids(prefix: &str) -> Vec<String> {
    let doc = read_json(&manifest()).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .filter(|id| id.starts_with(prefix))
        .collect()
}

/// Max absolute difference of two same-shaped tensors, compared in float32.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The largest per-channel level difference between our 8-bit image and the case's
/// reference PNG (which must have the same size).
pub fn png_diff(label: &str, ours: &image::RgbImage, case: &GoldenCase) -> u8 {
    let png = image::open(case.tensors_path.with_extension("png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(ours.dimensions(), png.dimensions(), "{label}: png size");
    ours.as_raw()
        .iter()
        .zip(png.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0)
}

/// Compares every `(name, tolerance)` of `checks` traced in `ours` and present in `golden`:
/// appends ` name diff` to `line` and a failure (NaN or above tolerance) to `failures`.
/// Returns how many tensors were compared.
pub fn compare_traced(
    label: &str,
    ours: &Trace,
    golden: &HashMap<String, Tensor>,
    checks: &[(&str, f32)],
    line: &mut String,
    failures: &mut Vec<String>,
) -> usize {
    let mut compared = 0;
    for (name, tol) in checks {
        let (Some(ours), Some(theirs)) = (ours.get(name), golden.get(*name)) else {
            continue;
        };
        let d = max_diff(ours, theirs);
        compared += 1;
        line.push_str(&format!(" {name} {d:.2e}"));
        if d.is_nan() || d > *tol {
            failures.push(format!("{label} {name} {d:e} > {tol:e}"));
        }
    }
    compared
}

/// Symlinks `src` at `dst`, creating `dst`'s parent folders.
pub fn link(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    symlink(src, dst).unwrap();
}

/// The layout the original RunAI README prescribes: the three diffusers folders under
/// `runwayml/` and `stabilityai/`, the SD1 and SD2 single files (with their yaml) under
/// `v1/` and `v2/`; seven models.
pub fn seed_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let f = fixtures();
    link(
        &f.join("models/tiny-sd1"),
        &r.join("runwayml/stable-diffusion-v1-5"),
    );
    link(
        &f.join("models/tiny-inpaint"),
        &r.join("runwayml/stable-diffusion-inpainting"),
    );
    link(
        &f.join("models/tiny-sd2"),
        &r.join("stabilityai/stable-diffusion-2-1-base"),
    );
    for (v, m) in [("v1", "tiny-sd1"), ("v2", "tiny-sd2")] {
        for ext in ["safetensors", "ckpt", "yaml"] {
            link(
                &f.join(format!("single_file/{m}.{ext}")),
                &r.join(format!("{v}/{m}.{ext}")),
            );
        }
    }
    dir
}

/// A root holding the tiny SDXL (tests/fixtures/ext) twice: the diffusers folder at
/// `xl/tiny-sdxl` and the SGM single file with its yaml at `xl/tiny-sdxl.safetensors`.
pub fn sdxl_root() -> tempfile::TempDir {
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
