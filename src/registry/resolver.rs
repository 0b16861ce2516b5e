//! The model-resolution seam: the `ModelResolver` trait the model registry actor drives, the
//! one `ResolveError` every resolver and the actor answer with, and the implementation over
//! [`Registry`]. Implementations may block on the file system: the actor runs them on its own
//! thread. No actix and no wire format here (front ends map the error kinds to their codes).

use super::catalog::{shown, Registry};
use super::convert::convert_single_file;
use super::model::ResolvedModel;
use super::paths::PathError;

/// Why a model name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No model at that name under any root (wire code `model_not_found`).
    #[error("model not found: {0}")]
    NotFound(String),
    /// The request named no model and no default is configured (wire code `model_not_found`).
    #[error("no model requested and no default_model configured (use --model)")]
    NoDefault,
    /// The name leaves the model roots (wire code `forbidden_path`); nothing was opened.
    #[error("model path is outside the model roots: {0}")]
    Forbidden(String),
    /// A model of an architecture runai does not serve, e.g. the SDXL refiner (wire code
    /// `unavailable`).
    #[error("model {name} is not supported: {arch}")]
    Unsupported { name: String, arch: String },
    /// The model's files could not be read or are corrupt (wire code `unavailable`).
    #[error("cannot read model {name}: {message}")]
    Io { name: String, message: String },
    /// The resolver cannot answer now or cannot do this at all: down, restarting, or a
    /// conversion that failed (wire code `unavailable`).
    #[error("{0}")]
    Unavailable(String),
}

impl From<PathError> for ResolveError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::Forbidden(p) => ResolveError::Forbidden(shown(&p)),
        }
    }
}

/// Resolves a client's model string to files on disk. Lives on one dedicated thread.
pub trait ModelResolver: Send {
    /// `requested` is never empty (the actor substitutes the default model).
    fn resolve(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError>;
    /// Every usable model under the roots.
    fn list(&mut self) -> Vec<ResolvedModel>;
    /// Converts the single-file model `requested` into a diffusers folder beside it and
    /// returns the new folder as a model. The only call that writes to disk; resolvers that
    /// cannot convert keep this default.
    fn convert(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        Err(ResolveError::Unavailable(format!(
            "this server cannot convert {requested:?}"
        )))
    }
    /// Drops every cached identification, as a fresh resolver would start (called after a
    /// panic was contained on the registry's thread).
    fn reset(&mut self) {}
}

impl ModelResolver for Registry {
    fn resolve(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        Registry::resolve(self, requested)
    }

    fn list(&mut self) -> Vec<ResolvedModel> {
        Registry::list(self)
    }

    fn convert(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        let (src, dst) = self.convert_paths(requested)?;
        let report = convert_single_file(&src, &dst)
            .map_err(|e| ResolveError::Unavailable(format!("cannot convert {requested}: {e}")))?;
        // Resolving the new folder by its path inside the root identifies it like any model
        // and gives the name clients will use for it.
        let written = report.destination.to_string_lossy().into_owned();
        Registry::resolve(self, &written)
    }

    fn reset(&mut self) {
        Registry::reset(self)
    }
}
