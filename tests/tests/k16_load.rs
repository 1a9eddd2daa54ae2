//! K16 (kubernetes#130767, cluster-api#13649, kubernetes#41675): many informers and busy
//! controller workers while the log appends at full rate. Informers keep up (after the
//! writers stop, every informer reaches the store's version and equals the store), and the
//! ReplicaSet controller never creates from a cache older than its own last write: at no
//! sampled moment does a ReplicaSet have more instances than it asks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floyd::informer::Informer;
use floyd::runtime::{ControlPlane, ControlPlaneConfig, NoopDriver};
use floyd::store::{LabelSelector, Object, Store};
use serde_json::json;

const KINDS: [&str; 10] = ["K0", "K1", "K2", "K3", "K4", "K5", "K6", "K7", "K8", "K9"];

fn custom(kind: &str, i: u64) -> Object {
    Object::from_json(&json!({
        "kind": kind,
        "metadata": {"name": format!("o{}", i % 500), "labels": {"shard": format!("s{}", i % 5)}},
        "spec": {"i": i}
    }))
    .unwrap()
}

#[test]
fn informers_keep_up_and_controllers_never_overshoot_under_full_append_rate() {
    let store = Store::memory();
    // 50 informers: 10 kinds × 5 selectors, each with a handler.
    let mut informers = vec![];
    for kind in KINDS {
        for s in 0..5 {
            let sel = LabelSelector::parse(&format!("shard=s{s}")).unwrap();
            let inf = Informer::new(&store, kind, Duration::ZERO, None, Some(sel)).unwrap();
            inf.add_event_handler(
                Some(Arc::new(|_, _| {})),
                Some(Arc::new(|_, _| {})),
                Some(Arc::new(|_, _| {})),
                None,
            )
            .unwrap();
            inf.start().unwrap();
            informers.push(inf);
        }
    }
    let cp = ControlPlane::new(
        store.clone(),
        Arc::new(NoopDriver),
        ControlPlaneConfig {
            workers: 8,
            ..ControlPlaneConfig::default()
        },
    )
    .unwrap();
    cp.start().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    // Writers: full rate, create-or-update over 500 names per kind.
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let o = custom(KINDS[(i % 10) as usize], i);
                    if store.create(o.clone()).is_err() {
                        let _ = store.update(o);
                    }
                    i += 4;
                }
            })
        })
        .collect();
    // The controller works on ReplicaSets that are scaled up and down meanwhile.
    for r in 0..8 {
        store
            .create(
                Object::from_json(&json!({
                    "kind": "ReplicaSet",
                    "metadata": {"name": format!("rs{r}")},
                    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": format!("rs{r}")}},
                             "template": {"metadata": {"labels": {"app": format!("rs{r}")}}, "spec": {}}}
                }))
                .unwrap(),
            )
            .unwrap();
    }
    let wanted = |r: usize, round: usize| -> i64 { [3, 5, 1, 4][(round + r) % 4] };
    for round in 0..6 {
        for r in 0..8 {
            cp.scale("ReplicaSet", &format!("default/rs{r}"), wanted(r, round))
                .unwrap();
        }
        // Until every ReplicaSet has converged (a liveness bound, not a timing
        // assertion), no ReplicaSet ever has more live instances than the larger of what it
        // asks for now and what it asked for before (a scale-down takes a sync or two).
        let mut converged = false;
        for _ in 0..3000 {
            let (instances, _) = store.list("Instance", None, None).unwrap();
            let mut all = true;
            for r in 0..8 {
                let uid = store
                    .get("ReplicaSet", &format!("default/rs{r}"))
                    .unwrap()
                    .unwrap()
                    .metadata
                    .uid
                    .clone();
                let n = instances
                    .iter()
                    .filter(|i| i.controller_ref().is_some_and(|c| c.uid == uid))
                    .count() as i64;
                let bound = wanted(r, round).max(if round > 0 { wanted(r, round - 1) } else { 3 });
                assert!(
                    n <= bound,
                    "rs{r} has {n} instances in round {round}, bound {bound}"
                );
                all &= n == wanted(r, round);
            }
            if all {
                converged = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(converged, "round {round} never converged");
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    // Every informer catches up with the store and equals it.
    let rv = store.resource_version();
    for inf in &informers {
        assert!(
            inf.wait_for_version(rv, Some(Duration::from_secs(60)))
                .unwrap(),
            "an informer never caught up"
        );
    }
    for (k, kind) in KINDS.iter().enumerate() {
        for s in 0..5 {
            let sel = LabelSelector::parse(&format!("shard=s{s}")).unwrap();
            let (want, _) = store.list(kind, None, Some(&sel)).unwrap();
            let mut got: Vec<String> = informers[k * 5 + s]
                .list(None)
                .unwrap()
                .iter()
                .map(|o| o.key())
                .collect();
            got.sort();
            assert_eq!(
                got,
                want.iter().map(|o| o.key()).collect::<Vec<_>>(),
                "{kind} shard s{s}"
            );
        }
    }
    for inf in &informers {
        inf.stop();
    }
    cp.stop().unwrap();
}
