//! A small blocking RunAI client over `std::net`, framing exactly like the plugin: packets
//! of `packet_size`, only the last one NUL-padded, then an all-zero packet; replies are read
//! one packet at a time, over plain TCP or TLS (rustls). Used by `runai client`; never used
//! by the server.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use serde_json::Value;

use crate::protocol::codec::{control_packet, frame_message};

/// A byte stream the client can talk over (TCP, or TLS over TCP).
trait Transport: Read + Write + Send {}
impl<T: Read + Write + Send> Transport for T {}

pub(crate) struct WireClient {
    stream: Box<dyn Transport>,
    packet_size: usize,
}

impl WireClient {
    pub(crate) fn connect(addr: &str, packet_size: usize, timeout: Duration) -> io::Result<Self> {
        Ok(WireClient {
            stream: Box::new(tcp(addr, timeout)?),
            packet_size: packet_size.max(1),
        })
    }

    /// Connects and negotiates TLS, checking the server certificate against `config`'s
    /// roots for `server_name` (a DNS name or an IP address).
    pub(crate) fn connect_tls(
        addr: &str,
        packet_size: usize,
        timeout: Duration,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> io::Result<Self> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{server_name:?} is not a valid TLS server name"),
            )
        })?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp(addr, timeout)?);
        // Handshake now, so a certificate problem is reported as such, not as a read error.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(WireClient {
            stream: Box::new(tls),
            packet_size: packet_size.max(1),
        })
    }

    /// Sends one JSON message.
    pub(crate) fn send(&mut self, value: &Value) -> io::Result<()> {
        let bytes = frame_message(value.to_string().as_bytes(), self.packet_size);
        for packet in bytes.chunks(self.packet_size) {
            self.stream.write_all(packet)?;
        }
        Ok(())
    }

    /// Sends a control packet (`b'c'` cancel, `b'x'` quit).
    pub(crate) fn send_control(&mut self, byte: u8) -> io::Result<()> {
        self.stream
            .write_all(&control_packet(byte, self.packet_size))
    }

    /// Reads one message; `Ok(None)` when the server closed the connection.
    pub(crate) fn recv(&mut self) -> io::Result<Option<Value>> {
        let mut message = Vec::new();
        let mut packet = vec![0u8; self.packet_size];
        loop {
            match self.stream.read_exact(&mut packet) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
            if packet.iter().all(|b| *b == 0) {
                if message.is_empty() {
                    continue;
                }
                return serde_json::from_slice(&message)
                    .map(Some)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
            let end = packet.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            let start = packet.iter().position(|b| *b != 0).unwrap_or(0);
            message.extend_from_slice(packet.get(start..end).unwrap_or(&[]));
        }
    }
}

fn tcp(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}
