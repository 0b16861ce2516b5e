//! The `runai` binary: parses the command line and hands over to the library. The two
//! pluggable parts (the generator backend and the model resolver) are chosen here, in one
//! place each. Never holds server logic.

use clap::Parser;
use runai::cli::{serve, Cli, Command};
use runai::config::Config;
use runai::engine::factory::{runtime_options, sd_factory};
use runai::engine::GeneratorFactory;
use runai::registry::{ModelResolver, Registry};

/// The generator backend: Stable Diffusion on candle, on the configured device.
fn generator_factory(config: &Config) -> GeneratorFactory {
    // `validate()` already accepted these settings, so `compute()` cannot fail here.
    let spec = config.compute().unwrap_or_default();
    sd_factory(
        spec,
        config.max_loaded_models,
        config.model_cache_mb.saturating_mul(1 << 20),
    )
}

/// The model resolver: the registry over the configured model roots.
fn model_resolver(config: &Config) -> Box<dyn ModelResolver> {
    Box::new(Registry::new(&config.model_roots()))
}

/// Runs a tool subcommand, mapping its error to exit code 1.
fn tool(name: &str, result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("runai {name}: {e:#}");
            1
        }
    }
}

/// Keeps freed memory in the process. Inference allocates and frees activation buffers of
/// tens of MB for every op; by default glibc serves those with mmap and unmaps them on free, so
/// every op pays page faults and kernel zeroing again (~18% of UNet time in our CPU profile).
/// 32 MiB is the largest mmap threshold glibc accepts; the trim threshold stops it from
/// handing the heap top back after each step. No effect on results, only on speed and RSS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes glibc malloc parameters; it runs before any other thread
    // exists and a rejected value (return 0) just leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() {
    tune_allocator();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let cli = Cli::parse();
    let code = match cli.command {
        None => serve::run(&cli.serve, generator_factory, model_resolver),
        Some(Command::Client(args)) => match runai::cli::client::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("runai client: {e:#}");
                1
            }
        },
        Some(Command::Replay(args)) => tool(
            "replay",
            runai::cli::replay::run_with_loader(args, &|path| {
                let opts = runtime_options(Default::default())?;
                Ok(runai::registry::loader::load_model_parts(path, &opts)?)
            }),
        ),
        Some(Command::Convert(args)) => tool("convert", runai::cli::convert::run(args)),
        Some(Command::Bench(args)) => tool("bench", runai::cli::bench::run(args)),
        Some(Command::Relay(args)) => runai_wire::relay::run(args),
        Some(Command::Parity(args)) => tool("parity", runai::cli::parity::run(args)),
        Some(Command::Config(args)) => runai::cli::config::run(&args),
    };
    std::process::exit(code);
}
