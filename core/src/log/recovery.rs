//! Recovery on open: find the intact prefix of the log and make the files agree with it.
//!
//! Rules (etcd's and fjall's, `reliability.md` §0.5, §3(b)):
//! - Segments must be consecutive (sequence and base position) with valid headers;
//!   anything else is `Corrupt` (C6, C7).
//! - Frames are verified from `verify_from` on. The log ends at the first frame that is not
//!   a valid published frame. Such an end is a *torn tail* — cut it — when the frame was
//!   never written or never published, when it overlaps an all-zero 512-byte sector (a
//!   write that never reached the disk), or when nothing valid follows it. A bad frame with
//!   no zero sector that *is* followed by a valid frame is damage in the middle: `Corrupt`.
//! - Cutting keeps evidence: the segment is copied to `<name>.broken` before its tail is
//!   zeroed, later segments are renamed to `.broken`, and the result is synced before open
//!   returns. Unused prepared segments (`*.prep`) are removed.

use crate::error::{Error, Result};
use crate::log::frame::{self, Decoded, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::log::raw::RawSegment;
use crate::log::storage::Storage;
use crate::log::{LogConfig, Segment, segment_name};

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Event frames verified.
    pub frames: u64,
    /// Bytes cut off the tail (zeroed in the last kept segment plus later segments).
    pub truncated_bytes: u64,
    /// Files renamed or copied to `.broken`.
    pub broken_files: Vec<String>,
    /// Why the tail was cut, if it was.
    pub cut_reason: Option<String>,
}

pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    /// `(segment seq, offset)` where the next frame goes; `None` for an empty directory.
    pub end: Option<(u64, usize)>,
    pub report: RecoveryReport,
}

fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

enum Scan {
    /// Frames run to the segment's end.
    Complete,
    /// The log ends at `off`; `torn` says the end is a crash artifact for sure.
    End {
        off: usize,
        torn: bool,
        reason: &'static str,
    },
}

fn scan(bytes: &[u8], h: &SegmentHeader, verify: bool, frames: &mut u64) -> Scan {
    let mut off = SEGMENT_HEADER_LEN;
    while off < bytes.len() {
        if !verify {
            // Trusted region (before the newest snapshot): follow lengths, bounded.
            let w = frame::Word::unpack(u64::from_le_bytes(
                bytes[off..off + 8].try_into().expect("8 bytes"),
            ));
            let len = w.len as usize;
            let ok_type = w.ty == frame::TYPE_EVENT || w.ty == frame::TYPE_PADDING;
            if !ok_type
                || len < frame::FRAME_ALIGN
                || !len.is_multiple_of(frame::FRAME_ALIGN)
                || off + len > bytes.len()
            {
                // Fall back to full verification from here.
                return scan_from(bytes, h, off, frames);
            }
            off += len;
            continue;
        }
        return scan_from(bytes, h, off, frames);
    }
    Scan::Complete
}

fn scan_from(bytes: &[u8], h: &SegmentHeader, mut off: usize, frames: &mut u64) -> Scan {
    while off < bytes.len() {
        match frame::decode(bytes, off, h.base, h.seq) {
            Decoded::Event { len, .. } => {
                *frames += 1;
                off += len;
            }
            Decoded::Padding { len } => off += len,
            Decoded::Free => {
                return Scan::End {
                    off,
                    torn: true,
                    reason: "unwritten frame",
                };
            }
            Decoded::Unpublished => {
                return Scan::End {
                    off,
                    torn: true,
                    reason: "unpublished claim",
                };
            }
            Decoded::Bad { reason } => {
                let w = frame::Word::unpack(u64::from_le_bytes(
                    bytes[off..off + 8].try_into().expect("8 bytes"),
                ));
                // A torn write leaves the publish word intact (or zero); a length that does
                // not fit is damage to the word itself, never evidence of a lost write.
                let len = w.len as usize;
                let plausible = (w.ty == frame::TYPE_EVENT || w.ty == frame::TYPE_PADDING)
                    && len >= frame::FRAME_ALIGN
                    && len.is_multiple_of(frame::FRAME_ALIGN)
                    && len <= bytes.len() - off;
                let torn = plausible && frame::overlaps_zero_sector(bytes, off, off + len);
                return Scan::End { off, torn, reason };
            }
        }
    }
    Scan::Complete
}

/// True if a valid event frame starts anywhere in `bytes[from..]`.
fn valid_frame_after(bytes: &[u8], h: &SegmentHeader, from: usize) -> bool {
    let mut off = frame::align(from + 1);
    while off + frame::FRAME_ALIGN <= bytes.len() {
        if matches!(
            frame::decode(bytes, off, h.base, h.seq),
            Decoded::Event { .. }
        ) {
            return true;
        }
        off += frame::FRAME_ALIGN;
    }
    false
}

pub(crate) fn recover(storage: &dyn Storage, cfg: &LogConfig) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let mut seqs = vec![];
    for name in storage.list()? {
        if name.ends_with(".prep") {
            storage.remove(&name)?;
            continue;
        }
        if let Some(seq) = parse_name(&name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    if seqs.is_empty() {
        return Ok(Recovered {
            segments: vec![],
            end: None,
            report,
        });
    }

    // Open every segment and check headers and continuity.
    let mut segs: Vec<(RawSegment, String)> = vec![];
    for (i, &seq) in seqs.iter().enumerate() {
        let name = segment_name(seq);
        let region = storage.open(&name)?;
        // SAFETY: recovery runs before the log is shared; nothing else touches the map.
        let bytes = unsafe { region.slice(0, region.len()) };
        let h = SegmentHeader::decode(bytes)
            .map_err(|why| Error::corrupt(storage.describe(&name), Some(0), why))?;
        if h.seq != seq {
            return Err(Error::corrupt(
                storage.describe(&name),
                Some(16),
                "sequence disagrees with the file name",
            ));
        }
        if h.size != region.len() as u64 {
            return Err(Error::corrupt(
                storage.describe(&name),
                None,
                format!(
                    "file is {} bytes but its header says {}",
                    region.len(),
                    h.size
                ),
            ));
        }
        if i > 0 {
            let (prev, _) = &segs[i - 1];
            if seq != prev.seq + 1 || h.base != prev.base + prev.size as u64 {
                return Err(Error::corrupt(
                    storage.describe(&name),
                    Some(16),
                    format!(
                        "segment {seq} does not follow segment {} (missing or misplaced segment)",
                        prev.seq
                    ),
                ));
            }
        }
        segs.push((
            RawSegment {
                region,
                seq,
                base: h.base,
                size: h.size as usize,
            },
            name,
        ));
    }

    // Scan frames; find the end.
    let mut end: Option<(usize, usize, bool, &'static str)> = None; // (index, off, torn, reason)
    for (i, (raw, _)) in segs.iter().enumerate() {
        // SAFETY: as above, the log is not open yet.
        let bytes = unsafe { raw.quiescent_bytes() };
        let h = SegmentHeader {
            seq: raw.seq,
            base: raw.base,
            size: raw.size as u64,
        };
        let verify = raw.base + raw.size as u64 > cfg.verify_from;
        match scan(bytes, &h, verify, &mut report.frames) {
            Scan::Complete => {}
            Scan::End { off, torn, reason } => {
                end = Some((i, off, torn, reason));
                break;
            }
        }
    }

    let last_index = segs.len() - 1;
    let end_pos = match end {
        None => {
            let (raw, _) = &segs[last_index];
            (last_index, raw.size)
        }
        Some((i, off, torn, reason)) => {
            if !torn {
                // A bad frame with no sign of a lost write: it is the tail only if nothing
                // valid follows it.
                let (raw, name) = &segs[i];
                // SAFETY: as above.
                let bytes = unsafe { raw.quiescent_bytes() };
                let h = SegmentHeader {
                    seq: raw.seq,
                    base: raw.base,
                    size: raw.size as u64,
                };
                let later_in_segment = valid_frame_after(bytes, &h, off);
                let later_segment = segs[i + 1..].iter().any(|(r, _)| {
                    // SAFETY: as above.
                    let b = unsafe { r.quiescent_bytes() };
                    let hh = SegmentHeader {
                        seq: r.seq,
                        base: r.base,
                        size: r.size as u64,
                    };
                    matches!(
                        frame::decode(b, SEGMENT_HEADER_LEN, hh.base, hh.seq),
                        Decoded::Event { .. }
                    )
                });
                if later_in_segment || later_segment {
                    return Err(Error::corrupt(
                        storage.describe(name),
                        Some(off as u64),
                        format!("{reason} in the middle of the log (valid frames follow)"),
                    ));
                }
            }
            report.cut_reason = Some(reason.to_string());
            (i, off)
        }
    };

    // Cut: back up and zero the tail of the end segment, move later segments aside.
    let (ei, eoff) = end_pos;
    {
        let (raw, name) = &segs[ei];
        // SAFETY: as above.
        let bytes = unsafe { raw.quiescent_bytes() };
        if eoff < raw.size && bytes[eoff..].iter().any(|&b| b != 0) {
            let nonzero = bytes[eoff..]
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |p| p + 1);
            let broken = format!("{name}.broken");
            let _ = storage.remove(&broken);
            storage.copy(name, &broken)?;
            report.broken_files.push(broken);
            crate::failpoint!("recovery.mid_truncate");
            let zeros = vec![0u8; nonzero];
            // SAFETY: recovery is single-threaded; the log is not open yet.
            unsafe { raw.quiescent_write(eoff, &zeros) };
            storage.sync(name, &raw.region, eoff, nonzero)?;
            report.truncated_bytes += nonzero as u64;
            tracing::warn!(segment = %name, offset = eoff, bytes = nonzero, "cut a torn log tail");
        }
    }
    for (raw, name) in segs.drain(ei + 1..) {
        let broken = format!("{name}.broken");
        let _ = storage.remove(&broken);
        report.truncated_bytes += raw.size as u64;
        drop(raw);
        storage.rename(&name, &broken)?;
        report.broken_files.push(broken);
    }
    if !report.broken_files.is_empty() {
        storage.sync_dir()?;
    }
    report.segments = segs.len();
    let end_seq = segs[ei].0.seq;
    let segments = segs
        .into_iter()
        .map(|(raw, name)| Segment { raw, name })
        .collect();
    Ok(Recovered {
        segments,
        end: Some((end_seq, eoff)),
        report,
    })
}
