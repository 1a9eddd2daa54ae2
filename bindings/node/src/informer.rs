//! `Informer`: the core's list + watch cache with indexes and event handlers, as a JS class.
//!
//! The cache is the core's; reads (`get`, `list`, `byIndex`, ...) are synchronous lookups in
//! it. Event handlers are JS functions, and the core calls its handlers on its own threads
//! (one per handler, in log order). Those threads must never wait for JS, so each handler
//! registration gets one weak, non-blocking thread-safe function: the core thread converts the
//! object(s) to JSON, queues the event and goes on; the JS thread later runs a dispatcher that
//! calls `onAdd` / `onUpdate` / `onDelete` of that registration. One queue per registration
//! keeps its events in the order the core delivered them. Delivery to JS is therefore
//! asynchronous: a handler runs on a later turn of the event loop than the store write that
//! caused it.
//!
//! A handler that throws (or returns a promise that rejects) is caught and counted
//! (`stats().handlerErrors`, `lastHandlerError`); the informer and the other handlers go on.
//! `stop()` marks the informer stopped at once (no handler runs afterwards, even for events
//! already queued, and every later call but `stop`, `hasSynced`, `lastSyncedVersion` and
//! `stats` is `ShutDown`), then stops and joins the core's threads on a helper thread so the
//! event loop never waits for them, and releases the handlers. The thread-safe functions are
//! weak: an informer never keeps the process alive.
//!
//! Index functions must be built-ins (`"namespace"`, `"label:<key>"`, `"owner"`,
//! `"field:<dotted.path>"`): the core calls index functions synchronously on its reflector
//! thread while it holds the cache's shard lock, so a JS index function would need a blocking
//! round trip to the event loop per object (stalling the cache for every reader, and
//! deadlocking a synchronous read made from the JS thread at that moment).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use napi::bindgen_prelude::{
    ClassInstance, FnArgs, FromNapiValue, Function, FunctionCallContext, FunctionRef,
    JsObjectValue, JsValue, Object, PromiseRaw, Unknown,
};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, ValueType};
use napi_derive::napi;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::asyncwork::spawn_wait;
use crate::control::clear_exception;
use crate::convert::{
    JsArg, Parsed, opt_options, opt_seconds, opt_string, prop, string, type_name,
};
use crate::errors::{R, guard, guard_promise, invalid};
use crate::store::{Store, resource_version, selector};

/// One event on its way from a core handler thread to the JS thread, its objects already
/// JSON text (made on the core thread, so the JS thread only parses it).
enum Ev {
    Add(String, bool),
    Update(String, String),
    Delete(String, bool),
}

/// The dispatcher's arguments: `(0 add | 1 update | 2 delete, first, second)`.
type DispatchArgs = FnArgs<(u32, JsArg, JsArg)>;
/// A registration's queue onto the JS thread: weak (never keeps the process alive), errors
/// not passed to the callee.
type EventFn = ThreadsafeFunction<Ev, (), DispatchArgs, Status, false, true>;
/// A user handler, bound to the handler object (`this`).
type HandlerRef = FunctionRef<FnArgs<(Unknown<'static>, Unknown<'static>)>, Unknown<'static>>;

/// What the dispatchers share with the `Informer`: the stop flag and the error counters.
/// Kept apart from [`State`] so that a dispatcher (owned by JS) never keeps the core informer
/// alive.
#[derive(Default)]
struct Flags {
    stopped: AtomicBool,
    handler_errors: AtomicU64,
    last_handler_error: Mutex<Option<String>>,
}

impl Flags {
    fn record(&self, msg: String) {
        self.handler_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_handler_error.lock() = Some(msg);
    }
}

struct State {
    inf: floyd::Informer,
    flags: Arc<Flags>,
    regs: Mutex<Vec<floyd::informer::HandlerRegistration>>,
}

impl State {
    /// Marks the informer stopped (JS side, immediate); the caller then calls [`State::halt`].
    fn mark(&self) -> bool {
        !self.flags.stopped.swap(true, Ordering::AcqRel)
    }

    /// Stops and joins the core's threads, then unregisters the handlers, which releases
    /// their thread-safe functions (and with them the JS handler functions).
    fn halt(&self) {
        self.inf.stop();
        let regs: Vec<_> = self.regs.lock().drain(..).collect();
        for r in &regs {
            let _ = self.inf.remove_event_handler(r);
        }
    }

    fn check(&self) -> R<()> {
        if self.flags.stopped.load(Ordering::Acquire) {
            return Err(floyd::Error::ShutDown(format!(
                "the {} informer is stopped",
                self.inf.kind()
            ))
            .into());
        }
        Ok(())
    }
}

/// Stops `st` off the JS thread (joining core threads there could stall the event loop for
/// a poll interval); synchronously if no thread can be started.
fn halt_in_background(st: Arc<State>) {
    let s = Arc::clone(&st);
    let spawned = std::thread::Builder::new()
        .name("floyd-inf-stop".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = catch_unwind(AssertUnwindSafe(|| s.halt()));
        });
    if spawned.is_err() {
        let _ = catch_unwind(AssertUnwindSafe(|| st.halt()));
    }
}

impl crate::teardown::Teardown for State {
    fn teardown(&self) {
        self.mark();
        self.halt();
    }
}

fn obj_json(o: &Arc<floyd::Object>) -> Value {
    o.to_json()
}

fn objs_json(v: Vec<Arc<floyd::Object>>) -> Value {
    Value::Array(v.iter().map(obj_json).collect())
}

/// `handler.<name>`: absent, or a function (bound to the handler object).
fn handler_ref<'e>(h: &Object<'e>, name: &str) -> R<Option<HandlerRef>> {
    let field = format!("handler.{name}");
    let Some(v) = prop(h, name)? else {
        return Ok(None);
    };
    if v.get_type()? != ValueType::Function {
        return Err(invalid(
            field,
            format!("must be a function, got {}", type_name(&v)?),
        ));
    }
    let f: Function<'e, FnArgs<(Unknown<'static>, Unknown<'static>)>, Unknown<'static>> =
        Function::from_unknown(v)?;
    Ok(Some(f.bind(h)?.create_ref()?))
}

struct Handlers {
    add: Option<HandlerRef>,
    update: Option<HandlerRef>,
    delete: Option<HandlerRef>,
}

/// On the JS thread: calls the handler for one event unless the informer was stopped
/// meanwhile. A throw or a rejection is counted, never propagated.
fn dispatch(ctx: &FunctionCallContext<'_>, hs: &Handlers, flags: &Arc<Flags>) -> napi::Result<()> {
    if flags.stopped.load(Ordering::Acquire) {
        return Ok(());
    }
    let (tag, a, b): (u32, Unknown<'static>, Unknown<'static>) = ctx.args()?;
    let (f, name) = match tag {
        0 => (&hs.add, "onAdd"),
        1 => (&hs.update, "onUpdate"),
        _ => (&hs.delete, "onDelete"),
    };
    let Some(f) = f else { return Ok(()) };
    let env = &*ctx.env;
    let f = f.borrow_back(env)?;
    match f.call(FnArgs::from((a, b))) {
        Err(e) => {
            let msg = clear_exception(env).unwrap_or(e.reason);
            flags.record(format!("{name} threw: {msg}"));
        }
        Ok(ret) => {
            if ret.is_promise().unwrap_or(false) {
                let p = PromiseRaw::<Unknown<'_>>::from_unknown(ret)?;
                let fl = Arc::clone(flags);
                p.catch(
                    move |c: napi::bindgen_prelude::CallbackContext<Unknown<'_>>| {
                        let msg = napi::Error::from_unknown_without_coercion(c.value).reason;
                        clear_exception(&c.env);
                        fl.record(format!("{name} rejected: {msg}"));
                        Ok(())
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// Builds a registration's dispatcher and its thread-safe function.
fn event_fn(env: &Env, hs: Handlers, flags: Arc<Flags>) -> R<EventFn> {
    let dispatcher = env.create_function_from_closure::<DispatchArgs, (), _>(
        "floydInformerDispatch",
        move |ctx: FunctionCallContext<'_>| {
            let r = catch_unwind(AssertUnwindSafe(|| dispatch(&ctx, &hs, &flags)));
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let msg = clear_exception(ctx.env).unwrap_or(e.reason);
                    flags.record(format!("dispatch failed: {msg}"));
                }
                Err(p) => {
                    clear_exception(ctx.env);
                    flags.record(crate::errors::panic_error(p).to_string());
                }
            }
            Ok(())
        },
    )?;
    Ok(dispatcher
        .build_threadsafe_function::<Ev>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(|c: napi::threadsafe_function::ThreadsafeCallContext<Ev>| {
            Ok(FnArgs::from(match c.value {
                Ev::Add(o, initial) => (0, JsArg::Json(o), JsArg::Bool(initial)),
                Ev::Update(old, new) => (1, JsArg::Json(old), JsArg::Json(new)),
                Ev::Delete(o, unknown) => (2, JsArg::Json(o), JsArg::Bool(unknown)),
            }))
        })?)
}

/// A list + watch cache of one kind (optionally one namespace and a label selector), with
/// indexes and event handlers, as client-go's shared informer.
///
/// ```js
/// const inf = new Informer(store, 'Widget', { namespace: 'default' })
/// inf.addIndex('byApp', 'label:app')
/// inf.addEventHandler({ onAdd(o) {}, onUpdate(old, o) {}, onDelete(o) { o.finalStateUnknown } })
/// inf.start()
/// await inf.waitForSync(5)
/// inf.byIndex('byApp', 'web')
/// inf.stop()
/// ```
///
/// Handlers run on the JS thread, asynchronously (a later turn of the event loop than the
/// write that caused them), each registration's events in log order. `onAdd(obj,
/// isInInitialList)`, `onUpdate(old, new)` (a resync delivers `onUpdate(o, o)`),
/// `onDelete(obj, finalStateUnknown)`: when a delete was discovered by a relist rather than
/// watched, `obj` is the last state known and carries `finalStateUnknown: true`. A handler
/// added after `start()` first receives a synthetic `onAdd(obj, true)` per cached object. A
/// throwing handler (or one whose promise rejects) is counted in `stats()`; the rest go on.
/// After `stop()` no handler runs. An informer never keeps the process alive; one whose
/// handlers refer to it is not garbage-collected until `stop()`.
#[napi]
pub struct Informer {
    st: AssertUnwindSafe<Arc<State>>,
}

#[napi]
impl Informer {
    /// `new Informer(store, kind, {resync, namespace, labelSelector})`: `resync` is the
    /// default handler resync period in seconds (0 or absent: none; at least 1 otherwise),
    /// `labelSelector` a string (`'app=web,tier!=db'`) or `{matchLabels, matchExpressions}`.
    #[napi(
        constructor,
        catch_unwind,
        ts_args_type = "store: Store, kind: string, options?: InformerOptions | null"
    )]
    pub fn new(
        env: Env,
        store: Option<Unknown<'_>>,
        kind: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<Informer> {
        guard(&env, || {
            let Some(store) = store else {
                return Err(invalid("store", "is required (a Store)"));
            };
            let what = type_name(&store)?;
            let store = ClassInstance::<Store>::from_unknown(store)
                .map_err(|_| invalid("store", format!("must be a Store, got {what}")))?;
            let kind = string(kind, "kind")?;
            let mut resync = std::time::Duration::ZERO;
            let mut namespace = None;
            let mut sel = None;
            if let Some(o) = opt_options(options, "options")? {
                if let Some(d) = opt_seconds(prop(&o, "resync")?, "resync")? {
                    resync = d;
                }
                namespace = opt_string(prop(&o, "namespace")?, "namespace")?;
                sel = selector(prop(&o, "labelSelector")?)?;
            }
            let inf =
                floyd::Informer::new(&store.core(), &kind, resync, namespace.as_deref(), sel)?;
            let st = Arc::new(State {
                inf,
                flags: Arc::default(),
                regs: Mutex::new(vec![]),
            });
            crate::teardown::register(&env, &st)?;
            Ok(Informer {
                st: AssertUnwindSafe(st),
            })
        })
    }

    /// Registers `{onAdd, onUpdate, onDelete, resync}` (each function optional; `resync` in
    /// seconds, default the informer's). Functions are called with `this` = the handler
    /// object. `ShutDown` after `stop()`.
    #[napi(catch_unwind, ts_args_type = "handler: InformerHandler")]
    pub fn add_event_handler(&self, env: Env, handler: Option<Unknown<'_>>) -> napi::Result<()> {
        guard(&env, || {
            self.st.check()?;
            let h = match handler {
                Some(h) if h.get_type()? == ValueType::Object && !h.is_array()? => {
                    Object::from_unknown(h)?
                }
                Some(h) => {
                    return Err(invalid(
                        "handler",
                        format!(
                            "must be an object with onAdd / onUpdate / onDelete, got {}",
                            type_name(&h)?
                        ),
                    ));
                }
                None => {
                    return Err(invalid(
                        "handler",
                        "is required ({onAdd, onUpdate, onDelete})",
                    ));
                }
            };
            let resync = opt_seconds(prop(&h, "resync")?, "handler.resync")?;
            let hs = Handlers {
                add: handler_ref(&h, "onAdd")?,
                update: handler_ref(&h, "onUpdate")?,
                delete: handler_ref(&h, "onDelete")?,
            };
            let (has_add, has_update, has_delete) =
                (hs.add.is_some(), hs.update.is_some(), hs.delete.is_some());
            let tsfn = Arc::new(event_fn(&env, hs, Arc::clone(&self.st.flags))?);
            let send = move |t: &Arc<EventFn>, ev: Ev| {
                // Never blocks: the queue is unbounded; a closing environment drops it.
                let _ = t.call(ev, ThreadsafeFunctionCallMode::NonBlocking);
            };
            // An object as JSON text; a failure (which the object model rules out) is
            // counted like a handler's error and the event dropped.
            let flags = Arc::clone(&self.st.flags);
            let text = move |o: &floyd::Object| {
                serde_json::to_string(o)
                    .map_err(|e| flags.record(format!("serialize an event: {e}")))
                    .ok()
            };
            let on_add: Option<floyd::informer::OnAdd> = has_add.then(|| {
                let (t, text) = (Arc::clone(&tsfn), text.clone());
                Arc::new(move |o: &Arc<floyd::Object>, initial: bool| {
                    if let Some(o) = text(o) {
                        send(&t, Ev::Add(o, initial))
                    }
                }) as floyd::informer::OnAdd
            });
            let on_update: Option<floyd::informer::OnUpdate> = has_update.then(|| {
                let (t, text) = (Arc::clone(&tsfn), text.clone());
                Arc::new(move |old: &Arc<floyd::Object>, new: &Arc<floyd::Object>| {
                    if let (Some(old), Some(new)) = (text(old), text(new)) {
                        send(&t, Ev::Update(old, new))
                    }
                }) as floyd::informer::OnUpdate
            });
            let on_delete: Option<floyd::informer::OnDelete> = has_delete.then(|| {
                let (t, text) = (Arc::clone(&tsfn), text.clone());
                Arc::new(move |o: &Arc<floyd::Object>, unknown: bool| {
                    let Some(mut o) = text(o) else { return };
                    if unknown {
                        // The object's text is `{"kind":…}`: the flag goes first, where the
                        // sorted keys of a JSON value would put it too.
                        o.insert_str(1, "\"finalStateUnknown\":true,");
                    }
                    send(&t, Ev::Delete(o, unknown))
                }) as floyd::informer::OnDelete
            });
            drop(tsfn);
            let reg = self
                .st
                .inf
                .add_event_handler(on_add, on_update, on_delete, resync)?;
            self.st.regs.lock().push(reg);
            Ok(())
        })
    }

    /// Adds an index: `"namespace"`, `"label:<key>"`, `"owner"` (the controller owner's uid)
    /// or `"field:<dotted.path>"`. Custom JS index functions are not supported (see the
    /// README). `Invalid` if the name is taken; `ShutDown` after `stop()`.
    #[napi(catch_unwind, ts_args_type = "name: string, index: IndexSpec")]
    pub fn add_index(
        &self,
        env: Env,
        name: Option<Unknown<'_>>,
        index: Option<Unknown<'_>>,
    ) -> napi::Result<()> {
        guard(&env, || {
            self.st.check()?;
            let name = string(name, "name")?;
            if let Some(v) = &index
                && v.get_type()? == ValueType::Function
            {
                return Err(invalid(
                    "index",
                    "custom JS index functions are not supported (the core runs index functions synchronously on its own threads); use 'namespace', 'label:<key>', 'owner' or 'field:<dotted.path>'",
                ));
            }
            let spec = string(index, "index")?;
            let func = floyd::informer::IndexFunc::parse(&spec)?;
            Ok(self.st.inf.add_index(&name, func)?)
        })
    }

    /// Test-only: adds index `name` whose function holds the reflector's thread at the
    /// object named `gate` until `open()` (or 30 s), so that a test can let the log be
    /// compacted past a waiting reflector (K15). Returns `{ reached(), open() }`. JS index
    /// functions cannot do this: they would have to run on the JS thread the test needs.
    /// Not part of the API.
    #[napi(catch_unwind, js_name = "_addGateIndexForTest", skip_typescript)]
    pub fn add_gate_index_for_test<'e>(
        &self,
        env: &'e Env,
        name: String,
        gate: String,
    ) -> napi::Result<Object<'e>> {
        guard(env, || {
            self.st.check()?;
            let g = Arc::new(Gate::default());
            let held = Arc::clone(&g);
            let func: floyd::informer::IndexFn = Arc::new(move |o: &floyd::Object| {
                if o.metadata.name == gate {
                    held.hold();
                }
                Vec::new()
            });
            self.st
                .inf
                .add_index(&name, floyd::informer::IndexFunc::Custom(func))?;
            let mut out = Object::new(env)?;
            let r = Arc::clone(&g);
            out.set_named_property(
                "reached",
                env.create_function_from_closure::<(), bool, _>("reached", move |_| {
                    Ok(r.state.lock().0)
                })?,
            )?;
            out.set_named_property(
                "open",
                env.create_function_from_closure::<(), (), _>("open", move |_| {
                    g.state.lock().1 = true;
                    g.cond.notify_all();
                    Ok(())
                })?,
            )?;
            Ok(out)
        })
    }

    /// Starts listing and watching (idempotent). `ShutDown` after `stop()`.
    #[napi(catch_unwind)]
    pub fn start(&self, env: Env) -> napi::Result<()> {
        guard(&env, || {
            self.st.check()?;
            Ok(self.st.inf.start()?)
        })
    }

    /// Stops the informer (idempotent): no handler runs afterwards, and every method but
    /// `stop`, `hasSynced`, `lastSyncedVersion` and `stats` is `ShutDown`. The core's threads
    /// are joined off the event loop; pending `waitForSync` / `waitForVersion` reject with
    /// `ShutDown`.
    #[napi(catch_unwind)]
    pub fn stop(&self, env: Env) -> napi::Result<()> {
        guard(&env, || {
            if self.st.mark() {
                halt_in_background(Arc::clone(&self.st));
            }
            Ok(())
        })
    }

    /// True once the first list is in the cache.
    #[napi(catch_unwind)]
    pub fn has_synced(&self, env: Env) -> napi::Result<bool> {
        guard(&env, || Ok(self.st.inf.has_synced()))
    }

    /// Resolves `true` once synced, `false` after `timeout` seconds (absent: no limit).
    /// Rejects `ShutDown` if the informer is (or gets) stopped first.
    #[napi(
        catch_unwind,
        ts_args_type = "timeout?: number | null",
        ts_return_type = "Promise<boolean>"
    )]
    pub fn wait_for_sync<'e>(
        &self,
        env: &'e Env,
        timeout: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let timeout = opt_seconds(timeout, "timeout")?;
            self.st.check()?;
            if self.st.inf.has_synced() {
                return crate::store::resolved(env, Value::Bool(true));
            }
            let st = Arc::clone(&self.st);
            spawn_wait(env, "floyd-inf-sync", move || {
                Ok(Value::Bool(st.inf.wait_for_sync(timeout)?))
            })
        })
    }

    /// Resolves `true` once the cache reflects every store event up to `resourceVersion` (a
    /// number or a decimal string, as a write returned it), `false` after `timeout` seconds.
    #[napi(
        catch_unwind,
        ts_args_type = "resourceVersion: number | string, timeout?: number | null",
        ts_return_type = "Promise<boolean>"
    )]
    pub fn wait_for_version<'e>(
        &self,
        env: &'e Env,
        resource_version_: Option<Unknown<'_>>,
        timeout: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let Some(rv) = resource_version(resource_version_, "resourceVersion")? else {
                return Err(invalid(
                    "resourceVersion",
                    "is required (a number or a string)",
                ));
            };
            let timeout = opt_seconds(timeout, "timeout")?;
            self.st.check()?;
            if self.st.inf.has_synced() && self.st.inf.last_synced_version() >= rv {
                return crate::store::resolved(env, Value::Bool(true));
            }
            let st = Arc::clone(&self.st);
            spawn_wait(env, "floyd-inf-version", move || {
                Ok(Value::Bool(st.inf.wait_for_version(rv, timeout)?))
            })
        })
    }

    /// Every store event with a version up to this one is reflected in the cache.
    #[napi(catch_unwind)]
    pub fn last_synced_version(&self, env: Env) -> napi::Result<f64> {
        guard(&env, || Ok(self.st.inf.last_synced_version() as f64))
    }

    /// The cached object at `key` (`"namespace/name"`), or `null`.
    #[napi(
        catch_unwind,
        ts_args_type = "key: string",
        ts_return_type = "FloydObject | null"
    )]
    pub fn get(&self, env: Env, key: Option<Unknown<'_>>) -> napi::Result<Parsed> {
        guard(&env, || {
            self.st.check()?;
            let key = string(key, "key")?;
            Ok(Parsed(
                self.st.inf.get(&key)?.map_or(Value::Null, |o| obj_json(&o)),
            ))
        })
    }

    /// `get` for `floyd.js`: the cached object as JSON text, or `null`.
    #[napi(catch_unwind, js_name = "_getJson", skip_typescript)]
    pub fn get_json(&self, env: Env, key: Option<Unknown<'_>>) -> napi::Result<Option<String>> {
        guard(&env, || {
            self.st.check()?;
            let key = string(key, "key")?;
            self.st
                .inf
                .get(&key)?
                .map(|o| crate::convert::obj_text(&o))
                .transpose()
        })
    }

    /// Cached objects (matching `labelSelector`, if given), in no particular order.
    #[napi(
        catch_unwind,
        ts_args_type = "options?: InformerListOptions | null",
        ts_return_type = "FloydObject[]"
    )]
    pub fn list(&self, env: Env, options: Option<Unknown<'_>>) -> napi::Result<Parsed> {
        guard(&env, || Ok(Parsed(objs_json(self.list_objects(options)?))))
    }

    /// `list` for `floyd.js`: the same objects as the text of a JSON array.
    #[napi(catch_unwind, js_name = "_listJson", skip_typescript)]
    pub fn list_json(&self, env: Env, options: Option<Unknown<'_>>) -> napi::Result<String> {
        guard(&env, || {
            crate::convert::objs_text(&self.list_objects(options)?)
        })
    }

    /// `byIndex` for `floyd.js`: the same objects as the text of a JSON array.
    #[napi(catch_unwind, js_name = "_byIndexJson", skip_typescript)]
    pub fn by_index_json(
        &self,
        env: Env,
        name: Option<Unknown<'_>>,
        value: Option<Unknown<'_>>,
    ) -> napi::Result<String> {
        guard(&env, || {
            crate::convert::objs_text(&self.by_index_objects(name, value)?)
        })
    }

    /// Cached keys, sorted.
    #[napi(catch_unwind)]
    pub fn keys(&self, env: Env) -> napi::Result<Vec<String>> {
        guard(&env, || {
            self.st.check()?;
            Ok(self.st.inf.keys()?)
        })
    }

    /// Cached objects whose index `name` has `value`. `Invalid` for an unknown index.
    #[napi(
        catch_unwind,
        ts_args_type = "name: string, value: string",
        ts_return_type = "FloydObject[]"
    )]
    pub fn by_index(
        &self,
        env: Env,
        name: Option<Unknown<'_>>,
        value: Option<Unknown<'_>>,
    ) -> napi::Result<Parsed> {
        guard(&env, || {
            Ok(Parsed(objs_json(self.by_index_objects(name, value)?)))
        })
    }

    /// Keys of the cached objects whose index `name` has `value`.
    #[napi(catch_unwind, ts_args_type = "name: string, value: string")]
    pub fn index_keys(
        &self,
        env: Env,
        name: Option<Unknown<'_>>,
        value: Option<Unknown<'_>>,
    ) -> napi::Result<Vec<String>> {
        guard(&env, || {
            self.st.check()?;
            let name = string(name, "name")?;
            let value = string(value, "value")?;
            Ok(self.st.inf.index_keys(&name, &value)?)
        })
    }

    /// The values index `name` currently has.
    #[napi(catch_unwind, ts_args_type = "name: string")]
    pub fn list_index_values(
        &self,
        env: Env,
        name: Option<Unknown<'_>>,
    ) -> napi::Result<Vec<String>> {
        guard(&env, || {
            self.st.check()?;
            let name = string(name, "name")?;
            Ok(self.st.inf.list_index_values(&name)?)
        })
    }

    /// Counters: `lists`, `expired`, `errors`, `lastError`, `events`, `lastSyncedVersion`,
    /// `cached`, `notifications`, `indexPanics`, `handlers`, `handlerErrors` (JS handlers
    /// that threw or rejected), `lastHandlerError`.
    #[napi(catch_unwind, ts_return_type = "InformerStats")]
    pub fn stats(&self, env: Env) -> napi::Result<Value> {
        guard(&env, || {
            let s = self.st.inf.stats();
            let f = &self.st.flags;
            Ok(json!({
                "lists": s.lists,
                "expired": s.expired,
                "errors": s.errors,
                "lastError": s.last_error,
                "events": s.events,
                "lastSyncedVersion": s.last_synced_version,
                "cached": s.cached,
                "notifications": s.notifications,
                "indexPanics": s.index_panics,
                "handlers": s.handlers,
                "handlerErrors": f.handler_errors.load(Ordering::Relaxed),
                "lastHandlerError": f.last_handler_error.lock().clone(),
            }))
        })
    }
}

impl Informer {
    /// The objects `list` returns, its options read as `list` documents them.
    fn list_objects(&self, options: Option<Unknown<'_>>) -> R<Vec<Arc<floyd::Object>>> {
        self.st.check()?;
        let sel = match opt_options(options, "options")? {
            Some(o) => selector(prop(&o, "labelSelector")?)?,
            None => None,
        };
        Ok(self.st.inf.list(sel.as_ref())?)
    }

    /// The objects `byIndex` returns, its arguments read as `byIndex` documents them.
    fn by_index_objects(
        &self,
        name: Option<Unknown<'_>>,
        value: Option<Unknown<'_>>,
    ) -> R<Vec<Arc<floyd::Object>>> {
        self.st.check()?;
        let name = string(name, "name")?;
        let value = string(value, "value")?;
        Ok(self.st.inf.by_index(&name, &value)?)
    }
}

/// The latch of `_addGateIndexForTest`: (reached, open).
#[derive(Default)]
struct Gate {
    state: parking_lot::Mutex<(bool, bool)>,
    cond: parking_lot::Condvar,
}

impl Gate {
    /// Waits until opened, at most 30 s (a failing test never leaves the reflector stuck).
    fn hold(&self) {
        let mut st = self.state.lock();
        st.0 = true;
        let deadline = std::time::Duration::from_secs(30);
        if !st.1 {
            let _ = self.cond.wait_while_for(&mut st, |st| !st.1, deadline);
        }
    }
}

impl Drop for Informer {
    fn drop(&mut self) {
        // Garbage collection: nobody can call stop() any more.
        if self.st.mark() {
            halt_in_background(Arc::clone(&self.st));
        }
    }
}
