//! `floyd.Store` and `floyd.Watch`: the store's calls translated one to one. Objects cross as
//! dicts; every call that may block or touch the disk (open, writes to a store on disk —
//! which fsync in `always` mode —, snapshot, watch waits) runs with the GIL released.

use std::path::PathBuf;
use std::sync::Arc;

use floyd::{Durability, LabelSelector, ResourceVersion, StoreConfig, WatchEvent};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::convert::{
    object_arg, opt_secs_arg, opt_str_arg, py_to_json, str_arg, str_ref_arg, u64_arg,
};
use crate::errors::{IntoPy, guard, invalid};
use crate::wait::sliced;

/// The embedded store: Kubernetes-style objects over the event log.
#[pyclass(module = "floyd", name = "Store", frozen)]
pub struct PyStore {
    inner: floyd::Store,
    report: Option<floyd::store::OpenReport>,
}

pub(crate) fn obj_to_py<'py>(py: Python<'py>, o: &floyd::Object) -> PyResult<Bound<'py, PyAny>> {
    crate::topy::to_py(py, o)
}

/// A label selector argument: its string form, `{matchLabels, matchExpressions}`, or None.
pub(crate) fn selector_arg(v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<LabelSelector>> {
    let Some(s) = v.filter(|s| !s.is_none()) else {
        return Ok(None);
    };
    let py = s.py();
    if s.cast::<PyString>().is_ok() {
        Ok(Some(
            LabelSelector::parse(&str_arg(s, "label_selector")?).py_err(py)?,
        ))
    } else if s.cast::<PyDict>().is_ok() {
        let v = py_to_json(s, "label_selector")?;
        Ok(Some(
            LabelSelector::from_json(&v, "label_selector").py_err(py)?,
        ))
    } else {
        Err(invalid(
            py,
            "label_selector",
            "must be a str, a dict or None",
        ))
    }
}

fn event_to_py<'py>(py: Python<'py>, e: &WatchEvent) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    d.set_item("type", e.event_type.as_str())?;
    d.set_item("object", obj_to_py(py, &e.object)?)?;
    Ok(d.into_any())
}

/// `segment_size` in bytes (the core validates the range); the core's default if None.
fn segment_size_arg(v: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
    match v {
        Some(v) if !v.is_none() => u64_arg(v, "segment_size"),
        _ => Ok(floyd::log::DEFAULT_SEGMENT_SIZE),
    }
}

fn path_str(p: &std::path::Path) -> String {
    p.display().to_string()
}

impl PyStore {
    /// The core store this wraps (the control plane shares it).
    pub(crate) fn core(&self) -> &floyd::Store {
        &self.inner
    }

    /// Runs a write (create, update, delete). A store on disk writes with the GIL released:
    /// its append may wait for an fsync (`always`) or create a segment file. A memory store
    /// keeps the GIL: its log has no durability to wait for and no files, so a write is a
    /// microsecond of work under the store's short locks — less than releasing and
    /// re-taking the GIL costs, and a release would let any waiting thread take the GIL and
    /// hold this call up behind it.
    fn write<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&floyd::Store) -> T + Send) -> T {
        if self.inner.path().is_none() {
            f(&self.inner)
        } else {
            py.detach(|| f(&self.inner))
        }
    }
}

#[pymethods]
impl PyStore {
    /// Opens (or creates) a store in `path` with `durability` "none", "batch" or "always".
    #[staticmethod]
    #[pyo3(signature = (path = None, durability = None, segment_size = None))]
    fn open(
        py: Python<'_>,
        path: Option<&Bound<'_, PyAny>>,
        durability: Option<&Bound<'_, PyAny>>,
        segment_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyStore> {
        guard(py, || {
            let path: PathBuf = match path {
                None => PathBuf::from(floyd::store::DEFAULT_DATA_DIR),
                Some(p) if p.is_none() => PathBuf::from(floyd::store::DEFAULT_DATA_DIR),
                Some(p) => p
                    .extract::<PathBuf>()
                    .map_err(|_| invalid(py, "path", "must be a str or os.PathLike"))?,
            };
            if path.as_os_str().is_empty() {
                return Err(invalid(py, "path", "must not be empty"));
            }
            let durability = match opt_str_arg(durability, "durability")? {
                None => Durability::batch(),
                Some(s) => Durability::parse(&s).py_err(py)?,
            };
            let cfg = StoreConfig {
                durability,
                segment_size: segment_size_arg(segment_size)?,
                ..StoreConfig::default()
            };
            let (inner, report) = py.detach(|| floyd::Store::open(&path, cfg)).py_err(py)?;
            Ok(PyStore {
                inner,
                report: Some(report),
            })
        })
    }

    /// A store in memory: the same semantics, nothing persisted.
    #[staticmethod]
    #[pyo3(signature = (segment_size = None))]
    fn memory(py: Python<'_>, segment_size: Option<&Bound<'_, PyAny>>) -> PyResult<PyStore> {
        guard(py, || {
            let cfg = StoreConfig {
                segment_size: segment_size_arg(segment_size)?,
                ..StoreConfig::default()
            };
            let inner = floyd::Store::memory_with(cfg).py_err(py)?;
            Ok(PyStore {
                inner,
                report: None,
            })
        })
    }

    /// Creates `obj`; returns it with uid, resourceVersion, generation and
    /// creationTimestamp set.
    fn create<'py>(&self, py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let o = object_arg(obj)?;
            let stored = self.write(py, |s| s.create(o)).py_err(py)?;
            obj_to_py(py, &stored)
        })
    }

    /// The object of `kind` at `key` ("namespace/name"), or None.
    fn get<'py>(
        &self,
        py: Python<'py>,
        kind: &Bound<'py, PyAny>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard(py, || {
            let kind = str_ref_arg(kind, "kind")?;
            let key = str_ref_arg(key, "key")?;
            match self.inner.get(&kind, &key).py_err(py)? {
                Some(o) => Ok(Some(obj_to_py(py, &o)?)),
                None => Ok(None),
            }
        })
    }

    /// `(objects, resource_version)`: objects of `kind` sorted by key, optionally in one
    /// namespace and matching a label selector (string form or `{matchLabels,
    /// matchExpressions}`).
    #[pyo3(signature = (kind, namespace = None, label_selector = None))]
    fn list<'py>(
        &self,
        py: Python<'py>,
        kind: &Bound<'py, PyAny>,
        namespace: Option<&Bound<'py, PyAny>>,
        label_selector: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        guard(py, || {
            let kind = str_ref_arg(kind, "kind")?;
            let namespace = opt_str_arg(namespace, "namespace")?;
            let selector = selector_arg(label_selector)?;
            let (objs, rv) = self
                .inner
                .list(&kind, namespace.as_deref(), selector.as_ref())
                .py_err(py)?;
            let out = PyList::empty(py);
            for o in &objs {
                out.append(obj_to_py(py, o)?)?;
            }
            PyTuple::new(py, [out.into_any(), rv.into_pyobject(py)?.into_any()])
        })
    }

    /// Replaces metadata and spec (status is kept). Conflict if
    /// `metadata.resourceVersion` is set and stale; generation += 1 when spec changes.
    fn update<'py>(&self, py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let o = object_arg(obj)?;
            let stored = self.write(py, |s| s.update(o)).py_err(py)?;
            obj_to_py(py, &stored)
        })
    }

    /// Replaces only the status; generation unchanged.
    fn update_status<'py>(
        &self,
        py: Python<'py>,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let o = object_arg(obj)?;
            let stored = self.write(py, |s| s.update_status(o)).py_err(py)?;
            obj_to_py(py, &stored)
        })
    }

    /// Deletes the object and returns its last state. Conflict if `resource_version` (int or
    /// decimal str) is given and stale.
    #[pyo3(signature = (kind, key, resource_version = None))]
    fn delete<'py>(
        &self,
        py: Python<'py>,
        kind: &Bound<'py, PyAny>,
        key: &Bound<'py, PyAny>,
        resource_version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let kind = str_arg(kind, "kind")?.into_owned();
            let key = str_arg(key, "key")?.into_owned();
            let rv = match resource_version {
                None => None,
                Some(v) if v.is_none() => None,
                Some(v) if v.cast::<PyString>().is_ok() => Some(
                    ResourceVersion::parse_field(
                        "resource_version",
                        &str_arg(v, "resource_version")?,
                    )
                    .py_err(py)?
                    .0,
                ),
                Some(v) => Some(u64_arg(v, "resource_version")?),
            };
            let gone = self.write(py, |s| s.delete(&kind, &key, rv)).py_err(py)?;
            obj_to_py(py, &gone)
        })
    }

    /// Events of `kind` (all kinds if None) after `from_version` (0: a synthetic ADDED for
    /// every current object first), then the tail. Iteration ends after `timeout` seconds
    /// without an event (None: when the store closes).
    #[pyo3(signature = (kind = None, from_version = None, timeout = None))]
    fn watch(
        slf: &Bound<'_, Self>,
        kind: Option<&Bound<'_, PyAny>>,
        from_version: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyWatch> {
        let py = slf.py();
        guard(py, || {
            let kind = opt_str_arg(kind, "kind")?;
            let from = match from_version {
                None => 0,
                Some(v) if v.is_none() => 0,
                Some(v) => u64_arg(v, "from_version")?,
            };
            let timeout = opt_secs_arg(timeout, "timeout")?;
            let store = &slf.get().inner;
            let w = py
                .detach(|| store.watch(kind.as_deref(), from, None))
                .py_err(py)?;
            Ok(PyWatch {
                start_version: w.start_version(),
                inner: Arc::new(Mutex::new(Some(w))),
                timeout,
            })
        })
    }

    /// Writes a snapshot and compacts the log:
    /// `{resourceVersion, path, objects, bytes, compactedSegments}`.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || {
            let s = py.detach(|| self.inner.snapshot()).py_err(py)?;
            let d = PyDict::new(py);
            d.set_item("resourceVersion", s.resource_version)?;
            d.set_item("path", s.path.as_deref().map(path_str))?;
            d.set_item("objects", s.objects)?;
            d.set_item("bytes", s.bytes)?;
            d.set_item("compactedSegments", s.compacted_segments)?;
            Ok(d)
        })
    }

    /// Counters: `{resourceVersion, objects, events, segments, bytes, oldestVersion,
    /// snapshotVersion, truncatedBytes, durability}`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || {
            let s = self.inner.stats().py_err(py)?;
            let d = PyDict::new(py);
            d.set_item("resourceVersion", s.resource_version)?;
            d.set_item("objects", s.objects)?;
            d.set_item("events", s.events)?;
            d.set_item("segments", s.segments)?;
            d.set_item("bytes", s.bytes)?;
            d.set_item("oldestVersion", s.oldest_version)?;
            d.set_item("snapshotVersion", s.snapshot_version)?;
            d.set_item("truncatedBytes", s.truncated_bytes)?;
            let dur = match s.durability {
                Durability::None => "none",
                Durability::Batch { .. } => "batch",
                Durability::Always => "always",
            };
            d.set_item("durability", dur)?;
            Ok(d)
        })
    }

    /// The newest applied resource version.
    fn resource_version(&self, py: Python<'_>) -> PyResult<u64> {
        guard(py, || Ok(self.inner.resource_version()))
    }

    /// What opening found on disk (None for memory stores): `{snapshot, snapshotObjects,
    /// replayed, brokenSnapshots, log: {segments, frames, truncatedBytes, brokenFiles,
    /// cutReason}}`.
    #[getter]
    fn open_report<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        guard(py, || {
            let Some(r) = &self.report else {
                return Ok(None);
            };
            let d = PyDict::new(py);
            d.set_item("snapshot", r.snapshot.as_deref().map(path_str))?;
            d.set_item("snapshotObjects", r.snapshot_objects)?;
            d.set_item("replayed", r.replayed)?;
            let broken: Vec<String> = r.broken_snapshots.iter().map(|p| path_str(p)).collect();
            d.set_item("brokenSnapshots", broken)?;
            let l = PyDict::new(py);
            l.set_item("segments", r.log.segments)?;
            l.set_item("frames", r.log.frames)?;
            l.set_item("truncatedBytes", r.log.truncated_bytes)?;
            l.set_item("brokenFiles", r.log.broken_files.clone())?;
            l.set_item("cutReason", r.log.cut_reason.clone())?;
            d.set_item("log", l)?;
            Ok(Some(d))
        })
    }

    /// The data directory (None for memory stores).
    #[getter]
    fn path(&self, py: Python<'_>) -> PyResult<Option<String>> {
        guard(py, || Ok(self.inner.path().map(path_str)))
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        guard(py, || Ok(self.inner.is_closed()))
    }

    /// Closes the store: later calls raise ShutDown and watches end. A second close does
    /// nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || py.detach(|| self.inner.close()).py_err(py))
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.inner.path() {
            Some(p) => format!("floyd.Store({:?})", p.display().to_string()),
            None => "floyd.Store.memory()".to_string(),
        }
    }
}

/// An iterator over store events: `{"type": "ADDED"|"MODIFIED"|"DELETED", "object": dict}`.
#[pyclass(module = "floyd", name = "Watch", frozen)]
pub struct PyWatch {
    /// `None` once the watch ended or was closed. Locked only without the GIL, so a thread
    /// waiting for it never blocks one that holds it.
    inner: Arc<Mutex<Option<floyd::Watch>>>,
    timeout: Option<std::time::Duration>,
    start_version: u64,
}

enum Step {
    Event(WatchEvent),
    End,
    Failed(floyd::Error),
}

#[pymethods]
impl PyWatch {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard(py, || {
            let inner = &self.inner;
            let step = sliced(py, self.timeout, |slice| {
                let mut g = inner.lock();
                let w = match g.as_mut() {
                    Some(w) => w,
                    None => return Some(Step::End),
                };
                match w.next_timeout(Some(slice)) {
                    Ok(Some(e)) => Some(Step::Event(e)),
                    Ok(None) => None,
                    Err(e) => {
                        *g = None;
                        if e.kind() == floyd::ErrorKind::ShutDown {
                            Some(Step::End)
                        } else {
                            Some(Step::Failed(e))
                        }
                    }
                }
            })?;
            match step {
                Some(Step::Event(e)) => Ok(Some(event_to_py(py, &e)?)),
                // Timed out, or the store closed: iteration ends (and stays ended after a
                // close; a timeout can be resumed by iterating again).
                None | Some(Step::End) => Ok(None),
                Some(Step::Failed(e)) => Err(crate::errors::to_py(py, e)),
            }
        })
    }

    /// The version the watch started after: for a watch from 0, the version its synthetic
    /// ADDED events are consistent at.
    #[getter]
    fn start_version(&self) -> u64 {
        self.start_version
    }

    /// Ends the watch; further iteration stops at once.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            let w = py.detach(|| self.inner.lock().take());
            drop(w);
            Ok(())
        })
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}
