//! The actix actors, one per file: listener, session, GPU worker (with its thread and fair
//! queue), model registry, shutdown; plus the adapter of the real model registry to the
//! resolver seam. Actors talk only through `crate::messages`; none of them runs model code on
//! the async threads.

pub mod gpu_worker;
pub mod listener;
pub mod model_registry;
pub mod session;
pub mod shutdown;
