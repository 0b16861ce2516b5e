//! Messages handled by `ShutdownActor`: session counting, quit requests, drain triggers and
//! worker state. Never carries client data.

use std::net::SocketAddr;

use actix::{Message, Recipient};

use crate::messages::listener::{CloseAllSessions, StopAccepting};
use crate::messages::worker::DrainWorker;

/// Gives the shutdown actor what it drains (started after it), as the only messages it
/// sends them: no dependency on the listener or worker actors themselves.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachActors {
    pub stop_accepting: Recipient<StopAccepting>,
    pub close_sessions: Recipient<CloseAllSessions>,
    pub drain_worker: Recipient<DrainWorker>,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionOpened;

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionClosed;

/// A client sent the quit packet.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct QuitRequested {
    pub peer: SocketAddr,
}

/// Start a graceful shutdown (signal, API call). `force` skips the grace period.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct BeginDrain {
    pub reason: String,
    pub exit_code: i32,
    pub force: bool,
}

/// The worker has no running job any more during a drain.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct WorkerIdle;

/// The worker exhausted its restart budget: the process must exit non-zero.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct WorkerGaveUp {
    pub reason: String,
}
