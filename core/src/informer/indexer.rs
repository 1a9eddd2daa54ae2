//! The informer's cache: objects by key plus secondary indexes (client-go's `Indexer` /
//! `ThreadSafeStore`, `k8s-semantics.md` §2.2).
//!
//! Objects are `Arc`-shared with the store and with every reader; nothing is deep-copied.
//! The cache is split into [`INDEXER_SHARDS`] shards by key, each behind its own lock, and a
//! shard holds its own slice of every index. The single writer (the reflector) locks one
//! shard per change, so a reader scanning the cache delays the writer by at most one shard's
//! scan — readers never block the writer for long (`reliability.md` K16). Multi-shard reads
//! (`list`, `by_index`) visit shards one at a time: each object returned is a whole version,
//! and every key is at least as fresh as when the call began. [`Indexer::read_all`] locks
//! every shard at once for the rare reader that needs one consistent cut (late handlers,
//! handler relists).
//!
//! What this leaves to others: deciding what to apply (the reflector) and notifying handlers
//! (the informer); the hooks run under the shard lock so the informer can publish a
//! notification atomically with the change.

use std::hash::BuildHasher;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};
use parking_lot::{RwLock, RwLockReadGuard};
use serde_json::Value;
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::store::{LabelSelector, Object};
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// Shards of the cache: the writer and a scanning reader meet on one shard at a time.
pub const INDEXER_SHARDS: usize = 16;

/// Bulk loads at least this large build their shards on two threads ([`Indexer::load`]).
pub const LOAD_PARALLEL_MIN: usize = 64 * 1024;

/// How many entries ahead a bulk load's first pass fetches the next keys and objects.
const NOTES_PREFETCH_AHEAD: usize = 8;

/// A user index function: the values an object is indexed under (zero, one or many).
pub type IndexFn = Arc<dyn Fn(&Object) -> Vec<String> + Send + Sync>;

/// How an index computes an object's values. Built-ins parse from the strings the bindings
/// accept: `"namespace"`, `"label:<key>"`, `"owner"` (the controller owner's uid),
/// `"field:<dotted.path>"`.
#[derive(Clone)]
pub enum IndexFunc {
    /// `[metadata.namespace]` (client-go's `MetaNamespaceIndexFunc`).
    Namespace,
    /// `[labels[key]]`, or nothing when the label is absent.
    Label(String),
    /// `[uid of the controller owner reference]`, or nothing.
    Owner,
    /// The value at a dotted path (`spec.nodeName`, `status.phase`, `metadata.name`,
    /// `metadata.labels.app`); strings as is, numbers and booleans in JSON form, arrays
    /// contribute each scalar element; missing, null and objects index nothing.
    Field(Vec<String>),
    /// A closure. A panic inside it is caught, counted and indexes nothing.
    Custom(IndexFn),
}

impl std::fmt::Debug for IndexFunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexFunc::Namespace => f.write_str("namespace"),
            IndexFunc::Label(k) => write!(f, "label:{k}"),
            IndexFunc::Owner => f.write_str("owner"),
            IndexFunc::Field(p) => write!(f, "field:{}", p.join(".")),
            IndexFunc::Custom(_) => f.write_str("<custom>"),
        }
    }
}

impl IndexFunc {
    /// Parses a built-in index spec; `Invalid` naming `index` otherwise.
    pub fn parse(spec: &str) -> Result<IndexFunc> {
        let bad = |m: &str| Error::invalid("index", format!("{spec:?}: {m}"));
        match spec {
            "namespace" => Ok(IndexFunc::Namespace),
            "owner" => Ok(IndexFunc::Owner),
            _ => {
                if let Some(k) = spec.strip_prefix("label:") {
                    if k.is_empty() {
                        return Err(bad("a label index needs a key (label:<key>)"));
                    }
                    Ok(IndexFunc::Label(k.to_string()))
                } else if let Some(p) = spec.strip_prefix("field:") {
                    let parts: Vec<String> = p.split('.').map(str::to_string).collect();
                    if p.is_empty() || parts.iter().any(String::is_empty) {
                        return Err(bad("a field index needs a dotted path (field:<a.b.c>)"));
                    }
                    Ok(IndexFunc::Field(parts))
                } else {
                    Err(bad(
                        "expected \"namespace\", \"label:<key>\", \"owner\" or \"field:<dotted.path>\"",
                    ))
                }
            }
        }
    }

    /// An index computed by a closure.
    pub fn custom(f: impl Fn(&Object) -> Vec<String> + Send + Sync + 'static) -> IndexFunc {
        IndexFunc::Custom(Arc::new(f))
    }

    /// The values `obj` is indexed under. `panics` counts caught closure panics.
    #[cfg(test)]
    fn values(&self, obj: &Object, panics: &AtomicU64) -> Vec<String> {
        let mut out = vec![];
        self.vals(obj, panics).for_each(|v| out.push(v.to_string()));
        out
    }

    /// The values `obj` is indexed under, borrowed from it for the built-ins that have at
    /// most one value (no allocation on the apply path); `Many` is sorted and deduplicated.
    fn vals<'a>(&self, obj: &'a Object, panics: &AtomicU64) -> Vals<'a> {
        match self {
            IndexFunc::Namespace => Vals::One(&obj.metadata.namespace),
            IndexFunc::Label(k) => obj
                .metadata
                .labels
                .get(k)
                .map_or(Vals::Zero, |v| Vals::One(v)),
            IndexFunc::Owner => obj
                .controller_ref()
                .map_or(Vals::Zero, |r| Vals::One(&r.uid)),
            IndexFunc::Field(path) => Vals::many(field_values(obj, path)),
            IndexFunc::Custom(f) => match catch_unwind(AssertUnwindSafe(|| f(obj))) {
                Ok(v) => Vals::many(v),
                Err(_) => {
                    panics.fetch_add(1, Ordering::Relaxed);
                    Vals::Zero
                }
            },
        }
    }
}

/// An object's values under one index.
enum Vals<'a> {
    Zero,
    One(&'a str),
    /// Sorted, no duplicates.
    Many(Vec<String>),
}

impl Vals<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Vals::Zero => true,
            Vals::One(_) => false,
            Vals::Many(vs) => vs.is_empty(),
        }
    }

    fn many(mut v: Vec<String>) -> Vals<'static> {
        v.sort_unstable();
        v.dedup();
        Vals::Many(v)
    }

    fn for_each(&self, mut f: impl FnMut(&str)) {
        match self {
            Vals::Zero => {}
            Vals::One(v) => f(v),
            Vals::Many(vs) => vs.iter().for_each(|v| f(v)),
        }
    }

    /// Whether these are exactly `cached` (which is sorted and deduplicated too).
    /// `cached` holds value ids of `map`.
    fn same_as(&self, cached: &[(u32, u32)], map: &IndexMap) -> bool {
        match self {
            Vals::Zero => cached.is_empty(),
            Vals::One(v) => cached.len() == 1 && map.value(cached[0].1) == *v,
            Vals::Many(vs) => {
                vs.len() == cached.len()
                    && vs.iter().zip(cached).all(|(a, &(_, b))| map.value(b) == a)
            }
        }
    }
}

impl std::str::FromStr for IndexFunc {
    type Err = Error;
    fn from_str(s: &str) -> Result<IndexFunc> {
        IndexFunc::parse(s)
    }
}

fn scalar(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Bool(b) => out.push(b.to_string()),
        _ => {}
    }
}

fn value_at(mut v: &Value, path: &[String]) -> Option<Value> {
    for p in path {
        v = match v {
            Value::Object(m) => m.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v.clone())
}

/// Values at a dotted path of the object's JSON shape.
fn field_values(obj: &Object, path: &[String]) -> Vec<String> {
    let (first, rest) = match path.split_first() {
        Some(x) => x,
        None => return vec![],
    };
    let v: Option<Value> = match first.as_str() {
        "kind" if rest.is_empty() => Some(Value::String(obj.kind.clone())),
        "spec" => value_at(&obj.spec, rest),
        "status" => value_at(&obj.status, rest),
        "metadata" => {
            let m = &obj.metadata;
            match rest {
                [f] => match f.as_str() {
                    "name" => Some(Value::String(m.name.clone())),
                    "namespace" => Some(Value::String(m.namespace.clone())),
                    "uid" => Some(Value::String(m.uid.clone())),
                    "resourceVersion" => Some(Value::String(m.resource_version.clone())),
                    "generation" => Some(Value::from(m.generation)),
                    "generateName" => m.generate_name.clone().map(Value::String),
                    "creationTimestamp" => m.creation_timestamp.clone().map(Value::String),
                    "deletionTimestamp" => m.deletion_timestamp.clone().map(Value::String),
                    _ => None,
                },
                [f, k] if f == "labels" => m.labels.get(k).cloned().map(Value::String),
                [f, k] if f == "annotations" => m.annotations.get(k).cloned().map(Value::String),
                _ => None,
            }
        }
        _ => None,
    };
    let mut out = vec![];
    match v {
        Some(Value::Array(a)) => a.iter().for_each(|x| scalar(x, &mut out)),
        Some(x) => scalar(&x, &mut out),
        None => {}
    }
    out
}

/// A cached key with its object.
pub(crate) type Entry = (Arc<str>, Arc<Object>);

/// One index's slice in one shard: each value present, under a small id, with the slab
/// positions ([`ValSlab`]) of the keys indexed under it. Sets hold positions, not keys:
/// putting a key in a set or taking it out touches no reference count (a locked
/// instruction, which waits for every cache miss before it) and hashes four bytes, not a
/// string.
#[derive(Default)]
struct IndexMap {
    ids: HashMap<Arc<str>, u32>,
    /// By value id. A freed id keeps its stale value until it is reused; it is no longer
    /// in `ids`.
    sets: Vec<ValueSet>,
    free: Vec<u32>,
}

struct ValueSet {
    value: Arc<str>,
    keys: HashSet<u32>,
}

impl IndexMap {
    /// The id of `value`, added if absent, with room for `room` more keys.
    fn id_for(&mut self, value: &str, room: usize) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            self.sets[id as usize].keys.reserve(room);
            return id;
        }
        let value: Arc<str> = value.into();
        let set = ValueSet {
            value: value.clone(),
            keys: HashSet::with_capacity(room),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.sets[id as usize] = set;
                id
            }
            None => {
                self.sets.push(set);
                (self.sets.len() - 1) as u32
            }
        };
        self.ids.insert(value, id);
        id
    }

    /// Puts the key at slab position `pos` under `value`; returns the value's id.
    fn insert(&mut self, value: &str, pos: u32) -> u32 {
        let id = self.id_for(value, 0);
        self.sets[id as usize].keys.insert(pos);
        id
    }

    /// Takes the key at `pos` out of value `id`; a value left without keys goes.
    fn remove(&mut self, id: u32, pos: u32) {
        let set = &mut self.sets[id as usize];
        set.keys.remove(&pos);
        if set.keys.is_empty() {
            self.ids.remove(&*set.value);
            set.keys = HashSet::new();
            self.free.push(id);
        }
    }

    fn value(&self, id: u32) -> &str {
        &self.sets[id as usize].value
    }

    /// Slab positions of the keys under `value`.
    fn keys_of(&self, value: &str) -> Option<&HashSet<u32>> {
        self.ids.get(value).map(|&id| &self.sets[id as usize].keys)
    }
}

/// What one cached key is indexed under: `(index position, value id)`, grouped by index in
/// order, each group sorted by value and deduplicated. An update compares the new object's
/// values against these and never reads the old object. Up to two pairs live inline: most
/// keys are in an index or two under one value each, and a bulk load of a million keys
/// then allocates nothing per key for them.
type KeyVals = SmallVec<[(u32, u32); 2]>;

/// A cached key, its object, and its position in the shard's [`ValSlab`] (which the index
/// sets name it by). 32 bytes: holding the values themselves would triple the bucket, and
/// a random `get` (which never reads them) would pay for the larger table in cache and TLB
/// misses.
struct Slot {
    key: Arc<str>,
    obj: Arc<Object>,
    vals: u32,
}

/// [`Slot::vals`] of a key indexed under nothing.
const NO_VALS: u32 = u32::MAX;

/// The index values of one shard's indexed keys, by position. An update finds a key's old
/// values with one access by the position in its slot; an index set names its keys by
/// position, and the key's hash kept here finds the slot again ([`Items::at`]).
#[derive(Default)]
struct ValSlab {
    entries: Vec<SlabEntry>,
    free: Vec<u32>,
}

struct SlabEntry {
    hash: u64,
    vals: KeyVals,
}

impl ValSlab {
    fn get(&self, at: u32) -> &[(u32, u32)] {
        if at == NO_VALS {
            &[]
        } else {
            &self.entries[at as usize].vals
        }
    }

    fn hash(&self, at: u32) -> u64 {
        self.entries[at as usize].hash
    }

    /// A position for the key whose hash is `hash`, with no values yet.
    fn alloc(&mut self, hash: u64) -> u32 {
        let e = SlabEntry {
            hash,
            vals: KeyVals::new(),
        };
        if let Some(p) = self.free.pop() {
            self.entries[p as usize] = e;
            return p;
        }
        let p = u32::try_from(self.entries.len())
            .ok()
            .filter(|&p| p != NO_VALS)
            .expect("fewer than 2^32 - 1 indexed keys in one shard");
        self.entries.push(e);
        p
    }

    fn set(&mut self, at: u32, v: KeyVals) {
        self.entries[at as usize].vals = v;
    }

    /// Frees position `at`; returns the values it held.
    fn take(&mut self, at: u32) -> KeyVals {
        if at == NO_VALS {
            return KeyVals::new();
        }
        self.free.push(at);
        std::mem::take(&mut self.entries[at as usize].vals)
    }
}

/// Cached objects by key. The caller hashes the key once ([`Indexer::locate`]) and that
/// hash picks both the shard and the bucket, so no operation hashes a key twice.
#[derive(Default)]
pub(crate) struct Items(HashTable<Slot>);

impl Items {
    fn get(&self, hash: u64, key: &str) -> Option<&Arc<Object>> {
        self.0.find(hash, |s| *s.key == *key).map(|s| &s.obj)
    }
    /// The slot at slab position `pos` (whose key hashes to `hash`).
    fn at(&self, hash: u64, pos: u32) -> Option<&Slot> {
        self.0.find(hash, |s| s.vals == pos)
    }
    fn get_mut(&mut self, hash: u64, key: &str) -> Option<&mut Slot> {
        self.0.find_mut(hash, |s| *s.key == *key)
    }
    /// Inserts a key known to be absent.
    fn insert_new(&mut self, hash: u64, s: Slot, hasher: &DefaultHashBuilder) {
        self.0.insert_unique(hash, s, |s| hasher.hash_one(&*s.key));
    }
    fn remove(&mut self, hash: u64, key: &str) -> Option<Slot> {
        match self.0.find_entry(hash, |s| *s.key == *key) {
            Ok(e) => Some(e.remove().0),
            Err(_) => None,
        }
    }
    fn reserve(&mut self, n: usize, hasher: &DefaultHashBuilder) {
        self.0.reserve(n, |s| hasher.hash_one(&*s.key));
    }
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<Object>)> {
        self.0.iter().map(|s| (&s.key, &s.obj))
    }
}

/// One shard of the cache.
#[derive(Default)]
pub(crate) struct Shard {
    pub(crate) items: Items,
    /// Index values of the keys in `items`, changed together with them.
    slab: ValSlab,
    /// Parallel to `idxs`.
    indices: Vec<IndexMap>,
    /// The registered indexes: the same list in every shard, replaced under every shard's
    /// write lock. A writer reads it under the lock it holds anyway, with no atomic
    /// operation of its own (a shared `ArcSwap` load per write cost a tenth of an update).
    idxs: Arc<Vec<Named>>,
}

/// The values of index `i` in an item's `vals`.
fn group(vals: &[(u32, u32)], i: usize) -> &[(u32, u32)] {
    let start = vals
        .iter()
        .position(|(j, _)| *j as usize >= i)
        .unwrap_or(vals.len());
    let len = vals[start..]
        .iter()
        .take_while(|(j, _)| *j as usize == i)
        .count();
    &vals[start..start + len]
}

struct Named {
    name: String,
    func: IndexFunc,
}

/// The indexed cache. Cheap reads, one writer at a time per shard.
pub struct Indexer {
    shards: Box<[RwLock<Shard>]>,
    /// Each shard's item count, written under its write lock after every change, so that
    /// [`Indexer::len`] takes no lock (a slow index function holds a shard's lock while it
    /// runs, and counting must not wait for it).
    lens: Box<[AtomicUsize]>,
    hasher: DefaultHashBuilder,
    index_panics: AtomicU64,
}

impl Default for Indexer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer")
            .field("len", &self.len())
            .field(
                "indexes",
                &self
                    .index_list()
                    .iter()
                    .map(|n| (&n.name, &n.func))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Indexer {
    pub fn new() -> Indexer {
        // One list shared by every shard: a bulk load tells "an index was added since I
        // read the list" from "same list" by pointer, so separate empty lists would send
        // every shard but the first down the one-by-one path.
        let idxs: Arc<Vec<Named>> = Arc::default();
        Indexer {
            shards: (0..INDEXER_SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        idxs: idxs.clone(),
                        ..Shard::default()
                    })
                })
                .collect(),
            lens: (0..INDEXER_SHARDS).map(|_| AtomicUsize::new(0)).collect(),
            hasher: DefaultHashBuilder::default(),
            index_panics: AtomicU64::new(0),
        }
    }

    /// `key`'s shard and hash. The shard comes from bits 40.. of the hash: hashbrown takes
    /// bucket positions from the low bits and its tag from the top seven, so the keys of
    /// one shard still spread over every bucket and tag.
    fn locate(&self, key: &str) -> (usize, u64) {
        let h = self.hasher.hash_one(key);
        (((h >> 40) as usize) % INDEXER_SHARDS, h)
    }

    /// Registers an index and indexes every cached object. `Invalid` ("indexer conflict")
    /// if the name is taken.
    pub fn add_index(&self, name: &str, func: IndexFunc) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid("index name", "must not be empty"));
        }
        let mut guards: Vec<_> = self.shards.iter().map(|s| s.write()).collect();
        let cur = guards[0].idxs.clone();
        if cur.iter().any(|n| n.name == name) {
            return Err(Error::invalid(
                "index name",
                format!("indexer conflict: {name}"),
            ));
        }
        let i = cur.len() as u32;
        for g in guards.iter_mut() {
            let Shard {
                items,
                slab,
                indices,
                ..
            } = &mut **g;
            let mut map = IndexMap::default();
            for slot in items.0.iter_mut() {
                let vals = func.vals(&slot.obj, &self.index_panics);
                if vals.is_empty() {
                    continue;
                }
                if slot.vals == NO_VALS {
                    slot.vals = slab.alloc(self.hasher.hash_one(&*slot.key));
                }
                let pos = slot.vals;
                let mut kv: KeyVals = slab.get(pos).into();
                vals.for_each(|v| kv.push((i, map.insert(v, pos))));
                slab.set(pos, kv);
            }
            indices.push(map);
        }
        let mut next: Vec<Named> = cur
            .iter()
            .map(|n| Named {
                name: n.name.clone(),
                func: n.func.clone(),
            })
            .collect();
        next.push(Named {
            name: name.to_string(),
            func,
        });
        let next = Arc::new(next);
        for g in guards.iter_mut() {
            g.idxs = next.clone();
        }
        Ok(())
    }

    /// The registered indexes (every shard holds the same list).
    fn index_list(&self) -> Arc<Vec<Named>> {
        self.shards[0].read().idxs.clone()
    }

    /// Names of the registered indexes.
    pub fn index_names(&self) -> Vec<String> {
        self.index_list().iter().map(|n| n.name.clone()).collect()
    }

    fn index_pos(&self, name: &str) -> Result<usize> {
        self.index_list()
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| {
                Error::invalid(
                    "index name",
                    format!("Index with name {name} does not exist"),
                )
            })
    }

    /// Inserts or replaces `key`; `hook(old, key)` runs under the shard lock, after the
    /// change. Replacing an existing key allocates nothing for the key, and nothing for
    /// index values that did not change.
    pub(crate) fn upsert_with<R>(
        &self,
        key: &str,
        obj: Arc<Object>,
        hook: impl FnOnce(Option<Arc<Object>>, &Arc<str>) -> R,
    ) -> R {
        let (s, h) = self.locate(key);
        let mut g = self.shards[s].write();
        let (k, old) = self.put(&mut g, h, key, || key.into(), obj);
        if old.is_none() {
            self.lens[s].store(g.items.len(), Ordering::Relaxed);
        }
        hook(old, &k)
    }

    /// Loads a list in bulk (into an empty cache, as the reflector's first list): one lock
    /// and one reservation per shard instead of a lock, a lookup and rehashes per object.
    /// A key already cached is replaced, as [`Indexer::upsert`] would.
    ///
    /// Two passes. The first reads every object once, in the order given (the store lists
    /// in memory order, so these reads are mostly sequential), and notes its shard and its
    /// index values as small interned ids; a large load notes its two halves on two
    /// threads. The second builds each shard from those notes without reading the objects
    /// again; shards are independent, so a large load builds them on two threads too.
    pub(crate) fn load(&self, mut entries: Vec<Entry>) {
        let listed = self.index_list();
        let idxs: &[Named] = &listed;
        let parallel = entries.len() >= LOAD_PARALLEL_MIN;
        // Pass 1: shard and interned values of every entry; a large list in two halves on
        // two threads (reading the objects is a chain of cache misses per object, and two
        // cores wait on twice as many), the second half's ids then renumbered into the
        // first's.
        let Notes {
            ids,
            names,
            mut parts,
        } = if parallel {
            let upper = entries.split_off(entries.len() / 2);
            let (upper, lower) = crate::sync::on_two_threads(
                "floyd-indexer-load",
                || self.notes(idxs, upper),
                || self.notes(idxs, entries),
            );
            lower.append(upper)
        } else {
            self.notes(idxs, entries)
        };
        #[cfg(test)]
        if let Some(hook) = BETWEEN_LOAD_PASSES.with(|h| h.borrow_mut().take()) {
            hook();
        }
        // Pass 2: each shard from the notes.
        let (ids, names) = (&ids, &names);
        let build = |first: usize, parts: Vec<Vec<Note>>| {
            for (s, part) in self.shards[first..].iter().zip(parts) {
                let mut g = s.write();
                let sh = &mut *g;
                if !Arc::ptr_eq(&sh.idxs, &listed) {
                    // An index was added after pass 1 read the list: the notes lack it, so
                    // this shard takes its entries one by one.
                    #[cfg(test)]
                    LOAD_FALLBACKS.with(|c| c.set(c.get() + 1));
                    sh.items.reserve(part.len(), &self.hasher);
                    for ((k, o), h, _, _) in part {
                        self.put(sh, h, &k.clone(), || k, o);
                    }
                    continue;
                }
                sh.items.reserve(part.len(), &self.hasher);
                if !idxs.is_empty() {
                    sh.slab.entries.reserve(part.len());
                }
                // Keys per interned value in this part, so each value's set is sized once.
                let mut counts: Vec<Vec<usize>> = names.iter().map(|n| vec![0; n.len()]).collect();
                for (_, _, start, end) in &part {
                    for &(i, id) in &ids[*start as usize..*end as usize] {
                        counts[i as usize][id as usize] += 1;
                    }
                }
                // This shard's id of each interned value, found or added on first use: no
                // value string is hashed or compared per key.
                let mut local: Vec<Vec<u32>> =
                    names.iter().map(|n| vec![NO_VALS; n.len()]).collect();
                for ((k, o), h, start, end) in part {
                    if sh.items.get(h, &k).is_some() {
                        self.put(sh, h, &k.clone(), || k, o);
                        // The replaced values may have emptied (and freed) an id noted here.
                        local.iter_mut().for_each(|l| l.fill(NO_VALS));
                        continue;
                    }
                    let mut pos = NO_VALS;
                    if start < end {
                        pos = sh.slab.alloc(h);
                        // A plain loop, not `collect`: the collecting iterator went through
                        // the stack to an out-of-line `extend`, whose first load read it back
                        // with wider loads than the stores that wrote it. Such a load cannot
                        // be forwarded from the store buffer and waits for every store still
                        // in flight, the table and slab writes just before among them, each
                        // a cache miss: a third of this pass.
                        let mut kv = KeyVals::new();
                        for &(i, id) in &ids[start as usize..end as usize] {
                            let (i, id) = (i as usize, id as usize);
                            let map = &mut sh.indices[i];
                            let vid = &mut local[i][id];
                            if *vid == NO_VALS {
                                *vid = map.id_for(&names[i][id], counts[i][id]);
                            }
                            map.sets[*vid as usize].keys.insert(pos);
                            kv.push((i as u32, *vid));
                        }
                        sh.slab.set(pos, kv);
                    }
                    let slot = Slot {
                        key: k,
                        obj: o,
                        vals: pos,
                    };
                    sh.items.insert_new(h, slot, &self.hasher);
                }
            }
        };
        if parallel {
            let upper = parts.split_off(INDEXER_SHARDS / 2);
            crate::sync::on_two_threads(
                "floyd-indexer-load",
                || build(INDEXER_SHARDS / 2, upper),
                || build(0, parts),
            );
        } else {
            build(0, parts);
        }
        for (s, len) in self.shards.iter().zip(&self.lens) {
            len.store(s.read().items.len(), Ordering::Relaxed);
        }
    }

    /// Pass 1 of [`Indexer::load`] over `entries`: each one's shard and hash, and its
    /// index values as ids interned per index.
    fn notes(&self, idxs: &[Named], entries: Vec<Entry>) -> Notes {
        let mut interners: Vec<HashMap<Box<str>, u32>> =
            idxs.iter().map(|_| HashMap::new()).collect();
        let mut names: Vec<Vec<Box<str>>> = idxs.iter().map(|_| vec![]).collect();
        let mut ids: Vec<(u32, u32)> = Vec::with_capacity(entries.len() * idxs.len());
        let per = entries.len() / INDEXER_SHARDS + 1;
        let mut parts: Vec<Vec<Note>> = (0..INDEXER_SHARDS)
            .map(|_| Vec::with_capacity(per + per / 8))
            .collect();
        let mut entries = entries.into_iter();
        while let Some(e) = entries.next() {
            // The key's bytes (hashed below) and the object's fields the index functions
            // read first, a few entries ahead: each is a cache miss of its own.
            if let Some((k, o)) = entries.as_slice().get(NOTES_PREFETCH_AHEAD) {
                crate::log::raw::prefetch_for_write(Arc::as_ptr(k) as *const u8);
                crate::log::raw::prefetch_for_write(&o.metadata.labels);
            }
            let start = ids.len() as u32;
            for (i, n) in idxs.iter().enumerate() {
                n.func.vals(&e.1, &self.index_panics).for_each(|v| {
                    let id = match interners[i].get(v) {
                        Some(id) => *id,
                        None => {
                            let id = names[i].len() as u32;
                            names[i].push(v.into());
                            interners[i].insert(v.into(), id);
                            id
                        }
                    };
                    ids.push((i as u32, id));
                });
            }
            let end = ids.len() as u32;
            let (s, h) = self.locate(&e.0);
            parts[s].push((e, h, start, end));
        }
        Notes { ids, names, parts }
    }

    /// Inserts or replaces `key` in a locked shard; returns the cached key and the object
    /// it replaced.
    fn put(
        &self,
        sh: &mut Shard,
        hash: u64,
        key: &str,
        new_key: impl FnOnce() -> Arc<str>,
        obj: Arc<Object>,
    ) -> (Arc<str>, Option<Arc<Object>>) {
        let Shard {
            items,
            slab,
            indices,
            idxs,
        } = sh;
        if let Some(slot) = items.get_mut(hash, key) {
            // Fetch the replaced object's reference count now: the caller drops it soon,
            // and the line (cold: the object was cached long ago) then arrives while the
            // index work below runs instead of after it. A prefetch, not a load: a load
            // that misses stalls the core once its buffers fill behind it, a prefetch
            // does not (1 M events into a bare `Indexer`: 694 -> 635 ns per event, medians
            // of 8 alternating runs). The count sits two words before the object in the
            // `Arc`'s allocation; the address is only a hint, never dereferenced.
            crate::log::raw::prefetch_for_write(
                (Arc::as_ptr(&slot.obj) as *const u8).wrapping_sub(2 * size_of::<usize>()),
            );
            if !idxs.is_empty() {
                slot.vals = self.reindex(indices, slab, idxs, hash, slot.vals, &obj);
            }
            return (
                slot.key.clone(),
                Some(std::mem::replace(&mut slot.obj, obj)),
            );
        }
        let k = new_key();
        let vals = if idxs.is_empty() {
            NO_VALS
        } else {
            self.reindex(indices, slab, idxs, hash, NO_VALS, &obj)
        };
        let slot = Slot {
            key: k.clone(),
            obj,
            vals,
        };
        items.insert_new(hash, slot, &self.hasher);
        (k, None)
    }

    /// Moves the key at slab position `pos` (`NO_VALS`: indexed under nothing so far),
    /// whose hash is `hash`, from its index values to `obj`'s; returns its position now.
    /// When no index's values changed, nothing is touched and nothing allocated.
    fn reindex(
        &self,
        indices: &mut [IndexMap],
        slab: &mut ValSlab,
        idxs: &[Named],
        hash: u64,
        mut pos: u32,
        obj: &Object,
    ) -> u32 {
        let old: KeyVals = slab.get(pos).into();
        let mut out: Option<KeyVals> = None;
        for (i, n) in idxs.iter().enumerate() {
            let vals = n.func.vals(obj, &self.index_panics);
            let prev = group(&old, i);
            let map = &mut indices[i];
            if vals.same_as(prev, map) {
                if let Some(out) = &mut out {
                    out.extend_from_slice(prev);
                }
                continue;
            }
            let out = out.get_or_insert_with(|| {
                // The first index that changed: keep the groups before it as they were.
                old.iter()
                    .filter(|(j, _)| (*j as usize) < i)
                    .copied()
                    .collect()
            });
            if pos == NO_VALS {
                // Unchanged-but-different means new values where there were none.
                pos = slab.alloc(hash);
            }
            for &(_, id) in prev {
                map.remove(id, pos);
            }
            vals.for_each(|v| out.push((i as u32, map.insert(v, pos))));
        }
        match out {
            None => pos,
            Some(out) if out.is_empty() => {
                slab.take(pos);
                NO_VALS
            }
            Some(out) => {
                slab.set(pos, out);
                pos
            }
        }
    }

    /// Removes `key`; `hook(old)` runs under the shard lock when something was removed.
    /// Needs no index function: the item carries the values it is indexed under.
    pub(crate) fn remove_with<R>(
        &self,
        key: &str,
        hook: impl FnOnce(Arc<Object>, &Arc<str>) -> R,
    ) -> Option<R> {
        let (s, h) = self.locate(key);
        let mut g = self.shards[s].write();
        let Shard {
            items,
            slab,
            indices,
            ..
        } = &mut *g;
        let Slot {
            key: k,
            obj,
            vals: pos,
        } = items.remove(h, key)?;
        self.lens[s].store(items.len(), Ordering::Relaxed);
        // As in `put`: start loading the count the caller's drop will change.
        std::hint::black_box(Arc::strong_count(&obj));
        for &(i, id) in slab.take(pos).iter() {
            indices[i as usize].remove(id, pos);
        }
        Some(hook(obj, &k))
    }

    /// Inserts or replaces an object under its key; returns the previous one.
    pub fn upsert(&self, obj: Arc<Object>) -> Option<Arc<Object>> {
        with_key_owned(obj, |key, obj| self.upsert_with(key, obj, |old, _| old))
    }

    /// Removes an object's key; returns the removed object.
    pub fn remove_object(&self, obj: &Object) -> Option<Arc<Object>> {
        with_key(obj, |key| self.remove(key))
    }

    /// Removes a key; returns the removed object.
    pub fn remove(&self, key: &str) -> Option<Arc<Object>> {
        self.remove_with(key, |o, _| o)
    }

    /// The object at `key` (`"namespace/name"`).
    pub fn get(&self, key: &str) -> Option<Arc<Object>> {
        let (s, h) = self.locate(key);
        self.shards[s].read().items.get(h, key).cloned()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.lens.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every cached object matching `selector` (all with `None`), in no particular order.
    pub fn list(&self, selector: Option<&LabelSelector>) -> Vec<Arc<Object>> {
        let mut out = vec![];
        for s in self.shards.iter() {
            let g = s.read();
            out.extend(
                g.items
                    .iter()
                    .map(|(_, o)| o)
                    .filter(|o| selector.is_none_or(|sel| sel.matches(&o.metadata.labels)))
                    .cloned(),
            );
        }
        out
    }

    /// Every cached key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for s in self.shards.iter() {
            out.extend(s.read().items.iter().map(|(k, _)| k.to_string()));
        }
        out.sort();
        out
    }

    /// Objects indexed under `value` by index `name` (`Invalid` for an unknown index).
    pub fn by_index(&self, name: &str, value: &str) -> Result<Vec<Arc<Object>>> {
        let i = self.index_pos(name)?;
        let mut out = vec![];
        for s in self.shards.iter() {
            let g = s.read();
            if let Some(keys) = g.indices.get(i).and_then(|m| m.keys_of(value)) {
                out.extend(
                    keys.iter()
                        .filter_map(|&p| g.items.at(g.slab.hash(p), p).map(|s| s.obj.clone())),
                );
            }
        }
        Ok(out)
    }

    /// Keys indexed under `value` by index `name`, sorted.
    pub fn index_keys(&self, name: &str, value: &str) -> Result<Vec<String>> {
        let i = self.index_pos(name)?;
        let mut out = vec![];
        for s in self.shards.iter() {
            let g = s.read();
            if let Some(keys) = g.indices.get(i).and_then(|m| m.keys_of(value)) {
                out.extend(
                    keys.iter()
                        .filter_map(|&p| g.items.at(g.slab.hash(p), p).map(|s| s.key.to_string())),
                );
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every value currently present in index `name`, sorted.
    pub fn list_index_values(&self, name: &str) -> Result<Vec<String>> {
        let i = self.index_pos(name)?;
        let mut all: HashSet<String> = HashSet::new();
        for s in self.shards.iter() {
            let g = s.read();
            if let Some(m) = g.indices.get(i) {
                all.extend(m.ids.keys().map(|v| v.to_string()));
            }
        }
        let mut out: Vec<String> = all.into_iter().collect();
        out.sort();
        Ok(out)
    }

    /// Runs `f` with every shard read-locked at once: one consistent cut of the cache. The
    /// writer waits for the whole call, so keep `f` short.
    pub(crate) fn read_all<R>(&self, f: impl FnOnce(&[RwLockReadGuard<'_, Shard>]) -> R) -> R {
        let guards: Vec<_> = self.shards.iter().map(|s| s.read()).collect();
        f(&guards)
    }

    /// Every (key, object) pair at one consistent cut, plus what `at_cut` returns there.
    pub(crate) fn snapshot_with<R>(&self, at_cut: impl FnOnce() -> R) -> (Vec<Entry>, R) {
        self.read_all(|gs| {
            let n = gs.iter().map(|g| g.items.len()).sum();
            let mut v = Vec::with_capacity(n);
            for g in gs {
                v.extend(g.items.iter().map(|(k, o)| (k.clone(), o.clone())));
            }
            (v, at_cut())
        })
    }

    /// Closure panics caught while computing index values.
    pub fn index_panics(&self) -> u64 {
        self.index_panics.load(Ordering::Relaxed)
    }

    /// Reserves room for `n` more objects, spread over the shards (bulk initial lists).
    pub fn reserve(&self, n: usize) {
        let per = n / INDEXER_SHARDS + 1;
        for s in self.shards.iter() {
            s.write().items.reserve(per, &self.hasher);
        }
    }
}

thread_local! {
    static KEY_BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs `f` with `obj`'s key (`"namespace/name"`, or `"name"`) built in a reused buffer.
pub(crate) fn with_key<R>(obj: &Object, f: impl FnOnce(&str) -> R) -> R {
    KEY_BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut s) => {
            build_key(&mut s, obj);
            f(&s)
        }
        Err(_) => f(&obj.key()),
    })
}

/// [`with_key`] handing the object on to `f` (no reference count traffic for the borrow).
pub(crate) fn with_key_owned<R>(obj: Arc<Object>, f: impl FnOnce(&str, Arc<Object>) -> R) -> R {
    KEY_BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut s) => {
            build_key(&mut s, &obj);
            f(&s, obj)
        }
        Err(_) => f(&obj.key(), obj),
    })
}

#[cfg(test)]
thread_local! {
    /// Test hook: runs once between the two passes of [`Indexer::load`].
    static BETWEEN_LOAD_PASSES: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
    /// Test counter: shards a bulk load built one entry at a time (on any thread).
    static LOAD_FALLBACKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn build_key(s: &mut String, obj: &Object) {
    s.clear();
    if !obj.metadata.namespace.is_empty() {
        s.push_str(&obj.metadata.namespace);
        s.push('/');
    }
    s.push_str(&obj.metadata.name);
}

/// One entry of a bulk load after pass 1: the entry, its key's hash, and the range of its
/// `(index, value id)` pairs in [`Notes::ids`].
type Note = (Entry, u64, u32, u32);

/// What pass 1 of a bulk load learnt: per shard, its entries in the order given.
struct Notes {
    ids: Vec<(u32, u32)>,
    /// Per index, the value of each id.
    names: Vec<Vec<Box<str>>>,
    parts: Vec<Vec<Note>>,
}

impl Notes {
    /// These notes followed by `later`'s (whose ids are renumbered into these).
    fn append(mut self, later: Notes) -> Notes {
        let renumber: Vec<Vec<u32>> = later
            .names
            .into_iter()
            .zip(&mut self.names)
            .map(|(theirs, ours)| {
                let mut known: HashMap<&str, u32> = HashMap::with_capacity(ours.len());
                for (id, n) in ours.iter().enumerate() {
                    known.insert(n, id as u32);
                }
                let mut fresh: Vec<Box<str>> = vec![];
                let first_fresh = ours.len();
                let map = theirs
                    .into_iter()
                    .map(|n| match known.get(&*n) {
                        Some(&id) => id,
                        None => {
                            fresh.push(n);
                            (first_fresh + fresh.len() - 1) as u32
                        }
                    })
                    .collect();
                drop(known);
                ours.extend(fresh);
                map
            })
            .collect();
        let shift = self.ids.len() as u32;
        self.ids.extend(
            later
                .ids
                .iter()
                .map(|&(i, id)| (i, renumber[i as usize][id as usize])),
        );
        for (ours, theirs) in self.parts.iter_mut().zip(later.parts) {
            ours.extend(
                theirs
                    .into_iter()
                    .map(|(e, h, start, end)| (e, h, start + shift, end + shift)),
            );
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn o(name: &str, app: &str, owner: Option<&str>) -> Arc<Object> {
        let mut v = json!({"kind": "Instance",
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": app}},
            "spec": {"node": "n1", "ports": [80, 443]}, "status": {"phase": "Running"}});
        if let Some(u) = owner {
            v["metadata"]["ownerReferences"] =
                json!([{"kind": "ReplicaSet", "name": "rs", "uid": u, "controller": true}]);
        }
        Arc::new(Object::from_json(&v).unwrap())
    }

    /// Counting takes no shard lock: it answers while an index function (user code, maybe
    /// slow) runs under one, and it follows inserts, replacements, removals and bulk loads.
    #[test]
    fn len_does_not_wait_for_an_index_function() {
        let ix = Arc::new(Indexer::new());
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let gate = parking_lot::Mutex::new((Some(entered_tx), released));
        ix.add_index(
            "slow",
            IndexFunc::custom(move |o: &Object| {
                if o.metadata.name == "slow" {
                    let g = gate.lock();
                    if let Some(tx) = &g.0 {
                        let _ = tx.send(());
                        let _ = g.1.recv();
                    }
                }
                vec![o.metadata.name.clone()]
            }),
        )
        .unwrap();
        ix.upsert(o("a", "web", None));
        let writer = {
            let ix = ix.clone();
            std::thread::spawn(move || ix.upsert(o("slow", "web", None)))
        };
        entered.recv().unwrap(); // the index function runs, its shard write-locked
        let (tx, rx) = std::sync::mpsc::channel();
        let counter = {
            let ix = ix.clone();
            std::thread::spawn(move || tx.send(ix.len()).unwrap())
        };
        let n = rx.recv_timeout(std::time::Duration::from_secs(20));
        release.send(()).unwrap();
        writer.join().unwrap();
        counter.join().unwrap();
        assert_eq!(
            n,
            Ok(1),
            "len waited for the index function (or miscounted)"
        );
        assert_eq!(ix.len(), 2);
        ix.upsert(o("a", "db", None));
        assert_eq!(ix.len(), 2, "a replacement is not a new item");
        ix.remove("ns/a");
        ix.remove("ns/missing");
        assert_eq!(ix.len(), 1);
        let fresh = Indexer::new();
        fresh.load(
            (0..100)
                .map(|i| {
                    let obj = o(&format!("o{i}"), "web", None);
                    (Arc::from(format!("ns/o{i}").as_str()), obj)
                })
                .collect(),
        );
        assert_eq!(fresh.len(), 100);
    }

    #[test]
    fn index_specs_parse_and_reject() {
        assert!(matches!(
            IndexFunc::parse("namespace").unwrap(),
            IndexFunc::Namespace
        ));
        assert!(matches!(
            IndexFunc::parse("owner").unwrap(),
            IndexFunc::Owner
        ));
        assert!(
            matches!(IndexFunc::parse("label:app").unwrap(), IndexFunc::Label(k) if k == "app")
        );
        assert!(
            matches!(IndexFunc::parse("field:spec.node").unwrap(), IndexFunc::Field(p) if p == ["spec", "node"])
        );
        for bad in ["", "label:", "field:", "field:a..b", "nope"] {
            assert_eq!(
                IndexFunc::parse(bad).unwrap_err().kind(),
                crate::ErrorKind::Invalid
            );
        }
    }

    #[test]
    fn builtin_index_functions_compute_values() {
        let p = AtomicU64::new(0);
        let a = o("a", "web", Some("u1"));
        let vals = |s: &str| IndexFunc::parse(s).unwrap().values(&a, &p);
        assert_eq!(vals("namespace"), ["ns"]);
        assert_eq!(vals("label:app"), ["web"]);
        assert!(vals("label:tier").is_empty());
        assert_eq!(vals("owner"), ["u1"]);
        assert!(IndexFunc::Owner.values(&o("b", "web", None), &p).is_empty());
        assert_eq!(vals("field:spec.node"), ["n1"]);
        assert_eq!(vals("field:spec.ports"), ["443", "80"], "a set, sorted");
        assert_eq!(vals("field:spec.ports.1"), ["443"]);
        assert_eq!(vals("field:status.phase"), ["Running"]);
        assert_eq!(vals("field:metadata.name"), ["a"]);
        assert_eq!(vals("field:metadata.labels.app"), ["web"]);
        assert!(vals("field:spec.missing.deeper").is_empty());
        assert!(vals("field:spec").is_empty(), "objects index nothing");
    }

    #[test]
    fn indexes_follow_updates_and_drop_empty_values() {
        let ix = Indexer::new();
        ix.add_index("app", IndexFunc::parse("label:app").unwrap())
            .unwrap();
        ix.upsert(o("a", "web", None));
        ix.upsert(o("b", "web", None));
        assert_eq!(ix.index_keys("app", "web").unwrap(), ["ns/a", "ns/b"]);
        ix.upsert(o("a", "db", None));
        assert_eq!(ix.index_keys("app", "web").unwrap(), ["ns/b"]);
        assert_eq!(ix.list_index_values("app").unwrap(), ["db", "web"]);
        ix.remove("ns/b");
        assert_eq!(ix.list_index_values("app").unwrap(), ["db"]);
        assert!(ix.by_index("app", "web").unwrap().is_empty());
        assert_eq!(ix.by_index("app", "db").unwrap()[0].metadata.name, "a");
        let e = ix.by_index("nope", "x").unwrap_err();
        assert!(
            e.to_string()
                .contains("Index with name nope does not exist")
        );
    }

    #[test]
    fn adding_an_index_indexes_existing_objects_and_conflicts_are_errors() {
        let ix = Indexer::new();
        ix.upsert(o("a", "web", Some("u1")));
        ix.add_index("owner", IndexFunc::Owner).unwrap();
        assert_eq!(ix.index_keys("owner", "u1").unwrap(), ["ns/a"]);
        let e = ix.add_index("owner", IndexFunc::Namespace).unwrap_err();
        assert!(e.to_string().contains("indexer conflict"));
    }

    #[test]
    fn multi_valued_and_panicking_custom_indexes() {
        let ix = Indexer::new();
        ix.add_index(
            "chars",
            IndexFunc::custom(|o| o.metadata.name.chars().map(|c| c.to_string()).collect()),
        )
        .unwrap();
        ix.add_index(
            "boom",
            IndexFunc::custom(|o| {
                if o.metadata.name == "bad" {
                    panic!("index fn bug")
                }
                vec!["ok".into()]
            }),
        )
        .unwrap();
        ix.upsert(o("ab", "x", None));
        ix.upsert(o("bad", "x", None));
        assert_eq!(ix.index_keys("chars", "b").unwrap(), ["ns/ab", "ns/bad"]);
        assert_eq!(ix.index_keys("boom", "ok").unwrap(), ["ns/ab"]);
        assert_eq!(ix.index_panics(), 1);
    }

    /// Everything the indexes say, as sorted (index, value, key) triples.
    fn index_state(ix: &Indexer) -> Vec<(String, String, String)> {
        let mut out = vec![];
        for name in ix.index_names() {
            for v in ix.list_index_values(&name).unwrap() {
                for k in ix.index_keys(&name, &v).unwrap() {
                    out.push((name.clone(), v.clone(), k));
                }
            }
        }
        out
    }

    fn with_indexes(ix: &Indexer) {
        ix.add_index("app", IndexFunc::parse("label:app").unwrap())
            .unwrap();
        ix.add_index("owner", IndexFunc::Owner).unwrap();
        ix.add_index(
            "chars",
            IndexFunc::custom(|o| o.metadata.name.chars().map(|c| c.to_string()).collect()),
        )
        .unwrap();
    }

    /// The bulk load, the cached per-item values and the address-keyed sets against a
    /// model recomputed from scratch: random loads, relabels, owner changes, deletes and a
    /// late `add_index`, on one and on two threads (a load above `LOAD_PARALLEL_MIN`).
    #[test]
    fn bulk_load_over_cached_and_repeated_keys_matches_upserts() {
        // A load into a non-empty cache, repeating keys inside the list with other labels:
        // the staged index sets are merged before each replacement, so every key ends up
        // under exactly the values of its last entry.
        let apps = ["web", "db", "api"];
        let mut entries: Vec<Entry> = vec![];
        for i in 0..200u64 {
            let ob = o(&format!("o{i}"), apps[(i % 3) as usize], None);
            entries.push((ob.key().into(), ob));
            if i % 7 == 0 {
                let again = o(
                    &format!("o{}", i / 2),
                    apps[((i + 1) % 3) as usize],
                    Some("u9"),
                );
                entries.push((again.key().into(), again));
            }
        }
        let bulk = Indexer::new();
        let model = Indexer::new();
        for ix in [&bulk, &model] {
            with_indexes(ix);
            for i in (0..300u64).step_by(5) {
                ix.upsert(o(&format!("o{i}"), "old", Some("u0")));
            }
        }
        bulk.load(entries.clone());
        for (_, ob) in entries {
            model.upsert(ob);
        }
        assert_eq!(bulk.keys(), model.keys());
        assert_eq!(index_state(&bulk), index_state(&model));
        assert!(bulk.index_keys("app", "old").unwrap().len() > 10);
    }

    #[test]
    fn an_index_added_during_a_bulk_load_indexes_the_loaded_keys() {
        // `add_index` between the passes: the first pass's notes lack the new index, so
        // the second must notice and index those keys under it all the same.
        let ix = Arc::new(Indexer::new());
        ix.add_index("app", IndexFunc::parse("label:app").unwrap())
            .unwrap();
        let late = ix.clone();
        BETWEEN_LOAD_PASSES.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                late.add_index("owner", IndexFunc::Owner).unwrap();
            }))
        });
        let entries: Vec<Entry> = (0..50u64)
            .map(|i| {
                let ob = o(&format!("o{i}"), "web", Some("u1"));
                (ob.key().into(), ob)
            })
            .collect();
        LOAD_FALLBACKS.with(|c| c.set(0));
        ix.load(entries);
        assert!(
            BETWEEN_LOAD_PASSES.with(|h| h.borrow().is_none()),
            "hook ran"
        );
        assert!(
            LOAD_FALLBACKS.with(|c| c.get()) > 0,
            "the late index was noticed"
        );
        assert_eq!(ix.index_keys("owner", "u1").unwrap().len(), 50);
        assert_eq!(ix.index_keys("app", "web").unwrap().len(), 50);
        let model = Indexer::new();
        model
            .add_index("app", IndexFunc::parse("label:app").unwrap())
            .unwrap();
        model.add_index("owner", IndexFunc::Owner).unwrap();
        for k in ix.keys() {
            model.upsert(ix.get(&k).unwrap());
        }
        assert_eq!(index_state(&ix), index_state(&model));
    }

    #[test]
    fn a_bulk_load_builds_every_shard_in_bulk_with_or_without_indexes() {
        // Without a concurrent `add_index`, no shard may take the one-by-one path (which
        // grows each table step by step): a fresh indexer's shards share one index list.
        for with_index in [false, true] {
            let ix = Indexer::new();
            if with_index {
                ix.add_index("app", IndexFunc::parse("label:app").unwrap())
                    .unwrap();
            }
            let entries: Vec<Entry> = (0..2000u64)
                .map(|i| {
                    let ob = o(&format!("o{i}"), "web", None);
                    (ob.key().into(), ob)
                })
                .collect();
            LOAD_FALLBACKS.with(|c| c.set(0));
            ix.load(entries);
            assert_eq!(LOAD_FALLBACKS.with(|c| c.get()), 0, "index: {with_index}");
            assert_eq!(ix.len(), 2000);
        }
    }

    #[test]
    fn a_bulk_load_with_repeated_keys_matches_upserts_in_order() {
        // A key listed twice is replaced in place; if that empties a value the load had
        // already used in the shard, later keys with that value must not land in the freed
        // set.
        let mut entries: Vec<Entry> = vec![];
        for i in 0..300u64 {
            let app = format!("x{}", i % 7);
            for (name, app) in [(format!("k{i}"), app.as_str()), (format!("k{i}"), "y")] {
                let ob = o(&name, app, None);
                entries.push((ob.key().into(), ob));
            }
            let ob = o(&format!("m{i}"), &app, None);
            entries.push((ob.key().into(), ob));
        }
        let bulk = Indexer::new();
        with_indexes(&bulk);
        bulk.load(entries.clone());
        let model = Indexer::new();
        with_indexes(&model);
        for (_, ob) in entries {
            model.upsert(ob);
        }
        assert_eq!(bulk.keys(), model.keys());
        assert_eq!(index_state(&bulk), index_state(&model));
        assert_eq!(bulk.index_keys("app", "y").unwrap().len(), 300);
        assert_eq!(bulk.by_index("app", "x0").unwrap().len(), 300 / 7 + 1);
    }

    #[test]
    fn bulk_load_and_incremental_updates_match_a_model() {
        for (seed, n) in [(1u64, 300usize), (2, 500), (3, LOAD_PARALLEL_MIN + 10)] {
            let mut r = seed;
            let mut rnd = |m: u64| {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (r >> 33) % m
            };
            let apps = ["web", "db", "api", "cache", "queue"];
            let mk = |i: u64, app: &str, owner: Option<&str>| o(&format!("o{i}"), app, owner);
            // The second half has values of its own and meets a shared one first (a large
            // load notes each half on its own thread and renumbers the second's values).
            let app_of = |i: u64| apps[(i % 3 + if i >= n as u64 / 2 { 2 } else { 0 }) as usize];
            let entries: Vec<Entry> = (0..n as u64)
                .map(|i| {
                    let ob = mk(i, app_of(i), (i % 2 == 0).then_some("u1"));
                    (ob.key().into(), ob)
                })
                .collect();
            let bulk = Indexer::new();
            with_indexes(&bulk);
            bulk.load(entries.clone());
            let model = Indexer::new();
            for (_, ob) in &entries {
                model.upsert(ob.clone());
            }
            with_indexes(&model);
            assert_eq!(bulk.keys(), model.keys(), "seed {seed}");
            assert_eq!(index_state(&bulk), index_state(&model), "seed {seed}");
            for step in 0..400 {
                let i = rnd(n as u64 + 20);
                let ob = mk(
                    i,
                    apps[rnd(5) as usize],
                    [None, Some("u1"), Some("u2")][rnd(3) as usize],
                );
                if rnd(5) == 0 {
                    assert_eq!(
                        bulk.remove_object(&ob).is_some(),
                        model.remove_object(&ob).is_some()
                    );
                } else {
                    bulk.upsert(ob.clone());
                    model.upsert(ob);
                }
                if step == 200 {
                    for ix in [&bulk, &model] {
                        ix.add_index("ns", IndexFunc::Namespace).unwrap();
                    }
                }
            }
            // The model rebuilt from its objects: what the indexes must say.
            let fresh = Indexer::new();
            for ob in model.list(None) {
                fresh.upsert(ob);
            }
            with_indexes(&fresh);
            fresh.add_index("ns", IndexFunc::Namespace).unwrap();
            assert_eq!(index_state(&bulk), index_state(&fresh), "seed {seed}");
            assert_eq!(index_state(&model), index_state(&fresh), "seed {seed}");
            assert_eq!(bulk.len(), fresh.len());
        }
    }

    #[test]
    fn an_unchanged_update_keeps_its_index_entries_and_a_relabel_moves_them() {
        let ix = Indexer::new();
        ix.add_index("app", IndexFunc::parse("label:app").unwrap())
            .unwrap();
        ix.upsert(o("a", "web", None));
        let mut same = (*o("a", "web", None)).clone();
        same.metadata.resource_version = "9".into();
        ix.upsert(Arc::new(same));
        assert_eq!(ix.index_keys("app", "web").unwrap(), ["ns/a"]);
        assert_eq!(ix.get("ns/a").unwrap().metadata.resource_version, "9");
        ix.upsert(o("a", "db", None));
        assert!(ix.index_keys("app", "web").unwrap().is_empty());
        assert_eq!(ix.list_index_values("app").unwrap(), ["db"]);
        // A key removed and re-added gets a new allocation; the sets must not keep the
        // old one.
        ix.remove("ns/a");
        ix.upsert(o("a", "db", None));
        assert_eq!(ix.index_keys("app", "db").unwrap(), ["ns/a"]);
        assert_eq!(ix.by_index("app", "db").unwrap().len(), 1);
    }
}
