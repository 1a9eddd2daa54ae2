//! Waiting on the injected clock: a generation counter with a condition variable, woken by
//! progress, by `stop`, and by a fake clock's `advance` (through `Clock::on_advance`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::clock::{Clock, SharedClock};

/// Something happened: new notifications, a sync, a version applied, a stop, time moved.
pub(crate) struct Signal {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Signal {
    pub(crate) fn new() -> Signal {
        Signal {
            generation: Mutex::new(0),
            cv: Condvar::new(),
        }
    }

    pub(crate) fn notify(&self) {
        *self.generation.lock() += 1;
        self.cv.notify_all();
    }

    pub(crate) fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    /// Waits until the generation moves past `seen` or `deadline` (on `clock`) passes.
    /// Spurious returns are allowed: callers re-check their condition.
    pub(crate) fn wait(&self, seen: u64, deadline: Option<Instant>, clock: &dyn Clock) {
        let mut g = self.generation.lock();
        if *g != seen {
            return;
        }
        match deadline {
            None => self.cv.wait(&mut g),
            Some(d) => {
                if clock.now() >= d {
                    return;
                }
                match clock.park_timeout(d) {
                    Some(t) => {
                        self.cv.wait_for(&mut g, t);
                    }
                    None => self.cv.wait(&mut g),
                }
            }
        }
    }
}

/// Registers `signal` to be notified whenever a fake `clock` jumps; the returned waker must
/// be kept alive as long as the registration should last.
pub(crate) fn wake_on_advance(
    clock: &SharedClock,
    signal: &Arc<Signal>,
) -> Arc<dyn Fn() + Send + Sync> {
    let s = signal.clone();
    let waker: Arc<dyn Fn() + Send + Sync> = Arc::new(move || s.notify());
    clock.on_advance(Arc::downgrade(&waker));
    waker
}

/// `now + d`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(clock: &dyn Clock, d: Option<Duration>) -> Option<Instant> {
    d.map(|d| {
        let now = clock.now();
        now.checked_add(d)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
    })
}
