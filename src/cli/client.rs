//! `runai client`: a command-line client for smoke tests and health checks (`ping` exits 0
//! only when the server answers). Saves returned PNGs where told; never logs image data.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::wire_client::WireClient;
use crate::net::secret::Secret;
use crate::protocol::codec::QUIT_BYTE;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server address
    #[arg(long, default_value = "127.0.0.1", env = "RUNAI_HOST")]
    pub(crate) host: String,
    /// Server port
    #[arg(long, default_value_t = 50006, env = "RUNAI_PORT")]
    pub(crate) port: u16,
    /// Packet size (must match the server)
    #[arg(long, default_value_t = 1024)]
    pub(crate) packet_size: usize,
    /// Seconds to wait for any reply
    #[arg(long, default_value_t = 600.0)]
    pub(crate) wait: f64,
    #[command(flatten)]
    pub(crate) access: Box<ClientAccess>,
    #[command(subcommand)]
    pub(crate) command: ClientCommand,
}

/// How to get into a server that has a token or TLS (boxed: keeps the command enum small).
#[derive(Debug, Args)]
pub(crate) struct ClientAccess {
    /// Token of a server started with --token (sent as the first message)
    #[arg(
        long,
        env = "RUNAI_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<Secret>,
    /// Speak TLS, trusting the server certificate (or its CA) in this PEM file
    #[arg(long, env = "RUNAI_TLS_CA", value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Name to check the server certificate against [default: --host]
    #[arg(long, value_name = "NAME")]
    pub(crate) tls_name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Health check: prints the pong event, exit 0 on success
    Ping,
    /// Lists the models the server can see
    Models,
    /// Generates from a prompt
    Txt2img(GenArgs),
    /// Generates from an init image (--image)
    Img2img(GenArgs),
    /// Repaints the white part of --mask in --image
    Inpaint(GenArgs),
    /// Sends the quit packet (honoured from loopback only by default)
    Quit,
}

#[derive(Debug, Args)]
pub(crate) struct GenArgs {
    #[arg(long, default_value = "")]
    pub(crate) prompt: String,
    #[arg(long, default_value = "")]
    pub(crate) negative_prompt: String,
    #[arg(long, default_value_t = 20)]
    pub(crate) steps: u32,
    #[arg(long, default_value_t = 7.5)]
    pub(crate) scale: f64,
    /// Seed; -1 for a random one
    #[arg(long, default_value_t = 42, allow_negative_numbers = true)]
    pub(crate) seed: i64,
    #[arg(long, default_value_t = 512)]
    pub(crate) width: u32,
    #[arg(long, default_value_t = 512)]
    pub(crate) height: u32,
    #[arg(long, default_value_t = 1)]
    pub(crate) n_samples: u32,
    #[arg(long, default_value = "euler_a")]
    pub(crate) scheduler: String,
    /// Model (empty: the server's default)
    #[arg(long, default_value = "")]
    pub(crate) model: String,
    /// img2img/inpaint strength
    #[arg(long)]
    pub(crate) strength: Option<f64>,
    /// Init image (PNG) for img2img and inpaint
    #[arg(long)]
    pub(crate) image: Option<PathBuf>,
    /// Mask (PNG, white = repaint) for inpaint
    #[arg(long)]
    pub(crate) mask: Option<PathBuf>,
    /// Output file prefix: images are saved as PREFIX-<n>.png
    #[arg(long, default_value = "runai-out")]
    pub(crate) out: String,
}

fn b64_file(path: &PathBuf) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn generate_request(action: &str, g: &GenArgs) -> anyhow::Result<Value> {
    let mut o = Map::new();
    let mut put = |k: &str, v: Value| {
        o.insert(format!("{action}_{k}"), v);
    };
    put("prompt", json!(g.prompt));
    put("negative_prompt", json!(g.negative_prompt));
    put("steps", json!(g.steps));
    put("scale", json!(g.scale));
    put("seed", json!(g.seed.to_string()));
    put("width", json!(g.width));
    put("height", json!(g.height));
    put("n_samples", json!(g.n_samples));
    put("scheduler", json!(g.scheduler));
    put("model", json!(g.model));
    if let Some(s) = g.strength {
        put("strength", json!(s));
    }
    if action != "txt2img" {
        let Some(image) = &g.image else {
            bail!("{action} needs --image");
        };
        o.insert("pixels".into(), json!(b64_file(image)?));
        let mask = match &g.mask {
            Some(m) => json!(b64_file(m)?),
            None => Value::Null,
        };
        o.insert("mask".into(), mask);
    }
    o.insert("pos_x".into(), json!(0));
    o.insert("pos_y".into(), json!(0));
    Ok(json!({"action": action, "options": Value::Object(o)}))
}

/// Runs the client; returns the process exit code.
pub fn run(args: ClientArgs) -> anyhow::Result<i32> {
    let addr = format!("{}:{}", args.host, args.port);
    let wait = Duration::try_from_secs_f64(args.wait).unwrap_or(Duration::from_secs(600));
    let mut c = match &args.access.tls_ca {
        None => WireClient::connect(&addr, args.packet_size, wait),
        Some(ca) => {
            let config = crate::net::tls::client_config(ca)?;
            let name = args.access.tls_name.as_deref().unwrap_or(&args.host);
            WireClient::connect_tls(&addr, args.packet_size, wait, config, name)
        }
    }
    .with_context(|| format!("connecting to {addr}"))?;
    let hello = c.recv()?.context("server closed the connection")?;
    if hello.get("versions").is_none() {
        bail!("unexpected first message: {hello}");
    }
    if let Some(token) = args.access.token.as_ref().filter(|t| !t.is_empty()) {
        c.send(&json!({"action": "auth", "token": token.expose()}))?;
        let reply = c
            .recv()?
            .context("server closed the connection during auth")?;
        if reply.get("event").and_then(Value::as_str) != Some("auth") {
            eprintln!("error: {reply}");
            return Ok(1);
        }
    }
    let (request, action) = match &args.command {
        ClientCommand::Ping => (json!({"action": "ping"}), "ping"),
        ClientCommand::Models => (json!({"action": "models"}), "models"),
        ClientCommand::Quit => {
            c.send_control(QUIT_BYTE)?;
            println!("quit sent");
            return Ok(0);
        }
        ClientCommand::Txt2img(g) => (generate_request("txt2img", g)?, "txt2img"),
        ClientCommand::Img2img(g) => (generate_request("img2img", g)?, "img2img"),
        ClientCommand::Inpaint(g) => (generate_request("inpaint", g)?, "inpaint"),
    };
    c.send(&request)?;
    let out_prefix = match &args.command {
        ClientCommand::Txt2img(g) | ClientCommand::Img2img(g) | ClientCommand::Inpaint(g) => {
            Some(g.out.clone())
        }
        _ => None,
    };
    let mut saved = 0;
    loop {
        let Some(msg) = c.recv()? else {
            bail!("server closed the connection");
        };
        if let Some(img) = msg.get("image").and_then(Value::as_str) {
            let png = base64::engine::general_purpose::STANDARD.decode(img)?;
            let path = format!(
                "{}-{saved}.png",
                out_prefix.as_deref().unwrap_or("runai-out")
            );
            std::fs::write(&path, png).with_context(|| format!("writing {path}"))?;
            println!(
                "saved {path} (seed {})",
                msg.get("seed").cloned().unwrap_or(Value::Null)
            );
            saved += 1;
            continue;
        }
        if msg.get("action") == Some(&json!(4)) {
            eprintln!(
                "step {} / {}",
                msg.get("step").cloned().unwrap_or(Value::Null),
                msg.get("total").cloned().unwrap_or(Value::Null)
            );
            continue;
        }
        match msg.get("event").and_then(Value::as_str) {
            Some("pong") if action == "ping" => {
                println!("{msg}");
                return Ok(0);
            }
            Some("models") if action == "models" => {
                println!("{msg}");
                return Ok(0);
            }
            Some("done") => {
                println!("{msg}");
                return Ok(0);
            }
            Some("error") => {
                eprintln!("error: {msg}");
                return Ok(1);
            }
            Some("cancelled") | Some("closing") => {
                eprintln!("{msg}");
                return Ok(1);
            }
            _ => println!("{msg}"),
        }
    }
}
