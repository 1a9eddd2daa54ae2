//! Failpoints in process (`floyd::failpoint`, action `panic`). A failpoint is armed for the
//! whole process, so everything here is one test function: no other test's threads may
//! run into it. The crash test (`crash.rs`) uses the `abort` action in child processes.

use std::sync::Arc;
use std::time::Duration;

use floyd::failpoint::{self, Action};
use floyd::log::{Durability, Log, LogConfig};
use floyd::store::{Object, Store, StoreConfig};

fn thing(name: &str) -> Object {
    Object::from_json(&serde_json::json!({"kind": "Thing", "metadata": {"name": name}})).unwrap()
}

/// Runs `f`, which is expected to panic at a failpoint, without printing the panic.
fn quiet_panic<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r
}

#[test]
fn failpoints_in_process() {
    // Unknown names and bad specifications are refused, not ignored.
    assert!(failpoint::arm("log.no_such_point", Action::Panic, 1).is_err());
    assert!(failpoint::parse("log.after_claim=explode").is_err());

    // 1. A producer dies between its claim and its publish, before any guard could pad the
    //    claim: the next append is acknowledged only once the claim is padded (after the
    //    unblock timeout), and nothing acknowledged is lost across a reopen.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        durability: Durability::None,
        unblock_timeout: Duration::from_millis(50),
        segment_size: 64 * 1024,
        ..LogConfig::default()
    };
    let (log, _) = Log::open_dir(dir.path(), cfg.clone()).unwrap();
    let log = Arc::new(log);
    let first = log.append(1, b"first").unwrap();
    failpoint::arm("log.after_claim", Action::Panic, 1).unwrap();
    let l2 = log.clone();
    let died = quiet_panic(move || l2.append(1, b"never"));
    failpoint::disarm();
    assert!(died.is_err(), "the failpoint did not fire");
    assert!(
        log.published_position() < log.tail_position(),
        "no hole left"
    );
    let second = log.append(1, b"second").unwrap();
    assert!(second > first);
    assert_eq!(log.stats().unblocked_claims, 1);
    log.close().unwrap();
    let (again, report) = Log::open_dir(dir.path(), cfg).unwrap();
    assert_eq!(report.frames, 2, "{report:?}");
    let mut c = again.cursor().unwrap();
    let rvs: Vec<u64> = std::iter::from_fn(|| c.try_next().unwrap().map(|f| f.rv)).collect();
    assert_eq!(rvs, vec![first, second]);
    again.close().unwrap();

    // 2. A snapshot dies before its rename: the temporary is removed, the store goes on,
    //    and the next snapshot and a reopen work.
    let dir = tempfile::tempdir().unwrap();
    let scfg = StoreConfig {
        durability: Durability::Always,
        ..StoreConfig::default()
    };
    let (store, _) = Store::open(dir.path(), scfg.clone()).unwrap();
    store.create(thing("a")).unwrap();
    store.snapshot().unwrap();
    store.create(thing("b")).unwrap();
    failpoint::arm("snapshot.before_rename", Action::Panic, 1).unwrap();
    let died = quiet_panic(|| store.snapshot());
    failpoint::disarm();
    assert!(died.is_err(), "the failpoint did not fire");
    let names: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "a temporary was left: {names:?}"
    );
    store.create(thing("c")).unwrap();
    let sum = store.snapshot().unwrap();
    assert_eq!(sum.objects, 3);
    store.close().unwrap();
    let (reopened, report) = Store::open(dir.path(), scfg).unwrap();
    assert_eq!(report.snapshot_objects, 3);
    assert_eq!(reopened.list("Thing", None, None).unwrap().0.len(), 3);
    reopened.close().unwrap();

    // 3. A list of a kind the store has never held, held open while the first object of
    //    that kind is created: it holds the object, or its version is below the object's,
    //    so a watch from it delivers the create. (The informer model test found it: the
    //    empty list reported the version of the create that had just landed, and the
    //    informer missed that object for good.)
    let s = Store::memory();
    s.create(thing("other")).unwrap();
    let mut fresh = thing("first");
    fresh.kind = "Fresh".into();
    failpoint::arm(
        "store.list_of_unknown_kind",
        Action::Sleep(Duration::from_millis(300)),
        1,
    )
    .unwrap();
    let s2 = s.clone();
    let lister = std::thread::spawn(move || s2.list("Fresh", None, None).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    let created = s.create(fresh).unwrap();
    let created: u64 = created.metadata.resource_version.parse().unwrap();
    let (items, v) = lister.join().unwrap();
    failpoint::disarm();
    assert!(
        !items.is_empty() || v < created,
        "an empty list at {v}, after the create at {created}"
    );
}
