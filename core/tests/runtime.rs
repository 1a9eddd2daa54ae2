//! The control plane in threaded mode on the real clock: a ReplicaSet converges through the
//! node agent and a real (recording) driver; scaling down stops exactly the victims; the
//! endpoints controller lists ready instances and `pick` round-robins over them; `stop`
//! joins every thread, and use after stop is `ShutDown`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use floyd::runtime::{ControlPlane, ControlPlaneConfig, Driver, DriverError, Started};
use floyd::{ErrorKind, Object, Store};
use parking_lot::Mutex;
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
    ] {
        let e = ControlPlane::new(store.clone(), Arc::new(Recorder::default()), cfg).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
    }
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
