//! An LRU of loaded models, bounded by a count and a byte budget (estimated from weight
//! sizes). Generic over the model type so it can be tested without weights. Dropping an
//! evicted value is what gives its memory back, so callers make room *before* loading the
//! next model. It never loads anything itself.

use std::path::{Path, PathBuf};

struct Slot<V> {
    key: PathBuf,
    bytes: u64,
    value: V,
}

/// Least-recently-used cache keyed by model path.
pub(crate) struct ModelCache<V> {
    max_count: usize,
    max_bytes: u64,
    /// Least recently used first.
    slots: Vec<Slot<V>>,
}

impl<V> ModelCache<V> {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// `max_count` is at least 1: the model in use always stays. `max_bytes` bounds the sum
    /// of the estimates; one model larger than the budget is still kept alone.
    pub(crate) fn new(max_count: usize, max_bytes: u64) -> Self {
        ModelCache {
            max_count: max_count.max(1),
            max_bytes,
            slots: Vec::new(),
        }
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.slots.iter().map(|s| s.bytes).sum()
    }

    pub(crate) fn contains(&self, key: &Path) -> bool {
        self.slots.iter().any(|s| s.key == key)
    }

    /// The cached model, marked most recently used.
    pub(crate) fn get_mut(&mut self, key: &Path) -> Option<&mut V> {
        let i = self.slots.iter().position(|s| s.key == key)?;
        let slot = self.slots.remove(i);
        self.slots.push(slot);
        self.slots.last_mut().map(|s| &mut s.value)
    }

    /// The cached model without marking it used.
    pub(crate) fn peek(&self, key: &Path) -> Option<&V> {
        self.slots.iter().find(|s| s.key == key).map(|s| &s.value)
    }

    /// Evicts least recently used models until one more of `incoming` bytes fits. Returns
    /// the evicted keys; their memory is released when this returns.
    pub(crate) fn make_room(&mut self, incoming: u64) -> Vec<PathBuf> {
        let mut evicted = Vec::new();
        while !self.slots.is_empty()
            && (self.slots.len() + 1 > self.max_count
                || self.total_bytes().saturating_add(incoming) > self.max_bytes)
        {
            let slot = self.slots.remove(0);
            log::info!("evicting model {} from the cache", slot.key.display());
            evicted.push(slot.key);
        }
        evicted
    }

    /// Inserts (or replaces) a model as most recently used, evicting others to stay in bounds.
    pub(crate) fn insert(&mut self, key: PathBuf, bytes: u64, value: V) -> Vec<PathBuf> {
        self.remove(&key);
        let evicted = self.make_room(bytes);
        if bytes > self.max_bytes {
            log::warn!(
                "model {} (~{} MiB) exceeds the cache budget of {} MiB; keeping it alone",
                key.display(),
                bytes >> 20,
                self.max_bytes >> 20
            );
        }
        self.slots.push(Slot { key, bytes, value });
        evicted
    }

    pub(crate) fn remove(&mut self, key: &Path) -> Option<V> {
        let i = self.slots.iter().position(|s| s.key == key)?;
        Some(self.slots.remove(i).value)
    }

    /// Keys, most recently used first.
    pub(crate) fn keys(&self) -> Vec<PathBuf> {
        self.slots.iter().rev().map(|s| s.key.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn count_bound_evicts_least_recently_used() {
        let mut c = ModelCache::new(2, u64::MAX);
        c.insert(p("a"), 1, "A");
        c.insert(p("b"), 1, "B");
        assert_eq!(c.get_mut(&p("a")), Some(&mut "A"));
        let evicted = c.insert(p("c"), 1, "C");
        assert_eq!(evicted, vec![p("b")]);
        assert_eq!(c.keys(), vec![p("c"), p("a")]);
    }

    #[test]
    fn byte_budget_evicts_until_the_new_model_fits() {
        let mut c = ModelCache::new(10, 100);
        c.insert(p("a"), 40, 1);
        c.insert(p("b"), 40, 2);
        c.insert(p("c"), 20, 3);
        assert_eq!(c.total_bytes(), 100);
        let evicted = c.insert(p("d"), 50, 4);
        assert_eq!(evicted, vec![p("a"), p("b")]);
        assert_eq!(c.total_bytes(), 70);
    }

    #[test]
    fn oversized_model_is_kept_alone() {
        let mut c = ModelCache::new(3, 10);
        c.insert(p("a"), 5, 1);
        let evicted = c.insert(p("big"), 50, 2);
        assert_eq!(evicted, vec![p("a")]);
        assert_eq!(c.keys(), vec![p("big")]);
    }

    #[test]
    fn evicted_values_are_dropped() {
        let value = Rc::new(());
        let mut c = ModelCache::new(1, u64::MAX);
        c.insert(p("a"), 1, Rc::clone(&value));
        assert_eq!(Rc::strong_count(&value), 2);
        c.make_room(1);
        assert_eq!(Rc::strong_count(&value), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn reinserting_a_key_replaces_it() {
        let mut c = ModelCache::new(2, u64::MAX);
        c.insert(p("a"), 1, 1);
        c.insert(p("a"), 2, 2);
        assert_eq!(c.len(), 1);
        assert_eq!(c.total_bytes(), 2);
        assert_eq!(c.get_mut(&p("a")), Some(&mut 2));
    }
}
