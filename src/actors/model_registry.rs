//! `ModelRegistryActor`: runs a `ModelResolver` on its own thread (a one-thread
//! `SyncArbiter`) so directory scans, file reads and `convert` never block the async
//! reactor, and substitutes the configured default model when a request names none. Never
//! loads weights into memory for generation.
//!
//! Supervised in place: a panic in the resolver is caught, the request gets `unavailable`, and
//! the resolver is reset to a fresh state (a restart without losing the thread). Past the
//! restart budget, or if the thread dies anyway, the registry is marked down (so `ping` and
//! `models` say so) and the shutdown actor exits the process non-zero for its supervisor
//! (systemd, Docker) to restart it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::restart_budget::{Restart, RestartBudget};
use crate::actors::shutdown::ShutdownActor;
use crate::messages::registry::{
    ConvertModel, ListAddOns, ListModels, RegistryHealth, ResolveModel, REGISTRY_DOWN,
};
use crate::messages::shutdown::WorkerGaveUp;
use crate::registry::addons::AddOns;
use crate::registry::guard::panic_message;
use crate::registry::model::ResolvedModel;
use crate::registry::{ModelResolver, ResolveError};

/// How many contained panics the registry tolerates within `window` before giving up.
#[derive(Debug, Clone)]
pub(crate) struct RegistrySupervision {
    pub(crate) max_restarts: u32,
    pub(crate) window: Duration,
    pub(crate) health: RegistryHealth,
    pub(crate) shutdown: Addr<ShutdownActor>,
}

pub(crate) struct ModelRegistryActor {
    resolver: Box<dyn ModelResolver>,
    default_model: String,
    supervision: RegistrySupervision,
    budget: RestartBudget,
}

const RESTARTED: &str = "the model registry hit an internal error and was restarted; try again";

impl ModelRegistryActor {
    /// Starts the actor on its own thread.
    pub(crate) fn start(
        resolver: Box<dyn ModelResolver>,
        default_model: String,
        supervision: RegistrySupervision,
    ) -> Addr<Self> {
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
                budget: RestartBudget::new(supervision.max_restarts, supervision.window),
                supervision: supervision.clone(),
            }
        })
    }

    fn give_up(&self, reason: String) {
        log::error!("{reason}");
        self.supervision.health.mark_down();
        self.supervision.shutdown.do_send(WorkerGaveUp { reason });
    }

    /// Runs `f` on the resolver; a panic resets the resolver and counts against the budget.
    fn supervised<T>(
        &mut self,
        f: impl FnOnce(&mut dyn ModelResolver) -> Result<T, ResolveError>,
    ) -> Result<T, ResolveError> {
        if self.supervision.health.is_down() {
            return Err(ResolveError::Unavailable(REGISTRY_DOWN.to_string()));
        }
        let payload = match catch_unwind(AssertUnwindSafe(|| f(&mut *self.resolver))) {
            Ok(result) => return result,
            Err(payload) => payload,
        };
        log::error!("model registry panicked: {}", panic_message(&*payload));
        let verdict = self.budget.crashed(Instant::now());
        let reset = catch_unwind(AssertUnwindSafe(|| self.resolver.reset()));
        match verdict {
            Restart::Allowed { restart } if reset.is_ok() => {
                log::warn!(
                    "model registry restarted (restart {restart} of {} allowed)",
                    self.budget.max_restarts()
                );
                Err(ResolveError::Unavailable(RESTARTED.to_string()))
            }
            Restart::Allowed { restart: crashes } | Restart::Exhausted { crashes } => {
                self.give_up(format!(
                    "the model registry failed {crashes} times within {:?}; giving up",
                    self.budget.window()
                ));
                Err(ResolveError::Unavailable(REGISTRY_DOWN.to_string()))
            }
        }
    }
}

impl Drop for ModelRegistryActor {
    fn drop(&mut self) {
        // Only reached while unwinding if a panic escaped `supervised` (inside actix itself):
        // the thread is gone, so no request could ever be answered again.
        if std::thread::panicking() {
            self.give_up("the model registry thread died".to_string());
        }
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
                return Err(ResolveError::NoDefault);
            }
            self.default_model.trim().to_string()
        } else {
            requested.to_string()
        };
        self.supervised(|r| r.resolve(&requested))
    }
}

impl Handler<ListModels> for ModelRegistryActor {
    type Result = Result<Vec<ResolvedModel>, ResolveError>;

    fn handle(&mut self, _msg: ListModels, _ctx: &mut SyncContext<Self>) -> Self::Result {
        self.supervised(|r| Ok(r.list()))
    }
}

impl Handler<ListAddOns> for ModelRegistryActor {
    type Result = Result<AddOns, ResolveError>;

    fn handle(&mut self, _msg: ListAddOns, _ctx: &mut SyncContext<Self>) -> Self::Result {
        self.supervised(|r| Ok(r.add_ons()))
    }
}

impl Handler<ConvertModel> for ModelRegistryActor {
    type Result = Result<ResolvedModel, ResolveError>;

    // Converting runs here, on the registry's own thread: it is serialized with scans (a
    // half-written folder is never identified concurrently), and resolves wait behind it
    // rather than racing it.
    fn handle(&mut self, msg: ConvertModel, _ctx: &mut SyncContext<Self>) -> Self::Result {
        self.supervised(|r| r.convert(msg.requested.trim()))
    }
}

/// A resolver that knows no models (only used if the factory is called twice).
struct NoModels;

impl ModelResolver for NoModels {
    fn resolve(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        Err(ResolveError::NotFound(format!("{requested:?}")))
    }

    fn list(&mut self) -> Vec<ResolvedModel> {
        Vec::new()
    }
}
