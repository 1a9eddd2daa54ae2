//! The node agent, floyd's kubelet: starts instances through the host's [`Driver`] when
//! they appear, records the outcome in their status (phase, Ready condition, start time,
//! address, restart count), retries failed starts with the kubelet's crash-loop backoff
//! (10 s doubling to 5 min), and stops instances once their objects are deleted — including
//! one whose start was still in flight. Driver calls run on the executor, never on the
//! agent's worker. It never calls the driver for an instance that no longer exists.
//!
//! Every driver call has a deadline (`driver_timeout` after it is queued, on the injected
//! clock). The agent re-checks an instance at its call's deadline: a start still out is a
//! failed start (backoff applies), a stop still out is retried; the executor replaces the
//! stuck thread. The agent waits for one call per instance at a time, and a result whose
//! call is not that one is late and ignored — except that a late successful start of an
//! instance that is gone by then is stopped again, so nothing is leaked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;

use super::{Call, Shared, TimedOut};
use crate::clock::rfc3339;
use crate::controller::probe::{
    MAX_PROBE_ATTEMPTS, Probe, ProbeOutcome, ProbeResult, ProbeType, ProbeWorker, Probes,
};
use crate::error::Result;
use crate::store::Object;

/// `status.waiting.reason` of an instance that exited (or was stopped by a failed probe) and
/// waits out the crash-loop backoff to be started again: its phase stays `Running`, as a
/// pod's does while a container is in `CrashLoopBackOff`, but nothing of it runs.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";

/// How long past its `timeoutSeconds` a probe call may take before it counts as failed (the
/// built-in handlers stop themselves at the timeout; a host's `probe` may not).
const PROBE_CALL_SLACK: Duration = Duration::from_secs(1);

/// One probe worker of a running instance (upstream's `worker`): its threshold logic, its
/// next tick and the call in flight.
struct ProbeState {
    probe: Arc<Probe>,
    worker: ProbeWorker,
    next_at: Instant,
    call: Option<Arc<Call>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Seen, nothing asked of the driver yet (or a failed start whose backoff passed).
    Idle,
    /// `start` is running on the executor.
    Starting,
    Running,
    /// A start failed; retry at `next_try`.
    Backoff,
    /// `stop` is running on the executor.
    Stopping,
}

struct InstanceState {
    uid: String,
    last: Arc<Object>,
    phase: Phase,
    /// Failures in all: the status's `restartCount`, which never goes down.
    failures: u32,
    /// Failures the crash-loop backoff counts: back to zero after a quiet spell.
    backoff_failures: u32,
    /// When the last failure was recorded by this agent.
    last_failure: Option<Instant>,
    next_try: Option<Instant>,
    /// The object went away while a start was in flight: stop as soon as it returns.
    stop_requested: bool,
    /// The driver call the agent waits for (while `Starting` or `Stopping`).
    call: Option<Arc<Call>>,
    /// The instance's probes, parsed before its first start.
    probe_specs: Arc<Probes>,
    /// Probe workers while `Running` (made afresh on every start, so a restarted
    /// instance gets its initial results and full thresholds again).
    probes: Vec<ProbeState>,
    /// When the instance was last seen to start (`initialDelaySeconds` counts from it).
    running_since: Instant,
    /// A probe's result changed since the agent last derived Ready from them.
    probe_changed: bool,
    /// The Ready status (ready, reason, message) the agent last wrote.
    ready_written: Option<Derived>,
    /// Stopping (or about to stop) to restart: a liveness or startup probe failed; why.
    restart: Option<String>,
    /// The newest decision to write this instance's status (see [`InstanceState::ticket`]).
    status_epoch: u64,
}

impl InstanceState {
    /// A ticket for a status write decided now, under the agent's lock. The write is made
    /// later, without the lock, and only while no newer decision exists: a write that lost
    /// the race to a newer one (a readiness change decided before the instance exited,
    /// landing after the exit was recorded) would otherwise overwrite it, and the agent,
    /// which believes what it decided last, would never correct the status.
    fn ticket(&mut self) -> u64 {
        self.status_epoch += 1;
        self.status_epoch
    }

    fn waits_for(&self, call: &Arc<Call>) -> bool {
        self.call.as_ref().is_some_and(|c| Arc::ptr_eq(c, call))
    }

    /// Fresh probe workers for an instance that has just started running (`ready`: an
    /// adopted instance that is already Ready keeps its readiness until a probe says
    /// otherwise).
    fn arm_probes(&mut self, now: Instant, ready: bool) {
        self.running_since = now;
        self.probe_changed = false;
        self.probes = ProbeType::ALL
            .iter()
            .filter_map(|t| self.probe_specs.get(*t))
            .map(|p| {
                let mut worker = ProbeWorker::new(p);
                if ready && p.probe_type == ProbeType::Readiness {
                    worker.assume(ProbeResult::Success);
                }
                ProbeState {
                    probe: Arc::new(p.clone()),
                    worker,
                    next_at: now,
                    call: None,
                }
            })
            .collect();
    }

    fn probe_result(&self, t: ProbeType) -> Option<&ProbeWorker> {
        self.probes
            .iter()
            .find(|p| p.probe.probe_type == t)
            .map(|p| &p.worker)
    }

    /// Upstream's `isContainerStarted`: no startup probe, or it succeeded.
    fn started(&self) -> bool {
        self.probe_result(ProbeType::Startup)
            .is_none_or(|w| w.result() == ProbeResult::Success)
    }

    /// Ready as the probes have it, with the reason and message of a not-ready one.
    fn derived_ready(&self) -> Derived {
        if let Some(w) = self
            .probe_result(ProbeType::Startup)
            .filter(|w| w.result() != ProbeResult::Success)
        {
            return (false, "StartupProbePending", w.message.clone());
        }
        match self.probe_result(ProbeType::Readiness) {
            Some(w) if w.result() != ProbeResult::Success => {
                let reason = if !w.written() {
                    "ReadinessProbePending"
                } else {
                    "ReadinessProbeFailed"
                };
                (false, reason, w.message.clone())
            }
            _ => (true, "", String::new()),
        }
    }

    /// A failed liveness probe, or a startup probe that failed: the instance must restart.
    fn probe_kill(&self) -> Option<String> {
        self.probes.iter().find_map(|p| {
            let failed = p.worker.result() == ProbeResult::Failure;
            match p.probe.probe_type {
                ProbeType::Liveness | ProbeType::Startup if failed => Some(format!(
                    "{} probe failed: {}",
                    p.probe.probe_type.name(),
                    p.worker.message
                )),
                _ => None,
            }
        })
    }
}

/// Ready, and the reason and message of a not-ready instance.
type Derived = (bool, &'static str, String);

/// The Ready condition as the agent writes it.
fn ready_condition(ready: bool, reason: &str, message: &str, now_wall: &str) -> serde_json::Value {
    if ready {
        json!({"type": "Ready", "status": "True", "lastTransitionTime": now_wall})
    } else {
        json!({"type": "Ready", "status": "False", "lastTransitionTime": now_wall,
               "reason": reason, "message": message})
    }
}

/// What one look at a running instance's probes asks for, done once the lock is released.
#[derive(Default)]
struct ProbeWork {
    jobs: Vec<(Arc<Probe>, Arc<Call>)>,
    /// Ready to write.
    ready: Option<Derived>,
    /// Stop it to restart it (the call, and why).
    kill: Option<(Arc<Call>, String)>,
    wake: Option<Instant>,
    /// For the status write `ready` or `kill` asks for.
    ticket: u64,
}

/// Per-instance bookkeeping of the agent.
#[derive(Default)]
pub(crate) struct Agent {
    states: Mutex<HashMap<String, InstanceState>>,
    /// Timed-out starts still inside the driver, with their instance: they may start it
    /// yet, so Recreate counts them as running until they return.
    hung_starts: Mutex<Vec<(Arc<Object>, Arc<Call>)>>,
}

/// `initial · 2^(failures−1)`, capped at `max`; zero before the first failure.
pub(crate) fn backoff_with(failures: u32, initial: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    initial
        .saturating_mul(1u32 << (failures - 1).min(16))
        .min(max)
}

impl Shared {
    /// An instance the agent is done with (gone, or stopped): the rate limiter forgets its
    /// failures, as a controller forgets a key it synced. Instance names are not reused by
    /// the controllers, so a count kept past this point would only pile up.
    fn forget_instance(&self, key: &str) {
        self.agent_queue.forget(&key.to_string());
    }

    pub(crate) fn process_agent(self: &Arc<Self>, key: &str) {
        // The call in flight first: past its deadline it has failed; otherwise look again at
        // the deadline (the queue keeps only the earliest delay of a key, so re-arm here).
        let call = self
            .agent
            .states
            .lock()
            .get(key)
            .and_then(|st| st.call.clone());
        if let Some(call) = call {
            let now = self.now();
            if now >= call.deadline {
                self.call_timed_out(key, &call, None);
                self.agent_queue.done(&key.to_string());
                return;
            }
            self.agent_queue
                .add_after(key.to_string(), call.deadline - now);
        }
        let cur = self.cache.get("Instance", key);
        let mut states = self.agent.states.lock();
        // A different object under the same name: the old one is gone.
        let replaced =
            matches!((&cur, states.get(key)), (Some(c), Some(s)) if c.metadata.uid != s.uid);
        if cur.is_none() || replaced {
            if let Some(st) = states.get_mut(key) {
                match st.phase {
                    Phase::Starting => st.stop_requested = true,
                    Phase::Stopping => {}
                    Phase::Idle => {
                        states.remove(key);
                    }
                    Phase::Running | Phase::Backoff => {
                        st.phase = Phase::Stopping;
                        let call = self.new_call();
                        st.call = Some(call.clone());
                        let last = st.last.clone();
                        drop(states);
                        self.submit_stop(key.to_string(), last, call);
                        if replaced {
                            self.agent_queue.add(key.to_string());
                        }
                        self.agent_queue.done(&key.to_string());
                        return;
                    }
                }
            }
            let gone = !states.contains_key(key);
            drop(states);
            if gone {
                self.forget_instance(key);
            }
            self.agent_queue.done(&key.to_string());
            return;
        }
        let obj = cur.expect("checked above");
        let st = states.entry(key.to_string()).or_insert_with(|| {
            // An instance a previous control plane already started (status Running) is
            // adopted as running, not started twice; unless it was waiting out the
            // crash-loop backoff to be started again (`waiting`): that restart was this
            // agent's to make, and it is made now.
            let running = obj.status["phase"] == "Running" && obj.status.get("waiting").is_none();
            let restarts = obj.status["restartCount"].as_u64().unwrap_or(0) as u32;
            let now = self.now();
            let mut st = InstanceState {
                uid: obj.metadata.uid.clone(),
                last: obj.clone(),
                phase: if running { Phase::Running } else { Phase::Idle },
                failures: restarts,
                // A previous control plane's failures keep counting toward the backoff
                // until this one has seen a quiet spell of its own (upstream's kubelet
                // forgets them on restart; a host that restarts in a crash loop should not).
                backoff_failures: restarts,
                last_failure: Some(self.now()),
                next_try: None,
                stop_requested: false,
                call: None,
                probe_specs: Arc::new(
                    Probes::from_instance_spec(&obj.spec, "spec").unwrap_or_default(),
                ),
                probes: Vec::new(),
                running_since: now,
                probe_changed: false,
                ready_written: None,
                restart: None,
                status_epoch: 0,
            };
            if running {
                let ready = obj.status["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .is_some_and(|c| c["status"] == "True");
                st.ready_written = Some((ready, "", String::new()));
                st.arm_probes(now, ready);
            }
            st
        });
        st.last = obj.clone();
        let now = self.now();
        let due = st.next_try.is_none_or(|t| now >= t);
        let start = match st.phase {
            Phase::Idle => true,
            Phase::Backoff if due => true,
            _ => false,
        };
        if let (Phase::Backoff, false, Some(t)) = (st.phase, due, st.next_try) {
            // Look again when the backoff ends (an earlier delay of this key, such as a
            // call's deadline, may have taken the place of the backoff's own).
            self.agent_queue.add_after(key.to_string(), t - now);
        }
        if start {
            match Probes::from_instance_spec(&obj.spec, "spec") {
                Ok(p) => {
                    st.probe_specs = Arc::new(p);
                    st.phase = Phase::Starting;
                    st.stop_requested = false;
                    let call = self.new_call();
                    st.call = Some(call.clone());
                    drop(states);
                    self.submit_start(key.to_string(), obj, call);
                }
                Err(e) => {
                    // Nothing to start: a spec the agent cannot probe is a failed start.
                    let status = self.start_failed(st, key, "InvalidProbe", &e.to_string());
                    let uid = st.uid.clone();
                    let ticket = st.ticket();
                    drop(states);
                    if let Err(e) = self.write_instance_status(key, &uid, ticket, status) {
                        tracing::warn!(instance = %key, error = %e, "could not record instance status");
                    }
                }
            }
        } else if st.phase == Phase::Running && (!st.probes.is_empty() || st.restart.is_some()) {
            let work = self.look_at_probes(st, now);
            let uid = st.uid.clone();
            let last = st.last.clone();
            drop(states);
            self.do_probe_work(key, &uid, last, work);
        } else {
            drop(states);
        }
        self.agent_queue.done(&key.to_string());
    }

    /// One look at a running instance's probes (upstream's workers' ticks, together): a
    /// restart a failed liveness or startup probe asked for; Ready re-derived after a
    /// result changed; calls past their deadline failed; due probes started.
    fn look_at_probes(&self, st: &mut InstanceState, now: Instant) -> ProbeWork {
        let mut work = ProbeWork::default();
        if st.restart.is_none() {
            st.restart = st.probe_kill();
        }
        if let Some(why) = st.restart.clone() {
            st.phase = Phase::Stopping;
            for p in &mut st.probes {
                p.call = None;
            }
            let call = self.new_call();
            st.call = Some(call.clone());
            work.kill = Some((call, why));
            work.ticket = st.ticket();
            return work;
        }
        for p in &mut st.probes {
            // A call past its deadline is a failed probe (upstream: a timeout is a failure).
            if let Some(call) = p.call.as_ref().filter(|c| now >= c.deadline) {
                self.executor.time_out(call);
                p.call = None;
                self.count(|c| {
                    c.probes += 1;
                    c.probe_failures += 1;
                });
                let msg = format!(
                    "{} probe timed out after {}s",
                    p.probe.probe_type.name(),
                    p.probe.timeout_seconds
                );
                if p.worker.observe(Ok(ProbeOutcome::Failure(msg))).is_some() {
                    st.probe_changed = true;
                }
            }
        }
        if std::mem::take(&mut st.probe_changed) {
            if let Some(why) = st.probe_kill() {
                st.restart = Some(why);
                return self.look_at_probes(st, now);
            }
            let derived = st.derived_ready();
            if st.ready_written.as_ref() != Some(&derived) {
                work.ready = Some(derived);
                work.ticket = st.ticket();
            }
        }
        let started = st.started();
        let since = now.saturating_duration_since(st.running_since);
        for p in &mut st.probes {
            if now >= p.next_at {
                let period = Duration::from_secs(u64::from(p.probe.period_seconds));
                p.next_at += period;
                if p.next_at <= now {
                    p.next_at = now + period;
                }
                // Upstream's doProbe: startup gates liveness and readiness; a worker on
                // hold, or inside the initial delay (whole seconds), waits its next tick.
                let active = match p.probe.probe_type {
                    ProbeType::Startup => !started,
                    ProbeType::Liveness | ProbeType::Readiness => started,
                };
                let delayed = since.as_secs() < u64::from(p.probe.initial_delay_seconds);
                if active && !delayed && !p.worker.on_hold() && p.call.is_none() {
                    let timeout = Duration::from_secs(u64::from(p.probe.timeout_seconds));
                    let call = Call::new(now + timeout + PROBE_CALL_SLACK);
                    p.call = Some(call.clone());
                    work.jobs.push((p.probe.clone(), call));
                }
            }
            let mut wake = p.next_at;
            if let Some(c) = &p.call {
                wake = wake.min(c.deadline);
            }
            work.wake = Some(work.wake.map_or(wake, |w| w.min(wake)));
        }
        work
    }

    fn do_probe_work(self: &Arc<Self>, key: &str, uid: &str, last: Arc<Object>, work: ProbeWork) {
        let now = self.now();
        if let Some((call, why)) = work.kill {
            self.count(|c| c.probe_restarts += 1);
            tracing::info!(instance = %key, reason = %why, "restarting an instance whose probe failed");
            let now_wall = rfc3339(self.wall());
            let cond = ready_condition(false, probe_reason(&why), &why, &now_wall);
            let _ = self.patch_instance_status(key, uid, work.ticket, |status| {
                set_ready(status, cond.clone());
                status["message"] = json!(format!("{why}; restarting"));
            });
            self.submit_stop(key.to_string(), last, call);
            return;
        }
        if let Some(derived) = work.ready {
            let now_wall = rfc3339(self.wall());
            let (ready, reason, message) = &derived;
            let cond = ready_condition(*ready, reason, message, &now_wall);
            let written = self.patch_instance_status(key, uid, work.ticket, |status| {
                set_ready(status, cond.clone())
            });
            match written {
                Ok(true) => self.with_state(key, uid, |st| st.ready_written = Some(derived)),
                // A newer decision wrote the status (and records its own readiness).
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(instance = %key, error = %e, "could not record instance readiness");
                    self.with_state(key, uid, |st| st.probe_changed = true);
                    self.agent_queue.add_rate_limited(key.to_string());
                }
            }
        }
        for (probe, call) in work.jobs {
            self.submit_probe(key, uid, probe, call);
        }
        if let Some(w) = work.wake {
            self.agent_queue
                .add_after(key.to_string(), w.saturating_duration_since(now));
        }
    }

    /// Runs `f` on the agent's state of instance `key` if it is still the one with `uid`.
    fn with_state(&self, key: &str, uid: &str, f: impl FnOnce(&mut InstanceState)) {
        if let Some(st) = self
            .agent
            .states
            .lock()
            .get_mut(key)
            .filter(|st| st.uid == uid)
        {
            f(st);
        }
    }

    fn submit_probe(self: &Arc<Self>, key: &str, uid: &str, probe: Arc<Probe>, call: Arc<Call>) {
        let s = self.clone();
        let (job_key, uid) = (key.to_string(), uid.to_string());
        let job_call = call.clone();
        let t = probe.probe_type;
        let job = Box::new(move || {
            // The newest object: its status carries the address the probe goes to.
            let key = job_key;
            let Some(inst) = s
                .store
                .get("Instance", &key)
                .ok()
                .flatten()
                .filter(|c| c.metadata.uid == uid)
            else {
                return;
            };
            let mut r = Err(String::new());
            for _ in 0..MAX_PROBE_ATTEMPTS {
                match s.driver.probe(&inst, &probe) {
                    Ok(o) => {
                        r = Ok(o);
                        break;
                    }
                    Err(e) => r = Err(e.0),
                }
            }
            s.probe_finished(&key, &uid, t, &job_call, r);
        });
        if let Err(e) = self.executor.submit(job, call.clone()) {
            tracing::warn!(instance = %key, error = %e, "could not queue a probe");
            if let Some(p) = self
                .agent
                .states
                .lock()
                .get_mut(key)
                .and_then(|st| st.probes.iter_mut().find(|p| p.probe.probe_type == t))
                .filter(|p| p.call.as_ref().is_some_and(|c| Arc::ptr_eq(c, &call)))
            {
                p.call = None;
            }
        }
    }

    /// A probe returned: its worker takes the outcome; a changed result has the agent look
    /// at the instance again. A probe of a worker that is gone (stopped, restarted) or that
    /// timed out already is ignored.
    fn probe_finished(
        &self,
        key: &str,
        uid: &str,
        t: ProbeType,
        call: &Arc<Call>,
        r: std::result::Result<ProbeOutcome, String>,
    ) {
        let mut states = self.agent.states.lock();
        let Some(st) = states
            .get_mut(key)
            .filter(|st| st.uid == uid && st.phase == Phase::Running)
        else {
            return;
        };
        let Some(p) = st.probes.iter_mut().find(|p| {
            p.probe.probe_type == t && p.call.as_ref().is_some_and(|c| Arc::ptr_eq(c, call))
        }) else {
            return;
        };
        p.call = None;
        let failed = matches!(r, Ok(ProbeOutcome::Failure(_)));
        if let Err(e) = &r {
            tracing::debug!(instance = %key, probe = t.name(), error = %e, "probe error (discarded)");
        }
        // A written result the agent must act on: a change, or a failure (whose message
        // the status may not show yet).
        let before = p.worker.result();
        let changed = p
            .worker
            .observe(r)
            .is_some_and(|now| now != before || now == ProbeResult::Failure);
        if changed {
            st.probe_changed = true;
        }
        drop(states);
        self.count(|c| {
            c.probes += 1;
            if failed {
                c.probe_failures += 1;
            }
        });
        if changed {
            self.agent_queue.add(key.to_string());
        }
    }

    /// The pool refused `call`: the instance goes back to `phase` (if it still waits for
    /// this call) and is looked at again after the rate limiter's delay.
    fn unsubmitted(&self, inst_key: String, call: &Arc<Call>, phase: Phase) {
        if let Some(st) = self
            .agent
            .states
            .lock()
            .get_mut(inst_key.as_str())
            .filter(|st| st.waits_for(call))
        {
            st.phase = phase;
            st.call = None;
        }
        self.agent_queue.add_rate_limited(inst_key);
    }

    /// A driver call due `driver_timeout` from now.
    fn new_call(&self) -> Arc<Call> {
        Call::new(self.now() + self.cfg.driver_timeout)
    }

    fn submit_start(self: &Arc<Self>, key: String, obj: Arc<Object>, call: Arc<Call>) {
        let s = self.clone();
        let inst_key = obj.key();
        let job_call = call.clone();
        let job = Box::new(move || {
            let call = job_call;
            // The object may have gone while the call waited for a pool thread: never ask
            // the driver to start an instance that no longer exists.
            let exists = s
                .store
                .get("Instance", &key)
                .ok()
                .flatten()
                .is_some_and(|c| c.metadata.uid == obj.metadata.uid);
            if !exists {
                let mut states = s.agent.states.lock();
                if states
                    .get(&key)
                    .is_some_and(|st| st.uid == obj.metadata.uid && st.waits_for(&call))
                {
                    states.remove(&key);
                    drop(states);
                    s.forget_instance(&key);
                }
                return;
            }
            // Waited past its deadline for a thread: failed without asking the driver.
            if s.now() >= call.deadline {
                s.call_timed_out(&key, &call, Some(TimedOut::NotBegun));
                return;
            }
            let r = s
                .driver
                .start(&obj)
                .and_then(|started| match &started.address {
                    Some(a) if a.is_empty() || a.len() > super::MAX_ADDRESS_LEN => {
                        Err(super::DriverError(format!(
                            "the driver reported an address of {} bytes (must be 1..={})",
                            a.len(),
                            super::MAX_ADDRESS_LEN
                        )))
                    }
                    _ => Ok(started),
                });
            s.start_finished(&key, &obj, &call, r);
        });
        self.agent_queue
            .add_after(inst_key.clone(), self.cfg.driver_timeout);
        if let Err(e) = self.executor.submit(job, call.clone()) {
            tracing::warn!(instance = %inst_key, error = %e, "could not queue a driver start");
            self.unsubmitted(inst_key, &call, Phase::Idle);
        }
    }

    fn start_finished(
        self: &Arc<Self>,
        key: &str,
        obj: &Arc<Object>,
        call: &Arc<Call>,
        r: std::result::Result<super::Started, super::DriverError>,
    ) {
        let ok = r.is_ok();
        self.count(|c| {
            c.driver_starts += 1;
            if !ok {
                c.driver_start_failures += 1;
            }
        });
        // Returned past its deadline, before the agent looked: it timed out all the same.
        if self.now() >= call.deadline {
            self.call_timed_out(key, call, Some(TimedOut::Finished));
        }
        let mut states = self.agent.states.lock();
        let Some(st) = states
            .get_mut(key)
            .filter(|st| st.uid == obj.metadata.uid && st.waits_for(call))
        else {
            drop(states);
            self.late_result(key, obj, call, "start", ok);
            return;
        };
        st.call = None;
        // Deleted while starting: stop it now so nothing is leaked.
        let gone = self
            .cache
            .get("Instance", key)
            .is_none_or(|c| c.metadata.uid != obj.metadata.uid);
        if st.stop_requested || gone {
            st.phase = Phase::Stopping;
            let call = self.new_call();
            st.call = Some(call.clone());
            drop(states);
            self.submit_stop(key.to_string(), obj.clone(), call);
            return;
        }
        let now_wall = rfc3339(self.wall());
        let status = match &r {
            Ok(started) => {
                st.phase = Phase::Running;
                st.next_try = None;
                // Probes are armed once this status is written (below): a readiness the
                // first probe records must come after it, not be overwritten by it.
                st.arm_probes(self.now(), false);
                let (ready, reason, message) = st.derived_ready();
                st.probes.clear();
                st.ready_written = Some((ready, reason, message.clone()));
                json!({
                    "phase": "Running",
                    "conditions": [ready_condition(ready, reason, &message, &now_wall)],
                    "startTime": now_wall,
                    "address": started.address,
                    "restartCount": st.failures,
                })
            }
            Err(e) => self.start_failed(st, key, "StartFailed", &e.0),
        };
        let running = st.phase == Phase::Running;
        let ticket = st.ticket();
        drop(states);
        if let Err(e) = self.write_instance_status(key, &obj.metadata.uid, ticket, status) {
            tracing::warn!(instance = %key, error = %e, "could not record instance status");
        }
        if running {
            // Still the run this status recorded (no exit or stop decided since): arm its
            // probes; the first run at once.
            let mut states = self.agent.states.lock();
            if let Some(st) = states.get_mut(key).filter(|st| {
                st.uid == obj.metadata.uid
                    && st.phase == Phase::Running
                    && st.status_epoch == ticket
            }) {
                st.arm_probes(self.now(), false);
                if !st.probes.is_empty() {
                    drop(states);
                    self.agent_queue.add(key.to_string());
                }
            }
        }
    }

    fn submit_stop(self: &Arc<Self>, key: String, obj: Arc<Object>, call: Arc<Call>) {
        let s = self.clone();
        let inst_key = key.clone();
        let job_call = call.clone();
        let job = Box::new(move || {
            let call = job_call;
            if s.now() >= call.deadline {
                s.call_timed_out(&key, &call, Some(TimedOut::NotBegun));
                return;
            }
            let r = s.driver.stop(&obj);
            s.count(|c| c.driver_stops += 1);
            if s.now() >= call.deadline {
                s.call_timed_out(&key, &call, Some(TimedOut::Finished));
            }
            let mut states = s.agent.states.lock();
            let Some(st) = states
                .get_mut(&key)
                .filter(|st| st.uid == obj.metadata.uid && st.waits_for(&call))
            else {
                drop(states);
                s.late_result(&key, &obj, &call, "stop", r.is_ok());
                return;
            };
            st.call = None;
            match r {
                Ok(()) if st.restart.is_some() && s.instance_exists(&key, &obj.metadata.uid) => {
                    // Stopped for a failed liveness or startup probe: start it again after
                    // the crash-loop backoff, as a container the kubelet killed.
                    let why = st.restart.take().unwrap_or_default();
                    let backoff = s.enter_backoff(st);
                    let (uid, failures) = (st.uid.clone(), st.failures);
                    let ticket = st.ticket();
                    drop(states);
                    s.agent_queue.add_after(key.clone(), backoff);
                    let now_wall = rfc3339(s.wall());
                    let status = json!({
                        "phase": "Running",
                        "conditions": [ready_condition(false, probe_reason(&why), &why, &now_wall)],
                        "restartCount": failures,
                        "message": format!("{why}; restarting in {}s", backoff.as_secs()),
                        "waiting": {"reason": CRASH_LOOP_BACK_OFF},
                    });
                    if let Err(e) = s.write_instance_status(&key, &uid, ticket, status) {
                        tracing::warn!(instance = %key, error = %e, "could not record instance status");
                    }
                }
                Ok(()) => {
                    states.remove(&key);
                    drop(states);
                    s.forget_instance(&key);
                    s.stopped(&obj);
                }
                Err(e) => {
                    tracing::warn!(instance = %key, error = %e, "stop failed; retrying");
                    st.phase = Phase::Running;
                    drop(states);
                    s.agent_queue.add_rate_limited(key.clone());
                }
            }
        });
        self.agent_queue
            .add_after(inst_key.clone(), self.cfg.driver_timeout);
        if self.executor.submit(job, call.clone()).is_err() {
            // Back to "needs a stop": the next look submits it again.
            self.unsubmitted(inst_key, &call, Phase::Running);
        }
    }

    /// One more failure of `st`: it waits out the crash-loop backoff, which is returned
    /// (the caller queues the retry after it).
    ///
    /// As kubelet's (`flowcontrol.Backoff`): after no failure for more than twice the
    /// maximum backoff (10 min by default), the backoff starts again from the initial
    /// delay. The restart count keeps growing.
    fn enter_backoff(&self, st: &mut InstanceState) -> Duration {
        let now = self.now();
        let quiet = self.cfg.restart_backoff_max.saturating_mul(2);
        if st
            .last_failure
            .is_some_and(|t| now.saturating_duration_since(t) > quiet)
        {
            st.backoff_failures = 0;
        }
        st.failures += 1;
        st.backoff_failures += 1;
        st.last_failure = Some(now);
        let backoff = backoff_with(
            st.backoff_failures,
            self.cfg.restart_backoff,
            self.cfg.restart_backoff_max,
        );
        st.phase = Phase::Backoff;
        st.next_try = Some(now + backoff);
        st.probes.clear();
        backoff
    }

    /// A failed start: the restart count grows, the next try waits out the crash-loop
    /// backoff. Returns the status to record.
    fn start_failed(
        &self,
        st: &mut InstanceState,
        key: &str,
        reason: &str,
        message: &str,
    ) -> serde_json::Value {
        let backoff = self.enter_backoff(st);
        self.agent_queue.add_after(key.to_string(), backoff);
        let now_wall = rfc3339(self.wall());
        json!({
            "phase": "Pending",
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now_wall,
                            "reason": reason, "message": message}],
            "restartCount": st.failures,
            "message": format!("start failed: {message}"),
        })
    }

    /// The agent gives up on `call`, the call it waits for on `key` (nothing if it waits
    /// for another): a start counts as failed, a stop is retried with backoff. `outcome` is
    /// what the call's own thread saw (it has not begun, or has just returned); otherwise
    /// the executor is told, and replaces the thread if the call is stuck in the driver.
    fn call_timed_out(self: &Arc<Self>, key: &str, call: &Arc<Call>, outcome: Option<TimedOut>) {
        let mut states = self.agent.states.lock();
        let Some(st) = states.get_mut(key).filter(|st| st.waits_for(call)) else {
            return;
        };
        st.call = None;
        let outcome = match outcome {
            Some(o) => {
                call.mark_timed_out();
                o
            }
            None => self.executor.time_out(call),
        };
        let replaced = outcome == TimedOut::Running { replaced: true };
        self.count(|c| {
            c.driver_timeouts += 1;
            if replaced {
                c.driver_threads_replaced += 1;
            }
        });
        let secs = self.cfg.driver_timeout.as_secs_f64();
        let what = match outcome {
            TimedOut::NotBegun => "did not begin",
            _ => "did not finish",
        };
        match st.phase {
            Phase::Starting => {
                tracing::warn!(instance = %key, call = "start", timeout_seconds = secs,
                               thread_replaced = replaced, "driver call timed out");
                if matches!(outcome, TimedOut::Running { .. }) {
                    self.agent
                        .hung_starts
                        .lock()
                        .push((st.last.clone(), call.clone()));
                }
                let msg = format!("driver start {what} within {secs}s");
                let status = self.start_failed(st, key, "StartTimedOut", &msg);
                let uid = st.uid.clone();
                let ticket = st.ticket();
                // Deleted meanwhile: the next look stops it (a hung start may yet run it).
                if std::mem::take(&mut st.stop_requested) {
                    self.agent_queue.add(key.to_string());
                }
                drop(states);
                if let Err(e) = self.write_instance_status(key, &uid, ticket, status) {
                    tracing::warn!(instance = %key, error = %e, "could not record instance status");
                }
            }
            Phase::Stopping => {
                tracing::warn!(instance = %key, call = "stop", timeout_seconds = secs,
                               thread_replaced = replaced, "driver call timed out; retrying");
                st.phase = Phase::Running;
                drop(states);
                self.agent_queue.add_rate_limited(key.to_string());
            }
            Phase::Idle | Phase::Running | Phase::Backoff => {}
        }
    }

    /// The result of a call the agent no longer waits for (it timed out): ignored, except
    /// that an instance a late start did run is stopped again if its object is gone.
    fn late_result(
        self: &Arc<Self>,
        key: &str,
        obj: &Arc<Object>,
        call: &Arc<Call>,
        what: &str,
        ok: bool,
    ) {
        self.count(|c| c.driver_late_results += 1);
        self.agent
            .hung_starts
            .lock()
            .retain(|(_, c)| !Arc::ptr_eq(c, call));
        tracing::info!(instance = %key, call = what, ok, "ignoring the late result of a timed-out driver call");
        let gone = || {
            self.store
                .get("Instance", key)
                .ok()
                .flatten()
                .is_none_or(|c| c.metadata.uid != obj.metadata.uid)
        };
        if what == "start" && ok && gone() {
            let (s, obj) = (self.clone(), obj.clone());
            let job = Box::new(move || {
                if let Err(e) = s.driver.stop(&obj) {
                    tracing::warn!(instance = %obj.key(), error = %e,
                                   "could not stop an instance a late start ran");
                }
                s.count(|c| c.driver_stops += 1);
            });
            if let Err(e) = self.executor.submit(job, self.new_call()) {
                tracing::warn!(instance = %key, error = %e, "could not queue a stop after a late start");
            }
        }
    }

    /// Whether the store still holds the instance `key` with `uid`.
    fn instance_exists(&self, key: &str, uid: &str) -> bool {
        self.store
            .get("Instance", key)
            .ok()
            .flatten()
            .is_some_and(|c| c.metadata.uid == uid)
    }

    /// Writes an instance's status through the store, re-reading on conflict; a vanished
    /// or replaced object is left alone, and so is a write a newer one superseded.
    fn write_instance_status(
        &self,
        key: &str,
        uid: &str,
        ticket: u64,
        status: serde_json::Value,
    ) -> Result<()> {
        self.patch_instance_status(key, uid, ticket, |s| *s = status.clone())
            .map(|_| ())
    }

    /// Changes an instance's stored status with `f`, re-reading on conflict. `Ok(false)`:
    /// not written, the object being gone or replaced, or `ticket` no longer the newest
    /// decision for it (see [`InstanceState::ticket`]). The check comes between the read and
    /// the conditional write, so a newer decision's write either happened before the read
    /// (and the check sees its ticket) or makes this write conflict and read again.
    fn patch_instance_status(
        &self,
        key: &str,
        uid: &str,
        ticket: u64,
        f: impl Fn(&mut serde_json::Value),
    ) -> Result<bool> {
        loop {
            let Some(cur) = self.store.get("Instance", key)? else {
                return Ok(false);
            };
            if cur.metadata.uid != uid {
                return Ok(false);
            }
            let newest = self
                .agent
                .states
                .lock()
                .get(key)
                .is_some_and(|st| st.uid == uid && st.status_epoch == ticket);
            if !newest {
                return Ok(false);
            }
            let mut next = (*cur).clone();
            f(&mut next.status);
            match self.store.update_status(next) {
                Ok(_) => {
                    self.count(|c| c.store_writes += 1);
                    return Ok(true);
                }
                Err(e) if e.kind() == crate::ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The host reports that a running instance exited on its own (a crash): it becomes
    /// not-ready, its restart count grows, and the agent starts it again after the
    /// crash-loop backoff. `NotFound` if the agent is not running that instance.
    pub(crate) fn instance_exited(self: &Arc<Self>, key: &str, message: &str) -> Result<()> {
        let mut states = self.agent.states.lock();
        let Some(st) = states.get_mut(key).filter(|st| st.phase == Phase::Running) else {
            return Err(crate::error::Error::NotFound(format!(
                "running instance {key}"
            )));
        };
        let backoff = self.enter_backoff(st);
        let uid = st.uid.clone();
        let failures = st.failures;
        let ticket = st.ticket();
        drop(states);
        self.agent_queue.add_after(key.to_string(), backoff);
        let now_wall = rfc3339(self.wall());
        self.write_instance_status(
            key,
            &uid,
            ticket,
            json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now_wall,
                                "reason": "Exited", "message": message}],
                "restartCount": failures,
                "message": format!("exited: {message}; restarting in {}s", backoff.as_secs()),
                "waiting": {"reason": CRASH_LOOP_BACK_OFF},
            }),
        )
    }

    /// Whether any instance controlled by one of `owner_uids` is still running or being
    /// stopped by the agent — even if its object is already deleted. Recreate waits for
    /// these (K11: no new revision while an old instance is alive or stopping).
    pub(crate) fn agent_runs_any_of(&self, owner_uids: &[&str]) -> bool {
        let owned = |o: &Object| {
            o.controller_ref()
                .is_some_and(|r| owner_uids.contains(&r.uid.as_str()))
        };
        let hung = {
            let mut hung = self.agent.hung_starts.lock();
            hung.retain(|(_, c)| c.hung());
            hung.iter().any(|(o, _)| owned(o))
        };
        hung || self.agent.states.lock().values().any(|st| {
            matches!(st.phase, Phase::Running | Phase::Starting | Phase::Stopping)
                && st
                    .last
                    .controller_ref()
                    .is_some_and(|r| owner_uids.contains(&r.uid.as_str()))
        })
    }

    /// Per controlling ReplicaSet UID among `owner_uids`: instances the agent started (or is
    /// starting) whose objects are gone from the cache while their stop has not finished.
    /// Together with the cache's instances this is |Inst(rs)| of `reliability.md`, which
    /// the TerminationComplete replacement policy bounds.
    pub(crate) fn agent_stopping_by_owner(
        &self,
        owner_uids: &[&str],
    ) -> std::collections::BTreeMap<String, i64> {
        let mut out = std::collections::BTreeMap::new();
        for (key, st) in self.agent.states.lock().iter() {
            if st.phase == Phase::Idle {
                continue;
            }
            let Some(owner) = st
                .last
                .controller_ref()
                .filter(|r| owner_uids.contains(&r.uid.as_str()))
            else {
                continue;
            };
            let live = self
                .cache
                .get("Instance", key)
                .is_some_and(|c| c.metadata.uid == st.uid);
            if !live {
                *out.entry(owner.uid.clone()).or_insert(0) += 1;
            }
        }
        out
    }

    /// After an instance finally stopped: wake the Deployment that may be waiting for it.
    fn stopped(&self, obj: &Object) {
        let ns = &obj.metadata.namespace;
        if let Some(rs) = obj
            .controller_ref()
            .and_then(|r| self.cache.get("ReplicaSet", &format!("{ns}/{}", r.name)))
            && let Some(d) = rs.controller_ref().filter(|r| r.kind == "Deployment")
        {
            self.dep_queue.add(format!("{ns}/{}", d.name));
        }
    }

    /// Instances the agent has started and not yet stopped (for leak checks).
    pub(crate) fn running_instances(&self) -> Vec<String> {
        self.agent
            .states
            .lock()
            .iter()
            .filter(|(_, s)| matches!(s.phase, Phase::Running | Phase::Starting | Phase::Stopping))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The Ready condition's reason after a probe asked for a restart.
fn probe_reason(why: &str) -> &'static str {
    if why.starts_with("startup") {
        "StartupProbeFailed"
    } else {
        "LivenessProbeFailed"
    }
}

/// Replaces the Ready condition of `status` (keeping the others).
fn set_ready(status: &mut serde_json::Value, cond: serde_json::Value) {
    if !status.is_object() {
        *status = json!({});
    }
    let conds = status
        .as_object_mut()
        .expect("made an object above")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let list = conds.as_array_mut().expect("made an array above");
    list.retain(|c| c["type"] != "Ready");
    list.insert(0, cond);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX};

    use crate::runtime::test_support::{run, stepped_plane};
    use crate::runtime::{Driver, DriverError, Started};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Starts everything; fails the first `n` stops.
    struct StopFails(AtomicU32);

    impl Driver for StopFails {
        fn start(&self, _: &Object) -> std::result::Result<Started, DriverError> {
            Ok(Started::default())
        }
        fn stop(&self, _: &Object) -> std::result::Result<(), DriverError> {
            let left = self.0.load(Ordering::SeqCst);
            if left > 0 {
                self.0.store(left - 1, Ordering::SeqCst);
                return Err(DriverError("stop refused".into()));
            }
            Ok(())
        }
    }

    /// A stop that failed was retried through the rate limiter; once the instance is
    /// stopped and gone, the limiter has forgotten it (instance names are not reused, so a
    /// kept count would pile up for every instance that ever failed a call).
    #[test]
    fn the_rate_limiter_forgets_an_instance_once_it_is_stopped_and_gone() {
        let (store, clock, cp) = stepped_plane(Arc::new(StopFails(AtomicU32::new(2))));
        let steps = |rounds: usize| run(&cp, &clock, rounds);
        let key = "default/i0".to_string();
        store
            .create(
                Object::from_json(&json!({"kind": "Instance", "metadata": {"name": "i0"},
                                          "spec": {}}))
                .unwrap(),
            )
            .unwrap();
        steps(20);
        assert!(cp.running_instances().contains(&key));

        store.delete("Instance", &key, None).unwrap();
        let queue = &cp.shared.agent_queue;
        let mut most = 0;
        for _ in 0..200 {
            steps(1);
            most = most.max(queue.num_requeues(&key));
            if !cp.running_instances().contains(&key) {
                break;
            }
        }
        assert_eq!(most, 2, "each refused stop was retried through the limiter");
        assert!(!cp.running_instances().contains(&key), "stopped in the end");
        assert_eq!(queue.num_requeues(&key), 0, "and forgotten");
    }

    /// A status write decided before a newer one is dropped if it comes later, and reports
    /// that it was not written. (Under load the Pending readiness a start recorded landed
    /// after the Ready its first probe recorded, and the agent, believing Ready, never wrote
    /// it again: the rollout waited for ever. Now probes are armed only after the start's
    /// status is written, and a readiness decided before an exit cannot land after it.)
    #[test]
    fn a_superseded_status_write_is_dropped() {
        let (store, clock, cp) = stepped_plane(Arc::new(StopFails(AtomicU32::new(0))));
        store
            .create(
                Object::from_json(&json!({"kind": "Instance", "metadata": {"name": "i0"},
                                          "spec": {}}))
                .unwrap(),
            )
            .unwrap();
        run(&cp, &clock, 20);
        let key = "default/i0";
        let uid = store
            .get("Instance", key)
            .unwrap()
            .unwrap()
            .metadata
            .uid
            .clone();
        let s = &cp.shared;
        let (older, newer) = {
            let mut states = s.agent.states.lock();
            let st = states.get_mut(key).unwrap();
            (st.ticket(), st.ticket())
        };
        let mark = |v: &'static str| move |st: &mut serde_json::Value| st["mark"] = json!(v);
        assert!(
            s.patch_instance_status(key, &uid, newer, mark("newer"))
                .unwrap()
        );
        assert!(
            !s.patch_instance_status(key, &uid, older, mark("older"))
                .unwrap()
        );
        assert_eq!(
            store.get("Instance", key).unwrap().unwrap().status["mark"],
            "newer"
        );
        // The newest ticket still writes; another object under the name is left alone.
        assert!(
            s.patch_instance_status(key, &uid, newer, mark("again"))
                .unwrap()
        );
        assert!(
            !s.patch_instance_status(key, "other-uid", newer, mark("x"))
                .unwrap()
        );
        assert_eq!(
            store.get("Instance", key).unwrap().unwrap().status["mark"],
            "again"
        );
        assert_eq!(
            store.get("Instance", key).unwrap().unwrap().status["phase"],
            "Running"
        );
    }

    #[test]
    fn crash_loop_backoff_doubles_to_five_minutes() {
        let restart_backoff = |n| backoff_with(n, RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX);
        let secs: Vec<u64> = (0..9).map(|n| restart_backoff(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(restart_backoff(u32::MAX), RESTART_BACKOFF_MAX);
    }
}
