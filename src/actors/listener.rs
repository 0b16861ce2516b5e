//! `ListenerActor`: accepts TCP connections, closes those from peers outside the allow-list
//! before a byte is read or written, enforces `max_client_connections` (extra connections get
//! a `busy` error and are closed at once, existing sessions are untouched), starts one
//! `SessionActor` per connection (over TLS when configured) and keeps their addresses for the
//! drain. Never reads client data itself.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use runai_wire::aligned::{aligned_split, PacketWrite};
use tokio::net::TcpListener;

use crate::actors::gpu_worker::GpuWorkerActor;
use crate::actors::model_registry::ModelRegistryActor;
use crate::actors::session::{SessionActor, SessionSettings};
use crate::actors::shutdown::ShutdownActor;
use crate::messages::listener::{Accepted, CloseAllSessions, SessionEnded, StopAccepting};
use crate::messages::session::CloseSession;
use crate::messages::shutdown::{SessionClosed, SessionOpened};
use crate::messages::SessionId;
use crate::net::allow::AllowList;
use crate::net::transport::Incoming;
use crate::protocol::error::ErrorCode;
use crate::protocol::{frame_json, responses};

/// Who may connect and how: checked per connection by the listener.
#[derive(Clone, Default)]
pub(crate) struct AccessPolicy {
    pub(crate) allow: AllowList,
    /// When set, every connection must complete a TLS handshake first.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

pub(crate) struct ListenerActor {
    listener: Option<TcpListener>,
    access: AccessPolicy,
    accept_task: Option<actix_rt::task::JoinHandle<()>>,
    max_connections: usize,
    settings: Arc<SessionSettings>,
    sessions: HashMap<SessionId, Addr<SessionActor>>,
    next_session: SessionId,
    accepting: bool,
    worker: Addr<GpuWorkerActor>,
    registry: Addr<ModelRegistryActor>,
    shutdown: Addr<ShutdownActor>,
}

impl ListenerActor {
    pub(crate) fn new(
        listener: TcpListener,
        max_connections: usize,
        settings: Arc<SessionSettings>,
        worker: Addr<GpuWorkerActor>,
        registry: Addr<ModelRegistryActor>,
        shutdown: Addr<ShutdownActor>,
        access: AccessPolicy,
    ) -> Self {
        ListenerActor {
            listener: Some(listener),
            access,
            accept_task: None,
            max_connections,
            settings,
            sessions: HashMap::new(),
            next_session: 1,
            accepting: true,
            worker,
            registry,
            shutdown,
        }
    }
}

impl Actor for ListenerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let me = ctx.address();
        let allow = self.access.allow.clone();
        self.accept_task = Some(actix_rt::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if !allow.permits(peer.ip()) {
                            // Dropped unread and unanswered: not even the greeting.
                            log::info!("refused connection from {peer}: not in the allow-list");
                            drop(stream);
                            continue;
                        }
                        if me.send(Accepted { stream, peer }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        log::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(t) = self.accept_task.take() {
            t.abort();
        }
    }
}

impl Handler<Accepted> for ListenerActor {
    type Result = ();

    fn handle(&mut self, msg: Accepted, ctx: &mut Context<Self>) {
        if !self.accepting || self.sessions.len() >= self.max_connections {
            log::warn!(
                "refusing connection from {}: {} of {} sessions in use",
                msg.peer,
                self.sessions.len(),
                self.max_connections
            );
            if self.access.tls.is_some() {
                // A clear-text `busy` would be garbage to a TLS client; just close.
                return;
            }
            let text = if self.accepting {
                format!(
                    "too many connections (limit {}); try again later",
                    self.max_connections
                )
            } else {
                "the server is shutting down".to_string()
            };
            let bytes = frame_json(
                &responses::error(ErrorCode::Busy, &text, None, None),
                self.settings.packet_size,
            );
            let ps = self.settings.packet_size;
            let (_rd, mut out) = aligned_split(msg.stream, ps);
            actix_rt::spawn(async move {
                if out.write_packets(&bytes, ps).await.is_ok() {
                    let _ = out.finish().await;
                }
            });
            return;
        }
        // Nagle off: each packet is its own write; a 1 KiB EOM behind a 1 KiB data packet
        // would otherwise wait for an ACK. (TLS connections need it as much as plain ones.)
        if let Err(e) = msg.stream.set_nodelay(true) {
            log::debug!("set_nodelay failed for {}: {e}", msg.peer);
        }
        let id = self.next_session;
        self.next_session += 1;
        log::info!("session {id}: client {} connected", msg.peer);
        let conn = match &self.access.tls {
            Some(acceptor) => Incoming::Tls {
                stream: msg.stream,
                acceptor: acceptor.clone(),
            },
            None => Incoming::Plain(msg.stream),
        };
        let session = SessionActor::new(
            id,
            msg.peer,
            conn,
            self.settings.clone(),
            self.worker.clone(),
            self.registry.clone(),
            self.shutdown.clone(),
            ctx.address(),
        )
        .start();
        self.sessions.insert(id, session);
        self.shutdown.do_send(SessionOpened);
    }
}

impl Handler<SessionEnded> for ListenerActor {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, _ctx: &mut Context<Self>) {
        if self.sessions.remove(&msg.session).is_some() {
            log::info!("session {}: closed", msg.session);
            self.shutdown.do_send(SessionClosed);
        }
    }
}

impl Handler<StopAccepting> for ListenerActor {
    type Result = ();

    fn handle(&mut self, _msg: StopAccepting, _ctx: &mut Context<Self>) {
        self.accepting = false;
        if let Some(t) = self.accept_task.take() {
            // Dropping the task drops the listening socket: new connections are refused.
            t.abort();
        }
    }
}

impl Handler<CloseAllSessions> for ListenerActor {
    type Result = ();

    fn handle(&mut self, msg: CloseAllSessions, _ctx: &mut Context<Self>) {
        for s in self.sessions.values() {
            s.do_send(CloseSession {
                reason: msg.reason.clone(),
            });
        }
    }
}
