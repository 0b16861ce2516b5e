//! Walks a model root and lists what looks like a model: diffusers folders (`model_index.json`,
//! or `unet/` + `vae/` + `text_encoder/`) and `.safetensors` / `.ckpt` files. Blocking file
//! system work: callers run it off the async threads. Reads directory entries only, never file
//! contents; follows links placed inside the root (trusted) but never loops.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::model::ModelFormat;
use super::single_file::single_file_format;

/// Deeper than the seed layout (`root/v1/org/name/unet/...`) with room to spare.
const MAX_DEPTH: usize = 8;

/// A path that looks like a model, before identification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The root joined with the relative path (not canonicalized).
    pub(crate) path: PathBuf,
    /// Path relative to the root, `/`-separated.
    pub(crate) name: String,
    pub(crate) format: ModelFormat,
}

/// Whether `dir` is a diffusers pipeline folder.
pub(crate) fn is_diffusers_folder(dir: &Path) -> bool {
    dir.join("model_index.json").is_file()
        || ["unet", "vae", "text_encoder"]
            .iter()
            .all(|c| dir.join(c).is_dir())
}

/// The format of the model at `path` if it looks like one.
pub(crate) fn model_format_at(path: &Path) -> Option<ModelFormat> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        is_diffusers_folder(path).then_some(ModelFormat::Diffusers)
    } else if meta.is_file() {
        single_file_format(path)
    } else {
        None
    }
}

/// Every model-looking path under `root`, sorted by name.
pub(crate) fn scan_root(root: &Path) -> Vec<Found> {
    let mut found = Vec::new();
    let mut visited = HashSet::new();
    walk(root, root, 0, &mut visited, &mut found);
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    visited: &mut HashSet<PathBuf>,
    found: &mut Vec<Found>,
) {
    // Links may point anywhere inside or outside the root; a canonical-path set stops cycles.
    match std::fs::canonicalize(dir) {
        Ok(canonical) => {
            if !visited.insert(canonical) {
                return;
            }
        }
        Err(e) => {
            log::warn!("skipping {}: {e}", dir.display());
            return;
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            log::warn!("cannot list {}: {e}", dir.display());
            return;
        }
    };
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        if file_name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // dangling link
        };
        if meta.is_dir() {
            subdirs.push(path);
        } else if meta.is_file() {
            if let Some(format) = single_file_format(&path) {
                push(root, path, format, found);
            }
        }
    }
    for sub in subdirs {
        if is_diffusers_folder(&sub) {
            push(root, sub, ModelFormat::Diffusers, found);
        } else if depth + 1 < MAX_DEPTH {
            walk(root, &sub, depth + 1, visited, found);
        }
    }
}

fn push(root: &Path, path: PathBuf, format: ModelFormat, found: &mut Vec<Found>) {
    let Ok(rel) = path.strip_prefix(root) else {
        return;
    };
    let name = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    found.push(Found { path, name, format });
}
