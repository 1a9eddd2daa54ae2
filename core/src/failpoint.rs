//! Named failpoints (`reliability.md` §3.0.2): places in the log, snapshot, compaction,
//! recovery and store code where a test can make the process die — or a thread panic — at
//! an exact step, instead of at a random moment. Compiled in only with the `failpoints`
//! feature (the integration tests enable it); without it [`failpoint!`] expands to nothing.
//!
//! One failpoint is armed at a time, from the environment or from code:
//!
//! - `FLOYD_FAILPOINT=<name>=<action>[@<n>]`, read at the first hit of any failpoint (a
//!   crash test's child process is armed this way);
//! - [`arm`] and [`disarm`].
//!
//! `<action>` is `abort` (the process ends at once, as a kill would: no unwinding, no
//! destructor, no flush), `panic` (the calling thread unwinds) or `sleep(<ms>)` (the calling
//! thread waits, holding a race window open); `@<n>` fires on the n-th hit (default 1). The names are [`CATALOGUE`]; arming another name is an error.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Every failpoint, by where it sits.
pub const CATALOGUE: &[&str] = &[
    // log
    "log.after_claim",
    "log.after_publish",
    "log.after_padding",
    "log.before_fsync",
    "log.after_fsync_before_ack",
    "log.before_segment_create",
    "log.after_segment_create",
    "log.before_dir_fsync",
    // snapshot
    "snapshot.after_tmp_write",
    "snapshot.before_rename",
    "snapshot.after_rename_before_dir_fsync",
    // compaction
    "compaction.before_delete_segment",
    "compaction.between_segment_deletes",
    // recovery
    "recovery.mid_truncate",
    // store
    "store.after_append_before_index",
    "store.list_of_unknown_kind",
];

/// What an armed failpoint does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ends the process at once (`std::process::abort`).
    Abort,
    /// Panics in the thread that hit it.
    Panic,
    /// Sleeps that long (real time) in the thread that hit it, to hold a race window open.
    Sleep(std::time::Duration),
}

struct Armed {
    name: &'static str,
    action: Action,
    /// Hits left before it fires (it fires when this reaches 0).
    left: AtomicU64,
}

/// Whether anything is armed: the only cost of a disarmed failpoint is this load.
static ARMED: AtomicBool = AtomicBool::new(false);
static STATE: Mutex<Option<Armed>> = Mutex::new(None);
static FROM_ENV: std::sync::Once = std::sync::Once::new();

/// Arms `name` to do `action` on its `nth` hit from now (1 = the next). Replaces whatever was
/// armed. `Invalid` for a name not in [`CATALOGUE`], `nth == 0`, or a build without the
/// `failpoints` feature.
pub fn arm(name: &str, action: Action, nth: u64) -> Result<()> {
    let Some(&name) = CATALOGUE.iter().find(|n| **n == name) else {
        return Err(Error::invalid(
            "failpoint",
            format!(
                "unknown failpoint {name:?}; known: {}",
                CATALOGUE.join(", ")
            ),
        ));
    };
    if nth == 0 {
        return Err(Error::invalid("failpoint", "hits count from 1"));
    }
    if !cfg!(feature = "failpoints") {
        return Err(Error::invalid(
            "failpoint",
            "floyd was built without the `failpoints` feature: no failpoint can fire",
        ));
    }
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Armed {
        name,
        action,
        left: AtomicU64::new(nth),
    });
    ARMED.store(true, Ordering::Release);
    Ok(())
}

/// Disarms the armed failpoint, if any.
pub fn disarm() {
    ARMED.store(false, Ordering::Release);
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Parses `<name>=<action>[@<n>]` (the `FLOYD_FAILPOINT` form).
pub fn parse(spec: &str) -> Result<(String, Action, u64)> {
    let bad = |why: &str| Error::invalid("FLOYD_FAILPOINT", format!("{spec:?}: {why}"));
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected <name>=<action>[@<n>]"))?;
    let (action, nth) = match rest.split_once('@') {
        Some((a, n)) => (a, n.parse::<u64>().map_err(|_| bad("bad hit count"))?),
        None => (rest, 1),
    };
    let action = match action {
        "abort" => Action::Abort,
        "panic" => Action::Panic,
        a => match a
            .strip_prefix("sleep(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            Some(ms) => Action::Sleep(std::time::Duration::from_millis(ms)),
            None => return Err(bad("the action is abort, panic or sleep(<ms>)")),
        },
    };
    Ok((name.to_string(), action, nth))
}

/// Called by [`failpoint!`]; fires the armed failpoint if this is its hit.
#[doc(hidden)]
pub fn hit(name: &'static str) {
    FROM_ENV.call_once(|| {
        if let Ok(spec) = std::env::var("FLOYD_FAILPOINT") {
            match parse(&spec).and_then(|(n, a, k)| arm(&n, a, k)) {
                Ok(()) => {}
                // A test harness's mistake: say so loudly rather than test nothing.
                Err(e) => panic!("{e}"),
            }
        }
    });
    if !ARMED.load(Ordering::Acquire) {
        return;
    }
    let action = {
        let st = STATE.lock().unwrap_or_else(|e| e.into_inner());
        match &*st {
            Some(a) if a.name == name && a.left.fetch_sub(1, Ordering::AcqRel) == 1 => a.action,
            _ => return,
        }
    };
    match action {
        Action::Abort => {
            eprintln!("floyd: failpoint {name} fired: abort");
            std::process::abort();
        }
        Action::Panic => panic!("failpoint {name} fired"),
        Action::Sleep(d) => std::thread::sleep(d),
    }
}

/// Marks a failpoint: `failpoint!("log.after_claim")`. Nothing without the `failpoints`
/// feature.
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name);
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            parse("log.after_claim=abort@3").unwrap(),
            ("log.after_claim".to_string(), Action::Abort, 3)
        );
        assert_eq!(parse("x=panic").unwrap().2, 1);
        assert_eq!(
            parse("x=sleep(20)@2").unwrap().1,
            Action::Sleep(std::time::Duration::from_millis(20))
        );
        for bad in [
            "",
            "x",
            "x=explode",
            "x=abort@",
            "x=abort@-1",
            "x=sleep(a)",
            "x=sleep(5",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().kind(),
                crate::ErrorKind::Invalid,
                "{bad}"
            );
        }
        assert_eq!(
            arm("no.such.point", Action::Panic, 1).unwrap_err().kind(),
            crate::ErrorKind::Invalid
        );
        assert_eq!(
            arm("log.after_claim", Action::Panic, 0).unwrap_err().kind(),
            crate::ErrorKind::Invalid
        );
    }
}
