//! The shutdown actor's state as plain code: open sessions, the `--timeout` idle timer, and
//! the drain (running -> draining the worker -> closing sessions -> done). Each input returns
//! the actions to take; the actor only performs them (sends messages, arms timers, stops the
//! system). No actix, no clock: tests drive every transition directly.

use std::time::Duration;

/// How long closing sessions may take to flush their last messages.
pub(crate) const FLUSH_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct ShutdownSettings {
    pub(crate) timeout: bool,
    pub(crate) startup_grace: Duration,
    pub(crate) idle: Duration,
    pub(crate) drain_grace: Duration,
    pub(crate) allow_remote_quit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Waiting for the worker to go idle.
    Draining,
    /// Waiting for sessions to flush and close.
    Closing,
    Done,
}

/// The timers the phases ask for; each comes back through `timer_fired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// `--timeout`: nobody came, or the last client left; stale unless `epoch` is current.
    Idle { epoch: u64 },
    /// A wedged drain must not hang forever.
    DrainDeadline,
    /// Closing sessions had their time to flush.
    FlushLimit,
}

/// What the actor must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Call `timer_fired(timer)` after `after`.
    Arm { after: Duration, timer: Timer },
    /// Tell the listener to stop accepting connections.
    StopAccepting,
    /// Let the worker finish its running job within `grace`, then report idle.
    DrainWorker { grace: Duration },
    /// Ask every session to say goodbye and close.
    CloseSessions { reason: String },
    /// Stop the system with this exit code.
    Exit { code: i32 },
}

#[derive(Debug)]
pub(crate) struct Phases {
    settings: ShutdownSettings,
    sessions: usize,
    ever_connected: bool,
    /// Bumped by every session opened and every timer armed; a timer of an older epoch is
    /// stale.
    idle_epoch: u64,
    phase: Phase,
    exit_code: i32,
    reason: String,
}

impl Phases {
    pub(crate) fn new(settings: ShutdownSettings) -> Self {
        Phases {
            settings,
            sessions: 0,
            ever_connected: false,
            idle_epoch: 0,
            phase: Phase::Running,
            exit_code: 0,
            reason: String::new(),
        }
    }

    pub(crate) fn settings(&self) -> &ShutdownSettings {
        &self.settings
    }

    pub(crate) fn sessions(&self) -> usize {
        self.sessions
    }

    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// The server is up: with `--timeout`, the first client has `startup_grace` to arrive.
    pub(crate) fn started(&mut self) -> Vec<Action> {
        if !self.settings.timeout {
            return Vec::new();
        }
        vec![self.arm_idle_timer(self.settings.startup_grace)]
    }

    pub(crate) fn session_opened(&mut self) -> Vec<Action> {
        self.sessions += 1;
        self.ever_connected = true;
        // Invalidates any pending idle timer.
        self.idle_epoch += 1;
        Vec::new()
    }

    pub(crate) fn session_closed(&mut self) -> Vec<Action> {
        self.sessions = self.sessions.saturating_sub(1);
        if self.sessions > 0 {
            return Vec::new();
        }
        match self.phase {
            Phase::Running if self.settings.timeout => {
                vec![self.arm_idle_timer(self.settings.idle)]
            }
            Phase::Closing => self.finish(),
            _ => Vec::new(),
        }
    }

    /// A timer armed by an earlier action ran out.
    pub(crate) fn timer_fired(&mut self, timer: Timer) -> Vec<Action> {
        match timer {
            Timer::Idle { epoch } => self.idle_timer_fired(epoch),
            Timer::DrainDeadline if self.phase != Phase::Done => {
                log::error!("drain did not complete in time; exiting");
                self.finish()
            }
            Timer::DrainDeadline => Vec::new(),
            Timer::FlushLimit => self.finish(),
        }
    }

    /// Only the latest idle timer, with no session open while running, starts a drain.
    fn idle_timer_fired(&mut self, epoch: u64) -> Vec<Action> {
        if epoch != self.idle_epoch || self.sessions > 0 || self.phase != Phase::Running {
            return Vec::new();
        }
        let why = if self.ever_connected {
            "idle timeout: the last client left"
        } else {
            "idle timeout: no client connected"
        };
        self.begin_drain(why, 0, false)
    }

    /// Starts the drain (signal, quit packet, idle timeout, a component that gave up). The
    /// exit code is the highest asked for; a second request only matters when `force`d, and
    /// then exits at once.
    pub(crate) fn begin_drain(&mut self, reason: &str, exit_code: i32, force: bool) -> Vec<Action> {
        self.exit_code = self.exit_code.max(exit_code);
        if self.phase != Phase::Running {
            if force {
                log::warn!("second shutdown request: exiting now");
                return self.finish();
            }
            return Vec::new();
        }
        log::info!("shutting down: {reason}");
        self.reason = reason.to_string();
        self.phase = Phase::Draining;
        let grace = if force {
            Duration::ZERO
        } else {
            self.settings.drain_grace
        };
        vec![
            Action::StopAccepting,
            Action::DrainWorker { grace },
            Action::Arm {
                after: self.settings.drain_grace + FLUSH_LIMIT * 2,
                timer: Timer::DrainDeadline,
            },
        ]
    }

    /// The worker has no running job any more: close the sessions (or exit if none is open).
    pub(crate) fn worker_idle(&mut self) -> Vec<Action> {
        if self.phase != Phase::Draining {
            return Vec::new();
        }
        self.phase = Phase::Closing;
        if self.sessions == 0 {
            return self.finish();
        }
        vec![
            Action::CloseSessions {
                reason: self.reason.clone(),
            },
            Action::Arm {
                after: FLUSH_LIMIT,
                timer: Timer::FlushLimit,
            },
        ]
    }

    fn arm_idle_timer(&mut self, after: Duration) -> Action {
        self.idle_epoch += 1;
        Action::Arm {
            after,
            timer: Timer::Idle {
                epoch: self.idle_epoch,
            },
        }
    }

    fn finish(&mut self) -> Vec<Action> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        self.phase = Phase::Done;
        log::info!("exiting with code {}", self.exit_code);
        vec![Action::Exit {
            code: self.exit_code,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);
    const STARTUP: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(3);

    fn phases(timeout: bool) -> Phases {
        Phases::new(ShutdownSettings {
            timeout,
            startup_grace: STARTUP,
            idle: IDLE,
            drain_grace: GRACE,
            allow_remote_quit: false,
        })
    }

    fn drain_actions(grace: Duration) -> Vec<Action> {
        vec![
            Action::StopAccepting,
            Action::DrainWorker { grace },
            Action::Arm {
                after: GRACE + FLUSH_LIMIT * 2,
                timer: Timer::DrainDeadline,
            },
        ]
    }

    /// The only idle timer in `actions`, checked to run after `after`.
    fn timer(actions: &[Action], after: Duration) -> Timer {
        match actions {
            [Action::Arm {
                after: a,
                timer: t @ Timer::Idle { .. },
            }] if *a == after => *t,
            other => panic!("expected one idle timer of {after:?}, got {other:?}"),
        }
    }

    #[test]
    fn without_timeout_no_idle_timer_is_ever_armed() {
        let mut p = phases(false);
        assert!(p.started().is_empty());
        assert!(p.session_opened().is_empty());
        assert!(p.session_closed().is_empty());
        assert_eq!(p.phase(), Phase::Running);
    }

    #[test]
    fn nobody_connecting_within_the_startup_grace_drains() {
        let mut p = phases(true);
        let idle = timer(&p.started(), STARTUP);
        assert_eq!(p.timer_fired(idle), drain_actions(GRACE));
        assert_eq!(p.phase(), Phase::Draining);
        assert_eq!(p.reason, "idle timeout: no client connected");
    }

    #[test]
    fn a_session_invalidates_the_pending_timer_and_the_last_to_leave_arms_the_idle_one() {
        let mut p = phases(true);
        let startup = timer(&p.started(), STARTUP);
        p.session_opened();
        p.session_opened();
        assert!(p.timer_fired(startup).is_empty(), "stale timer");
        assert!(p.session_closed().is_empty(), "one session is still open");
        let idle = timer(&p.session_closed(), IDLE);
        assert_eq!(p.sessions(), 0);
        // A client comes and goes again: only the newest timer counts.
        p.session_opened();
        let newer = timer(&p.session_closed(), IDLE);
        assert!(p.timer_fired(idle).is_empty());
        assert_eq!(p.timer_fired(newer), drain_actions(GRACE));
        assert_eq!(p.reason, "idle timeout: the last client left");
    }

    #[test]
    fn an_idle_timer_does_nothing_while_a_session_is_open_or_after_the_drain_began() {
        let mut p = phases(true);
        let idle = timer(&p.started(), STARTUP);
        p.sessions = 1; // as if the open message were still in flight
        assert!(p.timer_fired(idle).is_empty());
        p.sessions = 0;
        p.begin_drain("signal", 0, false);
        assert!(p.timer_fired(idle).is_empty());
        assert_eq!(p.reason, "signal");
    }

    #[test]
    fn drain_with_sessions_waits_for_the_worker_then_closes_them_then_exits() {
        let mut p = phases(false);
        p.session_opened();
        p.session_opened();
        assert!(p.worker_idle().is_empty(), "not draining yet");
        assert_eq!(p.begin_drain("quit packet", 0, false), drain_actions(GRACE));
        assert!(p.session_opened().is_empty());
        assert!(
            p.session_closed().is_empty(),
            "draining: closing waits for the worker"
        );
        assert_eq!(
            p.worker_idle(),
            vec![
                Action::CloseSessions {
                    reason: "quit packet".into()
                },
                Action::Arm {
                    after: FLUSH_LIMIT,
                    timer: Timer::FlushLimit
                }
            ]
        );
        assert_eq!(p.phase(), Phase::Closing);
        assert!(
            p.worker_idle().is_empty(),
            "a second idle report changes nothing"
        );
        assert!(p.session_closed().is_empty());
        assert_eq!(p.session_closed(), vec![Action::Exit { code: 0 }]);
        assert_eq!(p.phase(), Phase::Done);
        assert!(p.timer_fired(Timer::FlushLimit).is_empty(), "exits once");
        assert!(p.timer_fired(Timer::DrainDeadline).is_empty());
    }

    #[test]
    fn drain_without_sessions_exits_when_the_worker_is_idle() {
        let mut p = phases(false);
        p.begin_drain("signal", 0, false);
        assert_eq!(p.worker_idle(), vec![Action::Exit { code: 0 }]);
    }

    #[test]
    fn sessions_that_never_close_are_cut_off_by_the_flush_limit() {
        let mut p = phases(false);
        p.session_opened();
        p.begin_drain("signal", 0, false);
        p.worker_idle();
        assert_eq!(
            p.timer_fired(Timer::FlushLimit),
            vec![Action::Exit { code: 0 }]
        );
    }

    #[test]
    fn a_wedged_worker_is_cut_off_by_the_deadline() {
        let mut p = phases(false);
        p.begin_drain("signal", 0, false);
        assert_eq!(
            p.timer_fired(Timer::DrainDeadline),
            vec![Action::Exit { code: 0 }]
        );
        assert!(p.worker_idle().is_empty());
    }

    #[test]
    fn a_forced_drain_has_no_grace_and_a_second_forced_request_exits_at_once() {
        let mut p = phases(false);
        p.session_opened();
        assert_eq!(
            p.begin_drain("signal", 0, true),
            drain_actions(Duration::ZERO)
        );
        assert!(
            p.begin_drain("signal again", 0, false).is_empty(),
            "a second polite request is ignored"
        );
        assert_eq!(p.reason, "signal", "the first reason is kept");
        assert_eq!(
            p.begin_drain("signal again", 0, true),
            vec![Action::Exit { code: 0 }]
        );
    }

    #[test]
    fn the_exit_code_is_the_highest_asked_for() {
        let mut p = phases(false);
        // A component gave up (1) during a drain started by a signal (0).
        p.begin_drain("signal", 0, false);
        p.begin_drain("the model backend crashed", 1, false);
        assert_eq!(p.worker_idle(), vec![Action::Exit { code: 1 }]);
        let mut q = phases(false);
        q.begin_drain("gave up", 1, false);
        q.begin_drain("quit packet", 0, false);
        assert_eq!(
            q.timer_fired(Timer::DrainDeadline),
            vec![Action::Exit { code: 1 }]
        );
    }
}
