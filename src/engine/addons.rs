//! LoRAs and textual-inversion embeddings for the generator: their roots, resolving a
//! request's LoRA names inside them (confined: no absolute paths, no `..`), reading the
//! files once (cached by path and modification time), and the one LoRA-merged model kept
//! for the last LoRA set so repeating a request with the same LoRAs builds nothing.

use std::collections::HashMap;
use std::path::{Component as PathComponent, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::pipeline::load::embedding::{read_embedding, TextualInversion};
use crate::pipeline::lora::{read_lora, AppliedLora, LoraFile};
use crate::pipeline::params::LoraRequest;
use crate::pipeline::StableDiffusion;

use super::GenerateError;

/// Extensions tried for a LoRA or embedding name, in order.
const EXTENSIONS: [&str; 4] = ["safetensors", "pt", "ckpt", "bin"];
/// Most embedding files read from the roots (each is small; this bounds a flooded folder).
const MAX_EMBEDDINGS: usize = 1000;

/// Where LoRAs and embeddings are looked up.
#[derive(Debug, Clone, Default)]
pub struct AddOnRoots {
    pub lora: Vec<PathBuf>,
    pub embeddings: Vec<PathBuf>,
}

impl AddOnRoots {
    /// The configured roots, or by default `Lora/`, `lora/`, `models/Lora/` (LoRAs) and
    /// `embeddings/` under each model root.
    pub fn with_defaults(
        lora: Vec<PathBuf>,
        embeddings: Vec<PathBuf>,
        model_roots: &[PathBuf],
    ) -> Self {
        let under = |subs: &[&str]| -> Vec<PathBuf> {
            model_roots
                .iter()
                .flat_map(|r| subs.iter().map(move |s| r.join(s)))
                .collect()
        };
        AddOnRoots {
            lora: if lora.is_empty() {
                under(&["Lora", "lora", "models/Lora"])
            } else {
                lora
            },
            embeddings: if embeddings.is_empty() {
                under(&["embeddings"])
            } else {
                embeddings
            },
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `name` as a relative path of normal components, or an error when it would climb out of
/// its root (absolute, `..`, NUL, empty).
fn confined(name: &str) -> Result<PathBuf, GenerateError> {
    let refuse = || {
        GenerateError::Invalid(format!(
            "LoRA name {name:?} must be a name inside a LoRA folder (no absolute path, no ..)"
        ))
    };
    if name.is_empty() || name.contains('\0') {
        return Err(refuse());
    }
    let mut rel = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            PathComponent::Normal(p) => rel.push(p),
            PathComponent::CurDir => {}
            _ => return Err(refuse()),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(refuse());
    }
    Ok(rel)
}

/// The file of LoRA `name` in the first root that has it.
pub(crate) fn find_lora(roots: &[PathBuf], name: &str) -> Result<PathBuf, GenerateError> {
    let rel = confined(name)?;
    for root in roots {
        let direct = root.join(&rel);
        let has_ext = rel
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if has_ext && direct.is_file() {
            return Ok(direct);
        }
        for ext in EXTENSIONS {
            let mut file = direct.clone().into_os_string();
            file.push(".");
            file.push(ext);
            let file = PathBuf::from(file);
            if file.is_file() {
                return Ok(file);
            }
        }
    }
    Err(GenerateError::Invalid(format!(
        "unknown LoRA {name:?}: no such file in the LoRA folders"
    )))
}

/// Embedding files directly in the roots (`<name>.safetensors|.pt|...`).
fn embedding_files(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten().take(MAX_EMBEDDINGS) {
            let path = entry.path();
            let ok = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if ok && path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out.truncate(MAX_EMBEDDINGS);
    out
}

/// Parsed files and the last merged model.
#[derive(Default)]
pub(crate) struct AddOnCache {
    loras: HashMap<PathBuf, (Option<SystemTime>, Arc<LoraFile>)>,
    embeddings: HashMap<PathBuf, (Option<SystemTime>, Option<TextualInversion>)>,
    /// (model path, LoRA key) and the model built with those LoRAs.
    pub(crate) merged: Option<(PathBuf, String, StableDiffusion)>,
}

impl AddOnCache {
    /// The request's LoRAs read (or taken from the cache) and a key naming the set.
    pub(crate) fn loras(
        &mut self,
        roots: &[PathBuf],
        requests: &[LoraRequest],
    ) -> Result<(Vec<AppliedLora>, String), GenerateError> {
        let mut applied = Vec::with_capacity(requests.len());
        let mut key = String::new();
        for r in requests {
            let path = find_lora(roots, &r.name)?;
            let stamp = modified(&path);
            let file = match self.loras.get(&path) {
                Some((s, f)) if *s == stamp => f.clone(),
                _ => {
                    let f = Arc::new(
                        read_lora(&path, &r.name)
                            .map_err(|e| GenerateError::Invalid(e.to_string()))?,
                    );
                    self.loras.insert(path.clone(), (stamp, f.clone()));
                    f
                }
            };
            key.push_str(&format!(
                "{}:{:?}:{}:{};",
                path.display(),
                stamp,
                r.text_multiplier,
                r.unet_multiplier
            ));
            applied.push(AppliedLora {
                file,
                text_multiplier: r.text_multiplier,
                unet_multiplier: r.unet_multiplier,
            });
        }
        Ok((applied, key))
    }

    /// Every readable embedding in the roots; unreadable ones are logged and skipped (as
    /// A1111 skips them).
    pub(crate) fn embeddings(&mut self, roots: &[PathBuf]) -> Vec<TextualInversion> {
        let files = embedding_files(roots);
        self.embeddings.retain(|p, _| files.contains(p));
        let mut out = Vec::new();
        for path in files {
            let stamp = modified(&path);
            let cached = matches!(self.embeddings.get(&path), Some((s, _)) if *s == stamp);
            if !cached {
                let read = match read_embedding(&path) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        log::warn!("skipping embedding: {e}");
                        None
                    }
                };
                self.embeddings.insert(path.clone(), (stamp, read));
            }
            if let Some((_, Some(e))) = self.embeddings.get(&path) {
                out.push(e.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_climb_out() {
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a\0b"] {
            assert!(confined(bad).is_err(), "{bad:?}");
        }
        assert_eq!(confined("sub/fox").unwrap(), PathBuf::from("sub/fox"));
    }
}
