//! Informers: list + watch from the store into an indexed cache, with event handlers
//! (client-go's `tools/cache`, `k8s-semantics.md` §2; `docs/informers.md`).
//!
//! One reflector thread per informer lists the kind (filtered by namespace and label
//! selector) at a consistent version, then watches the log from that version and applies
//! every event to the [`Indexer`]. Each change is published once to a bounded notification
//! ring; every handler has its own thread and cursor into it, so handlers see their events
//! in log order, a slow handler stalls nobody, and memory is bounded by the ring, not by
//! lag. A handler lapped by the ring relists from the cache, like the reflector relists
//! from the store when the log was compacted past it (`Expired`): in both cases deletes
//! that were missed are delivered once, with the last known object and
//! `final_state_unknown = true`.
//!
//! The informer never appends to the log and never writes to the store. Time (resync
//! periods, relist backoff, timeouts) comes from the injected [`Clock`].

pub mod factory;
pub mod indexer;
mod ring;
mod wait;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{EventType, LabelSelector, Object, Store, WatchEvent};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
pub use factory::InformerFactory;
use indexer::with_key;
pub use indexer::{INDEXER_SHARDS, IndexFn, IndexFunc, Indexer};
pub use ring::RING_CAPACITY_DEFAULT;
use ring::{Note, NoteKind, Read, Ring};
use wait::{Signal, deadline_after, wake_on_advance};

/// `on_add(object, is_in_initial_list)`.
pub type OnAdd = Arc<dyn Fn(&Arc<Object>, bool) + Send + Sync>;
/// `on_update(old, new)`; a resync delivers `on_update(o, o)`.
pub type OnUpdate = Arc<dyn Fn(&Arc<Object>, &Arc<Object>) + Send + Sync>;
/// `on_delete(last_known_object, final_state_unknown)`: `final_state_unknown` is true when
/// the delete was discovered by a relist rather than watched (client-go's
/// `DeletedFinalStateUnknown`); the object is then the last state this handler saw.
pub type OnDelete = Arc<dyn Fn(&Arc<Object>, bool) + Send + Sync>;
/// Applied to every object before it is cached (strip fields to save memory). It must keep
/// `kind`, `metadata.name`, `metadata.namespace` and `metadata.resourceVersion`.
pub type Transform = Arc<dyn Fn(Arc<Object>) -> Arc<Object> + Send + Sync>;

/// Handler resync periods below this are raised to it (client-go `minimumResyncPeriod`).
pub const MIN_RESYNC_PERIOD: Duration = Duration::from_secs(1);
/// How long the reflector blocks on the log before it looks at `stop` and at versions
/// written for other kinds (which move `last_synced_version` without an event of ours).
pub const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Events applied between two wake-ups of handlers and waiters.
pub const WATCH_BATCH_MAX: usize = 1024;
/// Relist backoff (client-go reflector defaults): first delay, factor, cap, jitter 1.0 (each
/// delay drawn from [d, 2d)), and the quiet time after which it starts over.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(800);
pub const BACKOFF_FACTOR: u32 = 2;
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
pub const BACKOFF_RESET: Duration = Duration::from_secs(120);

/// How to build an [`Informer`].
#[derive(Clone)]
pub struct InformerConfig {
    pub kind: String,
    /// The default handler resync period; zero disables resync for every handler (the
    /// upstream quirk, kept on purpose).
    pub resync: Duration,
    pub namespace: Option<String>,
    pub label_selector: Option<LabelSelector>,
    pub clock: SharedClock,
    /// Slots of the notification ring ([`RING_CAPACITY_DEFAULT`]).
    pub ring_capacity: usize,
    pub transform: Option<Transform>,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

impl std::fmt::Debug for InformerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InformerConfig")
            .field("kind", &self.kind)
            .field("resync", &self.resync)
            .field("namespace", &self.namespace)
            .field("label_selector", &self.label_selector)
            .field("ring_capacity", &self.ring_capacity)
            .field("transform", &self.transform.is_some())
            .finish()
    }
}

impl InformerConfig {
    pub fn new(kind: impl Into<String>) -> InformerConfig {
        InformerConfig {
            kind: kind.into(),
            resync: Duration::ZERO,
            namespace: None,
            label_selector: None,
            clock: SystemClock::shared(),
            ring_capacity: RING_CAPACITY_DEFAULT,
            transform: None,
            seed: 0x5EED_1F0B,
        }
    }
}

/// Informer counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InformerStats {
    /// Full lists, the first one included.
    pub lists: u64,
    /// Watches that ended in `Expired` (each is followed by exactly one relist).
    pub expired: u64,
    /// Other list/watch failures (each followed by a backoff and a relist).
    pub errors: u64,
    pub last_error: Option<String>,
    /// Watch events applied.
    pub events: u64,
    pub last_synced_version: u64,
    pub cached: usize,
    /// Notifications published to the handlers so far.
    pub notifications: u64,
    pub index_panics: u64,
    pub transform_panics: u64,
    pub handlers: usize,
}

/// One handler's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Notifications published but not yet delivered to this handler.
    pub lag: u64,
    pub delivered: u64,
    /// Handler calls that panicked (each was skipped; the handler goes on).
    pub panics: u64,
    pub last_panic: Option<String>,
    /// Times this handler was lapped by the ring and relisted from the cache.
    pub relists: u64,
    pub resyncs: u64,
    /// The resync period in effect (zero: never).
    pub resync_period: Duration,
}

struct HandlerSlot {
    id: u64,
    on_add: Option<OnAdd>,
    on_update: Option<OnUpdate>,
    on_delete: Option<OnDelete>,
    requested_resync: Duration,
    effective_resync: Mutex<Duration>,
    cursor: AtomicU64,
    delivered: AtomicU64,
    panics: AtomicU64,
    last_panic: Mutex<Option<String>>,
    relists: AtomicU64,
    resyncs: AtomicU64,
    synced: AtomicBool,
    removed: AtomicBool,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

impl HandlerSlot {
    fn call(&self, f: impl FnOnce()) {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => {}
            Err(p) => {
                let msg = panic_message(&*p);
                tracing::error!(handler = self.id, panic = %msg, "informer event handler panicked");
                self.panics.fetch_add(1, Ordering::Relaxed);
                *self.last_panic.lock() = Some(msg);
            }
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
    fn add(&self, o: &Arc<Object>, initial: bool) {
        if let Some(f) = &self.on_add {
            self.call(|| f(o, initial));
        } else {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn update(&self, old: &Arc<Object>, new: &Arc<Object>) {
        if let Some(f) = &self.on_update {
            self.call(|| f(old, new));
        } else {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn delete(&self, o: &Arc<Object>, unknown: bool) {
        if let Some(f) = &self.on_delete {
            self.call(|| f(o, unknown));
        } else {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A registered handler: its sync state and counters.
#[derive(Clone)]
pub struct HandlerRegistration {
    slot: Arc<HandlerSlot>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HandlerRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerRegistration")
            .field("id", &self.slot.id)
            .finish()
    }
}

impl HandlerRegistration {
    pub fn id(&self) -> u64 {
        self.slot.id
    }
    /// True once the informer has synced and every notification of its initial list (or,
    /// for a handler added later, every synthetic add) was delivered to this handler.
    pub fn has_synced(&self) -> bool {
        self.slot.synced.load(Ordering::Acquire)
    }
    pub fn stats(&self) -> HandlerStats {
        let head = self.shared.ring.head();
        HandlerStats {
            lag: head.saturating_sub(self.slot.cursor.load(Ordering::Acquire)),
            delivered: self.slot.delivered.load(Ordering::Relaxed),
            panics: self.slot.panics.load(Ordering::Relaxed),
            last_panic: self.slot.last_panic.lock().clone(),
            relists: self.slot.relists.load(Ordering::Relaxed),
            resyncs: self.slot.resyncs.load(Ordering::Relaxed),
            resync_period: *self.slot.effective_resync.lock(),
        }
    }
    /// Waits until [`HandlerRegistration::has_synced`]; `Ok(false)` on timeout.
    pub fn wait_for_sync(&self, timeout: Option<Duration>) -> Result<bool> {
        let slot = self.slot.clone();
        self.shared
            .wait_until(timeout, move || slot.synced.load(Ordering::Acquire))
    }
}

/// A handler trims the ring when it has caught up after reading this many notes since its
/// last trim (and every four times as many while it is behind).
const TRIM_EVERY: u64 = 64;

/// Where a handler thread starts.
struct HandlerStart {
    cursor: u64,
    /// Synthetic adds for a handler registered after start.
    initial: Option<Vec<(Arc<str>, Arc<Object>)>>,
}

struct Control {
    started: bool,
    started_at: Option<Instant>,
    /// client-go's `resyncCheckPeriod`.
    check_period: Duration,
    handlers: Vec<Arc<HandlerSlot>>,
    threads: Vec<crate::sync::Joinable<()>>,
    next_id: u64,
    transform: Option<Transform>,
}

struct Shared {
    store: Store,
    kind: String,
    namespace: Option<String>,
    selector: Option<LabelSelector>,
    default_resync: Duration,
    clock: SharedClock,
    seed: u64,
    indexer: Indexer,
    ring: Ring<Note>,
    signal: Arc<Signal>,
    control: Mutex<Control>,
    stopped: AtomicBool,
    made: crate::sync::ForkStamp,
    store_closed: AtomicBool,
    synced: AtomicBool,
    /// Ring head right after the first list was published.
    sync_seq: AtomicU64,
    /// Every store event with rv <= this is applied (`last_synced_version`).
    applied: AtomicU64,
    lists: AtomicU64,
    expired: AtomicU64,
    errors: AtomicU64,
    events: AtomicU64,
    transform_panics: AtomicU64,
    last_error: Mutex<Option<String>>,
    _waker: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

/// An informer: a cheap handle; clones share one informer. Dropping the last handle stops it.
#[derive(Clone)]
pub struct Informer {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl std::fmt::Debug for Informer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.handle.shared;
        f.debug_struct("Informer")
            .field("kind", &s.kind)
            .field("namespace", &s.namespace)
            .field("label_selector", &s.selector)
            .field("last_synced_version", &s.applied.load(Ordering::Acquire))
            .finish()
    }
}

/// The delay sequence of client-go's `exponentialBackoffManager` with jitter 1.0.
struct Backoff {
    next: Duration,
    last_start: Option<Instant>,
    rng: u64,
}

impl Backoff {
    fn new(seed: u64) -> Backoff {
        Backoff {
            next: BACKOFF_INITIAL,
            last_start: None,
            rng: seed,
        }
    }
    fn random_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    /// The next delay in [d, 2d), starting over after [`BACKOFF_RESET`] without a backoff.
    fn delay(&mut self, now: Instant) -> Duration {
        if self
            .last_start
            .is_none_or(|t| now.saturating_duration_since(t) > BACKOFF_RESET)
        {
            self.next = BACKOFF_INITIAL;
        }
        self.last_start = Some(now);
        let d = self.next;
        self.next = (self.next * BACKOFF_FACTOR).min(BACKOFF_CAP);
        d + d.mul_f64(self.random_unit())
    }
}

/// client-go's `determineResyncPeriod`.
fn determine_resync(desired: Duration, check: Duration) -> Duration {
    if desired.is_zero() || check.is_zero() {
        Duration::ZERO
    } else if desired < check {
        check
    } else {
        desired
    }
}

impl Shared {
    fn check_running(&self) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Error::ShutDown(format!(
                "the {} informer is stopped",
                self.kind
            )));
        }
        self.made.check("informer")
    }

    fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.made.is_forked_copy() {
            // A forked child's copy: its threads are the parent's, and they may have held
            // its locks at the fork, forever here. Touch nothing.
            return;
        }
        self.signal.notify();
        let threads = std::mem::take(&mut self.control.lock().threads);
        let me = std::thread::current().id();
        for t in threads {
            // A handler that stops its own informer cannot join itself.
            if t.thread().is_some_and(|t| t.id() != me) {
                let _ = t.join();
            }
        }
        self.signal.notify();
    }

    /// Waits until `cond` holds; `Ok(false)` on timeout; `ShutDown` once stopped.
    fn wait_until(&self, timeout: Option<Duration>, cond: impl Fn() -> bool) -> Result<bool> {
        let deadline = deadline_after(&*self.clock, timeout);
        loop {
            let seen = self.signal.generation();
            self.check_running()?;
            if cond() {
                return Ok(true);
            }
            if self.store_closed.load(Ordering::Acquire) {
                return Err(Error::ShutDown("the store is closed".into()));
            }
            if deadline.is_some_and(|d| self.clock.now() >= d) {
                return Ok(false);
            }
            self.signal.wait(seen, deadline, &*self.clock);
        }
    }

    fn in_scope(&self, o: &Object) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| o.metadata.namespace == ns)
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&o.metadata.labels))
    }

    fn transform(&self, t: &Option<Transform>, o: Arc<Object>) -> Arc<Object> {
        match t {
            None => o,
            Some(f) => match catch_unwind(AssertUnwindSafe(|| f(o.clone()))) {
                Ok(x) => x,
                Err(_) => {
                    self.transform_panics.fetch_add(1, Ordering::Relaxed);
                    o
                }
            },
        }
    }

    fn set_applied(&self, rv: u64) {
        self.applied.fetch_max(rv, Ordering::AcqRel);
    }

    /// Applies a list as client-go's `Replace`: cached keys missing from the list are
    /// deleted with `final_state_unknown`, new keys added, changed versions updated; an
    /// object whose version did not change is not re-delivered.
    ///
    /// A list into an empty cache (the first one) is loaded in bulk ([`Indexer::load`]).
    /// The control lock is held across the load and its notifications, so no handler can
    /// register in between and see a cut of a half-loaded cache. With handlers registered,
    /// one add per object follows in key order, as before; with none (the common cold
    /// start) a single [`Read::Listed`] marker stands for them: a handler registered later
    /// starts from a cut taken after it, so nobody needs a note per object.
    fn replace(&self, objs: Vec<(Arc<str>, Arc<Object>)>, t: &Option<Transform>) {
        let initial = !self.synced.load(Ordering::Acquire);
        if self.indexer.is_empty() {
            let objs = match t {
                None => objs,
                Some(_) => objs
                    .into_iter()
                    .map(|(k, o)| (k, self.transform(t, o)))
                    .collect(),
            };
            let c = self.control.lock();
            let mut notes = if c.handlers.is_empty() {
                None
            } else {
                Some(objs.clone())
            };
            self.indexer.load(objs);
            match &mut notes {
                None => self.ring.push_listed(),
                Some(notes) => {
                    notes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    for (key, obj) in notes.drain(..) {
                        self.ring.push(Note {
                            kind: NoteKind::Add { initial },
                            key,
                            old: None,
                            obj,
                        });
                    }
                }
            }
            drop(c);
            return;
        }
        let (cached, ()) = self.indexer.snapshot_with(|| ());
        let mut gone: Vec<Arc<str>> = {
            let listed: hashbrown::HashSet<&str> = objs.iter().map(|(k, _)| &**k).collect();
            cached
                .into_iter()
                .filter(|(k, _)| !listed.contains(&**k))
                .map(|(k, _)| k)
                .collect()
        };
        gone.sort();
        for k in gone {
            self.indexer.remove_with(&k, |old, key| {
                self.ring.push(Note {
                    kind: NoteKind::Delete {
                        final_state_unknown: true,
                    },
                    key: key.clone(),
                    old: None,
                    obj: old,
                })
            });
        }
        for (key, o) in objs {
            if let Some(cur) = self.indexer.get(&key)
                && cur.metadata.resource_version == o.metadata.resource_version
            {
                continue;
            }
            let o = self.transform(t, o);
            self.indexer.upsert_with(&key, o.clone(), |old, key| {
                self.ring.push(Note {
                    kind: match old {
                        None => NoteKind::Add { initial },
                        Some(_) => NoteKind::Update,
                    },
                    key: key.clone(),
                    old,
                    obj: o,
                })
            });
        }
    }

    fn on_event(&self, ev: WatchEvent, t: &Option<Transform>) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let rv = ev.rv;
        let object = ev.object;
        with_key(&object.clone(), |key| match ev.event_type {
            EventType::Added | EventType::Modified if self.in_scope(&object) => {
                let o = self.transform(t, object);
                self.indexer.upsert_with(key, o.clone(), |old, key| {
                    self.ring.push(Note {
                        kind: match old {
                            None => NoteKind::Add { initial: false },
                            Some(_) => NoteKind::Update,
                        },
                        key: key.clone(),
                        old,
                        obj: o,
                    })
                });
            }
            EventType::Added | EventType::Modified => {
                // It left the selector: a delete with the last state that matched, as the
                // API server's watch cache reports it.
                self.indexer.remove_with(key, |old, key| {
                    self.ring.push(Note {
                        kind: NoteKind::Delete {
                            final_state_unknown: false,
                        },
                        key: key.clone(),
                        old: None,
                        obj: old,
                    })
                });
            }
            EventType::Deleted => {
                if self.indexer.get(key).is_some() {
                    let last = self.transform(t, object);
                    self.indexer.remove_with(key, |_, key| {
                        self.ring.push(Note {
                            kind: NoteKind::Delete {
                                final_state_unknown: false,
                            },
                            key: key.clone(),
                            old: None,
                            obj: last,
                        })
                    });
                }
            }
        });
        self.set_applied(rv);
    }

    /// One list followed by a watch until it fails or the informer stops (`Ok`).
    fn list_and_watch(&self, t: &Option<Transform>) -> Result<()> {
        let (objs, rv) = self.store.list_entries(
            &self.kind,
            self.namespace.as_deref(),
            self.selector.as_ref(),
        )?;
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.replace(objs, t);
        self.set_applied(rv);
        if !self.synced.load(Ordering::Acquire) {
            self.sync_seq.store(self.ring.head(), Ordering::Release);
            self.synced.store(true, Ordering::Release);
        }
        self.signal.notify();
        let mut w = self.store.watch_after(Some(&self.kind), rv, None)?;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return Ok(());
            }
            if let Some(ev) = w.next_timeout(Some(WATCH_POLL_INTERVAL))? {
                self.on_event(ev, t);
            }
            loop {
                // Every frame up to `mark` is published; once the cursor is past it, every
                // event up to `mark` (of any kind) has been seen.
                let mark = self.store.resource_version();
                let mut n = 0;
                while n < WATCH_BATCH_MAX {
                    match w.try_next()? {
                        Some(ev) => {
                            self.on_event(ev, t);
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n == WATCH_BATCH_MAX {
                    self.signal.notify();
                    continue;
                }
                if w.position() > mark {
                    self.set_applied(mark);
                }
                break;
            }
            self.signal.notify();
        }
    }

    fn run_reflector(self: Arc<Self>, t: Option<Transform>) {
        let mut backoff = Backoff::new(self.seed);
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            let err = match self.list_and_watch(&t) {
                Ok(()) => return,
                Err(e) => e,
            };
            // Events the watch applied before it failed are in the cache and the ring: wake
            // the handlers for them now, not after the backoff and the relist.
            self.signal.notify();
            match err.kind() {
                ErrorKind::ShutDown => {
                    self.store_closed.store(true, Ordering::Release);
                    self.signal.notify();
                    return;
                }
                ErrorKind::Expired => {
                    tracing::debug!(kind = %self.kind, error = %err, "watch expired; relisting");
                    self.expired.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    tracing::warn!(kind = %self.kind, error = %err, "list/watch failed; relisting");
                    self.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            *self.last_error.lock() = Some(err.to_string());
            let until = self.clock.now() + backoff.delay(self.clock.now());
            loop {
                let seen = self.signal.generation();
                if self.stopped.load(Ordering::Acquire) || self.clock.now() >= until {
                    break;
                }
                self.signal.wait(seen, Some(until), &*self.clock);
            }
        }
    }

    /// Releases the ring's notes every handler has read.
    fn trim_ring(&self) {
        let min = {
            let c = self.control.lock();
            c.handlers
                .iter()
                .map(|h| h.cursor.load(Ordering::Acquire))
                .min()
        };
        if let Some(min) = min {
            self.ring.trim(min);
        }
    }

    fn run_handler(self: Arc<Self>, h: Arc<HandlerSlot>, start: HandlerStart) {
        let mut known: HashMap<Arc<str>, Arc<Object>> = HashMap::new();
        let mut cursor = start.cursor;
        // Where this handler last trimmed the ring: it trims every TRIM_EVERY notes.
        let mut trimmed_at = cursor;
        for (k, o) in start.initial.unwrap_or_default() {
            if self.stopped.load(Ordering::Acquire) || h.removed.load(Ordering::Acquire) {
                return;
            }
            h.add(&o, true);
            known.insert(k, o);
        }
        let (started_at, check) = {
            let c = self.control.lock();
            (
                c.started_at.unwrap_or_else(|| self.clock.now()),
                c.check_period,
            )
        };
        let period = *h.effective_resync.lock();
        let resyncing = !check.is_zero() && !period.is_zero();
        let mut next_tick = started_at + check;
        let mut next_resync = self.clock.now() + period;
        loop {
            // Read the generation before looking at `stop`: a stop (or removal) that lands
            // after the check then still wakes the wait below instead of being missed.
            let seen = self.signal.generation();
            if self.stopped.load(Ordering::Acquire) || h.removed.load(Ordering::Acquire) {
                return;
            }
            // Synced once the informer is and this handler has read past the first list's
            // notes. A handler added after that starts past them; one added after `start`
            // but before the list lands (its snapshot then empty) reads them like any other.
            if !h.synced.load(Ordering::Acquire)
                && self.synced.load(Ordering::Acquire)
                && cursor >= self.sync_seq.load(Ordering::Acquire)
            {
                h.synced.store(true, Ordering::Release);
                self.signal.notify();
            }
            if resyncing {
                let now = self.clock.now();
                if now >= next_tick {
                    while next_tick <= now {
                        next_tick += check;
                    }
                    if now >= next_resync {
                        // A resync re-delivers this handler's own view: never newer than
                        // the notifications it has not seen yet.
                        let mut objs: Vec<&Arc<Object>> = known.values().collect();
                        objs.sort_by(|a, b| {
                            (&a.metadata.namespace, &a.metadata.name)
                                .cmp(&(&b.metadata.namespace, &b.metadata.name))
                        });
                        for o in objs {
                            h.update(o, o);
                        }
                        h.resyncs.fetch_add(1, Ordering::Relaxed);
                        next_resync = now + period;
                    }
                }
            }
            match self.ring.read(cursor) {
                Read::Ready(n) => {
                    cursor += 1;
                    match n.kind {
                        NoteKind::Add { initial } => {
                            h.add(&n.obj, initial);
                            known.insert(n.key, n.obj);
                        }
                        NoteKind::Update => {
                            let old = n.old.as_ref().unwrap_or(&n.obj);
                            h.update(old, &n.obj);
                            known.insert(n.key, n.obj);
                        }
                        NoteKind::Delete {
                            final_state_unknown,
                        } => {
                            h.delete(&n.obj, final_state_unknown);
                            known.remove(&n.key);
                        }
                    }
                    h.cursor.store(cursor, Ordering::Release);
                    if cursor >= trimmed_at + 4 * TRIM_EVERY {
                        trimmed_at = cursor;
                        self.trim_ring();
                    }
                }
                Read::Overrun => {
                    h.relists.fetch_add(1, Ordering::Relaxed);
                    cursor = self.handler_relist(&h, &mut known);
                    h.cursor.store(cursor, Ordering::Release);
                }
                Read::Listed => {
                    // Only a handler that existed before the bulk load could be behind the
                    // marker, and then the reflector published adds instead; kept correct
                    // for any cursor all the same.
                    cursor = self.handler_relist(&h, &mut known);
                    h.cursor.store(cursor, Ordering::Release);
                }
                Read::Empty => {
                    if cursor >= trimmed_at + TRIM_EVERY {
                        trimmed_at = cursor;
                        self.trim_ring();
                    }
                    let deadline = resyncing.then_some(next_tick);
                    self.signal.wait(seen, deadline, &*self.clock);
                }
            }
        }
    }

    /// A handler lapped by the ring, or at a bulk-load marker, catches up from one
    /// consistent cut of the cache; returns its new cursor.
    fn handler_relist(&self, h: &HandlerSlot, known: &mut HashMap<Arc<str>, Arc<Object>>) -> u64 {
        // The cut and the ring position must agree: every change in the cut is before
        // `head`, every later one after it. Single changes push their note under the shard
        // lock the snapshot takes, but a bulk load fills the cache first and pushes its adds
        // after, under the control lock; taking that lock too keeps a cut from falling in
        // between (which would deliver the rest of the load's adds a second time). Released
        // before any handler call, which may register handlers.
        let (mut cut, head) = {
            let _bulk = self.control.lock();
            self.indexer.snapshot_with(|| self.ring.head())
        };
        cut.sort_by(|a, b| a.0.cmp(&b.0));
        let now: HashMap<Arc<str>, Arc<Object>> =
            cut.iter().map(|(k, o)| (k.clone(), o.clone())).collect();
        let mut gone: Vec<(&Arc<str>, &Arc<Object>)> = known
            .iter()
            .filter(|(k, _)| !now.contains_key(*k))
            .collect();
        gone.sort_by(|a, b| a.0.cmp(b.0));
        for (_, o) in gone {
            h.delete(o, true);
        }
        let initial = !h.synced.load(Ordering::Acquire);
        for (k, o) in &cut {
            match known.get(k) {
                None => h.add(o, initial),
                Some(old) if old.metadata.resource_version != o.metadata.resource_version => {
                    h.update(old, o)
                }
                Some(_) => {}
            }
        }
        *known = now;
        head
    }
}

impl Informer {
    /// An informer over `kind`, optionally limited to one namespace and a label selector,
    /// with a default handler resync period (zero: none), on the system clock.
    pub fn new(
        store: &Store,
        kind: &str,
        resync: Duration,
        namespace: Option<&str>,
        label_selector: Option<LabelSelector>,
    ) -> Result<Informer> {
        let mut cfg = InformerConfig::new(kind);
        cfg.resync = resync;
        cfg.namespace = namespace.map(str::to_string);
        cfg.label_selector = label_selector;
        Informer::with_config(store, cfg)
    }

    pub fn with_config(store: &Store, cfg: InformerConfig) -> Result<Informer> {
        if cfg.kind.is_empty() {
            return Err(Error::invalid("kind", "must not be empty"));
        }
        if cfg.ring_capacity == 0 {
            return Err(Error::invalid("ring_capacity", "must be at least 1"));
        }
        let signal = Arc::new(Signal::new());
        let waker = wake_on_advance(&cfg.clock, &signal);
        let shared = Arc::new(Shared {
            store: store.clone(),
            kind: cfg.kind,
            namespace: cfg.namespace,
            selector: cfg.label_selector.filter(|s| !s.is_empty()),
            default_resync: cfg.resync,
            clock: cfg.clock,
            seed: cfg.seed,
            indexer: Indexer::new(),
            ring: Ring::new(cfg.ring_capacity),
            signal,
            control: Mutex::new(Control {
                started: false,
                started_at: None,
                check_period: cfg.resync,
                handlers: vec![],
                threads: vec![],
                next_id: 1,
                transform: cfg.transform,
            }),
            stopped: AtomicBool::new(false),
            made: crate::sync::ForkStamp::now(),
            store_closed: AtomicBool::new(false),
            synced: AtomicBool::new(false),
            sync_seq: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            events: AtomicU64::new(0),
            transform_panics: AtomicU64::new(0),
            last_error: Mutex::new(None),
            _waker: Mutex::new(Some(waker)),
        });
        Ok(Informer {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn s(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    pub fn kind(&self) -> &str {
        &self.s().kind
    }
    pub fn namespace(&self) -> Option<&str> {
        self.s().namespace.as_deref()
    }
    pub fn label_selector(&self) -> Option<&LabelSelector> {
        self.s().selector.as_ref()
    }

    /// Registers a handler. `resync`: `None` takes the informer's default; periods below
    /// [`MIN_RESYNC_PERIOD`] are raised to it; after start a period below the informer's
    /// check period is raised to it; an informer resync of zero disables handler resync
    /// (client-go's rules, `k8s-semantics.md` §2.5). A handler added after start first
    /// receives a synthetic `on_add(obj, true)` for every cached object, then live events
    /// with no gap or duplicate at the boundary. `ShutDown` after stop.
    pub fn add_event_handler(
        &self,
        on_add: Option<OnAdd>,
        on_update: Option<OnUpdate>,
        on_delete: Option<OnDelete>,
        resync: Option<Duration>,
    ) -> Result<HandlerRegistration> {
        let s = self.s();
        let mut c = s.control.lock();
        s.check_running()?;
        let mut p = resync.unwrap_or(s.default_resync);
        if !p.is_zero() {
            p = p.max(MIN_RESYNC_PERIOD);
            if p < c.check_period {
                if c.started {
                    p = c.check_period;
                } else {
                    c.check_period = p;
                    for h in &c.handlers {
                        *h.effective_resync.lock() = determine_resync(h.requested_resync, p);
                    }
                }
            }
        }
        let slot = Arc::new(HandlerSlot {
            id: c.next_id,
            on_add,
            on_update,
            on_delete,
            requested_resync: p,
            effective_resync: Mutex::new(determine_resync(p, c.check_period)),
            cursor: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            last_panic: Mutex::new(None),
            relists: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        });
        c.next_id += 1;
        c.handlers.push(slot.clone());
        if c.started {
            let (cut, head) = s.indexer.snapshot_with(|| s.ring.head());
            let mut cut = cut;
            cut.sort_by(|a, b| a.0.cmp(&b.0));
            slot.cursor.store(head, Ordering::Release);
            let t = spawn_handler(
                s.clone(),
                slot.clone(),
                HandlerStart {
                    cursor: head,
                    initial: Some(cut),
                },
            )?;
            c.threads.push(t);
        }
        Ok(HandlerRegistration {
            slot,
            shared: s.clone(),
        })
    }

    /// Unregisters a handler; its thread ends after the call it is in.
    pub fn remove_event_handler(&self, reg: &HandlerRegistration) -> Result<()> {
        let s = self.s();
        s.made.check("informer")?;
        let mut c = s.control.lock();
        c.handlers.retain(|h| h.id != reg.slot.id);
        reg.slot.removed.store(true, Ordering::Release);
        drop(c);
        s.signal.notify();
        Ok(())
    }

    /// Adds an index (before or after start; existing objects are indexed at once).
    /// `Invalid` ("indexer conflict") if the name is taken.
    pub fn add_index(&self, name: &str, func: IndexFunc) -> Result<()> {
        self.s().check_running()?;
        self.s().indexer.add_index(name, func)
    }

    /// Sets the transform hook; `Invalid` once started.
    pub fn set_transform(&self, t: Transform) -> Result<()> {
        let mut c = self.s().control.lock();
        self.s().check_running()?;
        if c.started {
            return Err(Error::invalid("transform", "informer has already started"));
        }
        c.transform = Some(t);
        Ok(())
    }

    /// Starts the reflector and the handler threads. A second call does nothing;
    /// `ShutDown` after stop.
    pub fn start(&self) -> Result<()> {
        let s = self.s();
        let mut c = s.control.lock();
        s.check_running()?;
        if c.started {
            return Ok(());
        }
        c.started = true;
        c.started_at = Some(s.clock.now());
        let handlers = c.handlers.clone();
        for h in handlers {
            let t = spawn_handler(
                s.clone(),
                h,
                HandlerStart {
                    cursor: 0,
                    initial: None,
                },
            )?;
            c.threads.push(t);
        }
        let t = c.transform.clone();
        let sh = s.clone();
        let th = std::thread::Builder::new()
            .name(format!("floyd-reflector-{}", s.kind))
            .spawn(move || sh.run_reflector(t))
            .map_err(|e| Error::io("spawn reflector thread", e))?;
        c.threads.push(th.into());
        Ok(())
    }

    /// Stops the reflector and every handler thread and joins them. Idempotent. Every later
    /// call on this informer fails with `ShutDown`.
    pub fn stop(&self) {
        self.s().stop();
    }

    pub fn is_stopped(&self) -> bool {
        self.s().stopped.load(Ordering::Acquire)
    }

    /// True once the first list is in the cache.
    pub fn has_synced(&self) -> bool {
        self.s().synced.load(Ordering::Acquire)
    }

    /// Waits until [`Informer::has_synced`]; `Ok(false)` on timeout (measured on the
    /// informer's clock). `ShutDown` if stopped or the store closed first.
    pub fn wait_for_sync(&self, timeout: Option<Duration>) -> Result<bool> {
        let s = self.s().clone();
        self.s()
            .wait_until(timeout, move || s.synced.load(Ordering::Acquire))
    }

    /// Waits until the cache has applied every store event with version <= `rv` (of this
    /// kind, and past every other kind's): read-your-own-writes after a store write that
    /// returned `rv`. `Ok(false)` on timeout.
    pub fn wait_for_version(&self, rv: u64, timeout: Option<Duration>) -> Result<bool> {
        let s = self.s().clone();
        self.s().wait_until(timeout, move || {
            s.synced.load(Ordering::Acquire) && s.applied.load(Ordering::Acquire) >= rv
        })
    }

    /// Every store event with version <= this is reflected in the cache. Never decreases.
    pub fn last_synced_version(&self) -> u64 {
        self.s().applied.load(Ordering::Acquire)
    }

    /// The cached object at `key` (`"namespace/name"`).
    pub fn get(&self, key: &str) -> Result<Option<Arc<Object>>> {
        self.s().check_running()?;
        Ok(self.s().indexer.get(key))
    }

    /// Cached objects matching `label_selector` (all with `None`), in no particular order.
    pub fn list(&self, label_selector: Option<&LabelSelector>) -> Result<Vec<Arc<Object>>> {
        self.s().check_running()?;
        Ok(self.s().indexer.list(label_selector))
    }

    /// Cached keys, sorted.
    pub fn keys(&self) -> Result<Vec<String>> {
        self.s().check_running()?;
        Ok(self.s().indexer.keys())
    }

    pub fn by_index(&self, name: &str, value: &str) -> Result<Vec<Arc<Object>>> {
        self.s().check_running()?;
        self.s().indexer.by_index(name, value)
    }

    pub fn index_keys(&self, name: &str, value: &str) -> Result<Vec<String>> {
        self.s().check_running()?;
        self.s().indexer.index_keys(name, value)
    }

    pub fn list_index_values(&self, name: &str) -> Result<Vec<String>> {
        self.s().check_running()?;
        self.s().indexer.list_index_values(name)
    }

    pub fn stats(&self) -> InformerStats {
        let s = self.s();
        InformerStats {
            lists: s.lists.load(Ordering::Relaxed),
            expired: s.expired.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            last_error: s.last_error.lock().clone(),
            events: s.events.load(Ordering::Relaxed),
            last_synced_version: s.applied.load(Ordering::Acquire),
            cached: s.indexer.len(),
            notifications: s.ring.head(),
            index_panics: s.indexer.index_panics(),
            transform_panics: s.transform_panics.load(Ordering::Relaxed),
            handlers: s.control.lock().handlers.len(),
        }
    }
}

fn spawn_handler(
    s: Arc<Shared>,
    h: Arc<HandlerSlot>,
    start: HandlerStart,
) -> Result<crate::sync::Joinable<()>> {
    std::thread::Builder::new()
        .name(format!("floyd-handler-{}-{}", s.kind, h.id))
        .spawn(move || s.run_handler(h, start))
        .map(Into::into)
        .map_err(|e| Error::io("spawn informer handler thread", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_periods_follow_client_go() {
        let s = Duration::from_secs;
        assert_eq!(determine_resync(s(0), s(10)), s(0));
        assert_eq!(
            determine_resync(s(5), s(0)),
            s(0),
            "zero informer resync disables"
        );
        assert_eq!(determine_resync(s(5), s(10)), s(10));
        assert_eq!(determine_resync(s(15), s(10)), s(15));
    }

    #[test]
    fn backoff_doubles_with_jitter_caps_and_resets() {
        use crate::clock::Clock;
        let clock = crate::clock::FakeClock::new();
        let mut b = Backoff::new(7);
        let t0 = clock.now();
        let mut base = BACKOFF_INITIAL;
        for i in 0..8 {
            let d = b.delay(t0 + Duration::from_secs(i));
            assert!(
                d >= base && d < base * 2,
                "step {i}: {d:?} not in [{base:?}, 2x)"
            );
            base = (base * 2).min(BACKOFF_CAP);
        }
        assert_eq!(base, BACKOFF_CAP);
        // Quiet for longer than the reset window: back to the first delay.
        let d = b.delay(t0 + Duration::from_secs(8) + BACKOFF_RESET + Duration::from_secs(1));
        assert!(d >= BACKOFF_INITIAL && d < BACKOFF_INITIAL * 2, "{d:?}");
    }
}
