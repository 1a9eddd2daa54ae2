//! Label selectors, as Kubernetes defines them (`k8s.io/apimachinery/pkg/labels`).
//!
//! Two input forms: the string form (`app=web,tier!=db,env in (a,b),!legacy`), parsed with
//! the same lexer rules as upstream (whitespace around tokens is free, `==` is `=`, `in`
//! and `notin` take a parenthesised list, `()` is the set `{""}`, a bare key means "exists",
//! `!key` "does not exist", `key>N` / `key<N` compare integers), and the object form
//! `{matchLabels, matchExpressions}` of a Deployment or Service spec. Keys and values are
//! checked with the label rules of [`super::validate`]. Requirements are kept sorted by
//! key (stable, as upstream), so [`fmt::Display`] is canonical and `parse(format(s)) == s`.
//!
//! Differences from upstream: a NUL byte is an ordinary (hence invalid) character rather
//! than the end of input, and `null` in the object form is an error rather than "match
//! nothing" — callers decide what a missing selector means.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::validate::{validate_label_key, validate_label_value};
use crate::error::{Error, Result};

/// The field named by errors from [`LabelSelector::parse`].
pub const FIELD: &str = "labelSelector";

/// How a requirement compares a label's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=v` / `key==v`: present with value v.
    Equals,
    /// `key!=v`: absent, or present with another value.
    NotEquals,
    /// `key in (a,b)`: present with one of the values.
    In,
    /// `key notin (a,b)`: absent, or present with none of the values.
    NotIn,
    /// `key`: present.
    Exists,
    /// `!key`: absent.
    DoesNotExist,
    /// `key>N`: present with an integer value greater than N.
    GreaterThan,
    /// `key<N`: present with an integer value less than N.
    LessThan,
}

/// One `key op values` clause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// One value for `=`, `!=`, `>`, `<`; at least one for `in`/`notin`; none for
    /// `exists`/`!`.
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// Builds a requirement, checking the key, the values and their count as upstream's
    /// `NewRequirement` does. Errors name `field`.
    pub fn new(
        field: &str,
        key: &str,
        operator: Operator,
        values: BTreeSet<String>,
    ) -> Result<Requirement> {
        validate_label_key(field, key)?;
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    return Err(Error::invalid(
                        field,
                        format!("{key}: 'in' and 'notin' need at least one value"),
                    ));
                }
            }
            Operator::Equals | Operator::NotEquals => {
                if values.len() != 1 {
                    return Err(Error::invalid(
                        field,
                        format!("{key}: exactly one value is required"),
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    return Err(Error::invalid(
                        field,
                        format!("{key}: values must be empty for 'exists' and '!'"),
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                let ok = values.len() == 1 && values.iter().all(|v| v.parse::<i64>().is_ok());
                if !ok {
                    return Err(Error::invalid(
                        field,
                        format!("{key}: '>' and '<' need exactly one integer value"),
                    ));
                }
            }
        }
        for v in &values {
            validate_label_value(field, v)?;
        }
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        let list = || {
            self.values
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self.operator {
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::GreaterThan => write!(f, "{}>{first}", self.key),
            Operator::LessThan => write!(f, "{}<{first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, list()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, list()),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// Builds a selector from requirements (sorted by key, stable).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> LabelSelector {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector { requirements }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this selector has no requirement (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// `key=value` for each label (unchecked input is checked here: errors name
    /// `matchLabels`).
    pub fn from_match_labels(labels: &BTreeMap<String, String>) -> Result<LabelSelector> {
        let reqs = labels
            .iter()
            .map(|(k, v)| {
                Requirement::new(
                    &format!("matchLabels[{k:?}]"),
                    k,
                    Operator::Equals,
                    BTreeSet::from([v.clone()]),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LabelSelector::from_requirements(reqs))
    }

    /// The Kubernetes object form: `{matchLabels: {k: v}, matchExpressions: [{key, operator:
    /// In|NotIn|Exists|DoesNotExist, values}]}`. Errors name the path under `field`
    /// (`spec.selector.matchExpressions[0].operator`). `{}` matches everything.
    pub fn from_json(value: &Value, field: &str) -> Result<LabelSelector> {
        let Some(obj) = value.as_object() else {
            return Err(Error::invalid(
                field,
                "must be an object with matchLabels and/or matchExpressions",
            ));
        };
        let mut reqs = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let f = format!("{field}.matchLabels[{k:?}]");
                    let Some(v) = v.as_str() else {
                        return Err(Error::invalid(f, "must be a string"));
                    };
                    reqs.push(Requirement::new(
                        &f,
                        k,
                        Operator::Equals,
                        BTreeSet::from([v.to_string()]),
                    )?);
                }
            }
            Some(_) => {
                return Err(Error::invalid(
                    format!("{field}.matchLabels"),
                    "must be a map of strings to strings",
                ));
            }
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, e) in exprs.iter().enumerate() {
                    let base = format!("{field}.matchExpressions[{i}]");
                    let Some(e) = e.as_object() else {
                        return Err(Error::invalid(base, "must be an object"));
                    };
                    let Some(key) = e.get("key").and_then(Value::as_str) else {
                        return Err(Error::invalid(
                            format!("{base}.key"),
                            "is required and must be a string",
                        ));
                    };
                    let operator = match e.get("operator").and_then(Value::as_str) {
                        Some("In") => Operator::In,
                        Some("NotIn") => Operator::NotIn,
                        Some("Exists") => Operator::Exists,
                        Some("DoesNotExist") => Operator::DoesNotExist,
                        _ => {
                            return Err(Error::invalid(
                                format!("{base}.operator"),
                                "must be one of In, NotIn, Exists, DoesNotExist",
                            ));
                        }
                    };
                    let mut values = BTreeSet::new();
                    match e.get("values") {
                        None | Some(Value::Null) => {}
                        Some(Value::Array(vs)) => {
                            for (j, v) in vs.iter().enumerate() {
                                let Some(v) = v.as_str() else {
                                    return Err(Error::invalid(
                                        format!("{base}.values[{j}]"),
                                        "must be a string",
                                    ));
                                };
                                values.insert(v.to_string());
                            }
                        }
                        Some(_) => {
                            return Err(Error::invalid(
                                format!("{base}.values"),
                                "must be a list of strings",
                            ));
                        }
                    }
                    validate_label_key(&format!("{base}.key"), key)?;
                    reqs.push(Requirement::new(
                        &format!("{base}.values"),
                        key,
                        operator,
                        values,
                    )?);
                }
            }
            Some(_) => {
                return Err(Error::invalid(
                    format!("{field}.matchExpressions"),
                    "must be a list",
                ));
            }
        }
        Ok(LabelSelector::from_requirements(reqs))
    }

    /// Parses the string form. Errors are `Invalid` on the field `labelSelector`, naming the
    /// offending part.
    pub fn parse(input: &str) -> Result<LabelSelector> {
        Parser {
            lexer: Lexer { s: input, pos: 0 },
        }
        .parse()
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = Error;
    fn from_str(s: &str) -> Result<LabelSelector> {
        LabelSelector::parse(s)
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    End,
    Ident(&'a str),
    In,
    NotIn,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Token::End => "end of string",
            Token::Ident(s) => return write!(f, "'{s}'"),
            Token::In => "'in'",
            Token::NotIn => "'notin'",
            Token::Bang => "'!'",
            Token::Eq => "'='",
            Token::DoubleEq => "'=='",
            Token::NotEq => "'!='",
            Token::Gt => "'>'",
            Token::Lt => "'<'",
            Token::Open => "'('",
            Token::Close => "')'",
            Token::Comma => "','",
        })
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// The next token; in a value context `in`/`notin` are ordinary identifiers.
    fn next(&mut self, values: bool) -> Token<'a> {
        let rest = &self.s[self.pos..];
        let trimmed = rest.trim_start_matches(is_space);
        self.pos += rest.len() - trimmed.len();
        let rest = trimmed;
        let Some(c) = rest.chars().next() else {
            return Token::End;
        };
        if is_special(c) {
            let (tok, n) = if rest.starts_with("!=") {
                (Token::NotEq, 2)
            } else if rest.starts_with("==") {
                (Token::DoubleEq, 2)
            } else {
                let t = match c {
                    '=' => Token::Eq,
                    '!' => Token::Bang,
                    '(' => Token::Open,
                    ')' => Token::Close,
                    ',' => Token::Comma,
                    '>' => Token::Gt,
                    _ => Token::Lt,
                };
                (t, 1)
            };
            self.pos += n;
            return tok;
        }
        let len = rest
            .find(|c| is_special(c) || is_space(c))
            .unwrap_or(rest.len());
        self.pos += len;
        let word = &rest[..len];
        match word {
            "in" if !values => Token::In,
            "notin" if !values => Token::NotIn,
            _ => Token::Ident(word),
        }
    }

    fn peek(&self, values: bool) -> Token<'a> {
        Lexer {
            s: self.s,
            pos: self.pos,
        }
        .next(values)
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
}

fn err(msg: impl Into<String>) -> Error {
    Error::invalid(FIELD, msg)
}

impl<'a> Parser<'a> {
    fn parse(mut self) -> Result<LabelSelector> {
        let mut reqs = Vec::new();
        match self.lexer.peek(true) {
            Token::End => return Ok(LabelSelector::everything()),
            Token::Ident(_) | Token::Bang => {}
            t => {
                return Err(err(format!(
                    "found {t}, expected: !, identifier, or end of string"
                )));
            }
        }
        loop {
            reqs.push(self.requirement()?);
            match self.lexer.next(true) {
                Token::End => break,
                Token::Comma => match self.lexer.peek(true) {
                    Token::Ident(_) | Token::Bang => {}
                    t => return Err(err(format!("found {t}, expected: identifier after ','"))),
                },
                t => return Err(err(format!("found {t}, expected: ',' or end of string"))),
            }
        }
        Ok(LabelSelector::from_requirements(reqs))
    }

    fn requirement(&mut self) -> Result<Requirement> {
        let mut tok = self.lexer.next(true);
        let negated = tok == Token::Bang;
        if negated {
            tok = self.lexer.next(true);
        }
        let Token::Ident(key) = tok else {
            return Err(err(format!("found {tok}, expected: identifier")));
        };
        validate_label_key(FIELD, key)?;
        if negated {
            return Requirement::new(FIELD, key, Operator::DoesNotExist, BTreeSet::new());
        }
        let op = match self.lexer.peek(false) {
            Token::End | Token::Comma => {
                return Requirement::new(FIELD, key, Operator::Exists, BTreeSet::new());
            }
            Token::Eq | Token::DoubleEq => Operator::Equals,
            Token::NotEq => Operator::NotEquals,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            t => {
                return Err(err(format!(
                    "found {t} after {key:?}, expected: '=', '!=', '==', 'in', 'notin', '>', '<', ',' or end of string"
                )));
            }
        };
        self.lexer.next(false);
        let values = match op {
            Operator::In | Operator::NotIn => self.value_list(key)?,
            _ => match self.lexer.peek(true) {
                // `key=` selects the empty value, as upstream.
                Token::End | Token::Comma => BTreeSet::from([String::new()]),
                Token::Ident(v) => {
                    self.lexer.next(true);
                    BTreeSet::from([v.to_string()])
                }
                t => return Err(err(format!("found {t} after {key:?}, expected: a value"))),
            },
        };
        Requirement::new(FIELD, key, op, values)
    }

    /// `( [v] {, [v]} )`; an empty slot is the empty value, so `()` is `{""}`.
    fn value_list(&mut self, key: &str) -> Result<BTreeSet<String>> {
        let t = self.lexer.next(true);
        if t != Token::Open {
            return Err(err(format!(
                "found {t} after {key:?} in/notin, expected: '('"
            )));
        }
        let mut values = BTreeSet::new();
        let mut expect_value = true;
        loop {
            match self.lexer.next(true) {
                Token::Ident(v) if expect_value => {
                    values.insert(v.to_string());
                    expect_value = false;
                }
                Token::Comma => {
                    if expect_value {
                        values.insert(String::new());
                    }
                    expect_value = true;
                }
                Token::Close => {
                    if expect_value {
                        values.insert(String::new());
                    }
                    return Ok(values);
                }
                t => {
                    return Err(err(format!(
                        "found {t} in the values of {key:?}, expected: ',', ')' or a value"
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_the_string_form() {
        let l = labels(&[("app", "web"), ("env", "a"), ("tier", "fe"), ("n", "5")]);
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("   ", true),
            ("app=web", true),
            ("app==web", true),
            ("app = web", true),
            ("app=db", false),
            ("tier!=db", true),
            ("tier!=fe", false),
            ("missing!=x", true),
            ("env in (a,b)", true),
            ("env in(b)", false),
            ("env notin (a)", false),
            ("missing notin (a)", true),
            ("app", true),
            ("legacy", false),
            ("!legacy", true),
            ("! app", false),
            ("app=web,tier!=db,env in (a,b),!legacy", true),
            (" app = web , !legacy ", true),
            ("n>4", true),
            ("n<5", false),
            ("app>1", false),
            ("app=", false),
            ("env in ()", false),
            ("env in (in, notin)", false),
            ("in in (a)", false),
        ];
        for (s, want) in cases {
            let sel = LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(sel.matches(&l), *want, "{s:?}");
            assert_eq!(
                LabelSelector::parse(&sel.to_string()).unwrap(),
                sel,
                "{s:?} → {sel}"
            );
        }
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn formats_canonically() {
        let sel = LabelSelector::parse("z in (b,a,b), app==web, !x, y, n>3").unwrap();
        assert_eq!(sel.to_string(), "app=web,n>3,!x,y,z in (a,b)");
        assert_eq!(
            LabelSelector::parse("e in (a,,b)").unwrap().to_string(),
            "e in (,a,b)"
        );
        assert_eq!(
            LabelSelector::parse("e in ()").unwrap().to_string(),
            "e in ()"
        );
    }

    #[test]
    fn rejects_bad_input() {
        for s in [
            "app in (",
            "app in (a",
            "app in a",
            "app in (a b)",
            "!",
            "!a=b",
            "a==b==c",
            "a=b=c",
            "a b",
            ",",
            "a,",
            ",a",
            "a,,b",
            "=a",
            "(a)",
            "a!b",
            "a_=b",
            "-a=b",
            "a=-b",
            "a/b/c",
            "a=b c",
            "a>b",
            "a>",
            "a notin",
            "a\0=b",
            "🦀=b",
            "a in (b)(c)",
        ] {
            let e = LabelSelector::parse(s).unwrap_err();
            assert_eq!(e.field(), Some(FIELD), "{s:?}: {e}");
        }
    }

    #[test]
    fn object_form() {
        let v = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["a", "b"]},
            {"key": "legacy", "operator": "DoesNotExist"}]});
        let sel = LabelSelector::from_json(&v, "spec.selector").unwrap();
        assert_eq!(sel.to_string(), "app=web,env in (a,b),!legacy");
        assert!(
            LabelSelector::from_json(&json!({}), "s")
                .unwrap()
                .is_empty()
        );
        let m = LabelSelector::from_match_labels(&labels(&[("app", "web"), ("b", "c")])).unwrap();
        assert_eq!(m.to_string(), "app=web,b=c");
        assert!(LabelSelector::from_match_labels(&labels(&[("a b", "c")])).is_err());

        let cases = [
            (json!(null), "spec.selector"),
            (json!({"matchLabels": []}), "spec.selector.matchLabels"),
            (
                json!({"matchLabels": {"app": 1}}),
                "spec.selector.matchLabels[\"app\"]",
            ),
            (
                json!({"matchLabels": {"app": "-x"}}),
                "spec.selector.matchLabels[\"app\"]",
            ),
            (
                json!({"matchExpressions": {}}),
                "spec.selector.matchExpressions",
            ),
            (
                json!({"matchExpressions": [1]}),
                "spec.selector.matchExpressions[0]",
            ),
            (
                json!({"matchExpressions": [{"operator": "In"}]}),
                "spec.selector.matchExpressions[0].key",
            ),
            (
                json!({"matchExpressions": [{"key": "a b", "operator": "In", "values": ["x"]}]}),
                "spec.selector.matchExpressions[0].key",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
                "spec.selector.matchExpressions[0].operator",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists"}, {"key": "a", "operator": "In"}]}),
                "spec.selector.matchExpressions[1].values",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                "spec.selector.matchExpressions[0].values",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}),
                "spec.selector.matchExpressions[0].values[0]",
            ),
        ];
        for (v, field) in cases {
            let e = LabelSelector::from_json(&v, "spec.selector").unwrap_err();
            assert_eq!(e.field(), Some(field), "{v}: {e}");
        }
    }

    // ---- property tests ----

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("x.io/c".to_string()),
            "[a-z][a-z0-9_.-]{0,3}[a-z]"
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("1".to_string()),
            Just("v".to_string()),
            Just("w".to_string()),
            "[A-Za-z0-9]{1,3}"
        ]
    }

    fn requirement() -> impl Strategy<Value = Requirement> {
        let op = prop_oneof![
            Just(Operator::Equals),
            Just(Operator::NotEquals),
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
            Just(Operator::GreaterThan),
            Just(Operator::LessThan),
        ];
        (
            key(),
            op,
            proptest::collection::btree_set(value(), 1..4),
            0i64..5,
        )
            .prop_map(|(key, operator, vals, n)| {
                let values = match operator {
                    Operator::Exists | Operator::DoesNotExist => BTreeSet::new(),
                    Operator::Equals | Operator::NotEquals => vals.into_iter().take(1).collect(),
                    Operator::GreaterThan | Operator::LessThan => BTreeSet::from([n.to_string()]),
                    _ => vals,
                };
                Requirement::new("t", &key, operator, values).unwrap()
            })
    }

    /// The oracle, written from the Kubernetes documentation rather than from the code above.
    fn oracle(reqs: &[Requirement], labels: &BTreeMap<String, String>) -> bool {
        for r in reqs {
            let have = labels.get(&r.key);
            let ok = match r.operator {
                Operator::Equals => have == r.values.iter().next(),
                Operator::NotEquals => have != r.values.iter().next(),
                Operator::In => matches!(have, Some(v) if r.values.iter().any(|x| x == v)),
                Operator::NotIn => !matches!(have, Some(v) if r.values.iter().any(|x| x == v)),
                Operator::Exists => have.is_some(),
                Operator::DoesNotExist => have.is_none(),
                Operator::GreaterThan | Operator::LessThan => {
                    let want: i64 = r.values.iter().next().unwrap().parse().unwrap();
                    match have.map(|h| h.parse::<i64>()) {
                        Some(Ok(h)) if r.operator == Operator::GreaterThan => h > want,
                        Some(Ok(h)) => h < want,
                        _ => false,
                    }
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }

    proptest! {
        #[test]
        fn matches_agrees_with_the_oracle(
            reqs in proptest::collection::vec(requirement(), 0..4),
            labels in proptest::collection::btree_map(key(), value(), 0..4),
        ) {
            let sel = LabelSelector::from_requirements(reqs.clone());
            prop_assert_eq!(sel.matches(&labels), oracle(&reqs, &labels));
            // The string form selects the same.
            let reparsed = LabelSelector::parse(&sel.to_string()).unwrap();
            prop_assert_eq!(reparsed.matches(&labels), oracle(&reqs, &labels));
        }

        #[test]
        fn format_then_parse_round_trips(reqs in proptest::collection::vec(requirement(), 0..5)) {
            let sel = LabelSelector::from_requirements(reqs);
            let s = sel.to_string();
            prop_assert_eq!(LabelSelector::parse(&s).unwrap(), sel, "{}", s);
        }

        #[test]
        fn arbitrary_text_parses_or_is_invalid(s in "[a-z=!(), \t<>0-9.in/_-]{0,24}|\\PC{0,12}") {
            match LabelSelector::parse(&s) {
                Ok(sel) => prop_assert_eq!(LabelSelector::parse(&sel.to_string()).unwrap(), sel),
                Err(e) => prop_assert_eq!(e.field(), Some(FIELD)),
            }
        }
    }
}
