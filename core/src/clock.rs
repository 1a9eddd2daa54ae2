//! Time, injected. Everything in floyd that waits or stamps reads an [`Clock`]: the
//! [`SystemClock`] in production and a [`FakeClock`] in tests and the simulator, where
//! `advance` moves time and wakes every waiter that registered with the clock. Nothing else
//! in the crate may call `Instant::now()` (see `clippy.toml`).

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};

/// A source of monotonic and wall time that components can also wait on.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic now; only differences between two readings of one clock mean anything.
    fn now(&self) -> Instant;
    /// Wall-clock now, for timestamps stored in objects.
    fn wall(&self) -> SystemTime;
    /// How long a thread waiting for `deadline` should block in real time before it looks
    /// again: the remaining time for a real clock; `None` for a fake clock, whose waiters
    /// block until [`Clock::on_advance`] wakes them (or something else does).
    fn park_timeout(&self, deadline: Instant) -> Option<Duration>;
    /// Registers a callback run after every jump of a fake clock. Callbacks whose owner has
    /// gone (the `Weak` no longer upgrades) are dropped. A real clock ignores this.
    fn on_advance(&self, waker: Weak<dyn Fn() + Send + Sync>);
    /// Blocks the calling thread for `d` of this clock's time.
    fn sleep(&self, d: Duration);
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place real time is read
    fn now(&self) -> Instant {
        Instant::now()
    }
    #[allow(clippy::disallowed_methods)]
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
    fn park_timeout(&self, deadline: Instant) -> Option<Duration> {
        Some(deadline.saturating_duration_since(self.now()))
    }
    fn on_advance(&self, _waker: Weak<dyn Fn() + Send + Sync>) {}
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// A clock that moves only when told to. Starts at an arbitrary monotonic origin and at
/// wall time 2026-01-01T00:00:00Z so stamps are reproducible.
pub struct FakeClock {
    origin: Instant,
    wall_origin: SystemTime,
    state: Mutex<FakeState>,
    moved: Condvar,
}

struct FakeState {
    elapsed: Duration,
    /// Seconds the wall clock was stepped by [`FakeClock::jump_wall`] (monotonic time is not).
    wall_jump: i64,
    wakers: Vec<Weak<dyn Fn() + Send + Sync>>,
}

/// 2026-01-01T00:00:00Z in seconds since the Unix epoch.
const FAKE_WALL_ORIGIN_SECS: u64 = 1_767_225_600;

impl fmt::Debug for FakeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeClock {
    #[allow(clippy::disallowed_methods)] // only an origin; fake time never reads it again
    pub fn new() -> FakeClock {
        FakeClock {
            origin: Instant::now(),
            wall_origin: SystemTime::UNIX_EPOCH + Duration::from_secs(FAKE_WALL_ORIGIN_SECS),
            state: Mutex::new(FakeState {
                elapsed: Duration::ZERO,
                wall_jump: 0,
                wakers: Vec::new(),
            }),
            moved: Condvar::new(),
        }
    }

    pub fn shared() -> Arc<FakeClock> {
        Arc::new(FakeClock::new())
    }

    /// Time elapsed since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.state.lock().elapsed
    }

    /// Moves time forward by `d` and wakes every waiter.
    pub fn advance(&self, d: Duration) {
        let wakers = {
            let mut st = self.state.lock();
            st.elapsed = st.elapsed.saturating_add(d);
            st.wakers.retain(|w| w.strong_count() > 0);
            st.wakers.clone()
        };
        self.moved.notify_all();
        // Run callbacks outside the lock: they may read the clock.
        for w in wakers {
            if let Some(f) = w.upgrade() {
                f();
            }
        }
    }

    /// Moves time forward to `t` if it lies in the future.
    /// Steps the wall clock by `secs` (either way), as an administrator or NTP stepping the
    /// system clock would; monotonic time does not move. Nobody is woken.
    pub fn jump_wall(&self, secs: i64) {
        let mut st = self.state.lock();
        st.wall_jump = st.wall_jump.saturating_add(secs);
    }

    pub fn advance_to(&self, t: Instant) {
        let now = self.now();
        if t > now {
            self.advance(t - now);
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.origin + self.state.lock().elapsed
    }
    fn wall(&self) -> SystemTime {
        let st = self.state.lock();
        let t = self.wall_origin + st.elapsed;
        let jump = Duration::from_secs(st.wall_jump.unsigned_abs());
        if st.wall_jump >= 0 {
            t + jump
        } else {
            t.checked_sub(jump).unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }
    fn park_timeout(&self, _deadline: Instant) -> Option<Duration> {
        None
    }
    fn on_advance(&self, waker: Weak<dyn Fn() + Send + Sync>) {
        self.state.lock().wakers.push(waker);
    }
    fn sleep(&self, d: Duration) {
        let mut st = self.state.lock();
        let until = st.elapsed.saturating_add(d);
        while st.elapsed < until {
            self.moved.wait(&mut st);
        }
    }
}

/// Wall time that moves with the monotonic clock: read once from the wall clock when made,
/// then advanced by monotonic time only. A component that stamps and compares times with
/// it is unaffected by the wall clock being stepped while it runs (an administrator, NTP, a
/// VM resumed): its timestamps never go backwards, and no deadline fires early or late
/// because of a step. It is re-anchored when the component is made again (a store reopened,
/// a control plane rebuilt), so steps are picked up across restarts.
#[derive(Clone, Copy, Debug)]
pub struct WallAnchor {
    wall: SystemTime,
    mono: Instant,
}

impl WallAnchor {
    pub fn new(clock: &dyn Clock) -> WallAnchor {
        WallAnchor {
            wall: clock.wall(),
            mono: clock.now(),
        }
    }

    /// The anchored wall time now.
    pub fn wall(&self, clock: &dyn Clock) -> SystemTime {
        self.wall + clock.now().saturating_duration_since(self.mono)
    }
}

/// Formats a wall time as an RFC 3339 UTC timestamp with second precision
/// (`2026-01-01T00:00:00Z`), the form Kubernetes uses in `metadata.creationTimestamp`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let (h, mi, sec) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}Z");
    }
    // Digits into a fixed buffer: every create stamps a time, and `format!` cost a sixth
    // of a create.
    let mut b = *b"0000-00-00T00:00:00Z";
    for (at, v, width) in [
        (0, y as u64, 4),
        (5, m as u64, 2),
        (8, d as u64, 2),
        (11, h, 2),
        (14, mi, 2),
        (17, sec, 2),
    ] {
        let mut v = v;
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    // ASCII digits and separators only, so the conversion cannot fail.
    String::from_utf8(b.to_vec()).unwrap_or_default()
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days` algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn fake_clock_moves_only_when_advanced_and_wakes_waiters() {
        let clock = FakeClock::shared();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let waker: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        clock.on_advance(Arc::downgrade(&waker));
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now() - t0, Duration::from_secs(5));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        drop(waker);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "dropped wakers are not called"
        );
        assert_eq!(clock.park_timeout(clock.now()), None);
    }

    #[test]
    fn fake_sleep_returns_only_after_enough_fake_time() {
        let clock = FakeClock::shared();
        let c = clock.clone();
        let t = std::thread::spawn(move || {
            let start = c.elapsed();
            c.sleep(Duration::from_secs(10));
            c.elapsed() - start
        });
        // Keep time moving until the sleeper wakes; bounded so a broken sleep fails, not hangs.
        for _ in 0..100_000 {
            if t.is_finished() {
                break;
            }
            clock.advance(Duration::from_millis(100));
            std::thread::yield_now();
        }
        let slept = t.join().unwrap();
        assert!(slept >= Duration::from_secs(10), "woke after {slept:?}");
    }

    #[test]
    fn rfc3339_matches_the_general_format_everywhere() {
        let slow = |t: SystemTime| {
            let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
            let (y, m, d) = civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                (rem % 3600) / 60,
                rem % 60
            )
        };
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Up to year ~12000: past 9999 takes the general path, and must agree too.
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(x % 320_000_000_000);
            assert_eq!(rfc3339(t), slow(t));
        }
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert!(rfc3339(far).starts_with("11476-"), "{}", rfc3339(far));
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(FAKE_WALL_ORIGIN_SECS + 3661);
        assert_eq!(rfc3339(t), "2026-01-01T01:01:01Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
