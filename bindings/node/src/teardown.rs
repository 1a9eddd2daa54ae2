//! What must stop when a JS environment tears down (process exit, `worker_threads`
//! termination): informers and control planes whose core threads would otherwise outlive
//! the environment, waiting out their timeouts for callbacks that can never run.
//!
//! One list per environment, kept in a thread-local (Node runs one environment per thread:
//! the main thread and each worker) and drained by the environment's cleanup hook.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};

use napi::Env;

/// A binding object with core threads that JS can no longer serve after teardown.
pub(crate) trait Teardown: Send + Sync {
    /// No JS will ever answer again: end every wait on JS, then stop.
    fn teardown(&self);
}

thread_local! {
    /// This thread's environment's live items; `None` until the first registration installs
    /// the cleanup hook, and again once the hook has taken them.
    static LIVE: RefCell<Option<Vec<Weak<dyn Teardown>>>> = const { RefCell::new(None) };
}

/// Registers `item` for this environment's teardown (held weakly: dropping it from JS frees
/// it as before). The first registration installs the cleanup hook, which tears the live
/// items down newest first, as Node runs its own hooks.
pub(crate) fn register<T: Teardown + 'static>(env: &Env, item: &Arc<T>) -> napi::Result<()> {
    let weak: Weak<dyn Teardown> = Arc::downgrade(item) as Weak<dyn Teardown>;
    LIVE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let list = match &mut *slot {
            Some(list) => list,
            None => {
                env.add_env_cleanup_hook((), |()| {
                    let live = catch_unwind(|| LIVE.try_with(|c| c.borrow_mut().take()))
                        .ok()
                        .and_then(Result::ok)
                        .flatten()
                        .unwrap_or_default();
                    // Each on its own: a panic in one (it would be a bug) must neither
                    // unwind into Node nor leave the others running.
                    for w in live.iter().rev() {
                        if let Some(item) = w.upgrade() {
                            let _ = catch_unwind(AssertUnwindSafe(|| item.teardown()));
                        }
                    }
                })?;
                slot.insert(Vec::new())
            }
        };
        list.retain(|w| w.strong_count() > 0);
        list.push(weak);
        Ok(())
    })
}
