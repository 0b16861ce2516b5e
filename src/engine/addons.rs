//! The generator's add-on state: LoRA and embedding files read once (cached by path and
//! modification time) and the one LoRA-merged model kept for the last LoRA set, so repeating
//! a request with the same LoRAs builds nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::pipeline::load::embedding::{read_embedding, TextualInversion};
use crate::pipeline::lora::{read_lora, AppliedLora, LoraFile};
use crate::pipeline::params::LoraRequest;
use crate::pipeline::StableDiffusion;
use crate::registry::addons::{embedding_files, find_lora};

use super::GenerateError;

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
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
            let path = find_lora(roots, &r.name).map_err(|e| GenerateError::Invalid(e.0))?;
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
