//! The store's JSON writer for objects: the bytes `serde_json::to_writer` produces for an
//! [`Object`], written field by field into the payload buffer.
//!
//! Every write encodes its object, and serde's generic path (a call through `io::Write`
//! per token, a byte-at-a-time escape scan that hands each string over in pieces) was a
//! third of an update's instructions. Here field names are constant byte strings, a string
//! without characters to escape is copied whole, and only numbers go through `serde_json`.
//! The output is byte for byte serde's (a property test holds the two together), so the
//! size limit measures the same bytes whichever path produced them.

use serde_json::Value;

use super::object::{Object, ObjectMeta, OwnerReference};

/// Appends `o`'s compact JSON form to `out`.
pub(crate) fn write_object(out: &mut Vec<u8>, o: &Object) {
    out.extend_from_slice(b"{\"kind\":");
    string(out, &o.kind);
    out.extend_from_slice(b",\"metadata\":");
    meta(out, &o.metadata);
    if !o.spec.is_null() {
        out.extend_from_slice(b",\"spec\":");
        value(out, &o.spec);
    }
    if !o.status.is_null() {
        out.extend_from_slice(b",\"status\":");
        value(out, &o.status);
    }
    out.push(b'}');
}

/// Writes the members of one JSON object: a comma before every key but the first.
struct Members<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Members<'a> {
    fn open(out: &'a mut Vec<u8>) -> Members<'a> {
        out.push(b'{');
        Members { out, first: true }
    }

    /// Starts a member; `key` is the quoted name with its colon (`"name":`).
    fn key(&mut self, key: &[u8]) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(key);
        self.out
    }

    fn string(&mut self, key: &[u8], v: &str) {
        string(self.key(key), v);
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

fn meta(out: &mut Vec<u8>, m: &ObjectMeta) {
    let mut w = Members::open(out);
    if !m.name.is_empty() {
        w.string(b"\"name\":", &m.name);
    }
    if !m.namespace.is_empty() {
        w.string(b"\"namespace\":", &m.namespace);
    }
    if let Some(g) = &m.generate_name {
        w.string(b"\"generateName\":", g);
    }
    if !m.uid.is_empty() {
        w.string(b"\"uid\":", &m.uid);
    }
    if !m.resource_version.is_empty() {
        w.string(b"\"resourceVersion\":", &m.resource_version);
    }
    if m.generation != 0 {
        number(w.key(b"\"generation\":"), &m.generation);
    }
    if let Some(t) = &m.creation_timestamp {
        w.string(b"\"creationTimestamp\":", t);
    }
    if let Some(t) = &m.deletion_timestamp {
        w.string(b"\"deletionTimestamp\":", t);
    }
    if !m.labels.is_empty() {
        string_map(w.key(b"\"labels\":"), &m.labels);
    }
    if !m.annotations.is_empty() {
        string_map(w.key(b"\"annotations\":"), &m.annotations);
    }
    if !m.owner_references.is_empty() {
        let out = w.key(b"\"ownerReferences\":");
        out.push(b'[');
        for (i, r) in m.owner_references.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            owner_reference(out, r);
        }
        out.push(b']');
    }
    w.close();
}

fn owner_reference(out: &mut Vec<u8>, r: &OwnerReference) {
    let mut w = Members::open(out);
    w.string(b"\"kind\":", &r.kind);
    w.string(b"\"name\":", &r.name);
    w.string(b"\"uid\":", &r.uid);
    if let Some(c) = r.controller {
        boolean(w.key(b"\"controller\":"), c);
    }
    if let Some(b) = r.block_owner_deletion {
        boolean(w.key(b"\"blockOwnerDeletion\":"), b);
    }
    w.close();
}

fn string_map(out: &mut Vec<u8>, m: &std::collections::BTreeMap<String, String>) {
    map(out, m.iter(), |out, v| string(out, v));
}

/// A JSON object of `entries`, each value written by `write`.
fn map<'a, V: 'a>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'a String, V)>,
    mut write: impl FnMut(&mut Vec<u8>, V),
) {
    out.push(b'{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        write(out, v);
    }
    out.push(b'}');
}

/// A JSON value, recursively (as serde's own serialiser does; the store bounds the depth
/// of what it accepts before anything is encoded).
fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => boolean(out, *b),
        Value::Number(n) => number(out, n),
        Value::String(s) => string(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                value(out, x);
            }
            out.push(b']');
        }
        Value::Object(m) => map(out, m.iter(), value),
    }
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Numbers through `serde_json` itself (integer and shortest round-trip float forms).
fn number(out: &mut Vec<u8>, n: &impl serde::Serialize) {
    // Writing into a Vec cannot fail, and a number always serialises.
    let _ = serde_json::to_writer(&mut *out, n);
}

/// A JSON string with serde_json's escapes: `"` and `\` escaped, the control characters
/// below 0x20 as `\b \t \n \f \r` or `\u00xx` (lowercase hex), everything else (DEL and
/// all of non-ASCII UTF-8 included) as is.
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = s.as_bytes();
    out.reserve(rest.len() + 2);
    out.push(b'"');
    while let Some(i) = first_to_escape(rest) {
        out.extend_from_slice(&rest[..i]);
        let c = rest[i];
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 0xF) as usize]);
            }
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// The position of the first byte that needs an escape (below 0x20, `"` or `\`). Eight
/// bytes at a time: each test below is exact as to whether *some* byte of the word
/// matches, and the word that has one is then searched byte by byte.
fn first_to_escape(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut at = 0;
    for chunk in b.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let x = u64::from_le_bytes(w);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if below_space
            | zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')))
            != 0
        {
            break;
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c < 0x20 || c == b'"' || c == b'\\')
        .map(|p| at + p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn text() -> impl Strategy<Value = String> {
        // Plain names, and strings full of what needs escaping or is multi-byte.
        prop_oneof![
            "[a-z0-9.-]{0,12}",
            proptest::collection::vec(
                prop_oneof![
                    Just('"'),
                    Just('\\'),
                    Just('\u{0}'),
                    Just('\u{8}'),
                    Just('\u{c}'),
                    Just('\n'),
                    Just('\r'),
                    Just('\t'),
                    Just('\u{1f}'),
                    Just('\u{7f}'),
                    Just('é'),
                    Just('€'),
                    Just('😀'),
                    any::<char>(),
                    Just('a'),
                ],
                0..10
            )
            .prop_map(|cs| cs.into_iter().collect()),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn owner() -> impl Strategy<Value = OwnerReference> {
        (
            text(),
            text(),
            text(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(kind, name, uid, controller, block_owner_deletion)| {
                OwnerReference {
                    kind,
                    name,
                    uid,
                    controller,
                    block_owner_deletion,
                }
            })
    }

    fn object() -> impl Strategy<Value = Object> {
        let strings = proptest::collection::vec(text(), 5);
        let maps = (
            proptest::collection::btree_map(text(), text(), 0..3),
            proptest::collection::btree_map(text(), text(), 0..3),
        );
        let options = proptest::collection::vec(proptest::option::of(text()), 3);
        (
            strings,
            maps,
            options,
            prop_oneof![Just(0i64), any::<i64>()],
            proptest::collection::vec(owner(), 0..3),
            prop_oneof![Just(Value::Null), json_value()],
            prop_oneof![Just(Value::Null), json_value()],
        )
            .prop_map(
                |(s, (labels, annotations), opt, generation, refs, spec, status)| {
                    let labels: BTreeMap<String, String> = labels;
                    Object {
                        kind: s[0].clone(),
                        metadata: ObjectMeta {
                            name: s[1].clone(),
                            namespace: s[2].clone(),
                            generate_name: opt[0].clone(),
                            uid: s[3].clone(),
                            resource_version: s[4].clone(),
                            generation,
                            creation_timestamp: opt[1].clone(),
                            deletion_timestamp: opt[2].clone(),
                            labels,
                            annotations,
                            owner_references: refs,
                        },
                        spec,
                        status,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn writes_exactly_what_serde_json_writes(o in object()) {
            let mut ours = vec![];
            write_object(&mut ours, &o);
            let theirs = serde_json::to_vec(&o).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
            prop_assert_eq!(&ours, &theirs);
            let back: Object = serde_json::from_slice(&ours).unwrap();
            prop_assert_eq!(back, o);
        }
    }

    #[test]
    fn the_word_scan_finds_the_first_byte_to_escape_at_every_position() {
        for len in 0..40 {
            for at in 0..len {
                for c in [0u8, 0x1f, b'"', b'\\'] {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    // A later one must not hide the first.
                    if at + 1 < len {
                        b[len - 1] = b'"';
                    }
                    assert_eq!(first_to_escape(&b), Some(at), "{b:?}");
                }
            }
            // Bytes next to the ones it looks for, and non-ASCII: nothing to escape.
            let clean: Vec<u8> = (0..len)
                .map(|i| [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0xc3, 0xff][i % 8])
                .collect();
            assert_eq!(first_to_escape(&clean), None, "{clean:?}");
        }
    }

    #[test]
    fn every_control_character_is_escaped_as_serde_json_does() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut ours = vec![];
        string(&mut ours, &all);
        assert_eq!(ours, serde_json::to_vec(&all).unwrap());
    }
}
