"""Binding benchmarks (issue 7): run as `python benches/python/bench_workqueue.py` with
`floyd` installed (a release build: `maturin develop --release` in bindings/python; a debug
build measures the unoptimised binding). Prints `scripts/bench` ratio lines:

- workqueue: add -> get -> done cycles/s through `floyd.WorkQueue` vs a pure-Python queue
  with the same semantics (threading.Condition + deque + dirty/processing sets), single
  thread and producer/consumer threads. Target >= 3x.
- store: create + get round trips/s from Python through `floyd.Store`, vs the same loop
  timed in Rust inside the extension (`floyd._floyd._bench_store_round_trips`). The binding
  overhead per call is (Python time - Rust time) / 2 calls. Target <= 2 us.

Environment: BENCH_N (cycles per run, default 200000), BENCH_RUNS (best of, default 3).
"""

import collections
import os
import sys
import threading
import time

import floyd
from floyd import _floyd

N = int(os.environ.get("BENCH_N", "200000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


class PyWorkQueue:
    """client-go's workqueue semantics in pure Python: an item is queued at most once
    (dirty), is never handed to two workers at once (processing), and an item re-added
    while processing is queued again by done()."""

    def __init__(self):
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._dirty = set()
        self._processing = set()
        self._shutting_down = False

    def add(self, item):
        with self._cond:
            if self._shutting_down or item in self._dirty:
                return
            self._dirty.add(item)
            if item in self._processing:
                return
            self._queue.append(item)
            self._cond.notify()

    def get(self, timeout=None):
        with self._cond:
            while not self._queue and not self._shutting_down:
                if not self._cond.wait(timeout):
                    return None
            if not self._queue:
                return None
            item = self._queue.popleft()
            self._processing.add(item)
            self._dirty.discard(item)
            return item

    def done(self, item):
        with self._cond:
            self._processing.discard(item)
            if item in self._dirty:
                self._queue.append(item)
                self._cond.notify()

    def __len__(self):
        with self._cond:
            return len(self._queue)

    def shut_down(self):
        with self._cond:
            self._shutting_down = True
            self._cond.notify_all()


def best(*fs):
    """The fastest of RUNS timings of each of `fs`, which take turns round by round: a slow
    spell of the shared machine then hits every contender alike instead of the one that
    happened to run during it."""
    times = [float("inf")] * len(fs)
    for _ in range(RUNS):
        for i, f in enumerate(fs):
            times[i] = min(times[i], f())
    return times


def cycles_single(q, n):
    add, get, done = q.add, q.get, q.done
    t = time.perf_counter()
    for i in range(n):
        add(i)
        done(get())
    return time.perf_counter() - t


def cycles_threads(make, n, batch=64):
    """One producer adds n items in batches; one consumer gets and marks each done."""
    q = make()

    def consume():
        get, done = q.get, q.done
        for _ in range(n):
            done(get())

    c = threading.Thread(target=consume)
    t = time.perf_counter()
    c.start()
    add = q.add
    for i in range(0, n, batch):
        for j in range(i, min(i + batch, n)):
            add(j)
    c.join()
    return time.perf_counter() - t


def store_round_trips(n):
    s = floyd.Store.memory()
    objs = [
        {
            "kind": "ConfigMap",
            "metadata": {"name": f"b{i}", "namespace": "bench"},
            "spec": {"a": 1, "b": "two", "c": [1, 2, 3]},
        }
        for i in range(n)
    ]
    keys = [f"bench/b{i}" for i in range(n)]
    create, get = s.create, s.get
    t = time.perf_counter()
    for o, k in zip(objs, keys):
        create(o)
        get("ConfigMap", k)
    d = time.perf_counter() - t
    s.close()
    return d


def line(name, x, op, target, figure, baseline):
    print(f"ratio {name} = {x:.2f} (target {op} {target}); figure: {figure}; baseline: {baseline}")


def main():
    print(f"# python {sys.version.split()[0]}, floyd {floyd.__version__}, n={N}, best of {RUNS}")

    f, p = best(
        lambda: cycles_single(floyd.WorkQueue(), N),
        lambda: cycles_single(PyWorkQueue(), N),
    )
    line(
        "python_workqueue_cycles_vs_pure_python",
        p / f,
        ">=",
        3,
        f"{N / f:,.0f} add+get+done cycles/s (floyd.WorkQueue, 1 thread)",
        f"{N / p:,.0f} cycles/s (threading.Condition + deque + set)",
    )

    nt = max(N // 4, 1000)
    f, p = best(
        lambda: cycles_threads(floyd.WorkQueue, nt),
        lambda: cycles_threads(PyWorkQueue, nt),
    )
    line(
        "python_workqueue_threads_vs_pure_python",
        p / f,
        ">=",
        3,
        f"{nt / f:,.0f} cycles/s (floyd.WorkQueue, producer + consumer threads)",
        f"{nt / p:,.0f} cycles/s (pure Python, same threads)",
    )

    ns = max(N // 10, 1000)
    py_s, rust_s = best(
        lambda: store_round_trips(ns),
        lambda: _floyd._bench_store_round_trips(ns),
    )
    overhead_us = max(py_s - rust_s, 0.0) / (2 * ns) * 1e6
    line(
        "python_store_call_overhead_us",
        overhead_us,
        "<=",
        2,
        f"{ns / py_s:,.0f} create+get round trips/s from Python "
        f"({py_s / ns * 1e6:.2f} us per round trip)",
        f"{ns / rust_s:,.0f} round trips/s in Rust ({rust_s / ns * 1e6:.2f} us), "
        f"same build; overhead per call = difference / 2",
    )


if __name__ == "__main__":
    main()
