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
pub struct SubmitJob {
    pub session: SessionId,
    pub job_id: String,
    /// The task's name (`txt2img`, ...), for messages and logs.
    pub reqtype: &'static str,
    pub job: GenerateJob,
    pub events: Recipient<JobEvent>,
}

/// Cancel a session's jobs (`job_id: None` = all of them); each gets a `cancelled` event.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CancelJobs {
    pub session: SessionId,
    pub job_id: Option<String>,
}

/// The session is gone: drop its queued jobs and stop its running job.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionGone {
    pub session: SessionId,
}

#[derive(Debug, Clone)]
pub struct WorkerStatus {
    /// Jobs waiting plus the running one.
    pub queue: usize,
    pub device: String,
    pub loaded_models: Vec<String>,
}

#[derive(Message, Debug)]
#[rtype(result = "WorkerStatus")]
pub struct GetWorkerStatus;

/// Refuse new jobs, fail the queued ones, let the running job finish within `grace`
/// (then cancel it), and tell the shutdown actor when idle.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct DrainWorker {
    pub grace: Duration,
}
