//! The job bridge: submits one validated job to the GPU worker in the caller's lane and
//! turns the worker's `JobEvent`s back into a result. A tiny actor per job receives the
//! events (the worker only knows it as a `Recipient<JobEvent>`) and forwards them over a
//! channel; it stops after the job's last event. Dropping a `RunningJob` before its end
//! cancels the job, and every end keeps the caller's progress and the shutdown actor's
//! session count right.

use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use actix::prelude::*;
use actix_web::web::Data;
use tokio::sync::mpsc;

use super::callers::Caller;
use super::error::ApiError;
use super::state::HttpState;
use crate::engine::GenerateJob;
use crate::messages::session::{ErrorKind, JobEvent, JobUpdate};
use crate::messages::shutdown::{SessionClosed, SessionOpened};
use crate::messages::worker::{CancelJobs, SubmitJob};
use crate::messages::SessionId;

struct EventForwarder {
    tx: mpsc::UnboundedSender<JobUpdate>,
}

impl Actor for EventForwarder {
    type Context = Context<Self>;
}

impl Handler<JobEvent> for EventForwarder {
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
    /// PNG bytes.
    pub(crate) png: Vec<u8>,
    pub(crate) seed: u64,
    pub(crate) nsfw: Option<bool>,
}

/// How a job ended, short of an error.
#[derive(Debug, Default)]
pub(crate) struct JobResult {
    pub(crate) images: Vec<JobImage>,
    /// Interrupted by the caller: `images` holds what was finished before.
    pub(crate) interrupted: bool,
}

/// What one worker event meant.
pub(crate) enum Step {
    /// Waiting in the queue.
    Waiting,
    /// A denoising step or an image: the job is running.
    Working,
    /// The job's end.
    End(Result<JobResult, ApiError>),
}

/// A submitted job, cancelled if dropped before its end.
pub(crate) struct RunningJob {
    state: Data<HttpState>,
    caller: Caller,
    lane: SessionId,
    job_id: String,
    rx: mpsc::UnboundedReceiver<JobUpdate>,
    result: JobResult,
    finished: bool,
}

impl RunningJob {
    /// Submits `job` in `caller`'s lane.
    pub(crate) fn submit(
        state: Data<HttpState>,
        caller: Caller,
        reqtype: &'static str,
        job: GenerateJob,
    ) -> RunningJob {
        let job_id = state.job_id();
        let lane = state
            .callers
            .begin_job(&caller, &job_id, job.params.n_samples);
        state.peers.opened.do_send(SessionOpened);
        let (tx, rx) = mpsc::unbounded_channel();
        let forwarder = EventForwarder { tx }.start();
        state.peers.submit.do_send(SubmitJob {
            session: lane,
            job_id: job_id.clone(),
            reqtype,
            job,
            events: forwarder.recipient(),
        });
        RunningJob {
            state,
            caller,
            lane,
            job_id,
            rx,
            result: JobResult::default(),
            finished: false,
        }
    }

    fn apply(&mut self, update: Option<JobUpdate>) -> Step {
        let (callers, caller, id) = (&self.state.callers, &self.caller, &self.job_id);
        let end = match update {
            None => Err(ApiError::new(
                ErrorKind::Unavailable,
                "the worker stopped without finishing the job",
            )),
            Some(JobUpdate::Queued { position }) => {
                callers.update(caller, id, |j| j.position = position);
                return Step::Waiting;
            }
            Some(JobUpdate::Progress { step, total }) => {
                callers.update(caller, id, |j| {
                    j.started.get_or_insert_with(Instant::now);
                    j.step = step + 1;
                    j.total = total;
                    j.position = 0;
                });
                return Step::Working;
            }
            Some(JobUpdate::Image { png, seed, nsfw }) => {
                self.result.images.push(JobImage { png, seed, nsfw });
                let done = self.result.images.len();
                callers.update(caller, id, |j| j.images_done = done);
                return Step::Working;
            }
            Some(JobUpdate::Done { .. }) => Ok(std::mem::take(&mut self.result)),
            Some(JobUpdate::Cancelled) => {
                self.result.interrupted = true;
                Ok(std::mem::take(&mut self.result))
            }
            Some(JobUpdate::Failed { kind, message }) => Err(ApiError::new(kind, message)),
        };
        self.finished = true;
        Step::End(end)
    }

    /// Waits until the job runs (`None`) or ended before that (its end).
    pub(crate) async fn until_running(&mut self) -> Option<Result<JobResult, ApiError>> {
        loop {
            let update = self.rx.recv().await;
            match self.apply(update) {
                Step::Waiting => {}
                Step::Working => return None,
                Step::End(end) => return Some(end),
            }
        }
    }

    /// The next event, for a body polled by the HTTP connection.
    pub(crate) fn poll_step(&mut self, cx: &mut TaskContext<'_>) -> Poll<Step> {
        if self.finished {
            return Poll::Pending;
        }
        self.rx.poll_recv(cx).map(|update| self.apply(update))
    }
}

impl Drop for RunningJob {
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
        self.state.callers.end_job(&self.caller, &self.job_id);
        self.state.peers.closed.do_send(SessionClosed);
    }
}
