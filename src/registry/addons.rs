//! The add-on files next to the models: LoRA and textual-inversion embedding folders
//! (configured, or the defaults under each model root), resolving a request's LoRA name
//! inside them (confined: no absolute paths, no `..`), and listing what they hold for the
//! `models` action. Reads directory entries only, never file contents.

use std::path::{Component as PathComponent, Path, PathBuf};

use serde::Serialize;

use super::model::ResolvedModel;
use super::resolver::{ModelResolver, ResolveError};

/// Extensions tried for a LoRA or embedding name, in order.
const EXTENSIONS: [&str; 4] = ["safetensors", "pt", "ckpt", "bin"];
/// Most embedding files read from the roots (each is small; this bounds a flooded folder).
const MAX_EMBEDDINGS: usize = 1000;

/// A LoRA name that cannot be used; the message is for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddOnError(pub String);

/// One listed add-on: its name (what a prompt or request writes) and its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddOnEntry {
    pub name: String,
    pub path: PathBuf,
}

/// What the add-on folders hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddOns {
    pub loras: Vec<AddOnEntry>,
    pub embeddings: Vec<AddOnEntry>,
}

fn has_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The tensor files under `root` (sub-folders up to three levels), named by their path
/// relative to the root without extension; at most [`MAX_EMBEDDINGS`] per root.
fn files_under(root: &Path, depth: usize, out: &mut Vec<AddOnEntry>, base: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if out.len() >= MAX_EMBEDDINGS {
            return;
        }
        let path = entry.path();
        if path.is_dir() && depth > 0 {
            files_under(&path, depth - 1, out, base);
        } else if has_extension(&path) && path.is_file() {
            let rel = path.strip_prefix(base).unwrap_or(&path).with_extension("");
            out.push(AddOnEntry {
                name: rel.to_string_lossy().replace('\\', "/"),
                path,
            });
        }
    }
}

impl AddOnRoots {
    /// The LoRAs and embeddings in the folders, sorted by name.
    pub fn list(&self) -> AddOns {
        let collect = |roots: &[PathBuf], depth: usize| {
            let mut out = Vec::new();
            for root in roots {
                let mut here = Vec::new();
                files_under(root, depth, &mut here, root);
                out.extend(here);
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            out
        };
        AddOns {
            loras: collect(&self.lora, 3),
            embeddings: collect(&self.embeddings, 0),
        }
    }

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

/// A model resolver that also lists the add-on folders.
pub struct WithAddOns<R> {
    pub inner: R,
    pub roots: AddOnRoots,
}

impl<R: ModelResolver> ModelResolver for WithAddOns<R> {
    fn resolve(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        self.inner.resolve(requested)
    }

    fn list(&mut self) -> Vec<ResolvedModel> {
        self.inner.list()
    }

    fn convert(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        self.inner.convert(requested)
    }

    fn reset(&mut self) {
        self.inner.reset()
    }

    fn add_ons(&mut self) -> AddOns {
        self.roots.list()
    }
}

/// Where LoRAs and embeddings are looked up.
#[derive(Debug, Clone, Default)]
pub struct AddOnRoots {
    pub lora: Vec<PathBuf>,
    pub embeddings: Vec<PathBuf>,
}

/// `name` as a relative path of normal components, or an error when it would climb out of
/// its root (absolute, `..`, NUL, empty).
fn confined(name: &str) -> Result<PathBuf, AddOnError> {
    let refuse = || {
        AddOnError(format!(
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
pub fn find_lora(roots: &[PathBuf], name: &str) -> Result<PathBuf, AddOnError> {
    let rel = confined(name)?;
    for root in roots {
        let direct = root.join(&rel);
        if has_extension(&rel) && direct.is_file() {
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
    Err(AddOnError(format!(
        "unknown LoRA {name:?}: no such file in the LoRA folders"
    )))
}

/// Embedding files directly in the roots (`<name>.safetensors|.pt|...`).
pub fn embedding_files(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten().take(MAX_EMBEDDINGS) {
            let path = entry.path();
            if has_extension(&path) && path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out.truncate(MAX_EMBEDDINGS);
    out
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
