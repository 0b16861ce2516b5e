//! `runai replay` for a safety-checker case (`task: safety_check`): runs our checker on each
//! of the case's input images, one at a time as a pipeline checks one generated image, and
//! writes what it computed under the golden names (`pixel_values_i`,
//! `vision_pooled_output_i`, `image_embeds_i`, `cos_dist_i`, `special_cos_dist_i`,
//! `concept_scores_i`, `special_scores_i`, `has_nsfw_concept_i`, `output_image_i`). Reads the
//! inputs and the checker folder, never the golden outputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::pipeline::safety::{SafetyChecker, SafetyMode};

/// Where the manifest keeps the checker when it does not say.
const DEFAULT_DIR: &str = "safety_checker/CompVis/stable-diffusion-safety-checker";

/// Whether case `case` of `doc` is a safety-checker case.
pub(crate) fn is_safety_case(case: &Value) -> bool {
    case.get("task").and_then(Value::as_str) == Some("safety_check")
}

/// Runs the case and writes the tensors to `out`. `checker` overrides the manifest's folder.
pub(crate) fn run(
    manifest: &Path,
    doc: &Value,
    case: &Value,
    checker: Option<&Path>,
    out: &Path,
) -> anyhow::Result<()> {
    let root = manifest
        .parent()
        .ok_or_else(|| anyhow!("manifest path has no parent folder"))?;
    let dir: PathBuf = match checker {
        Some(p) => p.to_owned(),
        None => root.join(
            doc.get("safety_checker")
                .and_then(|s| s.get("dir"))
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_DIR),
        ),
    };
    let device = Device::Cpu;
    let checker = SafetyChecker::load(&dir, &device)
        .with_context(|| format!("loading the safety checker {}", dir.display()))?;
    let images = case
        .get("images")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("safety case lacks `images`"))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (i, rel) in images.iter().enumerate() {
        let path = root.join(rel.as_str().unwrap_or_default());
        let image = image::open(&path)
            .with_context(|| format!("opening {}", path.display()))?
            .to_rgb8();
        let r = checker.check(&image)?;
        let row = |v: &[f32]| Tensor::from_slice(v, (1, v.len()), &device);
        tensors.insert(format!("pixel_values_{i}"), r.pixel_values.clone());
        tensors.insert(format!("vision_pooled_output_{i}"), row(&r.pooled)?);
        tensors.insert(format!("image_embeds_{i}"), row(&r.image_embeds)?);
        tensors.insert(format!("cos_dist_{i}"), row(&r.cos_dist)?);
        tensors.insert(format!("special_cos_dist_{i}"), row(&r.special_cos_dist)?);
        tensors.insert(format!("concept_scores_{i}"), row(&r.concept_scores)?);
        tensors.insert(format!("special_scores_{i}"), row(&r.special_scores)?);
        tensors.insert(
            format!("has_nsfw_concept_{i}"),
            Tensor::from_slice(&[i64::from(r.nsfw)], 1, &device)?,
        );
        let shown = SafetyMode::Black.apply(image, r.nsfw);
        let unit = crate::pipeline::images::rgb_to_tensor(&shown, &device)?;
        tensors.insert(format!("output_image_{i}"), ((unit + 1.0)? / 2.0)?);
    }
    candle_core::safetensors::save(&tensors, out)
        .with_context(|| format!("writing {}", out.display()))?;
    log::info!("replayed the safety checker on {} images", images.len());
    Ok(())
}
