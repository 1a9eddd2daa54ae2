//! Frame and segment-header layout: constants, encoding, checksums and verification.
//! Pure functions over byte slices; the concurrent publish protocol that writes these bytes
//! lives in `raw`. The byte-level format is specified in `docs/format.md`.
//!
//! A frame starts with an 8-byte *publish word* (`len: u32`, `type: u8`, `version: u8`,
//! `kind: u16`), written last with release ordering, then a CRC-32C, the payload length, the
//! frame's resource version (its global position) and the payload, padded to 16 bytes.

/// Frames start and end on this boundary; the smallest frame (padding) is one unit.
pub const FRAME_ALIGN: usize = 16;
/// Bytes before the payload of an event frame.
pub const EVENT_HEADER_LEN: usize = 24;
/// Bytes at the start of every segment file.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// The segment file magic.
pub const SEGMENT_MAGIC: &[u8; 8] = b"FLOYDLOG";
/// Segment and frame format version; a reader refuses any other.
pub const FORMAT_VERSION: u8 = 1;
/// Smallest segment size accepted (one page).
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// Largest segment size accepted: frame lengths are `u32` and offsets stay far from the
/// 40-bit tail field.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 31;

/// The largest base position a segment may have (2^62): global positions and resource
/// versions never come near overflow.
pub const MAX_POSITION: u64 = 1 << 62;

/// Publish-word types. Distinct bit patterns (pairwise Hamming distance ≥ 4) so that a single
/// flipped bit cannot turn one state into another.
pub const TYPE_FREE: u8 = 0x00;
pub const TYPE_CLAIMED: u8 = 0x5A;
pub const TYPE_EVENT: u8 = 0xE1;
pub const TYPE_PADDING: u8 = 0x9D;
/// Written over the slots of an abandoned claim by the unblocker, so a late producer's
/// attempt to mark one of them fails (`raw::Segment::unblock`).
pub const TYPE_POISON: u8 = 0x36;

/// Rounds `n` up to the frame alignment.
pub const fn align(n: usize) -> usize {
    (n + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// Total aligned length of an event frame carrying `payload_len` bytes.
pub const fn event_frame_len(payload_len: usize) -> usize {
    align(EVENT_HEADER_LEN + payload_len)
}

/// The decoded publish word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word {
    pub len: u32,
    pub ty: u8,
    pub version: u8,
    pub kind: u16,
}

impl Word {
    pub const fn pack(self) -> u64 {
        (self.len as u64)
            | ((self.ty as u64) << 32)
            | ((self.version as u64) << 40)
            | ((self.kind as u64) << 48)
    }
    pub const fn unpack(w: u64) -> Word {
        Word {
            len: w as u32,
            ty: (w >> 32) as u8,
            version: (w >> 40) as u8,
            kind: (w >> 48) as u16,
        }
    }
}

/// The word that marks a claim in progress.
pub const fn claimed_word(len: u32) -> u64 {
    Word {
        len,
        ty: TYPE_CLAIMED,
        version: FORMAT_VERSION,
        kind: 0,
    }
    .pack()
}

/// The word written over slots of an abandoned claim.
pub const POISON_WORD: u64 = Word {
    len: 0,
    ty: TYPE_POISON,
    version: FORMAT_VERSION,
    kind: 0,
}
.pack();

/// The published word of an event frame.
pub const fn event_word(len: u32, kind: u16) -> u64 {
    Word {
        len,
        ty: TYPE_EVENT,
        version: FORMAT_VERSION,
        kind,
    }
    .pack()
}

/// The published word of a padding frame at `position` of segment `seq`. Padding frames
/// carry no CRC field (a gap can be one 16-byte unit, written while a late producer may
/// still touch the bytes after the word), so a 16-bit check over length, position and
/// segment sits in the `kind` field.
pub fn padding_word(len: u32, position: u64, seq: u64) -> u64 {
    Word {
        len,
        ty: TYPE_PADDING,
        version: FORMAT_VERSION,
        kind: padding_check(len, position, seq),
    }
    .pack()
}

fn padding_check(len: u32, position: u64, seq: u64) -> u16 {
    let mut buf = [0u8; 20];
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..12].copy_from_slice(&position.to_le_bytes());
    buf[12..].copy_from_slice(&seq.to_le_bytes());
    let c = crc32c::crc32c(&buf);
    (c ^ (c >> 16)) as u16
}

/// CRC-32C of an event frame: the published word, the frame's global position and segment
/// sequence (so a frame copied to another place or file never validates), then the bytes
/// after the CRC field (`payload_len`, rv, payload).
pub fn event_crc(word: u64, position: u64, seq: u64, after_crc: &[u8]) -> u32 {
    let mut head = [0u8; 24];
    head[..8].copy_from_slice(&word.to_le_bytes());
    head[8..16].copy_from_slice(&position.to_le_bytes());
    head[16..].copy_from_slice(&seq.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), after_crc)
}

/// [`event_crc`] for a writer holding the parts separately: one pass over a 36-byte head
/// (word, position, seq, `payload_len`, rv) and one over the payload — the same bytes in the
/// same order, so the same value.
pub fn event_crc_parts(word: u64, position: u64, seq: u64, payload: &[u8]) -> u32 {
    let mut head = [0u8; 36];
    head[..8].copy_from_slice(&word.to_le_bytes());
    head[8..16].copy_from_slice(&position.to_le_bytes());
    head[16..24].copy_from_slice(&seq.to_le_bytes());
    head[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    head[28..36].copy_from_slice(&position.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), payload)
}

/// What a frame at some offset is, as seen by recovery (no concurrency: plain bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A checksummed event; `len` is the aligned frame length.
    Event {
        len: usize,
        kind: u16,
        rv: u64,
        payload_at: usize,
        payload_len: usize,
    },
    /// A valid padding frame of `len` bytes.
    Padding { len: usize },
    /// Nothing was ever written here (publish word zero).
    Free,
    /// A claim that was never published (crash between claim and publish).
    Unpublished,
    /// Bytes that are not a valid frame at this position.
    Bad { reason: &'static str },
}

/// Decodes the frame at `off` of a segment body `seg` (the whole segment's bytes, header
/// included) whose global base position is `base` and sequence `seq`. Never reads past
/// `seg.len()` and never trusts a length before bounding it by the segment.
pub fn decode(seg: &[u8], off: usize, base: u64, seq: u64) -> Decoded {
    if off + 8 > seg.len() {
        return Decoded::Bad {
            reason: "frame header past the segment end",
        };
    }
    let raw = u64::from_le_bytes(seg[off..off + 8].try_into().expect("8 bytes"));
    if raw == 0 {
        return Decoded::Free;
    }
    let w = Word::unpack(raw);
    let Some(position) = base.checked_add(off as u64) else {
        return Decoded::Bad {
            reason: "position overflows",
        };
    };
    let room = seg.len() - off;
    match w.ty {
        TYPE_CLAIMED | TYPE_POISON => Decoded::Unpublished,
        TYPE_PADDING => {
            let len = w.len as usize;
            if w.version != FORMAT_VERSION {
                return Decoded::Bad {
                    reason: "padding frame with unknown version",
                };
            }
            if len < FRAME_ALIGN || !len.is_multiple_of(FRAME_ALIGN) || len > room {
                return Decoded::Bad {
                    reason: "padding length out of bounds",
                };
            }
            if w.kind != padding_check(w.len, position, seq) {
                return Decoded::Bad {
                    reason: "padding check mismatch",
                };
            }
            Decoded::Padding { len }
        }
        TYPE_EVENT => {
            let len = w.len as usize;
            if w.version != FORMAT_VERSION {
                return Decoded::Bad {
                    reason: "event frame with unknown version",
                };
            }
            if len < event_frame_len(0) || !len.is_multiple_of(FRAME_ALIGN) || len > room {
                return Decoded::Bad {
                    reason: "event length out of bounds",
                };
            }
            let f = &seg[off..off + len];
            let crc = u32::from_le_bytes(f[8..12].try_into().expect("4 bytes"));
            let payload_len = u32::from_le_bytes(f[12..16].try_into().expect("4 bytes")) as usize;
            if event_frame_len(payload_len) != len {
                return Decoded::Bad {
                    reason: "payload length disagrees with frame length",
                };
            }
            let used = EVENT_HEADER_LEN + payload_len;
            if event_crc(raw, position, seq, &f[12..used]) != crc {
                return Decoded::Bad {
                    reason: "checksum mismatch",
                };
            }
            let rv = u64::from_le_bytes(f[16..24].try_into().expect("8 bytes"));
            if rv != position {
                return Decoded::Bad {
                    reason: "resource version disagrees with position",
                };
            }
            Decoded::Event {
                len,
                kind: w.kind,
                rv,
                payload_at: off + EVENT_HEADER_LEN,
                payload_len,
            }
        }
        _ => Decoded::Bad {
            reason: "unknown frame type",
        },
    }
}

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    pub base: u64,
    pub size: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[..8].copy_from_slice(SEGMENT_MAGIC);
        h[8..12].copy_from_slice(&(FORMAT_VERSION as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.base.to_le_bytes());
        h[32..40].copy_from_slice(&self.size.to_le_bytes());
        let crc = crc32c::crc32c(&h[..40]);
        h[40..44].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks a header; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, &'static str> {
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err("file shorter than a segment header");
        }
        if bytes.iter().take(SEGMENT_HEADER_LEN).all(|&b| b == 0) {
            return Err("segment header was never written");
        }
        if &bytes[..8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        let crc = u32::from_le_bytes(bytes[40..44].try_into().expect("4 bytes"));
        if crc32c::crc32c(&bytes[..40]) != crc {
            return Err("segment header checksum mismatch");
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION as u32 {
            return Err("unknown segment format version");
        }
        let hlen = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        if hlen as usize != SEGMENT_HEADER_LEN {
            return Err("unexpected segment header length");
        }
        let h = SegmentHeader {
            seq: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
            base: u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
            size: u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")),
        };
        if h.size < MIN_SEGMENT_SIZE
            || h.size > MAX_SEGMENT_SIZE
            || !h.size.is_multiple_of(FRAME_ALIGN as u64)
        {
            return Err("segment size out of range");
        }
        // Positions stay far below u64::MAX so `base + offset` never overflows.
        if h.base > MAX_POSITION {
            return Err("segment base position out of range");
        }
        Ok(h)
    }
}

/// True if any 512-byte sector overlapping `[from, to)` of `seg` is entirely zero: the
/// signature of a write that never reached the disk (etcd's torn-write rule).
pub fn overlaps_zero_sector(seg: &[u8], from: usize, to: usize) -> bool {
    const SECTOR: usize = 512;
    let to = to.min(seg.len());
    if from >= to {
        return false;
    }
    let mut s = from / SECTOR * SECTOR;
    while s < to {
        let e = (s + SECTOR).min(seg.len());
        if seg[s..e].iter().all(|&b| b == 0) {
            return true;
        }
        s += SECTOR;
    }
    false
}

/// Encodes a complete event frame into `out` (used by tests, fuzzing and recovery tooling;
/// the live path writes in place through `raw`).
pub fn encode_event(out: &mut Vec<u8>, position: u64, seq: u64, kind: u16, payload: &[u8]) {
    let len = event_frame_len(payload.len());
    let word = event_word(len as u32, kind);
    let start = out.len();
    out.resize(start + len, 0);
    let f = &mut out[start..];
    f[..8].copy_from_slice(&word.to_le_bytes());
    f[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    f[16..24].copy_from_slice(&position.to_le_bytes());
    f[24..24 + payload.len()].copy_from_slice(payload);
    let crc = event_crc(
        word,
        position,
        seq,
        &f[12..EVENT_HEADER_LEN + payload.len()],
    );
    f[8..12].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_crc_parts_equals_the_crc_over_the_frame_bytes() {
        let payload: Vec<u8> = (0..131u32).map(|i| (i * 7) as u8).collect();
        let (word, position, seq) = (
            event_word(event_frame_len(payload.len()) as u32, 3),
            4096u64,
            9u64,
        );
        let mut after = Vec::new();
        after.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        after.extend_from_slice(&position.to_le_bytes());
        after.extend_from_slice(&payload);
        assert_eq!(
            event_crc_parts(word, position, seq, &payload),
            event_crc(word, position, seq, &after)
        );
        assert_ne!(
            event_crc_parts(word, position + 16, seq, &payload),
            event_crc(word, position, seq, &after)
        );
    }

    fn segment_with(frames: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let hdr = SegmentHeader {
            seq: 3,
            base: 4096,
            size: 4096,
        };
        let mut seg = hdr.encode().to_vec();
        let mut offs = vec![];
        for p in frames {
            offs.push(seg.len());
            let pos = hdr.base + seg.len() as u64;
            encode_event(&mut seg, pos, 3, 7, p);
        }
        seg.resize(4096, 0);
        (seg, offs)
    }

    #[test]
    fn event_round_trips_and_checks_position() {
        let (seg, offs) = segment_with(&[b"hello", b""]);
        match decode(&seg, offs[0], 4096, 3) {
            Decoded::Event {
                kind,
                rv,
                payload_at,
                payload_len,
                len,
            } => {
                assert_eq!((kind, rv, len), (7, 4096 + 64, 32));
                assert_eq!(&seg[payload_at..payload_at + payload_len], b"hello");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(&seg, offs[1], 4096, 3),
            Decoded::Event { payload_len: 0, .. }
        ));
        // The same bytes in another segment or at another base never validate.
        assert!(matches!(
            decode(&seg, offs[0], 4096, 4),
            Decoded::Bad { .. }
        ));
        assert!(matches!(
            decode(&seg, offs[0], 8192, 3),
            Decoded::Bad { .. }
        ));
        assert_eq!(decode(&seg, 2048, 4096, 3), Decoded::Free);
    }

    #[test]
    fn every_single_bit_flip_in_an_event_is_detected() {
        let (seg, offs) = segment_with(&[b"payload-bytes"]);
        let len = event_frame_len(13);
        for byte in offs[0]..offs[0] + EVENT_HEADER_LEN + 13 {
            for bit in 0..8 {
                let mut s = seg.clone();
                s[byte] ^= 1 << bit;
                let d = decode(&s, offs[0], 4096, 3);
                assert!(
                    !matches!(d, Decoded::Event { .. } | Decoded::Padding { .. }),
                    "flip at {byte}:{bit} decoded as {d:?}"
                );
            }
        }
        assert_eq!(len, 48);
    }

    #[test]
    fn padding_is_checked_and_bounded() {
        let mut seg = vec![0u8; 4096];
        let w = padding_word(4096 - 64, 64, 0);
        seg[64..72].copy_from_slice(&w.to_le_bytes());
        assert_eq!(decode(&seg, 64, 0, 0), Decoded::Padding { len: 4096 - 64 });
        assert!(matches!(decode(&seg, 64, 0, 1), Decoded::Bad { .. }));
        let long = padding_word(4096, 64, 0);
        seg[64..72].copy_from_slice(&long.to_le_bytes());
        assert!(
            matches!(decode(&seg, 64, 0, 0), Decoded::Bad { .. }),
            "padding past the end"
        );
    }

    #[test]
    fn garbage_lengths_never_read_out_of_bounds() {
        let mut seg = vec![0u8; 256];
        seg[0..8].copy_from_slice(&event_word(!15, 1).to_le_bytes());
        assert!(matches!(decode(&seg, 0, 0, 0), Decoded::Bad { .. }));
        assert!(matches!(decode(&seg, 252, 0, 0), Decoded::Bad { .. }));
        seg[0..8].copy_from_slice(&claimed_word(64).to_le_bytes());
        assert_eq!(decode(&seg, 0, 0, 0), Decoded::Unpublished);
    }

    #[test]
    fn publish_word_types_are_far_apart() {
        let types = [
            TYPE_FREE,
            TYPE_CLAIMED,
            TYPE_EVENT,
            TYPE_PADDING,
            TYPE_POISON,
        ];
        for (i, a) in types.iter().enumerate() {
            for b in &types[i + 1..] {
                assert!((a ^ b).count_ones() >= 4, "{a:#x} vs {b:#x}");
            }
        }
    }

    #[test]
    fn segment_header_round_trip_and_rejects_damage() {
        let h = SegmentHeader {
            seq: 9,
            base: 1 << 20,
            size: 1 << 16,
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        for i in 0..44 {
            let mut b = bytes;
            b[i] ^= 0x10;
            assert!(SegmentHeader::decode(&b).is_err(), "flip at {i}");
        }
        assert!(SegmentHeader::decode(&[0u8; 64]).is_err());
        assert!(SegmentHeader::decode(&bytes[..30]).is_err());
    }

    #[test]
    fn zero_sector_rule() {
        let mut seg = vec![1u8; 2048];
        assert!(!overlaps_zero_sector(&seg, 0, 2048));
        seg[1024..1536].fill(0);
        assert!(overlaps_zero_sector(&seg, 1000, 1100));
        assert!(!overlaps_zero_sector(&seg, 0, 1000));
    }
}
