//! The bounded, fair job queue: round-robin across sessions, first-come within a session, so
//! one user's batch cannot starve another, and admission capped per session as well as in
//! total, so one user cannot fill the queue either. Pure data structure, no actix; never
//! grows past its capacity (a refused item is handed back for a `busy` answer).

use std::collections::{HashMap, VecDeque};

use crate::messages::SessionId;

/// Why [`FairQueue::push`] refused an item (handed back inside).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused<T> {
    /// Every slot of the queue is taken.
    QueueFull(T),
    /// The session already holds its share (`per_session` jobs, waiting and running).
    SessionFull(T),
}

#[derive(Debug)]
pub(crate) struct FairQueue<T> {
    capacity: usize,
    per_session: usize,
    /// Sessions with waiting jobs, in the order they will be served next.
    order: VecDeque<SessionId>,
    jobs: HashMap<SessionId, VecDeque<T>>,
    len: usize,
}

impl<T> FairQueue<T> {
    /// A queue of `capacity` waiting jobs in all, of which one session may hold
    /// `per_session` minus the jobs it has running.
    pub(crate) fn new(capacity: usize, per_session: usize) -> Self {
        FairQueue {
            capacity,
            per_session,
            order: VecDeque::new(),
            jobs: HashMap::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn per_session(&self) -> usize {
        self.per_session
    }

    /// Jobs of `session` waiting here.
    pub(crate) fn waiting(&self, session: SessionId) -> usize {
        self.jobs.get(&session).map_or(0, VecDeque::len)
    }

    /// Appends a job for `session`, which has `running` jobs running outside the queue. The
    /// session's own cap is checked first, so a client at its share learns that, not that
    /// the queue is full.
    pub(crate) fn push(
        &mut self,
        session: SessionId,
        running: usize,
        item: T,
    ) -> Result<(), Refused<T>> {
        if self.waiting(session) + running >= self.per_session {
            return Err(Refused::SessionFull(item));
        }
        if self.len >= self.capacity {
            return Err(Refused::QueueFull(item));
        }
        let q = self.jobs.entry(session).or_default();
        if q.is_empty() {
            self.order.push_back(session);
        }
        q.push_back(item);
        self.len += 1;
        Ok(())
    }

    /// The next job: the oldest job of the session whose turn it is; that session then
    /// goes to the back of the rotation.
    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<(SessionId, T)> {
        self.pop_eligible(|_| true)
    }

    /// As [`FairQueue::pop`], skipping the sessions for which `eligible` is false; a skipped
    /// session keeps its place in the rotation, so it is served first once eligible again.
    pub(crate) fn pop_eligible(
        &mut self,
        mut eligible: impl FnMut(SessionId) -> bool,
    ) -> Option<(SessionId, T)> {
        let i = self.order.iter().position(|s| eligible(*s))?;
        let session = self.order.remove(i)?;
        let q = self.jobs.get_mut(&session)?;
        let item = q.pop_front()?;
        self.len -= 1;
        if q.is_empty() {
            self.jobs.remove(&session);
        } else {
            self.order.push_back(session);
        }
        Some((session, item))
    }

    /// Removes every job matching `pred`, in queue order per session.
    pub(crate) fn remove_where(&mut self, mut pred: impl FnMut(SessionId, &T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        for (session, q) in self.jobs.iter_mut() {
            let mut kept = VecDeque::with_capacity(q.len());
            for item in q.drain(..) {
                if pred(*session, &item) {
                    removed.push(item);
                } else {
                    kept.push_back(item);
                }
            }
            *q = kept;
        }
        self.len -= removed.len();
        self.jobs.retain(|_, q| !q.is_empty());
        let jobs = &self.jobs;
        self.order.retain(|s| jobs.contains_key(s));
        removed
    }

    /// The first waiting job of `session` matching `pred`.
    pub(crate) fn find(&self, session: SessionId, pred: impl FnMut(&T) -> bool) -> Option<&T> {
        let mut pred = pred;
        self.jobs.get(&session)?.iter().find(|t| pred(t))
    }

    /// Removes everything.
    pub(crate) fn drain_all(&mut self) -> Vec<T> {
        self.remove_where(|_, _| true)
    }

    /// 1-based position at which the first job matching `pred` of `session` will be popped.
    pub(crate) fn position(
        &self,
        session: SessionId,
        mut pred: impl FnMut(&T) -> bool,
    ) -> Option<usize> {
        let index = self.jobs.get(&session)?.iter().position(&mut pred)?;
        let turn = self.order.iter().position(|s| *s == session)?;
        // Every session ahead in the rotation serves index+1 jobs first, every one behind
        // serves index jobs, each capped by what it has.
        let ahead: usize = self
            .order
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let have = self.jobs.get(s).map_or(0, |q| q.len());
                if *s == session {
                    index
                } else if i < turn {
                    have.min(index + 1)
                } else {
                    have.min(index)
                }
            })
            .sum();
        Some(ahead + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_across_sessions() {
        let mut q = FairQueue::new(100, 100);
        for i in 0..5 {
            q.push(1, 0, format!("a{i}")).unwrap();
        }
        q.push(2, 0, "b0".to_string()).unwrap();
        q.push(3, 0, "c0".to_string()).unwrap();
        q.push(2, 0, "b1".to_string()).unwrap();
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|(_, j)| j)).collect();
        assert_eq!(order, ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]);
        assert!(q.is_empty());
    }

    #[test]
    fn late_session_is_not_starved() {
        // A queues 6 (the first already popped to run), then B queues one.
        let mut q = FairQueue::new(100, 100);
        for i in 0..6 {
            q.push(1, 0, i).unwrap();
        }
        assert_eq!(q.pop(), Some((1, 0)));
        q.push(2, 0, 100).unwrap();
        assert_eq!(q.position(2, |j| *j == 100), Some(2));
        assert_eq!(q.pop(), Some((1, 1)));
        assert_eq!(q.pop(), Some((2, 100)));
        assert_eq!(q.pop(), Some((1, 2)));
    }

    #[test]
    fn bounded() {
        let mut q = FairQueue::new(2, 2);
        q.push(1, 0, 'a').unwrap();
        q.push(2, 0, 'b').unwrap();
        assert_eq!(q.push(3, 0, 'c'), Err(Refused::QueueFull('c')));
        assert_eq!(q.len(), 2);
        q.pop();
        assert!(q.push(3, 0, 'c').is_ok());
    }

    #[test]
    fn a_session_at_its_share_is_refused_while_others_are_admitted() {
        let mut q = FairQueue::new(32, 4);
        for i in 0..4 {
            q.push(1, 0, i).unwrap();
        }
        assert_eq!(q.push(1, 0, 4), Err(Refused::SessionFull(4)));
        assert_eq!(q.waiting(1), 4);
        // Another session is admitted although session 1 keeps asking.
        q.push(2, 0, 100).unwrap();
        assert_eq!(q.push(1, 0, 5), Err(Refused::SessionFull(5)));
        q.push(2, 0, 101).unwrap();
        assert_eq!(q.len(), 6);
        // The running job counts: after one of session 1's jobs starts it still holds 4.
        assert_eq!(q.pop(), Some((1, 0)));
        assert_eq!(q.push(1, 1, 6), Err(Refused::SessionFull(6)));
        // Once it finished (nothing running), the freed slot is the session's again.
        assert!(q.push(1, 0, 6).is_ok());
        assert_eq!(q.waiting(1), 4);
    }

    #[test]
    fn the_session_cap_is_reported_before_a_full_queue() {
        let mut q = FairQueue::new(3, 2);
        q.push(1, 0, 'a').unwrap();
        q.push(1, 0, 'b').unwrap();
        q.push(2, 0, 'c').unwrap();
        assert_eq!(q.push(1, 0, 'd'), Err(Refused::SessionFull('d')));
        assert_eq!(q.push(3, 0, 'e'), Err(Refused::QueueFull('e')));
        // A session with its only job running may not queue past a cap of one.
        let mut one = FairQueue::new(8, 1);
        assert_eq!(one.push(7, 1, 'x'), Err(Refused::SessionFull('x')));
        assert!(one.push(7, 0, 'x').is_ok());
    }

    #[test]
    fn positions_match_pop_order() {
        let mut q = FairQueue::new(100, 100);
        let pushes = [
            (1, 'a'),
            (1, 'b'),
            (2, 'c'),
            (1, 'd'),
            (3, 'e'),
            (2, 'f'),
            (3, 'g'),
        ];
        for (s, j) in pushes {
            q.push(s, 0, j).unwrap();
        }
        let expected: Vec<(char, usize)> = pushes
            .iter()
            .map(|(s, j)| (*j, q.position(*s, |x| x == j).unwrap()))
            .collect();
        let mut n = 0;
        while let Some((_, j)) = q.pop() {
            n += 1;
            let want = expected.iter().find(|(c, _)| *c == j).unwrap().1;
            assert_eq!(want, n, "job {j}");
        }
    }

    #[test]
    fn pop_eligible_skips_busy_sessions_without_losing_their_turn() {
        let mut q = FairQueue::new(100, 100);
        q.push(1, 0, "a0").unwrap();
        q.push(1, 0, "a1").unwrap();
        q.push(2, 0, "b0").unwrap();
        q.push(3, 0, "c0").unwrap();
        // Session 1 has a job running: 2 and 3 are served, 1 keeps the head of the rotation.
        assert_eq!(q.pop_eligible(|s| s != 1), Some((2, "b0")));
        assert_eq!(q.pop_eligible(|s| s != 1), Some((3, "c0")));
        assert_eq!(q.pop_eligible(|s| s != 1), None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_eligible(|_| true), Some((1, "a0")));
        assert_eq!(q.pop(), Some((1, "a1")));
        assert!(q.is_empty());
    }

    #[test]
    fn remove_where_keeps_others_in_order() {
        let mut q = FairQueue::new(100, 100);
        q.push(1, 0, 1).unwrap();
        q.push(2, 0, 2).unwrap();
        q.push(1, 0, 3).unwrap();
        q.push(2, 0, 4).unwrap();
        let mut removed = q.remove_where(|s, _| s == 1);
        removed.sort();
        assert_eq!(removed, vec![1, 3]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some((2, 2)));
        assert_eq!(q.pop(), Some((2, 4)));
        assert_eq!(q.pop(), None);
        assert_eq!(q.position(1, |_| true), None);
    }
}
