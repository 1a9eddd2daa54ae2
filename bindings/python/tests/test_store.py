"""Store, watch and snapshot calls through the binding."""

import os
import pathlib
import threading
import time
import traceback

import pytest

import floyd
from conftest import cm


def test_create_get_list_update_delete(store):
    o = store.create(cm("a", labels=None, replicas=3, flag=True))
    m = o["metadata"]
    assert m["name"] == "a" and m["namespace"] == "default"
    assert m["generation"] == 1 and m["uid"] and m["creationTimestamp"]
    rv = int(m["resourceVersion"])
    # Faithful scalars: True stays a bool, 3 stays an int.
    assert o["spec"]["flag"] is True and o["spec"]["replicas"] == 3
    assert type(o["spec"]["replicas"]) is int
    assert store.get("ConfigMap", "default/a") == o
    assert store.get("ConfigMap", "default/nope") is None
    assert store.get("NoSuchKind", "default/a") is None

    objs, list_rv = store.list("ConfigMap")
    assert [x["metadata"]["name"] for x in objs] == ["a"] and list_rv >= rv

    o["spec"]["replicas"] = 4
    u = store.update(o)
    assert u["metadata"]["generation"] == 2
    assert int(u["metadata"]["resourceVersion"]) > rv

    u["status"] = {"ready": 4}
    s = store.update_status(u)
    assert s["status"] == {"ready": 4} and s["metadata"]["generation"] == 2

    gone = store.delete("ConfigMap", "default/a")
    assert gone["metadata"]["name"] == "a" and gone["metadata"]["deletionTimestamp"]
    assert store.get("ConfigMap", "default/a") is None
    assert store.resource_version() >= int(gone["metadata"]["resourceVersion"])


def test_list_namespace_and_selectors(store):
    store.create({"kind": "ConfigMap", "metadata": {"name": "a", "namespace": "x", "labels": {"app": "web", "tier": "fe"}}})
    store.create({"kind": "ConfigMap", "metadata": {"name": "b", "namespace": "y", "labels": {"app": "db"}}})
    store.create({"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x", "labels": {"app": "web", "legacy": "1"}}})
    names = lambda r: [o["metadata"]["name"] for o in r[0]]
    assert names(store.list("ConfigMap", namespace="x")) == ["a", "c"]
    assert names(store.list("ConfigMap", label_selector="app=web,!legacy")) == ["a"]
    assert names(store.list("ConfigMap", label_selector="app in (web,db)")) == ["a", "c", "b"]
    assert names(store.list("ConfigMap", label_selector="app!=web")) == ["b"]
    assert names(store.list("ConfigMap", label_selector={"matchLabels": {"app": "db"}})) == ["b"]
    assert names(store.list("ConfigMap", label_selector="")) == ["a", "c", "b"]
    assert store.list("Nothing") == ([], store.resource_version())


def test_error_kinds(store):
    o = store.create(cm("a"))
    with pytest.raises(floyd.AlreadyExists):
        store.create(cm("a"))
    with pytest.raises(floyd.NotFound):
        store.update(cm("missing"))
    with pytest.raises(floyd.NotFound):
        store.update_status(cm("missing"))
    with pytest.raises(floyd.NotFound):
        store.delete("ConfigMap", "default/missing")
    with pytest.raises(floyd.NotFound):
        store.delete("NoKind", "default/missing")
    stale = dict(o, metadata=dict(o["metadata"]))
    o["spec"] = {"a": 2}
    store.update(o)
    stale["spec"] = {"a": 3}
    with pytest.raises(floyd.Conflict) as ei:
        store.update(stale)
    assert ei.value.kind == "Conflict" and ei.value.field is None
    with pytest.raises(floyd.Conflict):
        store.delete("ConfigMap", "default/a", resource_version=int(stale["metadata"]["resourceVersion"]))
    with pytest.raises(floyd.Conflict):
        store.delete("ConfigMap", "default/a", resource_version=stale["metadata"]["resourceVersion"])
    cur = store.get("ConfigMap", "default/a")
    store.delete("ConfigMap", "default/a", resource_version=cur["metadata"]["resourceVersion"])
    # All classes are FloydError subclasses and plain Exceptions.
    for name in ["NotFound", "AlreadyExists", "Conflict", "Invalid", "Expired", "ShutDown", "Corrupt", "Io", "Internal"]:
        cls = getattr(floyd, name)
        assert issubclass(cls, floyd.FloydError) and issubclass(cls, Exception)
        assert cls.kind == name and cls.__module__ == "floyd"
    assert issubclass(floyd.Invalid, ValueError)


def test_watch_replay_follow_and_timeout(store):
    store.create(cm("a"))
    w = store.watch("ConfigMap", timeout=0.2)
    assert w.start_version == store.resource_version()
    assert store.watch(from_version=1).start_version == 1
    ev = next(w)
    assert ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "a"
    o = store.get("ConfigMap", "default/a")
    o["spec"] = {"a": 5}
    store.update(o)
    store.create({"kind": "Other", "metadata": {"name": "z"}})
    store.delete("ConfigMap", "default/a")
    rest = list(w)  # ends after 0.2 s without an event
    assert [e["type"] for e in rest] == ["MODIFIED", "DELETED"]
    # from_version replays exactly the events after it, across kinds when kind is None.
    all_events = list(store.watch(from_version=1, timeout=0.1))
    assert [e["object"]["kind"] for e in all_events] == ["ConfigMap", "ConfigMap", "Other", "ConfigMap"]
    with store.watch(timeout=0.05) as w2:
        assert [e["object"]["kind"] for e in w2] == ["Other"]


def test_watch_follows_writes_from_another_thread(store):
    w = store.watch("ConfigMap", timeout=5)
    got = []

    def reader():
        for e in w:
            got.append(e["object"]["metadata"]["name"])
            if len(got) == 3:
                break

    t = threading.Thread(target=reader)
    t.start()
    for n in "abc":
        store.create(cm(n))
    t.join(10)
    assert not t.is_alive() and got == ["a", "b", "c"]


def test_watch_ends_when_store_closes():
    s = floyd.Store.memory()
    w = s.watch()  # follow forever
    done = threading.Event()

    def reader():
        for _ in w:
            pass
        done.set()

    t = threading.Thread(target=reader)
    t.start()
    s.close()
    assert done.wait(10)
    t.join()
    assert list(w) == []


def test_watch_close_ends_iteration(store):
    store.create(cm("a"))
    w = store.watch()
    w.close()
    assert list(w) == []
    w.close()


def test_expired_after_compaction():
    s = floyd.Store.memory(segment_size=16384)
    for i in range(200):
        s.create(cm(f"o{i}", pad="x" * 200))
    info = s.snapshot()
    assert info["compactedSegments"] > 0 and info["path"] is None
    assert s.stats()["oldestVersion"] > 1
    with pytest.raises(floyd.Expired):
        s.watch(from_version=1)
    # From 0 still works: a synthetic ADDED per current object.
    assert len(list(s.watch(from_version=0, timeout=0))) == 200
    s.close()


def test_snapshot_stats_reopen(tmp_path):
    path = tmp_path / "data"
    with floyd.Store.open(path, durability="always") as s:
        assert s.path == str(path) and not s.closed
        assert s.open_report["replayed"] == 0
        for i in range(5):
            s.create(cm(f"o{i}"))
        snap = s.snapshot()
        assert snap["objects"] == 5 and snap["path"] and os.path.exists(snap["path"])
        assert snap["bytes"] > 0 and snap["resourceVersion"] == s.resource_version()
        s.create(cm("after"))
        st = s.stats()
        assert st["durability"] == "always" and st["objects"] == 6
        assert st["snapshotVersion"] == snap["resourceVersion"]
        for k in ["resourceVersion", "events", "segments", "bytes", "oldestVersion", "truncatedBytes"]:
            assert isinstance(st[k], int)
    assert s.closed
    with floyd.Store.open(str(path)) as s2:
        rep = s2.open_report
        assert rep["snapshot"] and rep["snapshotObjects"] == 5 and rep["replayed"] == 1
        assert rep["log"]["segments"] >= 1
        assert len(s2.list("ConfigMap")[0]) == 6
    assert floyd.Store.memory().open_report is None


def test_open_default_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with floyd.Store.open() as s:
        s.create(cm("a"))
    assert (tmp_path / "floyd-data").is_dir()
    assert floyd.DEFAULT_DATA_DIR == "./floyd-data"


def test_open_accepts_pathlike(tmp_path):
    with floyd.Store.open(pathlib.Path(tmp_path) / "p", durability="none") as s:
        assert s.stats()["durability"] == "none"


def test_io_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("not a directory")
    with pytest.raises(floyd.Io):
        floyd.Store.open(str(f))


def test_a_directory_is_open_once_at_a_time(tmp_path):
    path = tmp_path / "data"
    s = floyd.Store.open(path)
    s.create(cm("a"))
    with pytest.raises(floyd.Io, match="in use by this process"):
        floyd.Store.open(path)
    s.close()  # releases the directory although `s` is still referenced
    with floyd.Store.open(path) as again:
        assert again.get("ConfigMap", "default/a") is not None
    with pytest.raises(floyd.ShutDown):
        s.create(cm("b"))


class _NullDriver:
    def start(self, instance):
        return {"address": "127.0.0.1:1"}

    def stop(self, instance):
        pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the platform has no fork")
def test_a_forked_child_is_refused_at_once_and_leaves_the_parent_alone(tmp_path):
    # multiprocessing forks by default on Linux before Python 3.14. A child holding the
    # parent's objects must not write into the parent's files, wait for the parent's
    # threads (which do not exist in the child) when it stops or drops them, or release
    # the parent's directory lock.
    path = tmp_path / "data"
    s = floyd.Store.open(path)
    s.create(cm("a"))
    cp = floyd.ControlPlane(s, _NullDriver(), workers=2)
    cp.start()
    s.create(
        {
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"version": "v1"}},
            },
        }
    )
    assert cp.wait_for_rollout("default/web", timeout=30)["readyReplicas"] == 2
    inf = floyd.Informer(s, "ConfigMap")
    inf.start()
    assert inf.wait_for_sync(10)
    q = floyd.WorkQueue()
    q.add("queued")
    q.add_after("later", 3600)  # its timer thread waits
    w = s.watch("ConfigMap", s.resource_version(), None)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 0
        try:
            # Every call on an inherited object is refused at once: nothing here would
            # update it or wake a waiter, and a thread of the parent may have held its locks.
            for call in (
                lambda: s.create(cm("child")),
                lambda: s.get("ConfigMap", "default/a"),
                lambda: s.list("ConfigMap"),
                lambda: inf.get("default/a"),
                lambda: inf.wait_for_version(2**62, None),
                lambda: cp.wait_for_rollout("default/web", timeout=60),
            ):
                try:
                    call()
                    code = 1
                except floyd.ShutDown:
                    pass
            try:
                floyd.Store.open(path)
                code = 2
            except floyd.Io:
                pass
            # An inherited watch ends, as it does when its store closes.
            if next(iter(w), None) is not None:
                code = 5
            # An inherited queue is shut down and empty.
            if len(q) != 0 or q.get() is not None:
                code = 4
            cp.stop()
            inf.stop()
            q.shut_down()
            s.close()
            del cp, inf, q, s
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    for _ in range(300):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(floyd.Io, match="in use by this process"):
        floyd.Store.open(path)
    # Everything still works in the parent.
    s.create(cm("b"))
    assert inf.wait_for_version(s.resource_version(), 10)
    assert sorted(o["metadata"]["name"] for o in inf.list()) == ["a", "b"]
    cp.scale("default/web", 3)
    assert cp.wait_for_rollout("default/web", timeout=30)["readyReplicas"] == 3
    assert q.get() == "queued"
    q.done("queued")
    assert len(q) == 0
    cp.stop()
    inf.stop()
    q.shut_down()
    s.close()


def test_corrupt_segment(tmp_path):
    path = tmp_path / "data"
    with floyd.Store.open(path, segment_size=65536) as s:
        s.create(cm("a"))
    segs = sorted((path / "log").glob("seg-*.log"))
    assert segs
    with open(segs[0], "r+b") as fh:
        fh.truncate(4096 * 3)  # the header still says 64 KiB
    with pytest.raises(floyd.Corrupt):
        floyd.Store.open(path, segment_size=65536)


def test_use_after_close_and_double_close():
    s = floyd.Store.memory()
    s.create(cm("a"))
    s.close()
    s.close()  # no-op
    calls = [
        lambda: s.create(cm("b")),
        lambda: s.get("ConfigMap", "default/a"),
        lambda: s.list("ConfigMap"),
        lambda: s.update(cm("a")),
        lambda: s.update_status(cm("a")),
        lambda: s.delete("ConfigMap", "default/a"),
        lambda: s.watch(),
        lambda: s.snapshot(),
        lambda: s.stats(),
    ]
    for c in calls:
        with pytest.raises(floyd.ShutDown):
            c()
    with floyd.Store.memory() as s2:
        pass
    with pytest.raises(floyd.ShutDown):
        s2.get("ConfigMap", "default/a")


def test_context_manager_closes_on_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with floyd.Store.open(tmp_path / "d") as s:
            raise RuntimeError("boom")
    assert s.closed


def test_gc_of_unclosed_store(tmp_path):
    s = floyd.Store.open(tmp_path / "d")
    s.create(cm("a"))
    w = s.watch(timeout=0)
    del s
    import gc

    gc.collect()
    assert [e["object"]["metadata"]["name"] for e in w] == ["a"]
    del w
    gc.collect()
    with floyd.Store.open(tmp_path / "d") as s2:
        assert s2.get("ConfigMap", "default/a") is not None


def test_generate_name_and_cluster_scoped(store):
    o = store.create({"kind": "ConfigMap", "metadata": {"generateName": "web-"}})
    assert o["metadata"]["name"].startswith("web-")
    n = store.create({"kind": "Node", "metadata": {"name": "n1"}})
    assert "namespace" not in n["metadata"]
    assert store.get("Node", "n1")["metadata"]["name"] == "n1"


def test_repr(tmp_path):
    assert repr(floyd.Store.memory()) == "floyd.Store.memory()"
    with floyd.Store.open(tmp_path / "r") as s:
        assert "floyd.Store(" in repr(s)


# The direct object -> dict conversion (used by get, create, list and watch) must give what
# the JSON value tree gives, for every field the object model has.
CONVERSION_CASES = [
    {"kind": "ConfigMap", "metadata": {"name": "a"}},
    {"kind": "Node", "metadata": {"name": "n"}, "status": {"ready": True}},
    {
        "kind": "Instance",
        "metadata": {
            "name": "i-1",
            "namespace": "ns",
            "generateName": "i-",
            "uid": "u-1",
            "resourceVersion": "42",
            "generation": 7,
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "deletionTimestamp": "2026-01-02T03:04:06.5Z",
            "labels": {"app": "web", "example.com/tier": "front"},
            "annotations": {"note": "ünïcode ✓", "empty": ""},
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "rs", "uid": "o-1", "controller": True,
                 "blockOwnerDeletion": False},
                {"kind": "Other", "name": "x", "uid": "o-2"},
            ],
        },
        "spec": {
            "ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1],
            "floats": [0.5, -1e300, 1e-300],
            "nested": {"a": {"b": {"c": [None, True, False, "s", {}]}}},
            "empty": [],
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    },
]


@pytest.mark.parametrize("obj", CONVERSION_CASES)
def test_direct_conversion_equals_the_json_tree(obj):
    from floyd import _floyd

    direct = _floyd._object_direct(obj)
    assert direct == _floyd._object_via_json(obj)
    # Types survive, not only values (True is not 1, ints stay ints).
    assert type(direct["kind"]) is str
    if "spec" in obj:
        assert [type(x) for x in direct["spec"]["ints"]] == [int] * 5
        assert direct["spec"]["nested"]["a"]["b"]["c"][1] is True


def test_get_and_create_return_the_stored_object_as_a_plain_dict(store):
    created = store.create(CONVERSION_CASES[2] | {"metadata": {
        k: v for k, v in CONVERSION_CASES[2]["metadata"].items()
        if k not in ("uid", "resourceVersion", "deletionTimestamp", "generation", "creationTimestamp")
    }})
    got = store.get("Instance", "ns/i-1")
    assert got == created
    assert got is not created  # a fresh dict per call: mutating it changes nothing stored
    got["spec"]["ints"].append(5)
    assert store.get("Instance", "ns/i-1")["spec"]["ints"] == CONVERSION_CASES[2]["spec"]["ints"]
