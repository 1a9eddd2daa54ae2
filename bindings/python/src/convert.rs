//! Conversions between Python values and the core's types: objects (dicts ⇄ JSON), argument
//! helpers that raise `floyd.Invalid` naming the argument, and [`Item`], the owned key the
//! work queue and rate limiters are keyed on.
//!
//! Nothing here runs user Python code: dicts are read through the C-level dict iteration
//! (overridden `keys()`/`__getitem__` of dict subclasses are not consulted), and only exact
//! builtin types (and their subclasses' builtin values) are accepted. So conversion cannot
//! re-enter floyd and cannot raise the user's exceptions.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use crate::errors::invalid;

/// How deeply a dict may nest (`{}` is 1). Above the core's 64-level limit on `spec` and
/// `status` plus the object's own levels, so the core names the exact rule; low enough that
/// the recursive code downstream (serde) stays far from the stack limit. A self-referencing
/// dict hits this.
pub const MAX_DEPTH: usize = 100;
/// Estimated JSON bytes a conversion may produce before it gives up: 2× the core's 1 MiB
/// object limit, so the core reports sizes near its limit precisely, while a 100 MB object,
/// a million labels or a shared-subtree "billion laughs" stops early.
pub const MAX_JSON_BYTES: usize = 2 << 20;

pub fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

fn py_str<'a>(py: Python<'_>, s: &'a Bound<'_, PyString>, field: &str) -> PyResult<Cow<'a, str>> {
    s.to_cow().map_err(|_| not_unicode(py, field))
}

fn not_unicode(py: Python<'_>, field: &str) -> PyErr {
    invalid(py, field, "is not valid Unicode (lone surrogate?)")
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// The dotted path of a position (`spec.template.metadata.labels["app"]`, `spec.ports[0]`);
/// `root` for the top level.
fn path(root: &str, segs: &[Seg]) -> String {
    if segs.is_empty() {
        return root.to_string();
    }
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) if is_ident(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Key(k) => {
                let _ = write!(out, "[{k:?}]");
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// Why a Python string cannot become JSON text.
pub enum StrError {
    /// Longer than the bytes left in the budget.
    TooLarge,
    /// Not valid Unicode (a lone surrogate).
    NotUnicode,
}

/// The UTF-8 text of `s`, refused when it cannot fit in `budget` bytes. A string whose code
/// points outnumber the budget is refused before it is copied (code points never outnumber
/// UTF-8 bytes); the count is taken only from an exact `str`, because a subclass's `len()`
/// would run its `__len__`, which is user code. Both conversions of objects (`py_to_json`
/// and `frompy`) read strings through here, so they refuse the same ones.
pub fn str_text<'a>(s: &'a Bound<'_, PyString>, budget: usize) -> Result<Cow<'a, str>, StrError> {
    if s.is_exact_instance_of::<PyString>() && s.len().unwrap_or(0) > budget {
        return Err(StrError::TooLarge);
    }
    s.to_cow().map_err(|_| StrError::NotUnicode)
}

fn too_large(py: Python<'_>, root: &str) -> PyErr {
    invalid(
        py,
        root,
        format!("too large: more than {MAX_JSON_BYTES} bytes as JSON"),
    )
}

/// The path of the value being converted, read off the conversion stack (each open frame
/// is at its child `pos - 1`). Only built for an error message.
fn stack_path(root: &str, stack: &[Frame<'_>]) -> String {
    let segs: Vec<Seg<'_>> = stack
        .iter()
        .map(|f| match f {
            Frame::Obj { entries, pos, .. } => Seg::Key(&entries[pos - 1].0),
            Frame::Arr { pos, .. } => Seg::Index(pos - 1),
        })
        .collect();
    path(root, &segs)
}

enum Frame<'py> {
    Obj {
        entries: Vec<(String, Bound<'py, PyAny>)>,
        pos: usize,
        out: Map<String, Value>,
    },
    Arr {
        items: Vec<Bound<'py, PyAny>>,
        pos: usize,
        out: Vec<Value>,
    },
}

/// Converts a Python value (dicts, lists, tuples, str, int, float, bool, None) to JSON
/// without recursion. Errors are `floyd.Invalid` naming the path (`root` at the top level):
/// non-str keys, NaN/±inf floats, ints outside i64/u64, other types, nesting deeper than
/// [`MAX_DEPTH`] ("too deep") and output beyond [`MAX_JSON_BYTES`] ("too large").
pub fn py_to_json(v: &Bound<'_, PyAny>, root: &str) -> PyResult<Value> {
    let py = v.py();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut budget = MAX_JSON_BYTES;
    // `Some(value)` when the current value is complete and must be attached to its parent.
    let mut done: Option<Value>;
    let mut current = v.clone();
    loop {
        // Convert `current`: a scalar completes at once, a container opens a frame.
        done = None;
        let cost;
        if current.is_none() {
            cost = 4;
            done = Some(Value::Null);
        } else if let Ok(b) = current.cast::<PyBool>() {
            cost = 5;
            done = Some(Value::Bool(b.is_true()));
        } else if let Ok(i) = current.cast::<PyInt>() {
            cost = 8;
            let n = if let Ok(n) = i.extract::<i64>() {
                Number::from(n)
            } else if let Ok(n) = i.extract::<u64>() {
                Number::from(n)
            } else {
                return Err(invalid(
                    py,
                    &stack_path(root, &stack),
                    "integer out of range (must fit in a 64-bit integer)",
                ));
            };
            done = Some(Value::Number(n));
        } else if let Ok(f) = current.cast::<PyFloat>() {
            cost = 8;
            let x = f.value();
            let n = Number::from_f64(x).ok_or_else(|| {
                invalid(
                    py,
                    &stack_path(root, &stack),
                    format!("{x} is not a JSON number"),
                )
            })?;
            done = Some(Value::Number(n));
        } else if let Ok(s) = current.cast::<PyString>() {
            let s = match str_text(s, budget) {
                Ok(s) => s.into_owned(),
                Err(StrError::TooLarge) => return Err(too_large(py, root)),
                Err(StrError::NotUnicode) => {
                    return Err(not_unicode(py, &stack_path(root, &stack)));
                }
            };
            cost = s.len() + 2;
            done = Some(Value::String(s));
        } else if let Ok(d) = current.cast::<PyDict>() {
            cost = 2 + d.len();
            if stack.len() >= MAX_DEPTH {
                return Err(invalid(
                    py,
                    &stack_path(root, &stack),
                    format!("too deep: nests deeper than {MAX_DEPTH} levels"),
                ));
            }
            if cost > budget {
                return Err(too_large(py, root));
            }
            let mut entries = Vec::with_capacity(d.len());
            for (k, val) in d.iter() {
                let Ok(ks) = k.cast::<PyString>() else {
                    return Err(invalid(
                        py,
                        &stack_path(root, &stack),
                        format!("keys must be str, got {}", type_name(&k)),
                    ));
                };
                let key = match str_text(ks, budget) {
                    Ok(k) => k.into_owned(),
                    Err(StrError::TooLarge) => return Err(too_large(py, root)),
                    Err(StrError::NotUnicode) => {
                        return Err(not_unicode(py, &stack_path(root, &stack)));
                    }
                };
                budget = budget
                    .checked_sub(key.len() + 3)
                    .ok_or_else(|| too_large(py, root))?;
                entries.push((key, val));
            }
            stack.push(Frame::Obj {
                entries,
                pos: 0,
                out: Map::new(),
            });
        } else if current.cast::<PyList>().is_ok() || current.cast::<PyTuple>().is_ok() {
            if stack.len() >= MAX_DEPTH {
                return Err(invalid(
                    py,
                    &stack_path(root, &stack),
                    format!("too deep: nests deeper than {MAX_DEPTH} levels"),
                ));
            }
            let n = match current.cast::<PyList>() {
                Ok(l) => l.len(),
                Err(_) => current.cast::<PyTuple>()?.len(),
            };
            if n + 2 > budget {
                return Err(too_large(py, root));
            }
            let items: Vec<Bound<'_, PyAny>> = match current.cast::<PyList>() {
                Ok(l) => l.iter().collect(),
                Err(_) => current.cast::<PyTuple>()?.iter().collect(),
            };
            cost = 2 + items.len();
            stack.push(Frame::Arr {
                out: Vec::with_capacity(items.len()),
                items,
                pos: 0,
            });
        } else {
            return Err(invalid(
                py,
                &stack_path(root, &stack),
                format!(
                    "unsupported type {} (expected dict, list, tuple, str, int, float, bool or None)",
                    type_name(&current)
                ),
            ));
        }
        budget = budget
            .checked_sub(cost)
            .ok_or_else(|| too_large(py, root))?;

        // Attach finished values to their parents and find the next child to convert.
        loop {
            let Some(top) = stack.last_mut() else {
                // The root value itself finished.
                return Ok(done.unwrap_or(Value::Null));
            };
            if let Some(val) = done.take() {
                // `val` is the child at `pos - 1` of `top`.
                match top {
                    Frame::Obj { entries, pos, out } => {
                        let key = std::mem::take(&mut entries[*pos - 1].0);
                        out.insert(key, val);
                    }
                    Frame::Arr { out, .. } => out.push(val),
                }
            }
            let next = match top {
                Frame::Obj { entries, pos, .. } if *pos < entries.len() => {
                    *pos += 1;
                    Some(entries[*pos - 1].1.clone())
                }
                Frame::Arr { items, pos, .. } if *pos < items.len() => {
                    *pos += 1;
                    Some(items[*pos - 1].clone())
                }
                _ => None,
            };
            match next {
                Some(child) => {
                    current = child;
                    break;
                }
                None => {
                    // The frame is complete: it becomes a finished value.
                    done = Some(match stack.pop() {
                        Some(Frame::Obj { out, .. }) => Value::Object(out),
                        Some(Frame::Arr { out, .. }) => Value::Array(out),
                        None => Value::Null,
                    });
                    if stack.is_empty() {
                        return Ok(done.unwrap_or(Value::Null));
                    }
                }
            }
        }
    }
}

/// Converts JSON from the core to Python. Stored objects passed the core's depth limit, so
/// the recursion is bounded; the explicit check keeps it so even if that limit changes.
pub fn json_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    json_to_py_at(py, v, 0)
}

fn json_to_py_at<'py>(py: Python<'py>, v: &Value, depth: usize) -> PyResult<Bound<'py, PyAny>> {
    if depth > 4 * MAX_DEPTH {
        return Err(crate::errors::raise(
            py,
            floyd::ErrorKind::Internal,
            "internal: stored value nests too deeply to convert",
            None,
        ));
    }
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let l = PyList::empty(py);
            for x in a {
                l.append(json_to_py_at(py, x, depth + 1)?)?;
            }
            l.into_any()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, json_to_py_at(py, x, depth + 1)?)?;
            }
            d.into_any()
        }
    })
}

/// A dict argument converted to an object, `Invalid` naming the field on any problem.
///
/// Converted directly ([`crate::frompy`]) when that succeeds; otherwise again through the
/// JSON value tree ([`object_arg_via_json`]), which accepts the same objects but can say what
/// is wrong with the others.
pub fn object_arg(v: &Bound<'_, PyAny>) -> PyResult<floyd::Object> {
    let d = dict_arg(v)?;
    match crate::frompy::object(d) {
        Some(o) => Ok(o),
        None => object_arg_via_json(v),
    }
}

/// [`object_arg`] through the JSON value tree: `py_to_json`, then
/// `floyd::Object::from_json_value`.
pub fn object_arg_via_json(v: &Bound<'_, PyAny>) -> PyResult<floyd::Object> {
    let py = v.py();
    dict_arg(v)?;
    let json = py_to_json(v, "object")?;
    floyd::Object::from_json_value(json).map_err(|e| crate::errors::to_py(py, e))
}

/// The object argument as a dict (a subclass is read as a plain dict).
pub fn dict_arg<'a, 'py>(v: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyDict>> {
    v.cast::<PyDict>().map_err(|_| {
        invalid(
            v.py(),
            "object",
            format!("must be a dict, got {}", type_name(v)),
        )
    })
}

/// A `str` argument.
pub fn str_arg<'a>(v: &'a Bound<'_, PyAny>, field: &str) -> PyResult<Cow<'a, str>> {
    let py = v.py();
    match v.cast::<PyString>() {
        Ok(s) => py_str(py, s, field),
        Err(_) => Err(invalid(
            py,
            field,
            format!("must be a str, got {}", type_name(v)),
        )),
    }
}

/// A `str` argument read in place: its UTF-8 bytes live in a Python `bytes` (or, on Python
/// builds that allow it, in the `str` itself) instead of a Rust `String` made per call.
pub fn str_ref_arg(v: &Bound<'_, PyAny>, field: &str) -> PyResult<PyBackedStr> {
    let py = v.py();
    match v.cast::<PyString>() {
        Ok(s) => PyBackedStr::try_from(s.clone()).map_err(|_| not_unicode(py, field)),
        Err(_) => Err(invalid(
            py,
            field,
            format!("must be a str, got {}", type_name(v)),
        )),
    }
}

/// An optional `str` argument (`None` allowed).
pub fn opt_str_arg(v: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Option<String>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => Ok(Some(str_arg(v, field)?.into_owned())),
    }
}

/// A non-negative integer argument (not a bool, not a float).
pub fn u64_arg(v: &Bound<'_, PyAny>, field: &str) -> PyResult<u64> {
    let py = v.py();
    if v.cast::<PyBool>().is_ok() || v.cast::<PyInt>().is_err() {
        return Err(invalid(
            py,
            field,
            format!("must be an int, got {}", type_name(v)),
        ));
    }
    v.extract::<u64>().map_err(|_| {
        invalid(
            py,
            field,
            format!("must be between 0 and {}, got {v}", u64::MAX),
        )
    })
}

/// A `u32` argument.
pub fn u32_arg(v: &Bound<'_, PyAny>, field: &str) -> PyResult<u32> {
    let n = u64_arg(v, field)?;
    u32::try_from(n).map_err(|_| {
        invalid(
            v.py(),
            field,
            format!("must be between 0 and {}, got {n}", u32::MAX),
        )
    })
}

/// A float argument (an int is accepted; a bool is not).
pub fn f64_arg(v: &Bound<'_, PyAny>, field: &str) -> PyResult<f64> {
    let py = v.py();
    if let Ok(f) = v.cast::<PyFloat>() {
        return Ok(f.value());
    }
    if v.cast::<PyInt>().is_ok() && v.cast::<PyBool>().is_err() {
        return v
            .extract::<f64>()
            .map_err(|_| invalid(py, field, "is out of range"));
    }
    Err(invalid(
        py,
        field,
        format!("must be a number of seconds, got {}", type_name(v)),
    ))
}

/// A duration in float seconds: NaN, negative, infinite or too large is `Invalid`.
pub fn secs_arg(v: &Bound<'_, PyAny>, field: &str) -> PyResult<Duration> {
    let secs = f64_arg(v, field)?;
    floyd::error::duration_from_secs(field, secs).map_err(|e| crate::errors::to_py(v.py(), e))
}

/// An optional duration (`None`: no limit).
pub fn opt_secs_arg(v: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => secs_arg(v, field).map(Some),
    }
}

/// The value part of a work-queue item: Python's equality for the supported types, so
/// `1`, `1.0` and `True` are one item (as in a `set`), and `(1, "a")` equals `(True, "a")`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum KeyVal {
    None,
    /// bool, int and integral floats.
    Int(i128),
    /// Non-integral floats by bit pattern (NaN is rejected).
    Float(u64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<KeyVal>),
}

/// Tuples in items may nest this deep.
const MAX_ITEM_DEPTH: usize = 32;

struct ItemInner {
    key: KeyVal,
    /// The object the user added; `get` hands this very object back.
    obj: Py<PyAny>,
}

/// A work-queue item: an owned Rust key (compared and hashed without the GIL, so the queue's
/// locks never wait on Python) plus the original object. Dropping the last clone without the
/// GIL defers the decref to pyo3's pool.
#[derive(Clone)]
pub struct Item(Arc<ItemInner>);

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}
impl Eq for Item {}
impl Hash for Item {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state)
    }
}

impl Item {
    /// `item` as a key; `Invalid("item")` for unsupported types (anything but None, bool,
    /// int, float other than NaN, str, bytes, and tuples of those).
    pub fn new(item: &Bound<'_, PyAny>) -> PyResult<Item> {
        let key = key_of(item, 0)?;
        Ok(Item(Arc::new(ItemInner {
            key,
            obj: item.clone().unbind(),
        })))
    }

    pub fn object<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.0.obj.bind(py).clone()
    }
}

fn key_of(v: &Bound<'_, PyAny>, depth: usize) -> PyResult<KeyVal> {
    let py = v.py();
    let bad = |msg: String| invalid(py, "item", msg);
    if v.is_none() {
        return Ok(KeyVal::None);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(KeyVal::Int(b.is_true() as i128));
    }
    if v.cast::<PyInt>().is_ok() {
        return v
            .extract::<i64>()
            .map(|n| KeyVal::Int(n as i128))
            .or_else(|_| v.extract::<u64>().map(|n| KeyVal::Int(n as i128)))
            .map_err(|_| bad("integer out of range (must fit in 64 bits)".into()));
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        let x = f.value();
        if x.is_nan() {
            return Err(bad(
                "NaN is not equal to itself and cannot be an item".into()
            ));
        }
        // Integral floats compare equal to ints in Python, so they share the int key.
        if x.fract() == 0.0 && x.abs() < 1.7e38 {
            return Ok(KeyVal::Int(x as i128));
        }
        return Ok(KeyVal::Float(x.to_bits()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(KeyVal::Str(py_str(py, s, "item")?.into_owned()));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(KeyVal::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        if depth >= MAX_ITEM_DEPTH {
            return Err(bad(format!(
                "too deep: tuples nest deeper than {MAX_ITEM_DEPTH}"
            )));
        }
        let mut out = Vec::with_capacity(t.len());
        for x in t.iter() {
            out.push(key_of(&x, depth + 1)?);
        }
        return Ok(KeyVal::Tuple(out));
    }
    Err(bad(format!(
        "must be str, int, float, bool, None, bytes or a tuple of them, got {}",
        type_name(v)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_fields_like_the_core() {
        let segs = vec![
            Seg::Key("spec"),
            Seg::Key("ports"),
            Seg::Index(2),
            Seg::Key("odd key"),
            Seg::Key("x"),
        ];
        assert_eq!(path("object", &segs), "spec.ports[2][\"odd key\"].x");
        assert_eq!(path("object", &[]), "object");
        assert!(is_ident("_a1") && !is_ident("1a") && !is_ident("") && !is_ident("a-b"));
    }
}
