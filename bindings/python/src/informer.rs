//! `floyd.Informer`: the core informer (list + watch into an indexed cache, event handlers)
//! with Python handlers and index functions.
//!
//! Handlers run on the informer's handler threads and index functions on its reflector
//! thread; each call attaches to the interpreter only for the call ([`Python::try_attach`];
//! nothing is called once the interpreter is finalizing). Objects cross as dicts; `on_add(obj)`,
//! `on_update(old, new)`, `on_delete(obj)`, where a delete found by a relist instead of a
//! watch (client-go's `DeletedFinalStateUnknown`) carries `obj["finalStateUnknown"] = True`
//! (`reliability.md` K15). An exception from a handler or index function is logged to the
//! `floyd` logger and counted (`stats()`); the informer goes on (an index function that
//! raises indexes nothing). A `BaseException` that is not an `Exception` is also kept and
//! re-raised by the host's next `Informer` call.
//!
//! Locks: the core's cache and handler locks may be held by a core thread while it waits for
//! the GIL (an index function runs under a cache shard lock), so every call into the core
//! other than an atomic read runs with the GIL released. An index function must not call its
//! informer (it runs under the lock the call needs): that raises `Invalid`. `stop()` joins
//! the informer's threads, so it raises `Invalid` from inside any handler or index function.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::Duration;

use floyd::informer::{IndexFunc, Informer, OnAdd, OnDelete, OnUpdate};
use parking_lot::Mutex;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::convert::{opt_secs_arg, opt_str_arg, secs_arg, str_arg, type_name, u64_arg};
use crate::errors::{IntoPy, guard, invalid};
use crate::store::{PyStore, obj_to_py, selector_arg};
use crate::wait::sliced;

/// The key a tombstone delete sets on the object passed to `on_delete`.
pub const FINAL_STATE_UNKNOWN: &str = "finalStateUnknown";

thread_local! {
    /// Set while this thread runs a Python handler (1) or index function (2).
    static IN_CALLBACK: Cell<u8> = const { Cell::new(0) };
}

const IN_HANDLER: u8 = 1;
const IN_INDEX: u8 = 2;

struct Mark(u8);

impl Mark {
    fn enter(what: u8) -> Mark {
        Mark(IN_CALLBACK.with(|c| c.replace(what)))
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| c.set(self.0));
    }
}

fn in_callback() -> u8 {
    IN_CALLBACK.with(|c| c.get())
}

/// A Python callable the core holds; `None` once the garbage collector cleared a cycle
/// through it. Locked only with the GIL held (and with `try_lock` by `__traverse__`).
struct Callback {
    obj: Mutex<Option<Py<PyAny>>>,
}

/// What the binding adds to a core informer: the callables and the failure counters.
struct Callbacks {
    kind: String,
    all: Mutex<Vec<Arc<Callback>>>,
    handler_errors: AtomicU64,
    index_errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The first non-`Exception` `BaseException` a callback raised, for the host's next call.
    pending: Mutex<Option<PyErr>>,
}

impl Callbacks {
    fn register(&self, f: &Bound<'_, PyAny>) -> Arc<Callback> {
        let cb = Arc::new(Callback {
            obj: Mutex::new(Some(f.clone().unbind())),
        });
        self.all.lock().push(cb.clone());
        cb
    }

    /// Calls `cb` through `call` attached to the interpreter; a Python error is counted and
    /// logged and gives `None`.
    fn invoke<R>(
        &self,
        cb: &Callback,
        what: &'static str,
        mark: u8,
        call: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> PyResult<R>,
    ) -> Option<R> {
        Python::try_attach(|py| {
            let _mark = Mark::enter(mark);
            let f = cb.obj.lock().as_ref().map(|o| o.clone_ref(py))?;
            match call(py, f.bind(py)) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.failed(py, what, mark, e);
                    None
                }
            }
        })
        .flatten()
    }

    fn failed(&self, py: Python<'_>, what: &str, mark: u8, e: PyErr) {
        let counter = if mark == IN_INDEX {
            &self.index_errors
        } else {
            &self.handler_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let ty = e
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".to_string());
        let msg = e
            .value(py)
            .str()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "<unprintable>".to_string());
        *self.last_error.lock() = Some(if msg.is_empty() {
            format!("{what} raised {ty}")
        } else {
            format!("{what} raised {ty}: {msg}")
        });
        if !e.is_instance_of::<PyException>(py) {
            let mut p = self.pending.lock();
            if p.is_none() {
                *p = Some(e);
            }
            return;
        }
        // Logged with its traceback; a failure to log is not the host's problem.
        let value = e.into_value(py);
        let _ = py
            .import("logging")
            .and_then(|m| m.call_method1("getLogger", ("floyd",)))
            .and_then(|l| {
                let kw = PyDict::new(py);
                kw.set_item("exc_info", value.bind(py))?;
                l.call_method(
                    "error",
                    ("%s informer: %s raised", self.kind.as_str(), what),
                    Some(&kw),
                )
            });
    }
}

struct Inner {
    inf: Informer,
    cbs: Arc<Callbacks>,
}

/// Live informers, stopped by `_shutdown_informers` at interpreter exit.
static LIVE: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// A list + watch cache of one kind, with event handlers and indices.
#[pyclass(module = "floyd", name = "Informer", frozen)]
pub struct PyInformer {
    inner: Arc<Inner>,
}

/// A handler argument: None or a callable.
fn callable_arg<'a, 'py>(
    v: Option<&'a Bound<'py, PyAny>>,
    field: &str,
) -> PyResult<Option<&'a Bound<'py, PyAny>>> {
    match v {
        Some(f) if !f.is_none() => {
            if f.is_callable() {
                Ok(Some(f))
            } else {
                Err(invalid(
                    f.py(),
                    field,
                    format!("must be callable or None, got {}", type_name(f)),
                ))
            }
        }
        _ => Ok(None),
    }
}

/// An index function's result: a list or tuple of str (None: nothing).
fn index_values(v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let py = v.py();
    if v.is_none() {
        return Ok(vec![]);
    }
    let items: Vec<Bound<'_, PyAny>> = if let Ok(l) = v.cast::<PyList>() {
        l.iter().collect()
    } else if let Ok(t) = v.cast::<PyTuple>() {
        t.iter().collect()
    } else {
        return Err(invalid(
            py,
            "index",
            format!(
                "an index function must return a list of str, got {}",
                type_name(v)
            ),
        ));
    };
    items
        .iter()
        .map(|x| {
            if x.cast::<PyString>().is_err() {
                return Err(invalid(
                    py,
                    "index",
                    format!(
                        "an index function must return a list of str, got an element of type {}",
                        type_name(x)
                    ),
                ));
            }
            Ok(str_arg(x, "index")?.into_owned())
        })
        .collect()
}

fn objs_to_py<'py>(py: Python<'py>, objs: &[Arc<floyd::Object>]) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for o in objs {
        out.append(obj_to_py(py, o)?)?;
    }
    Ok(out)
}

impl PyInformer {
    /// Raises the `BaseException` a callback kept, once.
    fn reraise(&self) -> PyResult<()> {
        match self.inner.cbs.pending.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// [`Self::reraise`], and `Invalid` inside an index function (the call would wait for
    /// the lock the index function runs under).
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        self.reraise()?;
        if in_callback() == IN_INDEX {
            return Err(invalid(
                py,
                "index",
                "an index function must not call an informer (it runs under the cache lock)",
            ));
        }
        Ok(())
    }

    /// Runs `f` on the core informer without the GIL.
    fn core<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&Informer) -> T + Send) -> T {
        let inf = &self.inner.inf;
        py.detach(|| f(inf))
    }
}

#[pymethods]
impl PyInformer {
    /// An informer over `kind` in `store`, optionally limited to one `namespace` and a
    /// `label_selector` (string form or `{matchLabels, matchExpressions}`); `resync` is the
    /// default handler resync period in seconds (0: none).
    #[new]
    #[pyo3(signature = (store, kind, resync = None, namespace = None, label_selector = None))]
    fn new(
        py: Python<'_>,
        store: &Bound<'_, PyAny>,
        kind: &Bound<'_, PyAny>,
        resync: Option<&Bound<'_, PyAny>>,
        namespace: Option<&Bound<'_, PyAny>>,
        label_selector: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyInformer> {
        guard(py, || {
            let store = store.cast::<PyStore>().map_err(|_| {
                invalid(
                    py,
                    "store",
                    format!("must be a floyd.Store, got {}", type_name(store)),
                )
            })?;
            let kind = str_arg(kind, "kind")?.into_owned();
            let resync = match resync {
                Some(r) if !r.is_none() => secs_arg(r, "resync")?,
                _ => Duration::ZERO,
            };
            let namespace = opt_str_arg(namespace, "namespace")?;
            let selector = selector_arg(label_selector)?;
            let core_store = store.get().core().clone();
            let inf = Informer::new(&core_store, &kind, resync, namespace.as_deref(), selector)
                .py_err(py)?;
            let inner = Arc::new(Inner {
                inf,
                cbs: Arc::new(Callbacks {
                    kind,
                    all: Mutex::new(vec![]),
                    handler_errors: AtomicU64::new(0),
                    index_errors: AtomicU64::new(0),
                    last_error: Mutex::new(None),
                    pending: Mutex::new(None),
                }),
            });
            let mut live = LIVE.lock();
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&inner));
            Ok(PyInformer { inner })
        })
    }

    /// Registers handlers: `on_add(obj)`, `on_update(old, new)` (a resync calls
    /// `on_update(obj, obj)`), `on_delete(obj)` (with `obj["finalStateUnknown"] = True`
    /// when the delete was found by a relist). Each is None or a callable; `resync` in
    /// seconds (None: the informer's). A handler added after start first gets an `on_add`
    /// for every cached object. ShutDown after stop.
    #[pyo3(signature = (on_add = None, on_update = None, on_delete = None, resync = None))]
    fn add_event_handler(
        &self,
        py: Python<'_>,
        on_add: Option<&Bound<'_, PyAny>>,
        on_update: Option<&Bound<'_, PyAny>>,
        on_delete: Option<&Bound<'_, PyAny>>,
        resync: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        guard(py, || {
            self.check(py)?;
            let on_add = callable_arg(on_add, "on_add")?;
            let on_update = callable_arg(on_update, "on_update")?;
            let on_delete = callable_arg(on_delete, "on_delete")?;
            let resync = opt_secs_arg(resync, "resync")?;
            let cbs = &self.inner.cbs;
            let add: Option<OnAdd> = on_add.map(|f| {
                let (cbs, cb) = (cbs.clone(), cbs.register(f));
                Arc::new(move |o: &Arc<floyd::Object>, _initial: bool| {
                    cbs.invoke(&cb, "on_add", IN_HANDLER, |py, f| {
                        f.call1((obj_to_py(py, o)?,)).map(drop)
                    });
                }) as OnAdd
            });
            let update: Option<OnUpdate> = on_update.map(|f| {
                let (cbs, cb) = (cbs.clone(), cbs.register(f));
                Arc::new(move |old: &Arc<floyd::Object>, new: &Arc<floyd::Object>| {
                    cbs.invoke(&cb, "on_update", IN_HANDLER, |py, f| {
                        f.call1((obj_to_py(py, old)?, obj_to_py(py, new)?))
                            .map(drop)
                    });
                }) as OnUpdate
            });
            let delete: Option<OnDelete> = on_delete.map(|f| {
                let (cbs, cb) = (cbs.clone(), cbs.register(f));
                Arc::new(move |o: &Arc<floyd::Object>, unknown: bool| {
                    cbs.invoke(&cb, "on_delete", IN_HANDLER, |py, f| {
                        let d = obj_to_py(py, o)?;
                        if unknown {
                            d.set_item(FINAL_STATE_UNKNOWN, true)?;
                        }
                        f.call1((d,)).map(drop)
                    });
                }) as OnDelete
            });
            self.core(py, |i| i.add_event_handler(add, update, delete, resync))
                .py_err(py)?;
            Ok(())
        })
    }

    /// Adds index `name`: `"namespace"`, `"label:<key>"`, `"owner"` (the controller owner's
    /// uid), `"field:<dotted.path>"`, or a callable taking the object dict and returning a
    /// list of str (an exception, or any other return value, is counted and indexes
    /// nothing). Before or after start.
    fn add_index(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        index: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            self.check(py)?;
            let name = str_arg(name, "name")?.into_owned();
            let func = if index.cast::<PyString>().is_ok() {
                IndexFunc::parse(&str_arg(index, "index")?).py_err(py)?
            } else if index.is_callable() {
                let cbs = self.inner.cbs.clone();
                let cb = cbs.register(index);
                IndexFunc::custom(move |o: &floyd::Object| {
                    cbs.invoke(&cb, "index function", IN_INDEX, |py, f| {
                        index_values(&f.call1((obj_to_py(py, o)?,))?)
                    })
                    .unwrap_or_default()
                })
            } else {
                return Err(invalid(
                    py,
                    "index",
                    format!(
                        "must be \"namespace\", \"label:<key>\", \"owner\", \
                         \"field:<dotted.path>\" or a callable, got {}",
                        type_name(index)
                    ),
                ));
            };
            self.core(py, |i| i.add_index(&name, func)).py_err(py)
        })
    }

    /// Starts listing and watching. A second call does nothing; ShutDown after stop.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            self.check(py)?;
            self.core(py, |i| i.start()).py_err(py)
        })
    }

    /// Stops the informer and joins its threads (a handler call in progress finishes).
    /// Idempotent; every later call except `has_synced`, `last_synced_version` and `stats`
    /// raises ShutDown. Raises Invalid from inside a handler or index function.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            if in_callback() != 0 {
                return Err(invalid(
                    py,
                    "stop",
                    "cannot be called from inside an informer handler or index function \
                     (stop waits for them to finish)",
                ));
            }
            if self.inner.inf.is_stopped() {
                return self.reraise();
            }
            let inf = self.inner.inf.clone();
            let (tx, rx) = mpsc::channel::<()>();
            std::thread::Builder::new()
                .name("floyd-py-informer-stop".into())
                .spawn(move || {
                    inf.stop();
                    let _ = tx.send(());
                })
                .map_err(|e| {
                    crate::errors::to_py(py, floyd::Error::io("start the stop thread", e))
                })?;
            // Interruptible: on Ctrl-C the stop carries on in the background.
            sliced(py, None, move |slice| match rx.recv_timeout(slice) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => Some(()),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
            })?;
            self.reraise()
        })
    }

    /// True once the first list is in the cache.
    fn has_synced(&self) -> bool {
        self.inner.inf.has_synced()
    }

    /// Waits until synced (True) or `timeout` seconds pass (False; None: no limit), without
    /// the GIL. ShutDown if the informer stops or the store closes first.
    #[pyo3(signature = (timeout = None))]
    fn wait_for_sync(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        guard(py, || {
            self.check(py)?;
            let timeout = opt_secs_arg(timeout, "timeout")?;
            let inf = &self.inner.inf;
            let r = sliced(py, timeout, |slice| match inf.wait_for_sync(Some(slice)) {
                Ok(false) => None,
                r => Some(r),
            })?;
            r.unwrap_or(Ok(false)).py_err(py)
        })
    }

    /// Waits until the cache reflects every store write up to version `rv` (the
    /// resourceVersion a write returned): read-your-own-writes. False on timeout.
    #[pyo3(signature = (rv, timeout = None))]
    fn wait_for_version(
        &self,
        py: Python<'_>,
        rv: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        guard(py, || {
            self.check(py)?;
            let rv = if rv.cast::<PyString>().is_ok() {
                floyd::ResourceVersion::parse_field("rv", &str_arg(rv, "rv")?)
                    .py_err(py)?
                    .0
            } else {
                u64_arg(rv, "rv")?
            };
            let timeout = opt_secs_arg(timeout, "timeout")?;
            let inf = &self.inner.inf;
            let r = sliced(py, timeout, |slice| {
                match inf.wait_for_version(rv, Some(slice)) {
                    Ok(false) => None,
                    r => Some(r),
                }
            })?;
            r.unwrap_or(Ok(false)).py_err(py)
        })
    }

    /// Every store write with version <= this is reflected in the cache.
    fn last_synced_version(&self) -> u64 {
        self.inner.inf.last_synced_version()
    }

    /// The cached object at `key` ("namespace/name"), or None.
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard(py, || {
            self.check(py)?;
            let key = str_arg(key, "key")?.into_owned();
            match self.core(py, |i| i.get(&key)).py_err(py)? {
                Some(o) => Ok(Some(obj_to_py(py, &o)?)),
                None => Ok(None),
            }
        })
    }

    /// Cached objects matching `label_selector` (all with None), sorted by key.
    #[pyo3(signature = (label_selector = None))]
    fn list<'py>(
        &self,
        py: Python<'py>,
        label_selector: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        guard(py, || {
            self.check(py)?;
            let sel = selector_arg(label_selector)?;
            let mut objs = self.core(py, |i| i.list(sel.as_ref())).py_err(py)?;
            objs.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            objs_to_py(py, &objs)
        })
    }

    /// Cached objects that index `name` maps `value` to, sorted by key.
    fn by_index<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        guard(py, || {
            self.check(py)?;
            let name = str_arg(name, "name")?.into_owned();
            let value = str_arg(value, "value")?.into_owned();
            let mut objs = self.core(py, |i| i.by_index(&name, &value)).py_err(py)?;
            objs.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            objs_to_py(py, &objs)
        })
    }

    /// Keys that index `name` maps `value` to, sorted.
    fn index_keys(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<String>> {
        guard(py, || {
            self.check(py)?;
            let name = str_arg(name, "name")?.into_owned();
            let value = str_arg(value, "value")?.into_owned();
            self.core(py, |i| i.index_keys(&name, &value)).py_err(py)
        })
    }

    /// The values index `name` has objects under.
    fn list_index_values(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        guard(py, || {
            self.check(py)?;
            let name = str_arg(name, "name")?.into_owned();
            self.core(py, |i| i.list_index_values(&name)).py_err(py)
        })
    }

    /// Counters: the core's (lists, relists after Expired, errors, events, cached objects,
    /// handlers, ...) and the Python callbacks' failures.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || {
            if in_callback() == IN_INDEX {
                self.check(py)?;
            }
            let s = self.core(py, |i| i.stats());
            let cbs = &self.inner.cbs;
            let d = PyDict::new(py);
            d.set_item("lists", s.lists)?;
            d.set_item("expired", s.expired)?;
            d.set_item("errors", s.errors)?;
            d.set_item("lastError", s.last_error)?;
            d.set_item("events", s.events)?;
            d.set_item("lastSyncedVersion", s.last_synced_version)?;
            d.set_item("cached", s.cached)?;
            d.set_item("notifications", s.notifications)?;
            d.set_item("handlers", s.handlers)?;
            d.set_item("handlerErrors", cbs.handler_errors.load(Ordering::Relaxed))?;
            d.set_item("indexErrors", cbs.index_errors.load(Ordering::Relaxed))?;
            d.set_item("lastCallbackError", cbs.last_error.lock().clone())?;
            Ok(d)
        })
    }

    /// The kind this informer caches.
    #[getter]
    fn kind(&self) -> String {
        self.inner.inf.kind().to_string()
    }

    /// Whether `stop()` was called.
    #[getter]
    fn stopped(&self) -> bool {
        self.inner.inf.is_stopped()
    }

    /// Starts the informer.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().start(slf.py())?;
        Ok(slf)
    }

    /// Stops the informer.
    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let st = if self.inner.inf.is_stopped() {
            "stopped"
        } else if self.inner.inf.has_synced() {
            "synced"
        } else {
            "not synced"
        };
        format!("<floyd.Informer {} {st}>", self.inner.inf.kind())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(all) = self.inner.cbs.all.try_lock() {
            for cb in all.iter() {
                if let Some(g) = cb.obj.try_lock() {
                    visit.call(g.as_ref())?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // Breaks a cycle through a handler (a closure holding its informer); later calls of
        // the cleared callables do nothing. The informer is stopped when deallocated.
        let taken: Vec<Py<PyAny>> = self
            .inner
            .cbs
            .all
            .lock()
            .iter()
            .filter_map(|cb| cb.obj.lock().take())
            .collect();
        drop(taken);
    }
}

impl Drop for PyInformer {
    fn drop(&mut self) {
        if self.inner.inf.is_stopped() {
            return;
        }
        if in_callback() != 0 {
            // Dropped inside a callback: stopping here would wait for this very call.
            self.inner.inf.stop_in_background();
            return;
        }
        // The GIL is held during deallocation; handler calls need it to finish.
        let inf = self.inner.inf.clone();
        match Python::try_attach(|py| py.detach(|| inf.stop())) {
            Some(()) => {}
            None => self.inner.inf.stop(),
        }
    }
}

trait StopInBackground {
    fn stop_in_background(&self);
}

impl StopInBackground for Informer {
    fn stop_in_background(&self) {
        let inf = self.clone();
        let _ = std::thread::Builder::new()
            .name("floyd-py-informer-stop".into())
            .spawn(move || inf.stop());
    }
}

/// Stops every live informer (registered with `atexit` by `floyd/__init__.py`, so no handler
/// thread asks for the GIL while the interpreter finalizes).
#[pyfunction]
pub fn _shutdown_informers(py: Python<'_>) -> PyResult<()> {
    guard(py, || {
        let live: Vec<Arc<Inner>> = LIVE.lock().drain(..).filter_map(|w| w.upgrade()).collect();
        py.detach(|| {
            for i in &live {
                i.inf.stop();
            }
        });
        Ok(())
    })
}
