//! Every behaviour of client-go's work queue and rate limiters (`k8s-semantics.md` §1) as a
//! named test on a fake clock, plus floyd's documented differences (`docs/workqueue.md`).
//! Threads appear only where blocking is the behaviour under test; no test measures time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use floyd::clock::{Clock, FakeClock, SharedClock, SystemClock};
use floyd::error::ErrorKind;
use floyd::workqueue::{NEVER, RateLimiter, WorkQueue, WorkQueueConfig, exponential_backoff};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn fake_queue() -> (Arc<FakeClock>, WorkQueue<u32>) {
    let clock = FakeClock::shared();
    let q = WorkQueue::with_clock(clock.clone() as SharedClock);
    (clock, q)
}

fn drain_now(q: &WorkQueue<u32>) -> Vec<u32> {
    let mut out = Vec::new();
    while let Some(x) = q.try_get() {
        out.push(x);
    }
    out
}

/// Spins (yielding) until `cond` holds; bounded so a bug fails the test instead of hanging.
fn eventually(mut cond: impl FnMut() -> bool) {
    for _ in 0..2_000_000 {
        if cond() {
            return;
        }
        thread::yield_now();
    }
    panic!("condition never became true");
}

// ---------------------------------------------------------------- basic queue (§1.1)

#[test]
fn add_dedups_while_queued() {
    let (_c, q) = fake_queue();
    q.add(1);
    q.add(1);
    q.add(2);
    q.add(1);
    assert_eq!(q.len(), 2);
    assert_eq!(drain_now(&q), vec![1, 2]);
}

#[test]
fn items_are_handed_out_in_fifo_order() {
    let (_c, q) = fake_queue();
    for i in [5, 3, 9, 1] {
        q.add(i);
    }
    assert_eq!(drain_now(&q), vec![5, 3, 9, 1]);
}

#[test]
fn readd_while_processing_runs_again_after_done() {
    let (_c, q) = fake_queue();
    q.add(1);
    assert_eq!(q.get(), Some(1));
    q.add(1);
    q.add(1);
    assert_eq!(q.try_get(), None, "never handed to two workers at once");
    q.done(&1);
    assert_eq!(q.try_get(), Some(1), "exactly one more delivery");
    q.done(&1);
    assert_eq!(q.try_get(), None);
}

#[test]
fn len_excludes_dirty_while_processing_but_depth_counts_it() {
    let (_c, q) = fake_queue();
    q.add(1);
    let x = q.get().unwrap();
    q.add(x);
    assert_eq!(q.len(), 0);
    assert_eq!(
        q.metrics().depth,
        1,
        "upstream depth counts dirty-while-processing"
    );
    q.done(&x);
    assert_eq!(q.len(), 1);
}

#[test]
fn get_blocks_until_an_item_is_added() {
    let (_c, q) = fake_queue();
    let q = Arc::new(q);
    let q2 = q.clone();
    let getter = thread::spawn(move || q2.get());
    q.add(7);
    assert_eq!(getter.join().unwrap(), Some(7));
}

#[test]
fn items_are_handed_out_after_shutdown_then_none() {
    let (_c, q) = fake_queue();
    q.add(1);
    q.add(2);
    q.shut_down();
    assert!(q.shutting_down());
    assert_eq!(q.get(), Some(1));
    assert_eq!(q.get(), Some(2));
    assert_eq!(q.get(), None);
}

#[test]
fn add_is_ignored_after_shutdown() {
    let (_c, q) = fake_queue();
    q.shut_down();
    q.add(1);
    q.add_after(2, Duration::ZERO);
    q.add_after(3, ms(5));
    q.add_rate_limited(4);
    assert_eq!(q.len(), 0);
    assert_eq!(q.get(), None);
    assert_eq!(q.metrics().adds, 0);
}

#[test]
fn shut_down_releases_a_blocked_getter() {
    let (_c, q) = fake_queue();
    let q = Arc::new(q);
    let q2 = q.clone();
    let getter = thread::spawn(move || q2.get());
    q.shut_down();
    assert_eq!(getter.join().unwrap(), None);
}

#[test]
fn shut_down_is_idempotent() {
    let (_c, q) = fake_queue();
    q.shut_down();
    q.shut_down();
    q.shut_down_with_drain();
    assert!(q.shutting_down());
}

#[test]
fn done_of_a_readded_item_after_shutdown_requeues_it() {
    let (_c, q) = fake_queue();
    q.add(1);
    let x = q.get().unwrap();
    q.add(x);
    q.shut_down();
    q.done(&x);
    assert_eq!(
        q.get(),
        Some(1),
        "upstream: re-queued and handed out with shutdown=false"
    );
    q.done(&1);
    assert_eq!(q.get(), None);
}

/// Upstream pushes a duplicate when `Done` is called for an item that is queued but was never
/// handed out; floyd does nothing (reliability K13, kubernetes#141079, #79934).
#[test]
fn done_of_an_item_not_processing_is_a_no_op() {
    let (_c, q) = fake_queue();
    q.done(&9); // unknown
    assert_eq!(q.len(), 0);
    q.add(1);
    q.done(&1); // queued, never handed out
    q.done(&1);
    assert_eq!(q.len(), 1);
    assert_eq!(drain_now(&q), vec![1]);
    q.done(&1);
    q.done(&1); // done twice
    assert_eq!(q.len(), 0);
    q.add(1);
    assert_eq!(drain_now(&q), vec![1]);
}

#[test]
fn shut_down_with_drain_waits_for_done() {
    let (_c, q) = fake_queue();
    let q = Arc::new(q);
    q.add(1);
    let x = q.get().unwrap();
    let done_called = Arc::new(AtomicBool::new(false));
    let (q2, d2) = (q.clone(), done_called.clone());
    let drainer = thread::spawn(move || {
        q2.shut_down_with_drain();
        assert!(
            d2.load(Ordering::SeqCst),
            "drain returned while an item was processing"
        );
    });
    eventually(|| q.shutting_down());
    for _ in 0..1000 {
        thread::yield_now();
    }
    done_called.store(true, Ordering::SeqCst);
    q.done(&x);
    drainer.join().unwrap();
}

/// floyd's drain also waits until queued items have been handed out and finished
/// (reliability K13; upstream waits for the processing set only).
#[test]
fn shut_down_with_drain_waits_for_queued_items() {
    let (_c, q) = fake_queue();
    let q = Arc::new(q);
    q.add(1);
    q.add(2);
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (q2, f2) = (q.clone(), finished.clone());
    let drainer = thread::spawn(move || {
        q2.shut_down_with_drain();
        assert_eq!(
            f2.load(Ordering::SeqCst),
            2,
            "drain returned with items left"
        );
        assert_eq!(q2.len(), 0);
    });
    eventually(|| q.shutting_down());
    while let Some(x) = q.get() {
        for _ in 0..100 {
            thread::yield_now();
        }
        finished.fetch_add(1, Ordering::SeqCst);
        q.done(&x);
    }
    drainer.join().unwrap();
}

#[test]
fn shut_down_releases_a_blocked_drain() {
    let (_c, q) = fake_queue();
    let q = Arc::new(q);
    q.add(1);
    let _x = q.get().unwrap(); // never done
    let q2 = q.clone();
    let drainer = thread::spawn(move || q2.shut_down_with_drain());
    eventually(|| q.shutting_down());
    q.shut_down();
    drainer.join().unwrap();
}

#[test]
fn shut_down_with_drain_returns_at_once_when_idle() {
    let (_c, q) = fake_queue();
    q.shut_down_with_drain();
    assert!(q.shutting_down());
}

#[test]
fn get_timeout_zero_never_blocks() {
    let (_c, q) = fake_queue();
    assert_eq!(q.get_timeout(Duration::ZERO), None);
    q.add(3);
    assert_eq!(q.get_timeout(Duration::ZERO), Some(3));
}

#[test]
fn get_timeout_returns_none_once_fake_time_passes() {
    let (clock, q) = fake_queue();
    let q = Arc::new(q);
    let q2 = q.clone();
    let getter = thread::spawn(move || q2.get_timeout(Duration::from_secs(5)));
    let start = clock.elapsed();
    let mut steps = 0;
    while !getter.is_finished() {
        clock.advance(ms(100));
        thread::yield_now();
        steps += 1;
        assert!(steps < 1_000_000, "get_timeout never returned");
    }
    assert_eq!(getter.join().unwrap(), None);
    assert!(clock.elapsed() - start >= Duration::from_secs(5));
}

#[test]
fn get_timeout_returns_an_item_added_in_time() {
    let (_c, q) = fake_queue();
    let q = Arc::new(q);
    let q2 = q.clone();
    let getter = thread::spawn(move || q2.get_timeout(Duration::from_secs(5)));
    q.add(4);
    assert_eq!(getter.join().unwrap(), Some(4));
}

// ---------------------------------------------------------------- delaying queue (§1.2)

#[test]
fn add_after_zero_is_immediate_and_counts_a_retry() {
    let (_c, q) = fake_queue();
    q.add_after(1, Duration::ZERO);
    assert_eq!(q.len(), 1);
    assert_eq!(q.metrics().retries, 1);
}

#[test]
fn add_after_releases_when_the_clock_reaches_the_delay() {
    let (clock, q) = fake_queue();
    q.add_after(1, ms(50));
    assert_eq!(q.len(), 0);
    clock.advance(ms(49));
    assert_eq!(q.len(), 0);
    clock.advance(ms(1));
    assert_eq!(q.len(), 1);
    assert_eq!(q.try_get(), Some(1));
}

#[test]
fn add_after_releases_in_ready_time_order() {
    let (clock, q) = fake_queue();
    q.add_after(1, ms(30));
    q.add_after(2, ms(10));
    q.add_after(3, ms(20));
    q.add_after(4, ms(10)); // tie with 2: arrival order
    clock.advance(ms(100));
    assert_eq!(drain_now(&q), vec![2, 4, 3, 1]);
}

#[test]
fn add_after_earliest_ready_time_wins() {
    let (clock, q) = fake_queue();
    q.add_after(1, ms(100));
    q.add_after(1, ms(10)); // moves earlier
    q.add_after(2, ms(10));
    q.add_after(2, ms(100)); // later: ignored
    clock.advance(ms(10));
    assert_eq!(drain_now(&q), vec![1, 2]);
    clock.advance(ms(1000));
    assert_eq!(q.len(), 0, "a single entry per waiting item");
}

#[test]
fn add_after_of_a_queued_item_coalesces_when_released() {
    let (clock, q) = fake_queue();
    q.add(1);
    q.add_after(1, ms(5));
    clock.advance(ms(5));
    assert_eq!(q.len(), 1);
}

#[test]
fn waiting_items_are_dropped_on_shutdown() {
    let (clock, q) = fake_queue();
    q.add_after(1, ms(5));
    q.shut_down();
    clock.advance(ms(10));
    assert_eq!(q.get(), None);
}

/// A fake clock that, once armed, moves itself forward right after one reading: the
/// reader holds the old time while the advance and its callbacks run, as when another
/// thread advances the clock at that moment.
#[derive(Debug)]
struct SteppingClock {
    inner: Arc<FakeClock>,
    step_after_next_read: AtomicBool,
}

impl Clock for SteppingClock {
    fn now(&self) -> std::time::Instant {
        let t = self.inner.now();
        if self.step_after_next_read.swap(false, Ordering::SeqCst) {
            self.inner.advance(ms(1));
        }
        t
    }
    fn wall(&self) -> std::time::SystemTime {
        self.inner.wall()
    }
    fn park_timeout(&self, deadline: std::time::Instant) -> Option<Duration> {
        self.inner.park_timeout(deadline)
    }
    fn on_advance(&self, waker: std::sync::Weak<dyn Fn() + Send + Sync>) {
        self.inner.on_advance(waker)
    }
    fn sleep(&self, d: Duration) {
        self.inner.sleep(d)
    }
}

/// §1.2 "a received entry whose readyAt is already past is added immediately": a fake clock
/// that passes an `add_after`'s ready time after the add read the time but before its entry
/// was in place (so the advance found nothing due) still releases it, without waiting for
/// the next advance.
#[test]
fn add_after_overtaken_by_a_fake_clock_advance_is_released_at_once() {
    let clock = Arc::new(SteppingClock {
        inner: FakeClock::shared(),
        step_after_next_read: AtomicBool::new(false),
    });
    let q = WorkQueue::with_clock(clock.clone() as SharedClock);
    clock.step_after_next_read.store(true, Ordering::SeqCst);
    q.add_after(1, ms(1));
    assert!(!clock.step_after_next_read.load(Ordering::SeqCst));
    assert_eq!(
        q.len(),
        1,
        "due since the clock passed it, but still waiting"
    );
    assert_eq!(q.try_get(), Some(1));
}

#[test]
fn add_after_on_a_real_clock_is_released_by_the_timer_thread() {
    let q: WorkQueue<u32> = WorkQueue::with_clock(SystemClock::shared());
    q.add_after(1, ms(1));
    assert_eq!(q.get(), Some(1));
}

#[test]
fn an_unrepresentable_delay_never_fires() {
    let (clock, q) = fake_queue();
    q.add_after(1, Duration::MAX);
    q.add_after(2, NEVER);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(q.len(), 0);
}

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn dropping_or_shutting_down_the_queue_stops_its_timer_thread() {
    if !std::path::Path::new("/proc/self/task").exists() {
        return; // thread listing is Linux-only; the behaviour is covered on Linux CI
    }
    for (name, via_shutdown) in [("dropq1", false), ("dropq2", true)] {
        let thread = format!("floyd-wq-{name}");
        let q: WorkQueue<u32> = WorkQueue::with_config(WorkQueueConfig {
            name: Some(name.to_string()),
            ..WorkQueueConfig::default()
        });
        q.add_after(1, Duration::from_secs(3600));
        // The child names itself once it runs; the kernel drops the task just after join.
        eventually(|| thread_names().contains(&thread));
        if via_shutdown {
            q.shut_down();
            eventually(|| !thread_names().contains(&thread));
        }
        drop(q);
        eventually(|| !thread_names().contains(&thread));
    }
}

#[test]
fn a_fake_clock_queue_starts_no_thread() {
    let clock = FakeClock::shared();
    let q: WorkQueue<u32> = WorkQueue::with_config(WorkQueueConfig {
        name: Some("fakeq".to_string()),
        clock: clock.clone(),
        rate_limiter: None,
    });
    q.add_after(1, Duration::from_secs(1));
    assert!(!thread_names().iter().any(|t| t == "floyd-wq-fakeq"));
    clock.advance(Duration::from_secs(1));
    assert_eq!(q.len(), 1);
}

// ---------------------------------------------------------------- rate-limiting queue (§1.3)

#[test]
fn add_rate_limited_waits_for_the_limiter_delay_and_counts_requeues() {
    let clock = FakeClock::shared();
    let q = WorkQueue::with_config(WorkQueueConfig {
        name: None,
        clock: clock.clone(),
        rate_limiter: Some(RateLimiter::exponential(ms(10), Duration::from_secs(1))),
    });
    q.add_rate_limited(1u32);
    assert_eq!(q.num_requeues(&1), 1);
    clock.advance(ms(9));
    assert_eq!(q.len(), 0);
    clock.advance(ms(1));
    assert_eq!(q.try_get(), Some(1));
    q.add_rate_limited(1); // 20 ms, dirty while processing once released
    q.done(&1);
    clock.advance(ms(19));
    assert_eq!(q.len(), 0);
    clock.advance(ms(1));
    assert_eq!(q.len(), 1);
    assert_eq!(q.num_requeues(&1), 2);
    assert_eq!(q.metrics().retries, 2);
}

#[test]
fn forget_resets_the_backoff() {
    let clock = FakeClock::shared();
    let q = WorkQueue::with_config(WorkQueueConfig {
        name: None,
        clock: clock.clone(),
        rate_limiter: Some(RateLimiter::exponential(ms(10), Duration::from_secs(1))),
    });
    for _ in 0..5 {
        q.add_rate_limited(1u32);
    }
    assert_eq!(q.num_requeues(&1), 5);
    q.forget(&1);
    assert_eq!(q.num_requeues(&1), 0);
    assert_eq!(q.rate_limiter().when(&1), ms(10));
}

#[test]
fn add_rate_limited_records_a_failure_even_when_shut_down() {
    let (_c, q) = fake_queue();
    q.shut_down();
    q.add_rate_limited(1);
    assert_eq!(q.num_requeues(&1), 1);
}

// ---------------------------------------------------------------- rate limiters (§1.4)

#[test]
fn exponential_sequence_matches_upstream_then_caps() {
    let l = RateLimiter::exponential(ms(5), Duration::from_secs(1000));
    let mut expected = ms(5);
    for n in 1..=18 {
        assert_eq!(l.when(&"k"), expected, "call {n}");
        expected *= 2;
    }
    assert_eq!(expected / 2, Duration::from_millis(655_360));
    for _ in 0..100 {
        assert_eq!(l.when(&"k"), Duration::from_secs(1000));
    }
    assert_eq!(l.num_requeues(&"k"), 118);
    assert_eq!(l.when(&"other"), ms(5), "per item");
}

/// K12 (kubernetes#31396): the backoff saturates at max for every failure count, never 0.
#[test]
fn exponential_saturates_for_every_failure_count() {
    let (base, max) = (ms(5), Duration::from_secs(1000));
    let mut prev = Duration::ZERO;
    for n in 0..=4096u64 {
        let d = exponential_backoff(base, max, n);
        assert!(d >= prev && d > Duration::ZERO && d <= max);
        prev = d;
    }
    for n in [1u64 << 31, u64::from(u32::MAX), 1 << 32, u64::MAX] {
        assert_eq!(exponential_backoff(base, max, n), max);
    }
}

#[test]
fn exponential_forget_resets() {
    let l = RateLimiter::exponential(ms(1), Duration::from_secs(1));
    l.when(&1);
    l.when(&1);
    l.forget(&1);
    assert_eq!(l.num_requeues(&1), 0);
    assert_eq!(l.when(&1), ms(1));
}

#[test]
fn fast_slow_switches_after_max_fast_attempts() {
    let l = RateLimiter::fast_slow(ms(5), Duration::from_secs(10), 3);
    assert_eq!(l.when(&1), ms(5));
    assert_eq!(l.when(&1), ms(5));
    assert_eq!(l.when(&1), ms(5));
    assert_eq!(l.when(&1), Duration::from_secs(10));
    assert_eq!(l.when(&1), Duration::from_secs(10));
    assert_eq!(l.when(&2), ms(5));
    assert_eq!(l.num_requeues(&1), 5);
    l.forget(&1);
    assert_eq!(l.when(&1), ms(5));
}

/// Limiter edge cases: a base above the cap yields the cap from the first failure, a
/// fast/slow limiter with no fast attempts is slow from the first, and an empty `max_of`
/// never waits and counts nothing.
#[test]
fn limiter_edge_cases_base_above_max_no_fast_attempts_empty_max_of() {
    let capped = RateLimiter::exponential(ms(10), ms(5));
    assert_eq!(capped.when(&1), ms(5));
    assert_eq!(capped.when(&1), ms(5));
    let slow = RateLimiter::fast_slow(ms(5), Duration::from_secs(10), 0);
    assert_eq!(slow.when(&1), Duration::from_secs(10));
    let none = RateLimiter::<u32>::max_of(vec![]);
    assert_eq!(none.when(&1), Duration::ZERO);
    assert_eq!(none.num_requeues(&1), 0);
}

#[test]
fn bucket_allows_the_burst_then_paces_at_qps() {
    let clock = FakeClock::shared();
    let l = RateLimiter::<u32>::bucket_with_clock(10.0, 100, clock.clone());
    for i in 0..100 {
        assert_eq!(l.when(&i), Duration::ZERO, "call {i}");
    }
    assert_eq!(l.when(&100), ms(100));
    assert_eq!(l.when(&101), ms(200));
    assert_eq!(l.when(&102), ms(300));
    assert_eq!(l.num_requeues(&100), 0, "not per item");
}

#[test]
fn bucket_refills_with_clock_time() {
    let clock = FakeClock::shared();
    let l = RateLimiter::<u32>::bucket_with_clock(10.0, 2, clock.clone());
    assert_eq!(l.when(&0), Duration::ZERO);
    assert_eq!(l.when(&0), Duration::ZERO);
    assert_eq!(l.when(&0), ms(100));
    clock.advance(ms(100)); // repays the debt only
    assert_eq!(l.when(&0), ms(100));
    clock.advance(Duration::from_secs(10)); // full again, capped at burst
    assert_eq!(l.when(&0), Duration::ZERO);
    assert_eq!(l.when(&0), Duration::ZERO);
    assert_eq!(l.when(&0), ms(100));
}

#[test]
fn bucket_edge_cases_burst_zero_and_infinite_qps() {
    let clock: SharedClock = FakeClock::shared();
    let never = RateLimiter::<u32>::bucket_with_clock(10.0, 0, clock.clone());
    assert_eq!(never.when(&1), NEVER);
    let free = RateLimiter::<u32>::bucket_with_clock(f64::INFINITY, 0, clock.clone());
    for _ in 0..1000 {
        assert_eq!(free.when(&1), Duration::ZERO);
    }
    let zero_rate = RateLimiter::<u32>::bucket_with_clock(0.0, 1, clock);
    assert_eq!(zero_rate.when(&1), Duration::ZERO);
    assert_eq!(zero_rate.when(&1), NEVER);
}

#[test]
fn max_of_returns_the_largest_and_every_limiter_records() {
    let a = RateLimiter::exponential(ms(1), Duration::from_secs(100));
    let b = RateLimiter::fast_slow(ms(3), Duration::from_secs(1), 1);
    let m = RateLimiter::max_of(vec![a.clone(), b.clone()]);
    assert_eq!(m.when(&1), ms(3)); // max(1, 3)
    assert_eq!(m.when(&1), Duration::from_secs(1)); // max(2, 1000)
    assert_eq!(a.num_requeues(&1), 2);
    assert_eq!(b.num_requeues(&1), 2);
    assert_eq!(m.num_requeues(&1), 2);
    m.forget(&1);
    assert_eq!(a.num_requeues(&1), 0);
    assert_eq!(b.num_requeues(&1), 0);
}

#[test]
fn with_max_wait_caps_the_delay() {
    let l = RateLimiter::exponential(Duration::from_secs(1), Duration::from_secs(1000))
        .with_max_wait(Duration::from_secs(3));
    let got: Vec<_> = (0..4).map(|_| l.when(&1)).collect();
    let s = Duration::from_secs;
    assert_eq!(got, vec![s(1), s(2), s(3), s(3)]);
    assert_eq!(l.num_requeues(&1), 4);
}

#[test]
fn default_controller_is_max_of_exponential_and_bucket() {
    let clock = FakeClock::shared();
    let l = RateLimiter::<String>::default_controller_with_clock(clock.clone());
    let key = |s: &str| s.to_string();
    let mut expected = ms(5);
    for _ in 0..18 {
        assert_eq!(l.when(&key("a")), expected);
        expected *= 2;
    }
    assert_eq!(l.when(&key("a")), Duration::from_secs(1000));
    // 19 tokens spent; 81 more distinct items fit the burst at 5 ms, then the bucket paces.
    for i in 0..81 {
        assert_eq!(l.when(&format!("b{i}")), ms(5), "b{i}");
    }
    assert_eq!(l.when(&key("c")), ms(100));
    assert_eq!(l.when(&key("d")), ms(200));
    assert_eq!(l.num_requeues(&key("a")), 19);
}

#[test]
fn secs_constructors_reject_bad_durations_without_panicking() {
    for (base, max) in [
        (f64::NAN, 1.0),
        (1.0, f64::NAN),
        (-1.0, 1.0),
        (0.1, f64::INFINITY),
        (2.0, 1.0),
        (1e300, 1e300),
    ] {
        let e = RateLimiter::<u32>::exponential_secs(base, max).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{base} {max}");
    }
    assert!(RateLimiter::<u32>::exponential_secs(0.005, 1000.0).is_ok());
    assert!(RateLimiter::<u32>::fast_slow_secs(-0.1, 1.0, 3).is_err());
    assert!(RateLimiter::<u32>::fast_slow_secs(0.1, 1.0, 3).is_ok());
    let clock: SharedClock = FakeClock::shared();
    for qps in [f64::NAN, -1.0] {
        let e = RateLimiter::<u32>::bucket_checked(qps, 10, clock.clone()).unwrap_err();
        assert_eq!(e.field(), Some("qps"));
    }
    assert!(RateLimiter::<u32>::bucket_checked(f64::INFINITY, 10, clock).is_ok());
    let l = RateLimiter::<u32>::exponential(ms(1), ms(2));
    assert!(l.clone().with_max_wait_secs(f64::NAN).is_err());
    assert!(l.with_max_wait_secs(1.0).is_ok());
}

// ---------------------------------------------------------------- metrics (§1.5)

#[test]
fn metrics_track_depth_adds_retries_latency_and_work() {
    let (clock, q) = fake_queue();
    q.add(1);
    clock.advance(Duration::from_secs(1));
    q.add(1); // coalesced: not an add, and the first add's time stays
    clock.advance(Duration::from_secs(1));
    q.add(2);
    let m = q.metrics();
    assert_eq!((m.depth, m.adds, m.retries), (2, 2, 0));
    clock.advance(Duration::from_secs(2));
    let x = q.get().unwrap();
    let m = q.metrics();
    assert_eq!(m.depth, 1);
    assert_eq!(m.queue_duration.count, 1);
    assert_eq!(m.queue_duration.sum, 4.0, "measured from the first add");
    assert_eq!(
        m.queue_duration.buckets[9], 1,
        "4 s falls in the (1, 10] bucket"
    );
    clock.advance(Duration::from_secs(3));
    let y = q.get().unwrap();
    clock.advance(Duration::from_secs(1));
    let m = q.metrics();
    assert_eq!(m.longest_running_processor_seconds, 4.0);
    assert_eq!(m.unfinished_work_seconds, 5.0);
    q.done(&x);
    q.done(&y);
    let m = q.metrics();
    assert_eq!(m.work_duration.count, 2);
    assert_eq!(m.work_duration.sum, 5.0);
    assert_eq!(m.unfinished_work_seconds, 0.0);
    assert_eq!(m.longest_running_processor_seconds, 0.0);
    assert_eq!(m.depth, 0);
    q.add_after(3, ms(1));
    q.add_after(3, Duration::ZERO);
    assert_eq!(q.metrics().retries, 2);
    let cumulative = m.queue_duration.cumulative();
    assert_eq!(cumulative.len(), 11);
    assert_eq!(cumulative[10], (f64::INFINITY, 2));
}
