//! The actix actors, one per file: listener, session, GPU worker (with its thread and fair
//! queue), model registry, shutdown; plus the built-in directory model resolver. Actors talk
//! only through `crate::messages`; none of them runs model code on the async threads.

pub mod dir_resolver;
pub mod gpu_worker;
pub mod listener;
pub mod model_registry;
pub mod registry_resolver;
pub mod session;
pub mod shutdown;
