//! Blocking without the GIL, interruptibly: waits run in slices of at most [`SLICE`] with the
//! GIL released, and between slices the thread re-attaches and runs `check_signals`, so
//! Ctrl-C raises `KeyboardInterrupt` promptly and other Python threads run meanwhile.

use std::time::{Duration, Instant};

use floyd::{Clock, SystemClock};
use pyo3::prelude::*;

/// The longest a blocking call waits before checking for signals.
pub const SLICE: Duration = Duration::from_millis(50);

/// When a wait of `timeout` ends (`None`: never).
pub fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| SystemClock.now().checked_add(t))
}

/// The next slice to wait before `deadline`, or `None` if it has passed.
pub fn next_slice(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(SLICE),
        Some(d) => {
            let left = d.saturating_duration_since(SystemClock.now());
            (!left.is_zero()).then(|| left.min(SLICE))
        }
    }
}

/// Runs `step(slice)` without the GIL until it returns `Some`, the deadline passes (then
/// `Ok(None)`), or a signal handler raises.
pub fn sliced<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut step: impl FnMut(Duration) -> Option<T> + Send,
) -> PyResult<Option<T>> {
    let deadline = deadline(timeout);
    // A zero timeout still makes one non-blocking attempt.
    let mut slice = next_slice(deadline).unwrap_or(Duration::ZERO);
    loop {
        if let Some(v) = py.detach(|| step(slice)) {
            return Ok(Some(v));
        }
        match next_slice(deadline) {
            Some(s) => slice = s,
            None => return Ok(None),
        }
        py.check_signals()?;
    }
}
