//! The dedicated, named OS thread that owns the generator (and so the models). Runs one job
//! at a time (or, when the generator has a step-level form and `max_batch` > 1, a running
//! batch: see batched.rs), sends progress and images straight to the job's front end, and
//! reports each outcome to the actor. Catches panics: after one it reports and exits, so the supervisor
//! can build a fresh thread. Never touches actix state or the socket directly.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use actix::{Addr, Message, Recipient};

use super::batch::BatchLimits;
use super::batched;
use super::GpuWorkerActor;
use crate::engine::{
    client_text, GenerateError, GenerateJob, Generator, GeneratorFactory, Progress,
};
use crate::messages::session::{ErrorKind as ErrorCode, JobEvent, JobUpdate};
use crate::pipeline::images::encode_png;
use crate::pipeline::params::GeneratedImage;
use crate::registry::guard::panic_message;

pub(crate) const THREAD_NAME: &str = "runai-gpu-worker";

/// One job handed to the thread.
pub(crate) struct RunJob {
    pub(crate) key: u64,
    pub(crate) job_id: String,
    pub(crate) job: GenerateJob,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) events: Recipient<JobEvent>,
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Done {
        images: usize,
    },
    Cancelled,
    Failed {
        code: ErrorCode,
        message: String,
    },
    /// The generator panicked; the thread has exited.
    Panicked {
        message: String,
    },
}

/// Thread to actor: a job ended.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct JobFinished {
    pub(crate) epoch: u64,
    pub(crate) key: u64,
    pub(crate) outcome: Outcome,
    pub(crate) loaded_models: Vec<String>,
}

/// Thread to actor: the generator is built (or failed to build).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct ThreadReady {
    pub(crate) epoch: u64,
    pub(crate) device: String,
    /// Jobs the thread takes at once: `max_batch` when the generator runs steps, else 1.
    pub(crate) capacity: usize,
}

pub(crate) struct WorkerThread {
    pub(crate) tx: mpsc::Sender<RunJob>,
}

pub(crate) fn spawn(
    epoch: u64,
    factory: GeneratorFactory,
    actor: Addr<GpuWorkerActor>,
    limits: BatchLimits,
) -> std::io::Result<WorkerThread> {
    let (tx, rx) = mpsc::channel::<RunJob>();
    std::thread::Builder::new()
        .name(THREAD_NAME.to_string())
        .spawn(move || thread_main(epoch, factory, actor, rx, limits))?;
    Ok(WorkerThread { tx })
}

fn thread_main(
    epoch: u64,
    factory: GeneratorFactory,
    actor: Addr<GpuWorkerActor>,
    rx: mpsc::Receiver<RunJob>,
    limits: BatchLimits,
) {
    let built: Result<Box<dyn Generator>, String> =
        match catch_unwind(AssertUnwindSafe(|| factory())) {
            Ok(Ok(g)) => Ok(g),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(p) => Err(format!(
                "generator construction panicked: {}",
                panic_message(&*p)
            )),
        };
    if let Err(e) = &built {
        log::error!("model backend failed to start: {e}");
    }
    // Clients get the reason without a backtrace.
    let mut generator = built.map_err(|e| client_text::without_backtrace(&e));
    let device = match &generator {
        Ok(g) => g.device(),
        Err(_) => "none".to_string(),
    };
    let batching = limits.max_batch > 1
        && generator.as_mut().is_ok_and(|g| {
            catch_unwind(AssertUnwindSafe(|| g.stepper().is_some())).unwrap_or(false)
        });
    actor.do_send(ThreadReady {
        epoch,
        device,
        capacity: if batching { limits.max_batch } else { 1 },
    });
    if batching {
        if let Ok(generator) = generator {
            batched::run(Reporter { epoch, actor }, generator, rx, limits);
        }
        return;
    }
    while let Ok(run) = rx.recv() {
        let gen = match &mut generator {
            Ok(g) => g,
            Err(e) => {
                actor.do_send(JobFinished {
                    epoch,
                    key: run.key,
                    outcome: Outcome::Failed {
                        code: ErrorCode::Unavailable,
                        message: e.clone(),
                    },
                    loaded_models: Vec::new(),
                });
                continue;
            }
        };
        let outcome = run_one(gen.as_mut(), &run);
        let panicked = matches!(outcome, Outcome::Panicked { .. });
        let loaded_models = if panicked {
            Vec::new()
        } else {
            catch_unwind(AssertUnwindSafe(|| gen.loaded_models())).unwrap_or_default()
        };
        actor.do_send(JobFinished {
            epoch,
            key: run.key,
            outcome,
            loaded_models,
        });
        if panicked {
            // The generator may be half-updated: drop it (guarded) and let the supervisor
            // build a fresh thread.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(generator)));
            return;
        }
    }
}

/// Sends a progress event per step to the job's session and reports the job's cancel flag
/// between phases.
struct JobProgress<'a> {
    run: &'a RunJob,
}

impl JobProgress<'_> {
    fn cancelled(&self) -> bool {
        self.run.cancel.load(Ordering::SeqCst)
    }
}

impl Progress for JobProgress<'_> {
    fn step(&mut self, step: usize, total: usize) -> bool {
        if self.cancelled() {
            return false;
        }
        send_progress(self.run, step, total);
        !self.cancelled()
    }

    fn proceed(&mut self) -> bool {
        !self.cancelled()
    }
}

fn run_one(gen: &mut dyn Generator, run: &RunJob) -> Outcome {
    let mut progress = JobProgress { run };
    let result = catch_unwind(AssertUnwindSafe(|| gen.generate(&run.job, &mut progress)));
    match result {
        Ok(Ok(images)) => send_images(run, images),
        Ok(Err(e)) => error_outcome(run, e),
        Err(p) => Outcome::Panicked {
            message: panic_message(&*p),
        },
    }
}

/// Tells the job's front end that step `step` (0-based) of `total` is done.
pub(super) fn send_progress(run: &RunJob, step: usize, total: usize) {
    run.events.do_send(JobEvent {
        job_id: run.job_id.clone(),
        update: JobUpdate::Progress { step, total },
    });
}

/// Sends a finished job's images (PNG-encoded here) to its front end.
pub(super) fn send_images(run: &RunJob, images: Vec<GeneratedImage>) -> Outcome {
    let n = images.len();
    for img in images {
        // PNG encoding is the last expensive phase; a cancel stops it between images.
        if run.cancel.load(Ordering::SeqCst) {
            return Outcome::Cancelled;
        }
        match encode_png(&img.image) {
            Ok(png) => run.events.do_send(JobEvent {
                job_id: run.job_id.clone(),
                update: JobUpdate::Image {
                    png,
                    seed: img.seed,
                    nsfw: img.nsfw,
                },
            }),
            Err(e) => {
                return error_outcome(
                    run,
                    GenerateError::Internal(format!("PNG encoding failed: {e}")),
                )
            }
        }
    }
    Outcome::Done { images: n }
}

/// The outcome of a job that failed with `e`.
pub(super) fn error_outcome(run: &RunJob, e: GenerateError) -> Outcome {
    let failed = |code, message: String| Outcome::Failed {
        code,
        message: client_text::for_client(&message, &run.job.model),
    };
    match e {
        GenerateError::Cancelled => Outcome::Cancelled,
        GenerateError::ModelLoad(m) => failed(ErrorCode::Unavailable, m),
        GenerateError::Invalid(m) => failed(ErrorCode::InvalidField, m),
        GenerateError::Internal(m) => {
            // The whole text, backtrace included, stays in the server's log.
            log::warn!("job {} failed inside the model: {m}", run.job_id);
            failed(ErrorCode::Internal, m)
        }
    }
}

/// Sends job reports to the actor, tagged with this thread's epoch.
pub(super) struct Reporter {
    pub(crate) epoch: u64,
    pub(crate) actor: Addr<GpuWorkerActor>,
}

impl Reporter {
    pub(crate) fn finished(&self, key: u64, outcome: Outcome, loaded_models: Vec<String>) {
        self.actor.do_send(JobFinished {
            epoch: self.epoch,
            key,
            outcome,
            loaded_models,
        });
    }
}
