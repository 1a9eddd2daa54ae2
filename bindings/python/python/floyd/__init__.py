"""floyd: Kubernetes controller machinery (store, watch, informers, work queue, rate limiters) as an
embeddable library. A thin layer over the Rust core; see ``_floyd.pyi`` for the API."""

import atexit

from ._floyd import (
    DEFAULT_DATA_DIR,
    FINAL_STATE_UNKNOWN,
    MAX_DEPTH,
    MAX_JSON_BYTES,
    AlreadyExists,
    Conflict,
    ControlPlane,
    Corrupt,
    Expired,
    FloydError,
    Informer,
    Internal,
    Invalid,
    Io,
    NotFound,
    RateLimiter,
    ShutDown,
    Store,
    Watch,
    WorkQueue,
    __version__,
    _panic_for_test,
    _shutdown_control_planes,
    _shutdown_informers,
)

# Control planes still running at exit are stopped while the interpreter can still serve
# their driver threads (atexit runs before finalization).
atexit.register(_shutdown_control_planes)
# Informers likewise: their handler threads call into Python.
atexit.register(_shutdown_informers)

__all__ = [
    "DEFAULT_DATA_DIR",
    "FINAL_STATE_UNKNOWN",
    "MAX_DEPTH",
    "MAX_JSON_BYTES",
    "AlreadyExists",
    "Conflict",
    "ControlPlane",
    "Corrupt",
    "Expired",
    "FloydError",
    "Informer",
    "Internal",
    "Invalid",
    "Io",
    "NotFound",
    "RateLimiter",
    "ShutDown",
    "Store",
    "Watch",
    "WorkQueue",
    "__version__",
]
