//! Keeping the event loop free. Two ways, by how long the work can take:
//!
//! - Bounded work (snapshots, writes that wait for `fsync` in `always` mode) runs as an
//!   [`AsyncTask`](napi::bindgen_prelude::AsyncTask) on libuv's thread pool, like `fs` does:
//!   [`Job`].
//! - Unbounded waits (`WorkQueue.get`, `WorkQueue.shutDownWithDrain`, `Watch.next`) run on a
//!   thread of their own that settles a promise through a thread-safe deferred:
//!   [`spawn_wait`]. On the libuv pool (4 threads by default) four waiting `get()` calls
//!   would starve every `fs`, `dns` and `zlib` call of the host application.
//!
//! In both, the work runs inside `catch_unwind`: a panic rejects the promise with
//! `code: 'Internal'`. A pending promise keeps the process alive (as pending I/O does) until
//! it settles; the waits settle when their queue shuts down or their watch/store closes, and
//! both happen when the JS objects are garbage-collected.

use std::panic::{AssertUnwindSafe, catch_unwind};

use napi::bindgen_prelude::{JsValue, Task, Unknown};
use napi::{Env, Status};
use serde_json::Value;

use crate::errors::{into_js_error, panic_error};

/// Stack size of a waiting thread: it only blocks on a condition variable or a log cursor.
const WAIT_STACK_BYTES: usize = 256 * 1024;

type Work = Box<dyn FnOnce() -> floyd::Result<Value> + Send>;

fn run(work: impl FnOnce() -> floyd::Result<Value>) -> floyd::Result<Value> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(r) => r,
        Err(payload) => Err(panic_error(payload)),
    }
}

/// Runs `work` on a new thread and returns a promise of its result.
pub fn spawn_wait<'e>(
    env: &'e Env,
    name: &str,
    work: impl FnOnce() -> floyd::Result<Value> + Send + 'static,
) -> crate::errors::R<Unknown<'e>> {
    let (deferred, promise) = env.create_deferred::<Value, _>()?;
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(WAIT_STACK_BYTES)
        .spawn(move || {
            let result = run(work);
            deferred.resolve(move |env: Env| result.map_err(|e| into_js_error(&env, &e)));
        });
    if let Err(e) = spawned {
        // The deferred moved into the closure that was never run is dropped with it, and
        // its promise with it; the caller gets the error instead.
        return Err(floyd::Error::io("start a waiting thread", e).into());
    }
    Ok(promise.to_unknown())
}

/// Runs bounded `work` on libuv's thread pool and returns a promise of its result.
pub fn spawn_job<'e>(
    env: &'e Env,
    work: impl FnOnce() -> floyd::Result<Value> + Send + 'static,
) -> crate::errors::R<Unknown<'e>> {
    Ok(env.spawn(Job::new(work))?.promise_object().to_unknown())
}

/// A bounded piece of work for libuv's thread pool; see the module docs.
pub struct Job {
    work: Option<Work>,
}

impl Job {
    pub fn new(work: impl FnOnce() -> floyd::Result<Value> + Send + 'static) -> Job {
        Job {
            work: Some(Box::new(work)),
        }
    }
}

impl Task for Job {
    type Output = floyd::Result<Value>;
    type JsValue = Json;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        match self.work.take() {
            Some(work) => Ok(run(work)),
            None => Err(napi::Error::new(
                Status::GenericFailure,
                "floyd: a job ran twice",
            )),
        }
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<Json> {
        output.map(Json).map_err(|e| into_js_error(&env, &e))
    }
}

/// A JSON value as a task's result (napi-rs wants a `TypeName` for it).
pub struct Json(pub Value);

impl napi::bindgen_prelude::TypeName for Json {
    fn type_name() -> &'static str {
        "any"
    }
    fn value_type() -> napi::ValueType {
        napi::ValueType::Unknown
    }
}

impl napi::bindgen_prelude::ToNapiValue for Json {
    unsafe fn to_napi_value(
        env: napi::sys::napi_env,
        val: Self,
    ) -> napi::Result<napi::sys::napi_value> {
        // SAFETY: forwarded unchanged from napi-rs, which calls this with a live `env`.
        unsafe { Value::to_napi_value(env, val.0) }
    }
}
