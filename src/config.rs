//! Typed server configuration: built-in defaults (identical to `config/default.toml`), then a
//! config file, then `RUNAI_*` environment variables, then command-line flags. `validate()`
//! runs once at start-up so nothing downstream re-checks. Never reads the network or writes
//! to disk.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::allow::AllowList;
use crate::net::secret::Secret;
use crate::pipeline::safety::SafetyMode;
use crate::protocol::validate::Limits;

/// Where each model root keeps the safety checker, as the original server lays it out.
pub const SAFETY_CHECKER_SUBDIR: &str = "CompVis/stable-diffusion-safety-checker";

/// Every setting of the server. Field names are the config file keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// Idle auto-shutdown (the plugin starts the server with `--timeout`).
    pub timeout: bool,
    pub packet_size: usize,
    /// Model roots; `~` is the home directory.
    pub model_base_path: Vec<String>,
    /// Model used when a request names none ("" = none configured).
    pub default_model: String,
    pub max_client_connections: usize,
    /// Jobs waiting for the GPU, all sessions together; a full queue answers `busy`.
    pub queue_depth: usize,
    /// Jobs one session may hold at once, queued and running together; more get `busy`
    /// while other sessions are still admitted.
    pub max_jobs_per_client: usize,
    pub max_message_bytes: usize,
    pub startup_grace_secs: f64,
    pub idle_secs: f64,
    pub drain_grace_secs: f64,
    pub read_timeout_secs: f64,
    pub write_timeout_secs: f64,
    /// A session with no job and no message for this long is closed (`closing`); 0 = never.
    pub idle_timeout_secs: f64,
    pub max_outgoing_bytes: usize,
    pub allow_remote_quit: bool,
    /// Shared secret clients must send first (`{"action": "auth", "token": ...}`);
    /// empty = no authentication. Never printed (`Secret`).
    #[serde(alias = "auth_token")]
    pub token: Secret,
    /// Peers allowed to connect (CIDRs or addresses); empty = anyone who can reach `host`.
    pub allow: Vec<String>,
    /// PEM certificate chain; with `tls_key`, connections must speak TLS. Empty = plain TCP.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    pub max_steps: usize,
    pub max_pixels: u64,
    pub max_samples: usize,
    pub max_input_pixels: u64,
    /// Longest prompt and negative prompt, in characters.
    pub max_prompt_chars: usize,
    pub max_restarts: u32,
    pub restart_window_secs: f64,
    // -- Continuous batching (one block: max_batch, max_batch_mb) --
    /// Jobs (of any users) sharing one denoising step; 1 = one job at a time, no batching.
    pub max_batch: usize,
    /// Estimated activation memory one batched step may use, in MiB; a batch never grows
    /// past it (a single job always runs).
    pub max_batch_mb: u64,
    /// Where models run: "cpu", "cuda" or "cuda:N" (needs a build with `--features cuda`).
    pub device: String,
    /// Weight precision: "auto" (f32 on CPU, f16 on CUDA), "f32", "f16" or "bf16" (CUDA only).
    pub dtype: String,
    /// Models kept loaded at once (least recently used is evicted first).
    pub max_loaded_models: usize,
    /// Memory budget of the loaded models, in MiB (estimated from their weights).
    pub model_cache_mb: u64,
    /// The CompVis safety checker: "off", "black", "blur" or "report".
    pub safety_checker: String,
    /// The checker's transformers folder; "" = `CompVis/stable-diffusion-safety-checker`
    /// under the first model root that has it.
    pub safety_checker_path: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 50006,
            timeout: false,
            packet_size: 1024,
            model_base_path: vec!["~/stablediffusion".into()],
            default_model: String::new(),
            max_client_connections: 16,
            queue_depth: 32,
            max_jobs_per_client: 4,
            max_message_bytes: 64 * 1024 * 1024,
            startup_grace_secs: 10.0,
            idle_secs: 3.0,
            drain_grace_secs: 30.0,
            read_timeout_secs: 60.0,
            write_timeout_secs: 60.0,
            idle_timeout_secs: 300.0,
            max_outgoing_bytes: 256 * 1024 * 1024,
            allow_remote_quit: false,
            token: Secret::default(),
            allow: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            max_steps: 150,
            max_pixels: 2048 * 2048,
            max_samples: 8,
            max_input_pixels: 4096 * 4096,
            max_prompt_chars: 20_000,
            max_restarts: 5,
            restart_window_secs: 600.0,
            max_batch: 4,
            max_batch_mb: 8192,
            device: "cpu".into(),
            dtype: "auto".into(),
            max_loaded_models: 2,
            model_cache_mb: 16384,
            safety_checker: "off".into(),
            safety_checker_path: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

/// The shipped defaults file, kept in the binary so `--help` and tests can compare.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

impl Config {
    /// Parses a TOML config; keys not present keep their defaults.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Loads `path` over the defaults, or the defaults alone.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Ok(Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::from_toml_str(&text, p)
            }
        }
    }

    /// Checks every value; the first problem is reported with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bind_ip().is_none() {
            return Err(invalid(
                "host",
                format!("{:?} is not an IP address or \"localhost\"", self.host),
            ));
        }
        self.allow_list()?;
        self.tls_files()?;
        if !(16..=1 << 20).contains(&self.packet_size) {
            return Err(invalid(
                "packet_size",
                format!("must be 16..=1048576, got {}", self.packet_size),
            ));
        }
        if self.model_base_path.iter().any(|p| p.trim().is_empty()) {
            return Err(invalid("model_base_path", "empty path"));
        }
        if !(1..=4096).contains(&self.max_client_connections) {
            return Err(invalid(
                "max_client_connections",
                format!("must be 1..=4096, got {}", self.max_client_connections),
            ));
        }
        if !(1..=100_000).contains(&self.queue_depth) {
            return Err(invalid(
                "queue_depth",
                format!("must be 1..=100000, got {}", self.queue_depth),
            ));
        }
        if !(1..=100_000).contains(&self.max_jobs_per_client) {
            return Err(invalid(
                "max_jobs_per_client",
                format!("must be 1..=100000, got {}", self.max_jobs_per_client),
            ));
        }
        if !(1..=64).contains(&self.max_batch) {
            return Err(invalid(
                "max_batch",
                format!("must be 1..=64, got {}", self.max_batch),
            ));
        }
        if self.max_batch_mb == 0 {
            return Err(invalid("max_batch_mb", "must be at least 1, got 0"));
        }
        if self.max_message_bytes < self.packet_size {
            return Err(invalid(
                "max_message_bytes",
                format!(
                    "must be at least packet_size ({}), got {}",
                    self.packet_size, self.max_message_bytes
                ),
            ));
        }
        if self.max_outgoing_bytes < self.packet_size * 4 {
            return Err(invalid(
                "max_outgoing_bytes",
                format!(
                    "must be at least 4 packets ({}), got {}",
                    self.packet_size * 4,
                    self.max_outgoing_bytes
                ),
            ));
        }
        let secs: [(&'static str, f64); 6] = [
            ("startup_grace_secs", self.startup_grace_secs),
            ("idle_secs", self.idle_secs),
            ("drain_grace_secs", self.drain_grace_secs),
            ("read_timeout_secs", self.read_timeout_secs),
            ("write_timeout_secs", self.write_timeout_secs),
            ("restart_window_secs", self.restart_window_secs),
        ];
        for (field, v) in secs {
            if !v.is_finite() || v <= 0.0 || v > 365.0 * 86400.0 {
                return Err(invalid(
                    field,
                    format!("must be a positive number of seconds, got {v}"),
                ));
            }
        }
        let idle = self.idle_timeout_secs;
        if !idle.is_finite() || !(0.0..=365.0 * 86400.0).contains(&idle) {
            return Err(invalid(
                "idle_timeout_secs",
                format!("must be a number of seconds >= 0 (0 = off), got {idle}"),
            ));
        }
        if self.max_prompt_chars == 0 {
            return Err(invalid("max_prompt_chars", "must be at least 1, got 0"));
        }
        if !(1..=10_000).contains(&self.max_steps) {
            return Err(invalid(
                "max_steps",
                format!("must be 1..=10000, got {}", self.max_steps),
            ));
        }
        if !(64 * 64..=16384 * 16384).contains(&self.max_pixels) {
            return Err(invalid(
                "max_pixels",
                format!("must be 4096..=268435456, got {}", self.max_pixels),
            ));
        }
        if !(64 * 64..=16384 * 16384).contains(&self.max_input_pixels) {
            return Err(invalid(
                "max_input_pixels",
                format!("must be 4096..=268435456, got {}", self.max_input_pixels),
            ));
        }
        if !(1..=64).contains(&self.max_samples) {
            return Err(invalid(
                "max_samples",
                format!("must be 1..=64, got {}", self.max_samples),
            ));
        }
        self.compute()?;
        self.safety_mode()?;
        if !(1..=64).contains(&self.max_loaded_models) {
            return Err(invalid(
                "max_loaded_models",
                format!("must be 1..=64, got {}", self.max_loaded_models),
            ));
        }
        if self.model_cache_mb < 64 {
            return Err(invalid(
                "model_cache_mb",
                format!("must be at least 64, got {}", self.model_cache_mb),
            ));
        }
        Ok(())
    }

    /// The device and weight dtype requested by `device` and `dtype`, checked for
    /// combinations that cannot work (bf16 convolutions do not run on the CPU).
    pub fn compute(&self) -> Result<ComputeSpec, ConfigError> {
        let device = match self.device.trim().to_ascii_lowercase().as_str() {
            "cpu" => DeviceSpec::Cpu,
            "cuda" | "gpu" => DeviceSpec::Cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => DeviceSpec::Cuda(n),
                _ => {
                    return Err(invalid(
                        "device",
                        format!("expected cpu, cuda or cuda:N, got {:?}", self.device),
                    ))
                }
            },
        };
        let dtype = match (self.dtype.trim().to_ascii_lowercase().as_str(), device) {
            ("auto", DeviceSpec::Cpu) | ("f32", _) => DTypeSpec::F32,
            ("auto", DeviceSpec::Cuda(_)) | ("f16", _) => DTypeSpec::F16,
            ("bf16", DeviceSpec::Cuda(_)) => DTypeSpec::Bf16,
            ("bf16", DeviceSpec::Cpu) => {
                return Err(invalid(
                    "dtype",
                    "bf16 needs a CUDA device (bf16 convolutions do not run on the CPU)",
                ))
            }
            _ => {
                return Err(invalid(
                    "dtype",
                    format!("expected auto, f32, f16 or bf16, got {:?}", self.dtype),
                ))
            }
        };
        Ok(ComputeSpec { device, dtype })
    }

    /// The administrator's safety-checker mode.
    pub fn safety_mode(&self) -> Result<SafetyMode, ConfigError> {
        SafetyMode::parse(&self.safety_checker).ok_or_else(|| {
            invalid(
                "safety_checker",
                format!(
                    "expected one of {}, got {:?}",
                    SafetyMode::NAMES,
                    self.safety_checker
                ),
            )
        })
    }

    /// The checker folder for an enabled mode: `safety_checker_path`, else
    /// `CompVis/stable-diffusion-safety-checker` under the first model root holding it.
    /// `None` when the mode is off; an error naming every place looked at when none exists.
    pub fn safety_checker_dir(&self) -> Result<Option<PathBuf>, ConfigError> {
        if self.safety_mode()? == SafetyMode::Off {
            return Ok(None);
        }
        let candidates: Vec<PathBuf> = if self.safety_checker_path.trim().is_empty() {
            self.model_roots()
                .into_iter()
                .map(|r| r.join(SAFETY_CHECKER_SUBDIR))
                .collect()
        } else {
            vec![expand_home(self.safety_checker_path.trim())]
        };
        candidates
            .iter()
            .find(|d| d.join("config.json").is_file())
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                let looked: Vec<String> =
                    candidates.iter().map(|d| d.display().to_string()).collect();
                invalid(
                    "safety_checker",
                    format!(
                        "{:?} needs the CompVis safety checker folder (config.json and weights), \
                         found none at: {}; set --safety-checker-path or --safety-checker off",
                        self.safety_checker,
                        if looked.is_empty() {
                            "(no model roots)".to_string()
                        } else {
                            looked.join(", ")
                        }
                    ),
                )
            })
    }

    /// The address to bind; `None` when `host` is invalid.
    pub fn bind_ip(&self) -> Option<IpAddr> {
        let h = self.host.trim();
        if h.eq_ignore_ascii_case("localhost") {
            return Some(IpAddr::from([127, 0, 0, 1]));
        }
        h.parse().ok()
    }

    /// The parsed allow-list (empty = open).
    pub fn allow_list(&self) -> Result<AllowList, ConfigError> {
        AllowList::parse(&self.allow).map_err(|e| invalid("allow", e.to_string()))
    }

    /// Certificate and key paths (`~` expanded) when TLS is on; both or neither must be set.
    pub fn tls_files(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (self.tls_cert.trim(), self.tls_key.trim()) {
            ("", "") => Ok(None),
            (cert, key) if !cert.is_empty() && !key.is_empty() => {
                Ok(Some((expand_home(cert), expand_home(key))))
            }
            ("", _) => Err(invalid(
                "tls_cert",
                "tls_key is set, so tls_cert is needed too",
            )),
            _ => Err(invalid(
                "tls_key",
                "tls_cert is set, so tls_key is needed too",
            )),
        }
    }

    /// Model roots with `~` expanded.
    pub fn model_roots(&self) -> Vec<PathBuf> {
        self.model_base_path
            .iter()
            .map(|p| expand_home(p))
            .collect()
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_steps: self.max_steps,
            max_pixels: self.max_pixels,
            max_samples: self.max_samples,
            max_input_pixels: self.max_input_pixels,
            max_prompt_chars: self.max_prompt_chars,
        }
    }

    pub fn startup_grace(&self) -> Duration {
        secs(self.startup_grace_secs)
    }
    pub fn idle(&self) -> Duration {
        secs(self.idle_secs)
    }
    pub fn drain_grace(&self) -> Duration {
        secs(self.drain_grace_secs)
    }
    pub fn read_timeout(&self) -> Duration {
        secs(self.read_timeout_secs)
    }
    pub fn write_timeout(&self) -> Duration {
        secs(self.write_timeout_secs)
    }
    /// `None` when idle sessions are kept forever (`idle_timeout_secs = 0`).
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0.0).then(|| secs(self.idle_timeout_secs))
    }
    pub fn restart_window(&self) -> Duration {
        secs(self.restart_window_secs)
    }
}

/// Which device models run on (validated from `Config::device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

/// Weight precision (validated from `Config::dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeSpec {
    F32,
    F16,
    Bf16,
}

/// Device and dtype together; turned into candle's types on the worker thread.
/// The default is the CPU in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeSpec {
    pub device: DeviceSpec,
    pub dtype: DTypeSpec,
}

impl Default for ComputeSpec {
    fn default() -> Self {
        ComputeSpec {
            device: DeviceSpec::Cpu,
            dtype: DTypeSpec::F32,
        }
    }
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::from_secs(1))
}

/// Expands a leading `~` to `$HOME` (left as is when HOME is unset).
pub fn expand_home(p: &str) -> PathBuf {
    let home = std::env::var_os("HOME");
    match (p.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            let mut out = PathBuf::from(home);
            let rest = rest.trim_start_matches('/');
            if !rest.is_empty() {
                out.push(rest);
            }
            out
        }
        _ => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_equals_builtin_defaults() {
        let parsed = Config::from_toml_str(DEFAULT_TOML, Path::new("config/default.toml")).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn partial_file_keeps_defaults_and_rejects_unknown_keys() {
        let c = Config::from_toml_str("port = 6000\nidle_secs = 0.5\n", Path::new("x")).unwrap();
        assert_eq!(c.port, 6000);
        assert_eq!(c.idle(), Duration::from_millis(500));
        assert_eq!(c.packet_size, 1024);
        assert!(Config::from_toml_str("prot = 1", Path::new("x")).is_err());
    }

    #[test]
    fn safety_checker_mode_and_folder() {
        let mut c = Config::default();
        assert_eq!(c.safety_mode().unwrap(), SafetyMode::Off);
        assert_eq!(c.safety_checker_dir().unwrap(), None);
        c.safety_checker = "Blur".into();
        assert_eq!(c.safety_mode().unwrap(), SafetyMode::Blur);
        let dir = tempfile::tempdir().unwrap();
        let checker = dir.path().join(SAFETY_CHECKER_SUBDIR);
        c.model_base_path = vec![dir.path().join("missing").display().to_string()];
        assert!(c.safety_checker_dir().is_err());
        c.model_base_path.push(dir.path().display().to_string());
        std::fs::create_dir_all(&checker).unwrap();
        assert!(
            c.safety_checker_dir().is_err(),
            "a folder without config.json is no checker"
        );
        std::fs::write(checker.join("config.json"), "{}").unwrap();
        assert_eq!(c.safety_checker_dir().unwrap(), Some(checker.clone()));
        c.safety_checker_path = dir.path().join("elsewhere").display().to_string();
        assert!(
            c.safety_checker_dir().is_err(),
            "an explicit path is not second-guessed"
        );
        c.safety_checker = "sometimes".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("safety_checker"));
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            (
                Config {
                    packet_size: 0,
                    ..Config::default()
                },
                "packet_size",
            ),
            (
                Config {
                    host: "not a host".into(),
                    ..Config::default()
                },
                "host",
            ),
            (
                Config {
                    idle_secs: -1.0,
                    ..Config::default()
                },
                "idle_secs",
            ),
            (
                Config {
                    startup_grace_secs: f64::NAN,
                    ..Config::default()
                },
                "startup_grace_secs",
            ),
            (
                Config {
                    max_client_connections: 0,
                    ..Config::default()
                },
                "max_client_connections",
            ),
            (
                Config {
                    queue_depth: 0,
                    ..Config::default()
                },
                "queue_depth",
            ),
            (
                Config {
                    max_message_bytes: 10,
                    ..Config::default()
                },
                "max_message_bytes",
            ),
            (
                Config {
                    max_jobs_per_client: 0,
                    ..Config::default()
                },
                "max_jobs_per_client",
            ),
            (
                Config {
                    idle_timeout_secs: -1.0,
                    ..Config::default()
                },
                "idle_timeout_secs",
            ),
            (
                Config {
                    max_prompt_chars: 0,
                    ..Config::default()
                },
                "max_prompt_chars",
            ),
        ];
        for (c, key) in cases {
            assert!(c.validate().unwrap_err().to_string().contains(key), "{key}");
        }
    }

    #[test]
    fn access_settings_are_checked() {
        let bad_allow = Config {
            allow: vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()],
            ..Config::default()
        };
        let e = bad_allow.validate().unwrap_err().to_string();
        assert!(e.contains("allow") && e.contains("10.0.0.0/40"), "{e}");
        let half_tls = Config {
            tls_cert: "/x/cert.pem".into(),
            ..Config::default()
        };
        assert!(half_tls
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls_key"));
        let key_only = Config {
            tls_key: "/x/key.pem".into(),
            ..Config::default()
        };
        assert!(key_only
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls_cert"));
        let both = Config {
            tls_cert: "/x/cert.pem".into(),
            tls_key: "/x/key.pem".into(),
            allow: vec!["192.168.1.0/24".into()],
            ..Config::default()
        };
        both.validate().unwrap();
        assert!(both.tls_files().unwrap().is_some());
    }

    #[test]
    fn token_key_and_its_old_name_parse_and_never_print() {
        let c = Config::from_toml_str("token = \"abc123\"", Path::new("x")).unwrap();
        assert!(c.token.matches("abc123"));
        let old = Config::from_toml_str("auth_token = \"abc123\"", Path::new("x")).unwrap();
        assert!(old.token.matches("abc123"));
        assert!(!format!("{c:?}").contains("abc123"));
    }

    #[test]
    fn home_expansion() {
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(expand_home("~/sd"), PathBuf::from(home).join("sd"));
        }
        assert_eq!(expand_home("/abs/x"), PathBuf::from("/abs/x"));
    }
}
