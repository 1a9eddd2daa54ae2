//! The snapshot's only `unsafe`: mapping a file, and reading rkyv archives without
//! re-validating them once [`super`] has validated them in the same buffer.
//!
//! Everything here is a thin wrapper whose safety argument is local; the checks themselves
//! (lengths, checksums, `rkyv::access`) live in the safe code of `super`.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};
use rkyv::vec::ArchivedVec;

use super::{ArchivedEntryRecord, ArchivedIndexRecord, Entry, Snapshot};
use crate::error::Result;

/// Maps exactly `len` bytes of `file` read-only. The caller has checked that the file is at
/// least `len` bytes long (its length was read from the open file and `len` equals it), so
/// the mapping never extends past the end of the file.
pub(super) fn map_file(file: &File, len: usize) -> io::Result<Mmap> {
    // SAFETY: a mapping is only unsound if the file is changed or truncated while mapped.
    // Snapshot files are immutable once published: they are written under a `.tmp` name,
    // fsynced and renamed, and floyd never writes to or truncates a published snapshot
    // (quarantine only renames). Changing it from outside floyd breaks the documented
    // contract of the data directory, as for any memory-mapped database. The length is the
    // file's real length, so no page of the mapping lies beyond EOF.
    unsafe { MmapOptions::new().len(len).map(file) }
}

/// The index archive, without validation.
///
/// # Safety
/// `bytes` must be exactly the bytes that passed
/// `rkyv::access::<ArchivedVec<ArchivedIndexRecord>, _>` in `Snapshot::open`, in the same,
/// unchanged buffer (the snapshot's own mapping or aligned copy).
pub(super) unsafe fn index_unchecked(bytes: &[u8]) -> &ArchivedVec<ArchivedIndexRecord> {
    // SAFETY: the caller guarantees these bytes were validated by `rkyv::access` for this
    // type, which is the contract of `access_unchecked`.
    unsafe { rkyv::access_unchecked::<ArchivedVec<ArchivedIndexRecord>>(bytes) }
}

/// One entry's archive, without validation.
///
/// # Safety
/// `bytes` must be exactly the bytes of an entry that passed its checksum and
/// `rkyv::access::<ArchivedEntryRecord, _>` in `Snapshot::check_bytes`, in the same,
/// unchanged buffer (recorded in the snapshot's `bytes_ok` bitmap).
pub(super) unsafe fn entry_unchecked(bytes: &[u8]) -> &ArchivedEntryRecord {
    // SAFETY: the caller guarantees these bytes were validated by `rkyv::access` for this
    // type, which is the contract of `access_unchecked`.
    unsafe { rkyv::access_unchecked::<ArchivedEntryRecord>(bytes) }
}

// The two accessors that turn validated bytes into references live here so that every
// `unsafe` block of the snapshot is in this module.
impl Snapshot {
    /// The index archive (validated in `Snapshot::from_backing`).
    pub(super) fn index(&self) -> &ArchivedVec<ArchivedIndexRecord> {
        // SAFETY: these are exactly the bytes `from_backing` validated with `rkyv::access`
        // for this type, in `self.backing`, which is immutable for the snapshot's lifetime.
        unsafe { index_unchecked(&self.backing.bytes()[self.index_start..self.index_end]) }
    }

    /// Entry `i` after `check_bytes(i)` succeeded.
    pub(super) fn entry_checked(&self, i: usize) -> Result<Entry<'_>> {
        self.check_bytes(i)?;
        let (start, end, _, _) = self.entry_range(i)?;
        // SAFETY: `check_bytes(i)` succeeded (now or earlier, recorded in `bytes_ok`), so
        // `bytes[start..end]` passed `rkyv::access::<ArchivedEntryRecord>` in this same
        // immutable backing; `entry_range` computes the same range every time.
        let rec = unsafe { entry_unchecked(&self.backing.bytes()[start..end]) };
        Ok(Entry {
            key: rec.key.as_str(),
            rv: rec.rv.to_native(),
            payload: rec.payload.as_slice(),
        })
    }
}
