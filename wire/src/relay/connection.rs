//! One plugin connection through the relay: connect upstream (and authenticate), then pump
//! both directions until either side ends. Upstream messages reach the plugin only whole:
//! they are gathered packet by packet up to their end-of-message packet and written with the
//! aligned writer, so a connection lost mid-message never leaves half a message in the
//! plugin's buffer ahead of the relay's own error message.

use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::upstream::{self, UpRead, UpWrite};
use crate::aligned::{AlignedWriter, PacketWrite};
use crate::framing::{frame_message, is_end_of_message};
use crate::secret::Secret;

/// A plugin that stops reading for this long is dropped.
const PLUGIN_WRITE_LIMIT: Duration = Duration::from_secs(60);

/// Checked relay options, shared by every connection.
pub struct RelaySettings {
    pub server: String,
    pub tls: Option<UpstreamTls>,
    pub token: Option<Secret>,
    pub packet_size: usize,
    pub connect_timeout: Duration,
    pub max_message_bytes: usize,
}

pub struct UpstreamTls {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

/// How the upstream direction ended.
enum Down {
    /// The plugin went away (a write to it failed or timed out).
    PluginGone(String),
    /// The server closed or failed; the plugin is still there and should be told.
    ServerLost(String),
}

/// Relays one plugin connection; returns why it ended, for the log.
pub(super) async fn relay_one(plugin: TcpStream, s: &RelaySettings) -> String {
    let _ = plugin.set_nodelay(true);
    let (plugin_rd, plugin_wr) = plugin.into_split();
    let mut to_plugin = AlignedWriter::new(plugin_wr);
    let (up_rd, mut up_wr) = match upstream::connect(s).await {
        Ok(halves) => halves,
        Err(e) => {
            let why = format!("cannot reach the runai server at {}: {e}", s.server);
            tell_plugin(&mut to_plugin, s, &why).await;
            return why;
        }
    };
    if let Some(token) = &s.token {
        let auth = serde_json::json!({"action": "auth", "token": token.expose()});
        let framed = frame_message(auth.to_string().as_bytes(), s.packet_size);
        if let Err(e) = up_wr.write_all(&framed).await {
            let why = format!(
                "lost the runai server at {} while authenticating: {e}",
                s.server
            );
            tell_plugin(&mut to_plugin, s, &why).await;
            return why;
        }
    }
    let outcome = tokio::select! {
        down = downstream(up_rd, &mut to_plugin, s) => Some(down),
        up = upstream_pump(plugin_rd, up_wr, s.packet_size) => {
            log::debug!("plugin side ended: {up}");
            None
        }
    };
    match outcome {
        None => "the plugin disconnected".to_string(),
        Some(Down::PluginGone(why)) => why,
        Some(Down::ServerLost(why)) => {
            let why = format!(
                "lost the connection to the runai server at {}: {why}",
                s.server
            );
            tell_plugin(&mut to_plugin, s, &why).await;
            why
        }
    }
}

/// Server to plugin, message by message.
async fn downstream(
    mut up: UpRead,
    to_plugin: &mut AlignedWriter<tokio::net::tcp::OwnedWriteHalf>,
    s: &RelaySettings,
) -> Down {
    let ps = s.packet_size;
    let mut packet = vec![0u8; ps];
    let mut message: Vec<u8> = Vec::new();
    let mut expect_auth_reply = s.token.is_some();
    loop {
        if let Err(e) = up.read_exact(&mut packet).await {
            return Down::ServerLost(if message.is_empty() {
                closed_reason(&e)
            } else {
                format!("{} in the middle of a message", closed_reason(&e))
            });
        }
        message.extend_from_slice(&packet);
        if message.len() > s.max_message_bytes {
            return Down::ServerLost(format!(
                "a message from the server exceeds {} bytes",
                s.max_message_bytes
            ));
        }
        if !is_end_of_message(&packet) {
            continue;
        }
        if message.len() == ps {
            // An end-of-message packet with nothing before it carries nothing.
            message.clear();
            continue;
        }
        if expect_auth_reply && is_auth_reply(&message) {
            // Our own `auth` answer: the plugin never asked for it.
            expect_auth_reply = false;
            message.clear();
            continue;
        }
        let written =
            tokio::time::timeout(PLUGIN_WRITE_LIMIT, to_plugin.write_packets(&message, ps));
        match written.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Down::PluginGone(format!("writing to the plugin failed: {e}")),
            Err(_) => return Down::PluginGone("the plugin stopped reading".into()),
        }
        message.clear();
    }
}

fn closed_reason(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "the server closed the connection".into()
    } else {
        e.to_string()
    }
}

/// Whether a whole framed message is the server's `{"event": "auth", "ok": true}`.
fn is_auth_reply(framed: &[u8]) -> bool {
    if framed.len() > 8 * 1024 {
        return false;
    }
    let text: Vec<u8> = framed.iter().copied().filter(|b| *b != 0).collect();
    serde_json::from_slice::<serde_json::Value>(&text)
        .map(|v| v["event"] == "auth" && v["ok"] == true)
        .unwrap_or(false)
}

/// Plugin to server, packet by packet (control packets included), until the plugin closes.
async fn upstream_pump(mut plugin: OwnedReadHalf, mut up: UpWrite, ps: usize) -> String {
    let mut packet = vec![0u8; ps];
    loop {
        if let Err(e) = plugin.read_exact(&mut packet).await {
            let _ = up.shutdown().await;
            return closed_reason(&e);
        }
        if let Err(e) = up.write_all(&packet).await {
            return format!("writing to the server failed: {e}");
        }
    }
}

/// Sends the plugin one well-framed Part 2 error (a legacy reader skips it whole and logs it)
/// and closes the connection, so the plugin reconnects.
async fn tell_plugin(
    to_plugin: &mut AlignedWriter<tokio::net::tcp::OwnedWriteHalf>,
    s: &RelaySettings,
    why: &str,
) {
    log::warn!("{why}");
    let text = format!("runai relay: {why}; the plugin reconnects by itself, try again");
    let msg = serde_json::json!({"event": "error", "code": "unavailable", "message": ascii(&text)});
    let framed = frame_message(msg.to_string().as_bytes(), s.packet_size);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        to_plugin.write_packets(&framed, s.packet_size).await?;
        to_plugin.finish().await
    })
    .await;
}

/// The plugin's reader expects ASCII; error texts from the OS may not be.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_auth_success_is_swallowed() {
        let ok = frame_message(br#"{"event": "auth", "ok": true}"#, 64);
        assert!(is_auth_reply(&ok));
        let versions = frame_message(br#"{"versions": {}}"#, 64);
        assert!(!is_auth_reply(&versions));
        let refused = frame_message(br#"{"event": "error", "code": "unauthorized"}"#, 64);
        assert!(!is_auth_reply(&refused));
    }

    #[test]
    fn messages_to_the_plugin_are_ascii() {
        assert_eq!(ascii("caf\u{e9} ok"), "caf? ok");
    }
}
