//! Contains a panic in per-file work (identifying, loading or converting one model) so that a
//! bug triggered by one stranger's file costs that file only: the caller gets an error, the
//! thread and every other model carry on. The panic's own text goes to the log, never to a
//! client (it may quote internal state). Aborts (stack overflow, out of memory) cannot be
//! caught here: the readers are bounded so that they do not happen.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The text of a panic payload, for logs.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// What a contained panic reports to callers.
pub(crate) const INTERNAL_FAILURE: &str = "an internal error occurred while reading this model \
                                    (logged on the server; the file is skipped)";

/// Runs `f`; a panic inside it is logged with `what` and returned as `Err(INTERNAL_FAILURE)`.
/// `f` must leave no shared state half-updated when it unwinds (per-file work only reads).
pub(crate) fn contained<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, &'static str> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        log::error!("{what} panicked: {}", panic_message(&*payload));
        INTERNAL_FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_a_value_passes_through() {
        assert_eq!(contained("test", || 7), Ok(7));
        let err = contained("test", || -> u8 { panic!("index out of range: secret") });
        assert_eq!(err, Err(INTERNAL_FAILURE));
        assert!(!INTERNAL_FAILURE.contains("secret"));
    }
}
