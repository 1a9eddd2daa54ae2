//! Event-log benchmarks (issue 2), each against baselines measured in the same run.
//!
//! - **Append, durability `none`**: 128-byte events into a log in a temp directory with the
//!   default 64 MiB segments (preallocated and prefaulted off the append path), 1 and 2
//!   producer threads. Baselines: raw `memcpy` of 128-byte records into a pre-faulted
//!   memory-mapped file (the physical limit), and a `Mutex<Vec<u8>>` log (`std::sync::Mutex`,
//!   the baseline: its orientation figure, ≈ 8 M events/s with two producers against
//!   ≈ 19 M/s for a bare contended fetch-add, is the standard mutex's) with 1 and 2
//!   producers.
//!   **Targets: one producer ≥ 0.3× memcpy; two producers ≥ 2.5× the mutex log (2 producers).**
//!   Also reported, without a target: `parking_lot::Mutex<Vec<u8>>`, whose unfair lock lets
//!   the thread that just released it take it again, so two producers mostly run one at a
//!   time in long bursts and contend far less (≈ 3× the standard mutex here).
//! - **Append, durability `always`**: 1, 8 and 64 concurrent appenders, against one
//!   `fdatasync` per event (`write` 128 bytes + `File::sync_data`).
//!   **Target: 64 appenders ≥ 20× the per-event-sync rate** (group commit: one sync per group).
//!
//! An informative extra: one producer into `Log::memory` (anonymous segments), to separate
//! the append path's own cost from file-page effects.
//!
//! criterion prints each variant's time per event; the ratios are then measured with fixed
//! event counts (best of a few runs) and printed as `ratio … (target …)` lines, which
//! `scripts/bench` turns into `docs/benchmarks.md`. Under `cargo test --benches` the sizes
//! shrink and the ratios are marked as not being measurements.

#![allow(clippy::disallowed_methods)] // benches measure real time

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use floyd::log::{Durability, Log, LogConfig};
use floyd_benches::{Target, bench_mode, best_of, fmt_rate, rate, report, size};
use memmap2::MmapMut;

const EVENT: usize = 128;
const MAP_LEN: usize = 64 << 20;

fn payload() -> [u8; EVENT] {
    let mut p = [0u8; EVENT];
    for (i, b) in p.iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

// ---- durability none --------------------------------------------------------------------

fn open_log(dir: &Path, durability: Durability) -> Log {
    Log::open_dir(
        dir,
        LogConfig {
            durability,
            ..LogConfig::default()
        },
    )
    .expect("open log")
    .0
}

/// Runs `per_thread` calls of `op` on each of `threads` threads, all released at once;
/// returns the time from release to the last thread's end (spawning is not timed).
fn run_threads<S: Sync + Send + 'static>(
    shared: &Arc<S>,
    threads: usize,
    per_thread: u64,
    op: fn(&S, u64),
) -> Duration {
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = shared.clone();
            let b = start.clone();
            thread::spawn(move || {
                b.wait();
                for i in 0..per_thread {
                    op(&s, i);
                }
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for h in handles {
        h.join().expect("producer");
    }
    t.elapsed()
}

fn log_append(log: &Log, _i: u64) {
    static P: std::sync::OnceLock<[u8; EVENT]> = std::sync::OnceLock::new();
    black_box(log.append(1, P.get_or_init(payload)).expect("append"));
}

/// Appends `n` events with `threads` producers; compacts the log afterwards so a long run
/// does not fill the disk (outside the timing).
fn log_run(log: &Arc<Log>, threads: usize, n: u64) -> Duration {
    let d = run_threads(log, threads, n / threads as u64, log_append);
    let _ = log.compact(log.tail_position());
    d
}

/// The naive log: one mutex around a growing buffer (cleared at 64 MiB, capacity kept).
struct MutexLog(std::sync::Mutex<Vec<u8>>);

fn mutex_append(l: &MutexLog, _i: u64) {
    push_event(&mut l.0.lock().expect("mutex log"));
}

fn mutex_log() -> Arc<MutexLog> {
    Arc::new(MutexLog(std::sync::Mutex::new(Vec::with_capacity(MAP_LEN))))
}

/// The same log behind `parking_lot`'s unfair mutex (reported without a target).
struct FastMutexLog(parking_lot::Mutex<Vec<u8>>);

fn fast_mutex_append(l: &FastMutexLog, _i: u64) {
    push_event(&mut l.0.lock());
}

fn fast_mutex_log() -> Arc<FastMutexLog> {
    Arc::new(FastMutexLog(parking_lot::Mutex::new(Vec::with_capacity(
        MAP_LEN,
    ))))
}

fn push_event(v: &mut Vec<u8>) {
    static P: std::sync::OnceLock<[u8; EVENT]> = std::sync::OnceLock::new();
    if v.len() + EVENT > MAP_LEN {
        v.clear();
    }
    v.extend_from_slice(P.get_or_init(payload));
    black_box(v.len());
}

/// A pre-faulted shared mapping of a 64 MiB file: every page written once.
fn prefaulted_map(dir: &Path) -> MmapMut {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("memcpy.bin"))
        .expect("create");
    f.set_len(MAP_LEN as u64).expect("set_len");
    // SAFETY: the file is private to this bench and never truncated while mapped.
    let mut m = unsafe { MmapMut::map_mut(&f) }.expect("map");
    for p in (0..MAP_LEN).step_by(4096) {
        m[p] = 1;
    }
    m
}

/// `n` 128-byte copies into the map, wrapping around at its end.
fn memcpy_run(map: &mut MmapMut, n: u64) -> Duration {
    let p = payload();
    let t = Instant::now();
    let mut off = 0;
    for _ in 0..n {
        if off + EVENT > MAP_LEN {
            off = 0;
        }
        map[off..off + EVENT].copy_from_slice(black_box(&p));
        off += EVENT;
    }
    black_box(&map[0]);
    t.elapsed()
}

// ---- durability always ------------------------------------------------------------------

/// One `write` of 128 bytes and one `fdatasync` per event.
fn fsync_run(f: &mut File, n: u64) -> Duration {
    let p = payload();
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&p).expect("write");
        f.sync_data().expect("fdatasync");
    }
    t.elapsed()
}

fn always_run(log: &Arc<Log>, appenders: usize, per: u64) -> Duration {
    run_threads(log, appenders, per, log_append)
}

fn main() {
    let bench = bench_mode();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    // -- none: criterion view.
    let none_log = Arc::new(open_log(&dir.path().join("none"), Durability::None));
    let naive = mutex_log();
    let fast_naive = fast_mutex_log();
    let mut map = prefaulted_map(dir.path());
    {
        let mut g = c.benchmark_group("log/append_128B_none");
        g.throughput(Throughput::Elements(1));
        g.bench_function("memcpy_prefaulted_map", |b| {
            b.iter_custom(|n| memcpy_run(&mut map, n))
        });
        for threads in [1usize, 2] {
            g.bench_function(format!("floyd/{threads}p"), |b| {
                b.iter_custom(|n| log_run(&none_log, threads, n.max(threads as u64)))
            });
            g.bench_function(format!("mutex_vec/{threads}p"), |b| {
                b.iter_custom(|n| {
                    run_threads(
                        &naive,
                        threads,
                        n.max(threads as u64) / threads as u64,
                        mutex_append,
                    )
                })
            });
        }
        g.finish();
    }

    // -- always: criterion view (few, slow samples).
    let always_log = Arc::new(open_log(&dir.path().join("always"), Durability::Always));
    let mut sync_file = File::create(dir.path().join("fsync.bin")).expect("create");
    {
        let mut g = c.benchmark_group("log/append_128B_always");
        g.throughput(Throughput::Elements(1))
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(2));
        g.bench_function("fdatasync_per_event", |b| {
            b.iter_custom(|n| fsync_run(&mut sync_file, n))
        });
        for appenders in [1usize, 8, 64] {
            g.bench_function(format!("floyd/{appenders}_appenders"), |b| {
                b.iter_custom(|n| {
                    let per = n.div_ceil(appenders as u64);
                    let d = always_run(&always_log, appenders, per);
                    // criterion asked for n events; `per * appenders` were done.
                    d.mul_f64(n as f64 / (per * appenders as u64) as f64)
                })
            });
        }
        g.finish();
    }
    c.final_summary();

    // -- ratios, fixed counts.
    let runs = if bench { 3 } else { 1 };
    let n = size(4_000_000, 2_000) as u64;
    let r_memcpy = rate(n as usize, best_of(runs, || memcpy_run(&mut map, n)));
    let r_log1 = rate(n as usize, best_of(runs, || log_run(&none_log, 1, n)));
    let r_log2 = rate(n as usize, best_of(runs, || log_run(&none_log, 2, n)));
    let r_mutex1 = rate(
        n as usize,
        best_of(runs, || run_threads(&naive, 1, n, mutex_append)),
    );
    let r_mutex2 = rate(
        n as usize,
        best_of(runs, || run_threads(&naive, 2, n / 2, mutex_append)),
    );
    let r_fast_mutex2 = rate(
        n as usize,
        best_of(runs, || {
            run_threads(&fast_naive, 2, n / 2, fast_mutex_append)
        }),
    );
    // Attribution: the same log over anonymous memory (no file pages, no writeback).
    let mem_log = Arc::new(Log::memory(LogConfig::default()).expect("memory log"));
    let r_mem1 = rate(n as usize, best_of(runs, || log_run(&mem_log, 1, n)));
    drop(mem_log);
    let ev = "events";
    report(
        "log_append_1p_vs_memcpy",
        r_log1 / r_memcpy,
        Target::AtLeast(0.3),
        &format!("floyd 1 producer {}", fmt_rate(r_log1, ev)),
        &format!("memcpy into a prefaulted map {}", fmt_rate(r_memcpy, ev)),
    );
    report(
        "log_append_2p_vs_mutex_2p",
        r_log2 / r_mutex2,
        Target::AtLeast(2.5),
        &format!("floyd 2 producers {}", fmt_rate(r_log2, ev)),
        &format!("Mutex<Vec<u8>> 2 producers {}", fmt_rate(r_mutex2, ev)),
    );
    report(
        "log_append_2p_vs_parking_lot_mutex_2p",
        r_log2 / r_fast_mutex2,
        Target::None,
        &format!("floyd 2 producers {}", fmt_rate(r_log2, ev)),
        &format!(
            "parking_lot::Mutex<Vec<u8>> 2 producers {}",
            fmt_rate(r_fast_mutex2, ev)
        ),
    );
    report(
        "log_append_1p_vs_mutex_1p",
        r_log1 / r_mutex1,
        Target::None,
        &format!("floyd 1 producer {}", fmt_rate(r_log1, ev)),
        &format!("Mutex<Vec<u8>> 1 producer {}", fmt_rate(r_mutex1, ev)),
    );
    report(
        "log_append_1p_memory_vs_memcpy",
        r_mem1 / r_memcpy,
        Target::None,
        &format!(
            "floyd 1 producer, in-memory segments {}",
            fmt_rate(r_mem1, ev)
        ),
        &format!("memcpy into a prefaulted map {}", fmt_rate(r_memcpy, ev)),
    );
    report(
        "log_append_2p_vs_1p",
        r_log2 / r_log1,
        Target::None,
        &format!("floyd 2 producers {}", fmt_rate(r_log2, ev)),
        &format!("floyd 1 producer {}", fmt_rate(r_log1, ev)),
    );

    let sync_n = size(300, 5) as u64;
    let r_fsync = rate(
        sync_n as usize,
        best_of(runs, || fsync_run(&mut sync_file, sync_n)),
    );
    for (appenders, per) in [(1usize, size(300, 5)), (8, size(100, 2)), (64, size(60, 2))] {
        let total = appenders * per;
        let r = rate(
            total,
            best_of(runs, || always_run(&always_log, appenders, per as u64)),
        );
        report(
            &format!("log_always_{appenders}_appenders_vs_fdatasync_per_event"),
            r / r_fsync,
            if appenders == 64 {
                Target::AtLeast(20.0)
            } else {
                Target::None
            },
            &format!("floyd always, {appenders} appenders {}", fmt_rate(r, ev)),
            &format!("write + fdatasync per event {}", fmt_rate(r_fsync, ev)),
        );
    }
    let st = always_log.stats();
    println!(
        "log always: {} syncs for {} bytes appended in this run",
        st.syncs, st.tail
    );
    drop(map);
}
