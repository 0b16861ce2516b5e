//! Messages handled by `GpuWorkerActor`: submit, cancel, status, drain. Jobs arrive here
//! validated and resolved; the worker never sees raw client input.

use std::time::Duration;

use actix::{Message, Recipient};

use super::session::JobEvent;
use super::SessionId;
use crate::engine::GenerateJob;

/// Queue a validated job. Answers arrive as `JobEvent`s on `events`: maybe `queued`, then
/// progress, images and `done`, or exactly one error or `cancelled`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubmitJob {
    pub(crate) session: SessionId,
    pub(crate) job_id: String,
    /// The task's name (`txt2img`, ...), for messages and logs.
    pub(crate) reqtype: &'static str,
    pub(crate) job: GenerateJob,
    pub(crate) events: Recipient<JobEvent>,
}

/// Cancel a session's jobs (`job_id: None` = all of them); each gets a `cancelled` event.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct CancelJobs {
    pub(crate) session: SessionId,
    pub(crate) job_id: Option<String>,
}

/// The session is gone: drop its queued jobs and stop its running job.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct SessionGone {
    pub(crate) session: SessionId,
}

#[derive(Debug, Clone)]
pub(crate) struct WorkerStatus {
    /// Jobs waiting plus the running one.
    pub(crate) queue: usize,
    pub(crate) device: String,
    pub(crate) loaded_models: Vec<String>,
}

#[derive(Message, Debug)]
#[rtype(result = "WorkerStatus")]
pub(crate) struct GetWorkerStatus;

/// Refuse new jobs, fail the queued ones, let the running job finish within `grace`
/// (then cancel it), and tell the shutdown actor when idle.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct DrainWorker {
    pub(crate) grace: Duration,
}
