//! The model-resolution seam: the `ModelResolver` trait the `ModelRegistryActor` calls
//! (implemented by the real registry, `crate::registry::Registry`), its error kinds with their
//! wire codes, and the registry actor's messages. Implementations may block on the file
//! system: the actor runs them on its own thread, never on the async reactor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Message;

use crate::protocol::error::ErrorCode;
use crate::registry::model::ResolvedModel;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Wire code `model_not_found`.
    #[error("{0}")]
    NotFound(String),
    /// Outside every model root; wire code `forbidden_path`.
    #[error("{0}")]
    Forbidden(String),
    /// Found but unusable; wire code `unavailable`.
    #[error("{0}")]
    Unavailable(String),
}

impl ResolveError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ResolveError::NotFound(_) => ErrorCode::ModelNotFound,
            ResolveError::Forbidden(_) => ErrorCode::ForbiddenPath,
            ResolveError::Unavailable(_) => ErrorCode::Unavailable,
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

/// What every reply says while the model registry is down.
pub const REGISTRY_DOWN: &str = "model registry is down";

/// Whether the model registry is serving. Shared with sessions so `ping` and `models` can
/// report a registry that gave up without waiting on its (possibly busy) thread.
#[derive(Debug, Clone, Default)]
pub struct RegistryHealth(Arc<AtomicBool>);

impl RegistryHealth {
    pub fn mark_down(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Resolve a requested model; empty means the configured default.
#[derive(Message, Debug)]
#[rtype(result = "Result<ResolvedModel, ResolveError>")]
pub struct ResolveModel {
    pub requested: String,
}

#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<ResolvedModel>, ResolveError>")]
pub struct ListModels;

/// Convert a single-file model into a diffusers folder beside it (legacy `convert`).
#[derive(Message, Debug)]
#[rtype(result = "Result<ResolvedModel, ResolveError>")]
pub struct ConvertModel {
    pub requested: String,
}
