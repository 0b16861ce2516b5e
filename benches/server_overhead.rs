//! Criterion bench of the server's own per-request cost: a real server (all actors, loopback
//! TCP) with a fake generator that returns a 64x64 image at once, and a client that sends a
//! plugin-style 64x64 txt2img and waits for its `done` event. The round trip includes parse,
//! validation, queueing, the worker-thread hop, PNG + base64, framing and both socket paths,
//! plus the client's own framing: an upper bound of the server's work (issue #6: <= 1 ms).
//! Loopback only; never downloads anything.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use image::{Rgb, RgbImage};
use runai::app::spawn_server;
use runai::config::Config;
use runai::engine::{GenerateError, GenerateJob, Generator, GeneratorFactory, Progress};
use runai::pipeline::params::GeneratedImage;
use runai::protocol::assembler::{Assembler, Frame};
use runai::protocol::codec::frame_message;
use runai::protocol::DEFAULT_PACKET_SIZE;
use runai::registry::Registry;
use serde_json::{json, Value};

/// Paints the requested size in one colour after reporting every step; no model, no sleep.
struct InstantGenerator;

impl Generator for InstantGenerator {
    fn generate(
        &mut self,
        job: &GenerateJob,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>, GenerateError> {
        let p = &job.params;
        for step in 0..p.steps {
            if !progress.step(step, p.steps) {
                return Err(GenerateError::Cancelled);
            }
        }
        let (w, h) = (p.width.unwrap_or(64), p.height.unwrap_or(64));
        Ok((0..p.n_samples as u64)
            .map(|i| GeneratedImage {
                image: RgbImage::from_pixel(w, h, Rgb([200, 80, 20])),
                seed: p.seed.wrapping_add(i),
                nsfw: None,
            })
            .collect())
    }

    fn loaded_models(&self) -> Vec<String> {
        vec!["instant".into()]
    }

    fn device(&self) -> String {
        "fake".into()
    }
}

/// Reads whole messages from the socket with the library's own assembler.
struct Conn {
    stream: TcpStream,
    asm: Assembler,
    frames: Vec<Frame>,
    buf: Vec<u8>,
}

impl Conn {
    fn recv(&mut self) -> Value {
        loop {
            if !self.frames.is_empty() {
                if let Frame::Message(m) = self.frames.remove(0) {
                    return serde_json::from_slice(&m).expect("reply is JSON");
                }
                continue;
            }
            let n = self.stream.read(&mut self.buf).expect("read");
            assert!(n > 0, "server closed the connection");
            self.asm
                .push(&self.buf[..n], &mut self.frames)
                .expect("assembles");
        }
    }
}

fn round_trip(c: &mut Criterion) {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let config = Config {
        host: "127.0.0.1".into(),
        port: 0,
        model_base_path: vec![models.to_string_lossy().to_string()],
        default_model: "tiny-sd1".into(),
        ..Config::default()
    };
    let roots = config.model_roots();
    let factory: GeneratorFactory =
        Arc::new(|| Ok(Box::new(InstantGenerator) as Box<dyn Generator>));
    let server = spawn_server(config, factory, Box::new(Registry::new(&roots))).expect("starts");
    let stream = TcpStream::connect(server.local_addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut conn = Conn {
        stream,
        asm: Assembler::new(DEFAULT_PACKET_SIZE, 64 * 1024 * 1024),
        frames: Vec::new(),
        buf: vec![0; 64 * 1024],
    };
    let hello = conn.recv();
    assert!(hello.get("versions").is_some(), "{hello}");

    let request = json!({"action": "txt2img", "options": {
        "txt2img_prompt": "a red fox", "txt2img_negative_prompt": "", "txt2img_steps": "1",
        "txt2img_scale": "7.5", "txt2img_seed": "1234", "txt2img_width": 64,
        "txt2img_height": 64, "txt2img_scheduler": "euler_a", "pos_x": 0, "pos_y": 0}});
    let wire = frame_message(request.to_string().as_bytes(), DEFAULT_PACKET_SIZE);

    c.bench_function("txt2img_64_round_trip_fake_generator", |b| {
        b.iter(|| {
            conn.stream.write_all(&wire).expect("send");
            let mut images = 0;
            loop {
                let m = conn.recv();
                if m.get("image").is_some() {
                    images += 1;
                }
                match m.get("event").and_then(Value::as_str) {
                    Some("done") => break,
                    Some("error") => panic!("server refused: {m}"),
                    _ => {}
                }
            }
            assert_eq!(images, 1);
        })
    });
    drop(conn);
    server.shutdown();
    let _ = server.join();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
