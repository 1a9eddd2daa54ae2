//! loom models of the informer's notification ring (`informer::ring`): one writer (the
//! reflector) publishes into slots it reuses after a lap, handlers read at their own
//! sequence numbers, and trims release what every handler has read. Checked: a read
//! returns exactly the note published at its sequence number, or `Overrun` once it was
//! lapped or trimmed, or `Empty` before it was published — never another sequence's note;
//! a trim releases only notes below its bound, and concurrent trims release each of them
//! once. Run with `RUSTFLAGS="--cfg loom" cargo test -p floyd --release --test loom_ring`.
#![cfg(loom)]

use std::sync::Arc as StdArc;

use floyd::informer::ring::{Read, Ring};
use loom::sync::Arc;
use loom::thread;

/// A note that knows its sequence number; its `Arc` count shows whether the ring still
/// holds it.
type N = StdArc<u64>;

fn check(seq: u64, r: Read<N>) -> Read<N> {
    if let Read::Ready(n) = &r {
        assert_eq!(**n, seq, "read {seq} returned the note of {}", **n);
    }
    r
}

#[test]
fn r1_writer_laps_a_reader() {
    // Capacity 2, three notes: the third reuses note 0's slot while the reader reads.
    loom::model(|| {
        let ring: Arc<Ring<N>> = Arc::new(Ring::new(2));
        let w = ring.clone();
        let writer = thread::spawn(move || {
            for s in 0..3 {
                w.push(StdArc::new(s));
            }
        });
        // The reader follows the ring as a handler does: waits at an empty sequence, moves
        // on after a note or an overrun.
        let mut got = vec![];
        let mut cursor = 0;
        while cursor < 3 {
            match check(cursor, ring.read(cursor)) {
                Read::Empty => thread::yield_now(),
                r => {
                    got.push(r);
                    cursor += 1;
                }
            }
        }
        writer.join().unwrap();
        // Only note 0's slot is reused: it may have been lapped; 1 and 2 are read.
        assert!(matches!(got[0], Read::Ready(_) | Read::Overrun), "{got:?}");
        assert!(matches!(got[1], Read::Ready(_)) && matches!(got[2], Read::Ready(_)));
        assert_eq!(ring.read(0), Read::Overrun);
        assert!(matches!(check(1, ring.read(1)), Read::Ready(_)));
    });
}

#[test]
fn r2_trim_races_the_writer_and_a_reader() {
    // Notes 0 and 1 are published; a trim of everything below 2 races the writer publishing
    // 2 and 3 (3 reuses note 1's slot, 2 reuses note 0's) and a reader of note 1.
    loom::model(|| {
        let ring: Arc<Ring<N>> = Arc::new(Ring::new(2));
        let notes: Vec<N> = (0..4).map(StdArc::new).collect();
        ring.push(notes[0].clone());
        ring.push(notes[1].clone());
        let (w, notes_w) = (ring.clone(), notes.clone());
        let writer = thread::spawn(move || {
            w.push(notes_w[2].clone());
            w.push(notes_w[3].clone());
        });
        let t = ring.clone();
        let trimmer = thread::spawn(move || t.trim(2));
        let read = check(1, ring.read(1));
        assert!(matches!(read, Read::Ready(_) | Read::Overrun), "{read:?}");
        drop(read);
        writer.join().unwrap();
        trimmer.join().unwrap();
        // Below the bound: released (lapped or trimmed) and unreadable. At or above it:
        // held and readable, whatever the interleaving.
        for s in 0..2 {
            assert_eq!(StdArc::strong_count(&notes[s]), 1, "note {s} still held");
            assert_eq!(ring.read(s as u64), Read::Overrun);
        }
        for s in 2..4 {
            assert_eq!(StdArc::strong_count(&notes[s]), 2, "note {s} was released");
            assert!(matches!(
                check(s as u64, ring.read(s as u64)),
                Read::Ready(_)
            ));
        }
    });
}

#[test]
fn r3_concurrent_trims_split_the_range() {
    loom::model(|| {
        let ring: Arc<Ring<N>> = Arc::new(Ring::new(4));
        let notes: Vec<N> = (0..4).map(StdArc::new).collect();
        for n in &notes {
            ring.push(n.clone());
        }
        let (a, b) = (ring.clone(), ring.clone());
        let t1 = thread::spawn(move || a.trim(2));
        let t2 = thread::spawn(move || b.trim(3));
        t1.join().unwrap();
        t2.join().unwrap();
        for s in 0..3 {
            assert_eq!(StdArc::strong_count(&notes[s]), 1, "note {s} still held");
            assert_eq!(ring.read(s as u64), Read::Overrun);
        }
        assert_eq!(StdArc::strong_count(&notes[3]), 2);
        assert!(matches!(check(3, ring.read(3)), Read::Ready(_)));
    });
}
