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

use serde_json::{Value, json};

use super::Shared;
use crate::controller::expectations::Satisfied;
use crate::controller::replicaset as rsu;
use crate::error::{Error, Result};
use crate::store::{EventType, Object, WatchEvent};

/// How soon to look again when the cache has not caught up with our own last write.
const CACHE_LAG_RETRY: Duration = Duration::from_millis(100);

impl Shared {
    pub(crate) fn process_rs(self: &Arc<Self>, key: &str) {
        self.count(|c| c.syncs += 1);
        let k = key.to_string();
        match self.sync_rs(key) {
            Ok(()) => self.rs_queue.forget(&k),
            Err(e) => {
                self.count(|c| c.sync_errors += 1);
                tracing::warn!(replicaset = %key, error = %e, "sync failed; requeued with backoff");
                self.rs_queue.add_rate_limited(k.clone());
            }
        }
        self.rs_queue.done(&k);
    }

    /// Expectations bookkeeping from instance events (client-go's pod handlers).
    pub(crate) fn on_instance_event(&self, ev: &WatchEvent) {
        let o = &ev.object;
        let Some(owner) = o.controller_ref().filter(|r| r.kind == "ReplicaSet") else {
            // An orphan: every ReplicaSet whose selector matches it may adopt it.
            if ev.event_type != EventType::Deleted {
                for rs in self.cache.list("ReplicaSet", Some(&o.metadata.namespace)) {
                    if rsu::selector_of(&rs).is_ok_and(|s| s.matches(&o.metadata.labels)) {
                        self.rs_queue.add(rs.key());
                    }
                }
            }
            return;
        };
        let rs_key = format!("{}/{}", o.metadata.namespace, owner.name);
        match ev.event_type {
            EventType::Added => self.expectations.creation_observed(&rs_key),
            EventType::Deleted => self.expectations.deletion_observed(&rs_key, &o.key()),
            EventType::Modified => {}
        }
        self.rs_queue.add(rs_key);
    }

    fn sync_rs(self: &Arc<Self>, key: &str) -> Result<()> {
        let Some(rs) = self.cache.get("ReplicaSet", key) else {
            self.expectations.delete(key);
            return Ok(());
        };
        let now = self.now();
        // Evaluated before listing instances, as upstream, so an instance observed in
        // between cannot cause a double create.
        let mut needs_sync = match self.expectations.satisfied(key, now) {
            Satisfied::Fulfilled | Satisfied::NoRecord => true,
            Satisfied::Expired => {
                // K1: act on expired expectations only from a cache that has seen our
                // own last write.
                match self.expectations.last_write(key) {
                    Some(rv) if self.cache.version() < rv => {
                        self.rs_queue.add_after(key.to_string(), CACHE_LAG_RETRY);
                        false
                    }
                    _ => true,
                }
            }
            Satisfied::Pending => false,
        };
        let spec = rsu::ReplicaSetSpec::from_object(&rs)?;
        let selector = rsu::selector_of(&rs)?;

        // Claim: ours by controller reference and selector; adopt matching orphans;
        // release ours that no longer match.
        let ns = rs.metadata.namespace.clone();
        let mut claimed: Vec<Arc<Object>> = vec![];
        for i in self.cache.instances_owned_by(&rs.metadata.uid) {
            if selector.matches(&i.metadata.labels) {
                claimed.push(i);
            } else if rs.metadata.deletion_timestamp.is_none() {
                self.set_owner(&i, None)?;
            }
        }
        if rs.metadata.deletion_timestamp.is_none() {
            for i in self.cache.list("Instance", Some(&ns)) {
                if i.controller_ref().is_none()
                    && i.metadata.deletion_timestamp.is_none()
                    && !selector.is_empty()
                    && selector.matches(&i.metadata.labels)
                {
                    // Re-check against the store that we still exist before adopting.
                    if self.store.get("ReplicaSet", key)?.is_some_and(|s| s.metadata.uid == rs.metadata.uid) {
                        let adopted = self.set_owner(&i, Some(&rs))?;
                        claimed.push(adopted);
                    }
                }
            }
        }
        let active: Vec<Arc<Object>> = claimed.iter().filter(|i| rsu::is_active(i)).cloned().collect();

        let mut manage_err = None;
        let mut diff = 0i64;
        if needs_sync && rs.metadata.deletion_timestamp.is_none() {
            diff = active.len() as i64 - spec.replicas as i64;
            if let Err(e) = self.manage_replicas(key, &rs, &spec, &active, diff) {
                manage_err = Some(e);
            }
        }
        let status = rsu::calculate_status(&rs, &spec, &claimed, manage_err.as_ref().map(|e| (e.to_string(), diff)), self.cfg.clock.wall());
        if status != rs.status {
            let mut next = (*rs).clone();
            next.status = status.clone();
            match self.store.update_status(next) {
                Ok(w) => {
                    self.count(|c| c.store_writes += 1);
                    if let Some(v) = w.resource_version().ok().flatten() {
                        self.expectations.record_write(key, v.0);
                    }
                }
                Err(e) if e.kind() == crate::ErrorKind::Conflict => {
                    // A newer ReplicaSet is on its way through the cache; it will enqueue us.
                }
                Err(e) if e.kind() == crate::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let ready = status["readyReplicas"].as_i64().unwrap_or(0);
        let available = status["availableReplicas"].as_i64().unwrap_or(0);
        if spec.min_ready_seconds > 0 && ready == spec.replicas as i64 && available != ready {
            self.rs_queue.add_after(key.to_string(), Duration::from_secs(spec.min_ready_seconds as u64));
        }
        match manage_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn manage_replicas(
        self: &Arc<Self>,
        key: &str,
        rs: &Arc<Object>,
        spec: &rsu::ReplicaSetSpec,
        active: &[Arc<Object>],
        diff: i64,
    ) -> Result<()> {
        let burst = self.cfg.burst_replicas;
        if diff < 0 {
            let n = ((-diff) as usize).min(burst);
            self.expectations.expect_creations(key, n as i64);
            let template = instance_template(rs, spec);
            let (created, err) = rsu::slow_start_batch(n, rsu::SLOW_START_INITIAL_BATCH, |_| {
                let o = self.store.create(template.clone())?;
                self.count(|c| c.store_writes += 1);
                if let Some(v) = o.resource_version().ok().flatten() {
                    self.expectations.record_write(key, v.0);
                }
                Ok::<(), Error>(())
            });
            // The informer will never see the skipped creations: lower by exactly that
            // many (K3).
            let skipped = n - created;
            if skipped > 0 {
                self.expectations.lower_expectations(key, skipped as i64, 0);
            }
            return err.map_or(Ok(()), Err);
        }
        if diff > 0 {
            let n = (diff as usize).min(burst);
            // Related instances: those of every ReplicaSet with the same controller owner.
            let related = self.related_instances(rs);
            let victims = rsu::instances_to_delete(active, &related, n, self.cfg.clock.wall());
            let keys: Vec<String> = victims.iter().map(|v| v.key()).collect();
            self.expectations.expect_deletions(key, &keys);
            let mut first_err = None;
            for v in &victims {
                match self.store.delete("Instance", &v.key(), None) {
                    Ok(d) => {
                        self.count(|c| c.store_writes += 1);
                        if let Some(rv) = d.resource_version().ok().flatten() {
                            self.expectations.record_write(key, rv.0);
                        }
                    }
                    Err(e) => {
                        self.expectations.deletion_observed(key, &v.key());
                        if e.kind() != crate::ErrorKind::NotFound && first_err.is_none() {
                            first_err = Some(e);
                        }
                    }
                }
            }
            return first_err.map_or(Ok(()), Err);
        }
        Ok(())
    }

    fn related_instances(&self, rs: &Object) -> Vec<Arc<Object>> {
        let Some(owner) = rs.controller_ref() else { return vec![] };
        let mut out = vec![];
        for other in self.cache.list("ReplicaSet", Some(&rs.metadata.namespace)) {
            if other.controller_ref().is_some_and(|r| r.uid == owner.uid) {
                out.extend(self.cache.instances_owned_by(&other.metadata.uid).into_iter().filter(|i| rsu::is_active(i)));
            }
        }
        out
    }

    /// Sets (adopt) or clears (release) an instance's controller reference.
    fn set_owner(&self, inst: &Arc<Object>, owner: Option<&Arc<Object>>) -> Result<Arc<Object>> {
        let mut next = (**inst).clone();
        next.metadata.owner_references.retain(|r| r.controller != Some(true));
        if let Some(o) = owner {
            next.metadata.owner_references.push(controller_ref(o));
        }
        let w = self.store.update(next)?;
        self.count(|c| c.store_writes += 1);
        Ok(w)
    }
}

fn controller_ref(owner: &Object) -> crate::store::OwnerReference {
    crate::store::OwnerReference {
        kind: owner.kind.clone(),
        name: owner.metadata.name.clone(),
        uid: owner.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new instance from the ReplicaSet's template: generated name, template labels and
/// annotations, a controller reference to the ReplicaSet.
fn instance_template(rs: &Object, spec: &rsu::ReplicaSetSpec) -> Object {
    let tmeta = &spec.template["metadata"];
    // Kubernetes truncates the prefix so the generated name fits 63 characters.
    let mut prefix = format!("{}-", rs.metadata.name);
    if prefix.len() > 58 {
        prefix.truncate(57);
        prefix.push('-');
    }
    let mut o = Object {
        kind: "Instance".into(),
        spec: spec.template.get("spec").cloned().unwrap_or(Value::Object(Default::default())),
        ..Object::default()
    };
    o.metadata.generate_name = Some(prefix);
    o.metadata.namespace = rs.metadata.namespace.clone();
    if let Some(l) = tmeta["labels"].as_object() {
        for (k, v) in l {
            if let Some(v) = v.as_str() {
                o.metadata.labels.insert(k.clone(), v.to_string());
            }
        }
    }
    if let Some(a) = tmeta["annotations"].as_object() {
        for (k, v) in a {
            if let Some(v) = v.as_str() {
                o.metadata.annotations.insert(k.clone(), v.to_string());
            }
        }
    }
    o.metadata.owner_references.push(controller_ref(rs));
    let _ = json!(null);
    o
}
