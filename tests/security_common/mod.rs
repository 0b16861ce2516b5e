//! Helpers for the access-control tests: plugin-style framing over any byte stream (so the
//! same checks run over plain TCP and TLS), a self-signed certificate made at test time with
//! rcgen, and an independent rustls client that trusts only that certificate. Loopback only;
//! writes only inside the temp dirs it is given.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;

pub const PACKET: usize = 1024;

/// Sends one message: 1024-byte packets, the last one NUL-padded, then an all-zero packet.
pub fn send<S: Write>(s: &mut S, v: &Value) {
    for chunk in v.to_string().as_bytes().chunks(PACKET) {
        let mut p = chunk.to_vec();
        p.resize(PACKET, 0);
        s.write_all(&p).unwrap();
    }
    s.write_all(&[0u8; PACKET]).unwrap();
    s.flush().unwrap();
}

pub fn send_control<S: Write>(s: &mut S, byte: u8) {
    s.write_all(&[byte; PACKET]).unwrap();
    s.flush().unwrap();
}

/// Next message, or None when the connection ended (EOF, reset, TLS close).
pub fn recv<S: Read>(s: &mut S) -> Option<Value> {
    let mut data = Vec::new();
    loop {
        let mut p = vec![0u8; PACKET];
        if s.read_exact(&mut p).is_err() {
            return None;
        }
        if p.iter().all(|b| *b == 0) {
            if data.is_empty() {
                continue;
            }
            while data.last() == Some(&0) {
                data.pop();
            }
            return Some(serde_json::from_slice(&data).expect("reply is JSON"));
        }
        data.extend_from_slice(&p);
    }
}

/// Reads everything until the peer closes (or `limit` passes): the bytes received.
pub fn drain<S: Read>(s: &mut S) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                assert_ne!(e.kind(), ErrorKind::WouldBlock, "peer did not close");
                assert_ne!(e.kind(), ErrorKind::TimedOut, "peer did not close");
                return all;
            }
        }
    }
}

pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM into `dir`.
pub struct TestCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: CertificateDer<'static>,
}

pub fn self_signed(dir: &Path) -> TestCert {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, made.cert.pem()).unwrap();
    std::fs::write(&key_path, made.signing_key.serialize_pem()).unwrap();
    TestCert {
        cert_path,
        key_path,
        der: made.cert.der().clone(),
    }
}

pub type TlsClient = StreamOwned<ClientConnection, TcpStream>;

fn client_config(trusted: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connects with TLS trusting only `trusted`; the handshake runs on first use, or now via
/// `handshake`.
pub fn tls_connect(addr: SocketAddr, trusted: &CertificateDer<'static>, name: &str) -> TlsClient {
    let conn = ClientConnection::new(
        client_config(trusted),
        ServerName::try_from(name.to_string()).unwrap(),
    )
    .unwrap();
    StreamOwned::new(conn, tcp(addr))
}

/// Completes the handshake, returning its error (e.g. an untrusted certificate).
pub fn handshake(c: &mut TlsClient) -> std::io::Result<()> {
    while c.conn.is_handshaking() {
        c.conn.complete_io(&mut c.sock)?;
    }
    Ok(())
}
