//! Binding and serving: the HTTP listener on `host:http_port` (plain, or TLS with the socket
//! listener's certificate), the routes of both APIs, the access gate, optional CORS, JSON
//! 404s, and the `HttpFront` actor that stops accepting when the drain begins (then passes
//! the drain's `StopAccepting` on to the socket listener). Runs on a few actix-web worker
//! threads; every handler is async and the model work happens on the GPU worker.

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use actix_cors::Cors;
use actix_web::dev::ServerHandle;
use actix_web::middleware::{from_fn, Condition};
use actix_web::web::{self, Data};
use actix_web::{App, HttpServer, ResponseError};

use super::error::ApiError;
use super::state::HttpState;
use super::{a1111, auth, info, models, openai};
use crate::messages::listener::StopAccepting;
use crate::messages::session::ErrorKind;

/// Request-handling threads: handlers only await the worker, so a few are plenty.
const HTTP_WORKERS: usize = 2;

/// Where and how to listen.
pub(crate) struct Binding {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<rustls::ServerConfig>,
    /// Browser origins allowed by CORS; empty = CORS off, `*` = any origin.
    pub(crate) cors_origins: Vec<String>,
    /// How long in-flight requests may run once the drain begins.
    pub(crate) drain_grace: Duration,
}

fn cors(origins: &[String]) -> Cors {
    let base = Cors::default()
        .allow_any_method()
        .allow_any_header()
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        return base.allow_any_origin();
    }
    origins
        .iter()
        .fold(base, |c, o| c.allowed_origin(o.trim_end_matches('/')))
}

fn routes(cfg: &mut web::ServiceConfig) {
    let sd = |path: &str| format!("/sdapi/v1/{path}");
    cfg.route("/health", web::get().to(info::health))
        .route(&sd("txt2img"), web::post().to(a1111::txt2img))
        .route(&sd("img2img"), web::post().to(a1111::img2img))
        .route(&sd("progress"), web::get().to(a1111::progress))
        .route(&sd("interrupt"), web::post().to(a1111::interrupt))
        .route(&sd("skip"), web::post().to(a1111::interrupt))
        .route(&sd("png-info"), web::post().to(a1111::png_info))
        .route(&sd("options"), web::get().to(models::get_options))
        .route(&sd("options"), web::post().to(models::set_options))
        .route(&sd("sd-models"), web::get().to(models::sd_models))
        .route(
            &sd("refresh-checkpoints"),
            web::post().to(models::refresh_checkpoints),
        )
        .route(&sd("samplers"), web::get().to(info::samplers))
        .route(&sd("schedulers"), web::get().to(info::schedulers))
        .route(&sd("upscalers"), web::get().to(info::empty_list))
        .route(&sd("latent-upscale-modes"), web::get().to(info::empty_list))
        .route(&sd("sd-vae"), web::get().to(info::empty_list))
        .route(&sd("loras"), web::get().to(info::loras))
        .route(&sd("embeddings"), web::get().to(info::embeddings))
        .route(&sd("scripts"), web::get().to(info::scripts))
        .route(&sd("cmd-flags"), web::get().to(info::cmd_flags))
        .route(&sd("memory"), web::get().to(info::memory))
        .route(
            "/v1/images/generations",
            web::post().to(openai::generations),
        )
        .route("/v1/images/edits", web::post().to(openai::edits));
}

async fn not_found(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    ApiError::new(
        ErrorKind::UnknownAction,
        format!("no endpoint {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// Binds and starts serving; returns the bound address and the server's handle.
pub(crate) fn start(
    binding: Binding,
    state: HttpState,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let listener = std::net::TcpListener::bind(binding.addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let state = Data::new(state);
    let origins = binding.cors_origins.clone();
    let factory = move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(auth::gate))
            // Outermost, so preflights and refusals carry the CORS headers too.
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .configure(routes)
            .default_service(web::to(not_found))
    };
    let server = HttpServer::new(factory)
        .workers(HTTP_WORKERS)
        .disable_signals()
        .shutdown_timeout(binding.drain_grace.as_secs().max(1));
    let server = match binding.tls {
        Some(mut tls) => {
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            server.listen_rustls_0_23(listener, tls)?
        }
        None => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((local, handle))
}

/// Stops the HTTP server when the drain begins, then passes the message on.
pub(crate) struct HttpFront {
    pub(crate) handle: ServerHandle,
    pub(crate) next: Recipient<StopAccepting>,
}

impl Actor for HttpFront {
    type Context = Context<Self>;
}

impl Handler<StopAccepting> for HttpFront {
    type Result = ();

    fn handle(&mut self, msg: StopAccepting, _ctx: &mut Context<Self>) {
        let handle = self.handle.clone();
        // Graceful: no new connections; requests in flight end with their jobs.
        actix_rt::spawn(async move { handle.stop(true).await });
        self.next.do_send(msg);
    }
}
