#![cfg(loom)]
//! loom models of the work queue (reliability.md (d) L6): each model is tiny (≤ 3 spawned
//! threads, 1–2 items) and runs the queue's real locking through the `workqueue::sync` shim.
//! The queues use a fake clock and no delays, so no timer thread exists. loom reports a
//! deadlock if any thread blocks forever, which is how lost wake-ups show up.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom
//! cargo test -p floyd --release --test loom_workqueue`.

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

use floyd::clock::{FakeClock, SharedClock};
use floyd::workqueue::WorkQueue;

fn queue() -> Arc<WorkQueue<u32>> {
    Arc::new(WorkQueue::with_clock(FakeClock::shared() as SharedClock))
}

/// Two workers and a producer race on one key: never two deliveries at once, one or two
/// deliveries in all, and nothing left behind.
#[test]
fn concurrent_add_and_get_done_never_overlap() {
    loom::model(|| {
        let q = queue();
        q.add(1);
        let busy = Arc::new(AtomicBool::new(false));
        let deliveries = Arc::new(AtomicUsize::new(0));
        let worker = || {
            let (q, busy, deliveries) = (q.clone(), busy.clone(), deliveries.clone());
            thread::spawn(move || {
                if let Some(x) = q.try_get() {
                    assert!(!busy.swap(true, Ordering::SeqCst), "two workers at once");
                    deliveries.fetch_add(1, Ordering::SeqCst);
                    busy.store(false, Ordering::SeqCst);
                    q.done(&x);
                }
            })
        };
        let w1 = worker();
        let w2 = worker();
        let q3 = q.clone();
        let p = thread::spawn(move || q3.add(1));
        w1.join().unwrap();
        w2.join().unwrap();
        p.join().unwrap();
        while let Some(x) = q.try_get() {
            deliveries.fetch_add(1, Ordering::SeqCst);
            q.done(&x);
        }
        let n = deliveries.load(Ordering::SeqCst);
        assert!(n == 1 || n == 2, "{n} deliveries");
        assert_eq!(q.len(), 0);
        assert_eq!(q.metrics().depth, 0);
    });
}

/// An add while the item is processing, racing its `done`: exactly one more delivery.
#[test]
fn readd_during_processing_gives_exactly_one_more_delivery() {
    loom::model(|| {
        let q = queue();
        q.add(1);
        let x = q.try_get().unwrap();
        let (qa, qd) = (q.clone(), q.clone());
        let a = thread::spawn(move || qa.add(1));
        let d = thread::spawn(move || qd.done(&x));
        a.join().unwrap();
        d.join().unwrap();
        assert_eq!(q.try_get(), Some(1));
        q.done(&1);
        assert_eq!(q.try_get(), None);
    });
}

/// kubernetes#119554: a draining shut-down racing a plain shut-down and a worker's `done`
/// never hangs, and everything ends shut down and empty.
#[test]
fn drain_racing_shut_down_and_done_never_hangs() {
    loom::model(|| {
        let q = queue();
        q.add(1);
        let x = q.try_get().unwrap();
        let (q1, q2, q3) = (q.clone(), q.clone(), q.clone());
        let drain = thread::spawn(move || q1.shut_down_with_drain());
        let stop = thread::spawn(move || q2.shut_down());
        let worker = thread::spawn(move || q3.done(&x));
        drain.join().unwrap();
        stop.join().unwrap();
        worker.join().unwrap();
        assert!(q.shutting_down());
        assert_eq!(q.try_get(), None);
    });
}

/// A draining shut-down returns only after the queued item was handed out and finished.
#[test]
fn drain_returns_only_when_drained() {
    loom::model(|| {
        let q = queue();
        q.add(1);
        let finished = Arc::new(AtomicBool::new(false));
        let (qw, f) = (q.clone(), finished.clone());
        let worker = thread::spawn(move || {
            while let Some(x) = qw.get() {
                f.store(true, Ordering::SeqCst);
                qw.done(&x);
            }
        });
        q.shut_down_with_drain();
        assert!(
            finished.load(Ordering::SeqCst),
            "drain returned before the item was done"
        );
        worker.join().unwrap();
    });
}

/// Two blocked getters and a producer of two items: each getter wakes and returns exactly
/// one distinct item (a lost wake-up would leave a getter blocked: a loom deadlock).
#[test]
fn each_item_wakes_exactly_one_waiter() {
    loom::model(|| {
        let q = queue();
        let getter = || {
            let q = q.clone();
            thread::spawn(move || q.get())
        };
        let g1 = getter();
        let g2 = getter();
        let qp = q.clone();
        let p = thread::spawn(move || {
            qp.add(1);
            qp.add(2);
        });
        p.join().unwrap();
        let mut got = vec![g1.join().unwrap().unwrap(), g2.join().unwrap().unwrap()];
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(q.len(), 0);
    });
}

/// An add that found the item already queued by a concurrent add that has not finished
/// yet: once the first returns, the item is there to take, and a shut-down after it keeps
/// it (queued items are handed out after shut-down). Shut-down landing between the other
/// add's check and its push must not undo an add that has already returned.
#[test]
fn an_add_that_returned_survives_a_later_shut_down() {
    loom::model(|| {
        let q = queue();
        let qa = q.clone();
        let a = thread::spawn(move || qa.add(1));
        q.add(1);
        assert_eq!(q.len(), 1, "a returned add is not yet visible");
        q.shut_down();
        a.join().unwrap();
        assert_eq!(q.try_get(), Some(1));
        q.done(&1);
        assert_eq!(q.try_get(), None);
    });
}

/// A re-add during processing racing a shut-down and the item's `done`: the re-add either
/// precedes the shut-down (one more delivery, handed out after shut-down) or is ignored,
/// and in both cases the queue ends empty with nothing in flight.
#[test]
fn readd_racing_shut_down_and_done_is_all_or_nothing() {
    loom::model(|| {
        let q = queue();
        q.add(1);
        let x = q.try_get().unwrap();
        let (qa, qs) = (q.clone(), q.clone());
        let a = thread::spawn(move || qa.add(1));
        let s = thread::spawn(move || qs.shut_down());
        q.done(&x);
        a.join().unwrap();
        s.join().unwrap();
        if let Some(y) = q.try_get() {
            assert_eq!(y, 1);
            q.done(&y);
        }
        assert_eq!(q.try_get(), None);
        assert_eq!(q.len(), 0);
        assert_eq!(q.metrics().depth, 0);
    });
}
