"""WorkQueue and RateLimiter through the binding."""

import threading

import pytest

import floyd


def test_add_get_done_dedup_len():
    q = floyd.WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert q.get() == "a"
    q.add("a")  # re-added while processing: queued again on done
    assert len(q) == 1
    assert q.get() == "b"
    q.done("b")
    q.done("a")
    assert len(q) == 1
    assert q.get(timeout=1) == "a"
    q.done("a")
    assert q.get(timeout=0) is None
    assert q.get(timeout=0.05) is None


def test_items_keep_identity_and_python_equality():
    q = floyd.WorkQueue()
    t = ("ns", "name", 3)
    q.add(t)
    q.add(("ns", "name", 3.0))  # equal in Python: one item
    assert len(q) == 1
    assert q.get() is t
    q.done(t)
    q.add(1)
    q.add(True)
    q.add(1.0)
    assert len(q) == 1 and q.get() == 1
    for item in [None, b"bytes", 2.5, -7, 2**64 - 1, -(2**63), "ü", ((1, 2), ("x",))]:
        q.add(item)
        assert q.get() == item
        q.done(item)


def test_add_after_and_rate_limited():
    q = floyd.WorkQueue(rate_limiter=floyd.RateLimiter.exponential(0.01, 1.0), name="t")
    assert q.name == "t"
    q.add_after("later", 0.05)
    assert len(q) == 0
    assert q.get(timeout=5) == "later"
    q.done("later")
    q.add_rate_limited("x")
    q.add_rate_limited("x")
    assert q.num_requeues("x") == 2
    assert q.get(timeout=5) == "x"
    q.forget("x")
    assert q.num_requeues("x") == 0
    q.done("x")
    q.add_after("now", 0)
    assert q.get(timeout=0) == "now"


def test_metrics():
    q = floyd.WorkQueue(name="m")
    q.add("a")
    q.add_after("b", 0)
    assert q.get() == "a"
    m = q.metrics()
    assert m["adds"] == 2 and m["retries"] == 1 and m["depth"] == 1
    assert m["queue_duration"]["count"] == 1
    assert m["queue_duration"]["buckets"][-1][0] == float("inf")
    assert m["work_duration"]["count"] == 0
    assert m["longest_running_processor_seconds"] >= 0.0
    assert m["unfinished_work_seconds"] >= 0.0
    q.done("a")
    assert q.metrics()["work_duration"]["count"] == 1


def test_shutdown_semantics():
    q = floyd.WorkQueue()
    q.add("a")
    assert not q.shutting_down()
    q.shut_down()
    q.shut_down()  # idempotent
    assert q.shutting_down()
    q.add("ignored")
    assert len(q) == 1
    assert q.get() == "a"  # queued items still handed out
    assert q.get() is None  # then None, without blocking
    assert q.get(timeout=10) is None
    q.done("a")


def test_shutdown_wakes_blocked_getter():
    q = floyd.WorkQueue()
    out = []
    t = threading.Thread(target=lambda: out.append(q.get()))
    t.start()
    t.join(0.2)
    assert t.is_alive()
    q.shut_down()
    t.join(10)
    assert not t.is_alive() and out == [None]


def test_shut_down_with_drain_waits_for_done():
    q = floyd.WorkQueue()
    q.add("a")
    q.add("b")
    processed = []

    def worker():
        while (item := q.get()) is not None:
            processed.append(item)
            q.done(item)

    drained = threading.Event()

    def drainer():
        q.shut_down_with_drain()
        drained.set()

    d = threading.Thread(target=drainer)
    d.start()
    w = threading.Thread(target=worker)
    w.start()
    assert drained.wait(10)
    w.join(10)
    d.join(10)
    assert sorted(processed) == ["a", "b"]


def test_rate_limiters():
    e = floyd.RateLimiter.exponential(0.01, 0.04)
    assert [e.when("x") for _ in range(4)] == pytest.approx([0.01, 0.02, 0.04, 0.04])
    assert e.num_requeues("x") == 4
    e.forget("x")
    assert e.num_requeues("x") == 0
    d = floyd.RateLimiter.exponential()
    assert d.when("y") == pytest.approx(0.005)
    fs = floyd.RateLimiter.fast_slow(0.1, 2.0, 2)
    assert [fs.when(1) for _ in range(3)] == pytest.approx([0.1, 0.1, 2.0])
    b = floyd.RateLimiter.bucket(qps=1.0, burst=1)
    assert b.when("a") == 0.0
    assert b.when("b") > 0.5
    assert floyd.RateLimiter.bucket().when("a") == 0.0
    m = floyd.RateLimiter.max_of([floyd.RateLimiter.exponential(0.01, 10.0), floyd.RateLimiter.fast_slow(1.0, 1.0, 5)])
    assert m.when("k") == pytest.approx(1.0)
    assert m.num_requeues("k") >= 1
    dc = floyd.RateLimiter.default_controller()
    assert dc.when("z") == pytest.approx(0.005)
    capped = floyd.RateLimiter.exponential(1.0, 100.0).with_max_wait(1.5)
    assert [capped.when("c") for _ in range(3)] == pytest.approx([1.0, 1.5, 1.5])
    q = floyd.WorkQueue(floyd.RateLimiter.fast_slow(0.0, 0.0, 1))
    q.add_rate_limited("r")
    assert q.get(timeout=5) == "r"
