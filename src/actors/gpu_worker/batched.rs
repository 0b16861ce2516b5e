//! The worker thread's continuous-batching loop, for generators with a step-level form
//! (`Generator::stepper`) and `max_batch` > 1. Jobs arrive from the actor in the fair
//! queue's round-robin order. At each step boundary the thread:
//!
//! 1. drops arrived or started jobs whose cancel flag is up (answer: cancelled);
//! 2. starts arrived jobs of the running batch's model, in order, together (one text-encoder
//!    call), stopping at the first job of another model (it starts once the batch drains);
//! 3. admits started jobs in order while they can share the model call ([`Batch::admit`]:
//!    same key, at most `max_batch` jobs, within `max_mib`);
//! 4. runs one shared model call for the batch, then each job's own scheduler step; an error
//!    or panic in one job's own step fails that job only, while a panic in the shared call
//!    fails the batch and ends the thread (the actor restarts it, as for a whole job);
//! 5. reports progress per job, retires cancelled and finished members, and turns the
//!    finished ones into images together (decode batched within the memory bound).
//!
//! Each job keeps its own scheduler, timesteps, embeddings, guidance scale and noise, so what
//! it produces does not depend on who shares its steps. Never touches actix state or sockets.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use super::batch::{chunks_within, Batch, BatchLimits, Member};
use super::thread::{error_outcome, send_images, send_progress, Outcome, Reporter, RunJob};
use crate::engine::step::{BatchKey, StepJob};
use crate::engine::{GenerateError, GenerateJob, Generator};
use crate::pipeline::params::GeneratedImage;
use crate::registry::guard::panic_message;

/// A started job: its request and its step-level state.
struct Started {
    run: RunJob,
    job: Box<dyn StepJob>,
}

impl Member for Started {
    type Key = BatchKey;
    fn key(&self) -> &BatchKey {
        self.job.key()
    }
    fn mib(&self) -> u64 {
        self.job.activation_mib()
    }
}

fn cancelled(run: &RunJob) -> bool {
    run.cancel.load(Ordering::SeqCst)
}

struct Loop {
    report: Reporter,
    generator: Box<dyn Generator>,
    limits: BatchLimits,
    /// Arrived, not yet started.
    arrived: VecDeque<RunJob>,
    /// Started, waiting to join the batch.
    ready: VecDeque<Started>,
    batch: Batch<Started>,
}

/// Why the loop ends early: a panic outside one job's own step.
struct Crashed;

pub(super) fn run(
    report: Reporter,
    generator: Box<dyn Generator>,
    rx: mpsc::Receiver<RunJob>,
    limits: BatchLimits,
) {
    let mut l = Loop {
        report,
        generator,
        limits,
        arrived: VecDeque::new(),
        ready: VecDeque::new(),
        batch: Batch::new(limits),
    };
    loop {
        if l.batch.is_empty() && l.ready.is_empty() && l.arrived.is_empty() {
            match rx.recv() {
                Ok(run) => l.arrived.push_back(run),
                Err(_) => return,
            }
        }
        while let Ok(run) = rx.try_recv() {
            l.arrived.push_back(run);
        }
        if l.boundary().is_err() {
            // The generator may be half-updated: drop it (guarded); the actor restarts us.
            let generator = l.generator;
            let _ = catch_unwind(AssertUnwindSafe(move || drop(generator)));
            return;
        }
    }
}

impl Loop {
    fn finished(&mut self, run: &RunJob, outcome: Outcome) {
        let loaded = if matches!(outcome, Outcome::Panicked { .. }) {
            Vec::new()
        } else {
            let g = &self.generator;
            catch_unwind(AssertUnwindSafe(|| g.loaded_models())).unwrap_or_default()
        };
        self.report.finished(run.key, outcome, loaded);
    }

    fn fail(&mut self, run: &RunJob, e: GenerateError) {
        let outcome = error_outcome(run, e);
        self.finished(run, outcome);
    }

    /// Reports a panic for `runs` (the jobs it hit); the thread then ends.
    fn crashed(&mut self, runs: &[&RunJob], message: String) -> Crashed {
        log::error!("the model panicked during a batched step: {message}");
        for run in runs {
            let outcome = Outcome::Panicked {
                message: message.clone(),
            };
            self.report.finished(run.key, outcome, Vec::new());
        }
        Crashed
    }

    /// One step boundary: drop cancelled waiters, start, admit, step, retire.
    fn boundary(&mut self) -> Result<(), Crashed> {
        for run in std::mem::take(&mut self.arrived) {
            if cancelled(&run) {
                self.finished(&run, Outcome::Cancelled);
            } else {
                self.arrived.push_back(run);
            }
        }
        for s in std::mem::take(&mut self.ready) {
            if cancelled(&s.run) {
                self.finished(&s.run, Outcome::Cancelled);
            } else {
                self.ready.push_back(s);
            }
        }
        self.start_arrived()?;
        self.batch.admit(&mut self.ready);
        if self.batch.is_empty() {
            return Ok(());
        }
        self.step()?;
        self.retire()
    }

    /// Starts the arrived jobs of the batch's model (or of the first arrived job's model when
    /// nothing runs or waits), in order, up to the places left.
    fn start_arrived(&mut self) -> Result<(), Crashed> {
        let model = match (self.batch.key(), self.ready.front(), self.arrived.front()) {
            (Some(k), _, _) => k.model.clone(),
            (None, Some(s), _) => s.job.key().model.clone(),
            (None, None, Some(run)) => run.job.model.path.clone(),
            (None, None, None) => return Ok(()),
        };
        let places = self.batch.room().saturating_sub(self.ready.len());
        let take = self
            .arrived
            .iter()
            .take(places)
            .take_while(|run| run.job.model.path == model)
            .count();
        if take == 0 {
            return Ok(());
        }
        let runs: Vec<RunJob> = self.arrived.drain(..take).collect();
        let jobs: Vec<_> = runs.iter().map(|r| &r.job).collect();
        let generator = &mut self.generator;
        let started = catch_unwind(AssertUnwindSafe(|| match generator.stepper() {
            Some(s) => s.start(&jobs),
            None => jobs.iter().map(|_| Err(no_stepper())).collect(),
        }));
        let started = match started {
            Ok(s) => s,
            Err(p) => {
                let refs: Vec<&RunJob> = runs.iter().collect();
                return Err(self.crashed(&refs, panic_message(&*p)));
            }
        };
        for (run, result) in runs.into_iter().zip(started) {
            match result {
                Ok(job) => self.ready.push_back(Started { run, job }),
                Err(e) => self.fail(&run, e),
            }
        }
        Ok(())
    }

    /// The shared model call, then every member's own step and progress.
    fn step(&mut self) -> Result<(), Crashed> {
        log::debug!(
            "batched step: {} job(s), ~{} MiB",
            self.batch.len(),
            self.batch.mib()
        );
        let predicted = catch_unwind(AssertUnwindSafe(|| {
            predict(self.generator.as_mut(), self.batch.members_mut())
        }));
        match predicted {
            Err(p) => {
                let gone = self.batch.clear();
                let refs: Vec<&RunJob> = gone.iter().map(|m| &m.run).collect();
                return Err(self.crashed(&refs, panic_message(&*p)));
            }
            Ok(Err(e)) => {
                let text = e.to_string();
                for m in self.batch.clear() {
                    self.fail(&m.run, GenerateError::Internal(text.clone()));
                }
                return Ok(());
            }
            Ok(Ok(())) => {}
        }
        let mut failed = Vec::new();
        for m in self.batch.members_mut() {
            let advanced = catch_unwind(AssertUnwindSafe(|| m.job.advance()));
            let error = match advanced {
                Ok(Ok(())) => {
                    send_progress(&m.run, m.job.steps_done() - 1, m.job.total_steps());
                    continue;
                }
                Ok(Err(e)) => e,
                Err(p) => {
                    let message = panic_message(&*p);
                    log::error!("job {} panicked in its own step: {message}", m.run.job_id);
                    GenerateError::Internal(format!("the job crashed in its scheduler: {message}"))
                }
            };
            failed.push((m.run.key, error));
        }
        for m in self
            .batch
            .retire(|m| failed.iter().any(|(k, _)| *k == m.run.key))
        {
            if let Some(i) = failed.iter().position(|(k, _)| *k == m.run.key) {
                let (_, e) = failed.swap_remove(i);
                self.fail(&m.run, e);
            }
        }
        Ok(())
    }

    /// Retires cancelled members, then finishes the done ones together.
    fn retire(&mut self) -> Result<(), Crashed> {
        for m in self.batch.retire(|m| cancelled(&m.run)) {
            self.finished(&m.run, Outcome::Cancelled);
        }
        let done = self
            .batch
            .retire(|m| m.job.steps_done() >= m.job.total_steps());
        for mut group in chunks_within(done, self.limits.max_mib, |m| m.job.finish_mib()) {
            let finished = catch_unwind(AssertUnwindSafe(|| {
                finish(self.generator.as_mut(), &mut group)
            }));
            let results = match finished {
                Ok(r) if r.len() == group.len() => r,
                Ok(_) => group
                    .iter()
                    .map(|_| Err(GenerateError::Internal("images missing for a job".into())))
                    .collect(),
                Err(p) => {
                    let refs: Vec<&RunJob> = group.iter().map(|m| &m.run).collect();
                    return Err(self.crashed(&refs, panic_message(&*p)));
                }
            };
            for (m, result) in group.iter().zip(results) {
                let outcome = match result {
                    Ok(images) => send_images(&m.run, images),
                    Err(e) => error_outcome(&m.run, e),
                };
                self.finished(&m.run, outcome);
            }
        }
        Ok(())
    }
}

fn no_stepper() -> GenerateError {
    GenerateError::Internal("the generator cannot batch".into())
}

/// The shared model call of `members`.
fn predict(generator: &mut dyn Generator, members: &mut [Started]) -> Result<(), GenerateError> {
    let mut jobs: Vec<&mut dyn StepJob> = Vec::with_capacity(members.len());
    for m in members.iter_mut() {
        jobs.push(m.job.as_mut());
    }
    generator
        .stepper()
        .ok_or_else(no_stepper)?
        .predict(&mut jobs)
}

/// Images of the finished `group`, one result per member.
fn finish(
    generator: &mut dyn Generator,
    group: &mut [Started],
) -> Vec<Result<Vec<GeneratedImage>, GenerateError>> {
    let mut pairs: Vec<(&GenerateJob, &mut dyn StepJob)> = Vec::with_capacity(group.len());
    for m in group.iter_mut() {
        pairs.push((&m.run.job, m.job.as_mut()));
    }
    match generator.stepper() {
        Some(s) => s.finish(&mut pairs),
        None => pairs.iter().map(|_| Err(no_stepper())).collect(),
    }
}
