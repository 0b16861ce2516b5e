//! Messages of the `ModelRegistryActor` (resolve, list, convert), the registry's health as
//! sessions see it, and the wire code of each `ResolveError`. The resolver seam itself
//! (`ModelResolver`, `ResolveError`) is plain code in `crate::registry::resolver`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Message;

use crate::messages::session::ErrorKind;
use crate::registry::model::ResolvedModel;
use crate::registry::ResolveError;

/// The wire code of each resolution failure (front ends share it).
impl From<&ResolveError> for ErrorKind {
    fn from(e: &ResolveError) -> ErrorKind {
        match e {
            ResolveError::NotFound(_) | ResolveError::NoDefault => ErrorKind::ModelNotFound,
            ResolveError::Forbidden(_) => ErrorKind::ForbiddenPath,
            ResolveError::Unsupported { .. }
            | ResolveError::Io { .. }
            | ResolveError::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
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
