//! Object validation: the rules the Kubernetes API server applies to `metadata` (DNS-1123
//! names, qualified label keys, label values, annotation size, owner references), plus floyd's
//! limits on every object (serialized size, nesting depth of `spec` and `status`).
//!
//! Every error is `Invalid` naming the exact field (`metadata.name`,
//! `metadata.labels["app"]`, `metadata.ownerReferences[1].uid`). Pure functions only: the
//! store decides when to call them (after defaulting and name generation, before appending).
//! Depth is measured with an explicit stack, never recursion, so hostile input cannot
//! overflow the stack; depth is checked before size because serialising is recursive.

use std::io;

use serde_json::Value;

use super::object::{Object, ResourceVersion, is_namespaced};
use crate::error::{Error, Result};

/// Upper bounds every stored object must respect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The compact JSON form may be at most this long.
    pub max_object_bytes: usize,
    /// `spec` and `status` may nest at most this many arrays/objects deep.
    pub max_depth: usize,
}

/// 1 MiB, below etcd's default request limit (1.5 MiB) as in Kubernetes.
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 1 << 20;
/// Deep enough for any real spec, shallow enough for recursive code downstream.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Kubernetes' `TotalAnnotationSizeLimitB`: keys plus values.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// A DNS-1123 label (and a label value, and the name part of a label key).
pub const DNS1123_LABEL_MAX: usize = 63;
/// A DNS-1123 subdomain (object names, label key prefixes).
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// floyd's bound on `metadata.uid` and owner uids (a UUID is 36).
pub const UID_MAX: usize = 128;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Checks a whole object (after [`Object::apply_defaults`]).
///
/// `metadata.name` may be empty only when `metadata.generateName` is set (the store then
/// generates the name and should validate again).
pub fn validate_object(obj: &Object, limits: &Limits) -> Result<()> {
    validate_fields(obj, limits)?;
    validate_size(serialized_len(obj), limits)
}

/// Every check of [`validate_object`] except the size limit: the store checks the size on
/// the bytes it encodes anyway ([`validate_size`]) instead of serialising twice.
pub fn validate_fields(obj: &Object, limits: &Limits) -> Result<()> {
    validate_fields_since(obj, None, Known::default(), limits)
}

/// What a caller already knows about a new version against the stored one (it copied
/// parts over, or compared them already), so validation neither compares nor checks those
/// parts again. `Some(changed)` for spec and status; `None` when not known.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Known {
    pub spec_changed: Option<bool>,
    pub status_changed: Option<bool>,
    /// Every metadata field but the resource version and generation is the stored one's.
    pub metadata_same: bool,
}

/// [`validate_fields`] for a new version of a stored object: a part equal to the stored
/// version's (`prev`, which passed these checks when it was written), or known to be (see
/// [`Known`]), is not checked again. Same errors as [`validate_fields`] for every part that
/// changed. If the limits were tightened since `prev` was written (a store reopened with a
/// smaller depth limit), an unchanged part is not rejected for it: Kubernetes' CRD
/// validation ratcheting does the same, so an update that does not touch a field never
/// fails on that field.
pub(crate) fn validate_changed_fields(
    obj: &Object,
    prev: &Object,
    known: Known,
    limits: &Limits,
) -> Result<()> {
    validate_fields_since(obj, Some(prev), known, limits)
}

fn validate_fields_since(
    obj: &Object,
    prev: Option<&Object>,
    known: Known,
    limits: &Limits,
) -> Result<()> {
    let m = &obj.metadata;
    let p = prev.map(|p| &p.metadata);
    // With `metadata_same`, every metadata comparison below is known to come out equal.
    let same_meta = prev.is_some() && known.metadata_same;
    let identity_unchanged = same_meta
        || prev.is_some_and(|prev| {
            let pm = &prev.metadata;
            obj.kind == prev.kind
                && m.name == pm.name
                && m.namespace == pm.namespace
                && m.generate_name == pm.generate_name
                && m.uid == pm.uid
                && m.creation_timestamp == pm.creation_timestamp
                && m.deletion_timestamp == pm.deletion_timestamp
        });
    if !identity_unchanged {
        validate_identity(obj)?;
    }
    if !m.resource_version.is_empty() {
        ResourceVersion::parse_field("metadata.resourceVersion", &m.resource_version)?;
    }
    if m.generation < 0 {
        return Err(Error::invalid(
            "metadata.generation",
            "must be greater than or equal to 0",
        ));
    }
    if !identity_unchanged {
        validate_timestamps(obj)?;
    }
    if !same_meta && p.is_none_or(|p| p.labels != m.labels) {
        for (k, v) in &m.labels {
            let field = || format!("metadata.labels[{k:?}]");
            named(validate_label_key("", k), field)?;
            named(validate_label_value("", v), field)?;
        }
    }
    if !same_meta && p.is_none_or(|p| p.annotations != m.annotations) {
        validate_annotations(obj)?;
    }
    // The self-ownership rule reads the uid: unchanged references of an unchanged
    // identity passed it already.
    if !same_meta
        && (!identity_unchanged || p.is_none_or(|p| p.owner_references != m.owner_references))
    {
        validate_owner_references(obj)?;
    }
    let spec_changed = known
        .spec_changed
        .unwrap_or_else(|| prev.is_none_or(|p| p.spec != obj.spec));
    if spec_changed {
        validate_depth("spec", &obj.spec, limits.max_depth)?;
    }
    let status_changed = known
        .status_changed
        .unwrap_or_else(|| prev.is_none_or(|p| p.status != obj.status));
    if status_changed {
        validate_depth("status", &obj.status, limits.max_depth)?;
    }
    Ok(())
}

/// Kind, name, generated name, namespace and uid.
fn validate_identity(obj: &Object) -> Result<()> {
    validate_kind("kind", &obj.kind)?;
    let m = &obj.metadata;
    if m.name.is_empty() {
        if m.generate_name.is_none() {
            return Err(Error::invalid(
                "metadata.name",
                "is required (or set metadata.generateName)",
            ));
        }
    } else {
        validate_dns1123_subdomain("metadata.name", &m.name)?;
    }
    if let Some(prefix) = &m.generate_name {
        validate_generate_name("metadata.generateName", prefix)?;
    }
    if is_namespaced(&obj.kind) {
        if m.namespace.is_empty() {
            return Err(Error::invalid(
                "metadata.namespace",
                "is required for a namespaced kind",
            ));
        }
        validate_dns1123_label("metadata.namespace", &m.namespace)?;
    } else if !m.namespace.is_empty() {
        return Err(Error::invalid(
            "metadata.namespace",
            format!("must be empty for the cluster-scoped kind {}", obj.kind),
        ));
    }
    if !m.uid.is_empty() {
        validate_uid("metadata.uid", &m.uid)?;
    }
    Ok(())
}

fn validate_timestamps(obj: &Object) -> Result<()> {
    let m = &obj.metadata;
    if let Some(t) = &m.creation_timestamp {
        validate_timestamp("metadata.creationTimestamp", t)?;
    }
    if let Some(t) = &m.deletion_timestamp {
        validate_timestamp("metadata.deletionTimestamp", t)?;
    }
    Ok(())
}

fn validate_annotations(obj: &Object) -> Result<()> {
    let m = &obj.metadata;
    let mut annotation_bytes = 0usize;
    for (k, v) in &m.annotations {
        named(validate_label_key("", k), || {
            format!("metadata.annotations[{k:?}]")
        })?;
        annotation_bytes += k.len() + v.len();
    }
    if annotation_bytes > MAX_ANNOTATIONS_BYTES {
        return Err(Error::invalid(
            "metadata.annotations",
            format!("total size {annotation_bytes} bytes exceeds {MAX_ANNOTATIONS_BYTES}"),
        ));
    }
    Ok(())
}

fn validate_owner_references(obj: &Object) -> Result<()> {
    let m = &obj.metadata;
    let mut controllers = 0;
    for (i, r) in m.owner_references.iter().enumerate() {
        let base = || format!("metadata.ownerReferences[{i}]");
        named(validate_kind("", &r.kind), || format!("{}.kind", base()))?;
        named(validate_dns1123_subdomain("", &r.name), || {
            format!("{}.name", base())
        })?;
        if r.uid.is_empty() {
            return Err(Error::invalid(format!("{}.uid", base()), "is required"));
        }
        named(validate_uid("", &r.uid), || format!("{}.uid", base()))?;
        if !m.uid.is_empty() && r.uid == m.uid {
            return Err(Error::invalid(
                format!("{}.uid", base()),
                "an object cannot own itself",
            ));
        }
        if r.controller == Some(true) {
            controllers += 1;
            if controllers > 1 {
                return Err(Error::invalid(
                    format!("{}.controller", base()),
                    "only one owner reference can have controller set to true",
                ));
            }
        }
    }
    Ok(())
}

/// The size limit, given the length of the object's compact JSON form.
pub fn validate_size(size: usize, limits: &Limits) -> Result<()> {
    if size > limits.max_object_bytes {
        return Err(Error::invalid(
            "object",
            format!(
                "serialized size {size} bytes exceeds the limit of {} bytes",
                limits.max_object_bytes
            ),
        ));
    }
    Ok(())
}

/// Runs a check written against a placeholder field name and names the field only when it
/// fails, so the common path formats nothing.
fn named(r: Result<()>, field: impl FnOnce() -> String) -> Result<()> {
    r.map_err(|e| match e {
        Error::Invalid { message, .. } => Error::Invalid {
            field: field(),
            message,
        },
        other => other,
    })
}

/// The length of the compact JSON form, counted without building it.
pub fn serialized_len(obj: &Object) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    // Writing into a counter cannot fail, and nothing in an Object fails to serialise.
    let _ = serde_json::to_writer(&mut c, obj);
    c.0
}

/// Rejects `value` if arrays/objects nest deeper than `max_depth` (a scalar has depth 0,
/// `{}` depth 1, `{"a": []}` depth 2). Iterative: bounded stack use for any input.
pub fn validate_depth(field: &str, value: &Value, max_depth: usize) -> Result<()> {
    fn nested(v: &Value) -> bool {
        v.is_array() || v.is_object()
    }
    if !nested(value) {
        return Ok(());
    }
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, depth)) = stack.pop() {
        let depth = depth + 1;
        if depth > max_depth {
            return Err(Error::invalid(
                field,
                format!("nests deeper than {max_depth} levels"),
            ));
        }
        match v {
            Value::Array(a) => stack.extend(a.iter().filter(|c| nested(c)).map(|c| (c, depth))),
            Value::Object(o) => stack.extend(o.values().filter(|c| nested(c)).map(|c| (c, depth))),
            _ => {}
        }
    }
    Ok(())
}

/// `^[A-Z][A-Za-z0-9]{0,62}$`.
pub fn validate_kind(field: &str, kind: &str) -> Result<()> {
    if kind.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    let b = kind.as_bytes();
    if b.len() > 63 || !b[0].is_ascii_uppercase() || !b.iter().all(u8::is_ascii_alphanumeric) {
        return Err(Error::invalid(
            field,
            format!(
                "{kind:?} must be an upper-case letter followed by at most 62 letters or digits"
            ),
        ));
    }
    Ok(())
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without the length bound.
fn is_dns_label_syntax(s: &[u8]) -> bool {
    !s.is_empty()
        && is_lower_alnum(s[0])
        && is_lower_alnum(s[s.len() - 1])
        && s.iter().all(|&b| is_lower_alnum(b) || b == b'-')
}

/// A DNS-1123 label: at most 63 lower-case alphanumerics or `-`, starting and ending with
/// an alphanumeric (namespaces).
pub fn validate_dns1123_label(field: &str, s: &str) -> Result<()> {
    if s.len() > DNS1123_LABEL_MAX {
        return Err(Error::invalid(
            field,
            format!("must be no more than {DNS1123_LABEL_MAX} characters"),
        ));
    }
    if !is_dns_label_syntax(s.as_bytes()) {
        return Err(Error::invalid(
            field,
            format!(
                "{s:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
                 and must start and end with an alphanumeric character"
            ),
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123 labels (object names).
pub fn validate_dns1123_subdomain(field: &str, s: &str) -> Result<()> {
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(Error::invalid(
            field,
            format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"),
        ));
    }
    if !s
        .split('.')
        .all(|part| is_dns_label_syntax(part.as_bytes()))
    {
        return Err(Error::invalid(
            field,
            format!(
                "{s:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
                 and must start and end with an alphanumeric character"
            ),
        ));
    }
    Ok(())
}

/// `generateName` is a name prefix: a DNS-1123 subdomain that may end in `-` (Kubernetes
/// masks a trailing dash of a prefix longer than one character before checking).
pub fn validate_generate_name(field: &str, prefix: &str) -> Result<()> {
    match prefix.strip_suffix('-') {
        Some(rest) if !rest.is_empty() => validate_dns1123_subdomain(field, &format!("{rest}a")),
        _ => validate_dns1123_subdomain(field, prefix),
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` (non-empty).
fn is_qualified_name_syntax(s: &[u8]) -> bool {
    !s.is_empty()
        && is_alnum(s[0])
        && is_alnum(s[s.len() - 1])
        && s.iter()
            .all(|&b| is_alnum(b) || b == b'-' || b == b'_' || b == b'.')
}

/// A label (or annotation) key: an optional DNS-1123 subdomain prefix and `/`, then a name
/// of at most 63 characters matching `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
pub fn validate_label_key(field: &str, key: &str) -> Result<()> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err(Error::invalid(
                field,
                format!("{key:?}: prefix part must be non-empty"),
            ));
        }
        validate_dns1123_subdomain(field, p)
            .map_err(|_| Error::invalid(field, format!("{key:?}: prefix part must be a lowercase RFC 1123 subdomain of at most {DNS1123_SUBDOMAIN_MAX} characters")))?;
    }
    if name.is_empty() {
        return Err(Error::invalid(
            field,
            format!("{key:?}: name part must be non-empty"),
        ));
    }
    if name.len() > DNS1123_LABEL_MAX {
        return Err(Error::invalid(
            field,
            format!("{key:?}: name part must be no more than {DNS1123_LABEL_MAX} characters"),
        ));
    }
    if !is_qualified_name_syntax(name.as_bytes()) {
        return Err(Error::invalid(
            field,
            format!(
                "{key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', \
                 and must start and end with an alphanumeric character"
            ),
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters matching
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
pub fn validate_label_value(field: &str, value: &str) -> Result<()> {
    if value.len() > DNS1123_LABEL_MAX {
        return Err(Error::invalid(
            field,
            format!("value must be no more than {DNS1123_LABEL_MAX} characters"),
        ));
    }
    if !value.is_empty() && !is_qualified_name_syntax(value.as_bytes()) {
        return Err(Error::invalid(
            field,
            format!(
                "value {value:?} must be empty or consist of alphanumeric characters, '-', '_' or '.', \
                 and must start and end with an alphanumeric character"
            ),
        ));
    }
    Ok(())
}

/// Uids are opaque, but bounded: 1..=128 printable ASCII characters without spaces.
pub fn validate_uid(field: &str, uid: &str) -> Result<()> {
    if uid.is_empty() || uid.len() > UID_MAX || !uid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            field,
            format!("must be 1 to {UID_MAX} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// RFC 3339 as Kubernetes writes it: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn validate_timestamp(field: &str, t: &str) -> Result<()> {
    fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
        let d = s.get(at..at + n)?;
        d.iter().try_fold(0u32, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })
    }
    let ok = (|| {
        let s = t.as_bytes();
        let (month, day) = (digits(s, 5, 2)?, digits(s, 8, 2)?);
        let (hour, min, sec) = (digits(s, 11, 2)?, digits(s, 14, 2)?, digits(s, 17, 2)?);
        digits(s, 0, 4)?;
        let seps = s[4] == b'-'
            && s[7] == b'-'
            && matches!(s[10], b'T' | b't')
            && s[13] == b':'
            && s[16] == b':';
        let ranges = (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && hour < 24
            && min < 60
            && sec <= 60;
        let mut i = 19;
        if s.get(i) == Some(&b'.') {
            let n = s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            i += 1 + n;
        }
        let zone = match &s[i..] {
            [b'Z' | b'z'] => true,
            [b'+' | b'-', ..] if s.len() == i + 6 => {
                s[i + 3] == b':' && digits(s, i + 1, 2)? < 24 && digits(s, i + 4, 2)? < 60
            }
            _ => false,
        };
        (seps && ranges && zone).then_some(())
    })();
    ok.ok_or_else(|| Error::invalid(field, format!("{t:?} is not an RFC 3339 timestamp")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::object::OwnerReference;
    use serde_json::json;

    type Check = fn(&str, &str) -> Result<()>;

    fn table(check: Check, cases: &[(&str, bool)]) {
        for (input, ok) in cases {
            let r = check("f", input);
            assert_eq!(r.is_ok(), *ok, "{input:?} → {r:?}");
            if let Err(e) = r {
                assert_eq!(e.field(), Some("f"));
            }
        }
    }

    #[test]
    fn dns1123_labels() {
        let l63 = "a".repeat(63);
        let l64 = "a".repeat(64);
        table(
            validate_dns1123_label,
            &[
                ("a", true),
                ("abc-123", true),
                ("0", true),
                ("a--b", true),
                (&l63, true),
                ("", false),
                (&l64, false),
                ("A", false),
                ("aBc", false),
                ("a_b", false),
                ("a.b", false),
                ("-a", false),
                ("a-", false),
                ("../x", false),
                ("a\0", false),
                ("é", false),
                ("🦀", false),
                (" a", false),
            ],
        );
    }

    #[test]
    fn dns1123_subdomains() {
        let long_ok = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(long_ok.len(), 253);
        let too_long = format!("{long_ok}e");
        table(
            validate_dns1123_subdomain,
            &[
                ("a", true),
                ("a.b", true),
                ("web-1.prod", true),
                (&long_ok, true),
                (&"a".repeat(64), true),
                ("", false),
                (&too_long, false),
                (".a", false),
                ("a.", false),
                ("a..b", false),
                ("a.-b", false),
                ("a-.b", false),
                ("A.b", false),
                ("a_b", false),
                ("../x", false),
                ("a/b", false),
                ("a\0b", false),
                ("🦀.io", false),
            ],
        );
    }

    #[test]
    fn generate_name_may_end_in_dash() {
        table(
            validate_generate_name,
            &[
                ("web-", true),
                ("web", true),
                ("web--", true),
                ("-", false),
                ("Web-", false),
                ("", false),
            ],
        );
    }

    #[test]
    fn label_keys() {
        let n63 = "a".repeat(63);
        let n64 = "a".repeat(64);
        let p253 = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        let k_prefix_ok = format!("{p253}/x");
        let k_prefix_long = format!("{p253}d/x");
        table(
            validate_label_key,
            &[
                ("app", true),
                ("App_Name.v-1", true),
                ("a_b", true),
                ("example.com/app", true),
                ("k8s.io/Name", true),
                (&n63, true),
                (&k_prefix_ok, true),
                ("", false),
                (&n64, false),
                (&k_prefix_long, false),
                ("/a", false),
                ("a/", false),
                ("a/b/c", false),
                ("Example.com/a", false),
                ("_a", false),
                ("a_", false),
                ("-a", false),
                (".a", false),
                ("../x", false),
                ("a b", false),
                ("a\0", false),
                ("🦀", false),
            ],
        );
    }

    #[test]
    fn label_values() {
        table(
            validate_label_value,
            &[
                ("", true),
                ("web", true),
                ("Web_1.2-x", true),
                (&"a".repeat(63), true),
                (&"a".repeat(64), false),
                ("-a", false),
                ("a-", false),
                ("a/b", false),
                ("../x", false),
                ("a b", false),
                ("\0", false),
                ("🦀", false),
            ],
        );
    }

    #[test]
    fn kinds() {
        let k63 = format!("A{}", "b".repeat(62));
        let k64 = format!("A{}", "b".repeat(63));
        table(
            validate_kind,
            &[
                ("Deployment", true),
                ("X", true),
                ("V1Thing2", true),
                (&k63, true),
                ("", false),
                (&k64, false),
                ("deployment", false),
                ("1A", false),
                ("A-b", false),
                ("A_b", false),
                ("Ä", false),
            ],
        );
    }

    #[test]
    fn timestamps() {
        table(
            validate_timestamp,
            &[
                ("2024-01-02T03:04:05Z", true),
                ("2024-01-02T03:04:05.123456Z", true),
                ("2024-01-02T03:04:05+01:00", true),
                ("2024-01-02t03:04:05z", true),
                ("", false),
                ("2024-01-02", false),
                ("2024-13-02T03:04:05Z", false),
                ("2024-01-02T03:04:05", false),
                ("2024-01-02T03:04:05.Z", false),
                ("2024-01-02T03:04:05+0100", false),
                ("2024-01-02T03:04:05Zjunk", false),
                ("２024-01-02T03:04:05Z", false),
            ],
        );
    }

    fn obj(v: serde_json::Value) -> Object {
        Object::from_json(&v).unwrap()
    }

    fn field(o: &Object) -> String {
        validate_object(o, &Limits::default())
            .unwrap_err()
            .field()
            .unwrap()
            .to_string()
    }

    #[test]
    fn whole_objects() {
        let ok = obj(
            json!({"kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}, "uid": "u1",
            "resourceVersion": "7", "creationTimestamp": "2024-01-01T00:00:00Z",
            "ownerReferences": [{"kind": "Thing", "name": "t", "uid": "u0", "controller": true}]}}),
        );
        validate_object(&ok, &Limits::default()).unwrap();
        validate_object(
            &obj(json!({"kind": "Node", "metadata": {"name": "n1"}})),
            &Limits::default(),
        )
        .unwrap();
        validate_object(
            &obj(json!({"kind": "Instance", "metadata": {"generateName": "web-"}})),
            &Limits::default(),
        )
        .unwrap();

        let cases: Vec<(serde_json::Value, &str)> = vec![
            (
                json!({"kind": "deployment", "metadata": {"name": "a"}}),
                "kind",
            ),
            (json!({"kind": "Instance", "metadata": {}}), "metadata.name"),
            (
                json!({"kind": "Instance", "metadata": {"name": "Web"}}),
                "metadata.name",
            ),
            (
                json!({"kind": "Instance", "metadata": {"generateName": "Web-"}}),
                "metadata.generateName",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "namespace": "a.b"}}),
                "metadata.namespace",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "uid": "has space"}}),
                "metadata.uid",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "resourceVersion": "x"}}),
                "metadata.resourceVersion",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "generation": -1}}),
                "metadata.generation",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "deletionTimestamp": "yesterday"}}),
                "metadata.deletionTimestamp",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "labels": {"app": "-web"}}}),
                "metadata.labels[\"app\"]",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "labels": {"a b": "x"}}}),
                "metadata.labels[\"a b\"]",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "annotations": {"/x": ""}}}),
                "metadata.annotations[\"/x\"]",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "ownerReferences": [{"kind": "T", "name": "t", "uid": ""}]}}),
                "metadata.ownerReferences[0].uid",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "ownerReferences": [{"kind": "t", "name": "t", "uid": "u"}]}}),
                "metadata.ownerReferences[0].kind",
            ),
            (
                json!({"kind": "Instance", "metadata": {"name": "a", "ownerReferences": [
                    {"kind": "T", "name": "t", "uid": "u1", "controller": true},
                    {"kind": "T", "name": "s", "uid": "u2", "controller": true}]}}),
                "metadata.ownerReferences[1].controller",
            ),
        ];
        for (v, f) in cases {
            assert_eq!(field(&obj(v.clone())), f, "{v}");
        }

        let mut node = obj(json!({"kind": "Node", "metadata": {"name": "n"}}));
        node.metadata.namespace = "x".into();
        assert_eq!(field(&node), "metadata.namespace");
        let mut inst = obj(json!({"kind": "Instance", "metadata": {"name": "i"}}));
        inst.metadata.namespace.clear();
        assert_eq!(field(&inst), "metadata.namespace");
        inst.metadata.namespace = "default".into();
        inst.metadata.owner_references.push(OwnerReference {
            kind: "X".into(),
            name: "x".into(),
            uid: "me".into(),
            ..Default::default()
        });
        inst.metadata.uid = "me".into();
        assert_eq!(field(&inst), "metadata.ownerReferences[0].uid");
    }

    #[test]
    fn annotation_total_size() {
        let mut o = obj(json!({"kind": "Instance", "metadata": {"name": "a"}}));
        o.metadata
            .annotations
            .insert("a".into(), "x".repeat(MAX_ANNOTATIONS_BYTES - 1));
        validate_object(&o, &Limits::default()).unwrap();
        o.metadata.annotations.insert("b".into(), String::new());
        assert_eq!(field(&o), "metadata.annotations");
    }

    #[test]
    fn size_and_depth_limits() {
        let mut o = obj(json!({"kind": "Widget", "metadata": {"name": "a"}}));
        let limits = Limits {
            max_object_bytes: 200,
            max_depth: 3,
        };
        o.spec = json!({"a": [{"b": 1}]});
        validate_object(&o, &limits).unwrap();
        o.spec = json!({"a": [{"b": []}]});
        assert_eq!(
            validate_object(&o, &limits).unwrap_err().field(),
            Some("spec")
        );
        o.spec = json!({});
        o.status = json!([[[[1]]]]);
        assert_eq!(
            validate_object(&o, &limits).unwrap_err().field(),
            Some("status")
        );
        o.status = json!("x".repeat(200));
        assert_eq!(
            validate_object(&o, &limits).unwrap_err().field(),
            Some("object")
        );
        assert_eq!(serialized_len(&o), o.to_vec().len());

        // A very deep value is rejected without recursion (building it is the slow part).
        let mut deep = json!(1);
        for _ in 0..10_000 {
            deep = serde_json::Value::Array(vec![deep]);
        }
        assert!(validate_depth("spec", &deep, 64).is_err());
        validate_depth("spec", &deep, 10_001).unwrap();
        // Dropping a 10k-deep Value recurses in serde_json; unwind it by hand.
        let mut v = deep;
        while let serde_json::Value::Array(mut a) = v {
            v = a.pop().unwrap_or(serde_json::Value::Null);
        }
    }
}
