//! Messages handled by `ListenerActor`: new connections, ended sessions, drain steps.

use std::net::SocketAddr;

use actix::Message;
use tokio::net::TcpStream;

use super::SessionId;

/// The accept loop got a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
}

/// A session actor stopped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionEnded {
    pub session: SessionId,
}

/// Drain step 1: close the listening socket.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopAccepting;

/// Drain step 3: tell every session to flush and close.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CloseAllSessions {
    pub reason: String,
}
