//! `GpuWorkerActor`: the async façade over the worker thread. Owns the fair, bounded job
//! queue (capped in total and per session), refuses a task the model cannot run before it
//! waits, hands one job at a time to the thread, answers `queued`/`busy`/`done`/`cancelled`/
//! errors, and is supervised: a job panic stops the actor, the supervisor restarts it with a
//! fresh thread, and a restart budget gives up on a model that always crashes. Never runs a
//! model on the async threads.

pub mod fair_queue;
pub mod no_backend;
pub mod thread;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use self::fair_queue::{FairQueue, Refused};
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
pub struct WorkerSettings {
    pub queue_depth: usize,
    /// Jobs one session may hold, waiting and running together.
    pub max_jobs_per_client: usize,
    pub max_restarts: u32,
    pub restart_window: Duration,
}

struct QueuedJob {
    key: u64,
    job_id: String,
    reqtype: &'static str,
    job: GenerateJob,
    events: Recipient<JobEvent>,
}

struct RunningJob {
    key: u64,
    session: SessionId,
    job_id: String,
    events: Recipient<JobEvent>,
    cancel: Arc<AtomicBool>,
    started: Instant,
    /// The job was cancelled by the client (not by a drain): answer `cancelled`.
    cancelled_by_client: bool,
}

pub struct GpuWorkerActor {
    settings: WorkerSettings,
    factory: GeneratorFactory,
    shutdown: Addr<ShutdownActor>,
    queue: FairQueue<(SessionId, QueuedJob)>,
    thread: Option<WorkerThread>,
    /// Bumped on every restart so stale thread reports are ignored.
    epoch: u64,
    running: Option<RunningJob>,
    restarts: RestartBudget,
    gave_up: Option<String>,
    draining: bool,
    next_key: u64,
    device: String,
    loaded_models: Vec<String>,
}

impl GpuWorkerActor {
    pub fn new(
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
            running: None,
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

    /// Hands the next job to the thread when it is free.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_some() || self.gave_up.is_some() {
            return;
        }
        let Some(thread) = &self.thread else {
            return;
        };
        let Some((session, (_, q))) = self.queue.pop() else {
            return;
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let run = RunJob {
            key: q.key,
            job_id: q.job_id.clone(),
            reqtype: q.reqtype,
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
            return;
        }
        self.running = Some(RunningJob {
            key: q.key,
            session,
            job_id: q.job_id,
            events: q.events,
            cancel,
            started: Instant::now(),
            cancelled_by_client: false,
        });
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
        if let Some(r) = &mut self.running {
            if r.session == session && matches(&r.job_id) {
                r.cancel.store(true, Ordering::SeqCst);
                r.cancelled_by_client = true;
            }
        }
    }

    fn notify_if_drained(&self) {
        if self.draining && self.running.is_none() {
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
        match thread::spawn(self.epoch, self.factory.clone(), ctx.address()) {
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
        if let Some(r) = self.running.take() {
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
            reqtype: msg.reqtype,
            job: msg.job,
            events: msg.events,
        };
        let running = usize::from(
            self.running
                .as_ref()
                .is_some_and(|r| r.session == msg.session),
        );
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
            queue: self.queue.len() + usize::from(self.running.is_some()),
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
        if let Some(r) = &self.running {
            let key = r.key;
            if msg.grace.is_zero() {
                r.cancel.store(true, Ordering::SeqCst);
            } else {
                ctx.run_later(msg.grace, move |act, _| {
                    if let Some(r) = &act.running {
                        if r.key == key {
                            log::warn!("drain grace period over: cancelling the running job");
                            r.cancel.store(true, Ordering::SeqCst);
                        }
                    }
                });
            }
        }
        self.notify_if_drained();
    }
}

impl Handler<ThreadReady> for GpuWorkerActor {
    type Result = ();

    fn handle(&mut self, msg: ThreadReady, _ctx: &mut Context<Self>) {
        if msg.epoch == self.epoch {
            self.device = msg.device;
        }
    }
}

impl Handler<JobFinished> for GpuWorkerActor {
    type Result = ();

    fn handle(&mut self, msg: JobFinished, ctx: &mut Context<Self>) {
        if msg.epoch != self.epoch {
            return;
        }
        let Some(r) = self.running.take_if(|r| r.key == msg.key) else {
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
