//! Snapshot round trips: whatever `write_snapshot` is given, `Snapshot::open` gives back —
//! in key order, by key, by prefix — with the snapshot's rv; plus the directory helpers.

use std::collections::BTreeMap;
use std::fs;

use floyd::ErrorKind;
use floyd::snapshot::{Snapshot, list_snapshots, quarantine, snapshot_file_name, write_snapshot};
use proptest::prelude::*;

type Model = BTreeMap<String, (u64, Vec<u8>)>;

fn write_model(dir: &std::path::Path, rv: u64, model: &Model) -> floyd::snapshot::SnapshotInfo {
    // Hand the entries over in reverse order: the writer must sort them.
    let entries: Vec<(&str, u64, &[u8])> = model
        .iter()
        .rev()
        .map(|(k, (rv, p))| (k.as_str(), *rv, p.as_slice()))
        .collect();
    write_snapshot(dir, rv, entries).unwrap()
}

fn check_equal(snap: &Snapshot, rv: u64, model: &Model) {
    assert_eq!(snap.rv(), rv);
    assert_eq!(snap.len(), model.len());
    let got: Vec<(String, u64, Vec<u8>)> = snap
        .iter()
        .map(|e| e.map(|e| (e.key.to_string(), e.rv, e.payload.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<(String, u64, Vec<u8>)> = model
        .iter()
        .map(|(k, (rv, p))| (k.clone(), *rv, p.clone()))
        .collect();
    assert_eq!(got, want);
    for (k, (rv, p)) in model {
        let e = snap.get(k).unwrap().unwrap();
        assert_eq!((e.key, e.rv, e.payload), (k.as_str(), *rv, p.as_slice()));
    }
    snap.verify().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn open_of_write_is_identity(
        model in proptest::collection::btree_map(
            "(Deployment|Instance|Node|X)/[a-z]{0,3}/?[a-z0-9é]{0,12}",
            (0u64..1000, proptest::collection::vec(any::<u8>(), 0..300)),
            0..60),
        extra in 0u64..5,
        probes in proptest::collection::vec("[A-Za-z/]{0,8}", 0..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rv = model.values().map(|v| v.0).max().unwrap_or(0) + extra;
        let info = write_model(dir.path(), rv, &model);
        prop_assert_eq!(info.objects, model.len() as u64);
        prop_assert_eq!(info.bytes, fs::metadata(&info.path).unwrap().len());
        let snap = Snapshot::open(&info.path).unwrap();
        check_equal(&snap, rv, &model);
        let copy = Snapshot::from_bytes(&info.path, &fs::read(&info.path).unwrap()).unwrap();
        check_equal(&copy, rv, &model);
        for p in probes {
            prop_assert_eq!(snap.get(&p).unwrap().map(|e| e.key.to_string()), model.get(&p).map(|_| p.clone()));
            let by_prefix: Vec<String> = snap.range_prefix(&p).map(|e| e.unwrap().key.to_string()).collect();
            let want: Vec<String> = model.keys().filter(|k| k.starts_with(&p)).cloned().collect();
            prop_assert_eq!(by_prefix, want);
        }
    }
}

#[test]
fn empty_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let info = write_snapshot(dir.path(), 0, []).unwrap();
    let snap = Snapshot::open(&info.path).unwrap();
    assert!(snap.is_empty());
    assert_eq!(snap.get("x").unwrap(), None);
    assert_eq!(snap.iter().count(), 0);
    assert_eq!(snap.range_prefix("").count(), 0);
}

#[test]
fn range_prefix_selects_one_kind() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    for kind in ["Deployment", "DeploymentX", "Endpoints", "Node"] {
        for i in 0..5 {
            model.insert(
                format!("{kind}/default/o{i}"),
                (i, format!("{{\"i\":{i}}}").into_bytes()),
            );
        }
    }
    let info = write_model(dir.path(), 10, &model);
    let snap = Snapshot::open(&info.path).unwrap();
    let keys: Vec<_> = snap
        .range_prefix("Deployment/")
        .map(|e| e.unwrap().key.to_string())
        .collect();
    assert_eq!(keys.len(), 5);
    assert!(keys.iter().all(|k| k.starts_with("Deployment/default/")));
    assert_eq!(snap.range_prefix("Nod").count(), 5);
    assert_eq!(snap.range_prefix("Zzz").count(), 0);
    assert_eq!(snap.range_prefix("").count(), 20);
    assert_eq!(
        snap.get("Node/default/o3").unwrap().unwrap().payload,
        b"{\"i\":3}"
    );
}

#[test]
fn writer_rejects_duplicates_and_future_versions() {
    let dir = tempfile::tempdir().unwrap();
    let e = write_snapshot(dir.path(), 5, [("a", 1, &b""[..]), ("a", 2, &b""[..])]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let e = write_snapshot(dir.path(), 5, [("a", 6, &b""[..])]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(list_snapshots(dir.path()).unwrap().is_empty());
}

#[test]
fn list_is_newest_first_and_quarantine_keeps_evidence() {
    let dir = tempfile::tempdir().unwrap();
    for rv in [3u64, 100, 20, u64::MAX] {
        write_snapshot(dir.path(), rv, [("k", 0, &b"v"[..])]).unwrap();
    }
    fs::write(dir.path().join("snap-00000000000000000050.tmp"), b"partial").unwrap();
    fs::write(
        dir.path().join("snap-00000000000000000007.snap.broken"),
        b"bad",
    )
    .unwrap();
    fs::write(dir.path().join("snap-7.snap"), b"not our name").unwrap();
    fs::write(dir.path().join("other"), b"").unwrap();
    let list = list_snapshots(dir.path()).unwrap();
    let rvs: Vec<u64> = list.iter().map(|(rv, _)| *rv).collect();
    assert_eq!(rvs, vec![u64::MAX, 100, 20, 3]);
    assert_eq!(list[1].1, dir.path().join(snapshot_file_name(100)));

    let broken = quarantine(&list[1].1).unwrap();
    assert_eq!(
        broken,
        dir.path().join("snap-00000000000000000100.snap.broken")
    );
    assert!(broken.exists() && !list[1].1.exists());
    let rvs: Vec<u64> = list_snapshots(dir.path())
        .unwrap()
        .iter()
        .map(|(rv, _)| *rv)
        .collect();
    assert_eq!(rvs, vec![u64::MAX, 20, 3]);
    assert!(
        list_snapshots(&dir.path().join("missing"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn shared_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let model: Model = (0..2000)
        .map(|i| (format!("K/{i:05}"), (i, vec![i as u8; 10])))
        .collect();
    let info = write_model(dir.path(), 5000, &model);
    let snap = Snapshot::open(&info.path).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (snap, model) = (&snap, &model);
            s.spawn(move || {
                for (k, (rv, p)) in model.iter().skip(t).step_by(3) {
                    let e = snap.get(k).unwrap().unwrap();
                    assert_eq!((e.rv, e.payload), (*rv, p.as_slice()));
                }
            });
        }
    });
    snap.verify().unwrap();
}
