//! Probes under deterministic simulation (`reliability.md` INV-PROBE, K17): the SimProber
//! flaps readiness and liveness and can keep a version's startup probe from ever passing,
//! while the SimDriver checks that an instance is restarted only after `failureThreshold`
//! liveness (or startup) failures in a row — never for readiness — and that liveness and
//! readiness are not probed before the startup probe passed. Seeds are replayable with
//! `FLOYD_SIM_SEED`.

use std::time::Duration;

use floyd::store::Object;
use floyd_tests::sim::{Faults, Sim, seeds};
use serde_json::{Value, json};

/// A probe the SimProber answers; `timeoutSeconds` is long so that a call waiting in the
/// simulator's driver queue does not time out (a timeout is a failure the driver never
/// sees, which the restart check could not count).
fn probe(period: u64, failure_threshold: u64) -> Value {
    json!({"exec": {"command": ["sim"]}, "periodSeconds": period,
           "failureThreshold": failure_threshold, "timeoutSeconds": 3600})
}

fn deployment(replicas: i64, version: &str, probes: Value, deadline: i64) -> Object {
    let mut spec = json!({"version": version});
    spec.as_object_mut()
        .unwrap()
        .extend(probes.as_object().unwrap().clone());
    Object::from_json(&json!({
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": deadline,
        }
    }))
    .unwrap()
}

fn set_version(sim: &Sim, version: &str) {
    let cur = sim.store.get("Deployment", "default/web").unwrap().unwrap();
    let mut next = (*cur).clone();
    next.spec["template"]["spec"]["version"] = json!(version);
    sim.store.update(next).unwrap();
}

fn instances(sim: &Sim) -> Vec<std::sync::Arc<Object>> {
    sim.store.list("Instance", None, None).unwrap().0
}

fn ready(i: &Object) -> bool {
    i.status["conditions"][0]["status"] == "True"
}

fn all_ready(sim: &Sim, n: usize, version: &str) -> bool {
    let is = instances(sim);
    is.len() == n && is.iter().all(|i| ready(i) && i.spec["version"] == version)
}

fn calls(sim: &Sim, what: &str) -> usize {
    sim.driver
        .log
        .lock()
        .calls
        .iter()
        .filter(|(c, _)| c == what)
        .count()
}

fn no_violations(sim: &Sim) {
    let v = &sim.driver.log.lock().violations;
    assert!(v.is_empty(), "{}: {v:?}", sim.replay_hint("sim_probes"));
}

/// K17 (kubernetes#9649): readiness that flaps every few periods never stops or restarts an
/// instance; it only moves the instance in and out of Ready. Once the flapping stops, all
/// are ready.
#[test]
fn k17_readiness_flaps_never_stop_or_restart_an_instance() {
    for seed in seeds(60) {
        let mut sim = Sim::new(
            seed,
            Faults {
                readiness_flap: 0.3,
                ..Faults::default()
            },
        );
        let r = 2 + (seed % 4) as usize;
        let probes = json!({"readinessProbe": probe(1 + seed % 5, 1 + seed % 3)});
        sim.store
            .create(deployment(r as i64, "v1", probes, 600))
            .unwrap();
        let mut saw_unready = false;
        sim.run_until(Duration::from_secs(600), |x| {
            let is = instances(x);
            saw_unready |= is.len() == r && is.iter().any(|i| !ready(i));
            false
        });
        assert_eq!(calls(&sim, "stop"), 0, "{}", sim.replay_hint("sim_probes"));
        assert_eq!(calls(&sim, "start"), r, "{}", sim.replay_hint("sim_probes"));
        assert!(
            instances(&sim)
                .iter()
                .all(|i| i.status["restartCount"].as_u64() == Some(0)),
            "{}",
            sim.replay_hint("sim_probes")
        );
        assert!(saw_unready, "seed {seed}: readiness never flapped");
        assert!(calls(&sim, "probe-readiness") > r * 10);
        no_violations(&sim);
        sim.heal();
        assert!(
            sim.run_until(Duration::from_secs(120), |x| all_ready(x, r, "v1")),
            "{}: not all ready after healing",
            sim.replay_hint("sim_probes")
        );
    }
}

/// INV-PROBE: liveness bursts restart instances only after `failureThreshold` failures in a
/// row (checked by the driver at every restart), startup gates the other probes, and a
/// rolling update still completes once the bursts stop.
#[test]
fn liveness_bursts_restart_only_past_the_threshold_and_the_rollout_still_completes() {
    let mut restarted = 0;
    for seed in seeds(60) {
        let mut sim = Sim::new(
            seed,
            Faults {
                liveness_flap: 0.15,
                readiness_flap: 0.1,
                fail_start: 0.1,
                ..Faults::default()
            },
        );
        let r = 2 + (seed % 3) as usize;
        let probes = json!({
            "startupProbe": probe(1, 5),
            "livenessProbe": probe(1 + seed % 3, 1 + seed % 3),
            "readinessProbe": probe(2, 1),
        });
        sim.store
            .create(deployment(r as i64, "v1", probes, 3600))
            .unwrap();
        sim.run_until(Duration::from_secs(300), |_| false);
        set_version(&sim, "v2");
        sim.run_until(Duration::from_secs(300), |_| false);
        no_violations(&sim);
        restarted += sim.cp.stats().probe_restarts;
        sim.heal();
        assert!(
            sim.run_until(Duration::from_secs(3000), |x| all_ready(x, r, "v2")
                && x.cp.pending() == (0, 0)),
            "{}: v2 never completed after healing",
            sim.replay_hint("sim_probes")
        );
        no_violations(&sim);
    }
    assert!(
        restarted > 0,
        "no seed restarted anything: the check never ran"
    );
}

/// A version whose startup probe never passes: each of its instances is restarted after
/// `failureThreshold` startup failures (never probed for liveness or readiness meanwhile),
/// the rollout reports ProgressDeadlineExceeded, and the old version keeps serving.
#[test]
fn a_startup_probe_that_never_passes_restarts_and_the_rollout_hits_its_deadline() {
    for seed in seeds(20) {
        let mut sim = Sim::new(seed, Faults::default());
        let probes = json!({
            "startupProbe": probe(1, 3),
            "livenessProbe": probe(1, 1),
            "readinessProbe": probe(1, 1),
        });
        sim.store.create(deployment(2, "v1", probes, 120)).unwrap();
        assert!(
            sim.run_until(Duration::from_secs(600), |x| all_ready(x, 2, "v1")),
            "{}: v1 never became ready",
            sim.replay_hint("sim_probes")
        );
        sim.driver.faults.lock().startup_never.insert("v2".into());
        set_version(&sim, "v2");
        let ok = sim.run_until(Duration::from_secs(1200), |x| {
            let d = x.store.get("Deployment", "default/web").unwrap().unwrap();
            d.status["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded"
                })
            })
        });
        assert!(
            ok,
            "{}: no ProgressDeadlineExceeded",
            sim.replay_hint("sim_probes")
        );
        no_violations(&sim);
        let is = instances(&sim);
        let old_ready = is
            .iter()
            .filter(|i| i.spec["version"] == "v1" && ready(i))
            .count();
        assert_eq!(old_ready, 2, "{}", sim.replay_hint("sim_probes"));
        let new = is
            .iter()
            .find(|i| i.spec["version"] == "v2")
            .expect("the surge instance");
        assert!(
            new.status["restartCount"].as_u64().unwrap_or(0) >= 1,
            "{}: {}",
            sim.replay_hint("sim_probes"),
            new.status
        );
        assert!(sim.cp.stats().probe_restarts >= 1);
    }
}

/// The same seed twice gives the same trace, probes included.
#[test]
fn probe_runs_are_deterministic() {
    let run = || {
        let mut sim = Sim::new(
            7,
            Faults {
                liveness_flap: 0.2,
                readiness_flap: 0.2,
                ..Faults::default()
            },
        );
        let probes = json!({"livenessProbe": probe(2, 2), "readinessProbe": probe(1, 1)});
        sim.store.create(deployment(3, "v1", probes, 600)).unwrap();
        sim.run_until(Duration::from_secs(300), |_| false);
        assert!(calls(&sim, "probe-liveness") > 0);
        sim.trace_hash()
    };
    assert_eq!(run(), run());
}
