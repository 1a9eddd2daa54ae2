//! Stress: 4 producers and 4 workers over 10 000 keys for about two seconds of real time on
//! the system clock. Checks, without any timing assertion, that a key is never processed by
//! two workers at once and that every key is processed at least once after its last add.
//!
//! Proof sketch for the second check: a producer takes a ticket from a global counter before
//! `add`; a worker takes one after `get` returns. Whatever state the add finds the key in
//! (idle, queued, processing), some later `get` returns it after the add took effect, so the
//! key's last start ticket exceeds its last add ticket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use floyd::clock::{Clock, SystemClock};
use floyd::workqueue::WorkQueue;

const KEYS: usize = 10_000;
const PRODUCERS: usize = 4;
const WORKERS: usize = 4;
const RUN_FOR: Duration = Duration::from_secs(2);
/// Upper bound on adds per producer so a very fast machine still finishes promptly.
const MAX_ADDS_PER_PRODUCER: u64 = 5_000_000;

struct Book {
    ticket: AtomicU64,
    last_add: Vec<AtomicU64>,
    last_start: Vec<AtomicU64>,
    busy: Vec<AtomicBool>,
}

#[test]
fn producers_and_workers_never_overlap_and_never_lose_an_add() {
    let clock = SystemClock;
    let q: Arc<WorkQueue<u32>> = Arc::new(WorkQueue::new());
    let book = Arc::new(Book {
        ticket: AtomicU64::new(1),
        last_add: (0..KEYS).map(|_| AtomicU64::new(0)).collect(),
        last_start: (0..KEYS).map(|_| AtomicU64::new(0)).collect(),
        busy: (0..KEYS).map(|_| AtomicBool::new(false)).collect(),
    });
    let end = clock.now() + RUN_FOR;

    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (q, book) = (q.clone(), book.clone());
            thread::spawn(move || {
                let mut processed = 0u64;
                while let Some(k) = q.get() {
                    let i = k as usize;
                    let t = book.ticket.fetch_add(1, Ordering::SeqCst);
                    book.last_start[i].fetch_max(t, Ordering::SeqCst);
                    assert!(
                        !book.busy[i].swap(true, Ordering::SeqCst),
                        "key {k} processed by two workers at once"
                    );
                    std::hint::black_box(k.wrapping_mul(31));
                    book.busy[i].store(false, Ordering::SeqCst);
                    q.done(&k);
                    processed += 1;
                }
                processed
            })
        })
        .collect();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (q, book) = (q.clone(), book.clone());
            thread::spawn(move || {
                // xorshift: a cheap, seeded key stream per producer.
                let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ (p as u64 + 1);
                let mut n = 0;
                while n < MAX_ADDS_PER_PRODUCER && (n % 1024 != 0 || SystemClock.now() < end) {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let k = (s % KEYS as u64) as u32;
                    let t = book.ticket.fetch_add(1, Ordering::SeqCst);
                    book.last_add[k as usize].fetch_max(t, Ordering::SeqCst);
                    q.add(k);
                    n += 1;
                }
                n
            })
        })
        .collect();

    let adds: u64 = producers.into_iter().map(|h| h.join().unwrap()).sum();
    q.shut_down_with_drain();
    q.shut_down();
    let processed: u64 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(processed > 0 && adds > 0);
    for i in 0..KEYS {
        let added = book.last_add[i].load(Ordering::SeqCst);
        let started = book.last_start[i].load(Ordering::SeqCst);
        assert!(
            started > added,
            "key {i}: last add ticket {added} but last start ticket {started}"
        );
    }
    eprintln!("stress: {adds} adds, {processed} deliveries");
}
