//! Snapshot bench: 1 M small objects (~100-byte JSON payloads).
//!
//! Target (issue 2): opening the snapshot and the first `get` take ≤ 5 ms, and are ≥ 100×
//! faster than decoding the same data with bincode — because opening checks only the
//! header and the fixed-size index, and each entry is validated on first access.
//! Baselines measured in the same run: serde_json and bincode decoding of
//! `Vec<(String, u64, String)>`, and rkyv's validated `access` of a naive
//! `Vec<(String, u64, Vec<u8>)>` archive (what a one-archive snapshot would cost).
//!
//! Under `cargo test --benches` (criterion's test mode, no `--bench` argument) N is 10 k.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use floyd::snapshot::{Snapshot, write_snapshot};
use rkyv::rancor;

type Row = (String, u64, String);

fn make(n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let key = format!("Instance/default/web-{i:07}");
            let payload = format!(
                "{{\"kind\":\"Instance\",\"metadata\":{{\"name\":\"web-{i:07}\",\"labels\":{{\"app\":\"web\"}}}},\"spec\":{{\"version\":\"v{}\"}}}}",
                i % 10
            );
            (key, i as u64 + 1, payload)
        })
        .collect()
}

/// The fastest of `runs` timings of `f` (the machine is shared; the minimum is the least noisy).
#[allow(clippy::disallowed_methods)] // benches measure wall time themselves
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn open_and_get(path: &Path, key: &str) -> usize {
    let snap = Snapshot::open(path).expect("open");
    let e = snap.get(key).expect("get").expect("present");
    e.payload.len()
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n = if bench_mode { 1_000_000 } else { 10_000 };
    let runs = if bench_mode { 5 } else { 1 };
    let rows = make(n);
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = rows[n / 3].0.clone();

    let write = best_of(1, || {
        write_snapshot(
            dir.path(),
            n as u64 + 1,
            rows.iter()
                .map(|(k, rv, p)| (k.as_str(), *rv, p.as_bytes())),
        )
        .expect("write")
    });
    let info = write_snapshot(
        dir.path(),
        n as u64 + 1,
        rows.iter()
            .map(|(k, rv, p)| (k.as_str(), *rv, p.as_bytes())),
    )
    .expect("write");

    let json = serde_json::to_vec(&rows).expect("json");
    let bin = bincode::serialize(&rows).expect("bincode");
    let naive: Vec<(String, u64, Vec<u8>)> = rows
        .iter()
        .map(|(k, rv, p)| (k.clone(), *rv, p.clone().into_bytes()))
        .collect();
    let archive = rkyv::to_bytes::<rancor::Error>(&naive).expect("rkyv");
    drop(naive);

    let mut c = Criterion::default().sample_size(10).configure_from_args();
    c.bench_function(&format!("snapshot/open+get/{n}"), |b| {
        b.iter(|| open_and_get(&info.path, &probe))
    });
    c.bench_function(&format!("snapshot/baseline_bincode_decode/{n}"), |b| {
        b.iter(|| {
            bincode::deserialize::<Vec<Row>>(&bin)
                .expect("decode")
                .len()
        })
    });
    c.bench_function(&format!("snapshot/baseline_rkyv_access_whole/{n}"), |b| {
        b.iter(|| {
            rkyv::access::<rkyv::Archived<Vec<(String, u64, Vec<u8>)>>, rancor::Error>(&archive)
                .expect("access")
                .len()
        })
    });
    c.final_summary();

    // Ratios, timed here so they can be printed side by side.
    let open_get = best_of(runs, || open_and_get(&info.path, &probe));
    let open_only = best_of(runs, || Snapshot::open(&info.path).expect("open").len());
    let verify_all = best_of(1, || {
        Snapshot::open_verified(&info.path).expect("verify").len()
    });
    let de_json = best_of(runs.min(2), || {
        serde_json::from_slice::<Vec<Row>>(&json)
            .expect("json")
            .len()
    });
    let de_bin = best_of(runs.min(3), || {
        bincode::deserialize::<Vec<Row>>(&bin)
            .expect("bincode")
            .len()
    });
    let rkyv_access = best_of(runs, || {
        rkyv::access::<rkyv::Archived<Vec<(String, u64, Vec<u8>)>>, rancor::Error>(&archive)
            .expect("access")
            .len()
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = |d: Duration| d.as_secs_f64() / open_get.as_secs_f64().max(1e-9);
    println!(
        "snapshot, {n} objects, file {:.1} MiB:",
        info.bytes as f64 / (1 << 20) as f64
    );
    println!("  write_snapshot                 {:9.2} ms", ms(write));
    println!("  open only                      {:9.3} ms", ms(open_only));
    println!(
        "  open + first get               {:9.3} ms   (target ≤ 5 ms at 1 M)",
        ms(open_get)
    );
    println!("  open + verify every entry      {:9.2} ms", ms(verify_all));
    println!(
        "  serde_json decode (baseline)   {:9.2} ms   ratio {:8.0}×",
        ms(de_json),
        ratio(de_json)
    );
    println!(
        "  bincode decode (baseline)      {:9.2} ms   ratio {:8.0}×   (target ≥ 100×)",
        ms(de_bin),
        ratio(de_bin)
    );
    println!(
        "  rkyv access, one archive       {:9.2} ms   ratio {:8.0}×",
        ms(rkyv_access),
        ratio(rkyv_access)
    );
}
