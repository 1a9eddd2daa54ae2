//! [`InstanceView`]: the few fields of an `Instance` (floyd's pod) that the controllers read,
//! and the predicates upstream defines on pods: `IsPodActive`, `IsPodReady`,
//! `IsPodAvailable`, the deletion-cost annotation. Decoding is tolerant: an instance's status
//! is written by the node agent, and a field of the wrong shape reads as its zero value,
//! as a missing one does (a pod with an unknown phase ranks like `Pending` upstream too).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{CONDITION_TRUE, parse_time};
use crate::store::Object;

/// `controller.kubernetes.io/pod-deletion-cost`: lower cost is deleted first.
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

pub const PHASE_PENDING: &str = "Pending";
pub const PHASE_RUNNING: &str = "Running";
pub const PHASE_SUCCEEDED: &str = "Succeeded";
pub const PHASE_FAILED: &str = "Failed";
pub const PHASE_UNKNOWN: &str = "Unknown";

/// What the controllers read from an `Instance`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceView {
    /// `"namespace/name"` (the expectations and deletion key).
    pub key: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`; `""` when unassigned.
    pub node_name: String,
    /// `status.phase` as written (`""` when unset).
    pub phase: String,
    /// The first `Ready` condition has status `"True"` (`IsPodReady`).
    pub ready: bool,
    /// That condition's `lastTransitionTime` (`None`: Go's zero time).
    pub ready_transition: Option<SystemTime>,
    /// `status.restartCount`.
    pub restart_count: i64,
    pub creation: Option<SystemTime>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The deletion-cost annotation, parsed as upstream (invalid or missing: 0).
    pub deletion_cost: i32,
    /// UID of the controller owner reference, if any.
    pub controller_uid: Option<String>,
}

impl InstanceView {
    /// The view of a stored `Instance`.
    pub fn from_object(obj: &Object) -> InstanceView {
        let status = &obj.status;
        let ready_cond = status
            .get("conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
            });
        let ready = ready_cond
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str)
            == Some(CONDITION_TRUE);
        let ready_transition = ready_cond
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .and_then(parse_time);
        InstanceView {
            key: obj.key(),
            name: obj.metadata.name.clone(),
            namespace: obj.metadata.namespace.clone(),
            uid: obj.metadata.uid.clone(),
            labels: obj.metadata.labels.clone(),
            node_name: obj
                .spec
                .get("nodeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            phase: status
                .get("phase")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            ready,
            ready_transition,
            restart_count: status
                .get("restartCount")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            creation: obj
                .metadata
                .creation_timestamp
                .as_deref()
                .and_then(parse_time),
            deleting: obj.metadata.deletion_timestamp.is_some(),
            deletion_cost: deletion_cost(&obj.metadata.annotations),
            controller_uid: obj.controller_ref().map(|r| r.uid.clone()),
        }
    }

    /// `IsPodActive`.
    pub fn is_active(&self) -> bool {
        is_active(self)
    }

    /// Terminal: `Succeeded` or `Failed`.
    pub fn is_terminal(&self) -> bool {
        self.phase == PHASE_SUCCEEDED || self.phase == PHASE_FAILED
    }
}

/// `IsPodActive`: not `Succeeded`, not `Failed`, and not being deleted.
pub fn is_active(i: &InstanceView) -> bool {
    !i.is_terminal() && !i.deleting
}

/// `IsPodAvailable`: ready, and either `min_ready_seconds == 0` or the Ready transition time
/// is set and `transition + min_ready_seconds` is strictly before `now`.
pub fn is_available(i: &InstanceView, min_ready_seconds: i32, now: SystemTime) -> bool {
    if !i.ready {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match i.ready_transition {
        Some(t) => match t.checked_add(Duration::from_secs(min_ready_seconds as u64)) {
            Some(ready_at) => ready_at < now,
            None => false,
        },
        None => false,
    }
}

/// `GetDeletionCostFromPodAnnotations`: an int32 without `+` or leading zeros; anything
/// invalid is 0.
pub fn deletion_cost(annotations: &BTreeMap<String, String>) -> i32 {
    let Some(v) = annotations.get(DELETION_COST_ANNOTATION) else {
        return 0;
    };
    let first_ok = match v.as_bytes().first() {
        None => false,
        Some(b'-') => true,
        Some(b'0') => v == "0",
        Some(c) => c.is_ascii_digit(),
    };
    if !first_ok {
        return 0;
    }
    let digits = v.strip_prefix('-').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    v.parse::<i32>().unwrap_or(0)
}

/// The phase ordinal used when ranking for deletion: Pending 0 < Unknown 1 < Running 2; any
/// other phase (including empty) is 0.
pub fn phase_ordinal(phase: &str) -> u8 {
    match phase {
        PHASE_UNKNOWN => 1,
        PHASE_RUNNING => 2,
        _ => 0,
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
    fn decodes_an_instance() {
        let obj = Object::from_json(&json!({
            "kind": "Instance",
            "metadata": {"name": "web-1", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {DELETION_COST_ANNOTATION: "-5"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web", "uid": "rs1", "controller": true}]},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "restartCount": 2, "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:01:00Z"}]}
        }))
        .unwrap();
        let v = InstanceView::from_object(&obj);
        assert_eq!(v.key, "default/web-1");
        assert_eq!(v.node_name, "n1");
        assert!(v.ready);
        assert_eq!(v.ready_transition, Some(t("2026-01-01T00:01:00Z")));
        assert_eq!(v.restart_count, 2);
        assert_eq!(v.deletion_cost, -5);
        assert_eq!(v.controller_uid.as_deref(), Some("rs1"));
        assert!(is_active(&v));
    }

    #[test]
    fn activity_table() {
        // (phase, deleting, active)
        for (phase, deleting, want) in [
            ("Pending", false, true),
            ("Running", false, true),
            ("Unknown", false, true),
            ("", false, true),
            ("Succeeded", false, false),
            ("Failed", false, false),
            ("Running", true, false),
        ] {
            let i = InstanceView {
                phase: phase.into(),
                deleting,
                ..Default::default()
            };
            assert_eq!(is_active(&i), want, "{phase} {deleting}");
        }
    }

    #[test]
    fn availability_table() {
        let now = t("2026-01-01T00:10:00Z");
        // (ready, transition, minReadySeconds, available)
        let cases = [
            (false, Some("2026-01-01T00:00:00Z"), 0, false),
            (true, None, 0, true),
            (true, None, 10, false),
            (true, Some("2026-01-01T00:09:50Z"), 10, false), // exactly now: not strictly before
            (true, Some("2026-01-01T00:09:49Z"), 10, true),
            (true, Some("2026-01-01T00:09:55Z"), 10, false),
            (true, Some("2026-01-01T00:09:55Z"), 0, true),
        ];
        for (ready, tr, mrs, want) in cases {
            let i = InstanceView {
                ready,
                ready_transition: tr.map(t),
                ..Default::default()
            };
            assert_eq!(is_available(&i, mrs, now), want, "{ready} {tr:?} {mrs}");
        }
    }

    #[test]
    fn deletion_cost_table() {
        for (v, want) in [
            ("0", 0),
            ("10", 10),
            ("-10", -10),
            ("-0", 0),
            ("+10", 0),
            ("008", 0),
            ("00", 0),
            ("", 0),
            ("abc", 0),
            ("2147483647", i32::MAX),
            ("2147483648", 0),
            ("-2147483648", i32::MIN),
            ("1.5", 0),
        ] {
            let a = BTreeMap::from([(DELETION_COST_ANNOTATION.to_string(), v.to_string())]);
            assert_eq!(deletion_cost(&a), want, "{v:?}");
        }
        assert_eq!(deletion_cost(&BTreeMap::new()), 0);
    }
}
