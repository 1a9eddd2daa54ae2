//! Deterministic simulation of the control plane (`reliability.md` §3(e)): a fake clock, a
//! seeded RNG, and a [`SimDriver`] that injects faults (failed starts and stops, slow
//! starts, calls for vanished instances are flagged). One thread drives everything through
//! [`ControlPlane::step`] and the manual executor, so one seed reproduces one run exactly;
//! [`Sim::trace_hash`] fingerprints the run.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use floyd::FakeClock;
use floyd::log::Durability;
use floyd::runtime::{ControlPlane, ControlPlaneConfig, Driver, DriverError, Started};
use floyd::store::{Object, Store, StoreConfig};
use parking_lot::Mutex;

/// SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0xA076_1D64_78BD_642F)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 1.0 < p
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Faults the driver injects while `faults_on` is set.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub fail_start: f64,
    pub fail_stop: f64,
    /// Per scheduling decision: the chance that a running instance crashes.
    pub crash: f64,
    /// Instances whose `spec.version` is listed never start (a permanent fault).
    pub broken_versions: BTreeSet<String>,
    /// How long a stop takes, in fake time, from its first call (not a fault: applies with
    /// faults off too). Until then every call reports that the instance is still stopping,
    /// so it stays started and unconfirmed, as a slow graceful shutdown would.
    pub stop_latency: Duration,
}

/// Everything the driver saw, for invariants and the trace.
#[derive(Debug, Default)]
pub struct DriverLog {
    pub calls: Vec<(String, String)>,
    pub running: BTreeSet<String>,
    pub violations: Vec<String>,
    pub starts_by_uid: BTreeMap<String, u32>,
    /// Running instances' template hash and owning ReplicaSet name.
    pub running_hash: BTreeMap<String, String>,
    /// Set by Recreate tests: a start while another template hash runs is a violation.
    pub exclusive_hash: bool,
}

/// A driver that runs nothing, fails on purpose, and checks it is never asked to act on an
/// instance that no longer exists.
pub struct SimDriver {
    pub store: Store,
    pub clock: Arc<FakeClock>,
    /// When each instance's first stop call came (fake elapsed time), by uid.
    pub stop_requested: Mutex<BTreeMap<String, Duration>>,
    pub rng: Mutex<Rng>,
    pub faults: Mutex<Faults>,
    pub faults_on: Mutex<bool>,
    pub log: Mutex<DriverLog>,
}

impl Driver for SimDriver {
    fn start(&self, instance: &Object) -> Result<Started, DriverError> {
        let key = instance.key();
        let uid = instance.metadata.uid.clone();
        let mut log = self.log.lock();
        log.calls
            .push(("start".into(), instance.metadata.name.clone()));
        let exists = self
            .store
            .get("Instance", &key)
            .ok()
            .flatten()
            .is_some_and(|o| o.metadata.uid == uid);
        if !exists {
            log.violations
                .push(format!("start of vanished instance {key}"));
        }
        let hash = instance
            .metadata
            .labels
            .get("pod-template-hash")
            .cloned()
            .unwrap_or_default();
        if log.exclusive_hash && log.running_hash.values().any(|h| *h != hash) {
            log.violations.push(format!(
                "{key} ({hash}) started while another revision runs"
            ));
        }
        let version = instance.spec["version"].as_str().unwrap_or("").to_string();
        if self.faults.lock().broken_versions.contains(&version) {
            return Err(DriverError(format!("version {version} is broken")));
        }
        let fail = *self.faults_on.lock() && self.rng.lock().chance(self.faults.lock().fail_start);
        if fail {
            return Err(DriverError("injected start failure".into()));
        }
        log.running_hash.insert(uid.clone(), hash);
        *log.starts_by_uid.entry(uid.clone()).or_default() += 1;
        if !log.running.insert(uid) {
            log.violations
                .push(format!("{key} started twice without a stop"));
        }
        Ok(Started {
            address: Some(format!("10.0.0.{}:8080", log.running.len() % 250)),
        })
    }

    fn stop(&self, instance: &Object) -> Result<(), DriverError> {
        let mut log = self.log.lock();
        log.calls
            .push(("stop".into(), instance.metadata.name.clone()));
        let latency = self.faults.lock().stop_latency;
        if !latency.is_zero() {
            let now = self.clock.elapsed();
            let since = *self
                .stop_requested
                .lock()
                .entry(instance.metadata.uid.clone())
                .or_insert(now);
            if now - since < latency {
                return Err(DriverError("still stopping".into()));
            }
        }
        let fail = *self.faults_on.lock() && self.rng.lock().chance(self.faults.lock().fail_stop);
        if fail {
            return Err(DriverError("injected stop failure".into()));
        }
        log.running.remove(&instance.metadata.uid);
        log.running_hash.remove(&instance.metadata.uid);
        Ok(())
    }
}

/// One simulated world.
pub struct Sim {
    pub seed: u64,
    pub rng: Rng,
    pub clock: Arc<FakeClock>,
    pub store: Store,
    pub driver: Arc<SimDriver>,
    pub cp: ControlPlane,
    pub steps: u64,
    /// While set, the control plane's cache is not fed (informer lag).
    pub lagging: bool,
}

impl Sim {
    pub fn new(seed: u64, faults: Faults) -> Sim {
        let clock = FakeClock::shared();
        let store = Store::memory_with(StoreConfig {
            clock: clock.clone(),
            seed: Some(seed),
            durability: Durability::None,
            segment_size: 1 << 20,
            ..StoreConfig::default()
        })
        .unwrap();
        let driver = Arc::new(SimDriver {
            store: store.clone(),
            clock: clock.clone(),
            stop_requested: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(Rng::new(seed.wrapping_mul(31))),
            faults: Mutex::new(faults),
            faults_on: Mutex::new(true),
            log: Mutex::new(DriverLog::default()),
        });
        let cp = ControlPlane::stepped(
            store.clone(),
            driver.clone(),
            ControlPlaneConfig {
                clock: clock.clone(),
                // The simulation caps retries at 10 s so the convergence bound is useful.
                retry_max: Duration::from_secs(10),
                ..ControlPlaneConfig::default()
            },
        )
        .unwrap();
        Sim {
            seed,
            rng: Rng::new(seed),
            clock,
            store,
            driver,
            cp,
            steps: 0,
            lagging: false,
        }
    }

    /// One scheduling decision: a controller step, a driver call, or time passing.
    pub fn tick(&mut self) {
        self.steps += 1;
        match self.rng.below(4) {
            0 | 1 => {
                self.cp.step_with(!self.lagging).unwrap();
            }
            2 => {
                if !self.cp.run_driver_call() {
                    self.cp.step_with(!self.lagging).unwrap();
                }
            }
            _ => self
                .clock
                .advance(Duration::from_millis(self.rng.below(2_000))),
        }
        let crash =
            *self.driver.faults_on.lock() && self.rng.chance(self.driver.faults.lock().crash);
        if crash {
            // A running instance dies on its own; the host reports it to the control plane.
            let running: Vec<String> = self.driver.log.lock().running.iter().cloned().collect();
            if !running.is_empty() {
                let uid = running[self.rng.below(running.len() as u64) as usize].clone();
                let (all, _) = self.store.list("Instance", None, None).unwrap();
                if let Some(i) = all.iter().find(|i| i.metadata.uid == uid)
                    && self.cp.report_exit(&i.key(), "simulated crash").is_ok()
                {
                    let mut log = self.driver.log.lock();
                    log.running.remove(&uid);
                    log.running_hash.remove(&uid);
                    log.calls.push(("crash".into(), i.metadata.name.clone()));
                }
            }
        }
    }

    /// Runs until nothing is pending and `done` holds, or `max_fake` time passes.
    pub fn run_until(&mut self, max_fake: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let start = self.clock.elapsed();
        loop {
            self.tick();
            if done(self) {
                return true;
            }
            if self.clock.elapsed() - start > max_fake {
                return false;
            }
        }
    }

    /// Replaces the control plane with a new one over the same store and driver, as a host
    /// process restart would (its queues, expectations and agent table start empty).
    pub fn restart_control_plane(&mut self) {
        self.cp.stop().unwrap();
        self.cp = ControlPlane::stepped(
            self.store.clone(),
            self.driver.clone(),
            ControlPlaneConfig {
                clock: self.clock.clone(),
                retry_max: Duration::from_secs(10),
                ..ControlPlaneConfig::default()
            },
        )
        .unwrap();
    }

    pub fn heal(&mut self) {
        *self.driver.faults_on.lock() = false;
    }

    /// Fingerprint of the run: every driver call in order, then the final objects.
    pub fn trace_hash(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.driver.log.lock().calls.hash(&mut h);
        for kind in ["ReplicaSet", "Instance"] {
            let (objs, rv) = self.store.list(kind, None, None).unwrap();
            rv.hash(&mut h);
            for o in objs {
                o.key().hash(&mut h);
                o.metadata.resource_version.hash(&mut h);
            }
        }
        h.finish()
    }

    /// The command that replays this seed.
    pub fn replay_hint(&self, test: &str) -> String {
        format!(
            "seed {}: replay with FLOYD_SIM_SEED={} cargo test -p floyd-tests --test {test}",
            self.seed, self.seed
        )
    }
}
