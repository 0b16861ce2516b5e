//! `runai relay` end to end: a plugin-style reader talks to the relay, which reaches a runai
//! server with TLS and a token through a proxy that re-chunks the byte stream at 700-byte or
//! 1-byte boundaries (a tunnel or balancer in between). txt2img, img2img, cancel passed
//! through, the relay's own `auth` reply kept from the plugin, an upstream lost mid-job and an
//! unreachable server: each reaches the plugin as whole, decodable messages. Loopback only.

mod plugin_reader;
mod security_common;
mod server_common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use plugin_reader::PluginReader;
use runai::app::ServerThread;
use runai::net::secret::Secret;
use runai_wire::relay::{serve, RelayArgs};
use serde_json::{json, Value};

const TOKEN: &str = "relay-test-token";

#[derive(Parser)]
struct RelayCli {
    #[command(flatten)]
    relay: RelayArgs,
}

/// A TLS + token server with the fake generator (30 ms a step).
fn start_server(dir: &std::path::Path) -> (ServerThread, security_common::TestCert) {
    let cert = security_common::self_signed(dir);
    let mut config = server_common::test_config();
    config.tls_cert = cert.cert_path.to_string_lossy().into();
    config.tls_key = cert.key_path.to_string_lossy().into();
    config.token = Secret::new(TOKEN);
    let server = server_common::start_with(config, Duration::from_millis(30));
    (server, cert)
}

/// Forwards every connection to `target`, writing what it reads in pieces of `chunk` bytes.
/// `cut()` closes every connection it carries, as a dying tunnel would.
struct Rechunker {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Rechunker {
    fn start(target: SocketAddr, chunk: usize) -> Rechunker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(Mutex::new(Vec::new()));
        let conns = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                for s in [&client, &server] {
                    s.set_nodelay(true).unwrap();
                    conns.lock().unwrap().push(s.try_clone().unwrap());
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(client, server, chunk));
                std::thread::spawn(move || pump(s2, c2, chunk));
            }
        });
        Rechunker { addr, open }
    }

    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, chunk: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for piece in buf[..n].chunks(chunk) {
            if to.write_all(piece).is_err() {
                return;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Starts a relay to `server` on an ephemeral port; returns where the plugin connects.
fn start_relay(server: SocketAddr, ca: Option<&std::path::Path>, token: &str) -> SocketAddr {
    let mut argv = vec![
        "relay".to_string(),
        "--server".into(),
        server.to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--connect-timeout".into(),
        "3".into(),
        "--token".into(),
        token.into(),
    ];
    if let Some(ca) = ca {
        argv.extend(["--tls-ca".into(), ca.to_string_lossy().into()]);
        argv.extend(["--tls-name".into(), "localhost".into()]);
    }
    let args = RelayCli::parse_from(argv).relay;
    let settings = Arc::new(args.settings().expect("relay settings"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = serve(listener, settings).await;
        })
    });
    addr
}

fn plugin(relay: SocketAddr) -> PluginReader {
    let mut r = PluginReader::connect(relay, Some(3000));
    let hello = r.recv().expect("versions message through the relay");
    assert!(hello.get("versions").is_some(), "{hello}");
    r
}

/// Runs one job and returns (progress count, images, final event); fails on any message the
/// plugin could not decode, and on an `auth` event reaching the plugin.
fn run_job(r: &mut PluginReader, req: &Value) -> (usize, Vec<Value>, Value) {
    r.send(req);
    let (mut progress, mut images) = (0, Vec::new());
    loop {
        let m = r.recv().expect("whole message");
        assert_ne!(
            m["event"],
            json!("auth"),
            "the relay's auth reply reached the plugin"
        );
        if m["action"] == json!(4) {
            progress += 1;
        } else if m.get("image").is_some() {
            images.push(m);
        } else if ["done", "error", "cancelled"].contains(&m["event"].as_str().unwrap_or("")) {
            return (progress, images, m);
        }
    }
}

fn img2img(job_id: &str) -> Value {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb([10, 200, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    json!({
        "action": "img2img",
        "job_id": job_id,
        "options": {
            "img2img_prompt": "a fox",
            "img2img_steps": "10",
            "img2img_seed": "7",
            "img2img_width": "64",
            "img2img_height": "64",
            "img2img_strength": "0.5",
            "pixels": base64::engine::general_purpose::STANDARD.encode(&png),
            "pos_x": 3,
            "pos_y": 4,
        }
    })
}

#[test]
fn txt2img_and_img2img_through_relay_tls_token_and_rechunking() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = start_server(dir.path());
    for chunk in [700, 1] {
        let proxy = Rechunker::start(server.local_addr, chunk);
        let relay = start_relay(proxy.addr, Some(&cert.cert_path), TOKEN);
        let mut r = plugin(relay);
        let (progress, images, end) =
            run_job(&mut r, &server_common::txt2img("t1", "fox", 4, 21, 64));
        assert_eq!((progress, images.len()), (4, 1), "chunk {chunk}: {end}");
        assert_eq!(end["event"], json!("done"));
        let img = server_common::decode_png(&images[0]);
        assert_eq!(img.get_pixel(0, 0), &server_common::seed_colour(21));
        let (progress, images, end) = run_job(&mut r, &img2img("i1"));
        assert_eq!(end["event"], json!("done"), "chunk {chunk}: {end}");
        assert_eq!((progress, images.len()), (5, 1));
        assert_eq!(images[0]["pos_x"], json!(3));
        assert_eq!(r.short_recvs, 0);
    }
    server.shutdown();
}

/// A TLS + token server behind a 700-byte re-chunking proxy and a relay, with a 150-step job
/// running for the plugin (its first progress already received).
fn long_job_through_relay(dir: &std::path::Path) -> (ServerThread, Rechunker, PluginReader) {
    let (server, cert) = start_server(dir);
    let proxy = Rechunker::start(server.local_addr, 700);
    let relay = start_relay(proxy.addr, Some(&cert.cert_path), TOKEN);
    let mut r = plugin(relay);
    r.send(&server_common::txt2img("long", "fox", 150, 1, 64));
    r.recv_until(|m| m["action"] == json!(4)).expect("progress");
    (server, proxy, r)
}

#[test]
fn cancel_packets_pass_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _proxy, mut r) = long_job_through_relay(dir.path());
    r.send_control(b'c');
    let end = r
        .recv_until(|m| m["event"] == json!("cancelled") || m["event"] == json!("done"))
        .expect("whole messages");
    assert_eq!(end["event"], json!("cancelled"), "{end}");
    server.shutdown();
}

#[test]
fn a_lost_upstream_gives_the_plugin_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (server, proxy, mut r) = long_job_through_relay(dir.path());
    proxy.cut();
    let err = r
        .recv_until(|m| m["event"] == json!("error"))
        .expect("a decodable error message");
    assert_eq!(err["code"], json!("unavailable"));
    let text = err["message"].as_str().unwrap();
    assert!(
        text.contains("lost the connection to the runai server"),
        "{text}"
    );
    assert!(
        r.recv().is_err(),
        "the relay closes the plugin connection after the error"
    );
    server.shutdown();
}

#[test]
fn an_unreachable_server_or_a_wrong_token_is_reported_to_the_plugin() {
    // Nothing listens on a port we just released.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = start_relay(closed, None, TOKEN);
    let mut r = PluginReader::connect(relay, None);
    let err = r.recv().expect("a decodable error message");
    assert_eq!(err["event"], json!("error"), "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("cannot reach"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = start_server(dir.path());
    let relay = start_relay(server.local_addr, Some(&cert.cert_path), "wrong");
    let mut r = PluginReader::connect(relay, None);
    let refused = r
        .recv_until(|m| m["event"] == json!("error"))
        .expect("decodable messages");
    assert_eq!(refused["code"], json!("unauthorized"), "{refused}");
    server.shutdown();
}
