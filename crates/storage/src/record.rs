//! The framing of write-ahead-log records and the codec of their payloads.
//!
//! A record on disk (all integers little-endian):
//!
//! ```text
//!  0        4          8        12     13
//!  +--------+----------+--------+------+------------------+
//!  | len:u32| lcrc:u32 | crc:u32| type | payload          |
//!  +--------+----------+--------+------+------------------+
//!  len  = bytes of type + payload (the "body"), 1 ..= RECORD_BYTES_MAX
//!  lcrc = crc32c(len as 4 LE bytes)
//!  crc  = crc32c(body)
//! ```
//!
//! Payloads by type:
//!
//! ```text
//!  1 segment header: magic "CNCDWAL\0" | version:u32 | seq:u64 | first_index:u64
//!  2 entry:          index:u64 | term:u64 | kind:u8 (1 normal, 2 conf change) | data
//!  3 log reset:      index:u64 | term:u64     (the log restarts after a snapshot)
//! ```
//!
//! Invariants:
//! 1. The length is trusted only after `lcrc` matches. Without that check a
//!    bit flip in the length of a record in the middle of the newest segment
//!    could make it look like a torn tail reaching past the end of the file,
//!    and recovery would cut acknowledged records after it without a word.
//! 2. A body whose checksum matches but does not parse is corruption (or a
//!    newer format), never a torn write: a torn write cannot produce a
//!    matching checksum except by chance (2^-32).
//! 3. Decoding never panics and never allocates by a length read from disk:
//!    lengths are bounded by [`RECORD_BYTES_MAX`] and by the bytes present.
//! 4. Encoding appends to a caller-owned buffer and allocates nothing per
//!    entry beyond that buffer's growth.

use crate::fsutil::Reader;
use concord_raft::{Entry, EntryKind, LogIndex, Term};

/// Bytes of the fixed record header (length, length checksum, body checksum).
pub const RECORD_HEADER_BYTES: usize = 12;

/// Largest record body this crate writes or reads. Lengths above it from
/// disk are corruption, so a damaged length can never make recovery allocate
/// gigabytes. 64 MiB is far above etcd's 1.5 MiB request limit (DESIGN.md
/// rule 4), so no legitimate entry comes near it.
pub const RECORD_BYTES_MAX: usize = 64 << 20;

/// Bytes an entry record adds to its data: header, type, index, term, kind.
pub const ENTRY_RECORD_OVERHEAD_BYTES: usize = RECORD_HEADER_BYTES + 1 + 8 + 8 + 1;

/// Largest entry data that fits in one record.
pub const ENTRY_DATA_BYTES_MAX: usize =
    RECORD_BYTES_MAX - (ENTRY_RECORD_OVERHEAD_BYTES - RECORD_HEADER_BYTES);

/// Bytes of a segment-header record (the first record of every segment).
pub const SEGMENT_HEADER_RECORD_BYTES: usize = RECORD_HEADER_BYTES + 1 + 8 + 4 + 8 + 8;

/// Identifies a segment file; checked before anything else in it is trusted.
const SEGMENT_MAGIC: &[u8; 8] = b"CNCDWAL\0";

/// Version of the record format; bumped on any incompatible change.
pub(crate) const WAL_FORMAT_VERSION: u32 = 1;

// The length field is a u32.
const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as usize);

const TYPE_SEGMENT_HEADER: u8 = 1;
const TYPE_ENTRY: u8 = 2;
const TYPE_RESET: u8 = 3;

const KIND_NORMAL: u8 = 1;
const KIND_CONF_CHANGE: u8 = 2;

/// A decoded record body, borrowing entry data from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// First record of every segment.
    SegmentHeader {
        /// Sequence number of the segment (matches its file name).
        seq: u64,
        /// Index the log was at when the segment was started (matches its name).
        first_index: LogIndex,
    },
    /// One Raft entry. A record at index `i` replaces every entry at `i` and
    /// beyond written before it (log conflict, Raft paper section 5.3).
    Entry {
        /// Entry index.
        index: LogIndex,
        /// Entry term.
        term: Term,
        /// Entry kind.
        kind: EntryKind,
        /// Entry data.
        data: &'a [u8],
    },
    /// The log was discarded and restarts after a snapshot at `index`
    /// (Raft paper figure 13, step 7).
    Reset {
        /// Snapshot index the log now follows.
        index: LogIndex,
        /// Snapshot term.
        term: Term,
    },
}

/// What the bytes at some offset hold, as far as framing is concerned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A complete record whose checksums match; `len` is its size on disk.
    Valid { body: &'a [u8], len: usize },
    /// The bytes end before the record does (and whatever header is there
    /// checks out): what a write interrupted by a crash leaves.
    Truncated,
    /// The header is damaged (length checksum mismatch or length out of
    /// range), so where the record ends is unknown.
    BadHeader(&'static str),
    /// The header is intact but the body's checksum does not match; the
    /// record would be `len` bytes long.
    BadChecksum { len: usize },
}

/// Frames the record starting at `buf[0]`.
pub(crate) fn read_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < RECORD_HEADER_BYTES {
        return Frame::Truncated;
    }
    let mut r = Reader::new(buf);
    let (Some(len_bytes), Some(lcrc), Some(crc)) = (r.bytes(4), r.u32(), r.u32()) else {
        return Frame::Truncated;
    };
    if crc32c::crc32c(len_bytes) != lcrc {
        return Frame::BadHeader("record length checksum mismatch");
    }
    let mut a = [0u8; 4];
    a.copy_from_slice(len_bytes);
    let body_len = u32::from_le_bytes(a) as usize;
    if body_len == 0 {
        return Frame::BadHeader("empty record body");
    }
    if body_len > RECORD_BYTES_MAX {
        return Frame::BadHeader("record length over RECORD_BYTES_MAX");
    }
    let Some(body) = r.bytes(body_len) else {
        return Frame::Truncated;
    };
    if crc32c::crc32c(body) != crc {
        return Frame::BadChecksum {
            len: RECORD_HEADER_BYTES + body_len,
        };
    }
    Frame::Valid {
        body,
        len: RECORD_HEADER_BYTES + body_len,
    }
}

/// Whether any complete, checksummed record starts at or after `from`.
/// Used only on the failure path, to tell a torn tail (nothing valid after
/// the damage) from damage in the middle of the log.
pub(crate) fn valid_record_after(buf: &[u8], from: usize) -> bool {
    let mut off = from;
    while off + RECORD_HEADER_BYTES <= buf.len() {
        // A record's length is at least 1, so one of its first four bytes
        // is not zero: a run of zeros (reserved space) is skipped whole.
        if buf[off..off + 4] == [0; 4] {
            match buf[off..].iter().position(|&b| b != 0) {
                Some(nonzero) => off = (off + nonzero).saturating_sub(3).max(off + 1),
                None => return false,
            }
            continue;
        }
        if matches!(read_frame(&buf[off..]), Frame::Valid { .. }) {
            return true;
        }
        off += 1;
    }
    false
}

/// Parses a body whose checksum matched.
pub(crate) fn parse_body(body: &[u8]) -> Result<Record<'_>, &'static str> {
    let mut r = Reader::new(body);
    let ty = r.u8().ok_or("empty record body")?;
    let rec = match ty {
        TYPE_SEGMENT_HEADER => {
            let magic = r.bytes(8).ok_or("segment header too short")?;
            if magic != SEGMENT_MAGIC {
                return Err("bad segment magic");
            }
            let version = r.u32().ok_or("segment header too short")?;
            if version != WAL_FORMAT_VERSION {
                return Err("unsupported WAL format version");
            }
            let seq = r.u64().ok_or("segment header too short")?;
            let first_index = LogIndex(r.u64().ok_or("segment header too short")?);
            Record::SegmentHeader { seq, first_index }
        }
        TYPE_ENTRY => {
            let index = LogIndex(r.u64().ok_or("entry record too short")?);
            let term = Term(r.u64().ok_or("entry record too short")?);
            let kind = match r.u8().ok_or("entry record too short")? {
                KIND_NORMAL => EntryKind::Normal,
                KIND_CONF_CHANGE => EntryKind::ConfChange,
                _ => return Err("unknown entry kind"),
            };
            if index.0 == 0 {
                return Err("entry at index 0");
            }
            let data = r.rest();
            Record::Entry {
                index,
                term,
                kind,
                data,
            }
        }
        TYPE_RESET => {
            let index = LogIndex(r.u64().ok_or("reset record too short")?);
            let term = Term(r.u64().ok_or("reset record too short")?);
            Record::Reset { index, term }
        }
        _ => return Err("unknown record type"),
    };
    if r.remaining() != 0 {
        return Err("trailing bytes in record");
    }
    Ok(rec)
}

/// Appends one framed record to `buf`; `fill` writes the body after the type
/// byte. Checksums are computed right after the body is written, while it is
/// still in cache.
fn encode_with(buf: &mut Vec<u8>, ty: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    buf.push(ty);
    fill(buf);
    let body = &buf[start + RECORD_HEADER_BYTES..];
    // Callers bound the body by RECORD_BYTES_MAX before encoding.
    assert!(body.len() <= RECORD_BYTES_MAX, "record body over the limit");
    let len = (body.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c(body).to_le_bytes();
    let lcrc = crc32c::crc32c(&len).to_le_bytes();
    buf[start..start + 4].copy_from_slice(&len);
    buf[start + 4..start + 8].copy_from_slice(&lcrc);
    buf[start + 8..start + 12].copy_from_slice(&crc);
    // Check what is about to go to disk by reading it back (debug builds and
    // tests only: the hot path pays nothing in release).
    debug_assert!(matches!(
        read_frame(&buf[start..]),
        Frame::Valid { body, .. } if parse_body(body).is_ok()
    ));
}

/// Appends an entry record. The caller has checked the data size against
/// [`ENTRY_DATA_BYTES_MAX`].
pub(crate) fn encode_entry(buf: &mut Vec<u8>, e: &Entry) {
    encode_with(buf, TYPE_ENTRY, |b| {
        b.extend_from_slice(&e.index.0.to_le_bytes());
        b.extend_from_slice(&e.term.0.to_le_bytes());
        b.push(match e.kind {
            EntryKind::Normal => KIND_NORMAL,
            EntryKind::ConfChange => KIND_CONF_CHANGE,
        });
        b.extend_from_slice(&e.data);
    });
}

/// Appends a log-reset record.
pub(crate) fn encode_reset(buf: &mut Vec<u8>, index: LogIndex, term: Term) {
    encode_with(buf, TYPE_RESET, |b| {
        b.extend_from_slice(&index.0.to_le_bytes());
        b.extend_from_slice(&term.0.to_le_bytes());
    });
}

/// Appends a segment-header record.
pub(crate) fn encode_segment_header(buf: &mut Vec<u8>, seq: u64, first_index: LogIndex) {
    encode_with(buf, TYPE_SEGMENT_HEADER, |b| {
        b.extend_from_slice(SEGMENT_MAGIC);
        b.extend_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&first_index.0.to_le_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn entry(index: u64, term: u64, data: &'static [u8]) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term(term),
            kind: EntryKind::Normal,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn sizes_match_the_documented_layout() {
        let mut b = Vec::new();
        encode_segment_header(&mut b, 3, LogIndex(9));
        assert_eq!(b.len(), SEGMENT_HEADER_RECORD_BYTES);
        b.clear();
        encode_entry(&mut b, &entry(1, 1, b"abc"));
        assert_eq!(b.len(), ENTRY_RECORD_OVERHEAD_BYTES + 3);
    }

    #[test]
    fn every_record_type_round_trips() {
        let mut b = Vec::new();
        encode_segment_header(&mut b, 7, LogIndex(42));
        encode_entry(
            &mut b,
            &Entry {
                kind: EntryKind::ConfChange,
                ..entry(5, 2, b"cc")
            },
        );
        encode_reset(&mut b, LogIndex(100), Term(4));
        let mut off = 0;
        let mut got = Vec::new();
        while off < b.len() {
            let Frame::Valid { body, len } = read_frame(&b[off..]) else {
                panic!("invalid frame at {off}");
            };
            got.push(parse_body(body).unwrap());
            off += len;
        }
        assert_eq!(
            got,
            vec![
                Record::SegmentHeader {
                    seq: 7,
                    first_index: LogIndex(42)
                },
                Record::Entry {
                    index: LogIndex(5),
                    term: Term(2),
                    kind: EntryKind::ConfChange,
                    data: b"cc"
                },
                Record::Reset {
                    index: LogIndex(100),
                    term: Term(4)
                },
            ]
        );
    }

    #[test]
    fn damaged_frames_are_classified() {
        let mut b = Vec::new();
        encode_entry(&mut b, &entry(1, 1, b"hello"));
        for cut in 0..b.len() {
            assert_eq!(read_frame(&b[..cut]), Frame::Truncated, "cut at {cut}");
        }
        let mut flipped = b.clone();
        flipped[0] ^= 1;
        assert!(matches!(read_frame(&flipped), Frame::BadHeader(_)));
        let mut flipped = b.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x80;
        assert_eq!(read_frame(&flipped), Frame::BadChecksum { len: b.len() });
        assert!(matches!(read_frame(&[0u8; 64]), Frame::BadHeader(_)));
    }

    #[test]
    fn absurd_lengths_are_refused_before_reading() {
        let len = (u32::MAX).to_le_bytes();
        let mut b = len.to_vec();
        b.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        assert!(matches!(read_frame(&b), Frame::BadHeader(_)));
    }

    /// Frames a body by hand, bypassing the encoders' read-back check.
    fn raw_frame(body: &[u8]) -> Vec<u8> {
        let len = (body.len() as u32).to_le_bytes();
        let mut b = len.to_vec();
        b.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
        b.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn valid_checksum_with_bad_payload_is_malformed() {
        let cases: [(&[u8], &str); 4] = [
            (b"\x09x", "unknown record type"),
            (&[TYPE_RESET, 1, 2, 3], "reset record too short"),
            (
                &[TYPE_SEGMENT_HEADER, b'X', 0, 0, 0, 0, 0, 0, 0],
                "bad segment magic",
            ),
            (
                &[
                    TYPE_ENTRY, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9,
                ],
                "unknown entry kind",
            ),
        ];
        for (body, why) in cases {
            let b = raw_frame(body);
            let Frame::Valid { body, .. } = read_frame(&b) else {
                panic!("{why}: not a valid frame")
            };
            assert_eq!(parse_body(body), Err(why));
        }
    }

    proptest! {
        /// Decoders never panic on arbitrary bytes (a stand-in for a fuzzer).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Frame::Valid { body, .. } = read_frame(&bytes) {
                let _ = parse_body(body);
            }
            let _ = valid_record_after(&bytes, 0);
        }

        #[test]
        fn entries_round_trip(index in 1u64.., term: u64, data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let e = Entry { index: LogIndex(index), term: Term(term), kind: EntryKind::Normal, data: Bytes::from(data) };
            let mut b = Vec::new();
            encode_entry(&mut b, &e);
            let Frame::Valid { body, len } = read_frame(&b) else { panic!() };
            prop_assert_eq!(len, b.len());
            let Record::Entry { index, term, kind, data } = parse_body(body).unwrap() else { panic!() };
            prop_assert_eq!((index, term, kind, data), (e.index, e.term, e.kind, &e.data[..]));
        }
    }
}
