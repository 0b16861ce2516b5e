//! Wiring: builds the actors in dependency order from a validated `Config`, an injected
//! `GeneratorFactory` and an injected `ModelResolver`, and returns a handle (local address,
//! drain). `start` must run inside an actix `System`; `spawn_server` runs a whole server on
//! its own thread (tests, embedding). Never parses flags or exits the process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use actix::prelude::*;
use tokio::net::TcpListener;

use crate::actors::gpu_worker::batch::BatchLimits;
use crate::actors::gpu_worker::{GpuWorkerActor, WorkerSettings};
use crate::actors::listener::{AccessPolicy, ListenerActor};
use crate::actors::model_registry::{ModelRegistryActor, RegistrySupervision};
use crate::actors::session::SessionSettings;
use crate::actors::shutdown::{ShutdownActor, ShutdownSettings};
use crate::config::{Config, ConfigError};
use crate::engine::safety::with_safety;
use crate::engine::GeneratorFactory;
use crate::http::server::{Binding, HttpFront};
use crate::http::state::{Access, HttpState, Peers};
use crate::messages::registry::RegistryHealth;
use crate::messages::shutdown::{AttachActors, BeginDrain};
use crate::net::allow::{cleartext_warning, exposure_warning};
use crate::net::tls::{server_acceptor, server_config, TlsError};
use crate::registry::ModelResolver;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the server thread: {0}")]
    Thread(std::io::Error),
    #[error("the server thread ended before it was ready")]
    NotReady,
}

/// A running server inside the current actix system.
#[derive(Clone)]
pub(crate) struct AppHandle {
    pub(crate) local_addr: SocketAddr,
    /// The HTTP front end's address, when `http_port` is set.
    pub(crate) http_addr: Option<SocketAddr>,
    shutdown: Addr<ShutdownActor>,
    sessions: Arc<AtomicUsize>,
}

impl AppHandle {
    /// Client sessions open right now (admitted connections not yet closed).
    pub(crate) fn open_sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Starts a graceful drain, exactly as SIGTERM does.
    pub(crate) fn shutdown(&self) {
        self.shutdown.do_send(BeginDrain {
            reason: "shutdown requested".into(),
            exit_code: 0,
            force: false,
        });
    }

    /// Turns SIGINT/SIGTERM into a drain (a second signal exits at once). Call once, inside
    /// the system; only the process owner (main, a dedicated test) should do this.
    pub(crate) fn handle_signals(&self) {
        let addr = self.shutdown.clone();
        actix_rt::spawn(async move {
            let mut seen = 0;
            loop {
                let name = wait_for_signal().await;
                seen += 1;
                addr.do_send(BeginDrain {
                    reason: format!("received {name}"),
                    exit_code: 0,
                    force: seen > 1,
                });
            }
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            log::warn!("cannot install signal handlers");
            std::future::pending().await
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

/// Starts every actor and begins listening. Call from inside a running actix system.
pub(crate) async fn start(
    config: Config,
    generator: GeneratorFactory,
    resolver: Box<dyn ModelResolver>,
) -> Result<AppHandle, AppError> {
    config.validate()?;
    // Resolved before binding: an enabled checker without its folder fails start-up.
    let generator = with_safety(
        generator,
        config.safety_mode()?,
        config.safety_checker_dir()?,
        config.compute()?,
    );
    let ip = config.bind_ip().ok_or_else(|| AppError::Bind {
        addr: config.host.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad host"),
    })?;
    let addr = SocketAddr::new(ip, config.port);
    // Certificates are read before binding, so a bad file never leaves a half-started server.
    let access = AccessPolicy {
        allow: config.allow_list()?,
        tls: match config.tls_files()? {
            Some((cert, key)) => Some(server_acceptor(&cert, &key)?),
            None => None,
        },
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| AppError::Bind {
        addr: addr.to_string(),
        source,
    })?;

    let shutdown = ShutdownActor::new(ShutdownSettings {
        timeout: config.timeout,
        startup_grace: config.startup_grace(),
        idle: config.idle(),
        drain_grace: config.drain_grace(),
        allow_remote_quit: config.allow_remote_quit,
    });
    let sessions = shutdown.sessions_gauge();
    let shutdown = shutdown.start();
    let registry_health = RegistryHealth::default();
    let session_health = registry_health.clone();
    let registry = ModelRegistryActor::start(
        resolver,
        config.default_model.clone(),
        RegistrySupervision {
            max_restarts: config.max_restarts,
            window: config.restart_window(),
            health: registry_health.clone(),
            shutdown: shutdown.clone(),
        },
    );
    let worker_settings = WorkerSettings {
        queue_depth: config.queue_depth,
        max_jobs_per_client: config.max_jobs_per_client,
        max_restarts: config.max_restarts,
        restart_window: config.restart_window(),
        batch: BatchLimits {
            max_batch: config.max_batch,
            max_mib: config.max_batch_mb,
        },
    };
    let shutdown_for_worker = shutdown.clone();
    let worker = Supervisor::start(move |_| {
        GpuWorkerActor::new(worker_settings, generator, shutdown_for_worker)
    });
    let session_settings = Arc::new(SessionSettings {
        packet_size: config.packet_size,
        max_message_bytes: config.max_message_bytes,
        read_timeout: config.read_timeout(),
        write_timeout: config.write_timeout(),
        idle_timeout: config.idle_timeout(),
        max_outgoing_bytes: config.max_outgoing_bytes,
        limits: config.limits(),
        token: (!config.token.is_empty()).then(|| config.token.clone()),
        registry_health: session_health,
    });
    let listener = ListenerActor::new(
        listener,
        config.max_client_connections,
        session_settings,
        worker.clone(),
        registry.clone(),
        shutdown.clone(),
        access.clone(),
    )
    .start();
    let (http_addr, stop_accepting) = match config.http_port {
        None => (None, listener.clone().recipient()),
        Some(port) => {
            let peers = Peers {
                submit: worker.clone().recipient(),
                cancel: worker.clone().recipient(),
                status: worker.clone().recipient(),
                resolve: registry.clone().recipient(),
                list: registry.clone().recipient(),
                add_ons: registry.recipient(),
                opened: shutdown.clone().recipient(),
                closed: shutdown.clone().recipient(),
            };
            let (addr, handle) =
                start_http(&config, SocketAddr::new(ip, port), peers, registry_health)?;
            let front = HttpFront {
                handle,
                next: listener.clone().recipient(),
            };
            (Some(addr), front.start().recipient())
        }
    };
    shutdown.do_send(AttachActors {
        stop_accepting,
        close_sessions: listener.recipient(),
        drain_worker: worker.recipient(),
    });
    log::info!(
        "listening on {local_addr} ({}, {}, {})",
        if access.tls.is_some() {
            "TLS"
        } else {
            "plain TCP"
        },
        if config.token.is_empty() {
            "no token"
        } else {
            "token required"
        },
        if access.allow.is_open() {
            "no allow-list".to_string()
        } else {
            format!("{} allow rule(s)", access.allow.rules().len())
        }
    );
    let warnings = [
        exposure_warning(local_addr.ip(), &access.allow),
        cleartext_warning(
            local_addr.ip(),
            access.tls.is_some(),
            !config.token.is_empty(),
        ),
    ];
    for w in warnings.into_iter().flatten() {
        log::warn!("{w}");
    }
    Ok(AppHandle {
        local_addr,
        http_addr,
        shutdown,
        sessions,
    })
}

/// Starts the HTTP front end with the socket listener's access settings.
fn start_http(
    config: &Config,
    addr: SocketAddr,
    peers: Peers,
    registry_health: RegistryHealth,
) -> Result<(SocketAddr, actix_web::dev::ServerHandle), AppError> {
    let tls = match config.tls_files()? {
        Some((cert, key)) => Some(server_config(&cert, &key)?),
        None => None,
    };
    let access = Access {
        allow: config.allow_list()?,
        token: (!config.token.is_empty()).then(|| config.token.clone()),
        user: config.http_user.clone(),
    };
    let flags = serde_json::json!({
        "api": true,
        "nowebui": true,
        "listen": !crate::net::allow::is_loopback(addr.ip()),
        "port": addr.port(),
        "api_auth": access.token.is_some(),
        "tls": tls.is_some(),
        "cors_allow_origins": config.cors_origin,
        "ckpt_dir": config.model_roots().first().map(|r| r.display().to_string()),
    });
    let is_tls = tls.is_some();
    let state = HttpState::new(
        peers,
        access,
        config.limits(),
        config.max_message_bytes,
        registry_health,
        flags,
    );
    let binding = Binding {
        addr,
        tls,
        cors_origins: config.cors_origin.clone(),
        drain_grace: config.drain_grace(),
    };
    let (local, handle) =
        crate::http::server::start(binding, state).map_err(|source| AppError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    log::info!(
        "HTTP API on {}://{local} (A1111 /sdapi/v1, OpenAI /v1/images)",
        if is_tls { "https" } else { "http" }
    );
    Ok((local, handle))
}

/// A server running on its own thread with its own actix system.
pub struct ServerThread {
    pub local_addr: SocketAddr,
    /// The HTTP front end's address, when `http_port` is set.
    pub http_addr: Option<SocketAddr>,
    handle: AppHandle,
    join: JoinHandle<std::io::Result<i32>>,
}

impl ServerThread {
    /// Starts a graceful drain (as SIGTERM would).
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// Installs SIGINT/SIGTERM handling on the server's system.
    pub fn handle_signals(&self) {
        let h = self.handle.clone();
        // The handler task must be spawned on the server's own runtime.
        self.handle
            .shutdown
            .do_send(crate::actors::shutdown::RunOnSystem(Box::new(move || {
                h.handle_signals()
            })));
    }

    /// Client sessions open right now.
    pub fn open_sessions(&self) -> usize {
        self.handle.open_sessions()
    }

    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Waits for the server to exit and returns its exit code.
    pub fn join(self) -> std::io::Result<i32> {
        self.join
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("server thread panicked")))
    }
}

/// Starts a server on a new thread and waits until it listens.
pub fn spawn_server(
    config: Config,
    generator: GeneratorFactory,
    resolver: Box<dyn ModelResolver>,
) -> Result<ServerThread, AppError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let join = std::thread::Builder::new()
        .name("runai-server".into())
        .spawn(move || {
            let system = System::new();
            let started = system.block_on(start(config, generator, resolver));
            let ok = started.is_ok();
            let _ = tx.send(started);
            if !ok {
                return Ok(1);
            }
            system.run_with_code()
        })
        .map_err(AppError::Thread)?;
    let handle = rx.recv().map_err(|_| AppError::NotReady)??;
    Ok(ServerThread {
        local_addr: handle.local_addr,
        http_addr: handle.http_addr,
        handle,
        join,
    })
}
