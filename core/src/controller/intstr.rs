//! `IntOrString` as Deployments use it for `maxSurge` and `maxUnavailable`: either an int32
//! count or a percent string `"N%"`. Here live the decoding from JSON, the Kubernetes
//! validation rules (`ValidatePositiveIntOrPercent`, `IsNotMoreThan100Percent`, the
//! both-zero rule) and the scaling (`intstr.GetScaledValueFromIntOrPercent`). Resolving the
//! two values against each other (`ResolveFenceposts`) is in `deployment::util`.

use serde_json::Value;

use super::json_type;
use crate::error::{Error, Result};

/// An int32 or a string, as `k8s.io/apimachinery/pkg/util/intstr.IntOrString`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IntOrString {
    Int(i32),
    Str(String),
}

impl IntOrString {
    /// Decodes a JSON number (int32, any sign — validation is separate) or string; anything
    /// else is `Invalid` naming `field`.
    pub fn from_json(v: &Value, field: &str) -> Result<IntOrString> {
        match v {
            Value::String(s) => Ok(IntOrString::Str(s.clone())),
            Value::Number(_) => super::int32(v, field).map(IntOrString::Int),
            other => Err(Error::invalid(
                field,
                format!(
                    "must be an integer or percentage (e.g '5%'), got {}",
                    json_type(other)
                ),
            )),
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        match self {
            IntOrString::Int(i) => Value::from(*i),
            IntOrString::Str(s) => Value::from(s.as_str()),
        }
    }

    /// `GetScaledValueFromIntOrPercent(v, total, round_up)`: an int is returned as is; a
    /// string must be `"<n>%"` with `n` accepted by Go's `strconv.Atoi` (signs and leading
    /// zeros allowed) and scales to `ceil`/`floor(n · total / 100)` computed in `f64`, exactly
    /// as upstream. The error text is upstream's.
    pub fn scaled_value(&self, total: i32, round_up: bool) -> std::result::Result<i64, String> {
        match self {
            IntOrString::Int(i) => Ok(i64::from(*i)),
            IntOrString::Str(s) => {
                let Some(num) = s.strip_suffix('%') else {
                    return Err(
                        "invalid value for IntOrString: invalid type: string is not a percentage"
                            .to_string(),
                    );
                };
                let value: i64 = go_atoi(num)
                    .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
                let scaled = value as f64 * f64::from(total) / 100.0;
                let r = if round_up {
                    scaled.ceil()
                } else {
                    scaled.floor()
                };
                // `as` saturates; Go's int conversion of these (at most ~2^94) values would
                // be implementation-defined, and validated inputs never get near.
                Ok(r as i64)
            }
        }
    }
}

/// Go's `strconv.Atoi` on a 64-bit platform: optional sign, ASCII digits, int64 range.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// `validation.IsValidPercent`: `^[0-9]+%$`.
pub fn is_valid_percent(s: &str) -> bool {
    match s.strip_suffix('%') {
        Some(n) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// `getPercentValue`: the number of a valid percent string.
fn percent_value(v: &IntOrString) -> Option<i64> {
    match v {
        IntOrString::Str(s) if is_valid_percent(s) => Some(go_atoi(&s[..s.len() - 1]).unwrap_or(0)),
        _ => None,
    }
}

/// `getIntOrPercentValue`: the percent number, else the int, else Go's `IntValue()` of a
/// string (its `Atoi`, 0 when that fails).
pub fn int_or_percent_value(v: &IntOrString) -> i64 {
    if let Some(p) = percent_value(v) {
        return p;
    }
    match v {
        IntOrString::Int(i) => i64::from(*i),
        IntOrString::Str(s) => go_atoi(s).unwrap_or(0),
    }
}

/// `ValidatePositiveIntOrPercent`.
pub fn validate_positive_int_or_percent(v: &IntOrString, field: &str) -> Result<()> {
    match v {
        IntOrString::Str(s) if !is_valid_percent(s) => Err(Error::invalid(
            field,
            format!("{s:?}: must be an integer or percentage (e.g '5%')"),
        )),
        IntOrString::Int(i) if *i < 0 => Err(Error::invalid(
            field,
            format!("{i}: must be greater than or equal to 0"),
        )),
        _ => Ok(()),
    }
}

/// `IsNotMoreThan100Percent`.
pub fn validate_not_more_than_100_percent(v: &IntOrString, field: &str) -> Result<()> {
    match percent_value(v) {
        Some(p) if p > 100 => Err(Error::invalid(
            field,
            format!("{:?}: must not be greater than 100%", v_str(v)),
        )),
        _ => Ok(()),
    }
}

fn v_str(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::Str(s) => s.clone(),
    }
}

/// `ValidateRollingUpdateDeployment`, in upstream's order, returning the first error:
/// `maxUnavailable` and `maxSurge` each an int ≥ 0 or a valid percent; not both zero
/// ("may not be 0 when `maxSurge` is 0", reported on `maxUnavailable`); `maxUnavailable` at
/// most 100%. `prefix` is the path of the `rollingUpdate` object.
pub fn validate_rolling_update(
    max_surge: &IntOrString,
    max_unavailable: &IntOrString,
    prefix: &str,
) -> Result<()> {
    let mu_field = format!("{prefix}.maxUnavailable");
    let ms_field = format!("{prefix}.maxSurge");
    validate_positive_int_or_percent(max_unavailable, &mu_field)?;
    validate_positive_int_or_percent(max_surge, &ms_field)?;
    if int_or_percent_value(max_unavailable) == 0 && int_or_percent_value(max_surge) == 0 {
        return Err(Error::invalid(
            mu_field,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    validate_not_more_than_100_percent(max_unavailable, &mu_field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(x: &str) -> IntOrString {
        IntOrString::Str(x.to_string())
    }

    #[test]
    fn scaled_values_round_like_upstream() {
        // (value, total, round_up, expected)
        let cases: &[(IntOrString, i32, bool, std::result::Result<i64, ()>)] = &[
            (IntOrString::Int(3), 10, true, Ok(3)),
            (IntOrString::Int(300), 10, false, Ok(300)), // ints are not capped
            (s("25%"), 10, true, Ok(3)),
            (s("25%"), 10, false, Ok(2)),
            (s("25%"), 4, true, Ok(1)),
            (s("25%"), 4, false, Ok(1)),
            (s("25%"), 1, true, Ok(1)),
            (s("25%"), 1, false, Ok(0)),
            (s("0%"), 100, true, Ok(0)),
            (s("100%"), 7, false, Ok(7)),
            (s("150%"), 3, true, Ok(5)),
            (s("33%"), 3, true, Ok(1)),
            (s("33%"), 3, false, Ok(0)),
            (s("10%"), 0, true, Ok(0)),
            (s("+5%"), 100, true, Ok(5)),
            (s("-5%"), 100, true, Ok(-5)),
            (s("007%"), 100, true, Ok(7)),
            (s("5"), 100, true, Err(())),
            (s("abc%"), 100, true, Err(())),
            (s("%"), 100, true, Err(())),
            (s(""), 100, true, Err(())),
            (s(" 5%"), 100, true, Err(())),
            (s("99999999999999999999%"), 100, true, Err(())),
            (s("100%"), i32::MAX, true, Ok(i64::from(i32::MAX))),
            (s("200%"), i32::MAX, true, Ok(2 * i64::from(i32::MAX))),
        ];
        for (v, total, up, want) in cases {
            let got = v.scaled_value(*total, *up).map_err(|_| ());
            assert_eq!(&got, want, "{v:?} of {total} up={up}");
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(
            IntOrString::from_json(&json!(1), "f").unwrap(),
            IntOrString::Int(1)
        );
        assert_eq!(IntOrString::from_json(&json!("1%"), "f").unwrap(), s("1%"));
        for bad in [
            json!(1.5),
            json!(true),
            json!(null),
            json!(4294967296u64),
            json!({}),
        ] {
            assert_eq!(
                IntOrString::from_json(&bad, "f").unwrap_err().field(),
                Some("f")
            );
        }
        assert_eq!(s("3%").to_json(), json!("3%"));
        assert_eq!(IntOrString::Int(3).to_json(), json!(3));
    }

    #[test]
    fn rolling_update_validation_table() {
        let p = "spec.strategy.rollingUpdate";
        let mu = "spec.strategy.rollingUpdate.maxUnavailable";
        let ms = "spec.strategy.rollingUpdate.maxSurge";
        // (maxSurge, maxUnavailable, Some(field) if invalid)
        let cases: &[(IntOrString, IntOrString, Option<&str>)] = &[
            (s("25%"), s("25%"), None),
            (IntOrString::Int(1), IntOrString::Int(0), None),
            (IntOrString::Int(0), IntOrString::Int(1), None),
            (s("150%"), IntOrString::Int(0), None),
            (IntOrString::Int(0), s("100%"), None),
            (IntOrString::Int(0), s("101%"), Some(mu)),
            (IntOrString::Int(1), s("150%"), Some(mu)),
            (IntOrString::Int(0), IntOrString::Int(0), Some(mu)),
            (s("0%"), IntOrString::Int(0), Some(mu)),
            (s("0%"), s("0%"), Some(mu)),
            (IntOrString::Int(1), IntOrString::Int(-1), Some(mu)),
            (IntOrString::Int(-1), IntOrString::Int(1), Some(ms)),
            (s("abc%"), IntOrString::Int(1), Some(ms)),
            (s("-1"), IntOrString::Int(1), Some(ms)),
            (s("-1%"), IntOrString::Int(1), Some(ms)),
            (s(""), IntOrString::Int(1), Some(ms)),
            (IntOrString::Int(1), s("3"), Some(mu)),
            (IntOrString::Int(2147483647), IntOrString::Int(0), None),
        ];
        for (surge, unavail, want) in cases {
            let got = validate_rolling_update(surge, unavail, p);
            match want {
                None => assert!(got.is_ok(), "{surge:?}/{unavail:?}: {got:?}"),
                Some(f) => assert_eq!(got.unwrap_err().field(), Some(*f), "{surge:?}/{unavail:?}"),
            }
        }
        let e = validate_rolling_update(&IntOrString::Int(0), &IntOrString::Int(0), p).unwrap_err();
        assert!(
            e.to_string().contains("may not be 0 when `maxSurge` is 0"),
            "{e}"
        );
    }
}
