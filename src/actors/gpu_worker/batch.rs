//! The worker thread's running batch as a plain state machine: which started jobs share the
//! next model call. Admission takes waiting jobs strictly in arrival order (the fair queue's
//! round-robin order) while the head of the line can share the call (same key), the batch
//! stays within `max_batch` jobs and its estimated activation memory within `max_mib`; the
//! first job that does not fit stops admission, so nobody overtakes it, and it starts the
//! next batch once this one drains. Retirement removes members (finished, failed,
//! cancelled) at a step boundary without disturbing the others. No threads, no actix, no
//! model: the thread drives it.

use std::collections::VecDeque;

/// How large a batch may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    /// Jobs sharing one model call; 1 runs jobs one after another (no batching).
    pub(crate) max_batch: usize,
    /// Estimated activation memory of one model call, in MiB. A single job always runs,
    /// whatever its estimate; a batch never grows past this.
    pub(crate) max_mib: u64,
}

/// What the batch needs to know of a member.
pub(crate) trait Member {
    type Key: PartialEq;
    /// Members share a call only with equal keys.
    fn key(&self) -> &Self::Key;
    /// This member's estimated share of one call's activation memory, in MiB.
    fn mib(&self) -> u64;
}

#[derive(Debug)]
pub(crate) struct Batch<T> {
    limits: BatchLimits,
    members: Vec<T>,
}

impl<T: Member> Batch<T> {
    pub(crate) fn new(limits: BatchLimits) -> Self {
        Batch {
            limits,
            members: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Free places (by count only).
    pub(crate) fn room(&self) -> usize {
        self.limits.max_batch.saturating_sub(self.members.len())
    }

    /// The key every member has (None when empty).
    pub(crate) fn key(&self) -> Option<&T::Key> {
        self.members.first().map(Member::key)
    }

    pub(crate) fn mib(&self) -> u64 {
        self.members.iter().map(Member::mib).sum()
    }

    /// Whether `candidate` may join now.
    pub(crate) fn fits(&self, candidate: &T) -> bool {
        let Some(key) = self.key() else {
            return true;
        };
        self.members.len() < self.limits.max_batch
            && key == candidate.key()
            && self.mib().saturating_add(candidate.mib()) <= self.limits.max_mib
    }

    /// Moves jobs from the front of `waiting` into the batch, in order, while the front one
    /// fits; returns how many joined.
    pub(crate) fn admit(&mut self, waiting: &mut VecDeque<T>) -> usize {
        let mut joined = 0;
        while let Some(front) = waiting.front() {
            if !self.fits(front) {
                break;
            }
            if let Some(job) = waiting.pop_front() {
                self.members.push(job);
                joined += 1;
            }
        }
        joined
    }

    pub(crate) fn members_mut(&mut self) -> &mut [T] {
        &mut self.members
    }

    #[cfg(test)]
    pub(crate) fn members(&self) -> &[T] {
        &self.members
    }

    /// Removes the members matching `leaves`, keeping the others in order.
    pub(crate) fn retire(&mut self, mut leaves: impl FnMut(&T) -> bool) -> Vec<T> {
        let (gone, kept): (Vec<T>, Vec<T>) = self.members.drain(..).partition(|m| leaves(m));
        self.members = kept;
        gone
    }

    /// Empties the batch.
    pub(crate) fn clear(&mut self) -> Vec<T> {
        std::mem::take(&mut self.members)
    }
}

/// Splits `items` (in order) into runs whose summed `mib` stays within `max_mib`, each run
/// holding at least one item: jobs finishing together are decoded together within the same
/// memory bound as a step.
pub(crate) fn chunks_within<T>(
    items: Vec<T>,
    max_mib: u64,
    mib: impl Fn(&T) -> u64,
) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut used = 0u64;
    for item in items {
        let m = mib(&item);
        match out.last_mut() {
            Some(run) if used.saturating_add(m) <= max_mib => {
                used += m;
                run.push(item);
            }
            _ => {
                used = m;
                out.push(vec![item]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Job {
        name: &'static str,
        key: u32,
        mib: u64,
    }

    impl Member for Job {
        type Key = u32;
        fn key(&self) -> &u32 {
            &self.key
        }
        fn mib(&self) -> u64 {
            self.mib
        }
    }

    fn job(name: &'static str, key: u32, mib: u64) -> Job {
        Job { name, key, mib }
    }

    fn names<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> Vec<&'static str> {
        jobs.into_iter().map(|j| j.name).collect()
    }

    const ROOMY: BatchLimits = BatchLimits {
        max_batch: 4,
        max_mib: 1000,
    };

    #[test]
    fn admits_in_order_up_to_max_batch() {
        let mut b = Batch::new(ROOMY);
        let mut waiting: VecDeque<Job> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .map(|n| job(n, 1, 10))
            .collect();
        assert_eq!(b.admit(&mut waiting), 4);
        assert_eq!(names(b.members()), ["a", "b", "c", "d"]);
        assert_eq!(names(&waiting), ["e"]);
        assert_eq!(b.room(), 0);
    }

    #[test]
    fn the_first_job_that_cannot_share_stops_admission_and_starts_the_next_batch() {
        let mut b = Batch::new(ROOMY);
        let mut waiting: VecDeque<Job> = [
            job("a", 1, 10),
            job("b", 1, 10),
            job("c", 2, 10),
            job("d", 1, 10),
        ]
        .into();
        assert_eq!(b.admit(&mut waiting), 2);
        assert_eq!(names(b.members()), ["a", "b"]);
        // d has a's key but does not overtake c; c runs once a and b are done.
        assert_eq!(b.admit(&mut waiting), 0);
        b.retire(|j| j.name == "a");
        assert_eq!(b.admit(&mut waiting), 0, "b still runs with key 1");
        b.retire(|_| true);
        assert_eq!(b.admit(&mut waiting), 1);
        assert_eq!(names(b.members()), ["c"]);
        assert_eq!(names(&waiting), ["d"]);
    }

    #[test]
    fn a_batch_past_the_memory_bound_is_not_formed() {
        let limits = BatchLimits {
            max_batch: 8,
            max_mib: 100,
        };
        let mut b = Batch::new(limits);
        let mut waiting: VecDeque<Job> = [job("a", 1, 60), job("b", 1, 40), job("c", 1, 1)].into();
        assert_eq!(b.admit(&mut waiting), 2, "60 + 40 fits exactly");
        assert!(!b.fits(&waiting[0]), "one more MiB would not");
        assert_eq!(b.mib(), 100);
        // A single job over the bound still runs, alone.
        let mut alone = Batch::new(limits);
        let mut big: VecDeque<Job> = [job("huge", 1, 500), job("small", 1, 1)].into();
        assert_eq!(alone.admit(&mut big), 1);
        assert_eq!(names(alone.members()), ["huge"]);
        assert!(!alone.fits(&big[0]));
    }

    #[test]
    fn max_batch_one_runs_one_job_at_a_time() {
        let mut b = Batch::new(BatchLimits {
            max_batch: 1,
            max_mib: u64::MAX,
        });
        let mut waiting: VecDeque<Job> = [job("a", 1, 1), job("b", 1, 1)].into();
        assert_eq!(b.admit(&mut waiting), 1);
        assert_eq!(b.admit(&mut waiting), 0);
        b.retire(|_| true);
        assert_eq!(b.admit(&mut waiting), 1);
        assert_eq!(names(b.members()), ["b"]);
    }

    #[test]
    fn retiring_one_member_keeps_the_others_in_order_and_frees_its_place() {
        let mut b = Batch::new(BatchLimits {
            max_batch: 3,
            max_mib: 1000,
        });
        let mut waiting: VecDeque<Job> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|n| job(n, 7, 1))
            .collect();
        b.admit(&mut waiting);
        let gone = b.retire(|j| j.name == "b");
        assert_eq!(names(&gone), ["b"]);
        assert_eq!(names(b.members()), ["a", "c"]);
        // A job joins mid-run at the next boundary.
        assert_eq!(b.admit(&mut waiting), 1);
        assert_eq!(names(b.members()), ["a", "c", "d"]);
    }

    #[test]
    fn finishing_jobs_are_grouped_within_the_memory_bound() {
        let runs = chunks_within(vec![30u64, 30, 50, 200, 10], 100, |m| *m);
        assert_eq!(runs, vec![vec![30, 30], vec![50], vec![200], vec![10]]);
        assert!(chunks_within(Vec::<u64>::new(), 1, |m| *m).is_empty());
    }
}
