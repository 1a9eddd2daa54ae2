//! L-1 "steady state" (`reliability.md` §3(g)), as a smoke run: 8 producers in `batch`
//! mode update, create and delete ~1 KiB objects of 10 kinds (70 % `update_status`, 20 %
//! `update`, 10 % creates and deletes that hold the count level); 50 informers (10 kinds ×
//! 5 selectors) feed 4 work queues × 4 workers with the default controller limiter; a
//! snapshot (and compaction) follows every 50,000 events; a control plane rolls 200
//! Deployments continuously.
//! Sampled every second after a warm-up, the run must stay bounded:
//!
//! - anonymous memory (`RssAnon`; mapped segments are page cache and excluded) grows at
//!   most 5 % (median of the last third of the samples against the first third) and at
//!   most 1 MiB/min by a linear fit in runs of 10 min or more; at most 15 % in shorter
//!   runs, where the allocator settling alone moves it by several per cent;
//! - the data directory holds at most the segments written since the last snapshot plus 2,
//!   and 2 snapshots (3 for the moment a new one replaces the oldest);
//! - file descriptors and threads stay within ±2 of their count after the warm-up;
//! - informer lag (store version − informer version) stays ≤ 10,000 events at the 99th
//!   percentile, and every informer catches up once the producers stop;
//! - queue depth never exceeds the number of distinct keys.
//!
//! `make test` runs it for 45 s; `make soak` runs the nightly 30 min
//! (`FLOYD_SOAK_SECS=1800`); `FLOYD_SOAK_TRACE=1` prints every sample.
//!
//! It found that every informer's notification ring kept the objects of its last 16 Ki
//! notes after every handler had read them: 50 informers held ~500 MiB of stale object
//! versions here, and RssAnon doubled within a minute. Rings are now trimmed.
//!
//! It also found that the 10-minute run crept by ~4 MiB/min (351 → 380 MiB), failing the
//! long-run lines. A heap profile (heaptrack: two runs killed at 110 s and 410 s, diffed)
//! and counts in the trace told the causes apart. The control plane's owner index kept an
//! empty entry for every rollout's ReplicaSet (10 a second here); with that fixed, 10 min
//! crept 1.57 MiB/min, while the object count drifted up by ~700 (creates and deletes were
//! chosen at random: a random walk, each object held by the store and its informers). With
//! the count held level: 368 → 373 MiB, 1.2 %, 0.80 MiB/min in 10 min, and `make soak`
//! (30 min) 367 → 377 MiB, 2.7 %, 0.55 MiB/min, flat from the 18th minute (release,
//! 2026-11-23). The same review dropped two more per-name entries this run does not
//! exercise: the agent's rate-limiter count per instance and the load-balancing position
//! per Service.

// A soak run is measured in real time: the duration, the samples and the catch-up deadline.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use floyd::informer::Informer;
use floyd::runtime::{ControlPlane, ControlPlaneConfig, NoopDriver};
use floyd::store::{LabelSelector, Object, Store, StoreConfig};
use floyd::{ErrorKind, RateLimiter, WorkQueue, WorkQueueConfig};
use floyd_tests::sim::Rng;
use parking_lot::Mutex;
use serde_json::json;

const KINDS: [&str; 10] = ["L0", "L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8", "L9"];
/// Objects at the start. Object `o<n>` is of kind `KINDS[n % 10]`; creates add the next
/// name, deletes remove the oldest, so the count stays level.
const OBJECTS: u64 = 20_000;
const SNAPSHOT_EVERY: u64 = 50_000;
const SEGMENT_SIZE: u64 = 4 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn object(name: u64, payload: usize) -> Object {
    Object::from_json(&json!({
        "kind": KINDS[(name % 10) as usize],
        "metadata": {"name": format!("o{name}"), "labels": {"shard": format!("s{}", name % 5)}},
        "spec": {"data": "x".repeat(payload)}
    }))
    .unwrap()
}

fn proc_status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map_or(0, |d| d.count())
}

/// What the data directory holds: bytes of the log directory (segments, prepared ones and
/// anything else), bytes of the snapshot directory, segment files, snapshot files.
struct Disk {
    log_bytes: u64,
    snapshot_bytes: u64,
    segments: usize,
    snapshots: usize,
}

fn disk(dir: &std::path::Path) -> Disk {
    let mut d = Disk {
        log_bytes: 0,
        snapshot_bytes: 0,
        segments: 0,
        snapshots: 0,
    };
    for sub in ["log", "snapshots"] {
        for e in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let len = e.metadata().map_or(0, |m| m.len());
            let ext = e
                .path()
                .extension()
                .map(|x| x.to_string_lossy().into_owned());
            match (sub, ext.as_deref()) {
                ("log", Some("log")) => d.segments += 1,
                ("snapshots", Some("snap")) => d.snapshots += 1,
                _ => {}
            }
            if sub == "log" {
                d.log_bytes += len;
            } else {
                d.snapshot_bytes += len;
            }
        }
    }
    d
}

struct Sample {
    at: f64,
    rss_anon_kib: u64,
    fds: usize,
    threads: usize,
    lag: u64,
    depth: usize,
    /// Objects in the store; the control plane's ReplicaSets and instances (its cache).
    objects: u64,
    replica_sets: usize,
    instances: usize,
}

/// Least-squares slope of `ys` against `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

#[test]
fn l1_steady_state_stays_bounded() {
    let secs = env_u64("FLOYD_SOAK_SECS", 45);
    let warm_up = Duration::from_secs((secs / 3).clamp(10, 60));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (store, _) = Store::open(
        &dir,
        StoreConfig {
            segment_size: SEGMENT_SIZE,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    for i in 0..OBJECTS {
        store.create(object(i, 900)).unwrap();
    }

    // 4 work queues × 4 workers, fed by 50 informers' handlers.
    let queues: Vec<Arc<WorkQueue<String>>> = (0..4)
        .map(|i| {
            Arc::new(WorkQueue::with_config(WorkQueueConfig {
                name: Some(format!("l1-{i}")),
                rate_limiter: Some(RateLimiter::default_controller()),
                ..WorkQueueConfig::default()
            }))
        })
        .collect();
    let max_depth = Arc::new(AtomicU64::new(0));
    let mut informers = vec![];
    for kind in KINDS {
        for s in 0..5 {
            let sel = LabelSelector::parse(&format!("shard=s{s}")).unwrap();
            let inf = Informer::new(&store, kind, Duration::ZERO, None, Some(sel)).unwrap();
            let q = queues[s % 4].clone();
            let enqueue = move |o: &Object| q.add(format!("{}/{}", o.kind, o.key()));
            let (e1, e2, e3) = (enqueue.clone(), enqueue.clone(), enqueue);
            inf.add_event_handler(
                Some(Arc::new(move |o, _| e1(o))),
                Some(Arc::new(move |_, o| e2(o))),
                Some(Arc::new(move |o, _| e3(o))),
                None,
            )
            .unwrap();
            inf.start().unwrap();
            informers.push(inf);
        }
    }
    let informers = Arc::new(informers);
    let workers: Vec<_> = queues
        .iter()
        .flat_map(|q| (0..4).map(move |_| q.clone()))
        .map(|q| {
            let informers = informers.clone();
            std::thread::spawn(move || {
                while let Some(key) = q.get() {
                    // The reconcile: read the object from a cache, then finish with it.
                    let (kind, rest) = key.split_once('/').unwrap();
                    let shard = informers
                        .iter()
                        .find(|i| i.kind() == kind)
                        .map(|i| i.get(rest).is_ok_and(|o| o.is_some()));
                    std::hint::black_box(shard);
                    q.forget(&key);
                    q.done(&key);
                }
            })
        })
        .collect();

    // 200 Deployments rolling continuously on a control plane.
    let cp = ControlPlane::new(
        store.clone(),
        Arc::new(NoopDriver),
        ControlPlaneConfig::default(),
    )
    .unwrap();
    cp.start().unwrap();
    for d in 0..200 {
        store
            .create(
                Object::from_json(&json!({
                    "kind": "Deployment",
                    "metadata": {"name": format!("d{d}")},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": format!("d{d}")}},
                             "revisionHistoryLimit": 2,
                             "template": {"metadata": {"labels": {"app": format!("d{d}")}},
                                          "spec": {"version": "0"}}}
                }))
                .unwrap(),
            )
            .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let next_name = Arc::new(AtomicU64::new(OBJECTS));
    let oldest = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..8u64)
        .map(|p| {
            let (store, stop, next_name, oldest) = (
                store.clone(),
                stop.clone(),
                next_name.clone(),
                oldest.clone(),
            );
            std::thread::spawn(move || {
                let mut rng = Rng::new(p + 1);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (lo, hi) = (
                        oldest.load(Ordering::Relaxed),
                        next_name.load(Ordering::Relaxed),
                    );
                    let mut name = lo + rng.below(hi.saturating_sub(lo).max(1));
                    let roll = rng.below(100);
                    // Creates and deletes (10 % together) hold the count level: the live
                    // names are `oldest..next_name`. Chosen at random instead, their count
                    // would drift by hundreds of objects in a long run, and memory with it.
                    let churn = roll >= 90;
                    let delete = churn && hi.saturating_sub(lo) > OBJECTS;
                    if delete {
                        name = oldest.fetch_add(1, Ordering::Relaxed);
                    }
                    let kind = KINDS[(name % 10) as usize];
                    let key = format!("default/o{name}");
                    let r = if roll < 70 {
                        store.get(kind, &key).and_then(|cur| match cur {
                            Some(cur) => {
                                let mut next = (*cur).clone();
                                next.status = json!({"n": n, "producer": p});
                                store.update_status(next).map(drop)
                            }
                            None => Ok(()),
                        })
                    } else if roll < 90 {
                        store.get(kind, &key).and_then(|cur| match cur {
                            Some(cur) => {
                                let mut next = (*cur).clone();
                                next.spec = json!({"data": "y".repeat(700 + (n % 400) as usize)});
                                store.update(next).map(drop)
                            }
                            None => Ok(()),
                        })
                    } else if !delete {
                        let name = next_name.fetch_add(1, Ordering::Relaxed);
                        store.create(object(name, 900)).map(drop)
                    } else {
                        store.delete(kind, &key, None).map(drop)
                    };
                    match r {
                        Ok(()) => {}
                        Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::NotFound) => {
                        }
                        Err(e) => panic!("producer {p}: {e}"),
                    }
                }
            })
        })
        .collect();
    // Snapshots (and the compaction after each) every SNAPSHOT_EVERY events.
    // (Resource versions are log positions, so events are counted with `stats().events`.)
    let max_snapshot = Arc::new(AtomicU64::new(0));
    // Events counted when each snapshot was started, newest last.
    let snapshot_events: Arc<Mutex<Vec<u64>>> = Arc::default();
    let snapshots_done = Arc::new(AtomicU64::new(0));
    let snapshotter = {
        let (store, stop, max_snapshot, snapshot_events, snapshots_done) = (
            store.clone(),
            stop.clone(),
            max_snapshot.clone(),
            snapshot_events.clone(),
            snapshots_done.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let events = store.stats().unwrap().events;
                let last = snapshot_events.lock().last().copied().unwrap_or(0);
                if events >= last + SNAPSHOT_EVERY {
                    // Recorded before the snapshot starts: its version is at least this late.
                    snapshot_events.lock().push(events);
                    let s = store.snapshot().unwrap();
                    max_snapshot.fetch_max(s.bytes, Ordering::Relaxed);
                    snapshots_done.fetch_add(1, Ordering::Release);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Rolling: a new version of a random Deployment every 100 ms.
    let roller = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(99);
            let mut v = 0;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                let key = format!("default/d{}", rng.below(200));
                if let Some(cur) = store.get("Deployment", &key).unwrap() {
                    let mut next = (*cur).clone();
                    next.spec["template"]["spec"]["version"] = json!(v.to_string());
                    let _ = store.update(next);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Sample once a second.
    let start = Instant::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let (mut worst_segments, mut worst_disk, mut worst_snapshots) = (0usize, 0u64, 0usize);
    let mut disk_violation = None;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        let stats = store.stats().unwrap();
        let rv = stats.resource_version;
        // Log bytes per event, to turn version differences into events.
        let per_event = rv.max(1) as f64 / stats.events.max(1) as f64;
        let lag = (informers
            .iter()
            .map(|i| rv.saturating_sub(i.last_synced_version()))
            .max()
            .unwrap_or(0) as f64
            / per_event) as u64;
        let depth: usize = queues.iter().map(|q| q.len()).sum();
        max_depth.fetch_max(depth as u64, Ordering::Relaxed);
        samples.lock().push(Sample {
            at: start.elapsed().as_secs_f64(),
            rss_anon_kib: proc_status_kib("RssAnon:"),
            fds: count_dir("/proc/self/fd"),
            threads: count_dir("/proc/self/task"),
            lag,
            depth,
            objects: stats.objects,
            replica_sets: cp.cache().list("ReplicaSet", None).len(),
            instances: cp.cache().list("Instance", None).len(),
        });
        // Disk: the store keeps two snapshots and the log from the older of them, so the
        // segments holding the events since the second-newest snapshot began (since open
        // before there are two), plus 2; and two snapshots, or three for the moment between
        // a new one's rename and the removal of the oldest.
        let Disk {
            log_bytes,
            snapshot_bytes,
            segments,
            snapshots,
        } = disk(&dir);
        let kept_from = {
            // Read before the marks: a snapshot that finishes meanwhile only loosens this.
            let done = snapshots_done.load(Ordering::Acquire) as usize;
            let marks = snapshot_events.lock();
            if done >= 2 { marks[done - 2] } else { 0 }
        };
        let since = stats.events.saturating_sub(kept_from);
        let retained = (since as f64 * per_event / SEGMENT_SIZE as f64).ceil() as u64 + 1;
        let bound = (retained + 2) * SEGMENT_SIZE;
        worst_segments = worst_segments.max(segments);
        worst_snapshots = worst_snapshots.max(snapshots);
        worst_disk = worst_disk.max(log_bytes + snapshot_bytes);
        if (log_bytes > bound || snapshots > 3) && disk_violation.is_none() {
            disk_violation = Some(format!(
                "at {:.0}s: {log_bytes} log bytes in {segments} segments > bound {bound} \
                 ({since} events since the oldest kept snapshot, {per_event:.0} B each), or \
                 {snapshots} snapshots > 3",
                start.elapsed().as_secs_f64()
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in producers {
        t.join().unwrap();
    }
    snapshotter.join().unwrap();
    roller.join().unwrap();
    // Every informer catches up once the producers stop.
    let rv = store.resource_version();
    let deadline = Instant::now() + Duration::from_secs(60);
    while informers.iter().any(|i| i.last_synced_version() < rv) {
        assert!(
            Instant::now() < deadline,
            "an informer never caught up to {rv}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cp.stop().unwrap();
    for q in &queues {
        q.shut_down_with_drain();
    }
    for w in workers {
        w.join().unwrap();
    }
    for i in informers.iter() {
        i.stop();
    }

    let (lists, expired, errors) = informers.iter().fold((0, 0, 0), |a, i| {
        let s = i.stats();
        (a.0 + s.lists, a.1 + s.expired, a.2 + s.errors)
    });
    println!("informers: {lists} lists, {expired} expired, {errors} errors");
    let samples = samples.lock();
    if std::env::var("FLOYD_SOAK_TRACE").is_ok() {
        for s in samples.iter() {
            println!(
                "t={:.0} anon={}MiB lag={} depth={} thr={} objects={} rs={} inst={}",
                s.at,
                s.rss_anon_kib / 1024,
                s.lag,
                s.depth,
                s.threads,
                s.objects,
                s.replica_sets,
                s.instances
            );
        }
    }
    let warm: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= warm_up.as_secs_f64())
        .collect();
    assert!(warm.len() >= 5, "too few samples after the warm-up");
    let (xs, ys): (Vec<f64>, Vec<f64>) = warm
        .iter()
        .map(|s| (s.at / 60.0, s.rss_anon_kib as f64 / 1024.0))
        .unzip();
    let mib_per_min = slope(&xs, &ys);
    // Growth: the median of the last third of the samples against the median of the first
    // third, so that one sample taken while a snapshot's buffers are live does not count.
    let median = |xs: &[&Sample]| {
        let mut v: Vec<u64> = xs.iter().map(|s| s.rss_anon_kib).collect();
        v.sort_unstable();
        v[v.len() / 2] as f64
    };
    let third = warm.len() / 3;
    let first = median(&warm[..third.max(1)]);
    let growth = (median(&warm[warm.len() - third.max(1)..]) - first) / first;
    let mut lags: Vec<u64> = warm.iter().map(|s| s.lag).collect();
    lags.sort_unstable();
    let p99 = lags[(lags.len() * 99 / 100).min(lags.len() - 1)];
    let distinct = next_name.load(Ordering::Relaxed);
    println!(
        "L-1 over {secs}s ({} events, {} objects at the end): RssAnon {:.0} → {:.0} MiB after warm-up (max growth \
         {:.1} %, slope {mib_per_min:.2} MiB/min); fds {}..{}, threads {}..{}; lag p99 {p99}; \
         max queue depth {} of {distinct} keys; disk at most {worst_disk} bytes, {worst_segments} \
         segments, {worst_snapshots} snapshots (the largest {} bytes)",
        store.stats().unwrap().events,
        store.stats().unwrap().objects,
        first / 1024.0,
        warm.last().unwrap().rss_anon_kib as f64 / 1024.0,
        growth * 100.0,
        warm.iter().map(|s| s.fds).min().unwrap(),
        warm.iter().map(|s| s.fds).max().unwrap(),
        warm.iter().map(|s| s.threads).min().unwrap(),
        warm.iter().map(|s| s.threads).max().unwrap(),
        max_depth.load(Ordering::Relaxed),
        max_snapshot.load(Ordering::Relaxed),
    );
    // reliability.md's 5 % is for runs of minutes: in the 45 s smoke run, the allocator's
    // arenas settling moves RssAnon by 2–9 % here, so the smoke run allows 15 % (untrimmed
    // rings grew it 26–112 %).
    let allowed = if secs >= 600 { 0.05 } else { 0.15 };
    assert!(
        growth <= allowed,
        "RssAnon grew {:.1} % after the warm-up (at most {:.0} %)",
        growth * 100.0,
        allowed * 100.0
    );
    // The slope needs a long run to mean anything: over a minute, the allocator's arenas
    // settling moves RssAnon by several MiB either way.
    if secs >= 600 {
        assert!(
            mib_per_min <= 1.0,
            "RssAnon grows {mib_per_min:.2} MiB/min after the warm-up"
        );
    }
    for (what, f) in [
        ("fds", (|s: &&Sample| s.fds) as fn(&&Sample) -> usize),
        ("threads", |s: &&Sample| s.threads),
    ] {
        let (lo, hi) = (
            warm.iter().map(f).min().unwrap(),
            warm.iter().map(f).max().unwrap(),
        );
        assert!(hi - lo <= 4, "{what} ranged {lo}..{hi} after the warm-up");
    }
    assert!(p99 <= 10_000, "informer lag p99 {p99} events");
    assert!(
        max_depth.load(Ordering::Relaxed) <= distinct,
        "a queue held more items than there are keys"
    );
    assert!(warm.iter().all(|s| s.depth as u64 <= distinct));
    if let Some(v) = disk_violation {
        panic!("disk not bounded: {v}");
    }
    store.close().unwrap();
}
