//! Store benchmarks (issue 2), memory mode, one thread, against a baseline measured in the
//! same run: a `RwLock<BTreeMap<String, serde_json::Value>>` holding the same objects.
//!
//! - **update**: `Store::update` of 10 k objects in turn, each changing its spec (so every
//!   update validates, encodes and appends an event). The baseline builds the same JSON
//!   value and replaces it in the map under the write lock.
//!   **Target: ≥ 1 M updates/s on one core** (reported as the ratio to 1 M/s), and the ratio
//!   to the baseline (no target: the baseline keeps no log, versions or validation).
//! - **create**: 10 k creates into an empty store (no target; ratio to the baseline).
//! - **list**: `Store::list` of 10 k objects against cloning the map's values (no target).
//!
//! Under `cargo test --benches` the sizes shrink and the ratios are marked as not being
//! measurements.

#![allow(clippy::disallowed_methods)] // benches measure real time

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use floyd::store::{Object, Store, StoreConfig};
use floyd_benches::{Target, bench_mode, best_of, fmt_rate, rate, report, size};
use serde_json::{Value, json};

fn object_json(i: usize, v: u64) -> Value {
    json!({
        "kind": "Instance",
        "metadata": {"name": format!("web-{i:05}"), "namespace": "default", "labels": {"app": "web", "tier": "front"}},
        "spec": {"image": "web:1.2.3", "port": 8080, "version": v},
    })
}

fn object(i: usize, v: u64) -> Object {
    Object::from_json(&object_json(i, v)).expect("valid object")
}

fn store() -> Store {
    Store::memory_with(StoreConfig {
        seed: Some(1),
        ..StoreConfig::default()
    })
    .expect("memory store")
}

fn filled_store(n: usize) -> Store {
    let s = store();
    for i in 0..n {
        s.create(object(i, 0)).expect("create");
    }
    s
}

type Baseline = RwLock<BTreeMap<String, Value>>;

fn filled_baseline(n: usize) -> Baseline {
    let m = RwLock::new(BTreeMap::new());
    for i in 0..n {
        baseline_put(&m, i, 0);
    }
    m
}

fn baseline_put(m: &Baseline, i: usize, v: u64) {
    let val = object_json(i, v);
    let key = format!("default/web-{i:05}");
    m.write().expect("lock").insert(key, val);
}

/// `count` updates over `n` objects in turn, starting at version `*v`.
fn store_updates(s: &Store, n: usize, count: u64, v: &mut u64) -> Duration {
    let t = Instant::now();
    for k in 0..count {
        *v += 1;
        let i = (k as usize) % n;
        black_box(s.update(object(i, *v)).expect("update"));
    }
    let d = t.elapsed();
    // Keep the in-memory log small between samples (memory stores compact on snapshot).
    s.snapshot().expect("snapshot");
    d
}

fn baseline_updates(m: &Baseline, n: usize, count: u64, v: &mut u64) -> Duration {
    let t = Instant::now();
    for k in 0..count {
        *v += 1;
        baseline_put(m, (k as usize) % n, *v);
    }
    t.elapsed()
}

/// `n` creates into `s` (a fresh store, made outside the timing: opening a memory store maps
/// and prefaults its first 64 MiB segment).
fn store_creates(s: Store, n: usize) -> Duration {
    let t = Instant::now();
    for i in 0..n {
        black_box(s.create(object(i, 0)).expect("create"));
    }
    t.elapsed()
}

fn baseline_creates(n: usize) -> Duration {
    let m: Baseline = RwLock::new(BTreeMap::new());
    let t = Instant::now();
    for i in 0..n {
        baseline_put(&m, i, 0);
    }
    t.elapsed()
}

fn baseline_list(m: &Baseline) -> Vec<Value> {
    m.read().expect("lock").values().cloned().collect()
}

fn main() {
    let bench = bench_mode();
    let n = size(10_000, 200);
    let s = filled_store(n);
    let base = filled_baseline(n);
    let mut v = 0u64;
    let mut bv = 0u64;

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    {
        let mut g = c.benchmark_group(format!("store/update_{n}_objects"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("floyd_memory", |b| {
            b.iter_custom(|count| store_updates(&s, n, count, &mut v))
        });
        g.bench_function("rwlock_btreemap_json", |b| {
            b.iter_custom(|count| baseline_updates(&base, n, count, &mut bv))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group(format!("store/list_{n}_objects"));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("floyd_memory", |b| {
            b.iter(|| s.list("Instance", None, None).expect("list").0.len())
        });
        g.bench_function("rwlock_btreemap_json_clone", |b| {
            b.iter(|| baseline_list(&base).len())
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group(format!("store/create_{n}_objects"));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("floyd_memory", |b| {
            b.iter_batched(store, |s| store_creates(s, n), BatchSize::PerIteration)
        });
        g.bench_function("rwlock_btreemap_json", |b| {
            b.iter_batched(|| (), |_| baseline_creates(n), BatchSize::PerIteration)
        });
        g.finish();
    }
    c.final_summary();

    // Ratios, fixed counts.
    let runs = if bench { 3 } else { 1 };
    let count = size(1_000_000, 500);
    let r_upd = rate(
        count,
        best_of(runs, || store_updates(&s, n, count as u64, &mut v)),
    );
    let r_bupd = rate(
        count,
        best_of(runs, || baseline_updates(&base, n, count as u64, &mut bv)),
    );
    let u = "updates";
    report(
        "store_update_rate_vs_1M_per_s",
        r_upd / 1e6,
        Target::AtLeast(1.0),
        &format!("floyd memory store, 1 thread {}", fmt_rate(r_upd, u)),
        "1 M updates/s (issue 2 target)",
    );
    report(
        "store_update_vs_rwlock_btreemap",
        r_upd / r_bupd,
        Target::None,
        &format!("floyd memory store {}", fmt_rate(r_upd, u)),
        &format!("RwLock<BTreeMap<String, Value>> {}", fmt_rate(r_bupd, u)),
    );
    let mut fresh = (0..runs).map(|_| store()).collect::<Vec<_>>();
    let r_cr = rate(
        n,
        best_of(runs, || {
            store_creates(fresh.pop().expect("a store per run"), n)
        }),
    );
    let r_bcr = rate(n, best_of(runs, || baseline_creates(n)));
    report(
        "store_create_vs_rwlock_btreemap",
        r_cr / r_bcr,
        Target::None,
        &format!("floyd memory store {}", fmt_rate(r_cr, "creates")),
        &format!(
            "RwLock<BTreeMap<String, Value>> {}",
            fmt_rate(r_bcr, "creates")
        ),
    );
    let t_list = best_of(runs * 3, || s.list("Instance", None, None).expect("list").0);
    let t_blist = best_of(runs * 3, || baseline_list(&base));
    report(
        &format!("store_list_{n}_vs_btreemap_clone"),
        t_blist.as_secs_f64() / t_list.as_secs_f64().max(1e-12),
        Target::None,
        &format!("floyd list {:.2} ms", t_list.as_secs_f64() * 1e3),
        &format!(
            "clone of every JSON value {:.2} ms",
            t_blist.as_secs_f64() * 1e3
        ),
    );
}
