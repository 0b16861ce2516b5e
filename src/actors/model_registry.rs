//! `ModelRegistryActor`: runs a `ModelResolver` on its own thread (a one-thread
//! `SyncArbiter`) so directory scans, file reads and `convert` never block the async
//! reactor, and substitutes the configured default model when a request names none. Never
//! loads weights into memory for generation.

use std::sync::{Arc, Mutex};

use actix::prelude::*;

use crate::messages::registry::{
    ConvertModel, ListModels, ModelResolver, ResolveError, ResolveModel,
};
use crate::registry::model::ResolvedModel;

pub struct ModelRegistryActor {
    resolver: Box<dyn ModelResolver>,
    default_model: String,
}

impl ModelRegistryActor {
    /// Starts the actor on its own thread.
    pub fn start(resolver: Box<dyn ModelResolver>, default_model: String) -> Addr<Self> {
        // SyncArbiter wants a reusable factory; with one thread it is called once.
        let slot = Arc::new(Mutex::new(Some(resolver)));
        SyncArbiter::start(1, move || {
            let resolver = slot
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .unwrap_or_else(|| Box::new(NoModels));
            ModelRegistryActor {
                resolver,
                default_model: default_model.clone(),
            }
        })
    }
}

impl Actor for ModelRegistryActor {
    type Context = SyncContext<Self>;
}

impl Handler<ResolveModel> for ModelRegistryActor {
    type Result = Result<ResolvedModel, ResolveError>;

    fn handle(&mut self, msg: ResolveModel, _ctx: &mut SyncContext<Self>) -> Self::Result {
        let requested = msg.requested.trim();
        let requested = if requested.is_empty() {
            if self.default_model.trim().is_empty() {
                return Err(ResolveError::NotFound(
                    "no model requested and no default_model configured (use --model)".to_string(),
                ));
            }
            self.default_model.trim().to_string()
        } else {
            requested.to_string()
        };
        self.resolver.resolve(&requested)
    }
}

impl Handler<ListModels> for ModelRegistryActor {
    type Result = MessageResult<ListModels>;

    fn handle(&mut self, _msg: ListModels, _ctx: &mut SyncContext<Self>) -> Self::Result {
        MessageResult(self.resolver.list())
    }
}

impl Handler<ConvertModel> for ModelRegistryActor {
    type Result = Result<ResolvedModel, ResolveError>;

    // Converting runs here, on the registry's own thread: it is serialized with scans (a
    // half-written folder is never identified concurrently), and resolves wait behind it
    // rather than racing it.
    fn handle(&mut self, msg: ConvertModel, _ctx: &mut SyncContext<Self>) -> Self::Result {
        self.resolver.convert(msg.requested.trim())
    }
}

/// A resolver that knows no models (only used if the factory is called twice).
struct NoModels;

impl ModelResolver for NoModels {
    fn resolve(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        Err(ResolveError::NotFound(format!(
            "model {requested:?} not found"
        )))
    }

    fn list(&mut self) -> Vec<ResolvedModel> {
        Vec::new()
    }
}
