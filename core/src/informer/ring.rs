//! The notification ring: the one bounded buffer between the reflector and the handlers.
//!
//! The reflector publishes every cache change here once; each handler reads at its own
//! cursor (a sequence number), so a slow handler neither stalls the others nor makes the
//! buffer grow. The writer never waits: when it laps a cursor the slot is overwritten and
//! that handler sees [`Read::Overrun`] and relists from the cache (the in-memory analogue of
//! the log's `Expired`, `reliability.md` S7 / L-3). Sequence numbers only grow.
//!
//! Notes every handler has read are trimmed ([`Ring::trim`]): their objects are released at
//! once instead of when the writer laps them, so a ring holds the objects of its slowest
//! handler's lag, not of its whole capacity (`reliability.md` L-1: 50 informers of 16 Ki
//! slots each held ~1 GiB of stale object versions before).
//!
//! The ring is generic over what it carries (the informer's [`Note`]s) and built on the
//! `sync` shim, so that it compiles under `cfg(loom)`: `core/tests/loom_ring.rs` models a
//! writer lapping readers and trims racing both.

#[cfg(not(loom))]
use std::sync::Arc;

#[cfg(not(loom))]
use crate::store::Object;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Default slots in the ring (a named maximum: memory is bounded by it, not by lag).
pub const RING_CAPACITY_DEFAULT: usize = 16 * 1024;

/// What a notification tells a handler.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoteKind {
    /// `initial`: part of the informer's first list.
    Add {
        initial: bool,
    },
    Update,
    /// `final_state_unknown`: the delete was discovered by a relist, not watched.
    Delete {
        final_state_unknown: bool,
    },
}

/// One cache change.
#[cfg(not(loom))]
#[derive(Clone, Debug)]
pub(crate) struct Note {
    pub(crate) kind: NoteKind,
    pub(crate) key: Arc<str>,
    /// The cached object before the change (updates only).
    pub(crate) old: Option<Arc<Object>>,
    /// The new object; for deletes the last known state.
    pub(crate) obj: Arc<Object>,
}

/// The result of reading one sequence number.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<T> {
    Ready(T),
    /// Nothing published at this sequence yet.
    Empty,
    /// The writer lapped this cursor: the note is gone.
    Overrun,
    /// The cache was loaded in bulk here (a list into an empty cache): no note per object;
    /// the reader catches up from a consistent cut of the cache, as after an overrun.
    Listed,
}

struct Slot<T> {
    seq: u64,
    /// `None` at a published `seq`: a [`Ring::push_listed`] marker (or a trimmed note).
    note: Option<T>,
    /// Every handler had read it; reading it again is an overrun.
    trimmed: bool,
}

pub struct Ring<T> {
    slots: Box<[Mutex<Slot<T>>]>,
    mask: u64,
    /// Next sequence to publish; every sequence below it is published.
    head: AtomicU64,
    /// Every sequence below it is trimmed (or being trimmed).
    trimmed: AtomicU64,
}

impl<T: Clone> Ring<T> {
    /// A ring of at least `capacity` slots (rounded up to a power of two, at least 2).
    pub fn new(capacity: usize) -> Ring<T> {
        let cap = capacity.max(2).next_power_of_two();
        Ring {
            slots: (0..cap)
                .map(|_| {
                    Mutex::new(Slot {
                        seq: u64::MAX,
                        note: None,
                        trimmed: false,
                    })
                })
                .collect(),
            mask: cap as u64 - 1,
            head: AtomicU64::new(0),
            trimmed: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Publishes a note. Single writer (the reflector thread).
    pub fn push(&self, note: T) {
        self.publish(Some(note));
    }

    /// Publishes a bulk-load marker ([`Read::Listed`]) in place of one note per object.
    pub fn push_listed(&self) {
        self.publish(None);
    }

    fn publish(&self, note: Option<T>) {
        let s = self.head.load(Ordering::Relaxed);
        let lapped = {
            let mut g = self.slots[(s & self.mask) as usize].lock();
            g.seq = s;
            g.trimmed = false;
            std::mem::replace(&mut g.note, note)
        };
        drop(lapped);
        self.head.store(s + 1, Ordering::Release);
    }

    /// Releases the notes below `upto` (clamped to the head): the caller knows every reader
    /// is past them. A later read of one of them is an [`Read::Overrun`]. Concurrent calls
    /// split the range between them; a slot the writer has reused meanwhile is left alone.
    pub fn trim(&self, upto: u64) {
        let upto = upto.min(self.head());
        let mut from = self.trimmed.load(Ordering::Acquire);
        loop {
            if upto <= from {
                return;
            }
            match self
                .trimmed
                .compare_exchange(from, upto, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(cur) => from = cur,
            }
        }
        for seq in from.max(upto.saturating_sub(self.capacity()))..upto {
            let released = {
                let mut g = self.slots[(seq & self.mask) as usize].lock();
                if g.seq != seq {
                    continue;
                }
                g.trimmed = true;
                g.note.take()
            };
            drop(released);
        }
    }

    pub fn read(&self, seq: u64) -> Read<T> {
        let h = self.head();
        if seq >= h {
            return Read::Empty;
        }
        if h - seq > self.capacity() {
            return Read::Overrun;
        }
        let g = self.slots[(seq & self.mask) as usize].lock();
        match &g.note {
            _ if g.seq != seq || g.trimmed => Read::Overrun,
            Some(n) => Read::Ready(n.clone()),
            None => Read::Listed,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn note(name: &str) -> Note {
        let o = Arc::new(Object {
            kind: "X".into(),
            ..Object::default()
        });
        Note {
            kind: NoteKind::Update,
            key: name.into(),
            old: None,
            obj: o,
        }
    }

    #[test]
    fn cursors_read_in_order_and_detect_being_lapped() {
        let r = Ring::new(3);
        assert_eq!(r.capacity(), 4);
        assert!(matches!(r.read(0), Read::Empty));
        for i in 0..4 {
            r.push(note(&i.to_string()));
        }
        assert!(matches!(r.read(0), Read::Ready(n) if &*n.key == "0"));
        r.push(note("4"));
        assert!(matches!(r.read(0), Read::Overrun), "slot 0 was overwritten");
        assert!(matches!(r.read(1), Read::Ready(n) if &*n.key == "1"));
        assert!(matches!(r.read(4), Read::Ready(n) if &*n.key == "4"));
        assert!(matches!(r.read(5), Read::Empty));
        r.push_listed();
        assert!(matches!(r.read(5), Read::Listed));
        assert!(matches!(r.read(1), Read::Overrun), "slot 1 was overwritten");
    }

    #[test]
    fn trimmed_notes_release_their_objects_and_read_as_overruns() {
        let r = Ring::new(8);
        let notes: Vec<Note> = (0..6).map(|i| note(&i.to_string())).collect();
        for n in &notes {
            r.push(n.clone());
        }
        assert_eq!(Arc::strong_count(&notes[0].obj), 2, "the ring holds one");
        r.trim(4);
        for (i, n) in notes.iter().enumerate() {
            let held = if i < 4 { 1 } else { 2 };
            assert_eq!(Arc::strong_count(&n.obj), held, "note {i}");
        }
        assert!(matches!(r.read(3), Read::Overrun));
        assert!(matches!(r.read(4), Read::Ready(n) if &*n.key == "4"));
        // Beyond the head it is clamped; a second, lower trim does nothing.
        r.trim(100);
        r.trim(2);
        assert!(matches!(r.read(5), Read::Overrun));
        assert!(matches!(r.read(6), Read::Empty));
        r.push(note("6"));
        assert!(
            matches!(r.read(6), Read::Ready(n) if &*n.key == "6"),
            "new notes are untouched"
        );
        r.push_listed();
        assert!(matches!(r.read(7), Read::Listed));
    }
}
