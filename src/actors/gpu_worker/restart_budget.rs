//! The worker's restart budget as a plain struct: more than `max_restarts` crashes within a
//! sliding `window` and the worker gives up (a model that always crashes must not loop
//! forever). Takes the time as an argument, so it is tested without clocks or actors.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RestartBudget {
    max_restarts: u32,
    window: Duration,
    restarts: VecDeque<Instant>,
}

/// What a recorded crash means.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Restart; this is restart `used` of `allowed` within the window.
    Restart { used: usize, allowed: u32 },
    /// Too many crashes: stop restarting, with the reason for clients and the log.
    GiveUp(String),
}

impl RestartBudget {
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        RestartBudget {
            max_restarts,
            window,
            restarts: VecDeque::new(),
        }
    }

    /// Records a crash at `now` and says whether to restart.
    pub fn record(&mut self, now: Instant) -> Verdict {
        self.restarts.push_back(now);
        while let Some(t) = self.restarts.front() {
            if now.duration_since(*t) > self.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        let used = self.restarts.len();
        if used > self.max_restarts as usize {
            Verdict::GiveUp(format!(
                "the model backend crashed {used} times within {:?}; giving up",
                self.window
            ))
        } else {
            Verdict::Restart {
                used,
                allowed: self.max_restarts,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_after_more_than_max_restarts_within_the_window() {
        let t0 = Instant::now();
        let mut b = RestartBudget::new(2, Duration::from_secs(60));
        assert_eq!(
            b.record(t0),
            Verdict::Restart {
                used: 1,
                allowed: 2
            }
        );
        assert_eq!(
            b.record(t0 + Duration::from_secs(1)),
            Verdict::Restart {
                used: 2,
                allowed: 2
            }
        );
        match b.record(t0 + Duration::from_secs(2)) {
            Verdict::GiveUp(reason) => assert!(reason.contains("3 times"), "{reason}"),
            v => panic!("expected to give up, got {v:?}"),
        }
    }

    #[test]
    fn crashes_older_than_the_window_are_forgotten() {
        let t0 = Instant::now();
        let mut b = RestartBudget::new(1, Duration::from_secs(10));
        assert!(matches!(b.record(t0), Verdict::Restart { used: 1, .. }));
        // 11 s later the first crash has left the window: still one restart in it.
        assert!(matches!(
            b.record(t0 + Duration::from_secs(11)),
            Verdict::Restart { used: 1, .. }
        ));
        assert!(matches!(
            b.record(t0 + Duration::from_secs(12)),
            Verdict::GiveUp(_)
        ));
    }

    #[test]
    fn zero_restarts_gives_up_at_the_first_crash() {
        let mut b = RestartBudget::new(0, Duration::from_secs(1));
        assert!(matches!(b.record(Instant::now()), Verdict::GiveUp(_)));
    }
}
