//! Shared helpers for the real-model end-to-end tests: a server running the real Stable
//! Diffusion generator (`sd_factory`, CPU f32) behind the real `Registry`, plugin-style
//! requests for every action, fixture images as base64 PNGs, and temporary model roots holding
//! copies of the single-file fixtures in the seed's and AUTOMATIC1111's layouts. Loopback
//! only; never downloads anything; writes only inside temporary folders.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use runai::app::{spawn_server, ServerThread};
use runai::config::{ComputeSpec, Config};
use runai::engine::factory::sd_factory;
use runai::engine::{GenerateError, GenerateJob, Generator, GeneratorFactory, Progress};
use runai::pipeline::params::GeneratedImage;
use runai::registry::Registry;
use serde_json::{json, Map, Value};

use crate::server_common::{test_config, JobReplies};

/// A prompt that makes [`PanickyGenerator`] panic after its last step.
pub const PANIC_PROMPT: &str = "PANIC";

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The `runai` binary, with no `RUNAI_*` variable of the test's environment.
pub fn runai_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runai"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNAI_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Starts the `runai` binary on an ephemeral loopback port over `root`, default model
/// `tiny-sd1`, and returns it with its address (read from its "listening on" log line).
pub fn spawn_runai(root: &Path) -> (Child, SocketAddr) {
    let mut child = runai_command()
        .args(["--host", "127.0.0.1", "--port", "0", "--model", "tiny-sd1"])
        .arg("--model-base-path")
        .arg(root)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runai starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps draining stderr for the child's whole life so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let addr = line
                .split("listening on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next());
            if let (Some(addr), Some(tx)) = (addr, tx.take()) {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("runai logs its address");
    (child, addr.parse().expect("a socket address"))
}

/// The real generator on the CPU, caching up to three models.
pub fn real_factory() -> GeneratorFactory {
    sd_factory(ComputeSpec::default(), 3, 4 << 30)
}

/// The real generator that panics mid-job on [`PANIC_PROMPT`], like a model blowing up.
pub struct PanickyGenerator {
    inner: Box<dyn Generator>,
}

impl Generator for PanickyGenerator {
    fn generate(
        &mut self,
        job: &GenerateJob,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>, GenerateError> {
        if job.params.prompt == PANIC_PROMPT {
            // Panics inside the model call (from the step callback) after the last step's
            // progress went out, like a model blowing up in the VAE.
            let mut wrapped = |step: usize, total: usize| -> bool {
                let go_on = progress.step(step, total);
                if step + 1 >= total {
                    panic!("generator asked to panic after step {step}");
                }
                go_on
            };
            return self.inner.generate(job, &mut wrapped);
        }
        self.inner.generate(job, progress)
    }

    fn loaded_models(&self) -> Vec<String> {
        self.inner.loaded_models()
    }

    fn device(&self) -> String {
        self.inner.device()
    }
}

pub fn panicky_factory() -> GeneratorFactory {
    let real = real_factory();
    Arc::new(move || {
        let inner = real()?;
        Ok(Box::new(PanickyGenerator { inner }) as Box<dyn Generator>)
    })
}

/// Starts a real-model server over `roots` (the first is also the config's model root).
pub fn start_real_with(
    config: Config,
    factory: GeneratorFactory,
    roots: &[PathBuf],
) -> ServerThread {
    spawn_server(config, factory, Box::new(Registry::new(roots))).expect("server starts")
}

/// A real-model server over the fixture models, default model `tiny-sd1`.
pub fn start_real() -> ServerThread {
    start_real_with(test_config(), real_factory(), &[fixtures().join("models")])
}

/// Plugin-style options for action `a`: every number as a string, as connect.py sends them.
pub fn options(a: &str, model: &str, steps: u32, seed: u64, w: u32, h: u32) -> Map<String, Value> {
    let mut o = Map::new();
    let mut put = |k: &str, v: Value| {
        o.insert(format!("{a}_{k}"), v);
    };
    put("prompt", json!("a lighthouse at dusk"));
    put("negative_prompt", json!("blurry"));
    put("steps", json!(steps.to_string()));
    put("scale", json!("7.5"));
    put("seed", json!(seed.to_string()));
    put("width", json!(w.to_string()));
    put("height", json!(h.to_string()));
    put("n_samples", json!("1"));
    put("scheduler", json!("euler_a"));
    put("model", json!(model));
    put("n_iter", json!("1"));
    put("model_path", json!(""));
    o.insert("do_nsfw_filter".into(), json!("false"));
    o.insert("model_base_path".into(), json!("/elsewhere/ignored"));
    o.insert("pos_x".into(), json!(0));
    o.insert("pos_y".into(), json!(0));
    o
}

pub fn request(action: &str, job_id: &str, options: Map<String, Value>) -> Value {
    json!({"action": action, "job_id": job_id, "options": options})
}

/// A txt2img request on `model` (empty = the server's default).
pub fn txt2img(job_id: &str, model: &str, steps: u32, seed: u64, w: u32, h: u32) -> Value {
    request(
        "txt2img",
        job_id,
        options("txt2img", model, steps, seed, w, h),
    )
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn fixture_png(name: &str) -> String {
    b64(&std::fs::read(fixtures().join("inputs").join(name)).expect("fixture image"))
}

/// The init image of the golden cases (64x64 RGB).
pub fn init_png() -> String {
    fixture_png("init_64x64.png")
}

/// The mask of the golden cases (64x64, white = repaint).
pub fn mask_png() -> String {
    fixture_png("mask_64x64.png")
}

/// Encodes any image as a PNG.
pub fn png_of(img: &image::DynamicImage) -> String {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .expect("encode png");
    b64(&bytes)
}

/// The base64 PNG of image `i` of a finished job.
pub fn image_b64(r: &JobReplies, i: usize) -> String {
    r.images[i]["image"]
        .as_str()
        .expect("image field")
        .to_string()
}

/// Asserts a job finished normally with `n` images and per-step progress `0..total`.
pub fn assert_done(r: &JobReplies, n: usize, total: u64) {
    assert_eq!(r.end_event(), "done", "job did not finish: {:?}", r.end);
    assert_eq!(r.images.len(), n);
    let expected: Vec<(u64, u64)> = (0..total).map(|s| (s, total)).collect();
    assert_eq!(r.progress, expected, "progress must be 0..{total}");
    assert_eq!(r.end.as_ref().unwrap()["images"], json!(n));
}

/// A temporary model root holding copies of the single-file fixtures (each with its yaml):
/// the seed's layout (`v1/`, `v2/`) and AUTOMATIC1111's (`models/Stable-diffusion/`).
pub struct SingleFileRoot {
    pub dir: tempfile::TempDir,
}

impl SingleFileRoot {
    pub fn new() -> SingleFileRoot {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = fixtures().join("single_file");
        for (sub, stem, exts) in [
            ("v1", "tiny-sd1", &["safetensors", "ckpt"][..]),
            ("v2", "tiny-sd2", &["safetensors", "ckpt"][..]),
            ("models/Stable-diffusion", "tiny-sd1", &["ckpt"][..]),
        ] {
            let to = dir.path().join(sub);
            std::fs::create_dir_all(&to).unwrap();
            for ext in exts.iter().chain(&["yaml"]) {
                let name = format!("{stem}.{ext}");
                std::fs::copy(src.join(&name), to.join(&name)).unwrap();
            }
        }
        SingleFileRoot { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Decodes a base64 PNG with its declared size and colour type.
pub fn decode_b64_png(b: &str) -> image::DynamicImage {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b)
        .expect("standard base64");
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).expect("png")
}
