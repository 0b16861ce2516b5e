//! The dedicated, named OS thread that owns the generator (and so the models). Runs one job
//! at a time, sends progress and images straight to the job's session, and reports the
//! outcome to the actor. Catches panics: after one it reports and exits, so the supervisor
//! can build a fresh thread. Never touches actix state or the socket directly.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix::{Addr, Message, Recipient};
use serde_json::Value;

use super::GpuWorkerActor;
use crate::engine::{GenerateError, GenerateJob, Generator, GeneratorFactory};
use crate::messages::session::JobEvent;
use crate::protocol::error::ErrorCode;
use crate::protocol::{frame_json, responses, responses::encode_png_base64};
use crate::registry::guard::panic_message;

pub const THREAD_NAME: &str = "runai-gpu-worker";

/// One job handed to the thread.
pub struct RunJob {
    pub key: u64,
    pub job_id: String,
    pub reqtype: &'static str,
    pub pos_x: Value,
    pub pos_y: Value,
    pub job: GenerateJob,
    pub cancel: Arc<AtomicBool>,
    pub events: Recipient<JobEvent>,
}

#[derive(Debug)]
pub enum Outcome {
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
pub struct JobFinished {
    pub epoch: u64,
    pub key: u64,
    pub outcome: Outcome,
    pub loaded_models: Vec<String>,
}

/// Thread to actor: the generator is built (or failed to build).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ThreadReady {
    pub epoch: u64,
    pub device: String,
    pub load_error: Option<String>,
}

pub struct WorkerThread {
    pub tx: mpsc::Sender<RunJob>,
    pub join: JoinHandle<()>,
}

pub fn spawn(
    epoch: u64,
    factory: GeneratorFactory,
    packet_size: usize,
    actor: Addr<GpuWorkerActor>,
) -> std::io::Result<WorkerThread> {
    let (tx, rx) = mpsc::channel::<RunJob>();
    let join = std::thread::Builder::new()
        .name(THREAD_NAME.to_string())
        .spawn(move || thread_main(epoch, factory, packet_size, actor, rx))?;
    Ok(WorkerThread { tx, join })
}

fn thread_main(
    epoch: u64,
    factory: GeneratorFactory,
    packet_size: usize,
    actor: Addr<GpuWorkerActor>,
    rx: mpsc::Receiver<RunJob>,
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
    let (device, load_error) = match &built {
        Ok(g) => (g.device(), None),
        Err(e) => ("none".to_string(), Some(e.clone())),
    };
    if let Some(e) = &load_error {
        log::error!("model backend failed to start: {e}");
    }
    actor.do_send(ThreadReady {
        epoch,
        device,
        load_error,
    });
    let mut generator = built;
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
        let outcome = run_one(gen.as_mut(), &run, packet_size);
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

fn run_one(gen: &mut dyn Generator, run: &RunJob, packet_size: usize) -> Outcome {
    let cancel = run.cancel.clone();
    let events = run.events.clone();
    let job_id = run.job_id.clone();
    let reqtype = run.reqtype;
    let mut progress = move |step: usize, total: usize| -> bool {
        if cancel.load(Ordering::SeqCst) {
            return false;
        }
        events.do_send(JobEvent {
            job_id: job_id.clone(),
            terminal: false,
            bytes: frame_json(
                &responses::progress(step, total, reqtype, &job_id),
                packet_size,
            ),
        });
        !cancel.load(Ordering::SeqCst)
    };
    let result = catch_unwind(AssertUnwindSafe(|| gen.generate(&run.job, &mut progress)));
    match result {
        Ok(Ok(images)) => {
            let n = images.len();
            for img in images {
                match encode_png_base64(&img.image) {
                    Ok(b64) => run.events.do_send(JobEvent {
                        job_id: run.job_id.clone(),
                        terminal: false,
                        bytes: frame_json(
                            &responses::image(
                                b64,
                                run.reqtype,
                                &run.pos_x,
                                &run.pos_y,
                                &run.job_id,
                                img.seed,
                            ),
                            packet_size,
                        ),
                    }),
                    Err(e) => {
                        return Outcome::Failed {
                            code: ErrorCode::Internal,
                            message: format!("PNG encoding failed: {e}"),
                        }
                    }
                }
            }
            Outcome::Done { images: n }
        }
        Ok(Err(GenerateError::Cancelled)) => Outcome::Cancelled,
        Ok(Err(GenerateError::ModelLoad(m))) => Outcome::Failed {
            code: ErrorCode::Unavailable,
            message: m,
        },
        Ok(Err(GenerateError::Invalid(m))) => Outcome::Failed {
            code: ErrorCode::InvalidField,
            message: m,
        },
        Ok(Err(GenerateError::Internal(m))) => Outcome::Failed {
            code: ErrorCode::Internal,
            message: m,
        },
        Err(p) => Outcome::Panicked {
            message: panic_message(&*p),
        },
    }
}
