//! The control plane in threaded mode on the real clock: a ReplicaSet converges through the
//! node agent and a real (recording) driver; scaling down stops exactly the victims; the
//! endpoints controller lists ready instances and `pick` round-robins over them; `stop`
//! joins every thread, and use after stop is `ShutDown`. Driver timeouts, on a fake clock:
//! a start that hangs fails at the timeout while the other instances run, its late result is
//! ignored, a stuck pool thread is replaced, and `stop` does not wait for a hung call.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use floyd::clock::FakeClock;
use floyd::runtime::{
    ControlPlane, ControlPlaneConfig, Driver, DriverError, MAX_DRIVER_TIMEOUT, Started,
};
use floyd::{ErrorKind, Object, Store};
use parking_lot::{Condvar, Mutex};
use serde_json::json;

#[derive(Default)]
struct Recorder {
    running: Mutex<BTreeSet<String>>,
    n: Mutex<u32>,
}

impl Driver for Recorder {
    fn start(&self, i: &Object) -> Result<Started, DriverError> {
        let mut n = self.n.lock();
        *n += 1;
        self.running.lock().insert(i.metadata.uid.clone());
        Ok(Started {
            address: Some(format!("127.0.0.1:{}", 9000 + *n)),
        })
    }
    fn stop(&self, i: &Object) -> Result<(), DriverError> {
        self.running.lock().remove(&i.metadata.uid);
        Ok(())
    }
}

/// Polls `cond` for up to 20 s (a liveness bound, not a timing assertion).
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..2000 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn ready_instances(store: &Store) -> usize {
    store
        .list("Instance", None, None)
        .unwrap()
        .0
        .iter()
        .filter(|i| i.status["conditions"][0]["status"] == "True")
        .count()
}

#[test]
fn replicaset_converges_scales_and_serves_endpoints() {
    let store = Store::memory();
    let driver = Arc::new(Recorder::default());
    let cp =
        ControlPlane::new(store.clone(), driver.clone(), ControlPlaneConfig::default()).unwrap();
    cp.start().unwrap();
    store
        .create(Object::from_json(&json!({"kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}}})).unwrap())
        .unwrap();
    store
        .create(
            Object::from_json(&json!({
                "kind": "ReplicaSet",
                "metadata": {"name": "web"},
                "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"version": "1"}}}
            }))
            .unwrap(),
        )
        .unwrap();
    assert!(eventually(
        || ready_instances(&store) == 4 && cp.endpoints("default/web").unwrap().len() == 4
    ));
    let picks: BTreeSet<String> = (0..8)
        .map(|_| cp.pick("default/web", None).unwrap().unwrap())
        .collect();
    assert_eq!(picks.len(), 4, "round robin visits every ready address");
    let sticky = cp.pick("default/web", Some("client-7")).unwrap();
    assert_eq!(sticky, cp.pick("default/web", Some("client-7")).unwrap());
    assert_eq!(
        cp.pick("default/nope", None).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    cp.scale("ReplicaSet", "default/web", 1).unwrap();
    assert!(eventually(|| store
        .list("Instance", None, None)
        .unwrap()
        .0
        .len()
        == 1
        && driver.running.lock().len() == 1));
    assert!(eventually(
        || cp.endpoints("default/web").unwrap().len() == 1
    ));
    let rs = store.get("ReplicaSet", "default/web").unwrap().unwrap();
    assert!(eventually(|| store
        .get("ReplicaSet", "default/web")
        .unwrap()
        .unwrap()
        .status["readyReplicas"]
        == 1));
    assert_eq!(rs.metadata.generation, 2);

    cp.stop().unwrap();
    cp.stop().unwrap(); // idempotent
    assert_eq!(
        cp.scale("ReplicaSet", "default/web", 2).unwrap_err().kind(),
        ErrorKind::ShutDown
    );
    assert_eq!(cp.step().unwrap_err().kind(), ErrorKind::ShutDown);
}

#[test]
fn bad_configuration_is_invalid() {
    let store = Store::memory();
    for cfg in [
        ControlPlaneConfig {
            workers: 0,
            ..ControlPlaneConfig::default()
        },
        ControlPlaneConfig {
            burst_replicas: 501,
            ..ControlPlaneConfig::default()
        },
        ControlPlaneConfig {
            retry_base: Duration::ZERO,
            ..ControlPlaneConfig::default()
        },
        ControlPlaneConfig {
            driver_timeout: Duration::ZERO,
            ..ControlPlaneConfig::default()
        },
        ControlPlaneConfig {
            driver_timeout: MAX_DRIVER_TIMEOUT + Duration::from_nanos(1),
            ..ControlPlaneConfig::default()
        },
    ] {
        let e = ControlPlane::new(store.clone(), Arc::new(Recorder::default()), cfg.clone())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        let e =
            ControlPlane::stepped(store.clone(), Arc::new(Recorder::default()), cfg).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
    }
    let e = ControlPlane::new(
        store.clone(),
        Arc::new(Recorder::default()),
        ControlPlaneConfig {
            driver_timeout: Duration::ZERO,
            ..ControlPlaneConfig::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("driver_timeout"), "{e}");
    let cp = ControlPlane::new(
        store,
        Arc::new(Recorder::default()),
        ControlPlaneConfig::default(),
    )
    .unwrap();
    assert_eq!(
        cp.scale("ReplicaSet", "default/x", -1).unwrap_err().kind(),
        ErrorKind::Invalid
    );
    assert_eq!(
        cp.scale("ReplicaSet", "default/x", 1).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// A driver whose `start` of the instances named in `hang` blocks until [`Gated::open`]
/// (then succeeds with the address `late:<name>`); every other call succeeds at once.
struct Gated {
    hang: Vec<String>,
    open: Mutex<bool>,
    opened: Condvar,
    /// Names of the starts that entered the driver, in order.
    entered: Mutex<Vec<String>>,
    stops: Mutex<Vec<String>>,
}

impl Gated {
    fn new(hang: &[&str]) -> Arc<Gated> {
        Arc::new(Gated {
            hang: hang.iter().map(|s| s.to_string()).collect(),
            open: Mutex::new(false),
            opened: Condvar::new(),
            entered: Mutex::new(vec![]),
            stops: Mutex::new(vec![]),
        })
    }

    fn open(&self) {
        *self.open.lock() = true;
        self.opened.notify_all();
    }

    fn entered(&self, name: &str) -> usize {
        self.entered.lock().iter().filter(|n| *n == name).count()
    }
}

impl Driver for Gated {
    fn start(&self, i: &Object) -> Result<Started, DriverError> {
        let name = i.metadata.name.clone();
        self.entered.lock().push(name.clone());
        if self.hang.contains(&name) {
            let mut open = self.open.lock();
            while !*open {
                self.opened.wait(&mut open);
            }
            return Ok(Started {
                address: Some(format!("late:{name}")),
            });
        }
        Ok(Started {
            address: Some(format!("{name}:80")),
        })
    }
    fn stop(&self, i: &Object) -> Result<(), DriverError> {
        self.stops.lock().push(i.metadata.name.clone());
        Ok(())
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        self.open();
    }
}

fn instance(name: &str) -> Object {
    Object::from_json(
        &json!({"kind": "Instance", "metadata": {"name": name}, "spec": {"version": "1"}}),
    )
    .unwrap()
}

fn status_of(store: &Store, name: &str) -> serde_json::Value {
    store
        .get("Instance", &format!("default/{name}"))
        .unwrap()
        .map(|i| i.status.clone())
        .unwrap_or_default()
}

fn fake_config(clock: &Arc<FakeClock>, threads: usize) -> ControlPlaneConfig {
    ControlPlaneConfig {
        clock: clock.clone(),
        driver_threads: threads,
        driver_timeout: Duration::from_secs(30),
        ..ControlPlaneConfig::default()
    }
}

#[test]
fn a_hung_start_fails_at_the_timeout_while_the_others_run_and_its_late_result_is_ignored() {
    let clock = FakeClock::shared();
    let store = Store::memory();
    let rs = |n| {
        Object::from_json(&json!({
            "kind": "ReplicaSet",
            "metadata": {"name": "web"},
            "spec": {"replicas": n, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"version": "1"}}}
        }))
        .unwrap()
    };
    // The hung instance is the one the ReplicaSet controller names first; learn its name
    // from a single-replica ReplicaSet started on a driver that hangs nothing.
    store.create(rs(1)).unwrap();
    let victim = {
        let cp =
            ControlPlane::stepped(store.clone(), Gated::new(&[]), fake_config(&clock, 2)).unwrap();
        while cp.step().unwrap() {}
        let (all, _) = store.list("Instance", None, None).unwrap();
        all[0].metadata.name.clone()
    };
    let driver = Gated::new(&[&victim]);
    let cp = ControlPlane::new(store.clone(), driver.clone(), fake_config(&clock, 2)).unwrap();
    cp.start().unwrap();
    cp.scale("ReplicaSet", "default/web", 3).unwrap();
    // The other two run while the victim's start hangs on one of the two pool threads.
    assert!(eventually(
        || ready_instances(&store) == 2 && driver.entered(&victim) == 1
    ));
    assert!(eventually(|| {
        store
            .get("ReplicaSet", "default/web")
            .unwrap()
            .unwrap()
            .status["readyReplicas"]
            == 2
    }));
    assert!(status_of(&store, &victim)["message"].is_null());
    assert_eq!(cp.stats().driver_timeouts, 0);

    // At the timeout the start is a failed start, and its thread is replaced.
    clock.advance(Duration::from_secs(30));
    assert!(eventually(|| {
        status_of(&store, &victim)["conditions"][0]["reason"] == "StartTimedOut"
    }));
    let st = status_of(&store, &victim);
    assert_eq!(st["restartCount"], 1);
    assert_eq!(st["phase"], "Pending");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("did not finish within 30s"),
        "{st}"
    );
    let stats = cp.stats();
    assert_eq!(
        (stats.driver_timeouts, stats.driver_threads_replaced),
        (1, 1)
    );
    assert!(
        !cp.running_instances()
            .contains(&format!("default/{victim}"))
    );

    // The hung call returns late: its success is not applied.
    driver.open();
    assert!(eventually(|| cp.stats().driver_late_results == 1));
    let st = status_of(&store, &victim);
    assert_eq!(st["conditions"][0]["reason"], "StartTimedOut", "{st}");
    assert!(st["address"].is_null(), "{st}");
    assert_eq!(ready_instances(&store), 2);

    // After the backoff the newer attempt runs and is applied normally.
    clock.advance(Duration::from_secs(10));
    assert!(eventually(|| ready_instances(&store) == 3));
    let st = status_of(&store, &victim);
    assert_eq!(st["restartCount"], 1);
    assert_eq!(st["address"], format!("late:{victim}"));
    assert_eq!(driver.entered(&victim), 2);
    assert_eq!(cp.stats().driver_late_results, 1);
    cp.stop().unwrap();
}

#[test]
fn a_stuck_thread_is_replaced_so_a_hung_call_cannot_starve_the_pool() {
    let clock = FakeClock::shared();
    let store = Store::memory();
    let driver = Gated::new(&["hung"]);
    // One pool thread: without a replacement, nothing could start after "hung".
    let cp = ControlPlane::new(store.clone(), driver.clone(), fake_config(&clock, 1)).unwrap();
    cp.start().unwrap();
    store.create(instance("hung")).unwrap();
    assert!(eventually(|| driver.entered("hung") == 1));
    clock.advance(Duration::from_secs(15));
    store.create(instance("b")).unwrap();
    // "b" is queued behind the stuck thread; its own deadline is 15 s after "hung"'s.
    clock.advance(Duration::from_secs(15));
    assert!(eventually(|| status_of(&store, "b")["phase"] == "Running"));
    assert_eq!(status_of(&store, "b")["restartCount"], 0);
    assert_eq!(
        status_of(&store, "hung")["conditions"][0]["reason"],
        "StartTimedOut"
    );
    let stats = cp.stats();
    assert_eq!(
        (stats.driver_timeouts, stats.driver_threads_replaced),
        (1, 1)
    );
    // `stop` does not wait for the call stuck past its deadline.
    cp.stop().unwrap();
    driver.open();
}

#[test]
fn a_deleted_instance_whose_start_returns_late_is_stopped() {
    let clock = FakeClock::shared();
    let store = Store::memory();
    let driver = Gated::new(&["hung"]);
    let cp = ControlPlane::new(store.clone(), driver.clone(), fake_config(&clock, 2)).unwrap();
    cp.start().unwrap();
    store.create(instance("hung")).unwrap();
    assert!(eventually(|| driver.entered("hung") == 1));
    clock.advance(Duration::from_secs(30));
    assert!(eventually(|| cp.stats().driver_timeouts == 1));
    store.delete("Instance", "default/hung", None).unwrap();
    // Deleted after its start timed out: stopped (the start may still run it)...
    assert!(eventually(|| driver.stops.lock().len() == 1));
    // ...and once the late start did run it, stopped again.
    driver.open();
    assert!(eventually(|| driver.stops.lock().len() == 2));
    assert_eq!(cp.stats().driver_late_results, 1);
    assert!(cp.running_instances().is_empty());
    cp.stop().unwrap();
}

/// Counts calls; never blocks.
#[derive(Default)]
struct Counting {
    starts: Mutex<u32>,
    stops: Mutex<u32>,
}

impl Driver for Counting {
    fn start(&self, _: &Object) -> Result<Started, DriverError> {
        *self.starts.lock() += 1;
        Ok(Started::default())
    }
    fn stop(&self, _: &Object) -> Result<(), DriverError> {
        *self.stops.lock() += 1;
        Ok(())
    }
}

/// Steps the control plane until nothing is left to do (driver calls stay queued).
fn settle(cp: &ControlPlane) {
    while cp.step().unwrap() {}
}

#[test]
fn stepped_a_call_queued_past_its_deadline_fails_without_reaching_the_driver() {
    let clock = FakeClock::shared();
    let store = Store::memory();
    let driver = Arc::new(Counting::default());
    let cp = ControlPlane::stepped(store.clone(), driver.clone(), fake_config(&clock, 1)).unwrap();
    store.create(instance("a")).unwrap();
    settle(&cp); // the start is queued, not run
    clock.advance(Duration::from_secs(30));
    settle(&cp);
    let st = status_of(&store, "a");
    assert_eq!(st["conditions"][0]["reason"], "StartTimedOut", "{st}");
    assert!(
        st["message"].as_str().unwrap().contains("did not begin"),
        "{st}"
    );
    assert_eq!(st["restartCount"], 1);
    // The timed-out call is skipped when its turn comes.
    assert!(cp.run_driver_call());
    assert!(!cp.run_driver_call());
    assert_eq!(*driver.starts.lock(), 0);
    // After the backoff, a new attempt.
    clock.advance(Duration::from_secs(10));
    settle(&cp);
    assert!(cp.run_driver_call());
    settle(&cp);
    assert_eq!(*driver.starts.lock(), 1);
    let st = status_of(&store, "a");
    assert_eq!(
        (st["phase"].as_str(), st["restartCount"].as_u64()),
        (Some("Running"), Some(1))
    );
    assert_eq!(cp.stats().driver_timeouts, 1);

    // A stop that times out is retried; the timed-out one never reaches the driver.
    store.delete("Instance", "default/a", None).unwrap();
    settle(&cp);
    clock.advance(Duration::from_secs(30));
    settle(&cp);
    assert_eq!(cp.stats().driver_timeouts, 2);
    assert_eq!(cp.running_instances(), vec!["default/a".to_string()]);
    clock.advance(Duration::from_secs(1)); // the retry's rate-limited delay
    settle(&cp);
    while cp.run_driver_call() {
        settle(&cp);
    }
    assert_eq!(*driver.stops.lock(), 1);
    assert!(cp.running_instances().is_empty());
}

/// A stepped control plane over a memory store on a fake clock, with a counting driver.
fn stepped_plane() -> (Arc<FakeClock>, Store, ControlPlane) {
    let clock = FakeClock::shared();
    let store = Store::memory();
    let cp = ControlPlane::stepped(
        store.clone(),
        Arc::new(Counting::default()),
        fake_config(&clock, 1),
    )
    .unwrap();
    (clock, store, cp)
}

/// Steps the control plane and runs every queued driver call until nothing is left.
fn run_all(cp: &ControlPlane) {
    settle(cp);
    while cp.run_driver_call() {
        settle(cp);
    }
}

fn labelled_instance(name: &str, node: &str) -> Object {
    Object::from_json(&json!({
        "kind": "Instance",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"version": "1", "nodeName": node}
    }))
    .unwrap()
}

fn web_replicaset(replicas: i64) -> Object {
    Object::from_json(&json!({
        "kind": "ReplicaSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"version": "1"}}
        }
    }))
    .unwrap()
}

fn instance_names(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = store
        .list("Instance", None, None)
        .unwrap()
        .0
        .iter()
        .map(|i| i.metadata.name.clone())
        .collect();
    names.sort();
    names
}

/// §3.2: a ReplicaSet without a controller owner has no related instances, so every
/// instance ranks 0 and co-location does not pick the victim. Here `a` (alone on n1) became
/// ready most recently and goes first; ranking against the ReplicaSet's own instances would
/// put `a` last (rank 1 against 2 for `b` and `c`, both on n2).
#[test]
fn a_replicaset_without_an_owner_does_not_rank_by_co_location() {
    let (clock, store, cp) = stepped_plane();
    store.create(labelled_instance("b", "n2")).unwrap();
    store.create(labelled_instance("c", "n2")).unwrap();
    run_all(&cp);
    clock.advance(Duration::from_secs(100));
    store.create(labelled_instance("a", "n1")).unwrap();
    run_all(&cp);
    clock.advance(Duration::from_secs(100));
    store.create(web_replicaset(3)).unwrap();
    run_all(&cp);
    let owned = store
        .list("Instance", None, None)
        .unwrap()
        .0
        .iter()
        .filter(|i| i.controller_ref().is_some())
        .count();
    assert_eq!(owned, 3, "the three orphans are adopted");
    cp.scale("ReplicaSet", "default/web", 2).unwrap();
    run_all(&cp);
    assert_eq!(instance_names(&store), vec!["b", "c"]);
}

/// §3.1: only active instances are claimed. A matching orphan its host marked `Failed` is
/// not adopted (the ReplicaSet creates a replacement instead), and a `Failed` instance of
/// ours that no longer matches is not released.
#[test]
fn terminal_instances_are_neither_adopted_nor_released() {
    let (_clock, store, cp) = stepped_plane();
    let fail = |name: &str| {
        let mut i = (*store
            .get("Instance", &format!("default/{name}"))
            .unwrap()
            .unwrap())
        .clone();
        i.status["phase"] = json!("Failed");
        store.update_status(i).unwrap();
    };
    store.create(labelled_instance("dead", "n1")).unwrap();
    run_all(&cp);
    fail("dead");
    store.create(web_replicaset(1)).unwrap();
    run_all(&cp);
    let dead = store.get("Instance", "default/dead").unwrap().unwrap();
    assert!(
        dead.controller_ref().is_none(),
        "a Failed orphan was adopted"
    );
    let names = instance_names(&store);
    assert_eq!(names.len(), 2, "{names:?}");

    // One of ours fails, then its labels change: it stays ours.
    let ours = names.iter().find(|n| *n != "dead").unwrap().clone();
    fail(&ours);
    let mut i = (*store
        .get("Instance", &format!("default/{ours}"))
        .unwrap()
        .unwrap())
    .clone();
    i.metadata.labels.insert("app".into(), "other".into());
    store.update(i).unwrap();
    run_all(&cp);
    let i = store
        .get("Instance", &format!("default/{ours}"))
        .unwrap()
        .unwrap();
    assert!(
        i.controller_ref().is_some(),
        "a Failed instance of ours was released"
    );
}

fn rs_status(store: &Store, key: &str) -> serde_json::Value {
    store
        .get("ReplicaSet", key)
        .unwrap()
        .unwrap()
        .status
        .clone()
}

/// §3.1 step 8: with minReadySeconds, an instance that became ready counts as available
/// once that many seconds have passed strictly, and the controller looks again by itself,
/// also after a sync whose status write was skipped as unchanged (nothing else happens to
/// wake it): availableReplicas reaches 1.
#[test]
fn min_ready_seconds_availability_is_noticed_without_another_event() {
    let (clock, store, cp) = stepped_plane();
    let mut rs = web_replicaset(1);
    rs.spec["minReadySeconds"] = json!(10);
    store.create(rs).unwrap();
    run_all(&cp);
    let st = rs_status(&store, "default/web");
    assert_eq!(
        (
            st["readyReplicas"].as_i64(),
            st["availableReplicas"].as_i64()
        ),
        (Some(1), None),
        "{st}"
    );
    // At exactly 10 s the instance is not yet available (strictly before); that sync
    // changes nothing and must still look again, 10 s on (the event hook's 11 s requeue
    // merged into the earlier 10 s one, as the delaying queue keeps the earliest time).
    for _ in 0..21 {
        clock.advance(Duration::from_secs(1));
        run_all(&cp);
    }
    let st = rs_status(&store, "default/web");
    assert_eq!(st["availableReplicas"], 1, "{st}");
}

/// §3.3: when an instance's controller reference moves to another ReplicaSet, its previous
/// owner is looked at again (it is now one short) and replaces it.
#[test]
fn an_instance_moving_to_another_owner_resyncs_the_previous_owner() {
    let (_clock, store, cp) = stepped_plane();
    let replicaset = |name: &str, sel: serde_json::Value, labels: serde_json::Value| {
        Object::from_json(&json!({
            "kind": "ReplicaSet",
            "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                     "template": {"metadata": {"labels": labels}, "spec": {"version": "1"}}}
        }))
        .unwrap()
    };
    let b = store
        .create(replicaset("b", json!({"team": "b"}), json!({"team": "b"})))
        .unwrap();
    run_all(&cp);
    let a = store
        .create(replicaset(
            "a",
            json!({"app": "a"}),
            json!({"app": "a", "team": "b"}),
        ))
        .unwrap();
    run_all(&cp);
    let owned_by = |uid: &str| -> Vec<Arc<Object>> {
        store
            .list("Instance", None, None)
            .unwrap()
            .0
            .into_iter()
            .filter(|i| i.controller_ref().is_some_and(|r| r.uid == uid))
            .collect()
    };
    let a1 = owned_by(&a.metadata.uid).pop().expect("a's instance");
    // Both writes land before the controllers look: b grows to 2 and takes a's instance.
    let mut b2 = (*store.get("ReplicaSet", "default/b").unwrap().unwrap()).clone();
    b2.spec["replicas"] = json!(2);
    store.update(b2).unwrap();
    let mut moved = (*a1).clone();
    moved.metadata.owner_references[0].name = "b".into();
    moved.metadata.owner_references[0].uid = b.metadata.uid.clone();
    store.update(moved).unwrap();
    run_all(&cp);
    assert_eq!(owned_by(&b.metadata.uid).len(), 2);
    assert_eq!(
        owned_by(&a.metadata.uid).len(),
        1,
        "a was not told it lost an instance"
    );
}

/// §5 restart backoff: 10 s doubling to 300 s while an instance keeps exiting, and back to
/// 10 s once it ran for more than twice the cap (10 min) without a failure. The restart
/// count keeps growing.
#[test]
fn crash_loop_backoff_doubles_to_the_cap_and_resets_after_ten_quiet_minutes() {
    let clock = FakeClock::shared();
    let store = Store::memory();
    let driver = Arc::new(Counting::default());
    let cp = ControlPlane::stepped(store.clone(), driver.clone(), fake_config(&clock, 1)).unwrap();
    store.create(instance("a")).unwrap();
    run_all(&cp);
    // Exits, and how long the agent waits before the next start.
    let crash_and_wait = || -> u64 {
        cp.report_exit("default/a", "boom").unwrap();
        run_all(&cp);
        let starts = *driver.starts.lock();
        let mut waited = 0;
        while *driver.starts.lock() == starts {
            assert!(waited < 1_000, "never restarted");
            clock.advance(Duration::from_secs(1));
            waited += 1;
            run_all(&cp);
        }
        waited
    };
    let waits: Vec<u64> = (0..7).map(|_| crash_and_wait()).collect();
    assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300]);
    // Ten minutes without a failure are not enough (more than twice the cap is needed)...
    clock.advance(Duration::from_secs(600) - Duration::from_secs(300));
    run_all(&cp);
    assert_eq!(crash_and_wait(), 300);
    // ...ten minutes and a second are.
    clock.advance(Duration::from_secs(601) - Duration::from_secs(300));
    run_all(&cp);
    assert_eq!(crash_and_wait(), 10);
    assert_eq!(status_of(&store, "a")["restartCount"], 9);
}

/// A host restart (a new control plane on the same store) while an instance waits out its
/// crash-loop backoff: the instance is not running, so the new agent starts it at once
/// rather than adopting it as running, which would leave it down for good. Running
/// instances are adopted, not started twice.
#[test]
fn a_restart_during_a_crash_loop_backoff_starts_the_waiting_instance() {
    let clock = FakeClock::shared();
    let store = Store::memory();
    let driver = Arc::new(Counting::default());
    let cp = ControlPlane::stepped(store.clone(), driver.clone(), fake_config(&clock, 1)).unwrap();
    store.create(instance("a")).unwrap();
    store.create(instance("b")).unwrap();
    run_all(&cp);
    assert_eq!(*driver.starts.lock(), 2);
    cp.report_exit("default/a", "boom").unwrap();
    run_all(&cp);
    let st = status_of(&store, "a");
    assert_eq!(st["phase"], "Running");
    assert_eq!(st["waiting"]["reason"], "CrashLoopBackOff", "{st}");
    cp.stop().unwrap();
    drop(cp);
    let cp = ControlPlane::stepped(store.clone(), driver.clone(), fake_config(&clock, 1)).unwrap();
    run_all(&cp);
    assert_eq!(*driver.starts.lock(), 3, "a is started again, b is adopted");
    let st = status_of(&store, "a");
    assert!(st.get("waiting").is_none(), "{st}");
    assert_eq!(st["restartCount"], 1);
    assert_eq!(cp.running_instances().len(), 2);
    // The restart count still feeds the backoff: the next exit waits 20 s, not 10 s.
    cp.report_exit("default/a", "boom").unwrap();
    run_all(&cp);
    assert!(
        status_of(&store, "a")["message"]
            .as_str()
            .unwrap()
            .ends_with("restarting in 20s")
    );
}

/// §3.1 step 3: a ReplicaSet whose spec cannot be acted on is reported once and not retried
/// with backoff forever; fixing it brings it back.
#[test]
fn an_invalid_replicaset_is_reported_once_not_retried_and_a_fix_is_picked_up() {
    let (clock, store, cp) = stepped_plane();
    let rs = store.create(web_replicaset(-1)).unwrap();
    run_all(&cp);
    assert_eq!(cp.stats().sync_errors, 1);
    for _ in 0..100 {
        clock.advance(Duration::from_secs(60));
        run_all(&cp);
    }
    assert_eq!(cp.stats().sync_errors, 1, "retried");
    let mut fixed = (*rs).clone();
    fixed.spec["replicas"] = json!(2);
    store.update(fixed).unwrap();
    run_all(&cp);
    assert_eq!(instance_names(&store).len(), 2);
}
