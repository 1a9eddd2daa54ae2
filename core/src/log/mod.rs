//! The event log: floyd's single source of truth. Fixed-size, preallocated, memory-mapped
//! segment files hold checksummed frames; producers append without locks (one `fetch_add`
//! on the tail, write, publish the length word last — see `raw`); readers follow the
//! published prefix in place; a background thread syncs it (group commit), prepares the next
//! segment and unblocks abandoned claims. Recovery on open keeps the intact prefix, cuts a
//! torn tail (keeping a `.broken` copy) and refuses damage in the middle (`Corrupt`).
//!
//! The log knows nothing of objects: a frame is `(rv, kind: u16, payload bytes)`, and the
//! resource version of a frame is its global byte position, so it is strictly increasing in
//! log order and a cursor can seek to it. The store gives frames meaning.

#![allow(unsafe_code)] // only `raw` and the storage shims use it; see their SAFETY notes

pub mod commit;
pub mod frame;
pub mod raw;
mod recovery;
pub mod storage;
pub mod watermark;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::clock::{Clock, SharedClock, SystemClock};
use crate::error::{Error, Result};
use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use commit::{GroupCommit, Waited};
use frame::{SEGMENT_HEADER_LEN, SegmentHeader};
use raw::{RawSegment, Read, Tail};
pub use recovery::RecoveryReport;
pub use storage::{
    FileSource, FileStorage, FileWriter, MemStorage, PowerCutReport, SimStorage, Storage,
};
use watermark::Watermark;

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Default group-commit interval in `batch` mode.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(5);
/// Default group-commit size trigger in `batch` mode.
pub const DEFAULT_BATCH_BYTES: u64 = 1 << 20;
/// How long a claim may stay unpublished before the background thread pads it over.
pub const DEFAULT_UNBLOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the background thread looks for stuck claims when nothing else wakes it.
const IDLE_TICK: Duration = Duration::from_millis(50);
/// The next segment is prepared once the current one is this full (1 / divisor; 4 MiB of
/// the default 64 MiB): early enough that preparing overlaps nearly the whole segment's
/// filling, late enough that a log which stays small never holds a second segment's disk
/// space (or, in memory, its RAM).
const PREPARE_AT_DIVISOR: u64 = 16;

/// Where in a segment of `size` bytes the next one starts being prepared.
fn prepare_threshold(size: u64) -> u64 {
    size / PREPARE_AT_DIVISOR
}

/// When an append counts as acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged once published (page cache); survives a process crash, not power loss.
    None,
    /// Acknowledged once published; a background group commit syncs every `interval` or
    /// every `bytes` of new frames, whichever comes first.
    Batch { interval: Duration, bytes: u64 },
    /// Acknowledged only after the frame and every earlier frame are synced; concurrent
    /// appenders share one sync.
    Always,
}

impl Durability {
    /// `batch` with the default 5 ms / 1 MiB triggers.
    pub const fn batch() -> Durability {
        Durability::Batch {
            interval: DEFAULT_BATCH_INTERVAL,
            bytes: DEFAULT_BATCH_BYTES,
        }
    }

    /// Parses `"none" | "batch" | "always"`.
    pub fn parse(s: &str) -> Result<Durability> {
        match s {
            "none" => Ok(Durability::None),
            "batch" => Ok(Durability::batch()),
            "always" => Ok(Durability::Always),
            _ => Err(Error::invalid(
                "durability",
                format!("expected \"none\", \"batch\" or \"always\", got {s:?}"),
            )),
        }
    }
}

/// Log configuration.
#[derive(Clone, Debug)]
pub struct LogConfig {
    pub segment_size: u64,
    pub durability: Durability,
    pub unblock_timeout: Duration,
    /// Touch every page of a new segment before it is used.
    pub prefault: bool,
    /// Recovery verifies frames from this position on (the newest snapshot's version);
    /// earlier segments only have their headers checked.
    pub verify_from: u64,
    pub clock: SharedClock,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size: DEFAULT_SEGMENT_SIZE,
            durability: Durability::batch(),
            unblock_timeout: DEFAULT_UNBLOCK_TIMEOUT,
            prefault: true,
            verify_from: 0,
            clock: SystemClock::shared(),
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<()> {
        let s = self.segment_size;
        if !(frame::MIN_SEGMENT_SIZE..=frame::MAX_SEGMENT_SIZE).contains(&s)
            || !s.is_multiple_of(4096)
        {
            return Err(Error::invalid(
                "segment_size",
                format!(
                    "must be a multiple of 4096 between {} and {}, got {s}",
                    frame::MIN_SEGMENT_SIZE,
                    frame::MAX_SEGMENT_SIZE
                ),
            ));
        }
        Ok(())
    }
}

/// One segment: its mapping plus its file name.
#[derive(Debug)]
pub(crate) struct Segment {
    raw: RawSegment,
    name: String,
}

impl Segment {
    fn end(&self) -> u64 {
        self.raw.base + self.raw.size as u64
    }
}

fn segment_name(seq: u64) -> String {
    format!("seg-{seq:016x}.log")
}
fn prepared_name(seq: u64) -> String {
    format!("seg-{seq:016x}.prep")
}

/// A frame read from the log; `payload` borrows the mapping (zero-copy).
#[derive(Clone, Debug)]
pub struct Frame {
    pub rv: u64,
    pub kind: u16,
    pub payload: Bytes,
}

/// Counters describing the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Position of the next claim.
    pub tail: u64,
    /// Everything before this position is published.
    pub published: u64,
    /// Everything before this position is durable.
    pub synced: u64,
    /// The first position still in the log.
    pub oldest: u64,
    pub segments: u64,
    pub bytes: u64,
    pub syncs: u64,
    pub unblocked_claims: u64,
    pub truncated_bytes: u64,
}

struct SyncState {
    /// `(published, since)`: when the watermark last moved, for the unblocker.
    stalled_since: Option<(u64, Instant)>,
    want_sync: bool,
    unblocked: u64,
}

pub(crate) struct Inner {
    storage: Arc<dyn Storage>,
    cfg: LogConfig,
    tail: Tail,
    current: ArcSwap<Segment>,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    rotate_lock: Mutex<()>,
    /// The next segment, created ahead of need. Only code holding this lock creates
    /// prepared segment files, so two threads never race on one file name.
    prepared: Mutex<Option<Segment>>,
    state: Mutex<SyncState>,
    /// Every frame before it is published: what `none` and `batch` acknowledge against.
    published: Watermark,
    /// Wakes the background thread.
    work: Condvar,
    /// The synced position and the appenders waiting for it (`always`, [`Log::sync`]).
    commit: GroupCommit,
    readers_waiting: AtomicU32,
    new_data: Mutex<()>,
    new_data_cv: Condvar,
    closed: AtomicBool,
    poisoned: Mutex<Option<String>>,
    is_poisoned: AtomicBool,
    /// When the log was opened: in a forked child of the process that opened it, this is a
    /// copy that must not write.
    fork: crate::sync::ForkStamp,
    oldest: AtomicU64,
    truncated_bytes: u64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("storage", &self.storage)
            .finish()
    }
}

/// The event log. Dropping it closes it (a final sync, then the background thread stops).
#[derive(Debug)]
pub struct Log {
    inner: Arc<Inner>,
    thread: Mutex<Option<crate::sync::Joinable<()>>>,
}

/// Releases a claim that was never published (a panic between claim and publish): the
/// frame becomes padding so readers and acknowledgements move past it.
struct ClaimGuard<'a> {
    seg: &'a Segment,
    claim: Option<&'a raw::Claim>,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.claim.take() {
            let off = c.offset() as usize;
            let _ = self.seg.raw.unblock(off, off + c.len() as usize);
        }
    }
}

/// Counts the forks this process descends from since floyd first opened a log in it (the
/// child's handler of `pthread_atfork` increments it). A log opened before a fork must not
/// be used by the child: the child would write into the parent's files with none of the
/// parent's threads, and its `close` would release the parent's directory lock. Python's
/// `multiprocessing` forks by default on Linux before 3.14.
static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // A lock-free atomic add: async-signal-safe, as code between fork and exec must be.
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The current fork generation, installing the handler on first use.
pub(crate) fn fork_generation() -> u64 {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn()` with no captured state, which only
        // performs an atomic add; nothing is passed that could dangle, and a registration
        // cannot be undone, so the function (a static item) outlives it.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        if rc != 0 {
            tracing::warn!(
                rc,
                "pthread_atfork failed: a forked child is not kept off the log"
            );
        }
    });
    current_fork_generation()
}

/// The fork generation now, without installing anything (for the checks on hot paths: a
/// stamp taken before the handler existed is 0, and so is this until a fork happens).
pub(crate) fn current_fork_generation() -> u64 {
    FORK_GENERATION.load(std::sync::atomic::Ordering::Relaxed)
}

impl Log {
    /// Whether this log was opened by the process this one was forked from (it refuses
    /// every write here, and closing it leaves the parent's files and threads alone).
    pub fn is_forked_copy(&self) -> bool {
        self.inner.forked()
    }

    /// Opens (or creates) a log in `dir` on real files.
    pub fn open_dir(dir: impl AsRef<Path>, cfg: LogConfig) -> Result<(Log, RecoveryReport)> {
        let storage = Arc::new(FileStorage::new(dir)?);
        Log::open(storage, cfg)
    }

    /// An in-memory log (nothing persisted).
    pub fn memory(cfg: LogConfig) -> Result<Log> {
        let cfg = LogConfig {
            durability: Durability::None,
            ..cfg
        };
        Log::open(Arc::new(MemStorage::default()), cfg).map(|(l, _)| l)
    }

    /// Opens a log over any storage, running recovery first.
    pub fn open(storage: Arc<dyn Storage>, cfg: LogConfig) -> Result<(Log, RecoveryReport)> {
        cfg.validate()?;
        let rec = recovery::recover(storage.as_ref(), &cfg)?;
        let mut segments = BTreeMap::new();
        let mut segs = rec.segments;
        if segs.is_empty() {
            let s = create_segment(storage.as_ref(), &cfg, 0, 0)?;
            storage.rename(&prepared_name(0), &segment_name(0))?;
            storage.sync_dir()?;
            segs.push(Segment {
                raw: s.raw,
                name: segment_name(0),
            });
        }
        let mut last = None;
        for s in segs {
            let s = Arc::new(s);
            last = Some(s.clone());
            segments.insert(s.raw.seq, s);
        }
        let last = last.expect("at least one segment");
        let first = segments
            .values()
            .next()
            .expect("at least one segment")
            .clone();
        let (tail_seq, tail_off) = match rec.end {
            Some((seq, off)) => (seq, off),
            None => (last.raw.seq, SEGMENT_HEADER_LEN),
        };
        let tail_pos = segments[&tail_seq].raw.base + tail_off as u64;
        let inner = Arc::new(Inner {
            tail: Tail::new(tail_seq, tail_off as u64),
            current: ArcSwap::new(last.clone()),
            segments: RwLock::new(segments),
            rotate_lock: Mutex::new(()),
            prepared: Mutex::new(None),
            state: Mutex::new(SyncState {
                stalled_since: None,
                want_sync: false,
                unblocked: 0,
            }),
            published: Watermark::new(tail_pos),
            work: Condvar::new(),
            commit: GroupCommit::new(tail_pos),
            readers_waiting: AtomicU32::new(0),
            new_data: Mutex::new(()),
            new_data_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            fork: crate::sync::ForkStamp::now(),
            oldest: AtomicU64::new(first.raw.base),
            truncated_bytes: rec.report.truncated_bytes,
            storage,
            cfg,
        });
        let bg = inner.clone();
        let thread = std::thread::Builder::new()
            .name("floyd-log".into())
            .spawn(move || bg.background())
            .map_err(|e| Error::io("spawn the log thread", e))?;
        Ok((
            Log {
                inner,
                thread: Mutex::new(Some(thread.into())),
            },
            rec.report,
        ))
    }

    /// Largest payload one frame can carry with this segment size.
    pub fn max_payload(&self) -> usize {
        self.inner.cfg.segment_size as usize - SEGMENT_HEADER_LEN - frame::EVENT_HEADER_LEN
    }

    /// Appends one frame and returns its resource version once it is acknowledged under
    /// the log's durability mode.
    pub fn append(&self, kind: u16, payload: &[u8]) -> Result<u64> {
        let rv = self.inner.append(kind, payload)?;
        let end = rv + frame::event_frame_len(payload.len()) as u64;
        self.inner.after_publish(end)?;
        Ok(rv)
    }

    /// Appends without waiting for durability (the caller waits with [`Log::wait_durable`]
    /// later, e.g. after releasing its own locks). Returns `(rv, end position)`.
    pub fn append_nowait(&self, kind: u16, payload: &[u8]) -> Result<(u64, u64)> {
        let rv = self.inner.append(kind, payload)?;
        let end = rv + frame::event_frame_len(payload.len()) as u64;
        self.inner.notify_readers();
        Ok((rv, end))
    }

    /// Waits until everything before `end` is acknowledged under the durability mode.
    pub fn wait_durable(&self, end: u64) -> Result<()> {
        self.inner.after_publish_no_notify(end)
    }

    /// Syncs everything published so far, whatever the mode; returns the synced position.
    pub fn sync(&self) -> Result<u64> {
        self.inner.check_open()?;
        let target = self.inner.tail_position();
        self.inner.wait_synced(target)?;
        Ok(self.inner.commit.synced())
    }

    /// A cursor at the first retained frame.
    pub fn cursor(&self) -> Result<Cursor> {
        let first = self
            .inner
            .segments
            .read()
            .values()
            .next()
            .cloned()
            .expect("a segment");
        Ok(Cursor {
            inner: self.inner.clone(),
            seg: first,
            off: SEGMENT_HEADER_LEN,
            after: 0,
        })
    }

    /// A cursor whose first frame is the first one with `rv > after`. `Expired` if frames
    /// after `after` were compacted away.
    pub fn cursor_after(&self, after: u64) -> Result<Cursor> {
        let oldest = self.oldest();
        if oldest > 0 && after + 1 < oldest {
            return Err(Error::Expired(format!(
                "version {after} is older than the oldest retained version {oldest}"
            )));
        }
        let seg = {
            let segs = self.inner.segments.read();
            segs.values()
                .rev()
                .find(|s| s.raw.base <= after)
                .or_else(|| segs.values().next())
                .cloned()
                .expect("a segment")
        };
        let mut c = Cursor {
            inner: self.inner.clone(),
            seg,
            off: SEGMENT_HEADER_LEN,
            after,
        };
        c.skip_through(after)?;
        Ok(c)
    }

    /// The start of the oldest retained segment: 0 until something was compacted. Versions
    /// before `oldest - 1` can no longer be resumed from.
    pub fn oldest(&self) -> u64 {
        self.inner.oldest.load(Ordering::Acquire)
    }

    /// Position of the next claim (an upper bound of every rv handed out).
    pub fn tail_position(&self) -> u64 {
        self.inner.tail_position()
    }

    /// Everything before this position is published (all frames readable).
    pub fn published_position(&self) -> u64 {
        self.inner.advance_watermark()
    }

    /// Everything before this position is durable.
    pub fn synced_position(&self) -> u64 {
        self.inner.commit.synced()
    }

    /// Removes whole segments that end at or before `before` (never the current one).
    /// Returns how many were removed.
    pub fn compact(&self, before: u64) -> Result<usize> {
        let victims: Vec<Arc<Segment>> = {
            let mut segs = self.inner.segments.write();
            let current = self.inner.current.load().raw.seq;
            let vs: Vec<u64> = segs
                .values()
                .filter(|s| s.end() <= before && s.raw.seq < current)
                .map(|s| s.raw.seq)
                .collect();
            let removed = vs.iter().filter_map(|q| segs.remove(q)).collect();
            let first = segs.values().next().expect("current stays");
            // The same value `open` sets: the oldest retained segment's start, so that
            // `oldest` and which versions are resumable do not change across a reopen.
            self.inner.oldest.store(first.raw.base, Ordering::Release);
            removed
        };
        if !victims.is_empty() {
            crate::failpoint!("compaction.before_delete_segment");
        }
        for (i, s) in victims.iter().enumerate() {
            if i > 0 {
                crate::failpoint!("compaction.between_segment_deletes");
            }
            self.inner.storage.remove(&s.name)?;
        }
        if !victims.is_empty() {
            self.inner.storage.sync_dir()?;
        }
        Ok(victims.len())
    }

    pub fn stats(&self) -> LogStats {
        let published = self.inner.advance_watermark();
        let st = self.inner.state.lock();
        let segs = self.inner.segments.read();
        LogStats {
            tail: self.inner.tail_position(),
            published,
            synced: self.inner.commit.synced(),
            oldest: self.oldest(),
            segments: segs.len() as u64,
            bytes: segs.values().map(|s| s.raw.size as u64).sum(),
            syncs: self.inner.commit.syncs(),
            unblocked_claims: st.unblocked,
            truncated_bytes: self.inner.truncated_bytes,
        }
    }

    pub fn durability(&self) -> Durability {
        self.inner.cfg.durability
    }

    /// Closes the log: refuses new appends, syncs what was published (unless the log is
    /// poisoned), stops the background thread. Idempotent.
    ///
    /// When `close` returns, nothing of this log writes to its files any more (appends
    /// racing the close either finished, were padded, or fail with `ShutDown` having
    /// written nothing), and a directory's lock is released, so the directory can be
    /// opened again, in this process or another, while this handle still exists.
    ///
    /// In a forked child of the process that opened the log, `close` only marks this copy
    /// closed: the threads it would stop do not exist here, and the files and the
    /// directory's lock still belong to the parent.
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if self.inner.forked() {
            // Dropping the background thread's handle here forgets it (`Joinable`).
            drop(self.thread.try_lock().and_then(|mut t| t.take()));
            return Ok(());
        }
        self.inner.drain_claims();
        {
            let _st = self.inner.state.lock();
            self.inner.work.notify_all();
        }
        self.inner.commit.stop();
        self.inner.wake_readers();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        let r = self.inner.check_poison();
        // No unblocker pads anything after this: each checks `closed` under this lock.
        drop(self.inner.state.lock());
        self.inner.storage.release();
        r
    }

    /// Stops the log as a crash would (tests): no final sync, later appends fail, and once
    /// this returns no append writes into the segments any more (claims below the seal are
    /// drained, as in `close`), so a power cut can be taken while appenders still run.
    pub fn abandon(&self) {
        self.inner.is_poisoned.store(true, Ordering::Release);
        *self.inner.poisoned.lock() = Some("abandoned".into());
        self.inner.commit.fail();
        let _ = self.close();
    }

    /// Test hook: claims space and never publishes it, as a producer that stalled forever
    /// between claim and publish would.
    #[doc(hidden)]
    pub fn leak_claim_for_test(&self, payload_len: usize) {
        let len = frame::event_frame_len(payload_len) as u32;
        let _ = self.inner.tail.claim(len);
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShutDown("the log is closed".into()));
        }
        self.fork.check("log")?;
        self.check_poison()
    }

    /// Whether this is a forked child's copy of a log its parent opened.
    fn forked(&self) -> bool {
        self.fork.is_forked_copy()
    }

    fn check_poison(&self) -> Result<()> {
        if self.is_poisoned.load(Ordering::Acquire) {
            let why = self.poisoned.lock().clone().unwrap_or_default();
            return Err(Error::io(
                "the log is poisoned by an earlier storage failure; reopen to recover",
                std::io::Error::other(why),
            ));
        }
        Ok(())
    }

    fn poison(&self, why: String) {
        tracing::error!(%why, "log poisoned");
        *self.poisoned.lock() = Some(why);
        self.is_poisoned.store(true, Ordering::Release);
        self.commit.fail();
    }

    fn tail_position(&self) -> u64 {
        let (tag, off) = self.tail.load();
        let cur = self.current.load();
        if raw::seq_tag(cur.raw.seq) == tag {
            cur.raw.base + off.min(cur.raw.size as u64)
        } else {
            self.segment_by_tag(tag)
                .map(|s| s.raw.base + off.min(s.raw.size as u64))
                .unwrap_or(cur.raw.base)
        }
    }

    fn segment_by_tag(&self, tag: u64) -> Option<Arc<Segment>> {
        let cur = self.current.load_full();
        if raw::seq_tag(cur.raw.seq) == tag {
            return Some(cur);
        }
        self.segments
            .read()
            .values()
            .rev()
            .find(|s| raw::seq_tag(s.raw.seq) == tag)
            .cloned()
    }

    fn append(&self, kind: u16, payload: &[u8]) -> Result<u64> {
        self.check_open()?;
        let max = self.cfg.segment_size as usize - SEGMENT_HEADER_LEN - frame::EVENT_HEADER_LEN;
        if payload.len() > max {
            return Err(Error::invalid(
                "payload",
                format!(
                    "{} bytes exceeds the largest frame of {max} bytes",
                    payload.len()
                ),
            ));
        }
        let len = frame::event_frame_len(payload.len()) as u32;
        loop {
            let claim = self.tail.claim(len);
            crate::failpoint!("log.after_claim");
            // Fast path: the current segment through arc-swap's guard, which does not touch
            // the shared reference count (a contended cache line with several producers).
            let current = self.current.load();
            let found;
            let seg: &Segment = if raw::seq_tag(current.raw.seq) == claim.seq_tag() {
                &current
            } else {
                found = self.segment_by_tag(claim.seq_tag());
                match found.as_deref() {
                    Some(s) => s,
                    None => {
                        // The claim's segment is gone (compacted after the unblocker padded a
                        // claim of ours that stalled): claim again.
                        self.check_open()?;
                        continue;
                    }
                }
            };
            let off = claim.offset();
            let size = seg.raw.size as u64;
            if off + len as u64 <= size {
                let mut guard = ClaimGuard {
                    seg,
                    claim: Some(&claim),
                };
                let r = seg.raw.write_event(&claim, kind, payload);
                guard.claim = None;
                match r {
                    Ok(rv) => {
                        crate::failpoint!("log.after_publish");
                        // The usual case: every earlier frame is published, and the
                        // watermark moves over this one at once. Otherwise whoever waits for
                        // it (or reads the position) walks over it later.
                        self.published.pass(rv, rv + len as u64);
                        let t = prepare_threshold(size);
                        if off < t && off + len as u64 >= t {
                            // Once per segment: the background thread prepares the next.
                            let _st = self.state.lock();
                            self.work.notify_one();
                        }
                        return Ok(rv);
                    }
                    Err(raw::Lost) => {
                        self.check_open()?;
                        continue;
                    }
                }
            }
            if claim.is_sealed() {
                // Claimed after `close` sealed the tail, which no longer waits for it:
                // nothing may be written (see `Tail::seal`).
                return Err(Error::ShutDown("the log is closed".into()));
            }
            if off < size {
                seg.raw.pad_to_end(&claim);
                crate::failpoint!("log.after_padding");
            }
            self.rotate(seg.raw.seq)?;
        }
    }

    fn after_publish(&self, end: u64) -> Result<()> {
        self.notify_readers();
        self.after_publish_no_notify(end)
    }

    fn after_publish_no_notify(&self, end: u64) -> Result<()> {
        match self.cfg.durability {
            Durability::None => self.wait_published(end),
            Durability::Batch { bytes, .. } => {
                if end.saturating_sub(self.commit.synced()) > bytes {
                    let mut st = self.state.lock();
                    st.want_sync = true;
                    self.work.notify_one();
                }
                self.wait_published(end)
            }
            Durability::Always => self.wait_synced(end),
        }
    }

    /// Blocks until every frame before `end` is published: how `none` and `batch`
    /// acknowledge, so that no acknowledged frame lies after a hole a killed producer could
    /// leave (recovery cuts the log there). The frames before are usually being copied on
    /// another core right now: spin briefly, then yield, then sleep on the readers' signal
    /// (every publish sends it). A claim that stays unpublished for the unblock timeout is
    /// padded, as a blocked reader would, so this wait is bounded.
    fn wait_published(&self, end: u64) -> Result<()> {
        if self.published.get() >= end || self.advance_watermark() >= end {
            return Ok(());
        }
        self.wait_published_slow(end)
    }

    #[cold]
    fn wait_published_slow(&self, end: u64) -> Result<()> {
        const SPINS: u32 = 64;
        const YIELDS: u32 = 16;
        for i in 0..SPINS + YIELDS {
            if i < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            if self.advance_watermark() >= end {
                return Ok(());
            }
        }
        let mut stalled: Option<(u64, Instant)> = None;
        loop {
            let published = self.advance_watermark();
            if published >= end {
                return Ok(());
            }
            if self.stall_expired(published, &mut stalled) {
                // Under the state lock, and not once the log closed: `close` pads what is
                // left itself (`drain_claims`), which also ends this wait.
                let mut st = self.state.lock();
                if !self.closed.load(Ordering::Acquire)
                    && self.pad_stalled_claim(&mut st, self.tail_position())
                {
                    drop(st);
                    tracing::warn!(
                        position = published,
                        "an appender padded an abandoned claim"
                    );
                    self.notify_readers();
                }
                continue;
            }
            self.readers_waiting.fetch_add(1, Ordering::SeqCst);
            {
                let mut g = self.new_data.lock();
                fence(Ordering::SeqCst);
                if self.advance_watermark() < end {
                    self.new_data_cv
                        .wait_for(&mut g, IDLE_TICK.min(self.cfg.unblock_timeout));
                }
            }
            self.readers_waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Whether the watermark has stood at `published` for the unblock timeout, measured
    /// from the first call that saw it there (`stalled` remembers that); resets once true.
    fn stall_expired(&self, published: u64, stalled: &mut Option<(u64, Instant)>) -> bool {
        let now = self.cfg.clock.now();
        match *stalled {
            Some((p, since)) if p == published => {
                if now.saturating_duration_since(since) >= self.cfg.unblock_timeout {
                    *stalled = None;
                    return true;
                }
            }
            _ => *stalled = Some((published, now)),
        }
        false
    }

    /// Blocks until everything before `end` is synced, leading a group commit when no sync
    /// is running (see `commit`).
    fn wait_synced(&self, end: u64) -> Result<()> {
        match self.commit.wait(end, |from| self.sync_published(from)) {
            Ok(Waited::Synced) => Ok(()),
            Ok(Waited::Stopped) | Err(_) => {
                self.check_poison()?;
                Err(Error::ShutDown(
                    "the log closed before the append was synced".into(),
                ))
            }
        }
    }

    /// One group commit: syncs everything published after `from`; returns the new synced
    /// position. A failure poisons the log before it returns (so the waiters it stops see
    /// the poison).
    fn sync_published(&self, from: u64) -> Result<u64> {
        let published = self.advance_watermark();
        if published <= from {
            return Ok(from);
        }
        match self.sync_range(from, published) {
            Ok(()) => {
                crate::failpoint!("log.after_fsync_before_ack");
                Ok(published)
            }
            Err(e) => {
                self.poison(format!("sync failed: {e}"));
                Err(e)
            }
        }
    }

    fn notify_readers(&self) {
        // Pairs with the SeqCst increment in `Cursor::wait`: either the reader sees our
        // frame when it re-checks, or we see it waiting and wake it.
        fence(Ordering::SeqCst);
        if self.readers_waiting.load(Ordering::Relaxed) > 0 {
            self.wake_readers();
        }
    }

    fn wake_readers(&self) {
        let _g = self.new_data.lock();
        self.new_data_cv.notify_all();
    }

    /// Moves to the segment after `full_seq` unless someone already did.
    fn rotate(&self, full_seq: u64) -> Result<()> {
        let _g = self.rotate_lock.lock();
        let cur = self.current.load_full();
        if cur.raw.seq != full_seq {
            return Ok(());
        }
        self.check_open()?;
        let next_seq = full_seq + 1;
        let next = {
            let mut prepared = self.prepared.lock();
            let ready = match prepared.take() {
                Some(p) if p.raw.seq == next_seq => Ok(p),
                stale => {
                    if let Some(p) = stale {
                        let _ = self.storage.remove(&p.name);
                    }
                    create_segment(self.storage.as_ref(), &self.cfg, next_seq, cur.end())
                }
            };
            match ready {
                Ok(s) => s,
                Err(e) => {
                    self.poison(format!("creating segment {next_seq}: {e}"));
                    return Err(e);
                }
            }
        };
        let name = segment_name(next_seq);
        crate::failpoint!("log.before_dir_fsync");
        let activated = self
            .storage
            .rename(&next.name, &name)
            .and_then(|_| self.storage.sync_dir());
        if let Err(e) = activated {
            self.poison(format!("activating segment {next_seq}: {e}"));
            return Err(e);
        }
        let next = Arc::new(Segment {
            raw: next.raw,
            name,
        });
        self.segments.write().insert(next_seq, next.clone());
        self.current.store(next.clone());
        self.tail.reset(next_seq, SEGMENT_HEADER_LEN as u64);
        let _st = self.state.lock();
        self.work.notify_one();
        Ok(())
    }

    /// On close: seals the tail and waits until every claim made before the seal is
    /// published or padded. A claim that stays unpublished for the unblock timeout (a
    /// producer stalled between claim and publish) is padded, as the unblocker would, so
    /// this is bounded.
    fn drain_claims(&self) {
        let (tag, off) = {
            // A rotation in flight finishes first (it resets the tail); later ones fail on
            // `closed`, so none undoes the seal.
            let _r = self.rotate_lock.lock();
            self.tail.seal()
        };
        let current = self.current.load_full();
        if raw::seq_tag(current.raw.seq) != tag {
            return; // a rotation moves the tail only under the lock held above
        }
        let target = current.raw.base + off.min(current.raw.size as u64);
        // Real time, in steps: the injected clock may be a fake one that never moves.
        const STEP: Duration = Duration::from_micros(200);
        let mut waited = Duration::ZERO;
        let mut last = self.advance_watermark();
        while last < target {
            std::thread::sleep(STEP);
            waited += STEP;
            let now = self.advance_watermark();
            if now != last {
                (last, waited) = (now, Duration::ZERO);
                continue;
            }
            if waited >= self.cfg.unblock_timeout {
                if self.pad_stalled_claim(&mut self.state.lock(), target) {
                    tracing::warn!(position = last, "close padded an abandoned claim");
                }
                waited = Duration::ZERO;
                last = self.advance_watermark();
            }
        }
    }

    /// Pads the claim the watermark stalls at, up to the claim frontier `frontier` (a
    /// position, capped at the segment's end); counts it. `false` if it got published
    /// meanwhile.
    fn pad_stalled_claim(&self, st: &mut SyncState, frontier: u64) -> bool {
        let published = self.advance_watermark();
        let Some((seg, off)) = self.frame_at(published) else {
            return false;
        };
        let frontier = frontier
            .saturating_sub(seg.raw.base)
            .min(seg.raw.size as u64);
        let padded = seg.raw.unblock(off, frontier as usize).is_some();
        if padded {
            st.unblocked += 1;
        }
        padded
    }

    /// Advances the published watermark over published frames; returns its position.
    /// Lock-free (see `watermark`).
    fn advance_watermark(&self) -> u64 {
        self.published.advance(|p| self.published_from(p))
    }

    /// The position of the first unpublished frame at or after the frame boundary `p`,
    /// following published frames across segments.
    fn published_from(&self, p: u64) -> u64 {
        {
            // Fast path: the current segment, through arc-swap's guard (no shared count).
            let cur = self.current.load();
            if cur.raw.base <= p && p < cur.end() {
                let off = ((p - cur.raw.base) as usize).max(SEGMENT_HEADER_LEN);
                let end = cur.raw.published_end(off);
                if end < cur.raw.size {
                    return cur.raw.base + end as u64;
                }
            }
        }
        let Some((mut seg, mut off)) = self.frame_at(p) else {
            return p;
        };
        loop {
            off = seg.raw.published_end(off);
            if off < seg.raw.size {
                return seg.raw.base + off as u64;
            }
            let next = self.segments.read().get(&(seg.raw.seq + 1)).cloned();
            match next {
                Some(n) => (seg, off) = (n, SEGMENT_HEADER_LEN),
                None => return seg.end(),
            }
        }
    }

    /// The segment holding position `p` and the frame offset in it (a position at a
    /// segment's start means its first frame). A position compacted away (never one at or
    /// after the watermark) maps to the oldest segment's first frame.
    fn frame_at(&self, p: u64) -> Option<(Arc<Segment>, usize)> {
        let segs = self.segments.read();
        let seg = segs
            .values()
            .rev()
            .find(|s| s.raw.base <= p)
            .or_else(|| segs.values().next())?;
        let off = (p.saturating_sub(seg.raw.base) as usize).max(SEGMENT_HEADER_LEN);
        Some((seg.clone(), off))
    }

    /// The background thread: group commit, segment preparation, unblocking.
    fn background(self: Arc<Self>) {
        let mut st = self.state.lock();
        loop {
            let closed = self.closed.load(Ordering::Acquire);
            let need_sync = match self.cfg.durability {
                Durability::None => closed || st.want_sync,
                _ => true,
            };
            // In `none` mode nothing needs the watermark between explicit syncs (blocked
            // readers and appenders unblock abandoned claims themselves), so the thread
            // leaves the producers' cache lines alone.
            let published = if need_sync {
                self.advance_watermark()
            } else {
                self.published.get()
            };
            if need_sync
                && published > self.commit.synced()
                && !self.is_poisoned.load(Ordering::Acquire)
            {
                drop(st);
                // Through group commit, so a sync an appender leads is never duplicated and
                // appenders never wait behind this thread's lock. On close the final sync
                // waits for a running leader and then covers whatever it left. A failure
                // poisons the log inside `sync_published`.
                while self
                    .commit
                    .try_sync(|from| self.sync_published(from))
                    .is_none()
                    && closed
                {
                    std::thread::yield_now();
                }
                st = self.state.lock();
            }
            st.want_sync = false;
            if closed {
                return;
            }
            // Unblock a claim that has kept the watermark still for too long.
            let tail = self.tail_position();
            if need_sync && tail > published {
                let mut stalled = st.stalled_since.take();
                let expired = self.stall_expired(published, &mut stalled);
                st.stalled_since = stalled;
                if expired {
                    if self.pad_stalled_claim(&mut st, tail) {
                        tracing::warn!(position = published, "padded an abandoned claim");
                        self.notify_readers();
                    }
                    continue;
                }
            } else {
                st.stalled_since = None;
            }
            let current = self.current.load_full();
            let want = current.raw.seq + 1;
            let (tag, off) = self.tail.load();
            let filling = tag != raw::seq_tag(current.raw.seq)
                || off >= prepare_threshold(current.raw.size as u64);
            if filling
                && !self.is_poisoned.load(Ordering::Acquire)
                && self.prepared.lock().as_ref().map(|p| p.raw.seq) != Some(want)
            {
                drop(st);
                let ok = self.prepare_next();
                st = self.state.lock();
                if ok {
                    continue;
                }
            }
            let wait = match self.cfg.durability {
                Durability::Batch { interval, .. } => interval,
                _ => IDLE_TICK,
            };
            if !st.want_sync {
                self.work.wait_for(&mut st, wait);
            }
        }
    }

    /// Creates the segment after the current one ahead of need.
    fn prepare_next(&self) -> bool {
        let mut prepared = self.prepared.lock();
        let cur = self.current.load_full();
        if prepared
            .as_ref()
            .is_some_and(|p| p.raw.seq == cur.raw.seq + 1)
        {
            return true;
        }
        if let Some(stale) = prepared.take() {
            let _ = self.storage.remove(&stale.name);
        }
        match create_segment(self.storage.as_ref(), &self.cfg, cur.raw.seq + 1, cur.end()) {
            Ok(s) => {
                *prepared = Some(s);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not prepare the next segment");
                false
            }
        }
    }

    /// Syncs `[from, to)` across the segments it spans.
    fn sync_range(&self, from: u64, to: u64) -> Result<()> {
        crate::failpoint!("log.before_fsync");
        let segs: Vec<Arc<Segment>> = self
            .segments
            .read()
            .values()
            .filter(|s| s.end() > from && s.raw.base < to)
            .cloned()
            .collect();
        for s in segs {
            let a = from.max(s.raw.base) - s.raw.base;
            let b = to.min(s.end()) - s.raw.base;
            self.storage
                .sync(&s.name, &s.raw.region, a as usize, (b - a) as usize)?;
        }
        Ok(())
    }
}

/// Creates a prepared (not yet active) segment file with its header written and synced.
fn create_segment(storage: &dyn Storage, cfg: &LogConfig, seq: u64, base: u64) -> Result<Segment> {
    let name = prepared_name(seq);
    crate::failpoint!("log.before_segment_create");
    let region = storage.create(&name, cfg.segment_size)?;
    if cfg.prefault {
        region.prefault();
    }
    let raw = RawSegment {
        region,
        seq,
        base,
        size: cfg.segment_size as usize,
    };
    let header = SegmentHeader {
        seq,
        base,
        size: cfg.segment_size,
    };
    // SAFETY: the segment was just created and is not shared with any other thread.
    unsafe { raw.quiescent_write(0, &header.encode()) };
    storage.sync(&name, &raw.region, 0, SEGMENT_HEADER_LEN)?;
    crate::failpoint!("log.after_segment_create");
    Ok(Segment { raw, name })
}

/// Reads frames in log order, in place.
#[derive(Debug)]
pub struct Cursor {
    inner: Arc<Inner>,
    seg: Arc<Segment>,
    off: usize,
    /// Frames at or before this version are skipped, also those published after the cursor
    /// was made: a cursor after a version not reached yet must not return the frames
    /// written before it (etcd#20221, a watch on a future revision returned old events).
    after: u64,
}

impl Cursor {
    /// The global position of the next frame this cursor will look at.
    pub fn position(&self) -> u64 {
        self.seg.raw.base + self.off as u64
    }

    /// The next published frame, or `None` if nothing is published yet. `Expired` if the
    /// cursor fell behind compaction.
    pub fn try_next(&mut self) -> Result<Option<Frame>> {
        // In a forked child a cursor of the parent's log could wait for ever (its appenders,
        // who wake readers, are the parent's) and must not pad the parent's claims.
        self.inner.fork.check("log")?;
        loop {
            if self.off >= self.seg.raw.size {
                let next = self
                    .inner
                    .segments
                    .read()
                    .get(&(self.seg.raw.seq + 1))
                    .cloned();
                match next {
                    Some(n) => {
                        self.seg = n;
                        self.off = SEGMENT_HEADER_LEN;
                        continue;
                    }
                    None => {
                        let newer = self.inner.segments.read().keys().next_back().copied();
                        if newer.is_some_and(|q| q > self.seg.raw.seq + 1)
                            || self
                                .inner
                                .segments
                                .read()
                                .keys()
                                .next()
                                .is_some_and(|&q| q > self.seg.raw.seq)
                        {
                            return Err(Error::Expired(
                                "the log was compacted past this cursor".into(),
                            ));
                        }
                        return Ok(None);
                    }
                }
            }
            match self.seg.raw.read(self.off) {
                Read::Pending => return Ok(None),
                Read::Padding { len } => self.off += len,
                Read::Event {
                    len,
                    kind,
                    payload_off,
                    payload_len,
                } => {
                    let rv = self.seg.raw.base + self.off as u64;
                    self.off += len;
                    if rv <= self.after {
                        continue;
                    }
                    let payload = Bytes::from_owner(MappedPayload {
                        seg: self.seg.clone(),
                        off: payload_off,
                        len: payload_len,
                    });
                    return Ok(Some(Frame { rv, kind, payload }));
                }
            }
        }
    }

    /// The next frame, waiting up to `timeout` (forever if `None`) for one to be
    /// published. `Ok(None)` on timeout; `ShutDown` once the log closes.
    pub fn next_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<Frame>> {
        let clock = SystemClock;
        let deadline = timeout.and_then(|t| clock.now().checked_add(t));
        let mut stuck: Option<(u64, Instant)> = None;
        loop {
            if let Some(f) = self.try_next()? {
                return Ok(Some(f));
            }
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(Error::ShutDown("the log is closed".into()));
            }
            self.unblock_if_stuck(&mut stuck);
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(clock.now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.min(IDLE_TICK)
                }
                None => IDLE_TICK,
            };
            self.inner.readers_waiting.fetch_add(1, Ordering::SeqCst);
            {
                let mut g = self.inner.new_data.lock();
                fence(Ordering::SeqCst);
                if !self.has_next() && !self.inner.closed.load(Ordering::Acquire) {
                    self.inner.new_data_cv.wait_for(&mut g, wait);
                }
            }
            self.inner.readers_waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A reader blocked at an unpublished frame while later claims exist pads the frame
    /// once it has stayed unpublished for the unblock timeout (a producer that died or
    /// stalled between claim and publish), so no reader waits forever.
    fn unblock_if_stuck(&mut self, stuck: &mut Option<(u64, Instant)>) {
        let pos = self.position();
        if self.off >= self.seg.raw.size || self.inner.tail_position() <= pos {
            *stuck = None;
            return;
        }
        if self.inner.stall_expired(pos, stuck) {
            // Under the state lock, and not once the log closed: `close` drains claims
            // itself and then releases the files (see `Log::close`).
            let mut st = self.inner.state.lock();
            if self.inner.closed.load(Ordering::Acquire) {
                return;
            }
            let frontier = (self.inner.tail_position() - self.seg.raw.base)
                .min(self.seg.raw.size as u64) as usize;
            if self.seg.raw.unblock(self.off, frontier).is_some() {
                st.unblocked += 1;
                drop(st);
                tracing::warn!(position = pos, "a reader padded an abandoned claim");
                self.inner.notify_readers();
            }
        }
    }

    fn has_next(&self) -> bool {
        if self.off >= self.seg.raw.size {
            return true; // let try_next move segments
        }
        !matches!(self.seg.raw.read(self.off), Read::Pending)
    }

    /// Skips frames with `rv <= after` (positions the cursor for a watch).
    fn skip_through(&mut self, after: u64) -> Result<()> {
        loop {
            if self.position() > after {
                return Ok(());
            }
            if self.off >= self.seg.raw.size {
                let next = self
                    .inner
                    .segments
                    .read()
                    .get(&(self.seg.raw.seq + 1))
                    .cloned();
                match next {
                    Some(n) => {
                        self.seg = n;
                        self.off = SEGMENT_HEADER_LEN;
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            match self.seg.raw.read(self.off) {
                Read::Pending => return Ok(()),
                Read::Padding { len } | Read::Event { len, .. } => self.off += len,
            }
        }
    }
}

/// Keeps a segment mapped while a payload borrowed from it is alive.
struct MappedPayload {
    seg: Arc<Segment>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for MappedPayload {
    fn as_ref(&self) -> &[u8] {
        self.seg.raw.payload(self.off, self.len)
    }
}
