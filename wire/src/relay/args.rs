//! Command-line options of the relay, shared by `runai relay` and the standalone
//! `runai-relay` binary, and their check into [`RelaySettings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rustls::pki_types::ServerName;

use super::connection::{RelaySettings, UpstreamTls};
use crate::secret::Secret;

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// The runai server to forward to, HOST:PORT
    #[arg(long, env = "RUNAI_RELAY_SERVER", value_name = "HOST:PORT")]
    pub server: String,
    /// Where the Krita plugin connects (it always uses localhost:50006)
    #[arg(
        long,
        env = "RUNAI_RELAY_LISTEN",
        default_value = "127.0.0.1:50006",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Speak TLS to the server, trusting the server certificate (or its CA) in this PEM file
    #[arg(long, env = "RUNAI_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Name to check the server certificate against [default: the host of --server]
    #[arg(long, value_name = "NAME")]
    pub tls_name: Option<String>,
    /// Token of a server started with --token (prefer the environment variable)
    #[arg(
        long,
        env = "RUNAI_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<Secret>,
    /// Packet size (the plugin's is 1024; must match the server)
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    pub packet_size: usize,
    /// Seconds to wait for the server to accept a connection
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// Largest message accepted from the server (they are relayed whole)
    #[arg(long, default_value_t = 256 * 1024 * 1024, value_name = "BYTES")]
    pub max_message_bytes: usize,
}

impl RelayArgs {
    /// Checks the options and loads the TLS trust file.
    pub fn settings(&self) -> Result<RelaySettings, String> {
        if !(16..=1 << 20).contains(&self.packet_size) {
            return Err(format!(
                "--packet-size {} is out of range (16..=1048576)",
                self.packet_size
            ));
        }
        let host = server_host(&self.server)
            .ok_or_else(|| format!("--server {:?} is not HOST:PORT", self.server))?;
        let tls = match &self.tls_ca {
            None => None,
            Some(ca) => {
                let config = crate::tls::client_config(ca).map_err(|e| e.to_string())?;
                let name = self.tls_name.clone().unwrap_or_else(|| host.to_string());
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| format!("{name:?} is not a valid TLS server name"))?;
                Some(UpstreamTls {
                    connector: tokio_rustls::TlsConnector::from(config),
                    name,
                })
            }
        };
        Ok(RelaySettings {
            server: self.server.clone(),
            tls,
            token: self.token.clone().filter(|t| !t.is_empty()),
            packet_size: self.packet_size,
            connect_timeout: Duration::from_secs(self.connect_timeout.max(1)),
            max_message_bytes: self.max_message_bytes,
        })
    }
}

/// The host part of `HOST:PORT` or `[V6]:PORT`, when a port follows.
fn server_host(server: &str) -> Option<&str> {
    let (host, port) = server.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_host_takes_names_and_addresses() {
        assert_eq!(server_host("gpu.lan:50006"), Some("gpu.lan"));
        assert_eq!(server_host("10.0.0.2:1"), Some("10.0.0.2"));
        assert_eq!(server_host("[::1]:50006"), Some("::1"));
        assert_eq!(server_host("gpu.lan"), None);
        assert_eq!(server_host(":50006"), None);
        assert_eq!(server_host("gpu:notaport"), None);
    }
}
