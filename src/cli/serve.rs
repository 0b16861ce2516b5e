//! `runai` (serve): the server flags, each with a `RUNAI_*` variable and a config key (all
//! declared once in `config/settings.rs`), merged over the config file, validated (exit code 2
//! on a bad value), then the server runs until it drains. Never writes to disk.

use std::path::PathBuf;

use clap::Args;

use crate::app;
use crate::config::{Config, SettingArgs};
use crate::engine::GeneratorFactory;
use crate::registry::ModelResolver;

/// Exit code for invalid flags or configuration values (clap uses 2 as well).
pub(crate) const EXIT_BAD_CONFIG: i32 = 2;

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Load settings from this TOML file (keys as in config/default.toml)
    #[arg(long, env = "RUNAI_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    // Every setting as a flag and a `RUNAI_*` variable (declared in `config/settings.rs`).
    #[command(flatten)]
    pub(crate) settings: SettingArgs,
}

impl ServeArgs {
    /// Config file (or defaults), then these flags and variables on top, validated.
    pub(crate) fn to_config(&self) -> Result<Config, crate::config::ConfigError> {
        let mut c = Config::load(self.config.as_deref())?;
        self.settings.apply(&mut c);
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
    fn flags_override_the_file_which_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runai.toml");
        std::fs::write(
            &file,
            "port = 6000\npacket_size = 2048\ntimeout = true\nallow = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let t = T::try_parse_from(["runai", "--config", path, "--port", "6001"]).unwrap();
        let c = t.a.to_config().unwrap();
        assert_eq!((c.port, c.packet_size, c.timeout), (6001, 2048, true));
        assert_eq!(c.allow, ["10.0.0.0/8"]);
        assert_eq!(c.queue_depth, Config::default().queue_depth);
        let t = T::try_parse_from(["runai", "--config", path, "--allow", "::1"]).unwrap();
        assert_eq!(
            t.a.to_config().unwrap().allow,
            ["::1"],
            "a given list replaces the file's"
        );
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
        assert!(config_error(&["--allow", "10.0.0.0/99"]).contains("allow"));
        assert!(config_error(&["--tls-cert", "/c.pem"]).contains("tls_key"));
    }

    /// The validation error of these flags (they parse).
    fn config_error(flags: &[&str]) -> String {
        let t = T::try_parse_from(std::iter::once("runai").chain(flags.iter().copied())).unwrap();
        t.a.to_config().unwrap_err().to_string()
    }

    #[test]
    fn http_flags() {
        let off = T::try_parse_from(["runai"]).unwrap().a.to_config().unwrap();
        assert_eq!(off.http_port, None);
        let t = T::try_parse_from([
            "runai",
            "--http-port",
            "7860",
            "--token",
            "tok",
            "--http-user",
            "team",
            "--cors-origin",
            "https://a.example,https://b.example",
        ])
        .unwrap();
        let c = t.a.to_config().unwrap();
        assert_eq!(c.http_port, Some(7860));
        assert_eq!(c.http_user, "team");
        assert_eq!(c.cors_origin, ["https://a.example", "https://b.example"]);
        let no_token = T::try_parse_from(["runai", "--http-user", "team"]).unwrap();
        let e = no_token.a.to_config().unwrap_err().to_string();
        assert!(e.contains("http_user"), "{e}");
        let clash = T::try_parse_from(["runai", "--http-port", "50006"]).unwrap();
        let e = clash.a.to_config().unwrap_err().to_string();
        assert!(e.contains("http_port"), "{e}");
        let file = Config::from_toml_str("http_port = 7861", std::path::Path::new("x")).unwrap();
        assert_eq!(file.http_port, Some(7861));
    }

    #[test]
    fn invalid_value_is_a_config_error() {
        assert!(config_error(&["--packet-size", "0"]).contains("packet_size"));
        assert!(T::try_parse_from(["runai", "--port", "70000"]).is_err());
    }
}
