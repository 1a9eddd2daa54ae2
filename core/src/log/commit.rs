//! Group commit: appenders that need their frames durable share syncs. The first waiter that
//! finds no sync running becomes the *leader*: it syncs everything published so far (the
//! caller's `sync` closure decides what that is), publishes the new synced position, and
//! wakes exactly the waiters that position covers, as a tree: each woken waiter wakes half of
//! the ones handed to it before it returns, so a group of n takes about log2(n) rounds of
//! unparks spread over the cores, not n in a row on the leader's. Waiters that are
//! not covered stay parked; if nobody leads any more, one of them is woken to lead the next
//! group, which starts while the previous leader is still waking its group.
//!
//! Nothing here touches storage or frames: the log supplies the sync as a closure and maps
//! [`Waited::Stopped`] to its own error (poisoned or closed). The protocol is a handful of
//! atomics plus a short-held waiter list; it is compiled under `cfg(loom)` and modelled in
//! `core/tests/loom_commit.rs`.
//!
//! Why not a mutex and a condition variable: with many appenders on few cores, a condvar's
//! `notify_all` makes every woken thread re-take the mutex one after another (a serial chain
//! of context switches), and the next group cannot start until that chain has passed the
//! lock. Here a woken waiter checks one atomic and returns; no lock is on its path.

use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering, thread};

/// How a wait ended without an error of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// Everything before the waited-for end is synced.
    Synced,
    /// [`GroupCommit::stop`] was called (the log closed or was poisoned) before that.
    Stopped,
}

/// Most waiters one group can hold; a bound on the waiter list (one entry per parked thread,
/// so it is only reached with more threads than this blocked at once, and then the list
/// simply grows: the bound sizes the preallocation, it is not a limit on callers).
const WAITERS_PREALLOCATED: usize = 256;

struct Waiter {
    end: u64,
    thread: thread::Thread,
    slot: Arc<Slot>,
}

/// What a waker leaves a parked waiter.
struct Slot {
    /// Set (release) by the waker before it unparks, so the parked thread can tell a real
    /// wake from a spurious return of `park`.
    woken: AtomicBool,
    /// Covered waiters this one wakes in turn once it runs (set before `woken`): a group is
    /// woken as a tree, its unparks spread over the woken threads and cores instead of one
    /// waker making them all in a row.
    hand: Mutex<Vec<Waiter>>,
}

/// The shared state of group commit.
pub struct GroupCommit {
    /// Everything before this position is durable. Only a leader writes it.
    synced: AtomicU64,
    /// A leader is running a sync.
    leading: AtomicBool,
    /// Set once; every waiter returns `Stopped` unless already synced.
    stopped: AtomicBool,
    /// Set once, before `stopped`, when a sync failed: no sync runs after it, because a
    /// retried sync may report success for data the failed one dropped ("fsyncgate").
    failed: AtomicBool,
    /// Completed syncs that moved `synced`.
    syncs: AtomicU64,
    /// Parked waiters. A waiter registers only after checking, under this lock, that a
    /// leader is running (or it would never be woken); a waker updates the atomics first and
    /// then takes this lock, so every waiter either sees the update or is in the list.
    waiters: Mutex<Vec<Waiter>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("synced", &self.synced.load(Ordering::Relaxed))
            .field("leading", &self.leading.load(Ordering::Relaxed))
            .field("stopped", &self.stopped.load(Ordering::Relaxed))
            .finish()
    }
}

impl GroupCommit {
    /// Starts with everything before `synced` durable.
    pub fn new(synced: u64) -> GroupCommit {
        GroupCommit {
            synced: AtomicU64::new(synced),
            leading: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            waiters: Mutex::new(Vec::with_capacity(WAITERS_PREALLOCATED)),
        }
    }

    /// Everything before this position is durable.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// How many syncs moved the synced position.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Blocks until everything before `end` is synced, leading syncs when nobody else is.
    /// `sync(from)` makes durable what is published past `from` and returns the new synced
    /// position (`from` if nothing new is published). A sync error is returned to the leader
    /// that ran it and stops group commit: every other waiter returns `Stopped`.
    pub fn wait<E>(
        &self,
        end: u64,
        mut sync: impl FnMut(u64) -> Result<u64, E>,
    ) -> Result<Waited, E> {
        loop {
            if self.synced.load(Ordering::Acquire) >= end {
                return Ok(Waited::Synced);
            }
            if self.stopped.load(Ordering::Acquire) {
                return Ok(Waited::Stopped);
            }
            if self.try_begin() {
                let from = self.synced.load(Ordering::Relaxed);
                let Some(to) = self.lead(from, &mut sync, end)? else {
                    return Ok(Waited::Stopped);
                };
                if to == from && to < end {
                    // Nothing new is durable: a frame before ours is claimed but not yet
                    // published. Its producer needs a CPU more than we do.
                    thread::yield_now();
                }
                continue;
            }
            self.park(end);
        }
    }

    /// Runs one sync if nobody is leading (the background thread's periodic sync, and the
    /// final one on close, which still runs after [`GroupCommit::stop`]). `None` if another
    /// thread leads or an earlier sync failed; otherwise the result of the sync.
    pub fn try_sync<E>(
        &self,
        mut sync: impl FnMut(u64) -> Result<u64, E>,
    ) -> Option<Result<u64, E>> {
        if !self.try_begin() {
            return None;
        }
        let from = self.synced.load(Ordering::Relaxed);
        self.lead(from, &mut sync, u64::MAX).transpose()
    }

    /// Stops group commit: every parked waiter wakes, and every waiter not yet synced returns
    /// `Stopped`. A sync in progress still completes and publishes its position. Idempotent.
    pub fn stop(&self) {
        self.stop_waiters();
    }

    /// Stops group commit for good after a storage failure outside a sync (the log is
    /// poisoned): as [`GroupCommit::stop`], and no sync starts after this returns.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.stop_waiters();
    }

    fn stop_waiters(&self) {
        self.stopped.store(true, Ordering::Release);
        let all = std::mem::take(&mut *self.waiters.lock());
        for w in all {
            wake(w);
        }
    }

    fn try_begin(&self) -> bool {
        !self.leading.load(Ordering::Relaxed)
            && self
                .leading
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// The leader's part: sync, publish the position, hand leadership back, wake the covered
    /// waiters. `own_end` is the leader's own wait (`u64::MAX` for none): a leader that stays
    /// uncovered leads again itself, so it does not need a successor woken. `None` (no sync)
    /// once a sync has failed.
    fn lead<E>(
        &self,
        from: u64,
        sync: &mut impl FnMut(u64) -> Result<u64, E>,
        own_end: u64,
    ) -> Result<Option<u64>, E> {
        // `failed` is stored before a failed leader releases `leading`, and `try_begin`
        // acquired `leading`: a failure is always seen here.
        if self.failed.load(Ordering::Acquire) {
            self.leading.store(false, Ordering::Release);
            return Ok(None);
        }
        // A panicking sync must not leave `leading` set with waiters parked behind it.
        let guard = PanicStop(self);
        let r = sync(from);
        std::mem::forget(guard);
        if let Ok(to) = r
            && to > from
        {
            self.synced.store(to, Ordering::Release);
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        match r {
            Ok(to) => {
                self.leading.store(false, Ordering::Release);
                self.wake_covered(to, own_end <= to || own_end == u64::MAX);
                Ok(Some(to))
            }
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                self.leading.store(false, Ordering::Release);
                self.stop_waiters();
                Err(e)
            }
        }
    }

    /// Wakes every waiter whose end `synced` covers and, if `successor` and nobody leads,
    /// one uncovered waiter to lead the next group (woken first, so its sync overlaps the
    /// rest of the wake-ups).
    fn wake_covered(&self, synced: u64, successor: bool) {
        let mut covered = Vec::new();
        let next = {
            let mut list = self.waiters.lock();
            let mut i = 0;
            while i < list.len() {
                if list[i].end <= synced {
                    covered.push(list.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            if successor && !list.is_empty() && !self.leading.load(Ordering::Acquire) {
                // The lowest end: its group is the oldest.
                let k = (0..list.len())
                    .min_by_key(|&k| list[k].end)
                    .expect("not empty");
                Some(list.swap_remove(k))
            } else {
                None
            }
        };
        if let Some(n) = next {
            wake(n);
        }
        fan_out(covered);
    }

    /// Parks until woken, unless (checked under the list lock) nobody leads, `end` is synced
    /// or group commit stopped: then the caller loops and re-checks.
    fn park(&self, end: u64) {
        let slot = Arc::new(Slot {
            woken: AtomicBool::new(false),
            hand: Mutex::new(Vec::new()),
        });
        {
            let mut list = self.waiters.lock();
            if self.stopped.load(Ordering::Acquire)
                || self.synced.load(Ordering::Acquire) >= end
                || !self.leading.load(Ordering::Acquire)
            {
                return;
            }
            list.push(Waiter {
                end,
                thread: thread::current(),
                slot: slot.clone(),
            });
        }
        while !slot.woken.load(Ordering::Acquire) {
            thread::park();
        }
        let hand = std::mem::take(&mut *slot.hand.lock());
        fan_out(hand);
    }
}

/// Stops group commit if a leader's sync unwinds.
struct PanicStop<'a>(&'a GroupCommit);

impl Drop for PanicStop<'_> {
    fn drop(&mut self) {
        self.0.failed.store(true, Ordering::Release);
        self.0.leading.store(false, Ordering::Release);
        self.0.stop_waiters();
    }
}

fn wake(w: Waiter) {
    w.slot.woken.store(true, Ordering::Release);
    w.thread.unpark();
}

/// Wakes every waiter in `list`, handing each woken one half of those still to wake (it
/// wakes them when it runs, in turn handing on halves): this thread makes about log2(n)
/// unparks, not n.
fn fan_out(mut list: Vec<Waiter>) {
    while let Some(w) = list.pop() {
        let theirs = list.split_off(list.len() - list.len() / 2);
        if !theirs.is_empty() {
            *w.slot.hand.lock() = theirs;
        }
        wake(w);
    }
}
