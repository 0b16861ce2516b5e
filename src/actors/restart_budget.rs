//! The restart budget shared by the GPU worker and the model registry: at most `max_restarts`
//! crashes within a sliding `window`; one more and the component gives up (the process then
//! exits non-zero for systemd or Docker to restart it). Plain code: the caller passes the
//! time, so tests need no clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What a crash leaves of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restart {
    /// Restart number `restart` within the window is allowed.
    Allowed { restart: usize },
    /// `crashes` within the window: more than allowed; give up.
    Exhausted { crashes: usize },
}

#[derive(Debug, Clone)]
pub(crate) struct RestartBudget {
    max_restarts: u32,
    window: Duration,
    crashes: VecDeque<Instant>,
}

impl RestartBudget {
    pub(crate) fn new(max_restarts: u32, window: Duration) -> Self {
        RestartBudget {
            max_restarts,
            window,
            crashes: VecDeque::new(),
        }
    }

    /// Counts a crash at `now`, forgetting those more than `window` before it.
    pub(crate) fn crashed(&mut self, now: Instant) -> Restart {
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.crashes.pop_front();
        }
        let crashes = self.crashes.len();
        if crashes > self.max_restarts as usize {
            Restart::Exhausted { crashes }
        } else {
            Restart::Allowed { restart: crashes }
        }
    }

    pub(crate) fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn allows_max_restarts_within_the_window_then_gives_up() {
        let t0 = Instant::now();
        let mut budget = RestartBudget::new(2, WINDOW);
        assert_eq!(budget.crashed(t0), Restart::Allowed { restart: 1 });
        assert_eq!(
            budget.crashed(t0 + Duration::from_secs(1)),
            Restart::Allowed { restart: 2 }
        );
        assert_eq!(
            budget.crashed(t0 + Duration::from_secs(2)),
            Restart::Exhausted { crashes: 3 }
        );
    }

    #[test]
    fn crashes_older_than_the_window_are_forgotten() {
        let t0 = Instant::now();
        let mut budget = RestartBudget::new(1, WINDOW);
        assert_eq!(budget.crashed(t0), Restart::Allowed { restart: 1 });
        // Exactly one window later the first crash still counts...
        assert_eq!(
            budget.crashed(t0 + WINDOW),
            Restart::Exhausted { crashes: 2 }
        );
        // ...just past it, only the crashes inside the window do.
        let later = t0 + WINDOW * 3;
        assert_eq!(budget.crashed(later), Restart::Allowed { restart: 1 });
        assert_eq!(
            budget.crashed(later + WINDOW + Duration::from_millis(1)),
            Restart::Allowed { restart: 1 }
        );
    }

    #[test]
    fn zero_restarts_gives_up_at_the_first_crash() {
        let mut budget = RestartBudget::new(0, WINDOW);
        assert_eq!(
            budget.crashed(Instant::now()),
            Restart::Exhausted { crashes: 1 }
        );
        assert_eq!((budget.max_restarts(), budget.window()), (0, WINDOW));
    }
}
