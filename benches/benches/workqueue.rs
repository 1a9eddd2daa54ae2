//! Work-queue benchmarks, each against baselines measured in the same run (issue 3).
//!
//! - **W1**: one producer adds 2 M keys drawn from a 10 k keyspace (duplicates coalesce);
//!   1 or 2 workers loop `get → done` until the queue is shut down and empty. Throughput is
//!   reported as adds per second end to end. Baselines: the queue a typical Rust user writes
//!   (`Mutex<VecDeque>` + `HashSet` dirty/processing + `Condvar`, same semantics) and
//!   crossbeam-channel (no dedup: an upper bound, not a competitor).
//!   **Target: floyd ≥ 8× the typical queue with 2 workers (≈ 3× client-go), and 2 workers
//!   not slower than 1.**
//! - **R1**: `when()` of `default_controller()` over 10 k keys, single-threaded, against a
//!   `Mutex<HashMap>` of failure counts plus a mutex-guarded token bucket.
//!   **Target: ≥ 1× the baseline (≈ 5× client-go).**
//!
//! After each group the ratio floyd/baseline (throughput) is printed to stderr.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hint::black_box;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use floyd::clock::{Clock, SystemClock};
use floyd::workqueue::{RateLimiter, WorkQueue};

const ADDS: usize = 2_000_000;
const KEYSPACE: u64 = 10_000;

fn now() -> Instant {
    SystemClock.now()
}

/// The seeded key stream every W1 run replays.
fn keys() -> Arc<Vec<u64>> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    Arc::new(
        (0..ADDS)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s % KEYSPACE
            })
            .collect(),
    )
}

/// What a W1 run needs from a queue.
trait Queue: Send + Sync + 'static {
    fn add(&self, k: u64);
    fn get(&self) -> Option<u64>;
    fn done(&self, k: &u64);
    fn shut_down(&self);
}

impl Queue for WorkQueue<u64> {
    fn add(&self, k: u64) {
        WorkQueue::add(self, k)
    }
    fn get(&self) -> Option<u64> {
        WorkQueue::get(self)
    }
    fn done(&self, k: &u64) {
        WorkQueue::done(self, k)
    }
    fn shut_down(&self) {
        WorkQueue::shut_down(self)
    }
}

/// The queue a typical Rust user writes: one mutex, std collections, one condvar; the same
/// dedup / processing / re-add semantics as client-go.
#[derive(Default)]
struct NaiveQueue {
    state: Mutex<NaiveState>,
    cond: Condvar,
}

#[derive(Default)]
struct NaiveState {
    queue: VecDeque<u64>,
    dirty: HashSet<u64>,
    processing: HashSet<u64>,
    shutting_down: bool,
}

impl Queue for NaiveQueue {
    fn add(&self, k: u64) {
        let mut s = self.state.lock().unwrap();
        if s.shutting_down || s.dirty.contains(&k) {
            return;
        }
        s.dirty.insert(k);
        if s.processing.contains(&k) {
            return;
        }
        s.queue.push_back(k);
        self.cond.notify_one();
    }
    fn get(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap();
        while s.queue.is_empty() && !s.shutting_down {
            s = self.cond.wait(s).unwrap();
        }
        let k = s.queue.pop_front()?;
        s.processing.insert(k);
        s.dirty.remove(&k);
        Some(k)
    }
    fn done(&self, k: &u64) {
        let mut s = self.state.lock().unwrap();
        s.processing.remove(k);
        if s.dirty.contains(k) {
            s.queue.push_back(*k);
            self.cond.notify_one();
        }
    }
    fn shut_down(&self) {
        self.state.lock().unwrap().shutting_down = true;
        self.cond.notify_all();
    }
}

/// One W1 run: returns its wall time.
fn run_w1<Q: Queue>(q: Arc<Q>, keys: &Arc<Vec<u64>>, workers: usize) -> Duration {
    let start = now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                let mut n = 0u64;
                while let Some(k) = q.get() {
                    black_box(k);
                    q.done(&k);
                    n += 1;
                }
                n
            })
        })
        .collect();
    for &k in keys.iter() {
        q.add(k);
    }
    q.shut_down();
    for h in handles {
        h.join().unwrap();
    }
    now() - start
}

fn run_w1_crossbeam(keys: &Arc<Vec<u64>>, workers: usize) -> Duration {
    let start = now();
    let (tx, rx) = crossbeam::channel::unbounded::<u64>();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let rx = rx.clone();
            thread::spawn(move || {
                let mut n = 0u64;
                while let Ok(k) = rx.recv() {
                    black_box(k);
                    n += 1;
                }
                n
            })
        })
        .collect();
    for &k in keys.iter() {
        tx.send(k).unwrap();
    }
    drop(tx);
    for h in handles {
        h.join().unwrap();
    }
    now() - start
}

/// Mean seconds per iteration of each benchmark of a group, for the printed ratios.
#[derive(Default)]
struct Tally(HashMap<String, (Duration, u64)>);

impl Tally {
    fn record(&mut self, name: &str, d: Duration, iters: u64) {
        let e = self.0.entry(name.to_string()).or_default();
        e.0 += d;
        e.1 += iters;
    }
    fn mean(&self, name: &str) -> Option<f64> {
        let (d, n) = self.0.get(name)?;
        (*n > 0).then(|| d.as_secs_f64() / *n as f64)
    }
    /// floyd throughput / baseline throughput = baseline time / floyd time.
    fn ratio(&self, floyd: &str, baseline: &str) -> Option<f64> {
        Some(self.mean(baseline)? / self.mean(floyd)?)
    }
}

fn w1(c: &mut Criterion) {
    let keys = keys();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut g = c.benchmark_group("workqueue_w1");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(ADDS as u64));
    for workers in [1usize, 2] {
        let name = format!("floyd/{workers}w");
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_w1(Arc::new(WorkQueue::<u64>::new()), &keys, workers);
                }
                tally.lock().unwrap().record(&name, total, iters);
                total
            })
        });
        let name = format!("naive/{workers}w");
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_w1(Arc::new(NaiveQueue::default()), &keys, workers);
                }
                tally.lock().unwrap().record(&name, total, iters);
                total
            })
        });
        let name = format!("crossbeam/{workers}w");
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_w1_crossbeam(&keys, workers);
                }
                tally.lock().unwrap().record(&name, total, iters);
                total
            })
        });
    }
    g.finish();
    let t = tally.lock().unwrap();
    for workers in [1, 2] {
        let (f, n, x) = (
            format!("floyd/{workers}w"),
            format!("naive/{workers}w"),
            format!("crossbeam/{workers}w"),
        );
        if let (Some(vs_naive), Some(vs_cb), Some(mean)) =
            (t.ratio(&f, &n), t.ratio(&f, &x), t.mean(&f))
        {
            eprintln!(
                "W1 {workers} worker(s): floyd {:.2} M adds/s; floyd/naive = {vs_naive:.2}x \
                 (target >= 8x with 2 workers); floyd/crossbeam = {vs_cb:.2}x",
                ADDS as f64 / mean / 1e6
            );
        }
    }
    if let (Some(one), Some(two)) = (t.mean("floyd/1w"), t.mean("floyd/2w")) {
        eprintln!("W1 floyd 2 workers vs 1: {:.2}x (target >= 1x)", one / two);
    }
}

/// Baseline for R1: per-item failure counts in a `Mutex<HashMap>` and a token bucket behind
/// a mutex, computing the same max(exponential, bucket) delay.
struct NaiveLimiter {
    failures: Mutex<HashMap<u64, u32>>,
    bucket: Mutex<(f64, Option<Instant>)>,
}

impl NaiveLimiter {
    fn when(&self, k: u64) -> Duration {
        let exp = {
            let mut f = self.failures.lock().unwrap();
            let n = f.entry(k).or_insert(0);
            let e = *n;
            *n += 1;
            let backoff = 0.005 * 2f64.powi(e.min(1000) as i32);
            Duration::from_secs_f64(backoff.min(1000.0))
        };
        let bucket = {
            let mut b = self.bucket.lock().unwrap();
            let t = now();
            let elapsed = b.1.map_or(f64::INFINITY, |l| (t - l).as_secs_f64());
            let tokens = (b.0 + elapsed * 10.0).min(100.0) - 1.0;
            *b = (tokens, Some(t));
            if tokens < 0.0 {
                Duration::from_secs_f64(-tokens / 10.0)
            } else {
                Duration::ZERO
            }
        };
        exp.max(bucket)
    }
}

fn r1(c: &mut Criterion) {
    const CALLS: u64 = 10_000;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut g = c.benchmark_group("workqueue_r1_when");
    g.throughput(Throughput::Elements(CALLS))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("floyd/default_controller", |b| {
        let l = RateLimiter::<u64>::default_controller();
        b.iter_custom(|iters| {
            let start = now();
            for _ in 0..iters {
                for k in 0..CALLS {
                    black_box(l.when(&k));
                }
            }
            let d = now() - start;
            tally.lock().unwrap().record("floyd", d, iters);
            d
        })
    });
    g.bench_function("naive/mutex_hashmap_bucket", |b| {
        let l = NaiveLimiter {
            failures: Mutex::new(HashMap::new()),
            bucket: Mutex::new((100.0, None)),
        };
        b.iter_custom(|iters| {
            let start = now();
            for _ in 0..iters {
                for k in 0..CALLS {
                    black_box(l.when(k));
                }
            }
            let d = now() - start;
            tally.lock().unwrap().record("naive", d, iters);
            d
        })
    });
    g.finish();
    let t = tally.lock().unwrap();
    if let (Some(r), Some(mean)) = (t.ratio("floyd", "naive"), t.mean("floyd")) {
        eprintln!(
            "R1 when(): floyd {:.2} M calls/s; floyd/naive = {r:.2}x (target >= 1x)",
            CALLS as f64 / mean / 1e6
        );
    }
}

criterion_group!(benches, w1, r1);
criterion_main!(benches);
