//! The pure parts of the Deployment controller (`k8s-semantics.md` §4): decoding and
//! validating a Deployment, the new ReplicaSet it needs, one step of each strategy
//! (RollingUpdate, Recreate and floyd's BlueGreen) as a plan, status and conditions
//! (`Available`, `Progressing` with every reason, `ReplicaFailure`), the progress-deadline
//! predicates and requeue delay, and rollback target selection. Arithmetic shared with
//! scaling and cleanup is in [`util`].
//!
//! Every function takes the Deployment, its new ReplicaSet (if any) and its old ones as
//! views, plus `now`; none writes anything.

pub mod util;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::intstr::{IntOrString, validate_rolling_update};
use super::replicaset::{REPLICA_FAILURE, ReplicaSetView, controller_ref, selector_and_template};
use super::{
    CONDITION_FALSE, CONDITION_TRUE, CONDITION_UNKNOWN, Condition, get_condition,
    nonnegative_int32, opt_bool, remove_condition,
};
use crate::error::{Error, Result};
use crate::store::{LabelSelector, Object};
use util::*;

/// Condition types.
pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";

/// `Progressing` / `Available` reasons (`deployment_util.go`).
pub const NEW_RS_CREATED_REASON: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
pub const RS_UPDATED_REASON: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
pub const FAILED_RS_CREATE_REASON: &str = "ReplicaSetCreateError";
pub const PAUSED_REASON: &str = "DeploymentPaused";
pub const RESUMED_REASON: &str = "DeploymentResumed";
pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
/// Rollback event reasons.
pub const ROLLBACK_REVISION_NOT_FOUND: &str = "DeploymentRollbackRevisionNotFound";
pub const ROLLBACK_TEMPLATE_UNCHANGED: &str = "DeploymentRollbackTemplateUnchanged";
pub const ROLLBACK_DONE: &str = "DeploymentRollback";

/// Defaults (apps/v1).
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
pub const DEFAULT_MAX_SURGE: &str = "25%";
pub const DEFAULT_MAX_UNAVAILABLE: &str = "25%";
/// floyd's BlueGreen defaults.
pub const DEFAULT_BLUE_GREEN_SCALE_DOWN_DELAY_SECONDS: i32 = 30;

/// `spec.strategy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    RollingUpdate {
        max_surge: IntOrString,
        max_unavailable: IntOrString,
    },
    Recreate,
    /// floyd's own: the new ReplicaSet is brought to full size beside the old, the Services
    /// switch to it in one write once it is fully available, the old one is scaled to zero
    /// `scale_down_delay_seconds` after the switch.
    BlueGreen {
        auto_promote: bool,
        scale_down_delay_seconds: i32,
    },
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy::RollingUpdate {
            max_surge: IntOrString::Str(DEFAULT_MAX_SURGE.into()),
            max_unavailable: IntOrString::Str(DEFAULT_MAX_UNAVAILABLE.into()),
        }
    }
}

/// `spec.podReplacementPolicy` (KEP-3973): when a replacement for an instance that is being
/// stopped may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodReplacementPolicy {
    /// As soon as the old instance's object is deleted: stopping instances do not count
    /// toward `replicas + maxSurge` (Kubernetes' default for RollingUpdate).
    TerminationStarted,
    /// Only once the old instance has fully stopped: stopping instances count toward
    /// `replicas + maxSurge` (`replicas` for Recreate), so the instances the driver runs for
    /// a Deployment, stopping ones included, never exceed it.
    TerminationComplete,
}

impl PodReplacementPolicy {
    /// Decodes `spec.podReplacementPolicy`; absent or `null` is `None` (the strategy's
    /// default).
    pub fn from_json(v: Option<&Value>) -> Result<Option<PodReplacementPolicy>> {
        const FIELD: &str = "spec.podReplacementPolicy";
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => match s.as_str() {
                "TerminationStarted" => Ok(Some(PodReplacementPolicy::TerminationStarted)),
                "TerminationComplete" => Ok(Some(PodReplacementPolicy::TerminationComplete)),
                other => Err(Error::invalid(
                    FIELD,
                    format!(
                        "Unsupported value: {other:?}: supported values: \"TerminationComplete\", \"TerminationStarted\""
                    ),
                )),
            },
            Some(other) => Err(Error::invalid(
                FIELD,
                format!("must be a string, got {}", super::json_type(other)),
            )),
        }
    }

    /// The policy's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            PodReplacementPolicy::TerminationStarted => "TerminationStarted",
            PodReplacementPolicy::TerminationComplete => "TerminationComplete",
        }
    }
}

/// A Deployment's spec, defaulted and validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeploymentSpec {
    /// `spec.replicas` (default 1).
    pub replicas: i32,
    pub selector: LabelSelector,
    /// `spec.selector` as stored (copied into new ReplicaSets with the hash label).
    pub selector_json: Value,
    pub template: Value,
    pub template_labels: BTreeMap<String, String>,
    pub strategy: Strategy,
    pub min_ready_seconds: i32,
    /// Default 10.
    pub revision_history_limit: Option<i32>,
    /// Default 600; `i32::MAX` means no deadline.
    pub progress_deadline_seconds: Option<i32>,
    pub paused: bool,
    /// `spec.podReplacementPolicy`; `None` is the strategy's default (TerminationStarted
    /// behaviour for scaling and RollingUpdate; Recreate always waits for old instances).
    pub pod_replacement_policy: Option<PodReplacementPolicy>,
}

impl DeploymentSpec {
    /// Whether stopping instances count toward the Deployment's instance limit
    /// ([`PodReplacementPolicy::TerminationComplete`]).
    pub fn waits_for_termination(&self) -> bool {
        self.pod_replacement_policy == Some(PodReplacementPolicy::TerminationComplete)
    }

    /// The most instances the Deployment may have under TerminationComplete, stopping ones
    /// included: `replicas + MaxSurge` for RollingUpdate, `replicas` for Recreate; `None`
    /// for BlueGreen, whose preview runs beside the active revision by design.
    pub fn instance_limit(&self) -> Option<i64> {
        match self.strategy {
            Strategy::RollingUpdate { .. } => {
                Some(i64::from(self.replicas) + i64::from(max_surge(self)))
            }
            Strategy::Recreate => Some(i64::from(self.replicas)),
            Strategy::BlueGreen { .. } => None,
        }
    }

    /// Defaults and validates `spec` as the API server does (`SetDefaults_Deployment`,
    /// `ValidateDeploymentSpec`), returning the first error in upstream's order: replicas,
    /// selector, template, strategy, minReadySeconds, revisionHistoryLimit,
    /// progressDeadlineSeconds (> minReadySeconds), paused, podReplacementPolicy.
    pub fn from_spec(spec: &Value) -> Result<DeploymentSpec> {
        if !spec.is_object() {
            return Err(Error::invalid("spec", "must be an object"));
        }
        let replicas = nonnegative_int32(spec.get("replicas"), "spec.replicas")?.unwrap_or(1);
        let (selector, template, template_labels) = selector_and_template(spec)?;
        let strategy = parse_strategy(spec.get("strategy"))?;
        let min_ready_seconds =
            nonnegative_int32(spec.get("minReadySeconds"), "spec.minReadySeconds")?.unwrap_or(0);
        let revision_history_limit = nonnegative_int32(
            spec.get("revisionHistoryLimit"),
            "spec.revisionHistoryLimit",
        )?
        .or(Some(DEFAULT_REVISION_HISTORY_LIMIT));
        let progress_deadline_seconds = nonnegative_int32(
            spec.get("progressDeadlineSeconds"),
            "spec.progressDeadlineSeconds",
        )?
        .or(Some(DEFAULT_PROGRESS_DEADLINE_SECONDS));
        if let Some(pds) = progress_deadline_seconds
            && pds <= min_ready_seconds
        {
            return Err(Error::invalid(
                "spec.progressDeadlineSeconds",
                "must be greater than minReadySeconds",
            ));
        }
        let paused = opt_bool(spec.get("paused"), "spec.paused")?.unwrap_or(false);
        let pod_replacement_policy =
            PodReplacementPolicy::from_json(spec.get("podReplacementPolicy"))?;
        Ok(DeploymentSpec {
            replicas,
            selector,
            selector_json: spec.get("selector").cloned().unwrap_or(Value::Null),
            template,
            template_labels,
            strategy,
            min_ready_seconds,
            revision_history_limit,
            progress_deadline_seconds,
            paused,
            pod_replacement_policy,
        })
    }
}

fn parse_strategy(v: Option<&Value>) -> Result<Strategy> {
    let empty = serde_json::Map::new();
    let obj = match v {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(Error::invalid("spec.strategy", "must be an object")),
    };
    let type_ = match obj.get("type") {
        None | Some(Value::Null) => "RollingUpdate",
        Some(Value::String(s)) if s.is_empty() => "RollingUpdate",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(Error::invalid("spec.strategy.type", "must be a string")),
    };
    let rolling = obj.get("rollingUpdate").filter(|v| !v.is_null());
    let blue_green = obj.get("blueGreen").filter(|v| !v.is_null());
    let forbid = |field: &str, present: bool| -> Result<()> {
        if present {
            return Err(Error::invalid(
                format!("spec.strategy.{field}"),
                format!("Forbidden: may not be specified when strategy `type` is '{type_}'"),
            ));
        }
        Ok(())
    };
    match type_ {
        "RollingUpdate" => {
            forbid("blueGreen", blue_green.is_some())?;
            let ru = match rolling {
                None => &empty,
                Some(Value::Object(m)) => m,
                Some(_) => {
                    return Err(Error::invalid(
                        "spec.strategy.rollingUpdate",
                        "must be an object",
                    ));
                }
            };
            let field = |k: &str, default: &str| -> Result<IntOrString> {
                match ru.get(k) {
                    None | Some(Value::Null) => Ok(IntOrString::Str(default.into())),
                    Some(v) => {
                        IntOrString::from_json(v, &format!("spec.strategy.rollingUpdate.{k}"))
                    }
                }
            };
            let max_surge = field("maxSurge", DEFAULT_MAX_SURGE)?;
            let max_unavailable = field("maxUnavailable", DEFAULT_MAX_UNAVAILABLE)?;
            validate_rolling_update(&max_surge, &max_unavailable, "spec.strategy.rollingUpdate")?;
            Ok(Strategy::RollingUpdate {
                max_surge,
                max_unavailable,
            })
        }
        "Recreate" => {
            forbid("rollingUpdate", rolling.is_some())?;
            forbid("blueGreen", blue_green.is_some())?;
            Ok(Strategy::Recreate)
        }
        "BlueGreen" => {
            forbid("rollingUpdate", rolling.is_some())?;
            let bg = match blue_green {
                None => &empty,
                Some(Value::Object(m)) => m,
                Some(_) => {
                    return Err(Error::invalid(
                        "spec.strategy.blueGreen",
                        "must be an object",
                    ));
                }
            };
            let auto_promote =
                opt_bool(bg.get("autoPromote"), "spec.strategy.blueGreen.autoPromote")?
                    .unwrap_or(true);
            let scale_down_delay_seconds = nonnegative_int32(
                bg.get("scaleDownDelaySeconds"),
                "spec.strategy.blueGreen.scaleDownDelaySeconds",
            )?
            .unwrap_or(DEFAULT_BLUE_GREEN_SCALE_DOWN_DELAY_SECONDS);
            Ok(Strategy::BlueGreen {
                auto_promote,
                scale_down_delay_seconds,
            })
        }
        other => Err(Error::invalid(
            "spec.strategy.type",
            format!(
                "Unsupported value: {other:?}: supported values: \"BlueGreen\", \"Recreate\", \"RollingUpdate\""
            ),
        )),
    }
}

/// `DeploymentStatus` (`terminatingReplicas`, feature-gated upstream, is not modelled).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeploymentStatus {
    #[serde(skip_serializing_if = "is_zero64")]
    pub observed_generation: i64,
    #[serde(skip_serializing_if = "is_zero32")]
    pub replicas: i32,
    #[serde(skip_serializing_if = "is_zero32")]
    pub updated_replicas: i32,
    #[serde(skip_serializing_if = "is_zero32")]
    pub ready_replicas: i32,
    #[serde(skip_serializing_if = "is_zero32")]
    pub available_replicas: i32,
    #[serde(skip_serializing_if = "is_zero32")]
    pub unavailable_replicas: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
}

fn is_zero32(n: &i32) -> bool {
    *n == 0
}
fn is_zero64(n: &i64) -> bool {
    *n == 0
}

impl DeploymentStatus {
    /// Decodes `status` (`null` is empty); a wrong shape is `Invalid` naming `status`.
    pub fn from_json(v: &Value) -> Result<DeploymentStatus> {
        if v.is_null() {
            return Ok(DeploymentStatus::default());
        }
        serde_json::from_value(v.clone()).map_err(|e| Error::invalid("status", e.to_string()))
    }

    /// The JSON form (zero counters left out).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `syncDeployment`'s `SelectingAll` check: whether `spec.selector` is the empty selector,
/// which selects everything. Upstream then only records a Warning event and observes the
/// generation; it neither manages anything nor retries. Checked on the stored spec, before
/// [`DeploymentView::from_object`], whose validation rejects such a selector.
pub fn selects_everything(spec: &Value) -> bool {
    match spec.get("selector") {
        None | Some(Value::Null) => false,
        Some(v) => LabelSelector::from_json(v, "spec.selector").is_ok_and(|s| s.is_empty()),
    }
}

/// A Deployment as the controller reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeploymentView {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: i64,
    pub deleting: bool,
    pub annotations: BTreeMap<String, String>,
    pub spec: DeploymentSpec,
    pub status: DeploymentStatus,
}

impl DeploymentView {
    /// Decodes and validates a stored Deployment.
    pub fn from_object(obj: &Object) -> Result<DeploymentView> {
        Ok(DeploymentView {
            name: obj.metadata.name.clone(),
            namespace: obj.metadata.namespace.clone(),
            uid: obj.metadata.uid.clone(),
            generation: obj.metadata.generation,
            deleting: obj.metadata.deletion_timestamp.is_some(),
            annotations: obj.metadata.annotations.clone(),
            spec: DeploymentSpec::from_spec(&obj.spec)?,
            status: DeploymentStatus::from_json(&obj.status)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// New ReplicaSet

/// The ReplicaSet `getNewReplicaSet` creates: template and selector with
/// `pod-template-hash = ComputeHash(template, status.collisionCount)`, name
/// `<deployment>-<hash>`, controller reference to `owner`, replicas from
/// [`util::new_rs_new_replicas`], annotations from [`util::set_new_replica_set_annotations`]
/// with revision `max_revision(old) + 1`.
pub fn new_replica_set(
    owner: &Object,
    d: &DeploymentView,
    old_rss: &[ReplicaSetView],
) -> std::result::Result<Object, String> {
    let hash = compute_hash(&d.spec.template, d.status.collision_count);
    let template = template_with_hash(&d.spec.template, &hash);
    let mut selector = d.spec.selector_json.clone();
    if !selector.is_object() {
        selector = json!({});
    }
    let sel = selector.as_object_mut().expect("made an object above");
    let ml = sel.entry("matchLabels").or_insert_with(|| json!({}));
    if !ml.is_object() {
        *ml = json!({});
    }
    ml.as_object_mut()
        .expect("made an object above")
        .insert(POD_TEMPLATE_HASH_LABEL.into(), Value::from(hash.as_str()));
    let mut labels = d.spec.template_labels.clone();
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    let probe = ReplicaSetView {
        spec: super::ReplicaSetSpec {
            replicas: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let replicas = new_rs_new_replicas(&d.spec, &probe, old_rss)?;
    let new_revision = (max_revision(old_rss) + 1).to_string();
    let mut annotations = BTreeMap::new();
    set_new_replica_set_annotations(
        d,
        &mut annotations,
        &new_revision,
        false,
        MAX_REV_HISTORY_LENGTH_IN_CHARS,
    );
    let mut obj = Object {
        kind: "ReplicaSet".into(),
        spec: json!({
            "replicas": replicas,
            "minReadySeconds": d.spec.min_ready_seconds,
            "selector": selector,
            "template": template,
        }),
        ..Default::default()
    };
    obj.metadata.name = format!("{}-{}", d.name, hash);
    obj.metadata.namespace = d.namespace.clone();
    obj.metadata.labels = labels;
    obj.metadata.annotations = annotations;
    obj.metadata.owner_references = vec![controller_ref(owner)];
    Ok(obj)
}

/// `Progressing=True/FoundNewReplicaSet` "Found new replica set %q" (set by
/// `getNewReplicaSet` when a deadline is set and there is no Progressing condition yet).
pub fn found_new_rs_condition(rs_name: &str, now: SystemTime) -> Condition {
    Condition::new(
        PROGRESSING,
        CONDITION_TRUE,
        FOUND_NEW_RS_REASON,
        &format!("Found new replica set {rs_name:?}"),
        now,
    )
}

/// `Progressing=True/NewReplicaSetCreated` "Created new replica set %q".
pub fn new_rs_created_condition(rs_name: &str, now: SystemTime) -> Condition {
    Condition::new(
        PROGRESSING,
        CONDITION_TRUE,
        NEW_RS_CREATED_REASON,
        &format!("Created new replica set {rs_name:?}"),
        now,
    )
}

/// `Progressing=False/ReplicaSetCreateError` "Failed to create new replica set %q: %v".
pub fn rs_create_error_condition(rs_name: &str, err: &str, now: SystemTime) -> Condition {
    Condition::new(
        PROGRESSING,
        CONDITION_FALSE,
        FAILED_RS_CREATE_REASON,
        &format!("Failed to create new replica set {rs_name:?}: {err}"),
        now,
    )
}

// ---------------------------------------------------------------------------------------
// Status and conditions

/// `SetDeploymentCondition`: unchanged when the same type has the same status and reason;
/// otherwise replaces it (appended last), keeping `lastTransitionTime` when the status is
/// the same.
pub fn set_deployment_condition(status: &mut DeploymentStatus, mut cond: Condition) {
    if let Some(cur) = get_condition(&status.conditions, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time;
        }
    }
    remove_condition(&mut status.conditions, &cond.type_);
    status.conditions.push(cond);
}

/// `calculateStatus`: replicas, updated, ready, available over the ReplicaSets;
/// `unavailable = max(0, Σ spec − available)`; `observedGeneration = generation`;
/// conditions carried over and `Available` set from `available ≥ replicas −
/// MaxUnavailable`.
pub fn calculate_deployment_status(
    d: &DeploymentView,
    new_rs: Option<&ReplicaSetView>,
    old_rss: &[ReplicaSetView],
    now: SystemTime,
) -> DeploymentStatus {
    let all = || old_rss.iter().chain(new_rs);
    let sum = |f: fn(&ReplicaSetView) -> i32| -> i64 { all().map(|rs| i64::from(f(rs))).sum() };
    let available = sum(|rs| rs.status.available_replicas);
    let total_spec = sum(|rs| rs.spec.replicas);
    let c = |v: i64| v.clamp(0, i64::from(i32::MAX)) as i32;
    let mut status = DeploymentStatus {
        observed_generation: d.generation,
        replicas: c(sum(|rs| rs.status.replicas)),
        updated_replicas: new_rs.map(|rs| rs.status.replicas).unwrap_or(0),
        ready_replicas: c(sum(|rs| rs.status.ready_replicas)),
        available_replicas: c(available),
        unavailable_replicas: c((total_spec - available).max(0)),
        conditions: d.status.conditions.clone(),
        collision_count: d.status.collision_count,
    };
    let min = i64::from(d.spec.replicas) - i64::from(max_unavailable(&d.spec));
    let cond = if available >= min {
        Condition::new(
            AVAILABLE,
            CONDITION_TRUE,
            MINIMUM_REPLICAS_AVAILABLE,
            "Deployment has minimum availability.",
            now,
        )
    } else {
        Condition::new(
            AVAILABLE,
            CONDITION_FALSE,
            MINIMUM_REPLICAS_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            now,
        )
    };
    set_deployment_condition(&mut status, cond);
    status
}

/// `HasProgressDeadline`: set and not `i32::MAX`.
pub fn has_progress_deadline(d: &DeploymentSpec) -> bool {
    d.progress_deadline_seconds.is_some_and(|s| s != i32::MAX)
}

/// `DeploymentComplete`: updated, replicas and available all equal `spec.replicas` and the
/// generation is observed.
pub fn deployment_complete(d: &DeploymentView, s: &DeploymentStatus) -> bool {
    s.updated_replicas == d.spec.replicas
        && s.replicas == d.spec.replicas
        && s.available_replicas == d.spec.replicas
        && s.observed_generation >= d.generation
}

/// `DeploymentProgressing`: compared with the stored status, more updated, fewer old, more
/// ready or more available replicas.
pub fn deployment_progressing(d: &DeploymentView, new: &DeploymentStatus) -> bool {
    let old = &d.status;
    let old_old = i64::from(old.replicas) - i64::from(old.updated_replicas);
    let new_old = i64::from(new.replicas) - i64::from(new.updated_replicas);
    new.updated_replicas > old.updated_replicas
        || new_old < old_old
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
}

/// `DeploymentTimedOut`: with a deadline and a `Progressing` condition in `new` whose
/// reason is not `NewReplicaSetAvailable`: `ProgressDeadlineExceeded` already, or
/// `lastUpdateTime + deadline` strictly before `now`.
pub fn deployment_timed_out(d: &DeploymentView, new: &DeploymentStatus, now: SystemTime) -> bool {
    if !has_progress_deadline(&d.spec) {
        return false;
    }
    let Some(cond) = get_condition(&new.conditions, PROGRESSING) else {
        return false;
    };
    if cond.reason == NEW_RS_AVAILABLE_REASON {
        return false;
    }
    if cond.reason == TIMED_OUT_REASON {
        return true;
    }
    let from = cond.last_update_time.unwrap_or(SystemTime::UNIX_EPOCH);
    let deadline = Duration::from_secs(d.spec.progress_deadline_seconds.unwrap_or(0).max(0) as u64);
    match from.checked_add(deadline) {
        Some(t) => t < now,
        None => false,
    }
}

/// `syncRolloutStatus` without the write: the new status with `Available`, `Progressing`
/// (removed without a deadline; otherwise, unless the rollout already completed:
/// `NewReplicaSetAvailable` when complete, `ReplicaSetUpdated` on progress — refreshing
/// `lastUpdateTime` and keeping `lastTransitionTime` if it was True — or
/// `ProgressDeadlineExceeded` when timed out) and `ReplicaFailure` (the new ReplicaSet's,
/// else any ReplicaSet's; removed when none). Write it if it differs from `d.status`;
/// otherwise call [`requeue_stuck_deployment`].
pub fn sync_rollout_status(
    d: &DeploymentView,
    new_rs: Option<&ReplicaSetView>,
    old_rss: &[ReplicaSetView],
    now: SystemTime,
) -> DeploymentStatus {
    let mut status = calculate_deployment_status(d, new_rs, old_rss, now);
    if !has_progress_deadline(&d.spec) {
        remove_condition(&mut status.conditions, PROGRESSING);
    }
    let current = get_condition(&d.status.conditions, PROGRESSING);
    let is_complete = status.replicas == status.updated_replicas
        && current.is_some_and(|c| c.reason == NEW_RS_AVAILABLE_REASON);
    if has_progress_deadline(&d.spec) && !is_complete {
        let subject = |what: &str| match new_rs {
            Some(rs) => format!("ReplicaSet {:?} {what}", rs.name),
            None => format!("Deployment {:?} {what}", d.name),
        };
        if deployment_complete(d, &status) {
            let c = Condition::new(
                PROGRESSING,
                CONDITION_TRUE,
                NEW_RS_AVAILABLE_REASON,
                &subject("has successfully progressed."),
                now,
            );
            set_deployment_condition(&mut status, c);
        } else if deployment_progressing(d, &status) {
            let mut c = Condition::new(
                PROGRESSING,
                CONDITION_TRUE,
                RS_UPDATED_REASON,
                &subject("is progressing."),
                now,
            );
            if let Some(cur) = current {
                if cur.status == CONDITION_TRUE {
                    c.last_transition_time = cur.last_transition_time;
                }
                remove_condition(&mut status.conditions, PROGRESSING);
            }
            set_deployment_condition(&mut status, c);
        } else if deployment_timed_out(d, &status, now) {
            let c = Condition::new(
                PROGRESSING,
                CONDITION_FALSE,
                TIMED_OUT_REASON,
                &subject("has timed out progressing."),
                now,
            );
            set_deployment_condition(&mut status, c);
        }
    }
    match replica_failure(new_rs, old_rss) {
        Some(c) => set_deployment_condition(&mut status, c),
        None => remove_condition(&mut status.conditions, REPLICA_FAILURE),
    }
    status
}

/// `getReplicaFailures` (first only) + `ReplicaSetToDeploymentCondition`: the new
/// ReplicaSet's failure, else the first one of `allRSs` — the old ReplicaSets in creation
/// order (as `FindOldReplicaSets` leaves them after `FindNewReplicaSet` sorted the list),
/// then the new one.
fn replica_failure(
    new_rs: Option<&ReplicaSetView>,
    old_rss: &[ReplicaSetView],
) -> Option<Condition> {
    let to_d = |c: &Condition| Condition {
        last_update_time: c.last_transition_time,
        ..c.clone()
    };
    new_rs
        .and_then(|rs| get_condition(&rs.status.conditions, REPLICA_FAILURE))
        .or_else(|| {
            sorted_by_creation(old_rss)
                .into_iter()
                .chain(new_rs)
                .find_map(|rs| get_condition(&rs.status.conditions, REPLICA_FAILURE))
        })
        .map(to_d)
}

/// What `requeueStuckDeployment` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StuckRequeue {
    /// No deadline, no Progressing condition, complete, or already timed out (upstream −1).
    Never,
    /// Less than a second left: add the key rate-limited now (upstream returns 0).
    Now,
    /// Check again: upstream returns `after` and adds the key after `after + 1 s`
    /// ([`StuckRequeue::enqueue_delay`]).
    After(Duration),
}

impl StuckRequeue {
    /// The delay to give the work queue: `after + 1 s` (millisecond skew guard), zero for
    /// `Now`, `None` for `Never`.
    pub fn enqueue_delay(&self) -> Option<Duration> {
        match self {
            StuckRequeue::Never => None,
            StuckRequeue::Now => Some(Duration::ZERO),
            StuckRequeue::After(d) => Some(*d + Duration::from_secs(1)),
        }
    }
}

/// `requeueStuckDeployment(d, newStatus)`: when the status did not change, when to look
/// again so that the deadline is detected on time without any resync (K9):
/// `lastUpdateTime + deadline − now` of the *stored* Progressing condition.
pub fn requeue_stuck_deployment(
    d: &DeploymentView,
    new: &DeploymentStatus,
    now: SystemTime,
) -> StuckRequeue {
    let Some(cur) = get_condition(&d.status.conditions, PROGRESSING) else {
        return StuckRequeue::Never;
    };
    if !has_progress_deadline(&d.spec)
        || deployment_complete(d, new)
        || cur.reason == TIMED_OUT_REASON
    {
        return StuckRequeue::Never;
    }
    let from = cur.last_update_time.unwrap_or(SystemTime::UNIX_EPOCH);
    let deadline = Duration::from_secs(d.spec.progress_deadline_seconds.unwrap_or(0).max(0) as u64);
    let at = from.checked_add(deadline).unwrap_or(from);
    match at.duration_since(now) {
        Ok(after) if after >= Duration::from_secs(1) => StuckRequeue::After(after),
        _ => StuckRequeue::Now,
    }
}

/// `checkPausedConditions`: with a deadline, a paused Deployment whose Progressing reason is
/// not `DeploymentPaused` gets `Unknown/DeploymentPaused`; a resumed one whose reason is
/// `DeploymentPaused` gets `Unknown/DeploymentResumed` (which restarts the deadline clock).
/// A `ProgressDeadlineExceeded` condition is left as it is, paused or not: the rollout's
/// failure stays reported (upstream returns early; `k8s-semantics.md` §4.1 leaves this
/// out). `Some(status)` when the status must be written.
pub fn check_paused_conditions(d: &DeploymentView, now: SystemTime) -> Option<DeploymentStatus> {
    if !has_progress_deadline(&d.spec) {
        return None;
    }
    let reason = get_condition(&d.status.conditions, PROGRESSING).map(|c| c.reason.as_str());
    if reason == Some(TIMED_OUT_REASON) {
        return None;
    }
    let paused_now = reason == Some(PAUSED_REASON);
    let cond = if d.spec.paused && !paused_now {
        Condition::new(
            PROGRESSING,
            CONDITION_UNKNOWN,
            PAUSED_REASON,
            "Deployment is paused",
            now,
        )
    } else if !d.spec.paused && paused_now {
        Condition::new(
            PROGRESSING,
            CONDITION_UNKNOWN,
            RESUMED_REASON,
            "Deployment is resumed",
            now,
        )
    } else {
        return None;
    };
    let mut status = d.status.clone();
    set_deployment_condition(&mut status, cond);
    Some(status)
}

/// `syncDeploymentStatus` (paused or scaling syncs): the calculated status, `Some` only if
/// it differs from the stored one.
pub fn sync_deployment_status(
    d: &DeploymentView,
    new_rs: Option<&ReplicaSetView>,
    old_rss: &[ReplicaSetView],
    now: SystemTime,
) -> Option<DeploymentStatus> {
    let s = calculate_deployment_status(d, new_rs, old_rss, now);
    (s != d.status).then_some(s)
}

// ---------------------------------------------------------------------------------------
// Strategies

/// One step of `rolloutRolling`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollingStep {
    /// Scale the new ReplicaSet (`reconcileNewReplicaSet`), then sync the rollout status.
    ScaleNew(Scale),
    /// Scale old ReplicaSets (`reconcileOldReplicaSets`), then sync the rollout status.
    /// `scaled == false` is upstream's swallowed "invalid request to scale down" error: the
    /// writes before it are made, then the sync continues as [`RollingStep::Idle`].
    ScaleOld { scales: Vec<Scale>, scaled: bool },
    /// Nothing to scale: if [`deployment_complete`] on the stored status, run
    /// [`util::cleanup_plan`]; then sync the rollout status.
    Idle,
}

/// `rolloutRolling` after the new ReplicaSet exists: grow or shrink the new ReplicaSet if
/// it can; else scale the old ones down.
pub fn rolling_update_step(
    d: &DeploymentSpec,
    new_rs: &ReplicaSetView,
    old_rss: &[ReplicaSetView],
) -> std::result::Result<RollingStep, String> {
    rolling_update_step_with(d, new_rs, old_rss, 0)
}

/// [`rolling_update_step`] where the new ReplicaSet grows only within `replicas + surge`
/// minus `surplus` instances beyond the specs (TerminationComplete: stopping instances;
/// see [`util::new_rs_new_replicas_with`]). When it cannot grow, the old ReplicaSets are
/// reconciled as usual.
pub fn rolling_update_step_with(
    d: &DeploymentSpec,
    new_rs: &ReplicaSetView,
    old_rss: &[ReplicaSetView],
    surplus: i64,
) -> std::result::Result<RollingStep, String> {
    if let Some(to) = reconcile_new_replica_set_with(d, new_rs, old_rss, surplus)? {
        return Ok(RollingStep::ScaleNew(Scale {
            name: new_rs.name.clone(),
            from: new_rs.spec.replicas,
            to,
        }));
    }
    let active: Vec<ReplicaSetView> = old_rss
        .iter()
        .filter(|rs| rs.spec.replicas > 0)
        .cloned()
        .collect();
    let plan = reconcile_old_replica_sets(d, new_rs, &active);
    if plan.scaled() || !plan.scales.is_empty() {
        let scaled = plan.scaled();
        return Ok(RollingStep::ScaleOld {
            scales: plan.scales,
            scaled,
        });
    }
    Ok(RollingStep::Idle)
}

/// `oldPodsRunning` (Recreate): an old ReplicaSet still reports replicas, or an instance not
/// owned by the new ReplicaSet is in any phase but `Succeeded`/`Failed` (being deleted
/// counts as running; terminal ones never block, K11). `instances` are the Deployment's
/// instances with their owning ReplicaSet's UID in `controller_uid`.
pub fn old_instances_running(
    new_rs: Option<&ReplicaSetView>,
    old_rss: &[ReplicaSetView],
    instances: &[super::InstanceView],
) -> bool {
    if old_rss.iter().any(|rs| rs.status.replicas > 0) {
        return true;
    }
    instances.iter().any(|i| {
        let owned_by_new = new_rs.is_some_and(|rs| i.controller_uid.as_deref() == Some(&rs.uid));
        !owned_by_new && !i.is_terminal()
    })
}

/// One step of `rolloutRecreate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecreateStep {
    /// Scale these active old ReplicaSets to 0, then sync the rollout status.
    ScaleOldToZero(Vec<Scale>),
    /// Old instances are still running or stopping: only sync the rollout status.
    WaitForOld,
    /// Create the new ReplicaSet ([`new_replica_set`], with `replicas`), then continue.
    CreateNew,
    /// Scale the new ReplicaSet to `replicas` (None: already there); then, if complete,
    /// clean up; then sync the rollout status.
    ScaleNew(Option<Scale>),
}

/// `rolloutRecreate` as a step.
pub fn recreate_step(
    d: &DeploymentSpec,
    new_rs: Option<&ReplicaSetView>,
    old_rss: &[ReplicaSetView],
    instances: &[super::InstanceView],
) -> RecreateStep {
    let down: Vec<Scale> = old_rss
        .iter()
        .filter(|rs| rs.spec.replicas > 0)
        .map(|rs| Scale {
            name: rs.name.clone(),
            from: rs.spec.replicas,
            to: 0,
        })
        .collect();
    if !down.is_empty() {
        return RecreateStep::ScaleOldToZero(down);
    }
    if old_instances_running(new_rs, old_rss, instances) {
        return RecreateStep::WaitForOld;
    }
    match new_rs {
        None => RecreateStep::CreateNew,
        Some(rs) if rs.spec.replicas == d.replicas => RecreateStep::ScaleNew(None),
        Some(rs) => RecreateStep::ScaleNew(Some(Scale {
            name: rs.name.clone(),
            from: rs.spec.replicas,
            to: d.replicas,
        })),
    }
}

/// What floyd's BlueGreen strategy does next (see `docs/controllers.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlueGreenPlan {
    /// Scale the new (preview) ReplicaSet to this size.
    pub scale_new: Option<Scale>,
    /// Switch the Services to the new revision now, in one write, and record the switch time.
    pub promote: bool,
    /// When the old ReplicaSets may be scaled to zero (`switch + scaleDownDelaySeconds`).
    pub scale_old_to_zero_at: Option<SystemTime>,
    /// Scale these old ReplicaSets to zero now (the delay has passed).
    pub scale_old: Vec<Scale>,
    /// The new revision did not become available before the progress deadline and the
    /// Services were never switched: roll back to the active revision.
    pub abort: bool,
    /// Look again after this long (the scale-down time), if anything is pending on time.
    pub requeue_after: Option<Duration>,
}

/// BlueGreen, one step. `available` is the new ReplicaSet's available count (with
/// `minReadySeconds` already applied, as `status.availableReplicas`); `switched_at` is when
/// the Services were switched to the new revision (`None`: still on the old one);
/// `promote_requested` is a manual promotion; `timed_out` is [`deployment_timed_out`].
/// Rules: the new ReplicaSet goes straight to `replicas` beside the old ones; the switch
/// happens only when `available ≥ replicas` and (autoPromote or a manual promotion); the
/// old ReplicaSets go to zero only at `switched_at + scaleDownDelaySeconds`.
#[allow(clippy::too_many_arguments)]
pub fn blue_green_plan(
    d: &DeploymentSpec,
    new_rs: &ReplicaSetView,
    old_rss: &[ReplicaSetView],
    available: i32,
    now: SystemTime,
    switched_at: Option<SystemTime>,
    promote_requested: bool,
    timed_out: bool,
) -> BlueGreenPlan {
    let (auto_promote, delay) = match d.strategy {
        Strategy::BlueGreen {
            auto_promote,
            scale_down_delay_seconds,
        } => (auto_promote, scale_down_delay_seconds),
        _ => (true, DEFAULT_BLUE_GREEN_SCALE_DOWN_DELAY_SECONDS),
    };
    let mut plan = BlueGreenPlan::default();
    if new_rs.spec.replicas != d.replicas {
        plan.scale_new = Some(Scale {
            name: new_rs.name.clone(),
            from: new_rs.spec.replicas,
            to: d.replicas,
        });
    }
    let ready_to_switch = new_rs.spec.replicas == d.replicas && available >= d.replicas;
    let switched = match switched_at {
        Some(t) => Some(t),
        None if ready_to_switch && (auto_promote || promote_requested) => {
            plan.promote = true;
            Some(now)
        }
        None => {
            plan.abort = timed_out;
            None
        }
    };
    if let Some(t) = switched {
        let at = t + Duration::from_secs(delay.max(0) as u64);
        let pending: Vec<Scale> = old_rss
            .iter()
            .filter(|rs| rs.spec.replicas > 0)
            .map(|rs| Scale {
                name: rs.name.clone(),
                from: rs.spec.replicas,
                to: 0,
            })
            .collect();
        if !pending.is_empty() {
            plan.scale_old_to_zero_at = Some(at);
            if now >= at {
                plan.scale_old = pending;
            } else {
                plan.requeue_after = at.duration_since(now).ok();
            }
        }
    }
    plan
}

// ---------------------------------------------------------------------------------------
// Rollback

/// `getRollbackTo`: the requested revision, `None` when absent or unparsable.
pub fn rollback_to(d: &DeploymentView) -> Option<i64> {
    d.annotations
        .get(ROLLBACK_TO_ANNOTATION)
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse::<i64>().ok())
}

/// What `rollback` decided; in every case the request is cleared with a spec update.
#[derive(Clone, Debug, PartialEq)]
pub enum RollbackOutcome {
    /// Warning `DeploymentRollbackRevisionNotFound` with this message.
    NotFound { message: String },
    /// Warning `DeploymentRollbackTemplateUnchanged`.
    TemplateUnchanged { revision: i64, message: String },
    /// Set the Deployment's template and annotations to these; Normal event
    /// `DeploymentRollback` "Rolled back deployment %q to revision %d".
    RolledBack {
        revision: i64,
        template: Value,
        annotations: BTreeMap<String, String>,
        message: String,
    },
}

/// `rollback(d, to_revision)`: revision 0 means the last revision ([`util::last_revision`]);
/// the first ReplicaSet (old ones in creation order, then the new one) with that revision is
/// the target; its template (without the hash label) and its annotations (except the
/// skip list) are copied onto the Deployment unless the templates are already equal.
pub fn rollback_plan(
    d: &DeploymentView,
    to_revision: i64,
    new_rs: Option<&ReplicaSetView>,
    old_rss: &[ReplicaSetView],
) -> RollbackOutcome {
    let all: Vec<&ReplicaSetView> = sorted_by_creation(old_rss)
        .into_iter()
        .chain(new_rs)
        .collect();
    let mut target = to_revision;
    if target == 0 {
        target = last_revision(all.iter().copied());
        if target == 0 {
            return RollbackOutcome::NotFound {
                message: "Unable to find last revision.".into(),
            };
        }
    }
    for rs in &all {
        if revision(&rs.annotations) != Some(target) {
            continue;
        }
        if equal_ignore_hash(&d.spec.template, &rs.spec.template) {
            return RollbackOutcome::TemplateUnchanged {
                revision: target,
                message: format!(
                    "The rollback revision contains the same template as current deployment {:?}",
                    d.name
                ),
            };
        }
        return RollbackOutcome::RolledBack {
            revision: target,
            template: template_without_hash(&rs.spec.template),
            annotations: set_deployment_annotations_to(&d.annotations, &rs.annotations),
            message: format!("Rolled back deployment {:?} to revision {}", d.name, target),
        };
    }
    RollbackOutcome::NotFound {
        message: "Unable to find the revision to rollback to.".into(),
    }
}
