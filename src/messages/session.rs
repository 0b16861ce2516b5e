//! Messages handled by `SessionActor`: typed events about its jobs (each front end turns
//! them into its own bytes) and the drain's close request. Never carries client input.

use actix::Message;

pub(crate) use crate::protocol::error::ErrorCode as ErrorKind;

/// What happened to a job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobUpdate {
    /// The job waits; `position` jobs are ahead of it.
    Queued {
        position: usize,
    },
    /// Denoising step `step` (0-based) of `total` is done.
    Progress {
        step: usize,
        total: usize,
    },
    /// One finished image, PNG-encoded on the worker thread (front ends frame the bytes).
    Image {
        png: Vec<u8>,
        seed: u64,
        nsfw: Option<bool>,
    },
    /// After the last image.
    Done {
        images: usize,
        elapsed_ms: u64,
    },
    Cancelled,
    Failed {
        kind: ErrorKind,
        message: String,
    },
}

/// One event about one of the session's jobs.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct JobEvent {
    pub(crate) job_id: String,
    pub(crate) update: JobUpdate,
}

impl JobEvent {
    /// The job's last event (done, failed, cancelled).
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(
            self.update,
            JobUpdate::Done { .. } | JobUpdate::Cancelled | JobUpdate::Failed { .. }
        )
    }
}

/// Sent during shutdown: say goodbye, flush, close.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct CloseSession {
    pub(crate) reason: String,
}
