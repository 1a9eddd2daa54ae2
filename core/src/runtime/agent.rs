//! The node agent, floyd's kubelet: starts instances through the host's [`Driver`] when
//! they appear, records the outcome in their status (phase, Ready condition, start time,
//! address, restart count), retries failed starts with the kubelet's crash-loop backoff
//! (10 s doubling to 5 min), and stops instances once their objects are deleted — including
//! one whose start was still in flight. Driver calls run on the executor, never on the
//! agent's worker. It never calls the driver for an instance that no longer exists.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;

use super::Shared;
use crate::clock::rfc3339;
use crate::error::Result;
use crate::store::Object;

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
    failures: u32,
    next_try: Option<Instant>,
    /// The object went away while a start was in flight: stop as soon as it returns.
    stop_requested: bool,
}

/// Per-instance bookkeeping of the agent.
#[derive(Default)]
pub(crate) struct Agent {
    states: Mutex<HashMap<String, InstanceState>>,
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
    pub(crate) fn process_agent(self: &Arc<Self>, key: &str) {
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
                        let last = st.last.clone();
                        drop(states);
                        self.submit_stop(key.to_string(), last);
                        if replaced {
                            self.agent_queue.add(key.to_string());
                        }
                        self.agent_queue.done(&key.to_string());
                        return;
                    }
                }
            }
            drop(states);
            self.agent_queue.done(&key.to_string());
            return;
        }
        let obj = cur.expect("checked above");
        let st = states.entry(key.to_string()).or_insert_with(|| {
            // An instance a previous control plane already started (status Running) is
            // adopted as running, not started twice.
            let running = obj.status["phase"] == "Running";
            InstanceState {
                uid: obj.metadata.uid.clone(),
                last: obj.clone(),
                phase: if running { Phase::Running } else { Phase::Idle },
                failures: obj.status["restartCount"].as_u64().unwrap_or(0) as u32,
                next_try: None,
                stop_requested: false,
            }
        });
        st.last = obj.clone();
        let now = self.now();
        let due = st.next_try.is_none_or(|t| now >= t);
        let start = match st.phase {
            Phase::Idle => true,
            Phase::Backoff if due => true,
            _ => false,
        };
        if start {
            st.phase = Phase::Starting;
            drop(states);
            self.submit_start(key.to_string(), obj);
        } else {
            drop(states);
        }
        self.agent_queue.done(&key.to_string());
    }

    fn submit_start(self: &Arc<Self>, key: String, obj: Arc<Object>) {
        let s = self.clone();
        let inst_key = obj.key();
        let job = Box::new(move || {
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
                    .is_some_and(|st| st.uid == obj.metadata.uid)
                {
                    states.remove(&key);
                }
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
            s.start_finished(&key, &obj, r);
        });
        if let Err(e) = self.executor.submit(job) {
            tracing::warn!(instance = %inst_key, error = %e, "could not queue a driver start");
            if let Some(st) = self.agent.states.lock().get_mut(inst_key.as_str()) {
                st.phase = Phase::Idle;
            }
            self.agent_queue.add_rate_limited(inst_key);
        }
    }

    fn start_finished(
        self: &Arc<Self>,
        key: &str,
        obj: &Arc<Object>,
        r: std::result::Result<super::Started, super::DriverError>,
    ) {
        let ok = r.is_ok();
        self.count(|c| {
            c.driver_starts += 1;
            if !ok {
                c.driver_start_failures += 1;
            }
        });
        let mut states = self.agent.states.lock();
        let Some(st) = states.get_mut(key).filter(|st| st.uid == obj.metadata.uid) else {
            return;
        };
        // Deleted while starting: stop it now so nothing is leaked.
        let gone = self
            .cache
            .get("Instance", key)
            .is_none_or(|c| c.metadata.uid != obj.metadata.uid);
        if st.stop_requested || gone {
            st.phase = Phase::Stopping;
            drop(states);
            self.submit_stop(key.to_string(), obj.clone());
            return;
        }
        let now_wall = rfc3339(self.cfg.clock.wall());
        let status = match &r {
            Ok(started) => {
                st.phase = Phase::Running;
                st.next_try = None;
                json!({
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now_wall}],
                    "startTime": now_wall,
                    "address": started.address,
                    "restartCount": st.failures,
                })
            }
            Err(e) => {
                st.failures += 1;
                let backoff = backoff_with(
                    st.failures,
                    self.cfg.restart_backoff,
                    self.cfg.restart_backoff_max,
                );
                st.phase = Phase::Backoff;
                st.next_try = Some(self.now() + backoff);
                self.agent_queue.add_after(key.to_string(), backoff);
                json!({
                    "phase": "Pending",
                    "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now_wall,
                                    "reason": "StartFailed", "message": e.0}],
                    "restartCount": st.failures,
                    "message": format!("start failed: {}", e.0),
                })
            }
        };
        drop(states);
        if let Err(e) = self.write_instance_status(key, &obj.metadata.uid, status) {
            tracing::warn!(instance = %key, error = %e, "could not record instance status");
        }
    }

    fn submit_stop(self: &Arc<Self>, key: String, obj: Arc<Object>) {
        let s = self.clone();
        let inst_key = obj.key();
        let job = Box::new(move || {
            let r = s.driver.stop(&obj);
            s.count(|c| c.driver_stops += 1);
            let mut states = s.agent.states.lock();
            match r {
                Ok(()) => {
                    if states
                        .get(&key)
                        .is_some_and(|st| st.uid == obj.metadata.uid)
                    {
                        states.remove(&key);
                    }
                    drop(states);
                    s.stopped(&obj);
                }
                Err(e) => {
                    tracing::warn!(instance = %key, error = %e, "stop failed; retrying");
                    if let Some(st) = states.get_mut(&key).filter(|st| st.uid == obj.metadata.uid) {
                        st.phase = Phase::Running;
                    }
                    drop(states);
                    s.agent_queue.add_rate_limited(key.clone());
                }
            }
        });
        if self.executor.submit(job).is_err() {
            self.agent_queue.add_rate_limited(inst_key);
        }
    }

    /// Writes an instance's status through the store, re-reading on conflict; a vanished
    /// or replaced object is left alone.
    fn write_instance_status(&self, key: &str, uid: &str, status: serde_json::Value) -> Result<()> {
        loop {
            let Some(cur) = self.store.get("Instance", key)? else {
                return Ok(());
            };
            if cur.metadata.uid != uid {
                return Ok(());
            }
            let mut next = (*cur).clone();
            next.status = status.clone();
            match self.store.update_status(next) {
                Ok(_) => {
                    self.count(|c| c.store_writes += 1);
                    return Ok(());
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
        st.failures += 1;
        let backoff = backoff_with(
            st.failures,
            self.cfg.restart_backoff,
            self.cfg.restart_backoff_max,
        );
        st.phase = Phase::Backoff;
        st.next_try = Some(self.now() + backoff);
        let uid = st.uid.clone();
        let failures = st.failures;
        drop(states);
        self.agent_queue.add_after(key.to_string(), backoff);
        let now_wall = rfc3339(self.cfg.clock.wall());
        self.write_instance_status(
            key,
            &uid,
            json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now_wall,
                                "reason": "Exited", "message": message}],
                "restartCount": failures,
                "message": format!("exited: {message}; restarting in {}s", backoff.as_secs()),
            }),
        )
    }

    /// Whether any instance controlled by one of `owner_uids` is still running or being
    /// stopped by the agent — even if its object is already deleted. Recreate waits for
    /// these (K11: no new revision while an old instance is alive or stopping).
    pub(crate) fn agent_runs_any_of(&self, owner_uids: &[&str]) -> bool {
        self.agent.states.lock().values().any(|st| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX};

    #[test]
    fn crash_loop_backoff_doubles_to_five_minutes() {
        let restart_backoff = |n| backoff_with(n, RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX);
        let secs: Vec<u64> = (0..9).map(|n| restart_backoff(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(restart_backoff(u32::MAX), RESTART_BACKOFF_MAX);
    }
}
