//! loom models of group commit (`log::commit`): appenders publish, then wait for a sync that
//! covers them, leading one when nobody else is. Checked: a wait returns `Synced` only after
//! a sync covering its end completed; syncs never overlap and never skip or repeat bytes; no
//! waiter is left parked (loom fails a model whose threads all block); a failed sync and
//! `stop` release every waiter. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p floyd --release --test loom_commit`.
#![cfg(loom)]

use floyd::log::commit::{GroupCommit, Waited};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::thread;

/// The log as the protocol sees it: slot `i` covers `[i, i + 1)`; the published position is
/// the end of the longest prefix of published slots; `durable` is what syncs made durable.
struct Model {
    commit: GroupCommit,
    slots: Vec<AtomicBool>,
    durable: AtomicU64,
    in_sync: AtomicBool,
    syncs: AtomicU64,
    /// Fail every sync from this call number on (`u64::MAX`: never).
    fail_from: u64,
    /// Syncs cover up to the highest published slot, as if producers claimed in the order
    /// they publish (no frame ever waits behind an unpublished one). Keeps the three-thread
    /// model small; `gc3` covers the wait behind an unpublished frame.
    in_order: bool,
}

#[derive(Debug)]
struct SyncFailed;

impl Model {
    fn new(slots: usize, fail_from: u64) -> Arc<Model> {
        Model::with(slots, fail_from, false)
    }

    fn with(slots: usize, fail_from: u64, in_order: bool) -> Arc<Model> {
        Arc::new(Model {
            commit: GroupCommit::new(0),
            slots: (0..slots).map(|_| AtomicBool::new(false)).collect(),
            durable: AtomicU64::new(0),
            in_sync: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            fail_from,
            in_order,
        })
    }

    fn publish(&self, slot: usize) {
        self.slots[slot].store(true, Ordering::Release);
    }

    fn sync(&self, from: u64) -> Result<u64, SyncFailed> {
        assert!(
            !self.in_sync.swap(true, Ordering::AcqRel),
            "two syncs at once"
        );
        assert_eq!(
            from,
            self.durable.load(Ordering::Acquire),
            "a sync must start where the last one ended"
        );
        let n = self.syncs.fetch_add(1, Ordering::Relaxed);
        let r = if n >= self.fail_from {
            Err(SyncFailed)
        } else {
            let published = if self.in_order {
                (0..self.slots.len())
                    .rev()
                    .find(|&i| self.slots[i].load(Ordering::Acquire))
                    .map_or(0, |i| i as u64 + 1)
            } else {
                self.slots
                    .iter()
                    .take_while(|s| s.load(Ordering::Acquire))
                    .count() as u64
            };
            self.durable.store(published.max(from), Ordering::Release);
            Ok(published.max(from))
        };
        self.in_sync.store(false, Ordering::Release);
        r
    }

    /// Publishes `slot`, then waits for it like an `always` append.
    fn append(&self, slot: usize) -> Result<Waited, SyncFailed> {
        self.publish(slot);
        let end = slot as u64 + 1;
        let r = self.commit.wait(end, |from| self.sync(from));
        if let Ok(Waited::Synced) = r {
            assert!(
                self.durable.load(Ordering::Acquire) >= end,
                "acknowledged before synced"
            );
        }
        r
    }
}

/// `n` appenders (syncs following the published prefix, or `in_order` as published): every
/// one returns `Synced`, and all `n` slots are durable.
fn appenders_all_synced(n: usize, in_order: bool) {
    let m = Model::with(n, u64::MAX, in_order);
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let m = m.clone();
            thread::spawn(move || m.append(i).unwrap())
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), Waited::Synced);
    }
    assert_eq!(m.commit.synced(), n as u64);
}

#[test]
fn gc1_two_appenders_are_both_synced() {
    loom::model(|| appenders_all_synced(2, false));
}

#[test]
fn gc2_three_appenders_are_all_synced() {
    loom::model(|| appenders_all_synced(3, true));
}

/// Four appenders: a leader can find three covered waiters, and then wakes them as a tree
/// (one is handed another to wake), so a wake hand-off is in the model.
#[test]
fn gc7_four_appenders_are_all_synced() {
    let mut b = loom::model::Builder::new();
    // Four threads multiply the schedules: one preemption keeps the model to about half a
    // minute, and it still reaches the hand-off (a model whose woken waiters drop their
    // hand deadlocks here).
    b.preemption_bound = Some(1);
    b.check(|| appenders_all_synced(4, true));
}

#[test]
fn gc3_appender_behind_an_unpublished_frame_waits_for_it() {
    loom::model(|| {
        // Slot 0 is published only after slot 1's appender started waiting: the first
        // leader may find nothing new to sync, and must neither return nor sleep forever.
        let m = Model::new(2, u64::MAX);
        let late = {
            let m = m.clone();
            thread::spawn(move || m.append(1).unwrap())
        };
        assert_eq!(m.append(0).unwrap(), Waited::Synced);
        assert_eq!(late.join().unwrap(), Waited::Synced);
    });
}

#[test]
fn gc4_failed_sync_releases_every_waiter_unsynced() {
    loom::model(|| {
        let m = Model::new(2, 0);
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let m = m.clone();
                thread::spawn(move || m.append(i))
            })
            .collect();
        let mut failed = 0;
        for h in hs {
            match h.join().unwrap() {
                Err(SyncFailed) => failed += 1,
                Ok(w) => assert_eq!(w, Waited::Stopped),
            }
        }
        assert_eq!(failed, 1, "exactly the leader sees the error");
        assert_eq!(m.commit.synced(), 0);
        assert!(m.commit.is_stopped());
    });
}

#[test]
fn gc5_stop_releases_waiters() {
    loom::model(|| {
        let m = Model::new(2, u64::MAX);
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let m = m.clone();
                thread::spawn(move || m.append(i).unwrap())
            })
            .collect();
        m.commit.stop();
        for h in hs {
            // Either covered by a sync that completed, or stopped; never hung.
            let _ = h.join().unwrap();
        }
        // After stop, nobody waits: a new wait returns at once.
        assert_ne!(
            m.commit.wait(3, |from| m.sync(from)).unwrap(),
            Waited::Synced
        );
    });
}

#[test]
fn gc6_background_sync_races_an_appender() {
    loom::model(|| {
        let m = Model::new(1, u64::MAX);
        let bg = {
            let m = m.clone();
            thread::spawn(move || {
                let _ = m.commit.try_sync(|from| m.sync(from));
            })
        };
        assert_eq!(m.append(0).unwrap(), Waited::Synced);
        bg.join().unwrap();
        assert_eq!(m.commit.synced(), 1);
    });
}
