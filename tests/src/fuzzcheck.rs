//! The checks behind the fuzz targets in `fuzz/fuzz_targets/`, shared with the corpus replay
//! test (`tests/tests/fuzz_corpus.rs`) so a committed input is checked the same way under
//! `cargo test` as under libFuzzer. Each function takes the raw fuzzer bytes and panics
//! when a property fails; structured inputs are decoded with `arbitrary` exactly as
//! `libfuzzer_sys::fuzz_target!` would (`arbitrary_take_rest`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::{Arbitrary, Unstructured};
use floyd::ErrorKind;
use floyd::log::frame::{
    self, Decoded, EVENT_HEADER_LEN, FRAME_ALIGN, SEGMENT_HEADER_LEN, SegmentHeader,
};
use floyd::log::{Durability, Log, LogConfig, SimStorage, Storage};
use floyd::snapshot::Snapshot;
use floyd::store::{LabelSelector, Object, Store, StoreConfig};
use serde_json::json;

/// The fuzz targets, by name: the directory names under `fuzz/corpus/` and
/// `fuzz/regressions/`.
pub const TARGETS: [&str; 5] = [
    "frame_decode",
    "log_recovery",
    "snapshot_open",
    "store_ops",
    "label_selector",
];

/// Runs the check of `target` on `data`. Panics on an unknown target name.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "frame_decode" => frame_decode(data),
        "log_recovery" => log_recovery(data),
        "snapshot_open" => snapshot_open(data),
        "store_ops" => store_ops(data),
        "label_selector" => label_selector(data),
        other => panic!("unknown fuzz target {other:?}"),
    }
}

// ---- frame_decode -----------------------------------------------------------------------

/// Bases stay below 2^48: real logs never get near `u64::MAX`.
const BASE_MASK: u64 = (1 << 48) - 1;

/// Builds the segment bytes `frame_decode` walks: byte 0 holds flags (bit 0: put a valid
/// segment header in front), bytes 1..17 the segment's sequence and base position, the
/// rest is the body. Public so seed inputs can be made from real frames.
pub fn frame_decode_input(with_header: bool, seq: u64, base: u64, body: &[u8]) -> Vec<u8> {
    let mut v = vec![u8::from(with_header)];
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&base.to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// Arbitrary bytes as a segment: walking it with `frame::decode` never panics, never
/// reports a frame outside the segment, and every event it accepts re-encodes with
/// `encode_event` to exactly the bytes it was decoded from.
pub fn frame_decode(data: &[u8]) {
    let mut head = [0u8; 17];
    let n = data.len().min(17);
    head[..n].copy_from_slice(&data[..n]);
    let body = &data[n..];
    let flags = head[0];
    let seq = u64::from_le_bytes(head[1..9].try_into().expect("8 bytes"));
    let base = u64::from_le_bytes(head[9..17].try_into().expect("8 bytes")) & BASE_MASK;
    let (seg, start) = if flags & 1 == 1 {
        let size = (SEGMENT_HEADER_LEN + body.len())
            .next_multiple_of(FRAME_ALIGN)
            .max(frame::MIN_SEGMENT_SIZE as usize) as u64;
        let h = SegmentHeader { seq, base, size };
        let mut s = h.encode().to_vec();
        assert_eq!(SegmentHeader::decode(&s), Ok(h), "header round trip");
        s.extend_from_slice(body);
        (s, SEGMENT_HEADER_LEN)
    } else {
        // Whatever the body's first bytes say as a header: decoding must not panic.
        let _ = SegmentHeader::decode(body);
        (body.to_vec(), usize::from(flags >> 1) % 5 * FRAME_ALIGN)
    };
    let mut off = start;
    let mut out = Vec::new();
    while off < seg.len() {
        match frame::decode(&seg, off, base, seq) {
            Decoded::Event {
                len,
                kind,
                rv,
                payload_at,
                payload_len,
            } => {
                assert_eq!(len, frame::event_frame_len(payload_len), "frame length");
                assert!(off + len <= seg.len(), "event past the segment end");
                assert_eq!(payload_at, off + EVENT_HEADER_LEN);
                assert_eq!(rv, base + off as u64, "rv is the position");
                out.clear();
                frame::encode_event(
                    &mut out,
                    rv,
                    seq,
                    kind,
                    &seg[payload_at..payload_at + payload_len],
                );
                let used = EVENT_HEADER_LEN + payload_len;
                assert_eq!(out.len(), len);
                assert_eq!(
                    out[..used],
                    seg[off..off + used],
                    "re-encoded event differs"
                );
                assert!(out[used..].iter().all(|&b| b == 0));
                off += len;
            }
            Decoded::Padding { len } => {
                assert!(len >= FRAME_ALIGN && len.is_multiple_of(FRAME_ALIGN));
                assert!(off + len <= seg.len(), "padding past the segment end");
                off += len;
            }
            // Not a frame here: resynchronise on the next alignment unit, as recovery's
            // look-ahead does.
            Decoded::Free | Decoded::Unpublished | Decoded::Bad { .. } => off += FRAME_ALIGN,
        }
    }
}

// ---- log_recovery -----------------------------------------------------------------------

/// Segment size of the simulated logs: the smallest allowed, so a few hundred bytes of
/// events already span several segments.
pub const RECOVERY_SEGMENT: u64 = 4096;
const MAX_EVENTS: usize = 96;
const MAX_MUTATIONS: usize = 8;

/// One change to the bytes of a closed log. Offsets are global (segments concatenated in
/// sequence order) and taken modulo the log's current length.
#[derive(Arbitrary, Clone, Debug)]
pub enum Mutation {
    /// Cut the log here: that segment file is shortened, later ones are removed.
    Truncate(u32),
    /// Flip one bit (the offset counts bits).
    FlipBit(u32),
    /// Zero `len` bytes.
    ZeroRange(u32, u16),
    /// Overwrite with these bytes (clipped at the end of the log).
    Garbage(u32, Vec<u8>),
}

/// Input of `log_recovery`: payload lengths (taken modulo 301) and mutations.
#[derive(Arbitrary, Clone, Debug)]
pub struct RecoveryInput {
    pub events: Vec<u16>,
    pub mutations: Vec<Mutation>,
}

fn recovery_cfg() -> LogConfig {
    LogConfig {
        segment_size: RECOVERY_SEGMENT,
        durability: Durability::None,
        prefault: false,
        ..LogConfig::default()
    }
}

/// The payload of event `i`: its index, then a pattern that depends on it.
pub fn recovery_payload(i: usize, len: u16) -> Vec<u8> {
    let len = usize::from(len % 301);
    let mut p: Vec<u8> = (0..len)
        .map(|b| (i.wrapping_mul(31) ^ b.wrapping_mul(7)) as u8)
        .collect();
    let idx = (i as u32).to_le_bytes();
    let k = len.min(4);
    p[..k].copy_from_slice(&idx[..k]);
    p
}

fn segment_files(sim: &SimStorage) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = sim
        .list()
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let b = sim.read(&n).expect("read");
            (n, b)
        })
        .collect()
}

fn read_frames(log: &Log) -> Vec<(u64, u16, Vec<u8>)> {
    let mut c = log.cursor().expect("cursor");
    let mut out = vec![];
    while let Some(f) = c.try_next().expect("reading a recovered log") {
        out.push((f.rv, f.kind, f.payload.to_vec()));
    }
    out
}

fn allowed_open_error(e: &floyd::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Corrupt | ErrorKind::Io | ErrorKind::Invalid
    )
}

/// Writes events into a simulated log with 4 KiB segments, closes it, damages the segment
/// files and reopens. `Ok` must give a prefix of what was written (exact payloads and
/// versions); frames that lie wholly before the first damaged byte must all be there (or
/// open returns `Corrupt`); errors are `Corrupt`/`Io`/`Invalid`; nothing panics. After a
/// successful open the log takes a new event, and a second reopen finds the same frames
/// plus that event (recovery is durable and idempotent).
///
/// A `Garbage` mutation may contain a well-formed frame (libFuzzer solves CRC comparisons),
/// which recovery cannot tell from a real one: a frame overlapping garbage ends the
/// comparison instead of failing it.
pub fn log_recovery(data: &[u8]) {
    let Ok(input) = RecoveryInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    check_log_recovery(&input);
}

/// [`log_recovery`] on a decoded input.
pub fn check_log_recovery(input: &RecoveryInput) {
    let events: Vec<(u16, Vec<u8>)> = input
        .events
        .iter()
        .take(MAX_EVENTS)
        .enumerate()
        .map(|(i, &len)| (1 + (i % 3) as u16, recovery_payload(i, len)))
        .collect();
    let sim = SimStorage::new();
    let (log, _) = Log::open(Arc::new(sim.clone()), recovery_cfg()).expect("open an empty log");
    let mut written = Vec::with_capacity(events.len());
    for (kind, p) in &events {
        let rv = log.append(*kind, p).expect("append");
        written.push((rv, *kind, p.clone()));
    }
    log.close().expect("close");
    drop(log);

    // The segments, concatenated in sequence order.
    let mut files = segment_files(&sim);
    let mut first_damage = u64::MAX;
    let mut garbage: Vec<(u64, u64)> = vec![];
    for m in input.mutations.iter().take(MAX_MUTATIONS) {
        let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
        if total == 0 {
            break;
        }
        // (file index, offset in file) of a global offset < total.
        let locate = |files: &[(String, Vec<u8>)], mut g: u64| -> (usize, usize) {
            for (i, (_, b)) in files.iter().enumerate() {
                if g < b.len() as u64 {
                    return (i, g as usize);
                }
                g -= b.len() as u64;
            }
            unreachable!("offset inside the log")
        };
        match m {
            Mutation::Truncate(at) => {
                let at = u64::from(*at) % total;
                let (i, o) = locate(&files, at);
                files[i].1.truncate(o);
                for (name, _) in files.drain(i + 1..) {
                    sim.remove(&name).expect("remove");
                }
                first_damage = first_damage.min(at);
            }
            Mutation::FlipBit(bit) => {
                let bit = u64::from(*bit) % (total * 8);
                let (i, o) = locate(&files, bit / 8);
                files[i].1[o] ^= 1 << (bit % 8);
                first_damage = first_damage.min(bit / 8);
            }
            Mutation::ZeroRange(at, len) => {
                let mut g = u64::from(*at) % total;
                first_damage = first_damage.min(g);
                let end = (g + u64::from(*len)).min(total);
                while g < end {
                    let (i, o) = locate(&files, g);
                    files[i].1[o] = 0;
                    g += 1;
                }
            }
            Mutation::Garbage(at, bytes) => {
                let start = u64::from(*at) % total;
                let end = (start + bytes.len() as u64).min(total);
                if start < end {
                    first_damage = first_damage.min(start);
                    garbage.push((start, end));
                }
                for (k, g) in (start..end).enumerate() {
                    let (i, o) = locate(&files, g);
                    files[i].1[o] = bytes[k];
                }
            }
        }
    }
    for (name, bytes) in &files {
        sim.write(name, bytes.clone());
    }

    let forged = |rv: u64, len: usize| {
        let end = rv + frame::event_frame_len(len) as u64;
        garbage.iter().any(|&(s, e)| s < end && rv < e)
    };
    // Frames wholly before the first damaged byte.
    let intact = written
        .iter()
        .take_while(|(rv, _, p)| *rv + frame::event_frame_len(p.len()) as u64 <= first_damage)
        .count();

    let (log, _report) = match Log::open(Arc::new(sim.clone()), recovery_cfg()) {
        Ok(x) => x,
        Err(e) => {
            assert!(allowed_open_error(&e), "open failed with {e}");
            return;
        }
    };
    let got = read_frames(&log);
    let mut last = None;
    for (i, (rv, kind, p)) in got.iter().enumerate() {
        if last.is_some_and(|l| *rv <= l) {
            panic!("frame {i}: rv {rv} not after {last:?}");
        }
        last = Some(*rv);
        if forged(*rv, p.len()) {
            assert!(i >= intact, "an intact frame overlaps garbage");
            break;
        }
        let want = written.get(i).unwrap_or_else(|| {
            panic!(
                "recovered frame {i} (rv {rv}, {} bytes) was never written",
                p.len()
            )
        });
        assert_eq!(
            (rv, kind, p),
            (&want.0, &want.1, &want.2),
            "frame {i} differs from what was written"
        );
    }
    assert!(
        got.len() >= intact,
        "recovered {} frames but the first {intact} were untouched",
        got.len()
    );

    // Life goes on, and the repair was durable.
    let rv = log
        .append(7, b"after recovery")
        .expect("append after recovery");
    assert!(
        last.is_none_or(|l| rv > l),
        "new rv {rv} not after {last:?}"
    );
    log.close().expect("close after recovery");
    drop(log);
    let (log, report) = Log::open(Arc::new(sim.clone()), recovery_cfg()).expect("second reopen");
    let again = read_frames(&log);
    assert_eq!(report.truncated_bytes, 0, "second recovery cut again");
    assert_eq!(again.len(), got.len() + 1, "second reopen lost frames");
    assert_eq!(again[..got.len()], got[..], "second reopen differs");
    assert_eq!(again[got.len()].0, rv);
    log.close().expect("close");
}

// ---- snapshot_open ----------------------------------------------------------------------

static SNAP_FILES: AtomicU64 = AtomicU64::new(0);

fn scratch_path() -> PathBuf {
    let n = SNAP_FILES.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("floyd-fuzz-snap-{}-{n}.snap", std::process::id()))
}

fn check_snapshot(opened: floyd::Result<Snapshot>) {
    let snap = match opened {
        Ok(s) => s,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "open failed with {e}");
            return;
        }
    };
    let _ = (snap.rv(), snap.len(), snap.is_empty());
    let mut keys = vec![];
    for e in snap.iter() {
        match e {
            Ok(e) => {
                assert!(e.rv <= snap.rv(), "entry rv {} > snapshot rv", e.rv);
                keys.push(e.key.to_string());
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corrupt, "iteration failed with {e}");
                break;
            }
        }
    }
    for k in keys.iter().take(16) {
        match snap.get(k) {
            Ok(found) => assert!(
                found.is_some_and(|e| e.key == k),
                "listed key {k:?} missing"
            ),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt, "get failed with {e}"),
        }
    }
    let _ = snap.get("");
    let _ = snap.range_prefix("Thing/").count();
    if let Err(e) = snap.verify() {
        assert_eq!(e.kind(), ErrorKind::Corrupt, "verify failed with {e}");
    }
}

/// Arbitrary bytes as a snapshot file: `Snapshot::open` and every read after it give `Ok`
/// or `Corrupt`, never a panic. The same bytes through `Snapshot::from_bytes` likewise.
pub fn snapshot_open(data: &[u8]) {
    let path = scratch_path();
    std::fs::write(&path, data).expect("write the scratch snapshot");
    check_snapshot(Snapshot::open(&path));
    let _ = std::fs::remove_file(&path);
    check_snapshot(Snapshot::from_bytes(Path::new("fuzz-input"), data));
}

// ---- store_ops ---------------------------------------------------------------------------

const KEYS: u8 = 6;
const TIERS: [&str; 3] = ["a", "b", "c"];
const MAX_OPS: usize = 64;

/// One store call of `store_ops`; keys are taken modulo 6, tiers modulo 3.
#[derive(Arbitrary, Clone, Debug)]
pub enum StoreOp {
    Create {
        key: u8,
        spec: u8,
        tier: u8,
    },
    /// `precondition`: send the current resourceVersion (or a stale one if `stale`).
    Update {
        key: u8,
        spec: u8,
        tier: u8,
        precondition: bool,
        stale: bool,
    },
    UpdateStatus {
        key: u8,
        status: u8,
    },
    Delete {
        key: u8,
        precondition: bool,
        stale: bool,
    },
    Get {
        key: u8,
    },
    List {
        selector: u8,
    },
    Snapshot,
}

#[derive(Clone, Debug, PartialEq)]
struct ModelObj {
    spec: u8,
    tier: u8,
    status: Option<u8>,
    generation: i64,
    rv: u64,
}

const SELECTORS: [&str; 5] = ["", "tier=a", "tier!=b", "tier in (a,c)", "!tier"];

fn thing(key: u8, spec: u8, tier: u8) -> Object {
    Object::from_json(&json!({
        "kind": "Thing",
        "metadata": {"name": format!("k{key}"), "labels": {"tier": TIERS[usize::from(tier) % 3]}},
        "spec": {"v": spec},
    }))
    .expect("a valid object")
}

fn rv_of(o: &Object) -> u64 {
    o.metadata
        .resource_version
        .parse()
        .expect("stored objects carry a numeric resourceVersion")
}

fn bump(last_rv: &mut u64, rv: u64, what: &str) {
    assert!(rv > *last_rv, "{what}: rv {rv} not after {last_rv}");
    *last_rv = rv;
}

fn expect_kind<T: std::fmt::Debug>(r: floyd::Result<T>, kind: ErrorKind, what: &str) {
    match r {
        Err(e) => assert_eq!(e.kind(), kind, "{what}: {e}"),
        Ok(v) => panic!("{what}: expected {kind}, got Ok({v:?})"),
    }
}

/// A store operation sequence on a memory store against a `BTreeMap` model: the same
/// existence, versions, generations, conflicts and not-founds.
pub fn store_ops(data: &[u8]) {
    let Ok(ops) = Vec::<StoreOp>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    check_store_ops(&ops);
}

/// [`store_ops`] on decoded operations.
pub fn check_store_ops(ops: &[StoreOp]) {
    let store = Store::memory_with(StoreConfig {
        // Small segments: rollover and compaction happen within a short sequence.
        segment_size: 16 * 1024,
        seed: Some(7),
        ..StoreConfig::default()
    })
    .expect("memory store");
    let mut model: BTreeMap<String, ModelObj> = BTreeMap::new();
    let mut last_rv = 0u64;
    for op in ops.iter().take(MAX_OPS) {
        match *op {
            StoreOp::Create { key, spec, tier } => {
                let key = key % KEYS;
                let k = format!("default/k{key}");
                let r = store.create(thing(key, spec, tier));
                match model.entry(k) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        expect_kind(r, ErrorKind::AlreadyExists, "create of an existing key")
                    }
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        let o = r.expect("create");
                        assert_eq!(o.metadata.generation, 1);
                        bump(&mut last_rv, rv_of(&o), "create");
                        slot.insert(ModelObj {
                            spec,
                            tier: tier % 3,
                            status: None,
                            generation: 1,
                            rv: rv_of(&o),
                        });
                    }
                }
            }
            StoreOp::Update {
                key,
                spec,
                tier,
                precondition,
                stale,
            } => {
                let key = key % KEYS;
                let k = format!("default/k{key}");
                let cur = model.get(&k).cloned();
                let mut o = thing(key, spec, tier);
                if precondition {
                    let v = cur.as_ref().map_or(1, |m| m.rv - u64::from(stale));
                    o.metadata.resource_version = v.to_string();
                }
                let r = store.update(o);
                match cur {
                    None => expect_kind(r, ErrorKind::NotFound, "update of a missing key"),
                    Some(_) if precondition && stale => {
                        expect_kind(r, ErrorKind::Conflict, "update with a stale version")
                    }
                    Some(m) => {
                        let o = r.expect("update");
                        let generation = m.generation + i64::from(m.spec != spec);
                        assert_eq!(o.metadata.generation, generation, "generation");
                        let changed = m.spec != spec || m.tier != tier % 3;
                        let rv = if changed {
                            bump(&mut last_rv, rv_of(&o), "update");
                            rv_of(&o)
                        } else {
                            assert_eq!(rv_of(&o), m.rv, "a no-op update wrote");
                            m.rv
                        };
                        assert_eq!(o.status, m.status.map_or(json!(null), |s| json!({"s": s})));
                        model.insert(
                            k,
                            ModelObj {
                                spec,
                                tier: tier % 3,
                                generation,
                                rv,
                                ..m
                            },
                        );
                    }
                }
            }
            StoreOp::UpdateStatus { key, status } => {
                let key = key % KEYS;
                let k = format!("default/k{key}");
                let mut o = thing(key, 0, 0);
                o.status = json!({"s": status});
                let r = store.update_status(o);
                match model.get(&k).cloned() {
                    None => expect_kind(r, ErrorKind::NotFound, "status of a missing key"),
                    Some(m) => {
                        let o = r.expect("update_status");
                        assert_eq!(o.spec, json!({"v": m.spec}), "status update changed spec");
                        assert_eq!(o.metadata.generation, m.generation);
                        let rv = if m.status != Some(status) {
                            bump(&mut last_rv, rv_of(&o), "update_status");
                            rv_of(&o)
                        } else {
                            assert_eq!(rv_of(&o), m.rv, "a no-op status update wrote");
                            m.rv
                        };
                        model.insert(
                            k,
                            ModelObj {
                                status: Some(status),
                                rv,
                                ..m
                            },
                        );
                    }
                }
            }
            StoreOp::Delete {
                key,
                precondition,
                stale,
            } => {
                let k = format!("default/k{}", key % KEYS);
                let cur = model.get(&k).cloned();
                let pre = precondition.then(|| cur.as_ref().map_or(1, |m| m.rv - u64::from(stale)));
                let r = store.delete("Thing", &k, pre);
                match cur {
                    None => expect_kind(r, ErrorKind::NotFound, "delete of a missing key"),
                    Some(_) if precondition && stale => {
                        expect_kind(r, ErrorKind::Conflict, "delete with a stale version")
                    }
                    Some(_) => {
                        let o = r.expect("delete");
                        bump(&mut last_rv, rv_of(&o), "delete");
                        model.remove(&k);
                    }
                }
            }
            StoreOp::Get { key } => {
                let k = format!("default/k{}", key % KEYS);
                let got = store.get("Thing", &k).expect("get");
                match (got, model.get(&k)) {
                    (None, None) => {}
                    (Some(o), Some(m)) => {
                        assert_eq!(rv_of(&o), m.rv, "get: rv");
                        assert_eq!(o.metadata.generation, m.generation, "get: generation");
                        assert_eq!(o.spec, json!({"v": m.spec}), "get: spec");
                    }
                    (g, m) => panic!("get {k}: store {:?}, model {m:?}", g.map(|o| o.key())),
                }
            }
            StoreOp::List { selector } => {
                let s = SELECTORS[usize::from(selector) % SELECTORS.len()];
                let sel = LabelSelector::parse(s).expect("a valid selector");
                let (items, list_rv) = store.list("Thing", None, Some(&sel)).expect("list");
                assert_eq!(list_rv, store.resource_version());
                assert!(list_rv >= last_rv);
                let got: Vec<(String, u64)> = items.iter().map(|o| (o.key(), rv_of(o))).collect();
                let want: Vec<(String, u64)> = model
                    .iter()
                    .filter(|(_, m)| {
                        let t = TIERS[usize::from(m.tier)];
                        match s {
                            "" => true,
                            "tier=a" => t == "a",
                            "tier!=b" => t != "b",
                            "tier in (a,c)" => t == "a" || t == "c",
                            _ => false,
                        }
                    })
                    .map(|(k, m)| (k.clone(), m.rv))
                    .collect();
                assert_eq!(got, want, "list {s:?}");
            }
            StoreOp::Snapshot => {
                let snap = store.snapshot().expect("snapshot");
                assert_eq!(snap.objects as usize, model.len(), "snapshot size");
                assert!(snap.resource_version >= last_rv);
            }
        }
    }
    // Versions keep increasing after everything above.
    let o = store.create(thing(KEYS, 0, 0)).expect("final create");
    bump(&mut last_rv, rv_of(&o), "final create");
    store.close().expect("close");
}

// ---- label_selector -----------------------------------------------------------------------

/// Arbitrary UTF-8 as a label selector: `parse` is `Ok` or `Invalid`, never a panic; a
/// parsed selector prints to a string that parses back to the same selector, and `matches`
/// agrees with a naive reading of each requirement.
pub fn label_selector(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let sel = match LabelSelector::parse(s) {
        Ok(sel) => sel,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Invalid, "parse({s:?}) failed with {e}");
            return;
        }
    };
    let printed = sel.to_string();
    let again = LabelSelector::parse(&printed)
        .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(again, sel, "{s:?} printed as {printed:?}");

    // Label sets built from the selector's own keys and values.
    let mut sets: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
    for r in sel.requirements() {
        for v in r
            .values
            .iter()
            .chain(std::iter::once(&"zz-other".to_string()))
        {
            let mut m = BTreeMap::new();
            m.insert(r.key.clone(), v.clone());
            sets.push(m);
        }
    }
    let all: BTreeMap<String, String> = sel
        .requirements()
        .iter()
        .filter_map(|r| Some((r.key.clone(), r.values.first()?.clone())))
        .collect();
    sets.push(all);
    for labels in sets.iter().take(64) {
        let naive = sel.requirements().iter().all(|r| naive_match(r, labels));
        assert_eq!(sel.matches(labels), naive, "{s:?} on {labels:?}");
    }
}

fn naive_match(r: &floyd::store::selector::Requirement, labels: &BTreeMap<String, String>) -> bool {
    use floyd::store::selector::Operator as Op;
    let v = labels.get(&r.key);
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator {
        Op::Equals | Op::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
        Op::NotEquals | Op::NotIn => !v.is_some_and(|v| r.values.iter().any(|x| x == v)),
        Op::Exists => v.is_some(),
        Op::DoesNotExist => v.is_none(),
        Op::GreaterThan => match (
            v.and_then(|v| int(v)),
            r.values.iter().next().and_then(|x| int(x)),
        ) {
            (Some(a), Some(b)) => a > b,
            _ => false,
        },
        Op::LessThan => match (
            v.and_then(|v| int(v)),
            r.values.iter().next().and_then(|x| int(x)),
        ) {
            (Some(a), Some(b)) => a < b,
            _ => false,
        },
    }
}
