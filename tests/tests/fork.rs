//! A process that forks while floyd runs (`reliability.md` §0: the host's process is not
//! ours): Python's `multiprocessing` forks by default on Linux before 3.14, and a child
//! inherits copies of every object but none of their threads. In the child, every call on
//! an inherited store, cursor, watch, informer, work queue or control plane must return at
//! once (`ShutDown`, or "shut down and empty" for the queue) — never wait for a thread that
//! is not there, never take a lock a thread of the parent may have held at the fork, never
//! write into the parent's files — and dropping them must leave the parent's files, threads
//! and directory lock alone. The parent goes on as if nothing happened.
//!
//! The child reports through its exit code, and an alarm turns a hang into a signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floyd::runtime::NoopDriver;
use floyd::store::{Object, Store, StoreConfig};
use floyd::{ControlPlane, ControlPlaneConfig, ErrorKind, Informer, WorkQueue};

fn cm(name: &str) -> Object {
    Object::from_json(&serde_json::json!({
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "x"}},
        "data": {"k": name},
    }))
    .unwrap()
}

fn deployment() -> Object {
    Object::from_json(&serde_json::json!({
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"version": "v1"}},
        },
    }))
    .unwrap()
}

/// `Err(ShutDown)` naming the fork, or a line saying what came back instead.
fn refused<T: std::fmt::Debug>(what: &str, r: floyd::Result<T>) -> Result<(), String> {
    match r {
        Err(e) if e.kind() == ErrorKind::ShutDown && e.to_string().contains("forked") => Ok(()),
        other => Err(format!(
            "{what}: expected ShutDown naming the fork, got {other:?}"
        )),
    }
}

#[test]
fn a_forked_child_is_refused_at_once_and_the_parent_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    store.create(cm("a")).unwrap();
    let cp = ControlPlane::new(
        store.clone(),
        Arc::new(NoopDriver),
        ControlPlaneConfig::default(),
    )
    .unwrap();
    cp.start().unwrap();
    store.create(deployment()).unwrap();
    cp.wait_for_rollout("default/web", Duration::from_secs(30))
        .unwrap();
    let inf = Informer::new(&store, "ConfigMap", Duration::ZERO, None, None).unwrap();
    inf.start().unwrap();
    assert!(inf.wait_for_sync(Some(Duration::from_secs(10))).unwrap());
    let q: WorkQueue<String> = WorkQueue::new();
    q.add("queued".to_string());
    q.add_after("later".to_string(), Duration::from_secs(3600));
    let mut watch = store
        .watch(Some("ConfigMap"), store.resource_version(), None)
        .unwrap();

    // A writer runs through the fork, so that its locks may be held at that moment.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                store.create(cm(&format!("w{n}"))).unwrap();
                n += 1;
            }
            n
        })
    };
    while store.stats().unwrap().objects < 60 {
        std::thread::yield_now();
    }

    // SAFETY: test code; the child runs only floyd calls and exits with `_exit`; glibc
    // makes `malloc` usable in the child of a multithreaded process.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: plain libc calls in the child.
        unsafe { libc::alarm(20) };
        let check = || -> Result<(), String> {
            refused("create", store.create(cm("child")))?;
            refused("get", store.get("ConfigMap", "default/a"))?;
            refused("list", store.list("ConfigMap", None, None))?;
            refused("watch", store.watch(None, 0, None).map(|_| ()))?;
            refused("snapshot", store.snapshot())?;
            refused("an inherited watch", watch.next_timeout(None))?;
            match Store::open(dir.path(), StoreConfig::default()) {
                Err(e) if e.kind() == ErrorKind::Io => {}
                other => return Err(format!("open: expected Io, got {other:?}")),
            }
            refused("informer get", inf.get("default/a"))?;
            refused("informer list", inf.list(None))?;
            refused(
                "informer wait_for_version",
                inf.wait_for_version(u64::MAX, None),
            )?;
            refused("informer wait_for_sync", inf.wait_for_sync(None))?;
            if !q.is_empty() || !q.shutting_down() {
                return Err(format!(
                    "queue: len {} shutting_down {}",
                    q.len(),
                    q.shutting_down()
                ));
            }
            q.add("child".to_string());
            if let Some(item) = q.get() {
                return Err(format!("queue get handed out {item:?}"));
            }
            refused(
                "wait_for_rollout",
                cp.wait_for_rollout("default/web", Duration::from_secs(60)),
            )?;
            refused("scale", cp.scale("Deployment", "default/web", 3))?;
            cp.stop().map_err(|e| format!("control plane stop: {e}"))?;
            inf.stop();
            q.shut_down();
            store.close().map_err(|e| format!("store close: {e}"))?;
            Ok(())
        };
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
            Ok(Ok(())) => 0,
            Ok(Err(why)) => {
                eprintln!("\nchild: {why}");
                1
            }
            Err(_) => 2,
        };
        // SAFETY: ends the child without running the parent's destructors or atexit hooks.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status),
        "the child hung or crashed: signal {}",
        libc::WTERMSIG(status)
    );
    assert_eq!(libc::WEXITSTATUS(status), 0, "the child's checks failed");

    // The parent: its lock, threads and files are untouched.
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert_eq!(
        Store::open(dir.path(), StoreConfig::default())
            .unwrap_err()
            .kind(),
        ErrorKind::Io
    );
    store.create(cm("b")).unwrap();
    assert!(
        inf.wait_for_version(store.resource_version(), Some(Duration::from_secs(10)))
            .unwrap()
    );
    assert_eq!(inf.list(None).unwrap().len(), written as usize + 2);
    assert!(inf.get("default/child").unwrap().is_none());
    let e = watch.next_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(e.is_some(), "the parent's watch goes on");
    assert_eq!(
        q.get_timeout(Duration::from_secs(1)).as_deref(),
        Some("queued")
    );
    cp.scale("Deployment", "default/web", 3).unwrap();
    let status = cp
        .wait_for_rollout("default/web", Duration::from_secs(30))
        .unwrap();
    assert_eq!(status["readyReplicas"], 3);
    cp.stop().unwrap();
    inf.stop();
    q.shut_down();
    store.close().unwrap();
    // A reopen finds everything the parent wrote, and nothing from the child.
    let (again, _) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let (cms, _) = again.list("ConfigMap", None, None).unwrap();
    assert_eq!(cms.len(), written as usize + 2);
    again.close().unwrap();
}
