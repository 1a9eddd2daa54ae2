//! loom models of the log's lock-free protocol (`reliability.md` §3(d) L1, L2, L4, L5, and
//! the published-watermark half of L3): claim with `fetch_add`, mark with CAS, write,
//! publish the word last; readers acquire the word; the unblocker pads abandoned claims; an
//! append is acknowledged only once the published watermark has passed it. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p floyd --release --test loom_log`.
#![cfg(loom)]

use floyd::log::frame::{self, SEGMENT_HEADER_LEN};
use floyd::log::raw::{Lost, RawSegment, Read, Region, Tail};
use floyd::log::watermark::Watermark;
use loom::sync::Arc;
use loom::thread;

fn segment(size: usize) -> Arc<RawSegment> {
    Arc::new(RawSegment {
        region: Region::heap(size),
        seq: 0,
        base: 0,
        size,
    })
}

fn frame_len(payload: usize) -> u32 {
    frame::event_frame_len(payload) as u32
}

/// Reads frames from the segment start until the first unpublished one; checks payloads.
fn read_prefix(seg: &RawSegment) -> Vec<(u64, Vec<u8>)> {
    let mut off = SEGMENT_HEADER_LEN;
    let mut out = vec![];
    while off < seg.size {
        match seg.read(off) {
            Read::Pending => break,
            Read::Padding { len } => off += len,
            Read::Event {
                len,
                payload_off,
                payload_len,
                ..
            } => {
                out.push((off as u64, seg.payload_vec(payload_off, payload_len)));
                off += len;
            }
        }
    }
    out
}

#[test]
fn l1_two_producers_one_reader() {
    loom::model(|| {
        let seg = segment(SEGMENT_HEADER_LEN + 2 * 32);
        let tail = Arc::new(Tail::new(0, SEGMENT_HEADER_LEN as u64));
        let producers: Vec<_> = (0..2u8)
            .map(|i| {
                let (seg, tail) = (seg.clone(), tail.clone());
                thread::spawn(move || {
                    let c = tail.claim(frame_len(4));
                    seg.write_event(&c, 1, &[i; 4]).unwrap()
                })
            })
            .collect();
        // The reader runs concurrently: whatever it sees is a prefix of whole frames.
        let seen = read_prefix(&seg);
        for (_, p) in &seen {
            assert!(p == &[0u8; 4] || p == &[1u8; 4], "partial payload {p:?}");
        }
        let mut rvs: Vec<u64> = producers.into_iter().map(|h| h.join().unwrap()).collect();
        rvs.sort_unstable();
        let all = read_prefix(&seg);
        assert_eq!(all.iter().map(|f| f.0).collect::<Vec<_>>(), rvs);
        assert!(seen.len() <= all.len());
        assert_eq!(
            &all[..seen.len()],
            &seen[..],
            "reader saw frames out of order"
        );
    });
}

#[test]
fn l2_claim_crossing_the_segment_end_pads_it() {
    loom::model(|| {
        // Room for one 32-byte frame plus 16 bytes: the second claim crosses the end.
        let size = SEGMENT_HEADER_LEN + 48;
        let seg = segment(size);
        let tail = Arc::new(Tail::new(0, SEGMENT_HEADER_LEN as u64));
        let hs: Vec<_> = (0..2u8)
            .map(|i| {
                let (seg, tail) = (seg.clone(), tail.clone());
                thread::spawn(move || {
                    let c = tail.claim(frame_len(4));
                    if c.offset() as usize + c.len() as usize <= size {
                        seg.write_event(&c, 1, &[i; 4]).unwrap();
                        true
                    } else {
                        assert!(seg.pad_to_end(&c));
                        false
                    }
                })
            })
            .collect();
        let wrote: Vec<bool> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            wrote.iter().filter(|w| **w).count(),
            1,
            "exactly one claim fits"
        );
        assert_eq!(read_prefix(&seg).len(), 1);
        assert_eq!(seg.read(SEGMENT_HEADER_LEN + 32), Read::Padding { len: 16 });
        // Both claims moved the tail past the end: the next claim belongs to a new segment.
        assert!(tail.load().1 as usize >= size);
    });
}

#[test]
fn l4_abandoned_claim_vs_unblocker() {
    loom::model(|| {
        let seg = segment(SEGMENT_HEADER_LEN + 64);
        let tail = Tail::new(0, SEGMENT_HEADER_LEN as u64);
        let c = tail.claim(frame_len(4));
        let frontier = tail.load().1 as usize;
        let s2 = seg.clone();
        let producer = thread::spawn(move || s2.write_event(&c, 1, b"late"));
        let s3 = seg.clone();
        let unblocker = thread::spawn(move || s3.unblock(SEGMENT_HEADER_LEN, frontier));
        let published = producer.join().unwrap();
        let padded = unblocker.join().unwrap();
        match (published, padded) {
            (Ok(_), None) => {
                assert_eq!(read_prefix(&seg), vec![(64, b"late".to_vec())]);
            }
            (Err(Lost), Some(len)) => {
                assert_eq!(len, 32);
                assert_eq!(seg.read(SEGMENT_HEADER_LEN), Read::Padding { len: 32 });
                assert!(read_prefix(&seg).is_empty());
            }
            other => panic!("both or neither won: {other:?}"),
        }
    });
}

#[test]
fn l5_dead_producer_is_padded_and_reader_progresses() {
    loom::model(|| {
        let seg = segment(SEGMENT_HEADER_LEN + 64);
        let tail = Arc::new(Tail::new(0, SEGMENT_HEADER_LEN as u64));
        let dead = tail.claim(frame_len(4));
        let live = tail.claim(frame_len(4));
        let s2 = seg.clone();
        // The live producer publishes after the hole.
        let p = thread::spawn(move || s2.write_event(&live, 2, b"live").unwrap());
        // The dead producer's drop guard pads exactly its own claim.
        let off = dead.offset() as usize;
        let padded = seg.unblock(off, off + dead.len() as usize);
        assert_eq!(padded, Some(32));
        let rv = p.join().unwrap();
        assert_eq!(read_prefix(&seg), vec![(rv, b"live".to_vec())]);
    });
}

#[test]
fn l6_close_seals_the_tail_and_waits_only_for_claims_below_it() {
    // Two producers append while a third thread closes: the closer seals the tail, and
    // `Log::close` then waits until everything below the tail it got back is published or
    // padded (that waiting and padding are L1, L4 and L5). Whatever the interleaving, a claim
    // below that tail is written, so the wait ends; a claim above it is sealed and abandoned
    // untouched, so nothing is written after the close (which then releases the directory).
    loom::model(|| {
        let size = SEGMENT_HEADER_LEN + 2 * 32;
        let seg = segment(size);
        let tail = Arc::new(Tail::new(0, SEGMENT_HEADER_LEN as u64));
        let producers: Vec<_> = (0..2u8)
            .map(|i| {
                let (seg, tail) = (seg.clone(), tail.clone());
                thread::spawn(move || {
                    let c = tail.claim(frame_len(4));
                    if c.is_sealed() {
                        return (c.offset(), None);
                    }
                    (c.offset(), Some(seg.write_event(&c, 1, &[i; 4]).unwrap()))
                })
            })
            .collect();
        let (_, sealed_at) = tail.seal();
        let mut written = vec![];
        for h in producers {
            match h.join().unwrap() {
                (off, Some(rv)) => {
                    assert!(
                        off + 32 <= sealed_at,
                        "a claim at {off} was written above the seal at {sealed_at}"
                    );
                    written.push(rv);
                }
                (off, None) => {
                    assert!(
                        off >= sealed_at,
                        "a claim at {off}, below the seal at {sealed_at}, was abandoned"
                    );
                }
            }
        }
        // Below the seal: exactly the written frames, all published, reaching the seal.
        written.sort_unstable();
        let frames = read_prefix(&seg);
        assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), written);
        let end = frames
            .last()
            .map_or(SEGMENT_HEADER_LEN as u64, |f| f.0 + 32);
        assert_eq!(end, sealed_at);
    });
}

/// An append as `none` and `batch` acknowledge it: publish, move the watermark over the
/// frame if it stood at its start, otherwise wait for the frames before it by walking over
/// them. Returns the frame's end. The segment's base is 0, so offsets are positions.
fn append_and_wait(seg: &RawSegment, tail: &Tail, wm: &Watermark, i: u8) -> u64 {
    let c = tail.claim(frame_len(4));
    let rv = seg.write_event(&c, 1, &[i; 4]).unwrap();
    let end = rv + c.len() as u64;
    if !wm.pass(rv, end) {
        while wm.advance(|p| seg.published_end(p as usize) as u64) < end {
            thread::yield_now();
        }
    }
    end
}

#[test]
fn l3a_acknowledged_only_behind_a_published_prefix() {
    // Two producers acknowledge through the watermark while a third thread reads it: the
    // watermark never passes an unpublished frame, never moves backwards, and when an
    // append returns every frame before its end is published (no ack after a hole).
    loom::model(|| {
        let seg = segment(SEGMENT_HEADER_LEN + 2 * 32);
        let tail = Arc::new(Tail::new(0, SEGMENT_HEADER_LEN as u64));
        let wm = Arc::new(Watermark::new(SEGMENT_HEADER_LEN as u64));
        let producers: Vec<_> = (0..2u8)
            .map(|i| {
                let (seg, tail, wm) = (seg.clone(), tail.clone(), wm.clone());
                thread::spawn(move || {
                    let end = append_and_wait(&seg, &tail, &wm, i);
                    let prefix = seg.published_end(SEGMENT_HEADER_LEN) as u64;
                    assert!(
                        prefix >= end,
                        "acknowledged {end} behind a hole at {prefix}"
                    );
                    end
                })
            })
            .collect();
        let seen = wm.get();
        let prefix = seg.published_end(SEGMENT_HEADER_LEN) as u64;
        assert!(
            seen <= prefix,
            "the watermark {seen} passed an unpublished frame"
        );
        let ends: Vec<u64> = producers.into_iter().map(|h| h.join().unwrap()).collect();
        let all = (SEGMENT_HEADER_LEN + 64) as u64;
        assert!(ends.contains(&all));
        assert!(wm.get() >= seen);
        assert_eq!(wm.advance(|p| seg.published_end(p as usize) as u64), all);
    });
}

#[test]
fn l3b_appender_behind_a_dead_claim_is_released_by_its_padding() {
    // A producer died between claim and publish; the live producer after it publishes but is
    // not acknowledged until the unblocker pads the dead claim, and then is.
    loom::model(|| {
        let seg = segment(SEGMENT_HEADER_LEN + 64);
        let tail = Arc::new(Tail::new(0, SEGMENT_HEADER_LEN as u64));
        let wm = Arc::new(Watermark::new(SEGMENT_HEADER_LEN as u64));
        let _dead = tail.claim(frame_len(4));
        let frontier = SEGMENT_HEADER_LEN + 32;
        let (s2, t2, w2) = (seg.clone(), tail.clone(), wm.clone());
        let live = thread::spawn(move || {
            let end = append_and_wait(&s2, &t2, &w2, 7);
            assert_eq!(s2.read(SEGMENT_HEADER_LEN), Read::Padding { len: 32 });
            end
        });
        assert!(
            wm.get() <= SEGMENT_HEADER_LEN as u64,
            "passed the dead claim"
        );
        assert_eq!(seg.unblock(SEGMENT_HEADER_LEN, frontier), Some(32));
        let end = live.join().unwrap();
        assert_eq!(end, (SEGMENT_HEADER_LEN + 64) as u64);
        assert_eq!(wm.get(), end);
    });
}
