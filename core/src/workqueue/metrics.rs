//! Work-queue metrics (client-go `metrics.go`): the [`Metrics`] snapshot that
//! [`WorkQueue::metrics`](super::WorkQueue::metrics) returns, the [`Histogram`] with
//! upstream's buckets, and the optional hook into the `metrics` crate facade, which records
//! under the upstream Prometheus names with a `name` label when the queue has a name.
//!
//! Counters and histograms live inside the queue's shards (updated under the shard lock
//! the operation already holds) and are summed on read; nothing here is shared between
//! threads on the hot path except through the `metrics` facade when a recorder is installed.

use std::time::Duration;

/// Upper bounds of the histogram buckets in seconds: exponential from 1e-8, factor 10, 10
/// buckets (upstream `prometheus.ExponentialBuckets(10e-9, 10, 10)`); +Inf is implicit.
pub const HISTOGRAM_BUCKETS: [f64; 10] =
    [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// Upstream Prometheus metric names (`k8s.io/component-base/metrics/prometheus/workqueue`).
pub mod names {
    pub const DEPTH: &str = "workqueue_depth";
    pub const ADDS: &str = "workqueue_adds_total";
    pub const QUEUE_DURATION: &str = "workqueue_queue_duration_seconds";
    pub const WORK_DURATION: &str = "workqueue_work_duration_seconds";
    pub const UNFINISHED_WORK: &str = "workqueue_unfinished_work_seconds";
    pub const LONGEST_RUNNING_PROCESSOR: &str = "workqueue_longest_running_processor_seconds";
    pub const RETRIES: &str = "workqueue_retries_total";
}

/// A Prometheus-style histogram: per-bucket counts (not cumulative), count and sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// `buckets[i]` counts observations `<= HISTOGRAM_BUCKETS[i]` and above the bucket
    /// before; `buckets[10]` counts the rest (+Inf).
    pub buckets: [u64; 11],
    pub count: u64,
    /// Sum of observations, seconds.
    pub sum: f64,
}

impl Histogram {
    pub(crate) fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = HISTOGRAM_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(HISTOGRAM_BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += secs;
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// Cumulative counts per upper bound, as Prometheus exposes them (`le` buckets).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        let mut out = Vec::with_capacity(11);
        for (i, n) in self.buckets.iter().enumerate() {
            acc += n;
            out.push((
                HISTOGRAM_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                acc,
            ));
        }
        out
    }
}

/// A point-in-time reading of a queue's metrics (client-go's seven queue metrics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Items that are dirty: queued, or re-added while processing (upstream counts the
    /// latter too, so `depth` can exceed [`WorkQueue::len`](super::WorkQueue::len)).
    pub depth: u64,
    /// Adds that made an item newly dirty.
    pub adds: u64,
    /// `add_after` calls (including those with zero delay), as upstream.
    pub retries: u64,
    /// Time from becoming dirty to being handed out by `get`.
    pub queue_duration: Histogram,
    /// Time from `get` to `done`.
    pub work_duration: Histogram,
    /// Sum of the ages of the items being processed, in seconds, computed at read time.
    pub unfinished_work_seconds: f64,
    /// Age of the oldest item being processed, in seconds, computed at read time.
    pub longest_running_processor_seconds: f64,
}

/// Handles into the `metrics` crate facade for one named queue.
pub(crate) struct Hook {
    depth: metrics::Gauge,
    adds: metrics::Counter,
    retries: metrics::Counter,
    queue_duration: metrics::Histogram,
    work_duration: metrics::Histogram,
    unfinished: metrics::Gauge,
    longest: metrics::Gauge,
}

impl Hook {
    pub(crate) fn new(name: &str) -> Hook {
        let label = [("name", name.to_owned())];
        Hook {
            depth: metrics::gauge!(names::DEPTH, &label),
            adds: metrics::counter!(names::ADDS, &label),
            retries: metrics::counter!(names::RETRIES, &label),
            queue_duration: metrics::histogram!(names::QUEUE_DURATION, &label),
            work_duration: metrics::histogram!(names::WORK_DURATION, &label),
            unfinished: metrics::gauge!(names::UNFINISHED_WORK, &label),
            longest: metrics::gauge!(names::LONGEST_RUNNING_PROCESSOR, &label),
        }
    }
    pub(crate) fn add(&self) {
        self.adds.increment(1);
        self.depth.increment(1.0);
    }
    pub(crate) fn get(&self, latency: Duration) {
        self.depth.decrement(1.0);
        self.queue_duration.record(latency.as_secs_f64());
    }
    pub(crate) fn done(&self, work: Duration) {
        self.work_duration.record(work.as_secs_f64());
    }
    pub(crate) fn retry(&self) {
        self.retries.increment(1);
    }
    pub(crate) fn in_flight(&self, unfinished: f64, longest: f64) {
        self.unfinished.set(unfinished);
        self.longest.set(longest);
    }
}
