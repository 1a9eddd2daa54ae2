"""Threads calling in concurrently, the GIL released while floyd waits, and Ctrl-C."""

import os
import signal
import threading
import time

import floyd
from conftest import assert_isolated_ok, cm


def test_16_threads_create_and_update_one_store(store):
    errors = []

    def worker(t):
        try:
            for i in range(25):
                o = store.create(cm(f"t{t}-{i}", n=0))
                for n in range(1, 3):
                    o["spec"] = {"n": n}
                    o = store.update(o)
                # Everyone also fights over one shared object: Conflict is the only error.
                while True:
                    cur = store.get("ConfigMap", "default/shared")
                    if cur is None:
                        try:
                            store.create(cm("shared", n=0))
                        except floyd.AlreadyExists:
                            pass
                        continue
                    cur["spec"] = {"n": cur["spec"]["n"] + 1}
                    try:
                        store.update(cur)
                        break
                    except floyd.Conflict:
                        continue
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors
    objs, _ = store.list("ConfigMap")
    assert len(objs) == 16 * 25 + 1
    assert store.get("ConfigMap", "default/shared")["spec"]["n"] == 16 * 25
    assert all(o["metadata"]["generation"] == 3 for o in objs if o["metadata"]["name"] != "shared")


def test_8_threads_on_one_queue():
    q = floyd.WorkQueue()
    seen = []
    lock = threading.Lock()

    def worker():
        while (item := q.get()) is not None:
            with lock:
                seen.append(item)
            q.done(item)

    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    producers = [threading.Thread(target=lambda p=p: [q.add((p, i)) for i in range(500)]) for p in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    q.shut_down_with_drain()
    for t in ts:
        t.join(30)
    assert not any(t.is_alive() for t in ts)
    # Dedup may coalesce repeats, but every distinct item was processed.
    assert set(seen) == {(p, i) for p in range(4) for i in range(500)}


def test_blocked_get_wakes_on_add_from_another_thread():
    q = floyd.WorkQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    time.sleep(0.1)
    q.add("x")
    t.join(10)
    assert got == ["x"]


def _progress_while(block):
    """How far a pure-Python thread counts *during* the call `block()`. The count is read
    right before and right after the call on the blocking thread itself, so if the call held
    the GIL throughout, the spinner could not run in between and the result would be 0."""
    counter = [0]
    stop = threading.Event()
    started = threading.Event()
    progress = []

    def spin():
        started.set()
        while not stop.is_set():
            counter[0] += 1

    def blocker():
        started.wait()
        before = counter[0]
        block()
        progress.append(counter[0] - before)

    spinner = threading.Thread(target=spin)
    b = threading.Thread(target=blocker)
    spinner.start()
    b.start()
    b.join(60)
    stop.set()
    spinner.join()
    return progress[0]


def test_gil_released_in_queue_get():
    q = floyd.WorkQueue()
    n = _progress_while(lambda: q.get(timeout=1))
    assert n > 1000


def test_gil_released_in_watch_wait(store):
    n = _progress_while(lambda: list(store.watch("ConfigMap", timeout=1)))
    assert n > 1000


def test_gil_released_in_always_writes(tmp_path):
    with floyd.Store.open(tmp_path / "d", durability="always", segment_size=1 << 20) as s:
        n = _progress_while(lambda: [s.create(cm(f"o{i}")) for i in range(50)])
        assert n > 0
        assert len(s.list("ConfigMap")[0]) == 50


def test_ctrl_c_interrupts_blocking_get():
    out = assert_isolated_ok(
        """
        import os, signal, threading, time, floyd
        q = floyd.WorkQueue()
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        try:
            q.get()
            print("no interrupt")
        except KeyboardInterrupt:
            print("interrupted", time.monotonic() - t0 < 5)
        s = floyd.Store.memory(segment_size=1 << 20)
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        try:
            for _ in s.watch():
                pass
            print("no interrupt")
        except KeyboardInterrupt:
            print("interrupted", True)
        """
    )
    assert out.split() == ["interrupted", "True", "interrupted", "True"]


def test_ctrl_c_interrupts_drain():
    out = assert_isolated_ok(
        """
        import os, signal, threading, floyd
        q = floyd.WorkQueue()
        q.add("a")
        q.get()  # processing, never done: the drain would wait forever
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        try:
            q.shut_down_with_drain()
        except KeyboardInterrupt:
            print("interrupted")
        q.shut_down()  # releases the background drain
        """
    )
    assert out.strip() == "interrupted"


def test_32_threads_mixed_calls_on_one_store_in_subprocess():
    out = assert_isolated_ok(
        """
        import threading, floyd
        s = floyd.Store.memory(segment_size=4 << 20)
        errs = []
        def w(t):
            try:
                for i in range(30):
                    name = f"o{i % 5}"
                    try:
                        o = s.create({"kind": "ConfigMap", "metadata": {"name": name}, "spec": {"t": t}})
                    except floyd.AlreadyExists:
                        o = s.get("ConfigMap", "default/" + name)
                    if o is None:
                        continue
                    o["spec"] = {"t": t, "i": i}
                    try:
                        s.update(o)
                    except (floyd.Conflict, floyd.NotFound):
                        pass
                    if i % 7 == 0:
                        try:
                            s.delete("ConfigMap", "default/" + name)
                        except floyd.NotFound:
                            pass
                    s.list("ConfigMap", label_selector="")
                    for _ in s.watch(timeout=0):
                        pass
            except Exception as e:
                errs.append(repr(e))
        ts = [threading.Thread(target=w, args=(t,)) for t in range(32)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        s.close()
        print("errors", len(errs), errs[:3])
        """,
        timeout=300,
    )
    assert out.startswith("errors 0")
