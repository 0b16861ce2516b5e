//! The seam between the GPU worker thread and the model code: the [`Generator`] trait.
//! The worker thread owns one `Box<dyn Generator>`; tests substitute a fake. Nothing here
//! knows about actors or the wire.

pub mod addons;
pub(crate) mod client_text;
pub mod factory;
pub(crate) mod safety;
pub mod sd;
mod sd_step;
pub mod step;

use crate::pipeline::params::{GenerateParams, GeneratedImage, Task};
use crate::registry::model::{ModelKind, ResolvedModel};

/// One unit of work for the worker thread.
#[derive(Debug, Clone)]
pub struct GenerateJob {
    pub model: ResolvedModel,
    pub params: GenerateParams,
    /// The request's `do_nsfw_filter` (None = not sent); see `SafetyMode::for_request`.
    pub nsfw_filter: Option<bool>,
}

impl GenerateJob {
    /// Whether the model can run the task at all, known from the registry before anything
    /// is loaded: an inpainting model (9-channel UNet, which needs a mask and a masked image)
    /// runs inpaint and outpaint only. Returns the reason for the client otherwise.
    pub(crate) fn unsupported_task(&self) -> Option<String> {
        let task = match self.params.task {
            Task::Inpaint { .. } => return None,
            Task::Txt2Img => "txt2img",
            Task::Img2Img { .. } => "img2img",
        };
        (self.model.kind == ModelKind::Inpaint).then(|| {
            format!(
                "{} is an inpainting model (9-channel UNet): it runs inpaint and outpaint only, \
                 not {task}; pick another model for {task}",
                self.model.name
            )
        })
    }
}

/// Progress and cancellation, as the pipeline reports them: `step` after every denoising
/// step with (index 0-based, total), `proceed` between the other expensive phases. Either
/// returning `false` asks the generator to stop: it must return [`GenerateError::Cancelled`]
/// before its next expensive phase. A closure `FnMut(usize, usize) -> bool` is a `Progress`
/// that never stops between phases.
pub use crate::pipeline::Progress;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cancelled")]
    Cancelled,
    /// The model could not be loaded (missing, corrupt, unsupported): wire code `unavailable`.
    #[error("model failed to load: {0}")]
    ModelLoad(String),
    /// The request cannot run on this model (e.g. inpaint-only model asked for txt2img with
    /// a size it cannot do): wire code `invalid_field`.
    #[error("{0}")]
    Invalid(String),
    /// Anything else (candle error, out of memory): wire code `internal`.
    #[error("generation failed: {0}")]
    Internal(String),
}

/// Generates images. Lives on the worker thread; need not be `Sync`.
pub trait Generator: Send {
    /// Runs one job to completion, calling `progress` after each step.
    fn generate(
        &mut self,
        job: &GenerateJob,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>, GenerateError>;

    /// Names of the models currently held in memory (for `ping`).
    fn loaded_models(&self) -> Vec<String>;

    /// Human-readable device and dtype, e.g. "cpu f32".
    fn device(&self) -> String;

    /// The step-level form for continuous batching, when this generator has one.
    fn stepper(&mut self) -> Option<&mut dyn step::StepGenerator> {
        None
    }
}

/// Builds a fresh generator; called on the worker thread at start and after every crash.
pub type GeneratorFactory =
    std::sync::Arc<dyn Fn() -> anyhow::Result<Box<dyn Generator>> + Send + Sync>;
