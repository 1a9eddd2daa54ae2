//! [`WorkQueue`]: client-go's `Typed` queue (dirty / processing / queue), its delaying
//! wrapper (`add_after`, one timer thread per queue) and its rate-limiting wrapper
//! (`add_rate_limited`, `forget`, `num_requeues`) in one type. Rate limiters live in
//! `rate_limiter.rs`, metric types in `metrics.rs`.
//!
//! ## How it is built
//! Upstream keeps three sets behind one mutex. Here the per-key state — *queued*,
//! *processing*, *processing and dirty* — lives in `SHARDS` hash-table shards, each behind
//! its own lock, so coalescing adds and `done` calls for different keys never contend. Only
//! the FIFO of keys ready to hand out (`Ready`) is shared; it is touched when a key becomes
//! queued or is taken, and its lock is held for a push or a pop. The invariant that ties
//! them together: a key is in the FIFO exactly when its shard entry says `Queued`, except
//! between a `get`'s pop and its shard update (an add or a `done` that finds the key
//! `Queued` then changes nothing, which is right: the get has not returned). A key becomes
//! `Queued` and enters the FIFO in one step, under its shard lock with the FIFO lock nested
//! in it, and an add checks for shut-down under that same FIFO lock: an add that returns
//! after finding its key `Queued` leaves it there to take, and a shut-down never takes
//! back an add. `in_flight` counts keys taken and not yet done; it is raised and, on a
//! requeue, lowered under the FIFO lock, so a draining shut-down reads "FIFO empty and
//! nothing in flight" consistently.
//!
//! Lock order: delays → shard → ready. No path takes a shard lock while holding `ready`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;
use hashbrown::{HashMap, HashTable};

use super::metrics::{Histogram, Hook, Metrics};
use super::rate_limiter::RateLimiter;
use super::sync::{Condvar, Mutex};
use crate::clock::{SharedClock, SystemClock};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Number of state shards per queue (a power of two). Small under loom to keep models tiny.
pub const SHARDS: usize = if cfg!(loom) { 2 } else { 64 };
/// The longest the timer thread sleeps without looking at its waiting set (upstream's
/// `maxWait` heartbeat, insurance against a missed wake-up).
pub const MAX_TIMER_WAIT: Duration = Duration::from_secs(10);
/// How often a named queue on a real clock publishes the in-flight gauges
/// (`unfinished_work_seconds`, `longest_running_processor_seconds`) to the `metrics` hook;
/// upstream's `defaultUnfinishedWorkUpdatePeriod`. [`WorkQueue::metrics`] computes them on
/// read and needs no period.
pub const UNFINISHED_WORK_UPDATE_PERIOD: Duration = Duration::from_millis(500);

/// Bits of the key hash that pick a shard: above any bucket index a shard's table uses and
/// below the 7 top bits hashbrown keeps as its control tag.
const SHARD_HASH_SHIFT: u32 = 40;

#[cfg(not(loom))]
type KeyHasher = hashbrown::DefaultHashBuilder;
/// loom replays each execution, so shard choice must not depend on a random seed.
#[cfg(loom)]
type KeyHasher = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Dirty and in the ready FIFO (or about to be pushed there).
    Queued,
    /// Handed out by `get`, not yet `done`.
    Processing,
    /// Handed out, and added again since: `done` puts it back in the FIFO.
    ProcessingDirty,
}

struct Entry {
    state: State,
    /// When the key last became dirty (latency metric).
    added_at: Instant,
    /// When `get` handed it out (work-duration and in-flight metrics).
    started_at: Instant,
}

/// One shard: the keys that are dirty or processing (idle keys are removed), and the
/// counters and histograms of the operations on them.
struct Shard<K> {
    table: HashTable<(K, Entry)>,
    dirty: u64,
    adds: u64,
    queue_duration: Histogram,
    work_duration: Histogram,
}

struct Ready<K> {
    items: VecDeque<K>,
    shutting_down: bool,
    drain: bool,
}

/// Keys waiting for their delay, ordered by ready time then by arrival (ties keep order).
struct Delays<K> {
    by_time: BTreeMap<(Instant, u64), K>,
    by_key: HashMap<K, (Instant, u64)>,
    seq: u64,
    stopped: bool,
}

struct Inner<K> {
    hasher: KeyHasher,
    shards: Box<[CachePadded<Mutex<Shard<K>>>]>,
    ready: CachePadded<Mutex<Ready<K>>>,
    /// Getters wait here for an item, shut-down, or (fake clock) a clock advance.
    nonempty: Condvar,
    /// Draining shut-downs wait here for `done` calls.
    drained: Condvar,
    in_flight: CachePadded<AtomicUsize>,
    shutting_down: AtomicBool,
    draining: AtomicBool,
    retries: AtomicU64,
    delays: Mutex<Delays<K>>,
    timer_wake: Condvar,
    clock: SharedClock,
    /// The clock really passes (it has a `park_timeout`): delays need the timer thread.
    /// A fake clock instead releases due items from its advance callback.
    real_clock: bool,
    hook: Option<Hook>,
    name: Option<String>,
}

/// Settings for [`WorkQueue::with_config`].
pub struct WorkQueueConfig<K> {
    /// Name for metrics; the `metrics` crate hook records only for named queues (an empty
    /// name counts as none, as upstream).
    pub name: Option<String>,
    /// Where time comes from (delays, backoff buckets, metrics).
    pub clock: SharedClock,
    /// The limiter behind `add_rate_limited`; `None` means
    /// [`RateLimiter::default_controller_with_clock`] on `clock`.
    pub rate_limiter: Option<RateLimiter<K>>,
}

impl<K> Default for WorkQueueConfig<K> {
    fn default() -> Self {
        WorkQueueConfig {
            name: None,
            clock: SystemClock::shared(),
            rate_limiter: None,
        }
    }
}

/// A rate-limited, delaying, de-duplicating work queue with client-go's semantics.
///
/// Share it between threads by reference or in an `Arc`. Dropping it stops its timer thread;
/// items still queued or waiting are dropped with it.
/// In a process forked after the queue was made, the child's copy acts as shut down and empty.
pub struct WorkQueue<K: Hash + Eq + Clone + Send + 'static> {
    inner: Arc<Inner<K>>,
    limiter: RateLimiter<K>,
    timer: parking_lot::Mutex<Option<crate::sync::Joinable<()>>>,
    made: crate::sync::ForkStamp,
    /// Keeps the fake clock's advance callback alive as long as the queue.
    _on_advance: Arc<dyn Fn() + Send + Sync>,
}

enum Deadline {
    Now,
    At(Instant),
    Never,
}

impl<K: Hash + Eq + Clone + Send + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> fmt::Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkQueue")
            .field("name", &self.inner.name)
            .field("len", &self.len())
            .field("shutting_down", &self.shutting_down())
            .finish()
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> WorkQueue<K> {
    /// An unnamed queue on the system clock with client-go's default controller limiter.
    pub fn new() -> Self {
        Self::with_config(WorkQueueConfig::default())
    }

    /// An unnamed queue on the system clock with `limiter` behind `add_rate_limited`.
    pub fn with_rate_limiter(limiter: RateLimiter<K>) -> Self {
        Self::with_config(WorkQueueConfig {
            rate_limiter: Some(limiter),
            ..WorkQueueConfig::default()
        })
    }

    /// An unnamed queue on `clock` with the default controller limiter on the same clock.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self::with_config(WorkQueueConfig {
            clock,
            ..WorkQueueConfig::default()
        })
    }

    pub fn with_config(config: WorkQueueConfig<K>) -> Self {
        let clock = config.clock;
        let name = config.name.filter(|n| !n.is_empty());
        let limiter = config
            .rate_limiter
            .unwrap_or_else(|| RateLimiter::default_controller_with_clock(clock.clone()));
        let real_clock = clock.park_timeout(clock.now()).is_some();
        let shards = (0..SHARDS)
            .map(|_| {
                CachePadded::new(Mutex::new(Shard {
                    table: HashTable::new(),
                    dirty: 0,
                    adds: 0,
                    queue_duration: Histogram::default(),
                    work_duration: Histogram::default(),
                }))
            })
            .collect();
        let inner = Arc::new(Inner {
            hasher: KeyHasher::default(),
            shards,
            ready: CachePadded::new(Mutex::new(Ready {
                items: VecDeque::new(),
                shutting_down: false,
                drain: false,
            })),
            nonempty: Condvar::new(),
            drained: Condvar::new(),
            in_flight: CachePadded::new(AtomicUsize::new(0)),
            shutting_down: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            retries: AtomicU64::new(0),
            delays: Mutex::new(Delays {
                by_time: BTreeMap::new(),
                by_key: HashMap::new(),
                seq: 0,
                stopped: false,
            }),
            timer_wake: Condvar::new(),
            real_clock,
            hook: name.as_deref().map(Hook::new),
            name,
            clock: clock.clone(),
        });
        let weak: Weak<Inner<K>> = Arc::downgrade(&inner);
        let on_advance: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(inner) = weak.upgrade() {
                inner.clock_advanced();
            }
        });
        clock.on_advance(Arc::downgrade(&on_advance));
        let q = WorkQueue {
            inner,
            limiter,
            timer: parking_lot::Mutex::new(None),
            made: crate::sync::ForkStamp::now(),
            _on_advance: on_advance,
        };
        if q.inner.hook.is_some() && q.inner.real_clock {
            // A named queue publishes its in-flight gauges periodically, as upstream.
            q.ensure_timer();
        }
        q
    }

    /// The queue's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// The limiter behind [`WorkQueue::add_rate_limited`].
    pub fn rate_limiter(&self) -> &RateLimiter<K> {
        &self.limiter
    }

    /// Marks `item` as needing processing. Coalesces with a queued copy; if the item is
    /// being processed it is queued again when that finishes. Ignored after shut-down.
    pub fn add(&self, item: K) {
        if self.forked() {
            return;
        }
        self.inner.add(item)
    }

    /// Adds `item` after `delay` of clock time; a zero delay adds at once. If the item is
    /// already waiting, the earlier ready time wins. Ignored after shut-down; a delay too
    /// long to represent as an `Instant` never fires.
    pub fn add_after(&self, item: K, delay: Duration) {
        let inner = &*self.inner;
        if inner.shutting_down.load(Ordering::Acquire) || self.forked() {
            return;
        }
        inner.retries.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &inner.hook {
            h.retry();
        }
        if delay.is_zero() {
            inner.add(item);
            return;
        }
        let Some(ready_at) = inner.clock.now().checked_add(delay) else {
            return;
        };
        let earliest = {
            let mut d = inner.delays.lock();
            if d.stopped {
                return;
            }
            if let Some(&(at, seq)) = d.by_key.get(&item) {
                if at <= ready_at {
                    return;
                }
                d.by_time.remove(&(at, seq));
            }
            let key = (ready_at, d.seq);
            d.seq += 1;
            d.by_key.insert(item.clone(), key);
            d.by_time.insert(key, item);
            d.by_time.first_key_value().map(|(k, _)| *k) == Some(key)
        };
        if inner.real_clock {
            self.ensure_timer();
            if earliest {
                inner.timer_wake.notify_one();
            }
        } else if inner.clock.now() >= ready_at {
            // A fake clock advanced past `ready_at` between our reading of it and the
            // insert, and its callback may have released due items before ours was there.
            inner.release_due();
        }
    }

    /// `add_after(item, limiter.when(&item))`: the limiter records a failure even when the
    /// queue is shutting down, as upstream.
    pub fn add_rate_limited(&self, item: K) {
        if self.forked() {
            return;
        }
        let delay = self.limiter.when(&item);
        self.add_after(item, delay);
    }

    /// Clears `item`'s rate-limiter history. The caller must still call [`WorkQueue::done`].
    pub fn forget(&self, item: &K) {
        if self.forked() {
            return;
        }
        self.limiter.forget(item)
    }

    /// Failures the rate limiter has on record for `item`.
    pub fn num_requeues(&self, item: &K) -> u64 {
        if self.forked() {
            return 0;
        }
        self.limiter.num_requeues(item)
    }

    /// Blocks until an item is available and hands it out (it is then *processing* until
    /// [`WorkQueue::done`]). Items still queued are handed out after shut-down; `None` means
    /// shut down and nothing left.
    pub fn get(&self) -> Option<K> {
        if self.forked() {
            return None;
        }
        self.inner.get(Deadline::Never)
    }

    /// [`WorkQueue::get`] that gives up after `timeout` of clock time and returns `None`.
    /// A zero timeout never blocks.
    pub fn get_timeout(&self, timeout: Duration) -> Option<K> {
        if self.forked() {
            return None;
        }
        if timeout.is_zero() {
            return self.inner.get(Deadline::Now);
        }
        match self.inner.clock.now().checked_add(timeout) {
            Some(at) => self.inner.get(Deadline::At(at)),
            None => self.inner.get(Deadline::Never),
        }
    }

    /// Takes an item if one is queued, without blocking.
    pub fn try_get(&self) -> Option<K> {
        if self.forked() {
            return None;
        }
        self.inner.get(Deadline::Now)
    }

    /// Marks `item` as finished. If it was added again while processing it is queued again
    /// (also after shut-down, as upstream). `done` of an item that is not processing does
    /// nothing (upstream would queue a duplicate of a queued item; see `docs/workqueue.md`).
    pub fn done(&self, item: &K) {
        if self.forked() {
            return;
        }
        self.inner.done(item)
    }

    /// Items queued and ready to hand out (not those waiting for a delay, nor those re-added
    /// while processing).
    pub fn len(&self) -> usize {
        if self.forked() {
            return 0;
        }
        self.inner.ready.lock().items.len()
    }

    /// `len() == 0`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops accepting adds, releases every blocked getter and draining shut-down, and drops
    /// items waiting for a delay. Idempotent.
    pub fn shut_down(&self) {
        if self.made.is_forked_copy() {
            // A forked child's copy: the parent's threads may have held its locks at the
            // fork, forever here, and none of its waiters exist. Mark it and touch nothing.
            self.inner.shutting_down.store(true, Ordering::SeqCst);
            return;
        }
        {
            let mut r = self.inner.ready.lock();
            r.shutting_down = true;
            r.drain = false;
            self.inner.shutting_down.store(true, Ordering::SeqCst);
            self.inner.draining.store(false, Ordering::SeqCst);
        }
        self.inner.nonempty.notify_all();
        self.inner.drained.notify_all();
        self.stop_timer();
    }

    /// Shuts down like [`WorkQueue::shut_down`], then blocks until every queued item has been
    /// handed out and every handed-out item is done, or until a concurrent `shut_down`
    /// releases it. Workers must keep calling `get` and `done`.
    pub fn shut_down_with_drain(&self) {
        if self.made.is_forked_copy() {
            // A forked child's copy: the parent's threads may have held its locks at the
            // fork, forever here, and none of its waiters exist. Mark it and touch nothing.
            self.inner.shutting_down.store(true, Ordering::SeqCst);
            return;
        }
        {
            let mut r = self.inner.ready.lock();
            r.shutting_down = true;
            r.drain = true;
            self.inner.shutting_down.store(true, Ordering::SeqCst);
            self.inner.draining.store(true, Ordering::SeqCst);
        }
        self.inner.nonempty.notify_all();
        self.stop_timer();
        let mut r = self.inner.ready.lock();
        // `in_flight` is read with a read-modify-write: it sees the latest count, and if it
        // comes before a worker's decrement, that decrement synchronizes with it and the
        // worker sees `draining` (see `done`). A plain load would need SeqCst's total order,
        // which loom does not model.
        while r.drain
            && !(r.items.is_empty() && self.inner.in_flight.fetch_add(0, Ordering::AcqRel) == 0)
        {
            r = self.inner.drained.wait(r);
        }
    }

    /// Whether a shut-down has begun.
    pub fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire) || self.forked()
    }

    /// A reading of the queue's metrics; in-flight ages are computed now from the clock.
    /// For a named queue this also publishes the in-flight gauges to the `metrics` hook.
    pub fn metrics(&self) -> Metrics {
        if self.forked() {
            return Metrics::default();
        }
        self.inner.metrics()
    }

    /// A forked child's copy of a queue made in its parent acts as a queue that is shut
    /// down and empty, touching none of its locks: a thread of the parent may have held one
    /// at the fork, and the parent's workers and timer thread do not exist here.
    fn forked(&self) -> bool {
        self.made.is_forked_copy()
    }

    fn ensure_timer(&self) {
        let mut t = self.timer.lock();
        if t.is_some() || self.inner.delays.lock().stopped {
            return;
        }
        let inner = self.inner.clone();
        let name = match &inner.name {
            Some(n) => format!("floyd-wq-{n}"),
            None => "floyd-wq-timer".to_string(),
        };
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || inner.timer_loop());
        match spawned {
            Ok(h) => *t = Some(h.into()),
            // Without a thread, delayed items still go out on the next clock advance
            // callback or never; the OS refusing a thread is not something we can fix here.
            Err(e) => tracing::error!("workqueue: cannot start timer thread: {e}"),
        }
    }

    fn stop_timer(&self) {
        if self.made.is_forked_copy() {
            return; // see `shut_down`
        }
        {
            let mut d = self.inner.delays.lock();
            d.stopped = true;
            d.by_time.clear();
            d.by_key.clear();
        }
        self.inner.timer_wake.notify_all();
        let handle = self.timer.lock().take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Drop for WorkQueue<K> {
    fn drop(&mut self) {
        self.stop_timer();
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Inner<K> {
    fn shard(&self, hash: u64) -> &Mutex<Shard<K>> {
        &self.shards[(hash >> SHARD_HASH_SHIFT) as usize & (SHARDS - 1)]
    }

    fn add(&self, item: K) {
        if self.shutting_down.load(Ordering::Acquire) {
            return;
        }
        let hash = self.hasher.hash_one(&item);
        let mut guard = self.shard(hash).lock();
        let shard = &mut *guard;
        // An add takes effect under its shard's lock and, where it changes the queue, under
        // the FIFO lock nested in it: the shut-down check and the change are one step, and
        // an entry is never `Queued` without being in the FIFO (another add that finds it
        // `Queued` returns at once, and the item must then be there to take).
        match shard.table.find_mut(hash, |(k, _)| *k == item) {
            Some((_, e)) => match e.state {
                State::Queued | State::ProcessingDirty => {}
                State::Processing => {
                    if self.ready.lock().shutting_down {
                        return;
                    }
                    // Dirty while processing: `done` will queue it again.
                    e.state = State::ProcessingDirty;
                    e.added_at = self.clock.now();
                    shard.dirty += 1;
                    shard.adds += 1;
                    if let Some(h) = &self.hook {
                        h.add();
                    }
                }
            },
            None => {
                let mut r = self.ready.lock();
                if r.shutting_down {
                    return;
                }
                let now = self.clock.now();
                let entry = Entry {
                    state: State::Queued,
                    added_at: now,
                    started_at: now,
                };
                shard
                    .table
                    .insert_unique(hash, (item.clone(), entry), |(k, _)| {
                        self.hasher.hash_one(k)
                    });
                shard.dirty += 1;
                shard.adds += 1;
                if let Some(h) = &self.hook {
                    h.add();
                }
                r.items.push_back(item);
                drop(r);
                drop(guard);
                self.nonempty.notify_one();
            }
        }
    }

    fn get(&self, deadline: Deadline) -> Option<K> {
        let mut r = self.ready.lock();
        let item = loop {
            if let Some(item) = r.items.pop_front() {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                break item;
            }
            if r.shutting_down {
                return None;
            }
            match deadline {
                Deadline::Now => return None,
                Deadline::Never => r = self.nonempty.wait(r),
                Deadline::At(at) => {
                    if self.clock.now() >= at {
                        return None;
                    }
                    r = match self.clock.park_timeout(at) {
                        Some(d) => self.nonempty.wait_timeout(r, d),
                        // A fake clock: `clock_advanced` wakes us.
                        None => self.nonempty.wait(r),
                    };
                }
            }
        };
        drop(r);
        let hash = self.hasher.hash_one(&item);
        let mut guard = self.shard(hash).lock();
        let shard = &mut *guard;
        let now = self.clock.now();
        let (_, e) = shard
            .table
            .find_mut(hash, |(k, _)| *k == item)
            .expect("an item in the FIFO has a Queued entry");
        debug_assert_eq!(e.state, State::Queued);
        e.state = State::Processing;
        e.started_at = now;
        let latency = now.saturating_duration_since(e.added_at);
        shard.dirty -= 1;
        shard.queue_duration.observe(latency);
        if let Some(h) = &self.hook {
            h.get(latency);
        }
        drop(guard);
        Some(item)
    }

    fn done(&self, item: &K) {
        let hash = self.hasher.hash_one(item);
        let requeue = {
            let mut guard = self.shard(hash).lock();
            let shard = &mut *guard;
            let Ok(mut occupied) = shard.table.find_entry(hash, |(k, _)| k == item) else {
                return;
            };
            let e = &mut occupied.get_mut().1;
            let requeue = match e.state {
                // Not handed out: a spurious `done` changes nothing (reliability K13).
                State::Queued => return,
                State::Processing => false,
                State::ProcessingDirty => true,
            };
            let now = self.clock.now();
            let work = now.saturating_duration_since(e.started_at);
            shard.work_duration.observe(work);
            if let Some(h) = &self.hook {
                h.done(work);
            }
            if requeue {
                // `Queued` and in the FIFO in one step, as in `add`.
                e.state = State::Queued;
                let mut r = self.ready.lock();
                r.items.push_back(item.clone());
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            } else {
                occupied.remove();
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            requeue
        };
        if requeue {
            self.nonempty.notify_one();
        }
        if self.draining.load(Ordering::SeqCst) {
            let _r = self.ready.lock();
            self.drained.notify_all();
        }
    }

    /// Moves every waiting item whose time has come into the queue, earliest first.
    fn release_due(&self) {
        let due: Vec<K> = {
            let mut d = self.delays.lock();
            if d.stopped || d.by_time.is_empty() {
                return;
            }
            let now = self.clock.now();
            let mut due = Vec::new();
            while let Some(entry) = d.by_time.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let item = entry.remove();
                d.by_key.remove(&item);
                due.push(item);
            }
            due
        };
        for item in due {
            self.add(item);
        }
    }

    /// Fake-clock advance callback: release due items now, on the advancing thread (so a
    /// test sees them as soon as `advance` returns), and wake getters waiting for a deadline.
    fn clock_advanced(&self) {
        self.release_due();
        let _r = self.ready.lock();
        self.nonempty.notify_all();
    }

    /// The timer thread of a queue on a real clock.
    fn timer_loop(&self) {
        loop {
            self.release_due();
            if let Some(h) = &self.hook {
                let (unfinished, longest) = self.in_flight_ages(self.clock.now());
                h.in_flight(unfinished, longest);
            }
            let d = self.delays.lock();
            if d.stopped {
                return;
            }
            let now = self.clock.now();
            let next = d.by_time.first_key_value().map(|(k, _)| k.0);
            if next.is_some_and(|t| t <= now) {
                continue;
            }
            let mut wait = match next {
                Some(t) => self.clock.park_timeout(t).unwrap_or(MAX_TIMER_WAIT),
                None => MAX_TIMER_WAIT,
            }
            .min(MAX_TIMER_WAIT);
            if self.hook.is_some() {
                wait = wait.min(UNFINISHED_WORK_UPDATE_PERIOD);
            }
            let d = self.timer_wake.wait_timeout(d, wait);
            if d.stopped {
                return;
            }
        }
    }

    fn in_flight_ages(&self, now: Instant) -> (f64, f64) {
        let mut unfinished = 0.0;
        let mut longest = 0.0f64;
        for shard in self.shards.iter() {
            let s = shard.lock();
            for (_, e) in s.table.iter() {
                if e.state != State::Queued {
                    let age = now.saturating_duration_since(e.started_at).as_secs_f64();
                    unfinished += age;
                    longest = longest.max(age);
                }
            }
        }
        (unfinished, longest)
    }

    fn metrics(&self) -> Metrics {
        let now = self.clock.now();
        let mut m = Metrics {
            retries: self.retries.load(Ordering::Relaxed),
            ..Metrics::default()
        };
        for shard in self.shards.iter() {
            let s = shard.lock();
            m.depth += s.dirty;
            m.adds += s.adds;
            m.queue_duration.merge(&s.queue_duration);
            m.work_duration.merge(&s.work_duration);
        }
        let (unfinished, longest) = self.in_flight_ages(now);
        m.unfinished_work_seconds = unfinished;
        m.longest_running_processor_seconds = longest;
        if let Some(h) = &self.hook {
            h.in_flight(unfinished, longest);
        }
        m
    }
}
