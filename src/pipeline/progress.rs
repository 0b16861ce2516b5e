//! How a generation reports progress and learns it should stop: after every denoising step
//! and between the other expensive phases (text encoding, image encoding, each VAE decode).
//! Plain trait, no threads or channels; the caller decides what a report does.

/// Receives a generation's progress; returning `false` from either method stops it with
/// `Cancelled` before its next expensive phase.
pub trait Progress {
    /// After denoising step `step` (0-based) of `total`.
    fn step(&mut self, step: usize, total: usize) -> bool;

    /// Between two expensive phases other than steps; reports nothing.
    fn proceed(&mut self) -> bool {
        true
    }
}

/// A closure over (step, total) is a progress callback that never stops between phases.
impl<F: FnMut(usize, usize) -> bool> Progress for F {
    fn step(&mut self, step: usize, total: usize) -> bool {
        self(step, total)
    }
}
