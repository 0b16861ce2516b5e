//! The safety checker folder's two configs: `config.json` (the CLIP vision tower of
//! `vision_config`, transformers' CLIPVisionConfig defaults for missing keys, and the
//! projection size) and `preprocessor_config.json` in either form (the legacy
//! `CLIPFeatureExtractor` one with `size: 224`, or `CLIPImageProcessor` with
//! `size: {shortest_edge}` and `crop_size: {height, width}`).

use serde_json::Value;

use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::load::config::{ClipActivation, ClipConfig, Fields};

/// Largest patch grid side accepted from a config.
const MAX_GRID: usize = 64;

/// The vision tower: encoder layers as [`ClipConfig`] describes them, plus the patch grid.
#[derive(Debug, Clone)]
pub struct VisionConfig {
    pub layers: ClipConfig,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    /// Size of `visual_projection` (top-level `projection_dim`).
    pub projection_dim: usize,
}

impl VisionConfig {
    /// Reads a StableDiffusionSafetyChecker `config.json` (a full CLIPConfig).
    pub fn from_json(doc: &Value) -> Result<Self> {
        let top = Fields {
            what: "safety checker config",
            doc,
        };
        let projection_dim = top.usize_or("projection_dim", 512)?;
        let vision = doc.get("vision_config").unwrap_or(&Value::Null);
        let f = Fields {
            what: "safety checker vision_config",
            doc: vision,
        };
        let layers = ClipConfig {
            vocab_size: 0,
            hidden_size: f.usize_or("hidden_size", 768)?,
            intermediate_size: f.usize_or("intermediate_size", 3072)?,
            num_hidden_layers: f.usize_or("num_hidden_layers", 12)?,
            num_attention_heads: f.usize_or("num_attention_heads", 12)?,
            max_position_embeddings: 0,
            layer_norm_eps: f.f64_or("layer_norm_eps", 1e-5)?,
            hidden_act: ClipActivation::from_fields(&f)?,
        };
        let cfg = VisionConfig {
            image_size: f.usize_or("image_size", 224)?,
            patch_size: f.usize_or("patch_size", 32)?,
            num_channels: f.usize_or("num_channels", 3)?,
            projection_dim,
            layers,
        };
        let l = &cfg.layers;
        if l.num_attention_heads == 0 || l.hidden_size % l.num_attention_heads != 0 {
            return Err(f.bad("num_attention_heads"));
        }
        if l.num_hidden_layers == 0 || l.num_hidden_layers > 256 {
            return Err(f.bad("num_hidden_layers"));
        }
        // At most a 64x64 patch grid: attention is quadratic in it (ViT-L/14 has 16x16).
        if cfg.patch_size == 0
            || cfg.image_size % cfg.patch_size != 0
            || cfg.image_size / cfg.patch_size > MAX_GRID
        {
            return Err(f.bad("patch_size"));
        }
        if cfg.num_channels != 3 {
            return Err(f.bad("num_channels"));
        }
        Ok(cfg)
    }

    /// Patches per image plus the class token.
    pub(crate) fn positions(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side + 1
    }
}

/// CLIPImageProcessor's steps, as the folder configures them.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Target of the shortest edge (None: no resize).
    pub shortest_edge: Option<usize>,
    /// Center crop (height, width) (None: no crop).
    pub crop: Option<(usize, usize)>,
    pub rescale: Option<f32>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub normalize: bool,
}

/// Largest resize or crop target accepted from a config.
const MAX_SIDE: usize = 4096;

impl Preprocess {
    pub fn from_json(doc: &Value) -> Result<Self> {
        let f = Fields {
            what: "safety checker preprocessor_config",
            doc,
        };
        let flag = |key: &str| -> Result<bool> {
            match f.get(key) {
                None => Ok(true),
                Some(v) => v.as_bool().ok_or_else(|| f.bad(key)),
            }
        };
        // `resample` 3 is PIL's BICUBIC, the only filter implemented here.
        if f.usize_or("resample", 3)? != 3 {
            return Err(PipelineError::Config(
                "safety checker preprocessor_config: only bicubic `resample` (3) is supported"
                    .into(),
            ));
        }
        let side = |v: Option<&Value>, key: &str| -> Result<usize> {
            v.and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (1..=MAX_SIDE).contains(n))
                .ok_or_else(|| f.bad(key))
        };
        let size = f.get("size");
        let shortest_edge = match size {
            Some(Value::Object(m)) => side(m.get("shortest_edge"), "size.shortest_edge")?,
            other => side(other.or(Some(&Value::from(224))), "size")?,
        };
        let crop = match f.get("crop_size") {
            Some(Value::Object(m)) => (
                side(m.get("height"), "crop_size.height")?,
                side(m.get("width"), "crop_size.width")?,
            ),
            other => {
                let s = side(other.or(Some(&Value::from(224))), "crop_size")?;
                (s, s)
            }
        };
        let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            let Some(v) = f.get(key) else {
                return Ok(default);
            };
            let vals: Vec<f32> = v
                .as_array()
                .ok_or_else(|| f.bad(key))?
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| f.bad(key))?;
            <[f32; 3]>::try_from(vals).map_err(|_| f.bad(key))
        };
        let std = triple("image_std", [0.268_629_54, 0.261_302_6, 0.275_777_1])?;
        if std.iter().any(|s| !s.is_normal()) {
            return Err(f.bad("image_std"));
        }
        Ok(Preprocess {
            shortest_edge: flag("do_resize")?.then_some(shortest_edge),
            crop: flag("do_center_crop")?.then_some(crop),
            rescale: flag("do_rescale")?
                .then(|| f.f64_or("rescale_factor", 1.0 / 255.0).map(|r| r as f32))
                .transpose()?,
            mean: triple("image_mean", [0.481_454_66, 0.457_827_5, 0.408_210_73])?,
            std,
            normalize: flag("do_normalize")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_bounds() {
        let cfg = VisionConfig::from_json(&json!({"vision_config": {"patch_size": 14}})).unwrap();
        assert_eq!(cfg.layers.hidden_size, 768);
        assert_eq!(cfg.positions(), 257);
        for bad in [
            json!({"vision_config": {"patch_size": 1, "image_size": 4096}}),
            json!({"vision_config": {"patch_size": 15}}),
            json!({"vision_config": {"num_attention_heads": 5}}),
            json!({"vision_config": {"hidden_act": "relu"}}),
        ] {
            assert!(VisionConfig::from_json(&bad).is_err(), "{bad}");
        }
        assert!(Preprocess::from_json(&json!({"resample": 2})).is_err());
        assert!(Preprocess::from_json(&json!({"size": {"shortest_edge": 0}})).is_err());
        assert!(Preprocess::from_json(&json!({"image_std": [0.5, 0.0, 0.5]})).is_err());
    }
}
