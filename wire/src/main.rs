//! `runai-relay`: the relay alone, for a painter's machine (Windows, macOS or Linux) that
//! needs no model, no GPU and no candle. Same options as `runai relay`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "runai-relay",
    version,
    about = "Lets the Krita plugin reach a remote runai server: listens on 127.0.0.1:50006, forwards over TLS with the token, keeps packets aligned"
)]
struct Cli {
    #[command(flatten)]
    relay: runai_wire::relay::RelayArgs,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    std::process::exit(runai_wire::relay::run(cli.relay));
}
