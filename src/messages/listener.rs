//! Messages handled by `ListenerActor`: new connections, ended sessions, drain steps.

use std::net::SocketAddr;

use actix::Message;
use tokio::net::TcpStream;

use super::SessionId;

/// The accept loop got a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
}

/// A session actor stopped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct SessionEnded {
    pub(crate) session: SessionId,
}

/// Drain step 1: close the listening socket.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct StopAccepting;

/// Drain step 3: tell every session to flush and close.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct CloseAllSessions {
    pub(crate) reason: String,
}
