//! The safety checker around any [`Generator`]: after the images are decoded, each one is
//! checked on the compute device and replaced as the administrator's mode (tightened by the
//! request's `do_nsfw_filter`, never loosened) says; the verdict travels with the image as
//! `nsfw`. With the mode `off` the generator is returned untouched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::factory::runtime_options;
use super::{GenerateError, GenerateJob, Generator, GeneratorFactory, Progress};
use crate::config::ComputeSpec;
use crate::pipeline::params::GeneratedImage;
use crate::pipeline::safety::{SafetyChecker, SafetyMode};

struct SafeGenerator {
    inner: Box<dyn Generator>,
    checker: SafetyChecker,
    mode: SafetyMode,
}

impl Generator for SafeGenerator {
    fn generate(
        &mut self,
        job: &GenerateJob,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>, GenerateError> {
        let images = self.inner.generate(job, progress)?;
        let mode = self.mode.for_request(job.nsfw_filter);
        let started = Instant::now();
        let mut checked = Vec::with_capacity(images.len());
        for img in images {
            if !progress.proceed() {
                return Err(GenerateError::Cancelled);
            }
            let report = self
                .checker
                .check(&img.image)
                .map_err(|e| GenerateError::Internal(format!("safety checker: {e}")))?;
            checked.push(GeneratedImage {
                image: mode.apply(img.image, report.nsfw),
                seed: img.seed,
                nsfw: Some(report.nsfw),
            });
        }
        log::debug!(
            "safety checker ({}): {} images in {} ms",
            mode.as_str(),
            checked.len(),
            started.elapsed().as_millis()
        );
        Ok(checked)
    }

    fn loaded_models(&self) -> Vec<String> {
        self.inner.loaded_models()
    }

    fn device(&self) -> String {
        self.inner.device()
    }
}

/// `inner` with the checker of `dir` loaded on `compute`'s device when the generator is
/// built (on the worker thread). `mode` off, or no `dir`: `inner` unchanged.
pub(crate) fn with_safety(
    inner: GeneratorFactory,
    mode: SafetyMode,
    dir: Option<PathBuf>,
    compute: ComputeSpec,
) -> GeneratorFactory {
    let Some(dir) = dir.filter(|_| mode != SafetyMode::Off) else {
        return inner;
    };
    Arc::new(move || {
        let device = runtime_options(compute)?.device;
        let checker = SafetyChecker::load(&dir, &device).map_err(|e| {
            anyhow::anyhow!("cannot load the safety checker {}: {e}", dir.display())
        })?;
        Ok(Box::new(SafeGenerator {
            inner: inner()?,
            checker,
            mode,
        }) as Box<dyn Generator>)
    })
}
