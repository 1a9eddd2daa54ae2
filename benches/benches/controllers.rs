//! Controller throughput on a fake clock with a no-op driver (issues 5 and 6).
//!
//! Targets:
//! - scaling 1 000 ReplicaSets from 0 to 10 instances each until all are ready: ≤ 3 store
//!   writes per instance (create, running+ready, and the amortised ReplicaSet status) and
//!   ≤ 2 s of wall time on one core;
//! - a rolling update of 1 000 Deployments × 10 instances: ≤ 5 store writes per replaced
//!   instance.
//!
//! The control plane runs in stepped mode (one thread, the simulator's executor), so the
//! figures are single-core.

#![allow(clippy::disallowed_methods)] // benches measure real time

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use floyd::FakeClock;
use floyd::log::Durability;
use floyd::runtime::{ControlPlane, ControlPlaneConfig, Driver, DriverError, NoopDriver, Started};
use floyd::store::{Object, Store, StoreConfig};
use floyd_benches::{Target, ratio_line, size};
use serde_json::json;

/// Fails one start in ten (seeded), counting every call.
struct Flaky {
    state: parking_lot::Mutex<(u64, u64)>,
}

impl Driver for Flaky {
    fn start(&self, _: &Object) -> Result<Started, DriverError> {
        let mut st = self.state.lock();
        st.0 =
            st.0.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        st.1 += 1;
        if (st.0 >> 33).is_multiple_of(10) {
            return Err(DriverError("flaky start".into()));
        }
        Ok(Started::default())
    }
    fn stop(&self, _: &Object) -> Result<(), DriverError> {
        Ok(())
    }
}

fn world() -> (Arc<FakeClock>, Store, ControlPlane) {
    world_with(Arc::new(NoopDriver))
}

fn world_with(driver: Arc<dyn Driver>) -> (Arc<FakeClock>, Store, ControlPlane) {
    let clock = FakeClock::shared();
    let store = Store::memory_with(StoreConfig {
        clock: clock.clone(),
        seed: Some(1),
        durability: Durability::None,
        ..StoreConfig::default()
    })
    .unwrap();
    let cp = ControlPlane::stepped(
        store.clone(),
        driver,
        ControlPlaneConfig {
            clock: clock.clone(),
            ..ControlPlaneConfig::default()
        },
    )
    .unwrap();
    (clock, store, cp)
}

/// Steps until nothing is left to do.
fn settle(clock: &FakeClock, cp: &ControlPlane) {
    let mut idle = 0;
    while idle < 3 {
        let mut did = cp.step().unwrap();
        while cp.run_driver_call() {
            did = true;
        }
        if did {
            idle = 0;
        } else {
            idle += 1;
            clock.advance(Duration::from_millis(50));
        }
    }
}

fn replicaset(i: usize) -> Object {
    let app = format!("app-{i}");
    Object::from_json(&json!({
        "kind": "ReplicaSet",
        "metadata": {"name": app},
        "spec": {"replicas": 10, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}}, "spec": {"version": "1"}}}
    }))
    .unwrap()
}

/// A Deployment of 10 instances; `strategy` as in the spec (`Value::Null`: the default,
/// RollingUpdate with 25 % surge and 25 % unavailable).
fn deployment(i: usize, strategy: &serde_json::Value) -> Object {
    let app = format!("dep-{i}");
    let mut spec = json!({"replicas": 10, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}}, "spec": {"version": "1"}}});
    if !strategy.is_null() {
        spec["strategy"] = strategy.clone();
    }
    Object::from_json(&json!({"kind": "Deployment", "metadata": {"name": app}, "spec": spec}))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let n = size(1000, 10);
    let mut g = c.benchmark_group("controllers");
    g.sample_size(10);
    g.bench_function(format!("scale_{n}_replicasets_to_10"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (clock, store, cp) = world();
                let t = Instant::now();
                for i in 0..n {
                    store.create(replicaset(i)).unwrap();
                }
                settle(&clock, &cp);
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();

    // One measured run for the ratios.
    let (clock, store, cp) = world();
    let t = Instant::now();
    for i in 0..n {
        store.create(replicaset(i)).unwrap();
    }
    settle(&clock, &cp);
    let wall = t.elapsed();
    let instances = store.list("Instance", None, None).unwrap().0;
    assert_eq!(instances.len(), n * 10);
    let writes = cp.stats().store_writes as f64 / (n * 10) as f64;
    println!(
        "{}",
        ratio_line(
            "replicas_writes_per_instance",
            writes,
            Target::AtMost(3.0),
            &format!("{n} ReplicaSets × 10"),
            "create + running/ready + status"
        )
    );
    println!(
        "{}",
        ratio_line(
            "replicas_wall_seconds_per_1000_sets",
            wall.as_secs_f64() * 1000.0 / n as f64,
            Target::AtMost(2.0),
            &format!("{wall:?} for {n} sets"),
            "2 s per 1 000 sets on one core"
        )
    );

    // The same scale-up with a driver that fails 10 % of starts: driver calls against the
    // minimum (one start per instance).
    let flaky = Arc::new(Flaky {
        state: parking_lot::Mutex::new((7, 0)),
    });
    let (clock, store, cp) = world_with(flaky.clone());
    for i in 0..n {
        store.create(replicaset(i)).unwrap();
    }
    while store
        .list("Instance", None, None)
        .unwrap()
        .0
        .iter()
        .filter(|i| i.status["phase"] == "Running")
        .count()
        < n * 10
    {
        settle(&clock, &cp);
        clock.advance(Duration::from_secs(10));
    }
    let calls = flaky.state.lock().1 as f64;
    println!(
        "{}",
        ratio_line(
            "replicas_flaky_driver_calls_vs_minimum",
            calls / (n * 10) as f64,
            Target::AtMost(1.2),
            &format!("{calls} starts for {} instances, 10 % failing", n * 10),
            "one start per instance"
        )
    );

    // The target is on the default strategy (what "a rolling update" is unless a spec says
    // otherwise); one-at-a-time (maxSurge 1, maxUnavailable 0) is reported beside it: every
    // step there moves each ReplicaSet by one, so two spec writes per replaced instance come
    // on top of the instance's create, ready and delete.
    for (name, strategy, target) in [
        (
            "rollout_writes_per_replaced_instance",
            serde_json::Value::Null,
            Target::AtMost(5.0),
        ),
        (
            "rollout_writes_per_replaced_instance_surge1_unavailable0",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
            Target::None,
        ),
    ] {
        rollout_writes(n, name, &strategy, target);
    }
}

/// Rolls `n` Deployments of 10 instances from version 1 to 2 and reports the store writes
/// per replaced instance.
fn rollout_writes(n: usize, name: &str, strategy: &serde_json::Value, target: Target) {
    let (clock, store, cp) = world();
    for i in 0..n {
        store.create(deployment(i, strategy)).unwrap();
    }
    settle(&clock, &cp);
    let before = cp.stats().store_writes;
    let t = Instant::now();
    for i in 0..n {
        let cur = store
            .get("Deployment", &format!("default/dep-{i}"))
            .unwrap()
            .unwrap();
        let mut next = (*cur).clone();
        next.spec["template"]["spec"]["version"] = json!("2");
        store.update(next).unwrap();
    }
    settle(&clock, &cp);
    let wall = t.elapsed();
    let replaced = (n * 10) as f64;
    let v2 = store
        .list("Instance", None, None)
        .unwrap()
        .0
        .iter()
        .filter(|i| i.spec["version"] == "2")
        .count();
    assert_eq!(v2, n * 10, "every instance replaced");
    let writes = (cp.stats().store_writes - before) as f64 / replaced;
    println!(
        "{}",
        ratio_line(
            name,
            writes,
            target,
            &format!(
                "{n} Deployments × 10 in {wall:?} ({})",
                strategy_name(strategy)
            ),
            "create + ready + delete + RS/Deployment status"
        )
    );
}

fn strategy_name(strategy: &serde_json::Value) -> String {
    match &strategy["rollingUpdate"] {
        serde_json::Value::Null => "default strategy: RollingUpdate 25 % / 25 %".into(),
        r => format!(
            "RollingUpdate maxSurge {} maxUnavailable {}",
            r["maxSurge"], r["maxUnavailable"]
        ),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
