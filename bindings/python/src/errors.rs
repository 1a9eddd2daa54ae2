//! The exception classes (`floyd.FloydError` and one subclass per [`floyd::ErrorKind`]), the
//! mapping from core errors to them, and [`guard`], which every entry point runs its body in
//! so a Rust panic becomes `floyd.Internal` instead of pyo3's `PanicException` (a
//! `BaseException` that escapes `except Exception`, `reliability.md` finding 10).
//!
//! The classes are made with Python's `type()` at import: that allows `Invalid` to also
//! derive from `ValueError`, which pyo3's `create_exception!` cannot express.

use std::panic::{AssertUnwindSafe, catch_unwind};

use floyd::{Error, ErrorKind};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

/// Every kind, in the order of `ErrorKind`'s declaration.
pub const KINDS: [ErrorKind; 9] = [
    ErrorKind::NotFound,
    ErrorKind::AlreadyExists,
    ErrorKind::Conflict,
    ErrorKind::Invalid,
    ErrorKind::Expired,
    ErrorKind::ShutDown,
    ErrorKind::Corrupt,
    ErrorKind::Io,
    ErrorKind::Internal,
];

pub struct Classes {
    pub base: Py<PyType>,
    pub kinds: Vec<Py<PyType>>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn make_class<'py>(
    py: Python<'py>,
    name: &str,
    bases: Bound<'py, PyTuple>,
    kind: Option<&str>,
    doc: &str,
) -> PyResult<Py<PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "floyd")?;
    ns.set_item("__doc__", doc)?;
    // `field` is the dotted path an `Invalid` names; `None` on every other error.
    ns.set_item("field", py.None())?;
    if let Some(k) = kind {
        ns.set_item("kind", k)?;
    }
    let ty = py
        .import("builtins")?
        .getattr("type")?
        .call1((name, bases, ns))?;
    Ok(ty.cast_into::<PyType>()?.unbind())
}

fn doc_for(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "get/update/delete of a missing object.",
        ErrorKind::AlreadyExists => "create of an existing key.",
        ErrorKind::Conflict => "update/delete whose resourceVersion precondition is stale.",
        ErrorKind::Invalid => {
            "An object or argument that fails validation; `field` names it. Also a ValueError; \
             arguments of the wrong type raise it too (not TypeError)."
        }
        ErrorKind::Expired => "watch from a version older than compaction kept.",
        ErrorKind::ShutDown => "use of a store, queue or watch after close/shut-down.",
        ErrorKind::Corrupt => "a log segment or snapshot that fails its checks.",
        ErrorKind::Io => "the operating system refused.",
        ErrorKind::Internal => "a bug in floyd (for example a caught Rust panic).",
    }
}

/// Creates the classes once per process and adds them to `m`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let classes = CLASSES.get_or_try_init(py, || -> PyResult<Classes> {
        let exc = py.get_type::<pyo3::exceptions::PyException>();
        let base = make_class(
            py,
            "FloydError",
            PyTuple::new(py, [exc])?,
            None,
            "Every error floyd raises; `kind` names the subclass, `field` is set on Invalid.",
        )?;
        let mut kinds = Vec::with_capacity(KINDS.len());
        for k in KINDS {
            let b = base.bind(py).clone();
            let bases = if k == ErrorKind::Invalid {
                PyTuple::new(py, [b, py.get_type::<PyValueError>()])?
            } else {
                PyTuple::new(py, [b])?
            };
            kinds.push(make_class(
                py,
                k.as_str(),
                bases,
                Some(k.as_str()),
                doc_for(k),
            )?);
        }
        base.bind(py).setattr("kind", "FloydError")?;
        Ok(Classes { base, kinds })
    })?;
    m.add("FloydError", classes.base.bind(py))?;
    for (k, ty) in KINDS.iter().zip(&classes.kinds) {
        m.add(k.as_str(), ty.bind(py))?;
    }
    Ok(())
}

fn class_of(py: Python<'_>, kind: ErrorKind) -> Option<Bound<'_, PyType>> {
    let c = CLASSES.get(py)?;
    let i = KINDS.iter().position(|k| *k == kind)?;
    Some(c.kinds[i].bind(py).clone())
}

/// An exception of `kind` with `message`, and `field` set when given.
pub fn raise(py: Python<'_>, kind: ErrorKind, message: &str, field: Option<&str>) -> PyErr {
    let Some(ty) = class_of(py, kind) else {
        // Only reachable if the module failed to initialise; still not a panic.
        return PyValueError::new_err(message.to_string());
    };
    match ty.call1((message,)) {
        Ok(inst) => {
            if let Some(f) = field
                && let Err(e) = inst.setattr("field", f)
            {
                return e;
            }
            PyErr::from_value(inst)
        }
        Err(e) => e,
    }
}

/// A core error as its exception class.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    raise(py, e.kind(), &e.to_string(), e.field())
}

/// `floyd.Invalid` naming `field`, worded like the core's (`invalid <field>: <message>`).
pub fn invalid(py: Python<'_>, field: &str, message: impl std::fmt::Display) -> PyErr {
    raise(
        py,
        ErrorKind::Invalid,
        &format!("invalid {field}: {message}"),
        Some(field),
    )
}

/// Lifts core results into Python ones.
pub trait IntoPy<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for floyd::Result<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

/// Runs an entry point's body, turning a panic into `floyd.Internal`. Python errors the body
/// returns pass through unchanged.
pub fn guard<T>(py: Python<'_>, body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-string payload".to_string());
            Err(raise(
                py,
                ErrorKind::Internal,
                &format!("internal: Rust panic in floyd: {what}"),
                None,
            ))
        }
    }
}
