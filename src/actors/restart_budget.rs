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
    use Restart::{Allowed, Exhausted};

    const WINDOW: Duration = Duration::from_secs(60);

    /// The verdict of each crash of a fresh budget, at these offsets from the first (ms).
    fn verdicts(max_restarts: u32, at_ms: &[u64]) -> Vec<Restart> {
        let t0 = Instant::now();
        let mut budget = RestartBudget::new(max_restarts, WINDOW);
        at_ms
            .iter()
            .map(|ms| budget.crashed(t0 + Duration::from_millis(*ms)))
            .collect()
    }

    #[test]
    fn allows_max_restarts_within_the_window_then_gives_up() {
        assert_eq!(
            verdicts(2, &[0, 1000, 2000]),
            [
                Allowed { restart: 1 },
                Allowed { restart: 2 },
                Exhausted { crashes: 3 }
            ]
        );
        assert_eq!(verdicts(0, &[0]), [Exhausted { crashes: 1 }]);
    }

    #[test]
    fn crashes_older_than_the_window_are_forgotten() {
        // Exactly one window later the first crash still counts; just past it, it does not.
        assert_eq!(
            verdicts(1, &[0, 60_000, 180_000, 240_001]),
            [
                Allowed { restart: 1 },
                Exhausted { crashes: 2 },
                Allowed { restart: 1 },
                Allowed { restart: 1 }
            ]
        );
        let budget = RestartBudget::new(3, WINDOW);
        assert_eq!((budget.max_restarts(), budget.window()), (3, WINDOW));
    }
}
