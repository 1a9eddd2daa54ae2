//! Informer behaviour (`k8s-semantics.md` §2, `reliability.md` K14–K16, S7, INV-INFORMER):
//! list + watch into the cache, handlers in log order, relist on `Expired` with tombstones,
//! late and panicking and slow handlers, resync on a fake clock, filtering, indexes,
//! read-your-own-writes, stop and restart, and a random-operation model test.
//!
//! No test asserts on timing: waits are bounded loops that fail after a generous real-time
//! limit only to turn a hang into a failure.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floyd::informer::{
    HandlerRegistration, IndexFunc, Informer, InformerConfig, InformerFactory, OnAdd, OnDelete,
    OnUpdate, Transform,
};
use floyd::log::Durability;
use floyd::store::{LabelSelector, Object, Store, StoreConfig};
use floyd::{ErrorKind, FakeClock};
use serde_json::json;

const KIND: &str = "Instance";

fn store() -> Store {
    Store::memory_with(StoreConfig {
        segment_size: 4096,
        durability: Durability::None,
        seed: Some(1),
        ..StoreConfig::default()
    })
    .unwrap()
}

fn obj(name: &str, ns: &str, app: &str) -> Object {
    Object::from_json(&json!({"kind": KIND,
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"node": "n1", "payload": "x"}}))
    .unwrap()
}

fn rv(o: &Object) -> u64 {
    o.metadata.resource_version.parse().unwrap()
}

/// Polls `cond` until it holds; panics after a generous bound (a hang guard, not a timing
/// assertion).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..20_000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("never happened: {what}");
}

/// Like [`eventually`] but moves a fake clock while waiting (backoff and resync wait on it).
fn eventually_advancing(clock: &FakeClock, what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..20_000 {
        if cond() {
            return;
        }
        clock.advance(Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("never happened: {what}");
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Add { key: String, rv: u64, initial: bool },
    Update { key: String, old: u64, new: u64 },
    Delete { key: String, rv: u64, unknown: bool },
}

/// A handler that records every call and rebuilds the state the calls describe.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Recorder {
    fn handlers(&self) -> (Option<OnAdd>, Option<OnUpdate>, Option<OnDelete>) {
        let (a, u, d) = (self.calls.clone(), self.calls.clone(), self.calls.clone());
        (
            Some(Arc::new(move |o: &Arc<Object>, initial| {
                a.lock().unwrap().push(Call::Add {
                    key: o.key(),
                    rv: rv(o),
                    initial,
                })
            })),
            Some(Arc::new(move |old: &Arc<Object>, new: &Arc<Object>| {
                u.lock().unwrap().push(Call::Update {
                    key: new.key(),
                    old: rv(old),
                    new: rv(new),
                })
            })),
            Some(Arc::new(move |o: &Arc<Object>, unknown| {
                d.lock().unwrap().push(Call::Delete {
                    key: o.key(),
                    rv: rv(o),
                    unknown,
                })
            })),
        )
    }

    fn register(&self, inf: &Informer, resync: Option<Duration>) -> HandlerRegistration {
        let (a, u, d) = self.handlers();
        inf.add_event_handler(a, u, d, resync).unwrap()
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// key → rv, rebuilt from the calls; panics on a call that contradicts the state so far
    /// (an add of a known key, an update or delete of an unknown one, versions going back).
    fn state(&self) -> BTreeMap<String, u64> {
        let mut s = BTreeMap::new();
        for c in self.calls() {
            match c {
                Call::Add { key, rv, .. } => {
                    assert!(s.insert(key.clone(), rv).is_none(), "add of known {key}");
                }
                Call::Update { key, old, new } => {
                    let cur = s
                        .get_mut(&key)
                        .unwrap_or_else(|| panic!("update of unknown {key}"));
                    assert_eq!(*cur, old, "update of {key}: old is not the last delivered");
                    assert!(new >= old, "{key} went back from {old} to {new}");
                    *cur = new;
                }
                Call::Delete { key, .. } => {
                    assert!(s.remove(&key).is_some(), "delete of unknown {key}");
                }
            }
        }
        s
    }
}

fn store_state(s: &Store, ns: Option<&str>, sel: Option<&LabelSelector>) -> BTreeMap<String, u64> {
    let (objs, _) = s.list(KIND, ns, sel).unwrap();
    objs.iter().map(|o| (o.key(), rv(o))).collect()
}

fn cache_state(inf: &Informer) -> BTreeMap<String, u64> {
    inf.list(None)
        .unwrap()
        .iter()
        .map(|o| (o.key(), rv(o)))
        .collect()
}

fn synced_to_store(inf: &Informer, s: &Store) {
    let target = s.resource_version();
    assert!(
        inf.wait_for_version(target, Some(Duration::from_secs(20)))
            .unwrap(),
        "informer never reached {target}"
    );
}

fn caught_up(reg: &HandlerRegistration) {
    eventually("handler caught up", || reg.stats().lag == 0);
}

#[test]
fn list_then_watch_delivers_initial_adds_then_events_in_log_order() {
    let s = store();
    let a = s.create(obj("a", "default", "web")).unwrap();
    let b = s.create(obj("b", "default", "web")).unwrap();
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    let rec = Recorder::default();
    let reg = rec.register(&inf, None);
    assert!(!inf.has_synced());
    assert!(!reg.has_synced());
    inf.start().unwrap();
    assert!(inf.wait_for_sync(Some(Duration::from_secs(20))).unwrap());
    assert!(reg.wait_for_sync(Some(Duration::from_secs(20))).unwrap());
    let mut a2 = (*a).clone();
    a2.spec = json!({"node": "n2"});
    let a2 = s.update(a2).unwrap();
    let gone_b = s.delete(KIND, "default/b", None).unwrap();
    let c = s.create(obj("c", "default", "web")).unwrap();
    synced_to_store(&inf, &s);
    caught_up(&reg);
    let calls = rec.calls();
    assert_eq!(
        calls[..2],
        [
            Call::Add {
                key: "default/a".into(),
                rv: rv(&a),
                initial: true
            },
            Call::Add {
                key: "default/b".into(),
                rv: rv(&b),
                initial: true
            },
        ]
    );
    assert_eq!(
        calls[2..],
        [
            Call::Update {
                key: "default/a".into(),
                old: rv(&a),
                new: rv(&a2)
            },
            Call::Delete {
                key: "default/b".into(),
                rv: rv(&gone_b),
                unknown: false
            },
            Call::Add {
                key: "default/c".into(),
                rv: rv(&c),
                initial: false
            },
        ]
    );
    assert_eq!(cache_state(&inf), store_state(&s, None, None));
    assert_eq!(inf.get("default/a").unwrap().unwrap(), a2);
    assert!(inf.get("default/b").unwrap().is_none());
}

#[test]
fn deleted_objects_carry_their_last_state_and_deletion_version() {
    let s = store();
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    let seen = Arc::new(Mutex::new(vec![]));
    let sn = seen.clone();
    inf.add_event_handler(
        None,
        None,
        Some(Arc::new(move |o: &Arc<Object>, unknown| {
            sn.lock().unwrap().push((o.clone(), unknown))
        })),
        None,
    )
    .unwrap();
    inf.start().unwrap();
    s.create(obj("a", "default", "web")).unwrap();
    synced_to_store(&inf, &s);
    let gone = s.delete(KIND, "default/a", None).unwrap();
    synced_to_store(&inf, &s);
    eventually("delete delivered", || seen.lock().unwrap().len() == 1);
    let (o, unknown) = seen.lock().unwrap()[0].clone();
    assert!(!unknown);
    assert_eq!(o, gone);
    assert!(o.metadata.deletion_timestamp.is_some());
}

#[test]
fn wait_for_sync_times_out_before_start_and_succeeds_after() {
    let s = store();
    s.create(obj("a", "default", "web")).unwrap();
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    assert!(!inf.wait_for_sync(Some(Duration::ZERO)).unwrap());
    assert!(!inf.has_synced());
    inf.start().unwrap();
    inf.start().unwrap(); // a second start is ignored
    assert!(inf.wait_for_sync(None).unwrap());
    assert!(inf.has_synced());
    assert_eq!(inf.keys().unwrap(), ["default/a"]);
}

#[test]
fn wait_for_version_reads_your_own_writes_across_kinds() {
    let s = store();
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    inf.start().unwrap();
    for i in 0..50 {
        let o = s.create(obj(&format!("o{i}"), "default", "web")).unwrap();
        assert!(inf.wait_for_version(rv(&o), None).unwrap());
        assert_eq!(inf.get(&o.key()).unwrap().unwrap(), o, "own write visible");
    }
    // A version written for another kind is passed too (no event of ours at it).
    let other = s
        .create(
            Object::from_json(&json!({"kind": "Service", "metadata": {"name": "svc"}})).unwrap(),
        )
        .unwrap();
    assert!(inf.wait_for_version(rv(&other), None).unwrap());
    assert!(inf.last_synced_version() >= rv(&other));
    assert!(inf.last_synced_version() <= s.resource_version());
    // A version nobody wrote yet: times out.
    assert!(
        !inf.wait_for_version(
            s.resource_version() + 1_000_000,
            Some(Duration::from_millis(1))
        )
        .unwrap()
    );
}

#[test]
fn namespace_and_label_selector_filter_and_relabels_become_adds_and_deletes() {
    let s = store();
    let sel = LabelSelector::parse("app=web").unwrap();
    let inf = Informer::new(&s, KIND, Duration::ZERO, Some("prod"), Some(sel.clone())).unwrap();
    let rec = Recorder::default();
    let reg = rec.register(&inf, None);
    let a = s.create(obj("a", "prod", "web")).unwrap();
    s.create(obj("b", "prod", "db")).unwrap();
    s.create(obj("c", "dev", "web")).unwrap();
    inf.start().unwrap();
    synced_to_store(&inf, &s);
    assert_eq!(inf.keys().unwrap(), ["prod/a"]);
    // b joins the selector, a leaves it.
    let mut b2 = obj("b", "prod", "web");
    b2.metadata.resource_version.clear();
    let b2 = s.update(b2).unwrap();
    let a2 = s.update(obj("a", "prod", "db")).unwrap();
    synced_to_store(&inf, &s);
    caught_up(&reg);
    assert_eq!(inf.keys().unwrap(), ["prod/b"]);
    let calls = rec.calls();
    assert_eq!(
        calls,
        [
            Call::Add {
                key: "prod/a".into(),
                rv: rv(&a),
                initial: true
            },
            Call::Add {
                key: "prod/b".into(),
                rv: rv(&b2),
                initial: false
            },
            // Leaving the selector is a delete carrying the last state that matched.
            Call::Delete {
                key: "prod/a".into(),
                rv: rv(&a),
                unknown: false
            },
        ]
    );
    assert!(rv(&a2) > rv(&a));
    assert_eq!(cache_state(&inf), store_state(&s, Some("prod"), Some(&sel)));
    assert_eq!(
        inf.list(Some(&LabelSelector::parse("app=db").unwrap()))
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn builtin_and_custom_indexes_answer_by_index_queries() {
    let s = store();
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    inf.add_index("namespace", IndexFunc::parse("namespace").unwrap())
        .unwrap();
    inf.add_index("app", IndexFunc::parse("label:app").unwrap())
        .unwrap();
    inf.add_index("owner", IndexFunc::parse("owner").unwrap())
        .unwrap();
    inf.add_index("node", IndexFunc::parse("field:spec.node").unwrap())
        .unwrap();
    inf.add_index(
        "first",
        IndexFunc::custom(|o| vec![o.metadata.name[..1].to_string()]),
    )
    .unwrap();
    assert_eq!(
        inf.add_index("app", IndexFunc::Namespace)
            .unwrap_err()
            .kind(),
        ErrorKind::Invalid
    );
    let mut owned = obj("x1", "default", "web");
    owned.metadata.owner_references = vec![floyd::store::OwnerReference {
        kind: "ReplicaSet".into(),
        name: "rs".into(),
        uid: "rs-uid".into(),
        controller: Some(true),
        block_owner_deletion: None,
    }];
    s.create(owned).unwrap();
    s.create(obj("x2", "default", "db")).unwrap();
    s.create(obj("y1", "other", "web")).unwrap();
    inf.start().unwrap();
    synced_to_store(&inf, &s);
    assert_eq!(
        inf.index_keys("namespace", "default").unwrap(),
        ["default/x1", "default/x2"]
    );
    assert_eq!(
        inf.index_keys("app", "web").unwrap(),
        ["default/x1", "other/y1"]
    );
    assert_eq!(inf.index_keys("owner", "rs-uid").unwrap(), ["default/x1"]);
    assert_eq!(inf.by_index("node", "n1").unwrap().len(), 3);
    assert_eq!(inf.index_keys("first", "x").unwrap().len(), 2);
    assert_eq!(inf.list_index_values("app").unwrap(), ["db", "web"]);
    // An index added after start indexes what is cached.
    inf.add_index("app2", IndexFunc::Label("app".into()))
        .unwrap();
    assert_eq!(inf.index_keys("app2", "db").unwrap(), ["default/x2"]);
    // Index values follow deletes; empty values disappear.
    s.delete(KIND, "default/x2", None).unwrap();
    synced_to_store(&inf, &s);
    assert_eq!(inf.list_index_values("app").unwrap(), ["web"]);
    let e = inf.by_index("nope", "v").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(
        e.to_string()
            .contains("Index with name nope does not exist")
    );
}

#[test]
fn objects_are_shared_with_the_store_not_copied() {
    let s = store();
    let a = s.create(obj("a", "default", "web")).unwrap();
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    inf.start().unwrap();
    synced_to_store(&inf, &s);
    let cached = inf.get("default/a").unwrap().unwrap();
    assert!(Arc::ptr_eq(
        &cached,
        &s.get(KIND, "default/a").unwrap().unwrap()
    ));
    assert!(Arc::ptr_eq(&cached, &inf.list(None).unwrap()[0]));
    drop(a);
}

#[test]
fn transform_strips_fields_before_caching_and_is_fixed_at_start() {
    let s = store();
    s.create(obj("a", "default", "web")).unwrap();
    let mut cfg = InformerConfig::new(KIND);
    let t: Transform = Arc::new(|o: Arc<Object>| {
        let mut o = (*o).clone();
        o.spec = serde_json::Value::Null;
        o.metadata.annotations.clear();
        Arc::new(o)
    });
    cfg.transform = Some(t.clone());
    let inf = Informer::with_config(&s, cfg).unwrap();
    inf.start().unwrap();
    s.create(obj("b", "default", "web")).unwrap();
    synced_to_store(&inf, &s);
    for o in inf.list(None).unwrap() {
        assert!(o.spec.is_null(), "{} kept its spec", o.key());
    }
    assert_eq!(inf.set_transform(t).unwrap_err().kind(), ErrorKind::Invalid);
}

/// A transform that blocks the reflector on the object named `gate` until released, so a
/// test can compact the log while the informer is behind.
struct Gate {
    blocked: AtomicBool,
    open: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            blocked: AtomicBool::new(false),
            open: Mutex::new(false),
            cv: std::sync::Condvar::new(),
        })
    }
    fn transform(self: &Arc<Gate>) -> Transform {
        let g = self.clone();
        Arc::new(move |o: Arc<Object>| {
            if o.metadata.name.starts_with("gate") {
                g.blocked.store(true, Ordering::SeqCst);
                let mut open = g.open.lock().unwrap();
                while !*open {
                    open = g.cv.wait(open).unwrap();
                }
            }
            o
        })
    }
    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

fn filler(s: &Store, n: usize) {
    for i in 0..n {
        let name = format!("f{}-{i}", s.resource_version());
        s.create(
            Object::from_json(&json!({"kind": "Filler", "metadata": {"name": name},
                "spec": {"pad": "p".repeat(200)}}))
            .unwrap(),
        )
        .unwrap();
    }
}

#[test]
fn compaction_while_behind_relists_once_with_tombstones_and_no_duplicates() {
    let s = store();
    let clock = FakeClock::shared();
    for i in 0..6 {
        s.create(obj(&format!("o{i}"), "default", "web")).unwrap();
    }
    let gate = Gate::new();
    let mut cfg = InformerConfig::new(KIND);
    cfg.clock = clock.clone();
    cfg.transform = Some(gate.transform());
    let inf = Informer::with_config(&s, cfg).unwrap();
    let rec = Recorder::default();
    let reg = rec.register(&inf, None);
    inf.start().unwrap();
    synced_to_store(&inf, &s);
    // The reflector blocks on `gate`; meanwhile objects change and the log is compacted.
    s.create(obj("gate", "default", "web")).unwrap();
    eventually("reflector blocked", || gate.blocked.load(Ordering::SeqCst));
    let before = inf.last_synced_version();
    // Past the reflector's current segment, so these events are compacted away unseen.
    filler(&s, 40);
    s.delete(KIND, "default/o0", None).unwrap();
    s.delete(KIND, "default/o1", None).unwrap();
    s.update(obj("o2", "default", "db")).unwrap();
    s.create(obj("new", "default", "web")).unwrap();
    filler(&s, 80);
    s.delete(KIND, "default/o3", None).unwrap();
    filler(&s, 80);
    let snap = s.snapshot().unwrap();
    assert!(snap.compacted_segments > 0, "the test needs a compaction");
    assert!(s.stats().unwrap().oldest_version > before + 1);
    gate.release();
    eventually_advancing(&clock, "relisted and caught up", || {
        inf.stats().lists == 2 && inf.last_synced_version() >= s.resource_version()
    });
    caught_up(&reg);
    let st = inf.stats();
    assert_eq!(st.expired, 1, "{st:?}");
    assert_eq!(st.lists, 2, "exactly one relist: {st:?}");
    assert!(st.last_error.unwrap().contains("expired"));
    // Versions never went back, the handler's calls rebuild the store, nothing twice.
    assert_eq!(rec.state(), store_state(&s, None, None));
    assert_eq!(cache_state(&inf), store_state(&s, None, None));
    let calls = rec.calls();
    let mut seen = std::collections::HashSet::new();
    for c in &calls {
        let id = match c {
            Call::Add { key, rv, .. } => ("put", key.clone(), *rv),
            Call::Update { key, new, .. } => ("put", key.clone(), *new),
            Call::Delete { key, .. } => ("del", key.clone(), 0),
        };
        assert!(seen.insert(id.clone()), "delivered twice: {id:?}");
    }
    // Deletes that happened in the gap arrive once, as tombstones with the last known state.
    for k in ["default/o0", "default/o1", "default/o3"] {
        let dels: Vec<_> = calls
            .iter()
            .filter(|c| matches!(c, Call::Delete { key, .. } if key == k))
            .collect();
        assert_eq!(dels.len(), 1, "{k}: {dels:?}");
        assert!(
            matches!(dels[0], Call::Delete { unknown: true, .. }),
            "{k}: {dels:?}"
        );
    }
}

#[test]
fn late_handler_gets_synthetic_adds_then_live_events_without_gap_or_duplicate() {
    let s = store();
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    inf.start().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) || i < 300 {
                let name = format!("o{}", i % 40);
                let key = format!("default/{name}");
                match i % 3 {
                    0 => {
                        let _ = s.create(obj(&name, "default", "web"));
                    }
                    1 => {
                        let _ = s.update(obj(&name, "default", &format!("v{i}")));
                    }
                    _ => {
                        let _ = s.delete(KIND, &key, None);
                    }
                }
                i += 1;
            }
        })
    };
    eventually("some state", || inf.list(None).unwrap().len() > 5);
    let rec = Recorder::default();
    let reg = rec.register(&inf, None);
    assert!(reg.wait_for_sync(Some(Duration::from_secs(20))).unwrap());
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    synced_to_store(&inf, &s);
    caught_up(&reg);
    let calls = rec.calls();
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, Call::Add { initial: true, .. }))
    );
    // `state()` fails on any gap or duplicate at the boundary.
    assert_eq!(rec.state(), store_state(&s, None, None));
}

/// §2.5: a handler's `has_synced` means the informer synced *and* this handler was handed
/// every add of the initial list. A handler registered after `start` but before the first
/// list lands (the factory's usual order) receives that list through its queue, and must not
/// report synced before it has taken all of it.
#[test]
fn a_handler_added_while_the_first_list_is_in_flight_syncs_only_after_its_adds() {
    const N: usize = 20_000;
    let s = store();
    for i in 0..N {
        s.create(obj(&format!("o{i}"), "default", "web")).unwrap();
    }
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    inf.start().unwrap();
    let adds = Arc::new(AtomicUsize::new(0));
    let on_add: OnAdd = {
        let adds = adds.clone();
        Arc::new(move |_, _| {
            std::thread::sleep(Duration::from_micros(20));
            adds.fetch_add(1, Ordering::SeqCst);
        })
    };
    let reg = inf
        .add_event_handler(Some(on_add), None, None, None)
        .unwrap();
    loop {
        // Synced first, then the count: the count can only have grown since.
        let synced = reg.has_synced();
        let n = adds.load(Ordering::SeqCst);
        if synced {
            assert_eq!(n, N, "synced after {n} of {N} initial adds");
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn panicking_handler_is_isolated_counted_and_reported() {
    let s = store();
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    let bad_calls = Arc::new(AtomicUsize::new(0));
    let bc = bad_calls.clone();
    let bad = inf
        .add_event_handler(
            Some(Arc::new(move |o: &Arc<Object>, _| {
                bc.fetch_add(1, Ordering::SeqCst);
                if o.metadata.name.starts_with("boom") {
                    panic!("handler bug on {}", o.metadata.name);
                }
            })),
            None,
            None,
            None,
        )
        .unwrap();
    let rec = Recorder::default();
    let good = rec.register(&inf, None);
    inf.start().unwrap();
    for name in ["a", "boom1", "b", "boom2", "c"] {
        s.create(obj(name, "default", "web")).unwrap();
    }
    synced_to_store(&inf, &s);
    caught_up(&bad);
    caught_up(&good);
    assert_eq!(
        bad_calls.load(Ordering::SeqCst),
        5,
        "the panicking handler keeps going"
    );
    let st = bad.stats();
    assert_eq!(st.panics, 2);
    assert!(st.last_panic.unwrap().contains("handler bug on boom2"));
    assert_eq!(good.stats().panics, 0);
    assert_eq!(rec.state(), store_state(&s, None, None));
}

#[test]
fn slow_handler_stalls_nobody_has_bounded_lag_and_relists_when_lapped() {
    let s = store();
    let mut cfg = InformerConfig::new(KIND);
    cfg.ring_capacity = 8;
    let inf = Informer::with_config(&s, cfg).unwrap();
    let gate = Gate::new();
    let slow_rec = Recorder::default();
    let (sa, su, sd) = slow_rec.handlers();
    let g = gate.clone();
    let entered = Arc::new(AtomicBool::new(false));
    let en = entered.clone();
    let slow_add: OnAdd = Arc::new(move |o: &Arc<Object>, initial| {
        if o.metadata.name == "first" {
            en.store(true, Ordering::SeqCst);
            let mut open = g.open.lock().unwrap();
            while !*open {
                open = g.cv.wait(open).unwrap();
            }
        }
        sa.as_ref().unwrap()(o, initial)
    });
    let slow = inf.add_event_handler(Some(slow_add), su, sd, None).unwrap();
    let fast_rec = Recorder::default();
    let fast = fast_rec.register(&inf, None);
    inf.start().unwrap();
    s.create(obj("first", "default", "web")).unwrap();
    eventually("slow handler stuck", || entered.load(Ordering::SeqCst));
    for i in 0..30 {
        s.create(obj(&format!("o{i}"), "default", "web")).unwrap();
    }
    for i in 0..10 {
        s.delete(KIND, &format!("default/o{i}"), None).unwrap();
    }
    synced_to_store(&inf, &s);
    // The fast handler gets everything while the slow one is stuck.
    caught_up(&fast);
    assert_eq!(fast_rec.state(), store_state(&s, None, None));
    assert!(slow.stats().lag > 8, "lag is reported: {:?}", slow.stats());
    gate.release();
    caught_up(&slow);
    assert!(slow.stats().relists >= 1, "{:?}", slow.stats());
    assert_eq!(slow_rec.state(), store_state(&s, None, None));
}

#[test]
fn handler_resync_follows_client_go_periods_on_a_fake_clock() {
    let s = store();
    s.create(obj("a", "default", "web")).unwrap();
    s.create(obj("b", "default", "web")).unwrap();
    let clock = FakeClock::shared();
    let mut cfg = InformerConfig::new(KIND);
    cfg.clock = clock.clone();
    cfg.resync = Duration::from_secs(10);
    let inf = Informer::with_config(&s, cfg).unwrap();
    let every = Recorder::default();
    let r_default = every.register(&inf, None);
    let never = Recorder::default();
    let r_never = never.register(&inf, Some(Duration::ZERO));
    // Before start a shorter period lowers the check period (10 s -> 4 s).
    let mid = Recorder::default();
    let r_mid = mid.register(&inf, Some(Duration::from_secs(4)));
    assert_eq!(r_mid.stats().resync_period, Duration::from_secs(4));
    assert_eq!(r_default.stats().resync_period, Duration::from_secs(10));
    assert_eq!(r_never.stats().resync_period, Duration::ZERO);
    inf.start().unwrap();
    synced_to_store(&inf, &s);
    // After start: below the 1 s minimum -> 1 s, then below the check period -> 4 s.
    let late = Recorder::default();
    let r_late = late.register(&inf, Some(Duration::from_millis(10)));
    assert_eq!(r_late.stats().resync_period, Duration::from_secs(4));
    eventually_advancing(&clock, "resyncs", || {
        r_default.stats().resyncs >= 1 && r_mid.stats().resyncs >= 2 && r_late.stats().resyncs >= 1
    });
    // Each handler keeps its own cadence: over the same stretch of clock time the 10 s
    // handler (due every 10 s, served on the 4 s check: every 12 s) resyncs about a third as
    // often as the 4 s one. A handler resyncing on every check would match it.
    let (d0, m0) = (r_default.stats().resyncs, r_mid.stats().resyncs);
    eventually_advancing(&clock, "a dozen more 4 s resyncs", || {
        r_mid.stats().resyncs >= m0 + 12
    });
    let (dd, dm) = (r_default.stats().resyncs - d0, r_mid.stats().resyncs - m0);
    assert!(
        dd >= 1 && 2 * dd <= dm + 1,
        "10 s handler {dd}, 4 s handler {dm}"
    );
    assert_eq!(r_never.stats().resyncs, 0);
    let resync_updates: Vec<_> = every
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Update { old, new, .. } if old == new))
        .collect();
    assert!(resync_updates.len() >= 2, "{resync_updates:?}");
    assert!(never.calls().iter().all(|c| matches!(c, Call::Add { .. })));
}

#[test]
fn zero_informer_resync_disables_handler_resync() {
    let s = store();
    s.create(obj("a", "default", "web")).unwrap();
    let clock = FakeClock::shared();
    let mut cfg = InformerConfig::new(KIND);
    cfg.clock = clock.clone();
    let inf = Informer::with_config(&s, cfg).unwrap();
    let rec = Recorder::default();
    let reg = rec.register(&inf, Some(Duration::from_secs(5)));
    assert_eq!(
        reg.stats().resync_period,
        Duration::ZERO,
        "upstream quirk kept"
    );
    inf.start().unwrap();
    synced_to_store(&inf, &s);
    for _ in 0..100 {
        clock.advance(Duration::from_secs(1));
    }
    caught_up(&reg);
    assert_eq!(reg.stats().resyncs, 0);
    assert_eq!(rec.calls().len(), 1);
}

#[test]
fn stop_joins_threads_and_later_calls_fail_and_a_restart_resumes_from_the_store() {
    let s = store();
    s.create(obj("a", "default", "web")).unwrap();
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    let rec = Recorder::default();
    rec.register(&inf, None);
    inf.start().unwrap();
    synced_to_store(&inf, &s);
    inf.stop();
    inf.stop(); // idempotent
    assert!(inf.is_stopped());
    let n = rec.calls().len();
    s.create(obj("b", "default", "web")).unwrap();
    for e in [
        inf.start().unwrap_err(),
        inf.get("default/a").unwrap_err(),
        inf.list(None).unwrap_err(),
        inf.wait_for_sync(None).unwrap_err(),
        inf.add_event_handler(None, None, None, None).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::ShutDown);
    }
    assert_eq!(rec.calls().len(), n, "no delivery after stop");
    // A new informer over the same store starts from the store's current state.
    let again = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    let rec2 = Recorder::default();
    let reg2 = rec2.register(&again, None);
    again.start().unwrap();
    synced_to_store(&again, &s);
    caught_up(&reg2);
    assert_eq!(rec2.state(), store_state(&s, None, None));
}

#[test]
fn a_closed_store_ends_the_informer_with_shutdown() {
    let s = store();
    let inf = Informer::new(&s, KIND, Duration::ZERO, None, None).unwrap();
    inf.start().unwrap();
    synced_to_store(&inf, &s);
    s.close().unwrap();
    let e = inf.wait_for_version(u64::MAX, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ShutDown);
    inf.stop();
}

#[test]
fn factory_shares_one_informer_per_kind_namespace_and_selector() {
    let s = store();
    s.create(obj("a", "default", "web")).unwrap();
    let f = InformerFactory::new(&s, Duration::ZERO);
    let sel = LabelSelector::parse("app=web").unwrap();
    let i1 = f.informer(KIND, None, None).unwrap();
    let i2 = f.informer(KIND, None, None).unwrap();
    let i3 = f.informer(KIND, None, Some(&sel)).unwrap();
    let i4 = f.informer(KIND, Some("default"), Some(&sel)).unwrap();
    let i5 = f
        .informer(
            KIND,
            None,
            Some(&LabelSelector::parse("app = web").unwrap()),
        )
        .unwrap();
    assert_eq!(f.len(), 3);
    let r1 = Recorder::default();
    let r2 = Recorder::default();
    let reg1 = r1.register(&i1, None);
    let reg2 = r2.register(&i2, None);
    f.start().unwrap();
    assert!(
        f.wait_for_cache_sync(Some(Duration::from_secs(20)))
            .unwrap()
    );
    let late = f.informer("Service", None, None).unwrap();
    assert!(
        late.wait_for_sync(Some(Duration::from_secs(20))).unwrap(),
        "started on creation"
    );
    caught_up(&reg1);
    caught_up(&reg2);
    assert_eq!(r1.calls(), r2.calls());
    assert_eq!(i1.stats().lists, 1, "one reflector for both");
    drop((i3, i4, i5));
    f.shutdown();
    assert!(i1.is_stopped());
    assert_eq!(
        f.informer(KIND, None, None).unwrap_err().kind(),
        ErrorKind::ShutDown
    );
    assert_eq!(
        f.wait_for_cache_sync(None).unwrap_err().kind(),
        ErrorKind::ShutDown
    );
}

/// splitmix64: the model test's seeded randomness.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// INV-INFORMER as a model test: random creates, updates (relabels in and out of the
/// selector), deletes, other-kind filler and snapshots that compact the log; sometimes the
/// reflector is held behind a gate across a compaction. At every sync point the cache equals
/// the store filtered by the informer's namespace and selector, every handler's calls
/// rebuild the same state, and `last_synced_version` never went back.
#[test]
fn model_cache_and_handler_calls_equal_the_filtered_store() {
    let (mut expired, mut handler_relists) = (0, 0);
    for seed in 1..=6u64 {
        let mut rng = Rng(seed);
        let s = store();
        let clock = FakeClock::shared();
        let sel = LabelSelector::parse("app in (web,api)").unwrap();
        let gate_on = Arc::new(AtomicBool::new(false));
        let gate = Gate::new();
        let mut cfg = InformerConfig::new(KIND);
        cfg.clock = clock.clone();
        cfg.namespace = Some("prod".into());
        cfg.label_selector = Some(sel.clone());
        cfg.ring_capacity = 16; // small: handler relists happen too
        {
            let inner = gate.transform();
            let on = gate_on.clone();
            cfg.transform = Some(Arc::new(move |o: Arc<Object>| {
                if on.load(Ordering::SeqCst) {
                    inner(o)
                } else {
                    o
                }
            }));
        }
        let inf = Informer::with_config(&s, cfg).unwrap();
        inf.add_index("app", IndexFunc::Label("app".into()))
            .unwrap();
        let rec = Recorder::default();
        let reg = rec.register(&inf, None);
        // A second handler that can be held, so the ring laps it.
        let hgate = Gate::new();
        let slow = Recorder::default();
        let slow_reg = {
            let (a, u, d) = slow.handlers();
            let g = hgate.clone();
            let hold: OnAdd = Arc::new(move |o: &Arc<Object>, initial| {
                if o.metadata.name.starts_with("hold") {
                    g.blocked.store(true, Ordering::SeqCst);
                    let mut open = g.open.lock().unwrap();
                    while !*open {
                        open = g.cv.wait(open).unwrap();
                    }
                }
                a.as_ref().unwrap()(o, initial)
            });
            inf.add_event_handler(Some(hold), u, d, None).unwrap()
        };
        inf.start().unwrap();
        let mut last = 0;
        let apps = ["web", "api", "db"];
        let nss = ["prod", "dev"];
        for step in 0..250 {
            let name = format!("o{}", rng.below(25));
            let ns = nss[rng.below(2) as usize];
            let app = apps[rng.below(3) as usize];
            match rng.below(10) {
                0..=3 => {
                    let _ = s.create(obj(&name, ns, app));
                }
                4..=6 => {
                    let _ = s.update(obj(&name, ns, app));
                }
                7 | 8 => {
                    let _ = s.delete(KIND, &format!("{ns}/{name}"), None);
                }
                _ => {
                    filler(&s, 1 + rng.below(20) as usize);
                    if rng.below(3) == 0 {
                        s.snapshot().unwrap();
                    }
                }
            }
            if step % 50 == 49 {
                // Hold the second handler while more than a ring's worth of changes pass.
                *hgate.open.lock().unwrap() = false;
                hgate.blocked.store(false, Ordering::SeqCst);
                s.create(obj(&format!("hold{step}"), "prod", "web"))
                    .unwrap();
                eventually_advancing(&clock, "handler held", || {
                    hgate.blocked.load(Ordering::SeqCst)
                });
                for i in 0..20 {
                    let name = format!("o{}", rng.below(25));
                    let _ = s.create(obj(&name, "prod", apps[i % 2]));
                    let _ = s.update(obj(&name, "prod", apps[(i + 1) % 2]));
                }
                let _ = s.delete(KIND, &format!("prod/hold{step}"), None);
                hgate.release();
            }
            if step % 25 == 24 {
                if rng.below(3) == 0 {
                    // Hold the reflector behind a compaction.
                    gate_on.store(true, Ordering::SeqCst);
                    *gate.open.lock().unwrap() = false;
                    gate.blocked.store(false, Ordering::SeqCst);
                    s.create(obj(&format!("gate{step}"), "prod", "web"))
                        .unwrap();
                    // (It may be in a relist backoff after an earlier compaction.)
                    eventually_advancing(&clock, "reflector blocked", || {
                        gate.blocked.load(Ordering::SeqCst)
                    });
                    s.delete(KIND, &format!("prod/gate{step}"), None).unwrap();
                    let _ = s.delete(KIND, &format!("prod/{name}"), None);
                    filler(&s, 60);
                    s.snapshot().unwrap();
                    gate_on.store(false, Ordering::SeqCst);
                    gate.release();
                }
                let target = s.resource_version();
                eventually_advancing(&clock, "informer caught up", || {
                    inf.last_synced_version() >= target
                });
                caught_up(&reg);
                caught_up(&slow_reg);
                let v = inf.last_synced_version();
                assert!(v >= last, "seed {seed}: last_synced_version went back");
                last = v;
                let want = store_state(&s, Some("prod"), Some(&sel));
                assert_eq!(cache_state(&inf), want, "seed {seed} step {step}: cache");
                assert_eq!(rec.state(), want, "seed {seed} step {step}: handler");
                assert_eq!(slow.state(), want, "seed {seed} step {step}: held handler");
                let mut by_app = HashMap::new();
                for o in inf.list(None).unwrap() {
                    *by_app.entry(o.metadata.labels["app"].clone()).or_insert(0) += 1;
                }
                for (app, n) in by_app {
                    assert_eq!(inf.index_keys("app", &app).unwrap().len(), n);
                }
            }
        }
        expired += inf.stats().expired;
        handler_relists += slow_reg.stats().relists;
        inf.stop();
    }
    // The model must have exercised both recovery paths, or it proves little.
    assert!(expired > 0, "no reflector relist happened");
    assert!(handler_relists > 0, "no handler relist happened");
}
