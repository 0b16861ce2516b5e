//! The relay's connection to the remote runai server: TCP with a connect timeout, then TLS
//! when a trust file was given. Returns boxed halves so plain and TLS look the same.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::connection::RelaySettings;

pub(super) type UpRead = Box<dyn AsyncRead + Send + Unpin>;
pub(super) type UpWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Connects to the server; the error is a sentence for the painter's log.
pub(super) async fn connect(s: &RelaySettings) -> Result<(UpRead, UpWrite), String> {
    let tcp = within(s.connect_timeout, TcpStream::connect(&s.server))
        .await?
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    match &s.tls {
        None => {
            let (r, w) = tcp.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Some(tls) => {
            let stream = within(
                s.connect_timeout,
                tls.connector.connect(tls.name.clone(), tcp),
            )
            .await?
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
            let (r, w) = tokio::io::split(stream);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

async fn within<F: std::future::Future>(limit: Duration, f: F) -> Result<F::Output, String> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| format!("no answer within {} s", limit.as_secs()))
}
