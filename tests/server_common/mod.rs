//! Shared helpers for the whole-server tests: a fake generator (real 8-bit RGB images, one
//! colour per seed or seeded noise, per-step progress with a small sleep, a panic on a magic
//! prompt), a server started in-process on 127.0.0.1:0, and a blocking client that frames exactly like the plugin's connect.py.
//! Loopback only; never downloads anything.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use image::{Rgb, RgbImage};
use runai::app::{spawn_server, ServerThread};
use runai::config::Config;
use runai::engine::{GenerateError, GenerateJob, Generator, GeneratorFactory, Progress};
use runai::pipeline::params::{GeneratedImage, Task};
use runai::registry::Registry;
use serde_json::{json, Value};

pub const PACKET: usize = 1024;
/// A prompt that makes the fake generator panic.
pub const PANIC_PROMPT: &str = "PANIC";

/// Colour the fake paints for a seed, so a client can check it got its own image.
pub fn seed_colour(seed: u64) -> Rgb<u8> {
    Rgb([(seed % 251) as u8, (seed / 251 % 251) as u8, 77])
}

pub struct FakeGenerator {
    step_delay: Duration,
    /// Paint seeded noise (incompressible, ~1 MB of base64 at 512x512) instead of a colour.
    noise: bool,
}

/// Seeded noise: a 512x512 PNG of it is ~790 KB, like a real image reply.
pub fn noise_image(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut img = RgbImage::new(w, h);
    for px in img.pixels_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        px.0 = [x as u8, (x >> 8) as u8, (x >> 16) as u8];
    }
    img
}

impl Generator for FakeGenerator {
    fn generate(
        &mut self,
        job: &GenerateJob,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>, GenerateError> {
        let p = &job.params;
        let total = match &p.task {
            Task::Txt2Img => p.steps,
            Task::Img2Img { strength, .. } | Task::Inpaint { strength, .. } => {
                ((p.steps as f64 * strength) as usize).max(1)
            }
        };
        for step in 0..total {
            std::thread::sleep(self.step_delay);
            if !progress.step(step, total) {
                return Err(GenerateError::Cancelled);
            }
        }
        // Panics mid-job, after its progress, like a model blowing up in the VAE.
        if p.prompt == PANIC_PROMPT {
            panic!("fake generator asked to panic");
        }
        let (w, h) = (p.width.unwrap_or(64), p.height.unwrap_or(64));
        Ok((0..p.n_samples as u64)
            .map(|i| {
                let seed = p.seed.wrapping_add(i);
                let image = if self.noise {
                    noise_image(w, h, seed)
                } else {
                    RgbImage::from_pixel(w, h, seed_colour(seed))
                };
                GeneratedImage {
                    image,
                    seed,
                    nsfw: None,
                }
            })
            .collect())
    }

    fn loaded_models(&self) -> Vec<String> {
        vec!["fake".to_string()]
    }

    fn device(&self) -> String {
        "fake".to_string()
    }
}

pub fn fake_factory(step_delay: Duration) -> GeneratorFactory {
    Arc::new(move || {
        let noise = false;
        Ok(Box::new(FakeGenerator { step_delay, noise }) as Box<dyn Generator>)
    })
}

/// The fake generator painting noise, without step delays.
pub fn noise_factory() -> GeneratorFactory {
    Arc::new(|| {
        let (step_delay, noise) = (Duration::ZERO, true);
        Ok(Box::new(FakeGenerator { step_delay, noise }) as Box<dyn Generator>)
    })
}

pub fn fixtures_models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

/// A config for tests: ephemeral loopback port, fixture model root, default model.
pub fn test_config() -> Config {
    Config {
        host: "127.0.0.1".into(),
        port: 0,
        model_base_path: vec![fixtures_models().to_string_lossy().to_string()],
        default_model: "tiny-sd1".into(),
        ..Config::default()
    }
}

pub fn start_with(config: Config, step_delay: Duration) -> ServerThread {
    let roots = config.model_roots();
    spawn_server(
        config,
        fake_factory(step_delay),
        Box::new(Registry::new(&roots)),
    )
    .expect("server starts")
}

pub fn start(step_delay: Duration) -> ServerThread {
    start_with(test_config(), step_delay)
}

/// Waits for the server thread to exit, with a deadline.
pub fn join_within(server: ServerThread, limit: Duration) -> i32 {
    let t0 = Instant::now();
    while !server.is_finished() {
        assert!(t0.elapsed() < limit, "server did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.join().expect("server exit code")
}

/// A blocking client that frames like the plugin: JSON cut into 1024-byte packets, only
/// the last one NUL-padded, then 1024 zero bytes; replies read one packet at a time.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    /// Connects and checks the versions message.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw(addr);
        let hello = c.recv().expect("versions message");
        let v = &hello["versions"];
        assert_eq!(v["latest_ksd_version"], json!("1.0.0"), "{hello}");
        assert_eq!(v["latest_runai_version"], v["current_runai_version"]);
        c
    }

    pub fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client { stream }
    }

    pub fn send(&mut self, v: &Value) {
        self.send_bytes(v.to_string().as_bytes());
    }

    pub fn send_bytes(&mut self, payload: &[u8]) {
        for chunk in payload.chunks(PACKET) {
            let mut packet = chunk.to_vec();
            packet.resize(PACKET, 0);
            self.stream.write_all(&packet).unwrap();
        }
        self.stream.write_all(&[0u8; PACKET]).unwrap();
    }

    pub fn send_control(&mut self, byte: u8) {
        self.stream.write_all(&[byte; PACKET]).unwrap();
    }

    /// Next message, or None at EOF/reset. Checks the framing: whole packets, only the last
    /// data packet padded, EOM a packet of zeros.
    pub fn recv(&mut self) -> Option<Value> {
        let mut packets: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut packet = vec![0u8; PACKET];
            if self.stream.read_exact(&mut packet).is_err() {
                assert!(packets.is_empty(), "connection ended mid-message");
                return None;
            }
            if packet.iter().all(|b| *b == 0) {
                assert!(!packets.is_empty(), "EOM without data");
                break;
            }
            packets.push(packet);
        }
        let last = packets.len() - 1;
        let mut data = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if i < last {
                assert!(!p.contains(&0), "padding in a packet that is not the last");
            }
            data.extend_from_slice(p);
        }
        while data.last() == Some(&0) {
            data.pop();
        }
        assert!(data.is_ascii(), "reply is not ASCII");
        Some(serde_json::from_slice(&data).expect("reply is JSON"))
    }

    /// Reads until `pred` matches; panics on EOF.
    pub fn recv_until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let m = self.recv().expect("connection closed while waiting");
            if pred(&m) {
                return m;
            }
        }
    }

    /// Reads until `n` jobs were answered `cancelled`; returns their ids, sorted.
    pub fn collect_cancelled(&mut self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        while ids.len() < n {
            let m = self
                .recv()
                .expect("connection closed while waiting for cancels");
            if m["event"] == json!("cancelled") {
                ids.push(m["job_id"].as_str().unwrap_or_default().to_string());
            }
        }
        ids.sort();
        ids
    }

    /// Reads every message of one job until its terminal message.
    pub fn collect_job(&mut self, job_id: &str) -> JobReplies {
        let mut r = JobReplies::default();
        loop {
            let m = self.recv().expect("connection closed during a job");
            if m["job_id"] != json!(job_id) {
                r.others.push(m);
                continue;
            }
            if m["action"] == json!(4) {
                r.progress
                    .push((m["step"].as_u64().unwrap(), m["total"].as_u64().unwrap()));
            } else if m.get("image").is_some() {
                r.images.push(m);
            } else {
                match m["event"].as_str() {
                    Some("queued") => r.queued.push(m),
                    Some("done") | Some("error") | Some("cancelled") => {
                        r.end = Some(m);
                        return r;
                    }
                    _ => r.others.push(m),
                }
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct JobReplies {
    pub progress: Vec<(u64, u64)>,
    pub images: Vec<Value>,
    pub queued: Vec<Value>,
    pub end: Option<Value>,
    pub others: Vec<Value>,
}

impl JobReplies {
    pub fn end_event(&self) -> &str {
        self.end
            .as_ref()
            .and_then(|e| e["event"].as_str())
            .unwrap_or("")
    }
}

/// A plugin-style txt2img request (every key of the tab, numbers as strings).
pub fn txt2img(job_id: &str, prompt: &str, steps: u32, seed: u64, size: u32) -> Value {
    json!({
        "action": "txt2img",
        "job_id": job_id,
        "options": {
            "txt2img_prompt": prompt,
            "txt2img_negative_prompt": "",
            "txt2img_steps": steps.to_string(),
            "txt2img_scale": "7.5",
            "txt2img_seed": seed.to_string(),
            "txt2img_width": size.to_string(),
            "txt2img_height": size.to_string(),
            "txt2img_n_samples": "1",
            "txt2img_scheduler": "euler_a",
            "txt2img_model": "",
            "do_nsfw_filter": "false",
            "pos_x": 0,
            "pos_y": 0,
        }
    })
}

/// The model names of a `models` reply.
pub fn model_names(reply: &Value) -> Vec<&str> {
    reply["models"]
        .as_array()
        .map(|list| list.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default()
}

/// Decodes an image message's PNG and checks it is 8-bit RGB.
pub fn decode_png(msg: &Value) -> RgbImage {
    let b64 = msg["image"].as_str().expect("image field");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("standard base64");
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).expect("png");
    assert_eq!(img.color(), image::ColorType::Rgb8, "PNG must be 8-bit RGB");
    img.to_rgb8()
}
