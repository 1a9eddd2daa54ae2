"""floyd.Informer: sync, cache reads, indices, handlers, read-your-own-writes, errors."""

import logging
import threading
import time

import pytest

import floyd
from conftest import assert_isolated_ok, cm


def obj(name, ns="default", labels=None, owner=None, **spec):
    o = cm(name, ns, **spec)
    if labels:
        o["metadata"]["labels"] = labels
    if owner:
        o["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Owner", "name": "o", "uid": owner, "controller": True}
        ]
    return o


def wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture
def seeded(store):
    store.create(obj("a", "ns1", {"app": "web"}, owner="u1", node="n1"))
    store.create(obj("b", "ns1", {"app": "db"}, owner="u1", node="n2"))
    store.create(obj("c", "ns2", {"app": "web"}, node="n1"))
    return store


def test_sync_get_list_and_builtin_indices(seeded):
    inf = floyd.Informer(seeded, "ConfigMap")
    inf.add_index("ns", "namespace")
    inf.add_index("app", "label:app")
    inf.add_index("owner", "owner")
    inf.add_index("node", "field:spec.node")
    assert not inf.has_synced()
    with inf:
        assert inf.wait_for_sync(timeout=10)
        assert inf.has_synced()
        assert inf.get("ns1/a")["spec"]["node"] == "n1"
        assert inf.get("ns1/zzz") is None
        assert [o["metadata"]["name"] for o in inf.list()] == ["a", "b", "c"]
        assert [o["metadata"]["name"] for o in inf.list("app=web")] == ["a", "c"]
        assert [o["metadata"]["name"] for o in inf.list({"matchLabels": {"app": "db"}})] == ["b"]
        assert [o["metadata"]["name"] for o in inf.by_index("ns", "ns1")] == ["a", "b"]
        assert inf.index_keys("app", "web") == ["ns1/a", "ns2/c"]
        assert inf.index_keys("owner", "u1") == ["ns1/a", "ns1/b"]
        assert inf.index_keys("node", "n1") == ["ns1/a", "ns2/c"]
        assert sorted(inf.list_index_values("ns")) == ["ns1", "ns2"]
        assert inf.last_synced_version() >= seeded.resource_version()
        st = inf.stats()
        assert st["cached"] == 3 and st["lists"] >= 1
    assert inf.stopped


def test_namespace_and_selector_scope(seeded):
    with floyd.Informer(seeded, "ConfigMap", namespace="ns1", label_selector="app=web") as inf:
        assert inf.wait_for_sync(10)
        assert [o["metadata"]["name"] for o in inf.list()] == ["a"]


def test_callable_index_and_raising_index_counted(seeded):
    inf = floyd.Informer(seeded, "ConfigMap")
    inf.add_index("first", lambda o: [o["metadata"]["name"][0], "all"])

    def bad(o):
        if o["metadata"]["name"] == "b":
            raise RuntimeError("boom")
        if o["metadata"]["name"] == "c":
            return 42  # not a list of str
        return ("x",)

    inf.add_index("bad", bad)
    with inf:
        assert inf.wait_for_sync(10)
        assert inf.index_keys("first", "all") == ["ns1/a", "ns1/b", "ns2/c"]
        assert [o["metadata"]["name"] for o in inf.by_index("first", "b")] == ["b"]
        assert inf.index_keys("bad", "x") == ["ns1/a"]
        assert inf.stats()["indexErrors"] >= 2
        assert "boom" in inf.stats()["lastCallbackError"] or inf.stats()["lastCallbackError"]


def test_handlers_see_add_update_delete_in_order(store):
    events = []
    done = threading.Event()

    def on_delete(o):
        events.append(("delete", o["metadata"]["name"], o.get("finalStateUnknown", False)))
        done.set()

    with floyd.Informer(store, "ConfigMap") as inf:
        inf.add_event_handler(
            on_add=lambda o: events.append(("add", o["metadata"]["name"])),
            on_update=lambda old, new: events.append(
                ("update", old["spec"]["a"], new["spec"]["a"])
            ),
            on_delete=on_delete,
        )
        assert inf.wait_for_sync(10)
        store.create(obj("x", a=1))
        cur = store.get("ConfigMap", "default/x")
        cur["spec"]["a"] = 2
        store.update(cur)
        store.delete("ConfigMap", "default/x")
        assert done.wait(10)
    assert events == [("add", "x"), ("update", 1, 2), ("delete", "x", False)]


def test_late_handler_gets_synthetic_adds(seeded):
    with floyd.Informer(seeded, "ConfigMap") as inf:
        assert inf.wait_for_sync(10)
        seen = []
        inf.add_event_handler(on_add=lambda o: seen.append(o["metadata"]["name"]))
        assert wait_until(lambda: len(seen) == 3)
        assert sorted(seen) == ["a", "b", "c"]
        seeded.create(obj("d"))
        assert wait_until(lambda: len(seen) == 4)
        assert seen[-1] == "d"


def test_raising_handler_does_not_stop_others(store, caplog):
    good = []
    calls = []

    def bad(o):
        calls.append(o["metadata"]["name"])
        raise ValueError("handler failure")

    with caplog.at_level(logging.ERROR, logger="floyd"):
        with floyd.Informer(store, "ConfigMap") as inf:
            inf.add_event_handler(on_add=bad)
            inf.add_event_handler(on_add=lambda o: good.append(o["metadata"]["name"]))
            assert inf.wait_for_sync(10)
            store.create(obj("p"))
            store.create(obj("q"))
            assert wait_until(lambda: good == ["p", "q"] and len(calls) == 2)
            st = inf.stats()
            assert st["handlerErrors"] == 2
            assert "handler failure" in st["lastCallbackError"]
    assert any("handler failure" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


def test_wait_for_version_read_your_own_writes(store):
    with floyd.Informer(store, "ConfigMap") as inf:
        assert inf.wait_for_sync(10)
        for i in range(20):
            created = store.create(obj(f"w{i}"))
            rv = created["metadata"]["resourceVersion"]
            assert inf.wait_for_version(rv, timeout=10)
            assert inf.wait_for_version(int(rv), timeout=10)
            assert inf.get(f"default/w{i}") is not None
        assert not inf.wait_for_version(10**12, timeout=0.05)


def test_handlers_may_read_the_cache_and_write_the_store(store):
    seen = []

    def on_add(o):
        # GIL-held handler calling back into the informer and store must not deadlock.
        seen.append(inf.get("default/" + o["metadata"]["name"]) is not None)
        if o["metadata"]["name"] == "h0":
            store.create(obj("h1"))

    with floyd.Informer(store, "ConfigMap") as inf:
        inf.add_index("n", lambda o: [o["metadata"]["name"]])
        inf.add_event_handler(on_add=on_add)
        assert inf.wait_for_sync(10)
        store.create(obj("h0"))
        assert wait_until(lambda: len(seen) == 2)
        assert seen == [True, True]


def test_stop_inside_handler_is_invalid_and_stop_while_handler_runs(store):
    errors = []
    started = threading.Event()

    def on_add(o):
        try:
            inf.stop()
        except floyd.Invalid as e:
            errors.append(e)
        started.set()
        time.sleep(0.3)  # stop() from the main thread waits for this, without deadlock

    inf = floyd.Informer(store, "ConfigMap")
    inf.add_event_handler(on_add=on_add)
    inf.start()
    store.create(obj("s"))
    assert started.wait(10)
    inf.stop()
    assert len(errors) == 1 and errors[0].field == "stop"


def test_index_function_calling_informer_is_invalid(store):
    store.create(obj("i"))
    errs = []

    def idx(o):
        try:
            inf.get("default/i")
        except floyd.Invalid as e:
            errs.append(e)
        return []

    with floyd.Informer(store, "ConfigMap") as inf:
        inf.add_index("i", idx)
        assert inf.wait_for_sync(10)
        assert errs


def test_delete_found_by_relist_is_a_tombstone_with_final_state_unknown():
    """K15, client-go's DeletedFinalStateUnknown: the reflector is held while objects are
    deleted and the log is compacted past it; released, its watch is Expired, it relists
    once, and each delete it missed reaches on_delete once, as the last object it knew with
    obj["finalStateUnknown"] = True. The binding exposes no transform hook, so the reflector
    is held in a callable index function (it runs on the reflector thread): it waits on an
    Event for the object "gate" (Event.wait releases the GIL). While it waits it holds a
    cache shard lock, so the test touches only the store (and the atomic
    last_synced_version) until the gate is open."""
    assert floyd.FINAL_STATE_UNKNOWN == "finalStateUnknown"
    kind = "ConfigMap"
    reached, release = threading.Event(), threading.Event()
    lock = threading.Lock()
    calls = []  # ("add" | "update" | "delete", key, obj) in delivery order

    def gate(o):
        if o["metadata"]["name"] == "gate" and not release.is_set():
            reached.set()
            release.wait(30)  # bounded: a failing test never leaves the reflector stuck
        return []

    def key(o):
        return f"{o['metadata']['namespace']}/{o['metadata']['name']}"

    def record(what, o):
        with lock:
            calls.append((what, key(o), o))

    def deletes_of(k):
        with lock:
            return [o for what, kk, o in calls if what == "delete" and kk == k]

    def filler(n):
        for _ in range(n):
            store.create(
                {
                    "kind": "Filler",
                    "metadata": {"name": f"f{store.resource_version()}"},
                    "spec": {"pad": "p" * 200},
                }
            )

    def rv(o):
        return int(o["metadata"]["resourceVersion"])

    def store_state():
        return {key(o): rv(o) for o in store.list(kind)[0]}

    # 4 KiB segments: a few hundred small writes fill several, so a snapshot compacts some.
    store = floyd.Store.memory(segment_size=4096)
    inf = floyd.Informer(store, kind)
    try:
        for i in range(7):
            store.create(obj(f"o{i}", a=1))
        inf.add_index("gate", gate)
        inf.add_event_handler(
            on_add=lambda o: record("add", o),
            on_update=lambda old, new: record("update", new),
            on_delete=lambda o: record("delete", o),
        )
        inf.start()
        assert inf.wait_for_sync(10)
        # A watched delete, and a watched update whose state is what the informer knows last.
        store.delete(kind, "default/o5")
        cur = store.get(kind, "default/o1")
        cur["spec"]["a"] = 2
        store.update(cur)
        assert inf.wait_for_version(store.resource_version(), timeout=10)
        assert wait_until(lambda: len(deletes_of("default/o5")) == 1, timeout=10)
        known = {k: inf.get(k) for k in ("default/o0", "default/o1", "default/o3")}
        assert known["default/o1"]["spec"]["a"] == 2
        assert inf.stats()["expired"] == 0

        try:
            store.create(obj("gate"))
            assert reached.wait(10), "the reflector never reached the gate"
            before = inf.last_synced_version()
            # Past the reflector's segment, so these events are compacted away unseen.
            filler(40)
            cur = store.get(kind, "default/o0")
            cur["spec"]["a"] = 3  # the informer never sees this state
            store.update(cur)
            store.delete(kind, "default/o0")
            store.delete(kind, "default/o1")
            cur = store.get(kind, "default/o2")
            cur["spec"]["a"] = 9
            store.update(cur)
            store.create(obj("new"))
            filler(80)
            store.delete(kind, "default/o3")
            filler(80)
            snap = store.snapshot()
            assert snap["compactedSegments"] > 0, f"the test needs a compaction: {snap}"
            assert store.stats()["oldestVersion"] > before + 1
            assert inf.last_synced_version() == before, "the reflector was not held"
        finally:
            release.set()

        assert wait_until(
            lambda: inf.stats()["lists"] == 2
            and inf.last_synced_version() >= store.resource_version(),
            timeout=10,
        ), inf.stats()
        # A watched delete after the relist: the handler has seen everything before it.
        store.delete(kind, "default/o4")
        assert wait_until(lambda: len(deletes_of("default/o4")) == 1, timeout=10)

        st = inf.stats()
        assert st["expired"] == 1, st
        assert st["lists"] == 2, f"exactly one relist: {st}"
        assert "expired" in st["lastError"].lower(), st
        assert st["handlerErrors"] == 0 and st["indexErrors"] == 0, st
        for k in ("default/o0", "default/o1", "default/o3"):
            dels = deletes_of(k)
            assert len(dels) == 1, (k, dels)
            tomb = dict(dels[0])
            assert tomb.pop("finalStateUnknown") is True, (k, dels[0])
            assert tomb == known[k], (k, tomb, known[k])  # the last state the informer knew
        for k in ("default/o5", "default/o4"):
            dels = deletes_of(k)
            assert len(dels) == 1 and "finalStateUnknown" not in dels[0], (k, dels)
        # The relist delivered the gap's other changes, and nothing twice.
        with lock:
            seen = [(what, k, rv(o)) for what, k, o in calls]
        assert len(seen) == len(set(seen)), seen
        assert ("add", "default/new", rv(store.get(kind, "default/new"))) in seen
        assert ("update", "default/o2", rv(store.get(kind, "default/o2"))) in seen
        # The handler's calls rebuild the store, and so does the cache.
        state = {}
        for what, k, r in seen:
            if what == "delete":
                del state[k]
            else:
                state[k] = r
        assert state == store_state()
        assert {key(o): rv(o) for o in inf.list()} == store_state()
    finally:
        release.set()
        inf.stop()
        store.close()


def test_use_after_stop_is_shutdown(seeded):
    inf = floyd.Informer(seeded, "ConfigMap")
    inf.add_index("ns", "namespace")
    inf.start()
    assert inf.wait_for_sync(10)
    inf.stop()
    inf.stop()  # idempotent
    for call in (
        lambda: inf.get("ns1/a"),
        lambda: inf.list(),
        lambda: inf.by_index("ns", "ns1"),
        lambda: inf.index_keys("ns", "ns1"),
        lambda: inf.list_index_values("ns"),
        lambda: inf.start(),
        lambda: inf.wait_for_sync(1),
        lambda: inf.wait_for_version(1, 1),
        lambda: inf.add_event_handler(on_add=print),
        lambda: inf.add_index("x", "owner"),
    ):
        with pytest.raises(floyd.ShutDown):
            call()
    assert inf.has_synced()
    assert isinstance(inf.stats(), dict)


def test_store_close_ends_waits(store):
    inf = floyd.Informer(store, "NeverSeen")
    store.close()
    with pytest.raises(floyd.FloydError):
        inf.start()
        inf.wait_for_sync(5)
    inf.stop()


@pytest.mark.parametrize(
    "args,kwargs,field",
    [
        ((None, "ConfigMap"), {}, "store"),
        (("store", 1), {}, "kind"),
        (("store", "ConfigMap"), {"resync": float("nan")}, "resync"),
        (("store", "ConfigMap"), {"resync": -1.0}, "resync"),
        (("store", "ConfigMap"), {"resync": True}, "resync"),
        (("store", "ConfigMap"), {"namespace": 3}, "namespace"),
        (("store", "ConfigMap"), {"label_selector": 3}, "label_selector"),
        (("store", ""), {}, "kind"),
    ],
)
def test_bad_constructor_args(store, args, kwargs, field):
    args = tuple(store if a == "store" else a for a in args)
    with pytest.raises(floyd.Invalid) as e:
        floyd.Informer(*args, **kwargs)
    assert e.value.field == field


def test_bad_method_args(store):
    inf = floyd.Informer(store, "ConfigMap")
    with pytest.raises(floyd.Invalid) as e:
        inf.add_index("x", "bogus")
    assert e.value.field == "index"
    for spec in ("label:", "field:", "field:a..b", 3, None):
        with pytest.raises(floyd.Invalid):
            inf.add_index("x", spec)
    with pytest.raises(floyd.Invalid):
        inf.add_index(1, "namespace")
    inf.add_index("dup", "namespace")
    with pytest.raises(floyd.Invalid):
        inf.add_index("dup", "owner")
    for kw in ("on_add", "on_update", "on_delete"):
        with pytest.raises(floyd.Invalid) as e:
            inf.add_event_handler(**{kw: 42})
        assert e.value.field == kw
    with pytest.raises(floyd.Invalid) as e:
        inf.add_event_handler(on_add=print, resync=float("nan"))
    assert e.value.field == "resync"
    with pytest.raises(floyd.Invalid):
        inf.wait_for_sync(timeout=float("nan"))
    with pytest.raises(floyd.Invalid):
        inf.wait_for_version(-1)
    with pytest.raises(floyd.Invalid):
        inf.wait_for_version("abc")
    with pytest.raises(floyd.Invalid):
        inf.get(5)
    with pytest.raises(floyd.FloydError):
        inf.by_index("nope", "x")
    with pytest.raises(TypeError):
        inf.add_event_handler(bogus=1)
    inf.stop()


def test_unsynced_wait_times_out_and_releases_gil(store):
    # A kind that exists only after a while: sync itself is quick, but wait_for_version of a
    # far-future version blocks without the GIL while another thread runs Python.
    with floyd.Informer(store, "ConfigMap") as inf:
        counter = [0]
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                counter[0] += 1

        t = threading.Thread(target=spin)
        t.start()
        assert not inf.wait_for_version(10**12, timeout=0.3)
        stop.set()
        t.join()
        assert counter[0] > 1000


def test_cycle_through_handler_is_collected_and_exit_is_clean():
    assert_isolated_ok(
        """
        import gc, os, floyd

        def informer_threads():
            n = 0
            for t in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{t}/comm") as f:
                    n += f.read().startswith(("floyd-handler", "floyd-reflect"))
            return n

        s = floyd.Store.memory(segment_size=4 << 20)
        inf = floyd.Informer(s, "ConfigMap")
        inf.add_event_handler(on_add=lambda o, inf=inf: inf.get("x/y"))
        inf.start()
        inf.wait_for_sync(10)
        s.create({"kind": "ConfigMap", "metadata": {"name": "a", "namespace": "d"}})
        # A new thread takes its name when it first runs (Rust names it from inside), so a
        # loaded machine may show it unnamed for a moment after start() returns.
        import time
        deadline = time.monotonic() + 10
        while informer_threads() != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert informer_threads() == 2, informer_threads()
        del inf
        gc.collect()
        assert informer_threads() == 0, informer_threads()
        # One left running at exit, with a handler that sleeps: exit must not hang.
        live = floyd.Informer(s, "ConfigMap")
        live.add_event_handler(on_add=lambda o: time.sleep(0.2))
        live.start()
        print("ok")
        """
    )
