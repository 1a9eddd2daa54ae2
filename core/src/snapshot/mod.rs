//! Snapshots: the store's state at one resource version, in one immutable file that is
//! memory-mapped and read in place.
//!
//! The file (byte layout in `docs/format-snapshot.md`) is a 64-byte header, then one small
//! rkyv archive per entry (sorted by key, each 16-aligned and padded), then an rkyv archive
//! of a fixed-size index `(offset, len, crc32c)` per entry. Opening checks the header, the
//! file length, the index checksum and `rkyv::access` on the index — O(1) work per entry,
//! no entry byte touched — so a million-object snapshot opens in milliseconds. Each entry is
//! checked (checksum, `rkyv::access`, rv ≤ snapshot rv, key strictly after its predecessor's)
//! the first time it is read, and an atomic bitmap remembers it, so no byte is ever used
//! before it was validated and no byte is validated twice. A full [`Snapshot::iter`] (or
//! [`Snapshot::verify`]) therefore proves the whole file, including "no duplicate keys".
//!
//! The snapshot knows nothing of objects: an entry is `(key, rv, payload)` and the store
//! chooses the key (`"Deployment/default/web"`) and payload (the object's JSON). Deciding
//! which snapshot to recover from, and quarantining broken ones, is the store's job; the
//! helpers [`list_snapshots`] and [`quarantine`] are here.

mod raw;

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
// The validation bitmap is a cache of facts about immutable bytes, not a synchronisation
// protocol (a race only validates twice), so it uses std atomics even under loom.
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::vec::ArchivedVec;

use crate::error::{Error, Result};
use crate::log::{FileSource, FileStorage, Storage};

/// `FLYDSNAP`: the first 8 bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"FLYDSNAP";
/// The format version this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the first entry (the header, padded so entries start 16-aligned).
pub const HEADER_LEN: usize = 64;
/// Every entry archive and the index start at a multiple of this within the file.
pub const ALIGN: usize = 16;

/// Layout flag: rkyv archives are little-endian (rkyv feature `big_endian` off).
pub const FLAG_LITTLE_ENDIAN: u32 = 1 << 0;
/// Layout flag: archived primitives are naturally aligned (rkyv feature `unaligned` off).
pub const FLAG_ALIGNED: u32 = 1 << 1;
/// Layout flag: relative pointers and lengths are 32-bit (rkyv `pointer_width_32`, default).
pub const FLAG_POINTER_WIDTH_32: u32 = 1 << 2;

/// One entry as archived in the file.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Default)]
pub(crate) struct EntryRecord {
    key: String,
    rv: u64,
    payload: Vec<u8>,
}

/// One index slot: where entry `i` is, and its checksum.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, Copy)]
pub(crate) struct IndexRecord {
    /// Offset of the entry archive from the start of the entries region (16-aligned).
    offset: u64,
    /// Length of the entry archive, without the padding that follows it.
    len: u32,
    /// CRC-32C of the archive and its padding up to the next 16-byte boundary.
    crc: u32,
}

/// The layout flags of this build's rkyv (see `toolchain.md` §11.9: features unify across
/// the build, so they are checked at run time against the file).
pub fn layout_flags() -> u32 {
    use std::any::TypeId;
    use std::mem::{align_of, size_of};
    let mut flags = 0;
    if TypeId::of::<rkyv::Archived<u32>>() == TypeId::of::<rkyv::rend::u32_le>() {
        flags |= FLAG_LITTLE_ENDIAN;
    }
    if align_of::<rkyv::Archived<u64>>() == 8 {
        flags |= FLAG_ALIGNED;
    }
    if size_of::<rkyv::Archived<usize>>() == 4 {
        flags |= FLAG_POINTER_WIDTH_32;
    }
    flags
}

/// What [`write_snapshot`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub rv: u64,
    pub path: PathBuf,
    pub objects: u64,
    /// The file's length.
    pub bytes: u64,
}

/// One entry, borrowed from the snapshot's mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub key: &'a str,
    pub rv: u64,
    pub payload: &'a [u8],
}

/// The file name of the snapshot at `rv`: `snap-<rv, 20 digits>.snap`.
pub fn snapshot_file_name(rv: u64) -> String {
    format!("snap-{rv:020}.snap")
}

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// Header fields, in file order (see the format document).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    version: u32,
    flags: u32,
    rv: u64,
    count: u64,
    entries_len: u64,
    index_len: u64,
    index_crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&self.version.to_le_bytes());
        h[12..16].copy_from_slice(&self.flags.to_le_bytes());
        h[16..24].copy_from_slice(&self.rv.to_le_bytes());
        h[24..32].copy_from_slice(&self.count.to_le_bytes());
        h[32..40].copy_from_slice(&self.entries_len.to_le_bytes());
        h[40..48].copy_from_slice(&self.index_len.to_le_bytes());
        h[48..52].copy_from_slice(&self.index_crc.to_le_bytes());
        // 52..60 reserved, zero.
        let crc = crc32c::crc32c(&h[..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks a header; errors are `Corrupt` reasons with the offending offset.
    fn decode(h: &[u8; HEADER_LEN]) -> std::result::Result<Header, (u64, String)> {
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| {
            u64::from_le_bytes([
                h[o],
                h[o + 1],
                h[o + 2],
                h[o + 3],
                h[o + 4],
                h[o + 5],
                h[o + 6],
                h[o + 7],
            ])
        };
        if h[0..8] != MAGIC {
            return Err((0, "bad magic: not a floyd snapshot".into()));
        }
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err((
                8,
                format!(
                    "unsupported snapshot format version {version} (this build reads version {FORMAT_VERSION})"
                ),
            ));
        }
        let crc = u32_at(60);
        if crc32c::crc32c(&h[..60]) != crc {
            return Err((60, "header checksum mismatch".into()));
        }
        let flags = u32_at(12);
        if flags != layout_flags() {
            return Err((
                12,
                format!(
                    "rkyv layout flags {flags:#x} differ from this build's {:#x}",
                    layout_flags()
                ),
            ));
        }
        if h[52..60].iter().any(|&b| b != 0) {
            return Err((52, "reserved header bytes are not zero".into()));
        }
        let header = Header {
            version,
            flags,
            rv: u64_at(16),
            count: u64_at(24),
            entries_len: u64_at(32),
            index_len: u64_at(40),
            index_crc: u32_at(48),
        };
        if !header.entries_len.is_multiple_of(ALIGN as u64) {
            return Err((32, "entries length is not a multiple of 16".into()));
        }
        Ok(header)
    }
}

/// Writes the snapshot of `entries` taken at `rv` into the directory `dir` (see
/// [`write_snapshot_in`]).
pub fn write_snapshot<'a>(
    dir: &Path,
    rv: u64,
    entries: impl IntoIterator<Item = (&'a str, u64, &'a [u8])>,
) -> Result<SnapshotInfo> {
    write_snapshot_in(&FileStorage::without_lock(dir)?, rv, entries)
}

/// Writes the snapshot of `entries` taken at `rv` into `storage` and returns what it wrote.
///
/// Entries may come in any order; keys must be unique and no entry's rv may exceed `rv`
/// (`Invalid` otherwise). The file is written as `snap-<rv>.tmp`, fsynced, renamed to
/// `snap-<rv>.snap` and the directory fsynced, so a crash leaves either no snapshot or a
/// complete one (a leftover `.tmp` is ignored by [`list_snapshots`] and removed by
/// [`remove_temporaries_in`]). A failure (a full disk, say) removes the `.tmp` before it
/// returns, so a failed snapshot does not keep its space.
pub fn write_snapshot_in<'a>(
    storage: &dyn Storage,
    rv: u64,
    entries: impl IntoIterator<Item = (&'a str, u64, &'a [u8])>,
) -> Result<SnapshotInfo> {
    let mut list: Vec<(&str, u64, &[u8])> = entries.into_iter().collect();
    list.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if let Some(w) = list.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::invalid(
            "entries",
            format!("duplicate key {:?}", w[0].0),
        ));
    }
    if let Some(e) = list.iter().find(|e| e.1 > rv) {
        return Err(Error::invalid(
            "entries",
            format!("entry {:?} has rv {} > snapshot rv {rv}", e.0, e.1),
        ));
    }
    if let Some(e) = list
        .iter()
        .find(|e| u32::try_from(e.0.len() + e.2.len()).is_err())
    {
        return Err(Error::invalid(
            "entries",
            format!("entry {:?} is larger than 4 GiB", e.0),
        ));
    }

    let final_name = snapshot_file_name(rv);
    let tmp_name = format!("snap-{rv:020}.tmp");
    let tmp_path = storage.describe(&tmp_name);
    let io_err = |what: &str, e: io::Error| Error::io(format!("{what} {}", tmp_path.display()), e);
    let file = storage.create_file(&tmp_name)?;
    let mut tmp_guard = RemoveOnDrop(storage, Some(&tmp_name));
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&[0u8; HEADER_LEN])
        .map_err(|e| io_err("write", e))?;

    let mut records = Vec::with_capacity(list.len());
    let mut rec = EntryRecord::default();
    let mut buf = AlignedVec::<ALIGN>::new();
    let mut offset: u64 = 0;
    const ZEROS: [u8; ALIGN] = [0; ALIGN];
    for (key, entry_rv, payload) in &list {
        rec.key.clear();
        rec.key.push_str(key);
        rec.rv = *entry_rv;
        rec.payload.clear();
        rec.payload.extend_from_slice(payload);
        buf.clear();
        buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&rec, buf)
            .map_err(|e| Error::Internal(format!("snapshot: serialising entry {key:?}: {e}")))?;
        let len = buf.len() as u64;
        let pad = (align_up(len) - len) as usize;
        let mut crc = crc32c::crc32c(&buf);
        crc = crc32c::crc32c_append(crc, &ZEROS[..pad]);
        w.write_all(&buf).map_err(|e| io_err("write", e))?;
        w.write_all(&ZEROS[..pad]).map_err(|e| io_err("write", e))?;
        let len = u32::try_from(len).map_err(|_| {
            Error::invalid("entries", format!("entry {key:?} is larger than 4 GiB"))
        })?;
        records.push(IndexRecord { offset, len, crc });
        offset += align_up(u64::from(len));
    }
    let index = rkyv::to_bytes::<rancor::Error>(&records)
        .map_err(|e| Error::Internal(format!("snapshot: serialising the index: {e}")))?;
    w.write_all(&index).map_err(|e| io_err("write", e))?;
    let header = Header {
        version: FORMAT_VERSION,
        flags: layout_flags(),
        rv,
        count: list.len() as u64,
        entries_len: offset,
        index_len: index.len() as u64,
        index_crc: crc32c::crc32c(&index),
    };
    let mut file = w
        .into_inner()
        .map_err(|e| io_err("write", e.into_error()))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_err("seek", e))?;
    file.write_all(&header.encode())
        .map_err(|e| io_err("write", e))?;
    crate::failpoint!("snapshot.after_tmp_write");
    file.sync().map_err(|e| io_err("fsync", e))?;
    drop(file);
    crate::failpoint!("snapshot.before_rename");
    storage.rename(&tmp_name, &final_name)?;
    tmp_guard.1 = None;
    crate::failpoint!("snapshot.after_rename_before_dir_fsync");
    storage.sync_dir()?;
    Ok(SnapshotInfo {
        rv,
        path: storage.describe(&final_name),
        objects: list.len() as u64,
        bytes: HEADER_LEN as u64 + offset + index.len() as u64,
    })
}

/// Removes a temporary file unless disarmed (set to `None`) first.
struct RemoveOnDrop<'a>(&'a dyn Storage, Option<&'a str>);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.1 {
            let _ = self.0.remove(name);
        }
    }
}

/// Removes the `snap-*.tmp` files a crash in the middle of [`write_snapshot`] left in
/// `storage`, and returns how many. Only for storage nothing else is writing snapshots
/// into (the store calls it on open, holding the data directory's lock).
pub fn remove_temporaries_in(storage: &dyn Storage) -> Result<usize> {
    let mut removed = 0;
    for name in storage.list()? {
        if name.starts_with("snap-") && name.ends_with(".tmp") {
            storage.remove(&name)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The snapshots in `storage` as `(rv, file name)`, newest first. Files that are not
/// `snap-<20 digits>.snap` (temporaries, `.broken` quarantines) are ignored.
pub fn list_snapshots_in(storage: &dyn Storage) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for name in storage.list()? {
        let Some(digits) = name
            .strip_prefix("snap-")
            .and_then(|n| n.strip_suffix(".snap"))
        else {
            continue;
        };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(rv) = digits.parse::<u64>() {
            out.push((rv, name));
        }
    }
    out.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out)
}

/// [`list_snapshots_in`] for a directory, as `(rv, path)`; a missing directory has no
/// snapshots.
pub fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let found = list_snapshots_in(&FileStorage::without_lock(dir)?)?;
    Ok(found.into_iter().map(|(rv, n)| (rv, dir.join(n))).collect())
}

/// Renames a snapshot that failed its checks to `<name>.broken`, keeping the evidence, and
/// returns where it is now.
pub fn quarantine_in(storage: &dyn Storage, name: &str) -> Result<PathBuf> {
    let broken = format!("{name}.broken");
    storage.rename(name, &broken)?;
    storage.sync_dir()?;
    Ok(storage.describe(&broken))
}

/// [`quarantine_in`] for a file path.
pub fn quarantine(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid("path", format!("{} has no file name", path.display())))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    quarantine_in(
        &FileStorage::without_lock(dir.unwrap_or(Path::new(".")))?,
        name,
    )
}

/// Where the snapshot's bytes live.
enum Backing {
    Map(Mmap),
    /// An aligned copy; the view starts at `.1` (non-zero only in the misalignment test).
    Heap(AlignedVec<ALIGN>, usize),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Heap(v, at) => v.get(*at..).unwrap_or(&[]),
        }
    }
}

/// A bitmap of per-entry facts, set once and never cleared.
struct Bitmap(Vec<AtomicU64>);

impl Bitmap {
    fn new(n: usize) -> Bitmap {
        Bitmap((0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }
    fn set(&self, i: usize) {
        self.0[i / 64].fetch_or(1 << (i % 64), Ordering::Release);
    }
}

/// An open, mapped snapshot. `Send + Sync`: lookups from many threads share the mapping
/// and the validation bitmaps.
pub struct Snapshot {
    backing: Backing,
    path: PathBuf,
    rv: u64,
    len: usize,
    entries_len: usize,
    /// Range of the index archive within the file.
    index_start: usize,
    index_end: usize,
    /// Entry `i`'s bytes passed checksum, `rkyv::access` and the rv check.
    bytes_ok: Bitmap,
    /// Entry `i` is `bytes_ok` and its key is greater than entry `i - 1`'s.
    order_ok: Bitmap,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.path)
            .field("rv", &self.rv)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Opens and maps a snapshot file, checking in order: header (magic, version, checksum,
    /// layout flags), file length == header + body, index checksum, `rkyv::access` on the
    /// index. Any failure is `Corrupt { file, offset, reason }`; a file that cannot be read
    /// is `Io`. Entries are checked on first access.
    pub fn open(path: &Path) -> Result<Snapshot> {
        let (file, len) = crate::log::storage::open_regular_file(path)?;
        Snapshot::open_file(path, file, len)
    }

    /// [`Snapshot::open`] of the file `name` in `storage`: a real file is mapped; the bytes
    /// of a simulated one are copied into an aligned buffer. The same checks either way.
    pub fn open_in(storage: &dyn Storage, name: &str) -> Result<Snapshot> {
        let path = storage.describe(name);
        match storage.read_file(name)? {
            FileSource::File(file, len) => Snapshot::open_file(&path, file, len),
            FileSource::Bytes(bytes) => Snapshot::from_bytes(&path, &bytes),
        }
    }

    fn open_file(path: &Path, mut file: File, file_len: u64) -> Result<Snapshot> {
        if file_len < HEADER_LEN as u64 {
            return Err(Error::corrupt(
                path,
                Some(file_len),
                format!("truncated: {file_len} bytes is shorter than the {HEADER_LEN}-byte header"),
            ));
        }
        let mut h = [0u8; HEADER_LEN];
        file.read_exact(&mut h)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let header =
            Header::decode(&h).map_err(|(off, why)| Error::corrupt(path, Some(off), why))?;
        check_length(path, &header, file_len)?;
        let len = usize::try_from(file_len)
            .map_err(|_| Error::corrupt(path, None, "file larger than the address space"))?;
        let map = raw::map_file(&file, len)
            .map_err(|e| Error::io(format!("map {}", path.display()), e))?;
        Snapshot::from_backing(path, Backing::Map(map))
    }

    /// Opens a snapshot from bytes already in memory (copied into an aligned buffer), with
    /// the same checks as [`Snapshot::open`]; `path` only names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Snapshot> {
        let mut v = AlignedVec::<ALIGN>::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        Snapshot::from_backing(path, Backing::Heap(v, 0))
    }

    /// Test support for reliability case C12: opens `bytes` placed at `offset` bytes past a
    /// 16-aligned address, without the aligned copy. A misaligned view is `Corrupt`.
    #[doc(hidden)]
    pub fn from_bytes_at_offset(path: &Path, bytes: &[u8], offset: usize) -> Result<Snapshot> {
        let mut v = AlignedVec::<ALIGN>::with_capacity(bytes.len() + offset);
        v.resize(offset, 0);
        v.extend_from_slice(bytes);
        Snapshot::from_backing(path, Backing::Heap(v, offset))
    }

    fn from_backing(path: &Path, backing: Backing) -> Result<Snapshot> {
        let bytes = backing.bytes();
        let corrupt = |off: Option<u64>, why: String| Error::corrupt(path, off, why);
        let Some(h) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(corrupt(
                Some(bytes.len() as u64),
                format!(
                    "truncated: {} bytes is shorter than the {HEADER_LEN}-byte header",
                    bytes.len()
                ),
            ));
        };
        let header = Header::decode(h).map_err(|(off, why)| corrupt(Some(off), why))?;
        check_length(path, &header, bytes.len() as u64)?;
        if bytes.as_ptr().align_offset(ALIGN) != 0 {
            return Err(corrupt(
                None,
                format!("snapshot bytes are not {ALIGN}-byte aligned in memory"),
            ));
        }
        // check_length proved these sums fit in the buffer's length.
        let entries_len = header.entries_len as usize;
        let index_start = HEADER_LEN + entries_len;
        let index_end = index_start + header.index_len as usize;
        let index_bytes = &bytes[index_start..index_end];
        if crc32c::crc32c(index_bytes) != header.index_crc {
            return Err(corrupt(
                Some(index_start as u64),
                "index checksum mismatch".into(),
            ));
        }
        let index = rkyv::access::<ArchivedVec<ArchivedIndexRecord>, rancor::Error>(index_bytes)
            .map_err(|e| {
                corrupt(
                    Some(index_start as u64),
                    format!("index fails validation: {e}"),
                )
            })?;
        if index.len() as u64 != header.count {
            return Err(corrupt(
                Some(24),
                format!(
                    "header says {} entries, index holds {}",
                    header.count,
                    index.len()
                ),
            ));
        }
        let len = index.len();
        Ok(Snapshot {
            path: path.to_path_buf(),
            rv: header.rv,
            len,
            entries_len,
            index_start,
            index_end,
            bytes_ok: Bitmap::new(len),
            order_ok: Bitmap::new(len),
            backing,
        })
    }

    /// Opens a snapshot and checks every entry (see [`Snapshot::verify`]).
    pub fn open_verified(path: &Path) -> Result<Snapshot> {
        let s = Snapshot::open(path)?;
        s.verify()?;
        Ok(s)
    }

    /// Checks every entry now: checksums, archives, rv ≤ snapshot rv, keys strictly
    /// increasing (so no duplicates).
    pub fn verify(&self) -> Result<()> {
        self.iter().try_for_each(|e| e.map(drop))
    }

    /// The resource version the snapshot was taken at.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt_at(&self, off: usize, why: String) -> Error {
        Error::corrupt(&self.path, Some(off as u64), why)
    }

    /// The byte range of entry `i`'s archive and of its padded extent, bounds-checked
    /// against the entries region.
    fn entry_range(&self, i: usize) -> Result<(usize, usize, usize, u32)> {
        let r = &self.index()[i];
        let (offset, len, crc) = (r.offset.to_native(), r.len.to_native(), r.crc.to_native());
        let padded = align_up(offset.saturating_add(u64::from(len)));
        if !offset.is_multiple_of(ALIGN as u64) || padded > self.entries_len as u64 {
            return Err(self.corrupt_at(
                self.index_start,
                format!("index slot {i} points outside the entries region (offset {offset}, length {len})"),
            ));
        }
        let start = HEADER_LEN + offset as usize;
        Ok((
            start,
            start + len as usize,
            HEADER_LEN + padded as usize,
            crc,
        ))
    }

    /// Checks entry `i`'s bytes (checksum, archive, rv) once.
    fn check_bytes(&self, i: usize) -> Result<()> {
        if self.bytes_ok.get(i) {
            return Ok(());
        }
        let (start, end, padded_end, crc) = self.entry_range(i)?;
        let bytes = self.backing.bytes();
        if crc32c::crc32c(&bytes[start..padded_end]) != crc {
            return Err(self.corrupt_at(start, format!("entry {i} checksum mismatch")));
        }
        let rec = rkyv::access::<ArchivedEntryRecord, rancor::Error>(&bytes[start..end])
            .map_err(|e| self.corrupt_at(start, format!("entry {i} fails validation: {e}")))?;
        let rv = rec.rv.to_native();
        if rv > self.rv {
            return Err(self.corrupt_at(
                start,
                format!("entry {i} has rv {rv} > snapshot rv {}", self.rv),
            ));
        }
        self.bytes_ok.set(i);
        Ok(())
    }

    /// Entry `i`, fully validated: its own bytes, and ordered after entry `i - 1`.
    fn entry(&self, i: usize) -> Result<Entry<'_>> {
        let e = self.entry_checked(i)?;
        if i > 0 && !self.order_ok.get(i) {
            let prev = self.entry_checked(i - 1)?;
            if prev.key >= e.key {
                let (start, ..) = self.entry_range(i)?;
                return Err(self.corrupt_at(
                    start,
                    format!(
                        "entry {i} key {:?} is not after entry {} key {:?} (unsorted or duplicate)",
                        e.key,
                        i - 1,
                        prev.key
                    ),
                ));
            }
            self.order_ok.set(i);
        }
        Ok(e)
    }

    /// The first index whose key is `>= key` (binary search; validates what it reads).
    fn lower_bound(&self, key: &str) -> Result<usize> {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid)?.key < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The entry for `key`, if any. `Corrupt` if an entry read on the way fails its checks.
    pub fn get(&self, key: &str) -> Result<Option<Entry<'_>>> {
        let i = self.lower_bound(key)?;
        if i == self.len {
            return Ok(None);
        }
        let e = self.entry(i)?;
        Ok((e.key == key).then_some(e))
    }

    /// Every entry in key order. After an `Err` the iterator ends.
    pub fn iter(&self) -> impl Iterator<Item = Result<Entry<'_>>> + '_ {
        Iter {
            snap: self,
            next: 0,
            end: self.len,
            prefix: None,
            pending: None,
        }
    }

    /// The entries whose key starts with `prefix` (`"Deployment/"`), in key order. After an
    /// `Err` the iterator ends.
    pub fn range_prefix<'s>(
        &'s self,
        prefix: &'s str,
    ) -> impl Iterator<Item = Result<Entry<'s>>> + 's {
        let (next, pending) = match self.lower_bound(prefix) {
            Ok(start) => (start, None),
            Err(e) => (self.len, Some(e)),
        };
        Iter {
            snap: self,
            next,
            end: self.len,
            prefix: Some(prefix),
            pending,
        }
    }
}

struct Iter<'s> {
    snap: &'s Snapshot,
    next: usize,
    end: usize,
    prefix: Option<&'s str>,
    /// An error met before iteration started (while seeking the prefix).
    pending: Option<Error>,
}

impl<'s> Iterator for Iter<'s> {
    type Item = Result<Entry<'s>>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        if self.next >= self.end {
            return None;
        }
        let i = self.next;
        match self.snap.entry(i) {
            Ok(e) => {
                if self.prefix.is_some_and(|p| !e.key.starts_with(p)) {
                    self.next = self.end;
                    return None;
                }
                self.next += 1;
                Some(Ok(e))
            }
            Err(e) => {
                self.next = self.end;
                Some(Err(e))
            }
        }
    }
}

fn check_length(path: &Path, header: &Header, actual: u64) -> Result<()> {
    let expected = (HEADER_LEN as u64)
        .checked_add(header.entries_len)
        .and_then(|n| n.checked_add(header.index_len));
    match expected {
        Some(n) if n == actual => Ok(()),
        Some(n) => Err(Error::corrupt(
            path,
            Some(actual.min(n)),
            format!("file is {actual} bytes, header says {n} (truncated or extended)"),
        )),
        None => Err(Error::corrupt(path, Some(32), "header lengths overflow")),
    }
}

// Compile-time guard: `Snapshot` is shared across threads by the store and informers.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Snapshot>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checks_itself() {
        let h = Header {
            version: FORMAT_VERSION,
            flags: layout_flags(),
            rv: 7,
            count: 3,
            entries_len: 96,
            index_len: 56,
            index_crc: 0xdead_beef,
        };
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
        for bit in 0..HEADER_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&b).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn this_build_has_the_pinned_rkyv_layout() {
        assert_eq!(
            layout_flags(),
            FLAG_LITTLE_ENDIAN | FLAG_ALIGNED | FLAG_POINTER_WIDTH_32
        );
    }
}
