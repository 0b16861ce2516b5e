//! What a session talks over: an accepted TCP stream, either used as is or wrapped in TLS
//! after a bounded handshake. The session splits it into a read half and a write half; the
//! packet protocol on top is the same for both. Never parses protocol bytes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// An accepted connection, before the session starts.
pub(crate) enum Incoming {
    Plain(TcpStream),
    /// TLS still to be negotiated; the session does it so the handshake counts against the
    /// connection limit and is bounded by its timeout.
    Tls {
        stream: TcpStream,
        acceptor: TlsAcceptor,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("TLS handshake with {peer} failed: {source}")]
    Failed {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {peer} did not finish within {limit:?}")]
    TimedOut { peer: SocketAddr, limit: Duration },
}

/// Runs the server side of a TLS handshake, giving up after `limit`.
pub(crate) async fn tls_handshake(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    peer: SocketAddr,
    limit: Duration,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(source)) => Err(HandshakeError::Failed { peer, source }),
        Err(_) => Err(HandshakeError::TimedOut { peer, limit }),
    }
}

/// A read half that may ask the kernel to acknowledge at once before each read.
pub(crate) trait QuickAck {
    fn quick_ack(&self) {}
}

/// Clients (the plugin included) write a message as a data packet followed by a separate
/// EOM packet; with Nagle on their side the EOM waits for our ACK, which delayed ACK holds
/// back ~40 ms. Acking at once removes that stall. Linux resets the flag, so set it per read.
impl QuickAck for OwnedReadHalf {
    #[cfg(target_os = "linux")]
    fn quick_ack(&self) {
        let stream: &TcpStream = self.as_ref();
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
}

/// The TLS read half hides its socket; TLS clients pay the delayed-ACK stall, if any.
impl QuickAck for tokio::io::ReadHalf<TlsStream<TcpStream>> {}
