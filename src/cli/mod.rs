//! Command-line interface of the `runai` binary (clap derive). No subcommand means "serve",
//! so the plugin's `runai --timeout` works; `runai client ...` is the smoke-test client.
//! Other tools (replay, convert, bench, parity) plug in as further subcommands. Never starts
//! actors itself: `serve` hands a validated config to `app`.

pub mod bench;
mod bench_conv;
mod bench_xl;
pub mod client;
pub mod config;
pub mod convert;
pub mod parity;
pub mod replay;
pub mod replay_prompt;
pub(crate) mod replay_safety;
pub mod serve;
pub(crate) mod wire_client;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "runai",
    version,
    about = "Stable Diffusion inference server for the Krita plugin (RunAI wire protocol)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: serve::ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Talk to a running server: ping, list models, generate and save PNGs, quit.
    Client(client::ClientArgs),
    /// Run one golden manifest case with its recorded noise and write the intermediate tensors.
    Replay(replay::ReplayArgs),
    /// Write a diffusers folder from a single-file (.safetensors/.ckpt) checkpoint.
    Convert(convert::ConvertArgs),
    /// Time one phase (text encode, UNet step, VAE decode, txt2img) and print a RESULT line.
    Bench(bench::BenchArgs),
    /// On a painter's machine: let the Krita plugin reach a remote server (TLS, token,
    /// aligned packets). Also built alone, without the model code, as `runai-relay`.
    Relay(runai_wire::relay::RelayArgs),
    /// Replay the golden cases on a device and dtype and check them against their limits.
    Parity(parity::ParityArgs),
    /// Print the documented defaults (config/default.toml) or the flag table of the settings.
    Config(config::ConfigArgs),
}
