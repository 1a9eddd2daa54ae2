//! The runtime: the host's [`Driver`], the executor that runs driver calls off the
//! controllers' workers, the node agent (floyd's kubelet) and the [`ControlPlane`] that
//! wires store, cache, queues, controllers and agent together.
//!
//! Two ways to run: [`ControlPlane::start`] spawns an event thread, `workers` controller
//! workers, an agent worker and a bounded driver pool; the simulator instead calls
//! [`ControlPlane::step`] from one thread with a manual executor and a fake clock, so a seed
//! reproduces a run exactly.
//!
//! Every driver call carries a deadline (`driver_timeout` on the injected clock). The node
//! agent gives up on a call at its deadline; the pool then replaces the thread stuck in it
//! (at most [`MAX_REPLACEMENT_DRIVER_THREADS`] at a time), and `stop` does not wait for it.

mod agent;
pub mod cache;
mod deployment;
mod endpoints;
mod gc;
pub mod probe;
mod replicaset;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TrySendError, bounded};
use parking_lot::{Condvar, Mutex};

use crate::clock::{Clock, SharedClock, SystemClock, WallAnchor};
use crate::controller::expectations::Expectations;
use crate::error::{Error, Result};
use crate::store::{Object, Store};
use crate::sync::{AtomicBool, Ordering};
use crate::workqueue::{RateLimiter, WorkQueue, WorkQueueConfig};
pub use cache::Cache;
pub use deployment::{
    ACTIVE_HASH_ANNOTATION, DEPLOYMENT_MAX_RETRIES, PROMOTE_ANNOTATION, SWITCHED_AT_ANNOTATION,
};
pub use endpoints::{MAX_ENDPOINT_ADDRESSES, endpoints_for};

/// Upstream's `BurstReplicas`: the most creations or deletions one sync issues.
pub const BURST_REPLICAS_MAX: usize = 500;
/// Driver calls waiting for a pool thread, at most.
pub const MAX_PENDING_DRIVER_CALLS: usize = 65_536;
/// Default driver pool size: slow drivers block only their own calls.
pub const DEFAULT_DRIVER_THREADS: usize = 16;
/// Restart backoff after a failed start: 10 s doubling to 5 min (kubelet's crash loop).
pub const RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Why a driver call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverError(pub String);

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest address a driver may report (a DNS name, a colon and a port).
pub const MAX_ADDRESS_LEN: usize = 253 + 6;

/// What a started instance reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Started {
    /// Where traffic for it goes (`host:port`), if it serves any.
    pub address: Option<String>,
}

/// The host's hands: runs and stops instances (processes, containers, remote hosts). Calls
/// may be slow or fail; they run on the driver pool, never on a controller worker. A call
/// that takes longer than `ControlPlaneConfig::driver_timeout` counts as failed (a start is
/// retried with backoff, a stop is retried) and whatever it returns later is ignored, so
/// `start` may be called again for an instance whose earlier start timed out.
pub trait Driver: Send + Sync + 'static {
    /// Runs `instance` and returns once it runs. An error is a failed start (retried with
    /// backoff).
    fn start(&self, instance: &Object) -> std::result::Result<Started, DriverError>;
    /// Stops `instance`; must be idempotent.
    fn stop(&self, instance: &Object) -> std::result::Result<(), DriverError>;
    /// Runs one probe of a running `instance` (its `readinessProbe`, `livenessProbe` or
    /// `startupProbe`, defaults applied; `probe.spec` is the probe as JSON with its `type`).
    /// The default runs floyd's built-in `httpGet`, `tcpSocket` and `exec` handlers
    /// ([`probe::run_builtin`]). An `Err` means the probe could not be run: it is tried up
    /// to three times, then discarded (it counts neither as success nor as failure). A call
    /// still out a second past the probe's `timeoutSeconds` is a failure.
    fn probe(
        &self,
        instance: &Object,
        probe: &crate::controller::probe::Probe,
    ) -> std::result::Result<crate::controller::probe::ProbeOutcome, DriverError> {
        probe::run_builtin(instance, probe)
    }
}

/// A driver that starts and stops nothing (every call succeeds at once).
#[derive(Debug, Default)]
pub struct NoopDriver;

impl Driver for NoopDriver {
    fn start(&self, _: &Object) -> std::result::Result<Started, DriverError> {
        Ok(Started::default())
    }
    fn stop(&self, _: &Object) -> std::result::Result<(), DriverError> {
        Ok(())
    }
}

type Job = Box<dyn FnOnce() + Send>;
/// A queued driver call: the work and its bookkeeping.
type Queued = (Job, Arc<Call>);

/// The most pool threads alive beyond `driver_threads` at once: one replaces each thread
/// stuck in a driver call past the timeout, so a few hung calls cannot starve the pool. A
/// replaced thread exits when its call finally returns. Past this many, a stuck thread is
/// not replaced (the pool shrinks until a hung call returns).
pub const MAX_REPLACEMENT_DRIVER_THREADS: usize = 64;
/// Longest accepted `driver_timeout`.
pub const MAX_DRIVER_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Default bound on one driver call.
pub const DEFAULT_DRIVER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallState {
    /// Waiting for a pool thread.
    Queued,
    /// Running on a thread.
    Running,
    /// Returned (its result may have been ignored).
    Finished,
}

/// One driver call on the executor: its deadline on the control plane's clock and where it
/// is. The node agent keeps the call it waits for; a result whose call is no longer the one
/// the agent waits for is late and ignored.
#[derive(Debug)]
pub(crate) struct Call {
    /// Submission time plus `driver_timeout`, on the injected clock.
    pub deadline: Instant,
    state: Mutex<CallInner>,
}

#[derive(Debug)]
struct CallInner {
    state: CallState,
    /// The agent gave up on it.
    timed_out: bool,
    /// A replacement thread was spawned for the thread running it.
    replaced: bool,
}

/// What [`Executor::time_out`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimedOut {
    /// The call never reached the driver; it is skipped when a thread picks it up.
    NotBegun,
    /// The call is inside the driver; its thread was replaced (or not, at the maximum).
    Running { replaced: bool },
    /// The call had already returned.
    Finished,
}

impl Call {
    pub(crate) fn new(deadline: Instant) -> Arc<Call> {
        Arc::new(Call {
            deadline,
            state: Mutex::new(CallInner {
                state: CallState::Queued,
                timed_out: false,
                replaced: false,
            }),
        })
    }

    /// Queued → Running; false if the call timed out while queued (skip it).
    fn begin(&self) -> bool {
        let mut c = self.state.lock();
        if c.timed_out {
            c.state = CallState::Finished;
            return false;
        }
        c.state = CallState::Running;
        true
    }

    /// Running → Finished; true if this thread was replaced and should exit.
    fn finish(&self) -> bool {
        let mut c = self.state.lock();
        c.state = CallState::Finished;
        c.replaced
    }

    /// Marks the call given up on by its own thread (no replacement needed).
    pub(crate) fn mark_timed_out(&self) {
        self.state.lock().timed_out = true;
    }

    pub(crate) fn timed_out(&self) -> bool {
        self.state.lock().timed_out
    }

    /// Whether the call is past its deadline and still inside the driver.
    pub(crate) fn hung(&self) -> bool {
        let c = self.state.lock();
        c.timed_out && c.state == CallState::Running
    }
}

/// A pool thread's slot: the call it runs, and whether it has exited.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<Arc<Call>>>,
    exited: AtomicBool,
}

struct Worker {
    handle: crate::sync::Joinable<()>,
    slot: Arc<Slot>,
}

/// Bumped and broadcast whenever a pool thread finishes a call or exits (and on a fake
/// clock's advance), for [`Executor::shutdown`].
#[derive(Default)]
struct Progress {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Progress {
    fn bump(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }
}

/// The thread pool behind [`Executor::Pool`].
pub(crate) struct Pool {
    tx: Mutex<Option<Sender<Queued>>>,
    rx: Receiver<Queued>,
    workers: Mutex<Vec<Worker>>,
    next_id: crate::sync::AtomicU64,
    /// Replacement threads alive beyond the configured size.
    replacements: Mutex<usize>,
    max_replacements: usize,
    progress: Arc<Progress>,
    clock: SharedClock,
    /// Keeps the fake-clock waker alive.
    _on_advance: Arc<dyn Fn() + Send + Sync>,
}

/// Runs driver calls: a bounded thread pool, or a manual queue the simulator drains.
pub(crate) enum Executor {
    Pool(Arc<Pool>),
    Manual(Mutex<VecDeque<Queued>>),
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Executor::Pool(p) => write!(f, "Executor::Pool({} threads)", p.workers.lock().len()),
            Executor::Manual(q) => write!(f, "Executor::Manual({} pending)", q.lock().len()),
        }
    }
}

impl Pool {
    fn spawn_worker(self: &Arc<Pool>) -> Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        let (pool, s) = (Arc::downgrade(self), slot.clone());
        let rx = self.rx.clone();
        let progress = self.progress.clone();
        let handle = std::thread::Builder::new()
            .name(format!("floyd-driver-{id}"))
            .spawn(move || {
                while let Ok((job, call)) = rx.recv() {
                    if !call.begin() {
                        continue;
                    }
                    *s.current.lock() = Some(call.clone());
                    // Tells a waiting shutdown that this thread is now inside a call.
                    progress.bump();
                    // A panicking driver fails only its own call.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    *s.current.lock() = None;
                    let replaced = call.finish();
                    progress.bump();
                    if replaced {
                        // A replacement took this thread's place while it was stuck.
                        if let Some(p) = pool.upgrade() {
                            let mut r = p.replacements.lock();
                            *r = r.saturating_sub(1);
                        }
                        break;
                    }
                }
                s.exited.store(true, Ordering::Release);
                progress.bump();
            })
            .map_err(|e| Error::io("spawn a driver thread", e))?;
        let mut workers = self.workers.lock();
        // Replaced threads that have exited since are forgotten (their handles detach).
        workers.retain(|w| !w.slot.exited.load(Ordering::Acquire));
        workers.push(Worker {
            handle: handle.into(),
            slot,
        });
        Ok(())
    }
}

impl Executor {
    /// A pool of `threads` driver threads on `clock`, replacing at most `max_replacements`
    /// threads stuck past their call's deadline at a time.
    pub fn pool(threads: usize, max_replacements: usize, clock: SharedClock) -> Result<Executor> {
        let (tx, rx) = bounded(MAX_PENDING_DRIVER_CALLS);
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let on_advance: Arc<dyn Fn() + Send + Sync> = Arc::new(move || p.bump());
        clock.on_advance(Arc::downgrade(&on_advance));
        let pool = Arc::new(Pool {
            tx: Mutex::new(Some(tx)),
            rx,
            workers: Mutex::new(Vec::new()),
            next_id: crate::sync::AtomicU64::new(0),
            replacements: Mutex::new(0),
            max_replacements,
            progress,
            clock,
            _on_advance: on_advance,
        });
        for _ in 0..threads.max(1) {
            pool.spawn_worker()?;
        }
        Ok(Executor::Pool(pool))
    }

    pub fn manual() -> Executor {
        Executor::Manual(Mutex::new(VecDeque::new()))
    }

    fn submit(&self, job: Job, call: Arc<Call>) -> Result<()> {
        match self {
            Executor::Pool(p) => match p.tx.lock().as_ref() {
                None => Err(Error::ShutDown("the driver pool is stopped".into())),
                Some(tx) => tx.try_send((job, call)).map_err(|e| match e {
                    TrySendError::Full(_) => {
                        Error::Internal("too many pending driver calls".into())
                    }
                    TrySendError::Disconnected(_) => {
                        Error::ShutDown("the driver pool is stopped".into())
                    }
                }),
            },
            Executor::Manual(q) => {
                q.lock().push_back((job, call));
                Ok(())
            }
        }
    }

    /// Gives up on `call` (its deadline passed): a queued call is skipped; the thread of a
    /// running one is replaced, up to the pool's maximum of replacements, and exits once the
    /// call returns.
    pub(crate) fn time_out(&self, call: &Call) -> TimedOut {
        let mut c = call.state.lock();
        c.timed_out = true;
        match c.state {
            CallState::Queued => TimedOut::NotBegun,
            CallState::Finished => TimedOut::Finished,
            CallState::Running => {
                let Executor::Pool(p) = self else {
                    return TimedOut::Running { replaced: false };
                };
                let mut r = p.replacements.lock();
                if *r >= p.max_replacements || p.tx.lock().is_none() {
                    return TimedOut::Running { replaced: false };
                }
                match p.spawn_worker() {
                    Ok(()) => {
                        *r += 1;
                        c.replaced = true;
                        TimedOut::Running { replaced: true }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not replace a stuck driver thread");
                        TimedOut::Running { replaced: false }
                    }
                }
            }
        }
    }

    /// Runs one queued job (manual executor); false if none was queued.
    pub fn run_one(&self) -> bool {
        match self {
            Executor::Manual(q) => {
                let next = q.lock().pop_front();
                match next {
                    Some((job, call)) => {
                        if call.begin() {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            call.finish();
                        }
                        true
                    }
                    None => false,
                }
            }
            Executor::Pool(_) => false,
        }
    }

    /// Stops taking calls and waits for the pool's threads: they run the calls still
    /// queued, and each call in flight gets until its deadline (on the clock). A thread
    /// stuck past its call's deadline is left behind, detached: it exits when the call
    /// returns, and its result is ignored.
    ///
    /// Calls still queued afterwards (all of a stepped plane's, or a pool's whose threads
    /// were all left behind) are dropped unrun, as a stopped plane skips them anyway: each
    /// holds the control plane's shared state, which holds this queue, so a queued call
    /// kept past the stop would keep the whole plane (its store, driver and caches) alive
    /// after its last handle is gone.
    fn shutdown(&self) {
        let p = match self {
            Executor::Manual(q) => {
                drop(std::mem::take(&mut *q.lock()));
                return;
            }
            Executor::Pool(p) => p,
        };
        p.tx.lock().take();
        let workers = std::mem::take(&mut *p.workers.lock());
        for w in workers {
            loop {
                let seen = *p.progress.generation.lock();
                if w.slot.exited.load(Ordering::Acquire) {
                    let _ = w.handle.join();
                    break;
                }
                let current = w.slot.current.lock().clone();
                let now = p.clock.now();
                let wait = match &current {
                    Some(c) if c.timed_out() || now >= c.deadline => {
                        c.state.lock().timed_out = true;
                        tracing::warn!(
                            "a driver call is stuck past its deadline at stop; leaving its thread behind"
                        );
                        break;
                    }
                    Some(c) => p.clock.park_timeout(c.deadline),
                    // Between calls: the thread takes the next one or exits, and says so.
                    None => None,
                };
                let mut g = p.progress.generation.lock();
                if *g == seen {
                    match wait {
                        Some(d) => {
                            p.progress.changed.wait_for(&mut g, d);
                        }
                        None => p.progress.changed.wait(&mut g),
                    }
                }
            }
        }
        while let Ok(queued) = p.rx.try_recv() {
            drop(queued);
        }
    }
}

/// Control plane configuration.
#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    pub workers: usize,
    pub burst_replicas: usize,
    pub driver_threads: usize,
    pub clock: SharedClock,
    /// Per-item backoff of controller retries (client-go's default: 5 ms to 1000 s).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Crash-loop backoff after a failed start: first delay, doubling up to the max
    /// (the kubelet's 10 s and 5 min by default).
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    /// Longest one `Driver::start` or `Driver::stop` call may take, measured on `clock` from
    /// when the call is queued: a start past it is a failed start (restart backoff applies),
    /// a stop past it is retried. Its result, if it ever comes, is ignored.
    pub driver_timeout: Duration,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            workers: 2,
            burst_replicas: BURST_REPLICAS_MAX,
            driver_threads: DEFAULT_DRIVER_THREADS,
            clock: SystemClock::shared(),
            retry_base: Duration::from_millis(5),
            retry_max: Duration::from_secs(1000),
            restart_backoff: RESTART_BACKOFF_INITIAL,
            restart_backoff_max: RESTART_BACKOFF_MAX,
            driver_timeout: DEFAULT_DRIVER_TIMEOUT,
        }
    }
}

impl ControlPlaneConfig {
    fn validate(&self) -> Result<()> {
        if self.driver_threads == 0 || self.driver_threads > 1024 {
            return Err(Error::invalid(
                "driver_threads",
                format!("must be 1..=1024, got {}", self.driver_threads),
            ));
        }
        if self.workers == 0 || self.workers > 256 {
            return Err(Error::invalid(
                "workers",
                format!("must be 1..=256, got {}", self.workers),
            ));
        }
        if self.burst_replicas == 0 || self.burst_replicas > BURST_REPLICAS_MAX {
            return Err(Error::invalid(
                "burst_replicas",
                format!(
                    "must be 1..={BURST_REPLICAS_MAX}, got {}",
                    self.burst_replicas
                ),
            ));
        }
        if self.retry_base.is_zero() || self.retry_base > self.retry_max {
            return Err(Error::invalid(
                "retry_base",
                "must be positive and at most retry_max",
            ));
        }
        if self.driver_timeout.is_zero() || self.driver_timeout > MAX_DRIVER_TIMEOUT {
            return Err(Error::invalid(
                "driver_timeout",
                format!(
                    "must be more than 0 and at most {} s, got {} s",
                    MAX_DRIVER_TIMEOUT.as_secs(),
                    self.driver_timeout.as_secs_f64()
                ),
            ));
        }
        Ok(())
    }
}

/// Counters for observing the control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlPlaneStats {
    pub syncs: u64,
    pub sync_errors: u64,
    pub driver_starts: u64,
    pub driver_start_failures: u64,
    pub driver_stops: u64,
    pub store_writes: u64,
    /// Driver calls that did not finish within `driver_timeout`.
    pub driver_timeouts: u64,
    /// Results of timed-out calls that came back after all (ignored).
    pub driver_late_results: u64,
    /// Pool threads spawned to replace threads stuck in a timed-out call.
    pub driver_threads_replaced: u64,
    /// Probes run (each counted once, however many attempts an erring handler took).
    pub probes: u64,
    /// Probes that failed (timeouts included; errors are not failures).
    pub probe_failures: u64,
    /// Instances stopped and restarted because a liveness or startup probe failed.
    pub probe_restarts: u64,
}

pub(crate) struct Shared {
    pub store: Store,
    pub driver: Arc<dyn Driver>,
    pub cfg: ControlPlaneConfig,
    pub cache: Cache,
    pub rs_queue: WorkQueue<String>,
    pub agent_queue: WorkQueue<String>,
    pub svc_queue: WorkQueue<String>,
    pub dep_queue: WorkQueue<String>,
    /// Dependents (`Kind/namespace/name`) whose controller may be gone (see `gc`).
    pub gc_queue: WorkQueue<String>,
    pub pickers: endpoints::Pickers,
    pub expectations: Expectations,
    pub executor: Executor,
    pub agent: agent::Agent,
    pub stats: Mutex<ControlPlaneStats>,
    pub stopped: AtomicBool,
    /// Simulator fault: the next this-many instance creations fail as a timed-out write.
    pub failing_creates: crate::sync::AtomicU64,
    /// Wall time for every timestamp the controllers write and compare (minReadySeconds,
    /// progress deadlines, blue-green delays): anchored to the monotonic clock when the
    /// control plane was built, so a wall-clock step while it runs changes no decision.
    pub wall: WallAnchor,
}

/// The controllers, wired to the store and a host driver.
pub struct ControlPlane {
    shared: Arc<Shared>,
    threads: Mutex<Vec<crate::sync::Joinable<()>>>,
    started: AtomicBool,
    made: crate::sync::ForkStamp,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("cache", &self.shared.cache)
            .finish()
    }
}

impl ControlPlane {
    /// A control plane that runs its own threads after [`ControlPlane::start`].
    pub fn new(
        store: Store,
        driver: Arc<dyn Driver>,
        cfg: ControlPlaneConfig,
    ) -> Result<ControlPlane> {
        cfg.validate()?;
        let exec = Executor::pool(
            cfg.driver_threads,
            MAX_REPLACEMENT_DRIVER_THREADS,
            cfg.clock.clone(),
        )?;
        ControlPlane::build(store, driver, cfg, exec)
    }

    /// A control plane driven by [`ControlPlane::step`] from the caller's thread, with driver
    /// calls queued until [`ControlPlane::run_driver_call`] — the simulator's mode.
    pub fn stepped(
        store: Store,
        driver: Arc<dyn Driver>,
        cfg: ControlPlaneConfig,
    ) -> Result<ControlPlane> {
        cfg.validate()?;
        ControlPlane::build(store, driver, cfg, Executor::manual())
    }

    fn build(
        store: Store,
        driver: Arc<dyn Driver>,
        cfg: ControlPlaneConfig,
        executor: Executor,
    ) -> Result<ControlPlane> {
        let cache = Cache::new(&store)?;
        let queue = |name: &str| {
            WorkQueue::with_config(WorkQueueConfig {
                name: Some(name.to_string()),
                clock: cfg.clock.clone(),
                rate_limiter: Some(RateLimiter::max_of(vec![
                    RateLimiter::exponential(cfg.retry_base, cfg.retry_max),
                    RateLimiter::bucket_with_clock(10.0, 100, cfg.clock.clone()),
                ])),
            })
        };
        let shared = Arc::new(Shared {
            rs_queue: queue("replicaset"),
            agent_queue: queue("agent"),
            svc_queue: queue("endpoints"),
            dep_queue: queue("deployment"),
            gc_queue: queue("garbage-collector"),
            pickers: endpoints::Pickers::default(),
            expectations: Expectations::new(),
            agent: agent::Agent::default(),
            stats: Mutex::new(ControlPlaneStats::default()),
            stopped: AtomicBool::new(false),
            failing_creates: crate::sync::AtomicU64::new(0),
            wall: WallAnchor::new(&*cfg.clock),
            executor,
            cache,
            store,
            driver,
            cfg,
        });
        // Everything already in the cache needs a first look.
        for rs in shared.cache.list("ReplicaSet", None) {
            shared.rs_queue.add(rs.key());
        }
        for i in shared.cache.list("Instance", None) {
            shared.agent_queue.add(i.key());
        }
        for svc in shared.cache.list("Service", None) {
            shared.svc_queue.add(svc.key());
        }
        for d in shared.cache.list("Deployment", None) {
            shared.dep_queue.add(d.key());
        }
        // Dependents whose controller was deleted while no control plane ran.
        for kind in ["ReplicaSet", "Instance"] {
            for o in shared.cache.list(kind, None) {
                shared.check_controller_present(&o);
            }
        }
        Ok(ControlPlane {
            shared,
            threads: Mutex::new(vec![]),
            made: crate::sync::ForkStamp::now(),
            started: AtomicBool::new(false),
        })
    }

    /// Starts the event thread, the controller workers and the agent worker.
    pub fn start(&self) -> Result<()> {
        self.check_running()?;
        if self.started.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut threads = self.threads.lock();
        let s = self.shared.clone();
        threads.push(spawn("floyd-events", move || {
            while !s.stopped.load(Ordering::Acquire) {
                match s.cache.pump_changes(Some(Duration::from_millis(100))) {
                    Ok(evs) => s.dispatch(&evs),
                    Err(e) if e.kind() == crate::ErrorKind::ShutDown => break,
                    Err(e) => {
                        tracing::error!(error = %e, "control plane watch failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?);
        for i in 0..self.shared.cfg.workers {
            let s = self.shared.clone();
            threads.push(spawn(&format!("floyd-rs-{i}"), move || {
                while let Some(key) = s.rs_queue.get() {
                    s.process_rs(&key);
                }
            })?);
            let s = self.shared.clone();
            threads.push(spawn(&format!("floyd-deploy-{i}"), move || {
                while let Some(key) = s.dep_queue.get() {
                    s.process_deployment(&key);
                }
            })?);
        }
        let s = self.shared.clone();
        threads.push(spawn("floyd-gc", move || {
            while let Some(key) = s.gc_queue.get() {
                s.process_gc(&key);
            }
        })?);
        let s = self.shared.clone();
        threads.push(spawn("floyd-endpoints", move || {
            while let Some(key) = s.svc_queue.get() {
                s.process_service(&key);
            }
        })?);
        let s = self.shared.clone();
        threads.push(spawn("floyd-agent", move || {
            while let Some(key) = s.agent_queue.get() {
                s.process_agent(&key);
            }
        })?);
        Ok(())
    }

    /// One deterministic step (stepped mode): applies ready events, then processes one
    /// queued controller key and one agent key. Returns whether anything happened.
    pub fn step(&self) -> Result<bool> {
        self.step_with(true)
    }

    /// [`ControlPlane::step`] that may withhold the watch (`pump = false`): the cache lags
    /// the store, as an informer behind a slow watch would (simulator fault).
    pub fn step_with(&self, pump: bool) -> Result<bool> {
        self.check_running()?;
        let mut did = false;
        if pump {
            let evs = self.shared.cache.pump_changes(None)?;
            did = !evs.is_empty();
            self.shared.dispatch(&evs);
        }
        if let Some(k) = self.shared.dep_queue.try_get() {
            self.shared.process_deployment(&k);
            did = true;
        }
        if let Some(k) = self.shared.rs_queue.try_get() {
            self.shared.process_rs(&k);
            did = true;
        }
        if let Some(k) = self.shared.agent_queue.try_get() {
            self.shared.process_agent(&k);
            did = true;
        }
        if let Some(k) = self.shared.svc_queue.try_get() {
            self.shared.process_service(&k);
            did = true;
        }
        if let Some(k) = self.shared.gc_queue.try_get() {
            self.shared.process_gc(&k);
            did = true;
        }
        Ok(did)
    }

    /// Simulator fault injection: the next `n` instance creations by the ReplicaSet
    /// controller fail as a store write that timed out (K2, K3).
    #[doc(hidden)]
    pub fn fail_next_creates(&self, n: u64) {
        self.shared.failing_creates.store(n, Ordering::Release);
    }

    /// Reports that a running instance (`namespace/name`) exited on its own, e.g. its
    /// process crashed: it turns not-ready, its restart count grows, and it is started again
    /// after the crash-loop backoff. `NotFound` if the node agent is not running it.
    pub fn report_exit(&self, instance_key: &str, message: &str) -> Result<()> {
        self.check_running()?;
        self.shared.instance_exited(instance_key, message)
    }

    /// Queues a ReplicaSet key for a sync, as a resync would.
    pub fn enqueue_replicaset(&self, key: &str) {
        self.shared.rs_queue.add(key.to_string());
    }

    /// Instances the node agent has started and not stopped.
    pub fn running_instances(&self) -> Vec<String> {
        self.shared.running_instances()
    }

    /// Runs one queued driver call (stepped mode).
    pub fn run_driver_call(&self) -> bool {
        self.shared.executor.run_one()
    }

    /// Stops every thread; in-flight driver calls finish, each within its `driver_timeout`
    /// (on the configured clock): a thread stuck in a call past it is left behind, detached,
    /// and exits when the call returns. Idempotent.
    pub fn stop(&self) -> Result<()> {
        if self.shared.stopped.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if self.made.is_forked_copy() {
            // A forked child's copy: none of its threads exist here, nothing runs in them
            // to wait for, and no driver call of the parent's is this process's to finish.
            // Its locks are left alone too (a thread of the parent may have held one at the
            // fork); the thread handles forget themselves when dropped.
            return Ok(());
        }
        self.shared.rs_queue.shut_down();
        self.shared.agent_queue.shut_down();
        self.shared.svc_queue.shut_down();
        self.shared.dep_queue.shut_down();
        self.shared.gc_queue.shut_down();
        for h in self.threads.lock().drain(..) {
            let _ = h.join();
        }
        self.shared.executor.shutdown();
        self.shared.cache.close();
        Ok(())
    }

    fn check_running(&self) -> Result<()> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(Error::ShutDown("the control plane is stopped".into()));
        }
        self.made.check("control plane")
    }

    pub fn stats(&self) -> ControlPlaneStats {
        self.shared.stats.lock().clone()
    }

    /// The cache's applied version.
    pub fn cache_version(&self) -> u64 {
        self.shared.cache.version()
    }

    pub fn cache(&self) -> &Cache {
        &self.shared.cache
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Queue depths (controller, agent) and pending driver calls — zero at quiescence.
    pub fn pending(&self) -> (usize, usize) {
        (
            self.shared.rs_queue.len()
                + self.shared.svc_queue.len()
                + self.shared.dep_queue.len()
                + self.shared.gc_queue.len(),
            self.shared.agent_queue.len(),
        )
    }

    /// Waits until the Deployment's rollout completes and returns its status. Fails with
    /// `Expired` when the rollout exceeded its progress deadline (`ProgressDeadlineExceeded`)
    /// or when `timeout` passes first, with `NotFound` for a missing Deployment.
    pub fn wait_for_rollout(&self, key: &str, timeout: Duration) -> Result<serde_json::Value> {
        let clock = SystemClock;
        // A timeout too large to add to the clock means no deadline.
        let deadline = clock.now().checked_add(timeout);
        loop {
            self.check_running()?;
            let d = self
                .shared
                .store
                .get("Deployment", key)?
                .ok_or_else(|| Error::NotFound(format!("Deployment {key}")))?;
            match deployment::rollout_state(&d)? {
                deployment::RolloutState::Complete(status) => return Ok(status),
                deployment::RolloutState::DeadlineExceeded(msg) => {
                    return Err(Error::Expired(format!("ProgressDeadlineExceeded: {msg}")));
                }
                deployment::RolloutState::InProgress => {}
            }
            if deadline.is_some_and(|d| clock.now() >= d) {
                return Err(Error::Expired(format!(
                    "timed out after {timeout:?} waiting for the rollout of Deployment {key}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Rolls a Deployment back to `to_revision` (0: the previous revision). Returns the
    /// revision it rolled back to.
    pub fn rollback(&self, key: &str, to_revision: i64) -> Result<i64> {
        self.check_running()?;
        self.shared.rollback(key, to_revision)
    }

    /// Pauses a Deployment's rollout (scaling still applies).
    pub fn pause(&self, key: &str) -> Result<Arc<Object>> {
        self.check_running()?;
        self.shared.set_paused(key, true)
    }

    /// Resumes a paused Deployment.
    pub fn resume(&self, key: &str) -> Result<Arc<Object>> {
        self.check_running()?;
        self.shared.set_paused(key, false)
    }

    /// Promotes a BlueGreen Deployment's new revision (when `autoPromote` is off).
    pub fn promote(&self, key: &str) -> Result<Arc<Object>> {
        self.check_running()?;
        self.shared.promote(key)
    }

    /// The ready addresses of a Service (`namespace/name`).
    pub fn endpoints(&self, service_key: &str) -> Result<Vec<String>> {
        self.check_running()?;
        self.shared.ready_addresses(service_key)
    }

    /// One ready address of a Service: round robin, or stable for a `hint` (e.g. a client
    /// id). `None` when no instance is ready.
    pub fn pick(&self, service_key: &str, hint: Option<&str>) -> Result<Option<String>> {
        self.check_running()?;
        self.shared.pick(service_key, hint)
    }

    /// Scales a ReplicaSet or Deployment (`kind/namespace/name` key is `namespace/name`).
    pub fn scale(&self, kind: &str, key: &str, replicas: i64) -> Result<Arc<Object>> {
        self.check_running()?;
        if !(0..=i32::MAX as i64).contains(&replicas) {
            return Err(Error::invalid(
                "spec.replicas",
                format!("must be 0..={}, got {replicas}", i32::MAX),
            ));
        }
        loop {
            let cur = self
                .shared
                .store
                .get(kind, key)?
                .ok_or_else(|| Error::NotFound(format!("{kind} {key}")))?;
            let mut next = (*cur).clone();
            next.spec["replicas"] = serde_json::json!(replicas);
            match self.shared.store.update(next) {
                Err(e) if e.kind() == crate::ErrorKind::Conflict => continue,
                r => return r,
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<crate::sync::Joinable<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map(Into::into)
        .map_err(|e| Error::io("spawn a control plane thread", e))
}

impl Shared {
    /// Turns events into queue keys (the controllers' event handlers).
    fn dispatch(&self, changes: &[cache::Change]) {
        for (ev, old) in changes {
            let o = &ev.object;
            self.on_event_for_endpoints(ev);
            self.on_event_for_deployments(ev);
            self.on_event_for_gc(ev);
            match o.kind.as_str() {
                "ReplicaSet" => self.rs_queue.add(o.key()),
                "Instance" => {
                    self.agent_queue.add(o.key());
                    self.on_instance_event(ev, old.as_deref());
                }
                _ => {}
            }
        }
    }

    /// The anchored wall time (see [`WallAnchor`]).
    pub(crate) fn wall(&self) -> std::time::SystemTime {
        self.wall.wall(&*self.cfg.clock)
    }

    fn now(&self) -> Instant {
        self.cfg.clock.now()
    }

    fn count(&self, f: impl FnOnce(&mut ControlPlaneStats)) {
        f(&mut self.stats.lock());
    }

    /// One pass of a controller's worker over `key`: `sync` it; on success forget its
    /// failures, on an error count it and requeue it with backoff — at most `max_retries`
    /// times in a row if given, after which it waits for the next event on its object —
    /// and then mark it done. `what` names the controller in the log.
    fn process_key(
        &self,
        queue: &WorkQueue<String>,
        what: &'static str,
        key: &str,
        max_retries: Option<u64>,
        sync: impl FnOnce(&str) -> Result<()>,
    ) {
        let k = key.to_string();
        match sync(key) {
            Ok(()) => queue.forget(&k),
            Err(e) => {
                self.count(|c| c.sync_errors += 1);
                if max_retries.is_none_or(|m| queue.num_requeues(&k) < m) {
                    tracing::warn!(controller = what, %key, error = %e, "sync failed; requeued with backoff");
                    queue.add_rate_limited(k.clone());
                } else {
                    tracing::warn!(controller = what, %key, error = %e, retries = max_retries,
                        "sync failed; dropped out of the queue until its object changes");
                    queue.forget(&k);
                }
            }
        }
        queue.done(&k);
    }
}

/// A stepped control plane on a fake clock and an in-memory store, for unit tests that
/// drive a host driver of their own.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::clock::FakeClock;
    use crate::store::StoreConfig;

    pub(crate) fn stepped_plane(driver: Arc<dyn Driver>) -> (Store, Arc<FakeClock>, ControlPlane) {
        let clock = FakeClock::shared();
        let store = Store::memory_with(StoreConfig {
            clock: clock.clone(),
            ..StoreConfig::default()
        })
        .unwrap();
        let cp = ControlPlane::stepped(
            store.clone(),
            driver,
            ControlPlaneConfig {
                clock: clock.clone(),
                ..ControlPlaneConfig::default()
            },
        )
        .unwrap();
        (store, clock, cp)
    }

    /// `rounds` steps, each running every driver call and then 100 ms of fake time.
    pub(crate) fn run(cp: &ControlPlane, clock: &FakeClock, rounds: usize) {
        for _ in 0..rounds {
            cp.step().unwrap();
            while cp.run_driver_call() {}
            clock.advance(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam::channel::unbounded;

    /// A job that says when it runs and then blocks until released.
    fn blocking(entered: &Sender<&'static str>, name: &'static str) -> (Job, Sender<()>) {
        let (release, wait) = bounded::<()>(1);
        let entered = entered.clone();
        let job: Job = Box::new(move || {
            let _ = entered.send(name);
            let _ = wait.recv();
        });
        (job, release)
    }

    struct StartsAll;

    impl Driver for StartsAll {
        fn start(&self, _: &Object) -> std::result::Result<Started, DriverError> {
            Ok(Started::default())
        }
        fn stop(&self, _: &Object) -> std::result::Result<(), DriverError> {
            Ok(())
        }
    }

    /// Every queued driver call holds the plane's shared state, which holds the queue: a
    /// plane dropped with calls still queued must free that state (its store, driver and
    /// caches) all the same. The simulator leaked about 2 MB a seed before.
    #[test]
    fn a_plane_dropped_with_queued_driver_calls_frees_its_state() {
        let driver = Arc::new(StartsAll);
        let (store, _clock, cp) = test_support::stepped_plane(driver.clone());
        for i in 0..3 {
            store
                .create(
                    Object::from_json(&serde_json::json!({"kind": "Instance",
                        "metadata": {"name": format!("i{i}")}, "spec": {}}))
                    .unwrap(),
                )
                .unwrap();
        }
        // Steps that queue the starts but never run them.
        for _ in 0..5 {
            cp.step().unwrap();
        }
        let Executor::Manual(q) = &cp.shared.executor else {
            unreachable!("a stepped plane queues its driver calls")
        };
        assert!(!q.lock().is_empty(), "the starts are queued");
        let shared = Arc::downgrade(&cp.shared);
        drop(cp);
        assert!(shared.upgrade().is_none(), "the plane's state outlived it");
        assert_eq!(
            Arc::strong_count(&driver),
            1,
            "the driver outlived the plane"
        );
    }

    #[test]
    fn stuck_threads_are_replaced_up_to_the_maximum_and_timed_out_queued_calls_are_skipped() {
        let clock = SystemClock::shared();
        let exec = Executor::pool(1, 1, clock.clone()).unwrap();
        let deadline = clock.now();
        let (etx, erx) = unbounded();
        let Executor::Pool(pool) = &exec else {
            unreachable!()
        };

        let (a, release_a) = blocking(&etx, "a");
        let call_a = Call::new(deadline);
        exec.submit(a, call_a.clone()).unwrap();
        assert_eq!(erx.recv().unwrap(), "a");
        assert_eq!(exec.time_out(&call_a), TimedOut::Running { replaced: true });
        assert!(call_a.hung());

        // The replacement runs the next call; when that one is stuck too, the maximum (1)
        // is reached and its thread is not replaced.
        let (b, release_b) = blocking(&etx, "b");
        let call_b = Call::new(deadline);
        exec.submit(b, call_b.clone()).unwrap();
        assert_eq!(erx.recv().unwrap(), "b");
        assert_eq!(
            exec.time_out(&call_b),
            TimedOut::Running { replaced: false }
        );

        // A call that times out while queued never runs.
        let (c, _release_c) = blocking(&etx, "c");
        let call_c = Call::new(deadline);
        exec.submit(c, call_c.clone()).unwrap();
        assert_eq!(exec.time_out(&call_c), TimedOut::NotBegun);

        // The replaced thread exits when its call returns; the other one carries on.
        release_a.send(()).unwrap();
        release_b.send(()).unwrap();
        let (d, release_d) = blocking(&etx, "d");
        let call_d = Call::new(clock.now() + Duration::from_secs(3600));
        release_d.send(()).unwrap();
        exec.submit(d, call_d.clone()).unwrap();
        assert_eq!(erx.recv().unwrap(), "d");
        exec.shutdown();
        assert!(erx.try_recv().is_err(), "c must have been skipped");
        // Shutdown waited for the thread running d (not timed out) to finish it.
        assert_eq!(exec.time_out(&call_d), TimedOut::Finished);
        assert!(pool.tx.lock().is_none());
    }
}
