//! The Deployment controller loop (`k8s-semantics.md` §4.1): for one key, claim the
//! Deployment's ReplicaSets, keep paused conditions, scale proportionally on scaling events,
//! bring the new ReplicaSet up to date or create it (template hash, revision, annotations)
//! and record its revision on the Deployment, run the strategy — RollingUpdate, Recreate, or
//! floyd's BlueGreen — clean up old revisions and write the status with its conditions. The
//! deadline is detected on time without resync: an unchanged status requeues the key for
//! when the deadline passes (K9). A key that keeps failing is dropped after
//! [`DEPLOYMENT_MAX_RETRIES`] retries, as upstream. The arithmetic is in
//! `controller::deployment`; this module reads the cache, writes through the store and
//! requeues.
//!
//! Two things beyond upstream: a status write that a sync already on its way would
//! supersede is skipped (after writing a ReplicaSet, or while a ReplicaSet has not observed
//! its spec; `docs/semantics.md`), and under `podReplacementPolicy: TerminationComplete`
//! scale-ups count the instances the agent is still stopping.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use super::Shared;
use crate::controller::deployment::util::{self as du, POD_TEMPLATE_HASH_LABEL, Scale};
pub use crate::controller::deployment::util::{
    ACTIVE_HASH_ANNOTATION, PROMOTE_ANNOTATION, SWITCHED_AT_ANNOTATION,
};
use crate::controller::deployment::{self as dep, DeploymentView, Strategy};
use crate::controller::instance::InstanceView;
use crate::controller::replicaset::{self as rsu, ReplicaSetView};
use crate::controller::{Condition, format_time, get_condition, parse_time};
use crate::error::{Error, Result};
use crate::store::{Object, WatchEvent};

/// Upstream's `maxRetries`: a Deployment key whose sync has failed and been requeued this
/// many times in a row is dropped (forgotten, not requeued) on its next failure; its next
/// event brings it back. The ReplicaSet controller retries without limit, as upstream.
pub const DEPLOYMENT_MAX_RETRIES: u64 = 15;

/// What `get_new_rs` hands back: the Deployment as stored after its writes (its view
/// carrying the revision annotation and conditions they set, as upstream's in-place `d`
/// does) and its ReplicaSets read fresh.
struct Synced {
    d_obj: Arc<Object>,
    d: DeploymentView,
    rss: Vec<ReplicaSetView>,
}

/// What bringing an existing new ReplicaSet up to date came to.
enum ExistingNewRs {
    /// It was written; the sync goes on with it, and the Deployment's revision follows on
    /// the next sync, as upstream's `getNewReplicaSet` returns after the update.
    Updated,
    /// Nothing to change; its revision annotation (`""` without one).
    UpToDate { revision: String },
    /// It is gone from the store; its deletion event requeues the Deployment.
    Gone,
}

impl Shared {
    pub(crate) fn process_deployment(self: &Arc<Self>, key: &str) {
        self.count(|c| c.syncs += 1);
        let retries = Some(DEPLOYMENT_MAX_RETRIES);
        self.process_key(&self.dep_queue, "deployment", key, retries, |k| {
            self.sync_deployment(k)
        });
    }

    /// Deployment keys to resync after an event.
    pub(crate) fn on_event_for_deployments(&self, ev: &WatchEvent) {
        let o = &ev.object;
        match o.kind.as_str() {
            "Deployment" => self.dep_queue.add(o.key()),
            "ReplicaSet" => {
                if let Some(r) = o.controller_ref().filter(|r| r.kind == "Deployment") {
                    self.dep_queue
                        .add(format!("{}/{}", o.metadata.namespace, r.name));
                }
            }
            "Instance" => {
                // Recreate waits for old instances to go; their deletion must wake it.
                if let Some(rs) = o.controller_ref().and_then(|r| {
                    self.cache.get(
                        "ReplicaSet",
                        &format!("{}/{}", o.metadata.namespace, r.name),
                    )
                }) && let Some(r) = rs.controller_ref().filter(|r| r.kind == "Deployment")
                {
                    self.dep_queue
                        .add(format!("{}/{}", o.metadata.namespace, r.name));
                }
            }
            _ => {}
        }
    }

    fn sync_deployment(self: &Arc<Self>, key: &str) -> Result<()> {
        let Some(d_obj) = self.cache.get("Deployment", key) else {
            return Ok(());
        };
        if dep::selects_everything(&d_obj.spec) {
            return self.sync_selecting_all(&d_obj);
        }
        let d = DeploymentView::from_object(&d_obj)?;
        let now = self.wall();
        let rss = self.claim_replicasets(&d_obj, &d)?;
        if d.deleting {
            // `syncStatusOnly`.
            let Some(Synced { d_obj, d, rss }) = self.get_new_rs(d_obj, d, rss, now, false)? else {
                return Ok(());
            };
            let (new_rs, old) = split(&d, &rss);
            return self.write_status_if_changed(
                &d_obj,
                dep::sync_deployment_status(&d, new_rs, &old, now),
            );
        }
        if let Some(st) = dep::check_paused_conditions(&d, now) {
            return self.write_status(&d_obj, st);
        }
        if d.spec.paused {
            return self.sync_scale_only(d_obj, d, rss, now, true);
        }
        {
            let (new_rs, old) = split(&d, &rss);
            if du::is_scaling_event(&d.spec, new_rs, &old) {
                return self.sync_scale_only(d_obj, d, rss, now, false);
            }
        }
        match d.spec.strategy {
            Strategy::RollingUpdate { .. } => self.rollout_rolling(d_obj, d, rss, now),
            Strategy::Recreate => self.rollout_recreate(d_obj, d, rss, now),
            Strategy::BlueGreen { .. } => self.rollout_blue_green(d_obj, d, rss, now),
        }
    }

    /// A Deployment whose selector selects everything: upstream records a Warning event
    /// `SelectingAll` (floyd has no events; it logs the warning), observes the generation if
    /// the status is behind, and stops without an error, so the key is not retried. As
    /// upstream, a failed status write is not retried either.
    fn sync_selecting_all(&self, d_obj: &Arc<Object>) -> Result<()> {
        tracing::warn!(deployment = %d_obj.key(), reason = "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.");
        let mut status = dep::DeploymentStatus::from_json(&d_obj.status)?;
        if status.observed_generation < d_obj.metadata.generation {
            status.observed_generation = d_obj.metadata.generation;
            if let Err(e) = self.write_status(d_obj, status) {
                tracing::warn!(deployment = %d_obj.key(), error = %e, "could not record the observed generation");
            }
        }
        Ok(())
    }

    /// The Deployment's ReplicaSets: ours by controller reference (adopting matching
    /// orphans, releasing ours that no longer match), as views.
    fn claim_replicasets(
        &self,
        d_obj: &Arc<Object>,
        d: &DeploymentView,
    ) -> Result<Vec<ReplicaSetView>> {
        let candidates: Vec<Object> = self
            .cache
            .owned_by("ReplicaSet", &d.uid)
            .into_iter()
            .chain(
                self.cache
                    .owned_by("ReplicaSet", "")
                    .into_iter()
                    .filter(|rs| rs.metadata.namespace == d.namespace),
            )
            .map(|rs| (*rs).clone())
            .collect();
        let plan = rsu::claim(d_obj, &d.spec.selector, &candidates);
        let mut out: Vec<ReplicaSetView> = vec![];
        for &i in &plan.claimed {
            out.push(ReplicaSetView::from_object(&candidates[i])?);
        }
        for &i in &plan.adopt {
            let mut next = candidates[i].clone();
            next.metadata
                .owner_references
                .retain(|r| r.controller != Some(true));
            next.metadata
                .owner_references
                .push(rsu::controller_ref(d_obj));
            match self.store.update(next) {
                Ok(o) => out.push(ReplicaSetView::from_object(&o)?),
                Err(e)
                    if matches!(
                        e.kind(),
                        crate::ErrorKind::NotFound | crate::ErrorKind::Conflict
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        for &i in &plan.release {
            let mut next = candidates[i].clone();
            next.metadata.owner_references.retain(|r| r.uid != d.uid);
            match self.store.update(next) {
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
        Ok(out)
    }

    /// `sync()`: the existing new ReplicaSet brought up to date (never created),
    /// proportional scaling (and cleanup when paused), then the status without progress
    /// estimation.
    fn sync_scale_only(
        &self,
        d_obj: Arc<Object>,
        d: DeploymentView,
        rss: Vec<ReplicaSetView>,
        now: SystemTime,
        paused: bool,
    ) -> Result<()> {
        let Some(Synced { d_obj, d, rss }) = self.get_new_rs(d_obj, d, rss, now, false)? else {
            return Ok(());
        };
        let (d_obj, d, rss) = (&d_obj, &d, rss.as_slice());
        let (new_rs, old) = split(d, rss);
        let scales = self.cap_for_termination(d, rss, du::scale_plan(d, new_rs, &old));
        let mut wrote = false;
        for s in &scales {
            wrote |= self.scale_rs(d, s)?;
        }
        if paused {
            for name in du::cleanup_plan(&old, d.spec.revision_history_limit) {
                self.delete_rs(&d.namespace, &name)?;
            }
        }
        if wrote {
            // The ReplicaSet writes come back through the watch and requeue this key.
            return Ok(());
        }
        let rss = self.reload(d, rss)?;
        let (new_rs, old) = split(d, &rss);
        self.write_status_if_changed(d_obj, dep::sync_deployment_status(d, new_rs, &old, now))
    }

    fn rollout_rolling(
        self: &Arc<Self>,
        d_obj: Arc<Object>,
        d: DeploymentView,
        rss: Vec<ReplicaSetView>,
        now: SystemTime,
    ) -> Result<()> {
        let Some(Synced { d_obj, d, rss }) = self.get_new_rs(d_obj, d, rss, now, true)? else {
            return Ok(());
        };
        let (d_obj, d) = (&d_obj, &d);
        let (new_rs, old) = split(d, &rss);
        let new_rs = new_rs
            .expect("get_new_rs returns the new ReplicaSet")
            .clone();
        let surplus = self
            .termination_footprint(d, &rss)
            .map_or(0, |(_, instances)| du::instance_surplus(&rss, &instances));
        match dep::rolling_update_step_with(&d.spec, &new_rs, &old, surplus)
            .map_err(|e| Error::invalid("spec.strategy", e))?
        {
            dep::RollingStep::ScaleNew(s) => {
                let wrote = self.scale_rs(d, &s)?;
                return self.rollout_status(d_obj, d, &rss, now, After::Step { wrote });
            }
            dep::RollingStep::ScaleOld { scales, scaled } => {
                let mut wrote = false;
                for s in &scales {
                    wrote |= self.scale_rs(d, s)?;
                }
                if scaled {
                    return self.rollout_status(d_obj, d, &rss, now, After::Step { wrote });
                }
            }
            dep::RollingStep::Idle => {}
        }
        self.rollout_status(d_obj, d, &rss, now, After::Finish)
    }

    fn rollout_recreate(
        self: &Arc<Self>,
        d_obj: Arc<Object>,
        d: DeploymentView,
        rss: Vec<ReplicaSetView>,
        now: SystemTime,
    ) -> Result<()> {
        // No new ReplicaSet yet: it is created only once the old instances are gone.
        let Some(Synced { d_obj, d, rss }) = self.get_new_rs(d_obj, d, rss, now, false)? else {
            return Ok(());
        };
        let (d_obj, d) = (&d_obj, &d);
        let instances = self.instances_of(&rss);
        let (new_rs, old) = split(d, &rss);
        let old_uids: Vec<&str> = old.iter().map(|rs| rs.uid.as_str()).collect();
        let step = dep::recreate_step(&d.spec, new_rs, &old, &instances);
        // Deleted old instances whose stop has not finished still count as running.
        let step = match step {
            dep::RecreateStep::CreateNew | dep::RecreateStep::ScaleNew(_)
                if self.agent_runs_any_of(&old_uids) =>
            {
                dep::RecreateStep::WaitForOld
            }
            s => s,
        };
        match step {
            dep::RecreateStep::ScaleOldToZero(scales) => {
                let mut wrote = false;
                for s in &scales {
                    wrote |= self.scale_rs(d, s)?;
                }
                self.rollout_status(d_obj, d, &rss, now, After::Step { wrote })
            }
            // K11: old instances still alive or stopping; their deletion requeues us.
            dep::RecreateStep::WaitForOld => {
                self.rollout_status(d_obj, d, &rss, now, After::Step { wrote: false })
            }
            dep::RecreateStep::CreateNew => {
                let Some(Synced { d_obj, d, rss }) =
                    self.get_new_rs(d_obj.clone(), d.clone(), rss, now, true)?
                else {
                    return Ok(());
                };
                self.rollout_status(&d_obj, &d, &rss, now, After::Step { wrote: false })
            }
            dep::RecreateStep::ScaleNew(s) => {
                if let Some(s) = s {
                    let s = self.cap_one_for_termination(d, &rss, s);
                    let wrote = self.scale_rs(d, &s)?;
                    return self.rollout_status(d_obj, d, &rss, now, After::Step { wrote });
                }
                self.rollout_status(d_obj, d, &rss, now, After::Finish)
            }
        }
    }

    fn rollout_blue_green(
        self: &Arc<Self>,
        d_obj: Arc<Object>,
        d: DeploymentView,
        rss: Vec<ReplicaSetView>,
        now: SystemTime,
    ) -> Result<()> {
        let Some(Synced { d_obj, d, rss }) = self.get_new_rs(d_obj, d, rss, now, true)? else {
            return Ok(());
        };
        let (d_obj, d) = (&d_obj, &d);
        let (new_rs, old) = split(d, &rss);
        let new_rs = new_rs
            .expect("get_new_rs returns the new ReplicaSet")
            .clone();
        let new_hash = new_rs
            .labels
            .get(POD_TEMPLATE_HASH_LABEL)
            .cloned()
            .unwrap_or_default();
        let active = d.annotations.get(ACTIVE_HASH_ANNOTATION).cloned();
        let switched_at = if active.as_deref() == Some(new_hash.as_str()) {
            d.annotations
                .get(SWITCHED_AT_ANNOTATION)
                .and_then(|t| parse_time(t))
        } else {
            None
        };
        // A request names the template by its own hash, without the collision count (see
        // `promote`), so a collision that renames the ReplicaSet does not lose it.
        let promote_requested = d
            .annotations
            .get(PROMOTE_ANNOTATION)
            .is_some_and(|h| *h == du::compute_hash(&d.spec.template, None));
        let mut status = dep::sync_rollout_status(d, Some(&new_rs), &old, now);
        let timed_out = dep::deployment_timed_out(d, &status, now);
        let plan = dep::blue_green_plan(
            &d.spec,
            &new_rs,
            &old,
            new_rs.status.available_replicas,
            now,
            switched_at,
            promote_requested,
            timed_out,
        );
        // An abort is final for this template: the preview stays scaled down (the plan, which
        // does not know whether any revision is active, would scale it back up, and the next
        // sync would abort again, forever). Without an active revision there is nothing to
        // fall back to, and the new ReplicaSet keeps serving its size.
        let abort = plan.abort && active.is_some();
        if let Some(s) = plan.scale_new.as_ref().filter(|_| !abort) {
            self.scale_rs(d, s)?;
        }
        if plan.promote {
            // One store write per Service: each switches to the new revision at once.
            self.switch_services(d, &new_hash)?;
            let mut next = (**d_obj).clone();
            next.metadata
                .annotations
                .insert(ACTIVE_HASH_ANNOTATION.into(), new_hash.clone());
            next.metadata
                .annotations
                .insert(SWITCHED_AT_ANNOTATION.into(), format_time(now));
            next.metadata.annotations.remove(PROMOTE_ANNOTATION);
            self.store.update(next)?;
            self.count(|c| c.store_writes += 1);
            // The annotation write bumps the version; the next sync continues from it.
            return Ok(());
        }
        for s in &plan.scale_old {
            self.scale_rs(d, s)?;
        }
        if abort {
            // The new revision never became fully available in time: scale it away, keep
            // the Services on the active revision, report the deadline.
            if new_rs.spec.replicas > 0 {
                self.scale_rs(
                    d,
                    &Scale {
                        name: new_rs.name.clone(),
                        from: new_rs.spec.replicas,
                        to: 0,
                    },
                )?;
            }
        }
        if let Some(after) = plan.requeue_after {
            self.dep_queue.add_after(d_obj.key(), after);
        }
        let rss = self.reload(d, &rss)?;
        let (new_rs2, old2) = split(d, &rss);
        status = dep::sync_rollout_status(d, new_rs2, &old2, now);
        if dep::deployment_complete(d, &status) && plan.scale_old_to_zero_at.is_none() {
            for name in du::cleanup_plan(&old2, d.spec.revision_history_limit) {
                self.delete_rs(&d.namespace, &name)?;
            }
        }
        self.write_rollout_status(d_obj, d, status, now)
    }

    /// Points every Service that selects this Deployment's instances at `hash`.
    fn switch_services(&self, d: &DeploymentView, hash: &str) -> Result<()> {
        for svc in self.cache.list("Service", Some(&d.namespace)) {
            let Some(sel) = svc.spec.get("selector").and_then(Value::as_object) else {
                continue;
            };
            let selects = sel
                .iter()
                .filter(|(k, _)| k.as_str() != POD_TEMPLATE_HASH_LABEL)
                .all(|(k, v)| {
                    v.as_str()
                        .is_some_and(|v| d.spec.template_labels.get(k).is_some_and(|t| t == v))
                });
            if !selects || sel.len() <= usize::from(sel.contains_key(POD_TEMPLATE_HASH_LABEL)) {
                continue;
            }
            while let Some(cur) = self.store.get("Service", &svc.key())? {
                if cur.spec["selector"][POD_TEMPLATE_HASH_LABEL] == hash {
                    break;
                }
                let mut next = (*cur).clone();
                next.spec["selector"][POD_TEMPLATE_HASH_LABEL] = Value::from(hash);
                match self.store.update(next) {
                    Ok(_) => {
                        self.count(|c| c.store_writes += 1);
                        break;
                    }
                    Err(e) if e.kind() == crate::ErrorKind::Conflict => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// `syncRolloutStatus` over the Deployment's ReplicaSets as the store has them: those
    /// the cache knows and `known`, the ones this sync has seen or made (a ReplicaSet it
    /// just created may not be in the cache yet, and the status must count it as the new
    /// one, as upstream's `newRS` argument does). `after` says what the sync did before
    /// (see [`After`]). The write is also skipped (but see [`leaves_completion`]) while a
    /// ReplicaSet has not observed its spec.
    fn rollout_status(
        &self,
        d_obj: &Arc<Object>,
        d: &DeploymentView,
        known: &[ReplicaSetView],
        now: SystemTime,
        after: After,
    ) -> Result<()> {
        let rss = self.reload(d, known)?;
        let (new_rs, old) = split(d, &rss);
        let status = dep::sync_rollout_status(d, new_rs, &old, now);
        let wrote = matches!(after, After::Step { wrote: true });
        if after == After::Finish && dep::deployment_complete(d, &d.status) {
            for name in du::cleanup_plan(&old, d.spec.revision_history_limit) {
                self.delete_rs(&d.namespace, &name)?;
            }
        }
        if wrote || replica_set_status_pending(&rss) {
            return self.write_if_leaving_completion(d_obj, d, status);
        }
        self.write_rollout_status(d_obj, d, status, now)
    }

    /// A skipped status write that is written after all: see [`leaves_completion`].
    fn write_if_leaving_completion(
        &self,
        d_obj: &Arc<Object>,
        d: &DeploymentView,
        status: dep::DeploymentStatus,
    ) -> Result<()> {
        if leaves_completion(d, &status) {
            return self.write_status(d_obj, status);
        }
        Ok(())
    }

    /// Writes the status if it changed; otherwise requeues for the progress deadline so it
    /// is detected on time without any resync (K9).
    fn write_rollout_status(
        &self,
        d_obj: &Arc<Object>,
        d: &DeploymentView,
        status: dep::DeploymentStatus,
        now: SystemTime,
    ) -> Result<()> {
        if status != d.status {
            return self.write_status(d_obj, status);
        }
        if let Some(delay) = dep::requeue_stuck_deployment(d, &status, now).enqueue_delay() {
            if delay.is_zero() {
                self.dep_queue.add_rate_limited(d_obj.key());
            } else {
                self.dep_queue.add_after(d_obj.key(), delay);
            }
        }
        Ok(())
    }

    fn write_status_if_changed(
        &self,
        d_obj: &Arc<Object>,
        status: Option<dep::DeploymentStatus>,
    ) -> Result<()> {
        match status {
            Some(s) => self.write_status(d_obj, s),
            None => Ok(()),
        }
    }

    fn write_status(&self, d_obj: &Arc<Object>, status: dep::DeploymentStatus) -> Result<()> {
        let mut next = (**d_obj).clone();
        next.status = status.to_json();
        match self.store.update_status(next) {
            Ok(_) => {
                self.count(|c| c.store_writes += 1);
                Ok(())
            }
            // A newer Deployment is coming through the cache and will requeue us.
            Err(e)
                if matches!(
                    e.kind(),
                    crate::ErrorKind::Conflict | crate::ErrorKind::NotFound
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `getNewReplicaSet` (§4.2). An existing new ReplicaSet is brought up to date — the
    /// Deployment's annotations, a revision above every old one (the number it had kept in
    /// `revision-history`), the Deployment's `minReadySeconds` — with one write if that
    /// changes anything; if nothing does, its revision is recorded on the Deployment, with
    /// `Progressing=True/FoundNewReplicaSet` when a deadline is set and no Progressing
    /// condition is there yet. Without one and with `create`, it is created (or found
    /// already created, see `create_new_rs`). Returns the Deployment and its ReplicaSets —
    /// the new one among them when `create` is set — or `None` when the sync must stop
    /// because the Deployment or the new ReplicaSet changed or vanished meanwhile: its watch
    /// event requeues the key.
    fn get_new_rs(
        &self,
        d_obj: Arc<Object>,
        d: DeploymentView,
        rss: Vec<ReplicaSetView>,
        now: SystemTime,
        create: bool,
    ) -> Result<Option<Synced>> {
        let (new_rs, old) = split(&d, &rss);
        let new_revision = (du::max_revision(old.iter()) + 1).to_string();
        let Some(new_rs) = new_rs else {
            if !create {
                return Ok(Some(Synced { d_obj, d, rss }));
            }
            return self.create_new_rs(d_obj, d, rss, &old, &new_revision, now);
        };
        let name = new_rs.name.clone();
        match self.sync_existing_new_rs(&d, &new_rs.key(), &new_revision)? {
            ExistingNewRs::Gone => Ok(None),
            ExistingNewRs::Updated => {
                let rss = self.reload(&d, &rss)?;
                if split(&d, &rss).0.is_none() {
                    // Deleted or released since the write; its event requeues the key.
                    return Ok(None);
                }
                Ok(Some(Synced { d_obj, d, rss }))
            }
            ExistingNewRs::UpToDate { revision } => {
                // A Deployment that has never reported progress gets its first condition
                // from the new ReplicaSet it finds (it may predate the deadline).
                let found = (dep::has_progress_deadline(&d.spec)
                    && get_condition(&d.status.conditions, dep::PROGRESSING).is_none())
                .then(|| dep::found_new_rs_condition(&name, now));
                let Some((d_obj, d)) = self.record_new_rs(d_obj, d, &revision, found)? else {
                    return Ok(None);
                };
                Ok(Some(Synced { d_obj, d, rss }))
            }
        }
    }

    /// `SetNewReplicaSetAnnotations(d, rs, new_revision, exists = true)` and the
    /// Deployment's `minReadySeconds` on the stored new ReplicaSet, written only if either
    /// changes it. A write that conflicts is an error (retried with backoff), as upstream.
    fn sync_existing_new_rs(
        &self,
        d: &DeploymentView,
        key: &str,
        new_revision: &str,
    ) -> Result<ExistingNewRs> {
        let Some(cur) = self.store.get("ReplicaSet", key)? else {
            return Ok(ExistingNewRs::Gone);
        };
        // Decided on a copy of the annotations: the whole object is copied only for a write,
        // which most syncs do not make.
        let mut annotations = cur.metadata.annotations.clone();
        let annotations_changed = du::set_new_replica_set_annotations(
            d,
            &mut annotations,
            new_revision,
            true,
            du::MAX_REV_HISTORY_LENGTH_IN_CHARS,
        );
        let min_ready = cur
            .spec
            .get("minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let min_ready_changed = min_ready != i64::from(d.spec.min_ready_seconds);
        if !annotations_changed && !min_ready_changed {
            let revision = annotations
                .remove(du::REVISION_ANNOTATION)
                .unwrap_or_default();
            return Ok(ExistingNewRs::UpToDate { revision });
        }
        if !cur.spec.is_object() {
            // Rewritten since the cache showed it; the store does not validate specs.
            return Err(Error::invalid(
                "spec",
                format!("ReplicaSet {key}: must be an object"),
            ));
        }
        let mut next = (*cur).clone();
        next.metadata.annotations = annotations;
        next.spec["minReadySeconds"] = Value::from(d.spec.min_ready_seconds);
        match self.store.update(next) {
            Ok(_) => {
                self.count(|c| c.store_writes += 1);
                Ok(ExistingNewRs::Updated)
            }
            Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(ExistingNewRs::Gone),
            Err(e) => Err(e),
        }
    }

    /// The create half of `getNewReplicaSet`. An `AlreadyExists` for a ReplicaSet this
    /// Deployment controls with an equal template (ignoring the hash) is the new ReplicaSet
    /// made by an earlier sync whose event the cache has not delivered yet: it is used as
    /// is. Any other holder of the name is a hash collision: `collisionCount` goes up and the
    /// error requeues the key, whose next sync hashes with the new count. Any other create
    /// error is reported as `Progressing=False/ReplicaSetCreateError` (with a deadline) and
    /// returned.
    fn create_new_rs(
        &self,
        d_obj: Arc<Object>,
        d: DeploymentView,
        rss: Vec<ReplicaSetView>,
        old: &[ReplicaSetView],
        new_revision: &str,
        now: SystemTime,
    ) -> Result<Option<Synced>> {
        let mut rs =
            dep::new_replica_set(&d_obj, &d, old).map_err(|e| Error::invalid("spec", e))?;
        if d.spec.waits_for_termination() {
            // The new ReplicaSet's first size is a scale-up from zero like any other.
            let want = rs.spec["replicas"].as_i64().unwrap_or(0);
            let first = Scale {
                name: rs.metadata.name.clone(),
                from: 0,
                to: i32::try_from(want).unwrap_or(i32::MAX),
            };
            rs.spec["replicas"] = Value::from(self.cap_one_for_termination(&d, &rss, first).to);
        }
        let name = rs.metadata.name.clone();
        let key = format!("{}/{name}", d.namespace);
        let already_existed = match self.store.create(rs) {
            Ok(_) => {
                self.count(|c| c.store_writes += 1);
                false
            }
            Err(e) if e.kind() == crate::ErrorKind::AlreadyExists => {
                let Some(existing) = self.store.get("ReplicaSet", &key)? else {
                    // Deleted since: the next try creates it.
                    return Err(e);
                };
                let ours = existing.controller_ref().is_some_and(|r| r.uid == d.uid);
                let template = existing.spec.get("template").unwrap_or(&Value::Null);
                if !ours || !du::equal_ignore_hash(&d.spec.template, template) {
                    let mut status = d.status.clone();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.write_status(&d_obj, status)?;
                    return Err(Error::Conflict(format!(
                        "ReplicaSet name collision for Deployment {}",
                        d_obj.key()
                    )));
                }
                true
            }
            Err(e) => {
                tracing::warn!(deployment = %d_obj.key(), reason = dep::FAILED_RS_CREATE_REASON,
                    error = %e, "failed to create new replica set {name:?}");
                if dep::has_progress_deadline(&d.spec) {
                    let mut status = d.status.clone();
                    dep::set_deployment_condition(
                        &mut status,
                        dep::rs_create_error_condition(&name, &e.to_string(), now),
                    );
                    // The create error is the one to report; a failed status write only
                    // loses its description (upstream ignores it too).
                    if status != d.status
                        && let Err(we) = self.write_status(&d_obj, status)
                    {
                        tracing::warn!(deployment = %d_obj.key(), error = %we,
                            "could not record the create error");
                    }
                }
                return Err(e);
            }
        };
        let created = (!already_existed && dep::has_progress_deadline(&d.spec))
            .then(|| dep::new_rs_created_condition(&name, now));
        let Some((d_obj, d)) = self.record_new_rs(d_obj, d, new_revision, created)? else {
            return Ok(None);
        };
        let rss = self.reload_with(&d, &rss, Some(key))?;
        if split(&d, &rss).0.is_none() {
            // Deleted or released already; its event requeues the Deployment.
            return Ok(None);
        }
        Ok(Some(Synced { d_obj, d, rss }))
    }

    /// Records the new ReplicaSet on the Deployment: `revision` as its revision annotation
    /// (`SetDeploymentRevision`) and `cond` among its conditions, in one write made only if
    /// either changes something. Upstream writes both with one `UpdateStatus` (the apps
    /// status strategy keeps annotation changes); so does floyd, through the store's
    /// `update_status_and_annotations`. Returns the Deployment as stored and its view with
    /// both set, or `None` when the Deployment changed or vanished meanwhile (its event
    /// requeues the key).
    fn record_new_rs(
        &self,
        d_obj: Arc<Object>,
        mut d: DeploymentView,
        revision: &str,
        cond: Option<Condition>,
    ) -> Result<Option<(Arc<Object>, DeploymentView)>> {
        let annotated = du::set_deployment_revision(&mut d.annotations, revision);
        let mut status = d.status.clone();
        if let Some(cond) = cond {
            dep::set_deployment_condition(&mut status, cond);
        }
        let status_changed = status != d.status;
        if !annotated && !status_changed {
            return Ok(Some((d_obj, d)));
        }
        let mut next = (*d_obj).clone();
        next.metadata.annotations = d.annotations.clone();
        if status_changed {
            next.status = status.to_json();
        }
        match self.store.update_status_and_annotations(next) {
            Ok(o) => {
                self.count(|c| c.store_writes += 1);
                d.status = status;
                Ok(Some((o, d)))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    crate::ErrorKind::Conflict | crate::ErrorKind::NotFound
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// With the TerminationComplete replacement policy, lowers the scale-ups in `scales` so
    /// that the Deployment's instances — live ones and those still stopping — stay within
    /// `replicas + maxSurge` (`replicas` for Recreate). Other policies: `scales` unchanged.
    fn cap_for_termination(
        &self,
        d: &DeploymentView,
        rss: &[ReplicaSetView],
        scales: Vec<Scale>,
    ) -> Vec<Scale> {
        if scales.iter().all(|s| s.to <= s.from) {
            return scales;
        }
        match self.termination_footprint(d, rss) {
            Some((limit, instances)) => du::cap_scale_ups(&scales, rss, &instances, limit),
            None => scales,
        }
    }

    /// Under TerminationComplete: the Deployment's instance limit and, per ReplicaSet name,
    /// its instances — those in the cache plus those the agent is still stopping. `None`
    /// for other policies and for BlueGreen.
    fn termination_footprint(
        &self,
        d: &DeploymentView,
        rss: &[ReplicaSetView],
    ) -> Option<(i64, std::collections::BTreeMap<String, du::InstanceCount>)> {
        if !d.spec.waits_for_termination() {
            return None;
        }
        let limit = d.spec.instance_limit()?;
        let uids: Vec<&str> = rss.iter().map(|rs| rs.uid.as_str()).collect();
        let stopping = self.agent_stopping_by_owner(&uids);
        let instances = rss
            .iter()
            .map(|rs| {
                let n = du::InstanceCount {
                    live: self.cache.instances_owned_by(&rs.uid).len() as i64,
                    stopping: stopping.get(&rs.uid).copied().unwrap_or(0),
                };
                (rs.name.clone(), n)
            })
            .collect();
        Some((limit, instances))
    }

    fn cap_one_for_termination(
        &self,
        d: &DeploymentView,
        rss: &[ReplicaSetView],
        s: Scale,
    ) -> Scale {
        let mut v = self.cap_for_termination(d, rss, vec![s]);
        v.pop().expect("one scale in, one out")
    }

    /// Sets a ReplicaSet's size and its desired/max-replicas annotations; writes only when
    /// something changes. Returns whether it wrote.
    fn scale_rs(&self, d: &DeploymentView, s: &Scale) -> Result<bool> {
        let key = format!("{}/{}", d.namespace, s.name);
        let max = d.spec.replicas.saturating_add(du::max_surge(&d.spec));
        loop {
            let Some(cur) = self.store.get("ReplicaSet", &key)? else {
                return Ok(false);
            };
            let mut next = (*cur).clone();
            let mut changed =
                du::set_replicas_annotations(&mut next.metadata.annotations, d.spec.replicas, max);
            if next.spec["replicas"].as_i64() != Some(i64::from(s.to)) {
                next.spec["replicas"] = Value::from(s.to);
                changed = true;
            }
            if !changed {
                return Ok(false);
            }
            match self.store.update(next) {
                Ok(_) => {
                    self.count(|c| c.store_writes += 1);
                    return Ok(true);
                }
                Err(e) if e.kind() == crate::ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn delete_rs(&self, namespace: &str, name: &str) -> Result<()> {
        match self
            .store
            .delete("ReplicaSet", &format!("{namespace}/{name}"), None)
        {
            Ok(_) => {
                self.count(|c| c.store_writes += 1);
                Ok(())
            }
            Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Re-reads the Deployment's ReplicaSets from the store (our own writes are not in the
    /// cache yet).
    fn reload(&self, d: &DeploymentView, prev: &[ReplicaSetView]) -> Result<Vec<ReplicaSetView>> {
        self.reload_with(d, prev, None)
    }

    /// The Deployment's ReplicaSets as the store has them now: those the cache knows (plus
    /// `prev` and a just-created one the cache has not seen yet), each read fresh.
    fn reload_with(
        &self,
        d: &DeploymentView,
        prev: &[ReplicaSetView],
        created: Option<String>,
    ) -> Result<Vec<ReplicaSetView>> {
        let mut keys: std::collections::BTreeSet<String> = self
            .cache
            .owned_by("ReplicaSet", &d.uid)
            .iter()
            .map(|rs| rs.key())
            .collect();
        keys.extend(prev.iter().map(|rs| rs.key()));
        keys.extend(created);
        let mut out = vec![];
        for k in keys {
            let fresh = self.store.get("ReplicaSet", &k)?;
            if let Some(rs) = fresh.filter(|rs| rs.controller_ref().is_some_and(|r| r.uid == d.uid))
            {
                out.push(ReplicaSetView::from_object(&rs)?);
            }
        }
        Ok(out)
    }

    fn instances_of(&self, rss: &[ReplicaSetView]) -> Vec<InstanceView> {
        let mut out = vec![];
        for rs in rss {
            for i in self.cache.instances_owned_by(&rs.uid) {
                out.push(InstanceView::from_object(&i));
            }
        }
        out
    }

    /// Rolls a Deployment back to `to_revision` (0: the previous one) by copying that
    /// revision's template into the Deployment. Returns the revision rolled back to.
    pub(crate) fn rollback(&self, key: &str, to_revision: i64) -> Result<i64> {
        if to_revision < 0 {
            return Err(Error::invalid(
                "to_revision",
                format!("must be ≥ 0, got {to_revision}"),
            ));
        }
        loop {
            let d_obj = self
                .store
                .get("Deployment", key)?
                .ok_or_else(|| Error::NotFound(format!("Deployment {key}")))?;
            let d = DeploymentView::from_object(&d_obj)?;
            let rss = self.reload(&d, &[])?;
            let (new_rs, old) = split(&d, &rss);
            match dep::rollback_plan(&d, to_revision, new_rs, &old) {
                dep::RollbackOutcome::NotFound { message } => return Err(Error::NotFound(message)),
                dep::RollbackOutcome::TemplateUnchanged { revision, .. } => return Ok(revision),
                dep::RollbackOutcome::RolledBack {
                    revision,
                    template,
                    annotations,
                    ..
                } => {
                    let mut next = (*d_obj).clone();
                    next.spec["template"] = template;
                    next.metadata.annotations = annotations;
                    match self.store.update(next) {
                        Ok(_) => return Ok(revision),
                        Err(e) if e.kind() == crate::ErrorKind::Conflict => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Sets `spec.paused`. Pausing a paused Deployment or resuming one that is not paused
    /// (`paused` false or absent, which mean the same) writes nothing, so its generation
    /// does not change: a spec change it is not.
    pub(crate) fn set_paused(&self, key: &str, paused: bool) -> Result<Arc<Object>> {
        self.update_deployment(key, |o| {
            if o.spec
                .get("paused")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                != paused
            {
                o.spec["paused"] = Value::from(paused);
            }
        })
    }

    /// Requests a manual blue-green promotion of the Deployment's current template.
    pub(crate) fn promote(&self, key: &str) -> Result<Arc<Object>> {
        let d_obj = self
            .store
            .get("Deployment", key)?
            .ok_or_else(|| Error::NotFound(format!("Deployment {key}")))?;
        let d = DeploymentView::from_object(&d_obj)?;
        // The template's own hash: the new ReplicaSet's name may yet change with the
        // collision count (a ReplicaSet of a deleted Deployment still holding the name),
        // and the request is for the template, whatever its ReplicaSet is called.
        let hash = du::compute_hash(&d.spec.template, None);
        self.update_deployment(key, |o| {
            o.metadata
                .annotations
                .insert(PROMOTE_ANNOTATION.into(), hash.clone());
        })
    }

    fn update_deployment(&self, key: &str, f: impl Fn(&mut Object)) -> Result<Arc<Object>> {
        loop {
            let cur = self
                .store
                .get("Deployment", key)?
                .ok_or_else(|| Error::NotFound(format!("Deployment {key}")))?;
            let mut next = (*cur).clone();
            f(&mut next);
            match self.store.update(next) {
                Err(e) if e.kind() == crate::ErrorKind::Conflict => continue,
                r => return r,
            }
        }
    }
}

/// Whether some ReplicaSet has not yet observed its latest spec. Its controller still owes
/// a status write for it (it always writes when the generation is unobserved), that write
/// requeues the Deployment, and the Deployment status computed now from the older
/// ReplicaSet status would be overwritten by that sync: the rollout status waits for it.
fn replica_set_status_pending(rss: &[ReplicaSetView]) -> bool {
    rss.iter()
        .any(|rs| rs.generation > rs.status.observed_generation)
}

/// Whether `status` takes a Deployment whose stored `Progressing` condition says its last
/// rollout completed (`NewReplicaSetAvailable`) back into progress. Such a status is written
/// even by a sync that skips its status write otherwise. `syncRolloutStatus` treats a
/// Deployment whose replicas all run the new template and whose condition says complete as
/// complete, without looking at progress again, and it sees progress only against the
/// status last written. A rollout that starts without a new ReplicaSet (a rollback to an
/// existing one, which resets no condition) and goes through while only skipped syncs saw
/// it would keep the previous rollout's condition, naming the previous ReplicaSet, where
/// upstream, writing every step, records `ReplicaSetUpdated` and then a new
/// `NewReplicaSetAvailable` (found by the random-operations simulation). So the status is
/// written when its condition leaves `NewReplicaSetAvailable`, and when it is the first to
/// show replicas not yet updated (the base later progress is measured against).
fn leaves_completion(d: &DeploymentView, status: &dep::DeploymentStatus) -> bool {
    let reason = |cs: &[Condition]| get_condition(cs, dep::PROGRESSING).map(|c| c.reason.clone());
    if reason(&d.status.conditions).as_deref() != Some(dep::NEW_RS_AVAILABLE_REASON) {
        return false;
    }
    let condition_leaves =
        reason(&status.conditions).is_some_and(|r| r != dep::NEW_RS_AVAILABLE_REASON);
    let rollout_begins = d.status.replicas == d.status.updated_replicas
        && status.replicas != status.updated_replicas;
    condition_leaves || rollout_begins
}

/// What a sync did before its `syncRolloutStatus` ([`Shared::rollout_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// A rollout or scaling step. If it wrote a ReplicaSet (`wrote`), the status write is
    /// skipped: that write comes back through the watch and requeues this key, and the sync
    /// it causes computes the status from the ReplicaSets' newer state, so writing now as
    /// well would add a store write per step that the next sync overwrites (except for the
    /// step that takes a completed rollout back into progress, see [`leaves_completion`]).
    Step { wrote: bool },
    /// Completion: old revisions beyond the history limit are cleaned up first. The
    /// cleanup is gated on the status stored when the sync began (`DeploymentComplete(d,
    /// &d.Status)`), not on the one computed now: old revisions go one sync after
    /// completion is recorded.
    Finish,
}

/// `(new, old)` ReplicaSets of a Deployment by template.
fn split<'a>(
    d: &DeploymentView,
    rss: &'a [ReplicaSetView],
) -> (Option<&'a ReplicaSetView>, Vec<ReplicaSetView>) {
    let new_rs = du::find_new_rs(&d.spec.template, rss);
    let old: Vec<ReplicaSetView> = rss
        .iter()
        .filter(|rs| new_rs.is_none_or(|n| n.uid != rs.uid))
        .cloned()
        .collect();
    (new_rs, old)
}

/// What `wait_for_rollout` decided.
pub(crate) enum RolloutState {
    Complete(Value),
    DeadlineExceeded(String),
    InProgress,
}

/// Whether a stored Deployment's rollout is complete, failed, or still going.
pub(crate) fn rollout_state(d_obj: &Object) -> Result<RolloutState> {
    let d = DeploymentView::from_object(d_obj)?;
    let st = &d.status;
    if st.observed_generation < d.generation {
        return Ok(RolloutState::InProgress);
    }
    if let Some(c) = crate::controller::get_condition(&st.conditions, dep::PROGRESSING)
        && c.reason == dep::TIMED_OUT_REASON
    {
        return Ok(RolloutState::DeadlineExceeded(c.message.clone()));
    }
    if dep::deployment_complete(&d, st) {
        return Ok(RolloutState::Complete(d_obj.status.clone()));
    }
    Ok(RolloutState::InProgress)
}

#[cfg(test)]
mod tests {
    //! The Deployment sync on a stepped control plane over a fake clock, with the cache fed
    //! by hand (`cache.pump`) and syncs called directly, so a test can show the controller a
    //! store its cache has not caught up with, and count its retries.

    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::clock::FakeClock;
    use crate::log::Durability;
    use crate::runtime::{ControlPlane, ControlPlaneConfig, NoopDriver};
    use crate::store::{Store, StoreConfig};

    const KEY: &str = "default/web";
    const RETRY_MAX: Duration = Duration::from_secs(10);

    fn plane() -> (Store, Arc<FakeClock>, ControlPlane) {
        let clock = FakeClock::shared();
        let store = Store::memory_with(StoreConfig {
            clock: clock.clone(),
            seed: Some(7),
            durability: Durability::None,
            segment_size: 1 << 20,
            ..StoreConfig::default()
        })
        .unwrap();
        let cp = ControlPlane::stepped(
            store.clone(),
            Arc::new(NoopDriver),
            ControlPlaneConfig {
                clock: clock.clone(),
                retry_max: RETRY_MAX,
                ..ControlPlaneConfig::default()
            },
        )
        .unwrap();
        (store, clock, cp)
    }

    /// A Deployment `name` of 3 replicas of template version `v2`, with `spec` merged in.
    fn deployment(name: &str, spec: Value, annotations: Value) -> Object {
        let mut d = json!({
            "kind": "Deployment",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"version": "v2"}},
            }
        });
        for (k, v) in spec.as_object().unwrap() {
            d["spec"][k] = v.clone();
        }
        Object::from_json(&d).unwrap()
    }

    /// A ReplicaSet of `d_obj` for its template at `version`, as an earlier sync left it:
    /// `replicas` of them, all available and observed, revision `revision`, no other
    /// annotation, minReadySeconds 0.
    fn replica_set(
        store: &Store,
        d_obj: &Object,
        version: &str,
        revision: &str,
        replicas: i32,
    ) -> Arc<Object> {
        let mut d = DeploymentView::from_object(d_obj).unwrap();
        d.spec.template["spec"]["version"] = json!(version);
        d.spec.min_ready_seconds = 0;
        let mut rs = dep::new_replica_set(d_obj, &d, &[]).unwrap();
        rs.spec["replicas"] = json!(replicas);
        rs.metadata.annotations =
            BTreeMap::from([(du::REVISION_ANNOTATION.to_string(), revision.to_string())]);
        let created = store.create(rs).unwrap();
        let mut next = (*created).clone();
        next.status = json!({
            "replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": replicas,
            "availableReplicas": replicas, "observedGeneration": created.metadata.generation,
        });
        store.update_status(next).unwrap()
    }

    fn get(store: &Store, kind: &str, key: &str) -> Arc<Object> {
        store.get(kind, key).unwrap().unwrap()
    }

    fn replica_sets(store: &Store) -> Vec<Arc<Object>> {
        store.list("ReplicaSet", None, None).unwrap().0
    }

    fn progressing(d: &Object) -> Option<crate::controller::Condition> {
        let st = dep::DeploymentStatus::from_json(&d.status).unwrap();
        crate::controller::get_condition(&st.conditions, dep::PROGRESSING).cloned()
    }

    /// A Deployment, in the store and the cache, whose new ReplicaSet the store refuses
    /// (see [`name_too_long_for_its_replica_set`]); its name and key.
    fn deployment_whose_replica_set_cannot_be_created(
        store: &Store,
        s: &Shared,
    ) -> (String, String) {
        let name = name_too_long_for_its_replica_set();
        store
            .create(deployment(&name, json!({}), json!({})))
            .unwrap();
        s.cache.pump(None).unwrap();
        let key = format!("default/{name}");
        (name, key)
    }

    /// A Deployment name the store accepts (253 characters) whose new ReplicaSet's name,
    /// `<name>-<hash>`, it refuses as too long: a create that fails other than
    /// AlreadyExists.
    fn name_too_long_for_its_replica_set() -> String {
        let label = |c: char, n: usize| c.to_string().repeat(n);
        [
            label('a', 63),
            label('b', 63),
            label('c', 63),
            label('d', 61),
        ]
        .join(".")
    }

    #[test]
    fn creating_the_new_replica_set_records_its_revision_on_the_deployment() {
        let (store, _, cp) = plane();
        let s = &cp.shared;
        let created_rv = store
            .create(deployment("web", json!({}), json!({})))
            .unwrap()
            .resource_version()
            .unwrap()
            .unwrap()
            .0;
        s.cache.pump(None).unwrap();
        s.sync_deployment(KEY).unwrap();
        let rss = replica_sets(&store);
        assert_eq!(rss.len(), 1);
        assert_eq!(rss[0].metadata.annotations[du::REVISION_ANNOTATION], "1");
        let d = get(&store, "Deployment", KEY);
        assert_eq!(
            d.metadata.annotations.get(du::REVISION_ANNOTATION),
            Some(&"1".to_string())
        );
        assert_eq!(
            d.metadata.generation, 1,
            "an annotation is not a spec change"
        );
        let p = progressing(&d).unwrap();
        assert_eq!(p.reason, dep::NEW_RS_CREATED_REASON);
        // Both in one write, the sync's first, as upstream's single UpdateStatus.
        let mut w = store.watch(Some("Deployment"), created_rv, None).unwrap();
        let first = w.try_next().unwrap().expect("the Deployment was written");
        assert_eq!(
            first
                .object
                .metadata
                .annotations
                .get(du::REVISION_ANNOTATION),
            Some(&"1".to_string())
        );
        assert_eq!(
            progressing(&first.object).map(|c| c.reason),
            Some(dep::NEW_RS_CREATED_REASON.to_string()),
            "the revision and the condition are one write"
        );
    }

    #[test]
    fn an_existing_new_replica_set_is_brought_up_to_date_then_its_revision_recorded() {
        let (store, _, cp) = plane();
        let s = &cp.shared;
        let d_obj = store
            .create(deployment(
                "web",
                json!({"minReadySeconds": 5}),
                json!({"team": "a"}),
            ))
            .unwrap();
        replica_set(&store, &d_obj, "v1", "3", 0);
        let new_rs = replica_set(&store, &d_obj, "v2", "1", 3);
        let new_key = new_rs.key();
        s.cache.pump(None).unwrap();

        // getNewReplicaSet updates the ReplicaSet and returns; the Deployment's revision
        // follows on the next sync, from the ReplicaSet as written.
        s.sync_deployment(KEY).unwrap();
        let rs = get(&store, "ReplicaSet", &new_key);
        let ann = &rs.metadata.annotations;
        assert_eq!(
            ann.get("team"),
            Some(&"a".to_string()),
            "annotations copied"
        );
        assert_eq!(
            ann[du::REVISION_ANNOTATION],
            "4",
            "raised above the old one's 3"
        );
        assert_eq!(ann[du::REVISION_HISTORY_ANNOTATION], "1");
        assert_eq!(rs.spec["minReadySeconds"], 5);
        let d = get(&store, "Deployment", KEY);
        assert!(!d.metadata.annotations.contains_key(du::REVISION_ANNOTATION));

        s.cache.pump(None).unwrap();
        s.sync_deployment(KEY).unwrap();
        let d = get(&store, "Deployment", KEY);
        assert_eq!(d.metadata.annotations[du::REVISION_ANNOTATION], "4");
        let p = progressing(&d).unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", dep::FOUND_NEW_RS_REASON)
        );
        assert_eq!(
            p.message,
            format!("Found new replica set {:?}", new_rs.metadata.name)
        );
        // Nothing left to change: the next sync writes neither.
        let rs_version = get(&store, "ReplicaSet", &new_key)
            .metadata
            .resource_version
            .clone();
        s.cache.pump(None).unwrap();
        s.sync_deployment(KEY).unwrap();
        assert_eq!(
            get(&store, "ReplicaSet", &new_key)
                .metadata
                .resource_version,
            rs_version
        );
    }

    #[test]
    fn a_new_replica_set_the_cache_has_not_seen_is_used_not_taken_for_a_collision() {
        let (store, _, cp) = plane();
        let s = &cp.shared;
        let d_obj = store
            .create(deployment("web", json!({}), json!({})))
            .unwrap();
        s.cache.pump(None).unwrap();
        // An earlier sync created it; its watch event has not reached the cache.
        let d = DeploymentView::from_object(&d_obj).unwrap();
        store
            .create(dep::new_replica_set(&d_obj, &d, &[]).unwrap())
            .unwrap();
        s.sync_deployment(KEY).unwrap();
        let d = get(&store, "Deployment", KEY);
        assert_eq!(d.status.get("collisionCount"), None);
        assert_eq!(replica_sets(&store).len(), 1);
        assert_eq!(d.metadata.annotations[du::REVISION_ANNOTATION], "1");
    }

    #[test]
    fn a_replica_set_of_another_template_under_the_new_name_is_a_hash_collision() {
        let (store, _, cp) = plane();
        let s = &cp.shared;
        let d_obj = store
            .create(deployment("web", json!({}), json!({})))
            .unwrap();
        let d = DeploymentView::from_object(&d_obj).unwrap();
        let mut other = dep::new_replica_set(&d_obj, &d, &[]).unwrap();
        other.spec["template"]["spec"]["version"] = json!("other");
        store.create(other).unwrap();
        s.cache.pump(None).unwrap();
        let e = s.sync_deployment(KEY).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        assert_eq!(get(&store, "Deployment", KEY).status["collisionCount"], 1);
        // The next sync hashes with the new count and gets a name of its own.
        s.cache.pump(None).unwrap();
        s.sync_deployment(KEY).unwrap();
        assert_eq!(replica_sets(&store).len(), 2);
    }

    #[test]
    fn a_failed_create_of_the_new_replica_set_is_reported_as_progressing_false() {
        let (store, _, cp) = plane();
        let s = &cp.shared;
        let (name, key) = deployment_whose_replica_set_cannot_be_created(&store, s);
        let e = s.sync_deployment(&key).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        let p = progressing(&get(&store, "Deployment", &key)).unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", dep::FAILED_RS_CREATE_REASON)
        );
        assert!(
            p.message
                .starts_with(&format!("Failed to create new replica set \"{name}-")),
            "{}",
            p.message
        );
        assert!(p.message.ends_with(&format!(": {e}")), "{}", p.message);
    }

    #[test]
    fn old_revisions_are_cleaned_up_once_the_stored_status_says_complete() {
        let (store, _, cp) = plane();
        let s = &cp.shared;
        let d_obj = store
            .create(deployment(
                "web",
                json!({"revisionHistoryLimit": 0}),
                json!({}),
            ))
            .unwrap();
        let old = replica_set(&store, &d_obj, "v1", "1", 0);
        replica_set(&store, &d_obj, "v2", "2", 3);
        s.cache.pump(None).unwrap();
        // The ReplicaSets are complete, the stored status is not yet: upstream gates the
        // cleanup on DeploymentComplete(d, &d.Status).
        s.sync_deployment(KEY).unwrap();
        assert!(store.get("ReplicaSet", &old.key()).unwrap().is_some());
        let d = get(&store, "Deployment", KEY);
        assert_eq!(
            progressing(&d).unwrap().reason,
            dep::NEW_RS_AVAILABLE_REASON
        );
        s.cache.pump(None).unwrap();
        s.sync_deployment(KEY).unwrap();
        assert!(store.get("ReplicaSet", &old.key()).unwrap().is_none());
    }

    #[test]
    fn a_sync_that_keeps_failing_is_retried_fifteen_times_then_dropped() {
        let (store, clock, cp) = plane();
        let s = &cp.shared;
        let (_, key) = deployment_whose_replica_set_cannot_be_created(&store, s);
        s.dep_queue.add(key.clone());
        let mut syncs = 0u64;
        for _ in 0..40 {
            let Some(k) = s.dep_queue.try_get() else {
                break;
            };
            s.process_deployment(&k);
            syncs += 1;
            // Past any backoff: the retry is ready, if there is one.
            clock.advance(RETRY_MAX + Duration::from_secs(1));
        }
        assert_eq!(DEPLOYMENT_MAX_RETRIES, 15);
        assert_eq!(syncs, 1 + 15, "the first sync and fifteen retries");
        assert_eq!(s.dep_queue.num_requeues(&key), 0, "forgotten");
        assert!(s.dep_queue.is_empty());
    }

    #[test]
    fn a_selector_that_selects_everything_observes_the_generation_and_is_not_retried() {
        let (store, _, cp) = plane();
        let s = &cp.shared;
        store
            .create(deployment("web", json!({"selector": {}}), json!({})))
            .unwrap();
        s.cache.pump(None).unwrap();
        s.dep_queue.add(KEY.to_string());
        let k = s.dep_queue.try_get().unwrap();
        s.process_deployment(&k);
        assert_eq!(s.dep_queue.num_requeues(&k), 0, "not an error");
        let d = get(&store, "Deployment", KEY);
        assert_eq!(d.status["observedGeneration"], 1);
        assert!(
            replica_sets(&store).is_empty(),
            "nothing is selected or made"
        );
    }
}
