//! The step-level form of a [`Generator`](super::Generator), for continuous batching: start
//! jobs (each gets its own state: scheduler, timesteps, embeddings, guidance, noise,
//! latents), run one shared model call for a batch of started jobs, let each job take its
//! own step, and finish jobs into images. The worker thread decides who shares a step (jobs
//! with equal [`BatchKey`]s, within its limits); a generator that cannot batch offers no
//! stepper and runs whole jobs. Knows nothing of actors or the wire.

use std::any::Any;
use std::path::PathBuf;

use super::{GenerateError, GenerateJob};
use crate::pipeline::params::GeneratedImage;

/// What jobs must share to run in one model call: the loaded model (and so its dtype) with
/// its LoRA set, the model input's channels and latent size, and the text context's length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub model: PathBuf,
    /// (channels, height, width) of one model input row.
    pub input: (usize, usize, usize),
    pub context_len: usize,
    /// The LoRA set merged into the model ("" for none): another set is another model.
    pub loras: String,
}

/// One started job between two steps.
pub trait StepJob: Send {
    /// Jobs share a step only when their keys are equal.
    fn key(&self) -> &BatchKey;
    /// Steps taken so far.
    fn steps_done(&self) -> usize;
    /// Steps in all (the job is finished at `steps_done() == total_steps()`).
    fn total_steps(&self) -> usize;
    /// Estimated activation memory of this job's share of one model call, in MiB.
    fn activation_mib(&self) -> u64;
    /// Estimated activation memory of turning this job into images, in MiB.
    fn finish_mib(&self) -> u64;
    /// This job's own part of a step, after the shared model call: its scheduler step with
    /// the prediction [`StepGenerator::predict`] left in it. Concerns this job only: the
    /// worker fails just this job when it errs or panics.
    fn advance(&mut self) -> Result<(), GenerateError>;
    /// For the generator that made it, to reach its own state.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A generator that runs jobs step by step, several per model call.
pub trait StepGenerator {
    /// Starts `jobs` (loading their model first): text embeddings (batched where the model
    /// can), scheduler, initial latents. One result per job, in order; one job's bad input
    /// fails that job only.
    fn start(&mut self, jobs: &[&GenerateJob]) -> Vec<Result<Box<dyn StepJob>, GenerateError>>;

    /// One shared model call for the current step of every job in `batch` (all with the same
    /// key), leaving each job's prediction in it for its [`StepJob::advance`].
    fn predict(&mut self, batch: &mut [&mut dyn StepJob]) -> Result<(), GenerateError>;

    /// Turns finished jobs into images (decoding them together where the model can). One
    /// result per job, in order.
    fn finish(
        &mut self,
        done: &mut [(&GenerateJob, &mut dyn StepJob)],
    ) -> Vec<Result<Vec<GeneratedImage>, GenerateError>>;
}

/// `job`'s own state inside a generator's `StepJob` (`None` when another generator made it).
pub fn downcast<T: 'static>(job: &mut dyn StepJob) -> Option<&mut T> {
    job.as_any_mut().downcast_mut::<T>()
}
