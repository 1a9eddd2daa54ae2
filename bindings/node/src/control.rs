//! `ControlPlane`: the core's controllers and node agent, wired to a host driver written in
//! JavaScript.
//!
//! The driver is a JS object with `start(instance)` and `stop(instance)`, and optionally
//! `probe(instance, probe)` (resolving with a boolean; without it floyd's built-in probe
//! handlers run); each may return a value or a promise. The core calls its driver from its own pool threads and waits for the
//! answer, so [`JsDriver`] turns each call into a thread-safe function call onto the JS thread
//! plus a blocking wait on a one-shot channel:
//!
//! - on the JS thread, the method runs with `this` = the driver; a synchronous throw is a
//!   failure; the return value goes through `Promise.resolve` (values, promises and thenables
//!   alike), and its settlement answers the channel — a rejection is a failure, and `start`
//!   must resolve with `undefined`, `null` or `{address?: string}` (anything else is a failure
//!   naming what came back);
//! - the core fails a call that has not answered within `driverTimeout` seconds (its
//!   `ControlPlaneConfig::driver_timeout`: the instance's status records it, and a late
//!   answer is ignored); the pool thread's own wait ends [`DRIVER_WAIT_GRACE`] later, so a
//!   never-settling promise does not hold a thread forever, or at once when the control plane
//!   is abandoned: garbage-collected, or its JS environment torn down (process exit,
//!   `worker_threads` termination). A settlement that arrives after its wait ended is
//!   dropped.
//!
//! The thread-safe functions are weak (they never keep the process alive) and are released
//! once the control plane has stopped, so a driver that refers back to its control plane does
//! not keep either alive. `stop()` returns a promise: the core's stop joins its threads, and a
//! thread waiting for a driver promise needs the JS thread free to settle it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender, bounded};
use napi::bindgen_prelude::{
    CallbackContext, ClassInstance, FnArgs, FromNapiValue, Function, JsObjectValue, JsValue,
    Object, PromiseRaw, Unknown,
};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, ValueType};
use napi_derive::napi;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::asyncwork::{spawn_job, spawn_wait};
use crate::convert::{
    integer, number, opt_number, opt_options, opt_seconds, opt_string, prop, string, type_name,
};
use crate::errors::{R, guard, guard_promise, invalid, panic_error};
use crate::store::Store;

/// Default bound on one driver call (`driverTimeout`).
const DEFAULT_DRIVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How much longer than `driverTimeout` a pool thread waits for a JS answer: the core
/// fails the call at the timeout, this wait only frees the thread.
const DRIVER_WAIT_GRACE: Duration = Duration::from_secs(1);
/// Largest `driverTimeout` accepted (the core's maximum).
const MAX_DRIVER_TIMEOUT_SECS: f64 = 86_400.0;
/// Largest `driverThreads` accepted (each is an OS thread).
const MAX_DRIVER_THREADS: u64 = 256;

/// A driver method through a weak thread-safe function: the argument is the instance (as
/// JSON), the return value is handed back raw, exceptions are captured (callee not handled).
type DriverFn = ThreadsafeFunction<Value, Unknown<'static>, Value, Status, false, true>;
/// `probe(instance, probe)`: the same, with two arguments.
type ProbeArgs = FnArgs<(Value, Value)>;
type ProbeFn = ThreadsafeFunction<ProbeArgs, Unknown<'static>, ProbeArgs, Status, false, true>;

/// What a settled driver call said.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    /// `start`'s address, if any (`stop` says nothing).
    Address(Option<String>),
    /// `probe`'s verdict.
    Healthy(bool),
}

/// The answer of one driver call, or why the call failed.
type Answer = Result<Got, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Start,
    Stop,
    Probe,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Probe => "probe",
        }
    }
}

/// Ends every wait for a driver answer at once (the control plane was abandoned).
struct Abort {
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
    why: Mutex<&'static str>,
}

impl Abort {
    fn new() -> Abort {
        let (tx, rx) = bounded(1);
        Abort {
            tx: Mutex::new(Some(tx)),
            rx,
            why: Mutex::new(""),
        }
    }

    fn fire(&self, why: &'static str) {
        let mut tx = self.tx.lock();
        if tx.is_some() {
            *self.why.lock() = why;
            // Dropping the only sender wakes every `select!` on `rx`.
            tx.take();
        }
    }

    fn fired(&self) -> Option<&'static str> {
        if self.tx.lock().is_some() {
            None
        } else {
            Some(*self.why.lock())
        }
    }
}

struct DriverFns {
    start: DriverFn,
    stop: DriverFn,
    probe: Option<ProbeFn>,
}

/// The core's [`floyd::Driver`] over a JS driver object; see the module docs.
struct JsDriver {
    fns: Mutex<Option<Arc<DriverFns>>>,
    timeout: Duration,
    abort: Arc<Abort>,
}

impl JsDriver {
    /// Releases the thread-safe functions (and with them the JS driver object).
    fn release(&self) {
        self.fns.lock().take();
    }

    /// Whether the JS driver has its own `probe`.
    fn has_probe(&self) -> bool {
        self.fns.lock().as_ref().is_some_and(|f| f.probe.is_some())
    }

    /// Calls `op` on the JS thread and waits for its answer (at most `wait`).
    fn call(
        &self,
        op: Op,
        instance: &floyd::Object,
        probe: Option<&floyd::Probe>,
        wait: Duration,
    ) -> Answer {
        if let Some(why) = self.abort.fired() {
            return Err(format!("driver.{} was not called: {why}", op.name()));
        }
        let Some(fns) = self.fns.lock().clone() else {
            return Err(format!(
                "driver.{} was not called: the control plane is stopped",
                op.name()
            ));
        };
        let (tx, rx) = bounded::<Answer>(1);
        let answer = move |ret, env: Env| {
            on_js_thread(op, ret, &env, Reply(tx));
            Ok(())
        };
        let mode = ThreadsafeFunctionCallMode::NonBlocking;
        let status = match (op, &fns.probe, probe) {
            (Op::Start, ..) => fns
                .start
                .call_with_return_value(instance.to_json(), mode, answer),
            (Op::Stop, ..) => fns
                .stop
                .call_with_return_value(instance.to_json(), mode, answer),
            (Op::Probe, Some(f), Some(p)) => f.call_with_return_value(
                FnArgs::from((instance.to_json(), p.spec.clone())),
                mode,
                answer,
            ),
            (Op::Probe, ..) => return Err("driver.probe is not a function".into()),
        };
        drop(fns);
        if status != Status::Ok {
            return Err(format!(
                "driver.{} could not be called ({status}): the JS environment is shutting down",
                op.name()
            ));
        }
        crossbeam::channel::select! {
            // Every sender gone without an answer: the promise was garbage-collected
            // unsettled (nothing could settle it any more), or the environment went away.
            recv(rx) -> a => a.unwrap_or_else(|_| Err(format!(
                "driver.{}'s promise can never settle (it was garbage-collected, or the JS environment shut down)",
                op.name()
            ))),
            recv(self.abort.rx) -> _ => Err(format!(
                "driver.{} was abandoned: {}",
                op.name(),
                self.abort.fired().unwrap_or("the control plane was abandoned")
            )),
            default(wait) => Err(format!(
                "driver.{} did not settle within {} s",
                op.name(),
                wait.as_secs_f64()
            )),
        }
    }
}

impl floyd::Driver for JsDriver {
    fn start(&self, instance: &floyd::Object) -> Result<floyd::Started, floyd::DriverError> {
        match self.call(Op::Start, instance, None, self.timeout) {
            Ok(Got::Address(address)) => Ok(floyd::Started { address }),
            Ok(other) => Err(floyd::DriverError(format!("internal: start got {other:?}"))),
            Err(e) => Err(floyd::DriverError(e)),
        }
    }

    fn stop(&self, instance: &floyd::Object) -> Result<(), floyd::DriverError> {
        self.call(Op::Stop, instance, None, self.timeout)
            .map(|_| ())
            .map_err(floyd::DriverError)
    }

    fn probe(
        &self,
        instance: &floyd::Object,
        probe: &floyd::Probe,
    ) -> Result<floyd::ProbeOutcome, floyd::DriverError> {
        if !self.has_probe() {
            return floyd::runtime::probe::run_builtin(instance, probe);
        }
        // The core counts a probe still out a second past its timeout as failed.
        let wait = Duration::from_secs(u64::from(probe.timeout_seconds)) + DRIVER_WAIT_GRACE;
        match self.call(Op::Probe, instance, Some(probe), wait) {
            Ok(Got::Healthy(true)) => Ok(floyd::ProbeOutcome::Success),
            Ok(Got::Healthy(false)) => Ok(floyd::ProbeOutcome::Failure(
                "driver.probe resolved with false".into(),
            )),
            Ok(other) => Err(floyd::DriverError(format!("internal: probe got {other:?}"))),
            Err(e) => Err(floyd::DriverError(e)),
        }
    }
}

/// The sending side of one call's answer; the first answer wins, later ones are dropped.
#[derive(Clone)]
struct Reply(Sender<Answer>);

impl Reply {
    fn send(&self, a: Answer) {
        let _ = self.0.try_send(a);
    }
}

/// Takes a pending JS exception off the environment (a getter or trap threw while we read a
/// value), so that it never escapes into Node as an uncaught exception. Returns its message.
pub(crate) fn clear_exception(env: &Env) -> Option<String> {
    let mut raw = std::ptr::null_mut();
    let mut pending = false;
    // SAFETY: called on the JS thread with the live `env` napi-rs handed to the callback;
    // both out-pointers are valid locals.
    unsafe {
        if napi::sys::napi_is_exception_pending(env.raw(), &mut pending)
            != napi::sys::Status::napi_ok
            || !pending
            || napi::sys::napi_get_and_clear_last_exception(env.raw(), &mut raw)
                != napi::sys::Status::napi_ok
        {
            return None;
        }
    }
    // SAFETY: `raw` is the exception value just returned by napi for this `env`.
    let value = unsafe { Unknown::from_raw_unchecked(env.raw(), raw) };
    Some(napi::Error::from_unknown_without_coercion(value).reason)
}

/// What a thrown or rejected value says, without running any of its code.
fn reason_of(op: Op, value: Unknown<'_>, verb: &str) -> String {
    let what = type_name(&value).unwrap_or("unknown");
    let reason = napi::Error::from_unknown_without_coercion(value).reason;
    if reason.is_empty() {
        format!("driver.{} {verb} with {what}", op.name())
    } else {
        reason
    }
}

/// Runs on the JS thread once the driver method has been called: records a synchronous
/// throw, or chains the answer onto `Promise.resolve(returnValue)`. Never lets an exception
/// or a panic escape.
fn on_js_thread(op: Op, ret: napi::Result<Unknown<'static>>, env: &Env, reply: Reply) {
    let r = reply.clone();
    let outcome = catch_unwind(AssertUnwindSafe(|| chain(op, ret, env, r)));
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => {
            let msg = clear_exception(env).unwrap_or(e.reason);
            format!("driver.{} could not be awaited: {msg}", op.name())
        }
        Err(payload) => {
            clear_exception(env);
            panic_error(payload).to_string()
        }
    };
    reply.send(Err(failure));
}

fn chain(op: Op, ret: napi::Result<Unknown<'static>>, env: &Env, reply: Reply) -> napi::Result<()> {
    let value = match ret {
        Ok(v) => v,
        Err(e) => {
            // A synchronous throw (napi-rs captured it without coercing it).
            let msg = if e.reason.is_empty() {
                format!("driver.{} threw a value that is not an Error", op.name())
            } else {
                e.reason.clone()
            };
            reply.send(Err(msg));
            return Ok(());
        }
    };
    let global = env.get_global()?;
    // `Promise` is a function: read it untyped (a typed read insists on a plain object).
    let ctor = Object::from_unknown(global.get_named_property::<Unknown<'_>>("Promise")?)?;
    let resolve: Function<'_, Unknown<'_>, Unknown<'_>> = ctor.get_named_property("resolve")?;
    let promise = resolve.apply(ctor, value)?;
    if !promise.is_promise()? {
        reply.send(Err(format!(
            "driver.{}: Promise.resolve did not return a promise",
            op.name()
        )));
        return Ok(());
    }
    let promise = PromiseRaw::<Unknown<'_>>::from_unknown(promise)?;
    let on_ok = reply.clone();
    let then = promise.then(move |ctx: CallbackContext<Unknown<'_>>| {
        let answer = catch_unwind(AssertUnwindSafe(|| settled(op, ctx.value, &ctx.env)))
            .unwrap_or_else(|p| Err(panic_error(p).to_string()));
        clear_exception(&ctx.env);
        on_ok.send(answer);
        Ok(())
    })?;
    then.catch(move |ctx: CallbackContext<Unknown<'_>>| {
        let msg = catch_unwind(AssertUnwindSafe(|| reason_of(op, ctx.value, "rejected")))
            .unwrap_or_else(|p| panic_error(p).to_string());
        clear_exception(&ctx.env);
        reply.send(Err(msg));
        Ok(())
    })?;
    Ok(())
}

/// The answer for a value the driver's promise resolved with.
fn settled(op: Op, v: Unknown<'_>, env: &Env) -> Answer {
    match op {
        Op::Stop => return Ok(Got::Address(None)), // stop's value carries nothing
        Op::Probe => {
            return match v.get_type() {
                Ok(ValueType::Boolean) => bool::from_unknown(v)
                    .map(Got::Healthy)
                    .map_err(|e| format!("driver.probe's result could not be read: {}", e.reason)),
                Ok(_) => Err(format!(
                    "driver.probe must return (or resolve with) a boolean, got {}",
                    type_name(&v).unwrap_or("unknown")
                )),
                Err(e) => Err(format!(
                    "driver.probe's result could not be read: {}",
                    clear_exception(env).unwrap_or(e.reason)
                )),
            };
        }
        Op::Start => {}
    }
    let bad = |what: &str| {
        format!(
            "driver.start must return (or resolve with) undefined or {{address: string}}, got {what}"
        )
    };
    // A getter or Proxy trap that throws: its exception, taken off the environment.
    let describe = |e: napi::Error| {
        let msg = clear_exception(env).unwrap_or(e.reason);
        format!("driver.start's result could not be read: {msg}")
    };
    match v.get_type().map_err(describe)? {
        ValueType::Undefined | ValueType::Null => Ok(Got::Address(None)),
        ValueType::Object if !v.is_array().map_err(describe)? => {
            let o = Object::from_unknown(v).map_err(describe)?;
            let a: Unknown<'_> = o.get_named_property("address").map_err(describe)?;
            match a.get_type().map_err(describe)? {
                ValueType::Undefined | ValueType::Null => Ok(Got::Address(None)),
                ValueType::String => Ok(Got::Address(Some(
                    String::from_unknown(a).map_err(describe)?,
                ))),
                _ => Err(bad(&format!(
                    "an address that is {}",
                    type_name(&a).unwrap_or("unknown")
                ))),
            }
        }
        _ => Err(bad(type_name(&v).unwrap_or("unknown"))),
    }
}

/// What a JS `ControlPlane` owns; shared with its `stop()` threads and the environment's
/// cleanup hook.
struct Inner {
    cp: floyd::ControlPlane,
    driver: Arc<JsDriver>,
    /// Serialises `stop()` calls so that every returned promise settles only once the core
    /// has fully stopped.
    stop_lock: Mutex<()>,
}

impl Inner {
    fn stop(&self) -> floyd::Result<()> {
        let _g = self.stop_lock.lock();
        let r = self.cp.stop();
        self.driver.release();
        r
    }

    /// No JS will ever answer again: end every wait, then stop.
    fn abandon(&self, why: &'static str) {
        self.driver.abort.fire(why);
        let _ = self.stop();
    }
}

impl crate::teardown::Teardown for Inner {
    fn teardown(&self) {
        self.abandon("the JS environment is shutting down");
    }
}

/// The controllers (Deployment, ReplicaSet, endpoints) and the node agent, wired to a store and a host
/// driver written in JavaScript.
///
/// ```js
/// const cp = new ControlPlane(store, {
///   async start(instance) { const port = await launch(instance); return { address: `127.0.0.1:${port}` } },
///   async stop(instance) { await kill(instance) },
/// })
/// cp.start()
/// // ... store.create({kind: 'ReplicaSet', ...}); cp.endpoints('default/web'); cp.pick('default/web')
/// await cp.stop()
/// ```
///
/// The driver's methods run on the JS thread, with `this` = the driver, and are read once, at
/// construction. A throw, a rejected promise, a promise that does not settle within
/// `driverTimeout` seconds, or a `start` result other than `undefined` / `{address?: string}`
/// is a failed call: the instance's status records it (`restartCount`, `message`) and the
/// start is retried with the kubelet's backoff (by default 10 s doubling to 5 min). Instances outlive
/// the control plane: `stop()` stops the controllers, not the instances (a new control plane
/// on the same store adopts them). A control plane never keeps the process alive; garbage
/// collection of the object stops it.
#[napi]
pub struct ControlPlane {
    inner: AssertUnwindSafe<Arc<Inner>>,
    /// The store is in `always` mode: `scale` would wait for `fsync` on the event loop.
    always: bool,
}

fn driver_fn<'e>(driver: &Object<'e>, name: &str) -> R<DriverFn> {
    let field = format!("driver.{name}");
    let v: Unknown<'e> = driver.get_named_property(name)?;
    if v.get_type()? != ValueType::Function {
        return Err(invalid(
            field,
            format!("must be a function, got {}", type_name(&v)?),
        ));
    }
    let f: Function<'e, Value, Unknown<'static>> = Function::from_unknown(v)?;
    let bound = f.bind(driver)?;
    Ok(bound
        .build_threadsafe_function::<Value>()
        .weak::<true>()
        .callee_handled::<false>()
        .build()?)
}

/// The driver's optional `probe(instance, probe)`; `None` when it has none.
fn probe_fn<'e>(driver: &Object<'e>) -> R<Option<ProbeFn>> {
    let v: Unknown<'e> = driver.get_named_property("probe")?;
    match v.get_type()? {
        ValueType::Undefined | ValueType::Null => return Ok(None),
        ValueType::Function => {}
        _ => {
            return Err(invalid(
                "driver.probe",
                format!("must be a function or absent, got {}", type_name(&v)?),
            ));
        }
    }
    let f: Function<'e, ProbeArgs, Unknown<'static>> = Function::from_unknown(v)?;
    let bound = f.bind(driver)?;
    Ok(Some(
        bound
            .build_threadsafe_function::<ProbeArgs>()
            .weak::<true>()
            .callee_handled::<false>()
            .build()?,
    ))
}

fn stats_json(cp: &floyd::ControlPlane) -> Value {
    let s = cp.stats();
    let (controller_queue, agent_queue) = cp.pending();
    json!({
        "controllerQueue": controller_queue,
        "agentQueue": agent_queue,
        "runningInstances": cp.running_instances().len(),
        "syncs": s.syncs,
        "syncErrors": s.sync_errors,
        "driverStarts": s.driver_starts,
        "driverStartFailures": s.driver_start_failures,
        "driverStops": s.driver_stops,
        "storeWrites": s.store_writes,
        "driverTimeouts": s.driver_timeouts,
        "driverLateResults": s.driver_late_results,
        "driverThreadsReplaced": s.driver_threads_replaced,
        "probes": s.probes,
        "probeFailures": s.probe_failures,
        "probeRestarts": s.probe_restarts,
    })
}

/// `kind` of a scale: `Deployment` (default) or `ReplicaSet`.
fn scale_kind(options: Option<Unknown<'_>>) -> R<&'static str> {
    let Some(o) = opt_options(options, "options")? else {
        return Ok("Deployment");
    };
    match opt_string(prop(&o, "kind")?, "kind")?.as_deref() {
        None | Some("Deployment") => Ok("Deployment"),
        Some("ReplicaSet") => Ok("ReplicaSet"),
        Some(other) => Err(invalid(
            "kind",
            format!("must be 'Deployment' or 'ReplicaSet', got {other:?}"),
        )),
    }
}

/// Longest `waitForRollout` wait (also the wait when no timeout is given): "forever", and
/// far from the `Instant` overflow a huge timeout would cause.
const MAX_ROLLOUT_WAIT: Duration = Duration::from_secs(1_000_000_000);

impl ControlPlane {
    fn check_sync_write(&self, method: &str) -> R<()> {
        if self.always {
            return Err(invalid(
                "durability",
                format!(
                    "the store is in \"always\" mode, where {method}() would block the event loop on fsync; use {method}Async()"
                ),
            ));
        }
        Ok(())
    }

    /// A write of the control plane's: synchronous (refused in `always` mode).
    fn write(
        &self,
        method: &str,
        f: impl FnOnce(&floyd::ControlPlane) -> floyd::Result<Value>,
    ) -> R<Value> {
        self.check_sync_write(method)?;
        Ok(f(&self.inner.cp)?)
    }

    /// The same write as a promise, on libuv's pool.
    fn write_async<'e>(
        &self,
        env: &'e Env,
        f: impl FnOnce(&floyd::ControlPlane) -> floyd::Result<Value> + Send + 'static,
    ) -> R<Unknown<'e>> {
        let inner = Arc::clone(&self.inner);
        spawn_job(env, move || f(&inner.cp))
    }
}

/// A crash-loop backoff bound: more than 0 and at most a day (the core does not check
/// these; a zero backoff would retry a failing start in a busy loop).
fn restart_backoff(v: Option<Unknown<'_>>, field: &str) -> R<Option<Duration>> {
    match opt_seconds(v, field)? {
        Some(d) if d.is_zero() || d > Duration::from_secs(86_400) => Err(invalid(
            field,
            format!(
                "must be more than 0 and at most 86400 seconds, got {}",
                d.as_secs_f64()
            ),
        )),
        d => Ok(d),
    }
}

fn to_revision(v: Option<Unknown<'_>>) -> R<i64> {
    Ok(match opt_number(v, "toRevision")? {
        Some(x) => integer(x, "toRevision", (1 << 53) - 1)? as i64,
        None => 0,
    })
}

fn replicas(v: Option<Unknown<'_>>) -> R<i64> {
    Ok(integer(number(v, "replicas")?, "replicas", i32::MAX as u64)? as i64)
}

#[napi]
impl ControlPlane {
    /// A control plane over `store` (a `Store`) and `driver` (`{start(instance),
    /// stop(instance)}`, each returning a value or a promise). Options: `workers` (workers
    /// per controller, default 2, 1..=256), `burstReplicas` (most creations or deletions one sync
    /// issues, default 500, 1..=500), `driverThreads` (driver calls in flight at once,
    /// default 16, 1..=256), `driverTimeout` (seconds one driver call may take before it
    /// counts as failed, default 60), `restartBackoff` / `restartBackoffMax` (seconds: the
    /// crash-loop backoff after a failed start, doubling from the first to the second;
    /// default 10 and 300). Call `start()` to run it.
    #[napi(
        constructor,
        catch_unwind,
        ts_args_type = "store: Store, driver: Driver, options?: ControlPlaneOptions | null"
    )]
    pub fn new(
        env: Env,
        store: Option<Unknown<'_>>,
        driver: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<ControlPlane> {
        guard(&env, || {
            let Some(store) = store else {
                return Err(invalid("store", "is required (a Store)"));
            };
            let what = type_name(&store)?;
            let store = ClassInstance::<Store>::from_unknown(store)
                .map_err(|_| invalid("store", format!("must be a Store, got {what}")))?;
            let driver = match driver {
                Some(d) if matches!(d.get_type()?, ValueType::Object | ValueType::Function) => {
                    Object::from_unknown(d)?
                }
                Some(d) => {
                    return Err(invalid(
                        "driver",
                        format!(
                            "must be an object with start() and stop(), got {}",
                            type_name(&d)?
                        ),
                    ));
                }
                None => return Err(invalid("driver", "is required ({start, stop})")),
            };
            let mut cfg = floyd::ControlPlaneConfig::default();
            let mut timeout = DEFAULT_DRIVER_TIMEOUT;
            if let Some(o) = opt_options(options, "options")? {
                if let Some(n) = opt_number(prop(&o, "workers")?, "workers")? {
                    cfg.workers = integer(n, "workers", u32::MAX as u64)? as usize;
                }
                if let Some(n) = opt_number(prop(&o, "burstReplicas")?, "burstReplicas")? {
                    cfg.burst_replicas = integer(n, "burstReplicas", u32::MAX as u64)? as usize;
                }
                if let Some(n) = opt_number(prop(&o, "driverThreads")?, "driverThreads")? {
                    let n = integer(n, "driverThreads", MAX_DRIVER_THREADS)?;
                    if n == 0 {
                        return Err(invalid(
                            "driverThreads",
                            format!("must be 1..={MAX_DRIVER_THREADS}, got 0"),
                        ));
                    }
                    cfg.driver_threads = n as usize;
                }
                if let Some(s) = opt_number(prop(&o, "driverTimeout")?, "driverTimeout")? {
                    if !(s > 0.0 && s <= MAX_DRIVER_TIMEOUT_SECS) {
                        return Err(invalid(
                            "driverTimeout",
                            format!(
                                "must be more than 0 and at most {MAX_DRIVER_TIMEOUT_SECS} seconds, got {s}"
                            ),
                        ));
                    }
                    timeout = Duration::from_secs_f64(s);
                    cfg.driver_timeout = timeout;
                }
                if let Some(d) = restart_backoff(prop(&o, "restartBackoff")?, "restartBackoff")? {
                    cfg.restart_backoff = d;
                }
                if let Some(d) =
                    restart_backoff(prop(&o, "restartBackoffMax")?, "restartBackoffMax")?
                {
                    cfg.restart_backoff_max = d;
                }
                if cfg.restart_backoff_max < cfg.restart_backoff {
                    return Err(invalid(
                        "restartBackoffMax",
                        format!(
                            "must be at least restartBackoff ({} s), got {} s",
                            cfg.restart_backoff.as_secs_f64(),
                            cfg.restart_backoff_max.as_secs_f64()
                        ),
                    ));
                }
            }
            let fns = DriverFns {
                start: driver_fn(&driver, "start")?,
                stop: driver_fn(&driver, "stop")?,
                probe: probe_fn(&driver)?,
            };
            let js = Arc::new(JsDriver {
                fns: Mutex::new(Some(Arc::new(fns))),
                timeout: timeout + DRIVER_WAIT_GRACE,
                abort: Arc::new(Abort::new()),
            });
            let cp = floyd::ControlPlane::new(store.core(), js.clone(), cfg)?;
            let inner = Arc::new(Inner {
                cp,
                driver: js,
                stop_lock: Mutex::new(()),
            });
            crate::teardown::register(&env, &inner)?;
            Ok(ControlPlane {
                inner: AssertUnwindSafe(inner),
                always: store.is_always(),
            })
        })
    }

    /// Starts the controllers' threads (idempotent). `ShutDown` after `stop()`.
    #[napi(catch_unwind)]
    pub fn start(&self, env: Env) -> napi::Result<()> {
        guard(&env, || Ok(self.inner.cp.start()?))
    }

    /// Stops the controllers and waits for their threads, including driver calls in flight
    /// (each at most `driverTimeout`); the running instances are left running. Resolves once
    /// everything has stopped; idempotent. Afterwards the driver is released and every
    /// method but `stats()`, `runningInstances()` and `stop()` is `ShutDown`.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn stop<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let inner = Arc::clone(&self.inner);
            spawn_wait(env, "floyd-cp-stop", move || {
                inner.stop()?;
                Ok(Value::Null)
            })
        })
    }

    /// Sets `spec.replicas` of a Deployment (default) or a ReplicaSet (`{kind:
    /// 'ReplicaSet'}`) at `key`, retrying on conflicts, and returns the object as stored.
    /// `replicas` is an integer 0..=2147483647. In an `always`-mode store use `scaleAsync`.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string, replicas: number, options?: ScaleOptions | null",
        ts_return_type = "FloydObject"
    )]
    pub fn scale(
        &self,
        env: Env,
        key: Option<Unknown<'_>>,
        replicas: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<Value> {
        guard(&env, || {
            let key = string(key, "key")?;
            let n = self::replicas(replicas)?;
            let kind = scale_kind(options)?;
            self.check_sync_write("scale")?;
            Ok(self.inner.cp.scale(kind, &key, n)?.to_json())
        })
    }

    /// `scale` as a promise, run off the event loop (works in every durability mode).
    #[napi(
        catch_unwind,
        ts_args_type = "key: string, replicas: number, options?: ScaleOptions | null",
        ts_return_type = "Promise<FloydObject>"
    )]
    pub fn scale_async<'e>(
        &self,
        env: &'e Env,
        key: Option<Unknown<'_>>,
        replicas: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let key = string(key, "key")?;
            let n = self::replicas(replicas)?;
            let kind = scale_kind(options)?;
            let inner = Arc::clone(&self.inner);
            spawn_job(env, move || Ok(inner.cp.scale(kind, &key, n)?.to_json()))
        })
    }

    /// Resolves with the Deployment's status once its rollout is complete (the newest
    /// revision updated, available and alone). Rejects `Expired` when the rollout exceeded
    /// its `progressDeadlineSeconds` (the message says `ProgressDeadlineExceeded`) or when
    /// `timeout` seconds pass first (absent: no limit), `NotFound` for a missing Deployment,
    /// `ShutDown` when the control plane stops. Waits on a thread of its own.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string, timeout?: number | null",
        ts_return_type = "Promise<any>"
    )]
    pub fn wait_for_rollout<'e>(
        &self,
        env: &'e Env,
        key: Option<Unknown<'_>>,
        timeout: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let key = string(key, "key")?;
            let timeout = opt_seconds(timeout, "timeout")?
                .unwrap_or(MAX_ROLLOUT_WAIT)
                .min(MAX_ROLLOUT_WAIT);
            let inner = Arc::clone(&self.inner);
            spawn_wait(env, "floyd-cp-rollout", move || {
                inner.cp.wait_for_rollout(&key, timeout)
            })
        })
    }

    /// Rolls the Deployment at `key` back to revision `toRevision` (default 0: the one
    /// before the current). Returns the revision rolled back to. `always` mode: use
    /// `rollbackAsync`.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string, toRevision?: number | null",
        ts_return_type = "number"
    )]
    pub fn rollback(
        &self,
        env: Env,
        key: Option<Unknown<'_>>,
        to_revision: Option<Unknown<'_>>,
    ) -> napi::Result<Value> {
        guard(&env, || {
            let key = string(key, "key")?;
            let rev = self::to_revision(to_revision)?;
            self.write("rollback", |cp| Ok(json!(cp.rollback(&key, rev)?)))
        })
    }

    /// `rollback` as a promise, run off the event loop.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string, toRevision?: number | null",
        ts_return_type = "Promise<number>"
    )]
    pub fn rollback_async<'e>(
        &self,
        env: &'e Env,
        key: Option<Unknown<'_>>,
        to_revision: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let key = string(key, "key")?;
            let rev = self::to_revision(to_revision)?;
            self.write_async(env, move |cp| Ok(json!(cp.rollback(&key, rev)?)))
        })
    }

    /// Pauses the Deployment's rollout (`spec.paused`; scaling still applies) and returns
    /// it as stored. `always` mode: use `pauseAsync`.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string",
        ts_return_type = "FloydObject"
    )]
    pub fn pause(&self, env: Env, key: Option<Unknown<'_>>) -> napi::Result<Value> {
        guard(&env, || {
            let key = string(key, "key")?;
            self.write("pause", |cp| Ok(cp.pause(&key)?.to_json()))
        })
    }

    /// `pause` as a promise, run off the event loop.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string",
        ts_return_type = "Promise<FloydObject>"
    )]
    pub fn pause_async<'e>(
        &self,
        env: &'e Env,
        key: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let key = string(key, "key")?;
            self.write_async(env, move |cp| Ok(cp.pause(&key)?.to_json()))
        })
    }

    /// Resumes a paused Deployment and returns it as stored. `always` mode: use
    /// `resumeAsync`.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string",
        ts_return_type = "FloydObject"
    )]
    pub fn resume(&self, env: Env, key: Option<Unknown<'_>>) -> napi::Result<Value> {
        guard(&env, || {
            let key = string(key, "key")?;
            self.write("resume", |cp| Ok(cp.resume(&key)?.to_json()))
        })
    }

    /// `resume` as a promise, run off the event loop.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string",
        ts_return_type = "Promise<FloydObject>"
    )]
    pub fn resume_async<'e>(
        &self,
        env: &'e Env,
        key: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let key = string(key, "key")?;
            self.write_async(env, move |cp| Ok(cp.resume(&key)?.to_json()))
        })
    }

    /// Promotes a `BlueGreen` Deployment's new revision (when `autoPromote` is off) and
    /// returns the Deployment as stored. `always` mode: use `promoteAsync`.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string",
        ts_return_type = "FloydObject"
    )]
    pub fn promote(&self, env: Env, key: Option<Unknown<'_>>) -> napi::Result<Value> {
        guard(&env, || {
            let key = string(key, "key")?;
            self.write("promote", |cp| Ok(cp.promote(&key)?.to_json()))
        })
    }

    /// `promote` as a promise, run off the event loop.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string",
        ts_return_type = "Promise<FloydObject>"
    )]
    pub fn promote_async<'e>(
        &self,
        env: &'e Env,
        key: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let key = string(key, "key")?;
            self.write_async(env, move |cp| Ok(cp.promote(&key)?.to_json()))
        })
    }

    /// Reports that the running instance at `instanceKey` (`"namespace/name"`) exited on its
    /// own (its process crashed), with `message` saying why: it turns not-ready, its
    /// `restartCount` grows, and the node agent starts it again after the crash-loop
    /// backoff. `NotFound` if the agent is not running that instance. `always` mode: use
    /// `reportExitAsync`.
    #[napi(catch_unwind, ts_args_type = "instanceKey: string, message: string")]
    pub fn report_exit(
        &self,
        env: Env,
        instance_key: Option<Unknown<'_>>,
        message: Option<Unknown<'_>>,
    ) -> napi::Result<()> {
        guard(&env, || {
            let key = string(instance_key, "instanceKey")?;
            let message = string(message, "message")?;
            self.write("reportExit", |cp| {
                cp.report_exit(&key, &message)?;
                Ok(Value::Null)
            })?;
            Ok(())
        })
    }

    /// `reportExit` as a promise, run off the event loop.
    #[napi(
        catch_unwind,
        ts_args_type = "instanceKey: string, message: string",
        ts_return_type = "Promise<void>"
    )]
    pub fn report_exit_async<'e>(
        &self,
        env: &'e Env,
        instance_key: Option<Unknown<'_>>,
        message: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let key = string(instance_key, "instanceKey")?;
            let message = string(message, "message")?;
            self.write_async(env, move |cp| {
                cp.report_exit(&key, &message)?;
                Ok(Value::Null)
            })
        })
    }

    /// The ready addresses of the Service at `serviceKey` (`"namespace/name"`), from the
    /// control plane's cache. `NotFound` if there is no such Service.
    #[napi(catch_unwind, ts_args_type = "serviceKey: string")]
    pub fn endpoints(
        &self,
        env: Env,
        service_key: Option<Unknown<'_>>,
    ) -> napi::Result<Vec<String>> {
        guard(&env, || {
            let key = string(service_key, "serviceKey")?;
            Ok(self.inner.cp.endpoints(&key)?)
        })
    }

    /// One ready address of the Service: round robin, or the same address for the same
    /// `hint` (e.g. a client id) while the set of ready addresses is unchanged. `null` when
    /// none is ready; `NotFound` if there is no such Service.
    #[napi(
        catch_unwind,
        ts_args_type = "serviceKey: string, hint?: string | null"
    )]
    pub fn pick(
        &self,
        env: Env,
        service_key: Option<Unknown<'_>>,
        hint: Option<Unknown<'_>>,
    ) -> napi::Result<Option<String>> {
        guard(&env, || {
            let key = string(service_key, "serviceKey")?;
            let hint = opt_string(hint, "hint")?;
            Ok(self.inner.cp.pick(&key, hint.as_deref())?)
        })
    }

    /// Counters: `syncs`, `syncErrors`, `driverStarts`, `driverStartFailures`,
    /// `driverStops`, `storeWrites`, `driverTimeouts` (driver calls that took longer than
    /// `driverTimeout`), `driverLateResults` (answers of timed-out calls that came anyway,
    /// ignored), `driverThreadsReplaced` (pool threads replaced while stuck in a timed-out
    /// call). Works after `stop()`.
    #[napi(catch_unwind, ts_return_type = "ControlPlaneStats")]
    pub fn stats(&self, env: Env) -> napi::Result<Value> {
        guard(&env, || Ok(stats_json(&self.inner.cp)))
    }

    /// Keys of the instances the node agent has asked the driver to start (or is starting or
    /// stopping) and not yet stopped.
    #[napi(catch_unwind)]
    pub fn running_instances(&self, env: Env) -> napi::Result<Vec<String>> {
        guard(&env, || {
            let mut keys = self.inner.cp.running_instances();
            keys.sort();
            Ok(keys)
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Garbage collection: nobody can call stop() any more. End the waits on JS at once
        // and stop off the JS thread (joining threads here would stall the collector).
        let inner = Arc::clone(&self.inner);
        inner
            .driver
            .abort
            .fire("the ControlPlane was garbage-collected");
        let spawned = std::thread::Builder::new()
            .name("floyd-cp-drop".into())
            .spawn({
                let inner = Arc::clone(&inner);
                move || {
                    let _ = catch_unwind(AssertUnwindSafe(|| inner.stop()));
                }
            });
        if spawned.is_err() {
            let _ = catch_unwind(AssertUnwindSafe(|| inner.stop()));
        }
    }
}
