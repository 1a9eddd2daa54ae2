//! Rate limiters: how long an item should wait before it is retried. The trait
//! [`TypedRateLimiter`] is client-go's `TypedRateLimiter[T]`; the limiters here are its
//! `ItemExponentialFailureRateLimiter`, `ItemFastSlowRateLimiter`, `BucketRateLimiter`
//! (golang.org/x/time/rate reservation semantics), `MaxOfRateLimiter` and
//! `WithMaxWaitRateLimiter`, with the numbers of `k8s-semantics.md` §1.4. [`RateLimiter`] is
//! the cheap-to-clone, type-erased handle that the queue and the bindings hold.
//!
//! Limiters only compute delays; waiting is left to the queue (`add_after`), and time comes
//! from the injected [`Clock`](crate::clock::Clock) (only the bucket reads it).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, Result, duration_from_secs};

/// The delay meaning "never": Go's `rate.InfDuration` (the largest `time.Duration`, ≈ 292
/// years). A bucket that can never grant a token (burst 0, or rate 0 once drained) returns it.
pub const NEVER: Duration = Duration::from_nanos(i64::MAX as u64);

/// client-go's `DefaultControllerRateLimiter` per-item base delay.
pub const DEFAULT_CONTROLLER_BASE_DELAY: Duration = Duration::from_millis(5);
/// client-go's `DefaultControllerRateLimiter` per-item maximum delay.
pub const DEFAULT_CONTROLLER_MAX_DELAY: Duration = Duration::from_secs(1000);
/// client-go's `DefaultControllerRateLimiter` overall rate (tokens per second).
pub const DEFAULT_CONTROLLER_QPS: f64 = 10.0;
/// client-go's `DefaultControllerRateLimiter` overall burst.
pub const DEFAULT_CONTROLLER_BURST: u32 = 100;

/// Decides how long an item waits before it is retried (client-go `TypedRateLimiter`).
pub trait TypedRateLimiter<K>: Send + Sync {
    /// The delay before `item` may be retried; records one more failure for per-item limiters.
    fn when(&self, item: &K) -> Duration;
    /// Clears the item's failure history (it succeeded, or is given up on).
    fn forget(&self, item: &K);
    /// How many failures are on record for `item`.
    fn num_requeues(&self, item: &K) -> u64;
}

/// `base · 2^failures`, capped at `max`, computed without overflow: a large failure count
/// saturates at `max` instead of wrapping to zero (kubernetes#31396, reliability K12).
/// `failures` is the number of failures recorded *before* this one, so the first call of an
/// item gets `base`. A zero `base` gives zero, as upstream.
pub fn exponential_backoff(base: Duration, max: Duration, failures: u64) -> Duration {
    if base.is_zero() {
        return Duration::ZERO;
    }
    // Duration holds < 2^94 ns, so any shift of 34 or more already exceeds every Duration.
    if failures >= 127 {
        return max;
    }
    let backoff = base.as_nanos().checked_mul(1u128 << failures);
    match backoff {
        Some(ns) if ns <= max.as_nanos() => duration_from_nanos_u128(ns),
        _ => max,
    }
}

fn duration_from_nanos_u128(ns: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(ns / NANOS_PER_SEC).unwrap_or(u64::MAX);
    Duration::new(secs, (ns % NANOS_PER_SEC) as u32)
}

/// Per-item failure counts, the state of the per-item limiters.
struct Failures<K> {
    counts: Mutex<HashMap<K, u64>>,
}

impl<K: Hash + Eq + Clone> Failures<K> {
    fn new() -> Self {
        Failures {
            counts: Mutex::new(HashMap::new()),
        }
    }
    /// Increments the item's count and returns the count *before* the increment. The key is
    /// cloned only the first time an item fails.
    fn bump(&self, item: &K) -> u64 {
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(item) {
            let before = *n;
            *n = n.saturating_add(1);
            return before;
        }
        counts.insert(item.clone(), 1);
        0
    }
    fn forget(&self, item: &K) {
        self.counts.lock().remove(item);
    }
    fn get(&self, item: &K) -> u64 {
        self.counts.lock().get(item).copied().unwrap_or(0)
    }
    #[cfg(test)]
    fn set(&self, item: &K, n: u64) {
        self.counts.lock().insert(item.clone(), n);
    }
}

/// `base · 2^n` per item, capped at `max` (client-go `ItemExponentialFailureRateLimiter`).
pub struct ItemExponentialFailureRateLimiter<K> {
    base: Duration,
    max: Duration,
    failures: Failures<K>,
}

impl<K: Hash + Eq + Clone> ItemExponentialFailureRateLimiter<K> {
    pub fn new(base: Duration, max: Duration) -> Self {
        ItemExponentialFailureRateLimiter {
            base,
            max,
            failures: Failures::new(),
        }
    }
}

impl<K: Hash + Eq + Clone + Send> TypedRateLimiter<K> for ItemExponentialFailureRateLimiter<K> {
    fn when(&self, item: &K) -> Duration {
        exponential_backoff(self.base, self.max, self.failures.bump(item))
    }
    fn forget(&self, item: &K) {
        self.failures.forget(item)
    }
    fn num_requeues(&self, item: &K) -> u64 {
        self.failures.get(item)
    }
}

/// `fast` for the first `max_fast_attempts` failures of an item, `slow` afterwards
/// (client-go `ItemFastSlowRateLimiter`).
pub struct ItemFastSlowRateLimiter<K> {
    fast: Duration,
    slow: Duration,
    max_fast_attempts: u64,
    failures: Failures<K>,
}

impl<K: Hash + Eq + Clone> ItemFastSlowRateLimiter<K> {
    pub fn new(fast: Duration, slow: Duration, max_fast_attempts: u64) -> Self {
        ItemFastSlowRateLimiter {
            fast,
            slow,
            max_fast_attempts,
            failures: Failures::new(),
        }
    }
}

impl<K: Hash + Eq + Clone + Send> TypedRateLimiter<K> for ItemFastSlowRateLimiter<K> {
    fn when(&self, item: &K) -> Duration {
        // Upstream increments first, then compares: the first `max_fast_attempts` are fast.
        let failures = self.failures.bump(item).saturating_add(1);
        if failures <= self.max_fast_attempts {
            self.fast
        } else {
            self.slow
        }
    }
    fn forget(&self, item: &K) {
        self.failures.forget(item)
    }
    fn num_requeues(&self, item: &K) -> u64 {
        self.failures.get(item)
    }
}

/// One token bucket shared by all items (client-go `BucketRateLimiter` over
/// `golang.org/x/time/rate.Limiter`): starts full, refills at `qps` tokens per second up to
/// `burst`, and every `when` reserves one token, returning how long until it is available.
pub struct BucketRateLimiter {
    qps: f64,
    burst: u32,
    clock: SharedClock,
    state: Mutex<BucketState>,
}

struct BucketState {
    tokens: f64,
    /// When `tokens` was last brought up to date; `None` until the first reservation (Go's
    /// zero time, so the first advance fills the bucket).
    last: Option<Instant>,
    /// For `qps == 0` Go spends the burst itself; this is what is left of it.
    zero_rate_burst: u32,
}

impl BucketRateLimiter {
    /// # Panics
    /// If `qps` is NaN or negative (use [`RateLimiter::bucket_checked`] for user input).
    pub fn new(qps: f64, burst: u32, clock: SharedClock) -> Self {
        assert!(
            qps >= 0.0,
            "bucket qps must be a non-negative number, got {qps}"
        );
        BucketRateLimiter {
            qps,
            burst,
            clock,
            state: Mutex::new(BucketState {
                tokens: f64::from(burst),
                last: None,
                zero_rate_burst: burst,
            }),
        }
    }

    /// Reserves one token now and returns the delay until it may be used (Go's
    /// `Reserve().Delay()`), or [`NEVER`] if the bucket can never grant it.
    pub fn reserve(&self) -> Duration {
        if self.qps == f64::INFINITY {
            return Duration::ZERO;
        }
        let mut st = self.state.lock();
        if self.qps == 0.0 {
            if st.zero_rate_burst >= 1 {
                st.zero_rate_burst -= 1;
                return Duration::ZERO;
            }
            return NEVER;
        }
        if self.burst < 1 {
            return NEVER;
        }
        let now = self.clock.now();
        // Go's `advance`: a clock reading older than `last` counts as no time passed.
        let elapsed = match st.last {
            None => f64::INFINITY,
            Some(last) => now.saturating_duration_since(last).as_secs_f64(),
        };
        let mut tokens = st.tokens + elapsed * self.qps;
        let burst = f64::from(self.burst);
        if tokens > burst || tokens.is_nan() {
            tokens = burst;
        }
        tokens -= 1.0;
        let wait = if tokens < 0.0 {
            // Go truncates `seconds · 1e9` to integer nanoseconds.
            let ns = (-tokens / self.qps) * 1e9;
            if ns >= NEVER.as_nanos() as f64 {
                NEVER
            } else {
                Duration::from_nanos(ns as u64)
            }
        } else {
            Duration::ZERO
        };
        // The reservation is `ok` (burst ≥ 1, wait ≤ InfDuration), so the state moves on.
        st.tokens = tokens;
        st.last = Some(now);
        wait
    }
}

impl<K> TypedRateLimiter<K> for BucketRateLimiter {
    fn when(&self, _item: &K) -> Duration {
        self.reserve()
    }
    fn forget(&self, _item: &K) {}
    fn num_requeues(&self, _item: &K) -> u64 {
        0
    }
}

/// The largest delay of several limiters, every one of which records the failure
/// (client-go `MaxOfRateLimiter`).
pub struct MaxOfRateLimiter<K> {
    limiters: Vec<RateLimiter<K>>,
}

impl<K> TypedRateLimiter<K> for MaxOfRateLimiter<K> {
    fn when(&self, item: &K) -> Duration {
        self.limiters
            .iter()
            .map(|l| l.when(item))
            .max()
            .unwrap_or(Duration::ZERO)
    }
    fn forget(&self, item: &K) {
        for l in &self.limiters {
            l.forget(item);
        }
    }
    fn num_requeues(&self, item: &K) -> u64 {
        self.limiters
            .iter()
            .map(|l| l.num_requeues(item))
            .max()
            .unwrap_or(0)
    }
}

/// Another limiter's delay, capped at `max_delay` (client-go `WithMaxWaitRateLimiter`).
pub struct WithMaxWaitRateLimiter<K> {
    inner: RateLimiter<K>,
    max_delay: Duration,
}

impl<K> TypedRateLimiter<K> for WithMaxWaitRateLimiter<K> {
    fn when(&self, item: &K) -> Duration {
        self.inner.when(item).min(self.max_delay)
    }
    fn forget(&self, item: &K) {
        self.inner.forget(item)
    }
    fn num_requeues(&self, item: &K) -> u64 {
        self.inner.num_requeues(item)
    }
}

/// A shared, type-erased rate limiter: what a [`WorkQueue`](super::WorkQueue) holds and what
/// the bindings hand around. Cloning shares the state (failure counts, tokens).
pub struct RateLimiter<K>(Arc<dyn TypedRateLimiter<K>>);

impl<K> Clone for RateLimiter<K> {
    fn clone(&self) -> Self {
        RateLimiter(self.0.clone())
    }
}

impl<K> fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RateLimiter")
    }
}

impl<K> RateLimiter<K> {
    /// The delay before `item` may be retried (records a failure for per-item limiters).
    pub fn when(&self, item: &K) -> Duration {
        self.0.when(item)
    }
    /// Clears `item`'s failure history.
    pub fn forget(&self, item: &K) {
        self.0.forget(item)
    }
    /// Failures on record for `item`.
    pub fn num_requeues(&self, item: &K) -> u64 {
        self.0.num_requeues(item)
    }
    /// Wraps any limiter.
    pub fn from_limiter(limiter: impl TypedRateLimiter<K> + 'static) -> Self {
        RateLimiter(Arc::new(limiter))
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> RateLimiter<K> {
    /// Per-item `base · 2^(n-1)` for the n-th consecutive failure, capped (and saturating)
    /// at `max`.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Self::from_limiter(ItemExponentialFailureRateLimiter::new(base, max))
    }

    /// [`RateLimiter::exponential`] from float seconds (bindings): NaN, negative, infinite or
    /// out-of-range values and `base > max` are `Invalid`.
    pub fn exponential_secs(base: f64, max: f64) -> Result<Self> {
        let base_d = duration_from_secs("base", base)?;
        let max_d = duration_from_secs("max", max)?;
        if base_d > max_d {
            return Err(Error::invalid(
                "base",
                format!("must not exceed max ({base} > {max})"),
            ));
        }
        Ok(Self::exponential(base_d, max_d))
    }

    /// Per-item `fast` for the first `max_fast_attempts` failures, then `slow`.
    pub fn fast_slow(fast: Duration, slow: Duration, max_fast_attempts: u64) -> Self {
        Self::from_limiter(ItemFastSlowRateLimiter::new(fast, slow, max_fast_attempts))
    }

    /// [`RateLimiter::fast_slow`] from float seconds (bindings), validated.
    pub fn fast_slow_secs(fast: f64, slow: f64, max_fast_attempts: u64) -> Result<Self> {
        Ok(Self::fast_slow(
            duration_from_secs("fast", fast)?,
            duration_from_secs("slow", slow)?,
            max_fast_attempts,
        ))
    }

    /// One token bucket over all items, `qps` tokens per second, `burst` deep, starting
    /// full, on the system clock. `qps = f64::INFINITY` never delays; `burst = 0` delays
    /// [`NEVER`].
    ///
    /// # Panics
    /// If `qps` is NaN or negative; see [`RateLimiter::bucket_checked`].
    pub fn bucket(qps: f64, burst: u32) -> Self {
        Self::bucket_with_clock(qps, burst, SystemClock::shared())
    }

    /// [`RateLimiter::bucket`] on an injected clock.
    pub fn bucket_with_clock(qps: f64, burst: u32, clock: SharedClock) -> Self {
        Self::from_limiter(BucketRateLimiter::new(qps, burst, clock))
    }

    /// [`RateLimiter::bucket_with_clock`] for user input: NaN or negative `qps` is `Invalid`.
    pub fn bucket_checked(qps: f64, burst: u32, clock: SharedClock) -> Result<Self> {
        if qps.is_nan() || qps < 0.0 {
            return Err(Error::invalid(
                "qps",
                format!("must be a non-negative number, got {qps}"),
            ));
        }
        Ok(Self::bucket_with_clock(qps, burst, clock))
    }

    /// The largest delay of `limiters`; every one of them records each failure.
    pub fn max_of(limiters: Vec<RateLimiter<K>>) -> Self {
        Self::from_limiter(MaxOfRateLimiter { limiters })
    }

    /// This limiter's delay capped at `max_delay`.
    pub fn with_max_wait(self, max_delay: Duration) -> Self {
        Self::from_limiter(WithMaxWaitRateLimiter {
            inner: self,
            max_delay,
        })
    }

    /// [`RateLimiter::with_max_wait`] from float seconds (bindings), validated.
    pub fn with_max_wait_secs(self, max_delay: f64) -> Result<Self> {
        Ok(self.with_max_wait(duration_from_secs("max_delay", max_delay)?))
    }

    /// client-go's `DefaultControllerRateLimiter`: the max of per-item exponential
    /// (5 ms … 1000 s) and an overall bucket (10 qps, burst 100), on the system clock.
    pub fn default_controller() -> Self {
        Self::default_controller_with_clock(SystemClock::shared())
    }

    /// [`RateLimiter::default_controller`] with the bucket on an injected clock.
    pub fn default_controller_with_clock(clock: SharedClock) -> Self {
        Self::max_of(vec![
            Self::exponential(DEFAULT_CONTROLLER_BASE_DELAY, DEFAULT_CONTROLLER_MAX_DELAY),
            Self::bucket_with_clock(DEFAULT_CONTROLLER_QPS, DEFAULT_CONTROLLER_BURST, clock),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_is_base_times_power_of_two_then_max() {
        let base = Duration::from_millis(5);
        let max = Duration::from_secs(1000);
        assert_eq!(exponential_backoff(base, max, 0), base);
        assert_eq!(exponential_backoff(base, max, 1), Duration::from_millis(10));
        assert_eq!(
            exponential_backoff(base, max, 17),
            Duration::from_millis(655_360)
        );
        assert_eq!(exponential_backoff(base, max, 18), max);
    }

    /// K12: saturates, never wraps to zero, monotone over the whole u32 range and beyond.
    /// The count is checked densely near every power-of-two boundary and sparsely elsewhere,
    /// which covers every distinct code path of the pure function cheaply.
    #[test]
    fn exponential_backoff_saturates_for_huge_failure_counts() {
        let cases = [
            (Duration::from_nanos(1), Duration::from_secs(1000)),
            (Duration::from_millis(5), Duration::from_secs(1000)),
            (Duration::from_secs(1), Duration::MAX),
            (Duration::MAX, Duration::MAX),
        ];
        for (base, max) in cases {
            let mut prev = Duration::ZERO;
            let mut n: u64 = 0;
            while n <= u64::from(u32::MAX) + 2 {
                let d = exponential_backoff(base, max, n);
                assert!(
                    d > Duration::ZERO && d <= max,
                    "{base:?} {max:?} n={n}: {d:?}"
                );
                assert!(d >= prev, "not monotone at n={n}");
                prev = d;
                n = if n < 256 { n + 1 } else { n * 2 + 1 };
            }
            assert_eq!(exponential_backoff(base, max, u64::MAX), max);
        }
    }

    #[test]
    fn stored_failure_count_saturates_instead_of_wrapping() {
        let l = ItemExponentialFailureRateLimiter::<u32>::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
        );
        l.failures.set(&7, u64::MAX - 1);
        for _ in 0..3 {
            assert_eq!(l.when(&7), Duration::from_secs(1000));
        }
        assert_eq!(l.num_requeues(&7), u64::MAX);
    }

    #[test]
    fn bucket_zero_rate_spends_the_burst_then_never() {
        let clock: SharedClock = crate::clock::FakeClock::shared();
        let b = BucketRateLimiter::new(0.0, 2, clock);
        assert_eq!(b.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), NEVER);
    }
}
