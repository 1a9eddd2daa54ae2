//! The garbage collector, for the objects floyd's controllers own: when a Deployment or a
//! ReplicaSet is deleted, the ReplicaSets and Instances it controlled are deleted after it
//! (Kubernetes' background cascading deletion, the default), and the agent stops the
//! instances. Without it, deleting a Deployment would leave its instances running for good.
//!
//! Two triggers feed one queue of dependents to check: the owner's `DELETED` event (its
//! dependents as the cache knows them), and any event of a dependent whose controller is
//! missing from the cache (a dependent created or changed after its owner went, or found
//! at start-up when the owner was deleted while no control plane ran). The check itself
//! reads the store, the truth: a dependent is deleted only if its controller is absent
//! there (or is another object of the same name), and only at the version checked, so a
//! dependent adopted meanwhile is checked again instead. Only controller references to the
//! kinds floyd manages count; other owners are the host's business.

use std::sync::Arc;

use super::Shared;
use crate::error::Result;
use crate::store::{EventType, Object, WatchEvent};

/// Owner kinds whose deletion deletes their dependents.
const OWNER_KINDS: [&str; 2] = ["Deployment", "ReplicaSet"];
/// Kinds collected when their controller is gone.
const DEPENDENT_KINDS: [&str; 2] = ["ReplicaSet", "Instance"];

/// A queue key: `Kind/namespace/name`.
fn gc_key(kind: &str, key: &str) -> String {
    format!("{kind}/{key}")
}

impl Shared {
    /// Queues the dependents an event may have left without their controller.
    pub(crate) fn on_event_for_gc(&self, ev: &WatchEvent) {
        let o = &ev.object;
        if ev.event_type == EventType::Deleted {
            if OWNER_KINDS.contains(&o.kind.as_str()) {
                for kind in DEPENDENT_KINDS {
                    for dep in self.cache.owned_by(kind, &o.metadata.uid) {
                        self.gc_queue.add(gc_key(kind, &dep.key()));
                    }
                }
            }
            return;
        }
        self.check_controller_present(o);
    }

    /// Queues `o` if it is a dependent whose controller the cache does not have.
    pub(crate) fn check_controller_present(&self, o: &Object) {
        if !DEPENDENT_KINDS.contains(&o.kind.as_str()) {
            return;
        }
        let Some(r) = o
            .controller_ref()
            .filter(|r| OWNER_KINDS.contains(&r.kind.as_str()))
        else {
            return;
        };
        let owner_key = format!("{}/{}", o.metadata.namespace, r.name);
        let present = self
            .cache
            .get(&r.kind, &owner_key)
            .is_some_and(|w| w.metadata.uid == r.uid);
        if !present {
            self.gc_queue.add(gc_key(&o.kind, &o.key()));
        }
    }

    pub(crate) fn process_gc(self: &Arc<Self>, key: &str) {
        self.process_key(&self.gc_queue, "gc", key, None, |k| self.collect(k));
    }

    /// Deletes the dependent at `key` if its controller is gone from the store.
    fn collect(&self, key: &str) -> Result<()> {
        let Some((kind, obj_key)) = key.split_once('/') else {
            return Ok(());
        };
        let Some(obj) = self.store.get(kind, obj_key)? else {
            return Ok(());
        };
        let Some(r) = obj
            .controller_ref()
            .filter(|r| OWNER_KINDS.contains(&r.kind.as_str()))
        else {
            return Ok(());
        };
        let owner = self
            .store
            .get(&r.kind, &format!("{}/{}", obj.metadata.namespace, r.name))?;
        if owner.is_some_and(|w| w.metadata.uid == r.uid) {
            return Ok(());
        }
        let rv = obj.resource_version()?.map(|v| v.0);
        match self.store.delete(kind, obj_key, rv) {
            Ok(_) => {
                tracing::info!(object = %key, owner = %r.name, "deleted: its controller is gone");
                self.count(|c| c.store_writes += 1);
                Ok(())
            }
            Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(()),
            // Changed since it was read (adopted, perhaps): look again.
            Err(e) if e.kind() == crate::ErrorKind::Conflict => {
                self.gc_queue.add(key.to_string());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
