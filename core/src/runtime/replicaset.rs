//! The ReplicaSet controller loop: for one key, read the ReplicaSet and its instances from
//! the cache, claim (adopt / release) instances by selector and controller reference,
//! create or delete instances toward `spec.replicas` in slow-start batches under
//! expectations, and write the status. The arithmetic lives in `controller` as pure
//! functions; this module only reads the cache, writes through the store and requeues.
//!
//! Beyond client-go: every write the controller makes records its resource version in the
//! expectations. When expectations expire (5 min) while the cache lags, the controller
//! waits until the cache has applied its own last write before it acts, so a lagging cache
//! can never make it create extra instances (`reliability.md` K1).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Shared;
use crate::controller::expectations::Satisfied;
use crate::controller::instance::InstanceView;
use crate::controller::replicaset::{self as rsu, ReplicaSetView};
use crate::error::{Error, Result};
use crate::store::{EventType, Object, OwnerReference, WatchEvent};
use crate::sync::Ordering;

/// How soon to look again when the cache has not caught up with our own last write.
const CACHE_LAG_RETRY: Duration = Duration::from_millis(100);

impl Shared {
    pub(crate) fn process_rs(self: &Arc<Self>, key: &str) {
        self.count(|c| c.syncs += 1);
        self.process_key(&self.rs_queue, "replicaset", key, None, |k| self.sync_rs(k));
    }

    /// client-go's pod handlers: expectations bookkeeping, and which ReplicaSets to look
    /// at. `old` is the object the event replaced or removed in the cache.
    pub(crate) fn on_instance_event(&self, ev: &WatchEvent, old: Option<&Object>) {
        let o = &ev.object;
        let ns = &o.metadata.namespace;
        let current = rs_controller(o);
        if ev.event_type == EventType::Modified {
            // The controller reference changed: the previous owner lost an instance.
            let previous = old.and_then(rs_controller);
            if let Some(prev) = previous.filter(|p| current.is_none_or(|c| c.uid != p.uid))
                && let Some(rs) = self.resolve_rs(ns, prev)
            {
                self.rs_queue.add(rs.key());
            }
        }
        let Some(owner) = current else {
            // An orphan: every ReplicaSet whose selector matches it may adopt it.
            if ev.event_type != EventType::Deleted {
                for rs in self.cache.list("ReplicaSet", Some(ns)) {
                    let matches = rsu::ReplicaSetSpec::from_spec(&rs.spec)
                        .is_ok_and(|s| s.selector.matches(&o.metadata.labels));
                    if matches {
                        self.rs_queue.add(rs.key());
                    }
                }
            }
            return;
        };
        // A reference to a ReplicaSet that is gone, or to an earlier one of the same name,
        // concerns no ReplicaSet here (upstream's resolveControllerRef).
        let Some(rs) = self.resolve_rs(ns, owner) else {
            return;
        };
        let rs_key = rs.key();
        match ev.event_type {
            EventType::Added => self.expectations.creation_observed(&rs_key),
            EventType::Deleted => self.expectations.deletion_observed(&rs_key, &o.key()),
            EventType::Modified => {
                // Newly ready with minReadySeconds: available only once they have passed,
                // so look again then (plus a second, as upstream).
                let was_ready = old.is_some_and(|p| InstanceView::from_object(p).ready);
                if !was_ready && InstanceView::from_object(o).ready {
                    let min_ready = rsu::ReplicaSetSpec::from_spec(&rs.spec)
                        .map(|s| s.min_ready_seconds)
                        .unwrap_or(0);
                    if min_ready > 0 {
                        self.rs_queue
                            .add_after(rs_key.clone(), Duration::from_secs(min_ready as u64 + 1));
                    }
                }
            }
        }
        self.rs_queue.add(rs_key);
    }

    /// The cached ReplicaSet a controller reference names, if it is the same one (same
    /// UID).
    fn resolve_rs(&self, namespace: &str, r: &OwnerReference) -> Option<Arc<Object>> {
        self.cache
            .get("ReplicaSet", &format!("{namespace}/{}", r.name))
            .filter(|rs| rs.metadata.uid == r.uid)
    }

    fn sync_rs(self: &Arc<Self>, key: &str) -> Result<()> {
        let Some(rs) = self.cache.get("ReplicaSet", key) else {
            self.expectations.delete(key);
            return Ok(());
        };
        // Evaluated before listing instances, as upstream, so an instance observed in
        // between cannot cause a double create.
        let needs_sync = match self.expectations.check(key, self.now()) {
            Satisfied::Fulfilled | Satisfied::NoRecord => true,
            // K1: act on expired expectations only from a cache that has seen our own
            // last write.
            Satisfied::Expired {
                last_write: Some(rv),
            } if self.cache.version() < rv => {
                self.rs_queue.add_after(key.to_string(), CACHE_LAG_RETRY);
                false
            }
            Satisfied::Expired { .. } => true,
            Satisfied::Pending { .. } => false,
        };
        let view = match ReplicaSetView::from_object(&rs) {
            Ok(v) => v,
            // A spec no sync can act on (upstream's API server would have refused it; its
            // controller drops a selector it cannot parse the same way): reported once, not
            // retried. The next change to the ReplicaSet brings it back.
            Err(e) if e.kind() == crate::ErrorKind::Invalid => {
                self.count(|c| c.sync_errors += 1);
                tracing::warn!(replicaset = %key, error = %e, "invalid ReplicaSet; not retried");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let wall = self.wall();

        // Claim among the active instances only, as upstream (terminal or deleting ones are
        // neither adopted nor released): ours by controller reference and selector; adopt
        // matching orphans; release ours that no longer match.
        let active_copy = |o: &Arc<Object>| {
            InstanceView::from_object(o)
                .is_active()
                .then(|| (**o).clone())
        };
        let mut candidates: Vec<Object> = self
            .cache
            .instances_owned_by(&rs.metadata.uid)
            .iter()
            .filter_map(active_copy)
            .collect();
        for i in self.cache.owned_by("Instance", "") {
            if i.metadata.namespace == rs.metadata.namespace {
                candidates.extend(active_copy(&i));
            }
        }
        let plan = rsu::claim(&rs, &view.spec.selector, &candidates);
        let mut claimed: Vec<InstanceView> = plan
            .claimed
            .iter()
            .map(|&i| InstanceView::from_object(&candidates[i]))
            .collect();
        if !plan.adopt.is_empty() {
            // Re-check against the store that we still exist before adopting (upstream's
            // RecheckDeletionTimestamp).
            let fresh = self.store.get("ReplicaSet", key)?;
            if fresh.is_some_and(|f| {
                f.metadata.uid == rs.metadata.uid && f.metadata.deletion_timestamp.is_none()
            }) {
                for &i in &plan.adopt {
                    match self.set_owner(&candidates[i], Some(&rs)) {
                        Ok(o) => claimed.push(InstanceView::from_object(&o)),
                        Err(e)
                            if matches!(
                                e.kind(),
                                crate::ErrorKind::NotFound | crate::ErrorKind::Conflict
                            ) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        for &i in &plan.release {
            match self.set_owner(&candidates[i], None) {
                Err(e)
                    if !matches!(
                        e.kind(),
                        crate::ErrorKind::NotFound | crate::ErrorKind::Conflict
                    ) =>
                {
                    return Err(e);
                }
                _ => {}
            }
        }
        let active = &claimed;

        let mut manage_err = None;
        let mut wrote = 0;
        if needs_sync && !view.deleting {
            match self.manage_replicas(key, &rs, &view, active, wall) {
                Ok(n) => wrote = n,
                Err(e) => manage_err = Some(e),
            }
        }
        // This sync created or deleted instances and all went well: the status computed
        // from the cache as it was is already out of date, and the watch events of those
        // writes requeue this key, whose sync writes the status with them. Writing it now
        // too would cost one more store write per scaling step for a status no reader
        // could act on before the next one (upstream writes both).
        if wrote > 0 && manage_err.is_none() {
            return Ok(());
        }
        let status = rsu::calculate_status(
            &view,
            &claimed,
            manage_err.as_ref().map(|e| e.to_string()).as_deref(),
            wall,
        );
        let mut settled = true;
        if rsu::status_needs_update(&view, &status) {
            let mut next = (*rs).clone();
            next.status = status.to_json();
            match self.store.update_status(next) {
                Ok(w) => {
                    self.count(|c| c.store_writes += 1);
                    if let Some(v) = w.resource_version().ok().flatten() {
                        self.expectations.record_write(key, v.0);
                    }
                }
                // A newer ReplicaSet is on its way through the cache; it will enqueue us.
                Err(e)
                    if matches!(
                        e.kind(),
                        crate::ErrorKind::Conflict | crate::ErrorKind::NotFound
                    ) =>
                {
                    settled = false;
                }
                Err(e) => return Err(e),
            }
        }
        // Written or already as computed: if every instance is ready but some are not yet
        // available, look again when minReadySeconds have passed (no event marks that
        // moment).
        if settled && let Some(d) = rsu::min_ready_requeue(&view, &status) {
            self.rs_queue.add_after(key.to_string(), d);
        }
        match manage_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `manageReplicas`: creates or deletes toward `spec.replicas`; returns how many
    /// instances it created or deleted.
    fn manage_replicas(
        self: &Arc<Self>,
        key: &str,
        rs: &Arc<Object>,
        view: &ReplicaSetView,
        active: &[InstanceView],
        wall: std::time::SystemTime,
    ) -> Result<usize> {
        let related = self.related_instances(rs);
        let plan =
            rsu::manage_replicas_plan(&view.spec, active, &related, self.cfg.burst_replicas, wall);
        if plan.create > 0 {
            let n = plan.create;
            self.expectations.expect_creations(key, n, self.now());
            let template = instance_template(rs, view);
            let (created, err) =
                rsu::slow_start_batch(n, rsu::SLOW_START_INITIAL_BATCH_SIZE, |_| {
                    let injected = self
                        .failing_creates
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| f.checked_sub(1))
                        .is_ok();
                    if injected {
                        return Err(Error::io(
                            "create instance",
                            std::io::Error::from(std::io::ErrorKind::TimedOut),
                        ));
                    }
                    let o = self.store.create(template.clone())?;
                    self.count(|c| c.store_writes += 1);
                    if let Some(v) = o.resource_version().ok().flatten() {
                        self.expectations.record_write(key, v.0);
                    }
                    Ok::<(), Error>(())
                });
            // The cache will never see the skipped creations: lower by exactly that many
            // (K3).
            let skipped = rsu::skipped_creations(n, created);
            if skipped > 0 {
                self.expectations.lower_expectations(key, skipped as i64, 0);
            }
            return err.map_or(Ok(created), Err);
        }
        if !plan.delete.is_empty() {
            self.expectations
                .expect_deletions(key, &plan.delete, self.now());
            let mut first_err = None;
            let mut deleted = 0;
            for victim in &plan.delete {
                match self.store.delete("Instance", victim, None) {
                    Ok(d) => {
                        deleted += 1;
                        self.count(|c| c.store_writes += 1);
                        if let Some(rv) = d.resource_version().ok().flatten() {
                            self.expectations.record_write(key, rv.0);
                        }
                    }
                    Err(e) => {
                        self.expectations.deletion_observed(key, victim);
                        if e.kind() != crate::ErrorKind::NotFound && first_err.is_none() {
                            first_err = Some(e);
                        }
                    }
                }
            }
            return first_err.map_or(Ok(deleted), Err);
        }
        Ok(0)
    }

    /// Active instances of every ReplicaSet with the same controller owner (for ranking);
    /// none when the ReplicaSet has no controller, as upstream: every instance then ranks 0,
    /// and co-location does not decide which goes first.
    fn related_instances(&self, rs: &Object) -> Vec<InstanceView> {
        let Some(owner) = rs.controller_ref() else {
            return vec![];
        };
        let mut out = vec![];
        for other in self.cache.list("ReplicaSet", Some(&rs.metadata.namespace)) {
            if other.controller_ref().is_some_and(|r| r.uid == owner.uid) {
                for i in self.cache.instances_owned_by(&other.metadata.uid) {
                    let v = InstanceView::from_object(&i);
                    if v.is_active() {
                        out.push(v);
                    }
                }
            }
        }
        out
    }

    /// Sets (adopt) or clears (release) an instance's controller reference.
    fn set_owner(&self, inst: &Object, owner: Option<&Arc<Object>>) -> Result<Arc<Object>> {
        let mut next = inst.clone();
        next.metadata
            .owner_references
            .retain(|r| r.controller != Some(true));
        if let Some(o) = owner {
            next.metadata.owner_references.push(rsu::controller_ref(o));
        }
        let w = self.store.update(next)?;
        self.count(|c| c.store_writes += 1);
        Ok(w)
    }
}

/// An object's controller reference, if its controller is a ReplicaSet.
fn rs_controller(o: &Object) -> Option<&OwnerReference> {
    o.controller_ref().filter(|r| r.kind == "ReplicaSet")
}

/// A new instance from the ReplicaSet's template: generated name, template labels and
/// annotations, a controller reference to the ReplicaSet.
fn instance_template(rs: &Object, view: &ReplicaSetView) -> Object {
    let tmeta = &view.spec.template["metadata"];
    // Kubernetes truncates the prefix so generated names stay within 63 characters.
    let mut prefix = format!("{}-", rs.metadata.name);
    if prefix.len() > 58 {
        prefix.truncate(57);
        prefix.push('-');
    }
    let mut o = Object {
        kind: "Instance".into(),
        spec: view
            .spec
            .template
            .get("spec")
            .cloned()
            .unwrap_or(Value::Object(Default::default())),
        ..Object::default()
    };
    o.metadata.generate_name = Some(prefix);
    o.metadata.namespace = rs.metadata.namespace.clone();
    o.metadata.labels = view.spec.template_labels.clone();
    if let Some(a) = tmeta["annotations"].as_object() {
        for (k, v) in a {
            if let Some(v) = v.as_str() {
                o.metadata.annotations.insert(k.clone(), v.to_string());
            }
        }
    }
    o.metadata.owner_references.push(rsu::controller_ref(rs));
    o
}
