//! Reliability cases C11/C12 for snapshots: truncation, bit flips, wrong version or layout,
//! archives that pass their checksums but not validation or semantics, misaligned buffers,
//! and random bytes. The outcome is always `Corrupt` (at open or at first access of the
//! damaged entry) — never a panic, never wrong bytes.

use std::fs;
use std::path::Path;

use floyd::ErrorKind;
use floyd::snapshot::{HEADER_LEN, Snapshot, write_snapshot};

/// A deterministic xorshift generator (the seed is in each test).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SNAP_RV: u64 = 0x0102_0304_0506_0708;

/// The 100-object snapshot of the reliability plan; entry rvs are distinctive so tests can
/// find them in the bytes.
fn model() -> Vec<(String, u64, Vec<u8>)> {
    (0..100u64)
        .map(|i| {
            let key = format!("Instance/default/web-{i:03}");
            let payload = format!("{{\"kind\":\"Instance\",\"metadata\":{{\"name\":\"web-{i:03}\"}},\"spec\":{{\"n\":{i}}}}}");
            (key, SNAP_RV - 100 + i, payload.into_bytes())
        })
        .collect()
}

fn valid_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let info = write_snapshot(
        dir.path(),
        SNAP_RV,
        m.iter().map(|(k, rv, p)| (k.as_str(), *rv, p.as_slice())),
    )
    .unwrap();
    fs::read(info.path).unwrap()
}

/// Opens `bytes` and reads everything. `Ok` only if every entry was readable, and then the
/// contents must equal the model: a damaged snapshot may fail, but never lie.
fn outcome(bytes: &[u8]) -> Result<(), floyd::Error> {
    let snap = Snapshot::from_bytes(Path::new("t.snap"), bytes)?;
    // Lookups first (they validate entries out of order), then the full scan.
    for (k, _, p) in model().iter().step_by(7) {
        if let Some(e) = snap.get(k)? {
            assert_eq!(e.payload, p.as_slice(), "a lookup returned wrong bytes");
        }
    }
    let got: Vec<_> = snap
        .iter()
        .map(|e| e.map(|e| (e.key.to_string(), e.rv, e.payload.to_vec())))
        .collect::<Result<_, _>>()?;
    assert_eq!(got, model(), "a damaged snapshot returned wrong contents");
    assert_eq!(snap.rv(), SNAP_RV);
    Ok(())
}

fn assert_corrupt(bytes: &[u8], what: &str) -> String {
    match outcome(bytes) {
        Ok(()) => panic!("{what}: damage went undetected"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
            e.to_string()
        }
    }
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Recomputes every checksum (entries from the index slots, the index, the header), so a
/// test can present damage that only validation or semantic checks can catch.
fn reseal(b: &mut [u8]) {
    let count = u64_at(b, 24) as usize;
    let entries_len = u64_at(b, 32) as usize;
    let index_len = u64_at(b, 40) as usize;
    let index_start = HEADER_LEN + entries_len;
    for i in 0..count.min(b.len() / 16) {
        let slot = index_start + 16 * i;
        if slot + 16 > b.len() {
            break;
        }
        let off = u64_at(b, slot) as usize;
        let len = u32::from_le_bytes(b[slot + 8..slot + 12].try_into().unwrap()) as usize;
        let start = HEADER_LEN.saturating_add(off);
        let end =
            HEADER_LEN.saturating_add(off.saturating_add(len).div_ceil(16).saturating_mul(16));
        let Some(range) = b.get(start..end) else {
            continue;
        };
        let crc = crc32c::crc32c(range);
        b[slot + 12..slot + 16].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b[index_start..index_start + index_len]);
    b[48..52].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32c::crc32c(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn the_valid_file_reads_back_and_reseal_is_neutral() {
    let mut b = valid_bytes();
    outcome(&b).unwrap();
    let before = b.clone();
    reseal(&mut b);
    assert_eq!(
        b, before,
        "the test's view of the layout matches the writer's"
    );
    assert_eq!(
        u64_at(&b, HEADER_LEN + u64_at(&b, 32) as usize),
        0,
        "index slot 0 is at the index start"
    );
}

#[test]
fn truncation_anywhere_is_corrupt_at_open() {
    let b = valid_bytes();
    let mut rng = Rng(0x5eed_0001);
    let mut cuts: Vec<usize> = (0..=HEADER_LEN).collect();
    cuts.extend(b.len().saturating_sub(512)..b.len());
    cuts.extend((0..1000).map(|_| rng.below(b.len())));
    for cut in cuts {
        let e = Snapshot::from_bytes(Path::new("t.snap"), &b[..cut]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "cut at {cut}: {e}");
    }
    // Trailing garbage is as wrong as a missing tail.
    let mut longer = b.clone();
    longer.extend_from_slice(&[0; 16]);
    assert_corrupt(&longer, "extended");
}

#[test]
fn truncated_files_on_disk_are_corrupt_and_never_mapped_past_eof() {
    let b = valid_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap-00000000000000000001.snap");
    for cut in [0, 1, 63, 64, 65, b.len() / 2, b.len() - 1] {
        fs::write(&path, &b[..cut]).unwrap();
        let e = Snapshot::open(&path).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "cut {cut}: {e}");
        assert!(
            e.to_string().contains("snap-00000000000000000001.snap"),
            "{e}"
        );
    }
    fs::write(&path, &b).unwrap();
    Snapshot::open_verified(&path).unwrap();
}

#[test]
fn every_single_bit_flip_is_detected() {
    let b = valid_bytes();
    let mut reasons = std::collections::BTreeSet::new();
    // Every bit of the header, and one bit of every other byte (rotating through the bit
    // positions); the header's own table test covers all header bits in isolation too.
    let bits = (0..HEADER_LEN * 8).chain((HEADER_LEN..b.len()).map(|i| i * 8 + i % 8));
    for bit in bits {
        let mut m = b.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        let why = assert_corrupt(&m, &format!("bit {bit}"));
        reasons.insert(
            why.split(':')
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    // Header, index and entry damage are each reported as such.
    let all = format!("{reasons:?}");
    for expected in [
        "header checksum",
        "index checksum",
        "checksum mismatch",
        "magic",
    ] {
        assert!(all.contains(expected), "{expected} not among {all}");
    }
}

#[test]
fn a_damaged_entry_fails_only_where_it_is_read() {
    let mut b = valid_bytes();
    // Damage the last byte of the entries region (entry 99's padding or archive).
    let last = HEADER_LEN + u64_at(&b, 32) as usize - 1;
    b[last] ^= 0x40;
    let snap = Snapshot::from_bytes(Path::new("t.snap"), &b).unwrap();
    assert_eq!(
        snap.get("Instance/default/web-000").unwrap().unwrap().rv,
        SNAP_RV - 100
    );
    assert_eq!(
        snap.get("Instance/default/web-099").unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    let results: Vec<_> = snap.iter().collect();
    assert_eq!(
        results.len(),
        100,
        "99 good entries, then the error, then the end"
    );
    assert!(results[..99].iter().all(Result::is_ok));
    assert_eq!(results[99].as_ref().unwrap_err().kind(), ErrorKind::Corrupt);
    assert_eq!(snap.verify().unwrap_err().kind(), ErrorKind::Corrupt);
}

#[test]
fn wrong_version_or_layout_is_named() {
    let b = valid_bytes();
    let mut v2 = b.clone();
    v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    reseal(&mut v2);
    assert!(assert_corrupt(&v2, "v2").contains("unsupported snapshot format version 2"));
    let mut flags = b.clone();
    flags[12] ^= 0b100;
    reseal(&mut flags);
    assert!(assert_corrupt(&flags, "flags").contains("layout flags"));
    let mut reserved = b.clone();
    reserved[55] = 1;
    reseal(&mut reserved);
    assert!(assert_corrupt(&reserved, "reserved").contains("reserved"));
    let mut count = b.clone();
    count[24] = 99;
    reseal(&mut count);
    assert!(assert_corrupt(&count, "count").contains("entries"));
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn checksummed_but_semantically_wrong_archives_are_corrupt() {
    let b = valid_bytes();

    // An entry rv above the snapshot's.
    let mut m = b.clone();
    let at = find(&m, &(SNAP_RV - 1).to_le_bytes());
    m[at..at + 8].copy_from_slice(&(SNAP_RV + 1).to_le_bytes());
    reseal(&mut m);
    assert!(assert_corrupt(&m, "future rv").contains("> snapshot rv"));

    // A duplicate key (entry 5's key rewritten to entry 4's).
    let mut m = b.clone();
    let at = find(&m, b"Instance/default/web-005");
    m[at + 23] = b'4';
    reseal(&mut m);
    assert!(assert_corrupt(&m, "duplicate").contains("unsorted or duplicate"));

    // Unsorted keys.
    let mut m = b.clone();
    let at = find(&m, b"Instance/default/web-050");
    m[at + 21] = b'9';
    reseal(&mut m);
    assert!(assert_corrupt(&m, "unsorted").contains("unsorted or duplicate"));

    // Checksums match but bytecheck fails: invalid UTF-8 in a key, and a relative pointer
    // aimed outside the entry.
    let mut m = b.clone();
    let at = find(&m, b"Instance/default/web-007");
    m[at] = 0xff;
    reseal(&mut m);
    assert!(assert_corrupt(&m, "utf8").contains("fails validation"));
    let mut m = b.clone();
    let entries_len = u64_at(&b, 32) as usize;
    let slot0 = HEADER_LEN + entries_len;
    let len0 = u32::from_le_bytes(m[slot0 + 8..slot0 + 12].try_into().unwrap()) as usize;
    // The root struct sits at the end of the entry archive: smash its payload pointer.
    let root_end = HEADER_LEN + len0;
    m[root_end - 8..root_end - 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    reseal(&mut m);
    assert!(assert_corrupt(&m, "rel ptr").contains("fails validation"));

    // An index slot pointing outside the entries region.
    let mut m = b.clone();
    m[slot0..slot0 + 8].copy_from_slice(&(entries_len as u64 + 16).to_le_bytes());
    reseal_index_only(&mut m);
    assert!(assert_corrupt(&m, "slot out of range").contains("outside the entries region"));
}

/// Like `reseal` but leaves entry checksums alone (for index slots that point nowhere).
fn reseal_index_only(b: &mut [u8]) {
    let entries_len = u64_at(b, 32) as usize;
    let index_len = u64_at(b, 40) as usize;
    let index_start = HEADER_LEN + entries_len;
    let crc = crc32c::crc32c(&b[index_start..index_start + index_len]);
    b[48..52].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32c::crc32c(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn misaligned_buffers_are_corrupt_not_undefined_behaviour() {
    let b = valid_bytes();
    for off in 1..16 {
        let e = Snapshot::from_bytes_at_offset(Path::new("t.snap"), &b, off).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("aligned"), "{e}");
    }
    Snapshot::from_bytes_at_offset(Path::new("t.snap"), &b, 16)
        .unwrap()
        .verify()
        .unwrap();
    // The copying constructor realigns whatever it is given.
    let mut shifted = vec![0u8; b.len() + 1];
    shifted[1..].copy_from_slice(&b);
    Snapshot::from_bytes(Path::new("t.snap"), &shifted[1..])
        .unwrap()
        .verify()
        .unwrap();
}

#[test]
fn odd_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.snap");
    fs::write(&empty, b"").unwrap();
    assert_eq!(
        Snapshot::open(&empty).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    let sub = dir.path().join("dir.snap");
    fs::create_dir(&sub).unwrap();
    let e = Snapshot::open(&sub).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Io),
        "{e}"
    );
    assert_eq!(
        Snapshot::open(&dir.path().join("missing.snap"))
            .unwrap_err()
            .kind(),
        ErrorKind::Io
    );
}

#[test]
fn random_bytes_never_panic() {
    let valid = valid_bytes();
    let mut rng = Rng(0x5eed_0002);
    for round in 0..4000 {
        let mut b: Vec<u8> = match round % 4 {
            // Pure noise.
            0 => (0..rng.below(400)).map(|_| rng.next() as u8).collect(),
            // A valid header over noise.
            1 => {
                let mut b = valid.clone();
                for x in &mut b[HEADER_LEN..] {
                    *x = rng.next() as u8;
                }
                b
            }
            // Sparse damage, then every checksum fixed: only validation stands in the way.
            _ => {
                let mut b = valid.clone();
                for _ in 0..1 + rng.below(8) {
                    let i = HEADER_LEN + rng.below(b.len() - HEADER_LEN);
                    b[i] = rng.next() as u8;
                }
                reseal(&mut b);
                b
            }
        };
        if round % 4 == 1 {
            reseal_index_only(&mut b);
        }
        let Ok(snap) = Snapshot::from_bytes(Path::new("t.snap"), &b) else {
            continue;
        };
        for e in snap.iter() {
            if e.is_err() {
                break;
            }
        }
        let _ = snap.get("Instance/default/web-042");
        let _ = snap.range_prefix("Instance/").count();
    }
}
