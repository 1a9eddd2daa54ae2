//! The pure core of floyd's controllers: the ReplicaSet controller (keep N instances of a
//! template) and the Deployment controller (move N instances from one template to the next),
//! written as plain functions over typed views of stored objects, as `k8s-semantics.md` §3
//! and §4 describe upstream Kubernetes. Nothing here reads a clock, writes to the store or
//! starts a thread: every function takes `now` and returns a plan; the runtime that wires
//! informers, work queues and the store to these plans lives elsewhere.
//!
//! Layout:
//! - [`intstr`]: `maxSurge` / `maxUnavailable` values (an int or `"N%"`), their validation
//!   and scaling (`GetScaledValueFromIntOrPercent`).
//! - [`instance`]: [`InstanceView`] (the pod) and the readiness / availability predicates.
//! - [`expectations`]: the UID-tracking [`Expectations`] plus floyd's last-write record.
//! - [`replicaset`]: slow start, deletion ranking, `manageReplicas`, `calculateStatus`,
//!   adoption and release.
//! - [`deployment`]: templates and revisions, rolling / recreate / blue-green arithmetic,
//!   proportional scaling, status and conditions, cleanup and rollback.
//!
//! `docs/controllers.md` lists every rule with its upstream reference and every deliberate
//! difference.

pub mod deployment;
pub mod expectations;
pub(crate) mod gosort;
pub mod instance;
pub mod intstr;
pub mod probe;
pub mod replicaset;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

pub use deployment::{DeploymentSpec, DeploymentStatus, DeploymentView, Strategy};
pub use expectations::{Expectations, Satisfied};
pub use instance::{InstanceView, is_active, is_available};
pub use intstr::IntOrString;
pub use replicaset::{ReplicaSetSpec, ReplicaSetStatus, ReplicaSetView};

/// `"True"`, the status of a condition that holds.
pub const CONDITION_TRUE: &str = "True";
/// `"False"`.
pub const CONDITION_FALSE: &str = "False";
/// `"Unknown"`.
pub const CONDITION_UNKNOWN: &str = "Unknown";

/// A status condition (`DeploymentCondition`, `ReplicaSetCondition`, `PodCondition`): times
/// are wall-clock instants stored as RFC 3339 with second precision, as Kubernetes stores
/// `metav1.Time`. ReplicaSet and instance conditions have no `lastUpdateTime`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, with = "opt_time", skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<SystemTime>,
    #[serde(default, with = "opt_time", skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<SystemTime>,
}

impl Condition {
    /// A condition stamped `now` (truncated to whole seconds, as it will be stored) for both
    /// `lastUpdateTime` and `lastTransitionTime` (`NewDeploymentCondition`).
    pub fn new(type_: &str, status: &str, reason: &str, message: &str, now: SystemTime) -> Self {
        let now = truncate_to_secs(now);
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_update_time: Some(now),
            last_transition_time: Some(now),
        }
    }
}

/// The first condition of `type_` (`GetCondition`).
pub fn get_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Drops every condition of `type_` (`RemoveCondition` / `filterOutCondition`).
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) into a wall-clock
/// instant; `None` when it is not one (Go's zero time).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |at: usize, n: usize| -> Option<i64> {
        let d = b.get(at..at + n)?;
        d.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, se) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let seps = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !seps || !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for k in 0..9 {
            let digit = if k < digits {
                u32::from(b[i + 1 + k] - b'0')
            } else {
                0
            };
            nanos = nanos * 10 + digit;
        }
        i += 1 + digits;
    }
    let offset = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    t.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// Formats a wall-clock instant as Kubernetes stores it (`2026-01-01T00:00:00Z`).
pub fn format_time(t: SystemTime) -> String {
    crate::clock::rfc3339(t)
}

/// Drops the sub-second part, as a round trip through the stored RFC 3339 form does.
pub fn truncate_to_secs(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Serde for `Option<SystemTime>` as an RFC 3339 string; an unparseable or missing value
/// reads as `None` (Go's zero `metav1.Time`).
pub(crate) mod opt_time {
    use super::{format_time, parse_time};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_time(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        Ok(v.as_ref().and_then(|v| v.as_str()).and_then(parse_time))
    }
}

/// Reads an optional int32 field that must be ≥ 0, as Kubernetes validation does
/// (`ValidateNonnegativeField`): `-1`, `2^31`, `1.5`, `"3"` and `true` are all `Invalid`
/// naming `field`. `None` when absent or `null`.
pub(crate) fn nonnegative_int32(value: Option<&Value>, field: &str) -> Result<Option<i32>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = int32(v, field)?;
            if n < 0 {
                return Err(Error::invalid(field, "must be greater than or equal to 0"));
            }
            Ok(Some(n))
        }
    }
}

/// Any int32 (sign allowed); other JSON is `Invalid` naming `field`.
pub(crate) fn int32(v: &Value, field: &str) -> Result<i32> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_err(|_| {
                Error::invalid(field, format!("{i} is out of range for a 32-bit integer"))
            }),
            None if n.is_u64() => Err(Error::invalid(
                field,
                format!("{n} is out of range for a 32-bit integer"),
            )),
            None => Err(Error::invalid(
                field,
                format!("must be an integer, got {n}"),
            )),
        },
        other => Err(Error::invalid(
            field,
            format!("must be an integer, got {}", json_type(other)),
        )),
    }
}

/// An optional boolean field.
pub(crate) fn opt_bool(value: Option<&Value>, field: &str) -> Result<Option<bool>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::invalid(
            field,
            format!("must be a boolean, got {}", json_type(other)),
        )),
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_parse_and_format() {
        let cases: &[(&str, Option<u64>, u32)] = &[
            ("1970-01-01T00:00:00Z", Some(0), 0),
            ("2026-01-01T00:00:00Z", Some(1_767_225_600), 0),
            ("2026-01-01T01:00:00+01:00", Some(1_767_225_600), 0),
            ("2025-12-31T23:00:00-01:00", Some(1_767_225_600), 0),
            ("2026-01-01T00:00:00.5Z", Some(1_767_225_600), 500_000_000),
            ("2000-02-29T00:00:00Z", Some(951_782_400), 0),
            ("2026-01-01", None, 0),
            ("yesterday", None, 0),
            ("", None, 0),
            ("2026-13-01T00:00:00Z", None, 0),
            ("2026-01-01T00:00:00", None, 0),
        ];
        for (s, secs, nanos) in cases {
            let got = parse_time(s);
            let want = secs.map(|s| {
                SystemTime::UNIX_EPOCH
                    + Duration::from_secs(s)
                    + Duration::from_nanos(*nanos as u64)
            });
            assert_eq!(got, want, "{s}");
        }
        let t = parse_time("2026-03-04T05:06:07Z").unwrap();
        assert_eq!(format_time(t), "2026-03-04T05:06:07Z");
        assert!(parse_time("1969-12-31T23:59:59Z").unwrap() < SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn int32_fields_are_validated_like_kubernetes() {
        let f = "spec.replicas";
        assert_eq!(nonnegative_int32(Some(&json!(3)), f).unwrap(), Some(3));
        assert_eq!(nonnegative_int32(Some(&json!(0)), f).unwrap(), Some(0));
        assert_eq!(nonnegative_int32(None, f).unwrap(), None);
        assert_eq!(
            nonnegative_int32(Some(&json!(2147483647)), f).unwrap(),
            Some(i32::MAX)
        );
        for bad in [
            json!(-1),
            json!(2147483648u64),
            json!(18446744073709551615u64),
            json!(1.5),
            json!(3.0),
            json!("3"),
            json!(true),
            json!([]),
        ] {
            let e = nonnegative_int32(Some(&bad), f).unwrap_err();
            assert_eq!(e.field(), Some(f), "{bad}");
        }
    }

    #[test]
    fn conditions_round_trip() {
        let t = parse_time("2026-01-01T00:00:00Z").unwrap();
        let c = Condition::new(
            "Available",
            "True",
            "R",
            "m",
            t + Duration::from_millis(700),
        );
        assert_eq!(c.last_update_time, Some(t));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({"type": "Available", "status": "True", "reason": "R", "message": "m",
                   "lastUpdateTime": "2026-01-01T00:00:00Z",
                   "lastTransitionTime": "2026-01-01T00:00:00Z"})
        );
        let back: Condition = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        let bare: Condition = serde_json::from_value(json!({"type": "Ready", "status": "True",
            "lastTransitionTime": "garbage"}))
        .unwrap();
        assert_eq!(bare.last_transition_time, None);
    }
}
