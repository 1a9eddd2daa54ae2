//! `WorkQueue` and `RateLimiter` as JS classes, with client-go's semantics from the core.
//!
//! Items are strings and numbers (`1` and `"1"` are different items); any other type is
//! `Invalid`. `await q.get()` waits on a thread of its own (never on the event loop or on
//! libuv's pool) and resolves `null` once the queue is shut down and drained. Garbage
//! collection of a `WorkQueue` shuts it down, which releases its pending `get()` calls.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use napi::Env;
use napi::bindgen_prelude::{Array, ClassInstance, FromNapiValue, JsValue, Unknown};
use napi_derive::napi;
use serde_json::{Value, json};

use crate::asyncwork::spawn_wait;
use crate::convert::{
    Key, integer, number, opt_number, opt_options, opt_seconds, opt_string, present, prop,
    type_name,
};
use crate::errors::{R, guard, guard_promise, invalid};
use crate::store::resolved;

type CoreLimiter = floyd::RateLimiter<Key>;
type CoreQueue = floyd::WorkQueue<Key>;

/// Per-item backoff and overall rate limits for `WorkQueue.addRateLimited`, as client-go's
/// rate limiters. Durations are float seconds; NaN, negative, infinite or out-of-range
/// values are `Invalid`. A limiter is shared state: the same object given to two queues
/// counts failures for both.
#[napi]
pub struct RateLimiter {
    inner: AssertUnwindSafe<CoreLimiter>,
}

fn limiter(l: CoreLimiter) -> RateLimiter {
    RateLimiter {
        inner: AssertUnwindSafe(l),
    }
}

#[napi]
impl RateLimiter {
    /// Per-item `base · 2^(n-1)` seconds for the n-th consecutive failure, capped at `max`
    /// (defaults 0.005 and 1000).
    #[napi(
        factory,
        catch_unwind,
        ts_args_type = "base?: number | null, max?: number | null"
    )]
    pub fn exponential(
        env: Env,
        base: Option<Unknown<'_>>,
        max: Option<Unknown<'_>>,
    ) -> napi::Result<RateLimiter> {
        guard(&env, || {
            let base = opt_number(base, "base")?.unwrap_or(0.005);
            let max = opt_number(max, "max")?.unwrap_or(1000.0);
            Ok(limiter(CoreLimiter::exponential_secs(base, max)?))
        })
    }

    /// Per-item `fast` seconds for the first `maxFastAttempts` failures, then `slow`.
    #[napi(
        factory,
        catch_unwind,
        ts_args_type = "fast: number, slow: number, maxFastAttempts: number"
    )]
    pub fn fast_slow(
        env: Env,
        fast: Option<Unknown<'_>>,
        slow: Option<Unknown<'_>>,
        max_fast_attempts: Option<Unknown<'_>>,
    ) -> napi::Result<RateLimiter> {
        guard(&env, || {
            let fast = number(fast, "fast")?;
            let slow = number(slow, "slow")?;
            let n = integer(
                number(max_fast_attempts, "maxFastAttempts")?,
                "maxFastAttempts",
                u32::MAX as u64,
            )?;
            Ok(limiter(CoreLimiter::fast_slow_secs(fast, slow, n)?))
        })
    }

    /// One token bucket over all items: `qps` tokens per second (default 10; `Infinity`
    /// never delays), `burst` deep (default 100; 0 delays forever), starting full.
    #[napi(
        factory,
        catch_unwind,
        ts_args_type = "qps?: number | null, burst?: number | null"
    )]
    pub fn bucket(
        env: Env,
        qps: Option<Unknown<'_>>,
        burst: Option<Unknown<'_>>,
    ) -> napi::Result<RateLimiter> {
        guard(&env, || {
            let qps = opt_number(qps, "qps")?.unwrap_or(10.0);
            let burst = match opt_number(burst, "burst")? {
                Some(b) => integer(b, "burst", u32::MAX as u64)? as u32,
                None => 100,
            };
            Ok(limiter(CoreLimiter::bucket_checked(
                qps,
                burst,
                floyd::SystemClock::shared(),
            )?))
        })
    }

    /// The largest delay of `limiters`; each of them records every failure.
    #[napi(factory, catch_unwind, ts_args_type = "limiters: RateLimiter[]")]
    pub fn max_of(env: Env, limiters: Option<Unknown<'_>>) -> napi::Result<RateLimiter> {
        guard(&env, || {
            let field = "limiters";
            let Some(v) = present(limiters)? else {
                return Err(invalid(field, "is required (an array of RateLimiter)"));
            };
            if !v.is_array()? {
                return Err(invalid(
                    field,
                    format!("must be an array of RateLimiter, got {}", type_name(&v)?),
                ));
            }
            let arr = Array::from_unknown(v)?;
            let mut out = Vec::with_capacity(arr.len() as usize);
            for i in 0..arr.len() {
                let f = format!("{field}[{i}]");
                let Some(item) = arr.get::<Unknown<'_>>(i)? else {
                    return Err(invalid(f, "must be a RateLimiter"));
                };
                out.push(as_limiter(item, &f)?);
            }
            Ok(limiter(CoreLimiter::max_of(out)))
        })
    }

    /// client-go's `DefaultControllerRateLimiter`: the max of `exponential(0.005, 1000)` and
    /// `bucket(10, 100)`.
    #[napi(factory, catch_unwind)]
    pub fn default_controller(env: Env) -> napi::Result<RateLimiter> {
        guard(&env, || Ok(limiter(CoreLimiter::default_controller())))
    }

    /// A new limiter: this one's delay capped at `maxDelay` seconds (sharing this one's state).
    #[napi(catch_unwind, ts_args_type = "maxDelay: number")]
    pub fn with_max_wait(
        &self,
        env: Env,
        max_delay: Option<Unknown<'_>>,
    ) -> napi::Result<RateLimiter> {
        guard(&env, || {
            let secs = number(max_delay, "maxDelay")?;
            Ok(limiter(self.inner.clone().with_max_wait_secs(secs)?))
        })
    }

    /// The delay in seconds before `item` may be retried (records a failure for per-item
    /// limiters).
    #[napi(catch_unwind, ts_args_type = "item: string | number")]
    pub fn when(&self, env: Env, item: Option<Unknown<'_>>) -> napi::Result<f64> {
        guard(&env, || {
            Ok(self.inner.when(&Key::from_js(item, "item")?).as_secs_f64())
        })
    }

    /// Clears `item`'s failure history.
    #[napi(catch_unwind, ts_args_type = "item: string | number")]
    pub fn forget(&self, env: Env, item: Option<Unknown<'_>>) -> napi::Result<()> {
        guard(&env, || {
            self.inner.forget(&Key::from_js(item, "item")?);
            Ok(())
        })
    }

    /// Failures on record for `item`.
    #[napi(catch_unwind, ts_args_type = "item: string | number")]
    pub fn num_requeues(&self, env: Env, item: Option<Unknown<'_>>) -> napi::Result<f64> {
        guard(&env, || {
            Ok(self.inner.num_requeues(&Key::from_js(item, "item")?) as f64)
        })
    }
}

fn as_limiter(v: Unknown<'_>, field: &str) -> R<CoreLimiter> {
    let what = type_name(&v)?;
    match ClassInstance::<RateLimiter>::from_unknown(v) {
        Ok(l) => Ok((*l.inner).clone()),
        Err(_) => Err(invalid(field, format!("must be a RateLimiter, got {what}"))),
    }
}

/// A rate-limited, delaying, de-duplicating work queue with client-go's semantics: a key is
/// never handed to two workers at once, adds of a waiting key coalesce, and a key re-added
/// while it is processed runs once more afterwards.
///
/// ```js
/// const q = new WorkQueue()
/// q.add('default/web')
/// const key = await q.get()   // null once shut down and drained
/// try { reconcile(key); q.forget(key) } catch { q.addRateLimited(key) } finally { q.done(key) }
/// ```
#[napi]
pub struct WorkQueue {
    q: AssertUnwindSafe<Arc<CoreQueue>>,
}

#[napi]
impl WorkQueue {
    /// Options: `rateLimiter` (default `RateLimiter.defaultController()`), `name` (for
    /// metrics).
    #[napi(
        constructor,
        catch_unwind,
        ts_args_type = "options?: WorkQueueOptions | null"
    )]
    pub fn new(env: Env, options: Option<Unknown<'_>>) -> napi::Result<WorkQueue> {
        guard(&env, || {
            let mut cfg = floyd::WorkQueueConfig::default();
            if let Some(o) = opt_options(options, "options")? {
                cfg.name = opt_string(prop(&o, "name")?, "name")?;
                if let Some(l) = prop(&o, "rateLimiter")? {
                    cfg.rate_limiter = Some(as_limiter(l, "rateLimiter")?);
                }
            }
            Ok(WorkQueue {
                q: AssertUnwindSafe(Arc::new(CoreQueue::with_config(cfg))),
            })
        })
    }

    /// Marks `item` as needing processing. Ignored after shut-down (as client-go).
    #[napi(catch_unwind, ts_args_type = "item: string | number")]
    pub fn add(&self, env: Env, item: Option<Unknown<'_>>) -> napi::Result<()> {
        guard(&env, || {
            self.q.add(Key::from_js(item, "item")?);
            Ok(())
        })
    }

    /// Adds `item` after `seconds`; if it is already waiting, the earlier time wins.
    #[napi(catch_unwind, ts_args_type = "item: string | number, seconds: number")]
    pub fn add_after(
        &self,
        env: Env,
        item: Option<Unknown<'_>>,
        seconds: Option<Unknown<'_>>,
    ) -> napi::Result<()> {
        guard(&env, || {
            let key = Key::from_js(item, "item")?;
            let delay = floyd::error::duration_from_secs("seconds", number(seconds, "seconds")?)?;
            self.q.add_after(key, delay);
            Ok(())
        })
    }

    /// Adds `item` after the rate limiter's delay for it (recording a failure).
    #[napi(catch_unwind, ts_args_type = "item: string | number")]
    pub fn add_rate_limited(&self, env: Env, item: Option<Unknown<'_>>) -> napi::Result<()> {
        guard(&env, || {
            self.q.add_rate_limited(Key::from_js(item, "item")?);
            Ok(())
        })
    }

    /// The next item (it is then processing until `done(item)`), waiting up to `timeout`
    /// seconds (absent: until one comes or the queue shuts down). Resolves `null` on timeout
    /// and once the queue is shut down and drained. Never blocks the event loop.
    #[napi(
        catch_unwind,
        ts_args_type = "timeout?: number | null",
        ts_return_type = "Promise<string | number | null>"
    )]
    pub fn get<'e>(&self, env: &'e Env, timeout: Option<Unknown<'_>>) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let timeout = opt_seconds(timeout, "timeout")?;
            // Fast path: an item that is ready now needs no thread.
            if let Some(k) = self.q.try_get() {
                return resolved(env, k.to_json());
            }
            if timeout.is_some_and(|t| t.is_zero()) || self.q.shutting_down() && self.q.is_empty() {
                return resolved(env, Value::Null);
            }
            let q = Arc::clone(&self.q);
            spawn_wait(env, "floyd-wq-get", move || {
                let k = match timeout {
                    Some(t) => q.get_timeout(t),
                    None => q.get(),
                };
                Ok(k.map_or(Value::Null, |k| k.to_json()))
            })
        })
    }

    /// The next item if one is ready now, else `null`.
    #[napi(catch_unwind, ts_return_type = "string | number | null")]
    pub fn try_get(&self, env: Env) -> napi::Result<Value> {
        guard(&env, || {
            Ok(self.q.try_get().map_or(Value::Null, |k| k.to_json()))
        })
    }

    /// Marks `item` as finished; if it was added while processing, it is queued again.
    #[napi(catch_unwind, ts_args_type = "item: string | number")]
    pub fn done(&self, env: Env, item: Option<Unknown<'_>>) -> napi::Result<()> {
        guard(&env, || {
            self.q.done(&Key::from_js(item, "item")?);
            Ok(())
        })
    }

    /// Clears `item`'s rate-limiter history (call `done` too).
    #[napi(catch_unwind, ts_args_type = "item: string | number")]
    pub fn forget(&self, env: Env, item: Option<Unknown<'_>>) -> napi::Result<()> {
        guard(&env, || {
            self.q.forget(&Key::from_js(item, "item")?);
            Ok(())
        })
    }

    /// Failures the rate limiter has on record for `item`.
    #[napi(catch_unwind, ts_args_type = "item: string | number")]
    pub fn num_requeues(&self, env: Env, item: Option<Unknown<'_>>) -> napi::Result<f64> {
        guard(&env, || {
            Ok(self.q.num_requeues(&Key::from_js(item, "item")?) as f64)
        })
    }

    /// Items queued and ready to hand out.
    #[napi(catch_unwind)]
    pub fn len(&self, env: Env) -> napi::Result<u32> {
        guard(&env, || Ok(self.q.len().min(u32::MAX as usize) as u32))
    }

    /// Same as `len()`.
    #[napi(getter, catch_unwind)]
    pub fn length(&self, env: Env) -> napi::Result<u32> {
        self.len(env)
    }

    /// The queue's name, if it has one.
    #[napi(getter, catch_unwind)]
    pub fn name(&self, env: Env) -> napi::Result<Option<String>> {
        guard(&env, || Ok(self.q.name().map(str::to_string)))
    }

    /// Stops accepting adds and resolves every pending `get()` (with the items still queued,
    /// then `null`). Idempotent.
    #[napi(catch_unwind)]
    pub fn shut_down(&self, env: Env) -> napi::Result<()> {
        guard(&env, || {
            self.q.shut_down();
            Ok(())
        })
    }

    /// Shuts down, then resolves once every queued item has been handed out and every
    /// handed-out item is `done` (workers must keep calling `get` and `done`).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn shut_down_with_drain<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        guard_promise(env, || {
            let q = Arc::clone(&self.q);
            spawn_wait(env, "floyd-wq-drain", move || {
                q.shut_down_with_drain();
                Ok(Value::Null)
            })
        })
    }

    /// Whether a shut-down has begun.
    #[napi(catch_unwind)]
    pub fn shutting_down(&self, env: Env) -> napi::Result<bool> {
        guard(&env, || Ok(self.q.shutting_down()))
    }

    /// client-go's queue metrics: `depth`, `adds`, `retries`, `queueDuration` and
    /// `workDuration` histograms (`{buckets: [[le, cumulativeCount], ...], count, sum}`,
    /// seconds), `unfinishedWorkSeconds`, `longestRunningProcessorSeconds`.
    #[napi(catch_unwind, ts_return_type = "QueueMetrics")]
    pub fn metrics(&self, env: Env) -> napi::Result<Value> {
        guard(&env, || {
            let m = self.q.metrics();
            let hist = |h: &floyd::workqueue::Histogram| {
                let buckets: Vec<Value> = h
                    .cumulative()
                    .into_iter()
                    .map(|(le, n)| {
                        json!([
                            if le.is_finite() {
                                json!(le)
                            } else {
                                json!("+Inf")
                            },
                            n
                        ])
                    })
                    .collect();
                json!({ "buckets": buckets, "count": h.count, "sum": h.sum })
            };
            Ok(json!({
                "depth": m.depth,
                "adds": m.adds,
                "retries": m.retries,
                "queueDuration": hist(&m.queue_duration),
                "workDuration": hist(&m.work_duration),
                "unfinishedWorkSeconds": m.unfinished_work_seconds,
                "longestRunningProcessorSeconds": m.longest_running_processor_seconds,
            }))
        })
    }
}

impl Drop for WorkQueue {
    fn drop(&mut self) {
        // Garbage collection of the JS object releases pending `get()` calls (their threads
        // hold the queue) instead of leaving them, and the process, waiting forever.
        self.q.shut_down();
    }
}
