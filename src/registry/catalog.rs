//! The model registry: knows every model under the configured roots, identifies each from
//! its weights and configs, and resolves a client's model name to a [`ResolvedModel`] with
//! path confinement. All methods block on the file system: the actor calls them off the async
//! threads. It only reads; it never writes or modifies a model file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::guard::contained;
use super::identify::{identify_diffusers, IdentifyError, Identity};
use super::model::{ModelFormat, ResolvedModel};
use super::paths::{confine, Candidate, Root};
use super::resolver::ResolveError;
use super::scan::{model_format_at, scan_root};
use super::single_file::{identify_single_file, SingleFileError};
use crate::pipeline::load::pickle::PickleError;

/// A client's model string as quoted in errors: at most 200 characters.
pub(super) fn shown(requested: &str) -> String {
    let mut s: String = requested.chars().take(200).collect();
    if s.len() < requested.len() {
        s.push_str("...");
    }
    s
}

/// What identification concluded about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Served(ResolvedModel),
    Unsupported(String),
    Unreadable(String),
}

/// File identity used to skip re-identifying unchanged models on rescans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path, format: ModelFormat) -> Option<Stamp> {
    // A diffusers folder changes when its UNet config does (folder mtimes are unreliable).
    let probe = match format {
        ModelFormat::Diffusers => path.join("unet").join("config.json"),
        _ => path.to_path_buf(),
    };
    let meta = std::fs::metadata(probe).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

#[derive(Debug, Clone)]
struct Entry {
    root: usize,
    stamp: Option<Stamp>,
    outcome: Outcome,
}

/// Counts from one scan, for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub served: usize,
    pub unsupported: usize,
    pub unreadable: usize,
}

/// Finds and identifies models under the roots. See the module docs.
#[derive(Debug)]
pub struct Registry {
    roots: Vec<Root>,
    /// Keyed by root-joined lexical path.
    entries: BTreeMap<PathBuf, Entry>,
    /// The previous scan's counts: a scan that changes nothing logs at debug level only.
    last_report: Option<ScanReport>,
}

/// Identifies one model; a panic while reading it makes only this file unreadable.
fn identify(path: &Path, format: ModelFormat) -> Result<(ModelFormat, Identity), IdentifyError> {
    contained("identifying a model", || identify_unguarded(path, format))
        .unwrap_or_else(|failure| Err(IdentifyError::Unreadable(failure.to_string())))
}

fn identify_unguarded(
    path: &Path,
    format: ModelFormat,
) -> Result<(ModelFormat, Identity), IdentifyError> {
    match format {
        ModelFormat::Diffusers => identify_diffusers(path).map(|id| (format, id)),
        _ => identify_single_file(path).map_err(|e| match e {
            SingleFileError::Identify(e) => e,
            SingleFileError::Tensors(
                e @ super::tensors::TensorsError::Checkpoint(PickleError::Legacy),
            ) => IdentifyError::Unsupported(e.to_string()),
            other => IdentifyError::Unreadable(other.to_string()),
        }),
    }
}

impl Registry {
    /// A registry over `roots` (in priority order). Nothing is scanned yet.
    pub fn new<P: AsRef<Path>>(roots: &[P]) -> Self {
        Registry {
            roots: roots.iter().map(|r| Root::new(r.as_ref())).collect(),
            entries: BTreeMap::new(),
            last_report: None,
        }
    }

    /// Forgets every identification, as a freshly started registry (after a contained panic,
    /// nothing half-updated survives).
    pub(crate) fn reset(&mut self) {
        self.entries.clear();
        self.last_report = None;
    }

    fn examine(
        &mut self,
        root: usize,
        path: PathBuf,
        name: String,
        format: ModelFormat,
    ) -> Outcome {
        let stamp = stamp(&path, format);
        if let Some(entry) = self.entries.get(&path) {
            if entry.stamp == stamp && stamp.is_some() {
                return entry.outcome.clone();
            }
        }
        let outcome = match identify(&path, format) {
            Ok((format, id)) => match std::fs::canonicalize(&path) {
                Ok(canonical) => Outcome::Served(ResolvedModel {
                    name: name.clone(),
                    path: canonical,
                    version: id.version,
                    kind: id.kind,
                    format,
                    prediction: id.prediction,
                }),
                Err(e) => Outcome::Unreadable(e.to_string()),
            },
            Err(IdentifyError::Unsupported(arch)) => {
                log::warn!("model {name}: not served: {arch}");
                Outcome::Unsupported(arch)
            }
            Err(IdentifyError::Unreadable(message)) => {
                log::warn!("model {name}: {message}");
                Outcome::Unreadable(message)
            }
        };
        self.entries.insert(
            path,
            Entry {
                root,
                stamp,
                outcome: outcome.clone(),
            },
        );
        outcome
    }

    /// Walks every root again; unchanged models are not re-identified, vanished ones dropped.
    pub fn rescan(&mut self) -> ScanReport {
        let mut seen = std::collections::HashSet::new();
        let roots: Vec<PathBuf> = self.roots.iter().map(|r| r.lexical.clone()).collect();
        for (i, root) in roots.into_iter().enumerate() {
            if !root.is_dir() {
                log::warn!("model root {} is not a readable folder", root.display());
                continue;
            }
            for found in scan_root(&root) {
                seen.insert(found.path.clone());
                self.examine(i, found.path, found.name, found.format);
            }
        }
        self.entries.retain(|path, _| seen.contains(path));
        let mut report = ScanReport::default();
        for entry in self.entries.values() {
            match entry.outcome {
                Outcome::Served(_) => report.served += 1,
                Outcome::Unsupported(_) => report.unsupported += 1,
                Outcome::Unreadable(_) => report.unreadable += 1,
            }
        }
        let level = if self.last_report.as_ref() == Some(&report) {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "model scan: {} served, {} unsupported, {} unreadable",
            report.served,
            report.unsupported,
            report.unreadable
        );
        self.last_report = Some(report.clone());
        report
    }

    /// Every servable model, rescanning first so models dropped in since are listed.
    /// A model reachable twice (two roots, or a link) is listed once, under its first name.
    pub fn list(&mut self) -> Vec<ResolvedModel> {
        self.rescan();
        let mut by_root: Vec<(usize, ResolvedModel)> = self
            .entries
            .values()
            .filter_map(|e| match &e.outcome {
                Outcome::Served(m) => Some((e.root, m.clone())),
                _ => None,
            })
            .collect();
        by_root.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
        let mut seen = std::collections::HashSet::new();
        by_root
            .into_iter()
            .filter(|(_, m)| seen.insert(m.path.clone()))
            .map(|(_, m)| m)
            .collect()
    }

    /// For the legacy `convert` action: the single file a client names (confined and
    /// identified like any model) and the folder to create beside it, inside the same root
    /// (`v1/model.ckpt` -> `v1/model/`). Run [`super::convert::convert_single_file`] on the
    /// pair; it refuses an existing destination.
    pub fn convert_paths(&mut self, requested: &str) -> Result<(PathBuf, PathBuf), ResolveError> {
        let candidates = confine(requested, &self.roots)?;
        for Candidate { path, .. } in candidates {
            if model_format_at(&path).is_none() {
                continue;
            }
            let model = self.resolve(requested)?;
            if model.format == ModelFormat::Diffusers {
                return Err(ResolveError::Unsupported {
                    name: model.name,
                    arch: "already a diffusers folder; convert takes a .safetensors or .ckpt file"
                        .into(),
                });
            }
            // The lexical path keeps the destination inside the root even when the file is
            // a link to elsewhere.
            let dst = super::convert::default_destination(&path);
            return Ok((path, dst));
        }
        Err(ResolveError::NotFound(shown(requested)))
    }

    /// Resolves a client's model name: an absolute path under a root, or a path relative to
    /// a root. A model not known yet is identified on the spot (no restart needed after
    /// dropping one in). Escapes are refused before anything is opened.
    pub fn resolve(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        let candidates = confine(requested, &self.roots)?;
        for Candidate { root, path, name } in candidates {
            let Some(format) = model_format_at(&path) else {
                self.entries.remove(&path);
                continue;
            };
            return match self.examine(root, path, name.clone(), format) {
                Outcome::Served(model) => Ok(model),
                Outcome::Unsupported(arch) => Err(ResolveError::Unsupported { name, arch }),
                Outcome::Unreadable(message) => Err(ResolveError::Io { name, message }),
            };
        }
        Err(ResolveError::NotFound(shown(requested)))
    }
}
