"""The control plane with a driver written in Python: a ReplicaSet and a Service end to end,
and driver misbehaviour (reliability.md §3 (f)): raising, returning garbage, re-entering the
store, BaseException, async methods; use after stop and bad arguments."""

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import threading
import time

import pytest

import floyd
from conftest import assert_isolated_ok

SVC = "default/web"
RS = "default/web"


def eventually(cond, timeout=20.0, what="condition"):
    """Polls `cond` (a liveness bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def threads_now():
    return len(os.listdir("/proc/self/task"))


def service(name="web", app="web"):
    return {"kind": "Service", "metadata": {"name": name}, "spec": {"selector": {"app": app}}}


def replicaset(replicas, name="web", app="web"):
    return {
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"version": "1", "command": ["sleep", "1000"]},
            },
        },
    }


def instances(store):
    return store.list("Instance")[0]


def ready(inst):
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in inst.get("status", {}).get("conditions", [])
    )


def endpoints(cp, key=SVC):
    try:
        return cp.endpoints(key)
    except floyd.NotFound:  # the control plane has not seen the Service yet
        return []


class Recorder:
    """Records the instances it runs; gives each a distinct address."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = {}  # uid -> address
        self.started = []
        self.stopped = []
        self.calls = 0
        self.n = 0

    def start(self, inst):
        assert isinstance(inst, dict)
        with self.lock:
            self.calls += 1
            self.n += 1
            uid = inst["metadata"]["uid"]
            addr = f"127.0.0.1:{9000 + self.n}"
            self.running[uid] = addr
            self.started.append(uid)
            return {"address": addr}

    def stop(self, inst):
        with self.lock:
            self.calls += 1
            self.running.pop(inst["metadata"]["uid"], None)
            self.stopped.append(inst["metadata"]["uid"])


@pytest.fixture
def cp_factory(store):
    made = []

    def make(driver, **kw):
        cp = floyd.ControlPlane(store, driver, **kw)
        made.append(cp)
        return cp

    yield make
    for cp in made:
        with contextlib.suppress(BaseException):
            cp.stop()


def test_replicaset_end_to_end(store):
    base_threads = threads_now()
    d = Recorder()
    with floyd.ControlPlane(store, d, workers=2, burst_replicas=500) as cp:
        assert not cp.stopped
        store.create(service())
        store.create(replicaset(4))
        eventually(lambda: len(endpoints(cp)) == 4, what="4 endpoints")
        insts = instances(store)
        assert len(insts) == 4 and all(ready(i) for i in insts)
        assert all(i["status"]["phase"] == "Running" for i in insts)
        with d.lock:
            assert sorted(endpoints(cp)) == sorted(d.running.values())
            assert {i["status"]["address"] for i in insts} == set(d.running.values())

        # Round robin visits every ready address; a hint is sticky.
        picks = [cp.pick(SVC) for _ in range(8)]
        assert set(picks) == set(endpoints(cp))
        assert picks[:4] == picks[4:]
        assert cp.pick(SVC, hint="client-7") == cp.pick(SVC, hint="client-7")
        with pytest.raises(floyd.NotFound):
            cp.pick("default/nope")
        with pytest.raises(floyd.NotFound):
            cp.endpoints("default/nope")

        # Scale down: the victims, and only they, are stopped through the driver.
        rs = cp.scale(RS, 1, kind="ReplicaSet")
        assert rs["spec"]["replicas"] == 1 and rs["metadata"]["generation"] == 2
        eventually(lambda: len(instances(store)) == 1 and len(d.running) == 1)
        survivor = instances(store)[0]["metadata"]["uid"]
        with d.lock:
            assert set(d.running) == {survivor}
            assert set(d.stopped) == set(d.started) - {survivor}
        eventually(lambda: len(endpoints(cp)) == 1)
        assert cp.pick(SVC) == d.running[survivor]

        # Scale to zero: nothing left running, in the driver or in the agent.
        cp.scale(RS, 0, kind="ReplicaSet")
        eventually(lambda: not d.running and not cp.running_instances())
        eventually(lambda: cp.pick(SVC) is None)
        def rs_status():
            return store.get("ReplicaSet", RS)["status"]

        eventually(lambda: rs_status().get("observedGeneration") == 3)
        eventually(lambda: rs_status().get("replicas", 0) == 0)
        stats = cp.stats()
        assert stats["driverStarts"] == 4 and stats["driverStartFailures"] == 0
        assert stats["driverStops"] == 4 and stats["runningInstances"] == 0
        assert stats["syncs"] > 0 and stats["storeWrites"] > 0
    assert cp.stopped
    # stop() joined every thread it started, and the driver is not called any more.
    eventually(lambda: threads_now() == base_threads, what="threads to end")
    calls = d.calls
    store.create(replicaset(2, name="late"))
    time.sleep(0.2)
    assert d.calls == calls


def test_stop_waits_for_in_flight_calls_and_skips_later_starts(store):
    entered = threading.Event()

    class Slow(Recorder):
        def start(self, inst):
            entered.set()
            time.sleep(0.5)
            return super().start(inst)

    d = Slow()
    cp = floyd.ControlPlane(store, d, driver_threads=1)
    cp.start()
    store.create(replicaset(3))
    assert entered.wait(10)
    t = time.monotonic()
    cp.stop()
    # The call in flight finished; the queued starts were not attempted.
    assert time.monotonic() - t < 5
    assert d.n == 1
    time.sleep(0.3)
    assert d.n == 1


def test_failed_start_is_recorded_and_retried_later(store, cp_factory):
    class FailFirst(Recorder):
        def __init__(self, n):
            super().__init__()
            self.fail = n

        def start(self, inst):
            with self.lock:
                if self.fail > 0:
                    self.fail -= 1
                    raise RuntimeError("boom")
            return super().start(inst)

    d = FailFirst(1)
    cp = cp_factory(d)
    cp.start()
    store.create(service())
    store.create(replicaset(2))

    def failed():
        return [i for i in instances(store) if i.get("status", {}).get("restartCount") == 1]

    [inst] = eventually(failed, what="a failed start in status")
    st = inst["status"]
    assert st["phase"] == "Pending"
    assert "start raised RuntimeError: boom" in st["message"]
    [cond] = st["conditions"]
    assert cond["type"] == "Ready" and cond["status"] == "False"
    assert cond["reason"] == "StartFailed"
    # The other instance runs; the failed one is retried after the 10 s crash-loop backoff,
    # so it is not ready (and not an endpoint) meanwhile.
    eventually(lambda: len(endpoints(cp)) == 1)
    assert cp.stats()["driverStartFailures"] == 1


def test_failed_start_restarts_after_the_backoff(store, cp_factory):
    class FailTwice(Recorder):
        fails = 2

        def start(self, inst):
            with self.lock:
                if self.fails:
                    self.fails -= 1
                    raise RuntimeError("flaky")
            return super().start(inst)

    cp = cp_factory(FailTwice(), restart_backoff=0.05, restart_backoff_max=0.1)
    cp.start()
    store.create(service())
    store.create(replicaset(1))
    eventually(lambda: len(endpoints(cp)) == 1)
    [inst] = instances(store)
    assert inst["status"]["restartCount"] == 2 and ready(inst)
    assert cp.stats()["driverStartFailures"] == 2


GARBAGE = [
    (42, "a int"),
    ("127.0.0.1:80", "a str"),
    ([], "a list"),
    (object(), "a object"),
    ({"address": 5}, "an address of type int"),
    ({"adress": "x:1"}, "a dict with the key 'adress'"),
    ({1: "x"}, "a dict with the key 1"),
    ({"address": ""}, "the address"),
    ({"address": "a b:1"}, "the address"),
    ({"address": "x" * 2000}, "the address"),
]


@pytest.mark.parametrize(("ret", "msg"), GARBAGE, ids=[repr(g[0])[:20] for g in GARBAGE])
def test_start_returning_garbage_fails_the_start(store, cp_factory, ret, msg):
    class Garbage(Recorder):
        def start(self, inst):
            return ret

    cp = cp_factory(Garbage())
    cp.start()
    store.create(replicaset(1))

    def status():
        [i] = instances(store) or [{}]
        return i.get("status", {}).get("message")

    m = eventually(status, what="a failed start")
    assert m.startswith("start failed: start returned " + msg), m
    assert not cp.running_instances()


def test_start_without_address_is_ready_but_not_an_endpoint(store, cp_factory):
    class NoAddress(Recorder):
        def start(self, inst):
            super().start(inst)
            return None

    cp = cp_factory(NoAddress())
    cp.start()
    store.create(service())
    store.create(replicaset(2))
    eventually(lambda: len(instances(store)) == 2 and all(ready(i) for i in instances(store)))
    assert endpoints(cp) == []
    assert cp.pick(SVC) is None


def test_failed_or_garbage_stop_is_retried(store, cp_factory):
    class BadStop(Recorder):
        def __init__(self):
            super().__init__()
            self.bad = [ValueError("not yet"), "garbage"]

        def stop(self, inst):
            with self.lock:
                if self.bad:
                    b = self.bad.pop(0)
                    if isinstance(b, BaseException):
                        raise b
                    return b
            return super().stop(inst)

    d = BadStop()
    cp = cp_factory(d)
    cp.start()
    store.create(replicaset(1))
    eventually(lambda: len(d.running) == 1)
    cp.scale(RS, 0, kind="ReplicaSet")
    eventually(lambda: not d.running and not cp.running_instances())
    assert not d.bad


def test_driver_reenters_the_store_and_the_control_plane(store, cp_factory):
    """The driver calls store writes and control-plane reads from inside start/stop; floyd
    holds no GIL while it waits, so nothing deadlocks. stop() from inside a call is Invalid
    (it would wait for itself)."""
    errors = []

    class Reentrant(Recorder):
        cp = None

        def start(self, inst):
            name = inst["metadata"]["name"]
            store.create({"kind": "ConfigMap", "metadata": {"name": name}, "spec": {"a": 1}})
            cm = store.get("ConfigMap", f"default/{name}")
            cm["spec"]["a"] = 2
            store.update(cm)
            cur = store.get("Instance", f"default/{name}")
            assert cur["metadata"]["uid"] == inst["metadata"]["uid"]
            store.update(cur)  # a no-op update of the very object being started
            assert isinstance(self.cp.stats(), dict)
            with contextlib.suppress(floyd.NotFound):
                self.cp.endpoints(SVC)
            try:
                self.cp.stop()
            except floyd.Invalid as e:
                errors.append(e.field)
            return super().start(inst)

        def stop(self, inst):
            store.delete("ConfigMap", f"default/{inst['metadata']['name']}")
            super().stop(inst)

    d = Reentrant()
    cp = cp_factory(d)
    d.cp = cp
    cp.start()
    store.create(service())
    store.create(replicaset(3))
    eventually(lambda: len(endpoints(cp)) == 3)
    assert len(store.list("ConfigMap")[0]) == 3
    assert errors == ["stop"] * 3
    assert not cp.stopped
    cp.scale(RS, 0, kind="ReplicaSet")
    eventually(lambda: not store.list("ConfigMap")[0] and not d.running)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exception_is_a_failure_then_reraised_to_the_host(store, cp_factory, exc):
    class Raises(Recorder):
        def start(self, inst):
            raise exc("from the driver")

    cp = cp_factory(Raises())
    cp.start()
    store.create(replicaset(1))
    m = eventually(
        lambda: (instances(store) or [{}])[0].get("status", {}).get("message"),
        what="a failed start",
    )
    assert m == f"start failed: start raised {exc.__name__}: from the driver"
    # Kept for the host: the next call raises it (once), on the caller's thread.
    with pytest.raises(exc, match="from the driver"):
        cp.stats()
    assert cp.stats()["driverStartFailures"] == 1


def test_base_exception_is_reraised_by_stop_after_stopping(store):
    class Raises(Recorder):
        def start(self, inst):
            raise KeyboardInterrupt

    cp = floyd.ControlPlane(store, Raises())
    cp.start()
    store.create(replicaset(1))
    eventually(lambda: (instances(store) or [{}])[0].get("status", {}).get("restartCount"))
    with pytest.raises(KeyboardInterrupt):
        cp.stop()
    assert cp.stopped
    cp.stop()


def test_base_exception_does_not_kill_the_process():
    """In a fresh interpreter: the driver raises SystemExit and KeyboardInterrupt on pool
    threads; the host keeps running and exits normally."""
    out = assert_isolated_ok(
        """
        import time, floyd
        s = floyd.Store.memory()
        class D:
            n = 0
            def start(self, inst):
                D.n += 1
                raise (SystemExit(3) if D.n % 2 else KeyboardInterrupt())
            def stop(self, inst):
                raise SystemExit(4)
        cp = floyd.ControlPlane(s, D())
        cp.start()
        s.create({"kind": "ReplicaSet", "metadata": {"name": "w"}, "spec": {"replicas": 4,
                  "selector": {"matchLabels": {"a": "b"}},
                  "template": {"metadata": {"labels": {"a": "b"}}, "spec": {}}}})
        while D.n < 4:
            time.sleep(0.01)
        try:
            cp.stop()
        except (SystemExit, KeyboardInterrupt) as e:
            print("reraised", type(e).__name__)
        print("alive", D.n)
        """
    )
    assert "alive 4" in out and "reraised" in out


def test_use_after_stop_is_shutdown(store):
    cp = floyd.ControlPlane(store, Recorder())
    cp.start()
    cp.stop()
    cp.stop()  # idempotent
    assert cp.stopped and "stopped" in repr(cp)
    for call in [
        cp.start,
        lambda: cp.scale(RS, 2),
        lambda: cp.scale(RS, 2, kind="ReplicaSet"),
        lambda: cp.endpoints(SVC),
        lambda: cp.pick(SVC),
        lambda: cp.__enter__(),
    ]:
        with pytest.raises(floyd.ShutDown):
            call()
    assert cp.stats()["runningInstances"] == 0
    assert cp.running_instances() == []


def test_stop_before_start_and_scale_errors(store, cp_factory):
    cp = cp_factory(Recorder())
    with pytest.raises(floyd.NotFound):
        cp.scale("default/missing", 1)
    with pytest.raises(floyd.NotFound):
        cp.scale("default/missing", 1, kind="ReplicaSet")
    cp.stop()
    with pytest.raises(floyd.ShutDown):
        cp.start()


def test_scale_deployment_sets_replicas(store, cp_factory):
    cp = cp_factory(Recorder())
    d = replicaset(3)
    d["kind"] = "Deployment"
    store.create(d)
    out = cp.scale("default/web", 5)
    assert out["kind"] == "Deployment" and out["spec"]["replicas"] == 5
    assert store.get("Deployment", "default/web")["spec"]["replicas"] == 5


class _NoStop:
    def start(self, inst):
        return None


class _NotCallable:
    start = 1
    stop = 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": 257}, "workers"),
        ({"workers": -1}, "workers"),
        ({"workers": float("nan")}, "workers"),
        ({"workers": 2.0}, "workers"),
        ({"workers": "2"}, "workers"),
        ({"workers": True}, "workers"),
        ({"workers": 2**70}, "workers"),
        ({"burst_replicas": 0}, "burst_replicas"),
        ({"burst_replicas": 501}, "burst_replicas"),
        ({"burst_replicas": float("inf")}, "burst_replicas"),
        ({"driver_threads": 0}, "driver_threads"),
        ({"driver_threads": 10**6}, "driver_threads"),
        ({"driver_threads": [1]}, "driver_threads"),
        ({"retry_base": float("nan")}, "retry_base"),
        ({"retry_base": -1.0}, "retry_base"),
        ({"retry_base": 0}, "retry_base"),
        ({"retry_base": 10.0, "retry_max": 1.0}, "retry_base"),
        ({"retry_max": float("inf")}, "retry_max"),
        ({"retry_max": 1e300}, "retry_max"),
        ({"retry_max": "1"}, "retry_max"),
        ({"restart_backoff": float("nan")}, "restart_backoff"),
        ({"restart_backoff": -0.5}, "restart_backoff"),
        ({"restart_backoff_max": float("inf")}, "restart_backoff_max"),
        ({"restart_backoff_max": [1]}, "restart_backoff_max"),
        ({"driver_timeout": 0}, "driver_timeout"),
        ({"driver_timeout": -1.0}, "driver_timeout"),
        ({"driver_timeout": float("nan")}, "driver_timeout"),
        ({"driver_timeout": float("inf")}, "driver_timeout"),
        ({"driver_timeout": 1e6}, "driver_timeout"),
        ({"driver_timeout": "60"}, "driver_timeout"),
        ({"clock": object()}, "clock"),
        ({"loop": "loop"}, "loop"),
        ({"loop": object()}, "loop"),
    ],
)
def test_bad_constructor_args(store, kwargs, field):
    before = threads_now()
    with pytest.raises(floyd.Invalid) as ei:
        floyd.ControlPlane(store, Recorder(), **kwargs)
    assert ei.value.field == field, ei.value
    assert threads_now() == before


@pytest.mark.parametrize(
    ("store_arg", "driver", "field"),
    [
        (None, Recorder(), "store"),
        ("store", Recorder(), "store"),
        ("OK", None, "driver"),
        ("OK", object(), "driver"),
        ("OK", _NoStop(), "driver"),
        ("OK", _NotCallable(), "driver"),
        ("OK", {"start": print, "stop": print}, "driver"),
    ],
)
def test_bad_store_or_driver(store, store_arg, driver, field):
    with pytest.raises(floyd.Invalid) as ei:
        floyd.ControlPlane(store if store_arg == "OK" else store_arg, driver)
    assert ei.value.field == field


def test_closed_store_is_shutdown():
    s = floyd.Store.memory()
    s.close()
    with pytest.raises(floyd.ShutDown):
        floyd.ControlPlane(s, Recorder())


@pytest.mark.parametrize(
    "replicas", [-1, 2**31, 2**64, -(2**70), 1.5, float("nan"), "3", True, None, [1]]
)
def test_bad_replicas(store, cp_factory, replicas):
    store.create(replicaset(1))
    cp = cp_factory(Recorder())
    with pytest.raises(floyd.Invalid) as ei:
        cp.scale(RS, replicas, kind="ReplicaSet")
    assert ei.value.field == "spec.replicas"
    assert store.get("ReplicaSet", RS)["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda cp: cp.scale(RS, 1, kind="Pod"), "kind"),
        (lambda cp: cp.scale(RS, 1, kind=3), "kind"),
        (lambda cp: cp.scale(5, 1), "key"),
        (lambda cp: cp.scale(b"x", 1), "key"),
        (lambda cp: cp.endpoints(None), "service_key"),
        (lambda cp: cp.endpoints("\ud800"), "service_key"),
        (lambda cp: cp.pick(7), "service_key"),
        (lambda cp: cp.pick(SVC, hint=5), "hint"),
        (lambda cp: cp.report_exit(5, "crashed"), "instance_key"),
        (lambda cp: cp.report_exit(None, "crashed"), "instance_key"),
        (lambda cp: cp.report_exit("default/web-x", 3), "message"),
        (lambda cp: cp.report_exit("default/web-x", None), "message"),
    ],
)
def test_bad_method_args(store, cp_factory, call, field):
    cp = cp_factory(Recorder())
    with pytest.raises(floyd.Invalid) as ei:
        call(cp)
    assert ei.value.field == field


def test_report_exit_restarts_the_instance_with_backoff(store, cp_factory):
    d = Recorder()
    cp = cp_factory(d, restart_backoff=0.05, restart_backoff_max=0.1)
    cp.start()
    store.create(replicaset(1))
    eventually(lambda: len(instances(store)) == 1 and ready(instances(store)[0]))
    [inst] = instances(store)
    key = f"default/{inst['metadata']['name']}"
    assert inst["status"]["restartCount"] == 0
    assert cp.report_exit(key, "segfault") is None
    # Restarted after the backoff: the same instance, started again, one restart more.
    eventually(
        lambda: (i := store.get("Instance", key))["status"]["restartCount"] == 1 and ready(i),
        what="a restart",
    )
    with d.lock:
        assert d.started == [inst["metadata"]["uid"]] * 2
    assert cp.stats()["driverStarts"] == 2
    assert len(instances(store)) == 1


def test_report_exit_of_an_instance_not_running_is_notfound(store, cp_factory):
    cp = cp_factory(Recorder())
    with pytest.raises(floyd.NotFound):
        cp.report_exit("default/nope", "gone")
    with pytest.raises(TypeError):
        cp.report_exit("default/nope")  # type: ignore[call-arg]
    cp.stop()
    with pytest.raises(floyd.ShutDown):
        cp.report_exit("default/nope", "gone")


def test_hung_start_fails_at_the_driver_timeout_and_its_late_result_is_ignored(store, cp_factory):
    release = threading.Event()

    class HangFirst(Recorder):
        hung = None

        def start(self, inst):
            with self.lock:
                first = self.hung is None
                if first:
                    self.hung = inst["metadata"]["name"]
            if first:
                release.wait(60)
                return {"address": "late:1"}
            return super().start(inst)

    d = HangFirst()
    # A long backoff: the timed-out start is not retried during the test.
    cp = cp_factory(d, driver_threads=2, driver_timeout=0.5, restart_backoff=300.0)
    cp.start()
    try:
        store.create(replicaset(2))
        key = eventually(lambda: d.hung and f"default/{d.hung}", what="the hung start")

        def status():
            return (store.get("Instance", key) or {}).get("status", {})

        eventually(lambda: status().get("conditions", [{}])[0].get("reason") == "StartTimedOut")
        assert status()["restartCount"] == 1 and "did not finish within" in status()["message"]
        # The other instance runs meanwhile; the stuck thread is replaced.
        eventually(lambda: sum(ready(i) for i in instances(store)) == 1, what="the other one")
        stats = cp.stats()
        assert stats["driverTimeouts"] == 1 and stats["driverThreadsReplaced"] == 1
    finally:
        release.set()
    eventually(lambda: cp.stats()["driverLateResults"] == 1, what="the late result")
    assert status()["conditions"][0]["reason"] == "StartTimedOut"
    assert "address" not in status() or status()["address"] is None
    assert key not in cp.running_instances()


def test_unknown_keyword_is_typeerror(store):
    with pytest.raises(TypeError):
        floyd.ControlPlane(store, Recorder(), wokers=2)


@pytest.fixture
def running_loop():
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    loop.close()


class AsyncRecorder(Recorder):
    """Records, for every call, the loop its coroutine ran on and the thread it ran in."""

    def __init__(self):
        super().__init__()
        self.ran_on = []  # (method, running loop, thread ident)

    def _where(self, method):
        with self.lock:
            self.ran_on.append((method, asyncio.get_running_loop(), threading.get_ident()))

    async def start(self, inst):
        await asyncio.sleep(0.01)
        self._where("start")
        return Recorder.start(self, inst)

    async def stop(self, inst):
        await asyncio.sleep(0.01)
        self._where("stop")
        Recorder.stop(self, inst)


def loop_thread(loop):
    """The ident of the thread running `loop`."""
    f = concurrent.futures.Future()
    loop.call_soon_threadsafe(lambda: f.set_result(threading.get_ident()))
    return f.result(10)


def test_async_driver_runs_on_the_given_loop(store, cp_factory, running_loop):
    d = AsyncRecorder()
    cp = cp_factory(d, loop=running_loop)
    cp.start()
    store.create(service())
    store.create(replicaset(3))
    eventually(lambda: len(endpoints(cp)) == 3)
    cp.scale(RS, 1, kind="ReplicaSet")
    eventually(lambda: len(d.running) == 1 and not cp.stats()["agentQueue"])
    with d.lock:
        ran_on = list(d.ran_on)
    methods = [m for m, _, _ in ran_on]
    assert methods.count("start") >= 3 and methods.count("stop") >= 2, ran_on
    # Every coroutine ran on the loop passed as loop=, in the thread running that loop.
    thread = loop_thread(running_loop)
    assert thread != threading.get_ident()
    for method, loop, ident in ran_on:
        assert loop is running_loop, f"{method} ran on {id(loop):#x}, not {id(running_loop):#x}"
        assert ident == thread, f"{method} ran in thread {ident}, not the loop's {thread}"


def test_async_driver_raising_on_the_loop(store, cp_factory, running_loop):
    class Fails(AsyncRecorder):
        async def start(self, inst):
            await asyncio.sleep(0)
            raise ValueError("async boom")

    cp = cp_factory(Fails(), loop=running_loop)
    cp.start()
    store.create(replicaset(1))
    m = eventually(lambda: (instances(store) or [{}])[0].get("status", {}).get("message"))
    assert m == "start failed: start raised ValueError: async boom"


def test_async_driver_without_loop_fails_cleanly(store, cp_factory, recwarn):
    cp = cp_factory(AsyncRecorder())
    cp.start()
    store.create(replicaset(1))
    m = eventually(lambda: (instances(store) or [{}])[0].get("status", {}).get("message"))
    assert "start returned an awaitable" in m and "loop=" in m
    gc.collect()
    # The coroutine was closed, not leaked un-awaited.
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
def test_stop_does_not_hang_on_a_loop_that_never_runs(store):
    loop = asyncio.new_event_loop()  # never run
    try:
        cp = floyd.ControlPlane(store, AsyncRecorder(), loop=loop)
        cp.start()
        store.create(replicaset(2))
        eventually(lambda: cp.stats()["runningInstances"] == 2)  # both starts in flight
        t = time.monotonic()
        cp.stop()
        assert time.monotonic() - t < 5
    finally:
        loop.close()


def test_gil_is_free_while_the_driver_runs(store, cp_factory):
    """A driver on pool threads and a Python thread on the host both make progress."""
    d = Recorder()
    cp = cp_factory(d, driver_threads=4)
    cp.start()
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        store.create(replicaset(20))
        eventually(lambda: len(d.running) == 20)
        cp.stop()
    finally:
        stop.set()
        t.join()
    assert counter[0] > 0


def test_cycle_through_the_driver_is_collected_and_stopped(store):
    base = threads_now()

    class Holder(Recorder):
        cp = None

    d = Holder()
    cp = floyd.ControlPlane(store, d)
    d.cp = cp
    cp.start()
    store.create(replicaset(1))
    eventually(lambda: len(d.running) == 1)
    del cp, d
    gc.collect()
    eventually(lambda: threads_now() == base, what="the collected control plane to stop")


def test_exit_without_stop_does_not_hang():
    """An interpreter that exits with a control plane still running (and a driver call in
    flight) stops it at exit and returns normally."""
    out = assert_isolated_ok(
        """
        import threading, time, floyd
        s = floyd.Store.memory()
        entered = threading.Event()
        class D:
            def start(self, inst):
                entered.set()
                time.sleep(0.3)
                return {"address": "127.0.0.1:1"}
            def stop(self, inst):
                pass
        cp = floyd.ControlPlane(s, D())
        cp.start()
        s.create({"kind": "ReplicaSet", "metadata": {"name": "w"}, "spec": {"replicas": 3,
                  "selector": {"matchLabels": {"a": "b"}},
                  "template": {"metadata": {"labels": {"a": "b"}}, "spec": {}}}})
        entered.wait(10)
        print("exiting")
        """,
        timeout=60,
    )
    assert "exiting" in out


def deployment(replicas, version="v1", name="web", deadline=600, strategy=None):
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"version": version}},
            "strategy": strategy
            or {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": deadline,
        },
    }


def set_version(store, version, key="default/web"):
    while True:  # the controller writes the status concurrently
        d = store.get("Deployment", key)
        d["spec"]["template"]["spec"]["version"] = version
        try:
            return store.update(d)
        except floyd.Conflict:
            continue


class VersionRecorder(Recorder):
    """Also records which version each running instance runs."""

    def __init__(self):
        super().__init__()
        self.versions = {}

    def start(self, inst):
        out = super().start(inst)
        with self.lock:
            self.versions[inst["metadata"]["uid"]] = inst["spec"]["version"]
        return out

    def stop(self, inst):
        super().stop(inst)
        with self.lock:
            self.versions.pop(inst["metadata"]["uid"], None)

    def running_versions(self):
        with self.lock:
            return sorted(self.versions.values())


def test_deployment_rolling_update_and_rollback(store, cp_factory):
    """The issue's end-to-end case: a Deployment of 5 instances run by a Python driver, a
    rolling update, a rollback, all through the binding."""
    d = VersionRecorder()
    cp = cp_factory(d)
    cp.start()
    store.create(service())
    store.create(deployment(5))
    status = cp.wait_for_rollout("default/web", timeout=60)
    assert status["readyReplicas"] == 5 and status["updatedReplicas"] == 5
    assert d.running_versions() == ["v1"] * 5
    eventually(lambda: len(endpoints(cp)) == 5)

    set_version(store, "v2")
    status = cp.wait_for_rollout("default/web", 60)
    assert status["updatedReplicas"] == 5 and status["observedGeneration"] == 2
    eventually(lambda: d.running_versions() == ["v2"] * 5)

    assert cp.rollback("default/web") == 1
    cp.wait_for_rollout("default/web", 60)
    eventually(lambda: d.running_versions() == ["v1"] * 5)
    assert store.get("Deployment", "default/web")["spec"]["template"]["spec"]["version"] == "v1"
    with pytest.raises(floyd.NotFound):
        cp.rollback("default/web", 42)

    # Scale through the binding (a Deployment by default).
    cp.scale("default/web", 2)
    eventually(lambda: d.running_versions() == ["v1"] * 2)
    eventually(lambda: len(endpoints(cp)) == 2)


def test_pause_resume(store, cp_factory):
    d = VersionRecorder()
    cp = cp_factory(d)
    cp.start()
    store.create(deployment(2))
    cp.wait_for_rollout("default/web", 60)
    paused = cp.pause("default/web")
    assert paused["spec"]["paused"] is True
    set_version(store, "v2")
    time.sleep(0.5)
    assert d.running_versions() == ["v1", "v1"]
    resumed = cp.resume("default/web")
    assert resumed["spec"]["paused"] is False
    cp.wait_for_rollout("default/web", 60)
    eventually(lambda: d.running_versions() == ["v2", "v2"])


def test_progress_deadline_exceeded(store, cp_factory):
    class Broken(Recorder):
        def start(self, inst):
            if inst["spec"]["version"] == "bad":
                raise RuntimeError("crash on boot")
            return super().start(inst)

    cp = cp_factory(Broken())
    cp.start()
    store.create(deployment(2, deadline=1))
    cp.wait_for_rollout("default/web", 60)
    set_version(store, "bad")
    t = time.monotonic()
    with pytest.raises(floyd.Expired, match="ProgressDeadlineExceeded") as ei:
        cp.wait_for_rollout("default/web", timeout=60)
    assert ei.value.kind == "Expired"
    assert time.monotonic() - t < 30


def test_wait_for_rollout_timeout_and_errors(store, cp_factory):
    class Never(Recorder):
        def start(self, inst):
            raise RuntimeError("never starts")

    cp = cp_factory(Never())
    cp.start()
    store.create(deployment(1))
    t = time.monotonic()
    with pytest.raises(floyd.Expired, match="timed out after 0.300s") as ei:
        cp.wait_for_rollout("default/web", timeout=0.3)
    assert "ProgressDeadlineExceeded" not in str(ei.value)
    assert 0.25 < time.monotonic() - t < 5
    with pytest.raises(floyd.NotFound):
        cp.wait_for_rollout("default/missing", 1)
    for bad in [float("nan"), -1, float("inf"), 1e300, "1", True]:
        with pytest.raises(floyd.Invalid) as ei:
            cp.wait_for_rollout("default/web", bad)
        assert ei.value.field == "timeout"
    for bad in [-1, 1.5, "1", True, 2**70]:
        with pytest.raises(floyd.Invalid) as ei:
            cp.rollback("default/web", bad)
        assert ei.value.field == "to_revision"
    for call in (cp.pause, cp.resume, cp.promote):
        with pytest.raises(floyd.NotFound):
            call("default/missing")
        with pytest.raises(floyd.Invalid) as ei:
            call(None)
        assert ei.value.field == "key"
    cp.stop()
    for call in (
        lambda: cp.wait_for_rollout("default/web", 1),
        lambda: cp.rollback("default/web"),
        lambda: cp.pause("default/web"),
        lambda: cp.resume("default/web"),
        lambda: cp.promote("default/web"),
    ):
        with pytest.raises(floyd.ShutDown):
            call()


def test_wait_for_rollout_releases_the_gil(store, cp_factory):
    class Never(Recorder):
        def start(self, inst):
            raise RuntimeError("never starts")

    cp = cp_factory(Never())
    cp.start()
    store.create(deployment(1))
    counter = [0]
    done = threading.Event()

    def spin():
        while not done.is_set():
            counter[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        with pytest.raises(floyd.Expired):
            cp.wait_for_rollout("default/web", 0.5)
    finally:
        done.set()
        t.join()
    assert counter[0] > 1000


def test_wait_for_rollout_is_interruptible():
    """SIGINT during wait_for_rollout raises KeyboardInterrupt promptly."""
    out = assert_isolated_ok(
        """
        import os, signal, threading, time, floyd
        s = floyd.Store.memory()
        class D:
            def start(self, inst):
                raise RuntimeError("never")
            def stop(self, inst):
                pass
        cp = floyd.ControlPlane(s, D())
        cp.start()
        s.create({"kind": "Deployment", "metadata": {"name": "w"}, "spec": {"replicas": 1,
                  "selector": {"matchLabels": {"a": "b"}},
                  "template": {"metadata": {"labels": {"a": "b"}}, "spec": {}}}})
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t = time.monotonic()
        try:
            cp.wait_for_rollout("default/w", None)
        except KeyboardInterrupt:
            print("interrupted after", round(time.monotonic() - t, 1))
        cp.stop()
        """
    )
    assert "interrupted after 0.3" in out or "interrupted after 0.4" in out, out


def test_driver_base_exception_reaches_wait_for_rollout(store, cp_factory):
    class Raises(Recorder):
        def start(self, inst):
            raise KeyboardInterrupt("driver")

    cp = cp_factory(Raises())
    cp.start()
    store.create(deployment(1))
    with pytest.raises(KeyboardInterrupt, match="driver"):
        cp.wait_for_rollout("default/web", 30)


@pytest.mark.parametrize("mode", [[], ["--fake"]], ids=["processes", "fake"])
def test_example_host_runs(mode):
    import subprocess
    import sys
    from pathlib import Path

    host = Path(__file__).resolve().parents[3] / "examples" / "python" / "host.py"
    p = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(host), *mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    assert "rolled back to revision 1" in p.stdout and p.stdout.rstrip().endswith("done")
