//! `ShutdownActor`: counts sessions, runs the `--timeout` idle shutdown, honours the quit
//! packet (loopback peers only unless configured), and drives the drain: stop accepting,
//! let the running job finish (or cancel it after the grace period), close every session
//! after its final message, then stop the actix system with the exit code. The decisions are
//! plain code in `phases.rs`; this file sends the messages and arms the timers they ask for.
//! Never exits the process itself; `main` returns the code.

mod phases;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use self::phases::{Action, Phases};
use crate::messages::listener::{CloseAllSessions, StopAccepting};
use crate::messages::shutdown::{
    AttachActors, BeginDrain, QuitRequested, SessionClosed, SessionOpened, WorkerGaveUp, WorkerIdle,
};
use crate::messages::worker::DrainWorker;

pub(crate) use self::phases::ShutdownSettings;

pub(crate) struct ShutdownActor {
    phases: Phases,
    attached: Option<AttachActors>,
    /// A read-only mirror of the session count for observers outside the actor system
    /// (tests, embedders): readable from any thread without a message round trip.
    sessions_gauge: Arc<AtomicUsize>,
}

impl ShutdownActor {
    pub(crate) fn new(settings: ShutdownSettings) -> Self {
        ShutdownActor {
            phases: Phases::new(settings),
            attached: None,
            sessions_gauge: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The open-session count, kept current by the actor.
    pub(crate) fn sessions_gauge(&self) -> Arc<AtomicUsize> {
        self.sessions_gauge.clone()
    }

    /// Carries out what the phases decided.
    fn perform(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        self.sessions_gauge
            .store(self.phases.sessions(), Ordering::SeqCst);
        for action in actions {
            match action {
                Action::Arm { after, timer } => {
                    ctx.run_later(after, move |act, ctx| {
                        let next = act.phases.timer_fired(timer);
                        act.perform(next, ctx);
                    });
                }
                Action::StopAccepting => {
                    if let Some(a) = &self.attached {
                        a.stop_accepting.do_send(StopAccepting);
                    }
                }
                Action::DrainWorker { grace } => match &self.attached {
                    Some(a) => a.drain_worker.do_send(DrainWorker { grace }),
                    None => ctx.notify(WorkerIdle),
                },
                Action::CloseSessions { reason } => {
                    if let Some(a) = &self.attached {
                        a.close_sessions.do_send(CloseAllSessions { reason });
                    }
                }
                Action::Exit { code } => System::current().stop_with_code(code),
            }
        }
    }
}

impl Actor for ShutdownActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let actions = self.phases.started();
        self.perform(actions, ctx);
    }
}

impl Handler<AttachActors> for ShutdownActor {
    type Result = ();

    fn handle(&mut self, msg: AttachActors, _ctx: &mut Context<Self>) {
        self.attached = Some(msg);
    }
}

/// Messages that are plain inputs of the phases: each handler feeds one and performs what
/// it returns.
macro_rules! phase_inputs {
    ($($msg:ty => |$phases:ident, $m:pat_param| $input:expr;)*) => {$(
        impl Handler<$msg> for ShutdownActor {
            type Result = ();

            fn handle(&mut self, msg: $msg, ctx: &mut Context<Self>) {
                let $m = msg;
                let $phases = &mut self.phases;
                let actions = $input;
                self.perform(actions, ctx);
            }
        }
    )*};
}

phase_inputs! {
    SessionOpened => |phases, _| phases.session_opened();
    SessionClosed => |phases, _| phases.session_closed();
    BeginDrain => |phases, m| phases.begin_drain(&m.reason, m.exit_code, m.force);
    WorkerGaveUp => |phases, m| phases.begin_drain(&m.reason, 1, false);
    WorkerIdle => |phases, _| phases.worker_idle();
}

/// The quit packet shuts the server down only from the machine itself, unless configured.
/// IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`) counts as loopback.
pub(crate) fn quit_allowed(peer: std::net::SocketAddr, allow_remote_quit: bool) -> bool {
    crate::net::allow::is_loopback(peer.ip()) || allow_remote_quit
}

impl Handler<QuitRequested> for ShutdownActor {
    type Result = ();

    fn handle(&mut self, msg: QuitRequested, ctx: &mut Context<Self>) {
        if quit_allowed(msg.peer, self.phases.settings().allow_remote_quit) {
            let actions = self.phases.begin_drain("quit packet", 0, false);
            self.perform(actions, ctx);
        } else {
            log::warn!(
                "ignored quit packet from non-loopback peer {} (allow_remote_quit is off)",
                msg.peer
            );
        }
    }
}

/// Runs a closure on the shutdown actor's system (used to install signal handlers on a
/// server that runs on another thread).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RunOnSystem(pub(crate) Box<dyn FnOnce() + Send>);

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
