//! `make demo`: a real rollout on the embedded data directory `./floyd-data`.
//!
//! A Deployment of 5 instances runs on a simulated driver (each start takes 50–300 ms and
//! one start in ten fails once; an instance answers its readiness probe only after a
//! 300 ms warm-up, so it turns ready on the probe after its first, at one second). The
//! demo rolls it to a new version with maxSurge 1 /
//! maxUnavailable 0, printing a progress line per step (updated / ready / available / old),
//! then rolls back and prints the revision history. Running it again continues from the
//! stored state with the next version.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floyd::runtime::{ControlPlane, ControlPlaneConfig, Driver, DriverError, Started};
use floyd::{Clock, Object, Probe, ProbeOutcome, Store, StoreConfig, SystemClock};
use parking_lot::Mutex;
use serde_json::json;

/// Starts take 50–300 ms; one instance in ten fails its first start.
struct SimulatedDriver {
    rng: Mutex<u64>,
    failed_once: Mutex<HashSet<String>>,
    next_port: Mutex<u16>,
    started_at: Mutex<HashMap<String, Instant>>,
}

impl SimulatedDriver {
    fn random(&self) -> u64 {
        let mut s = self.rng.lock();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }
}

impl Driver for SimulatedDriver {
    fn start(&self, instance: &Object) -> Result<Started, DriverError> {
        std::thread::sleep(Duration::from_millis(50 + self.random() % 250));
        let uid = instance.metadata.uid.clone();
        if self.random().is_multiple_of(10) && self.failed_once.lock().insert(uid) {
            return Err(DriverError(format!(
                "{} failed to start (simulated)",
                instance.metadata.name
            )));
        }
        self.started_at
            .lock()
            .insert(instance.metadata.uid.clone(), SystemClock.now());
        let mut port = self.next_port.lock();
        *port += 1;
        Ok(Started {
            address: Some(format!("127.0.0.1:{port}")),
        })
    }
    fn stop(&self, instance: &Object) -> Result<(), DriverError> {
        std::thread::sleep(Duration::from_millis(20));
        self.started_at.lock().remove(&instance.metadata.uid);
        Ok(())
    }
    /// The simulated `GET /healthz`: healthy once warmed up.
    fn probe(&self, instance: &Object, _probe: &Probe) -> Result<ProbeOutcome, DriverError> {
        let warm = self
            .started_at
            .lock()
            .get(&instance.metadata.uid)
            .is_some_and(|t| SystemClock.now().duration_since(*t) >= Duration::from_millis(300));
        Ok(if warm {
            ProbeOutcome::Success
        } else {
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 503 (warming up)".into())
        })
    }
}

/// The template's instance spec: the version, its port and a readiness probe on it.
fn instance_spec(version: &str) -> serde_json::Value {
    json!({
        "version": version,
        "ports": [{"name": "http", "port": 8080}],
        "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 1}
    })
}

const KEY: &str = "default/web";

fn version_of(o: &Object) -> i64 {
    o.spec["template"]["spec"]["version"]
        .as_str()
        .and_then(|v| v.trim_start_matches('v').parse().ok())
        .unwrap_or(0)
}

/// Prints a progress line whenever the numbers change, until the rollout completes.
fn follow(cp: &ControlPlane, store: &Store, what: &str) -> floyd::Result<()> {
    let mut last = String::new();
    for _ in 0..3000 {
        let d = store
            .get("Deployment", KEY)?
            .expect("the deployment exists");
        let s = &d.status;
        let n = |f: &str| s[f].as_i64().unwrap_or(0);
        let line = format!(
            "  {what}: updated {}/{} ready {} available {} old {}",
            n("updatedReplicas"),
            d.spec["replicas"],
            n("readyReplicas"),
            n("availableReplicas"),
            n("replicas") - n("updatedReplicas")
        );
        // A status the controller wrote before it saw the change describes the old spec.
        let observed = n("observedGeneration") >= d.metadata.generation;
        if observed && line != last {
            println!("{line}");
            last = line;
        }
        match cp.wait_for_rollout(KEY, Duration::from_millis(100)) {
            Ok(st) => {
                let n = |f: &str| st[f].as_i64().unwrap_or(0);
                println!(
                    "  {what}: complete — updated {} ready {} available {}",
                    n("updatedReplicas"),
                    n("readyReplicas"),
                    n("availableReplicas")
                );
                return Ok(());
            }
            Err(e) if e.to_string().contains("timed out") => continue,
            Err(e) => return Err(e),
        }
    }
    Err(floyd::Error::Expired(
        "the demo rollout took too long".into(),
    ))
}

fn main() -> floyd::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| floyd::store::DEFAULT_DATA_DIR.to_string());
    let (store, report) = Store::open(&dir, StoreConfig::default())?;
    println!(
        "floyd rollout demo on {dir}: recovered {} objects from a snapshot and {} events from the log",
        report.snapshot_objects, report.replayed
    );
    let driver = Arc::new(SimulatedDriver {
        rng: Mutex::new(0x2545_F491_4F6C_DD1D ^ report.replayed),
        failed_once: Mutex::new(HashSet::new()),
        next_port: Mutex::new(20_000),
        started_at: Mutex::new(HashMap::new()),
    });
    let cfg = ControlPlaneConfig {
        // The demo retries failed starts after 1 s instead of the kubelet's 10 s.
        restart_backoff: Duration::from_secs(1),
        ..ControlPlaneConfig::default()
    };
    let cp = ControlPlane::new(store.clone(), driver, cfg)?;
    cp.start()?;

    let current = match store.get("Deployment", KEY)? {
        Some(d) => {
            println!(
                "found Deployment web at version v{} (generation {})",
                version_of(&d),
                d.metadata.generation
            );
            d
        }
        None => {
            let d = store.create(Object::from_json(&json!({
                "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 5,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": instance_spec("v1")},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "progressDeadlineSeconds": 60,
                }
            }))?)?;
            println!("created Deployment web with 5 instances of v1");
            d
        }
    };
    if store.get("Service", KEY)?.is_none() {
        store.create(Object::from_json(&json!({
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}
        }))?)?;
    }
    follow(&cp, &store, "settle")?;

    // Roll to the next version never used before.
    let (rss, _) = store.list("ReplicaSet", None, None)?;
    let highest = rss
        .iter()
        .map(|rs| version_of(rs))
        .max()
        .unwrap_or(0)
        .max(version_of(&current));
    let next = highest + 1;
    let mut d = (*store.get("Deployment", KEY)?.expect("exists")).clone();
    d.spec["template"]["spec"] = instance_spec(&format!("v{next}"));
    d.metadata.resource_version.clear();
    store.update(d)?;
    println!("rolling to v{next} (maxSurge 1, maxUnavailable 0)");
    follow(&cp, &store, "rollout")?;

    let rev = cp.rollback(KEY, 0)?;
    println!("rolling back to revision {rev}");
    follow(&cp, &store, "rollback")?;

    println!("revision history:");
    let (mut rss, _) = store.list("ReplicaSet", None, None)?;
    rss.sort_by_key(|rs| {
        rs.metadata
            .annotations
            .get("deployment.kubernetes.io/revision")
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    });
    for rs in rss {
        println!(
            "  revision {:>3}  {}  version v{}  replicas {}",
            rs.metadata
                .annotations
                .get("deployment.kubernetes.io/revision")
                .map(String::as_str)
                .unwrap_or("?"),
            rs.metadata.name,
            version_of(&rs),
            rs.spec["replicas"]
        );
    }
    let addrs = cp.endpoints("default/web").unwrap_or_default();
    let stats = cp.stats();
    println!(
        "driver: {} starts ({} failed), {} stops, {} readiness probes ({} failed); {} store writes by the controllers; {} endpoints",
        stats.driver_starts,
        stats.driver_start_failures,
        stats.driver_stops,
        stats.probes,
        stats.probe_failures,
        stats.store_writes,
        addrs.len()
    );
    cp.stop()?;
    store.snapshot()?;
    store.close()
}
