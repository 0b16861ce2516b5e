//! The fake generator with a step-level form, for the continuous-batching tests: jobs of one
//! model and size share steps; each shared step sleeps once and is logged (which jobs, by
//! seed, shared it); a job whose prompt is [`SCHEDULER_PANIC_PROMPT`] panics in its own
//! step; finished jobs are painted like [`FakeGenerator`]'s. Its activation estimate is
//! 1 MiB per 64x64 image, so `max_batch_mb` can be tested with small sizes.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runai::engine::step::{downcast, BatchKey, StepGenerator, StepJob};
use runai::engine::{GenerateError, GenerateJob, Generator, GeneratorFactory, Progress};
use runai::pipeline::params::{GenerateParams, GeneratedImage};

use super::FakeGenerator;

/// A prompt whose job panics in its own (scheduler) step, at its second step.
pub const SCHEDULER_PANIC_PROMPT: &str = "PANIC IN MY SCHEDULER";

/// The seeds of the jobs that shared each step, in order.
#[derive(Debug, Default)]
pub struct StepLog {
    pub steps: Mutex<Vec<Vec<u64>>>,
}

impl StepLog {
    pub fn largest_batch(&self) -> usize {
        let steps = self.steps.lock().unwrap();
        steps.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Whether jobs `a` and `b` (by seed) ever shared a step.
    pub fn shared(&self, a: u64, b: u64) -> bool {
        let steps = self.steps.lock().unwrap();
        steps.iter().any(|s| s.contains(&a) && s.contains(&b))
    }

    pub fn count(&self) -> usize {
        self.steps.lock().unwrap().len()
    }
}

struct FakeJob {
    key: BatchKey,
    params: GenerateParams,
    done: usize,
    total: usize,
    mib: u64,
}

impl StepJob for FakeJob {
    fn key(&self) -> &BatchKey {
        &self.key
    }
    fn steps_done(&self) -> usize {
        self.done
    }
    fn total_steps(&self) -> usize {
        self.total
    }
    fn activation_mib(&self) -> u64 {
        self.mib
    }
    fn finish_mib(&self) -> u64 {
        self.mib
    }
    fn advance(&mut self) -> Result<(), GenerateError> {
        if self.params.prompt == SCHEDULER_PANIC_PROMPT && self.done == 1 {
            panic!("the fake scheduler blew up");
        }
        self.done += 1;
        Ok(())
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

pub struct SteppingFake {
    inner: FakeGenerator,
    log: Arc<StepLog>,
}

impl Generator for SteppingFake {
    fn generate(
        &mut self,
        job: &GenerateJob,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>, GenerateError> {
        self.inner.generate(job, progress)
    }
    fn loaded_models(&self) -> Vec<String> {
        self.inner.loaded_models()
    }
    fn device(&self) -> String {
        self.inner.device()
    }
    fn stepper(&mut self) -> Option<&mut dyn StepGenerator> {
        Some(self)
    }
}

impl StepGenerator for SteppingFake {
    fn start(&mut self, jobs: &[&GenerateJob]) -> Vec<Result<Box<dyn StepJob>, GenerateError>> {
        jobs.iter()
            .map(|job| {
                let p = &job.params;
                let (w, h) = (p.width.unwrap_or(64), p.height.unwrap_or(64));
                let mib = (w as u64 * h as u64).div_ceil(64 * 64) * p.n_samples as u64;
                Ok(Box::new(FakeJob {
                    key: BatchKey {
                        model: job.model.path.clone(),
                        input: (4, h as usize / 8, w as usize / 8),
                        context_len: 77,
                        loras: String::new(),
                    },
                    params: p.clone(),
                    done: 0,
                    total: FakeGenerator::total_steps(p),
                    mib,
                }) as Box<dyn StepJob>)
            })
            .collect()
    }

    fn predict(&mut self, batch: &mut [&mut dyn StepJob]) -> Result<(), GenerateError> {
        std::thread::sleep(self.inner.step_delay);
        let seeds = batch
            .iter_mut()
            .map(|j| downcast::<FakeJob>(&mut **j).map(|f| f.params.seed))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| GenerateError::Internal("not a fake job".into()))?;
        self.log.steps.lock().unwrap().push(seeds);
        Ok(())
    }

    fn finish(
        &mut self,
        done: &mut [(&GenerateJob, &mut dyn StepJob)],
    ) -> Vec<Result<Vec<GeneratedImage>, GenerateError>> {
        done.iter()
            .map(|(job, _)| Ok(self.inner.paint(&job.params)))
            .collect()
    }
}

/// A factory of the stepping fake; every generator it builds logs into `log`.
pub fn stepping_factory(step_delay: Duration, log: Arc<StepLog>) -> GeneratorFactory {
    Arc::new(move || {
        let inner = FakeGenerator {
            step_delay,
            noise: false,
        };
        let log = log.clone();
        Ok(Box::new(SteppingFake { inner, log }) as Box<dyn Generator>)
    })
}
