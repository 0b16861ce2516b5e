//! The built-in `ModelResolver`: a requested model is a diffusers folder under one of the
//! model roots (relative name or absolute path inside a root). Confinement is lexical: `..`
//! components and absolute paths outside the roots are refused before the disk is touched.
//! Identifies v1/v2, txt2img/inpaint and the prediction type from the folder's JSON configs.
//! Never follows a request outside the roots, never reads weights.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::messages::registry::{ModelResolver, ResolveError};
use crate::registry::model::{ModelFormat, ModelKind, ModelVersion, Prediction, ResolvedModel};

pub struct DirResolver {
    roots: Vec<PathBuf>,
}

impl DirResolver {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        DirResolver { roots }
    }

    fn display(requested: &str) -> String {
        let shown: String = requested.chars().take(200).collect();
        format!("{shown:?}")
    }
}

fn has_parent_or_odd_component(p: &Path) -> bool {
    p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
}

impl ModelResolver for DirResolver {
    fn resolve(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        let req = Path::new(requested.trim());
        if has_parent_or_odd_component(req) {
            return Err(ResolveError::Forbidden(format!(
                "model path {} may not contain \"..\"",
                Self::display(requested)
            )));
        }
        let candidates: Vec<(PathBuf, &PathBuf)> = if req.is_absolute() {
            let inside: Vec<(PathBuf, &PathBuf)> = self
                .roots
                .iter()
                .filter(|root| req.starts_with(root))
                .map(|root| (req.to_path_buf(), root))
                .collect();
            if inside.is_empty() {
                return Err(ResolveError::Forbidden(format!(
                    "model path {} is outside the model roots",
                    Self::display(requested)
                )));
            }
            inside
        } else {
            self.roots
                .iter()
                .map(|root| (root.join(req), root))
                .collect()
        };
        for (path, root) in candidates {
            if path.is_dir() {
                return identify(&path, root);
            }
            if path.is_file() {
                return Err(ResolveError::Unavailable(format!(
                    "model {} is a single-file checkpoint; this build only loads diffusers folders",
                    Self::display(requested)
                )));
            }
        }
        Err(ResolveError::NotFound(format!(
            "model {} not found under the model roots",
            Self::display(requested)
        )))
    }

    fn list(&mut self) -> Vec<ResolvedModel> {
        let mut found = Vec::new();
        for root in &self.roots {
            scan(root, root, 2, &mut found);
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.dedup_by(|a, b| a.path == b.path);
        found
    }
}

fn scan(root: &Path, dir: &Path, depth: usize, out: &mut Vec<ResolvedModel>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.join("unet").join("config.json").is_file() {
            if let Ok(m) = identify(&path, root) {
                out.push(m);
            }
        } else if depth > 1 {
            scan(root, &path, depth - 1, out);
        }
    }
}

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Identifies a diffusers folder from `unet/config.json`, `text_encoder/config.json` and
/// `scheduler/scheduler_config.json`.
pub fn identify(dir: &Path, root: &Path) -> Result<ResolvedModel, ResolveError> {
    let name = dir
        .strip_prefix(root)
        .unwrap_or(dir)
        .to_string_lossy()
        .to_string();
    let unet = read_json(&dir.join("unet").join("config.json")).ok_or_else(|| {
        ResolveError::NotFound(format!(
            "{name:?} is not a diffusers model folder (no readable unet/config.json)"
        ))
    })?;
    let in_channels = unet.get("in_channels").and_then(Value::as_u64).unwrap_or(4);
    let kind = match in_channels {
        4 => ModelKind::Txt2Img,
        9 => ModelKind::Inpaint,
        other => {
            return Err(ResolveError::Unavailable(format!(
                "{name:?}: unsupported UNet with {other} input channels"
            )))
        }
    };
    let cross = unet.get("cross_attention_dim").and_then(Value::as_u64);
    let linear = unet
        .get("use_linear_projection")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // SD2 uses OpenCLIP (plain gelu) and 1024-wide cross attention.
    let gelu = read_json(&dir.join("text_encoder").join("config.json"))
        .and_then(|t| {
            t.get("hidden_act")
                .and_then(Value::as_str)
                .map(|s| s == "gelu")
        })
        .unwrap_or(false);
    let version = if cross == Some(1024) || linear || gelu {
        ModelVersion::V2
    } else {
        ModelVersion::V1
    };
    let prediction = read_json(&dir.join("scheduler").join("scheduler_config.json"))
        .and_then(|s| {
            s.get("prediction_type")
                .and_then(Value::as_str)
                .map(|p| p == "v_prediction")
        })
        .map_or(Prediction::Epsilon, |v| {
            if v {
                Prediction::VPrediction
            } else {
                Prediction::Epsilon
            }
        });
    let path = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    Ok(ResolvedModel {
        name,
        path,
        version,
        kind,
        format: ModelFormat::Diffusers,
        prediction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
    }

    #[test]
    fn identifies_fixture_models() {
        let mut r = DirResolver::new(vec![fixtures()]);
        let sd1 = r.resolve("tiny-sd1").unwrap();
        assert_eq!(
            (sd1.version, sd1.kind, sd1.prediction),
            (ModelVersion::V1, ModelKind::Txt2Img, Prediction::Epsilon)
        );
        let sd2 = r.resolve("tiny-sd2").unwrap();
        assert_eq!(
            (sd2.version, sd2.prediction),
            (ModelVersion::V2, Prediction::VPrediction)
        );
        let inp = r
            .resolve(fixtures().join("tiny-inpaint").to_str().unwrap())
            .unwrap();
        assert_eq!(inp.kind, ModelKind::Inpaint);
        assert_eq!(inp.name, "tiny-inpaint");
        let names: Vec<String> = r.list().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["tiny-inpaint", "tiny-sd1", "tiny-sd2"]);
    }

    #[test]
    fn confinement() {
        let mut r = DirResolver::new(vec![fixtures()]);
        assert!(matches!(
            r.resolve("../models/tiny-sd1"),
            Err(ResolveError::Forbidden(_))
        ));
        assert!(matches!(r.resolve("/etc"), Err(ResolveError::Forbidden(_))));
        let sneaky = format!("{}/../models/tiny-sd1", fixtures().display());
        assert!(matches!(
            r.resolve(&sneaky),
            Err(ResolveError::Forbidden(_))
        ));
        assert!(matches!(r.resolve("nope"), Err(ResolveError::NotFound(_))));
        assert_eq!(
            ResolveError::Forbidden(String::new()).code().as_str(),
            "forbidden_path"
        );
    }
}
