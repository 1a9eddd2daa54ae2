"""Bad input of every argument type: each raises a typed floyd error, never TypeError,
OverflowError, PanicException or a crash (reliability.md §3 (f))."""

import contextlib
import math

import pytest

import floyd
from conftest import assert_isolated_ok, cm

NAN = float("nan")
INF = float("inf")
BAD_DURATIONS = [NAN, INF, -INF, -1.0, -1, 1e300, 2**80, "1", None, True, [1], object()]


@contextlib.contextmanager
def invalid(field=None):
    """Expects floyd.Invalid, naming `field` when given."""
    with pytest.raises(floyd.Invalid) as ei:
        yield ei
    if field is not None:
        assert ei.value.field == field, (ei.value, ei.value.field)


@pytest.mark.parametrize("obj", [42, None, "x", [cm("a")], (1,), 1.5, b"x", object()])
def test_create_wrong_container(store, obj):
    with invalid("object"):
        store.create(obj)
    with invalid("object"):
        store.update(obj)
    with invalid("object"):
        store.update_status(obj)


@pytest.mark.parametrize(
    "name",
    ["", "x" * 254, "Upper", "a_b", "../x", "a\x00b", "\ud800", "emoji-😀", " a", "-a"],
)
def test_invalid_names(store, name):
    with invalid("metadata.name"):
        store.create({"kind": "ConfigMap", "metadata": {"name": name}})


@pytest.mark.parametrize("ns", ["UPPER", "a_b", "x" * 64, "../x", "\ud800"])
def test_invalid_namespaces(store, ns):
    with invalid() as ei:
        store.create({"kind": "ConfigMap", "metadata": {"name": "a", "namespace": ns}})
    assert ei.value.field.startswith("metadata.namespace")


@pytest.mark.parametrize(
    "labels",
    [
        {"a" * 64: "v"},
        {"p" * 254 + "/k": "v"},
        {"k": "v" * 64},
        {"bad key!": "v"},
        {"k": "bad value!"},
        {"k": 3},
        {"k": None},
        {"k": True},
        ["k", "v"],
    ],
)
def test_invalid_labels(store, labels):
    with invalid() as ei:
        store.create({"kind": "ConfigMap", "metadata": {"name": "a", "labels": labels}})
    assert ei.value.field.startswith("metadata.labels")


@pytest.mark.parametrize("sel", ["app in (", "!", "a==b==c", "in in", "a=(", "x" * 64 + "=v", "k=" + "v" * 64])
def test_invalid_selectors(store, sel):
    with invalid() as ei:
        store.list("ConfigMap", label_selector=sel)
    assert ei.value.field


@pytest.mark.parametrize("sel", [3, ["a=b"], True])
def test_selector_wrong_type(store, sel):
    with invalid("label_selector"):
        store.list("ConfigMap", label_selector=sel)


def test_selector_dict_invalid(store):
    with invalid():
        store.list("ConfigMap", label_selector={"matchExpressions": [{"key": "a", "operator": "Bogus"}]})


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_non_finite_floats_in_objects(store, value):
    with invalid("spec.x"):
        store.create(cm("a", x=value))


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**200])
def test_huge_ints_in_objects(store, value):
    with invalid("spec.deep[1].n"):
        store.create(cm("a", deep=[0, {"n": value}]))


def test_ints_at_the_edges_round_trip(store):
    o = store.create(cm("a", big=2**64 - 1, small=-(2**63), neg0=-0.0, b=False))
    assert o["spec"]["big"] == 2**64 - 1 and o["spec"]["small"] == -(2**63)
    assert o["spec"]["b"] is False and math.copysign(1, o["spec"]["neg0"]) in (1, -1)


@pytest.mark.parametrize("key", [1, None, ("t",), b"k", 1.5])
def test_non_str_keys(store, key):
    with invalid("spec.m"):
        store.create(cm("a", m={key: 1}))


def test_lone_surrogate_key_and_value(store):
    with invalid("spec"):
        store.create(cm("a", **{"\ud800": 1}))
    with invalid("spec.v"):
        store.create(cm("a", v="\udfff"))


@pytest.mark.parametrize("value", [object(), {1, 2}, bytearray(b"x"), b"bytes", complex(1, 2), range(3)])
def test_unsupported_value_types(store, value):
    with invalid("spec.v"):
        store.create(cm("a", v=value))


def test_path_naming_in_errors(store):
    with invalid('spec.ports[2]["odd key"].x'):
        store.create(cm("a", ports=[1, 2, {"odd key": {"x": NAN}}]))


def test_deeply_nested_dict_is_too_deep(store):
    d = {}
    cur = d
    for _ in range(100_000):
        nxt = {}
        cur["a"] = nxt
        cur = nxt
    with invalid() as ei:
        store.create(cm("a", deep=d))
    assert "too deep" in str(ei.value)


def test_deeply_nested_list_is_too_deep(store):
    lst = []
    for _ in range(100_000):
        lst = [lst]
    with invalid() as ei:
        store.create(cm("a", deep=lst))
    assert "too deep" in str(ei.value)


def test_self_referencing_dict(store):
    d = {"kind": "ConfigMap", "metadata": {"name": "a"}}
    d["spec"] = d
    with invalid() as ei:
        store.create(d)
    assert "too deep" in str(ei.value)
    lst = []
    lst.append(lst)
    with invalid():
        store.create(cm("a", l=lst))


def test_core_depth_limit_within_converter_limit(store):
    d = {}
    cur = d
    for _ in range(70):
        cur["a"] = {}
        cur = cur["a"]
    with invalid() as ei:
        store.create(cm("a", deep=d))
    assert ei.value.field.startswith("spec")


def test_shared_subtree_explosion_is_too_large(store):
    a = ["x" * 10]
    for _ in range(40):
        a = [a, a]
    with invalid("object") as ei:
        store.create(cm("a", boom=a))
    assert "too large" in str(ei.value)


def test_oversized_objects(store):
    with invalid() as ei:
        store.create(cm("a", blob="x" * (1536 << 10)))  # 1.5 MiB: the core's 1 MiB limit
    assert ei.value.field
    with invalid("object") as ei:
        store.create(cm("a", blob="x" * (100 << 20)))  # 100 MB: stops in the converter
    assert "too large" in str(ei.value)
    labels = {f"k{i}": "v" for i in range(1_000_000)}
    with invalid("object"):
        store.create({"kind": "ConfigMap", "metadata": {"name": "a", "labels": labels}})


def test_replicas_like_fields_are_faithful(store):
    for v in [-1, 2**31, 1.5, "3", True, None]:
        o = store.create({"kind": "ConfigMap", "metadata": {"generateName": "r-"}, "spec": {"replicas": v}})
        assert o["spec"]["replicas"] == v and type(o["spec"]["replicas"]) is type(v)


def test_dict_subclass_is_read_as_a_dict(store):
    class Odd(dict):
        def keys(self):
            raise RuntimeError("not called")

        def __getitem__(self, k):
            raise RuntimeError("not called")

    o = store.create(Odd(kind="ConfigMap", metadata={"name": "odd"}))
    assert o["metadata"]["name"] == "odd"


def test_str_subclass_length_is_not_asked(store):
    # Strings are measured by their UTF-8 bytes, never by a `__len__` that is user code.
    calls = []

    class Liar(str):
        def __len__(self):
            calls.append(1)
            return 10**12

    o = store.create(cm("liar", v=Liar("short"), **{"k": {Liar("key"): 1}}))
    assert o["spec"] == {"v": "short", "k": {"key": 1}} and not calls


def test_mapping_that_is_not_a_dict(store):
    import types

    with invalid("object"):
        store.create(types.MappingProxyType({"kind": "ConfigMap", "metadata": {"name": "a"}}))


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get(1, "default/a"),
        lambda s: s.get("ConfigMap", None),
        lambda s: s.list(3),
        lambda s: s.list("ConfigMap", namespace=5),
        lambda s: s.delete("ConfigMap", 7),
        lambda s: s.delete("ConfigMap", "default/a", resource_version=-1),
        lambda s: s.delete("ConfigMap", "default/a", resource_version=1.5),
        lambda s: s.delete("ConfigMap", "default/a", resource_version="abc"),
        lambda s: s.delete("ConfigMap", "default/a", resource_version=True),
        lambda s: s.delete("ConfigMap", "default/a", resource_version=2**70),
        lambda s: s.watch(kind=3),
        lambda s: s.watch(from_version=-1),
        lambda s: s.watch(from_version="x"),
        lambda s: s.watch(timeout=NAN),
        lambda s: s.watch(timeout=-1),
        lambda s: s.watch(timeout=1e300),
        lambda s: s.watch(timeout="1"),
    ],
)
def test_store_argument_types(store, call):
    with pytest.raises(floyd.Invalid) as ei:
        call(store)
    assert ei.value.field


@pytest.mark.parametrize(
    "kwargs",
    [
        {"durability": "sometimes"},
        {"durability": 1},
        {"segment_size": 100},
        {"segment_size": -4096},
        {"segment_size": "big"},
        {"path": 3},
        {"path": ""},
    ],
)
def test_open_arguments(tmp_path, kwargs):
    kwargs.setdefault("path", str(tmp_path / "d"))
    with pytest.raises(floyd.Invalid):
        floyd.Store.open(**kwargs)


def test_memory_segment_size_invalid():
    with pytest.raises(floyd.Invalid) as ei:
        floyd.Store.memory(segment_size=1000)
    assert ei.value.field == "segment_size"


def test_resource_version_on_create_is_invalid(store):
    with invalid("metadata.resourceVersion"):
        store.create({"kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "5"}})
    store.create(cm("a"))
    with invalid("metadata.resourceVersion"):
        store.update({"kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "x"}})


@pytest.mark.parametrize("d", BAD_DURATIONS)
def test_bad_durations_everywhere(d):
    q = floyd.WorkQueue()
    if d is not None:  # None is "no timeout" for get
        with pytest.raises(floyd.Invalid):
            q.get(timeout=d)
    with pytest.raises(floyd.Invalid):
        q.add_after("x", d)
    for args in [(d, 1.0), (0.001, d)]:
        with pytest.raises(floyd.Invalid):
            if None in args:
                raise floyd.Invalid("None means default here; covered below")
            floyd.RateLimiter.exponential(*args)
    with pytest.raises(floyd.Invalid):
        floyd.RateLimiter.fast_slow(d, 1.0, 3)
    with pytest.raises(floyd.Invalid):
        floyd.RateLimiter.fast_slow(1.0, d, 3)
    with pytest.raises(floyd.Invalid):
        floyd.RateLimiter.exponential(1.0, 100.0).with_max_wait(d)


def test_limiter_argument_checks():
    with pytest.raises(floyd.Invalid) as ei:
        floyd.RateLimiter.exponential(2.0, 1.0)  # base > max
    assert ei.value.field == "base"
    for qps in [NAN, -1.0, "x", True]:
        with pytest.raises(floyd.Invalid):
            floyd.RateLimiter.bucket(qps=qps)
    for burst in [-1, 2**32, 1.5, "1", True]:
        with pytest.raises(floyd.Invalid) as ei:
            floyd.RateLimiter.bucket(burst=burst)
        assert ei.value.field == "burst"
    for n in [-1, 2**64, 1.5, None]:
        with pytest.raises(floyd.Invalid):
            floyd.RateLimiter.fast_slow(0.1, 1.0, n)
    for ls in [None, 3, [1], [floyd.RateLimiter.bucket(), "x"]]:
        with pytest.raises(floyd.Invalid):
            floyd.RateLimiter.max_of(ls)
    with pytest.raises(floyd.Invalid):
        floyd.WorkQueue(rate_limiter="fast")
    with pytest.raises(floyd.Invalid):
        floyd.WorkQueue(name=3)


@pytest.mark.parametrize("item", [[1], {"a": 1}, {1}, object(), NAN, 2**64, -(2**63) - 1, ("ok", [1]), ("\ud800",)])
def test_bad_items(item):
    q = floyd.WorkQueue()
    lim = floyd.RateLimiter.exponential()
    for call in [q.add, q.add_rate_limited, q.done, q.forget, q.num_requeues, lim.when, lim.forget, lim.num_requeues]:
        with pytest.raises(floyd.Invalid) as ei:
            call(item)
        assert ei.value.field == "item"
    with pytest.raises(floyd.Invalid):
        q.add_after(item, 0.1)
    assert len(q) == 0


def test_deep_tuple_item():
    t = ()
    for _ in range(10_000):
        t = (t,)
    with pytest.raises(floyd.Invalid):
        floyd.WorkQueue().add(t)


def test_huge_timeout_is_forever_not_overflow():
    q = floyd.WorkQueue()
    q.add("a")
    assert q.get(timeout=1e15) == "a"  # representable as a Duration; far future deadline


def test_panic_surfaces_as_internal():
    for detached in (False, True):
        with pytest.raises(floyd.Internal) as ei:
            floyd._panic_for_test(detached=detached)
        assert isinstance(ei.value, floyd.FloydError) and isinstance(ei.value, Exception)
        assert "panic" in str(ei.value)
    try:
        floyd._panic_for_test()
    except Exception as e:  # noqa: BLE001 - the point: `except Exception` catches it
        assert type(e).__name__ == "Internal"


def test_crash_cases_in_subprocess():
    # Everything that could kill the interpreter, in a child with faulthandler: deep and
    # cyclic input, panics in both GIL states, huge durations, use after close, GC of
    # stores with live watches and of queues with blocked getters.
    out = assert_isolated_ok(
        """
        import gc, threading, floyd
        s = floyd.Store.memory()
        d = {}
        cur = d
        for _ in range(1_000_000):
            cur["a"] = {}
            cur = cur["a"]
        for obj in [d, {"kind": "ConfigMap", "metadata": {"name": "a"}, "spec": d}]:
            try:
                s.create(obj)
            except floyd.Invalid:
                pass
        cyc = {}
        cyc["x"] = cyc
        try:
            s.create({"kind": "ConfigMap", "metadata": {"name": "a"}, "spec": cyc})
        except floyd.Invalid:
            pass
        for det in (False, True):
            try:
                floyd._panic_for_test(det)
            except floyd.Internal:
                pass
        q = floyd.WorkQueue()
        for bad in [float("nan"), -1.0, 1e300, float("inf")]:
            try:
                q.add_after("x", bad)
            except floyd.Invalid:
                pass
        w = s.watch()
        s.close()
        list(w)
        del s, w
        # A queue dropped while a daemon thread would block in get: shut down first.
        q2 = floyd.WorkQueue()
        t = threading.Thread(target=q2.get, daemon=True)
        t.start()
        q2.shut_down()
        t.join(5)
        del q2
        gc.collect()
        print("ok")
        """
    )
    assert out.strip() == "ok"
