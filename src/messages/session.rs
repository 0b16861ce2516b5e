//! Messages handled by `SessionActor`: replies about its jobs (already framed, so the
//! session only forwards bytes) and the drain's close request. Never carries client input.

use actix::Message;

/// One framed reply about a job, ready to write.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct JobEvent {
    pub job_id: String,
    /// True for the job's last message (done, error, cancelled).
    pub terminal: bool,
    pub bytes: Vec<u8>,
}

/// Sent during shutdown: say goodbye, flush, close.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub reason: String,
}
