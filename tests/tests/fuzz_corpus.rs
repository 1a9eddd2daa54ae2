//! Replays every input in `fuzz/regressions/<target>/` (committed seeds and minimised
//! crashes) and `fuzz/corpus/<target>/` (what local fuzzing found, not committed) through
//! the same checks the fuzz targets run (`floyd_tests::fuzzcheck`), so `cargo test` catches
//! a regression without libFuzzer or nightly.
//!
//! `FLOYD_WRITE_FUZZ_SEEDS=1 cargo test -p floyd-tests --test fuzz_corpus write_seeds`
//! regenerates the committed seed inputs.

use std::path::{Path, PathBuf};

use floyd_tests::fuzzcheck::{self, Mutation, RecoveryInput, StoreOp, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut out = vec![];
    for set in ["regressions", "corpus"] {
        let dir = fuzz_dir().join(set).join(target);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn replay_fuzz_inputs() {
    let mut seeds = 0;
    for target in TARGETS {
        for path in inputs(target) {
            let data = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| fuzzcheck::run(target, &data));
            if r.is_err() {
                panic!("fuzz input {} fails its check", path.display());
            }
            if path.to_string_lossy().contains("regressions") {
                seeds += 1;
            }
        }
    }
    assert!(seeds >= TARGETS.len(), "committed seed inputs are missing");
}

// ---- seed inputs ------------------------------------------------------------------------

/// A segment with three valid events behind a valid header (`frame_decode` layout).
fn seed_frames() -> Vec<u8> {
    use floyd::log::frame::{SegmentHeader, encode_event};
    let (seq, base) = (2u64, 2 * 4096u64);
    let mut seg = SegmentHeader {
        seq,
        base,
        size: 4096,
    }
    .encode()
    .to_vec();
    for (i, p) in [&b"hello"[..], b"", &[7u8; 40][..]].iter().enumerate() {
        let pos = base + seg.len() as u64;
        encode_event(&mut seg, pos, seq, i as u16 + 1, p);
    }
    fuzzcheck::frame_decode_input(true, seq, base, &seg[64..])
}

fn write_seed(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("regressions").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

/// `Arbitrary` cannot be inverted in general, so seeds for the structured targets are
/// found by decoding deterministic pseudo-random byte strings until one has the wanted
/// shape (the seeds only need to reach the interesting code).
fn search<T: for<'a> arbitrary::Arbitrary<'a>>(len: usize, want: impl Fn(&T) -> bool) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2_000_000 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if let Ok(v) = T::arbitrary_take_rest(arbitrary::Unstructured::new(&bytes))
            && want(&v)
        {
            return bytes;
        }
    }
    panic!("no seed found");
}

#[test]
fn write_seeds() {
    if std::env::var_os("FLOYD_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    write_seed("frame_decode", "three-events", &seed_frames());
    write_seed("frame_decode", "no-header", &[0u8; 80]);

    let rec = search::<RecoveryInput>(200, |i| i.events.len() >= 10 && i.mutations.len() == 1);
    write_seed("log_recovery", "events-one-mutation", &rec);
    let rec = search::<RecoveryInput>(300, |i| {
        i.events.len() >= 8
            && i.mutations
                .iter()
                .any(|m| matches!(m, Mutation::Truncate(_)))
    });
    write_seed("log_recovery", "events-truncate", &rec);

    let dir = tempfile::tempdir().unwrap();
    let info = floyd::snapshot::write_snapshot(
        dir.path(),
        500,
        [
            ("Thing/default/a", 100u64, &b"{\"kind\":\"Thing\"}"[..]),
            ("Thing/default/b", 200, b"{}"),
            ("Thing/default/c", 300, b""),
        ],
    )
    .unwrap();
    write_seed(
        "snapshot_open",
        "three-entries",
        &std::fs::read(info.path).unwrap(),
    );

    let ops = search::<Vec<StoreOp>>(160, |ops| {
        ops.len() >= 12
            && ops.iter().any(|o| matches!(o, StoreOp::Create { .. }))
            && ops.iter().any(|o| matches!(o, StoreOp::Update { .. }))
    });
    write_seed("store_ops", "mixed", &ops);

    for (i, s) in [
        "app=web,tier!=db",
        "env in (prod, staging),!canary",
        "x>3,y<10,example.com/key notin (a)",
        "k==v,exists",
    ]
    .iter()
    .enumerate()
    {
        write_seed("label_selector", &format!("seed-{i}"), s.as_bytes());
    }
}

/// Regression, found while writing the fuzz targets: a segment header with a valid checksum
/// whose base position is near `u64::MAX` made recovery overflow `raw.base + raw.size` and
/// `frame::decode` overflow `base + off`. Headers with a base above `MAX_POSITION` are now
/// `Corrupt`, and `decode` checks its addition.
#[test]
fn segment_base_near_u64_max_is_corrupt_not_a_panic() {
    use floyd::log::frame::SegmentHeader;
    use floyd::log::{Log, LogConfig, SimStorage};
    let s = SimStorage::new();
    let mut b = vec![0u8; 4096];
    let h = SegmentHeader {
        seq: 0,
        base: u64::MAX - 100,
        size: 4096,
    };
    b[..64].copy_from_slice(&h.encode());
    s.write("seg-0000000000000000.log", b);
    let cfg = LogConfig {
        segment_size: 4096,
        ..LogConfig::default()
    };
    match Log::open(std::sync::Arc::new(s), cfg) {
        Ok(_) => panic!("a segment at base u64::MAX - 100 was accepted"),
        Err(e) => assert_eq!(e.kind(), floyd::ErrorKind::Corrupt, "{e}"),
    }
}
