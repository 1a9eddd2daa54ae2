"""Type stubs for floyd._floyd, the native module behind the `floyd` package.

Objects are plain dicts in the Kubernetes JSON shape (camelCase keys); durations are float
seconds. Every failure is a FloydError subclass; arguments of the wrong type raise Invalid
(which is also a ValueError), not TypeError.
"""

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Literal, Protocol, TypedDict, final

from typing_extensions import Self

__all__ = [
    "AlreadyExists",
    "Conflict",
    "ControlPlane",
    "Corrupt",
    "DEFAULT_DATA_DIR",
    "FINAL_STATE_UNKNOWN",
    "Expired",
    "FloydError",
    "Informer",
    "Internal",
    "Invalid",
    "Io",
    "MAX_DEPTH",
    "MAX_JSON_BYTES",
    "NotFound",
    "RateLimiter",
    "ShutDown",
    "Store",
    "Watch",
    "WorkQueue",
    "__version__",
    "_bench_store_round_trips",
    "_object_direct",
    "_object_fast",
    "_object_via_json",
    "_panic_for_test",
    "_shutdown_control_planes",
    "_shutdown_informers",
]

__version__: str
DEFAULT_DATA_DIR: str
MAX_DEPTH: int
MAX_JSON_BYTES: int
FINAL_STATE_UNKNOWN: str

_Obj = dict[str, Any]
"""An object in the Kubernetes JSON shape: {kind, metadata, spec, status}."""

_Item = None | bool | int | float | str | bytes | tuple[Any, ...]
"""A work-queue item: None, bool, int (64-bit), float (not NaN), str, bytes, or tuples of
those. Compared as Python compares them (1, 1.0 and True are one item)."""

_Seconds = float | int

class FloydError(Exception):
    kind: str
    field: str | None

class NotFound(FloydError): ...
class AlreadyExists(FloydError): ...
class Conflict(FloydError): ...
class Invalid(FloydError, ValueError): ...
class Expired(FloydError): ...
class ShutDown(FloydError): ...
class Corrupt(FloydError): ...
class Io(FloydError): ...
class Internal(FloydError): ...

class _WatchEvent(TypedDict):
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    object: _Obj

class _SnapshotInfo(TypedDict):
    resourceVersion: int
    path: str | None
    objects: int
    bytes: int
    compactedSegments: int

class _StoreStats(TypedDict):
    resourceVersion: int
    objects: int
    events: int
    segments: int
    bytes: int
    oldestVersion: int
    snapshotVersion: int
    truncatedBytes: int
    durability: Literal["none", "batch", "always"]

class _LogRecovery(TypedDict):
    segments: int
    frames: int
    truncatedBytes: int
    brokenFiles: list[str]
    cutReason: str | None

class _OpenReport(TypedDict):
    snapshot: str | None
    snapshotObjects: int
    replayed: int
    brokenSnapshots: list[str]
    log: _LogRecovery

class _Histogram(TypedDict):
    buckets: list[tuple[float, int]]
    count: int
    sum: float

class _QueueMetrics(TypedDict):
    depth: int
    adds: int
    retries: int
    queue_duration: _Histogram
    work_duration: _Histogram
    unfinished_work_seconds: float
    longest_running_processor_seconds: float

@final
class Store:
    @staticmethod
    def open(
        path: str | os.PathLike[str] | None = None,
        durability: Literal["none", "batch", "always"] | None = None,
        segment_size: int | None = None,
    ) -> Store: ...
    @staticmethod
    def memory(segment_size: int | None = None) -> Store: ...
    def create(self, obj: _Obj) -> _Obj: ...
    def get(self, kind: str, key: str) -> _Obj | None: ...
    def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | dict[str, Any] | None = None,
    ) -> tuple[list[_Obj], int]: ...
    def update(self, obj: _Obj) -> _Obj: ...
    def update_status(self, obj: _Obj) -> _Obj: ...
    def delete(self, kind: str, key: str, resource_version: int | str | None = None) -> _Obj: ...
    def watch(
        self,
        kind: str | None = None,
        from_version: int | None = None,
        timeout: _Seconds | None = None,
    ) -> Watch: ...
    def snapshot(self) -> _SnapshotInfo: ...
    def stats(self) -> _StoreStats: ...
    def resource_version(self) -> int: ...
    @property
    def open_report(self) -> _OpenReport | None: ...
    @property
    def path(self) -> str | None: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        *_exc: type[BaseException] | BaseException | TracebackType | None,
    ) -> bool: ...

@final
class Watch:
    def __iter__(self) -> Self: ...
    def __next__(self) -> _WatchEvent: ...
    @property
    def start_version(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        *_exc: type[BaseException] | BaseException | TracebackType | None,
    ) -> bool: ...

_ObjList = list[_Obj]
_StrList = list[str]
_IndexFn = Callable[[_Obj], list[str] | tuple[str, ...] | None]

class _InformerStats(TypedDict):
    lists: int
    expired: int
    errors: int
    lastError: str | None
    events: int
    lastSyncedVersion: int
    cached: int
    notifications: int
    handlers: int
    handlerErrors: int
    indexErrors: int
    lastCallbackError: str | None

@final
class Informer:
    """A list + watch cache of one kind. Handlers run on floyd's threads, holding the GIL
    only for the call; an exception they raise is logged to the `floyd` logger and counted
    in stats(). `on_delete` gets `obj["finalStateUnknown"] = True` for a delete found by a
    relist."""

    def __new__(
        cls,
        store: Store,
        kind: str,
        resync: _Seconds | None = None,
        namespace: str | None = None,
        label_selector: str | dict[str, Any] | None = None,
    ) -> Informer: ...
    def add_event_handler(
        self,
        on_add: Callable[[_Obj], object] | None = None,
        on_update: Callable[[_Obj, _Obj], object] | None = None,
        on_delete: Callable[[_Obj], object] | None = None,
        resync: _Seconds | None = None,
    ) -> None: ...
    def add_index(self, name: str, index: str | _IndexFn) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def has_synced(self) -> bool: ...
    def wait_for_sync(self, timeout: _Seconds | None = None) -> bool: ...
    def wait_for_version(self, rv: int | str, timeout: _Seconds | None = None) -> bool: ...
    def last_synced_version(self) -> int: ...
    def get(self, key: str) -> _Obj | None: ...
    def list(self, label_selector: str | dict[str, Any] | None = None) -> _ObjList: ...
    def by_index(self, name: str, value: str) -> _ObjList: ...
    def index_keys(self, name: str, value: str) -> _StrList: ...
    def list_index_values(self, name: str) -> _StrList: ...
    def stats(self) -> _InformerStats: ...
    @property
    def kind(self) -> str: ...
    @property
    def stopped(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        *_exc: type[BaseException] | BaseException | TracebackType | None,
    ) -> bool: ...

@final
class RateLimiter:
    @staticmethod
    def exponential(base: _Seconds | None = None, max: _Seconds | None = None) -> RateLimiter: ...
    @staticmethod
    def fast_slow(fast: _Seconds, slow: _Seconds, max_fast_attempts: int) -> RateLimiter: ...
    @staticmethod
    def bucket(qps: _Seconds | None = None, burst: int | None = None) -> RateLimiter: ...
    @staticmethod
    def max_of(limiters: list[RateLimiter] | tuple[RateLimiter, ...]) -> RateLimiter: ...
    @staticmethod
    def default_controller() -> RateLimiter: ...
    def with_max_wait(self, max_delay: _Seconds) -> RateLimiter: ...
    def when(self, item: _Item) -> float: ...
    def forget(self, item: _Item) -> None: ...
    def num_requeues(self, item: _Item) -> int: ...

@final
class WorkQueue:
    def __new__(
        cls, rate_limiter: RateLimiter | None = None, name: str | None = None
    ) -> WorkQueue: ...
    def add(self, item: _Item) -> None: ...
    def add_after(self, item: _Item, seconds: _Seconds) -> None: ...
    def add_rate_limited(self, item: _Item) -> None: ...
    def get(self, timeout: _Seconds | None = None) -> Any: ...
    def done(self, item: _Item) -> None: ...
    def forget(self, item: _Item) -> None: ...
    def num_requeues(self, item: _Item) -> int: ...
    def __len__(self) -> int: ...
    def shut_down(self) -> None: ...
    def shut_down_with_drain(self) -> None: ...
    def shutting_down(self) -> bool: ...
    def metrics(self) -> _QueueMetrics: ...
    @property
    def name(self) -> str | None: ...

class _Started(TypedDict, total=False):
    address: str | None

_StartResult = _Started | dict[str, Any] | None
"""None, or {"address": "host:port" | None}; nothing else."""

class _ProbeSpec(TypedDict, total=False):
    """What an optional `driver.probe(instance, probe)` receives: the instance's
    readinessProbe / livenessProbe / startupProbe with its defaults filled in."""

    type: Literal["readiness", "liveness", "startup"]
    initialDelaySeconds: int
    periodSeconds: int
    timeoutSeconds: int
    successThreshold: int
    failureThreshold: int
    exec: dict[str, Any]
    httpGet: dict[str, Any]
    tcpSocket: dict[str, Any]
    grpc: dict[str, Any]

class _Driver(Protocol):
    """The host's driver: any object with these two methods (plain or `async def`; async
    ones need `ControlPlane(..., loop=...)`). They run on floyd's driver threads, holding the
    GIL only for the call. Raising fails the call; `start` returns None or
    {"address": "host:port"}, `stop` returns None; `stop` must be idempotent.

    Optionally, `probe(instance, probe: _ProbeSpec) -> bool` runs the instance's probes
    itself (plain or `async def`); raising or returning a non-bool is a probe error (tried three times, then
    discarded). Without it, floyd's built-in httpGet / tcpSocket / exec handlers run them."""

    def start(self, instance: _Obj, /) -> _StartResult | Awaitable[_StartResult]: ...
    def stop(self, instance: _Obj, /) -> None | Awaitable[None]: ...

class _ControlPlaneStats(TypedDict):
    syncs: int
    syncErrors: int
    driverStarts: int
    driverStartFailures: int
    driverStops: int
    storeWrites: int
    controllerQueue: int
    agentQueue: int
    runningInstances: int
    driverTimeouts: int
    driverLateResults: int
    driverThreadsReplaced: int
    probes: int
    probeFailures: int
    probeRestarts: int

@final
class ControlPlane:
    def __new__(
        cls,
        store: Store,
        driver: _Driver,
        workers: int | None = None,
        burst_replicas: int | None = None,
        clock: None = None,
        *,
        driver_threads: int | None = None,
        retry_base: _Seconds | None = None,
        retry_max: _Seconds | None = None,
        restart_backoff: _Seconds | None = None,
        restart_backoff_max: _Seconds | None = None,
        driver_timeout: _Seconds | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> ControlPlane: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def scale(
        self,
        key: str,
        replicas: int,
        kind: Literal["Deployment", "ReplicaSet"] | None = None,
    ) -> _Obj: ...
    def wait_for_rollout(self, key: str, timeout: _Seconds | None = None) -> dict[str, Any]: ...
    def rollback(self, key: str, to_revision: int | None = None) -> int: ...
    def pause(self, key: str) -> _Obj: ...
    def resume(self, key: str) -> _Obj: ...
    def promote(self, key: str) -> _Obj: ...
    def report_exit(self, instance_key: str, message: str) -> None: ...
    def endpoints(self, service_key: str) -> list[str]: ...
    def pick(self, service_key: str, hint: str | None = None) -> str | None: ...
    def stats(self) -> _ControlPlaneStats: ...
    def running_instances(self) -> list[str]: ...
    @property
    def stopped(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        *_exc: type[BaseException] | BaseException | TracebackType | None,
    ) -> bool: ...

def _panic_for_test(detached: bool = False) -> None: ...
def _bench_store_round_trips(n: int) -> float: ...
def _object_via_json(obj: dict[str, Any]) -> _Obj: ...
def _object_direct(obj: dict[str, Any]) -> _Obj: ...
def _object_fast(obj: object) -> _Obj | None: ...
def _shutdown_control_planes() -> None: ...
def _shutdown_informers() -> None: ...
