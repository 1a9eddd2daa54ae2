//! The control plane's view of the store: one watch over every kind the controllers use,
//! applied in log order into per-kind maps, with the version it has applied. Controllers
//! read only this cache on their hot path; `pump` moves it forward (from the control plane's
//! event thread, or from the simulator's step loop so that runs are deterministic).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::Result;
use crate::store::{EventType, Object, Store, Watch, WatchEvent};

/// The kinds the control plane follows.
pub const KINDS: [&str; 5] = [
    "Deployment",
    "ReplicaSet",
    "Instance",
    "Service",
    "Endpoints",
];

/// (kind, controller owner uid) → key → object.
type OwnerIndex = HashMap<(String, String), BTreeMap<String, Arc<Object>>>;

/// An applied watch event and the object it replaced or removed, if the cache had one.
pub(crate) type Change = (WatchEvent, Option<Arc<Object>>);

/// Objects by kind and key, as of `version`.
pub struct Cache {
    objects: RwLock<HashMap<String, BTreeMap<String, Arc<Object>>>>,
    /// Instances and ReplicaSets by (kind, controller owner uid); orphans under uid `""`
    /// (the `owner` index).
    by_owner: RwLock<OwnerIndex>,
    watch: Mutex<Option<Watch>>,
    version: Mutex<u64>,
    advanced: Condvar,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("version", &*self.version.lock())
            .finish()
    }
}

impl Cache {
    /// Lists every followed kind at one version and positions the watch after it.
    pub fn new(store: &Store) -> Result<Cache> {
        let cache = Cache {
            objects: RwLock::new(HashMap::new()),
            by_owner: RwLock::new(HashMap::new()),
            watch: Mutex::new(None),
            version: Mutex::new(0),
            advanced: Condvar::new(),
        };
        // The watch from 0 starts with a consistent snapshot of everything (synthetic
        // adds at one version) and then follows the log.
        let mut w = store.watch(None, 0, None)?;
        let start = w.start_version();
        while let Some(ev) = w.try_next()? {
            if KINDS.contains(&ev.object.kind.as_str()) {
                cache.apply(&ev);
            }
        }
        {
            let mut v = cache.version.lock();
            *v = (*v).max(start);
        }
        *cache.watch.lock() = Some(w);
        Ok(cache)
    }

    /// Applies every event that is ready now; returns them so the caller can dispatch
    /// handlers. `wait` blocks up to that long for the first event.
    pub fn pump(&self, wait: Option<Duration>) -> Result<Vec<WatchEvent>> {
        Ok(self
            .pump_changes(wait)?
            .into_iter()
            .map(|(ev, _)| ev)
            .collect())
    }

    /// [`Cache::pump`], each event with the object it replaced or removed (the handlers'
    /// "old object": an update handler compares readiness and controller references).
    pub(crate) fn pump_changes(&self, wait: Option<Duration>) -> Result<Vec<Change>> {
        let mut guard = self.watch.lock();
        let Some(w) = guard.as_mut() else {
            return Ok(vec![]);
        };
        let mut out = vec![];
        let first = match wait {
            Some(d) => w.next_timeout(Some(d))?,
            None => w.try_next()?,
        };
        if let Some(ev) = first {
            out.push(ev);
            while let Some(ev) = w.try_next()? {
                out.push(ev);
            }
        }
        if let Some(last) = out.last() {
            let rv = last.rv;
            let changes = out
                .into_iter()
                .map(|ev| {
                    let old = if KINDS.contains(&ev.object.kind.as_str()) {
                        self.apply(&ev)
                    } else {
                        None
                    };
                    (ev, old)
                })
                .collect();
            let mut v = self.version.lock();
            *v = (*v).max(rv);
            self.advanced.notify_all();
            return Ok(changes);
        }
        Ok(vec![])
    }

    /// Applies one event; returns the object it replaced or removed.
    fn apply(&self, ev: &WatchEvent) -> Option<Arc<Object>> {
        let o = &ev.object;
        let key = o.key();
        let mut objects = self.objects.write();
        let kind = objects.entry(o.kind.clone()).or_default();
        let old = match ev.event_type {
            EventType::Deleted => kind.remove(&key),
            _ => kind.insert(key.clone(), o.clone()),
        };
        drop(objects);
        if o.kind == "Instance" || o.kind == "ReplicaSet" {
            let owner_of = |x: &Object| {
                x.controller_ref()
                    .map(|r| r.uid.clone())
                    .unwrap_or_default()
            };
            let mut idx = self.by_owner.write();
            if let Some(prev) = &old {
                let owner = (o.kind.clone(), owner_of(prev));
                if let Some(m) = idx.get_mut(&owner) {
                    m.remove(&key);
                    // An owner's last object gone: its entry goes too (each rollout's
                    // ReplicaSet is a new owner; empty entries would pile up forever).
                    if m.is_empty() {
                        idx.remove(&owner);
                    }
                }
            }
            if ev.event_type != EventType::Deleted {
                idx.entry((o.kind.clone(), owner_of(o)))
                    .or_default()
                    .insert(key, o.clone());
            }
        }
        let mut v = self.version.lock();
        *v = (*v).max(ev.rv);
        old
    }

    pub fn get(&self, kind: &str, key: &str) -> Option<Arc<Object>> {
        self.objects.read().get(kind)?.get(key).cloned()
    }

    /// Every object of `kind` in `namespace` (all namespaces if `None`), in key order.
    pub fn list(&self, kind: &str, namespace: Option<&str>) -> Vec<Arc<Object>> {
        let objects = self.objects.read();
        let Some(m) = objects.get(kind) else {
            return vec![];
        };
        m.values()
            .filter(|o| namespace.is_none_or(|ns| o.metadata.namespace == ns))
            .cloned()
            .collect()
    }

    /// Instances whose controller owner has `uid`.
    pub fn instances_owned_by(&self, uid: &str) -> Vec<Arc<Object>> {
        self.owned_by("Instance", uid)
    }

    /// Objects of `kind` (Instance or ReplicaSet) whose controller owner has `uid`; `""`
    /// gives the orphans.
    pub fn owned_by(&self, kind: &str, uid: &str) -> Vec<Arc<Object>> {
        self.by_owner
            .read()
            .get(&(kind.to_string(), uid.to_string()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The version up to which the cache has applied the log.
    pub fn version(&self) -> u64 {
        *self.version.lock()
    }

    /// Waits until the cache has applied the event at `rv` (read-your-own-writes).
    /// Returns false on timeout. Only useful when another thread pumps.
    pub fn wait_for_version(&self, rv: u64, timeout: Duration) -> bool {
        let mut v = self.version.lock();
        if *v >= rv {
            return true;
        }
        let _ = self.advanced.wait_for(&mut v, timeout);
        *v >= rv
    }

    /// Stops following (the watch is dropped).
    pub fn close(&self) {
        self.watch.lock().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(name: &str, owner_uid: &str) -> Object {
        Object::from_json(&json!({
            "kind": "Instance",
            "metadata": {"name": name, "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                "uid": owner_uid, "controller": true}]},
            "spec": {},
        }))
        .expect("valid object")
    }

    /// Owners come and go with every rollout: an owner whose last object is gone leaves no
    /// entry behind, and one whose object moved to another owner neither.
    #[test]
    fn the_owner_index_forgets_owners_without_objects() {
        let store = Store::memory();
        let cache = Cache::new(&store).expect("cache");
        store.create(instance("a", "u1")).expect("create");
        store.create(instance("b", "u1")).expect("create");
        cache.pump(None).expect("pump");
        assert_eq!(cache.instances_owned_by("u1").len(), 2);

        store.delete("Instance", "default/a", None).expect("delete");
        cache.pump(None).expect("pump");
        assert_eq!(cache.instances_owned_by("u1").len(), 1);
        assert_eq!(cache.by_owner.read().len(), 1, "u1 still owns b");

        // b moves to u2, then goes.
        let b = store.get("Instance", "default/b").expect("get").expect("b");
        let mut moved = (*b).clone();
        moved.metadata.owner_references[0].uid = "u2".into();
        store.update(moved).expect("update");
        cache.pump(None).expect("pump");
        assert!(cache.instances_owned_by("u1").is_empty());
        assert_eq!(cache.instances_owned_by("u2").len(), 1);
        assert_eq!(cache.by_owner.read().len(), 1, "only u2 is left");

        store.delete("Instance", "default/b", None).expect("delete");
        cache.pump(None).expect("pump");
        assert!(cache.by_owner.read().is_empty(), "no owner has objects");
    }
}
