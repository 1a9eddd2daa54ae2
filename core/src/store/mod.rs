//! The store: the embedded API server over the event log.
//!
//! Every change is one frame in the log (the truth); the store keeps an in-memory index of
//! the current objects, rebuilt on open from the newest valid snapshot plus the log after it.
//! Kubernetes semantics: the resource version of an object is the log position of the event
//! that last changed it (strictly increasing), `Conflict` on a stale version precondition,
//! generation bumps only when the spec changes, `watch` replays from any retained version.
//!
//! Concurrency: each kind's objects live in [`SHARDS`] shards, each behind its own lock. A
//! writer holds its key's shard lock from the version check through the append to the index
//! update, so same-key writes are linearizable while writers of different shards only meet
//! at the log's `fetch_add`. A `list` holds every shard of its kind (read) at once, so it sees
//! exactly the writes up to the version it returns. Durability waits happen after the shard
//! lock is released, so a slow `fsync` never serialises writers of one shard.

mod json;
pub mod object;
pub mod selector;
pub mod validate;

use std::collections::{BTreeMap, VecDeque, btree_map};
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::clock::{SharedClock, SystemClock, WallAnchor, rfc3339};
use crate::error::{Error, Result};
use crate::log::{Cursor, Durability, FileStorage, Frame, Log, LogConfig, Storage};
use crate::snapshot;
use crate::sync::{AtomicBool, AtomicU64, Ordering};
pub use object::{Object, ObjectMeta, OwnerReference, ResourceVersion};
pub use selector::LabelSelector;
pub use validate::Limits;

/// Shards per kind: writers of different keys rarely share a lock.
pub const SHARDS: usize = 16;
/// Snapshots kept on disk; the log is kept from the oldest of them, so losing the newest
/// snapshot is recoverable (`reliability.md` P8).
pub const SNAPSHOTS_KEPT: usize = 2;
/// The embedded default data directory.
pub const DEFAULT_DATA_DIR: &str = "./floyd-data";

/// Kinds of store events in the log (the frame's `kind` field).
const EV_ADDED: u16 = 1;
const EV_MODIFIED: u16 = 2;
const EV_DELETED: u16 = 3;

/// What an update of a stored object replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Spec and metadata (`update`): the status is kept.
    All,
    /// The status only (`update_status`).
    Status,
    /// The status and the annotations (Deployment status, as upstream's apps strategy).
    StatusAndAnnotations,
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
    fn code(self) -> u16 {
        match self {
            EventType::Added => EV_ADDED,
            EventType::Modified => EV_MODIFIED,
            EventType::Deleted => EV_DELETED,
        }
    }
    fn from_code(c: u16) -> Option<EventType> {
        match c {
            EV_ADDED => Some(EventType::Added),
            EV_MODIFIED => Some(EventType::Modified),
            EV_DELETED => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// One change, as a watch delivers it. `object.metadata.resourceVersion` equals `rv`; for
/// `Deleted` the object is its last state.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    pub event_type: EventType,
    pub rv: u64,
    pub object: Arc<Object>,
}

/// Store configuration.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub durability: Durability,
    pub segment_size: u64,
    pub limits: Limits,
    pub clock: SharedClock,
    /// Seed for generated uids and names; `None` draws one from the OS.
    pub seed: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durability: Durability::batch(),
            segment_size: crate::log::DEFAULT_SEGMENT_SIZE,
            limits: Limits::default(),
            clock: SystemClock::shared(),
            seed: None,
        }
    }
}

/// What `snapshot()` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub resource_version: u64,
    /// `None` for memory stores.
    pub path: Option<PathBuf>,
    pub objects: u64,
    pub bytes: u64,
    /// Log segments removed by the compaction that followed.
    pub compacted_segments: u64,
}

/// Counters describing the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreStats {
    pub resource_version: u64,
    pub objects: u64,
    pub events: u64,
    pub segments: u64,
    pub bytes: u64,
    pub oldest_version: u64,
    pub snapshot_version: u64,
    pub truncated_bytes: u64,
    pub durability: Durability,
}

/// What open found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The snapshot recovery started from (`None`: the whole log was replayed).
    pub snapshot: Option<PathBuf>,
    pub snapshot_objects: u64,
    /// Events replayed from the log after the snapshot.
    pub replayed: u64,
    /// Snapshots that failed their checks and were renamed `.broken`.
    pub broken_snapshots: Vec<PathBuf>,
    pub log: crate::log::RecoveryReport,
}

/// Keys are `Arc<str>` so that informers listing the store share them instead of copying.
type Shard = RwLock<BTreeMap<Arc<str>, Arc<Object>>>;

/// hashbrown's hasher, not SipHash: every operation looks its kind up here.
type KindMap = hashbrown::HashMap<String, Arc<KindIndex>>;

struct KindIndex {
    shards: Vec<Shard>,
}

impl KindIndex {
    fn new() -> KindIndex {
        KindIndex {
            shards: (0..SHARDS).map(|_| RwLock::new(BTreeMap::new())).collect(),
        }
    }
    fn shard(&self, key: &str) -> &Shard {
        let mut h = FxLike::default();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }
}

/// A small, fixed, fast hasher for shard selection (not for untrusted hash tables).
#[derive(Default)]
struct FxLike(u64);
impl Hasher for FxLike {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ *b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

pub(crate) struct StoreInner {
    log: Log,
    dir: Option<PathBuf>,
    /// Where snapshots live (`<dir>/snapshots`); `None` in memory, where a snapshot only
    /// compacts the log.
    snapshots: Option<Arc<dyn Storage>>,
    /// Every operation looks its kind up here, so readers take no lock and write no shared
    /// line: the map is replaced whole (copy on write) when a kind is added, which is rare.
    kinds: ArcSwap<KindMap>,
    /// Held to add a kind, and by a cut across every kind ([`Store::list_all`]) so that no
    /// kind appears in the middle of it.
    kinds_added: Mutex<()>,
    /// Highest rv applied to the index.
    last_rv: AtomicU64,
    objects: AtomicU64,
    events: AtomicU64,
    closed: AtomicBool,
    cfg: StoreConfig,
    rng: Mutex<u64>,
    snapshot_lock: Mutex<()>,
    snapshot_rv: AtomicU64,
    /// Wall time for stamps, anchored to the monotonic clock when the store opened, so that
    /// creation and deletion timestamps never go backwards while it is open.
    wall: WallAnchor,
}

/// The store handle; cheap to clone, all clones share one store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// The starting size of an event's payload buffer: most objects fit without regrowing.
const PAYLOAD_CAPACITY: usize = 512;

/// An object with its store key (`"namespace/name"`), shared.
pub(crate) type KeyedObject = (Arc<str>, Arc<Object>);

type ShardGuard<'a> = RwLockReadGuard<'a, BTreeMap<Arc<str>, Arc<Object>>>;

/// Lists at least this long are copied on two threads ([`Store::list_entries`]).
const LIST_PARALLEL_MIN: usize = 64 * 1024;

/// How many entries ahead of its copy a list fetches the reference counts' lines.
const LIST_PREFETCH_AHEAD: usize = 8;

fn in_list_scope(o: &Object, namespace: Option<&str>, selector: Option<&LabelSelector>) -> bool {
    namespace.is_none_or(|ns| o.metadata.namespace == ns)
        && selector.is_none_or(|s| s.matches(&o.metadata.labels))
}

fn encode(obj: &Object) -> Vec<u8> {
    // The payload is `[kind length u8][kind][object JSON]`. Writers clear
    // `resourceVersion` before appending: the version is the frame's position and `decode`
    // fills it in (a snapshot entry's is its entry version). The JSON (serde_json's bytes,
    // by the store's own writer: `json`) goes straight into the payload buffer, which most
    // objects fit without regrowing.
    let mut out = Vec::with_capacity(PAYLOAD_CAPACITY);
    out.push(obj.kind.len() as u8);
    out.extend_from_slice(obj.kind.as_bytes());
    json::write_object(&mut out, obj);
    out
}

/// The encoded payload of `obj`, checked against the size limit (on the JSON part: the form
/// the limit is defined on, measured on the bytes that are stored).
fn encode_checked(obj: &Object, limits: &validate::Limits) -> Result<Vec<u8>> {
    let payload = encode(obj);
    validate::validate_size(payload.len() - 1 - obj.kind.len(), limits)?;
    Ok(payload)
}

/// `a` and `b` as a uid's text, `8-4-4-4-12` hex digits: written digit by digit (`format!`
/// cost a tenth of a create).
fn uid_text(a: u64, b: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (v, digits) in [
        (a >> 32, 8),
        ((a >> 16) & 0xFFFF, 4),
        (a & 0xFFFF, 4),
        (b >> 48, 4),
        (b & 0xFFFF_FFFF_FFFF, 12),
    ] {
        if !s.is_empty() {
            s.push('-');
        }
        for i in (0..digits).rev() {
            s.push(HEX[((v >> (4 * i)) & 0xF) as usize] as char);
        }
    }
    s
}

fn payload_kind(p: &[u8]) -> Option<&str> {
    let n = *p.first()? as usize;
    std::str::from_utf8(p.get(1..1 + n)?).ok()
}

fn decode(rv: u64, p: &[u8]) -> Result<Object> {
    let n = *p
        .first()
        .ok_or_else(|| Error::Internal("empty store event".into()))? as usize;
    let json = p
        .get(1 + n..)
        .ok_or_else(|| Error::Internal("short store event".into()))?;
    let mut o: Object = serde_json::from_slice(json)
        .map_err(|e| Error::Internal(format!("undecodable store event at {rv}: {e}")))?;
    o.metadata.resource_version = rv.to_string();
    Ok(o)
}

fn decode_frame(f: &Frame) -> Result<WatchEvent> {
    let t = EventType::from_code(f.kind)
        .ok_or_else(|| Error::Internal(format!("unknown event type {} at {}", f.kind, f.rv)))?;
    Ok(WatchEvent {
        event_type: t,
        rv: f.rv,
        object: Arc::new(decode(f.rv, &f.payload)?),
    })
}

impl Store {
    /// Opens (or creates) a store in `path`. A directory is open in one store at a time:
    /// while another store has it open, in this process or another, this fails with `Io`
    /// naming the holder. [`Store::close`] (or dropping every handle) releases it.
    pub fn open(path: impl AsRef<Path>, cfg: StoreConfig) -> Result<(Store, OpenReport)> {
        let dir = path.as_ref().to_path_buf();
        let log_storage = Arc::new(FileStorage::new(dir.join("log"))?);
        // Under the log directory's lock, which covers the whole data directory.
        let snapshots = Arc::new(FileStorage::without_lock(dir.join("snapshots"))?);
        Store::open_with(log_storage, snapshots, Some(dir), cfg)
    }

    /// Opens a store over storage of the caller's choice: `log` for the log's segments,
    /// `snapshots` for snapshot files (the simulated storage of the power-cut tests).
    pub fn open_on(
        log: Arc<dyn Storage>,
        snapshots: Arc<dyn Storage>,
        cfg: StoreConfig,
    ) -> Result<(Store, OpenReport)> {
        Store::open_with(log, snapshots, None, cfg)
    }

    fn open_with(
        log_storage: Arc<dyn Storage>,
        snapshots: Arc<dyn Storage>,
        dir: Option<PathBuf>,
        cfg: StoreConfig,
    ) -> Result<(Store, OpenReport)> {
        let mut report = OpenReport::default();
        // Every retained frame is verified: compaction keeps the log from the older of
        // the kept snapshots, so this is bounded by two snapshot intervals.
        let log_cfg = LogConfig {
            segment_size: cfg.segment_size,
            durability: cfg.durability,
            verify_from: 0,
            clock: cfg.clock.clone(),
            ..LogConfig::default()
        };
        let (log, log_report) = Log::open(log_storage, log_cfg)?;
        report.log = log_report;
        let inner = StoreInner::new(log, dir, Some(snapshots.clone()), cfg);
        // Safe under the log's directory lock: no other store writes snapshots here.
        let leftovers = snapshot::remove_temporaries_in(&*snapshots)?;
        if leftovers > 0 {
            tracing::warn!(
                files = leftovers,
                "removed snapshot temporaries an earlier crash left"
            );
        }

        // The newest snapshot that passes every check: header and body checksums, every
        // entry, and its version recorded in the log (an orphan snapshot written just
        // before a crash whose log tail was cut must not be used).
        let mut from = None;
        for (_, name) in snapshot::list_snapshots_in(&*snapshots)? {
            let p = snapshots.describe(&name);
            match inner.load_snapshot(&*snapshots, &name) {
                Ok((rv, objs)) => {
                    report.snapshot = Some(p);
                    report.snapshot_objects = objs.len() as u64;
                    for o in objs {
                        inner.index_put(Arc::new(o));
                    }
                    inner.last_rv.store(rv, Ordering::Release);
                    inner.snapshot_rv.store(rv, Ordering::Release);
                    from = Some(rv);
                    break;
                }
                Err(e) => {
                    tracing::warn!(snapshot = %p.display(), error = %e, "snapshot rejected");
                    report
                        .broken_snapshots
                        .push(snapshot::quarantine_in(&*snapshots, &name)?);
                }
            }
        }
        let from = match from {
            Some(rv) => rv,
            None if inner.log.oldest() > 0 => {
                return Err(Error::corrupt(
                    snapshots.describe(""),
                    None,
                    "the log was compacted but no valid snapshot covers its beginning",
                ));
            }
            None => 0,
        };
        let mut cursor = inner.log.cursor_after(from)?;
        while let Some(f) = cursor.try_next()? {
            let ev = decode_frame(&f)?;
            match ev.event_type {
                EventType::Deleted => inner.index_remove(&ev.object),
                _ => inner.index_put(ev.object),
            }
            inner.last_rv.fetch_max(f.rv, Ordering::AcqRel);
            report.replayed += 1;
        }
        inner.events.store(report.replayed, Ordering::Release);
        Ok((
            Store {
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    /// Opens the embedded default data directory `./floyd-data`.
    pub fn open_default() -> Result<(Store, OpenReport)> {
        Store::open(DEFAULT_DATA_DIR, StoreConfig::default())
    }

    /// A store in memory: same semantics, nothing persisted.
    pub fn memory() -> Store {
        Store::memory_with(StoreConfig::default()).expect("memory store")
    }

    pub fn memory_with(cfg: StoreConfig) -> Result<Store> {
        let log = Log::memory(LogConfig {
            segment_size: cfg.segment_size,
            clock: cfg.clock.clone(),
            ..LogConfig::default()
        })?;
        Ok(Store {
            inner: Arc::new(StoreInner::new(log, None, None, cfg)),
        })
    }

    /// Creates an object: sets uid, resourceVersion, generation 1 and creationTimestamp.
    /// `AlreadyExists` if the key is taken.
    pub fn create(&self, obj: Object) -> Result<Arc<Object>> {
        self.inner.check_open()?;
        let mut obj = obj;
        obj.apply_defaults();
        if obj.metadata.name.is_empty()
            && let Some(prefix) = obj.metadata.generate_name.clone()
        {
            validate::validate_generate_name("metadata.generateName", &prefix)?;
            obj.metadata.name = format!("{prefix}{}", self.inner.random_suffix());
        }
        if !obj.metadata.resource_version.is_empty() {
            return Err(Error::invalid(
                "metadata.resourceVersion",
                "must not be set when creating an object",
            ));
        }
        obj.metadata.uid = self.inner.new_uid();
        obj.metadata.generation = 1;
        obj.metadata.creation_timestamp = Some(self.inner.stamp());
        obj.metadata.deletion_timestamp = None;
        validate::validate_fields(&obj, &self.inner.cfg.limits)?;
        // Encoded before taking the shard's lock: a create's payload does not depend on
        // what is stored.
        let payload = encode_checked(&obj, &self.inner.cfg.limits)?;
        let idx = self.inner.kind(&obj.kind);
        let key = obj.key();
        let shard = idx.shard(&key);
        let end;
        let stored = {
            let mut g = shard.write();
            // One search of the shard: the vacant entry is filled after the append.
            let slot = match g.entry(Arc::from(key)) {
                btree_map::Entry::Occupied(e) => {
                    return Err(Error::AlreadyExists(format!("{} {}", obj.kind, e.key())));
                }
                btree_map::Entry::Vacant(v) => v,
            };
            let (rv, e) = self.inner.append_payload(EventType::Added, &payload)?;
            end = e;
            obj.metadata.resource_version = rv.to_string();
            let stored = Arc::new(obj);
            slot.insert(stored.clone());
            self.inner.applied(rv, 1);
            stored
        };
        self.inner.log.wait_durable(end)?;
        Ok(stored)
    }

    /// The object of `kind` at `key` (`"namespace/name"`, or `"name"` for cluster-scoped
    /// kinds).
    pub fn get(&self, kind: &str, key: &str) -> Result<Option<Arc<Object>>> {
        self.inner.check_open()?;
        // Borrowed from the map under the guard, not cloned: a clone is two locked
        // operations on a count every reader of the kind shares.
        let kinds = self.inner.kinds.load();
        let Some(idx) = kinds.get(kind) else {
            return Ok(None);
        };
        Ok(idx.shard(key).read().get(key).cloned())
    }

    /// Objects of `kind`, optionally in one namespace and matching a label selector, sorted
    /// by key, with the version they are consistent at.
    pub fn list(
        &self,
        kind: &str,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<(Vec<Arc<Object>>, u64)> {
        self.inner.check_open()?;
        let kinds = self.inner.kinds.load();
        let Some(idx) = kinds.get(kind) else {
            crate::failpoint!("store.list_of_unknown_kind");
            return match self.inner.version_without(kind) {
                Some(rv) => Ok((vec![], rv)),
                None => self.list(kind, namespace, selector),
            };
        };
        let guards: Vec<ShardGuard<'_>> = idx.shards.iter().map(|s| s.read()).collect();
        // Every writer of this kind is outside its append-to-index window now, so the
        // index holds exactly this kind's writes up to `rv`.
        let rv = self.inner.last_rv.load(Ordering::Acquire);
        // Each shard is sorted by key already: merge them (no key is built or compared
        // more than log2(SHARDS) times).
        let runs: Vec<Vec<(&Arc<str>, &Arc<Object>)>> = guards
            .iter()
            .map(|g| {
                g.iter()
                    .filter(|(_, o)| in_list_scope(o, namespace, selector))
                    .collect()
            })
            .collect();
        let mut out = Vec::with_capacity(runs.iter().map(Vec::len).sum());
        let mut heads: std::collections::BinaryHeap<std::cmp::Reverse<(&str, usize)>> = runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.first().map(|(k, _)| std::cmp::Reverse((&***k, i))))
            .collect();
        let mut pos = vec![0usize; runs.len()];
        while let Some(std::cmp::Reverse((_, i))) = heads.pop() {
            out.push(runs[i][pos[i]].1.clone());
            pos[i] += 1;
            if let Some((k, _)) = runs[i].get(pos[i]) {
                heads.push(std::cmp::Reverse((&***k, i)));
            }
        }
        drop(runs);
        drop(guards);
        Ok((out, rv))
    }

    /// [`Store::list`] for informers: the same objects at the same version, with their
    /// keys (shared, not copied), in no particular order.
    pub(crate) fn list_entries(
        &self,
        kind: &str,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<(Vec<KeyedObject>, u64)> {
        self.inner.check_open()?;
        let kinds = self.inner.kinds.load();
        let Some(idx) = kinds.get(kind) else {
            crate::failpoint!("store.list_of_unknown_kind");
            return match self.inner.version_without(kind) {
                Some(rv) => Ok((vec![], rv)),
                None => self.list_entries(kind, namespace, selector),
            };
        };
        let guards: Vec<ShardGuard<'_>> = idx.shards.iter().map(|s| s.read()).collect();
        let rv = self.inner.last_rv.load(Ordering::Acquire);
        let total: usize = guards.iter().map(|g| g.len()).sum();
        let collect = |gs: &[ShardGuard<'_>]| -> Vec<KeyedObject> {
            let mut refs: Vec<(&Arc<str>, &Arc<Object>)> =
                Vec::with_capacity(gs.iter().map(|g| g.len()).sum());
            for g in gs {
                refs.extend(g.iter());
            }
            // Visit the objects in memory order, not key order: a cold list touches every
            // object once, and in address order those touches are mostly sequential
            // (objects written together sit together) instead of one cache and TLB miss
            // each.
            // A stable sort, because it finds sorted runs: where names count up, each
            // shard's key order is its creation order, which is its address order too, and
            // the sort merges a few runs instead of sorting a million addresses.
            refs.sort_by_key(|(_, o)| Arc::as_ptr(o) as usize);
            let mut out = Vec::with_capacity(refs.len());
            for (i, (k, o)) in refs.iter().enumerate() {
                // Each clone below is a locked increment, which waits for every miss
                // before it: the lines of the counts a few entries on are fetched ahead.
                if let Some((k, o)) = refs.get(i + LIST_PREFETCH_AHEAD) {
                    crate::log::raw::prefetch_for_write(Arc::as_ptr(k) as *const u8);
                    crate::log::raw::prefetch_for_write(Arc::as_ptr(o));
                }
                if in_list_scope(o, namespace, selector) {
                    out.push(((*k).clone(), (*o).clone()));
                }
            }
            out
        };
        // A large list takes half the shards on a second thread: the copies' reference
        // counts are locked increments on cold lines, which two cores wait on side by side.
        let out = if total >= LIST_PARALLEL_MIN {
            let (lower, upper) = guards.split_at(guards.len() / 2);
            let (second, mut out) = crate::sync::on_two_threads(
                "floyd-store-list",
                || collect(upper),
                || collect(lower),
            );
            out.extend(second);
            out
        } else {
            collect(&guards)
        };
        drop(guards);
        Ok((out, rv))
    }

    /// Replaces an object's metadata and spec (its status is kept, as with Kubernetes'
    /// status subresource). `Conflict` if `metadata.resourceVersion` is set and stale;
    /// generation += 1 when the spec changes. An update that changes nothing writes nothing.
    pub fn update(&self, obj: Object) -> Result<Arc<Object>> {
        self.write_existing(obj, Part::All)
    }

    /// Replaces only an object's status; generation unchanged.
    pub fn update_status(&self, obj: Object) -> Result<Arc<Object>> {
        self.write_existing(obj, Part::Status)
    }

    /// Replaces an object's status and its annotations in one write; generation unchanged.
    /// Upstream's apps status strategy keeps annotation changes in a Deployment's
    /// `UpdateStatus`, and its controller records the revision annotation and the
    /// `NewReplicaSetCreated` condition that way: the Deployment controller uses this for
    /// the same single write. Not public: `update_status` keeps everything but the status,
    /// for every kind.
    pub(crate) fn update_status_and_annotations(&self, obj: Object) -> Result<Arc<Object>> {
        self.write_existing(obj, Part::StatusAndAnnotations)
    }

    fn write_existing(&self, obj: Object, part: Part) -> Result<Arc<Object>> {
        self.inner.check_open()?;
        let mut obj = obj;
        obj.apply_defaults();
        let precondition = obj.resource_version()?;
        let kinds = self.inner.kinds.load();
        let key = obj.key();
        let Some(idx) = kinds.get(&obj.kind) else {
            return Err(Error::NotFound(format!("{} {key}", obj.kind)));
        };
        let shard = idx.shard(&key);
        let end;
        let stored = {
            let mut g = shard.write();
            // One lookup: the slot is replaced in place below.
            let slot = g
                .get_mut(key.as_str())
                .ok_or_else(|| Error::NotFound(format!("{} {key}", obj.kind)))?;
            let cur = slot.clone();
            let cur_rv = cur.resource_version()?.map_or(0, |v| v.0);
            if let Some(p) = precondition
                && p.0 != cur_rv
            {
                return Err(Error::Conflict(format!(
                    "{} {key}: resourceVersion {} is stale (current {cur_rv})",
                    obj.kind, p.0
                )));
            }
            // `spec_changed` settles "is this a no-op?" without comparing whole objects.
            let (mut next, spec_changed) = if part != Part::All {
                let mut n = (*cur).clone();
                n.status = obj.status;
                if part == Part::StatusAndAnnotations {
                    n.metadata.annotations = obj.metadata.annotations;
                }
                (n, false)
            } else {
                let mut n = obj;
                n.status = cur.status.clone();
                n.metadata.uid = cur.metadata.uid.clone();
                n.metadata.creation_timestamp = cur.metadata.creation_timestamp.clone();
                n.metadata.deletion_timestamp = cur.metadata.deletion_timestamp.clone();
                n.metadata.generate_name = cur.metadata.generate_name.clone();
                n.metadata.generation = cur.metadata.generation;
                let changed = n.spec != cur.spec;
                if changed {
                    n.metadata.generation += 1;
                }
                (n, changed)
            };
            next.metadata.resource_version = cur.metadata.resource_version.clone();
            if !spec_changed && next == *cur {
                return Ok(cur);
            }
            // What was copied from `cur` above, or compared already, is not again.
            let known = match part {
                // Only the status can differ, and `next != cur`: it does.
                Part::Status => validate::Known {
                    spec_changed: Some(false),
                    status_changed: Some(true),
                    metadata_same: true,
                },
                Part::StatusAndAnnotations => validate::Known {
                    spec_changed: Some(false),
                    status_changed: None,
                    metadata_same: false,
                },
                Part::All => validate::Known {
                    spec_changed: Some(spec_changed),
                    status_changed: Some(false),
                    metadata_same: false,
                },
            };
            validate::validate_changed_fields(&next, &cur, known, &self.inner.cfg.limits)?;
            next.metadata.resource_version.clear();
            let payload = encode_checked(&next, &self.inner.cfg.limits)?;
            let (rv, e) = self.inner.append_payload(EventType::Modified, &payload)?;
            end = e;
            next.metadata.resource_version = rv.to_string();
            let stored = Arc::new(next);
            *slot = stored.clone();
            // Under the lock: `list` relies on the index and `last_rv` moving together.
            self.inner.applied(rv, 0);
            drop(g);
            // The old version is freed outside the shard's lock (unless a reader holds it).
            drop(cur);
            stored
        };
        self.inner.log.wait_durable(end)?;
        Ok(stored)
    }

    /// Deletes an object and returns its last state (with the deletion's version).
    /// `Conflict` if `resource_version` is given and stale.
    pub fn delete(
        &self,
        kind: &str,
        key: &str,
        resource_version: Option<u64>,
    ) -> Result<Arc<Object>> {
        self.inner.check_open()?;
        let kinds = self.inner.kinds.load();
        let Some(idx) = kinds.get(kind) else {
            return Err(Error::NotFound(format!("{kind} {key}")));
        };
        let shard = idx.shard(key);
        let end;
        let gone = {
            let mut g = shard.write();
            let cur = g
                .get(key)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("{kind} {key}")))?;
            if let Some(p) = resource_version {
                let cur_rv = cur.resource_version()?.map_or(0, |v| v.0);
                if p != cur_rv {
                    return Err(Error::Conflict(format!(
                        "{kind} {key}: resourceVersion {p} is stale (current {cur_rv})"
                    )));
                }
            }
            let mut last = (*cur).clone();
            last.metadata.deletion_timestamp = Some(self.inner.stamp());
            last.metadata.resource_version.clear();
            let (rv, e) = self.inner.append(EventType::Deleted, &last)?;
            end = e;
            last.metadata.resource_version = rv.to_string();
            g.remove(key);
            self.inner.applied(rv, -1);
            Arc::new(last)
        };
        self.inner.log.wait_durable(end)?;
        Ok(gone)
    }

    /// Watches events of `kind` (all kinds if `None`) with `rv > from_version`, then follows
    /// the tail. `from_version = 0` starts with a synthetic `Added` for every current object
    /// (consistent at one version), as Kubernetes does for `resourceVersion=0`. `Expired` if
    /// events after `from_version` were compacted away. The iterator ends after `timeout`
    /// without an event (`None`: follow until the store closes).
    pub fn watch(
        &self,
        kind: Option<&str>,
        from_version: u64,
        timeout: Option<Duration>,
    ) -> Result<Watch> {
        self.watch_from(kind, from_version, timeout, from_version == 0)
    }

    /// A watch of every event with `rv > after`, with no synthetic adds even for `after = 0`:
    /// for a reflector that has just listed at `after`. (Through [`Store::watch`], a list at
    /// version 0 — a store nothing was ever written to — followed by a watch "from 0" would
    /// collapse every write made in between into the synthetic adds of what is left, and a
    /// create, update and delete in that gap would never be seen.)
    pub(crate) fn watch_after(
        &self,
        kind: Option<&str>,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<Watch> {
        self.watch_from(kind, after, timeout, false)
    }

    fn watch_from(
        &self,
        kind: Option<&str>,
        from_version: u64,
        timeout: Option<Duration>,
        synthetic_adds: bool,
    ) -> Result<Watch> {
        self.inner.check_open()?;
        let mut pending = VecDeque::new();
        let after = if synthetic_adds {
            let (objs, rv) = match kind {
                Some(k) => self.list(k, None, None)?,
                None => self.list_all()?,
            };
            for o in objs {
                let rv_o = o.resource_version()?.map_or(0, |v| v.0);
                pending.push_back(WatchEvent {
                    event_type: EventType::Added,
                    rv: rv_o,
                    object: o,
                });
            }
            rv
        } else {
            from_version
        };
        let cursor = self.inner.log.cursor_after(after)?;
        Ok(Watch {
            store: self.clone(),
            cursor,
            kind: kind.map(str::to_string),
            timeout,
            pending,
            done: false,
            start_version: after,
        })
    }

    /// Every object of every kind, consistent at the returned version.
    fn list_all(&self) -> Result<(Vec<Arc<Object>>, u64)> {
        // No kind may be added during the cut: its first writes could then be at or before
        // `rv` and still be missing from the list.
        let _no_new_kind = self.inner.kinds_added.lock();
        let kinds = self.inner.kinds.load();
        let mut guards = vec![];
        for idx in kinds.values() {
            for s in &idx.shards {
                guards.push(s.read());
            }
        }
        let rv = self.inner.last_rv.load(Ordering::Acquire);
        let mut out: Vec<Arc<Object>> = guards.iter().flat_map(|g| g.values().cloned()).collect();
        drop(guards);
        out.sort_by_cached_key(|a| (a.kind.clone(), a.key()));
        Ok((out, rv))
    }

    /// Writes a snapshot of every object at one version and compacts the log. Keeps
    /// [`SNAPSHOTS_KEPT`] snapshots and the log from the oldest of them.
    pub fn snapshot(&self) -> Result<SnapshotSummary> {
        self.inner.check_open()?;
        let _one = self.inner.snapshot_lock.lock();
        // Again under the lock: `close` takes it once after closing, so no snapshot writes
        // files after the directory was released.
        self.inner.check_open()?;
        let (objs, rv) = self.list_all()?;
        let mut compacted = 0;
        let (path, bytes) = match &self.inner.snapshots {
            None => {
                compacted = self.inner.log.compact(rv)? as u64;
                (None, 0)
            }
            Some(snapshots) => {
                let encoded: Vec<(String, u64, Vec<u8>)> = objs
                    .iter()
                    .map(|o| {
                        let v = o.resource_version().ok().flatten().map_or(0, |v| v.0);
                        (format!("{}/{}", o.kind, o.key()), v, encode(o))
                    })
                    .collect();
                // The snapshot's version must be durable in the log before the snapshot
                // can be trusted over it.
                self.inner.log.sync()?;
                let info = snapshot::write_snapshot_in(
                    &**snapshots,
                    rv,
                    encoded
                        .iter()
                        .map(|(k, v, p)| (k.as_str(), *v, p.as_slice())),
                )?;
                let all = snapshot::list_snapshots_in(&**snapshots)?;
                if all.len() >= SNAPSHOTS_KEPT {
                    let keep_from = all[SNAPSHOTS_KEPT - 1].0;
                    for (srv, name) in &all[SNAPSHOTS_KEPT..] {
                        if *srv < keep_from {
                            let _ = snapshots.remove(name);
                        }
                    }
                    compacted = self.inner.log.compact(keep_from)? as u64;
                }
                (Some(info.path), info.bytes)
            }
        };
        self.inner.snapshot_rv.store(rv, Ordering::Release);
        Ok(SnapshotSummary {
            resource_version: rv,
            path,
            objects: objs.len() as u64,
            bytes,
            compacted_segments: compacted,
        })
    }

    pub fn stats(&self) -> Result<StoreStats> {
        self.inner.check_open()?;
        let l = self.inner.log.stats();
        Ok(StoreStats {
            resource_version: self.inner.last_rv.load(Ordering::Acquire),
            objects: self.inner.objects.load(Ordering::Acquire),
            events: self.inner.events.load(Ordering::Acquire),
            segments: l.segments,
            bytes: l.bytes,
            oldest_version: l.oldest,
            snapshot_version: self.inner.snapshot_rv.load(Ordering::Acquire),
            truncated_bytes: l.truncated_bytes,
            durability: self.inner.log.durability(),
        })
    }

    /// The newest applied resource version.
    pub fn resource_version(&self) -> u64 {
        self.inner.last_rv.load(Ordering::Acquire)
    }

    /// Closes the store: later calls fail with `ShutDown`; watches end. Idempotent. A
    /// snapshot in progress finishes first; appends racing the close either finish or fail
    /// with `ShutDown` having written nothing; then the data directory is released for
    /// the next [`Store::open`].
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A snapshot in progress finishes (and compacts) before the directory is released;
        // in a forked child no snapshot of this store runs, and its lock may be a copy
        // taken while a thread of the parent held it.
        if !self.inner.log.is_forked_copy() {
            drop(self.inner.snapshot_lock.lock());
        }
        self.inner.log.close()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Stops the store as a crash would (tests, before a simulated power cut): later calls
    /// fail with `ShutDown`, and the log stops without a final sync (see [`Log::abandon`]).
    #[doc(hidden)]
    pub fn abandon(&self) {
        self.inner.closed.store(true, Ordering::Release);
        // A snapshot in progress finishes first, as in `close`.
        drop(self.inner.snapshot_lock.lock());
        self.inner.log.abandon();
    }

    /// The data directory, if the store has one.
    pub fn path(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }
}

impl StoreInner {
    fn new(
        log: Log,
        dir: Option<PathBuf>,
        snapshots: Option<Arc<dyn Storage>>,
        cfg: StoreConfig,
    ) -> StoreInner {
        let seed = cfg.seed.unwrap_or_else(|| {
            let t = cfg
                .clock
                .wall()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);

            std::collections::hash_map::RandomState::new().hash_one((t, std::process::id()))
        });
        StoreInner {
            log,
            dir,
            snapshots,
            kinds: ArcSwap::from_pointee(KindMap::new()),
            kinds_added: Mutex::new(()),
            last_rv: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            events: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            rng: Mutex::new(seed),
            snapshot_lock: Mutex::new(()),
            snapshot_rv: AtomicU64::new(0),
            wall: WallAnchor::new(&*cfg.clock),
            cfg,
        }
    }

    /// Now, for timestamps (see [`WallAnchor`]).
    fn stamp(&self) -> String {
        rfc3339(self.wall.wall(&*self.cfg.clock))
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShutDown("the store is closed".into()));
        }
        if self.log.is_forked_copy() {
            // Its index is the parent's as of the fork, never updated here, and a writer of
            // the parent may have held one of its locks at the fork.
            return Err(crate::sync::inherited_by_fork("store"));
        }
        Ok(())
    }

    /// The version an empty list of `kind` is consistent at, when the store has no index
    /// for the kind; `None` if the kind appeared meanwhile (list it then). Read under
    /// `kinds_added`: a kind is added under that lock before its first object is appended,
    /// so while it is still absent no object of it is in flight, and every object of it
    /// appended later has a higher version. (Read without the lock, the version could
    /// already include a first object the list did not see, and a watch from it would miss
    /// that object for good.)
    fn version_without(&self, kind: &str) -> Option<u64> {
        let _no_new_kind = self.kinds_added.lock();
        if self.kinds.load().get(kind).is_some() {
            return None;
        }
        Some(self.last_rv.load(Ordering::Acquire))
    }

    fn kind(&self, kind: &str) -> Arc<KindIndex> {
        if let Some(k) = self.kinds.load().get(kind) {
            return k.clone();
        }
        let _adding = self.kinds_added.lock();
        let cur = self.kinds.load_full();
        if let Some(k) = cur.get(kind) {
            return k.clone();
        }
        let k = Arc::new(KindIndex::new());
        let mut next = (*cur).clone();
        next.insert(kind.to_string(), k.clone());
        self.kinds.store(Arc::new(next));
        k
    }

    fn append(&self, t: EventType, obj: &Object) -> Result<(u64, u64)> {
        self.append_payload(t, &encode(obj))
    }

    fn append_payload(&self, t: EventType, payload: &[u8]) -> Result<(u64, u64)> {
        let appended = self.log.append_nowait(t.code(), payload)?;
        crate::failpoint!("store.after_append_before_index");
        Ok(appended)
    }

    fn applied(&self, rv: u64, objects_delta: i64) {
        self.last_rv.fetch_max(rv, Ordering::AcqRel);
        self.events.fetch_add(1, Ordering::Relaxed);
        if objects_delta > 0 {
            self.objects.fetch_add(1, Ordering::Relaxed);
        } else if objects_delta < 0 {
            self.objects.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Index maintenance during recovery (single-threaded).
    fn index_put(&self, obj: Arc<Object>) {
        let idx = self.kind(&obj.kind);
        let key = obj.key();
        let mut g = idx.shard(&key).write();
        match g.get_mut(key.as_str()) {
            Some(slot) => *slot = obj,
            None => {
                g.insert(key.into(), obj);
                self.objects.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn index_remove(&self, obj: &Object) {
        let idx = self.kind(&obj.kind);
        let key = obj.key();
        if idx.shard(&key).write().remove(key.as_str()).is_some() {
            self.objects.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Opens a snapshot and decodes every entry; any failure rejects the whole snapshot.
    fn load_snapshot(&self, storage: &dyn Storage, name: &str) -> Result<(u64, Vec<Object>)> {
        let snap = snapshot::Snapshot::open_in(storage, name)?;
        let rv = snap.rv();
        if rv > 0 && !self.log_has_frame(rv)? {
            return Err(Error::corrupt(
                storage.describe(name),
                None,
                "snapshot version is not recorded in the log",
            ));
        }
        let mut objs = Vec::with_capacity(snap.len());
        for e in snap.iter() {
            let e = e?;
            objs.push(decode(e.rv, e.payload)?);
        }
        Ok((rv, objs))
    }

    fn log_has_frame(&self, rv: u64) -> Result<bool> {
        match self.log.cursor_after(rv - 1) {
            Ok(mut c) => Ok(c.try_next()?.is_some_and(|f| f.rv == rv)),
            Err(e) if e.kind() == crate::ErrorKind::Expired => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn next_random(&self) -> u64 {
        let mut s = self.rng.lock();
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random RFC 4122 version-4 style uid.
    fn new_uid(&self) -> String {
        let a = self.next_random();
        let b = self.next_random();
        let b = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
        let a = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
        uid_text(a, b)
    }

    /// Five characters from Kubernetes' alphabet for generated names (no vowels, no
    /// look-alike digits).
    fn random_suffix(&self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut r = self.next_random();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
                r /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }
}

/// An iterator over store events (see [`Store::watch`]).
pub struct Watch {
    store: Store,
    cursor: Cursor,
    kind: Option<String>,
    timeout: Option<Duration>,
    pending: VecDeque<WatchEvent>,
    done: bool,
    start_version: u64,
}

impl Watch {
    /// The next event, waiting up to `timeout` (the watch's own if `None` is passed via
    /// `Iterator::next`). `Ok(None)` on timeout.
    pub fn next_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        loop {
            if self.store.is_closed() {
                return Err(Error::ShutDown("the store is closed".into()));
            }
            let f = match self.cursor.next_timeout(timeout) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(None),
                // The log's "closed" in the store's words (a forked child's copy keeps its own).
                Err(e) if e.kind() == crate::ErrorKind::ShutDown && self.store.is_closed() => {
                    return Err(Error::ShutDown("the store is closed".into()));
                }
                Err(e) => return Err(e),
            };
            if let Some(k) = &self.kind
                && payload_kind(&f.payload) != Some(k.as_str())
            {
                continue;
            }
            return decode_frame(&f).map(Some);
        }
    }

    /// The next event if one is ready now.
    pub fn try_next(&mut self) -> Result<Option<WatchEvent>> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        loop {
            let Some(f) = self.cursor.try_next()? else {
                return Ok(None);
            };
            if let Some(k) = &self.kind
                && payload_kind(&f.payload) != Some(k.as_str())
            {
                continue;
            }
            return decode_frame(&f).map(Some);
        }
    }

    /// The version the watch started after: for a watch from 0, the version its synthetic
    /// adds are consistent at.
    pub fn start_version(&self) -> u64 {
        self.start_version
    }

    /// Position of the next frame the watch will look at.
    pub fn position(&self) -> u64 {
        self.cursor.position()
    }
}

impl Iterator for Watch {
    type Item = Result<WatchEvent>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_timeout(self.timeout) {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) if e.kind() == crate::ErrorKind::ShutDown => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod watch_after_tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str, a: i64) -> Object {
        Object::from_json(
            &json!({"kind": "ConfigMap", "metadata": {"name": name}, "spec": {"a": a}}),
        )
        .expect("valid object")
    }

    fn types(mut w: Watch) -> Vec<EventType> {
        let mut out = vec![];
        while let Some(ev) = w.try_next().expect("watch") {
            out.push(ev.event_type);
        }
        out
    }

    /// A reflector lists, then watches from the list's version. On a store nothing was
    /// written to, that version is 0; writes landing between the two must all be seen.
    #[test]
    fn a_watch_after_version_0_replays_every_write_instead_of_a_snapshot() {
        let s = Store::memory();
        let (objs, rv) = s.list("ConfigMap", None, None).expect("list");
        assert!(objs.is_empty());
        assert_eq!(rv, 0, "nothing was ever written");
        let x = s.create(cm("x", 1)).expect("create");
        let mut next = (*x).clone();
        next.spec["a"] = json!(2);
        s.update(next).expect("update");
        s.delete("ConfigMap", "default/x", None).expect("delete");
        assert_eq!(
            types(s.watch_after(Some("ConfigMap"), rv, None).expect("watch")),
            vec![EventType::Added, EventType::Modified, EventType::Deleted]
        );
        // The public watch "from 0" is a snapshot of what is left: here, nothing.
        assert!(types(s.watch(Some("ConfigMap"), rv, None).expect("watch")).is_empty());
    }

    /// A list long enough to be copied on two threads holds exactly what the public list
    /// holds, with and without a namespace and a selector.
    #[test]
    fn a_large_list_of_entries_equals_the_public_list() {
        let s = Store::memory_with(StoreConfig {
            durability: Durability::None,
            ..StoreConfig::default()
        })
        .expect("store");
        let n = LIST_PARALLEL_MIN + 300;
        for i in 0..n {
            let tier = ["web", "db"][i % 2];
            let o = Object::from_json(&json!({
                "kind": "ConfigMap",
                "metadata": {
                    "name": format!("c{i}"),
                    "namespace": format!("ns{}", i % 3),
                    "labels": {"tier": tier},
                },
            }))
            .expect("valid object");
            s.create(o).expect("create");
        }
        let sel = LabelSelector::parse("tier=web").expect("selector");
        for (ns, sel) in [(None, None), (Some("ns1"), None), (Some("ns2"), Some(&sel))] {
            let (entries, rv) = s.list_entries("ConfigMap", ns, sel).expect("entries");
            let (objs, rv2) = s.list("ConfigMap", ns, sel).expect("list");
            assert_eq!(rv, rv2);
            let mut got: Vec<String> = entries
                .iter()
                .map(|(k, o)| {
                    assert_eq!(**k, o.key());
                    k.to_string()
                })
                .collect();
            got.sort();
            let mut want: Vec<String> = objs.iter().map(|o| o.key()).collect();
            want.sort();
            assert_eq!(got.len(), want.len(), "{ns:?}");
            assert_eq!(got, want, "{ns:?}");
        }
    }
}

#[cfg(test)]
mod status_and_annotations_tests {
    use super::*;
    use serde_json::json;

    fn deployment(s: &Store) -> Arc<Object> {
        s.create(
            Object::from_json(&json!({
                "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"},
                             "annotations": {"team": "a"}},
                "spec": {"replicas": 3},
            }))
            .expect("valid object"),
        )
        .expect("create")
    }

    /// One write changes the status and the annotations; the spec, the labels and the
    /// generation stay the stored ones whatever the caller's copy says.
    #[test]
    fn status_and_annotations_change_in_one_write_and_nothing_else_does() {
        let s = Store::memory();
        let cur = deployment(&s);
        let mut next = (*cur).clone();
        next.status = json!({"observedGeneration": 1});
        next.metadata.annotations.insert("rev".into(), "2".into());
        next.metadata.labels.insert("app".into(), "other".into());
        next.spec["replicas"] = json!(9);
        let got = s.update_status_and_annotations(next).expect("write");
        assert_eq!(got.status, json!({"observedGeneration": 1}));
        assert_eq!(got.metadata.annotations["rev"], "2");
        assert_eq!(got.metadata.annotations["team"], "a");
        assert_eq!(got.metadata.labels["app"], "web", "labels are kept");
        assert_eq!(got.spec["replicas"], json!(3), "the spec is kept");
        assert_eq!(got.metadata.generation, cur.metadata.generation);
        let rv = |o: &Object| o.resource_version().unwrap().unwrap().0;
        assert!(rv(&got) > rv(&cur));
        let w = s
            .watch(Some("Deployment"), rv(&cur), None)
            .expect("watch")
            .try_next()
            .expect("event")
            .expect("one event");
        assert_eq!(w.event_type, EventType::Modified);
        assert_eq!(w.rv, rv(&got));

        // Nothing to change: no write.
        let same = s
            .update_status_and_annotations((*got).clone())
            .expect("no-op");
        assert_eq!(rv(&same), rv(&got));
    }

    #[test]
    fn a_bad_annotation_or_a_stale_version_is_refused() {
        let s = Store::memory();
        let cur = deployment(&s);
        let mut bad = (*cur).clone();
        bad.metadata
            .annotations
            .insert("not a key!".into(), "x".into());
        let e = s.update_status_and_annotations(bad).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Invalid, "{e}");

        let mut first = (*cur).clone();
        first.status = json!({"replicas": 1});
        s.update_status_and_annotations(first).expect("write");
        let mut stale = (*cur).clone();
        stale.metadata.annotations.insert("rev".into(), "2".into());
        let e = s.update_status_and_annotations(stale).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict, "{e}");
        let now = s.get("Deployment", "default/web").unwrap().unwrap();
        assert!(!now.metadata.annotations.contains_key("rev"));
    }
}

#[cfg(test)]
mod uid_tests {
    use super::uid_text;

    #[test]
    fn uid_text_matches_the_general_format() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..10_000 {
            let (a, b) = (next(), next());
            let slow = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xFFFF,
                a & 0xFFFF,
                b >> 48,
                b & 0xFFFF_FFFF_FFFF
            );
            assert_eq!(uid_text(a, b), slow);
        }
        assert_eq!(uid_text(0, 0), "00000000-0000-0000-0000-000000000000");
    }
}
