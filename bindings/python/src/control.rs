//! `floyd.ControlPlane` and the host driver written in Python. The control plane's calls
//! (start/stop, scale, the Deployment calls `wait_for_rollout`, `rollback`, `pause`,
//! `resume`, `promote`, the endpoints' `endpoints`/`pick`, and `report_exit`) translate one
//! to one;
//! `wait_for_rollout` waits in slices so Ctrl-C and driver `BaseException`s get through.
//!
//! The driver is any Python object with `start(instance)` and `stop(instance)`. The core
//! calls it from its driver pool threads; each call attaches to the interpreter only for the
//! call itself ([`Python::try_attach`]) and every wait of the control plane (`start`, `stop`,
//! `scale`) runs with the GIL released, so a driver that calls back into floyd (for example
//! `store.update` from inside `start`) never deadlocks.
//!
//! What a call's outcome means:
//! - `start` returns None or `{"address": "host:port"}` (address None or a non-empty str
//!   without whitespace); `stop` returns None. Any other return value is a failed call.
//! - An exception is a failed call (the instance's status records `"<method> raised
//!   <Type>: <message>"`). A `BaseException` that is not an `Exception` (`KeyboardInterrupt`,
//!   `SystemExit`) is a failed call too, and is also kept and re-raised by the host's next
//!   `ControlPlane` call (`stop()` re-raises it after stopping), so it reaches the host's
//!   thread instead of vanishing on a pool thread or killing the process.
//! - A method that returns a coroutine (`async def`) runs on the asyncio loop passed as
//!   `ControlPlane(..., loop=loop)` through `asyncio.run_coroutine_threadsafe`; the pool
//!   thread waits for it in slices and gives up (cancelling it) once the control plane
//!   stops. Without `loop` a coroutine is closed and the call fails.
//! - Starts that reach the driver after `stop()` began fail at once without calling Python.
//! - A call that takes longer than `driver_timeout` seconds (default 60) is failed by the
//!   core, which also replaces the pool thread stuck in it; the Python call runs on, and its
//!   result is ignored. `stop()` does not wait for such a call.
//!
//! `stop()` joins the control plane's threads (in-flight driver calls finish). It may not be
//! called from inside a driver call (it would wait for itself): that raises `Invalid`. A
//! control plane that is garbage-collected is stopped; `floyd` stops the remaining ones at
//! interpreter exit (an `atexit` hook), before the interpreter stops accepting threads.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::Duration;

use floyd::runtime::{ControlPlane, ControlPlaneConfig, Driver, DriverError, Started};
use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::convert::{
    json_to_py, opt_secs_arg, opt_str_arg, secs_arg, str_arg, type_name, u64_arg,
};
use crate::errors::{IntoPy, guard, invalid};
use crate::store::PyStore;
use crate::wait::{SLICE, sliced};

/// The most driver pool threads a control plane may have.
pub const MAX_DRIVER_THREADS: u64 = 1024;
/// How the core marks a rollout past its progress deadline (an `Expired` error's message).
const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// The longest address a driver may report.
const MAX_ADDRESS_BYTES: usize = 1024;

thread_local! {
    /// Set while this thread runs a Python driver call.
    static IN_DRIVER_CALL: Cell<bool> = const { Cell::new(false) };
}

struct InDriverCall(bool);

impl InDriverCall {
    fn enter() -> InDriverCall {
        InDriverCall(IN_DRIVER_CALL.with(|c| c.replace(true)))
    }
}

impl Drop for InDriverCall {
    fn drop(&mut self) {
        IN_DRIVER_CALL.with(|c| c.set(self.0));
    }
}

fn in_driver_call() -> bool {
    IN_DRIVER_CALL.with(|c| c.get())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_string())
}

/// The host's Python driver as a core [`Driver`].
struct PyDriver {
    /// The host's object; `None` once the garbage collector cleared a reference cycle
    /// through it. Locked only with the GIL held (and with `try_lock` by `__traverse__`).
    obj: Mutex<Option<Py<PyAny>>>,
    /// The asyncio loop coroutine methods run on.
    event_loop: Mutex<Option<Py<PyAny>>>,
    stopping: AtomicBool,
    /// The first non-`Exception` `BaseException` a call raised, for the host's next call.
    pending: Mutex<Option<PyErr>>,
    /// The driver has its own `probe` (otherwise the built-in handlers run probes).
    has_probe: bool,
}

impl PyDriver {
    fn invoke<T>(
        &self,
        method: &'static str,
        inst: &floyd::Object,
        extra: Option<&serde_json::Value>,
        parse: impl FnOnce(&Bound<'_, PyAny>) -> Result<T, String>,
    ) -> Result<T, DriverError> {
        if method == "start" && self.stopping.load(Ordering::Acquire) {
            return Err(DriverError("the control plane is stopping".into()));
        }
        let body = AssertUnwindSafe(|| {
            Python::try_attach(|py| {
                let _mark = InDriverCall::enter();
                self.invoke_attached(py, method, inst, extra, parse)
            })
            .unwrap_or_else(|| {
                Err(DriverError(
                    "the Python interpreter is shutting down".into(),
                ))
            })
        });
        match catch_unwind(body) {
            Ok(r) => r,
            Err(p) => Err(DriverError(format!(
                "internal: Rust panic calling the Python driver's {method}: {}",
                panic_message(&*p)
            ))),
        }
    }

    fn invoke_attached<T>(
        &self,
        py: Python<'_>,
        method: &'static str,
        inst: &floyd::Object,
        extra: Option<&serde_json::Value>,
        parse: impl FnOnce(&Bound<'_, PyAny>) -> Result<T, String>,
    ) -> Result<T, DriverError> {
        let Some(driver) = self.obj.lock().as_ref().map(|d| d.clone_ref(py)) else {
            return Err(DriverError("the driver was released".into()));
        };
        let arg = json_to_py(py, &inst.to_json()).map_err(|e| self.failure(py, method, e))?;
        let called = match extra {
            None => driver.bind(py).call_method1(method, (arg,)),
            Some(x) => {
                let x = json_to_py(py, x).map_err(|e| self.failure(py, method, e))?;
                driver.bind(py).call_method1(method, (arg, x))
            }
        };
        let mut ret = called.map_err(|e| self.failure(py, method, e))?;
        if !ret.is_none()
            && ret.cast::<PyDict>().is_err()
            && ret.hasattr("__await__").unwrap_or(false)
        {
            ret = self.await_on_loop(py, method, ret)?;
        }
        parse(&ret).map_err(|m| DriverError(format!("{method} returned {m}")))
    }

    /// Runs the coroutine `coro` on the host's loop and waits for it (the GIL is released
    /// while `Future.result` waits).
    fn await_on_loop<'py>(
        &self,
        py: Python<'py>,
        method: &'static str,
        coro: Bound<'py, PyAny>,
    ) -> Result<Bound<'py, PyAny>, DriverError> {
        let close = |c: &Bound<'py, PyAny>| {
            if c.hasattr("close").unwrap_or(false) {
                let _ = c.call_method0("close");
            }
        };
        let Some(lp) = self.event_loop.lock().as_ref().map(|l| l.clone_ref(py)) else {
            close(&coro);
            return Err(DriverError(format!(
                "{method} returned an awaitable, but the ControlPlane has no event loop \
                 (pass loop=asyncio.get_running_loop() to run async drivers)"
            )));
        };
        let fail = |e: PyErr| self.failure(py, method, e);
        let fut = py
            .import("asyncio")
            .and_then(|m| m.call_method1("run_coroutine_threadsafe", (&coro, lp)))
            .map_err(|e| {
                close(&coro);
                fail(e)
            })?;
        let timeout_err = py
            .import("concurrent.futures")
            .and_then(|m| m.getattr("TimeoutError"))
            .map_err(fail)?;
        loop {
            match fut.call_method1("result", (SLICE.as_secs_f64(),)) {
                Ok(v) => return Ok(v),
                Err(e) if e.is_instance(py, &timeout_err) => {
                    if self.stopping.load(Ordering::Acquire) {
                        let _ = fut.call_method0("cancel");
                        return Err(DriverError(format!(
                            "{method} was cancelled: the control plane is stopping"
                        )));
                    }
                }
                Err(e) => return Err(fail(e)),
            }
        }
    }

    /// A failed call's message; keeps a `BaseException` that is not an `Exception` for the
    /// host (a cancelled coroutine is only a failure).
    fn failure(&self, py: Python<'_>, method: &str, e: PyErr) -> DriverError {
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
        let cancelled = py
            .import("asyncio")
            .and_then(|m| m.getattr("CancelledError"))
            .is_ok_and(|c| e.is_instance(py, &c));
        if !e.is_instance_of::<PyException>(py) && !cancelled {
            let mut p = self.pending.lock();
            if p.is_none() {
                *p = Some(e);
            }
        }
        if msg.is_empty() {
            DriverError(format!("{method} raised {ty}"))
        } else {
            DriverError(format!("{method} raised {ty}: {msg}"))
        }
    }
}

fn parse_started(v: &Bound<'_, PyAny>) -> Result<Started, String> {
    const WANT: &str = "(expected None or a dict like {'address': 'host:port'})";
    if v.is_none() {
        return Ok(Started::default());
    }
    let Ok(d) = v.cast::<PyDict>() else {
        return Err(format!("a {} {WANT}", type_name(v)));
    };
    let mut address = None;
    for (k, val) in d.iter() {
        let key = k
            .cast::<PyString>()
            .ok()
            .and_then(|s| s.to_cow().ok().map(|c| c.into_owned()));
        if key.as_deref() != Some("address") {
            return Err(format!(
                "a dict with the key {} {WANT}",
                k.repr().map(|r| r.to_string()).unwrap_or_default()
            ));
        }
        if val.is_none() {
            continue;
        }
        let Some(s) = val
            .cast::<PyString>()
            .ok()
            .and_then(|s| s.to_cow().ok().map(|c| c.into_owned()))
        else {
            return Err(format!(
                "an address of type {} (expected a str or None)",
                type_name(&val)
            ));
        };
        if s.is_empty()
            || s.len() > MAX_ADDRESS_BYTES
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "the address {s:?} (expected a non-empty str without whitespace, at most \
                 {MAX_ADDRESS_BYTES} bytes)"
            ));
        }
        address = Some(s);
    }
    Ok(Started { address })
}

fn parse_stopped(v: &Bound<'_, PyAny>) -> Result<(), String> {
    if v.is_none() {
        Ok(())
    } else {
        Err(format!("a {} (expected None)", type_name(v)))
    }
}

fn parse_probed(v: &Bound<'_, PyAny>) -> Result<bool, String> {
    match v.cast::<pyo3::types::PyBool>() {
        Ok(b) => Ok(b.is_true()),
        Err(_) => Err(format!("a {} (expected True or False)", type_name(v))),
    }
}

impl Driver for PyDriver {
    fn start(&self, instance: &floyd::Object) -> Result<Started, DriverError> {
        self.invoke("start", instance, None, parse_started)
    }

    fn stop(&self, instance: &floyd::Object) -> Result<(), DriverError> {
        self.invoke("stop", instance, None, parse_stopped)
    }

    fn probe(
        &self,
        instance: &floyd::Object,
        probe: &floyd::Probe,
    ) -> Result<floyd::ProbeOutcome, DriverError> {
        if !self.has_probe {
            return floyd::runtime::probe::run_builtin(instance, probe);
        }
        let healthy = self.invoke("probe", instance, Some(&probe.spec), parse_probed)?;
        Ok(if healthy {
            floyd::ProbeOutcome::Success
        } else {
            floyd::ProbeOutcome::Failure("driver.probe returned False".into())
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StopState {
    Running,
    Stopping,
    Stopped,
}

struct Inner {
    cp: ControlPlane,
    driver: Arc<PyDriver>,
    state: Mutex<StopState>,
    stopped: Condvar,
}

impl Inner {
    /// Stops the control plane and returns once it is stopped (a concurrent caller waits for
    /// the first). Blocks: call without the GIL.
    fn stop_blocking(&self) {
        self.driver.stopping.store(true, Ordering::Release);
        {
            let mut st = self.state.lock();
            match *st {
                StopState::Stopped => return,
                StopState::Stopping => {
                    while *st != StopState::Stopped {
                        self.stopped.wait(&mut st);
                    }
                    return;
                }
                StopState::Running => *st = StopState::Stopping,
            }
        }
        let _ = self.cp.stop();
        *self.state.lock() = StopState::Stopped;
        self.stopped.notify_all();
    }
}

/// Live control planes, stopped by `_shutdown_control_planes` at interpreter exit.
static LIVE: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// The controllers wired to the store and a driver written in Python.
#[pyclass(module = "floyd", name = "ControlPlane", frozen)]
pub struct PyControlPlane {
    inner: Arc<Inner>,
}

fn count_arg(v: Option<&Bound<'_, PyAny>>, field: &str, default: usize) -> PyResult<usize> {
    match v {
        Some(v) if !v.is_none() => {
            let n = u64_arg(v, field)?;
            usize::try_from(n).map_err(|_| invalid(v.py(), field, "is out of range"))
        }
        _ => Ok(default),
    }
}

fn has_method(obj: &Bound<'_, PyAny>, name: &str) -> bool {
    obj.getattr(name).is_ok_and(|m| m.is_callable())
}

impl PyControlPlane {
    /// A call taking a Deployment key and returning the updated Deployment.
    fn deployment_call<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        f: impl FnOnce(&ControlPlane, &str) -> floyd::Result<Arc<floyd::Object>> + Send,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            self.reraise()?;
            let key = str_arg(key, "key")?.into_owned();
            let cp = &self.inner.cp;
            let obj = py.detach(|| f(cp, &key)).py_err(py)?;
            json_to_py(py, &obj.to_json())
        })
    }

    /// Raises the `BaseException` a driver call kept, once.
    fn reraise(&self) -> PyResult<()> {
        match self.inner.driver.pending.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl PyControlPlane {
    /// A control plane over `store` that runs instances through `driver` (an object with
    /// `start(instance)` and `stop(instance)`). `workers` controller threads,
    /// `burst_replicas` creations/deletions per sync, `driver_threads` concurrent driver
    /// calls, controller retry backoff from `retry_base` to `retry_max` seconds, crash-loop
    /// backoff after a failed start from `restart_backoff` doubling to
    /// `restart_backoff_max` seconds (10 s and 300 s by default), `driver_timeout` seconds
    /// one driver call may take before it counts as failed (60 by default); `loop` is
    /// the asyncio loop that `async def` driver methods run on. `clock` must be None (the
    /// system clock).
    #[new]
    #[pyo3(signature = (store, driver, workers = None, burst_replicas = None, clock = None, *,
                        driver_threads = None, retry_base = None, retry_max = None,
                        restart_backoff = None, restart_backoff_max = None,
                        driver_timeout = None, r#loop = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: &Bound<'_, PyAny>,
        driver: &Bound<'_, PyAny>,
        workers: Option<&Bound<'_, PyAny>>,
        burst_replicas: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
        driver_threads: Option<&Bound<'_, PyAny>>,
        retry_base: Option<&Bound<'_, PyAny>>,
        retry_max: Option<&Bound<'_, PyAny>>,
        restart_backoff: Option<&Bound<'_, PyAny>>,
        restart_backoff_max: Option<&Bound<'_, PyAny>>,
        driver_timeout: Option<&Bound<'_, PyAny>>,
        r#loop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyControlPlane> {
        guard(py, || {
            let store = store.cast::<PyStore>().map_err(|_| {
                invalid(
                    py,
                    "store",
                    format!("must be a floyd.Store, got {}", type_name(store)),
                )
            })?;
            if !has_method(driver, "start") || !has_method(driver, "stop") {
                return Err(invalid(
                    py,
                    "driver",
                    format!(
                        "must have callable start(instance) and stop(instance) methods, got {}",
                        type_name(driver)
                    ),
                ));
            }
            // `probe` is optional; an attribute that is there but not callable is a mistake.
            let has_probe = match driver.getattr("probe") {
                Err(_) => false,
                Ok(p) if p.is_none() => false,
                Ok(p) if p.is_callable() => true,
                Ok(p) => {
                    return Err(invalid(
                        py,
                        "driver.probe",
                        format!(
                            "must be a callable probe(instance, probe) or absent, got {}",
                            type_name(&p)
                        ),
                    ));
                }
            };
            if clock.is_some_and(|c| !c.is_none()) {
                return Err(invalid(
                    py,
                    "clock",
                    "must be None: the Python binding runs on the system clock",
                ));
            }
            let event_loop = match r#loop {
                Some(l) if !l.is_none() => {
                    let base = py.import("asyncio")?.getattr("AbstractEventLoop")?;
                    if !l.is_instance(&base)? {
                        return Err(invalid(
                            py,
                            "loop",
                            format!(
                                "must be an asyncio event loop or None, got {}",
                                type_name(l)
                            ),
                        ));
                    }
                    Some(l.clone().unbind())
                }
                _ => None,
            };
            let d = ControlPlaneConfig::default();
            let threads = count_arg(driver_threads, "driver_threads", d.driver_threads)?;
            if threads == 0 || threads as u64 > MAX_DRIVER_THREADS {
                return Err(invalid(
                    py,
                    "driver_threads",
                    format!("must be 1..={MAX_DRIVER_THREADS}, got {threads}"),
                ));
            }
            let secs = |v: Option<&Bound<'_, PyAny>>, f: &str, dflt: Duration| match v {
                Some(v) if !v.is_none() => secs_arg(v, f),
                _ => Ok(dflt),
            };
            let cfg = ControlPlaneConfig {
                workers: count_arg(workers, "workers", d.workers)?,
                burst_replicas: count_arg(burst_replicas, "burst_replicas", d.burst_replicas)?,
                driver_threads: threads,
                retry_base: secs(retry_base, "retry_base", d.retry_base)?,
                retry_max: secs(retry_max, "retry_max", d.retry_max)?,
                restart_backoff: secs(restart_backoff, "restart_backoff", d.restart_backoff)?,
                restart_backoff_max: secs(
                    restart_backoff_max,
                    "restart_backoff_max",
                    d.restart_backoff_max,
                )?,
                driver_timeout: secs(driver_timeout, "driver_timeout", d.driver_timeout)?,
                clock: d.clock,
            };
            let pydriver = Arc::new(PyDriver {
                obj: Mutex::new(Some(driver.clone().unbind())),
                event_loop: Mutex::new(event_loop),
                stopping: AtomicBool::new(false),
                pending: Mutex::new(None),
                has_probe,
            });
            let core_store = store.get().core().clone();
            let dyn_driver: Arc<dyn Driver> = pydriver.clone();
            let cp = py
                .detach(|| ControlPlane::new(core_store, dyn_driver, cfg))
                .py_err(py)?;
            let inner = Arc::new(Inner {
                cp,
                driver: pydriver,
                state: Mutex::new(StopState::Running),
                stopped: Condvar::new(),
            });
            let mut live = LIVE.lock();
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&inner));
            Ok(PyControlPlane { inner })
        })
    }

    /// Starts the controllers, the endpoints controller and the node agent. A second call
    /// does nothing; after `stop()` it raises ShutDown.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            self.reraise()?;
            let inner = &self.inner;
            py.detach(|| inner.cp.start()).py_err(py)
        })
    }

    /// Stops every thread of the control plane; in-flight driver calls finish, later starts
    /// are not attempted. Instances stay as they are (a new control plane over the same
    /// store adopts the running ones). Idempotent; every other call afterwards raises
    /// ShutDown. Raises Invalid when called from inside a driver call.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            if in_driver_call() {
                return Err(invalid(
                    py,
                    "stop",
                    "cannot be called from inside a driver call (stop waits for driver calls \
                     to finish)",
                ));
            }
            let inner = self.inner.clone();
            if *inner.state.lock() != StopState::Stopped {
                let (tx, rx) = mpsc::channel::<()>();
                std::thread::Builder::new()
                    .name("floyd-py-cp-stop".into())
                    .spawn(move || {
                        inner.stop_blocking();
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
            }
            self.reraise()
        })
    }

    /// Sets `spec.replicas` of the Deployment (or, with `kind="ReplicaSet"`, the ReplicaSet)
    /// at `key`; returns the updated object.
    #[pyo3(signature = (key, replicas, kind = None))]
    fn scale<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        replicas: &Bound<'py, PyAny>,
        kind: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            self.reraise()?;
            let key = str_arg(key, "key")?.into_owned();
            let kind = opt_str_arg(kind, "kind")?.unwrap_or_else(|| "Deployment".to_string());
            if kind != "Deployment" && kind != "ReplicaSet" {
                return Err(invalid(
                    py,
                    "kind",
                    format!("must be \"Deployment\" or \"ReplicaSet\", got {kind:?}"),
                ));
            }
            let replicas = replicas_arg(replicas)?;
            let inner = &self.inner;
            let obj = py
                .detach(|| inner.cp.scale(&kind, &key, replicas))
                .py_err(py)?;
            json_to_py(py, &obj.to_json())
        })
    }

    /// Waits until the Deployment's rollout completes and returns its status. Raises Expired
    /// when the rollout exceeded its progress deadline (the message starts with
    /// "ProgressDeadlineExceeded") or after `timeout` seconds (None: no limit), NotFound
    /// for a missing Deployment. Waits without the GIL; Ctrl-C interrupts it.
    #[pyo3(signature = (key, timeout = None))]
    fn wait_for_rollout<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            self.reraise()?;
            let key = str_arg(key, "key")?.into_owned();
            let timeout = opt_secs_arg(timeout, "timeout")?;
            let deadline = crate::wait::deadline(timeout);
            let cp = &self.inner.cp;
            loop {
                // One core wait per slice, so signals and driver BaseExceptions get through.
                let slice = crate::wait::next_slice(deadline).unwrap_or(Duration::ZERO);
                match py.detach(|| cp.wait_for_rollout(&key, slice)) {
                    Ok(status) => return json_to_py(py, &status),
                    Err(e)
                        if e.kind() == floyd::ErrorKind::Expired
                            && !e.to_string().contains(PROGRESS_DEADLINE_EXCEEDED) =>
                    {
                        if crate::wait::next_slice(deadline).is_none() {
                            let t = timeout.unwrap_or_default();
                            return Err(crate::errors::raise(
                                py,
                                floyd::ErrorKind::Expired,
                                &format!(
                                    "expired: timed out after {:.3}s waiting for the rollout \
                                     of Deployment {key}",
                                    t.as_secs_f64()
                                ),
                                None,
                            ));
                        }
                        py.check_signals()?;
                        self.reraise()?;
                    }
                    Err(e) => return Err(crate::errors::to_py(py, e)),
                }
            }
        })
    }

    /// Rolls the Deployment back to `to_revision` (0: the previous revision); returns the
    /// revision rolled back to. NotFound if that revision is not kept.
    #[pyo3(signature = (key, to_revision = None))]
    fn rollback(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        to_revision: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        guard(py, || {
            self.reraise()?;
            let key = str_arg(key, "key")?.into_owned();
            let rev = match to_revision {
                Some(v) if !v.is_none() => i64_arg(v, "to_revision")?,
                _ => 0,
            };
            let cp = &self.inner.cp;
            py.detach(|| cp.rollback(&key, rev)).py_err(py)
        })
    }

    /// Pauses the Deployment's rollout (scaling still applies); returns the Deployment.
    fn pause<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.deployment_call(py, key, |cp, k| cp.pause(k))
    }

    /// Resumes a paused Deployment; returns it.
    fn resume<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.deployment_call(py, key, |cp, k| cp.resume(k))
    }

    /// Promotes a BlueGreen Deployment's new revision (when `autoPromote` is off); returns
    /// the Deployment.
    fn promote<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.deployment_call(py, key, |cp, k| cp.promote(k))
    }

    /// Reports that the running instance at `instance_key` (`"namespace/name"`) exited on its
    /// own (its process crashed), with `message` saying why: it turns not-ready, its
    /// `restartCount` grows, and the node agent starts it again after the crash-loop backoff.
    /// NotFound if the agent is not running that instance.
    fn report_exit(
        &self,
        py: Python<'_>,
        instance_key: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            self.reraise()?;
            let key = str_arg(instance_key, "instance_key")?.into_owned();
            let message = str_arg(message, "message")?.into_owned();
            let cp = &self.inner.cp;
            py.detach(|| cp.report_exit(&key, &message)).py_err(py)
        })
    }

    /// The ready addresses of the Service at `service_key`; NotFound if there is none.
    fn endpoints(&self, py: Python<'_>, service_key: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        guard(py, || {
            self.reraise()?;
            let key = str_arg(service_key, "service_key")?.into_owned();
            let inner = &self.inner;
            py.detach(|| inner.cp.endpoints(&key)).py_err(py)
        })
    }

    /// One ready address of the Service: round robin, or a stable choice per `hint` (a
    /// client id, for session affinity). None when no instance is ready.
    #[pyo3(signature = (service_key, hint = None))]
    fn pick(
        &self,
        py: Python<'_>,
        service_key: &Bound<'_, PyAny>,
        hint: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<String>> {
        guard(py, || {
            self.reraise()?;
            let key = str_arg(service_key, "service_key")?.into_owned();
            let hint = opt_str_arg(hint, "hint")?;
            let inner = &self.inner;
            py.detach(|| inner.cp.pick(&key, hint.as_deref()))
                .py_err(py)
        })
    }

    /// Counters: `{syncs, syncErrors, driverStarts, driverStartFailures, driverStops,
    /// storeWrites, controllerQueue, agentQueue, runningInstances, driverTimeouts,
    /// driverLateResults, driverThreadsReplaced}` (`controllerQueue`, `agentQueue` and
    /// `runningInstances` are current depths and the number of instances started and not
    /// stopped; the last three count driver calls that timed out, results of timed-out calls
    /// that came back anyway (ignored), and pool threads replaced while stuck in one).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || {
            self.reraise()?;
            let cp = &self.inner.cp;
            let (s, (ctl, agent), running) =
                py.detach(|| (cp.stats(), cp.pending(), cp.running_instances().len()));
            let d = PyDict::new(py);
            d.set_item("syncs", s.syncs)?;
            d.set_item("syncErrors", s.sync_errors)?;
            d.set_item("driverStarts", s.driver_starts)?;
            d.set_item("driverStartFailures", s.driver_start_failures)?;
            d.set_item("driverStops", s.driver_stops)?;
            d.set_item("storeWrites", s.store_writes)?;
            d.set_item("controllerQueue", ctl)?;
            d.set_item("agentQueue", agent)?;
            d.set_item("runningInstances", running)?;
            d.set_item("driverTimeouts", s.driver_timeouts)?;
            d.set_item("driverLateResults", s.driver_late_results)?;
            d.set_item("driverThreadsReplaced", s.driver_threads_replaced)?;
            d.set_item("probes", s.probes)?;
            d.set_item("probeFailures", s.probe_failures)?;
            d.set_item("probeRestarts", s.probe_restarts)?;
            Ok(d)
        })
    }

    /// Keys of the instances the node agent has started (or is starting or stopping) and not
    /// yet stopped, sorted.
    fn running_instances(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        guard(py, || {
            self.reraise()?;
            let cp = &self.inner.cp;
            let mut v = py.detach(|| cp.running_instances());
            v.sort();
            Ok(v)
        })
    }

    /// Whether `stop()` has completed.
    #[getter]
    fn stopped(&self) -> bool {
        *self.inner.state.lock() == StopState::Stopped
    }

    /// Starts the control plane.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().start(slf.py())?;
        Ok(slf)
    }

    /// Stops the control plane.
    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let st = match *self.inner.state.lock() {
            StopState::Running => "running",
            StopState::Stopping => "stopping",
            StopState::Stopped => "stopped",
        };
        format!("<floyd.ControlPlane {st}>")
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(g) = self.inner.driver.obj.try_lock() {
            visit.call(g.as_ref())?;
        }
        if let Some(g) = self.inner.driver.event_loop.try_lock() {
            visit.call(g.as_ref())?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        // Breaks a cycle through the driver (a driver holding its control plane); driver
        // calls after this fail. The control plane is stopped when it is deallocated.
        let obj = self.inner.driver.obj.lock().take();
        let lp = self.inner.driver.event_loop.lock().take();
        drop((obj, lp));
    }
}

impl Drop for PyControlPlane {
    fn drop(&mut self) {
        if *self.inner.state.lock() == StopState::Stopped {
            return;
        }
        let inner = self.inner.clone();
        if in_driver_call() {
            // Dropped by the driver itself: stopping here would wait for this very call.
            let _ = std::thread::Builder::new()
                .name("floyd-py-cp-stop".into())
                .spawn(move || inner.stop_blocking());
            return;
        }
        // The GIL is held during deallocation; driver calls need it to finish.
        match Python::try_attach(|py| py.detach(|| inner.stop_blocking())) {
            Some(()) => {}
            None => self.inner.stop_blocking(),
        }
    }
}

/// An int argument (not a bool) that fits in i64.
fn i64_arg(v: &Bound<'_, PyAny>, field: &str) -> PyResult<i64> {
    let py = v.py();
    if v.cast::<pyo3::types::PyBool>().is_ok() || v.cast::<pyo3::types::PyInt>().is_err() {
        return Err(invalid(
            py,
            field,
            format!("must be an int, got {}", type_name(v)),
        ));
    }
    v.extract::<i64>()
        .map_err(|_| invalid(py, field, format!("is out of range: {v}")))
}

/// `replicas` for `scale`: an int (not a bool) in 0..=2**31-1, else `Invalid("spec.replicas")`.
fn replicas_arg(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    const FIELD: &str = "spec.replicas";
    let py = v.py();
    if v.cast::<pyo3::types::PyBool>().is_ok() || v.cast::<pyo3::types::PyInt>().is_err() {
        return Err(invalid(
            py,
            FIELD,
            format!("must be an int, got {}", type_name(v)),
        ));
    }
    match v.extract::<i64>() {
        Ok(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(n),
        _ => Err(invalid(
            py,
            FIELD,
            format!("must be 0..={}, got {v}", i32::MAX),
        )),
    }
}

/// Stops every live control plane (registered with `atexit` by `floyd/__init__.py`, so no
/// driver thread asks for the GIL while the interpreter finalizes).
#[pyfunction]
pub fn _shutdown_control_planes(py: Python<'_>) -> PyResult<()> {
    guard(py, || {
        let live: Vec<Arc<Inner>> = LIVE.lock().drain(..).filter_map(|w| w.upgrade()).collect();
        py.detach(|| {
            for i in &live {
                i.stop_blocking();
            }
        });
        Ok(())
    })
}
