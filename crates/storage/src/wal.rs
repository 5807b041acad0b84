//! The segmented write-ahead log: segment files, the buffered writer, and the
//! reading of one segment during recovery.
//!
//! A segment is a file `{seq:016x}-{first_index:016x}.wal` holding a
//! segment-header record followed by entry and log-reset records (see
//! [`crate::record`] for the framing). `seq` increases by one per segment,
//! so sorting names gives log order; `first_index` is the index of the first
//! entry written to it, for people and tools (the log itself is defined by
//! the records, since an overwrite may rewrite lower indexes).
//!
//! The newest segment is preallocated to the segment size (reserved blocks
//! that read as zeros), and records are written into that space in order:
//! syncing a write into reserved space is measurably cheaper than syncing
//! an append that grows the file (see [`fsutil::preallocate`]). Reserved
//! blocks are still marked unwritten, though, and the first write into one
//! makes the file system record the change with the next `fdatasync`, an
//! extra metadata write on the path of every acknowledged batch. So the
//! writer keeps a stretch of zeros written just ahead of its records
//! ([`ZERO_AHEAD_BYTES`]), refilled after a sync: the conversion is paid
//! once per stretch instead of once per batch.
//!
//! Invariants:
//! 1. Every segment file is created complete with its header and its
//!    reserved space, synced, by an atomic rename, so a segment that exists
//!    always has a valid header.
//! 2. A segment is synced, and cut to the bytes its records fill, before the
//!    next one is created. Hence only the newest segment can end in a torn
//!    record or in reserved zeros; anything but whole records in an older
//!    segment is corruption.
//! 3. Bytes reach the file in the order they were appended, so after a crash
//!    the file holds a prefix of what was appended (plus, at worst, garbage
//!    or zeros after it).
//! 4. Nothing appended is durable until [`Wal::sync`] returns; then all of it
//!    is, with one `fdatasync` (group commit).
//! 5. `segments` lists the files on disk, oldest first; the last one is the
//!    open `file`, and `max_index` of each is the highest index any record in
//!    it mentions, which is what compaction may drop it by.
//! 6. In the newest segment, zeros from some offset to the end of the file
//!    are the end of the log (reserved space not written yet), not a torn
//!    record: no record starts with a zero length. Recovery leaves them in
//!    place and writing resumes at that offset. The zeros written ahead of
//!    the records are such zeros: they are only ever written at or past the
//!    end of the records, so they never cover a record.

use crate::error::{Result, StorageError};
use crate::fsutil;
use crate::record::{self, Frame, Record, RECORD_BYTES_MAX, SEGMENT_HEADER_RECORD_BYTES};
use concord_raft::{Entry, LogIndex, Term};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Default size past which the log rolls to a new segment (etcd's default).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Largest segment size the options accept. Recovery reads a segment into
/// memory whole, so this bounds the memory recovery needs per segment.
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 30;

/// Largest segment file recovery will read. A segment rolls before an entry
/// once it is past its size, so it can exceed the limit by one record (and a
/// few tiny log-reset records); anything larger was not written by us.
pub(crate) const SEGMENT_FILE_BYTES_LIMIT: u64 = SEGMENT_BYTES_LIMIT + 2 * RECORD_BYTES_MAX as u64;

/// Default number of buffered bytes that triggers a write to the file before
/// `sync`. Bounds the buffer's memory while keeping the common case (a batch
/// of small entries) at one write per sync.
pub const WRITE_FLUSH_BYTES_DEFAULT: usize = 1 << 20;

/// How far ahead of its records the writer keeps the segment's space
/// written with zeros (refilled to this once less than half is left). Why
/// zeros: an `fdatasync` after a write into reserved but unwritten blocks
/// also writes the file's extent metadata, and one after a write into
/// blocks that already hold data does not. Measured on this project's ext4
/// (4,800-byte writes, one batch of 16 entries at 64 clients, each followed
/// by fdatasync): p50 0.25 ms into reserved space, 0.11 ms into zeroed
/// space (BENCHMARKS.md, session 10). Why this size: each refill adds its
/// bytes to the next sync's writeback (about 0.1 ms per 128 KiB here), so
/// a small stretch keeps that stall short, while the metadata write it
/// saves is paid once per stretch instead of once per batch.
pub const ZERO_AHEAD_BYTES: u64 = 256 << 10;

/// The size of each write of zeros: one page. Why not one write per refill:
/// the kernel caches a write in folios as large as the write (ext4's large
/// folios), and a later small record write into one dirties it whole, so
/// every sync wrote back up to the whole 128 KiB again (measured: 53 KB
/// written per put at one client instead of 5 KB). Page-sized writes keep
/// the cache in pages, and a sync writes back what the records touched.
const ZERO_PIECE_BYTES: u64 = 4096;

/// Zeros for [`Wal::zero_ahead`], shared so that refilling allocates nothing.
static ZEROS: [u8; ZERO_PIECE_BYTES as usize] = [0; ZERO_PIECE_BYTES as usize];

// The default must be a value the options accept.
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_LIMIT);

const SUFFIX: &str = ".wal";

/// One segment file.
#[derive(Clone, Debug)]
pub(crate) struct SegmentInfo {
    pub(crate) seq: u64,
    pub(crate) first_index: LogIndex,
    pub(crate) path: PathBuf,
    /// Highest index of any entry or reset record in the segment.
    pub(crate) max_index: Option<LogIndex>,
}

/// File name of segment `seq` whose first entry is `first_index`.
pub(crate) fn file_name(seq: u64, first_index: LogIndex) -> String {
    format!("{seq:016x}-{:016x}{SUFFIX}", first_index.0)
}

/// Whether a directory entry name claims to be a segment.
pub(crate) fn is_segment_name(name: &str) -> bool {
    name.ends_with(SUFFIX)
}

/// Parses a segment file name; `None` if it is malformed.
pub(crate) fn parse_name(name: &str) -> Option<(u64, LogIndex)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (s, i) = stem.split_once('-')?;
    if s.len() != 16 || i.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(s, 16).ok()?,
        LogIndex(u64::from_str_radix(i, 16).ok()?),
    ))
}

/// A torn final record that recovery cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TornTail {
    /// Where the valid records end and the file was cut.
    pub(crate) offset: u64,
    /// How many bytes were dropped.
    pub(crate) bytes_dropped: u64,
}

/// How one segment's records end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegmentEnd {
    /// Whole records fill the segment up to `valid_len`, and only zeros
    /// (reserved space, invariant 6) follow.
    Clean { valid_len: u64 },
    /// The newest segment ends in a torn record, to be cut.
    Torn(TornTail),
    /// The records end inside bytes that were not read (a zero tail the
    /// file system reported as a hole), where they might go on: the caller
    /// must read the whole file and scan it again. Only returned when
    /// `zeros_after` was positive; nothing after the reason was visited.
    NeedsWholeFile,
}

/// Reads the records of one segment in order, passing each to `visit` with
/// its offset, and says how they end. The segment's content is `data`
/// followed by `zeros_after` zero bytes (see
/// [`fsutil::read_skipping_zero_tail`]).
///
/// Only the newest segment (`is_last`) may end in reserved zeros
/// (invariant 6) or in a torn record: a record cut short by the end of the
/// file, or a damaged record after which no valid record can be found
/// anywhere in the file. Any other damage is [`StorageError::Corrupt`]
/// naming the record's offset (invariant 2).
///
/// The rule errs towards refusing: should a crash leave a hole (zeros)
/// followed by later, intact records of the same unsynced write, or garbage
/// that happens to contain a whole valid record, recovery refuses to start
/// rather than guess; cutting at the reported offset by hand is then safe if
/// nothing after it was acknowledged.
pub(crate) fn scan_segment(
    seg: &SegmentInfo,
    data: &[u8],
    zeros_after: u64,
    is_last: bool,
    mut visit: impl FnMut(Record<'_>, u64) -> Result<()>,
) -> Result<(SegmentEnd, Option<LogIndex>)> {
    let corrupt = |off: usize, why: &str| StorageError::corrupt(&seg.path, off as u64, why);
    let mut off = match read_frame_at(data, 0) {
        Frame::Valid { body, len } => match record::parse_body(body) {
            Ok(Record::SegmentHeader { seq, first_index })
                if (seq, first_index) == (seg.seq, seg.first_index) =>
            {
                len
            }
            Ok(Record::SegmentHeader { .. }) => {
                return Err(corrupt(0, "segment header does not match the file name"))
            }
            Ok(_) => return Err(corrupt(0, "segment does not start with a segment header")),
            Err(why) => return Err(corrupt(0, why)),
        },
        // Invariant 1: a segment's header is never torn.
        _ => return Err(corrupt(0, "damaged segment header")),
    };
    let mut max_index: Option<LogIndex> = None;
    loop {
        let frame = read_frame_at(data, off);
        if let Frame::Valid { body, len } = frame {
            let rec = record::parse_body(body).map_err(|why| corrupt(off, why))?;
            let index = match rec {
                Record::SegmentHeader { .. } => {
                    return Err(corrupt(off, "second segment header in one segment"))
                }
                Record::Entry { index, .. } | Record::Reset { index, .. } => index,
            };
            max_index = max_index.max(Some(index));
            visit(rec, off as u64)?;
            off += len;
            continue;
        }
        // No whole record at `off`. Zeros up to the end of the file (those
        // read and those not) are the end of the log in the newest segment.
        let rest = &data[off.min(data.len())..];
        let only_zeros = rest.iter().all(|&b| b == 0);
        if only_zeros && (is_last || (rest.is_empty() && zeros_after == 0)) {
            let valid_len = off as u64;
            return Ok((SegmentEnd::Clean { valid_len }, max_index));
        }
        if zeros_after > 0 {
            return Ok((SegmentEnd::NeedsWholeFile, max_index));
        }
        if only_zeros {
            return Err(corrupt(off, "zeros after the records of a sealed segment"));
        }
        let torn_unless_followed = |after: usize, why: &str| {
            if is_last && !record::valid_record_after(data, after) {
                Ok(())
            } else if is_last {
                Err(corrupt(
                    off,
                    &format!("{why}, and valid records follow, so it is not a torn write"),
                ))
            } else {
                Err(corrupt(off, &format!("{why} in a sealed segment")))
            }
        };
        match frame {
            Frame::Valid { .. } => unreachable!("handled above"),
            Frame::Truncated if is_last => {}
            Frame::Truncated => {
                return Err(corrupt(
                    off,
                    "record cut short by the end of a sealed segment",
                ))
            }
            Frame::BadHeader(why) => torn_unless_followed(off + 1, why)?,
            Frame::BadChecksum { len } => {
                torn_unless_followed(off + len, "record checksum mismatch")?
            }
        }
        let torn = TornTail {
            offset: off as u64,
            bytes_dropped: (data.len() - off) as u64,
        };
        return Ok((SegmentEnd::Torn(torn), max_index));
    }
}

fn read_frame_at(data: &[u8], off: usize) -> Frame<'_> {
    record::read_frame(data.get(off..).unwrap_or(&[]))
}

/// Sizes the writer works with (validated by the caller).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalLimits {
    pub(crate) segment_bytes_max: u64,
    pub(crate) write_flush_bytes: usize,
}

/// The writer of the newest segment, plus the list of older ones.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    limits: WalLimits,
    segments: Vec<SegmentInfo>,
    /// The newest segment, opened for writing at `file_len`.
    file: File,
    /// Bytes of records in `file`, not counting `buf`: where the next write
    /// goes.
    file_len: u64,
    /// The size of `file` on disk, reserved space included (at least
    /// `file_len`).
    file_size: u64,
    /// Where the zeros written ahead of the records end: bytes of `file`
    /// between `file_len` and this offset hold data (zeros) on disk, not
    /// just reserved space (see [`ZERO_AHEAD_BYTES`]). At most `file_size`;
    /// set to `file_size` after a failed write of zeros, so the refill is
    /// not retried on every sync (a hint for speed, never for recovery).
    zeroed_until: u64,
    /// Encoded records not yet written to `file`; reused across appends so
    /// the hot path does not allocate.
    buf: Vec<u8>,
    /// Bytes were written to `file` since its last fdatasync.
    unsynced: bool,
}

impl Wal {
    /// Starts a log in a directory that has no segments.
    pub(crate) fn create(dir: &Path, limits: WalLimits, first_index: LogIndex) -> Result<Wal> {
        let (file, file_size, seg) = create_segment(dir, limits, 0, first_index)?;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            limits,
            segments: vec![seg],
            file,
            file_len: SEGMENT_HEADER_RECORD_BYTES as u64,
            file_size,
            zeroed_until: SEGMENT_HEADER_RECORD_BYTES as u64,
            buf: Vec::with_capacity(limits.write_flush_bytes),
            unsynced: false,
        };
        wal.zero_ahead();
        Ok(wal)
    }

    /// Continues the log in recovered `segments` (oldest first), whose last
    /// one holds `last_len` bytes of records (its torn tail already cut),
    /// reserving its space again (the cut, or an earlier version of this
    /// crate, may have left it without).
    pub(crate) fn resume(
        dir: &Path,
        limits: WalLimits,
        segments: Vec<SegmentInfo>,
        last_len: u64,
    ) -> Result<Wal> {
        let last = segments.last().expect("resume without segments");
        let file = OpenOptions::new()
            .write(true)
            .open(&last.path)
            .map_err(|e| StorageError::io("open for writing", &last.path, e))?;
        fsutil::preallocate(&file, limits.segment_bytes_max);
        let file_size = file
            .metadata()
            .map_err(|e| StorageError::io("stat", &last.path, e))?
            .len();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            limits,
            segments,
            file,
            file_len: last_len,
            file_size,
            // What lies past the records is not known to be written (it may
            // be reserved space again), so zeroing starts over from them.
            zeroed_until: last_len,
            buf: Vec::with_capacity(limits.write_flush_bytes),
            unsynced: false,
        };
        wal.zero_ahead();
        Ok(wal)
    }

    /// The segment files, oldest first.
    pub(crate) fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    fn active(&mut self) -> &mut SegmentInfo {
        self.segments
            .last_mut()
            .expect("a WAL always has a segment")
    }

    /// Encodes `entries` after everything appended so far. The caller has
    /// validated them (contiguity, sizes).
    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            let size = self.file_len + self.buf.len() as u64;
            // Roll only a segment that holds records, so a tiny limit in tests
            // cannot make it roll forever.
            if size >= self.limits.segment_bytes_max && size > SEGMENT_HEADER_RECORD_BYTES as u64 {
                self.roll(e.index)?;
            }
            record::encode_entry(&mut self.buf, e);
            let seg = self.active();
            seg.max_index = seg.max_index.max(Some(e.index));
            if self.buf.len() >= self.limits.write_flush_bytes {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Records that the log restarts after a snapshot at `(index, term)`.
    pub(crate) fn append_reset(&mut self, index: LogIndex, term: Term) -> Result<()> {
        record::encode_reset(&mut self.buf, index, term);
        let seg = self.active();
        seg.max_index = seg.max_index.max(Some(index));
        if self.buf.len() >= self.limits.write_flush_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands buffered bytes to the kernel (one write), without syncing.
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = &self
            .segments
            .last()
            .expect("a WAL always has a segment")
            .path;
        self.file
            .write_all_at(&self.buf, self.file_len)
            .map_err(|e| StorageError::io("write", path, e))?;
        self.file_len += self.buf.len() as u64;
        self.file_size = self.file_size.max(self.file_len);
        self.zeroed_until = self.zeroed_until.max(self.file_len);
        self.unsynced = true;
        self.buf.clear();
        // One huge entry must not pin its buffer for the life of the process.
        if self.buf.capacity() > 4 * self.limits.write_flush_bytes {
            self.buf.shrink_to(self.limits.write_flush_bytes);
        }
        Ok(())
    }

    /// Makes everything appended so far durable: one write, one fdatasync.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.flush()?;
        if self.unsynced {
            let path = &self
                .segments
                .last()
                .expect("a WAL always has a segment")
                .path;
            // fdatasync: the file size is data for this purpose, and the
            // other metadata (times) is not worth a journal commit.
            self.file
                .sync_data()
                .map_err(|e| StorageError::io("fdatasync", path, e))?;
            self.unsynced = false;
            // After the sync, so the batch that was waiting for it is not
            // delayed by the refill; the next sync writes the zeros back.
            self.zero_ahead();
        }
        Ok(())
    }

    /// Keeps at least half of [`ZERO_AHEAD_BYTES`] of the reserved space
    /// past the records written with zeros, refilling it to the whole
    /// stretch (never past the reserved space, so the file never grows
    /// here). The zeros need no sync of their own: unwritten space reads as
    /// zeros too, so whether they reach the disk before a crash changes
    /// nothing (invariant 6). Best effort: if the write fails, records are
    /// written into reserved space as before, only with slower syncs, and
    /// a real problem (a failing disk) shows up on the records' own write.
    fn zero_ahead(&mut self) {
        let start = self.zeroed_until.max(self.file_len);
        if start >= self.file_len + ZERO_AHEAD_BYTES / 2 {
            return;
        }
        let end = (self.file_len + ZERO_AHEAD_BYTES).min(self.file_size);
        if end <= start {
            return;
        }
        // Not `unsynced`: the zeros need no sync, and the next sync of
        // records writes them back anyway (fdatasync flushes every dirty
        // page of the file).
        let mut at = start;
        while at < end {
            let piece_end = ((at / ZERO_PIECE_BYTES + 1) * ZERO_PIECE_BYTES).min(end);
            let zeros = &ZEROS[..(piece_end - at) as usize];
            if self.file.write_all_at(zeros, at).is_err() {
                // Do not retry on every sync: mark the stretch as done.
                self.zeroed_until = self.file_size;
                return;
            }
            at = piece_end;
            self.zeroed_until = at;
        }
    }

    /// Seals the active segment (durably, and cut to its records: invariant
    /// 2) and starts the next.
    fn roll(&mut self, first_index: LogIndex) -> Result<()> {
        self.sync()?;
        let active = self.segments.last().expect("a WAL always has a segment");
        if self.file_size > self.file_len {
            let path = &active.path;
            self.file
                .set_len(self.file_len)
                .map_err(|e| StorageError::io("truncate", path, e))?;
            // The size is what changed, so a full fsync.
            self.file
                .sync_all()
                .map_err(|e| StorageError::io("fsync", path, e))?;
            self.file_size = self.file_len;
        }
        let seq = active.seq + 1;
        let (file, file_size, seg) = create_segment(&self.dir, self.limits, seq, first_index)?;
        self.file = file;
        self.file_len = SEGMENT_HEADER_RECORD_BYTES as u64;
        self.file_size = file_size;
        self.zeroed_until = self.file_len;
        self.segments.push(seg);
        self.zero_ahead();
        Ok(())
    }

    /// Deletes the oldest segments whose records all lie at or below `upto`,
    /// never the active one. Returns how many were deleted.
    pub(crate) fn compact(&mut self, upto: LogIndex) -> Result<usize> {
        let sealed = self.segments.len() - 1;
        let n = self.segments[..sealed]
            .iter()
            .take_while(|s| s.max_index.is_none_or(|m| m <= upto))
            .count();
        // Oldest first, so a crash part-way leaves a log that still starts
        // with whole segments in order.
        for done in 0..n {
            let path = &self.segments[done].path;
            if let Err(e) = std::fs::remove_file(path) {
                let err = StorageError::io("remove", path, e);
                self.segments.drain(..done);
                return Err(err);
            }
        }
        self.segments.drain(..n);
        if n > 0 {
            fsutil::sync_dir(&self.dir)?;
        }
        Ok(n)
    }
}

/// Creates segment `seq` holding only its header and reserved space,
/// atomically (invariant 1), and opens it for writing. Returns the file, its
/// size on disk and its description.
fn create_segment(
    dir: &Path,
    limits: WalLimits,
    seq: u64,
    first_index: LogIndex,
) -> Result<(File, u64, SegmentInfo)> {
    let name = file_name(seq, first_index);
    let mut header = Vec::with_capacity(SEGMENT_HEADER_RECORD_BYTES);
    record::encode_segment_header(&mut header, seq, first_index);
    fsutil::atomic_write_reserving(dir, &name, &[&header], limits.segment_bytes_max)?;
    let path = dir.join(&name);
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("open for writing", &path, e))?;
    let file_size = file
        .metadata()
        .map_err(|e| StorageError::io("stat", &path, e))?
        .len();
    Ok((
        file,
        file_size,
        SegmentInfo {
            seq,
            first_index,
            path,
            max_index: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_log_order_and_parse_back() {
        let names: Vec<_> = [(9, 100), (10, 5), (0x100, 1)]
            .iter()
            .map(|&(s, i)| file_name(s, LogIndex(i)))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(parse_name(&names[1]), Some((10, LogIndex(5))));
        assert_eq!(parse_name("1-2.wal"), None);
        assert_eq!(parse_name("000000000000000g-0000000000000001.wal"), None);
    }
}
