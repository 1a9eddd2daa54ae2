//! The pure parts of the ReplicaSet controller (`k8s-semantics.md` §3): decoding a
//! ReplicaSet, slow-start batches, the deletion victim ranking, the `manageReplicas` plan,
//! `calculateStatus` with the `ReplicaFailure` condition, and adoption / release decisions.
//! Executing a plan (creating, deleting, patching owner references, writing status) and
//! feeding [`super::Expectations`] is the runtime's job.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::gosort::go_sort;
use super::instance::{InstanceView, is_active, is_available, phase_ordinal};
use super::{
    CONDITION_TRUE, Condition, get_condition, nonnegative_int32, parse_time, remove_condition,
    truncate_to_secs,
};
use crate::error::{Error, Result};
use crate::store::{LabelSelector, Object, OwnerReference};

/// The most instances one sync creates or deletes (`BurstReplicas`).
pub const BURST_REPLICAS_MAX: usize = 500;
/// The first slow-start batch (`SlowStartInitialBatchSize`).
pub const SLOW_START_INITIAL_BATCH_SIZE: usize = 1;
/// The condition type set when creating or deleting fails.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
/// Reason of [`REPLICA_FAILURE`] when instances were missing.
pub const FAILED_CREATE: &str = "FailedCreate";
/// Reason of [`REPLICA_FAILURE`] when instances were in excess.
pub const FAILED_DELETE: &str = "FailedDelete";

/// The spec of a ReplicaSet, defaulted and validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicaSetSpec {
    /// `spec.replicas` (default 1).
    pub replicas: i32,
    pub selector: LabelSelector,
    /// `spec.template` as stored (`{metadata: {labels, annotations}, spec}`).
    pub template: Value,
    /// `spec.template.metadata.labels`.
    pub template_labels: BTreeMap<String, String>,
    pub min_ready_seconds: i32,
}

impl ReplicaSetSpec {
    /// Decodes and validates `obj.spec` like the API server (`ValidateReplicaSetSpec`):
    /// replicas and minReadySeconds int32 ≥ 0, a non-empty selector that matches the
    /// template's labels.
    pub fn from_spec(spec: &Value) -> Result<ReplicaSetSpec> {
        let replicas = nonnegative_int32(spec.get("replicas"), "spec.replicas")?.unwrap_or(1);
        let (selector, template, template_labels) = selector_and_template(spec)?;
        let min_ready_seconds =
            nonnegative_int32(spec.get("minReadySeconds"), "spec.minReadySeconds")?.unwrap_or(0);
        Ok(ReplicaSetSpec {
            replicas,
            selector,
            template,
            template_labels,
            min_ready_seconds,
        })
    }
}

/// Selector and template checks shared by ReplicaSets and Deployments.
pub(crate) fn selector_and_template(
    spec: &Value,
) -> Result<(LabelSelector, Value, BTreeMap<String, String>)> {
    let sel_json = match spec.get("selector") {
        None | Some(Value::Null) => return Err(Error::invalid("spec.selector", "Required value")),
        Some(v) => v,
    };
    let selector = LabelSelector::from_json(sel_json, "spec.selector")?;
    if selector.is_empty() {
        return Err(Error::invalid(
            "spec.selector",
            "empty selector is invalid for deployment",
        ));
    }
    let template = match spec.get("template") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(t @ Value::Object(_)) => t.clone(),
        Some(other) => {
            return Err(Error::invalid(
                "spec.template",
                format!("must be an object, got {}", super::json_type(other)),
            ));
        }
    };
    if let Some(spec) = template.get("spec") {
        super::probe::Probes::from_instance_spec(spec, "spec.template.spec")?;
    }
    let mut labels = BTreeMap::new();
    match template.pointer("/metadata/labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Some(v) = v.as_str() else {
                    return Err(Error::invalid(
                        format!("spec.template.metadata.labels[{k:?}]"),
                        "must be a string",
                    ));
                };
                labels.insert(k.clone(), v.to_string());
            }
        }
        Some(_) => {
            return Err(Error::invalid(
                "spec.template.metadata.labels",
                "must be a map of strings to strings",
            ));
        }
    }
    if !selector.matches(&labels) {
        return Err(Error::invalid(
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        ));
    }
    Ok((selector, template, labels))
}

/// `ReplicaSetStatus` (`terminatingReplicas`, feature-gated upstream, is not modelled).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplicaSetStatus {
    #[serde(skip_serializing_if = "is_zero32")]
    pub replicas: i32,
    #[serde(skip_serializing_if = "is_zero32")]
    pub fully_labeled_replicas: i32,
    #[serde(skip_serializing_if = "is_zero32")]
    pub ready_replicas: i32,
    #[serde(skip_serializing_if = "is_zero32")]
    pub available_replicas: i32,
    #[serde(skip_serializing_if = "is_zero64")]
    pub observed_generation: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn is_zero32(n: &i32) -> bool {
    *n == 0
}
fn is_zero64(n: &i64) -> bool {
    *n == 0
}

impl ReplicaSetStatus {
    /// Decodes `obj.status` (`null` is the empty status); a wrong shape is `Invalid`
    /// naming `status`.
    pub fn from_json(v: &Value) -> Result<ReplicaSetStatus> {
        if v.is_null() {
            return Ok(ReplicaSetStatus::default());
        }
        serde_json::from_value(v.clone()).map_err(|e| Error::invalid("status", e.to_string()))
    }

    /// The JSON form (zero counters left out, as Kubernetes' `omitempty`).
    pub fn to_json(&self) -> Value {
        status_to_json(self)
    }
}

/// The JSON form of a ReplicaSet status.
pub fn status_to_json(s: &ReplicaSetStatus) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// A ReplicaSet as the controllers read it. Deployment arithmetic only needs `name`,
/// `creation`, `spec.replicas`, `status` and `annotations`; tests build it with
/// `..Default::default()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicaSetView {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: i64,
    pub creation: Option<SystemTime>,
    pub deleting: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub controller_uid: Option<String>,
    pub spec: ReplicaSetSpec,
    pub status: ReplicaSetStatus,
}

impl ReplicaSetView {
    /// Decodes and validates a stored ReplicaSet.
    pub fn from_object(obj: &Object) -> Result<ReplicaSetView> {
        Ok(ReplicaSetView {
            name: obj.metadata.name.clone(),
            namespace: obj.metadata.namespace.clone(),
            uid: obj.metadata.uid.clone(),
            generation: obj.metadata.generation,
            creation: obj
                .metadata
                .creation_timestamp
                .as_deref()
                .and_then(parse_time),
            deleting: obj.metadata.deletion_timestamp.is_some(),
            labels: obj.metadata.labels.clone(),
            annotations: obj.metadata.annotations.clone(),
            controller_uid: obj.controller_ref().map(|r| r.uid.clone()),
            spec: ReplicaSetSpec::from_spec(&obj.spec)?,
            status: ReplicaSetStatus::from_json(&obj.status)?,
        })
    }

    /// `"namespace/name"`.
    pub fn key(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Slow start

/// The batch sizes `slowStartBatch(count, initial)` uses: `min(count, initial)`, then
/// doubling, capped by what remains. 500 → 1, 2, 4, 8, 16, 32, 64, 128, 245.
pub fn slow_start_batch_sizes(count: usize, initial: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut remaining = count;
    let mut batch = remaining.min(initial);
    while batch > 0 {
        sizes.push(batch);
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    sizes
}

/// `slowStartBatch`: calls `f(i)` for `i` in `0..count`, batch by batch (sizes as
/// [`slow_start_batch_sizes`]); every call of a batch is made, and if any failed no further
/// batch starts. Returns the number of successful calls and the first error. The runtime
/// runs the calls of one batch concurrently; here they run in order.
pub fn slow_start_batch<E>(
    count: usize,
    initial: usize,
    mut f: impl FnMut(usize) -> std::result::Result<(), E>,
) -> (usize, Option<E>) {
    let mut successes = 0;
    let mut next = 0;
    for size in slow_start_batch_sizes(count, initial) {
        let mut first_err = None;
        for i in next..next + size {
            match f(i) {
                Ok(()) => successes += 1,
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        next += size;
        if first_err.is_some() {
            return (successes, first_err);
        }
    }
    (successes, None)
}

/// The creations that will never be observed after a slow start (K3): exactly
/// `expected − successes`, by which the expectations must be lowered.
pub fn skipped_creations(expected: usize, successes: usize) -> usize {
    expected.saturating_sub(successes)
}

// ---------------------------------------------------------------------------------------
// Deletion ranking

/// `floor(log2(d in ns))` as Go computes `int64(math.Log2(float64(d)))` (−1 when d ≤ 0).
fn log2_bucket(now: SystemTime, t: SystemTime) -> i64 {
    let d: i128 = match now.duration_since(t) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    if d <= 0 {
        return -1;
    }
    let d = d.min(i64::MAX as i128) as i64;
    go_log2(d as f64) as i64
}

/// Go's `math.Log2`: `frexp`, exact for powers of two, else `ln(frac)/ln 2 + exp`.
fn go_log2(x: f64) -> f64 {
    // frexp for a positive normal x: x = frac · 2^exp with frac in [0.5, 1).
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1022;
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    if frac == 0.5 {
        return (exp - 1) as f64;
    }
    frac.ln() * (1.0 / std::f64::consts::LN_2) + exp as f64
}

/// `afterOrZero`: a zero time first, else the later one first.
fn after_or_zero(t1: Option<SystemTime>, t2: Option<SystemTime>) -> bool {
    match (t1, t2) {
        (None, _) | (_, None) => t1.is_none(),
        (Some(a), Some(b)) => a > b,
    }
}

/// Compares two times with the `LogarithmicScaleDown` rule; `None` when they are equal.
fn log_compare(
    t1: Option<SystemTime>,
    t2: Option<SystemTime>,
    uid1: &str,
    uid2: &str,
    now: SystemTime,
) -> Option<bool> {
    if t1 == t2 {
        return None;
    }
    let (Some(a), Some(b)) = (t1, t2) else {
        return Some(after_or_zero(t1, t2));
    };
    let diff = log2_bucket(now, a) - log2_bucket(now, b);
    if diff == 0 {
        return Some(uid1 < uid2);
    }
    Some(diff < 0)
}

/// `ActivePodsWithRanks.Less`: whether `i` (with `rank_i` co-located related instances)
/// should be deleted before `j`, in upstream's order: unassigned first; phase Pending <
/// Unknown < Running; not ready first; lower deletion cost; higher rank; both ready → the
/// more recently ready by log2 bucket of age, equal buckets broken by the smaller UID; more
/// restarts; creation time by log2 bucket, then UID. Gates `PodDeletionCost` and
/// `LogarithmicScaleDown` are on, as by default.
pub fn instance_less(
    i: &InstanceView,
    rank_i: usize,
    j: &InstanceView,
    rank_j: usize,
    now: SystemTime,
) -> bool {
    // 1. Unassigned < assigned.
    if i.node_name != j.node_name && (i.node_name.is_empty() || j.node_name.is_empty()) {
        return i.node_name.is_empty();
    }
    // 2. Pending < Unknown < Running.
    let (pi, pj) = (phase_ordinal(&i.phase), phase_ordinal(&j.phase));
    if pi != pj {
        return pi < pj;
    }
    // 3. Not ready < ready.
    if i.ready != j.ready {
        return !i.ready;
    }
    // 4. Lower deletion cost first.
    if i.deletion_cost != j.deletion_cost {
        return i.deletion_cost < j.deletion_cost;
    }
    // 5. More co-located related instances first.
    if rank_i != rank_j {
        return rank_i > rank_j;
    }
    // 6. Both ready: more recently ready first (log2 buckets, then UID).
    if i.ready
        && j.ready
        && let Some(r) = log_compare(i.ready_transition, j.ready_transition, &i.uid, &j.uid, now)
    {
        return r;
    }
    // 7. More restarts first.
    if i.restart_count != j.restart_count {
        return i.restart_count > j.restart_count;
    }
    // 8. Newer first (log2 buckets, then UID); zero time first.
    if let Some(r) = log_compare(i.creation, j.creation, &i.uid, &j.uid, now) {
        return r;
    }
    false
}

/// `getPodsToDelete`: the indices of the `diff` instances to delete. When `diff ≥ len` no
/// ranking happens and the first `diff` are returned in input order. Otherwise each
/// instance's rank is the number of *active* `related` instances on its node (`""` for
/// unassigned ones), the instances are sorted with [`instance_less`] exactly as Go's
/// `sort.Sort` would, and the first `diff` are taken.
pub fn rank_instances_for_deletion(
    instances: &[InstanceView],
    related: &[InstanceView],
    diff: usize,
    now: SystemTime,
) -> Vec<usize> {
    if diff >= instances.len() {
        return (0..instances.len()).collect();
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for r in related.iter().filter(|r| is_active(r)) {
        *on_node.entry(r.node_name.as_str()).or_default() += 1;
    }
    let ranks: Vec<usize> = instances
        .iter()
        .map(|i| on_node.get(i.node_name.as_str()).copied().unwrap_or(0))
        .collect();
    let mut order: Vec<usize> = (0..instances.len()).collect();
    go_sort(&mut order, |&a, &b| {
        instance_less(&instances[a], ranks[a], &instances[b], ranks[b], now)
    });
    order.truncate(diff);
    order
}

// ---------------------------------------------------------------------------------------
// manageReplicas

/// What one sync of a ReplicaSet should do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaPlan {
    /// `len(active) − spec.replicas`.
    pub diff: i64,
    /// Instances to create (`min(−diff, burst)`); call `expect_creations(key, create)`
    /// first, then create them in slow-start batches.
    pub create: usize,
    /// Keys of instances to delete (at most `burst`); call `expect_deletions(key, &delete)`
    /// first.
    pub delete: Vec<String>,
}

/// `manageReplicas` as a plan: `diff = len(active) − replicas`; missing instances are created
/// (at most `burst_replicas`, itself capped at [`BURST_REPLICAS_MAX`]); excess instances are
/// chosen with [`rank_instances_for_deletion`] against `related` (the active instances of
/// every ReplicaSet with the same controller owner; pass `active` when there is none).
pub fn manage_replicas_plan(
    spec: &ReplicaSetSpec,
    active: &[InstanceView],
    related: &[InstanceView],
    burst_replicas: usize,
    now: SystemTime,
) -> ReplicaPlan {
    let burst = burst_replicas.min(BURST_REPLICAS_MAX);
    let diff = active.len() as i64 - i64::from(spec.replicas);
    let mut plan = ReplicaPlan {
        diff,
        ..Default::default()
    };
    if diff < 0 {
        plan.create = (diff.unsigned_abs() as usize).min(burst);
    } else if diff > 0 {
        let n = (diff as usize).min(burst);
        plan.delete = rank_instances_for_deletion(active, related, n, now)
            .into_iter()
            .map(|i| active[i].key.clone())
            .collect();
    }
    plan
}

// ---------------------------------------------------------------------------------------
// Status

/// `calculateStatus` over the claimed active instances (others are ignored): replicas,
/// fully-labeled (labels ⊇ template labels), ready, available (`minReadySeconds` rule);
/// `ReplicaFailure` added when `manage_error` is set and none exists (reason `FailedCreate`
/// when instances were missing, `FailedDelete` when in excess, `""` otherwise), removed when
/// there is no error; `observedGeneration` = the ReplicaSet's generation (what the status
/// write sets).
pub fn calculate_status(
    rs: &ReplicaSetView,
    claimed: &[InstanceView],
    manage_error: Option<&str>,
    now: SystemTime,
) -> ReplicaSetStatus {
    let mut status = rs.status.clone();
    let active: Vec<&InstanceView> = claimed.iter().filter(|i| is_active(i)).collect();
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for i in &active {
        if rs
            .spec
            .template_labels
            .iter()
            .all(|(k, v)| i.labels.get(k) == Some(v))
        {
            fully_labeled += 1;
        }
        if i.ready {
            ready += 1;
            if is_available(i, rs.spec.min_ready_seconds, now) {
                available += 1;
            }
        }
    }
    let existing = get_condition(&rs.status.conditions, REPLICA_FAILURE).is_some();
    match manage_error {
        Some(msg) if !existing => {
            let diff = active.len() as i64 - i64::from(rs.spec.replicas);
            let reason = match diff {
                d if d < 0 => FAILED_CREATE,
                d if d > 0 => FAILED_DELETE,
                _ => "",
            };
            let cond = Condition {
                type_: REPLICA_FAILURE.to_string(),
                status: CONDITION_TRUE.to_string(),
                reason: reason.to_string(),
                message: msg.to_string(),
                last_update_time: None,
                last_transition_time: Some(truncate_to_secs(now)),
            };
            set_rs_condition(&mut status.conditions, cond);
        }
        None if existing => remove_condition(&mut status.conditions, REPLICA_FAILURE),
        _ => {}
    }
    status.replicas = clamp_i32(active.len());
    status.fully_labeled_replicas = clamp_i32(fully_labeled);
    status.ready_replicas = clamp_i32(ready);
    status.available_replicas = clamp_i32(available);
    status.observed_generation = rs.generation;
    status
}

fn clamp_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// ReplicaSet `SetCondition`: a condition with the same status and reason is not rewritten;
/// otherwise the old one of that type is dropped and the new one appended.
pub fn set_rs_condition(conditions: &mut Vec<Condition>, cond: Condition) {
    if let Some(cur) = get_condition(conditions, &cond.type_)
        && cur.status == cond.status
        && cur.reason == cond.reason
    {
        return;
    }
    remove_condition(conditions, &cond.type_);
    conditions.push(cond);
}

/// Whether the status must be written (`updateReplicaSetStatus`): any counter or condition
/// changed, or the generation is not yet observed.
pub fn status_needs_update(rs: &ReplicaSetView, new: &ReplicaSetStatus) -> bool {
    let old = &rs.status;
    !(old.replicas == new.replicas
        && old.fully_labeled_replicas == new.fully_labeled_replicas
        && old.ready_replicas == new.ready_replicas
        && old.available_replicas == new.available_replicas
        && rs.generation == old.observed_generation
        && old.conditions == new.conditions)
}

/// After a successful status write: requeue after `minReadySeconds` when every replica is
/// ready but not all are available yet (`syncReplicaSet` step 8).
pub fn min_ready_requeue(rs: &ReplicaSetView, status: &ReplicaSetStatus) -> Option<Duration> {
    let r = rs.spec.replicas;
    (rs.spec.min_ready_seconds > 0 && status.ready_replicas == r && status.available_replicas != r)
        .then(|| Duration::from_secs(rs.spec.min_ready_seconds as u64))
}

// ---------------------------------------------------------------------------------------
// Adoption and release

/// What `ClaimPods` / `ClaimReplicaSets` would do, as indices into the input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimPlan {
    /// Already controlled by the owner and matching its selector.
    pub claimed: Vec<usize>,
    /// Orphans to adopt (patch in [`controller_ref`]); claimed once the patch succeeds
    /// (NotFound: skip). Upstream re-reads the owner from the store first to check it still
    /// exists with the same UID and no deletion timestamp.
    pub adopt: Vec<usize>,
    /// Controlled by the owner but no longer matching: remove the owner reference
    /// (NotFound: ignore).
    pub release: Vec<usize>,
}

/// `ClaimObject` for each object: controlled by someone else → ignored; controlled by
/// `owner` → claimed if `selector` matches, else released unless `owner` is being deleted;
/// an orphan is adopted if `owner` is not being deleted, `selector` matches, the object is
/// not being deleted and is in `owner`'s namespace.
pub fn claim(owner: &Object, selector: &LabelSelector, objects: &[Object]) -> ClaimPlan {
    let mut plan = ClaimPlan::default();
    let owner_deleting = owner.metadata.deletion_timestamp.is_some();
    for (idx, obj) in objects.iter().enumerate() {
        let matches = selector.matches(&obj.metadata.labels);
        match obj.controller_ref() {
            Some(r) if r.uid != owner.metadata.uid => {}
            Some(_) => {
                if matches {
                    plan.claimed.push(idx);
                } else if !owner_deleting {
                    plan.release.push(idx);
                }
            }
            None => {
                if owner_deleting || !matches || obj.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if !owner.metadata.namespace.is_empty()
                    && owner.metadata.namespace != obj.metadata.namespace
                {
                    continue;
                }
                plan.adopt.push(idx);
            }
        }
    }
    plan
}

/// The controller owner reference `owner` puts on what it adopts or creates
/// (`controller: true`, `blockOwnerDeletion: true`).
pub fn controller_ref(owner: &Object) -> OwnerReference {
    OwnerReference {
        kind: owner.kind.clone(),
        name: owner.metadata.name.clone(),
        uid: owner.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> SystemTime {
        parse_time(s).unwrap()
    }

    #[test]
    fn slow_start_batch_sizes_table() {
        let cases: &[(usize, usize, &[usize])] = &[
            (0, 1, &[]),
            (1, 1, &[1]),
            (2, 1, &[1, 1]),
            (3, 1, &[1, 2]),
            (10, 1, &[1, 2, 4, 3]),
            (500, 1, &[1, 2, 4, 8, 16, 32, 64, 128, 245]),
            (5, 0, &[]),
            (10, 4, &[4, 6]),
            (3, 5, &[3]),
        ];
        for (count, initial, want) in cases {
            assert_eq!(
                &slow_start_batch_sizes(*count, *initial),
                want,
                "{count}/{initial}"
            );
        }
    }

    #[test]
    fn slow_start_stops_at_the_first_failed_batch() {
        // (count, failing call indices, successes, calls made)
        let cases: &[(usize, &[usize], usize, usize)] = &[
            (10, &[], 10, 10),
            (10, &[0], 0, 1),
            (10, &[1], 2, 3),        // batch 2 (calls 1,2) runs fully
            (10, &[7], 9, 10),       // batch 4 is 7..10: 2 of 3 succeed
            (10, &[3, 4], 5, 7),     // batch 3 (3..7) fails twice
            (500, &[499], 499, 500), // last batch
            (500, &[300], 499, 500), // batch 245 (255..500) has one failure
            (500, &[100], 126, 127), // batch 64 (63..127) fails: no batch of 128
        ];
        for (count, failing, want_ok, want_calls) in cases {
            let mut calls = 0;
            let (ok, err) = slow_start_batch(*count, 1, |i| {
                calls += 1;
                if failing.contains(&i) { Err(i) } else { Ok(()) }
            });
            assert_eq!(ok, *want_ok, "{count} {failing:?}");
            assert_eq!(calls, *want_calls, "{count} {failing:?}");
            assert_eq!(err, failing.first().copied(), "first error is returned");
            assert_eq!(skipped_creations(*count, ok), count - want_ok);
        }
    }

    fn inst(uid: &str) -> InstanceView {
        InstanceView {
            key: format!("ns/{uid}"),
            name: uid.into(),
            uid: uid.into(),
            node_name: "n".into(),
            phase: "Running".into(),
            ready: true,
            ready_transition: Some(t("2026-01-01T00:00:00Z")),
            creation: Some(t("2026-01-01T00:00:00Z")),
            ..Default::default()
        }
    }

    #[test]
    fn less_order_table() {
        let now = t("2026-01-02T00:00:00Z");
        let base = inst("b");
        let with = |f: &dyn Fn(&mut InstanceView)| {
            let mut i = inst("a");
            f(&mut i);
            i
        };
        // (i, rank_i, j, rank_j, i-before-j, j-before-i)
        let cases: Vec<(&str, InstanceView, usize, InstanceView, usize, bool, bool)> = vec![
            ("identical", inst("b"), 0, inst("b"), 0, false, false),
            (
                "unassigned first",
                with(&|i| i.node_name.clear()),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
            (
                "pending before running",
                with(&|i| i.phase = "Pending".into()),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
            (
                "unknown before running",
                with(&|i| i.phase = "Unknown".into()),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
            (
                "empty phase like pending",
                with(&|i| i.phase = "".into()),
                0,
                with(&|i| i.phase = "Unknown".into()),
                0,
                true,
                false,
            ),
            (
                "not ready first",
                with(&|i| i.ready = false),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
            (
                "lower cost first",
                with(&|i| i.deletion_cost = -1),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
            (
                "cost beats rank",
                with(&|i| i.deletion_cost = 1),
                5,
                base.clone(),
                0,
                false,
                true,
            ),
            (
                "higher rank first",
                inst("a"),
                3,
                base.clone(),
                1,
                true,
                false,
            ),
            (
                "recently ready first (other bucket)",
                with(&|i| i.ready_transition = Some(t("2026-01-01T23:59:00Z"))),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
            // Ready 60 s vs 100 s ago: log2(6e10)=35.8, log2(1e11)=36.5 → buckets 35, 36.
            (
                "60s vs 100s",
                with(&|i| i.ready_transition = Some(t("2026-01-01T23:59:00Z"))),
                0,
                {
                    let mut b = inst("0");
                    b.ready_transition = Some(t("2026-01-01T23:58:20Z"));
                    b
                },
                0,
                true,
                false,
            ),
            // 70 s vs 80 s: both bucket 36 → the smaller UID decides.
            (
                "same bucket: uid",
                with(&|i| i.ready_transition = Some(t("2026-01-01T23:58:50Z"))),
                0,
                {
                    let mut b = inst("b");
                    b.ready_transition = Some(t("2026-01-01T23:58:40Z"));
                    b
                },
                0,
                true,
                false,
            ),
            (
                "same bucket: uid ends comparison before restarts",
                with(&|i| {
                    i.ready_transition = Some(t("2026-01-01T23:58:40Z"));
                    i.restart_count = 0;
                }),
                0,
                {
                    let mut b = inst("b");
                    b.ready_transition = Some(t("2026-01-01T23:58:50Z"));
                    b.restart_count = 9;
                    b
                },
                0,
                true,
                false,
            ),
            (
                "zero ready time first",
                with(&|i| i.ready_transition = None),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
            (
                "more restarts first",
                with(&|i| i.restart_count = 2),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
            (
                "not-ready ignore ready time: restarts",
                with(&|i| {
                    i.ready = false;
                    i.ready_transition = None;
                    i.restart_count = 1;
                }),
                0,
                with(&|i| {
                    i.ready = false;
                    i.uid = "z".into();
                }),
                0,
                true,
                false,
            ),
            (
                "newer creation first",
                with(&|i| i.creation = Some(t("2026-01-01T20:00:00Z"))),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
            (
                "same creation bucket: uid",
                with(&|i| i.creation = Some(t("2026-01-01T00:00:05Z"))),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
            (
                "same creation bucket: uid (reversed)",
                {
                    let mut i = inst("z");
                    i.creation = Some(t("2026-01-01T00:00:05Z"));
                    i
                },
                0,
                base.clone(),
                0,
                false,
                true,
            ),
            (
                "zero creation first",
                with(&|i| i.creation = None),
                0,
                base.clone(),
                0,
                true,
                false,
            ),
        ];
        for (name, i, ri, j, rj, ij, ji) in cases {
            assert_eq!(instance_less(&i, ri, &j, rj, now), ij, "{name}: i<j");
            assert_eq!(instance_less(&j, rj, &i, ri, now), ji, "{name}: j<i");
        }
    }

    #[test]
    fn log2_buckets_match_go() {
        let now = t("2026-01-01T00:00:00Z");
        let cases: &[(u64, i64)] = &[
            (1, 0),
            (2, 1),
            (3, 1),
            (4, 2),
            (1023, 9),
            (1024, 10),
            (1_000_000_000, 29),
            (60_000_000_000, 35),
            (100_000_000_000, 36),
            (1 << 40, 40),
            ((1 << 40) - 1, 39),
        ];
        for (ns, want) in cases {
            let then = now - Duration::from_nanos(*ns);
            assert_eq!(log2_bucket(now, then), *want, "{ns}");
        }
        assert_eq!(log2_bucket(now, now), -1);
        assert_eq!(log2_bucket(now, now + Duration::from_secs(1)), -1);
    }

    #[test]
    fn ranking_picks_victims() {
        let now = t("2026-01-02T00:00:00Z");
        let mut a = inst("a");
        a.node_name = "n1".into();
        let mut b = inst("b");
        b.node_name = "n2".into();
        let mut c = inst("c");
        c.node_name = "n2".into();
        let mut d = inst("d");
        d.node_name = "".into();
        let instances = vec![a.clone(), b.clone(), c.clone(), d.clone()];
        // Related: two on n2, one on n1, plus an inactive one on n1 that does not count.
        let mut dead = inst("x");
        dead.node_name = "n1".into();
        dead.phase = "Failed".into();
        let related = vec![a.clone(), b.clone(), c.clone(), dead];
        // Unassigned first, then the doubled-up n2 pair (uid order within the same bucket).
        assert_eq!(
            rank_instances_for_deletion(&instances, &related, 1, now),
            vec![3]
        );
        assert_eq!(
            rank_instances_for_deletion(&instances, &related, 3, now),
            vec![3, 1, 2]
        );
        // diff ≥ len: input order, no ranking.
        assert_eq!(
            rank_instances_for_deletion(&instances, &related, 4, now),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            rank_instances_for_deletion(&instances, &related, 9, now),
            vec![0, 1, 2, 3]
        );
        assert!(rank_instances_for_deletion(&instances, &related, 0, now).is_empty());
    }

    #[test]
    fn manage_replicas_plans() {
        let now = t("2026-01-02T00:00:00Z");
        let spec = |r| ReplicaSetSpec {
            replicas: r,
            ..Default::default()
        };
        let insts: Vec<InstanceView> = (0..5).map(|i| inst(&format!("i{i}"))).collect();
        let p = manage_replicas_plan(&spec(8), &insts, &insts, 500, now);
        assert_eq!((p.diff, p.create, p.delete.len()), (-3, 3, 0));
        let p = manage_replicas_plan(&spec(5), &insts, &insts, 500, now);
        assert_eq!(
            p,
            ReplicaPlan {
                diff: 0,
                create: 0,
                delete: vec![]
            }
        );
        let p = manage_replicas_plan(&spec(2), &insts, &insts, 500, now);
        assert_eq!(p.diff, 3);
        // All equal (same times): Go's insertion sort keeps input order.
        assert_eq!(p.delete, vec!["ns/i0", "ns/i1", "ns/i2"]);
        let p = manage_replicas_plan(&spec(2), &insts, &insts, 2, now);
        assert_eq!(p.delete.len(), 2, "burst caps deletions");
        let p = manage_replicas_plan(&spec(2000), &insts, &insts, 10_000, now);
        assert_eq!(p.create, 500, "burst never exceeds 500");
        let p = manage_replicas_plan(&spec(0), &insts, &insts, 500, now);
        assert_eq!(p.delete.len(), 5);
    }

    fn rs_view(replicas: i32, min_ready: i32) -> ReplicaSetView {
        ReplicaSetView {
            name: "web".into(),
            namespace: "ns".into(),
            generation: 4,
            spec: ReplicaSetSpec {
                replicas,
                min_ready_seconds: min_ready,
                template_labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn calculate_status_table() {
        let now = t("2026-01-01T00:10:00Z");
        let labeled = |uid: &str, ready: bool, since: &str| {
            let mut i = inst(uid);
            i.labels = BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                ("extra".to_string(), "x".to_string()),
            ]);
            i.ready = ready;
            i.ready_transition = Some(t(since));
            i
        };
        let mut unlabeled = labeled("u", true, "2026-01-01T00:00:00Z");
        unlabeled.labels.clear();
        let mut terminating = labeled("t", true, "2026-01-01T00:00:00Z");
        terminating.deleting = true;
        let claimed = vec![
            labeled("a", true, "2026-01-01T00:00:00Z"),  // available
            labeled("b", true, "2026-01-01T00:09:50Z"),  // ready 10 s: not yet for 30 s
            labeled("c", false, "2026-01-01T00:00:00Z"), // not ready
            unlabeled,                                   // ready, available, not labeled
            terminating,                                 // ignored
        ];
        // (minReadySeconds, replicas, fully, ready, available)
        for (mrs, want) in [
            (0, (4, 3, 3, 3)),
            (30, (4, 3, 3, 2)),
            (599, (4, 3, 3, 2)),
            (600, (4, 3, 3, 0)),
        ] {
            let rs = rs_view(4, mrs);
            let s = calculate_status(&rs, &claimed, None, now);
            assert_eq!(
                (
                    s.replicas,
                    s.fully_labeled_replicas,
                    s.ready_replicas,
                    s.available_replicas
                ),
                want,
                "minReadySeconds {mrs}"
            );
            assert_eq!(s.observed_generation, 4);
            assert!(s.conditions.is_empty());
        }
        let rs = rs_view(4, 30);
        let s = calculate_status(&rs, &claimed, None, now);
        assert_eq!(min_ready_requeue(&rs, &s), None, "ready 3 ≠ 4");
        let rs3 = rs_view(3, 30);
        let s3 = calculate_status(&rs3, &claimed[..4], None, now);
        assert_eq!(s3.ready_replicas, 3);
        assert_eq!(min_ready_requeue(&rs3, &s3), Some(Duration::from_secs(30)));
    }

    #[test]
    fn replica_failure_condition_rules() {
        let now = t("2026-01-01T00:10:00Z");
        let claimed: Vec<InstanceView> = (0..2).map(|i| inst(&format!("i{i}"))).collect();
        // (spec replicas, error, expected reason)
        for (replicas, reason) in [(3, FAILED_CREATE), (1, FAILED_DELETE), (2, "")] {
            let rs = rs_view(replicas, 0);
            let s = calculate_status(&rs, &claimed, Some("quota exceeded"), now);
            assert_eq!(s.conditions.len(), 1);
            let c = &s.conditions[0];
            assert_eq!(
                (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
                (REPLICA_FAILURE, "True", reason)
            );
            assert_eq!(c.message, "quota exceeded");
            assert_eq!(c.last_transition_time, Some(now));
        }
        // An existing one is kept as is (not rewritten) while errors continue.
        let mut rs = rs_view(3, 0);
        let first = calculate_status(&rs, &claimed, Some("e1"), now);
        rs.status = first.clone();
        let later = calculate_status(&rs, &claimed, Some("e2"), now + Duration::from_secs(60));
        assert_eq!(later.conditions, first.conditions);
        assert!(!status_needs_update(
            &ReplicaSetView {
                status: later.clone(),
                ..rs.clone()
            },
            &later
        ));
        // No error: removed.
        let ok = calculate_status(&rs, &claimed, None, now);
        assert!(ok.conditions.is_empty());
        assert!(status_needs_update(&rs, &ok));
        // SetCondition rules directly.
        let mut conds = vec![];
        let c = |status: &str, reason: &str, msg: &str| Condition {
            type_: "X".into(),
            status: status.into(),
            reason: reason.into(),
            message: msg.into(),
            last_update_time: None,
            last_transition_time: None,
        };
        set_rs_condition(&mut conds, c("True", "A", "1"));
        set_rs_condition(&mut conds, c("True", "A", "2"));
        assert_eq!(
            conds[0].message, "1",
            "same status and reason: not rewritten"
        );
        set_rs_condition(&mut conds, c("True", "B", "3"));
        assert_eq!((conds.len(), conds[0].message.as_str()), (1, "3"));
    }

    #[test]
    fn status_json_and_generation_rule() {
        let mut rs = rs_view(2, 0);
        let s = ReplicaSetStatus {
            replicas: 2,
            ready_replicas: 1,
            observed_generation: 4,
            ..Default::default()
        };
        assert_eq!(
            status_to_json(&s),
            json!({"replicas": 2, "readyReplicas": 1, "observedGeneration": 4})
        );
        assert_eq!(ReplicaSetStatus::from_json(&status_to_json(&s)).unwrap(), s);
        assert_eq!(
            ReplicaSetStatus::from_json(&Value::Null).unwrap(),
            ReplicaSetStatus::default()
        );
        assert!(ReplicaSetStatus::from_json(&json!({"replicas": "x"})).is_err());
        rs.status = s.clone();
        assert!(!status_needs_update(&rs, &s));
        rs.generation = 5;
        assert!(
            status_needs_update(&rs, &s),
            "unobserved generation forces a write"
        );
    }

    fn obj(v: Value) -> Object {
        Object::from_json(&v).unwrap()
    }

    #[test]
    fn replicaset_spec_validation() {
        let ok = json!({"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"version": "1"}},
            "minReadySeconds": 5});
        let s = ReplicaSetSpec::from_spec(&ok).unwrap();
        assert_eq!((s.replicas, s.min_ready_seconds), (2, 5));
        let mut defaulted = ok.clone();
        defaulted.as_object_mut().unwrap().remove("replicas");
        assert_eq!(ReplicaSetSpec::from_spec(&defaulted).unwrap().replicas, 1);
        let bad = |path: &str, v: Value| {
            let mut s = ok.clone();
            *s.pointer_mut(path).unwrap() = v;
            ReplicaSetSpec::from_spec(&s)
                .unwrap_err()
                .field()
                .unwrap()
                .to_string()
        };
        for v in [
            json!(-1),
            json!(2147483648u64),
            json!(1.5),
            json!("3"),
            json!(true),
        ] {
            assert_eq!(bad("/replicas", v), "spec.replicas");
        }
        assert_eq!(bad("/minReadySeconds", json!(-1)), "spec.minReadySeconds");
        assert_eq!(bad("/selector", json!(null)), "spec.selector");
        assert_eq!(bad("/selector", json!({})), "spec.selector");
        assert_eq!(
            bad("/template/metadata/labels", json!({"app": "db"})),
            "spec.template.metadata.labels"
        );
        let rs = obj(
            json!({"kind": "ReplicaSet", "metadata": {"name": "web", "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": ok,
            "status": {"replicas": 2, "availableReplicas": 1}}),
        );
        let v = ReplicaSetView::from_object(&rs).unwrap();
        assert_eq!(
            (v.key().as_str(), v.generation, v.status.available_replicas),
            ("default/web", 3, 1)
        );
    }

    #[test]
    fn claim_table() {
        let owner = obj(json!({"kind": "ReplicaSet", "metadata": {"name": "web", "uid": "me"}}));
        let mut deleting_owner = owner.clone();
        deleting_owner.metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
        let sel = LabelSelector::parse("app=web").unwrap();
        let inst = |name: &str, app: &str, ctrl: Option<&str>, deleting: bool, ns: &str| {
            let mut o = obj(
                json!({"kind": "Instance", "metadata": {"name": name, "namespace": ns,
                "labels": {"app": app}}}),
            );
            if let Some(uid) = ctrl {
                o.metadata.owner_references.push(OwnerReference {
                    kind: "ReplicaSet".into(),
                    name: "x".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                });
            }
            if deleting {
                o.metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
            }
            o
        };
        let objects = vec![
            inst("mine", "web", Some("me"), false, "default"), // 0 claimed
            inst("mine-moved", "db", Some("me"), false, "default"), // 1 release
            inst("other", "web", Some("them"), false, "default"), // 2 ignore
            inst("orphan", "web", None, false, "default"),     // 3 adopt
            inst("orphan-db", "db", None, false, "default"),   // 4 ignore
            inst("orphan-dying", "web", None, true, "default"), // 5 ignore
            inst("orphan-elsewhere", "web", None, false, "other"), // 6 ignore
            inst("mine-dying", "web", Some("me"), true, "default"), // 7 claimed
        ];
        assert_eq!(
            claim(&owner, &sel, &objects),
            ClaimPlan {
                claimed: vec![0, 7],
                adopt: vec![3],
                release: vec![1]
            }
        );
        assert_eq!(
            claim(&deleting_owner, &sel, &objects),
            ClaimPlan {
                claimed: vec![0, 7],
                adopt: vec![],
                release: vec![]
            }
        );
        let r = controller_ref(&owner);
        assert_eq!(
            (r.uid.as_str(), r.controller, r.block_owner_deletion),
            ("me", Some(true), Some(true))
        );
    }
}
