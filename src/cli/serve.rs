//! `runai` (serve): the server flags, each with a `RUNAI_*` variable and a config key, merged
//! over the config file, validated (exit code 2 on a bad value), then the server runs until
//! it drains. Never writes to disk.

use std::path::PathBuf;

use clap::Args;

use crate::app;
use crate::config::Config;
use crate::engine::GeneratorFactory;
use crate::messages::registry::ModelResolver;
use crate::net::secret::Secret;

/// Exit code for invalid flags or configuration values (clap uses 2 as well).
pub const EXIT_BAD_CONFIG: i32 = 2;

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Load settings from this TOML file (keys as in config/default.toml)
    #[arg(long, env = "RUNAI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "RUNAI_HOST")]
    pub host: Option<String>,
    /// TCP port [default: 50006]
    #[arg(long, env = "RUNAI_PORT")]
    pub port: Option<u16>,
    /// Exit when no client connects within the start-up grace, or the last client left
    /// more than the idle time ago
    #[arg(long, env = "RUNAI_TIMEOUT")]
    pub timeout: bool,
    /// Wire packet size in bytes [default: 1024]
    #[arg(long, env = "RUNAI_PACKET_SIZE")]
    pub packet_size: Option<usize>,
    /// Model root; repeat (or separate with ':') for more [default: ~/stablediffusion]
    #[arg(
        long,
        env = "RUNAI_MODEL_BASE_PATH",
        value_delimiter = ':',
        value_name = "DIR"
    )]
    pub model_base_path: Vec<String>,
    /// Default model, used when a request names none (folder under a model root)
    #[arg(long = "model", env = "RUNAI_MODEL", value_name = "MODEL")]
    pub default_model: Option<String>,
    /// Maximum simultaneous clients; extra connections are refused [default: 16]
    #[arg(long, env = "RUNAI_MAX_CLIENT_CONNECTIONS")]
    pub max_client_connections: Option<usize>,
    /// Jobs waiting for the GPU (all clients); a full queue answers busy [default: 32]
    #[arg(long, env = "RUNAI_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// Jobs one client may have queued and running at once; more answer busy [default: 4]
    #[arg(long, env = "RUNAI_MAX_JOBS_PER_CLIENT")]
    pub max_jobs_per_client: Option<usize>,
    /// Largest request message in bytes [default: 67108864]
    #[arg(long, env = "RUNAI_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// With --timeout: seconds to wait for the first client [default: 10]
    #[arg(long, env = "RUNAI_STARTUP_GRACE", value_name = "SECS")]
    pub startup_grace: Option<f64>,
    /// With --timeout: seconds after the last client left before exiting [default: 3]
    #[arg(long, env = "RUNAI_IDLE", value_name = "SECS")]
    pub idle: Option<f64>,
    /// On SIGINT/SIGTERM: seconds the running job may finish before it is cancelled [default: 30]
    #[arg(long, env = "RUNAI_DRAIN_GRACE", value_name = "SECS")]
    pub drain_grace: Option<f64>,
    /// Drop a client that stalls mid-message for this many seconds [default: 60]
    #[arg(long, env = "RUNAI_READ_TIMEOUT", value_name = "SECS")]
    pub read_timeout: Option<f64>,
    /// Drop a client that does not read a packet for this many seconds [default: 60]
    #[arg(long, env = "RUNAI_WRITE_TIMEOUT", value_name = "SECS")]
    pub write_timeout: Option<f64>,
    /// Close a client with no job and no message for this many seconds; 0 = never [default: 300]
    #[arg(long, env = "RUNAI_IDLE_TIMEOUT", value_name = "SECS")]
    pub idle_timeout: Option<f64>,
    /// Reply bytes buffered for a slow client before it is dropped [default: 268435456]
    #[arg(long, env = "RUNAI_MAX_OUTGOING_BYTES")]
    pub max_outgoing_bytes: Option<usize>,
    /// Honour the quit packet from non-loopback clients
    #[arg(long, env = "RUNAI_ALLOW_REMOTE_QUIT")]
    pub allow_remote_quit: bool,
    /// Require this token as each client's first message, {"action": "auth", "token": ...}
    /// (prefer the environment variable: flags show in the process list)
    #[arg(
        long,
        alias = "auth-token",
        env = "RUNAI_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<Secret>,
    /// Only these peers may connect (CIDRs or addresses, comma-separated, e.g.
    /// 192.168.1.0/24,::1); others are closed before a byte is exchanged [default: anyone]
    #[arg(
        long,
        env = "RUNAI_ALLOW",
        value_delimiter = ',',
        value_name = "CIDR,..."
    )]
    pub allow: Vec<String>,
    /// Serve TLS with this PEM certificate chain (needs --tls-key)
    #[arg(long, env = "RUNAI_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "RUNAI_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Most denoising steps a request may ask for [default: 150]
    #[arg(long, env = "RUNAI_MAX_STEPS")]
    pub max_steps: Option<usize>,
    /// Largest output width x height in pixels [default: 4194304 = 2048x2048]
    #[arg(long, env = "RUNAI_MAX_PIXELS")]
    pub max_pixels: Option<u64>,
    /// Most images per request [default: 8]
    #[arg(long, env = "RUNAI_MAX_SAMPLES")]
    pub max_samples: Option<usize>,
    /// Largest input image (pixels/mask) in pixels, checked before decoding [default: 16777216]
    #[arg(long, env = "RUNAI_MAX_INPUT_PIXELS")]
    pub max_input_pixels: Option<u64>,
    /// Longest prompt or negative prompt in characters [default: 20000]
    #[arg(long, env = "RUNAI_MAX_PROMPT_CHARS")]
    pub max_prompt_chars: Option<usize>,
    /// Worker or model-registry crashes tolerated within the restart window before giving up
    /// [default: 5]
    #[arg(long, env = "RUNAI_MAX_RESTARTS")]
    pub max_restarts: Option<u32>,
    /// Restart window in seconds [default: 600]
    #[arg(long, env = "RUNAI_RESTART_WINDOW", value_name = "SECS")]
    pub restart_window: Option<f64>,
    // -- Continuous batching (one block: --max-batch, --max-batch-mb) --
    /// Jobs of any users sharing one denoising step; 1 = one job at a time [default: 4]
    #[arg(long, env = "RUNAI_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Estimated activation memory one batched step may use, in MiB [default: 8192]
    #[arg(long, env = "RUNAI_MAX_BATCH_MB", value_name = "MIB")]
    pub max_batch_mb: Option<u64>,
    /// Where models run: cpu, cuda or cuda:N (CUDA builds only) [default: cpu]
    #[arg(long, env = "RUNAI_DEVICE")]
    pub device: Option<String>,
    /// Weight precision: auto (f32 on CPU, f16 on CUDA), f32, f16, bf16 [default: auto]
    #[arg(long, env = "RUNAI_DTYPE")]
    pub dtype: Option<String>,
    /// Models kept loaded at once [default: 2]
    #[arg(long, env = "RUNAI_MAX_LOADED_MODELS")]
    pub max_loaded_models: Option<usize>,
    /// Memory budget of loaded models in MiB [default: 16384]
    #[arg(long, env = "RUNAI_MODEL_CACHE_MB")]
    pub model_cache_mb: Option<u64>,
    /// CompVis safety checker: off, black, blur or report [default: off]
    #[arg(long, env = "RUNAI_SAFETY_CHECKER")]
    pub safety_checker: Option<String>,
    /// Safety checker folder [default: CompVis/stable-diffusion-safety-checker under a model root]
    #[arg(long, env = "RUNAI_SAFETY_CHECKER_PATH", value_name = "DIR")]
    pub safety_checker_path: Option<String>,
}

impl ServeArgs {
    /// Config file (or defaults), then these flags and variables on top, validated.
    pub fn to_config(&self) -> Result<Config, crate::config::ConfigError> {
        let mut c = Config::load(self.config.as_deref())?;
        macro_rules! set {
            ($field:ident, $value:expr) => {
                if let Some(v) = $value.clone() {
                    c.$field = v;
                }
            };
        }
        set!(host, self.host);
        set!(port, self.port);
        if self.timeout {
            c.timeout = true;
        }
        set!(packet_size, self.packet_size);
        if !self.model_base_path.is_empty() {
            c.model_base_path = self.model_base_path.clone();
        }
        set!(default_model, self.default_model);
        set!(max_client_connections, self.max_client_connections);
        set!(queue_depth, self.queue_depth);
        set!(max_jobs_per_client, self.max_jobs_per_client);
        set!(max_message_bytes, self.max_message_bytes);
        set!(startup_grace_secs, self.startup_grace);
        set!(idle_secs, self.idle);
        set!(drain_grace_secs, self.drain_grace);
        set!(read_timeout_secs, self.read_timeout);
        set!(write_timeout_secs, self.write_timeout);
        set!(idle_timeout_secs, self.idle_timeout);
        set!(max_outgoing_bytes, self.max_outgoing_bytes);
        if self.allow_remote_quit {
            c.allow_remote_quit = true;
        }
        set!(token, self.token);
        if !self.allow.is_empty() {
            c.allow = self.allow.clone();
        }
        set!(tls_cert, self.tls_cert);
        set!(tls_key, self.tls_key);
        set!(max_steps, self.max_steps);
        set!(max_pixels, self.max_pixels);
        set!(max_samples, self.max_samples);
        set!(max_input_pixels, self.max_input_pixels);
        set!(max_prompt_chars, self.max_prompt_chars);
        set!(max_restarts, self.max_restarts);
        set!(restart_window_secs, self.restart_window);
        set!(max_batch, self.max_batch);
        set!(max_batch_mb, self.max_batch_mb);
        set!(device, self.device);
        set!(dtype, self.dtype);
        set!(max_loaded_models, self.max_loaded_models);
        set!(model_cache_mb, self.model_cache_mb);
        set!(safety_checker, self.safety_checker);
        set!(safety_checker_path, self.safety_checker_path);
        c.validate()?;
        Ok(c)
    }
}

/// Runs the server until it drains; returns the process exit code.
pub fn run(
    args: &ServeArgs,
    generator_for: impl FnOnce(&Config) -> GeneratorFactory,
    resolver_for: impl FnOnce(&Config) -> Box<dyn ModelResolver>,
) -> i32 {
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runai: {e}");
            return EXIT_BAD_CONFIG;
        }
    };
    for root in config.model_roots() {
        if !root.is_dir() {
            log::warn!("model root {} does not exist", root.display());
        }
    }
    let resolver = resolver_for(&config);
    let generator = generator_for(&config);
    let system = actix::System::new();
    let handle = match system.block_on(app::start(config, generator, resolver)) {
        Ok(h) => h,
        Err(e @ (app::AppError::Config(_) | app::AppError::Tls(_))) => {
            eprintln!("runai: {e}");
            return EXIT_BAD_CONFIG;
        }
        Err(e) => {
            eprintln!("runai: {e}");
            return 1;
        }
    };
    system.block_on(async { handle.handle_signals() });
    match system.run_with_code() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("runai: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ServeArgs,
    }

    #[test]
    fn flags_override_defaults() {
        let t = T::try_parse_from([
            "runai",
            "--port",
            "6001",
            "--timeout",
            "--model-base-path",
            "/a:/b",
            "--model-base-path",
            "/c",
            "--idle",
            "0.5",
            "--model",
            "tiny",
            "--max-jobs-per-client",
            "2",
            "--idle-timeout",
            "0",
            "--max-prompt-chars",
            "500",
        ])
        .unwrap();
        let c = t.a.to_config().unwrap();
        assert_eq!(c.port, 6001);
        assert!(c.timeout);
        assert_eq!(c.model_base_path, ["/a", "/b", "/c"]);
        assert_eq!(c.idle_secs, 0.5);
        assert_eq!(c.default_model, "tiny");
        assert_eq!(c.packet_size, 1024);
        assert_eq!(c.max_jobs_per_client, 2);
        assert_eq!(c.idle_timeout(), None);
        assert_eq!(c.max_prompt_chars, 500);
    }

    #[test]
    fn access_flags() {
        let t = T::try_parse_from([
            "runai",
            "--allow",
            "192.168.1.0/24, 10.0.0.7",
            "--token",
            "tok",
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
        ])
        .unwrap();
        let c = t.a.to_config().unwrap();
        assert_eq!(c.allow, ["192.168.1.0/24", " 10.0.0.7"]);
        assert!(c.allow_list().unwrap().permits("10.0.0.7".parse().unwrap()));
        assert!(c.token.matches("tok"));
        assert!(!format!("{:?} {c:?}", t.a).contains("tok\""));
        let old = T::try_parse_from(["runai", "--auth-token", "tok2"]).unwrap();
        assert!(old.a.to_config().unwrap().token.matches("tok2"));
        let bad = T::try_parse_from(["runai", "--allow", "10.0.0.0/99"]).unwrap();
        assert!(bad.a.to_config().unwrap_err().to_string().contains("allow"));
        let half = T::try_parse_from(["runai", "--tls-cert", "/c.pem"]).unwrap();
        assert!(half
            .a
            .to_config()
            .unwrap_err()
            .to_string()
            .contains("tls_key"));
    }

    #[test]
    fn invalid_value_is_a_config_error() {
        let t = T::try_parse_from(["runai", "--packet-size", "0"]).unwrap();
        assert!(t
            .a
            .to_config()
            .unwrap_err()
            .to_string()
            .contains("packet_size"));
        assert!(T::try_parse_from(["runai", "--port", "70000"]).is_err());
    }
}
