//! Stored versions, many to a redb value: the `chunks` table (schema 3).
//!
//! An apply batch writes its versions as one value, a chunk, keyed by the
//! revision of its last version, rather than one value per version. A redb
//! insert costs about the same whatever the value's size (a B-tree descent,
//! page copies, cache bookkeeping), so this turns a batch's many inserts
//! into one. Measured on the 2-core development machine with
//! `cargo run --release -p concord-mvcc --example apply_cost` (200,000
//! 256-byte puts over 10,000 keys, batches of 64): 222k puts/s with one
//! value per version, 448k with chunks, and reopening (the index rebuild)
//! 151 -> 85 ms.
//!
//! ```text
//! chunk = u32 count
//!         count x { i64 main, u32 sub, u32 end }    directory, ascending revision
//!         payload                                   the records, concatenated
//! ```
//! (little-endian; a record is `schema.rs`'s `Record` encoding; `end` is the
//! offset just past the record in the payload, so record `i` spans
//! `end[i-1]..end[i]`, with `end[-1] = 0`).
//!
//! Invariants (checked by every parse and scan, and so by
//! `StoreReader::verify`):
//! 1. A chunk is non-empty, its directory strictly ascends, and its key is
//!    its last revision.
//! 2. Chunks do not overlap: every version of a chunk is above every
//!    version of the chunk before it. So the chunk that holds revision `r`,
//!    if one does, is the first whose key is `>= r`.
//! 3. Versions are immutable: a chunk changes only when compaction takes
//!    versions out of it (it is rewritten under the key of its new last
//!    version, or removed if none is left).
//!
//! Parsing is a gateway from disk: every length and offset is checked and a
//! bad chunk is [`MvccError::Corrupt`], never a panic.

use redb::{ReadableTable, Table, TableDefinition};

use crate::error::MvccError;
use crate::schema::RevKey;

/// Every retained version, in chunks keyed by their last revision.
pub(crate) const CHUNKS: TableDefinition<RevKey, &[u8]> = TableDefinition::new("chunks");

/// Largest chunk payload, unless the chunk holds a single version: a read of
/// one version pulls its whole chunk into redb's page cache, so chunks stay
/// small enough for a cold read to cost about as much as a few leaf pages.
/// An apply batch under load is tens of puts (~10-20 KiB at 256-byte
/// values); larger batches are split.
pub(crate) const CHUNK_BYTES_MAX: usize = 64 << 10;

/// Most versions in one chunk (bounds the directory a lookup searches).
pub(crate) const CHUNK_RECORDS_MAX: usize = 512;

/// Bytes of the count before the directory.
const COUNT_LEN: usize = 4;
/// Bytes of one directory entry: main, sub, end.
const ENTRY_LEN: usize = 8 + 4 + 4;

/// A parsed chunk, borrowing the stored bytes.
pub(crate) struct ChunkView<'a> {
    key: RevKey,
    directory: &'a [u8],
    payload: &'a [u8],
}

impl<'a> ChunkView<'a> {
    /// Parses the chunk stored under `key` (checks the framing and
    /// invariant 1's key; the directory's order is checked by `iter`).
    pub fn parse(key: RevKey, bytes: &'a [u8]) -> Result<ChunkView<'a>, MvccError> {
        let corrupt = |what: &str| {
            MvccError::Corrupt(format!(
                "chunk {}.{} of {} bytes: {what}",
                key.0,
                key.1,
                bytes.len()
            ))
        };
        let Some(count) = bytes.get(..COUNT_LEN) else {
            return Err(corrupt("no count"));
        };
        let count = u32::from_le_bytes(count.try_into().expect("4-byte slice")) as usize;
        if count == 0 || count > CHUNK_RECORDS_MAX {
            return Err(corrupt(&format!("{count} versions")));
        }
        let directory_end = COUNT_LEN + count * ENTRY_LEN;
        if bytes.len() < directory_end {
            return Err(corrupt(&format!("directory of {count} cut short")));
        }
        let view = ChunkView {
            key,
            directory: &bytes[COUNT_LEN..directory_end],
            payload: &bytes[directory_end..],
        };
        let (last, end) = view.entry(count - 1);
        if last != key {
            return Err(corrupt(&format!("last version {}.{}", last.0, last.1)));
        }
        if end as usize != view.payload.len() {
            return Err(corrupt(&format!("payload ends at {end}")));
        }
        Ok(view)
    }

    /// Number of versions.
    pub fn len(&self) -> usize {
        self.directory.len() / ENTRY_LEN
    }

    fn entry(&self, i: usize) -> (RevKey, u32) {
        let e = &self.directory[i * ENTRY_LEN..(i + 1) * ENTRY_LEN];
        let main = i64::from_le_bytes(e[..8].try_into().expect("8-byte slice"));
        let sub = u32::from_le_bytes(e[8..12].try_into().expect("4-byte slice"));
        let end = u32::from_le_bytes(e[12..16].try_into().expect("4-byte slice"));
        ((main, sub), end)
    }

    /// The `i`th version's revision and record bytes.
    fn record(&self, i: usize) -> Result<(RevKey, &'a [u8]), MvccError> {
        let start = if i == 0 { 0 } else { self.entry(i - 1).1 } as usize;
        let (at, end) = self.entry(i);
        let end = end as usize;
        match self.payload.get(start..end) {
            Some(bytes) => Ok((at, bytes)),
            None => Err(MvccError::Corrupt(format!(
                "chunk {}.{}: version {}.{} spans {start}..{end} of {}",
                self.key.0,
                self.key.1,
                at.0,
                at.1,
                self.payload.len()
            ))),
        }
    }

    /// The record at `at`, if this chunk holds it.
    pub fn find(&self, at: RevKey) -> Result<Option<&'a [u8]>, MvccError> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid).0.cmp(&at) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(self.record(mid)?.1)),
            }
        }
        Ok(None)
    }

    /// Every version, ascending; a directory out of order is corruption.
    pub fn iter(&self) -> impl Iterator<Item = Result<(RevKey, &'a [u8]), MvccError>> + '_ {
        (0..self.len()).map(move |i| {
            let (at, bytes) = self.record(i)?;
            if i > 0 && self.entry(i - 1).0 >= at {
                return Err(MvccError::Corrupt(format!(
                    "chunk {}.{}: directory out of order at {}.{}",
                    self.key.0, self.key.1, at.0, at.1
                )));
            }
            Ok((at, bytes))
        })
    }
}

/// Encodes `records` (ascending, at least one) as one chunk into `out`.
fn encode<B: AsRef<[u8]>>(records: &[(RevKey, B)], out: &mut Vec<u8>) {
    out.clear();
    let payload: usize = records.iter().map(|(_, b)| b.as_ref().len()).sum();
    out.reserve(COUNT_LEN + records.len() * ENTRY_LEN + payload);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    let mut end = 0u32;
    for ((main, sub), bytes) in records {
        end += bytes.as_ref().len() as u32;
        out.extend_from_slice(&main.to_le_bytes());
        out.extend_from_slice(&sub.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    for (_, bytes) in records {
        out.extend_from_slice(bytes.as_ref());
    }
}

/// How many of `records` (non-empty) the next chunk takes: as many as fit
/// the limits, at least one.
fn next_chunk_len<B: AsRef<[u8]>>(records: &[(RevKey, B)]) -> usize {
    let mut bytes = 0usize;
    let mut n = 0;
    for (_, b) in records.iter().take(CHUNK_RECORDS_MAX) {
        bytes += b.as_ref().len();
        if n > 0 && bytes > CHUNK_BYTES_MAX {
            break;
        }
        n += 1;
    }
    n
}

/// Stores `records` (ascending, all above every stored version) as one or
/// more chunks. `buf` is scratch space, reused across calls.
pub(crate) fn append<B: AsRef<[u8]>>(
    table: &mut Table<'_, RevKey, &'static [u8]>,
    mut records: &[(RevKey, B)],
    buf: &mut Vec<u8>,
) -> Result<(), MvccError> {
    while !records.is_empty() {
        let n = next_chunk_len(records);
        let (chunk, rest) = records.split_at(n);
        encode(chunk, buf);
        table.insert(chunk[n - 1].0, buf.as_slice())?;
        records = rest;
    }
    Ok(())
}

/// Versions on their way into chunks, one at a time (restore, upgrade):
/// stored whenever a chunk's worth is held, the rest by [`Appender::finish`].
#[derive(Default)]
pub(crate) struct Appender {
    held: Vec<(RevKey, Vec<u8>)>,
    held_bytes: usize,
    buf: Vec<u8>,
}

impl Appender {
    /// Adds the version at `at` (above every version added or stored).
    pub fn push(
        &mut self,
        table: &mut Table<'_, RevKey, &'static [u8]>,
        at: RevKey,
        bytes: Vec<u8>,
    ) -> Result<(), MvccError> {
        self.held_bytes += bytes.len();
        self.held.push((at, bytes));
        if self.held_bytes >= CHUNK_BYTES_MAX || self.held.len() >= CHUNK_RECORDS_MAX {
            append(table, &self.held, &mut self.buf)?;
            self.held.clear();
            self.held_bytes = 0;
        }
        Ok(())
    }

    /// Stores what is held.
    pub fn finish(mut self, table: &mut Table<'_, RevKey, &'static [u8]>) -> Result<(), MvccError> {
        append(table, &self.held, &mut self.buf)
    }
}

/// Calls `f` with the record stored at `at` (`None` if no chunk holds it).
pub(crate) fn get<R>(
    table: &impl ReadableTable<RevKey, &'static [u8]>,
    at: RevKey,
    f: impl FnOnce(Option<&[u8]>) -> Result<R, MvccError>,
) -> Result<R, MvccError> {
    // Invariant 2: the only chunk that can hold `at`.
    let Some(entry) = table.range::<RevKey>(at..)?.next() else {
        return f(None);
    };
    let (key, value) = entry?;
    let chunk = ChunkView::parse(key.value(), value.value())?;
    f(chunk.find(at)?)
}

/// Calls `f(revision, bytes)` for every stored version in `from..=upto`,
/// ascending, until it returns false. Returns the last version visited
/// (whether or not `f` stopped there) and whether `f` stopped.
pub(crate) fn scan(
    table: &impl ReadableTable<RevKey, &'static [u8]>,
    from: RevKey,
    upto: RevKey,
    f: &mut crate::read::RecordVisitor<'_>,
) -> Result<(Option<RevKey>, bool), MvccError> {
    let mut last: Option<RevKey> = None;
    // Every version visited or skipped, so that a chunk beginning at or
    // below the one before it ends is caught (invariant 2).
    let mut previous: Option<RevKey> = None;
    for entry in table.range::<RevKey>(from..)? {
        let (key, value) = entry?;
        let chunk = ChunkView::parse(key.value(), value.value())?;
        for record in chunk.iter() {
            let (at, bytes) = record?;
            if previous.is_some_and(|p| at <= p) {
                return Err(MvccError::Corrupt(format!(
                    "chunk {}.{} overlaps the one before it",
                    chunk.key.0, chunk.key.1
                )));
            }
            previous = Some(at);
            if at < from {
                continue;
            }
            if at > upto {
                return Ok((last, false));
            }
            last = Some(at);
            if !f(at, bytes)? {
                return Ok((last, true));
            }
        }
    }
    Ok((last, false))
}

/// Removes the versions `victims` (ascending; those not stored are
/// skipped), rewriting each chunk they are in (invariant 3).
pub(crate) fn remove(
    table: &mut Table<'_, RevKey, &'static [u8]>,
    victims: &[RevKey],
    buf: &mut Vec<u8>,
) -> Result<(), MvccError> {
    let mut i = 0;
    while i < victims.len() {
        // The chunk that may hold victims[i], copied out so that the table
        // can change.
        let (key, records) = {
            let Some(entry) = table.range::<RevKey>(victims[i]..)?.next() else {
                return Ok(());
            };
            let (key, value) = entry?;
            let chunk = ChunkView::parse(key.value(), value.value())?;
            let records = chunk
                .iter()
                .map(|r| r.map(|(at, bytes)| (at, bytes.to_vec())))
                .collect::<Result<Vec<_>, _>>()?;
            (key.value(), records)
        };
        let end = i + victims[i..].partition_point(|v| *v <= key);
        let mine = &victims[i..end];
        let kept: Vec<(RevKey, Vec<u8>)> = records
            .iter()
            .filter(|(at, _)| mine.binary_search(at).is_err())
            .cloned()
            .collect();
        if kept.len() != records.len() {
            table.remove(key)?;
            if !kept.is_empty() {
                encode(&kept, buf);
                table.insert(kept[kept.len() - 1].0, buf.as_slice())?;
            }
        }
        i = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;

    fn rec(main: i64, sub: u32, len: usize) -> (RevKey, Vec<u8>) {
        ((main, sub), vec![main as u8; len])
    }

    fn with_table(f: impl FnOnce(&mut Table<'_, RevKey, &'static [u8]>)) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("c.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(CHUNKS).unwrap();
            f(&mut table);
        }
        txn.commit().unwrap();
    }

    fn all(table: &Table<'_, RevKey, &'static [u8]>) -> Vec<RevKey> {
        let mut out = Vec::new();
        scan(table, (0, 0), (i64::MAX, u32::MAX), &mut |at, _| {
            out.push(at);
            Ok(true)
        })
        .unwrap();
        out
    }

    #[test]
    fn lookups_scans_and_removal_across_chunks() {
        with_table(|t| {
            let mut buf = Vec::new();
            append(t, &[rec(2, 0, 3), rec(2, 1, 0), rec(3, 0, 5)], &mut buf).unwrap();
            append(t, &[rec(5, 0, 1)], &mut buf).unwrap();
            append(t, &[rec(7, 0, 2), rec(7, 1, 2)], &mut buf).unwrap();
            assert_eq!(t.len().unwrap(), 3);
            let got = |t: &Table<'_, RevKey, &'static [u8]>, at| {
                get(t, at, |b| Ok(b.map(<[u8]>::to_vec))).unwrap()
            };
            assert_eq!(got(t, (2, 0)), Some(vec![2; 3]));
            assert_eq!(got(t, (2, 1)), Some(vec![]));
            assert_eq!(got(t, (3, 0)), Some(vec![3; 5]));
            assert_eq!(got(t, (7, 1)), Some(vec![7; 2]));
            for absent in [(1, 0), (2, 2), (4, 0), (6, 0), (8, 0)] {
                assert_eq!(got(t, absent), None, "{absent:?}");
            }
            let mut seen = Vec::new();
            let (last, stopped) = scan(t, (2, 1), (7, 0), &mut |at, _| {
                seen.push(at);
                Ok(true)
            })
            .unwrap();
            assert_eq!(seen, [(2, 1), (3, 0), (5, 0), (7, 0)]);
            assert_eq!((last, stopped), (Some((7, 0)), false));
            let (last, stopped) = scan(t, (0, 0), (9, 0), &mut |at, _| Ok(at < (3, 0))).unwrap();
            assert_eq!((last, stopped), (Some((3, 0)), true));

            // The last version of a chunk, a middle one, a whole chunk, and
            // absent ones.
            remove(
                t,
                &[(1, 0), (2, 1), (3, 0), (4, 0), (5, 0), (9, 0)],
                &mut buf,
            )
            .unwrap();
            assert_eq!(all(t), [(2, 0), (7, 0), (7, 1)]);
            assert_eq!(t.len().unwrap(), 2, "the emptied chunk is gone");
            assert_eq!(got(t, (2, 0)), Some(vec![2; 3]), "rekeyed under 2.0");
            assert!(t.get((2, 0)).unwrap().is_some());
        });
    }

    #[test]
    fn large_batches_split_at_the_limits() {
        with_table(|t| {
            let mut buf = Vec::new();
            let many: Vec<_> = (0..CHUNK_RECORDS_MAX as i64 + 10)
                .map(|m| rec(m + 2, 0, 1))
                .collect();
            append(t, &many, &mut buf).unwrap();
            assert_eq!(t.len().unwrap(), 2);
            let big = CHUNK_BYTES_MAX / 2 + 1;
            let first = many.len() as i64 + 2;
            append(
                t,
                &[
                    rec(first, 0, big),
                    rec(first + 1, 0, big),
                    rec(first + 2, 0, 3 * big),
                ],
                &mut buf,
            )
            .unwrap();
            assert_eq!(t.len().unwrap(), 5, "two halves do not fit one chunk");
            assert_eq!(all(t).len(), many.len() + 3);
            for (at, _) in &many {
                assert!(get(t, *at, |b| Ok(b.is_some())).unwrap());
            }
        });
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics() {
        let mut good = Vec::new();
        encode(&[rec(4, 0, 3), rec(4, 1, 2)], &mut good);
        assert_eq!(ChunkView::parse((4, 1), &good).unwrap().len(), 2);
        for len in 0..good.len() {
            assert!(ChunkView::parse((4, 1), &good[..len]).is_err(), "{len}");
        }
        assert!(ChunkView::parse((4, 0), &good).is_err(), "wrong key");
        let mut zero = good.clone();
        zero[..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(ChunkView::parse((4, 1), &zero).is_err());
        // The first record claims to end past the payload.
        let mut spans = good.clone();
        spans[COUNT_LEN + 12..COUNT_LEN + 16].copy_from_slice(&99u32.to_le_bytes());
        let view = ChunkView::parse((4, 1), &spans).unwrap();
        assert!(view.find((4, 0)).is_err());
        assert!(view.iter().any(|r| r.is_err()));
        // Out of order.
        let mut unordered = Vec::new();
        encode(&[rec(5, 0, 1), rec(4, 0, 1), rec(6, 0, 1)], &mut unordered);
        let view = ChunkView::parse((6, 0), &unordered).unwrap();
        assert!(view.iter().any(|r| r.is_err()));
    }
}
