//! `runai relay`: runs on a painter's machine, listens where the Krita plugin always connects
//! (`127.0.0.1:50006`) and forwards each plugin connection to a remote runai server, speaking
//! TLS and the token on the remote side (the plugin can do neither). Upstream bytes are read
//! with exact packet reads, gathered into whole messages and written to the plugin with the
//! aligned writer, so tunnels, balancers and slow networks in between cannot misalign what
//! the plugin's `recv(1024)` sees. Plugin packets (cancel `c` packets included) are passed
//! upstream as whole packets. A server that cannot be reached or goes away mid-session gives
//! the plugin one well-framed `error` message, then the connection closes (the plugin
//! reconnects every second). Needs no model, no GPU and no candle.

mod args;
mod connection;
mod upstream;

use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use args::RelayArgs;
pub use connection::RelaySettings;

/// Accepts plugin connections on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, settings: Arc<RelaySettings>) -> io::Result<()> {
    let mut next_id = 1u64;
    loop {
        let (plugin, peer) = listener.accept().await?;
        let id = next_id;
        next_id += 1;
        log::info!("relay {id}: plugin connected from {peer}");
        let settings = settings.clone();
        tokio::spawn(async move {
            let end = connection::relay_one(plugin, &settings).await;
            log::info!("relay {id}: closed ({end})");
        });
    }
}

/// Entry point of `runai relay` and `runai-relay`: binds, serves until Ctrl-C, returns the
/// process exit code.
pub fn run(args: RelayArgs) -> i32 {
    let settings = match args.settings() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("runai relay: {e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runai relay: cannot start: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("runai relay: cannot listen on {}: {e}", args.listen);
                return 1;
            }
        };
        log::info!(
            "relay listening on {} for the Krita plugin, forwarding to {}{}",
            args.listen,
            settings.server,
            if settings.tls.is_some() {
                " over TLS"
            } else {
                ""
            }
        );
        tokio::select! {
            r = serve(listener, settings) => {
                eprintln!("runai relay: stopped accepting: {r:?}");
                1
            }
            _ = tokio::signal::ctrl_c() => 0,
        }
    })
}
