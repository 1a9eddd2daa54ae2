//! The work queue against a reference model (`VecDeque` + `HashSet` dirty + `HashSet`
//! processing + a waiting map), driven by proptest with random single-threaded interleavings
//! of every operation on a fake clock. The model is the spec of `k8s-semantics.md` §1 with
//! floyd's documented differences (spurious `done` is a no-op; ties in ready time go in
//! arrival order).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use floyd::clock::FakeClock;
use floyd::workqueue::{RateLimiter, WorkQueue, WorkQueueConfig, exponential_backoff};
use proptest::prelude::*;

const KEYS: u8 = 6;
const BASE_MS: u64 = 2;
const MAX_MS: u64 = 50;

#[derive(Clone, Debug)]
enum Op {
    Add(u8),
    AddAfter(u8, u64),
    AddRateLimited(u8),
    Get,
    Done(u8),
    Forget(u8),
    ShutDown,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS).prop_map(Op::Add),
        2 => (0..KEYS, 0..40u64).prop_map(|(k, d)| Op::AddAfter(k, d)),
        2 => (0..KEYS).prop_map(Op::AddRateLimited),
        4 => Just(Op::Get),
        3 => (0..KEYS).prop_map(Op::Done),
        1 => (0..KEYS).prop_map(Op::Forget),
        1 => Just(Op::ShutDown),
        3 => (0..30u64).prop_map(Op::Advance),
    ]
}

#[derive(Default)]
struct Model {
    queue: VecDeque<u8>,
    dirty: HashSet<u8>,
    processing: HashSet<u8>,
    /// (ready at ms, arrival seq) → item, and item → its key there.
    waiting: BTreeMap<(u64, u64), u8>,
    waiting_of: HashMap<u8, (u64, u64)>,
    seq: u64,
    failures: HashMap<u8, u64>,
    now: u64,
    shutting_down: bool,
    adds: u64,
    retries: u64,
}

impl Model {
    fn add(&mut self, x: u8) {
        if self.shutting_down || self.dirty.contains(&x) {
            return;
        }
        self.adds += 1;
        self.dirty.insert(x);
        if !self.processing.contains(&x) {
            self.queue.push_back(x);
        }
    }
    fn add_after(&mut self, x: u8, d: u64) {
        if self.shutting_down {
            return;
        }
        self.retries += 1;
        if d == 0 {
            return self.add(x);
        }
        let at = self.now + d;
        if let Some(&old) = self.waiting_of.get(&x) {
            if old.0 <= at {
                return;
            }
            self.waiting.remove(&old);
        }
        let key = (at, self.seq);
        self.seq += 1;
        self.waiting.insert(key, x);
        self.waiting_of.insert(x, key);
    }
    fn when(&mut self, x: u8) -> u64 {
        let n = self.failures.entry(x).or_insert(0);
        let d = exponential_backoff(
            Duration::from_millis(BASE_MS),
            Duration::from_millis(MAX_MS),
            *n,
        );
        *n += 1;
        d.as_millis() as u64
    }
    fn get(&mut self) -> Option<u8> {
        let x = self.queue.pop_front()?;
        self.processing.insert(x);
        self.dirty.remove(&x);
        Some(x)
    }
    fn done(&mut self, x: u8) {
        if !self.processing.remove(&x) {
            return; // floyd: a spurious done never enqueues
        }
        if self.dirty.contains(&x) {
            self.queue.push_back(x);
        }
    }
    fn advance(&mut self, d: u64) {
        self.now += d;
        while let Some((&(at, seq), &x)) = self.waiting.iter().next() {
            if at > self.now {
                break;
            }
            self.waiting.remove(&(at, seq));
            self.waiting_of.remove(&x);
            self.add(x);
        }
    }
    fn shut_down(&mut self) {
        self.shutting_down = true;
        self.waiting.clear();
        self.waiting_of.clear();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        let clock = FakeClock::shared();
        let q = WorkQueue::with_config(WorkQueueConfig {
            name: None,
            clock: clock.clone(),
            rate_limiter: Some(RateLimiter::exponential(
                Duration::from_millis(BASE_MS),
                Duration::from_millis(MAX_MS),
            )),
        });
        let mut m = Model::default();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Add(x) => { q.add(x); m.add(x); }
                Op::AddAfter(x, d) => { q.add_after(x, Duration::from_millis(d)); m.add_after(x, d); }
                Op::AddRateLimited(x) => {
                    q.add_rate_limited(x);
                    let d = m.when(x);
                    m.add_after(x, d);
                }
                Op::Get => prop_assert_eq!(q.try_get(), m.get(), "op {}: {:?}", i, op),
                Op::Done(x) => { q.done(&x); m.done(x); }
                Op::Forget(x) => { q.forget(&x); m.failures.remove(&x); }
                Op::ShutDown => { q.shut_down(); m.shut_down(); }
                Op::Advance(d) => { clock.advance(Duration::from_millis(d)); m.advance(d); }
            }
            prop_assert_eq!(q.len(), m.queue.len(), "len after op {}: {:?}", i, op);
            prop_assert_eq!(q.shutting_down(), m.shutting_down);
            for x in 0..KEYS {
                prop_assert_eq!(q.num_requeues(&x), m.failures.get(&x).copied().unwrap_or(0));
            }
            let metrics = q.metrics();
            prop_assert_eq!(metrics.depth as usize, m.dirty.len(), "depth after op {}", i);
            prop_assert_eq!(metrics.adds, m.adds);
            prop_assert_eq!(metrics.retries, m.retries);
        }
        // Whatever is left comes out in the model's order.
        let mut rest = Vec::new();
        while let Some(x) = q.try_get() { rest.push(x); }
        let mut expected = Vec::new();
        while let Some(x) = m.get() { expected.push(x); }
        prop_assert_eq!(rest, expected);
    }
}
