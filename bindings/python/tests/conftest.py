"""Shared fixtures. Crash-prone cases run in a subprocess with faulthandler enabled (see
`run_isolated`), so a crash fails one test instead of killing pytest."""

import os
import subprocess
import sys
import textwrap

import pytest

import floyd


@pytest.fixture
def store():
    # Small segments keep each test's setup cheap (the default is 64 MiB); 4 MiB still holds
    # the largest object the core accepts.
    s = floyd.Store.memory(segment_size=4 << 20)
    yield s
    s.close()


@pytest.fixture
def disk_store(tmp_path):
    s = floyd.Store.open(str(tmp_path / "data"))
    yield s
    s.close()


def cm(name, ns=None, **spec):
    """A small custom-kind object."""
    meta = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    return {"kind": "ConfigMap", "metadata": meta, "spec": spec or {"a": 1}}


def run_isolated(code, timeout=60):
    """Runs `code` in a fresh interpreter with faulthandler on; returns the completed
    process. A segfault/abort shows up as a negative return code and a traceback on stderr."""
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_isolated_ok(code, timeout=60):
    p = run_isolated(code, timeout)
    assert p.returncode == 0, f"rc={p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-4000:]}"
    return p.stdout


def typed(v):
    """`v` with every scalar tagged by its exact type, for comparisons where `True == 1`,
    `1 == 1.0` and `0.0 == -0.0` must not pass. Dicts compare without regard to key order."""
    if type(v) is dict:
        return ("dict", {k: typed(x) for k, x in v.items()})
    if type(v) is list:
        return ("list", [typed(x) for x in v])
    if type(v) is float:
        return ("float", repr(v))
    return (type(v).__name__, v)


def assert_conversions_agree(obj):
    """The direct conversion of a dict to an object (`_object_fast`) accepts exactly what the
    conversion through the JSON value tree (`_object_via_json`) accepts and builds the same
    object; where the tree refuses, what `create` uses (`_object_direct`) raises the tree's
    very error. Returns "accepted" or "refused"."""
    from floyd import _floyd

    fast = _floyd._object_fast(obj)
    try:
        slow = _floyd._object_via_json(obj)
    except floyd.Invalid as e:
        assert fast is None, f"the direct conversion accepted what the JSON tree refuses: {e}"
        with pytest.raises(floyd.Invalid) as ei:
            _floyd._object_direct(obj)
        assert (str(ei.value), ei.value.field) == (str(e), e.field)
        return "refused"
    assert fast is not None, "the direct conversion refused what the JSON tree accepts"
    assert typed(fast) == typed(slow)
    assert typed(_floyd._object_direct(obj)) == typed(slow)
    return "accepted"
