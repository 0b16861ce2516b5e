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
pub(crate) struct AttachActors {
    pub(crate) stop_accepting: Recipient<StopAccepting>,
    pub(crate) close_sessions: Recipient<CloseAllSessions>,
    pub(crate) drain_worker: Recipient<DrainWorker>,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct SessionOpened;

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct SessionClosed;

/// A client sent the quit packet.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct QuitRequested {
    pub(crate) peer: SocketAddr,
}

/// Start a graceful shutdown (signal, API call). `force` skips the grace period.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct BeginDrain {
    pub(crate) reason: String,
    pub(crate) exit_code: i32,
    pub(crate) force: bool,
}

/// The worker has no running job any more during a drain.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct WorkerIdle;

/// The worker exhausted its restart budget: the process must exit non-zero.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct WorkerGaveUp {
    pub(crate) reason: String,
}
