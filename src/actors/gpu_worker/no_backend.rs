//! The generator used when no model backend is compiled in: answers every job with
//! `unavailable`. Keeps the server (protocol, queue, health checks) usable without one.
//! Never pretends to generate.

use std::sync::Arc;

use crate::engine::{GenerateError, GenerateJob, Generator, GeneratorFactory, Progress};
use crate::pipeline::params::GeneratedImage;

pub struct NoBackendGenerator;

impl Generator for NoBackendGenerator {
    fn generate(
        &mut self,
        _job: &GenerateJob,
        _progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>, GenerateError> {
        Err(GenerateError::ModelLoad(
            "no model backend compiled in".to_string(),
        ))
    }

    fn loaded_models(&self) -> Vec<String> {
        Vec::new()
    }

    fn device(&self) -> String {
        "none".to_string()
    }
}

pub fn no_backend_factory() -> GeneratorFactory {
    Arc::new(|| Ok(Box::new(NoBackendGenerator) as Box<dyn Generator>))
}
