"""Health probes through the Python binding: a driver's own `probe(instance, probe)` decides
readiness and liveness; one that raises or returns garbage is a probe error (never a
crash); without `probe`, the built-in tcpSocket handler probes a real socket."""

import socket
import threading
import time

import pytest

import floyd


def eventually(cond, timeout=20.0, what="condition"):
    """Polls `cond` (a liveness bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def replicaset(replicas, **probes):
    return {
        "kind": "ReplicaSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"version": "1", **probes},
            },
        },
    }


def ready_condition(inst):
    for c in inst.get("status", {}).get("conditions", []):
        if c.get("type") == "Ready":
            return c
    return {}


def ready_count(store):
    return sum(ready_condition(i).get("status") == "True" for i in store.list("Instance")[0])


class Prober:
    """Starts everything; answers probes from `healthy[type]` and records what it was given."""

    def __init__(self, address="127.0.0.1:1"):
        self.lock = threading.Lock()
        self.healthy = {"readiness": False, "liveness": True, "startup": True}
        self.seen = []
        self.starts = 0
        self.stops = 0
        self.address = address

    def start(self, inst):
        with self.lock:
            self.starts += 1
        return {"address": self.address}

    def stop(self, inst):
        with self.lock:
            self.stops += 1

    def probe(self, inst, probe):
        with self.lock:
            self.seen.append((inst["metadata"]["name"], probe))
            return self.healthy[probe["type"]]


READINESS = {"exec": {"command": ["unused"]}, "periodSeconds": 1}


def test_the_drivers_probe_decides_readiness(store):
    d = Prober()
    with floyd.ControlPlane(store, d) as cp:
        store.create({"kind": "Service", "metadata": {"name": "web"},
                      "spec": {"selector": {"app": "web"}}})
        store.create(replicaset(2, readinessProbe=READINESS))
        eventually(lambda: d.starts == 2 and len(d.seen) >= 2, what="probes")

        def reasons():
            return {ready_condition(i).get("reason") for i in store.list("Instance")[0]}

        # Not ready from the start; three failures in a row (failureThreshold) say why.
        assert ready_count(store) == 0 and cp.endpoints("default/web") == []
        eventually(lambda: reasons() == {"ReadinessProbeFailed"}, what="failed readiness")
        assert ready_count(store) == 0 and cp.endpoints("default/web") == []
        assert {ready_condition(i)["message"] for i in store.list("Instance")[0]} == {
            "driver.probe returned False"
        }
        # The probe as the driver sees it: the spec with its defaults and its type.
        _, p = d.seen[0]
        assert p["type"] == "readiness" and p["exec"] == {"command": ["unused"]}
        assert (p["periodSeconds"], p["timeoutSeconds"], p["failureThreshold"]) == (1, 1, 3)
        assert p["successThreshold"] == 1 and p["initialDelaySeconds"] == 0

        with d.lock:
            d.healthy["readiness"] = True
        eventually(lambda: ready_count(store) == 2, what="ready")
        eventually(lambda: len(cp.endpoints("default/web")) == 2, what="endpoints")
        stats = cp.stats()
        assert stats["probes"] >= 4 and stats["probeFailures"] >= 2
        assert stats["probeRestarts"] == 0


def test_a_failing_liveness_probe_restarts_through_the_driver(store):
    d = Prober()
    d.healthy["liveness"] = False
    with floyd.ControlPlane(store, d, restart_backoff=0.05, restart_backoff_max=0.1) as cp:
        store.create(replicaset(1, livenessProbe={"tcpSocket": {"port": 1}, "periodSeconds": 1,
                                                  "failureThreshold": 1}))
        eventually(lambda: d.stops >= 2 and d.starts >= 3, what="two restarts")
        assert cp.stats()["probeRestarts"] >= 2
        inst = store.list("Instance")[0][0]
        assert inst["status"]["restartCount"] >= 2


class Raising(Prober):
    def probe(self, inst, probe):
        with self.lock:
            self.seen.append((inst["metadata"]["name"], probe))
        raise RuntimeError("health endpoint unreachable")


class Garbage(Prober):
    def probe(self, inst, probe):
        with self.lock:
            self.seen.append((inst["metadata"]["name"], probe))
        return "yes"  # not a bool


@pytest.mark.parametrize("driver", [Raising, Garbage])
def test_a_probe_that_raises_or_returns_garbage_is_an_error_not_a_verdict(store, driver):
    d = driver()
    with floyd.ControlPlane(store, d) as cp:
        store.create(replicaset(1, livenessProbe={"exec": {"command": ["x"]}, "periodSeconds": 1,
                                                  "failureThreshold": 1},
                                readinessProbe=READINESS))
        # Errors are tried three times per period, then discarded: no restart, not ready.
        eventually(lambda: len(d.seen) >= 9, what="probe attempts")
        stats = cp.stats()
        assert stats["probeFailures"] == 0 and stats["probeRestarts"] == 0
        assert d.stops == 0
        assert ready_count(store) == 0


def test_without_a_probe_method_the_builtin_tcp_probe_runs(store):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]

    class NoProbe:
        def start(self, inst):
            return {"address": f"127.0.0.1:{port}"}

        def stop(self, inst):
            pass

    try:
        with floyd.ControlPlane(store, NoProbe()):
            store.create(replicaset(2, readinessProbe={"tcpSocket": {"port": port},
                                                       "periodSeconds": 1}))
            eventually(lambda: ready_count(store) == 2, what="ready through the built-in probe")
    finally:
        listener.close()


def test_a_probe_attribute_that_is_not_callable_is_invalid(store):
    class Bad(Prober):
        probe = 5

    with pytest.raises(floyd.Invalid, match="driver.probe"):
        floyd.ControlPlane(store, Bad())


def test_an_invalid_probe_in_a_template_is_never_started(store):
    d = Prober()
    with floyd.ControlPlane(store, d) as cp:
        store.create(replicaset(2, readinessProbe={"tcpSocket": {"port": "nope"}}))
        eventually(lambda: cp.stats()["syncErrors"] == 1, what="the sync error")
        time.sleep(0.2)
        assert d.starts == 0 and store.list("Instance")[0] == []


def test_an_async_probe_is_awaited_on_the_given_loop(store):
    import asyncio

    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()

    class AsyncProber(Prober):
        async def probe(self, inst, probe):
            await asyncio.sleep(0.001)
            assert asyncio.get_running_loop() is loop
            return Prober.probe(self, inst, probe)

    d = AsyncProber()
    d.healthy["readiness"] = True
    try:
        with floyd.ControlPlane(store, d, loop=loop):
            store.create(replicaset(2, readinessProbe=READINESS))
            eventually(lambda: ready_count(store) == 2, what="ready through the async probe")
            assert all(p["type"] == "readiness" for _, p in d.seen)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.close()
