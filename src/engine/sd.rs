//! The real [`Generator`]: loads Stable Diffusion models (folder or single file, as
//! `registry::loader::ModelSource` reads them) into an LRU [`ModelCache`] bounded by count and
//! estimated bytes, picks the model a job runs on (the loaded one, or one LoRA-merged copy
//! of it: addons.rs) with the embeddings its prompt may name, and runs the pipeline, whole
//! (`generate`) or step by step (sd_step.rs). Lives on the worker thread; knows nothing of
//! actors or the wire, and writes nothing to disk.

use std::path::Path;

use crate::pipeline::load::model_parts::ModelParts;
use crate::pipeline::params::{GeneratedImage, LoraRequest, PromptSyntax};
use crate::pipeline::{PipelineError, RuntimeOptions, StableDiffusion};
use crate::registry::addons::AddOnRoots;
use crate::registry::cache::ModelCache;
use crate::registry::guard::contained;
use crate::registry::loader::ModelSource;
use crate::registry::model::ResolvedModel;

use super::addons::AddOnCache;
use super::step::StepGenerator;
use super::{GenerateError, GenerateJob, Generator, Progress};

struct Loaded {
    name: String,
    model: StableDiffusion,
    /// The weight sources the model was built from (files read on demand), to build it
    /// again with LoRAs merged.
    parts: ModelParts,
}

pub struct SdGenerator {
    opts: RuntimeOptions,
    cache: ModelCache<Loaded>,
    loads: usize,
    roots: AddOnRoots,
    addons: AddOnCache,
}

/// Maps a pipeline failure to the engine's kinds.
pub(super) fn generate_error(e: PipelineError) -> GenerateError {
    match e {
        PipelineError::Cancelled => GenerateError::Cancelled,
        PipelineError::InvalidRequest(msg) => GenerateError::Invalid(msg),
        e => GenerateError::Internal(e.to_string()),
    }
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
            roots: AddOnRoots::default(),
            addons: AddOnCache::default(),
        }
    }

    /// Where LoRAs and textual-inversion embeddings are found.
    pub fn with_addon_roots(mut self, roots: AddOnRoots) -> Self {
        self.roots = roots;
        self
    }

    /// How many times a model was loaded from disk (cache misses), for tests and logs.
    pub fn load_count(&self) -> usize {
        self.loads
    }

    /// Loads `model` unless cached, making room first so evicted weights are freed before
    /// the new ones are read.
    pub(super) fn ensure_loaded(&mut self, model: &ResolvedModel) -> Result<(), GenerateError> {
        if self.cache.contains(&model.path) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // A panic while reading a model's files fails this load only, not the worker thread.
        let (sd, parts, bytes) = contained("loading a model", || self.load(model))
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
                parts,
            },
        );
        Ok(())
    }

    /// The model a job with `loras` runs on, loaded by `ensure_loaded`: the loaded model
    /// itself, or the one LoRA-merged copy kept (built again when the set differs from the
    /// last one). Returns it with the key naming its LoRA set ("" without LoRAs).
    pub(super) fn select(
        &mut self,
        path: &Path,
        loras: &[LoraRequest],
    ) -> Result<(&mut StableDiffusion, String), GenerateError> {
        let loaded = self
            .cache
            .get_mut(path)
            .ok_or_else(|| GenerateError::Internal("model vanished from the cache".into()))?;
        if loras.is_empty() {
            return Ok((&mut loaded.model, String::new()));
        }
        let (applied, key) = self.addons.loras(&self.roots.lora, loras)?;
        let hit = matches!(&self.addons.merged, Some((p, k, _)) if p == path && *k == key);
        if !hit {
            // Free the previous LoRA model before building the next one.
            self.addons.merged = None;
            let started = std::time::Instant::now();
            let (parts, opts) = (&loaded.parts, &self.opts);
            let merged = contained("merging LoRAs", || {
                StableDiffusion::with_loras(parts, &applied, opts)
            })
            .map_err(|failure| GenerateError::Internal(failure.to_string()))?
            .map_err(|e| match e {
                PipelineError::InvalidRequest(msg) => GenerateError::Invalid(msg),
                e => GenerateError::Internal(e.to_string()),
            })?;
            log::info!(
                "merged {} LoRA(s) into {} in {} ms",
                applied.len(),
                loaded.name,
                started.elapsed().as_millis()
            );
            self.addons.merged = Some((path.to_path_buf(), key.clone(), merged));
        }
        match &mut self.addons.merged {
            Some((_, _, m)) => Ok((m, key)),
            None => Err(GenerateError::Internal("LoRA model vanished".into())),
        }
    }

    /// `select`, with the textual-inversion embeddings set on the model when the jobs it is
    /// for read A1111 prompts (`a1111`).
    pub(super) fn prepare(
        &mut self,
        path: &Path,
        loras: &[LoraRequest],
        a1111: bool,
    ) -> Result<(&mut StableDiffusion, String), GenerateError> {
        let embeddings = if a1111 {
            self.addons.embeddings(&self.roots.embeddings)
        } else {
            Vec::new()
        };
        let (model, key) = self.select(path, loras)?;
        model.set_embeddings(embeddings);
        Ok((model, key))
    }

    /// Reads `model` from disk, making room in the cache first.
    fn load(
        &mut self,
        model: &ResolvedModel,
    ) -> Result<(StableDiffusion, ModelParts, u64), GenerateError> {
        let source =
            ModelSource::open(&model.path, model.format).map_err(|e| load_error(model, e))?;
        let bytes = source.weight_bytes(self.opts.dtype);
        self.cache.make_room(bytes);
        let parts = source
            .into_parts(&self.opts)
            .map_err(|e| load_error(model, e))?;
        let sd = StableDiffusion::from_parts(parts.clone(), &self.opts)
            .map_err(|e| load_error(model, e))?;
        Ok((sd, parts, bytes))
    }

    fn cache_name(&self, key: &Path) -> Option<String> {
        self.cache.peek(key).map(|l| l.name.clone())
    }
}

/// Whether the job reads its prompts with A1111's syntax (and may name embeddings).
pub(super) fn reads_a1111(job: &GenerateJob) -> bool {
    matches!(job.params.syntax, PromptSyntax::A1111 { .. })
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
        let (model, _) = self.prepare(&job.model.path, &job.params.loras, reads_a1111(job))?;
        // The pipeline calls `progress` after every step with the engine's contract and
        // returns Cancelled itself (before the next UNet call or before decoding).
        model
            .generate(&job.params, progress)
            .map_err(generate_error)
    }

    fn stepper(&mut self) -> Option<&mut dyn StepGenerator> {
        Some(self)
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
