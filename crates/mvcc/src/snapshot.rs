//! The snapshot stream: the whole state machine as bytes, for Raft
//! snapshots sent to a lagging member.
//!
//! ```text
//! "CONCORD-MVCC" u32:format   u64:applied_index i64:revision i64:compact_revision
//! { 0x01 i64:main u32:sub u32:record_len record }*        versions, revision order
//! { 0x02 i64:id i64:granted_ttl i64:remaining_ttl }*      leases, id order
//! 0x00                                                    end
//! u32:crc32c of every byte above
//! ```
//! (integers little-endian; `record` is `schema.rs`'s `Record` encoding,
//! which carries the key; the stream does not depend on how the file
//! groups versions into chunks). Format 2; format 1 (schema 1, versions in key
//! order) is refused. Only `chunks` and `leases` travel; `lease_keys` and the
//! key index are derived from them on restore.
//!
//! Invariants:
//! 1. Restore is the gateway from the network: it bounds every length before
//!    allocating, checks ordering and record contents, and verifies the
//!    checksum before the caller commits. A bad stream changes nothing.
//! 2. Writing reads one redb read transaction, so the stream is one
//!    consistent state, labelled with the applied index it covers. It
//!    streams: the writer sees the bytes through a small buffer as they
//!    are produced.

use std::io::{BufReader, BufWriter, Read, Write};

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::chunks::{Appender, CHUNKS};
use crate::error::MvccError;
use crate::index::{self, Keys};
use crate::pending::Pending;
use crate::read::ReaderRecords;
use crate::schema::{
    Record, ALL_TABLE_NAMES, LEASES, LEASE_KEYS, META, META_APPLIED_INDEX, META_COMPACT_REVISION,
    META_REVISION, META_SCHEMA, SCHEMA_VERSION,
};
use crate::store::read_meta;

/// Stream magic.
const MAGIC: &[u8; 12] = b"CONCORD-MVCC";
/// Stream format version.
const FORMAT_V2: u32 = 2;
const TAG_END: u8 = 0;
const TAG_VERSION: u8 = 1;
const TAG_LEASE: u8 = 2;
/// Largest key or record accepted on restore. Far above etcd's 1.5 MiB
/// request limit (even if raised), low enough that garbage cannot make us
/// allocate gigabytes.
const SNAPSHOT_FIELD_BYTES_MAX: u32 = 64 << 20;

/// What a snapshot stream describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The Raft index the state covers.
    pub applied_index: u64,
    /// The store revision.
    pub revision: i64,
    /// The compacted revision (-1 if never compacted).
    pub compact_revision: i64,
}

struct CrcWriter<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.inner.write_all(bytes)
    }
}

struct CrcReader<R> {
    inner: R,
    crc: u32,
}

impl<R: Read> CrcReader<R> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], MvccError> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(truncated)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf);
        Ok(buf)
    }
    fn u8(&mut self) -> Result<u8, MvccError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, MvccError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, MvccError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    fn blob(&mut self, buf: &mut Vec<u8>) -> Result<(), MvccError> {
        let len = self.u32()?;
        if len > SNAPSHOT_FIELD_BYTES_MAX {
            return Err(MvccError::Snapshot(format!("field of {len} bytes")));
        }
        buf.clear();
        buf.resize(len as usize, 0);
        self.inner.read_exact(buf).map_err(truncated)?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }
}

fn truncated(e: std::io::Error) -> MvccError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        MvccError::Snapshot("stream truncated".into())
    } else {
        MvccError::Io(e)
    }
}

/// Writes the state `txn` and `pending` hold together: the published one
/// (`(revision, compacted, applied index)`), or the transaction's own if
/// it is newer (it began between a commit and its publication). Leases
/// come from `txn` in both cases: a batch that changes them is committed
/// before it is published (store invariant 8).
pub(crate) fn write_snapshot(
    txn: &ReadTransaction,
    pending: &Pending,
    published: (i64, i64, u64),
    writer: impl Write,
) -> Result<SnapshotMeta, MvccError> {
    let stored = read_meta(&txn.open_table(META)?)?;
    let (revision, compacted, applied_index) = if stored.2 >= published.2 {
        stored
    } else {
        published
    };
    let mut w = CrcWriter {
        inner: BufWriter::new(writer),
        crc: 0,
    };
    w.put(MAGIC)?;
    w.put(&FORMAT_V2.to_le_bytes())?;
    w.put(&applied_index.to_le_bytes())?;
    w.put(&revision.to_le_bytes())?;
    w.put(&compacted.to_le_bytes())?;
    let revs = txn.open_table(CHUNKS)?;
    let records = ReaderRecords {
        pending,
        table: &revs,
    };
    records.scan((0, 0), (revision, u32::MAX), &mut |(main, sub), record| {
        w.put(&[TAG_VERSION])?;
        w.put(&main.to_le_bytes())?;
        w.put(&sub.to_le_bytes())?;
        w.put(&(record.len() as u32).to_le_bytes())?;
        w.put(record)?;
        Ok(true)
    })?;
    for entry in txn.open_table(LEASES)?.iter()? {
        let (id, v) = entry?;
        let (granted, remaining) = v.value();
        w.put(&[TAG_LEASE])?;
        w.put(&id.value().to_le_bytes())?;
        w.put(&granted.to_le_bytes())?;
        w.put(&remaining.to_le_bytes())?;
    }
    w.put(&[TAG_END])?;
    let crc = w.crc;
    w.inner.write_all(&crc.to_le_bytes())?;
    w.inner.flush()?;
    Ok(SnapshotMeta {
        applied_index,
        revision,
        compact_revision: compacted,
    })
}

/// Replaces every table of `txn` with the stream's state and returns the
/// key index of that state. The caller commits (and publishes the index)
/// only if this returns `Ok`.
pub(crate) fn restore_into(
    txn: &WriteTransaction,
    reader: impl Read,
) -> Result<(SnapshotMeta, Keys), MvccError> {
    let mut r = CrcReader {
        inner: BufReader::new(reader),
        crc: 0,
    };
    if &r.take::<12>()? != MAGIC {
        return Err(MvccError::Snapshot("not a Concord MVCC snapshot".into()));
    }
    let format = r.u32()?;
    if format != FORMAT_V2 {
        return Err(MvccError::Snapshot(format!("unknown format {format}")));
    }
    let applied = r.i64()?;
    let applied_index = u64::try_from(applied)
        .map_err(|_| MvccError::Snapshot(format!("applied index {applied}")))?;
    let revision = r.i64()?;
    let compact_revision = r.i64()?;
    if revision < 1 || compact_revision < -1 || compact_revision > revision {
        return Err(MvccError::Snapshot(format!(
            "revision {revision}, compacted {compact_revision}"
        )));
    }

    for name in ALL_TABLE_NAMES {
        txn.delete_table(redb::TableDefinition::<&[u8], &[u8]>::new(name))?;
    }
    let mut revs = txn.open_table(CHUNKS)?;
    let mut leases = txn.open_table(LEASES)?;
    let mut lease_keys = txn.open_table(LEASE_KEYS)?;
    let mut meta = txn.open_table(META)?;

    let mut keys = Keys::new();
    // The lease of each key whose newest version so far is live and leased.
    let mut attached: std::collections::BTreeMap<Vec<u8>, i64> = Default::default();
    let mut record = Vec::new();
    let mut appender = Appender::default();
    let mut last: Option<(i64, u32)> = None;
    let mut tag = r.u8()?;
    while tag == TAG_VERSION {
        let main = r.i64()?;
        let sub = r.u32()?;
        r.blob(&mut record)?;
        let rec =
            Record::decode(main, sub, &record).map_err(|e| MvccError::Snapshot(e.to_string()))?;
        if main < 2 || main > revision {
            return Err(MvccError::Snapshot(format!(
                "version {main}.{sub} does not fit"
            )));
        }
        if last.is_some_and(|l| l >= (main, sub)) {
            return Err(MvccError::Snapshot("versions out of order".into()));
        }
        last = Some((main, sub));
        let (rev, newest) = rec.index_entry();
        index::push(&mut keys, rec.key, rev, newest);
        if !rec.tombstone && rec.lease != 0 {
            attached.insert(rec.key.to_vec(), rec.lease);
        } else {
            attached.remove(rec.key);
        }
        appender.push(&mut revs, (main, sub), std::mem::take(&mut record))?;
        tag = r.u8()?;
    }
    appender.finish(&mut revs)?;
    let mut last_id = None;
    while tag == TAG_LEASE {
        let id = r.i64()?;
        let granted = r.i64()?;
        let remaining = r.i64()?;
        if last_id.is_some_and(|l| l >= id) || id == 0 {
            return Err(MvccError::Snapshot("leases out of order".into()));
        }
        last_id = Some(id);
        leases.insert(id, (granted, remaining))?;
        tag = r.u8()?;
    }
    if tag != TAG_END {
        return Err(MvccError::Snapshot(format!("unknown record tag {tag}")));
    }
    let computed = r.crc;
    let mut trailer = [0u8; 4];
    r.inner.read_exact(&mut trailer).map_err(truncated)?;
    if u32::from_le_bytes(trailer) != computed {
        return Err(MvccError::Snapshot("checksum mismatch".into()));
    }
    for (key, lease) in &attached {
        if leases.get(*lease)?.is_none() {
            return Err(MvccError::Snapshot(format!(
                "key attached to unknown lease {lease}"
            )));
        }
        lease_keys.insert((*lease, key.as_slice()), ())?;
    }
    meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
    meta.insert(META_REVISION, revision)?;
    meta.insert(META_COMPACT_REVISION, compact_revision)?;
    meta.insert(META_APPLIED_INDEX, applied)?;
    Ok((
        SnapshotMeta {
            applied_index,
            revision,
            compact_revision,
        },
        keys,
    ))
}
