//! `floyd._floyd`, the native half of the Python package `floyd`: a thin translation layer
//! over the core crate (`DESIGN.md`, "Thin bindings"). It converts arguments (dicts ⇄ JSON
//! objects, float seconds ⇄ `Duration`, Python values ⇄ work-queue keys), calls the core,
//! and turns every core error into a `floyd.FloydError` subclass. It adds no logic of its own.
//!
//! Three rules hold for every entry point: the body runs inside [`errors::guard`], so a
//! Rust panic surfaces as `floyd.Internal` and never as pyo3's `PanicException`; anything
//! that blocks or does I/O runs with the GIL released; and waits are sliced
//! ([`wait::sliced`]) so Ctrl-C interrupts them.
//!
//! The control plane (`control.rs`) adds the other direction: core threads calling a Python
//! driver, attached to the interpreter only for the call; informers (`informer.rs`) call
//! Python handlers and index functions the same way.

#![deny(unsafe_code)]

mod cache;
mod control;
mod convert;
mod errors;
mod frompy;
mod informer;
mod queue;
mod store;
mod topy;
mod wait;

use pyo3::prelude::*;

/// Panics inside Rust, for tests of the panic guard: with `detached=True` the panic happens
/// while the GIL is released.
#[pyfunction]
#[pyo3(signature = (detached = false))]
fn _panic_for_test(py: Python<'_>, detached: bool) -> PyResult<()> {
    errors::guard(py, || {
        if detached {
            py.detach(|| panic!("floyd._panic_for_test (GIL released)"));
        }
        panic!("floyd._panic_for_test")
    })
}

/// For `benches/python`: seconds for `n` create + get round trips on a fresh memory store,
/// timed in Rust with the GIL released (the figure the binding's per-call overhead is
/// measured against). Objects are built before the clock starts.
#[pyfunction]
fn _bench_store_round_trips(py: Python<'_>, n: u64) -> PyResult<f64> {
    errors::guard(py, || {
        use errors::IntoPy;
        let store = floyd::Store::memory_with(floyd::StoreConfig::default()).py_err(py)?;
        let objs = (0..n)
            .map(|i| {
                let v = serde_json::json!({
                    "kind": "ConfigMap",
                    "metadata": {"name": format!("b{i}"), "namespace": "bench"},
                    "spec": {"a": 1, "b": "two", "c": [1, 2, 3]},
                });
                floyd::Object::from_json(&v).py_err(py)
            })
            .collect::<PyResult<Vec<_>>>()?;
        let r = py.detach(|| -> floyd::Result<f64> {
            use floyd::Clock;
            let t = floyd::SystemClock.now();
            for o in objs {
                let key = format!("bench/{}", o.metadata.name);
                store.create(o)?;
                std::hint::black_box(store.get("ConfigMap", &key)?);
            }
            Ok(floyd::SystemClock.now().duration_since(t).as_secs_f64())
        });
        let _ = store.close();
        r.py_err(py)
    })
}

/// Test hook: `obj` (a dict) converted to an object and back to a dict through the JSON
/// value tree both ways — the reference the direct conversions of `get`/`create` are tested
/// against.
#[pyfunction]
fn _object_via_json<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    errors::guard(py, || {
        let o = convert::object_arg_via_json(obj)?;
        convert::json_to_py(py, &o.to_json())
    })
}

/// Test hook: the same as `create` converts, directly both ways ([`frompy`], falling back
/// to the JSON tree for errors, and [`topy`]).
#[pyfunction]
fn _object_direct<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    errors::guard(py, || {
        let o = convert::object_arg(obj)?;
        store::obj_to_py(py, &o)
    })
}

/// Test hook: only the direct conversion from Python ([`frompy`]), without the fallback:
/// None where it refuses `obj` (the tests check it refuses exactly what `_object_via_json`
/// raises on).
#[pyfunction]
fn _object_fast<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    errors::guard(py, || {
        let Ok(d) = obj.cast::<pyo3::types::PyDict>() else {
            return Ok(None);
        };
        frompy::object(d)
            .map(|o| store::obj_to_py(py, &o))
            .transpose()
    })
}

#[pymodule]
fn _floyd(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<store::PyStore>()?;
    m.add_class::<store::PyWatch>()?;
    m.add_class::<queue::PyWorkQueue>()?;
    m.add_class::<queue::PyRateLimiter>()?;
    m.add_class::<control::PyControlPlane>()?;
    m.add_class::<informer::PyInformer>()?;
    m.add_function(wrap_pyfunction!(control::_shutdown_control_planes, m)?)?;
    m.add_function(wrap_pyfunction!(informer::_shutdown_informers, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(_bench_store_round_trips, m)?)?;
    m.add_function(wrap_pyfunction!(_object_via_json, m)?)?;
    m.add_function(wrap_pyfunction!(_object_direct, m)?)?;
    m.add_function(wrap_pyfunction!(_object_fast, m)?)?;
    m.add("FINAL_STATE_UNKNOWN", informer::FINAL_STATE_UNKNOWN)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_DATA_DIR", floyd::store::DEFAULT_DATA_DIR)?;
    m.add("MAX_DEPTH", convert::MAX_DEPTH)?;
    m.add("MAX_JSON_BYTES", convert::MAX_JSON_BYTES)?;
    Ok(())
}
