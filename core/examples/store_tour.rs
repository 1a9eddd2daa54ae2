//! `make demo`: opens the embedded default data directory `./floyd-data`, writes a few
//! objects, takes a snapshot (which compacts the log), writes more, closes, reopens, and
//! prints what recovery found: the snapshot it started from, the events it replayed after
//! it, and the objects it rebuilt. Run it twice: the second run starts from the first run's
//! data.

use std::time::Duration;

use floyd::{Object, Store, StoreConfig};
use serde_json::json;

fn main() -> floyd::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| floyd::store::DEFAULT_DATA_DIR.to_string());
    println!("floyd demo: data directory {dir}");

    let (store, report) = Store::open(&dir, StoreConfig::default())?;
    println!(
        "opened: {} objects from snapshot, {} events replayed from the log",
        report.snapshot_objects, report.replayed
    );
    let run = store.list("Deployment", None, None)?.0.len();

    // A deployment and its service, as a release system would declare them.
    let name = format!("web-{run}");
    let dep = store.create(Object::from_json(&json!({
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"version": "1.0.0", "command": ["./server"]}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        }
    }))?)?;
    println!(
        "created Deployment {} at version {}",
        dep.key(),
        dep.metadata.resource_version
    );
    if store.get("Service", "default/web")?.is_none() {
        store.create(Object::from_json(&json!({
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}
        }))?)?;
    }

    // Watch from the deployment's version while rolling it to a new version.
    let mut watch = store.watch(
        Some("Deployment"),
        dep.metadata.resource_version.parse().unwrap(),
        None,
    )?;
    let mut next = (*dep).clone();
    next.spec["template"]["spec"]["version"] = json!("1.1.0");
    let updated = store.update(next)?;
    let mut status = (*updated).clone();
    status.status = json!({"observedGeneration": updated.metadata.generation, "replicas": 3});
    store.update_status(status)?;
    for _ in 0..2 {
        if let Some(ev) = watch.next_timeout(Some(Duration::from_secs(1)))? {
            println!(
                "watch: {} {} generation {} at version {}",
                ev.event_type.as_str(),
                ev.object.key(),
                ev.object.metadata.generation,
                ev.rv
            );
        }
    }

    let snap = store.snapshot()?;
    println!(
        "snapshot: {} objects at version {} ({} bytes), {} log segments compacted",
        snap.objects, snap.resource_version, snap.bytes, snap.compacted_segments
    );
    store.create(Object::from_json(&json!({
        "kind": "Instance",
        "metadata": {"name": format!("{name}-after-snapshot"), "labels": {"app": "web"}},
        "spec": {"version": "1.1.0"}
    }))?)?;
    store.close()?;

    let (store, report) = Store::open(&dir, StoreConfig::default())?;
    println!(
        "reopened: snapshot {} with {} objects, then {} events replayed from the log",
        report
            .snapshot
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into()),
        report.snapshot_objects,
        report.replayed
    );
    for kind in ["Deployment", "Service", "Instance"] {
        let (objs, rv) = store.list(kind, None, None)?;
        println!("  {kind}: {} at version {rv}", objs.len());
        for o in objs.iter().take(5) {
            println!(
                "    {} generation {} version {}",
                o.key(),
                o.metadata.generation,
                o.metadata.resource_version
            );
        }
    }
    let stats = store.stats()?;
    println!(
        "log: {} segments, {} bytes, oldest version {}, newest {}",
        stats.segments, stats.bytes, stats.oldest_version, stats.resource_version
    );
    store.close()
}
