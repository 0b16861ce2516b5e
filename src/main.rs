//! The `runai` binary: parses the command line and hands over to the library. The two
//! pluggable parts (the generator backend and the model resolver) are chosen here, in one
//! place each. Never holds server logic.

use clap::Parser;
use runai::actors::dir_resolver::DirResolver;
use runai::actors::gpu_worker::no_backend::no_backend_factory;
use runai::cli::{serve, Cli, Command};
use runai::config::Config;
use runai::engine::GeneratorFactory;
use runai::messages::registry::ModelResolver;

/// The generator backend. Swap this for the real Stable Diffusion factory.
fn generator_factory() -> GeneratorFactory {
    no_backend_factory()
}

/// The model resolver. Swap this for the real registry.
fn model_resolver(config: &Config) -> Box<dyn ModelResolver> {
    Box::new(DirResolver::new(config.model_roots()))
}

/// Exit code of a one-shot tool subcommand, printing its error chain.
fn tool_exit(name: &str, result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("runai {name}: {e:#}");
            1
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let cli = Cli::parse();
    let code = match cli.command {
        None => serve::run(&cli.serve, generator_factory(), model_resolver),
        Some(Command::Client(args)) => match runai::cli::client::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("runai client: {e:#}");
                1
            }
        },
        Some(Command::Replay(args)) => tool_exit("replay", runai::cli::replay::run(args)),
        Some(Command::Convert(args)) => tool_exit("convert", runai::cli::convert::run(args)),
        Some(Command::Bench(args)) => tool_exit("bench", runai::cli::bench::run(args)),
    };
    std::process::exit(code);
}
