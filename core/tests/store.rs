//! Store semantics: Kubernetes CRUD rules, optimistic concurrency, watch from any retained
//! version, snapshots with compaction, recovery, and a reference-model property test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use floyd::ErrorKind;
use floyd::log::Durability;
use floyd::store::{EventType, LabelSelector, Object, Store, StoreConfig};
use proptest::prelude::*;
use serde_json::json;

fn obj(kind: &str, name: &str, spec: serde_json::Value) -> Object {
    Object::from_json(
        &json!({"kind": kind, "metadata": {"name": name, "labels": {"app": "web"}}, "spec": spec}),
    )
    .unwrap()
}

fn cfg() -> StoreConfig {
    StoreConfig {
        segment_size: 64 * 1024,
        durability: Durability::None,
        seed: Some(1),
        ..StoreConfig::default()
    }
}

fn rv(o: &Object) -> u64 {
    o.metadata.resource_version.parse().unwrap()
}

#[test]
fn create_sets_identity_and_rejects_duplicates() {
    let s = Store::memory();
    let a = s
        .create(obj("Deployment", "web", json!({"replicas": 3})))
        .unwrap();
    assert_eq!(a.metadata.namespace, "default");
    assert_eq!(a.metadata.generation, 1);
    assert_eq!(a.metadata.uid.len(), 36);
    assert!(
        a.metadata
            .creation_timestamp
            .as_deref()
            .unwrap()
            .ends_with('Z')
    );
    assert!(rv(&a) > 0);
    let e = s.create(obj("Deployment", "web", json!({}))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    // Same name, other kind: fine.
    let b = s.create(obj("Service", "web", json!({}))).unwrap();
    assert!(rv(&b) > rv(&a));
    assert_eq!(s.get("Deployment", "default/web").unwrap().unwrap(), a);
    assert!(s.get("Deployment", "default/nope").unwrap().is_none());
    // Cluster-scoped kinds have no namespace.
    let n = s.create(obj("Node", "host-1", json!({}))).unwrap();
    assert_eq!(n.metadata.namespace, "");
    assert!(s.get("Node", "host-1").unwrap().is_some());
}

#[test]
fn a_data_directory_is_open_once_at_a_time_and_close_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(dir.path(), cfg()).unwrap();
    s.create(obj("Thing", "a", json!({}))).unwrap();
    let e = Store::open(dir.path(), cfg()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains("in use by this process"), "{e}");
    // Closed, the directory opens again while the old handle and its watch still exist.
    let w = s
        .watch(Some("Thing"), 0, Some(Duration::from_millis(10)))
        .unwrap();
    s.close().unwrap();
    let (again, rep) = Store::open(dir.path(), cfg()).unwrap();
    assert_eq!(rep.replayed, 1);
    assert!(again.get("Thing", "default/a").unwrap().is_some());
    let err = s.create(obj("Thing", "b", json!({}))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShutDown);
    assert_eq!(s.snapshot().unwrap_err().kind(), ErrorKind::ShutDown);
    again.create(obj("Thing", "c", json!({}))).unwrap();
    again.snapshot().unwrap();
    drop((w, s));
    assert_eq!(again.list("Thing", None, None).unwrap().0.len(), 2);
}

fn snapshot_temporaries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn snapshot_temporaries_never_outlive_a_failed_snapshot_or_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(dir.path(), cfg()).unwrap();
    s.create(obj("Thing", "a", json!({}))).unwrap();
    // The rename into place fails (a non-empty directory holds the name): the snapshot is
    // an `Io` error and its temporary is gone with it.
    let rv = s.resource_version();
    let blocker = dir.path().join(format!("snapshots/snap-{rv:020}.snap"));
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    assert_eq!(s.snapshot().unwrap_err().kind(), ErrorKind::Io);
    assert_eq!(snapshot_temporaries(dir.path()), Vec::<String>::new());
    std::fs::remove_dir_all(&blocker).unwrap();
    s.snapshot().unwrap();
    s.close().unwrap();
    // A crash in the middle of a snapshot leaves a temporary: the next open removes it.
    let stale = dir.path().join("snapshots/snap-00000000000000000099.tmp");
    std::fs::write(&stale, vec![7u8; 4096]).unwrap();
    let (again, rep) = Store::open(dir.path(), cfg()).unwrap();
    assert!(!stale.exists());
    assert!(rep.snapshot.is_some());
    assert!(again.get("Thing", "default/a").unwrap().is_some());
}

#[test]
fn generate_name_and_bad_input() {
    let s = Store::memory();
    let mut o = obj("Instance", "", json!({}));
    o.metadata.generate_name = Some("web-".into());
    let a = s.create(o.clone()).unwrap();
    let b = s.create(o).unwrap();
    assert!(a.metadata.name.starts_with("web-") && a.metadata.name.len() == 9);
    assert_ne!(a.metadata.name, b.metadata.name);
    let e = s
        .create(obj("Deployment", "Bad_Name", json!({})))
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.field()),
        (ErrorKind::Invalid, Some("metadata.name"))
    );
    let mut pre = obj("Deployment", "x", json!({}));
    pre.metadata.resource_version = "5".into();
    assert_eq!(s.create(pre).unwrap_err().kind(), ErrorKind::Invalid);
    let huge = obj("ConfigBlob", "big", json!({"data": "x".repeat(2 << 20)}));
    assert_eq!(s.create(huge).unwrap_err().kind(), ErrorKind::Invalid);
}

#[test]
fn update_conflicts_generation_and_status() {
    let s = Store::memory();
    let a = s
        .create(obj("Deployment", "web", json!({"replicas": 1})))
        .unwrap();
    // Stale precondition.
    let mut stale = (*a).clone();
    stale.metadata.resource_version = "1".into();
    assert_eq!(s.update(stale).unwrap_err().kind(), ErrorKind::Conflict);
    // Spec change bumps generation.
    let mut u = (*a).clone();
    u.spec = json!({"replicas": 2});
    let b = s.update(u).unwrap();
    assert_eq!(b.metadata.generation, 2);
    assert!(rv(&b) > rv(&a));
    assert_eq!(b.metadata.uid, a.metadata.uid);
    // The old version is now stale.
    let mut again = (*a).clone();
    again.spec = json!({"replicas": 9});
    assert_eq!(s.update(again).unwrap_err().kind(), ErrorKind::Conflict);
    // Label change: new version, same generation.
    let mut l = (*b).clone();
    l.metadata.labels.insert("tier".into(), "front".into());
    let c = s.update(l).unwrap();
    assert_eq!(c.metadata.generation, 2);
    // update() ignores status; update_status() changes only status.
    let mut st = (*c).clone();
    st.status = json!({"readyReplicas": 2});
    st.spec = json!({"replicas": 100});
    let d = s.update_status(st).unwrap();
    assert_eq!(d.status, json!({"readyReplicas": 2}));
    assert_eq!(d.spec, json!({"replicas": 2}));
    assert_eq!(d.metadata.generation, 2);
    let mut sneaky = (*d).clone();
    sneaky.status = json!({"readyReplicas": 0});
    let e = s.update(sneaky).unwrap();
    assert_eq!(e.status, json!({"readyReplicas": 2}), "update keeps status");
    assert_eq!(rv(&e), rv(&d), "a no-op update writes nothing");
    // Missing object.
    assert_eq!(
        s.update(obj("Deployment", "ghost", json!({})))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

/// A spec `levels` objects deep.
fn deep(levels: usize) -> serde_json::Value {
    (0..levels).fold(json!(1), |v, _| json!({ "a": v }))
}

#[test]
fn update_validates_every_changed_part() {
    let s = Store::memory();
    let a = s
        .create(obj("Deployment", "web", json!({"replicas": 1})))
        .unwrap();
    let invalid = |o: Object| {
        let e = s.update(o).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        e.field().map(str::to_string)
    };
    let mut o = (*a).clone();
    o.metadata.labels.insert("bad key!".into(), "x".into());
    assert_eq!(
        invalid(o).as_deref(),
        Some(r#"metadata.labels["bad key!"]"#)
    );
    let mut o = (*a).clone();
    o.metadata.labels.insert("app".into(), "-dash".into());
    assert_eq!(invalid(o).as_deref(), Some(r#"metadata.labels["app"]"#));
    let mut o = (*a).clone();
    o.metadata
        .annotations
        .insert("no spaces".into(), "x".into());
    assert_eq!(
        invalid(o).as_deref(),
        Some(r#"metadata.annotations["no spaces"]"#)
    );
    let mut o = (*a).clone();
    o.metadata.owner_references = serde_json::from_value(json!([
        {"kind": "ReplicaSet", "name": "a", "uid": "u1", "controller": true},
        {"kind": "ReplicaSet", "name": "b", "uid": "u2", "controller": true},
    ]))
    .unwrap();
    assert_eq!(
        invalid(o).as_deref(),
        Some("metadata.ownerReferences[1].controller")
    );
    let mut o = (*a).clone();
    o.metadata.owner_references = serde_json::from_value(json!([
        {"kind": "ReplicaSet", "name": "me", "uid": a.metadata.uid.clone()},
    ]))
    .unwrap();
    assert_eq!(
        invalid(o).as_deref(),
        Some("metadata.ownerReferences[0].uid")
    );
    let mut o = (*a).clone();
    o.spec = deep(100);
    assert_eq!(invalid(o).as_deref(), Some("spec"));
    let mut o = (*a).clone();
    o.status = deep(100);
    let e = s.update_status(o).unwrap_err();
    assert_eq!(e.field(), Some("status"));
    // Nothing above was written.
    assert_eq!(rv(&s.get("Deployment", &a.key()).unwrap().unwrap()), rv(&a));
}

#[test]
fn an_update_is_not_rejected_for_a_limit_tightened_after_the_part_was_stored() {
    // Kubernetes' validation ratcheting: a part the update leaves alone is not checked
    // again, so a store reopened with a smaller depth limit still takes label changes to
    // an object whose spec is deeper than the new limit, and refuses a changed deep spec.
    let dir = tempfile::tempdir().unwrap();
    let a = {
        let (s, _) = Store::open(dir.path(), cfg()).unwrap();
        s.create(obj("Deployment", "web", deep(10))).unwrap()
    };
    let mut tight = cfg();
    tight.limits.max_depth = 5;
    let (s, _) = Store::open(dir.path(), tight).unwrap();
    let mut o = (*a).clone();
    o.metadata.labels.insert("tier".into(), "front".into());
    let b = s.update(o).unwrap();
    assert_eq!(b.metadata.labels["tier"], "front");
    let mut o = (*b).clone();
    o.spec = deep(9);
    assert_eq!(s.update(o).unwrap_err().field(), Some("spec"));
    // A new object is held to the new limit.
    assert_eq!(
        s.create(obj("Deployment", "other", deep(10)))
            .unwrap_err()
            .field(),
        Some("spec")
    );
}

#[test]
fn delete_with_preconditions() {
    let s = Store::memory();
    let a = s.create(obj("Service", "web", json!({}))).unwrap();
    assert_eq!(
        s.delete("Service", "default/web", Some(rv(&a) + 1))
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );
    let gone = s.delete("Service", "default/web", Some(rv(&a))).unwrap();
    assert!(rv(&gone) > rv(&a));
    assert!(gone.metadata.deletion_timestamp.is_some());
    assert!(s.get("Service", "default/web").unwrap().is_none());
    assert_eq!(
        s.delete("Service", "default/web", None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The name is free again.
    s.create(obj("Service", "web", json!({}))).unwrap();
}

#[test]
fn list_filters_and_reports_a_consistent_version() {
    let s = Store::memory();
    for (ns, name, app) in [("a", "x", "web"), ("a", "y", "db"), ("b", "z", "web")] {
        let mut o = obj("Instance", name, json!({}));
        o.metadata.namespace = ns.into();
        o.metadata.labels = BTreeMap::from([("app".to_string(), app.to_string())]);
        s.create(o).unwrap();
    }
    let (all, rv_all) = s.list("Instance", None, None).unwrap();
    assert_eq!(
        all.iter().map(|o| o.key()).collect::<Vec<_>>(),
        ["a/x", "a/y", "b/z"]
    );
    assert_eq!(rv_all, s.resource_version());
    let sel = LabelSelector::parse("app=web").unwrap();
    let (web, _) = s.list("Instance", None, Some(&sel)).unwrap();
    assert_eq!(web.len(), 2);
    let (a_web, _) = s.list("Instance", Some("a"), Some(&sel)).unwrap();
    assert_eq!(a_web.len(), 1);
    let (none, _) = s.list("Nothing", None, None).unwrap();
    assert!(none.is_empty());
}

#[test]
fn watch_replays_then_follows_and_filters_by_kind() {
    let s = Store::memory();
    let a = s
        .create(obj("Deployment", "web", json!({"replicas": 1})))
        .unwrap();
    s.create(obj("Service", "web", json!({}))).unwrap();
    let mut u = (*a).clone();
    u.spec = json!({"replicas": 2});
    let b = s.update(u).unwrap();
    // From a's version: only later events of the kind.
    let mut w = s
        .watch(Some("Deployment"), rv(&a), Some(Duration::from_millis(50)))
        .unwrap();
    let e = w.next().unwrap().unwrap();
    assert_eq!((e.event_type, e.rv), (EventType::Modified, rv(&b)));
    assert_eq!(e.object.spec, json!({"replicas": 2}));
    // Follows the tail from another thread.
    let s2 = s.clone();
    let t = std::thread::spawn(move || s2.delete("Deployment", "default/web", None).unwrap());
    let e = w
        .next_timeout(Some(Duration::from_secs(10)))
        .unwrap()
        .unwrap();
    let gone = t.join().unwrap();
    assert_eq!((e.event_type, e.rv), (EventType::Deleted, rv(&gone)));
    assert!(w.next().is_none(), "ends after the timeout without events");
    // From 0: synthetic adds of the current state, then live events.
    let mut w0 = s.watch(None, 0, Some(Duration::from_millis(20))).unwrap();
    let first = w0.next().unwrap().unwrap();
    assert_eq!(
        (first.event_type, first.object.kind.as_str()),
        (EventType::Added, "Service")
    );
    assert!(w0.next().is_none());
}

#[test]
fn watch_after_compaction_is_expired_and_store_recovers_from_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (first_rv, last) = {
        let (s, _) = Store::open(dir.path(), cfg()).unwrap();
        let first = s.create(obj("Deployment", "d0", json!({"n": 0}))).unwrap();
        for i in 1..400 {
            let o = s
                .create(obj(
                    "Deployment",
                    &format!("d{i}"),
                    json!({"n": i, "pad": "x".repeat(200)}),
                ))
                .unwrap();
            if i % 3 == 0 {
                s.delete("Deployment", &o.key(), None).unwrap();
            }
        }
        let s1 = s.snapshot().unwrap();
        assert_eq!(s1.objects, 267);
        for i in 400..800 {
            s.create(obj(
                "Deployment",
                &format!("d{i}"),
                json!({"n": i, "pad": "y".repeat(200)}),
            ))
            .unwrap();
        }
        let s2 = s.snapshot().unwrap();
        assert!(
            s2.compacted_segments > 0,
            "the log before the older snapshot is compacted"
        );
        let e = s
            .watch(Some("Deployment"), rv(&first), None)
            .err()
            .expect("expired");
        assert_eq!(e.kind(), ErrorKind::Expired);
        // A watch from the older snapshot's version still works.
        assert!(
            s.watch(
                Some("Deployment"),
                s1.resource_version,
                Some(Duration::ZERO)
            )
            .is_ok()
        );
        let last = s.create(obj("Service", "tail", json!({}))).unwrap();
        s.close().unwrap();
        assert_eq!(
            s.get("Service", "default/tail").unwrap_err().kind(),
            ErrorKind::ShutDown
        );
        (rv(&first), last)
    };
    let (s, rep) = Store::open(dir.path(), cfg()).unwrap();
    assert!(rep.snapshot.is_some());
    assert_eq!(
        rep.replayed, 1,
        "only the event after the newest snapshot is replayed"
    );
    let (deps, _) = s.list("Deployment", None, None).unwrap();
    assert_eq!(deps.len(), 267 + 400);
    assert_eq!(
        s.get("Service", "default/tail")
            .unwrap()
            .unwrap()
            .metadata
            .resource_version,
        last.metadata.resource_version
    );
    assert!(s.resource_version() > first_rv);
}

/// What a write returned: the event a watch must deliver for it.
type Written = (u64, &'static str, EventType, String);

/// `watch(kind, v)` delivers exactly the written events of `kind` with `rv > v`, in order, or
/// fails with `Expired`, which it must iff `v < oldest − 1` (`reliability.md` S8, INV-WATCH).
fn assert_resumes_exactly(s: &Store, hist: &[Written], v: u64, ctx: &str) {
    let oldest = s.stats().unwrap().oldest_version;
    for kind in [Some("Instance"), Some("Service"), None] {
        match s.watch(kind, v, Some(Duration::ZERO)) {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Expired, "{ctx}: v={v}: {e}");
                assert!(
                    v + 1 < oldest,
                    "{ctx}: v={v} oldest={oldest}: resumable, {e}"
                );
            }
            Ok(mut w) => {
                assert!(v + 1 >= oldest, "{ctx}: v={v} oldest={oldest}: not expired");
                let mut got = Vec::new();
                while let Some(e) = w.try_next().unwrap() {
                    got.push((e.rv, e.event_type, e.object.metadata.name.clone()));
                }
                let want: Vec<_> = hist
                    .iter()
                    .filter(|(rv, k, _, _)| *rv > v && kind.is_none_or(|kind| kind == *k))
                    .map(|(rv, _, t, n)| (*rv, *t, n.clone()))
                    .collect();
                assert_eq!(got, want, "{ctx}: v={v} kind={kind:?}");
            }
        }
    }
}

/// Where a watch can resume around the compaction point, from a future version, and after
/// a reopen: the versions of real events, the ones next to them, and `oldest − 2 ..= oldest
/// + 1` (etcd#18089 and #19179 dropped a delete at the compaction revision).
#[test]
fn watch_resumes_exactly_around_compaction_from_the_future_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut hist: Vec<Written> = Vec::new();
    let (s, _) = Store::open(dir.path(), cfg()).unwrap();
    let step = |s: &Store, i: u64, hist: &mut Vec<Written>| {
        let kind = if i.is_multiple_of(3) {
            "Service"
        } else {
            "Instance"
        };
        let name = format!("o{}", i % 40);
        let key = format!("default/{name}");
        let (o, t) = match s.get(kind, &key).unwrap() {
            None => (
                s.create(obj(kind, &name, json!({"i": i}))).unwrap(),
                EventType::Added,
            ),
            Some(_) if i.is_multiple_of(5) => {
                (s.delete(kind, &key, None).unwrap(), EventType::Deleted)
            }
            Some(_) => (
                s.update(obj(kind, &name, json!({"i": i}))).unwrap(),
                EventType::Modified,
            ),
        };
        hist.push((rv(&o), kind, t, name));
    };
    for i in 0..500 {
        step(&s, i, &mut hist);
    }
    s.snapshot().unwrap();
    for i in 500..1000 {
        step(&s, i, &mut hist);
    }
    let snap = s.snapshot().unwrap();
    assert!(snap.compacted_segments > 0, "the test needs a compaction");
    for i in 1000..1100 {
        step(&s, i, &mut hist);
    }
    let oldest = s.stats().unwrap().oldest_version;
    let first_kept = hist.iter().position(|h| h.0 >= oldest).unwrap();
    assert!(first_kept > 0, "some events were compacted away");
    let last = hist.last().unwrap().0;
    let mut vs = vec![oldest - 2, oldest - 1, oldest, oldest + 1, last, last + 1];
    for h in [
        &hist[first_kept - 1],
        &hist[first_kept],
        &hist[first_kept + 1],
        &hist[hist.len() / 2],
    ] {
        vs.extend([h.0 - 1, h.0, h.0 + 1]);
    }
    for &v in &vs {
        assert_resumes_exactly(&s, &hist, v, "open");
    }
    // A watch from a version not reached yet waits for it and then delivers only later
    // events.
    let future = last + 4000;
    let mut w = s.watch(Some("Instance"), future, None).unwrap();
    assert!(w.try_next().unwrap().is_none());
    let mut i = 1100;
    while hist.last().unwrap().0 <= future + 2000 {
        step(&s, i, &mut hist);
        i += 1;
    }
    let mut got = Vec::new();
    while let Some(e) = w.try_next().unwrap() {
        got.push(e.rv);
    }
    let want: Vec<u64> = hist
        .iter()
        .filter(|h| h.0 > future && h.1 == "Instance")
        .map(|h| h.0)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    drop(w);
    s.close().unwrap();
    // The same answers after a reopen, which recovers from the newest snapshot.
    let (s, rep) = Store::open(dir.path(), cfg()).unwrap();
    assert!(rep.snapshot.is_some());
    assert_eq!(s.stats().unwrap().oldest_version, oldest);
    vs.push(future);
    for &v in &vs {
        assert_resumes_exactly(&s, &hist, v, "reopened");
    }
}

#[test]
fn corrupt_newest_snapshot_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let (s, _) = Store::open(dir.path(), cfg()).unwrap();
        for i in 0..50 {
            s.create(obj("Instance", &format!("i{i}"), json!({"i": i})))
                .unwrap();
        }
        let older = s.snapshot().unwrap();
        for i in 50..80 {
            s.create(obj("Instance", &format!("i{i}"), json!({"i": i})))
                .unwrap();
        }
        let newest = s.snapshot().unwrap();
        s.create(obj("Instance", "after", json!({}))).unwrap();
        let (all, _) = s.list("Instance", None, None).unwrap();
        s.close().unwrap();
        // Flip a byte in the middle of the newest snapshot.
        let p = newest.path.unwrap();
        let mut b = std::fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x55;
        std::fs::write(&p, b).unwrap();
        (all, older.path.unwrap(), p)
    };
    let (expected, older, newest) = expected;
    let (s, rep) = Store::open(dir.path(), cfg()).unwrap();
    let (all, _) = s.list("Instance", None, None).unwrap();
    assert_eq!(all, expected);
    // The body checksum rejects the newest snapshot at open; it is set aside as `.broken`
    // and the older one is used, with the log after it replayed.
    assert_eq!(rep.snapshot.as_deref(), Some(older.as_path()));
    assert_eq!(rep.broken_snapshots.len(), 1, "{rep:?}");
    assert!(!newest.exists());
    assert!(rep.broken_snapshots[0].exists());
    assert_eq!(rep.replayed, 31);
}

/// A snapshot whose version the log does not hold (written just before a crash that cut the
/// log's tail behind it: `reliability.md` P8, C11) must not be used: its state includes
/// writes the log lost, and the versions after the cut would be handed out again.
#[test]
fn a_snapshot_ahead_of_the_log_is_set_aside_and_the_older_one_used() {
    let dir = tempfile::tempdir().unwrap();
    let (older, newest, expected, cut_at) = {
        let (s, _) = Store::open(dir.path(), cfg()).unwrap();
        for i in 0..50 {
            s.create(obj("Instance", &format!("i{i}"), json!({"i": i})))
                .unwrap();
        }
        let older = s.snapshot().unwrap();
        for i in 50..70 {
            s.create(obj("Instance", &format!("i{i}"), json!({"i": i})))
                .unwrap();
        }
        let (kept, _) = s.list("Instance", None, None).unwrap();
        let first_lost = rv(&s.create(obj("Instance", "lost", json!({}))).unwrap());
        for i in 70..80 {
            s.update(obj("Instance", &format!("i{}", i - 70), json!({"lost": i})))
                .unwrap();
        }
        let newest = s.snapshot().unwrap();
        assert_eq!(newest.compacted_segments, 0);
        s.close().unwrap();
        (older.path.unwrap(), newest.path.unwrap(), kept, first_lost)
    };
    // The log loses its tail from `first_lost` on: zeros read as never written.
    let seg_size = cfg().segment_size;
    let seg = dir
        .path()
        .join("log")
        .join(format!("seg-{:016x}.log", cut_at / seg_size));
    let mut b = std::fs::read(&seg).unwrap();
    let off = (cut_at % seg_size) as usize;
    b[off..].fill(0);
    std::fs::write(&seg, b).unwrap();

    let (s, rep) = Store::open(dir.path(), cfg()).unwrap();
    assert_eq!(rep.snapshot.as_deref(), Some(older.as_path()), "{rep:?}");
    assert_eq!(rep.broken_snapshots.len(), 1, "{rep:?}");
    assert!(!newest.exists());
    assert_eq!(rep.replayed, 20);
    let (all, _) = s.list("Instance", None, None).unwrap();
    assert_eq!(all, expected);
    assert!(s.resource_version() < cut_at);
    // The next write gets a version past what the log holds, and a reopen agrees.
    let next = s.create(obj("Instance", "next", json!({}))).unwrap();
    assert!(rv(&next) > s.stats().unwrap().snapshot_version);
    s.close().unwrap();
    let (s, rep) = Store::open(dir.path(), cfg()).unwrap();
    assert!(rep.broken_snapshots.is_empty(), "{rep:?}");
    assert_eq!(s.list("Instance", None, None).unwrap().0.len(), 71);
}

/// A watch from version 0 of every kind starts with one consistent cut of all kinds. Kinds
/// are added without a lock readers would share, so the cut must hold their addition off:
/// an object of a kind added during the cut, at a version inside it, would otherwise be in
/// neither the synthetic adds nor the events after them.
#[test]
fn a_cut_across_kinds_taken_while_kinds_are_added_misses_nothing() {
    const KINDS: usize = 300;
    let s = Store::memory_with(cfg()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let watches = std::thread::scope(|sc| {
        sc.spawn(|| {
            for i in 0..KINDS {
                s.create(obj(&format!("Kind{i}"), "a", json!({}))).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let mut watches = vec![];
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            watches.push(s.watch(None, 0, Some(Duration::ZERO)).unwrap());
            std::thread::yield_now();
        }
        watches
    });
    assert!(!watches.is_empty());
    for mut w in watches {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(ev) = w.try_next().unwrap() {
            assert!(
                seen.insert(ev.object.kind.clone()),
                "{} twice",
                ev.object.kind
            );
        }
        assert_eq!(
            seen.len(),
            KINDS,
            "a watch started at {}",
            w.start_version()
        );
    }
}

#[test]
fn concurrent_writers_same_key_cas_loop_and_different_keys() {
    let s = Store::memory_with(cfg()).unwrap();
    s.create(obj("Counter", "shared", json!({"n": 0}))).unwrap();
    let hs: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                s.create(obj("Counter", &format!("own-{t}"), json!({"n": 0})))
                    .unwrap();
                for _ in 0..100 {
                    loop {
                        let cur = s.get("Counter", "default/shared").unwrap().unwrap();
                        let mut next = (*cur).clone();
                        next.spec = json!({"n": cur.spec["n"].as_i64().unwrap() + 1});
                        match s.update(next) {
                            Ok(_) => break,
                            Err(e) if e.kind() == ErrorKind::Conflict => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    let own = s
                        .get("Counter", &format!("default/own-{t}"))
                        .unwrap()
                        .unwrap();
                    let mut next = (*own).clone();
                    next.spec = json!({"n": own.spec["n"].as_i64().unwrap() + 1});
                    s.update(next).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let shared = s.get("Counter", "default/shared").unwrap().unwrap();
    assert_eq!(shared.spec["n"], 800, "no lost update");
    assert_eq!(shared.metadata.generation, 801);
    for t in 0..8 {
        assert_eq!(
            s.get("Counter", &format!("default/own-{t}"))
                .unwrap()
                .unwrap()
                .spec["n"],
            100
        );
    }
    // The log replays to the same state.
    let w = s.watch(Some("Counter"), 0, Some(Duration::ZERO)).unwrap();
    let mut n = 0;
    for e in w {
        e.unwrap();
        n += 1;
    }
    assert_eq!(n, 9);
}

// ---- reference model ----------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Create(u8, u8),
    Update { key: u8, val: u8, stale: bool },
    UpdateStatus(u8, u8),
    Delete { key: u8, precondition: bool },
    Get(u8),
    List,
    Snapshot,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u8, any::<u8>()).prop_map(|(k, v)| Op::Create(k, v)),
        4 => (0..6u8, any::<u8>(), any::<bool>()).prop_map(|(key, val, stale)| Op::Update { key, val, stale }),
        2 => (0..6u8, any::<u8>()).prop_map(|(k, v)| Op::UpdateStatus(k, v)),
        2 => (0..6u8, any::<bool>()).prop_map(|(key, precondition)| Op::Delete { key, precondition }),
        2 => (0..6u8).prop_map(Op::Get),
        1 => Just(Op::List),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct ModelObj {
    spec: u8,
    status: Option<u8>,
    generation: i64,
    rv: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_the_btreemap_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let c = StoreConfig { segment_size: 8192, ..cfg() };
        let mut s = Store::open(dir.path(), c.clone()).unwrap().0;
        let mut model: BTreeMap<String, ModelObj> = BTreeMap::new();
        let mut last_rv = 0u64;
        for op in ops {
            match op {
                Op::Create(k, v) => {
                    let key = format!("default/k{k}");
                    let r = s.create(obj("Thing", &format!("k{k}"), json!({"v": v})));
                    match model.get(&key) {
                        Some(_) => prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::AlreadyExists),
                        None => {
                            let o = r.unwrap();
                            prop_assert!(rv(&o) > last_rv);
                            last_rv = rv(&o);
                            model.insert(key, ModelObj { spec: v, status: None, generation: 1, rv: last_rv });
                        }
                    }
                }
                Op::Update { key: k, val, stale } => {
                    let key = format!("default/k{k}");
                    let mut o = obj("Thing", &format!("k{k}"), json!({"v": val}));
                    let cur = model.get(&key).cloned();
                    o.metadata.resource_version = match (&cur, stale) {
                        (Some(m), false) => m.rv.to_string(),
                        (Some(m), true) => (m.rv - 1).to_string(),
                        (None, _) => "1".into(),
                    };
                    let r = s.update(o);
                    match cur {
                        None => prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound),
                        Some(_) if stale => prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::Conflict),
                        Some(m) => {
                            let o = r.unwrap();
                            let changed = m.spec != val;
                            let generation = m.generation + i64::from(changed);
                            prop_assert_eq!(o.metadata.generation, generation);
                            let new_rv = if changed { prop_assert!(rv(&o) > last_rv); last_rv = rv(&o); last_rv } else { m.rv };
                            prop_assert_eq!(rv(&o), new_rv);
                            model.insert(key, ModelObj { spec: val, generation, rv: new_rv, ..m });
                        }
                    }
                }
                Op::UpdateStatus(k, v) => {
                    let key = format!("default/k{k}");
                    let mut o = obj("Thing", &format!("k{k}"), json!({"ignored": true}));
                    o.status = json!({"s": v});
                    let r = s.update_status(o);
                    match model.get(&key).cloned() {
                        None => prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound),
                        Some(m) => {
                            let o = r.unwrap();
                            prop_assert_eq!(&o.spec, &json!({"v": m.spec}));
                            prop_assert_eq!(o.metadata.generation, m.generation);
                            let new_rv = if m.status != Some(v) { prop_assert!(rv(&o) > last_rv); last_rv = rv(&o); last_rv } else { m.rv };
                            model.insert(key, ModelObj { status: Some(v), rv: new_rv, ..m });
                        }
                    }
                }
                Op::Delete { key: k, precondition } => {
                    let key = format!("default/k{k}");
                    let pre = model.get(&key).map(|m| m.rv).filter(|_| precondition);
                    let r = s.delete("Thing", &key, pre);
                    match model.remove(&key) {
                        None => prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound),
                        Some(_) => { let o = r.unwrap(); prop_assert!(rv(&o) > last_rv); last_rv = rv(&o); }
                    }
                }
                Op::Get(k) => {
                    let key = format!("default/k{k}");
                    let got = s.get("Thing", &key).unwrap();
                    prop_assert_eq!(got.is_some(), model.contains_key(&key));
                    if let (Some(o), Some(m)) = (got, model.get(&key)) {
                        prop_assert_eq!(rv(&o), m.rv);
                        prop_assert_eq!(&o.spec, &json!({"v": m.spec}));
                    }
                }
                Op::List => {
                    let (items, list_rv) = s.list("Thing", None, None).unwrap();
                    prop_assert_eq!(list_rv, s.resource_version());
                    let got: Vec<(String, u64)> = items.iter().map(|o| (o.key(), rv(o))).collect();
                    let want: Vec<(String, u64)> = model.iter().map(|(k, m)| (k.clone(), m.rv)).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Snapshot => {
                    let snap = s.snapshot().unwrap();
                    prop_assert_eq!(snap.objects as usize, model.len());
                }
                Op::Reopen => {
                    s.close().unwrap();
                    s = Store::open(dir.path(), c.clone()).unwrap().0;
                    let (items, _) = s.list("Thing", None, None).unwrap();
                    let got: Vec<(String, u64, i64)> = items.iter().map(|o| (o.key(), rv(o), o.metadata.generation)).collect();
                    let want: Vec<(String, u64, i64)> = model.iter().map(|(k, m)| (k.clone(), m.rv, m.generation)).collect();
                    prop_assert_eq!(got, want);
                }
            }
        }
        // Every version the model saw is still ordered after one more write.
        let o = s.create(obj("Thing", "final", json!({}))).unwrap();
        prop_assert!(rv(&o) > last_rv);
        let _ = Arc::clone(&o);
    }
}

/// One operation of the history below: its start and end on a sequentially consistent
/// counter (so "A ended before B started" is real-time order), and the version it wrote or
/// read (0: the key did not exist).
#[derive(Clone, Copy, Debug)]
struct HistOp {
    start: u64,
    end: u64,
    key: usize,
    write: bool,
    rv: u64,
}

/// A history checker (`reliability.md` §3.0(5)): 16 threads write and read 6 keys at
/// random, unconditionally, with optimistic concurrency, and by listing. The recorded
/// history must be linearizable in the ways a client can see:
/// - a write that ended before another started has the lower version (versions are a
///   total order consistent with real time);
/// - a read that started after a write ended sees that write or a later one;
/// - two reads of a key in real-time order never go back;
/// - versions are unique, and the watch from 0 of the log lists exactly the writes.
#[test]
fn a_concurrent_history_is_linearizable_in_real_time() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const KEYS: usize = 6;
    const THREADS: u64 = 16;
    let s = Store::memory_with(cfg()).unwrap();
    let tick = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..THREADS)
        .map(|t| {
            let (s, tick) = (s.clone(), tick.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9E37_79B9_u64.wrapping_mul(t + 1);
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut ops = Vec::new();
                for i in 0..300 {
                    let key = (next() % KEYS as u64) as usize;
                    let name = format!("k{key}");
                    let choice = next() % 4;
                    let start = tick.fetch_add(1, Ordering::SeqCst);
                    let (write, rv) = match choice {
                        0 => {
                            let o = s.get("Reg", &format!("default/{name}")).unwrap();
                            (false, o.map_or(0, |o| rv(&o)))
                        }
                        1 => {
                            let (all, _) = s.list("Reg", None, None).unwrap();
                            let o = all.iter().find(|o| o.metadata.name == name);
                            (false, o.map_or(0, |o| rv(o)))
                        }
                        2 => {
                            // Read-modify-write with the version read: Conflict means a
                            // concurrent write won, and nothing was written.
                            let cur = s.get("Reg", &format!("default/{name}")).unwrap();
                            match cur {
                                None => {
                                    match s.create(obj("Reg", &name, json!({"t": t, "i": i}))) {
                                        Ok(o) => (true, rv(&o)),
                                        Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                                Some(c) => {
                                    let mut o = (*c).clone();
                                    o.spec = json!({"t": t, "i": i});
                                    match s.update(o) {
                                        Ok(o) => (true, rv(&o)),
                                        Err(e) if e.kind() == ErrorKind::Conflict => continue,
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                            }
                        }
                        _ => {
                            let o = obj("Reg", &name, json!({"t": t, "i": i}));
                            match s.update(o.clone()) {
                                Ok(o) => (true, rv(&o)),
                                Err(e) if e.kind() == ErrorKind::NotFound => match s.create(o) {
                                    Ok(o) => (true, rv(&o)),
                                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                                        continue;
                                    }
                                    Err(e) => panic!("{e}"),
                                },
                                Err(e) => panic!("{e}"),
                            }
                        }
                    };
                    let end = tick.fetch_add(1, Ordering::SeqCst);
                    ops.push(HistOp {
                        start,
                        end,
                        key,
                        write,
                        rv,
                    });
                }
                ops
            })
        })
        .collect();
    let ops: Vec<HistOp> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let writes: Vec<&HistOp> = ops.iter().filter(|o| o.write).collect();
    let reads: Vec<&HistOp> = ops.iter().filter(|o| !o.write).collect();
    assert!(
        writes.len() > 500 && reads.len() > 500,
        "{} writes",
        writes.len()
    );
    // Unique versions, in real-time order.
    let mut by_end = writes.clone();
    by_end.sort_by_key(|o| o.end);
    let mut rvs: Vec<u64> = writes.iter().map(|o| o.rv).collect();
    rvs.sort_unstable();
    rvs.dedup();
    assert_eq!(rvs.len(), writes.len(), "a version was handed out twice");
    for b in &writes {
        // The highest version among writes that ended before `b` started.
        let before = by_end
            .iter()
            .take_while(|a| a.end < b.start)
            .map(|a| a.rv)
            .max()
            .unwrap_or(0);
        assert!(
            before < b.rv,
            "write {b:?} got a version below one that preceded it"
        );
    }
    let mut constrained = 0;
    for key in 0..KEYS {
        let kw: Vec<&&HistOp> = by_end.iter().filter(|o| o.key == key).collect();
        let mut kr: Vec<&&HistOp> = reads.iter().filter(|o| o.key == key).collect();
        for r in &kr {
            let seen_at_least = kw
                .iter()
                .take_while(|w| w.end < r.start)
                .map(|w| w.rv)
                .max()
                .unwrap_or(0);
            constrained += usize::from(seen_at_least > 0);
            assert!(
                r.rv >= seen_at_least,
                "read {r:?} missed a write of version {seen_at_least} that ended before it"
            );
            // Whatever it saw was written, and not after the read ended.
            if r.rv > 0 {
                let w = kw.iter().find(|w| w.rv == r.rv).expect("a written version");
                assert!(w.start < r.end, "read {r:?} saw a write that had not begun");
            }
        }
        kr.sort_by_key(|o| o.end);
        for r2 in &kr {
            let floor = kr
                .iter()
                .take_while(|r1| r1.end < r2.start)
                .map(|r1| r1.rv)
                .max()
                .unwrap_or(0);
            assert!(r2.rv >= floor, "read {r2:?} went back below {floor}");
        }
    }
    assert!(
        constrained > reads.len() / 2,
        "too few reads followed a write: {constrained} of {}",
        reads.len()
    );
    // The log holds exactly the acknowledged writes.
    let mut w = s.watch(Some("Reg"), 1, Some(Duration::ZERO)).unwrap();
    let mut logged = Vec::new();
    while let Some(e) = w.try_next().unwrap() {
        logged.push(e.rv);
    }
    assert_eq!(logged, rvs);
}
