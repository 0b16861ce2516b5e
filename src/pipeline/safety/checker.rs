//! diffusers' `StableDiffusionSafetyChecker` on one decoded image: CLIP image embedding,
//! cosine distances to the 17 concept and 3 special-care embeddings, scores rounded to three
//! decimals as numpy rounds float32 (`rint(x * 1000) / 1000`), +0.01 on every score after
//! the first special-care hit, flagged when any concept score is positive.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{linear_no_bias, Linear, Module, VarBuilder};
use image::RgbImage;

use super::config::{Preprocess, VisionConfig};
use super::preprocess::pixel_values;
use super::vision::{l2_normalize, VisionTower};
use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::load::loader::{component_weights, read_json};
use crate::pipeline::RuntimeOptions;

/// Concepts and special-care concepts of the published checker (fixed sizes in diffusers).
const CONCEPTS: usize = 17;
const SPECIAL_CONCEPTS: usize = 3;
/// What a special-care hit adds to every later score.
const SPECIAL_CARE_ADJUSTMENT: f32 = 0.01;

/// Everything the checker computed for one image.
#[derive(Debug, Clone)]
pub struct SafetyReport {
    pub pixel_values: Tensor,
    pub pooled: Vec<f32>,
    pub image_embeds: Vec<f32>,
    pub cos_dist: Vec<f32>,
    pub special_cos_dist: Vec<f32>,
    pub concept_scores: Vec<f32>,
    pub special_scores: Vec<f32>,
    pub nsfw: bool,
}

pub struct SafetyChecker {
    vision: VisionTower,
    projection: Linear,
    /// Unit-length rows, `[17, P]` and `[3, P]`.
    concepts: Tensor,
    special: Tensor,
    concept_weights: Vec<f32>,
    special_weights: Vec<f32>,
    preprocess: Preprocess,
    device: Device,
}

/// numpy's `round(x, 3)` on a float32.
fn round3(x: f32) -> f32 {
    (x * 1000.0).round_ties_even() / 1000.0
}

/// Scores as `forward` computes them: the special-care ones first (whose hits raise the
/// adjustment for everything after), then the concepts. Returns (special, concept, flagged).
fn scores(
    special_cos: &[f32],
    special_w: &[f32],
    cos: &[f32],
    concept_w: &[f32],
) -> (Vec<f32>, Vec<f32>, bool) {
    let score = |c: f32, w: f32, adjustment: f32| round3(c - w + adjustment);
    let mut adjustment = 0f32;
    let mut special = Vec::with_capacity(special_cos.len());
    for (c, w) in special_cos.iter().zip(special_w) {
        let s = score(*c, *w, adjustment);
        special.push(s);
        if s > 0.0 {
            adjustment = SPECIAL_CARE_ADJUSTMENT;
        }
    }
    let concept: Vec<f32> = cos
        .iter()
        .zip(concept_w)
        .map(|(c, w)| score(*c, *w, adjustment))
        .collect();
    let flagged = concept.iter().any(|s| *s > 0.0);
    (special, concept, flagged)
}

impl SafetyChecker {
    /// Loads a transformers folder (`config.json`, `preprocessor_config.json` at the top or
    /// under `feature_extractor/`, `model.safetensors` or `pytorch_model.bin`) in f32 on
    /// `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = VisionConfig::from_json(&read_json(&dir.join("config.json"))?)?;
        let pre_path = [
            "preprocessor_config.json",
            "feature_extractor/preprocessor_config.json",
        ]
        .iter()
        .map(|rel| dir.join(rel))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            PipelineError::MissingFile(dir.to_owned(), "preprocessor_config.json".into())
        })?;
        let preprocess = Preprocess::from_json(&read_json(&pre_path)?)?;
        let opts = RuntimeOptions {
            device: device.clone(),
            dtype: DType::F32,
        };
        let vb = component_weights(dir, DType::F32, &opts)?;
        Self::from_weights(vb, &cfg, preprocess)
    }

    /// A checker from weights already opened (`vb` at the checkpoint root), e.g. random ones
    /// of a given shape for the cost benchmark.
    pub fn from_weights(
        vb: VarBuilder,
        cfg: &VisionConfig,
        preprocess: Preprocess,
    ) -> Result<Self> {
        // The Hub's checkpoint nests the tower twice; transformers >= 5.6 saves it once.
        let tower = if vb.contains_tensor("vision_model.vision_model.embeddings.class_embedding") {
            vb.pp("vision_model.vision_model")
        } else {
            vb.pp("vision_model")
        };
        let p = cfg.projection_dim;
        let unit = |t: Tensor| l2_normalize(&t);
        let list = |t: Tensor| -> Result<Vec<f32>> { Ok(t.to_vec1::<f32>()?) };
        Ok(SafetyChecker {
            vision: VisionTower::new(tower, cfg)?,
            projection: linear_no_bias(cfg.layers.hidden_size, p, vb.pp("visual_projection"))?,
            concepts: unit(vb.get((CONCEPTS, p), "concept_embeds")?)?,
            special: unit(vb.get((SPECIAL_CONCEPTS, p), "special_care_embeds")?)?,
            concept_weights: list(vb.get(CONCEPTS, "concept_embeds_weights")?)?,
            special_weights: list(vb.get(SPECIAL_CONCEPTS, "special_care_embeds_weights")?)?,
            preprocess,
            device: vb.device().clone(),
        })
    }

    /// Checks one 8-bit RGB image (the pipeline's postprocessed output).
    pub fn check(&self, image: &RgbImage) -> Result<SafetyReport> {
        let pixel_values = pixel_values(image, &self.preprocess, &self.device)?;
        let pooled = self.vision.forward(&pixel_values)?;
        let embeds = self.projection.forward(&pooled)?;
        let unit = l2_normalize(&embeds)?;
        let row = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let cos_dist = row(&unit.matmul(&self.concepts.t()?)?)?;
        let special_cos_dist = row(&unit.matmul(&self.special.t()?)?)?;
        let (special_scores, concept_scores, nsfw) = scores(
            &special_cos_dist,
            &self.special_weights,
            &cos_dist,
            &self.concept_weights,
        );
        Ok(SafetyReport {
            pixel_values,
            pooled: row(&pooled)?,
            image_embeds: row(&embeds)?,
            cos_dist,
            special_cos_dist,
            concept_scores,
            special_scores,
            nsfw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_care_hit_raises_later_scores() {
        // Special 0 hits (0.3 - 0.2 > 0): every later score gets +0.01, which flags the
        // concept at -0.005.
        let (special, concept, flagged) =
            scores(&[0.3, 0.1], &[0.2, 0.2], &[0.195, 0.1], &[0.2, 0.2]);
        assert_eq!(special, vec![0.1, -0.09]);
        assert_eq!(concept, vec![0.005, -0.09]);
        assert!(flagged);
        // Without the hit the same concept stays below zero.
        let (_, concept, flagged) = scores(&[0.1, 0.1], &[0.2, 0.2], &[0.195, 0.1], &[0.2, 0.2]);
        assert_eq!(concept, vec![-0.005, -0.1]);
        assert!(!flagged);
    }
}
