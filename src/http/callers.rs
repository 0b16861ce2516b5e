//! Who is calling and what they have running. Every HTTP caller (the Basic-auth user when a
//! token is configured, else the peer's IP address) is one lane of the worker's fair queue,
//! with a `SessionId` of its own above every socket session's, so a Krita painter and each
//! HTTP user take turns. Per caller it keeps the jobs in flight with their latest progress
//! (read by `/progress` without asking the worker, so it answers at once) and the defaults
//! chosen with `POST /options`. Bounded: callers with nothing running and nothing chosen
//! are dropped, and at most `MAX_CALLERS` are remembered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::a1111_request::CallerDefaults;
use crate::messages::SessionId;

/// HTTP lanes are numbered from here; socket sessions count up from 1 and never get near.
pub(crate) const HTTP_LANE_BASE: SessionId = 1 << 62;
/// Callers remembered at once (with choices or jobs); beyond it idle ones are forgotten.
const MAX_CALLERS: usize = 4096;

/// The caller of one request, as the auth middleware identified it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Caller(pub(crate) String);

/// One job's state as its events arrived.
#[derive(Debug, Clone)]
pub(crate) struct JobState {
    pub(crate) job_id: String,
    pub(crate) started: Option<Instant>,
    /// Jobs ahead in the queue when last told.
    pub(crate) position: usize,
    /// Steps done and the total (0, 0 before the first step).
    pub(crate) step: usize,
    pub(crate) total: usize,
    pub(crate) images_done: usize,
    pub(crate) images: usize,
    pub(crate) interrupted: bool,
}

#[derive(Debug)]
struct CallerState {
    lane: SessionId,
    defaults: CallerDefaults,
    jobs: Vec<JobState>,
    last_seen: Instant,
}

/// What `/progress` reports about one caller.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) jobs: usize,
    /// The job that has started (else the oldest waiting one).
    pub(crate) current: Option<JobState>,
}

#[derive(Debug, Default)]
pub(crate) struct Callers {
    inner: Mutex<HashMap<Caller, CallerState>>,
    next_lane: AtomicU64,
}

impl Callers {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Caller, CallerState>) -> T) -> T {
        // A panic while holding the lock leaves plain data behind; keep serving.
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }

    fn entry<'a>(
        &self,
        map: &'a mut HashMap<Caller, CallerState>,
        caller: &Caller,
    ) -> &'a mut CallerState {
        if !map.contains_key(caller) && map.len() >= MAX_CALLERS {
            forget_idle(map);
        }
        let state = map.entry(caller.clone()).or_insert_with(|| CallerState {
            lane: HTTP_LANE_BASE + self.next_lane.fetch_add(1, Ordering::SeqCst),
            defaults: CallerDefaults::default(),
            jobs: Vec::new(),
            last_seen: Instant::now(),
        });
        state.last_seen = Instant::now();
        state
    }

    /// The caller's lane, and the job registered in it.
    pub(crate) fn begin_job(&self, caller: &Caller, job_id: &str, images: usize) -> SessionId {
        self.with(|map| {
            let s = self.entry(map, caller);
            s.jobs.push(JobState {
                job_id: job_id.to_string(),
                started: None,
                position: 0,
                step: 0,
                total: 0,
                images_done: 0,
                images,
                interrupted: false,
            });
            s.lane
        })
    }

    /// Updates one job's state (no-op once it ended).
    pub(crate) fn update(&self, caller: &Caller, job_id: &str, f: impl FnOnce(&mut JobState)) {
        self.with(|map| {
            if let Some(j) = map
                .get_mut(caller)
                .and_then(|s| s.jobs.iter_mut().find(|j| j.job_id == job_id))
            {
                f(j);
            }
        });
    }

    /// The job ended; the caller is forgotten when nothing else is left of it.
    pub(crate) fn end_job(&self, caller: &Caller, job_id: &str) {
        self.with(|map| {
            if let Some(s) = map.get_mut(caller) {
                s.jobs.retain(|j| j.job_id != job_id);
                if s.jobs.is_empty() && s.defaults == CallerDefaults::default() {
                    map.remove(caller);
                }
            }
        });
    }

    /// Marks the caller's jobs interrupted; returns its lane and whether it had any job.
    pub(crate) fn interrupt(&self, caller: &Caller) -> Option<SessionId> {
        self.with(|map| {
            let s = map.get_mut(caller)?;
            if s.jobs.is_empty() {
                return None;
            }
            for j in &mut s.jobs {
                j.interrupted = true;
            }
            Some(s.lane)
        })
    }

    pub(crate) fn snapshot(&self, caller: &Caller) -> Snapshot {
        self.with(|map| match map.get(caller) {
            None => Snapshot {
                jobs: 0,
                current: None,
            },
            Some(s) => Snapshot {
                jobs: s.jobs.len(),
                current: s
                    .jobs
                    .iter()
                    .find(|j| j.started.is_some())
                    .or_else(|| s.jobs.first())
                    .cloned(),
            },
        })
    }

    pub(crate) fn defaults(&self, caller: &Caller) -> CallerDefaults {
        self.with(|map| {
            map.get(caller)
                .map(|s| s.defaults.clone())
                .unwrap_or_default()
        })
    }

    pub(crate) fn set_defaults(&self, caller: &Caller, f: impl FnOnce(&mut CallerDefaults)) {
        self.with(|map| f(&mut self.entry(map, caller).defaults));
    }
}

/// Drops the least recently seen callers with no job until there is room.
fn forget_idle(map: &mut HashMap<Caller, CallerState>) {
    let mut idle: Vec<(Instant, Caller)> = map
        .iter()
        .filter(|(_, s)| s.jobs.is_empty())
        .map(|(c, s)| (s.last_seen, c.clone()))
        .collect();
    idle.sort();
    let excess = (map.len() + 1).saturating_sub(MAX_CALLERS);
    for (_, c) in idle.into_iter().take(excess.max(1)) {
        map.remove(&c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_is_one_lane_and_is_forgotten_when_idle() {
        let c = Callers::default();
        let (a, b) = (Caller("ip:10.0.0.1".into()), Caller("user:bo".into()));
        let la = c.begin_job(&a, "1", 1);
        assert_eq!(c.begin_job(&a, "2", 1), la);
        let lb = c.begin_job(&b, "3", 1);
        assert!(la >= HTTP_LANE_BASE && lb >= HTTP_LANE_BASE && la != lb);
        c.update(&a, "2", |j| {
            j.started = Some(Instant::now());
            j.step = 4;
            j.total = 10;
        });
        let snap = c.snapshot(&a);
        assert_eq!(snap.jobs, 2);
        assert_eq!(snap.current.unwrap().job_id, "2");
        assert_eq!(c.interrupt(&b), Some(lb));
        assert!(c.snapshot(&b).current.unwrap().interrupted);
        assert!(!c.snapshot(&a).current.unwrap().interrupted);
        c.end_job(&b, "3");
        assert_eq!(c.interrupt(&b), None);
        c.set_defaults(&b, |d| d.model = Some("m".into()));
        assert_eq!(c.defaults(&b).model.as_deref(), Some("m"));
    }
}
