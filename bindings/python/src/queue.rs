//! `floyd.WorkQueue` and `floyd.RateLimiter`: client-go's queue and limiters over
//! [`Item`] keys. `get` and `shut_down_with_drain` wait without the GIL, in slices that
//! check for signals.

use std::sync::Arc;
use std::sync::mpsc;

use floyd::workqueue::Histogram;
use floyd::{SystemClock, WorkQueueConfig};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{Item, f64_arg, opt_secs_arg, opt_str_arg, secs_arg, u32_arg, u64_arg};
use crate::errors::{IntoPy, guard, invalid};
use crate::wait::sliced;

type Limiter = floyd::RateLimiter<Item>;

/// Per-item and overall rate limiters with client-go's semantics.
#[pyclass(module = "floyd", name = "RateLimiter", frozen)]
pub struct PyRateLimiter {
    inner: Limiter,
}

#[pymethods]
impl PyRateLimiter {
    /// Per-item `base * 2**(n-1)` seconds for the n-th consecutive failure, capped at `max`.
    #[staticmethod]
    #[pyo3(signature = (base = None, max = None))]
    fn exponential(
        py: Python<'_>,
        base: Option<&Bound<'_, PyAny>>,
        max: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyRateLimiter> {
        guard(py, || {
            let base = base
                .map(|b| f64_arg(b, "base"))
                .transpose()?
                .unwrap_or(0.005);
            let max = max
                .map(|m| f64_arg(m, "max"))
                .transpose()?
                .unwrap_or(1000.0);
            Ok(PyRateLimiter {
                inner: Limiter::exponential_secs(base, max).py_err(py)?,
            })
        })
    }

    /// Per-item `fast` seconds for the first `max_fast_attempts` failures, then `slow`.
    #[staticmethod]
    fn fast_slow(
        py: Python<'_>,
        fast: &Bound<'_, PyAny>,
        slow: &Bound<'_, PyAny>,
        max_fast_attempts: &Bound<'_, PyAny>,
    ) -> PyResult<PyRateLimiter> {
        guard(py, || {
            let fast = f64_arg(fast, "fast")?;
            let slow = f64_arg(slow, "slow")?;
            let n = u64_arg(max_fast_attempts, "max_fast_attempts")?;
            Ok(PyRateLimiter {
                inner: Limiter::fast_slow_secs(fast, slow, n).py_err(py)?,
            })
        })
    }

    /// One token bucket over all items: `qps` tokens per second, `burst` deep.
    #[staticmethod]
    #[pyo3(signature = (qps = None, burst = None))]
    fn bucket(
        py: Python<'_>,
        qps: Option<&Bound<'_, PyAny>>,
        burst: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyRateLimiter> {
        guard(py, || {
            let qps = qps.map(|q| f64_arg(q, "qps")).transpose()?.unwrap_or(10.0);
            let burst = burst
                .map(|b| u32_arg(b, "burst"))
                .transpose()?
                .unwrap_or(100);
            Ok(PyRateLimiter {
                inner: Limiter::bucket_checked(qps, burst, SystemClock::shared()).py_err(py)?,
            })
        })
    }

    /// The largest delay of `limiters`; each of them records every failure.
    #[staticmethod]
    fn max_of(py: Python<'_>, limiters: &Bound<'_, PyAny>) -> PyResult<PyRateLimiter> {
        guard(py, || {
            let mut out = Vec::new();
            let items: Vec<Bound<'_, PyAny>> = if let Ok(l) = limiters.cast::<PyList>() {
                l.iter().collect()
            } else if let Ok(t) = limiters.cast::<pyo3::types::PyTuple>() {
                t.iter().collect()
            } else {
                return Err(invalid(py, "limiters", "must be a list of RateLimiter"));
            };
            for (i, l) in items.iter().enumerate() {
                let Ok(r) = l.cast::<PyRateLimiter>() else {
                    return Err(invalid(
                        py,
                        &format!("limiters[{i}]"),
                        "must be a RateLimiter",
                    ));
                };
                out.push(r.get().inner.clone());
            }
            Ok(PyRateLimiter {
                inner: Limiter::max_of(out),
            })
        })
    }

    /// client-go's default: max_of(exponential(0.005, 1000.0), bucket(10.0, 100)).
    #[staticmethod]
    fn default_controller(py: Python<'_>) -> PyResult<PyRateLimiter> {
        guard(py, || {
            Ok(PyRateLimiter {
                inner: Limiter::default_controller(),
            })
        })
    }

    /// This limiter with every delay capped at `max_delay` seconds.
    fn with_max_wait(
        &self,
        py: Python<'_>,
        max_delay: &Bound<'_, PyAny>,
    ) -> PyResult<PyRateLimiter> {
        guard(py, || {
            let secs = f64_arg(max_delay, "max_delay")?;
            Ok(PyRateLimiter {
                inner: self.inner.clone().with_max_wait_secs(secs).py_err(py)?,
            })
        })
    }

    /// Records a failure of `item`; returns how many seconds to wait before retrying it.
    fn when(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<f64> {
        guard(py, || Ok(self.inner.when(&Item::new(item)?).as_secs_f64()))
    }

    /// Clears `item`'s failure history.
    fn forget(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            self.inner.forget(&Item::new(item)?);
            Ok(())
        })
    }

    /// Failures on record for `item`.
    fn num_requeues(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<u64> {
        guard(py, || Ok(self.inner.num_requeues(&Item::new(item)?)))
    }
}

/// A de-duplicating, delaying, rate-limited work queue (client-go semantics). Items are
/// None, bool, int, float (not NaN), str, bytes or tuples of them, compared as Python
/// compares them; `get` hands back the object that was added first.
#[pyclass(module = "floyd", name = "WorkQueue", frozen)]
pub struct PyWorkQueue {
    inner: Arc<floyd::WorkQueue<Item>>,
}

fn histogram<'py>(py: Python<'py>, h: &Histogram) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("buckets", h.cumulative())?;
    d.set_item("count", h.count)?;
    d.set_item("sum", h.sum)?;
    Ok(d)
}

#[pymethods]
impl PyWorkQueue {
    #[new]
    #[pyo3(signature = (rate_limiter = None, name = None))]
    fn new(
        py: Python<'_>,
        rate_limiter: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyWorkQueue> {
        guard(py, || {
            let limiter = match rate_limiter {
                None => None,
                Some(l) if l.is_none() => None,
                Some(l) => match l.cast::<PyRateLimiter>() {
                    Ok(r) => Some(r.get().inner.clone()),
                    Err(_) => {
                        return Err(invalid(py, "rate_limiter", "must be a RateLimiter or None"));
                    }
                },
            };
            let name = opt_str_arg(name, "name")?;
            Ok(PyWorkQueue {
                inner: Arc::new(floyd::WorkQueue::with_config(WorkQueueConfig {
                    name,
                    clock: SystemClock::shared(),
                    rate_limiter: limiter,
                })),
            })
        })
    }

    /// Marks `item` as needing processing (coalesces with a queued copy). Ignored after
    /// shut-down.
    fn add(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            let it = Item::new(item)?;
            self.inner.add(it);
            Ok(())
        })
    }

    /// Adds `item` after `seconds`.
    fn add_after(
        &self,
        py: Python<'_>,
        item: &Bound<'_, PyAny>,
        seconds: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            let it = Item::new(item)?;
            let d = secs_arg(seconds, "seconds")?;
            self.inner.add_after(it, d);
            Ok(())
        })
    }

    /// Adds `item` after the rate limiter's delay for it.
    fn add_rate_limited(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            let it = Item::new(item)?;
            self.inner.add_rate_limited(it);
            Ok(())
        })
    }

    /// Waits up to `timeout` seconds (None: forever) for an item and hands it out; it is
    /// then processing until `done`. None on timeout, or once shut down and drained.
    #[pyo3(signature = (timeout = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard(py, || {
            let timeout = opt_secs_arg(timeout, "timeout")?;
            let q = &*self.inner;
            // Fast path: an item already queued is taken without releasing the GIL (the
            // queue's lock is never held while waiting on Python, like in `add`).
            if let Some(item) = q.try_get() {
                return Ok(Some(item.object(py)));
            }
            let got = sliced(py, timeout, |slice| match q.get_timeout(slice) {
                Some(item) => Some(Some(item)),
                // Shut down: the queue hands out what is still queued, then nothing.
                None if q.shutting_down() => Some(q.try_get()),
                None => None,
            })?;
            Ok(got.flatten().map(|item| item.object(py)))
        })
    }

    /// Marks `item` finished; if it was added again meanwhile, it is queued again.
    fn done(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            self.inner.done(&Item::new(item)?);
            Ok(())
        })
    }

    /// Clears `item`'s rate-limiter history (call `done` as well).
    fn forget(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(py, || {
            self.inner.forget(&Item::new(item)?);
            Ok(())
        })
    }

    /// Failures the rate limiter has on record for `item`.
    fn num_requeues(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<u64> {
        guard(py, || Ok(self.inner.num_requeues(&Item::new(item)?)))
    }

    /// Items queued and ready to hand out.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        guard(py, || Ok(self.inner.len()))
    }

    /// Stops accepting adds and wakes every waiting `get`; queued items are still handed
    /// out. Idempotent.
    fn shut_down(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            let q = &*self.inner;
            py.detach(|| q.shut_down());
            Ok(())
        })
    }

    /// Shuts down, then waits until every queued item was handed out and is done (workers
    /// must keep calling `get` and `done`). Interruptible with Ctrl-C; the drain then goes
    /// on in the background.
    fn shut_down_with_drain(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            let q = self.inner.clone();
            let (tx, rx) = mpsc::channel::<()>();
            std::thread::Builder::new()
                .name("floyd-py-drain".into())
                .spawn(move || {
                    q.shut_down_with_drain();
                    let _ = tx.send(());
                })
                .map_err(|e| {
                    crate::errors::to_py(py, floyd::Error::io("start the drain thread", e))
                })?;
            sliced(py, None, move |slice| match rx.recv_timeout(slice) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => Some(()),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
            })?;
            Ok(())
        })
    }

    /// Whether a shut-down has begun.
    fn shutting_down(&self, py: Python<'_>) -> PyResult<bool> {
        guard(py, || Ok(self.inner.shutting_down()))
    }

    /// `{depth, adds, retries, queue_duration, work_duration, unfinished_work_seconds,
    /// longest_running_processor_seconds}`; durations are `{buckets: [(le, n)], count, sum}`.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || {
            let m = self.inner.metrics();
            let d = PyDict::new(py);
            d.set_item("depth", m.depth)?;
            d.set_item("adds", m.adds)?;
            d.set_item("retries", m.retries)?;
            d.set_item("queue_duration", histogram(py, &m.queue_duration)?)?;
            d.set_item("work_duration", histogram(py, &m.work_duration)?)?;
            d.set_item("unfinished_work_seconds", m.unfinished_work_seconds)?;
            d.set_item(
                "longest_running_processor_seconds",
                m.longest_running_processor_seconds,
            )?;
            Ok(d)
        })
    }

    /// The queue's name, if it has one.
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<Option<String>> {
        guard(py, || Ok(self.inner.name().map(str::to_string)))
    }

    fn __repr__(&self) -> String {
        match self.inner.name() {
            Some(n) => format!("floyd.WorkQueue(name={n:?})"),
            None => "floyd.WorkQueue()".to_string(),
        }
    }
}
