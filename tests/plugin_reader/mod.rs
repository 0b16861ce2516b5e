//! A client that reads byte for byte like the Krita plugin's `connect.py`: `recv(1024)`, each
//! chunk appended, a message ends only when one `recv` returns exactly 1024 zero bytes,
//! trailing NULs stripped, then `json.loads`. Any misaligned delivery shows up as a message
//! the plugin could not decode. Optional small receive buffer and slow reads. Loopback only.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

pub const PACKET: usize = 1024;

pub struct PluginReader {
    stream: TcpStream,
    pending: Vec<u8>,
    /// `recv` calls that returned less than a packet.
    pub short_recvs: usize,
    /// Pause after every `recv` (a busy Krita).
    pub delay: Duration,
}

impl PluginReader {
    /// Connects with the receive buffer set before the connection, as a socket option on the
    /// plugin's socket would be.
    pub fn connect(addr: SocketAddr, rcvbuf: Option<usize>) -> PluginReader {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(n) = rcvbuf {
            s.set_recv_buffer_size(n).unwrap();
        }
        s.connect(&addr.into()).expect("connect");
        let stream: TcpStream = s.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        PluginReader {
            stream,
            pending: Vec::new(),
            short_recvs: 0,
            delay: Duration::ZERO,
        }
    }

    /// Sends a message the way the plugin frames it.
    pub fn send(&mut self, v: &Value) {
        for chunk in v.to_string().as_bytes().chunks(PACKET) {
            let mut p = chunk.to_vec();
            p.resize(PACKET, 0);
            self.stream.write_all(&p).unwrap();
        }
        self.stream.write_all(&[0u8; PACKET]).unwrap();
    }

    pub fn send_control(&mut self, byte: u8) {
        self.stream.write_all(&[byte; PACKET]).unwrap();
    }

    /// The next message as the plugin would assemble it; `Err` where the plugin's receive
    /// thread would have died (undecodable JSON) or the connection ended.
    pub fn recv(&mut self) -> Result<Value, String> {
        loop {
            let mut chunk = [0u8; PACKET];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("recv failed: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            if n < PACKET {
                self.short_recvs += 1;
            }
            if n == PACKET && chunk.iter().all(|b| *b == 0) {
                break;
            }
            self.pending.extend_from_slice(&chunk[..n]);
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
        }
        let mut data = std::mem::take(&mut self.pending);
        while data.last() == Some(&0) {
            data.pop();
        }
        serde_json::from_slice(&data).map_err(|e| {
            format!(
                "the plugin could not decode a {}-byte message: {e}",
                data.len()
            )
        })
    }

    /// Reads until a message matches `pred`.
    pub fn recv_until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Result<Value, String> {
        loop {
            let m = self.recv()?;
            if pred(&m) {
                return Ok(m);
            }
        }
    }
}
