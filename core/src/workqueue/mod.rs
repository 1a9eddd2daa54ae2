//! The rate-limited work queue: client-go's `workqueue` (`Typed`, the delaying queue, the
//! rate-limiting queue, its rate limiters and metrics) with the same rules and numbers
//! (`k8s-semantics.md` §1), and a few deliberate, documented differences
//! (`docs/workqueue.md`, "Differences from client-go").
//!
//! Controllers turn informer events into keys and add them here; workers take keys with
//! [`WorkQueue::get`], reconcile, and report back with [`WorkQueue::done`] (and
//! [`WorkQueue::forget`] or [`WorkQueue::add_rate_limited`]). The queue guarantees that a key
//! is never handed to two workers at once, that adds of a waiting key coalesce, and that a key
//! re-added while it is processed runs once more afterwards. It knows nothing about what the
//! keys mean; reconciling is the controllers' business.
//!
//! ```
//! use floyd::workqueue::WorkQueue;
//! let q: WorkQueue<String> = WorkQueue::new();
//! q.add("default/web".to_string());
//! q.add("default/web".to_string()); // coalesces
//! assert_eq!(q.len(), 1);
//! let key = q.get().unwrap();
//! // ... reconcile ...
//! q.forget(&key); // success: clear its backoff
//! q.done(&key);
//! q.shut_down();
//! assert_eq!(q.get(), None);
//! ```

mod metrics;
mod queue;
pub mod rate_limiter;
mod sync;

pub use metrics::{HISTOGRAM_BUCKETS, Histogram, Metrics, names as metric_names};
pub use queue::{
    MAX_TIMER_WAIT, SHARDS, UNFINISHED_WORK_UPDATE_PERIOD, WorkQueue, WorkQueueConfig,
};
pub use rate_limiter::{
    BucketRateLimiter, ItemExponentialFailureRateLimiter, ItemFastSlowRateLimiter,
    MaxOfRateLimiter, NEVER, RateLimiter, TypedRateLimiter, WithMaxWaitRateLimiter,
    exponential_backoff,
};
