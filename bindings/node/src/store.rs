//! `Store` and `Watch`: the embedded API server and its event stream, as JS classes.
//!
//! Reads (`get`, `list`, `stats`, `resourceVersion`) are synchronous: they touch only the
//! in-memory index. Writes are synchronous in `none` / `batch` mode (they return once the
//! event is in the log's page cache) and have `…Async` twins that run on libuv's pool; in
//! `always` mode the synchronous forms would block the event loop on `fsync`, so they are
//! refused (`Invalid`, field `durability`) and only the `…Async` forms work. `snapshot()`
//! always returns a promise.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floyd::Clock;
use napi::Env;
use napi::bindgen_prelude::{JsValue, PromiseRaw, Unknown};
use napi_derive::napi;
use serde_json::{Value, json};

use crate::asyncwork::{spawn_job, spawn_wait};
use crate::convert::{
    self, integer, obj_text, objs_text, opt_options, opt_seconds, opt_string, prop, string,
};
use crate::errors::{R, guard, guard_promise, invalid};

/// How long a waiting `Watch.next()` sleeps in the log before it looks whether its watch
/// was closed (closing a watch cannot interrupt the core's wait).
const WATCH_POLL: Duration = Duration::from_millis(50);

/// The embedded API server over the event log: objects are plain JS objects in the
/// Kubernetes JSON shape (`{kind, metadata: {name, namespace, labels, ...}, spec, status}`).
/// Every method throws an `Error` whose `code` is the floyd error kind (`'NotFound'`,
/// `'AlreadyExists'`, `'Conflict'`, `'Invalid'`, `'Expired'`, `'ShutDown'`, `'Corrupt'`,
/// `'Io'`, `'Internal'`); `Invalid` errors name the field in the message and in `field`.
#[napi]
pub struct Store {
    inner: AssertUnwindSafe<floyd::Store>,
    always: bool,
}

fn obj_json(o: &Arc<floyd::Object>) -> Value {
    o.to_json()
}

fn event_json(e: &floyd::WatchEvent) -> Value {
    json!({ "type": e.event_type.as_str(), "object": e.object.to_json() })
}

fn parse_object(v: Option<Unknown<'_>>) -> R<floyd::Object> {
    let value = convert::json_object(v, "object")?;
    Ok(floyd::Object::from_json_value(value)?)
}

/// An object from `floyd.js`'s JSON text; `None` if the text is not a JSON object within
/// the conversion bound (the caller falls back to the walk, which reports the problem).
fn parse_object_text(text: Option<Unknown<'_>>) -> R<Option<floyd::Object>> {
    let text = string(text, "object")?;
    if text.len() > convert::MAX_CONVERT_BYTES {
        return Ok(None);
    }
    // Decoded straight into the object; only a failure goes through the value tree, which
    // tells text that is not JSON (the walk's to explain) from an invalid object.
    if let Ok(obj) = floyd::Object::from_slice(text.as_bytes()) {
        return Ok(Some(obj));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(value @ Value::Object(_)) => Ok(Some(floyd::Object::from_json_value(value)?)),
        _ => Ok(None),
    }
}

/// `resourceVersion` as a number or a decimal string (objects carry it as a string).
pub(crate) fn resource_version(v: Option<Unknown<'_>>, field: &str) -> R<Option<u64>> {
    let Some(v) = convert::present(v)? else {
        return Ok(None);
    };
    if v.get_type()? == napi::ValueType::String {
        let s = string(Some(v), field)?;
        return Ok(Some(floyd::ResourceVersion::parse_field(field, &s)?.0));
    }
    let x = convert::number(Some(v), field)?;
    Ok(Some(integer(x, field, (1 << 53) - 1)?))
}

pub(crate) fn selector(v: Option<Unknown<'_>>) -> R<Option<floyd::LabelSelector>> {
    let field = floyd::store::selector::FIELD;
    let Some(v) = convert::present(v)? else {
        return Ok(None);
    };
    if v.get_type()? == napi::ValueType::String {
        return Ok(Some(floyd::LabelSelector::parse(&string(Some(v), field)?)?));
    }
    let value = convert::json_object(Some(v), field)?;
    Ok(Some(floyd::LabelSelector::from_json(&value, field)?))
}

impl Store {
    /// The objects and version `list` returns, its arguments read as `list` documents them.
    fn list_objects(
        &self,
        kind: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> R<(Vec<Arc<floyd::Object>>, u64)> {
        let kind = string(kind, "kind")?;
        let (mut namespace, mut sel) = (None, None);
        if let Some(o) = opt_options(options, "options")? {
            namespace = opt_string(prop(&o, "namespace")?, "namespace")?;
            sel = selector(prop(&o, "labelSelector")?)?;
        }
        Ok(self.inner.list(&kind, namespace.as_deref(), sel.as_ref())?)
    }

    pub(crate) fn check_sync_write(&self, method: &str) -> R<()> {
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

    /// Whether the store is in `always` mode (synchronous writes would wait for `fsync`).
    pub(crate) fn is_always(&self) -> bool {
        self.always
    }

    pub(crate) fn core(&self) -> floyd::Store {
        (*self.inner).clone()
    }
}

#[napi]
impl Store {
    /// Opens (or creates) a store in `path` (default `./floyd-data`). Options:
    /// `durability` — `'none'`, `'batch'` (default: group commit every 5 ms / 1 MiB) or
    /// `'always'` (writes resolve after `fsync`; only the `…Async` writes are allowed);
    /// `segmentSize` — bytes per log segment; `seed` — for generated uids and names.
    /// Recovery runs synchronously (replay of the log after the newest snapshot).
    #[napi(
        factory,
        catch_unwind,
        ts_args_type = "path?: string | null, options?: StoreOptions | null"
    )]
    pub fn open(
        env: Env,
        path: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<Store> {
        guard(&env, || {
            let path = opt_string(path, "path")?
                .unwrap_or_else(|| floyd::store::DEFAULT_DATA_DIR.to_string());
            let cfg = store_config(options)?;
            let always = matches!(cfg.durability, floyd::Durability::Always);
            let (store, _report) = floyd::Store::open(&path, cfg)?;
            Ok(Store {
                inner: AssertUnwindSafe(store),
                always,
            })
        })
    }

    /// A store in memory: same semantics, nothing persisted. Options as for `open`
    /// (`durability` has no effect here).
    #[napi(factory, catch_unwind, ts_args_type = "options?: StoreOptions | null")]
    pub fn memory(env: Env, options: Option<Unknown<'_>>) -> napi::Result<Store> {
        guard(&env, || {
            let cfg = store_config(options)?;
            Ok(Store {
                inner: AssertUnwindSafe(floyd::Store::memory_with(cfg)?),
                always: false,
            })
        })
    }

    /// Creates an object and returns it as stored: `metadata.uid`, `resourceVersion`,
    /// `generation` (1) and `creationTimestamp` set. `AlreadyExists` if the key is taken.
    #[napi(
        catch_unwind,
        ts_args_type = "object: FloydObject",
        ts_return_type = "FloydObject"
    )]
    pub fn create(
        &self,
        env: Env,
        object: Option<Unknown<'_>>,
    ) -> napi::Result<convert::ParsedObject> {
        guard(&env, || {
            self.check_sync_write("create")?;
            let obj = parse_object(object)?;
            Ok(convert::ParsedObject(Some(self.inner.create(obj)?)))
        })
    }

    /// `create`, `update` and `updateStatus` (`op` 0, 1, 2) for `floyd.js`'s fast path: the
    /// object as JSON text (see `encode` there), the stored object back as JSON text.
    /// `null`, having done nothing, if the text does not parse: `floyd.js` then calls the
    /// method itself, whose walk of the argument names what is wrong.
    #[napi(catch_unwind, js_name = "_writeJson", skip_typescript)]
    pub fn write_json(
        &self,
        env: Env,
        op: u32,
        text: Option<Unknown<'_>>,
    ) -> napi::Result<Option<String>> {
        guard(&env, || {
            let method = match op {
                0 => "create",
                1 => "update",
                2 => "updateStatus",
                _ => return Err(invalid("op", format!("must be 0, 1 or 2, got {op}"))),
            };
            self.check_sync_write(method)?;
            let Some(obj) = parse_object_text(text)? else {
                return Ok(None);
            };
            let stored = match op {
                0 => self.inner.create(obj)?,
                1 => self.inner.update(obj)?,
                _ => self.inner.update_status(obj)?,
            };
            Ok(Some(obj_text(&stored)?))
        })
    }

    /// `create` as a promise, run off the event loop (works in every durability mode).
    #[napi(
        catch_unwind,
        ts_args_type = "object: FloydObject",
        ts_return_type = "Promise<FloydObject>"
    )]
    pub fn create_async<'e>(
        &self,
        env: &'e Env,
        object: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let obj = parse_object(object)?;
            let store = self.core();
            spawn_job(env, move || Ok(obj_json(&store.create(obj)?)))
        })
    }

    /// The object of `kind` at `key` (`"namespace/name"`, or `"name"` for cluster-scoped
    /// kinds), or `null`.
    #[napi(
        catch_unwind,
        ts_args_type = "kind: string, key: string",
        ts_return_type = "FloydObject | null"
    )]
    pub fn get(
        &self,
        env: Env,
        kind: Option<Unknown<'_>>,
        key: Option<Unknown<'_>>,
    ) -> napi::Result<convert::ParsedObject> {
        guard(&env, || {
            let kind = string(kind, "kind")?;
            let key = string(key, "key")?;
            Ok(convert::ParsedObject(self.inner.get(&kind, &key)?))
        })
    }

    /// `get` for `floyd.js`: the object as JSON text, or `null`.
    #[napi(catch_unwind, js_name = "_getJson", skip_typescript)]
    pub fn get_json(
        &self,
        env: Env,
        kind: Option<Unknown<'_>>,
        key: Option<Unknown<'_>>,
    ) -> napi::Result<Option<String>> {
        guard(&env, || {
            let kind = string(kind, "kind")?;
            let key = string(key, "key")?;
            self.inner
                .get(&kind, &key)?
                .map(|o| obj_text(&o))
                .transpose()
        })
    }

    /// Objects of `kind`, sorted by key, consistent at `resourceVersion`. Options:
    /// `namespace`, `labelSelector` (the Kubernetes string form `app=web,tier!=db,env in
    /// (a,b),!legacy`, or `{matchLabels, matchExpressions}`).
    #[napi(
        catch_unwind,
        ts_args_type = "kind: string, options?: ListOptions | null",
        ts_return_type = "ObjectList"
    )]
    pub fn list(
        &self,
        env: Env,
        kind: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<Value> {
        guard(&env, || {
            let (items, rv) = self.list_objects(kind, options)?;
            let items: Vec<Value> = items.iter().map(obj_json).collect();
            Ok(json!({ "items": items, "resourceVersion": rv }))
        })
    }

    /// `list` for `floyd.js`: the same list as JSON text.
    #[napi(catch_unwind, js_name = "_listJson", skip_typescript)]
    pub fn list_json(
        &self,
        env: Env,
        kind: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<String> {
        guard(&env, || {
            let (items, rv) = self.list_objects(kind, options)?;
            let mut out = String::from("{\"items\":");
            out.push_str(&objs_text(&items)?);
            out.push_str(&format!(",\"resourceVersion\":{rv}}}"));
            Ok(out)
        })
    }

    /// Replaces an object's metadata and spec (status is kept). `Conflict` if
    /// `metadata.resourceVersion` is set and stale; `generation` grows when the spec changes.
    #[napi(
        catch_unwind,
        ts_args_type = "object: FloydObject",
        ts_return_type = "FloydObject"
    )]
    pub fn update(
        &self,
        env: Env,
        object: Option<Unknown<'_>>,
    ) -> napi::Result<convert::ParsedObject> {
        guard(&env, || {
            self.check_sync_write("update")?;
            let obj = parse_object(object)?;
            Ok(convert::ParsedObject(Some(self.inner.update(obj)?)))
        })
    }

    /// `update` as a promise, run off the event loop.
    #[napi(
        catch_unwind,
        ts_args_type = "object: FloydObject",
        ts_return_type = "Promise<FloydObject>"
    )]
    pub fn update_async<'e>(
        &self,
        env: &'e Env,
        object: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let obj = parse_object(object)?;
            let store = self.core();
            spawn_job(env, move || Ok(obj_json(&store.update(obj)?)))
        })
    }

    /// Replaces only an object's status; `generation` is unchanged.
    #[napi(
        catch_unwind,
        ts_args_type = "object: FloydObject",
        ts_return_type = "FloydObject"
    )]
    pub fn update_status(
        &self,
        env: Env,
        object: Option<Unknown<'_>>,
    ) -> napi::Result<convert::ParsedObject> {
        guard(&env, || {
            self.check_sync_write("updateStatus")?;
            let obj = parse_object(object)?;
            Ok(convert::ParsedObject(Some(self.inner.update_status(obj)?)))
        })
    }

    /// `updateStatus` as a promise, run off the event loop.
    #[napi(
        catch_unwind,
        ts_args_type = "object: FloydObject",
        ts_return_type = "Promise<FloydObject>"
    )]
    pub fn update_status_async<'e>(
        &self,
        env: &'e Env,
        object: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let obj = parse_object(object)?;
            let store = self.core();
            spawn_job(env, move || Ok(obj_json(&store.update_status(obj)?)))
        })
    }

    /// Deletes an object and returns its last state. `Conflict` if `resourceVersion` (a
    /// number or the object's decimal string) is given and stale.
    #[napi(
        catch_unwind,
        ts_args_type = "kind: string, key: string, resourceVersion?: number | string | null",
        ts_return_type = "FloydObject"
    )]
    pub fn delete(
        &self,
        env: Env,
        kind: Option<Unknown<'_>>,
        key: Option<Unknown<'_>>,
        resource_version: Option<Unknown<'_>>,
    ) -> napi::Result<convert::ParsedObject> {
        guard(&env, || {
            self.check_sync_write("delete")?;
            let kind = string(kind, "kind")?;
            let key = string(key, "key")?;
            let rv = self::resource_version(resource_version, "resourceVersion")?;
            Ok(convert::ParsedObject(Some(
                self.inner.delete(&kind, &key, rv)?,
            )))
        })
    }

    /// `delete` as a promise, run off the event loop.
    #[napi(
        catch_unwind,
        ts_args_type = "kind: string, key: string, resourceVersion?: number | string | null",
        ts_return_type = "Promise<FloydObject>"
    )]
    pub fn delete_async<'e>(
        &self,
        env: &'e Env,
        kind: Option<Unknown<'_>>,
        key: Option<Unknown<'_>>,
        resource_version: Option<Unknown<'_>>,
    ) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let kind = string(kind, "kind")?;
            let key = string(key, "key")?;
            let rv = self::resource_version(resource_version, "resourceVersion")?;
            let store = self.core();
            spawn_job(env, move || Ok(obj_json(&store.delete(&kind, &key, rv)?)))
        })
    }

    /// Events of `kind` (every kind if absent) after `fromVersion` (default 0: first a
    /// synthetic `ADDED` for every current object), then the tail. Iterate it with
    /// `for await (const ev of store.watch({kind}))`; iteration ends after `timeout` seconds
    /// without an event (absent: follows until the watch or the store is closed).
    /// `Expired` if `fromVersion` is older than compaction kept.
    #[napi(catch_unwind, ts_args_type = "options?: WatchOptions | null")]
    pub fn watch(&self, env: Env, options: Option<Unknown<'_>>) -> napi::Result<Watch> {
        guard(&env, || {
            let (mut kind, mut from, mut timeout) = (None, 0, None);
            if let Some(o) = opt_options(options, "options")? {
                kind = opt_string(prop(&o, "kind")?, "kind")?;
                from =
                    self::resource_version(prop(&o, "fromVersion")?, "fromVersion")?.unwrap_or(0);
                timeout = opt_seconds(prop(&o, "timeout")?, "timeout")?;
            }
            let w = self.inner.watch(kind.as_deref(), from, None)?;
            Ok(Watch {
                start_version: w.start_version(),
                shared: Arc::new(WatchShared {
                    watch: parking_lot::Mutex::new(w),
                    closed: AtomicBool::new(false),
                    timeout,
                }),
            })
        })
    }

    /// Writes a snapshot of every object at one version and compacts the log; resolves
    /// with `{resourceVersion, path, objects, bytes, compactedSegments}` (`path` is `null`
    /// for memory stores).
    #[napi(catch_unwind, ts_return_type = "Promise<SnapshotSummary>")]
    pub fn snapshot<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let store = self.core();
            spawn_job(env, move || {
                let s = store.snapshot()?;
                Ok(json!({
                    "resourceVersion": s.resource_version,
                    "path": s.path.map(|p| p.display().to_string()),
                    "objects": s.objects,
                    "bytes": s.bytes,
                    "compactedSegments": s.compacted_segments,
                }))
            })
        })
    }

    /// Counters describing the store.
    #[napi(catch_unwind, ts_return_type = "StoreStats")]
    pub fn stats(&self, env: Env) -> napi::Result<Value> {
        guard(&env, || {
            let s = self.inner.stats()?;
            let durability = match s.durability {
                floyd::Durability::None => "none",
                floyd::Durability::Batch { .. } => "batch",
                floyd::Durability::Always => "always",
            };
            Ok(json!({
                "resourceVersion": s.resource_version,
                "objects": s.objects,
                "events": s.events,
                "segments": s.segments,
                "bytes": s.bytes,
                "oldestVersion": s.oldest_version,
                "snapshotVersion": s.snapshot_version,
                "truncatedBytes": s.truncated_bytes,
                "durability": durability,
            }))
        })
    }

    /// The newest applied resource version.
    #[napi(catch_unwind)]
    pub fn resource_version(&self, env: Env) -> napi::Result<f64> {
        guard(&env, || Ok(self.inner.resource_version() as f64))
    }

    /// The data directory, or `null` for a memory store.
    #[napi(getter, catch_unwind)]
    pub fn path(&self, env: Env) -> napi::Result<Option<String>> {
        guard(&env, || {
            Ok(self.inner.path().map(|p| p.display().to_string()))
        })
    }

    /// Whether `close()` was called.
    #[napi(getter, catch_unwind)]
    pub fn closed(&self, env: Env) -> napi::Result<bool> {
        guard(&env, || Ok(self.inner.is_closed()))
    }

    /// Closes the store: later calls fail with `ShutDown`, watches end. Idempotent.
    #[napi(catch_unwind)]
    pub fn close(&self, env: Env) -> napi::Result<()> {
        guard(&env, || Ok(self.inner.close()?))
    }
}

fn store_config(options: Option<Unknown<'_>>) -> R<floyd::StoreConfig> {
    let mut cfg = floyd::StoreConfig::default();
    let Some(o) = opt_options(options, "options")? else {
        return Ok(cfg);
    };
    if let Some(d) = opt_string(prop(&o, "durability")?, "durability")? {
        cfg.durability = floyd::Durability::parse(&d)?;
    }
    if let Some(n) = convert::opt_number(prop(&o, "segmentSize")?, "segmentSize")? {
        cfg.segment_size = integer(n, "segmentSize", u32::MAX as u64)?;
    }
    if let Some(n) = convert::opt_number(prop(&o, "seed")?, "seed")? {
        cfg.seed = Some(integer(n, "seed", (1 << 53) - 1)?);
    }
    Ok(cfg)
}

struct WatchShared {
    watch: parking_lot::Mutex<floyd::Watch>,
    closed: AtomicBool,
    timeout: Option<Duration>,
}

impl WatchShared {
    /// The next event for a waiting `next()`: polls the log in [`WATCH_POLL`] slices so a
    /// `close()` (or garbage collection of the watch) ends the wait.
    fn next_blocking(&self) -> floyd::Result<Value> {
        let clock = floyd::SystemClock;
        let deadline = self.timeout.and_then(|t| clock.now().checked_add(t));
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Ok(done());
            }
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(clock.now());
                    if left.is_zero() {
                        self.closed.store(true, Ordering::Release);
                        return Ok(done());
                    }
                    left.min(WATCH_POLL)
                }
                None => WATCH_POLL,
            };
            match self.watch.lock().next_timeout(Some(slice)) {
                Ok(Some(ev)) => return Ok(item(&ev)),
                Ok(None) => continue,
                Err(e) => {
                    self.closed.store(true, Ordering::Release);
                    return match e.kind() {
                        floyd::ErrorKind::ShutDown => Ok(done()),
                        _ => Err(e),
                    };
                }
            }
        }
    }
}

fn done() -> Value {
    json!({ "value": null, "done": true })
}

fn item(ev: &floyd::WatchEvent) -> Value {
    json!({ "value": event_json(ev), "done": false })
}

/// A stream of store events (`{type: 'ADDED' | 'MODIFIED' | 'DELETED', object}`), from
/// `Store.watch()`. An async iterator: `for await (const ev of watch)`. Leaving the loop
/// early (`break`) closes it.
#[napi]
pub struct Watch {
    shared: Arc<WatchShared>,
    start_version: u64,
}

#[napi]
impl Watch {
    /// The next event: resolves `{value: event, done: false}`, or `{done: true}` once the
    /// watch timed out, was closed, or its store was closed. Waits on a thread of its own,
    /// never on the event loop.
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<IteratorResult<WatchEvent, undefined>>"
    )]
    pub fn next<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            if self.shared.closed.load(Ordering::Acquire) {
                return resolved(env, done());
            }
            // Fast path: an event that is ready now needs no thread.
            if let Some(mut w) = self.shared.watch.try_lock() {
                match w.try_next() {
                    Ok(Some(ev)) => return resolved(env, item(&ev)),
                    Ok(None) => {}
                    Err(e) if e.kind() == floyd::ErrorKind::ShutDown => {
                        self.shared.closed.store(true, Ordering::Release);
                        return resolved(env, done());
                    }
                    Err(e) => {
                        self.shared.closed.store(true, Ordering::Release);
                        return Err(e.into());
                    }
                }
            }
            let shared = self.shared.clone();
            spawn_wait(env, "floyd-watch", move || shared.next_blocking())
        })
    }

    /// The next event if one is ready now, else `null` (also once the watch is closed).
    #[napi(catch_unwind, ts_return_type = "WatchEvent | null")]
    pub fn try_next(&self, env: Env) -> napi::Result<Value> {
        guard(&env, || {
            if self.shared.closed.load(Ordering::Acquire) {
                return Ok(Value::Null);
            }
            match self.shared.watch.lock().try_next() {
                Ok(Some(ev)) => Ok(event_json(&ev)),
                Ok(None) => Ok(Value::Null),
                Err(e) if e.kind() == floyd::ErrorKind::ShutDown => Ok(Value::Null),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Ends the iteration (what `break` in `for await` calls): resolves `{done: true}`, and
    /// a pending `next()` resolves `{done: true}` too.
    #[napi(
        js_name = "return",
        catch_unwind,
        ts_return_type = "Promise<IteratorResult<WatchEvent, undefined>>"
    )]
    pub fn return_<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            self.shared.closed.store(true, Ordering::Release);
            resolved(env, done())
        })
    }

    /// Closes the watch; idempotent.
    #[napi(catch_unwind)]
    pub fn close(&self, env: Env) -> napi::Result<()> {
        guard(&env, || {
            self.shared.closed.store(true, Ordering::Release);
            Ok(())
        })
    }

    /// The version the watch started after: for a watch from 0, the version its synthetic
    /// `ADDED` events are consistent at (resume a later watch from here or from the last
    /// event's `object.metadata.resourceVersion`).
    #[napi(getter, catch_unwind)]
    pub fn start_version(&self, env: Env) -> napi::Result<f64> {
        guard(&env, || Ok(self.start_version as f64))
    }

    /// The log position of the next event the watch will look at.
    #[napi(getter, catch_unwind)]
    pub fn position(&self, env: Env) -> napi::Result<f64> {
        guard(&env, || Ok(self.shared.watch.lock().position() as f64))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Garbage collection of the JS object ends a pending `next()` (and frees its thread).
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// An already-resolved promise of `value`.
pub fn resolved<'e>(env: &'e Env, value: Value) -> R<Unknown<'e>> {
    Ok(PromiseRaw::resolve(env, value)?.to_unknown())
}
