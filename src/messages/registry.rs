//! Messages of the `ModelRegistryActor` (resolve, list, convert), the registry's health as
//! sessions see it, and the wire code of each `ResolveError`. The resolver seam itself
//! (`ModelResolver`, `ResolveError`) is plain code in `crate::registry::resolver`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Message;

use crate::messages::session::ErrorKind;
use crate::registry::addons::AddOns;
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
pub(crate) const REGISTRY_DOWN: &str = "model registry is down";

/// Whether the model registry is serving. Shared with sessions so `ping` and `models` can
/// report a registry that gave up without waiting on its (possibly busy) thread.
#[derive(Debug, Clone, Default)]
pub(crate) struct RegistryHealth(Arc<AtomicBool>);

impl RegistryHealth {
    pub(crate) fn mark_down(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_down(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Resolve a requested model; empty means the configured default.
#[derive(Message, Debug)]
#[rtype(result = "Result<ResolvedModel, ResolveError>")]
pub(crate) struct ResolveModel {
    pub(crate) requested: String,
}

#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<ResolvedModel>, ResolveError>")]
pub(crate) struct ListModels;

/// The LoRAs and textual-inversion embeddings in their folders (for `models`).
#[derive(Message, Debug)]
#[rtype(result = "Result<AddOns, ResolveError>")]
pub struct ListAddOns;

/// Convert a single-file model into a diffusers folder beside it (legacy `convert`).
#[derive(Message, Debug)]
#[rtype(result = "Result<ResolvedModel, ResolveError>")]
pub(crate) struct ConvertModel {
    pub(crate) requested: String,
}
