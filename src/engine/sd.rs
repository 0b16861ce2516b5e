//! The real [`Generator`]: loads Stable Diffusion models (folder or single file, as
//! `registry::loader::ModelSource` reads them) into an LRU [`ModelCache`] bounded by count and
//! estimated bytes, and runs the pipeline. Lives on the worker thread; knows nothing of actors
//! or the wire, and writes nothing to disk.

use crate::pipeline::{PipelineError, RuntimeOptions, StableDiffusion};
use crate::registry::cache::ModelCache;
use crate::registry::guard::contained;
use crate::registry::loader::ModelSource;
use crate::registry::model::ResolvedModel;

use super::{GenerateError, GenerateJob, Generator, Progress};
use crate::pipeline::params::GeneratedImage;

/// Default cache bounds: two models (switching back and forth stays fast) and 16 GiB.
pub const DEFAULT_MAX_MODELS: usize = 2;
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

struct Loaded {
    name: String,
    model: StableDiffusion,
}

pub struct SdGenerator {
    opts: RuntimeOptions,
    cache: ModelCache<Loaded>,
    loads: usize,
}

fn load_error(model: &ResolvedModel, e: impl std::fmt::Display) -> GenerateError {
    GenerateError::ModelLoad(format!("{}: {e}", model.name))
}

impl SdGenerator {
    /// A generator keeping at most `max_models` models and `max_bytes` of weights in memory.
    pub fn new(opts: RuntimeOptions, max_models: usize, max_bytes: u64) -> Self {
        SdGenerator {
            opts,
            cache: ModelCache::new(max_models, max_bytes),
            loads: 0,
        }
    }

    /// How many times a model was loaded from disk (cache misses), for tests and logs.
    pub fn load_count(&self) -> usize {
        self.loads
    }

    /// Loads `model` unless cached, making room first so evicted weights are freed before
    /// the new ones are read.
    fn ensure_loaded(&mut self, model: &ResolvedModel) -> Result<(), GenerateError> {
        if self.cache.contains(&model.path) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // A panic while reading a model's files fails this load only, not the worker thread.
        let (sd, bytes) = contained("loading a model", || self.load(model))
            .map_err(|failure| load_error(model, failure))??;
        self.loads += 1;
        log::info!(
            "loaded model {} ({:?}, ~{} MiB) in {} ms",
            model.name,
            model.format,
            bytes >> 20,
            started.elapsed().as_millis()
        );
        self.cache.insert(
            model.path.clone(),
            bytes,
            Loaded {
                name: model.name.clone(),
                model: sd,
            },
        );
        Ok(())
    }
}

impl Generator for SdGenerator {
    fn generate(
        &mut self,
        job: &GenerateJob,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>, GenerateError> {
        self.ensure_loaded(&job.model)?;
        // Loading can take seconds: a cancel meanwhile stops here, before any encoding.
        if !progress.proceed() {
            return Err(GenerateError::Cancelled);
        }
        let loaded = self
            .cache
            .get_mut(&job.model.path)
            .ok_or_else(|| GenerateError::Internal("model vanished from the cache".into()))?;
        // The pipeline calls `progress` after every step with the engine's contract and
        // returns Cancelled itself (before the next UNet call or before decoding).
        match loaded.model.generate(&job.params, progress) {
            Ok(images) => Ok(images),
            Err(PipelineError::Cancelled) => Err(GenerateError::Cancelled),
            Err(PipelineError::InvalidRequest(msg)) => Err(GenerateError::Invalid(msg)),
            Err(e) => Err(GenerateError::Internal(e.to_string())),
        }
    }

    fn loaded_models(&self) -> Vec<String> {
        // Most recently used first; names only (never paths outside the listing).
        self.cache
            .keys()
            .iter()
            .filter_map(|k| self.cache_name(k))
            .collect()
    }

    fn device(&self) -> String {
        let device = match &self.opts.device {
            candle_core::Device::Cpu => "cpu".to_string(),
            candle_core::Device::Cuda(_) => "cuda".to_string(),
            candle_core::Device::Metal(_) => "metal".to_string(),
        };
        format!("{device} {:?}", self.opts.dtype).to_lowercase()
    }
}

impl SdGenerator {
    /// Reads `model` from disk, making room in the cache first.
    fn load(&mut self, model: &ResolvedModel) -> Result<(StableDiffusion, u64), GenerateError> {
        let source =
            ModelSource::open(&model.path, model.format).map_err(|e| load_error(model, e))?;
        let bytes = source.weight_bytes(self.opts.dtype);
        self.cache.make_room(bytes);
        let parts = source
            .into_parts(&self.opts)
            .map_err(|e| load_error(model, e))?;
        let sd =
            StableDiffusion::from_parts(parts, &self.opts).map_err(|e| load_error(model, e))?;
        Ok((sd, bytes))
    }

    fn cache_name(&self, key: &std::path::Path) -> Option<String> {
        self.cache.peek(key).map(|l| l.name.clone())
    }
}
