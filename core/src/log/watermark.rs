//! The published watermark: the position before which every frame of the log is published
//! (an event or padding). It is what `none` and `batch` acknowledge against — an append
//! returns only once the watermark has passed its frame, so every earlier frame is published
//! too, and a process killed later leaves no hole before an acknowledged frame (recovery
//! cuts the log at the first hole, see `docs/format.md`).
//!
//! Lock-free, one word: the watermark only grows, and anyone may move it, by a CAS from the
//! value it read to a position it found by following published frames from there. Published
//! frames are immutable, so what a walk found stays true; a failed CAS means somebody else
//! moved it (never backwards, so no ABA) and the walk starts again from the new value. The
//! common case needs no walk: a producer that has just published `[start, end)` moves the
//! watermark from `start` to `end` with one CAS ([`Watermark::pass`]). Producers whose
//! earlier frames are still being written wait for them and walk over them themselves, so
//! nobody has to hand progress on. Modelled in `core/tests/loom_log.rs` (L6, L7).

use crate::sync::{AtomicU64, Ordering};

/// See the module documentation.
#[derive(Debug)]
pub struct Watermark(AtomicU64);

impl Watermark {
    pub fn new(position: u64) -> Watermark {
        Watermark(AtomicU64::new(position))
    }

    /// Everything before this position is published. A thread that reads it also sees
    /// those frames published (acquire, pairing with the CAS that moved it).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// After publishing `[start, end)`: moves the watermark over that frame if it stood at
    /// its start. `false` if it did not (earlier frames are unpublished, or somebody moved
    /// it already).
    pub fn pass(&self, start: u64, end: u64) -> bool {
        self.0
            .compare_exchange(start, end, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Moves the watermark over every frame published after it; returns its new position.
    /// `walk(p)` returns the position of the first unpublished frame at or after `p` (or `p`
    /// itself if that one is unpublished), following published frames only.
    pub fn advance(&self, mut walk: impl FnMut(u64) -> u64) -> u64 {
        let mut p = self.get();
        loop {
            let q = walk(p);
            if q <= p {
                return p;
            }
            match self
                .0
                .compare_exchange(p, q, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return q,
                // Somebody moved it (only ever forwards): walk on from there.
                Err(now) => p = now,
            }
        }
    }
}
