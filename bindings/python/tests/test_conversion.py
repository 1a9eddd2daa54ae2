"""The direct conversion of dicts to objects (`frompy.rs`) against the conversion through the
JSON value tree (`py_to_json` + `Object::from_json_value`), limit by limit: each case must be
accepted by both, with the same object, or refused by both, with the tree's error. The
property test in test_properties.py does the same on generated objects; here each limit is
probed at its edge, where an off-by-one would hide."""

import json
import math

import pytest

import floyd
from conftest import assert_conversions_agree
from floyd import _floyd

MAX_DEPTH = _floyd.MAX_DEPTH
MAX_JSON_BYTES = _floyd.MAX_JSON_BYTES


def base(**extra):
    return {"kind": "ConfigMap", "metadata": {"name": "a"}, **extra}


def accepted(obj):
    assert assert_conversions_agree(obj) == "accepted"


def refused(obj, field=None, words=None):
    assert assert_conversions_agree(obj) == "refused"
    with pytest.raises(floyd.Invalid) as ei:
        _floyd._object_direct(obj)
    if field is not None:
        assert ei.value.field == field, (ei.value, ei.value.field)
    if words is not None:
        assert words in str(ei.value), ei.value


def json_cost(v):
    """The JSON bytes the converters estimate for `v` (`py_to_json` in convert.rs)."""
    if v is None:
        return 4
    if isinstance(v, bool):
        return 5
    if isinstance(v, (int, float)):
        return 8
    if isinstance(v, str):
        return len(v.encode()) + 2
    if isinstance(v, dict):
        return 2 + len(v) + sum(len(k.encode()) + 3 + json_cost(x) for k, x in v.items())
    return 2 + len(v) + sum(json_cost(x) for x in v)


def test_plain_objects_agree():
    accepted(base(spec={"a": 1, "b": "two", "c": [1, 2, 3]}))
    accepted(base(apiVersion="v1", spec=None, status={"x": [None, True, 1.5, -0.0, ""]}))
    accepted({"kind": "Node", "metadata": None})
    accepted({"kind": "Node", "metadata": {"name": "n", "namespace": "dropped"}})
    # Keys that are not the interned literals (json.loads makes fresh strings) and keys
    # built at run time decode the same.
    accepted(json.loads('{"kind": "X", "metadata": {"name": "a", "labels": {"k": "v"}}}'))
    accepted({"".join(["ki", "nd"]): "X", "metadata": {"".join(["na", "me"]): "a"}})
    # An object as `get` returns it converts back to itself.
    s = floyd.Store.memory()
    full = s.create(base(spec={"a": 1}))
    accepted(full)
    assert _floyd._object_fast(full) == full
    s.close()


def test_struct_fields_given_as_lists_agree():
    # serde reads a struct from a list of its fields in order; both conversions allow it.
    accepted(base(metadata=["a", "ns"]))
    accepted(base(metadata=[]))
    accepted(base(metadata=("a",)))
    accepted(base(metadata={"name": "a", "ownerReferences": [["ReplicaSet", "rs", "u1", True]]}))
    refused(base(metadata=["a"] + [None] * 11))  # more items than fields
    refused(base(metadata=[1]))
    refused(base(metadata={"ownerReferences": [["ReplicaSet", "rs"]]}))  # uid required


@pytest.mark.parametrize("make", [lambda v: {"a": v}, lambda v: [v], lambda v: (v,)])
@pytest.mark.parametrize("where", ["spec", "status", "apiVersion"])
def test_depth_limit_at_its_edge(make, where):
    def nested(levels):
        v = 0
        for _ in range(levels):
            v = make(v)
        return v

    # The object itself is one level: MAX_DEPTH - 1 more fit, one beyond does not. The
    # ignored `apiVersion` is held to the same limit.
    accepted(base(**{where: nested(MAX_DEPTH - 1)}))
    refused(base(**{where: nested(MAX_DEPTH)}), words="too deep")
    refused(base(**{where: nested(100_000)}), words="too deep")


def test_self_references_are_too_deep():
    d = base()
    d["spec"] = d
    refused(d, words="too deep")
    lst = []
    lst.append(lst)
    refused(base(apiVersion=lst), words="too deep")


def filled(where, unit, extra):
    """An object whose estimated JSON size is MAX_JSON_BYTES + `extra`, made of `unit`s."""
    obj = base(**{where: {"s": ""}})
    room = MAX_JSON_BYTES - json_cost(obj)
    w = len(unit.encode())
    n, rest = divmod(room + extra, w)
    obj[where]["s"] = unit * n + "x" * rest
    assert json_cost(obj) == MAX_JSON_BYTES + extra
    return obj


@pytest.mark.parametrize("where", ["spec", "status", "apiVersion"])
@pytest.mark.parametrize("unit", ["x", "é", "🙂"])
def test_size_budget_at_its_edge(where, unit):
    accepted(filled(where, unit, 0))
    refused(filled(where, unit, 1), field="object", words="too large")


def test_size_budget_counts_keys_and_containers():
    # About 140,000 labels of 15 estimated bytes each (a key of 8, its quotes and colon,
    # "v" and its quotes, and one for the separator), then a name to fill the rest.
    obj = base(metadata={"name": "a", "labels": {}})
    per_label = json_cost({"k0000000": "v"}) - json_cost({})
    n = (MAX_JSON_BYTES - json_cost(obj) - 64) // per_label
    obj["metadata"]["labels"] = {f"k{i:07}": "v" for i in range(n)}
    spare = MAX_JSON_BYTES - json_cost(obj)
    obj["metadata"]["name"] = "a" * (1 + spare)
    assert json_cost(obj) == MAX_JSON_BYTES
    accepted(obj)
    obj["metadata"]["name"] += "a"
    refused(obj, field="object", words="too large")


@pytest.mark.parametrize("item", [7, -7, 2**64 - 1, 1.5, True, None, "ab", [], (), {}, {"k": 0}])
@pytest.mark.parametrize("where", ["spec", "apiVersion"])
def test_size_budget_counts_every_type(item, where):
    # Mostly `item`s, in a list and a tuple, then a string to reach the edge exactly.
    obj = base(**{where: {"l": [item] * 20_000, "t": (item,) * 20_000, "s": ""}})
    room = MAX_JSON_BYTES - json_cost(obj)
    assert room > 0
    obj[where]["s"] = "x" * room
    accepted(obj)
    obj[where]["s"] += "x"
    refused(obj, field="object", words="too large")


def test_huge_values_stop_early():
    refused(base(spec={"blob": "x" * (100 << 20)}), field="object", words="too large")
    refused(base(apiVersion="x" * (100 << 20)), field="object", words="too large")
    refused(base(spec={"x" * (100 << 20): 1}), field="object", words="too large")
    refused(base(metadata={"name": "a", "labels": {f"k{i}": "v" for i in range(1_000_000)}}))
    a = ["x" * 10]
    for _ in range(40):
        a = [a, a]
    refused(base(spec={"boom": a}), field="object", words="too large")


@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf])
def test_non_finite_floats(x):
    refused(base(spec={"x": x}), field="spec.x")
    refused(base(apiVersion=[x]), field="apiVersion[0]")
    refused(base(metadata={"name": "a", "generation": x}))
    refused(base(status=x), field="status")


def test_integers_at_the_edges():
    accepted(base(spec={"big": 2**64 - 1, "small": -(2**63), "zero": 0, "neg": -1}))
    refused(base(spec={"x": 2**64}), field="spec.x")
    refused(base(spec={"x": -(2**63) - 1}), field="spec.x")
    refused(base(apiVersion=2**64), field="apiVersion")
    accepted(base(metadata={"name": "a", "generation": 2**63 - 1}))
    refused(base(metadata={"name": "a", "generation": 2**63}), field="metadata.generation")
    refused(base(metadata={"name": "a", "generation": 1.0}), field="metadata.generation")
    refused(base(metadata={"name": "a", "generation": True}), field="metadata.generation")


@pytest.mark.parametrize("key", [1, None, ("t",), b"k", 1.5, True])
def test_non_str_keys(key):
    refused(base(spec={"m": {key: 1}}), field="spec.m")
    refused(base(spec={key: 1}), field="spec")
    refused({"kind": "X", "metadata": {"name": "a"}, key: 1}, field="object")
    refused(base(metadata={"name": "a", key: "x"}), field="metadata")
    refused(base(metadata={"name": "a", "labels": {key: "v"}}), field="metadata.labels")
    refused(base(apiVersion={key: 1}), field="apiVersion")


def test_lone_surrogates():
    for s in ["\ud800", "a\udfff"]:
        refused(base(spec={"v": s}), field="spec.v")
        refused(base(spec={s: 1}), field="spec")
        refused({"kind": s, "metadata": {"name": "a"}}, field="kind")
        refused(base(metadata={"name": s}), field="metadata.name")
        refused(base(metadata={"name": "a", "labels": {"k": s}}), field="metadata.labels.k")
        refused({"kind": "X", s: 1}, field="object")
        refused(base(apiVersion=s), field="apiVersion")


class Trap:
    """Counts calls of methods the conversion must not make."""

    calls = 0

    @classmethod
    def hit(cls, *_args, **_kwargs):
        cls.calls += 1
        raise RuntimeError("user code ran during conversion")


class OddDict(dict):
    keys = items = values = get = __getitem__ = __iter__ = __len__ = __contains__ = Trap.hit


class OddList(list):
    __iter__ = __len__ = __getitem__ = Trap.hit


class OddTuple(tuple):
    __iter__ = __len__ = __getitem__ = Trap.hit


class OddStr(str):
    __len__ = __str__ = __iter__ = __getitem__ = Trap.hit

    def __eq__(self, other):
        return Trap.hit()

    def __hash__(self):
        return str.__hash__(self)


class OddInt(int):
    __index__ = __int__ = __float__ = Trap.hit


class OddFloat(float):
    __float__ = __index__ = __int__ = Trap.hit


def test_subclasses_are_read_as_their_builtin_values():
    Trap.calls = 0
    obj = OddDict(
        kind=OddStr("ConfigMap"),
        metadata=OddDict(name=OddStr("a"), labels=OddDict({OddStr("k"): OddStr("v")})),
        spec=OddDict(
            l=OddList([OddInt(1), OddFloat(2.5)]),
            t=OddTuple((OddStr("x"),)),
            big=OddInt(2**64 - 1),
        ),
        apiVersion=OddList([OddStr("v1")]),
    )
    accepted(obj)
    got = _floyd._object_fast(obj)
    assert got["spec"] == {"l": [1, 2.5], "t": ["x"], "big": 2**64 - 1}
    assert type(got["spec"]["l"][0]) is int and type(got["kind"]) is str
    # Refused the same way as the builtins, too.
    refused(base(spec=OddDict(x=OddFloat("nan"))), field="spec.x")
    refused(base(spec=OddDict(x=OddInt(2**64))), field="spec.x")
    refused(base(spec={"x": OddStr("\ud800")}), field="spec.x")
    assert Trap.calls == 0


def test_a_str_subclass_length_is_not_trusted():
    class Liar(str):
        def __len__(self):
            return 10**12

    accepted(base(spec={"x": Liar("short")}))


def test_keys_equal_in_text_but_not_in_python_fall_back_to_the_json_tree():
    # A str subclass can make "name" and "name" two keys of one dict. Through the JSON tree
    # the later one wins; the direct conversion refuses the duplicate field, and `create`'s
    # conversion then answers as the tree does.
    class Distinct(str):
        def __hash__(self):
            return 7

        def __eq__(self, other):
            return self is other

    meta = {"name": "first", Distinct("name"): "second"}
    obj = {"kind": "ConfigMap", "metadata": meta, "spec": {"k": 1, Distinct("k"): 2}}
    assert _floyd._object_fast(obj) is None
    assert _floyd._object_direct(obj) == _floyd._object_via_json(obj)
    assert _floyd._object_direct(obj)["metadata"]["name"] == "second"
    # In a free-form map both conversions keep the later value.
    accepted(base(spec={"k": 1, Distinct("k"): 2}))
    assert _floyd._object_fast(base(spec={"k": 1, Distinct("k"): 2}))["spec"] == {"k": 2}
