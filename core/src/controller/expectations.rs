//! [`Expectations`]: what a controller is still waiting to see through its informer after
//! it created or deleted instances, so that a sync from a cache that has not caught up yet
//! does not act twice (client-go's `UIDTrackingControllerExpectations`, §3.3).
//!
//! Per controller key: counters `add` and `del`, the set of instance keys whose deletion is
//! expected (a deletion is counted once even if it is observed twice: first as a
//! `deletionTimestamp`, then as the delete), and the time the record was set. A record is
//! satisfied when both counters are ≤ 0 or it is older than [`EXPECTATIONS_TIMEOUT`]; no
//! record is satisfied.
//!
//! floyd's extension (reliability K1): the resource version of the controller's own last
//! write per key ([`Expectations::record_write`]). When a record is satisfied only because it
//! expired, [`Expectations::check`] says so and returns that version, and the runtime must
//! wait until its informer has synced past it before acting — an expired record then never
//! leads to acting on a cache older than the controller's own writes.
//!
//! Time is a parameter (`now: Instant` from the injected clock); nothing here reads a clock.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a record is trusted (`ExpectationsTimeout`, 5 minutes).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Why [`Expectations::check`] says a controller may act, or that it may not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Satisfied {
    /// No record: a new controller, or one whose expectations were deleted.
    NoRecord,
    /// Every expected creation and deletion was observed.
    Fulfilled,
    /// The record is older than the timeout but still pending. Before acting, wait until the
    /// cache has seen `last_write` (floyd's K1 rule); `None` when no write was recorded.
    Expired { last_write: Option<u64> },
    /// Still waiting for observations: do not manage replicas now.
    Pending { add: i64, del: i64 },
}

impl Satisfied {
    /// Whether upstream's `SatisfiedExpectations` would return true.
    pub fn is_satisfied(&self) -> bool {
        !matches!(self, Satisfied::Pending { .. })
    }
}

#[derive(Debug)]
struct Record {
    add: i64,
    del: i64,
    timestamp: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<String, Record>,
    /// Instance keys whose deletion is expected, per controller key.
    uids: HashMap<String, HashSet<String>>,
    /// Resource version of the controller's last write, per controller key.
    last_writes: HashMap<String, u64>,
}

/// The UID-tracking controller expectations plus floyd's last-write record. Thread-safe.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<Inner>,
    timeout: Option<Duration>,
}

impl Expectations {
    /// Expectations with the upstream 5-minute timeout.
    pub fn new() -> Expectations {
        Expectations::default()
    }

    /// Expectations with another timeout (tests and simulations).
    pub fn with_timeout(timeout: Duration) -> Expectations {
        Expectations {
            inner: Mutex::default(),
            timeout: Some(timeout),
        }
    }

    fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(EXPECTATIONS_TIMEOUT)
    }

    /// `SetExpectations`: replaces the record for `key` (timestamp `now`).
    pub fn set(&self, key: &str, add: i64, del: i64, now: Instant) {
        self.inner.lock().records.insert(
            key.to_string(),
            Record {
                add,
                del,
                timestamp: now,
            },
        );
    }

    /// `ExpectCreations(key, n)`: replaces the record with `add = n, del = 0`.
    pub fn expect_creations(&self, key: &str, n: usize, now: Instant) {
        self.set(key, n as i64, 0, now);
    }

    /// `ExpectDeletions(key, instance_keys)` (UID-tracking): remembers the set and replaces
    /// the record with `add = 0, del = |set|`.
    pub fn expect_deletions(&self, key: &str, instance_keys: &[String], now: Instant) {
        let set: HashSet<String> = instance_keys.iter().cloned().collect();
        let mut inner = self.inner.lock();
        let n = set.len() as i64;
        inner.uids.insert(key.to_string(), set);
        inner.records.insert(
            key.to_string(),
            Record {
                add: 0,
                del: n,
                timestamp: now,
            },
        );
    }

    /// `LowerExpectations(key, add, del)`: only if a record exists; counters may go negative.
    pub fn lower_expectations(&self, key: &str, add: i64, del: i64) {
        if let Some(r) = self.inner.lock().records.get_mut(key) {
            r.add -= add;
            r.del -= del;
        }
    }

    /// `RaiseExpectations(key, add, del)`: only if a record exists.
    pub fn raise_expectations(&self, key: &str, add: i64, del: i64) {
        if let Some(r) = self.inner.lock().records.get_mut(key) {
            r.add += add;
            r.del += del;
        }
    }

    /// `CreationObserved`: one expected creation was seen (or will never be: the skipped
    /// creations of a slow start, K3).
    pub fn creation_observed(&self, key: &str) {
        self.lower_expectations(key, 1, 0);
    }

    /// `DeletionObserved(key, instance_key)` (UID-tracking): lowers `del` only if
    /// `instance_key` is in the expected set, and removes it, so a deletion observed twice
    /// (deletionTimestamp, then the delete) counts once.
    pub fn deletion_observed(&self, key: &str, instance_key: &str) {
        let mut inner = self.inner.lock();
        let Inner { records, uids, .. } = &mut *inner;
        if let Some(set) = uids.get_mut(key)
            && set.remove(instance_key)
            && let Some(r) = records.get_mut(key)
        {
            r.del -= 1;
        }
    }

    /// `DeleteExpectations`: forgets the record, the expected deletion set and the last
    /// write for `key` (its controller object is gone).
    pub fn delete(&self, key: &str) {
        let mut inner = self.inner.lock();
        inner.records.remove(key);
        inner.uids.remove(key);
        inner.last_writes.remove(key);
    }

    /// The counters `(add, del)` of `key`'s record, if any (`GetExpectations`).
    pub fn get(&self, key: &str) -> Option<(i64, i64)> {
        self.inner.lock().records.get(key).map(|r| (r.add, r.del))
    }

    /// The instance keys whose deletion is still expected (`GetUIDs`).
    pub fn expected_deletions(&self, key: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .lock()
            .uids
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Upstream's `SatisfiedExpectations(key)`: no record, fulfilled, or expired.
    pub fn satisfied(&self, key: &str, now: Instant) -> bool {
        self.check(key, now).is_satisfied()
    }

    /// Like [`Expectations::satisfied`], but says why, so the runtime can apply the K1 rule
    /// to [`Satisfied::Expired`].
    pub fn check(&self, key: &str, now: Instant) -> Satisfied {
        let inner = self.inner.lock();
        match inner.records.get(key) {
            None => Satisfied::NoRecord,
            Some(r) if r.add <= 0 && r.del <= 0 => Satisfied::Fulfilled,
            Some(r) if now.saturating_duration_since(r.timestamp) > self.timeout() => {
                Satisfied::Expired {
                    last_write: inner.last_writes.get(key).copied(),
                }
            }
            Some(r) => Satisfied::Pending {
                add: r.add,
                del: r.del,
            },
        }
    }

    /// floyd: records the resource version of a write the controller made for `key`
    /// (creating or deleting an instance, updating its object). Only ever moves forward.
    pub fn record_write(&self, key: &str, rv: u64) {
        let mut inner = self.inner.lock();
        let e = inner.last_writes.entry(key.to_string()).or_insert(rv);
        *e = (*e).max(rv);
    }

    /// floyd: the resource version of the controller's last recorded write for `key`.
    pub fn last_write(&self, key: &str) -> Option<u64> {
        self.inner.lock().last_writes.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, FakeClock};

    #[test]
    fn no_record_is_satisfied() {
        let c = FakeClock::new();
        let e = Expectations::new();
        assert_eq!(e.check("ns/rs", c.now()), Satisfied::NoRecord);
        assert!(e.satisfied("ns/rs", c.now()));
        // Lowering a missing record does not create one.
        e.creation_observed("ns/rs");
        e.lower_expectations("ns/rs", 1, 1);
        assert_eq!(e.get("ns/rs"), None);
    }

    #[test]
    fn creations_are_counted_down_and_overwritten() {
        let c = FakeClock::new();
        let e = Expectations::new();
        e.expect_creations("k", 3, c.now());
        assert_eq!(e.check("k", c.now()), Satisfied::Pending { add: 3, del: 0 });
        e.creation_observed("k");
        e.creation_observed("k");
        assert!(!e.satisfied("k", c.now()));
        e.creation_observed("k");
        assert_eq!(e.check("k", c.now()), Satisfied::Fulfilled);
        // Counters may go negative and stay fulfilled.
        e.creation_observed("k");
        assert_eq!(e.get("k"), Some((-1, 0)));
        assert!(e.satisfied("k", c.now()));
        // ExpectCreations replaces the record.
        e.expect_creations("k", 2, c.now());
        assert_eq!(e.get("k"), Some((2, 0)));
        e.raise_expectations("k", 1, 1);
        assert_eq!(e.get("k"), Some((3, 1)));
    }

    #[test]
    fn ttl_is_five_minutes_strictly() {
        let c = FakeClock::new();
        let e = Expectations::new();
        e.expect_creations("k", 1, c.now());
        c.advance(Duration::from_secs(300));
        assert!(!e.satisfied("k", c.now()), "exactly 5 min is not expired");
        c.advance(Duration::from_nanos(1));
        assert_eq!(
            e.check("k", c.now()),
            Satisfied::Expired { last_write: None }
        );
        e.record_write("k", 42);
        e.record_write("k", 40); // never moves back
        assert_eq!(
            e.check("k", c.now()),
            Satisfied::Expired {
                last_write: Some(42)
            }
        );
        assert_eq!(e.last_write("k"), Some(42));
        let short = Expectations::with_timeout(Duration::from_secs(1));
        short.expect_creations("k", 1, c.now());
        c.advance(Duration::from_secs(2));
        assert!(short.satisfied("k", c.now()));
    }

    #[test]
    fn deletions_track_keys_and_never_double_count() {
        let c = FakeClock::new();
        let e = Expectations::new();
        e.expect_deletions("k", &["ns/a".into(), "ns/b".into(), "ns/a".into()], c.now());
        assert_eq!(e.get("k"), Some((0, 2)), "duplicates count once");
        // First seen with a deletionTimestamp, then really deleted: counted once.
        e.deletion_observed("k", "ns/a");
        e.deletion_observed("k", "ns/a");
        assert_eq!(e.get("k"), Some((0, 1)));
        // An instance we did not delete does not lower the count.
        e.deletion_observed("k", "ns/zzz");
        assert_eq!(e.get("k"), Some((0, 1)));
        assert_eq!(e.expected_deletions("k"), vec!["ns/b".to_string()]);
        e.deletion_observed("k", "ns/b");
        assert_eq!(e.check("k", c.now()), Satisfied::Fulfilled);
        e.record_write("k", 7);
        e.delete("k");
        assert_eq!(e.get("k"), None);
        assert_eq!(e.last_write("k"), None);
        assert!(e.expected_deletions("k").is_empty());
    }

    #[test]
    fn k3_skipped_creations_release_the_expectation_at_once() {
        // R=10, batches 1,2,4 then a failing batch of 3: 7 succeeded (the failing batch's
        // other calls failed too), so 3 are skipped and never observed.
        let c = FakeClock::new();
        let e = Expectations::new();
        e.expect_creations("k", 10, c.now());
        let (ok, err) = crate::controller::replicaset::slow_start_batch(10, 1, |i| {
            if i >= 7 { Err("boom") } else { Ok(()) }
        });
        assert_eq!((ok, err), (7, Some("boom")));
        for _ in 0..crate::controller::replicaset::skipped_creations(10, ok) {
            e.creation_observed("k");
        }
        assert_eq!(e.get("k"), Some((7, 0)));
        for _ in 0..7 {
            e.creation_observed("k");
        }
        assert!(
            e.satisfied("k", c.now()),
            "satisfied without waiting for the TTL"
        );
    }
}
