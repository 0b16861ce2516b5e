//! The job bridge: submits one validated job to the GPU worker in the caller's lane and
//! turns the worker's `JobEvent`s back into a result the handler awaits. A tiny actor per
//! job receives the events (the worker only knows it as a `Recipient<JobEvent>`) and
//! forwards them over a channel; it stops after the job's last event. A guard cancels the
//! job if the handler is dropped first (the client disconnected) and keeps the caller's
//! progress and the shutdown actor's session count right on every path.

use actix::prelude::*;
use tokio::sync::mpsc;

use super::callers::Caller;
use super::error::ApiError;
use super::state::HttpState;
use crate::engine::GenerateJob;
use crate::messages::session::{ErrorKind, JobEvent, JobUpdate};
use crate::messages::shutdown::{SessionClosed, SessionOpened};
use crate::messages::worker::{CancelJobs, SubmitJob};
use crate::messages::SessionId;

struct JobBridge {
    tx: mpsc::UnboundedSender<JobUpdate>,
}

impl Actor for JobBridge {
    type Context = Context<Self>;
}

impl Handler<JobEvent> for JobBridge {
    type Result = ();

    fn handle(&mut self, msg: JobEvent, ctx: &mut Context<Self>) {
        let terminal = msg.is_terminal();
        if self.tx.send(msg.update).is_err() || terminal {
            ctx.stop();
        }
    }
}

/// One finished image as the worker sent it.
#[derive(Debug, Clone)]
pub(crate) struct JobImage {
    pub png_base64: String,
    pub seed: u64,
    pub nsfw: Option<bool>,
}

/// How a job ended, short of an error.
#[derive(Debug, Default)]
pub(crate) struct JobResult {
    pub images: Vec<JobImage>,
    /// Interrupted by the caller: `images` holds what was finished before.
    pub interrupted: bool,
}

/// Cancels the job and tidies up unless the job reached its last event.
struct Guard<'a> {
    state: &'a HttpState,
    caller: &'a Caller,
    lane: SessionId,
    job_id: String,
    finished: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            log::info!(
                "http: client of job {} went away; cancelling it",
                self.job_id
            );
            self.state.peers.cancel.do_send(CancelJobs {
                session: self.lane,
                job_id: Some(self.job_id.clone()),
            });
        }
        self.state.callers.end_job(self.caller, &self.job_id);
        self.state.peers.closed.do_send(SessionClosed);
    }
}

/// Runs `job` for `caller` and waits for its end.
pub(crate) async fn run_job(
    state: &HttpState,
    caller: &Caller,
    reqtype: &'static str,
    job: GenerateJob,
) -> Result<JobResult, ApiError> {
    let job_id = state.job_id();
    let images = job.params.n_samples;
    let lane = state.callers.begin_job(caller, &job_id, images);
    state.peers.opened.do_send(SessionOpened);
    let mut guard = Guard {
        state,
        caller,
        lane,
        job_id: job_id.clone(),
        finished: false,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let bridge = JobBridge { tx }.start();
    state.peers.submit.do_send(SubmitJob {
        session: lane,
        job_id: job_id.clone(),
        reqtype,
        job,
        events: bridge.recipient(),
    });
    let mut result = JobResult::default();
    loop {
        let Some(update) = rx.recv().await else {
            guard.finished = true;
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "the worker stopped without finishing the job",
            ));
        };
        match update {
            JobUpdate::Queued { position } => state
                .callers
                .update(caller, &job_id, |j| j.position = position),
            JobUpdate::Progress { step, total } => state.callers.update(caller, &job_id, |j| {
                j.started.get_or_insert_with(std::time::Instant::now);
                j.step = step + 1;
                j.total = total;
                j.position = 0;
            }),
            JobUpdate::Image {
                png_base64,
                seed,
                nsfw,
            } => {
                result.images.push(JobImage {
                    png_base64,
                    seed,
                    nsfw,
                });
                let done = result.images.len();
                state
                    .callers
                    .update(caller, &job_id, |j| j.images_done = done);
            }
            JobUpdate::Done { .. } => {
                guard.finished = true;
                return Ok(result);
            }
            JobUpdate::Cancelled => {
                guard.finished = true;
                result.interrupted = true;
                return Ok(result);
            }
            JobUpdate::Failed { kind, message } => {
                guard.finished = true;
                return Err(ApiError::new(kind, message));
            }
        }
    }
}
