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

use arc_swap::ArcSwap;
use hashbrown::{DefaultHashBuilder, HashMap, HashSet};
use parking_lot::{RwLock, RwLockReadGuard};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::{LabelSelector, Object};
use crate::sync::{AtomicU64, Ordering};

/// Shards of the cache: the writer and a scanning reader meet on one shard at a time.
pub const INDEXER_SHARDS: usize = 16;

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

    /// For built-ins, whether `old` and `new` index under the same values, answered without
    /// allocating; `None` when the values must be computed.
    fn unchanged(&self, old: &Object, new: &Object) -> Option<bool> {
        match self {
            IndexFunc::Namespace => Some(old.metadata.namespace == new.metadata.namespace),
            IndexFunc::Label(k) => Some(old.metadata.labels.get(k) == new.metadata.labels.get(k)),
            IndexFunc::Owner => {
                Some(old.controller_ref().map(|r| &r.uid) == new.controller_ref().map(|r| &r.uid))
            }
            IndexFunc::Field(_) | IndexFunc::Custom(_) => None,
        }
    }

    /// The values `obj` is indexed under. `panics` counts caught closure panics.
    fn values(&self, obj: &Object, panics: &AtomicU64) -> Vec<String> {
        match self {
            IndexFunc::Namespace => vec![obj.metadata.namespace.clone()],
            IndexFunc::Label(k) => obj.metadata.labels.get(k).cloned().into_iter().collect(),
            IndexFunc::Owner => obj
                .controller_ref()
                .map(|r| r.uid.clone())
                .into_iter()
                .collect(),
            IndexFunc::Field(path) => field_values(obj, path),
            IndexFunc::Custom(f) => match catch_unwind(AssertUnwindSafe(|| f(obj))) {
                Ok(v) => v,
                Err(_) => {
                    panics.fetch_add(1, Ordering::Relaxed);
                    vec![]
                }
            },
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

/// One index's slice in one shard: value → keys.
type IndexMap = HashMap<String, HashSet<Arc<str>>>;

/// One shard of the cache.
#[derive(Default)]
pub(crate) struct Shard {
    pub(crate) items: HashMap<Arc<str>, Arc<Object>>,
    /// Parallel to [`Indexer`]'s index list.
    indices: Vec<IndexMap>,
}

struct Named {
    name: String,
    func: IndexFunc,
}

/// The indexed cache. Cheap reads, one writer at a time per shard.
pub struct Indexer {
    shards: Box<[RwLock<Shard>]>,
    /// The registered indexes; changed only while every shard is write-locked.
    indexes: ArcSwap<Vec<Named>>,
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
                    .indexes
                    .load()
                    .iter()
                    .map(|n| (&n.name, &n.func))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Whether two index value lists are the same set (the common one-value case is cheap).
fn same_values(a: &[String], b: &[String]) -> bool {
    if a.len() == 1 && b.len() == 1 {
        return a[0] == b[0];
    }
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a == b
}

impl Indexer {
    pub fn new() -> Indexer {
        Indexer {
            shards: (0..INDEXER_SHARDS)
                .map(|_| RwLock::new(Shard::default()))
                .collect(),
            indexes: ArcSwap::from_pointee(vec![]),
            hasher: DefaultHashBuilder::default(),
            index_panics: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % INDEXER_SHARDS
    }

    /// Registers an index and indexes every cached object. `Invalid` ("indexer conflict")
    /// if the name is taken.
    pub fn add_index(&self, name: &str, func: IndexFunc) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid("index name", "must not be empty"));
        }
        let mut guards: Vec<_> = self.shards.iter().map(|s| s.write()).collect();
        let cur = self.indexes.load_full();
        if cur.iter().any(|n| n.name == name) {
            return Err(Error::invalid(
                "index name",
                format!("indexer conflict: {name}"),
            ));
        }
        for g in guards.iter_mut() {
            let mut idx = IndexMap::new();
            for (k, o) in &g.items {
                for v in func.values(o, &self.index_panics) {
                    idx.entry(v).or_default().insert(k.clone());
                }
            }
            g.indices.push(idx);
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
        self.indexes.store(Arc::new(next));
        Ok(())
    }

    /// Names of the registered indexes.
    pub fn index_names(&self) -> Vec<String> {
        self.indexes.load().iter().map(|n| n.name.clone()).collect()
    }

    fn index_pos(&self, name: &str) -> Result<usize> {
        self.indexes
            .load()
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
    /// change. Replacing an existing key allocates nothing for the key.
    pub(crate) fn upsert_with<R>(
        &self,
        key: &str,
        obj: Arc<Object>,
        hook: impl FnOnce(Option<&Arc<Object>>, &Arc<str>) -> R,
    ) -> R {
        let idxs = self.indexes.load();
        let mut g = self.shards[self.shard_of(key)].write();
        let sh = &mut *g;
        let (key, old) = match sh.items.get_key_value_mut(key) {
            Some((k, v)) => (k.clone(), Some(std::mem::replace(v, obj.clone()))),
            None => {
                let k: Arc<str> = key.into();
                sh.items.insert(k.clone(), obj.clone());
                (k, None)
            }
        };
        for (i, n) in idxs.iter().enumerate() {
            if let Some(o) = &old
                && n.func.unchanged(o, &obj) == Some(true)
            {
                continue;
            }
            let new_v = n.func.values(&obj, &self.index_panics);
            let old_v = old
                .as_ref()
                .map(|o| n.func.values(o, &self.index_panics))
                .unwrap_or_default();
            if old.is_some() && same_values(&old_v, &new_v) {
                continue;
            }
            let map = &mut sh.indices[i];
            for v in &old_v {
                remove_from(map, v, &key);
            }
            for v in new_v {
                map.entry(v).or_default().insert(key.clone());
            }
        }
        hook(old.as_ref(), &key)
    }

    /// Removes `key`; `hook(old)` runs under the shard lock when something was removed.
    pub(crate) fn remove_with<R>(
        &self,
        key: &str,
        hook: impl FnOnce(&Arc<Object>, &Arc<str>) -> R,
    ) -> Option<R> {
        let idxs = self.indexes.load();
        let mut g = self.shards[self.shard_of(key)].write();
        let sh = &mut *g;
        let (k, old) = sh.items.remove_entry(key)?;
        for (i, n) in idxs.iter().enumerate() {
            for v in n.func.values(&old, &self.index_panics) {
                remove_from(&mut sh.indices[i], &v, &k);
            }
        }
        Some(hook(&old, &k))
    }

    /// Inserts or replaces an object under its key; returns the previous one.
    pub fn upsert(&self, obj: Arc<Object>) -> Option<Arc<Object>> {
        with_key(&obj, |key| {
            self.upsert_with(key, obj.clone(), |old, _| old.cloned())
        })
    }

    /// Removes an object's key; returns the removed object.
    pub fn remove_object(&self, obj: &Object) -> Option<Arc<Object>> {
        with_key(obj, |key| self.remove(key))
    }

    /// Removes a key; returns the removed object.
    pub fn remove(&self, key: &str) -> Option<Arc<Object>> {
        self.remove_with(key, |o, _| o.clone())
    }

    /// The object at `key` (`"namespace/name"`).
    pub fn get(&self, key: &str) -> Option<Arc<Object>> {
        self.shards[self.shard_of(key)]
            .read()
            .items
            .get(key)
            .cloned()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().items.len()).sum()
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
                    .values()
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
            out.extend(s.read().items.keys().map(|k| k.to_string()));
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
            if let Some(keys) = g.indices.get(i).and_then(|m| m.get(value)) {
                out.extend(keys.iter().filter_map(|k| g.items.get(k).cloned()));
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
            if let Some(keys) = g.indices.get(i).and_then(|m| m.get(value)) {
                out.extend(keys.iter().map(|k| k.to_string()));
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
                all.extend(m.keys().cloned());
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
            s.write().items.reserve(per);
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
            s.clear();
            if !obj.metadata.namespace.is_empty() {
                s.push_str(&obj.metadata.namespace);
                s.push('/');
            }
            s.push_str(&obj.metadata.name);
            f(&s)
        }
        Err(_) => f(&obj.key()),
    })
}

fn remove_from(map: &mut IndexMap, value: &str, key: &str) {
    if let Some(set) = map.get_mut(value) {
        set.remove(key);
        if set.is_empty() {
            map.remove(value);
        }
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
        assert_eq!(vals("field:spec.ports"), ["80", "443"]);
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
}
