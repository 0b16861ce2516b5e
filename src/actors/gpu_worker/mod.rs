//! `GpuWorkerActor`: the async façade over the worker thread. Owns the fair, bounded job
//! queue (capped in total and per session), refuses a task the model cannot run before it
//! waits, hands jobs to the thread in the queue's round-robin order (one at a time, or up to
//! `max_batch` when the thread runs a continuous batch: see batched.rs; at most one job per
//! session at a time, so a client's jobs still run in order), answers `queued`/
//! `busy`/`done`/`cancelled`/errors, and is supervised: a model panic stops the actor, the
//! supervisor restarts it with a fresh thread, and a restart budget gives up on a model that
//! always crashes. The decisions live in plain structs tested without sockets: `fair_queue`,
//! `running` (jobs handed to the thread, cancel flags), `batch` (who shares a step), and
//! the shared `actors::restart_budget`. Never runs a model on the async threads.

pub(crate) mod batch;
mod batched;
pub(crate) mod fair_queue;
pub(crate) mod running;
pub(crate) mod thread;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use self::batch::BatchLimits;
use self::fair_queue::{FairQueue, Refused};
use self::running::RunningJobs;
use self::thread::{JobFinished, Outcome, RunJob, ThreadReady, WorkerThread};
use crate::actors::restart_budget::{Restart, RestartBudget};
use crate::actors::shutdown::ShutdownActor;
use crate::engine::{GenerateJob, GeneratorFactory};
use crate::messages::session::{ErrorKind as ErrorCode, JobEvent, JobUpdate};
use crate::messages::shutdown::{WorkerGaveUp, WorkerIdle};
use crate::messages::worker::{
    CancelJobs, DrainWorker, GetWorkerStatus, SessionGone, SubmitJob, WorkerStatus,
};
use crate::messages::SessionId;

#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) queue_depth: usize,
    /// Jobs one session may hold, waiting and running together.
    pub(crate) max_jobs_per_client: usize,
    pub(crate) max_restarts: u32,
    pub(crate) restart_window: Duration,
    /// Continuous batching: jobs per model call and the activation-memory bound.
    pub(crate) batch: BatchLimits,
}

struct QueuedJob {
    key: u64,
    job_id: String,
    job: GenerateJob,
    events: Recipient<JobEvent>,
}

type RunningJob = running::RunningJob<Recipient<JobEvent>>;

pub(crate) struct GpuWorkerActor {
    settings: WorkerSettings,
    factory: GeneratorFactory,
    shutdown: Addr<ShutdownActor>,
    queue: FairQueue<(SessionId, QueuedJob)>,
    thread: Option<WorkerThread>,
    /// Bumped on every restart so stale thread reports are ignored.
    epoch: u64,
    /// Jobs handed to the thread (running, or about to join its batch).
    running: RunningJobs<Recipient<JobEvent>>,
    /// How many jobs the thread takes at once (from its ready report; 1 until then).
    capacity: usize,
    restarts: RestartBudget,
    gave_up: Option<String>,
    draining: bool,
    next_key: u64,
    device: String,
    loaded_models: Vec<String>,
}

impl GpuWorkerActor {
    pub(crate) fn new(
        settings: WorkerSettings,
        factory: GeneratorFactory,
        shutdown: Addr<ShutdownActor>,
    ) -> Self {
        let queue = FairQueue::new(settings.queue_depth, settings.max_jobs_per_client);
        let restarts = RestartBudget::new(settings.max_restarts, settings.restart_window);
        GpuWorkerActor {
            settings,
            factory,
            shutdown,
            queue,
            thread: None,
            epoch: 0,
            running: RunningJobs::default(),
            capacity: 1,
            restarts,
            gave_up: None,
            draining: false,
            next_key: 0,
            device: "starting".to_string(),
            loaded_models: Vec::new(),
        }
    }

    fn send(&self, events: &Recipient<JobEvent>, job_id: &str, update: JobUpdate) {
        events.do_send(JobEvent {
            job_id: job_id.to_string(),
            update,
        });
    }

    fn send_error(
        &self,
        events: &Recipient<JobEvent>,
        job_id: &str,
        code: ErrorCode,
        message: &str,
    ) {
        let update = JobUpdate::Failed {
            kind: code,
            message: message.to_string(),
        };
        self.send(events, job_id, update);
    }

    /// Hands waiting jobs to the thread while it has room.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        while self.running.len() < self.capacity && self.dispatch_one(ctx) {}
    }

    /// Hands the next job to the thread; false when none was handed over.
    fn dispatch_one(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.gave_up.is_some() {
            return false;
        }
        let Some(thread) = &self.thread else {
            return false;
        };
        // One job per session at a time: a client's jobs run in order (its replies never
        // interleave), and a batch holds jobs of different callers.
        let running = &self.running;
        let Some((session, (_, q))) = self.queue.pop_eligible(|s| running.count_for(s) == 0) else {
            return false;
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let run = RunJob {
            key: q.key,
            job_id: q.job_id.clone(),
            job: q.job,
            cancel: cancel.clone(),
            events: q.events.clone(),
        };
        if thread.tx.send(run).is_err() {
            // The thread is gone without reporting: treat as a crash.
            self.send_error(
                &q.events,
                &q.job_id,
                ErrorCode::Internal,
                "the worker thread stopped; it is being restarted",
            );
            self.thread = None;
            ctx.stop();
            return false;
        }
        self.running.insert(RunningJob {
            key: q.key,
            session,
            job_id: q.job_id,
            events: q.events,
            cancel,
            started: Instant::now(),
            cancelled_by_client: false,
        });
        true
    }

    fn fail_all_queued(&mut self, code: ErrorCode, message: &str) {
        for (_, q) in self.queue.drain_all() {
            self.send_error(&q.events, &q.job_id, code, message);
        }
    }

    fn cancel_matching(&mut self, session: SessionId, job_id: Option<&str>, notify: bool) {
        let matches = |j: &str| job_id.map_or(true, |want| want == j);
        let removed = self
            .queue
            .remove_where(|s, (_, q)| s == session && matches(&q.job_id));
        if notify {
            for (_, q) in &removed {
                self.send(&q.events, &q.job_id, JobUpdate::Cancelled);
            }
        }
        self.running.cancel_matching(session, job_id);
    }

    fn notify_if_drained(&self) {
        if self.draining && self.running.is_empty() {
            self.shutdown.do_send(WorkerIdle);
        }
    }
}

impl Actor for GpuWorkerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        if let Some(reason) = self.gave_up.clone() {
            self.fail_all_queued(ErrorCode::Unavailable, &reason);
            self.shutdown.do_send(WorkerGaveUp { reason });
            return;
        }
        let limits = self.settings.batch;
        match thread::spawn(self.epoch, self.factory.clone(), ctx.address(), limits) {
            Ok(t) => self.thread = Some(t),
            Err(e) => {
                let reason = format!("cannot start the worker thread: {e}");
                log::error!("{reason}");
                self.gave_up = Some(reason.clone());
                self.fail_all_queued(ErrorCode::Unavailable, &reason);
                self.shutdown.do_send(WorkerGaveUp { reason });
                return;
            }
        }
        self.dispatch(ctx);
    }
}

impl Supervised for GpuWorkerActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.epoch += 1;
        // The old thread exits on its own once its channel closes.
        self.thread = None;
        self.capacity = 1;
        for r in self.running.take_all() {
            self.send_error(
                &r.events,
                &r.job_id,
                ErrorCode::Internal,
                "the worker restarted while running this job",
            );
        }
        match self.restarts.crashed(Instant::now()) {
            Restart::Exhausted { crashes } => {
                let reason = format!(
                    "the model backend crashed {crashes} times within {:?}; giving up",
                    self.settings.restart_window
                );
                log::error!("{reason}");
                self.gave_up = Some(reason);
            }
            Restart::Allowed { restart } => log::warn!(
                "restarting the worker thread (restart {restart} of {} allowed)",
                self.settings.max_restarts
            ),
        }
    }
}

impl Handler<SubmitJob> for GpuWorkerActor {
    type Result = ();

    fn handle(&mut self, msg: SubmitJob, ctx: &mut Context<Self>) {
        if let Some(reason) = &self.gave_up {
            let reason = reason.clone();
            self.send_error(&msg.events, &msg.job_id, ErrorCode::Unavailable, &reason);
            return;
        }
        if self.draining {
            self.send_error(
                &msg.events,
                &msg.job_id,
                ErrorCode::Unavailable,
                "the server is shutting down",
            );
            return;
        }
        if let Some(reason) = msg.job.unsupported_task() {
            let text = format!("{}_model: {reason}", msg.reqtype);
            self.send_error(&msg.events, &msg.job_id, ErrorCode::InvalidField, &text);
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        let q = QueuedJob {
            key,
            job_id: msg.job_id,
            job: msg.job,
            events: msg.events,
        };
        let running = self.running.count_for(msg.session);
        if let Err(refused) = self.queue.push(msg.session, running, (msg.session, q)) {
            let (text, (_, q)) = match refused {
                Refused::SessionFull(item) => (
                    format!(
                        "this client already has {} jobs waiting or running, the per-client \
                         limit (max_jobs_per_client); send more when one has finished",
                        self.queue.per_session()
                    ),
                    item,
                ),
                Refused::QueueFull(item) => (
                    format!(
                        "the job queue is full ({} jobs waiting); try again later",
                        self.queue.capacity()
                    ),
                    item,
                ),
            };
            self.send_error(&q.events, &q.job_id, ErrorCode::Busy, &text);
            return;
        }
        self.dispatch(ctx);
        if let Some(pos) = self.queue.position(msg.session, |(_, q)| q.key == key) {
            if let Some((_, q)) = self.queue.find(msg.session, |(_, q)| q.key == key) {
                self.send(&q.events, &q.job_id, JobUpdate::Queued { position: pos });
            }
        }
    }
}

impl Handler<CancelJobs> for GpuWorkerActor {
    type Result = ();

    fn handle(&mut self, msg: CancelJobs, _ctx: &mut Context<Self>) {
        self.cancel_matching(msg.session, msg.job_id.as_deref(), true);
    }
}

impl Handler<SessionGone> for GpuWorkerActor {
    type Result = ();

    fn handle(&mut self, msg: SessionGone, _ctx: &mut Context<Self>) {
        self.cancel_matching(msg.session, None, false);
    }
}

impl Handler<GetWorkerStatus> for GpuWorkerActor {
    type Result = MessageResult<GetWorkerStatus>;

    fn handle(&mut self, _msg: GetWorkerStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(WorkerStatus {
            queue: self.queue.len() + self.running.len(),
            device: self.device.clone(),
            loaded_models: self.loaded_models.clone(),
        })
    }
}

impl Handler<DrainWorker> for GpuWorkerActor {
    type Result = ();

    fn handle(&mut self, msg: DrainWorker, ctx: &mut Context<Self>) {
        if !self.draining {
            self.draining = true;
            self.fail_all_queued(ErrorCode::Unavailable, "the server is shutting down");
        }
        if msg.grace.is_zero() {
            self.running.stop(None);
        } else if !self.running.is_empty() {
            let keys = self.running.keys();
            ctx.run_later(msg.grace, move |act, _| {
                if keys.iter().any(|k| act.running.contains(*k)) {
                    log::warn!("drain grace period over: cancelling the running jobs");
                }
                act.running.stop(Some(&keys));
            });
        }
        self.notify_if_drained();
    }
}

impl Handler<ThreadReady> for GpuWorkerActor {
    type Result = ();

    fn handle(&mut self, msg: ThreadReady, ctx: &mut Context<Self>) {
        if msg.epoch == self.epoch {
            self.device = msg.device;
            self.capacity = msg.capacity.max(1);
            if self.capacity > 1 {
                log::info!("continuous batching: up to {} jobs per step", self.capacity);
            }
            self.dispatch(ctx);
        }
    }
}

impl Handler<JobFinished> for GpuWorkerActor {
    type Result = ();

    fn handle(&mut self, msg: JobFinished, ctx: &mut Context<Self>) {
        if msg.epoch != self.epoch {
            return;
        }
        let Some(r) = self.running.take(msg.key) else {
            return;
        };
        if !matches!(msg.outcome, Outcome::Panicked { .. }) {
            self.loaded_models = msg.loaded_models;
        }
        match msg.outcome {
            Outcome::Done { images } => {
                let elapsed = r.started.elapsed().as_millis() as u64;
                log::info!("job {} done: {images} image(s) in {elapsed} ms", r.job_id);
                let done = JobUpdate::Done {
                    images,
                    elapsed_ms: elapsed,
                };
                self.send(&r.events, &r.job_id, done);
            }
            Outcome::Cancelled if r.cancelled_by_client => {
                self.send(&r.events, &r.job_id, JobUpdate::Cancelled);
            }
            Outcome::Cancelled => {
                self.send_error(
                    &r.events,
                    &r.job_id,
                    ErrorCode::Unavailable,
                    "cancelled because the server is shutting down",
                );
            }
            Outcome::Failed { code, message } => {
                log::warn!("job {} failed: {code}: {message}", r.job_id);
                self.send_error(&r.events, &r.job_id, code, &message);
            }
            Outcome::Panicked { message } => {
                log::error!("job {} panicked: {message}", r.job_id);
                self.send_error(
                    &r.events,
                    &r.job_id,
                    ErrorCode::Internal,
                    "the job crashed; the worker is being restarted",
                );
                self.thread = None;
                if self.draining {
                    self.notify_if_drained();
                }
                ctx.stop();
                return;
            }
        }
        self.dispatch(ctx);
        self.notify_if_drained();
    }
}
