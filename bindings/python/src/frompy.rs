//! A serde `Deserializer` over Python values: a dict argument becomes a `floyd::Object`
//! directly, without the intermediate `serde_json::Value` tree of
//! [`crate::convert::py_to_json`] (a map node and a `String` per key, built only to be taken
//! apart again by serde). Free-form `spec` and `status` still become `Value`s, built by
//! serde_json's own visitor reading this deserializer.
//!
//! This is the fast path of [`crate::convert::object_arg`], and only that: it accepts exactly
//! what the slow path (`py_to_json`, then `Object::from_json_value`) accepts and builds the
//! same object, but it does not explain a refusal. On any problem it gives up with
//! [`Refused`] and the caller converts again the slow way, which names the field. So the
//! limits here are `py_to_json`'s, rule for rule: the same types, the same depth rule
//! ([`MAX_DEPTH`] containers), the same byte estimate charged against [`MAX_JSON_BYTES`] for
//! every value — including the values of fields the object ignores (`apiVersion`,
//! `managedFields`), which are walked as carefully as the rest. And the shapes are those of
//! serde_json's `Value` deserializer, which the slow path decodes with: a struct may also
//! be given as a list of its fields in order, and a list must be used up.
//!
//! As in `convert`, no user Python code runs: dicts are read through the C-level
//! iteration, and only builtin types (and subclasses' builtin values) are accepted.

use std::borrow::Cow;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::PyTypeInfo;
use pyo3::prelude::*;
use pyo3::types::iter::BoundDictIterator;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, forward_to_deserialize_any};

use crate::cache::{StaticCache, static_id};
use crate::convert::{MAX_DEPTH, MAX_JSON_BYTES, StrError, str_text};

/// `obj`, a dict, as an object with the API server's defaults applied (as
/// `Object::from_json_value` applies them); `None` if the fast path refuses it, for any
/// reason (the slow path then says which).
pub fn object(obj: &Bound<'_, PyDict>) -> Option<floyd::Object> {
    let mut budget = MAX_JSON_BYTES;
    let de = PyDe {
        v: obj.as_any().clone(),
        depth: 0,
        budget: &mut budget,
    };
    // A panic here could only be a bug (pyo3's dict iterator panics if a dict changes size
    // while it is read, and nothing here runs code that could change it); the slow path
    // still answers correctly then.
    let mut o = catch_unwind(AssertUnwindSafe(|| floyd::Object::deserialize(de)))
        .ok()?
        .ok()?;
    o.apply_defaults();
    Some(o)
}

/// The fast path gave up. Carries nothing: the slow path explains.
#[derive(Debug)]
pub struct Refused;

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refused by the fast conversion")
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Refused
    }
}

impl From<StrError> for Refused {
    fn from(_: StrError) -> Self {
        Refused
    }
}

type R<T> = Result<T, Refused>;

/// Takes `cost` estimated JSON bytes from the budget (`py_to_json` charges the same).
fn charge(budget: &mut usize, cost: usize) -> R<()> {
    *budget = budget.checked_sub(cost).ok_or(Refused)?;
    Ok(())
}

/// One Python value to deserialize: `depth` containers enclose it.
struct PyDe<'b, 'py> {
    v: Bound<'py, PyAny>,
    depth: usize,
    budget: &'b mut usize,
}

/// What a value is, among the types `py_to_json` accepts.
enum Shape<'a, 'py> {
    Str(&'a Bound<'py, PyString>),
    Dict(&'a Bound<'py, PyDict>),
    Int(&'a Bound<'py, PyInt>),
    List(&'a Bound<'py, PyList>),
    Bool(bool),
    None,
    Float(f64),
    Tuple(&'a Bound<'py, PyTuple>),
    Other,
}

/// `v` as `T` if its type is exactly `T` (a pointer comparison).
fn exact<'a, 'py, T: PyTypeInfo>(v: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, T>> {
    if v.is_exact_instance_of::<T>() {
        v.cast_exact::<T>().ok()
    } else {
        None
    }
}

/// `v` as `T` if its type is `T` or a subclass (a call into the interpreter).
fn sub<'a, 'py, T: PyTypeInfo>(v: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, T>> {
    if v.is_instance_of::<T>() {
        v.cast::<T>().ok()
    } else {
        None
    }
}

/// The shape of `v`: exact builtin types first, most frequent first, then subclasses. The
/// types are disjoint (no class derives from two of them, and bool cannot be subclassed),
/// so the order does not change the answer, only how soon it comes.
fn shape<'a, 'py>(v: &'a Bound<'py, PyAny>) -> Shape<'a, 'py> {
    if let Some(s) = exact::<PyString>(v) {
        Shape::Str(s)
    } else if let Some(d) = exact::<PyDict>(v) {
        Shape::Dict(d)
    } else if let Some(i) = exact::<PyInt>(v) {
        Shape::Int(i)
    } else if let Some(l) = exact::<PyList>(v) {
        Shape::List(l)
    } else if let Some(b) = exact::<PyBool>(v) {
        Shape::Bool(b.is_true())
    } else if v.is_none() {
        Shape::None
    } else if let Some(f) = exact::<PyFloat>(v) {
        Shape::Float(f.value())
    } else if let Some(t) = exact::<PyTuple>(v) {
        Shape::Tuple(t)
    } else if let Some(s) = sub::<PyString>(v) {
        Shape::Str(s)
    } else if let Some(d) = sub::<PyDict>(v) {
        Shape::Dict(d)
    } else if let Some(i) = sub::<PyInt>(v) {
        Shape::Int(i)
    } else if let Some(l) = sub::<PyList>(v) {
        Shape::List(l)
    } else if let Some(f) = sub::<PyFloat>(v) {
        Shape::Float(f.value())
    } else if let Some(t) = sub::<PyTuple>(v) {
        Shape::Tuple(t)
    } else {
        Shape::Other
    }
}

/// Opens a container of `len` items enclosed by `depth` others: `py_to_json`'s depth rule
/// and charge.
fn open(depth: usize, budget: &mut usize, len: usize) -> R<()> {
    if depth >= MAX_DEPTH {
        return Err(Refused);
    }
    charge(budget, 2 + len)
}

fn visit_dict<'de, 'py, V: Visitor<'de>>(
    d: &Bound<'py, PyDict>,
    depth: usize,
    budget: &mut usize,
    names: Option<Names>,
    visitor: V,
) -> R<V::Value> {
    open(depth, budget, d.len())?;
    let mut access = DictAccess {
        iter: d.iter(),
        value: None,
        names,
        depth: depth + 1,
        budget,
    };
    let out = visitor.visit_map(&mut access)?;
    // Every entry must have been read, as serde_json requires of a `Value` map.
    if access.iter.len() != 0 {
        return Err(Refused);
    }
    Ok(out)
}

fn visit_items<'de, 'py, V: Visitor<'de>, I>(
    iter: I,
    depth: usize,
    budget: &mut usize,
    visitor: V,
) -> R<V::Value>
where
    I: ExactSizeIterator<Item = Bound<'py, PyAny>>,
{
    open(depth, budget, iter.len())?;
    let mut access = ItemsAccess {
        iter,
        depth: depth + 1,
        budget,
    };
    let out = visitor.visit_seq(&mut access)?;
    // A struct given as a list must have no more items than fields (serde_json's
    // "fewer elements in array").
    if access.iter.len() != 0 {
        return Err(Refused);
    }
    Ok(out)
}

impl<'de, 'py> de::Deserializer<'de> for PyDe<'_, 'py> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        let PyDe { v, depth, budget } = self;
        match shape(&v) {
            Shape::Str(s) => {
                let text = str_text(s, *budget)?;
                charge(budget, text.len() + 2)?;
                match text {
                    Cow::Borrowed(t) => visitor.visit_str(t),
                    Cow::Owned(t) => visitor.visit_string(t),
                }
            }
            Shape::Dict(d) => visit_dict(d, depth, budget, None, visitor),
            Shape::Int(i) => {
                charge(budget, 8)?;
                // As serde_json's `Value`: non-negative integers are unsigned.
                if let Ok(n) = i.extract::<i64>() {
                    match u64::try_from(n) {
                        Ok(u) => visitor.visit_u64(u),
                        Err(_) => visitor.visit_i64(n),
                    }
                } else if let Ok(n) = i.extract::<u64>() {
                    visitor.visit_u64(n)
                } else {
                    Err(Refused)
                }
            }
            Shape::List(l) => visit_items(l.iter(), depth, budget, visitor),
            Shape::Bool(b) => {
                charge(budget, 5)?;
                visitor.visit_bool(b)
            }
            Shape::None => {
                charge(budget, 4)?;
                visitor.visit_unit()
            }
            Shape::Float(x) => {
                charge(budget, 8)?;
                if !x.is_finite() {
                    return Err(Refused);
                }
                visitor.visit_f64(x)
            }
            Shape::Tuple(t) => visit_items(t.iter(), depth, budget, visitor),
            Shape::Other => Err(Refused),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        if self.v.is_none() {
            charge(self.budget, 4)?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        match exact::<PyDict>(&self.v).or_else(|| sub::<PyDict>(&self.v)) {
            Some(d) => {
                let names = field_names(d.py(), fields).map(|py| Names { fields, py });
                visit_dict(d, self.depth, self.budget, names, visitor)
            }
            // A list is read as the fields in order; anything else the visitor refuses.
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> R<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        // Not skipped: `py_to_json` converts an ignored field too, so its value must pass
        // the same checks and pay the same bytes.
        self.deserialize_any(IgnoredAny)?;
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map enum identifier
    }
}

/// A struct's field names, and the same names as interned Python strings.
#[derive(Clone, Copy)]
struct Names {
    fields: &'static [&'static str],
    py: &'static [Py<PyString>],
}

/// Interned Python strings for serde's field-name lists, made once per struct type. A key
/// written as a literal in Python source is interned, and so is every key of the dicts
/// `topy` returns: such a key is recognised by its address, without encoding it. Keyed by
/// the list's address (serde's `FIELDS` are `&'static`).
static FIELD_NAMES: StaticCache<Box<[Py<PyString>]>, 16> = StaticCache::new();

fn field_names(py: Python<'_>, fields: &'static [&'static str]) -> Option<&'static [Py<PyString>]> {
    FIELD_NAMES
        .get_or_make(static_id(fields), || {
            fields
                .iter()
                .map(|f| PyString::intern(py, f).unbind())
                .collect()
        })
        .map(|names| &names[..])
}

struct DictAccess<'b, 'py> {
    iter: BoundDictIterator<'py>,
    /// The value of the key just read.
    value: Option<Bound<'py, PyAny>>,
    names: Option<Names>,
    depth: usize,
    budget: &'b mut usize,
}

impl<'de> MapAccess<'de> for DictAccess<'_, '_> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(v);
        if let Some(names) = self.names
            && let Some(i) = names.py.iter().position(|n| n.as_ptr() == k.as_ptr())
        {
            let field = names.fields[i];
            charge(self.budget, field.len() + 3)?;
            return seed.deserialize(KeyDe(Cow::Borrowed(field))).map(Some);
        }
        let ks = exact::<PyString>(&k)
            .or_else(|| sub::<PyString>(&k))
            .ok_or(Refused)?;
        let text = str_text(ks, *self.budget)?;
        charge(self.budget, text.len() + 3)?;
        seed.deserialize(KeyDe(text)).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> R<S::Value> {
        let v = self.value.take().ok_or(Refused)?;
        seed.deserialize(PyDe {
            v,
            depth: self.depth,
            budget: &mut *self.budget,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct ItemsAccess<'b, I> {
    iter: I,
    depth: usize,
    budget: &'b mut usize,
}

impl<'de, 'py, I> SeqAccess<'de> for ItemsAccess<'_, I>
where
    I: ExactSizeIterator<Item = Bound<'py, PyAny>>,
{
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<Option<T::Value>> {
        match self.iter.next() {
            None => Ok(None),
            Some(v) => seed
                .deserialize(PyDe {
                    v,
                    depth: self.depth,
                    budget: &mut *self.budget,
                })
                .map(Some),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// A dict key: text only (a `Value` map's keys are strings).
struct KeyDe<'a>(Cow<'a, str>);

impl<'de> de::Deserializer<'de> for KeyDe<'_> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self.0 {
            Cow::Borrowed(t) => visitor.visit_str(t),
            Cow::Owned(t) => visitor.visit_string(t),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}
