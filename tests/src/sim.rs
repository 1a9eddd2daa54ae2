//! Deterministic simulation of the control plane (`reliability.md` §3(e)): a fake clock, a
//! seeded RNG, and a [`SimDriver`] that injects faults (failed starts and stops, slow
//! starts, calls for vanished instances are flagged) and answers probes as the SimProber
//! (readiness and liveness flaps, startup probes that never pass), checking INV-PROBE. One thread drives everything through
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
use floyd::{Probe, ProbeOutcome};
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
    /// Per readiness probe: the chance that readiness starts failing for 1–4 probes.
    pub readiness_flap: f64,
    /// Per liveness probe: the chance of a burst of 1–4 liveness failures.
    pub liveness_flap: f64,
    /// Instances whose `spec.version` is listed never pass their startup probe (permanent).
    pub startup_never: BTreeSet<String>,
}

/// What the SimProber knows of one run (start to stop) of an instance.
#[derive(Debug, Default)]
pub struct ProbeRun {
    pub startup_ok: bool,
    /// Failures in a row, by probe type.
    pub startup_failures: u32,
    pub liveness_failures: u32,
    /// Failures still to come in the current flap, by probe type.
    readiness_flap_left: u32,
    liveness_flap_left: u32,
    /// The first stop of this run was checked (retries of it are not restarts anew).
    stop_checked: bool,
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
    /// The SimProber's view of each instance's current run, by uid.
    pub probe_runs: Mutex<BTreeMap<String, ProbeRun>>,
}

/// `spec.<probe>.failureThreshold` with the default.
fn failure_threshold(instance: &Object, probe: &str) -> Option<u32> {
    let p = instance.spec.get(probe).filter(|p| p.is_object())?;
    Some(
        p["failureThreshold"]
            .as_u64()
            .filter(|n| *n > 0)
            .unwrap_or(3) as u32,
    )
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
        self.probe_runs
            .lock()
            .insert(uid.clone(), ProbeRun::default());
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
        // A stop of an instance whose object still exists is a restart: INV-PROBE allows it
        // only after failureThreshold liveness (or startup) failures in a row (K17: never
        // for readiness).
        let restart = self
            .store
            .get("Instance", &instance.key())
            .ok()
            .flatten()
            .is_some_and(|o| o.metadata.uid == instance.metadata.uid);
        if restart
            && let Some(run) = self
                .probe_runs
                .lock()
                .get_mut(&instance.metadata.uid)
                .filter(|r| !r.stop_checked)
        {
            run.stop_checked = true;
            let liveness = failure_threshold(instance, "livenessProbe")
                .is_some_and(|t| run.liveness_failures >= t);
            let startup = failure_threshold(instance, "startupProbe")
                .is_some_and(|t| run.startup_failures >= t);
            if !liveness && !startup {
                log.violations.push(format!(
                    "{} restarted after {} liveness and {} startup failures in a row",
                    instance.key(),
                    run.liveness_failures,
                    run.startup_failures
                ));
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

    /// The SimProber: readiness and liveness flap while faults are on; a version in
    /// `startup_never` never passes its startup probe. Checks that liveness and readiness
    /// are never probed before the run's startup probe passed.
    fn probe(&self, instance: &Object, probe: &Probe) -> Result<ProbeOutcome, DriverError> {
        let t = probe.spec["type"].as_str().unwrap_or("").to_string();
        let mut log = self.log.lock();
        log.calls
            .push((format!("probe-{t}"), instance.metadata.name.clone()));
        let mut runs = self.probe_runs.lock();
        let run = runs.entry(instance.metadata.uid.clone()).or_default();
        let gated = instance.spec["startupProbe"].is_object() && !run.startup_ok;
        if t != "startup" && gated {
            log.violations.push(format!(
                "{t} probe of {} before its startup probe passed",
                instance.key()
            ));
        }
        let faults_on = *self.faults_on.lock();
        let faults = self.faults.lock();
        let mut rng = self.rng.lock();
        let mut flap = |left: &mut u32, p: f64| {
            if *left == 0 && faults_on && rng.chance(p) {
                *left = 1 + rng.below(4) as u32;
            }
            if *left > 0 {
                *left -= 1;
                false
            } else {
                true
            }
        };
        let version = instance.spec["version"].as_str().unwrap_or("");
        let ok = match t.as_str() {
            "startup" => !faults.startup_never.contains(version),
            "readiness" => flap(&mut run.readiness_flap_left, faults.readiness_flap),
            _ => flap(&mut run.liveness_flap_left, faults.liveness_flap),
        };
        match (t.as_str(), ok) {
            ("startup", true) => {
                run.startup_ok = true;
                run.startup_failures = 0;
            }
            ("startup", false) => run.startup_failures += 1,
            ("liveness", true) => run.liveness_failures = 0,
            ("liveness", false) => run.liveness_failures += 1,
            _ => {}
        }
        Ok(if ok {
            ProbeOutcome::Success
        } else {
            ProbeOutcome::Failure(format!("simulated {t} failure"))
        })
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
    /// Steps the wall clock now and then (±1 h, ±1 day), drawn from an RNG of their own
    /// so that a run with jumps makes every other draw of the same run without them.
    pub wall_jumps: Option<Rng>,
    /// Wall-clock steps made so far.
    pub jumps: u32,
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
            probe_runs: Mutex::new(BTreeMap::new()),
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
            wall_jumps: None,
            jumps: 0,
        }
    }

    /// From now on, step the wall clock at random (see [`Sim::wall_jumps`]).
    pub fn jump_wall_clock(&mut self) {
        self.wall_jumps = Some(Rng::new(self.seed ^ 0x5EED_CAFE));
    }

    /// One scheduling decision: a controller step, a driver call, or time passing.
    pub fn tick(&mut self) {
        self.steps += 1;
        if let Some(r) = self.wall_jumps.as_mut()
            && r.chance(0.02)
        {
            let secs = [3_600, -3_600, 86_400, -86_400][r.below(4) as usize];
            self.clock.jump_wall(secs);
            self.jumps += 1;
        }
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

/// The seeds a simulation test runs: `FLOYD_SIM_SEED` alone (a replay), else
/// `FLOYD_SIM_SEEDS` of them (else `default`), counting up from `FLOYD_SIM_SEED_BASE`
/// (else 0), so that a long run can explore seeds no earlier run tried.
pub fn seeds(default: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("FLOYD_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("FLOYD_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let base: u64 = std::env::var("FLOYD_SIM_SEED_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (base..base.saturating_add(n)).collect()
}
