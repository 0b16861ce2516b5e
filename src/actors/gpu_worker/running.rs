//! The jobs the worker has handed to its thread (running, or about to join the running
//! batch), as a plain struct: who owns each, its cancel flag, whether the client (rather
//! than a drain) cancelled it, and how many a session holds. The actor answers from it;
//! it knows nothing of actix beyond the stored event recipient.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::messages::SessionId;

#[derive(Debug)]
pub(crate) struct RunningJob<E> {
    pub(crate) key: u64,
    pub(crate) session: SessionId,
    pub(crate) job_id: String,
    /// Where the job's events go (the front end's recipient).
    pub(crate) events: E,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) started: Instant,
    /// The job was cancelled by the client (not by a drain): answer `cancelled`.
    pub(crate) cancelled_by_client: bool,
}

#[derive(Debug)]
pub(crate) struct RunningJobs<E> {
    jobs: Vec<RunningJob<E>>,
}

impl<E> Default for RunningJobs<E> {
    fn default() -> Self {
        RunningJobs { jobs: Vec::new() }
    }
}

impl<E> RunningJobs<E> {
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub(crate) fn insert(&mut self, job: RunningJob<E>) {
        self.jobs.push(job);
    }

    /// Removes and returns the job `key` (None when unknown, e.g. already failed).
    pub(crate) fn take(&mut self, key: u64) -> Option<RunningJob<E>> {
        let i = self.jobs.iter().position(|j| j.key == key)?;
        Some(self.jobs.remove(i))
    }

    /// Removes every job (in hand-over order).
    pub(crate) fn take_all(&mut self) -> Vec<RunningJob<E>> {
        std::mem::take(&mut self.jobs)
    }

    /// Jobs of `session`.
    pub(crate) fn count_for(&self, session: SessionId) -> usize {
        self.jobs.iter().filter(|j| j.session == session).count()
    }

    pub(crate) fn contains(&self, key: u64) -> bool {
        self.jobs.iter().any(|j| j.key == key)
    }

    /// Raises the cancel flag of `session`'s jobs (all, or the one named `job_id`), marking
    /// them cancelled by the client; returns how many.
    pub(crate) fn cancel_matching(&mut self, session: SessionId, job_id: Option<&str>) -> usize {
        let mut n = 0;
        for j in &mut self.jobs {
            if j.session == session && job_id.map_or(true, |want| want == j.job_id) {
                j.cancel.store(true, Ordering::SeqCst);
                j.cancelled_by_client = true;
                n += 1;
            }
        }
        n
    }

    /// Raises the cancel flag of the jobs whose key is in `keys` (None: every job), without
    /// marking them cancelled by the client (a drain).
    pub(crate) fn stop(&self, keys: Option<&[u64]>) {
        for j in &self.jobs {
            if keys.map_or(true, |k| k.contains(&j.key)) {
                j.cancel.store(true, Ordering::SeqCst);
            }
        }
    }

    pub(crate) fn keys(&self) -> Vec<u64> {
        self.jobs.iter().map(|j| j.key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: u64, session: SessionId, id: &str) -> RunningJob<()> {
        RunningJob {
            key,
            session,
            job_id: id.to_string(),
            events: (),
            cancel: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            cancelled_by_client: false,
        }
    }

    fn flags(r: &RunningJobs<()>) -> Vec<(u64, bool, bool)> {
        r.jobs
            .iter()
            .map(|j| {
                (
                    j.key,
                    j.cancel.load(Ordering::SeqCst),
                    j.cancelled_by_client,
                )
            })
            .collect()
    }

    #[test]
    fn cancel_one_member_leaves_the_others_running() {
        let mut r = RunningJobs::default();
        r.insert(job(1, 10, "a"));
        r.insert(job(2, 10, "b"));
        r.insert(job(3, 20, "a"));
        assert_eq!(r.cancel_matching(10, Some("b")), 1);
        assert_eq!(
            flags(&r),
            [(1, false, false), (2, true, true), (3, false, false)]
        );
        // Same job id, other session: untouched. Without an id: all of the session's.
        assert_eq!(r.cancel_matching(10, None), 2);
        assert_eq!(flags(&r)[2], (3, false, false));
    }

    #[test]
    fn counts_per_session_and_takes_by_key() {
        let mut r = RunningJobs::default();
        r.insert(job(1, 10, "a"));
        r.insert(job(2, 20, "b"));
        r.insert(job(3, 10, "c"));
        assert_eq!(
            (r.count_for(10), r.count_for(20), r.count_for(30)),
            (2, 1, 0)
        );
        assert_eq!(r.take(1).map(|j| j.job_id), Some("a".to_string()));
        assert!(r.take(1).is_none(), "a finished job is gone");
        assert_eq!(r.count_for(10), 1);
        assert!(r.contains(3) && !r.contains(1));
        assert_eq!(r.take_all().len(), 2);
        assert!(r.is_empty());
    }

    #[test]
    fn a_drain_stops_jobs_without_calling_it_a_client_cancel() {
        let mut r = RunningJobs::default();
        r.insert(job(1, 10, "a"));
        r.insert(job(2, 20, "b"));
        r.stop(Some(&[2]));
        assert_eq!(flags(&r), [(1, false, false), (2, true, false)]);
        r.stop(None);
        assert_eq!(flags(&r), [(1, true, false), (2, true, false)]);
    }
}
