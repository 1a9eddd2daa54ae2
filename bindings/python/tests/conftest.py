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
