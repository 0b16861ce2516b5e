//! `ShutdownActor`: counts sessions, runs the `--timeout` idle shutdown, honours the quit
//! packet (loopback peers only unless configured), and drives the drain: stop accepting,
//! let the running job finish (or cancel it after the grace period), close every session
//! after its final message, then stop the actix system with the exit code. Never exits the
//! process itself; `main` returns the code.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::messages::listener::{CloseAllSessions, StopAccepting};
use crate::messages::shutdown::{
    AttachActors, BeginDrain, QuitRequested, SessionClosed, SessionOpened, WorkerGaveUp, WorkerIdle,
};
use crate::messages::worker::DrainWorker;

/// How long closing sessions may take to flush their last messages.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ShutdownSettings {
    pub timeout: bool,
    pub startup_grace: Duration,
    pub idle: Duration,
    pub drain_grace: Duration,
    pub allow_remote_quit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Waiting for the worker to go idle.
    Draining,
    /// Waiting for sessions to flush and close.
    Closing,
    Done,
}

pub struct ShutdownActor {
    settings: ShutdownSettings,
    attached: Option<AttachActors>,
    sessions: usize,
    /// A read-only mirror of `sessions` for observers outside the actor system (tests,
    /// embedders): readable from any thread without a message round trip.
    sessions_gauge: Arc<AtomicUsize>,
    ever_connected: bool,
    idle_epoch: u64,
    phase: Phase,
    exit_code: i32,
    reason: String,
}

impl ShutdownActor {
    pub fn new(settings: ShutdownSettings) -> Self {
        ShutdownActor {
            settings,
            attached: None,
            sessions: 0,
            sessions_gauge: Arc::new(AtomicUsize::new(0)),
            ever_connected: false,
            idle_epoch: 0,
            phase: Phase::Running,
            exit_code: 0,
            reason: String::new(),
        }
    }

    /// The open-session count, kept current by the actor.
    pub fn sessions_gauge(&self) -> Arc<AtomicUsize> {
        self.sessions_gauge.clone()
    }

    fn begin_drain(&mut self, reason: &str, exit_code: i32, force: bool, ctx: &mut Context<Self>) {
        self.exit_code = self.exit_code.max(exit_code);
        if self.phase != Phase::Running {
            if force {
                log::warn!("second shutdown request: exiting now");
                self.finish();
            }
            return;
        }
        log::info!("shutting down: {reason}");
        self.reason = reason.to_string();
        self.phase = Phase::Draining;
        if let Some(a) = &self.attached {
            a.stop_accepting.do_send(StopAccepting);
        }
        match &self.attached {
            Some(a) => a.drain_worker.do_send(DrainWorker {
                grace: if force {
                    Duration::ZERO
                } else {
                    self.settings.drain_grace
                },
            }),
            None => ctx.notify(WorkerIdle),
        }
        // Belt and braces: never hang forever on a wedged worker.
        let limit = self.settings.drain_grace + FLUSH_LIMIT * 2;
        ctx.run_later(limit, |act, _| {
            if act.phase != Phase::Done {
                log::error!("drain did not complete in time; exiting");
                act.finish();
            }
        });
    }

    fn finish(&mut self) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        log::info!("exiting with code {}", self.exit_code);
        System::current().stop_with_code(self.exit_code);
    }

    fn arm_idle_timer(&mut self, after: Duration, ctx: &mut Context<Self>) {
        self.idle_epoch += 1;
        let epoch = self.idle_epoch;
        ctx.run_later(after, move |act, ctx| {
            if act.idle_epoch == epoch && act.sessions == 0 && act.phase == Phase::Running {
                let why = if act.ever_connected {
                    "idle timeout: the last client left"
                } else {
                    "idle timeout: no client connected"
                };
                act.begin_drain(why, 0, false, ctx);
            }
        });
    }
}

impl Actor for ShutdownActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.settings.timeout {
            let grace = self.settings.startup_grace;
            self.arm_idle_timer(grace, ctx);
        }
    }
}

impl Handler<AttachActors> for ShutdownActor {
    type Result = ();

    fn handle(&mut self, msg: AttachActors, _ctx: &mut Context<Self>) {
        self.attached = Some(msg);
    }
}

impl Handler<SessionOpened> for ShutdownActor {
    type Result = ();

    fn handle(&mut self, _msg: SessionOpened, _ctx: &mut Context<Self>) {
        self.sessions += 1;
        self.sessions_gauge.store(self.sessions, Ordering::SeqCst);
        self.ever_connected = true;
        // Invalidates any pending idle timer.
        self.idle_epoch += 1;
    }
}

impl Handler<SessionClosed> for ShutdownActor {
    type Result = ();

    fn handle(&mut self, _msg: SessionClosed, ctx: &mut Context<Self>) {
        self.sessions = self.sessions.saturating_sub(1);
        self.sessions_gauge.store(self.sessions, Ordering::SeqCst);
        if self.sessions > 0 {
            return;
        }
        match self.phase {
            Phase::Running if self.settings.timeout => {
                let idle = self.settings.idle;
                self.arm_idle_timer(idle, ctx);
            }
            Phase::Closing => self.finish(),
            _ => {}
        }
    }
}

/// The quit packet shuts the server down only from the machine itself, unless configured.
/// IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`) counts as loopback.
pub fn quit_allowed(peer: std::net::SocketAddr, allow_remote_quit: bool) -> bool {
    crate::net::allow::is_loopback(peer.ip()) || allow_remote_quit
}

impl Handler<QuitRequested> for ShutdownActor {
    type Result = ();

    fn handle(&mut self, msg: QuitRequested, ctx: &mut Context<Self>) {
        if quit_allowed(msg.peer, self.settings.allow_remote_quit) {
            self.begin_drain("quit packet", 0, false, ctx);
        } else {
            log::warn!(
                "ignored quit packet from non-loopback peer {} (allow_remote_quit is off)",
                msg.peer
            );
        }
    }
}

impl Handler<BeginDrain> for ShutdownActor {
    type Result = ();

    fn handle(&mut self, msg: BeginDrain, ctx: &mut Context<Self>) {
        self.begin_drain(&msg.reason, msg.exit_code, msg.force, ctx);
    }
}

impl Handler<WorkerGaveUp> for ShutdownActor {
    type Result = ();

    fn handle(&mut self, msg: WorkerGaveUp, ctx: &mut Context<Self>) {
        self.begin_drain(&msg.reason, 1, false, ctx);
    }
}

impl Handler<WorkerIdle> for ShutdownActor {
    type Result = ();

    fn handle(&mut self, _msg: WorkerIdle, ctx: &mut Context<Self>) {
        if self.phase != Phase::Draining {
            return;
        }
        self.phase = Phase::Closing;
        if self.sessions == 0 {
            self.finish();
            return;
        }
        if let Some(a) = &self.attached {
            a.close_sessions.do_send(CloseAllSessions {
                reason: self.reason.clone(),
            });
        }
        ctx.run_later(FLUSH_LIMIT, |act, _| act.finish());
    }
}

/// Runs a closure on the shutdown actor's system (used to install signal handlers on a
/// server that runs on another thread).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunOnSystem(pub Box<dyn FnOnce() + Send>);

impl Handler<RunOnSystem> for ShutdownActor {
    type Result = ();

    fn handle(&mut self, msg: RunOnSystem, _ctx: &mut Context<Self>) {
        (msg.0)();
    }
}

#[cfg(test)]
mod tests {
    use super::quit_allowed;

    #[test]
    fn quit_only_from_loopback_unless_allowed() {
        let local = "127.0.0.1:5000".parse().unwrap();
        let mapped = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let v6 = "[::1]:5000".parse().unwrap();
        let lan = "192.168.1.20:5000".parse().unwrap();
        assert!(quit_allowed(local, false));
        assert!(quit_allowed(mapped, false));
        assert!(quit_allowed(v6, false));
        assert!(!quit_allowed(lan, false));
        assert!(quit_allowed(lan, true));
    }
}
