//! The Node.js binding of floyd (napi-rs): a thin translation layer over the core.
//!
//! What lives here: argument conversion (plain JS objects ⇄ the Kubernetes JSON shape),
//! error translation (every core error becomes a JS `Error` whose `code` is the error kind,
//! `Invalid` errors also carry `field`), panic containment (no Rust panic may unwind into
//! Node: every export runs inside [`errors::guard`], which turns a panic into
//! `code: 'Internal'`, and is also `#[napi(catch_unwind)]` for the generated argument code),
//! the scheduling that keeps the event loop free (see [`asyncwork`]), and the bridge that lets
//! the core's threads call a host driver written in JavaScript (see [`control`]).
//!
//! What it leaves to others: every rule about objects, versions, queues and limiters is the
//! core's (`floyd`); this crate adds no logic the core lacks. The JS-side protocol that
//! napi-rs cannot declare (`Watch[Symbol.asyncIterator]`) lives in the hand-written entry
//! point `floyd.js`, which re-exports the generated loader `index.js`.

mod asyncwork;
mod control;
mod convert;
mod errors;
mod informer;
mod store;
mod teardown;
mod workqueue;

pub use control::ControlPlane;
pub use informer::Informer;
pub use store::{Store, Watch};
pub use workqueue::{RateLimiter, WorkQueue};

use floyd::Clock;
use napi_derive::napi;

/// Test-only: panics inside the binding, to prove that a Rust panic surfaces as an `Error`
/// with `code: 'Internal'` and that the process survives. Not part of the API.
#[napi(catch_unwind, js_name = "_panicForTest")]
pub fn panic_for_test(env: napi::Env) -> napi::Result<()> {
    errors::guard(&env, || -> errors::R<()> {
        panic!("deliberate panic for a test")
    })
}

/// Test-only: like `_panicForTest`, but the panic happens on a worker thread behind a
/// promise, to prove that asynchronous paths contain panics too. Not part of the API.
#[napi(
    catch_unwind,
    js_name = "_panicForTestAsync",
    ts_return_type = "Promise<void>"
)]
pub fn panic_for_test_async(env: &napi::Env) -> napi::Result<napi::bindgen_prelude::Unknown<'_>> {
    errors::guard_promise(env, || {
        asyncwork::spawn_wait(env, "floyd-test", || -> floyd::Result<serde_json::Value> {
            panic!("deliberate panic on a worker thread for a test")
        })
    })
}

/// Bench-only: `count` store create + get round trips done in Rust alone (the objects built
/// as the JS benchmark builds them, parsed from JSON; results not converted back), on a fresh
/// in-memory store; returns the seconds they took. The baseline for the binding's per-call
/// overhead in `benches/node/bench_workqueue.js`. Not part of the API.
#[napi(catch_unwind, js_name = "_benchStoreRoundTrips")]
pub fn bench_store_round_trips(env: napi::Env, count: u32) -> napi::Result<f64> {
    errors::guard(&env, || -> errors::R<f64> {
        let store = floyd::Store::memory();
        let clock = floyd::SystemClock;
        let start = clock.now();
        for i in 0..count {
            let name = format!("w{i}");
            let v = serde_json::json!({
                "kind": "Widget",
                "metadata": { "name": name, "labels": { "app": "web" } },
                "spec": { "size": i },
            });
            std::hint::black_box(store.create(floyd::Object::from_json(&v)?)?);
            std::hint::black_box(store.get("Widget", &format!("default/{name}"))?);
        }
        Ok(clock.now().saturating_duration_since(start).as_secs_f64())
    })
}

/// Test-only: `value` converted by the walk of [`convert`] (what every argument goes through
/// unless `floyd.js` encodes it), as JSON text. Not part of the API.
#[napi(catch_unwind, js_name = "_jsonViaWalk", skip_typescript)]
pub fn json_via_walk(
    env: napi::Env,
    value: Option<napi::bindgen_prelude::Unknown<'_>>,
) -> napi::Result<String> {
    errors::guard(&env, || -> errors::R<String> {
        Ok(convert::json(value, "value")?.to_string())
    })
}

/// Test-only: JSON text as the native side of `floyd.js`'s fast path reads it, written back
/// as JSON text for comparison with `_jsonViaWalk`; `null` if it is not JSON. Not part of
/// the API.
#[napi(catch_unwind, js_name = "_jsonViaText", skip_typescript)]
pub fn json_via_text(env: napi::Env, text: String) -> napi::Result<Option<String>> {
    errors::guard(&env, || -> errors::R<Option<String>> {
        Ok(serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .map(|v| v.to_string()))
    })
}
