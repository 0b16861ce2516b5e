//! `SessionActor`: one per connection, over plain TCP or TLS (handshake first, bounded; see
//! `net::transport`), behind the token gate when one is configured. A reader task assembles
//! packets and parses and validates requests off the reactor (`spawn_blocking`), in order;
//! the actor resolves the model, submits jobs, answers control requests, and queues every
//! reply for a writer task that writes packet by packet (over plain TCP with the aligned
//! writer of `runai_wire::aligned`, so the plugin's `recv(1024)` sees every packet whole).
//! Bounded in every direction: message size (smaller before authentication), mid-message
//! read timeout, idle time between messages (while it has no job), outgoing bytes and write
//! timeout. `convert`, the one disk write, only from loopback or after the token. Bad input
//! never ends the session. Never touches candle, never logs prompts,
//! image data or the token.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use runai_wire::aligned::{aligned_split, PacketWrite, PlainPackets};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::actors::gpu_worker::GpuWorkerActor;
use crate::actors::listener::ListenerActor;
use crate::actors::model_registry::ModelRegistryActor;
use crate::actors::shutdown::ShutdownActor;
use crate::engine::client_text::without_backtrace;
use crate::engine::GenerateJob;
use crate::messages::listener::SessionEnded;
use crate::messages::registry::{
    ConvertModel, ListAddOns, ListModels, RegistryHealth, ResolveModel, REGISTRY_DOWN,
};
use crate::messages::session::{CloseSession, JobEvent, JobUpdate};
use crate::messages::shutdown::QuitRequested;
use crate::messages::worker::{CancelJobs, GetWorkerStatus, SessionGone, SubmitJob};
use crate::messages::SessionId;
use crate::net::convert_gate::{convert_allowed, convert_refusal};
use crate::net::secret::Secret;
use crate::net::transport::{tls_handshake, Incoming, QuickAck};
use crate::protocol::assembler::{Assembler, Frame};
use crate::protocol::error::{ErrorCode, RequestError};
use crate::protocol::request::{parse_request, Request};
use crate::protocol::responses::{self, ModelEntry};
use crate::protocol::validate::{validate_generate, Limits, ValidGenerateRequest};
use crate::protocol::{frame_json, RUNAI_VERSION};

/// Per-connection limits, shared by all sessions.
#[derive(Debug, Clone)]
pub(crate) struct SessionSettings {
    pub(crate) packet_size: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    /// Close a session with no job, no convert and no message for this long; `None` = never.
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_outgoing_bytes: usize,
    pub(crate) limits: Limits,
    /// When set, the first message must be `auth` with this token, within `read_timeout`.
    pub(crate) token: Option<Secret>,
    /// Set when the model registry gave up: `ping` and `models` report it.
    pub(crate) registry_health: RegistryHealth,
}

/// Largest first message before authentication: `auth` is tiny, and an unauthenticated peer
/// must not make the server buffer `max_message_bytes`.
const PRE_AUTH_MESSAGE_BYTES: usize = 64 * 1024;

/// Packets handed to the writer at a time; the write timeout applies to each run.
const WRITE_RUN_PACKETS: usize = 64;

/// Longest a TLS handshake may take (it holds a connection slot meanwhile).
const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// What the reader task hands the actor, in arrival order.
#[derive(Message)]
#[rtype(result = "()")]
enum Inbound {
    Generate(Box<ValidGenerateRequest>),
    Control(Request),
    Refused(RequestError),
    CancelPacket,
    QuitPacket,
    TooLarge(usize),
    Ended(String),
}

#[derive(Message)]
#[rtype(result = "()")]
struct WriterEnded {
    flushed: bool,
}

/// What the legacy protocol echoes back in a job's replies; kept by the session (the
/// worker never sees it), one entry per submitted job, in submission order per job id.
#[derive(Clone)]
struct LegacyEcho {
    reqtype: &'static str,
    pos_x: Value,
    pos_y: Value,
}

pub(crate) struct SessionActor {
    echoes: HashMap<String, VecDeque<LegacyEcho>>,
    id: SessionId,
    peer: SocketAddr,
    settings: Arc<SessionSettings>,
    conn: Option<Incoming>,
    out: Option<mpsc::UnboundedSender<Vec<u8>>>,
    queued_bytes: Arc<AtomicUsize>,
    reader: Option<actix_rt::task::JoinHandle<()>>,
    writer: Option<actix_rt::task::JoinHandle<()>>,
    worker: Addr<GpuWorkerActor>,
    registry: Addr<ModelRegistryActor>,
    shutdown: Addr<ShutdownActor>,
    listener: Addr<ListenerActor>,
    next_job: u64,
    authorized: bool,
    /// Jobs and conversions asked for and not yet answered in full; while any is pending the
    /// session is not idle (the plugin waits silently for its image).
    pending: usize,
    /// When the client last sent something or its last pending request ended.
    last_activity: Instant,
}

impl SessionActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: SessionId,
        peer: SocketAddr,
        conn: Incoming,
        settings: Arc<SessionSettings>,
        worker: Addr<GpuWorkerActor>,
        registry: Addr<ModelRegistryActor>,
        shutdown: Addr<ShutdownActor>,
        listener: Addr<ListenerActor>,
    ) -> Self {
        SessionActor {
            echoes: HashMap::new(),
            id,
            peer,
            settings,
            conn: Some(conn),
            out: None,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            reader: None,
            writer: None,
            worker,
            registry,
            shutdown,
            listener,
            next_job: 1,
            authorized: false,
            pending: 0,
            last_activity: Instant::now(),
        }
    }

    /// Checks idleness every so often; an idle session gets `closing` and is closed.
    fn watch_idle(&mut self, ctx: &mut Context<Self>) {
        let Some(limit) = self.settings.idle_timeout else {
            return;
        };
        let every = (limit / 8).clamp(Duration::from_millis(10), Duration::from_secs(5));
        ctx.run_interval(every, move |act, ctx| {
            if act.out.is_some() && act.pending == 0 && act.last_activity.elapsed() >= limit {
                log::info!("session {}: idle for {limit:?}; closing", act.id);
                let reason = format!(
                    "idle for {} s with no job; reconnect to continue",
                    limit.as_secs_f64()
                );
                act.send_value(&responses::closing(&reason), ctx);
                act.close_after_flush(ctx);
            }
        });
    }

    /// A pending job or conversion got its final answer.
    fn finished_one(&mut self) {
        self.pending = self.pending.saturating_sub(1);
        self.last_activity = Instant::now();
    }

    fn send_value(&mut self, value: &Value, ctx: &mut Context<Self>) {
        let bytes = frame_json(value, self.settings.packet_size);
        self.send_bytes(bytes, ctx);
    }

    fn send_error(&mut self, e: &RequestError, ctx: &mut Context<Self>) {
        log::debug!("session {}: refused request: {}", self.id, e.code);
        let v = responses::error(
            e.code,
            &e.message,
            e.job_id.as_deref(),
            e.reqtype.as_deref(),
        );
        self.send_value(&v, ctx);
    }

    fn send_bytes(&mut self, bytes: Vec<u8>, ctx: &mut Context<Self>) {
        let Some(out) = &self.out else {
            return;
        };
        let queued = self.queued_bytes.load(Ordering::SeqCst);
        // One message bigger than the bound still goes out to a client that keeps up.
        if queued > 0 && queued + bytes.len() > self.settings.max_outgoing_bytes {
            log::warn!(
                "session {}: client is not reading ({queued} bytes pending); dropping it",
                self.id
            );
            self.out = None;
            ctx.stop();
            return;
        }
        self.queued_bytes.fetch_add(bytes.len(), Ordering::SeqCst);
        if out.send(bytes).is_err() {
            ctx.stop();
        }
    }

    /// Stops reading and lets the writer flush what is queued, then the actor stops.
    fn close_after_flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        self.out = None;
        if self.writer.is_none() {
            ctx.stop();
        }
    }

    fn refuse_unauthorized(&mut self, ctx: &mut Context<Self>) {
        log::warn!("session {}: not authorized; closing", self.id);
        let e = RequestError::new(
            ErrorCode::Unauthorized,
            "this server requires {\"action\": \"auth\", \"token\": ...} first",
        );
        self.send_error(&e, ctx);
        self.close_after_flush(ctx);
    }

    fn handle_generate(&mut self, req: ValidGenerateRequest, ctx: &mut Context<Self>) {
        let job_id = req.job_id.clone().unwrap_or_else(|| {
            let id = format!("{}-{}", self.id, self.next_job);
            self.next_job += 1;
            id
        });
        let reqtype = req.action.as_str();
        let resolve = self.registry.send(ResolveModel {
            requested: req.model.clone(),
        });
        let session = self.id;
        // `wait` keeps this session's requests in order: the next message is handled only
        // after this job is submitted.
        ctx.wait(resolve.into_actor(self).map(move |res, act, ctx| {
            let model = match res {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    let err =
                        RequestError::new(ErrorCode::from(&e), without_backtrace(&e.to_string()))
                            .for_job(Some(job_id), Some(reqtype.to_string()));
                    act.send_error(&err, ctx);
                    return;
                }
                Err(_) => {
                    let err = RequestError::new(ErrorCode::Unavailable, REGISTRY_DOWN)
                        .for_job(Some(job_id), Some(reqtype.to_string()));
                    act.send_error(&err, ctx);
                    return;
                }
            };
            // Every submitted job ends in exactly one terminal event.
            act.pending += 1;
            act.echoes
                .entry(job_id.clone())
                .or_default()
                .push_back(LegacyEcho {
                    reqtype,
                    pos_x: req.pos_x,
                    pos_y: req.pos_y,
                });
            act.worker.do_send(SubmitJob {
                session,
                job_id,
                reqtype,
                job: GenerateJob {
                    model,
                    params: req.params,
                    nsfw_filter: req.nsfw_filter,
                },
                events: ctx.address().recipient(),
            });
        }));
    }

    /// Runs on the registry's thread; `spawn` (not `wait`) so this session's other requests,
    /// a cancel or a ping included, are not held up by a long conversion. Ends in one
    /// Part 2 `done` or one `error`, never a legacy-looking message.
    fn handle_convert(&mut self, job_id: Option<String>, model: String, ctx: &mut Context<Self>) {
        let has_token = self.settings.token.is_some();
        if !convert_allowed(self.peer.ip(), has_token && self.authorized) {
            log::warn!(
                "session {}: convert refused for peer {}",
                self.id,
                self.peer
            );
            let err = RequestError::new(ErrorCode::Unauthorized, convert_refusal(has_token))
                .for_job(job_id, Some("convert".to_string()));
            self.send_error(&err, ctx);
            return;
        }
        let started = Instant::now();
        let convert = self.registry.send(ConvertModel { requested: model });
        self.pending += 1;
        ctx.spawn(convert.into_actor(self).map(move |res, act, ctx| {
            act.finished_one();
            let reqtype = Some("convert".to_string());
            match res {
                Ok(Ok(m)) => {
                    let elapsed = started.elapsed().as_millis() as u64;
                    let v = responses::converted(job_id.as_deref(), &m.name, elapsed);
                    act.send_value(&v, ctx);
                }
                Ok(Err(e)) => {
                    let text = without_backtrace(&e.to_string());
                    let err = RequestError::new(ErrorCode::from(&e), text).for_job(job_id, reqtype);
                    act.send_error(&err, ctx);
                }
                Err(_) => {
                    let err = RequestError::new(ErrorCode::Unavailable, REGISTRY_DOWN)
                        .for_job(job_id, reqtype);
                    act.send_error(&err, ctx);
                }
            }
        }));
    }

    fn handle_control(&mut self, req: Request, ctx: &mut Context<Self>) {
        match req {
            Request::Generate(_) => {}
            Request::Cancel { job_id } => self.worker.do_send(CancelJobs {
                session: self.id,
                job_id,
            }),
            Request::Ping => {
                let status = self.worker.send(GetWorkerStatus);
                ctx.wait(status.into_actor(self).map(|res, act, ctx| {
                    let v = match res {
                        _ if act.settings.registry_health.is_down() => {
                            responses::error(ErrorCode::Unavailable, REGISTRY_DOWN, None, None)
                        }
                        Ok(s) => {
                            responses::pong(RUNAI_VERSION, s.queue, &s.device, &s.loaded_models)
                        }
                        Err(_) => {
                            responses::error(ErrorCode::Unavailable, "worker is down", None, None)
                        }
                    };
                    act.send_value(&v, ctx);
                }));
            }
            Request::Models => {
                let list = self.registry.send(ListModels);
                let add_ons = self.registry.send(ListAddOns);
                let both =
                    actix::fut::wrap_future::<_, Self>(async move { (list.await, add_ons.await) });
                ctx.wait(both.map(|(res, add_ons), act, ctx| {
                    let models = match res {
                        Ok(Ok(models)) => models,
                        Ok(Err(e)) => {
                            act.send_error(
                                &RequestError::new(ErrorCode::from(&e), e.to_string()),
                                ctx,
                            );
                            return;
                        }
                        Err(_) => {
                            let err = RequestError::new(ErrorCode::Unavailable, REGISTRY_DOWN);
                            act.send_error(&err, ctx);
                            return;
                        }
                    };
                    let paths: Vec<String> = models
                        .iter()
                        .map(|m| m.path.to_string_lossy().to_string())
                        .collect();
                    let entries: Vec<ModelEntry<'_>> = models
                        .iter()
                        .zip(&paths)
                        .map(|(m, path)| ModelEntry {
                            name: &m.name,
                            path,
                            version: m.version.as_str(),
                            kind: m.kind.as_str(),
                            format: m.format.as_str(),
                        })
                        .collect();
                    // The add-on folders are optional: a failure there lists none.
                    let add_ons = match add_ons {
                        Ok(Ok(a)) => a,
                        _ => Default::default(),
                    };
                    let v = responses::models(&entries, &add_ons);
                    act.send_value(&v, ctx);
                }));
            }
            Request::Update => self.send_value(&responses::upgrade_complete(), ctx),
            Request::Convert { job_id, model } => self.handle_convert(job_id, model, ctx),
            Request::Auth { token } => {
                let ok = match &self.settings.token {
                    None => true,
                    Some(expected) => expected.matches(&token),
                };
                if ok {
                    self.authorized = true;
                    let mut m = serde_json::Map::new();
                    m.insert("event".into(), Value::from("auth"));
                    m.insert("ok".into(), Value::Bool(true));
                    self.send_value(&Value::Object(m), ctx);
                } else {
                    self.refuse_unauthorized(ctx);
                }
            }
        }
    }

    /// Starts the reader and writer over an established transport and greets the client.
    fn begin<R, W>(&mut self, rd: R, wr: W, ctx: &mut Context<Self>)
    where
        R: AsyncRead + QuickAck + Unpin + Send + 'static,
        W: PacketWrite + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        self.out = Some(tx);
        let me = ctx.address();
        self.writer = Some(actix_rt::spawn(write_loop(
            wr,
            rx,
            self.settings.clone(),
            self.queued_bytes.clone(),
            me.clone(),
        )));
        self.reader = Some(actix_rt::spawn(read_loop(rd, self.settings.clone(), me)));
        self.send_value(&responses::versions(RUNAI_VERSION), ctx);
        self.last_activity = Instant::now();
        self.watch_idle(ctx);
        if !self.authorized {
            // A peer that never authenticates must not hold a connection slot forever.
            ctx.run_later(self.settings.read_timeout, |act, ctx| {
                if !act.authorized && act.out.is_some() {
                    log::info!(
                        "session {}: no auth within {:?}",
                        act.id,
                        act.settings.read_timeout
                    );
                    act.refuse_unauthorized(ctx);
                }
            });
        }
    }

    /// The legacy/Part 2 reply for a job event, with the request's echo fields; the echo is
    /// dropped with the job's last event.
    fn legacy_reply(&mut self, job_id: &str, update: JobUpdate, terminal: bool) -> Value {
        let queue = self.echoes.get_mut(job_id);
        let echo = match (queue, terminal) {
            (Some(q), true) => q.pop_front(),
            (Some(q), false) => q.front().cloned(),
            (None, _) => None,
        };
        if self.echoes.get(job_id).is_some_and(|q| q.is_empty()) {
            self.echoes.remove(job_id);
        }
        let echo = echo.unwrap_or(LegacyEcho {
            reqtype: "",
            pos_x: Value::Null,
            pos_y: Value::Null,
        });
        let reqtype = echo.reqtype;
        match update {
            JobUpdate::Queued { position } => responses::queued(job_id, reqtype, position),
            JobUpdate::Progress { step, total } => {
                responses::progress(step, total, reqtype, job_id)
            }
            JobUpdate::Image { png, seed, nsfw } => responses::image(
                responses::png_base64(&png),
                reqtype,
                &echo.pos_x,
                &echo.pos_y,
                job_id,
                seed,
                nsfw,
            ),
            JobUpdate::Done { images, elapsed_ms } => {
                responses::done(job_id, reqtype, images, elapsed_ms)
            }
            JobUpdate::Cancelled => responses::cancelled(job_id),
            JobUpdate::Failed { kind, message } => {
                responses::error(kind, &message, Some(job_id), Some(reqtype))
            }
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.authorized = self.settings.token.is_none();
        match self.conn.take() {
            None => ctx.stop(),
            Some(Incoming::Plain(stream)) => {
                // The plugin reads with recv(packet_size): every packet must reach it whole.
                let (rd, wr) = aligned_split(stream, self.settings.packet_size);
                self.begin(rd, wr, ctx);
            }
            Some(Incoming::Tls { stream, acceptor }) => {
                let limit = self.settings.read_timeout.min(TLS_HANDSHAKE_LIMIT);
                let handshake = tls_handshake(stream, acceptor, self.peer, limit);
                // `wait`: nothing else (not even a drain's `closing`) is handled before the
                // stream exists; the limit bounds that.
                ctx.wait(handshake.into_actor(self).map(|res, act, ctx| match res {
                    Ok(tls) => {
                        let (rd, wr) = tokio::io::split(tls);
                        act.begin(rd, PlainPackets(wr), ctx);
                    }
                    Err(e) => {
                        log::info!("session {}: {e}", act.id);
                        ctx.stop();
                    }
                }));
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        if let Some(w) = self.writer.take() {
            w.abort();
        }
        self.worker.do_send(SessionGone { session: self.id });
        self.listener.do_send(SessionEnded { session: self.id });
    }
}

impl Handler<Inbound> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        self.last_activity = Instant::now();
        if !self.authorized {
            match msg {
                Inbound::Control(Request::Auth { .. }) | Inbound::Ended(_) => {}
                _ => {
                    self.refuse_unauthorized(ctx);
                    return;
                }
            }
        }
        match msg {
            Inbound::Generate(req) => self.handle_generate(*req, ctx),
            Inbound::Control(req) => self.handle_control(req, ctx),
            Inbound::Refused(e) => self.send_error(&e, ctx),
            Inbound::CancelPacket => self.worker.do_send(CancelJobs {
                session: self.id,
                job_id: None,
            }),
            Inbound::QuitPacket => self.shutdown.do_send(QuitRequested { peer: self.peer }),
            Inbound::TooLarge(limit) => {
                log::warn!("session {}: message over {limit} bytes; closing", self.id);
                let e = RequestError::new(
                    ErrorCode::TooLarge,
                    format!("message exceeds the limit of {limit} bytes"),
                );
                self.send_error(&e, ctx);
                self.close_after_flush(ctx);
            }
            Inbound::Ended(why) => {
                log::debug!("session {}: {why}", self.id);
                ctx.stop();
            }
        }
    }
}

impl Handler<JobEvent> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: JobEvent, ctx: &mut Context<Self>) {
        let terminal = msg.is_terminal();
        let value = self.legacy_reply(&msg.job_id, msg.update, terminal);
        if terminal {
            log::debug!("session {}: job {} finished", self.id, msg.job_id);
            self.finished_one();
        }
        self.send_value(&value, ctx);
    }
}

impl Handler<CloseSession> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        self.send_value(&responses::closing(&msg.reason), ctx);
        self.close_after_flush(ctx);
    }
}

impl Handler<WriterEnded> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: WriterEnded, ctx: &mut Context<Self>) {
        if !msg.flushed {
            log::warn!(
                "session {}: write failed or timed out; dropping client",
                self.id
            );
        }
        self.writer = None;
        ctx.stop();
    }
}

async fn read_loop<R>(mut rd: R, settings: Arc<SessionSettings>, me: Addr<SessionActor>)
where
    R: AsyncRead + QuickAck + Unpin,
{
    // Until the first frame is handled (the `auth` when a token is required) only a small
    // message is buffered; the actor closes the session if that frame was not a valid auth.
    let mut pre_auth = settings.token.is_some();
    let first_limit = if pre_auth {
        PRE_AUTH_MESSAGE_BYTES.min(settings.max_message_bytes)
    } else {
        settings.max_message_bytes
    };
    let mut asm = Assembler::new(settings.packet_size, first_limit);
    // A read never exceeds this buffer, so a message following the auth in the same read
    // stays under the pre-auth limit until the limit is raised.
    let mut buf = vec![0u8; PRE_AUTH_MESSAGE_BYTES];
    let mut frames = Vec::new();
    loop {
        rd.quick_ack();
        let read = if asm.is_idle() {
            rd.read(&mut buf).await
        } else {
            match tokio::time::timeout(settings.read_timeout, rd.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    me.do_send(Inbound::Ended(
                        "read timeout in the middle of a message".into(),
                    ));
                    return;
                }
            }
        };
        let n = match read {
            Ok(0) => {
                me.do_send(Inbound::Ended("client closed the connection".into()));
                return;
            }
            Ok(n) => n,
            Err(e) => {
                me.do_send(Inbound::Ended(format!("read error: {e}")));
                return;
            }
        };
        let chunk = buf.get(..n).unwrap_or(&[]);
        let pushed = asm.push(chunk, &mut frames);
        for frame in frames.drain(..) {
            let inbound = match frame {
                Frame::Cancel => Inbound::CancelPacket,
                Frame::Quit => Inbound::QuitPacket,
                Frame::Message(bytes) => {
                    let limits = settings.limits;
                    let parsed =
                        tokio::task::spawn_blocking(move || parse_and_validate(&bytes, &limits))
                            .await;
                    match parsed {
                        Ok(i) => i,
                        Err(_) => Inbound::Refused(RequestError::new(
                            ErrorCode::Internal,
                            "request parsing failed",
                        )),
                    }
                }
            };
            if me.send(inbound).await.is_err() {
                return;
            }
            if pre_auth {
                pre_auth = false;
                asm.set_max_message(settings.max_message_bytes);
            }
        }
        if pushed.is_err() {
            let limit = if pre_auth {
                first_limit
            } else {
                settings.max_message_bytes
            };
            let _ = me.send(Inbound::TooLarge(limit)).await;
            return;
        }
    }
}

fn parse_and_validate(bytes: &[u8], limits: &Limits) -> Inbound {
    match parse_request(bytes) {
        Ok(Request::Generate(raw)) => {
            match validate_generate(&raw, limits, &mut || rand::random::<u32>() as u64) {
                Ok(v) => Inbound::Generate(Box::new(v)),
                Err(e) => Inbound::Refused(e),
            }
        }
        Ok(other) => Inbound::Control(other),
        Err(e) => Inbound::Refused(e),
    }
}

async fn write_loop<W: PacketWrite>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    settings: Arc<SessionSettings>,
    queued: Arc<AtomicUsize>,
    me: Addr<SessionActor>,
) {
    let ps = settings.packet_size;
    while let Some(bytes) = rx.recv().await {
        // Through the session's writer (aligned for plain TCP: the plugin recognizes the EOM
        // only as a whole recv), in runs of packets so the timeout bounds each run's progress.
        for run in bytes.chunks(ps * WRITE_RUN_PACKETS) {
            match tokio::time::timeout(settings.write_timeout, wr.write_packets(run, ps)).await {
                Ok(Ok(())) => {}
                _ => {
                    me.do_send(WriterEnded { flushed: false });
                    return;
                }
            }
        }
        queued.fetch_sub(bytes.len(), Ordering::SeqCst);
    }
    let _ = wr.finish().await;
    me.do_send(WriterEnded { flushed: true });
}
