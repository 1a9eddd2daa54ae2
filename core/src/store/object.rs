//! The object model: every object floyd stores has the Kubernetes JSON shape — `kind`,
//! `metadata`, free-form `spec` and `status` — with camelCase keys on the wire.
//!
//! This module converts between JSON and [`Object`], applies the two defaults the API server
//! applies before validation (namespace `"default"` for namespaced kinds, no namespace for
//! cluster-scoped ones) and names the field that is wrong when the JSON has the wrong shape.
//! The rules an object must satisfy beyond its shape (name syntax, label syntax, size and
//! depth limits) live in [`super::validate`]; keys, versions and storage are the store's.
//!
//! Kind names are `^[A-Z][A-Za-z0-9]{0,62}$` (an upper-case letter, then up to 62 letters
//! or digits). The built-in kinds are [`BUILTIN_KINDS`]; every kind is namespaced except
//! `Node`. Any other kind is a custom kind whose `spec` and `status` are free JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The kinds floyd's controllers understand.
pub const BUILTIN_KINDS: [&str; 6] = [
    "Deployment",
    "ReplicaSet",
    "Instance",
    "Service",
    "Endpoints",
    "Node",
];

/// The kinds that live outside namespaces (their key is just the name).
pub const CLUSTER_SCOPED_KINDS: [&str; 1] = ["Node"];

/// The namespace a namespaced object gets when its JSON leaves it empty.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Whether `kind` is one of [`BUILTIN_KINDS`].
pub fn is_builtin_kind(kind: &str) -> bool {
    BUILTIN_KINDS.contains(&kind)
}

/// Whether objects of `kind` live in a namespace. Every kind does except `Node`; custom
/// kinds are namespaced.
pub fn is_namespaced(kind: &str) -> bool {
    !CLUSTER_SCOPED_KINDS.contains(&kind)
}

/// A stored object in the Kubernetes shape.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub spec: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub status: Value,
}

/// `metadata`: identity, version and the labels selectors see.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// `""` in JSON becomes `"default"` for namespaced kinds and stays `""` for `Node`
    /// (see [`Object::apply_defaults`]).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub uid: String,
    /// The decimal string form of a [`ResourceVersion`], like Kubernetes; `""` if unset.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_version: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub owner_references: Vec<OwnerReference>,
}

/// An owner of an object; the one with `controller: true` is its controller.
/// (`apiVersion` is accepted on input and dropped: floyd has one API version.)
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Kubernetes decodes `null` for a map, list or string as its empty value; so do we.
fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A resource version: the log position of the event that wrote an object. On the wire it
/// is the decimal string form, as in Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ResourceVersion(pub u64);

impl ResourceVersion {
    /// Parses the string form; `field` names where it came from in the error.
    pub fn parse_field(field: &str, s: &str) -> Result<ResourceVersion> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid(
                field,
                format!("{s:?} is not a resource version (a decimal unsigned integer)"),
            ));
        }
        s.parse::<u64>().map(ResourceVersion).map_err(|_| {
            Error::invalid(
                field,
                format!("{s:?} is out of range for a resource version"),
            )
        })
    }
}

impl FromStr for ResourceVersion {
    type Err = Error;
    /// Errors are `Invalid` naming `metadata.resourceVersion`.
    fn from_str(s: &str) -> Result<ResourceVersion> {
        ResourceVersion::parse_field("metadata.resourceVersion", s)
    }
}

impl fmt::Display for ResourceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for ResourceVersion {
    fn from(v: u64) -> Self {
        ResourceVersion(v)
    }
}

impl Object {
    /// Decodes an object from its JSON form and applies [`Object::apply_defaults`].
    /// A value of the wrong shape is `Invalid` naming the field (`kind`, `metadata.labels`,
    /// `metadata.ownerReferences[0].uid`, ...).
    pub fn from_json(value: &Value) -> Result<Object> {
        match Object::deserialize(value) {
            Ok(mut obj) => {
                obj.apply_defaults();
                Ok(obj)
            }
            Err(e) => {
                Err(shape_error(value).unwrap_or_else(|| Error::invalid("object", e.to_string())))
            }
        }
    }

    /// [`Object::from_json`] taking the value: its strings move into the object instead of
    /// being copied (the bindings convert host objects to a `Value` first).
    pub fn from_json_value(value: Value) -> Result<Object> {
        // Same errors as `from_json`: the shape check names the field; what it lets
        // through, serde reports.
        if let Some(e) = shape_error(&value) {
            // The shape check only reports what serde rejects too; should the two ever
            // disagree, serde's acceptance wins, as in `from_json`.
            return match Object::deserialize(&value) {
                Ok(mut obj) => {
                    obj.apply_defaults();
                    Ok(obj)
                }
                Err(_) => Err(e),
            };
        }
        let mut obj: Object =
            serde_json::from_value(value).map_err(|e| Error::invalid("object", e.to_string()))?;
        obj.apply_defaults();
        Ok(obj)
    }

    /// Decodes an object from JSON bytes (the form the store writes in the log).
    pub fn from_slice(bytes: &[u8]) -> Result<Object> {
        match serde_json::from_slice::<Object>(bytes) {
            Ok(mut obj) => {
                obj.apply_defaults();
                Ok(obj)
            }
            // The fast path failed: decode generically only to say which field is wrong.
            Err(e) => {
                match serde_json::from_slice::<Value>(bytes) {
                    Ok(value) => Err(shape_error(&value)
                        .unwrap_or_else(|| Error::invalid("object", e.to_string()))),
                    Err(e) => Err(Error::invalid("object", format!("not valid JSON: {e}"))),
                }
            }
        }
    }

    /// The JSON form (empty fields left out).
    pub fn to_json(&self) -> Value {
        // Serialising this struct into a `Value` cannot fail: all map keys are strings.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The compact JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        // As for `to_json`: nothing in an `Object` can fail to serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The API server's defaults: namespaced kinds without a namespace get `"default"`;
    /// cluster-scoped kinds (`Node`) lose any namespace they were given, as the Kubernetes
    /// API server clears it.
    pub fn apply_defaults(&mut self) {
        if is_namespaced(&self.kind) {
            if self.metadata.namespace.is_empty() {
                self.metadata.namespace = DEFAULT_NAMESPACE.to_string();
            }
        } else {
            self.metadata.namespace.clear();
        }
    }

    /// `"namespace/name"`, or just the name when the namespace is empty (client-go's
    /// `MetaNamespaceKeyFunc`).
    pub fn key(&self) -> String {
        if self.metadata.namespace.is_empty() {
            self.metadata.name.clone()
        } else {
            // Not `format!`: its machinery cost more than the copy, on every write.
            let (ns, name) = (&self.metadata.namespace, &self.metadata.name);
            let mut k = String::with_capacity(ns.len() + 1 + name.len());
            k.push_str(ns);
            k.push('/');
            k.push_str(name);
            k
        }
    }

    /// The parsed `metadata.resourceVersion`; `None` when unset.
    pub fn resource_version(&self) -> Result<Option<ResourceVersion>> {
        if self.metadata.resource_version.is_empty() {
            Ok(None)
        } else {
            self.metadata.resource_version.parse().map(Some)
        }
    }

    /// The owner reference with `controller: true`, if any.
    pub fn controller_ref(&self) -> Option<&OwnerReference> {
        self.metadata
            .owner_references
            .iter()
            .find(|r| r.controller == Some(true))
    }
}

/// Walks a JSON value that failed to decode and names the first field of the wrong shape.
/// Only used to explain an error; what decodes is defined by the serde derive above.
fn shape_error(value: &Value) -> Option<Error> {
    let Some(top) = value.as_object() else {
        return Some(Error::invalid(
            "object",
            format!("must be a JSON object, got {}", type_name(value)),
        ));
    };
    match top.get("kind") {
        None => return Some(Error::invalid("kind", "is required")),
        Some(Value::String(_)) => {}
        Some(v) => return Some(wrong_type("kind", "a string", v)),
    }
    let meta = match top.get("metadata") {
        None | Some(Value::Null) => return None,
        Some(Value::Object(m)) => m,
        Some(v) => return Some(wrong_type("metadata", "an object", v)),
    };
    for (key, field) in [
        ("name", "metadata.name"),
        ("namespace", "metadata.namespace"),
        ("generateName", "metadata.generateName"),
        ("uid", "metadata.uid"),
        ("resourceVersion", "metadata.resourceVersion"),
        ("creationTimestamp", "metadata.creationTimestamp"),
        ("deletionTimestamp", "metadata.deletionTimestamp"),
    ] {
        match meta.get(key) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(v) => return Some(wrong_type(field, "a string", v)),
        }
    }
    match meta.get("generation") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_i64().is_some() => {}
        Some(v) => return Some(wrong_type("metadata.generation", "a 64-bit integer", v)),
    }
    for (key, field) in [
        ("labels", "metadata.labels"),
        ("annotations", "metadata.annotations"),
    ] {
        match meta.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    if !v.is_string() {
                        return Some(wrong_type(&format!("{field}[{k:?}]"), "a string", v));
                    }
                }
            }
            Some(v) => return Some(wrong_type(field, "a map of strings to strings", v)),
        }
    }
    match meta.get("ownerReferences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(refs)) => {
            for (i, r) in refs.iter().enumerate() {
                let base = format!("metadata.ownerReferences[{i}]");
                let Some(r) = r.as_object() else {
                    return Some(wrong_type(&base, "an object", r));
                };
                for key in ["kind", "name", "uid"] {
                    match r.get(key) {
                        None => {
                            return Some(Error::invalid(format!("{base}.{key}"), "is required"));
                        }
                        Some(Value::String(_)) => {}
                        Some(v) => {
                            return Some(wrong_type(&format!("{base}.{key}"), "a string", v));
                        }
                    }
                }
                for key in ["controller", "blockOwnerDeletion"] {
                    match r.get(key) {
                        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
                        Some(v) => {
                            return Some(wrong_type(&format!("{base}.{key}"), "a boolean", v));
                        }
                    }
                }
            }
        }
        Some(v) => return Some(wrong_type("metadata.ownerReferences", "a list", v)),
    }
    None
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> Error {
    Error::invalid(field, format!("must be {expected}, got {}", type_name(got)))
}

fn type_name(v: &Value) -> &'static str {
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
    use crate::error::ErrorKind;
    use serde_json::json;

    fn field_of(v: Value) -> String {
        let e = Object::from_json(&v).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        // from_slice must name the same field.
        let e2 = Object::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(e.field(), e2.field());
        // And so must from_json_value (the bindings' path).
        let e3 = Object::from_json_value(v.clone()).unwrap_err();
        assert_eq!(e.field(), e3.field());
        e.field().unwrap().to_string()
    }

    #[test]
    fn decodes_the_kubernetes_shape_and_round_trips() {
        let v = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "uid": "u-1", "resourceVersion": "42", "generation": 3,
                "creationTimestamp": "2024-01-01T00:00:00Z",
                "labels": {"app": "web"}, "annotations": {"a": "b"},
                "ownerReferences": [{"apiVersion": "x/v1", "kind": "Thing", "name": "t", "uid": "u-0", "controller": true}],
                "managedFields": []
            },
            "spec": {"replicas": 3},
        });
        let obj = Object::from_json(&v).unwrap();
        assert_eq!(obj.metadata.namespace, "default");
        assert_eq!(obj.key(), "default/web");
        assert_eq!(obj.resource_version().unwrap(), Some(ResourceVersion(42)));
        assert_eq!(obj.controller_ref().unwrap().name, "t");
        assert_eq!(obj.status, Value::Null);
        let out = obj.to_json();
        assert!(out.get("status").is_none());
        assert!(out["metadata"].get("deletionTimestamp").is_none());
        assert!(
            out["metadata"]["ownerReferences"][0]
                .get("apiVersion")
                .is_none()
        );
        assert_eq!(Object::from_slice(&obj.to_vec()).unwrap(), obj);
        assert_eq!(Object::from_json(&out).unwrap(), obj);
    }

    #[test]
    fn namespace_defaults_by_scope() {
        let node = Object::from_json(
            &json!({"kind": "Node", "metadata": {"name": "n1", "namespace": "x"}}),
        )
        .unwrap();
        assert_eq!(node.metadata.namespace, "");
        assert_eq!(node.key(), "n1");
        let custom = Object::from_json(
            &json!({"kind": "Widget", "metadata": {"name": "w"}, "spec": [1, 2]}),
        )
        .unwrap();
        assert_eq!(custom.key(), "default/w");
        assert_eq!(custom.spec, json!([1, 2]));
        let ns = Object::from_json(
            &json!({"kind": "Service", "metadata": {"name": "s", "namespace": "prod"}}),
        )
        .unwrap();
        assert_eq!(ns.key(), "prod/s");
    }

    #[test]
    fn nulls_decode_as_empty() {
        let obj = Object::from_json(&json!({"kind": "Instance", "metadata": {"name": "i", "labels": null, "ownerReferences": null, "uid": null}})).unwrap();
        assert!(obj.metadata.labels.is_empty());
        let obj = Object::from_json(&json!({"kind": "Instance", "metadata": null})).unwrap();
        assert_eq!(obj.metadata.namespace, "default");
    }

    #[test]
    fn shape_errors_name_the_field() {
        let cases = [
            (json!([]), "object"),
            (json!({"metadata": {}}), "kind"),
            (json!({"kind": 5}), "kind"),
            (json!({"kind": "X", "metadata": 1}), "metadata"),
            (
                json!({"kind": "X", "metadata": {"name": 1}}),
                "metadata.name",
            ),
            (
                json!({"kind": "X", "metadata": {"generation": "1"}}),
                "metadata.generation",
            ),
            (
                json!({"kind": "X", "metadata": {"generation": 1.5}}),
                "metadata.generation",
            ),
            (
                json!({"kind": "X", "metadata": {"labels": ["a"]}}),
                "metadata.labels",
            ),
            (
                json!({"kind": "X", "metadata": {"labels": {"app": 1}}}),
                "metadata.labels[\"app\"]",
            ),
            (
                json!({"kind": "X", "metadata": {"annotations": {"a": null}}}),
                "metadata.annotations[\"a\"]",
            ),
            (
                json!({"kind": "X", "metadata": {"ownerReferences": {}}}),
                "metadata.ownerReferences",
            ),
            (
                json!({"kind": "X", "metadata": {"ownerReferences": [{"kind": "A", "name": "a"}]}}),
                "metadata.ownerReferences[0].uid",
            ),
            (
                json!({"kind": "X", "metadata": {"ownerReferences": [{"kind": "A", "name": "a", "uid": "u", "controller": "yes"}]}}),
                "metadata.ownerReferences[0].controller",
            ),
        ];
        for (v, field) in cases {
            assert_eq!(field_of(v.clone()), field, "{v}");
        }
        let e = Object::from_slice(b"{not json").unwrap_err();
        assert_eq!(e.field(), Some("object"));
    }

    #[test]
    fn from_json_value_decodes_as_from_json() {
        let cases = [
            json!({"kind": "ConfigMap", "metadata": {"name": "a"}}),
            json!({"kind": "Node", "metadata": {"name": "n", "namespace": "x"}}),
            json!({"kind": "Instance", "metadata": {"name": "i", "namespace": "ns",
                "labels": {"app": "web"}, "annotations": {"a/b": "c"}, "generation": 3,
                "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]},
                "spec": {"x": [1, 2.5, null, "s"]}, "status": {"phase": "Running"}}),
            json!({"kind": "Custom", "metadata": null, "spec": null}),
        ];
        for v in cases {
            assert_eq!(
                Object::from_json_value(v.clone()).unwrap(),
                Object::from_json(&v).unwrap(),
                "{v}"
            );
        }
    }

    #[test]
    fn resource_versions_parse_strictly() {
        assert_eq!("0".parse::<ResourceVersion>().unwrap(), ResourceVersion(0));
        assert_eq!(
            "18446744073709551615".parse::<ResourceVersion>().unwrap(),
            ResourceVersion(u64::MAX)
        );
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1.0",
            "0x10",
            "18446744073709551616",
            "abc",
            "１",
        ] {
            let e = bad.parse::<ResourceVersion>().unwrap_err();
            assert_eq!(e.field(), Some("metadata.resourceVersion"), "{bad:?}");
        }
        assert_eq!(ResourceVersion(17).to_string(), "17");
        let mut obj = Object {
            kind: "X".into(),
            ..Default::default()
        };
        assert_eq!(obj.resource_version().unwrap(), None);
        obj.metadata.resource_version = "zz".into();
        assert!(obj.resource_version().is_err());
    }

    #[test]
    fn kinds_and_scopes() {
        assert!(is_builtin_kind("ReplicaSet"));
        assert!(!is_builtin_kind("Widget"));
        assert!(!is_namespaced("Node"));
        assert!(is_namespaced("Widget"));
    }
}
