//! The synchronisation shim: atomics and cells come from here so that `cfg(loom)` builds
//! swap in loom's model-checked versions. Lock-free code in `log` uses only these.

#![allow(unused_imports, dead_code)]

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::thread;

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(not(loom))]
pub(crate) use std::thread;

/// `std::cell::UnsafeCell` with loom's closure API, so code is written once for both.
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
#[allow(dead_code)]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// A mutex with parking_lot's guard API (no poisoning), backed by loom's under `cfg(loom)`.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(
    #[cfg(not(loom))] parking_lot::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        return Mutex(parking_lot::Mutex::new(value));
        #[cfg(loom)]
        return Mutex(loom::sync::Mutex::new(value));
    }
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        return self.0.lock();
        #[cfg(loom)]
        return self.0.lock().unwrap_or_else(|e| e.into_inner());
    }
}

/// Runs `other` and `here` at once, `other` on a second thread named `name`, and returns
/// both results. On one core, or when no thread can be spawned, both run on this one. If
/// this thread finishes `here` before the second has started, it takes `other` itself.
/// A panic in either resumes on this thread. For bulk work split in two halves (a large
/// list, a bulk load); not part of the loom shim.
pub(crate) fn on_two_threads<A: Send, B>(
    name: &str,
    other: impl FnOnce() -> A + Send,
    here: impl FnOnce() -> B,
) -> (A, B) {
    let slot = parking_lot::Mutex::new(Some(other));
    // Borrows only: a `Copy` closure, for the second thread and for this one.
    let take = || slot.lock().take().map(|f| f());
    if !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
        let b = here();
        return (take().expect("nobody else took it"), b);
    }
    std::thread::scope(|sc| {
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(sc, take);
        if let Err(e) = &spawned {
            tracing::debug!(error = %e, "no second thread; {name} runs on one");
        }
        let b = here();
        let stolen = take();
        let joined = match spawned {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(_) => None,
        };
        let a = stolen
            .or(joined)
            .expect("the second thread or this one ran it");
        (a, b)
    })
}

/// When an object was made, in fork generations (see `log::fork_generation`): a stamp from
/// before a fork marks, in the child, a copy of the parent's object whose threads do not
/// exist in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForkStamp(u64);

impl ForkStamp {
    pub(crate) fn now() -> ForkStamp {
        #[cfg(not(loom))]
        return ForkStamp(crate::log::fork_generation());
        // loom models never fork (and build a reduced `log`).
        #[cfg(loom)]
        return ForkStamp(0);
    }
    /// True in a forked child for a stamp taken before the fork.
    pub(crate) fn is_forked_copy(self) -> bool {
        #[cfg(not(loom))]
        return self.0 != crate::log::current_fork_generation();
        #[cfg(loom)]
        return false;
    }
    /// `ShutDown` in a forked child for an object made before the fork. The object's
    /// threads stayed in the parent, so nothing would update it here or wake a waiter, and a
    /// thread of the parent may have held one of its locks at the fork, forever here.
    pub(crate) fn check(self, what: &str) -> crate::error::Result<()> {
        if self.is_forked_copy() {
            return Err(inherited_by_fork(what));
        }
        Ok(())
    }
}

/// The error every call on an object inherited across `fork` returns in the child.
pub(crate) fn inherited_by_fork(what: &str) -> crate::error::Error {
    crate::error::Error::ShutDown(format!(
        "this {what} belongs to the process this one was forked from: its threads and its \
         data stayed there; open what this process needs here (a data directory once that \
         process has closed it)"
    ))
}

/// A thread's handle that knows which process spawned the thread. In a forked child the
/// thread does not exist: joining its handle would never return (or panic), and detaching
/// it would act on a thread id that means nothing here. So there `join` returns `None` at
/// once and dropping forgets the handle.
#[derive(Debug)]
pub(crate) struct Joinable<T> {
    handle: Option<std::thread::JoinHandle<T>>,
    spawned: ForkStamp,
}

impl<T> From<std::thread::JoinHandle<T>> for Joinable<T> {
    fn from(handle: std::thread::JoinHandle<T>) -> Joinable<T> {
        Joinable {
            handle: Some(handle),
            spawned: ForkStamp::now(),
        }
    }
}

impl<T> Joinable<T> {
    pub(crate) fn thread(&self) -> Option<&std::thread::Thread> {
        self.handle.as_ref().map(|h| h.thread())
    }
    /// Joins the thread; `None` in a forked child (the thread is the parent's).
    pub(crate) fn join(mut self) -> Option<std::thread::Result<T>> {
        let h = self.handle.take()?;
        if self.spawned.is_forked_copy() {
            std::mem::forget(h);
            return None;
        }
        Some(h.join())
    }
}

impl<T> Drop for Joinable<T> {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take()
            && self.spawned.is_forked_copy()
        {
            std::mem::forget(h);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::on_two_threads;

    #[test]
    fn both_halves_run_and_a_panic_comes_back() {
        let data: Vec<u64> = (0..1000).collect();
        let (lo, hi) = data.split_at(500);
        let (a, b) = on_two_threads("t", || hi.iter().sum::<u64>(), || lo.iter().sum::<u64>());
        assert_eq!((a, b), (374_750, 124_750));
        let r = std::panic::catch_unwind(|| {
            on_two_threads("t", || -> u8 { panic!("in the second half") }, || 1u8)
        });
        let p = r.expect_err("the panic resumes on the caller");
        assert_eq!(p.downcast_ref::<&str>(), Some(&"in the second half"));
    }
}
