//! The actix actors, one per file: listener, session, GPU worker (with its thread and fair
//! queue), model registry, shutdown (with its drain phases as plain code); plus the restart
//! budget the worker and the registry share. Actors talk only through `crate::messages`; none of them runs model code on
//! the async threads.

pub mod gpu_worker;
pub mod listener;
pub mod model_registry;
pub(crate) mod restart_budget;
pub mod session;
pub mod shutdown;
