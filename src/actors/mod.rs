//! The actix actors, one per file: listener, session, GPU worker (with its thread and fair
//! queue), model registry, shutdown (with its drain phases as plain code); plus the restart
//! budget the worker and the registry share. Actors talk only through `crate::messages`; none of them runs model code on
//! the async threads.

pub(crate) mod gpu_worker;
pub(crate) mod listener;
pub(crate) mod model_registry;
pub(crate) mod restart_budget;
pub(crate) mod session;
pub(crate) mod shutdown;
