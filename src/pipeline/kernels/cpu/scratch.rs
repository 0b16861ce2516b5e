//! One reusable f32 scratch buffer for the big per-call temporaries of our kernels (the
//! Winograd transformed weights: up to 256 MiB). Allocating that afresh on every call costs a
//! page fault and a page clear per 4 KiB (measured at ~6% of a Winograd layer's time); the
//! pool keeps the largest buffer asked for so far and hands it out again. Its contents are
//! whatever the last user left: callers overwrite every element they read. A call that finds
//! the pool in use (another model's worker at the same moment) allocates its own buffer.

use std::sync::{Mutex, TryLockError};

static POOL: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// Runs `f` on a scratch slice of `len` elements with unspecified contents.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut guard = match POOL.try_lock() {
        Ok(guard) => guard,
        // A panic in an earlier user leaves only stale numbers behind, which callers never
        // read before writing.
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return f(&mut vec![0f32; len]),
    };
    if guard.len() < len {
        guard.resize(len, 0.0);
    }
    f(&mut guard[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_requested_length_and_allocates_when_busy() {
        with_scratch(16, |outer| {
            assert_eq!(outer.len(), 16);
            outer.fill(1.0);
            // Nested use finds the pool taken and gets a buffer of its own.
            with_scratch(8, |inner| {
                assert_eq!(inner.len(), 8);
                inner.fill(2.0);
            });
            assert!(outer.iter().all(|&v| v == 1.0));
        });
        with_scratch(4, |again| assert_eq!(again.len(), 4));
    }
}
