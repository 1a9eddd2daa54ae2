//! The unsafe core of the log: mapped regions and the lock-free claim / publish / read
//! protocol over them. Everything above this module is safe code.
//!
//! Protocol (one segment; see `docs/format.md`):
//! 1. A producer claims `[off, off+len)` with one `fetch_add` on the [`Tail`].
//! 2. It marks the claim by CAS-ing the frame's publish word from 0 to `CLAIMED|len`. If the
//!    CAS fails, the unblocker has poisoned the slot: the claim is lost and the producer
//!    claims again.
//! 3. It writes the rest of the frame (CRC, payload length, rv, payload) into its range.
//! 4. It publishes by CAS-ing the word from `CLAIMED|len` to `EVENT|len|kind` with release
//!    ordering. A failed CAS means the unblocker padded the frame: lost, claim again.
//!
//! Readers load the publish word with acquire ordering; an event's bytes are immutable once
//! published, so a reader that saw `EVENT` reads them without synchronisation. The
//! unblocker (for producers stalled or dead between claim and publish) either pads a
//! `CLAIMED` frame by CAS, or poisons the zero slots of an unmarked gap one by one from its
//! start — so every producer whose range it enters fails its marking CAS and never writes —
//! and then publishes one padding frame over the gap.

#![allow(unsafe_code)]

use crate::log::frame::{
    self, EVENT_HEADER_LEN, FRAME_ALIGN, POISON_WORD, TYPE_CLAIMED, TYPE_EVENT, TYPE_PADDING, Word,
};
use crate::sync::{AtomicU64, Ordering};

/// Bits of the tail word that hold the offset inside the current segment; the rest hold the
/// low bits of the segment's sequence number.
const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// What [`Tail::seal`] adds to the offset: above any segment (at most 2^31 bytes), with
/// room below the sequence tag for the claims of every producer racing the close.
pub const SEALED: u64 = 1 << (OFFSET_BITS - 1);
/// Segment sequence numbers are compared modulo this in the tail word.
pub const SEQ_TAG_MASK: u64 = (1 << (64 - OFFSET_BITS)) - 1;
/// How far ahead of its own frame an appender prefetches (see `Region::prefetch_write`):
/// far enough that the line arrives before the next few appends reach it.
#[cfg(not(loom))]
const PREFETCH_AHEAD: usize = 1024;

/// The log's append position: `(segment sequence tag, offset)` packed into one word, so a
/// claim is a single `fetch_add`.
#[derive(Debug)]
pub struct Tail(AtomicU64);

/// A range handed out by [`Tail::claim`]; only a `Claim` lets a producer write.
#[derive(Debug)]
pub struct Claim {
    seq_tag: u64,
    off: u64,
    len: u32,
}

impl Claim {
    pub fn seq_tag(&self) -> u64 {
        self.seq_tag
    }
    pub fn offset(&self) -> u64 {
        self.off
    }
    #[allow(clippy::len_without_is_empty)] // a claim is never empty
    pub fn len(&self) -> u32 {
        self.len
    }
    /// Made after [`Tail::seal`]: the log is closing and nothing may be written here.
    pub fn is_sealed(&self) -> bool {
        self.off >= SEALED
    }
}

impl Tail {
    pub fn new(seq: u64, off: u64) -> Tail {
        Tail(AtomicU64::new(pack(seq, off)))
    }
    /// Claims `len` bytes (a multiple of the frame alignment) at the current tail.
    pub fn claim(&self, len: u32) -> Claim {
        debug_assert!((len as usize).is_multiple_of(FRAME_ALIGN));
        let t = self.0.fetch_add(len as u64, Ordering::AcqRel);
        Claim {
            seq_tag: t >> OFFSET_BITS,
            off: t & OFFSET_MASK,
            len,
        }
    }
    /// Moves the tail to the start of a new segment; only the rotating thread calls this,
    /// after the new segment is visible to producers.
    pub fn reset(&self, seq: u64, off: u64) {
        self.0.store(pack(seq, off), Ordering::Release);
    }
    /// `(sequence tag, offset)` now.
    pub fn load(&self) -> (u64, u64) {
        let t = self.0.load(Ordering::Acquire);
        (t >> OFFSET_BITS, t & OFFSET_MASK)
    }
    /// Seals the tail for a close: adds [`SEALED`] to its offset in the same atomic step
    /// claims use, and returns the tail from just before. Claims ordered before the seal
    /// lie below the returned tail and are written as usual, so the closer can wait for
    /// them; claims after it get offsets of at least `SEALED`, beyond any segment, and
    /// their producers abandon them untouched ([`Claim::is_sealed`]). Nothing then writes
    /// above the returned tail. The caller must keep rotations (`Tail::reset`) from
    /// running after the seal.
    pub fn seal(&self) -> (u64, u64) {
        let t = self.0.fetch_add(SEALED, Ordering::AcqRel);
        (t >> OFFSET_BITS, t & OFFSET_MASK)
    }
}

fn pack(seq: u64, off: u64) -> u64 {
    ((seq & SEQ_TAG_MASK) << OFFSET_BITS) | (off & OFFSET_MASK)
}

/// Asks the cache for the line holding `p`, for writing (the line of a count a locked
/// increment will change soon). A hint only: it never faults, reads or writes nothing the
/// program can see, and any address will do. It lives here because it needs an `unsafe`
/// block (the intrinsic is a target-feature function), which floyd keeps to this module
/// and `snapshot`.
///
/// Unlike a load, a prefetch is not held back by a locked instruction before it, so a
/// loop whose every step does one (an `Arc` clone) still has the next steps' misses in
/// flight.
#[inline(always)]
pub fn prefetch_for_write<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
        // SAFETY: `_mm_prefetch` is unsafe only because it is a target-feature function;
        // SSE is part of every x86_64 target, and a prefetch dereferences nothing (an
        // invalid address is ignored, never a fault).
        unsafe { _mm_prefetch::<_MM_HINT_ET0>(p as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The tag of a sequence number as stored in the tail word.
pub fn seq_tag(seq: u64) -> u64 {
    seq & SEQ_TAG_MASK
}

#[cfg(not(loom))]
enum Backing {
    File(memmap2::MmapRaw),
    Anon(#[allow(dead_code)] memmap2::MmapMut),
    /// Another handle on a region someone else also holds (simulated storage keeps the
    /// live plane while the log maps it).
    Alias(#[allow(dead_code)] std::sync::Arc<Region>),
}

/// A fixed-size mapped byte region (a segment's memory). In loom builds it is heap-backed
/// with one atomic per 16-byte slot for the publish words.
pub struct Region {
    #[cfg(not(loom))]
    ptr: *mut u8,
    #[cfg(not(loom))]
    backing: Backing,
    #[cfg(loom)]
    words: Vec<AtomicU64>,
    #[cfg(loom)]
    bytes: Vec<crate::sync::UnsafeCell<u8>>,
    len: usize,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region").field("len", &self.len).finish()
    }
}

// SAFETY: the region owns its mapping; all shared access to its bytes follows the claim /
// publish protocol of this module (atomic publish words, exclusive claimed ranges,
// immutable published frames), so sharing it between threads is sound.
unsafe impl Send for Region {}
// SAFETY: see `Send` above.
unsafe impl Sync for Region {}

#[cfg(not(loom))]
impl Region {
    /// Maps the whole of `file` read-write and shared. The caller passes the length it just
    /// read from the file's metadata; the mapping never extends past the real end of file.
    pub fn map_file(file: &std::fs::File, len: usize) -> std::io::Result<Region> {
        let actual = file.metadata()?.len();
        if actual != len as u64 || len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("file is {actual} bytes, expected {len}"),
            ));
        }
        let map = memmap2::MmapOptions::new().len(len).map_raw(file)?;
        Ok(Region {
            ptr: map.as_mut_ptr(),
            backing: Backing::File(map),
            len,
        })
    }

    /// Anonymous zero-filled memory (memory-mode stores and the simulated storage).
    pub fn anon(len: usize) -> std::io::Result<Region> {
        let mut map = memmap2::MmapMut::map_anon(len.max(1))?;
        Ok(Region {
            ptr: map.as_mut_ptr(),
            backing: Backing::Anon(map),
            len,
        })
    }

    /// A second handle on the same memory.
    pub fn alias(shared: std::sync::Arc<Region>) -> Region {
        Region {
            ptr: shared.ptr,
            len: shared.len,
            backing: Backing::Alias(shared),
        }
    }

    /// Touches every page for writing so producers never pay first-touch faults.
    /// Only called on a fresh region from [`Storage::create`](super::storage::Storage::create)
    /// (zero-filled) before it is shared.
    ///
    /// Each page gets one plain write of zero, never a read first: a read would map the page
    /// read-only, and the write after it would take a second fault whose write-protect
    /// change flushes the TLB of every CPU running this process, an interrupt for the
    /// producers on the other cores, once per page.
    pub fn prefault(&self) {
        let page = 4096;
        let mut off = 0;
        while off < self.len {
            // SAFETY: `off < len`; the region is fresh and zero-filled, and not yet visible
            // to any other thread, so writing a zero changes nothing anyone can observe.
            unsafe { std::ptr::write_volatile(self.ptr.add(off), 0) };
            off += page;
        }
    }

    /// Makes `[off, off+len)` durable (`msync(MS_SYNC)` on file mappings).
    pub fn flush(&self, off: usize, len: usize) -> std::io::Result<()> {
        match &self.backing {
            Backing::File(m) => m.flush_range(off, len.min(self.len - off)),
            Backing::Anon(_) | Backing::Alias(_) => Ok(()),
        }
    }

    /// The publish word at `off` (16-aligned, in bounds).
    pub fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(FRAME_ALIGN) && off + 8 <= self.len,
            "word {off} out of range"
        );
        // SAFETY: in bounds and 8-aligned (mappings are page-aligned and `off` is
        // 16-aligned); the memory lives as long as `self`; every concurrent access to a
        // publish word is atomic.
        unsafe { &*(self.ptr.add(off) as *const AtomicU64) }
    }

    /// Copies `src` to `off`.
    ///
    /// # Safety
    /// The caller owns `[off, off+src.len())` exclusively: it holds the claim and won the
    /// marking CAS, or the region is not shared yet.
    pub unsafe fn write(&self, off: usize, src: &[u8]) {
        assert!(off + src.len() <= self.len);
        // SAFETY: bounds checked above; exclusivity is the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off), src.len()) }
    }

    /// Hints the CPU to fetch the cache lines of `[off, off+len)` for writing. Appenders
    /// call it for the bytes a few frames ahead of their own: their marking and publishing
    /// CASes are locked instructions, which stall on a cold line instead of overlapping the
    /// miss the way plain stores do.
    #[inline]
    pub fn prefetch_write(&self, off: usize, len: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
            let end = (off + len).min(self.len);
            let mut at = off & !63;
            while at < end {
                // SAFETY: `at < len`, so the address lies inside the mapping; a prefetch
                // never faults and changes no memory, only the cache's contents.
                unsafe { _mm_prefetch::<_MM_HINT_ET0>(self.ptr.add(at) as *const i8) };
                at += 64;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (off, len);
    }

    /// Borrows `[off, off+len)`.
    ///
    /// # Safety
    /// No thread writes the range while the borrow lives: it lies inside published frames
    /// (immutable), or the region is not shared.
    pub unsafe fn slice(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= self.len);
        // SAFETY: bounds checked above; immutability is the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }
}

#[cfg(loom)]
impl Region {
    pub fn heap(len: usize) -> Region {
        Region {
            words: (0..len / FRAME_ALIGN).map(|_| AtomicU64::new(0)).collect(),
            bytes: (0..len).map(|_| crate::sync::UnsafeCell::new(0)).collect(),
            len,
        }
    }
    pub fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off % FRAME_ALIGN == 0 && off + 8 <= self.len);
        &self.words[off / FRAME_ALIGN]
    }
    /// # Safety
    /// As the non-loom `write`: the caller owns the range.
    pub unsafe fn write(&self, off: usize, src: &[u8]) {
        for (i, b) in src.iter().enumerate() {
            // SAFETY: loom's cell checks the exclusivity the caller promises.
            self.bytes[off + i].with_mut(|p| unsafe { *p = *b });
        }
    }
    /// Copies `[off, off+len)` out (loom cells cannot be borrowed as a slice).
    ///
    /// # Safety
    /// As the non-loom `slice`: nobody writes the range concurrently.
    pub unsafe fn read_vec(&self, off: usize, len: usize) -> Vec<u8> {
        // SAFETY: loom's cell checks the absence of concurrent writes.
        (off..off + len)
            .map(|i| self.bytes[i].with(|p| unsafe { *p }))
            .collect()
    }
}

impl Region {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Why a claim produced no frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Lost;

/// What a reader finds at an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// A published event: aligned length, kind, payload offset and length.
    Event {
        len: usize,
        kind: u16,
        payload_off: usize,
        payload_len: usize,
    },
    /// Published padding to skip.
    Padding { len: usize },
    /// Nothing published here yet.
    Pending,
}

/// One segment's region plus the identity that goes under every checksum.
#[derive(Debug)]
pub struct RawSegment {
    pub region: Region,
    pub seq: u64,
    pub base: u64,
    pub size: usize,
}

impl RawSegment {
    /// Writes and publishes an event for a claim that lies wholly inside this segment.
    /// Returns the frame's resource version (its global position), or `Lost` if the
    /// unblocker took the claim first.
    pub fn write_event(&self, claim: &Claim, kind: u16, payload: &[u8]) -> Result<u64, Lost> {
        let off = claim.off as usize;
        let len = claim.len;
        assert!(
            claim.seq_tag == seq_tag(self.seq) && off + len as usize <= self.size,
            "claim outside its segment"
        );
        assert_eq!(len as usize, frame::event_frame_len(payload.len()));
        let word = self.region.word(off);
        word.compare_exchange(
            0,
            frame::claimed_word(len),
            Ordering::Acquire,
            Ordering::Relaxed,
        )
        .map_err(|_| Lost)?;
        #[cfg(not(loom))]
        self.region
            .prefetch_write(off + PREFETCH_AHEAD, len as usize);
        let position = self.base + off as u64;
        let published = frame::event_word(len, kind);
        let mut head = [0u8; 16];
        head[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[8..16].copy_from_slice(&position.to_le_bytes());
        let crc = frame::event_crc_parts(published, position, self.seq, payload);
        head[..4].copy_from_slice(&crc.to_le_bytes());
        // SAFETY: this thread holds the claim for `[off, off+len)` (unique from the tail's
        // fetch_add) and won the marking CAS, so no producer and no unblocker writes these
        // bytes; readers do not read them before the publish below.
        unsafe {
            self.region.write(off + 8, &head);
            self.region.write(off + EVENT_HEADER_LEN, payload);
        }
        word.compare_exchange(
            frame::claimed_word(len),
            published,
            Ordering::Release,
            Ordering::Relaxed,
        )
        .map_err(|_| Lost)?;
        Ok(position)
    }

    /// Publishes padding over `[off, size)` for a claim that crossed the segment's end.
    /// Returns false if the unblocker got there first (it pads the same range).
    pub fn pad_to_end(&self, claim: &Claim) -> bool {
        let off = claim.off as usize;
        assert!(claim.seq_tag == seq_tag(self.seq) && off < self.size);
        let len = (self.size - off) as u32;
        let w = frame::padding_word(len, self.base + off as u64, self.seq);
        self.region
            .word(off)
            .compare_exchange(0, w, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// Reads the frame at `off` (which must be a frame boundary reached by following
    /// published frames from the segment start).
    pub fn read(&self, off: usize) -> Read {
        if off >= self.size {
            return Read::Pending;
        }
        let w = Word::unpack(self.region.word(off).load(Ordering::Acquire));
        match w.ty {
            TYPE_EVENT => {
                #[cfg(not(loom))]
                // SAFETY: the acquire load saw the frame published; published bytes are
                // never written again.
                let pl = unsafe { self.region.slice(off + 12, 4) };
                #[cfg(loom)]
                // SAFETY: as above.
                let pl = unsafe { self.region.read_vec(off + 12, 4) };
                let payload_len = u32::from_le_bytes(pl[..4].try_into().expect("4 bytes")) as usize;
                Read::Event {
                    len: w.len as usize,
                    kind: w.kind,
                    payload_off: off + EVENT_HEADER_LEN,
                    payload_len,
                }
            }
            TYPE_PADDING => Read::Padding {
                len: w.len as usize,
            },
            _ => Read::Pending,
        }
    }

    /// Follows published frames (events and padding) from the frame boundary `off`; returns
    /// the offset of the first unpublished frame, or one at or past the segment's size if
    /// every frame from `off` to the end is published.
    pub fn published_end(&self, mut off: usize) -> usize {
        while off < self.size {
            match self.read(off) {
                Read::Event { len, .. } | Read::Padding { len } => off += len,
                Read::Pending => break,
            }
        }
        off
    }

    /// Borrows the payload of an event that [`RawSegment::read`] returned.
    #[cfg(not(loom))]
    pub fn payload(&self, payload_off: usize, payload_len: usize) -> &[u8] {
        assert!(payload_off >= EVENT_HEADER_LEN && payload_off + payload_len <= self.size);
        // SAFETY: the range belongs to a frame that `read` saw published (acquire); such
        // bytes are immutable for the life of the segment.
        unsafe { self.region.slice(payload_off, payload_len) }
    }

    /// Copies the payload of a published event (loom builds).
    #[cfg(loom)]
    pub fn payload_vec(&self, payload_off: usize, payload_len: usize) -> Vec<u8> {
        // SAFETY: as `payload`.
        unsafe { self.region.read_vec(payload_off, payload_len) }
    }

    /// Unblocks a frame at `off` that has not been published: pads a `CLAIMED` frame, or
    /// poisons the unmarked gap `[off, frontier)` slot by slot until a slot some producer
    /// marked, then pads the poisoned part. Returns the padded length, or `None` if there
    /// was nothing to do (the frame got published meanwhile).
    ///
    /// The caller decides *when* (after a timeout); `frontier` is the claim frontier in
    /// this segment (the tail offset, capped at the segment size).
    pub fn unblock(&self, off: usize, frontier: usize) -> Option<usize> {
        let frontier = frontier.min(self.size);
        if off >= frontier {
            return None;
        }
        let position = self.base + off as u64;
        let word = self.region.word(off);
        let current = word.load(Ordering::Acquire);
        let w = Word::unpack(current);
        match w.ty {
            TYPE_CLAIMED => {
                let len = w.len;
                let pad = frame::padding_word(len, position, self.seq);
                word.compare_exchange(current, pad, Ordering::AcqRel, Ordering::Acquire)
                    .ok()
                    .map(|_| len as usize)
            }
            0 if current == 0 => {
                if word
                    .compare_exchange(0, POISON_WORD, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return None; // a producer marked it just now
                }
                let mut end = off + FRAME_ALIGN;
                while end < frontier {
                    let slot = self.region.word(end);
                    if slot
                        .compare_exchange(0, POISON_WORD, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        break; // a later claim starts here and is marked: stop before it
                    }
                    end += FRAME_ALIGN;
                }
                let len = (end - off) as u32;
                word.store(
                    frame::padding_word(len, position, self.seq),
                    Ordering::Release,
                );
                Some(end - off)
            }
            _ => None,
        }
    }

    /// The whole region as bytes, for recovery.
    ///
    /// # Safety
    /// No other thread accesses the region (the log is not open yet).
    #[cfg(not(loom))]
    pub unsafe fn quiescent_bytes(&self) -> &[u8] {
        // SAFETY: the caller guarantees quiescence; the range is the whole region.
        unsafe { self.region.slice(0, self.region.len()) }
    }

    /// Overwrites `[off, off+bytes.len())`.
    ///
    /// # Safety
    /// No other thread accesses the region (recovery or segment creation).
    #[cfg(not(loom))]
    pub unsafe fn quiescent_write(&self, off: usize, bytes: &[u8]) {
        // SAFETY: the caller guarantees quiescence.
        unsafe { self.region.write(off, bytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::frame::{Decoded, SEGMENT_HEADER_LEN, decode};

    fn seg(size: usize) -> RawSegment {
        RawSegment {
            region: Region::anon(size).unwrap(),
            seq: 5,
            base: 1 << 20,
            size,
        }
    }

    #[test]
    fn published_events_decode_with_recovery_rules() {
        let s = seg(4096);
        let tail = Tail::new(5, SEGMENT_HEADER_LEN as u64);
        let c1 = tail.claim(frame::event_frame_len(3) as u32);
        let c2 = tail.claim(frame::event_frame_len(40) as u32);
        let rv2 = s.write_event(&c2, 2, &[7u8; 40]).unwrap();
        assert_eq!(
            s.read(c1.offset() as usize),
            Read::Pending,
            "unpublished first frame"
        );
        let rv1 = s.write_event(&c1, 1, b"abc").unwrap();
        assert!(rv1 < rv2);
        // SAFETY: single-threaded test.
        let bytes = unsafe { s.quiescent_bytes() };
        match decode(bytes, c1.offset() as usize, s.base, s.seq) {
            Decoded::Event {
                kind: 1,
                rv,
                payload_len: 3,
                ..
            } => assert_eq!(rv, rv1),
            d => panic!("{d:?}"),
        }
        match s.read(c2.offset() as usize) {
            Read::Event {
                kind: 2,
                payload_off,
                payload_len: 40,
                ..
            } => {
                assert_eq!(s.payload(payload_off, 40), &[7u8; 40])
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn unblocker_pads_claimed_frame_and_late_publish_is_lost() {
        let s = seg(4096);
        let tail = Tail::new(5, 64);
        let c = tail.claim(frame::event_frame_len(8) as u32);
        // Simulate a producer that marked its claim and stalled: mark by hand.
        s.region
            .word(64)
            .compare_exchange(
                0,
                frame::claimed_word(c.len()),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .unwrap();
        assert_eq!(s.unblock(64, 4096), Some(c.len() as usize));
        assert_eq!(
            s.read(64),
            Read::Padding {
                len: c.len() as usize
            }
        );
        // SAFETY: single-threaded test.
        let bytes = unsafe { s.quiescent_bytes() };
        assert_eq!(
            decode(bytes, 64, s.base, s.seq),
            Decoded::Padding {
                len: c.len() as usize
            }
        );
    }

    #[test]
    fn unblocker_poisons_unmarked_gap_up_to_the_next_marked_claim() {
        let s = seg(4096);
        let tail = Tail::new(5, 64);
        let dead = tail.claim(64); // never marked
        let stalled = tail.claim(frame::event_frame_len(20) as u32); // never marked either
        let live = tail.claim(frame::event_frame_len(4) as u32);
        s.write_event(&live, 9, b"live").unwrap();
        let frontier = tail.load().1 as usize;
        let padded = s.unblock(dead.offset() as usize, frontier).unwrap();
        assert_eq!(padded, (live.offset() - dead.offset()) as usize);
        // The stalled producer wakes up: its marking CAS fails, nothing is written.
        assert_eq!(s.write_event(&stalled, 1, &[0u8; 20]), Err(Lost));
        assert_eq!(s.read(64), Read::Padding { len: padded });
        assert!(matches!(s.read(64 + padded), Read::Event { kind: 9, .. }));
    }

    #[test]
    fn segment_end_padding() {
        let s = seg(4096);
        let tail = Tail::new(5, 4096 - 32);
        let c = tail.claim(64);
        assert!(s.pad_to_end(&c));
        assert_eq!(s.read(4096 - 32), Read::Padding { len: 32 });
        let (tag, off) = tail.load();
        assert_eq!((tag, off), (5, 4096 + 32));
    }
}
