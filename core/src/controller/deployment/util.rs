//! Deployment helpers that upstream keeps in `pkg/controller/deployment/util` and
//! `controller_utils.go`: the template hash, revisions and annotations, new/old ReplicaSet
//! identification, `maxSurge`/`maxUnavailable` resolution, the rolling-update arithmetic,
//! proportional scaling and revision-history cleanup. All pure; plans are lists of
//! [`Scale`]s for the runtime to write (each write also sets the desired/max-replicas
//! annotations with [`set_replicas_annotations`]).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{DeploymentSpec, DeploymentView, Strategy};
use crate::controller::intstr::IntOrString;
use crate::controller::replicaset::ReplicaSetView;

/// The label that ties a ReplicaSet and its instances to one template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// apps/v1's round-tripped `spec.rollbackTo.revision`.
pub const ROLLBACK_TO_ANNOTATION: &str = "deprecated.deployment.rollback.to";
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The longest `revision-history` annotation kept (`maxRevHistoryLengthInChars`).
pub const MAX_REV_HISTORY_LENGTH_IN_CHARS: usize = 2000;
/// BlueGreen bookkeeping on the Deployment (floyd's own): the template hash the Services
/// select.
pub const ACTIVE_HASH_ANNOTATION: &str = "floyd.dev/active-template-hash";
/// When the Services last switched (RFC 3339).
pub const SWITCHED_AT_ANNOTATION: &str = "floyd.dev/switched-at";
/// A manual promotion request: the hash of the template to promote, computed without the
/// collision count.
pub const PROMOTE_ANNOTATION: &str = "floyd.dev/promote";

/// One ReplicaSet size to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    pub name: String,
    pub from: i32,
    pub to: i32,
}

impl Scale {
    fn of(rs: &ReplicaSetView, to: i32) -> Scale {
        Scale {
            name: rs.name.clone(),
            from: rs.spec.replicas,
            to,
        }
    }
}

fn clamp32(v: i64) -> i32 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

// ---------------------------------------------------------------------------------------
// Template hash

/// `rand.SafeEncodeString`: each byte mapped into `bcdfghjklmnpqrstvwxz2456789` (no vowels,
/// no look-alikes), so hashes never spell words.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// FNV-1a, 32 bits.
fn fnv1a32(mut h: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `ComputeHash(template, collisionCount)`: FNV-1a 32 over the canonical JSON of the
/// normalised template (sorted keys; `null`, `{}` and `[]` members dropped, as Go's typed
/// structs do not tell them from absent), then — when a collision count is given — its
/// value as 4 little-endian bytes plus 4 zero bytes, as upstream; the decimal of the sum is
/// safe-encoded.
pub fn compute_hash(template: &Value, collision_count: Option<i32>) -> String {
    let canonical = normalize(template).to_string();
    let mut h = fnv1a32(0x811c_9dc5, canonical.as_bytes());
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        h = fnv1a32(h, &bytes);
    }
    safe_encode(&h.to_string())
}

/// Drops `null` members and empty objects and lists, recursively (Go's semantic equality
/// treats nil and empty maps and slices alike).
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter_map(|(k, v)| {
                    let n = normalize(v);
                    let empty = match &n {
                        Value::Null => true,
                        Value::Object(o) => o.is_empty(),
                        Value::Array(a) => a.is_empty(),
                        _ => false,
                    };
                    (!empty).then(|| (k.clone(), n))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// The template without the `pod-template-hash` label.
pub fn template_without_hash(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    t
}

/// The template with `pod-template-hash = hash`.
pub fn template_with_hash(t: &Value, hash: &str) -> Value {
    let mut t = t.clone();
    if !t.is_object() {
        t = Value::Object(Default::default());
    }
    let obj = t.as_object_mut().expect("made an object above");
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    let labels = meta
        .as_object_mut()
        .expect("made an object above")
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    if !labels.is_object() {
        *labels = Value::Object(Default::default());
    }
    labels
        .as_object_mut()
        .expect("made an object above")
        .insert(POD_TEMPLATE_HASH_LABEL.to_string(), Value::from(hash));
    t
}

/// `EqualIgnoreHash`: the templates are semantically equal once the hash label is removed.
pub fn equal_ignore_hash(t1: &Value, t2: &Value) -> bool {
    normalize(&template_without_hash(t1)) == normalize(&template_without_hash(t2))
}

// ---------------------------------------------------------------------------------------
// Revisions and annotations

/// `Revision`: the revision annotation as int64; missing is 0; unparsable is `None`.
pub fn revision(annotations: &BTreeMap<String, String>) -> Option<i64> {
    match annotations.get(REVISION_ANNOTATION) {
        None => Some(0),
        Some(v) => v.parse::<i64>().ok().filter(|_| go_int_syntax(v)),
    }
}

/// Rust's integer parsing accepts what Go's `ParseInt(s, 10, 64)` accepts, except that both
/// agree on signs and digits only; this guards the shared subset explicitly.
fn go_int_syntax(s: &str) -> bool {
    let d = s.strip_prefix(['+', '-']).unwrap_or(s);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// `MaxRevision`: the highest parsable revision (0 if none).
pub fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSetView>) -> i64 {
    rss.into_iter()
        .filter_map(|rs| revision(&rs.annotations))
        .fold(0, i64::max)
}

/// `LastRevision`: the second-highest revision (a duplicate of the highest counts).
pub fn last_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSetView>) -> i64 {
    let (mut max, mut sec) = (0i64, 0i64);
    for v in rss.into_iter().filter_map(|rs| revision(&rs.annotations)) {
        if v >= max {
            sec = max;
            max = v;
        } else if v > sec {
            sec = v;
        }
    }
    sec
}

/// `ReplicaSetsByCreationTimestamp.Less`: older first (a missing time is oldest), ties by
/// name.
pub fn creation_less(a: &ReplicaSetView, b: &ReplicaSetView) -> bool {
    if a.creation == b.creation {
        a.name < b.name
    } else {
        a.creation < b.creation
    }
}

/// `ReplicaSetsByRevision.Less`: lower revision first; unparsable or equal revisions fall
/// back to creation order.
pub fn revision_less(a: &ReplicaSetView, b: &ReplicaSetView) -> bool {
    match (revision(&a.annotations), revision(&b.annotations)) {
        (Some(r1), Some(r2)) if r1 != r2 => r1 < r2,
        _ => creation_less(a, b),
    }
}

/// The ReplicaSets sorted by [`creation_less`] (as Go's `sort.Sort` would).
pub fn sorted_by_creation<'a>(
    rss: impl IntoIterator<Item = &'a ReplicaSetView>,
) -> Vec<&'a ReplicaSetView> {
    let mut v: Vec<&ReplicaSetView> = rss.into_iter().collect();
    crate::controller::gosort::go_sort(&mut v, |a, b| creation_less(a, b));
    v
}

/// `FindNewReplicaSet`: the oldest ReplicaSet whose template equals `template` ignoring
/// the hash.
pub fn find_new_rs<'a>(template: &Value, rss: &'a [ReplicaSetView]) -> Option<&'a ReplicaSetView> {
    sorted_by_creation(rss)
        .into_iter()
        .find(|rs| equal_ignore_hash(&rs.spec.template, template))
}

/// `FindOldReplicaSets`: `(active_old, all_old)` in creation order, where active means
/// `spec.replicas ≠ 0`.
pub fn find_old_rss<'a>(
    template: &Value,
    rss: &'a [ReplicaSetView],
) -> (Vec<&'a ReplicaSetView>, Vec<&'a ReplicaSetView>) {
    let new_uid_name = find_new_rs(template, rss).map(|rs| (&rs.uid, &rs.name));
    let all: Vec<&ReplicaSetView> = sorted_by_creation(rss)
        .into_iter()
        .filter(|rs| Some((&rs.uid, &rs.name)) != new_uid_name)
        .collect();
    let active = all
        .iter()
        .copied()
        .filter(|rs| rs.spec.replicas != 0)
        .collect();
    (active, all)
}

/// Annotations never copied between a Deployment and its ReplicaSets: upstream's list, plus
/// floyd's BlueGreen bookkeeping. That describes the Deployment's state now (which revision
/// the Services select, since when, what is to be promoted); a ReplicaSet holding a copy
/// would hand a stale one back to the Deployment on a rollback, which could then take an
/// old switch for the current one and scale away the revision the Services select.
pub fn skip_copy_annotation(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED_ANNOTATION
            | REVISION_ANNOTATION
            | REVISION_HISTORY_ANNOTATION
            | DESIRED_REPLICAS_ANNOTATION
            | MAX_REPLICAS_ANNOTATION
            | ROLLBACK_TO_ANNOTATION
            | ACTIVE_HASH_ANNOTATION
            | SWITCHED_AT_ANNOTATION
            | PROMOTE_ANNOTATION
    )
}

/// `copyDeploymentAnnotationsToReplicaSet`; true if anything changed.
pub fn copy_deployment_annotations_to_rs(
    d: &BTreeMap<String, String>,
    rs: &mut BTreeMap<String, String>,
) -> bool {
    let mut changed = false;
    for (k, v) in d {
        if skip_copy_annotation(k) || rs.get(k) == Some(v) {
            continue;
        }
        rs.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// `SetDeploymentAnnotationsTo` (rollback): the Deployment keeps only its skip-listed
/// annotations and takes every other annotation of the ReplicaSet.
pub fn set_deployment_annotations_to(
    d: &BTreeMap<String, String>,
    rs: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = d
        .iter()
        .filter(|(k, _)| skip_copy_annotation(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in rs {
        if !skip_copy_annotation(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// `SetDeploymentRevision`; true if changed. A missing annotation reads as `""`, as a Go
/// map does, so setting `""` on a Deployment without one changes nothing.
pub fn set_deployment_revision(d: &mut BTreeMap<String, String>, revision: &str) -> bool {
    if d.get(REVISION_ANNOTATION).map_or("", String::as_str) == revision {
        return false;
    }
    d.insert(REVISION_ANNOTATION.to_string(), revision.to_string());
    true
}

/// `SetReplicasAnnotations`; true if changed.
pub fn set_replicas_annotations(a: &mut BTreeMap<String, String>, desired: i32, max: i32) -> bool {
    let mut changed = false;
    for (k, v) in [
        (DESIRED_REPLICAS_ANNOTATION, desired),
        (MAX_REPLICAS_ANNOTATION, max),
    ] {
        let s = v.to_string();
        if a.get(k) != Some(&s) {
            a.insert(k.to_string(), s);
            changed = true;
        }
    }
    changed
}

/// `ReplicasAnnotationsNeedUpdate`.
pub fn replicas_annotations_need_update(
    a: &BTreeMap<String, String>,
    desired: i32,
    max: i32,
) -> bool {
    a.get(DESIRED_REPLICAS_ANNOTATION) != Some(&desired.to_string())
        || a.get(MAX_REPLICAS_ANNOTATION) != Some(&max.to_string())
}

fn int32_annotation(a: &BTreeMap<String, String>, key: &str) -> Option<i32> {
    a.get(key)
        .filter(|v| go_int_syntax(v))
        .and_then(|v| v.parse::<i32>().ok())
}

/// `GetDesiredReplicasAnnotation`.
pub fn desired_replicas_annotation(rs: &ReplicaSetView) -> Option<i32> {
    int32_annotation(&rs.annotations, DESIRED_REPLICAS_ANNOTATION)
}

/// `getMaxReplicasAnnotation`.
pub fn max_replicas_annotation(rs: &ReplicaSetView) -> Option<i32> {
    int32_annotation(&rs.annotations, MAX_REPLICAS_ANNOTATION)
}

/// `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises the revision
/// to `new_revision` when lower (keeping the old one in `revision-history`, trimmed from the
/// front to `limit_chars`), and for a ReplicaSet about to be created sets the
/// desired/max-replicas annotations. Returns whether anything changed. An unparsable
/// existing revision leaves the revision untouched and returns false, as upstream.
pub fn set_new_replica_set_annotations(
    d: &DeploymentView,
    rs: &mut BTreeMap<String, String>,
    new_revision: &str,
    exists: bool,
    limit_chars: usize,
) -> bool {
    let mut changed = copy_deployment_annotations_to_rs(&d.annotations, rs);
    let old = rs.get(REVISION_ANNOTATION).cloned();
    let old_int = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(v) if go_int_syntax(s) => v,
            _ => return false,
        },
    };
    let Some(new_int) = new_revision
        .parse::<i64>()
        .ok()
        .filter(|_| go_int_syntax(new_revision))
    else {
        return false;
    };
    if old_int < new_int {
        rs.insert(REVISION_ANNOTATION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = rs
                .get(REVISION_HISTORY_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            let parts: Vec<&str> = history.split(',').collect();
            if parts[0].is_empty() {
                rs.insert(REVISION_HISTORY_ANNOTATION.to_string(), old);
            } else {
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > limit_chars && start < parts.len() {
                    total -= parts[start].len() + 1;
                    start += 1;
                }
                if total <= limit_chars {
                    let mut kept: Vec<&str> = parts[start..].to_vec();
                    kept.push(&old);
                    rs.insert(REVISION_HISTORY_ANNOTATION.to_string(), kept.join(","));
                }
            }
        }
    }
    if !exists {
        let r = d.spec.replicas;
        if set_replicas_annotations(rs, r, clamp32(i64::from(r) + i64::from(max_surge(&d.spec)))) {
            changed = true;
        }
    }
    changed
}

// ---------------------------------------------------------------------------------------
// maxSurge / maxUnavailable

/// `ResolveFenceposts`: surge rounds up, unavailable rounds down; both zero → unavailable 1.
/// Values are saturated into int32 (upstream's `int32()` conversion would wrap).
pub fn resolve_fenceposts(
    max_surge: &IntOrString,
    max_unavailable: &IntOrString,
    desired: i32,
) -> Result<(i32, i32), String> {
    let surge = max_surge.scaled_value(desired, true)?;
    let mut unavailable = max_unavailable.scaled_value(desired, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((clamp32(surge), clamp32(unavailable)))
}

/// `MaxSurge(d)`: the resolved surge for RollingUpdate, 0 otherwise (an invalid value, which
/// validation rejects, counts as 0).
pub fn max_surge(d: &DeploymentSpec) -> i32 {
    match &d.strategy {
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => resolve_fenceposts(max_surge, max_unavailable, d.replicas)
            .map(|r| r.0)
            .unwrap_or(0),
        _ => 0,
    }
}

/// `MaxUnavailable(d)`: 0 unless RollingUpdate with replicas > 0; else the resolved value
/// capped at replicas.
pub fn max_unavailable(d: &DeploymentSpec) -> i32 {
    match &d.strategy {
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } if d.replicas != 0 => resolve_fenceposts(max_surge, max_unavailable, d.replicas)
            .map(|r| r.1.min(d.replicas))
            .unwrap_or(0),
        _ => 0,
    }
}

/// `MinAvailable(d)`: replicas − MaxUnavailable for RollingUpdate, else 0.
pub fn min_available(d: &DeploymentSpec) -> i32 {
    match d.strategy {
        Strategy::RollingUpdate { .. } => d.replicas - max_unavailable(d),
        _ => 0,
    }
}

fn sum_spec<'a>(rss: impl IntoIterator<Item = &'a ReplicaSetView>) -> i64 {
    rss.into_iter().map(|rs| i64::from(rs.spec.replicas)).sum()
}

fn sum_available<'a>(rss: impl IntoIterator<Item = &'a ReplicaSetView>) -> i64 {
    rss.into_iter()
        .map(|rs| i64::from(rs.status.available_replicas))
        .sum()
}

// ---------------------------------------------------------------------------------------
// Rolling update arithmetic

/// `NewRSNewReplicas`: RollingUpdate → grow the new ReplicaSet by
/// `min(replicas + surge − Σ spec, replicas − new)` when below `replicas + surge` (surge
/// resolved alone, rounded up, no fencepost adjustment); Recreate and BlueGreen →
/// `replicas`.
pub fn new_rs_new_replicas(
    d: &DeploymentSpec,
    new_rs: &ReplicaSetView,
    old_rss: &[ReplicaSetView],
) -> Result<i32, String> {
    new_rs_new_replicas_with(d, new_rs, old_rss, 0)
}

/// [`new_rs_new_replicas`] counting `surplus` more instances than the specs add up to: with
/// the TerminationComplete replacement policy, [`instance_surplus`], which includes the
/// instances still stopping (upstream adds the terminating replicas to the current count).
/// 0 is upstream's default.
pub fn new_rs_new_replicas_with(
    d: &DeploymentSpec,
    new_rs: &ReplicaSetView,
    old_rss: &[ReplicaSetView],
    surplus: i64,
) -> Result<i32, String> {
    match &d.strategy {
        Strategy::RollingUpdate { max_surge, .. } => {
            let surge = max_surge.scaled_value(d.replicas, true)?;
            let current = sum_spec(old_rss) + i64::from(new_rs.spec.replicas) + surplus.max(0);
            let max_total = i64::from(d.replicas) + surge;
            if current >= max_total {
                return Ok(new_rs.spec.replicas);
            }
            let up =
                (max_total - current).min(i64::from(d.replicas) - i64::from(new_rs.spec.replicas));
            Ok(clamp32(i64::from(new_rs.spec.replicas) + up))
        }
        Strategy::Recreate | Strategy::BlueGreen { .. } => Ok(d.replicas),
    }
}

/// `reconcileNewReplicaSet`: the new ReplicaSet's next size, or `None` when it is already
/// at `replicas` or cannot grow.
pub fn reconcile_new_replica_set(
    d: &DeploymentSpec,
    new_rs: &ReplicaSetView,
    old_rss: &[ReplicaSetView],
) -> Result<Option<i32>, String> {
    reconcile_new_replica_set_with(d, new_rs, old_rss, 0)
}

/// [`reconcile_new_replica_set`] with [`new_rs_new_replicas_with`]'s `surplus`.
pub fn reconcile_new_replica_set_with(
    d: &DeploymentSpec,
    new_rs: &ReplicaSetView,
    old_rss: &[ReplicaSetView],
    surplus: i64,
) -> Result<Option<i32>, String> {
    let cur = new_rs.spec.replicas;
    if cur == d.replicas {
        return Ok(None);
    }
    if cur > d.replicas {
        return Ok(Some(d.replicas));
    }
    let n = new_rs_new_replicas_with(d, new_rs, old_rss, surplus)?;
    Ok((n != cur).then_some(n))
}

/// `maxScaledDown = Σ spec (old and new) − (replicas − MaxUnavailable) − (new.spec −
/// new.available)`.
pub fn max_scaled_down(
    d: &DeploymentSpec,
    new_rs: &ReplicaSetView,
    old_rss: &[ReplicaSetView],
) -> i64 {
    let all = sum_spec(old_rss) + i64::from(new_rs.spec.replicas);
    let min_available = i64::from(d.replicas) - i64::from(max_unavailable(d));
    let new_unavailable =
        i64::from(new_rs.spec.replicas) - i64::from(new_rs.status.available_replicas);
    all - min_available - new_unavailable
}

/// The result of `reconcileOldReplicaSets`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OldRsPlan {
    /// Writes in order (cleanup first, then scale-down).
    pub scales: Vec<Scale>,
    pub cleaned: i64,
    pub scaled_down: i64,
    /// Upstream's "invalid request to scale down" error (an old ReplicaSet with more
    /// available than spec replicas): the writes before it stand, nothing after it happens,
    /// and `reconcileOldReplicaSets` reports no scaling and no error.
    pub error: Option<String>,
}

impl OldRsPlan {
    /// Whether anything was scaled down (`reconcileOldReplicaSets`'s bool).
    pub fn scaled(&self) -> bool {
        self.error.is_none() && self.cleaned + self.scaled_down > 0
    }
}

/// `cleanupUnhealthyReplicas`: old ReplicaSets oldest first; each with replicas > 0 and
/// replicas ≠ available loses `min(max − cleaned, replicas − available)`. Returns the old
/// ReplicaSets with their new sizes, the writes and the count, or the error with the writes
/// made before it.
pub fn cleanup_unhealthy_replicas(
    old_rss: &[ReplicaSetView],
    max_cleanup: i64,
) -> (Vec<ReplicaSetView>, Vec<Scale>, i64, Option<String>) {
    let mut sorted: Vec<ReplicaSetView> =
        sorted_by_creation(old_rss).into_iter().cloned().collect();
    let mut scales = Vec::new();
    let mut total = 0i64;
    for rs in sorted.iter_mut() {
        if total >= max_cleanup {
            break;
        }
        let (spec, avail) = (
            i64::from(rs.spec.replicas),
            i64::from(rs.status.available_replicas),
        );
        if spec == 0 || spec == avail {
            continue;
        }
        let down = (max_cleanup - total).min(spec - avail);
        let new = spec - down;
        if new > spec {
            let msg = format!(
                "when cleaning up unhealthy replicas, got invalid request to scale down {}/{} {} -> {}",
                rs.namespace, rs.name, spec, new
            );
            return (sorted, scales, total, Some(msg));
        }
        scales.push(Scale::of(rs, clamp32(new)));
        rs.spec.replicas = clamp32(new);
        total += down;
    }
    (sorted, scales, total, None)
}

/// `scaleDownOldReplicaSetsForRollingUpdate`: with `available = Σ status.available (old and
/// new)` and `minAvailable = replicas − MaxUnavailable`, scales old ReplicaSets (oldest
/// first) down by at most `available − minAvailable` in total.
pub fn scale_down_old_for_rolling_update(
    d: &DeploymentSpec,
    new_rs: &ReplicaSetView,
    old_rss: &[ReplicaSetView],
) -> (Vec<Scale>, i64, Option<String>) {
    let min_available = i64::from(d.replicas) - i64::from(max_unavailable(d));
    let available = sum_available(old_rss) + i64::from(new_rs.status.available_replicas);
    if available <= min_available {
        return (Vec::new(), 0, None);
    }
    let budget = available - min_available;
    let mut scales = Vec::new();
    let mut total = 0i64;
    for rs in sorted_by_creation(old_rss) {
        if total >= budget {
            break;
        }
        let spec = i64::from(rs.spec.replicas);
        if spec == 0 {
            continue;
        }
        let down = spec.min(budget - total);
        let new = spec - down;
        if new > spec {
            let msg = format!(
                "when scaling down old replica set, got invalid request to scale down {}/{} {} -> {}",
                rs.namespace, rs.name, spec, new
            );
            return (scales, total, Some(msg));
        }
        scales.push(Scale::of(rs, clamp32(new)));
        total += down;
    }
    (scales, total, None)
}

/// `reconcileOldReplicaSets(allRSs, activeOldRSs, newRS)` as a plan over the active old
/// ReplicaSets: nothing when they hold no replicas or `maxScaledDown ≤ 0`; else clean up
/// unhealthy replicas, then scale down within the availability budget.
pub fn reconcile_old_replica_sets(
    d: &DeploymentSpec,
    new_rs: &ReplicaSetView,
    active_old: &[ReplicaSetView],
) -> OldRsPlan {
    if sum_spec(active_old) == 0 {
        return OldRsPlan::default();
    }
    let max_down = max_scaled_down(d, new_rs, active_old);
    if max_down <= 0 {
        return OldRsPlan::default();
    }
    let (after, mut scales, cleaned, err) = cleanup_unhealthy_replicas(active_old, max_down);
    if err.is_some() {
        return OldRsPlan {
            scales,
            cleaned,
            scaled_down: 0,
            error: err,
        };
    }
    let (more, scaled_down, err) = scale_down_old_for_rolling_update(d, new_rs, &after);
    scales.extend(more);
    OldRsPlan {
        scales,
        cleaned,
        scaled_down,
        error: err,
    }
}

// ---------------------------------------------------------------------------------------
// Proportional scaling

/// `integer.RoundToInt32`: half away from zero, via `±0.5` and truncation (saturating).
pub fn round_to_i32(a: f64) -> i32 {
    if a < 0.0 {
        (a - 0.5) as i32
    } else {
        (a + 0.5) as i32
    }
}

/// `getReplicaSetFraction`: `−rs.replicas` when the Deployment scales to 0; otherwise
/// `round(rs.replicas · (replicas + MaxSurge) / annotatedMax) − rs.replicas`, where
/// `annotatedMax` is the ReplicaSet's max-replicas annotation or else
/// `deployment.status.replicas`. A zero `annotatedMax` gives 0 (upstream divides by zero).
pub fn get_replica_set_fraction(rs: &ReplicaSetView, d: &DeploymentView) -> i32 {
    if d.spec.replicas == 0 {
        return -rs.spec.replicas;
    }
    let deployment_max = i64::from(d.spec.replicas) + i64::from(max_surge(&d.spec));
    let annotated = max_replicas_annotation(rs).unwrap_or(d.status.replicas);
    if annotated == 0 {
        return 0;
    }
    let size = (i64::from(rs.spec.replicas) * deployment_max) as f64 / f64::from(annotated);
    clamp32(i64::from(round_to_i32(size)) - i64::from(rs.spec.replicas))
}

/// `GetReplicaSetProportion`: 0 when the ReplicaSet is empty, nothing is to be added, or
/// everything was added; else the fraction bounded by what remains (`min` when scaling up,
/// `max` when down).
pub fn get_proportion(rs: &ReplicaSetView, d: &DeploymentView, to_add: i32, added: i32) -> i32 {
    if rs.spec.replicas == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = get_replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// `IsSaturated`: spec replicas, the desired-replicas annotation and available replicas
/// all equal the Deployment's replicas.
pub fn is_saturated(d: &DeploymentSpec, rs: Option<&ReplicaSetView>) -> bool {
    let Some(rs) = rs else { return false };
    desired_replicas_annotation(rs) == Some(d.replicas)
        && rs.spec.replicas == d.replicas
        && rs.status.available_replicas == d.replicas
}

/// `FindActiveOrLatest`: the only active ReplicaSet; or, when none is active, the new one,
/// else the newest old one; `None` when several are active (or there are none at all).
pub fn find_active_or_latest<'a>(
    new_rs: Option<&'a ReplicaSetView>,
    old_rss: &'a [ReplicaSetView],
) -> Option<&'a ReplicaSetView> {
    if new_rs.is_none() && old_rss.is_empty() {
        return None;
    }
    let mut newest_first: Vec<&ReplicaSetView> = old_rss.iter().collect();
    crate::controller::gosort::go_sort(&mut newest_first, |a, b| creation_less(b, a));
    let active: Vec<&ReplicaSetView> = newest_first
        .iter()
        .copied()
        .chain(new_rs)
        .filter(|rs| rs.spec.replicas > 0)
        .collect();
    match active.len() {
        0 => new_rs.or(newest_first.first().copied()),
        1 => Some(active[0]),
        _ => None,
    }
}

/// `isScalingEvent`: an active ReplicaSet's desired-replicas annotation differs from
/// `spec.replicas`.
pub fn is_scaling_event(
    d: &DeploymentSpec,
    new_rs: Option<&ReplicaSetView>,
    old_rss: &[ReplicaSetView],
) -> bool {
    old_rss
        .iter()
        .chain(new_rs)
        .filter(|rs| rs.spec.replicas > 0)
        .any(|rs| desired_replicas_annotation(rs).is_some_and(|v| v != d.replicas))
}

/// `scale(d, newRS, oldRSs)` (§4.7) as a list of writes:
/// 1. one active (or none: the new, else the newest old) ReplicaSet → set it to `replicas`;
/// 2. new ReplicaSet saturated → every active old one to 0;
/// 3. RollingUpdate: spread `replicas + MaxSurge − Σ spec` over the active ReplicaSets in
///    proportion (largest first; ties newer first when growing, older first when
///    shrinking), the leftover to the first, never below 0. Every active ReplicaSet is
///    written (its annotations change even if its size does not).
pub fn scale_plan(
    d: &DeploymentView,
    new_rs: Option<&ReplicaSetView>,
    old_rss: &[ReplicaSetView],
) -> Vec<Scale> {
    let spec = &d.spec;
    if let Some(rs) = find_active_or_latest(new_rs, old_rss) {
        if rs.spec.replicas == spec.replicas {
            return Vec::new();
        }
        return vec![Scale::of(rs, spec.replicas)];
    }
    if matches!(spec.strategy, Strategy::BlueGreen { .. }) {
        return blue_green_scale_plan(d, new_rs, old_rss);
    }
    if is_saturated(spec, new_rs) {
        return old_rss
            .iter()
            .filter(|rs| rs.spec.replicas > 0)
            .map(|rs| Scale::of(rs, 0))
            .collect();
    }
    if !matches!(spec.strategy, Strategy::RollingUpdate { .. }) {
        return Vec::new();
    }
    let mut active: Vec<&ReplicaSetView> = old_rss
        .iter()
        .chain(new_rs)
        .filter(|rs| rs.spec.replicas > 0)
        .collect();
    let allowed: i64 = if spec.replicas > 0 {
        i64::from(spec.replicas) + i64::from(max_surge(spec))
    } else {
        0
    };
    let to_add = clamp32(allowed - sum_spec(active.iter().copied()));
    if to_add > 0 {
        crate::controller::gosort::go_sort(&mut active, |a, b| {
            if a.spec.replicas == b.spec.replicas {
                creation_less(b, a)
            } else {
                a.spec.replicas > b.spec.replicas
            }
        });
    } else if to_add < 0 {
        crate::controller::gosort::go_sort(&mut active, |a, b| {
            if a.spec.replicas == b.spec.replicas {
                creation_less(a, b)
            } else {
                a.spec.replicas > b.spec.replicas
            }
        });
    }
    let mut added = 0i32;
    let mut sizes: Vec<i32> = Vec::with_capacity(active.len());
    for rs in &active {
        if to_add != 0 {
            let p = get_proportion(rs, d, to_add, added);
            sizes.push(rs.spec.replicas.saturating_add(p));
            added = added.saturating_add(p);
        } else {
            sizes.push(rs.spec.replicas);
        }
    }
    if to_add != 0
        && let Some(first) = sizes.first_mut()
    {
        *first = first.saturating_add(to_add - added).max(0);
    }
    active
        .iter()
        .zip(sizes)
        .map(|(rs, to)| Scale::of(rs, to))
        .collect()
}

/// A scaling event of floyd's BlueGreen with several active ReplicaSets (upstream's `scale`
/// does nothing for strategies other than RollingUpdate, which never run two at once): the
/// served revision and the preview both run at full size, so both follow the new
/// `replicas` (before the first switch, every old ReplicaSet serves); any other active
/// ReplicaSet (switched away from, waiting out its scale-down delay) keeps its size. Every active ReplicaSet is written, so its desired-replicas
/// annotation says the scale was seen: otherwise every sync would be a scaling event that
/// scales nothing, and the rollout would never go on.
fn blue_green_scale_plan(
    d: &DeploymentView,
    new_rs: Option<&ReplicaSetView>,
    old_rss: &[ReplicaSetView],
) -> Vec<Scale> {
    let served = d.annotations.get(ACTIVE_HASH_ANNOTATION);
    old_rss
        .iter()
        .chain(new_rs)
        .filter(|rs| rs.spec.replicas > 0)
        .map(|rs| {
            // Before any switch no revision is pinned, and the old ones all serve.
            let full = new_rs.is_some_and(|n| n.uid == rs.uid)
                || served.is_none_or(|h| rs.labels.get(POD_TEMPLATE_HASH_LABEL) == Some(h));
            Scale::of(
                rs,
                if full {
                    d.spec.replicas
                } else {
                    rs.spec.replicas
                },
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Replacement policy TerminationComplete (KEP-3973)

/// A ReplicaSet's instances: `live` ones (objects present) and `stopping` ones (objects
/// deleted, stop not yet confirmed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceCount {
    pub live: i64,
    pub stopping: i64,
}

impl InstanceCount {
    /// How many instances the ReplicaSet will have at most at size `spec` before anything
    /// else stops: its controller fills up to `spec` live ones (it never counts stopping
    /// ones), and the stopping ones remain until their stop finishes.
    pub fn footprint(self, spec: i64) -> i64 {
        spec.max(self.live).saturating_add(self.stopping)
    }
}

/// Caps the scale-ups among `scales` so that `Σ_rs footprint(spec)` stays within `limit`
/// ([`InstanceCount::footprint`]: instances including those whose stop has not finished;
/// kubernetes#95498, `reliability.md` INV-SURGE-LIVE). Scales are
/// taken in order, each one seeing the sizes the earlier ones set; a scale-up never goes
/// below its `from` (it may become a no-op, which still rewrites the size annotations) and
/// scale-downs pass unchanged. `rss` are the Deployment's ReplicaSets with their current
/// sizes; a scaled ReplicaSet missing from it starts from `from`.
pub fn cap_scale_ups(
    scales: &[Scale],
    rss: &[ReplicaSetView],
    instances: &BTreeMap<String, InstanceCount>,
    limit: i64,
) -> Vec<Scale> {
    let mut sizes: BTreeMap<&str, i64> = rss
        .iter()
        .map(|rs| (rs.name.as_str(), i64::from(rs.spec.replicas)))
        .collect();
    let count = |name: &str| instances.get(name).copied().unwrap_or_default();
    let mut out = Vec::with_capacity(scales.len());
    for s in scales {
        let mut to = s.to;
        if s.to > s.from {
            let others: i64 = sizes
                .iter()
                .filter(|(n, _)| **n != s.name)
                .map(|(n, size)| count(n).footprint(*size))
                .sum();
            let own = count(&s.name);
            // The largest size whose footprint fits: stopping ones take room first, and
            // live ones beyond the size count as they are.
            let room = limit.saturating_sub(others).saturating_sub(own.stopping);
            to = clamp32(room.min(i64::from(s.to))).max(s.from);
        }
        sizes.insert(s.name.as_str(), i64::from(to));
        out.push(Scale {
            name: s.name.clone(),
            from: s.from,
            to,
        });
    }
    out
}

/// `Σ_rs footprint(spec) − spec`: how many instances (stopping ones included) the
/// ReplicaSets will have beyond their specs — the `surplus` of
/// [`new_rs_new_replicas_with`].
pub fn instance_surplus(
    rss: &[ReplicaSetView],
    instances: &BTreeMap<String, InstanceCount>,
) -> i64 {
    rss.iter()
        .map(|rs| {
            let spec = i64::from(rs.spec.replicas);
            let n = instances.get(&rs.name).copied().unwrap_or_default();
            n.footprint(spec) - spec
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// Cleanup

/// `cleanupDeployment`: with a history limit, the old ReplicaSets not being deleted beyond
/// the limit — lowest revision first (creation order on ties) — that are safe to delete
/// (`status.replicas == 0`, `spec.replicas == 0`, generation observed). Unsafe ones are
/// skipped, not replaced by later ones. The runtime deletes in order and stops at the first
/// error (NotFound ignored).
pub fn cleanup_plan(old_rss: &[ReplicaSetView], limit: Option<i32>) -> Vec<String> {
    let Some(limit) = limit else {
        return Vec::new();
    };
    let mut candidates: Vec<&ReplicaSetView> = old_rss.iter().filter(|rs| !rs.deleting).collect();
    let diff = candidates.len() as i64 - i64::from(limit);
    if diff <= 0 {
        return Vec::new();
    }
    crate::controller::gosort::go_sort(&mut candidates, |a, b| revision_less(a, b));
    candidates
        .into_iter()
        .take(diff as usize)
        .filter(|rs| {
            rs.status.replicas == 0
                && rs.spec.replicas == 0
                && rs.generation <= rs.status.observed_generation
        })
        .map(|rs| rs.name.clone())
        .collect()
}
