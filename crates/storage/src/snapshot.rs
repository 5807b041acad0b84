//! Snapshot files: one file per snapshot, written atomically, checksummed.
//!
//! File name `{index:016x}-{term:016x}.snap`, so sorting names sorts by index.
//! Layout (integers little-endian):
//!
//! ```text
//!  magic "CNCDSNAP" | version:u32 | crc:u32 |
//!  index:u64 | term:u64 |
//!  voters:u32 | voter ids:u64 * voters | learners:u32 | learner ids:u64 * learners |
//!  data_len:u64 | data
//!  crc = crc32c(everything after the crc field)
//! ```
//!
//! Invariants:
//! 1. A snapshot file is only created through [`crate::fsutil::atomic_write`]:
//!    a file with the final name is complete and was durable before any WAL
//!    record that depends on it (the log-reset record) was written.
//! 2. A file is valid only if its checksum matches, every count fits in the
//!    bytes present, and the index and term inside match its name.
//! 3. Loading picks the newest valid file; invalid ones are reported and left
//!    on disk for inspection, never deleted by this crate.

use crate::error::{Result, StorageError};
use crate::fsutil::{self, Reader};
use bytes::Bytes;
use concord_raft::{ConfState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Snapshot files kept after a save: the newest, and one to fall back to if
/// the newest is ever found damaged.
pub const SNAPSHOTS_KEPT: usize = 2;

const MAGIC: &[u8; 8] = b"CNCDSNAP";
const VERSION: u32 = 1;
const SUFFIX: &str = ".snap";
/// Bytes before the checksummed part: magic, version, crc.
const PREFIX_BYTES: usize = 16;

/// A snapshot file found in the directory, identified by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapFile {
    pub(crate) index: LogIndex,
    pub(crate) term: Term,
    pub(crate) path: PathBuf,
}

/// File name for a snapshot at `(index, term)`.
pub(crate) fn file_name(index: LogIndex, term: Term) -> String {
    format!("{:016x}-{:016x}{SUFFIX}", index.0, term.0)
}

/// Parses a snapshot file name; `None` if `name` is not one.
pub(crate) fn parse_name(name: &str) -> Option<(LogIndex, Term)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (i, t) = stem.split_once('-')?;
    if i.len() != 16 || t.len() != 16 {
        return None;
    }
    Some((
        LogIndex(u64::from_str_radix(i, 16).ok()?),
        Term(u64::from_str_radix(t, 16).ok()?),
    ))
}

/// Whether a directory entry name looks like a snapshot file.
pub(crate) fn is_snapshot_name(name: &str) -> bool {
    name.ends_with(SUFFIX)
}

/// Encodes the file up to, not including, the data (which follows it).
fn encode_head(snap: &Snapshot) -> Vec<u8> {
    let conf = &snap.meta.conf;
    let mut head = Vec::with_capacity(
        PREFIX_BYTES + 16 + 8 + 8 * (conf.voters.len() + conf.learners.len()) + 8,
    );
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&[0; 4]); // crc, filled below
    head.extend_from_slice(&snap.meta.index.0.to_le_bytes());
    head.extend_from_slice(&snap.meta.term.0.to_le_bytes());
    for set in [&conf.voters, &conf.learners] {
        let n = u32::try_from(set.len()).expect("more than 2^32 members");
        head.extend_from_slice(&n.to_le_bytes());
        for id in set {
            head.extend_from_slice(&id.0.to_le_bytes());
        }
    }
    head.extend_from_slice(&(snap.data.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[PREFIX_BYTES..]), &snap.data);
    head[12..16].copy_from_slice(&crc.to_le_bytes());
    head
}

/// Decodes a whole snapshot file; the error is `(offset, reason)`.
fn decode(bytes: Vec<u8>) -> Result<Snapshot, (u64, &'static str)> {
    let mut r = Reader::new(&bytes);
    let short = |r: &Reader<'_>| (r.pos() as u64, "snapshot file cut short");
    if r.bytes(8).ok_or_else(|| short(&r))? != MAGIC {
        return Err((0, "bad snapshot magic"));
    }
    if r.u32().ok_or_else(|| short(&r))? != VERSION {
        return Err((8, "unsupported snapshot version"));
    }
    let crc = r.u32().ok_or_else(|| short(&r))?;
    if crc32c::crc32c(&bytes[PREFIX_BYTES..]) != crc {
        return Err((12, "snapshot checksum mismatch"));
    }
    let index = LogIndex(r.u64().ok_or_else(|| short(&r))?);
    let term = Term(r.u64().ok_or_else(|| short(&r))?);
    let mut sets = [BTreeSet::new(), BTreeSet::new()];
    for set in &mut sets {
        let n = r.u32().ok_or_else(|| short(&r))? as usize;
        // Bound the count by the bytes present before trusting it.
        if n.saturating_mul(8) > r.remaining() {
            return Err((r.pos() as u64 - 4, "member count larger than the file"));
        }
        for _ in 0..n {
            set.insert(NodeId(r.u64().ok_or_else(|| short(&r))?));
        }
    }
    let data_len = r.u64().ok_or_else(|| short(&r))?;
    let data_at = r.pos();
    if data_len != r.remaining() as u64 {
        return Err((
            data_at as u64 - 8,
            "data length does not match the file size",
        ));
    }
    let [voters, learners] = sets;
    let mut bytes = Bytes::from(bytes);
    let data = bytes.split_off(data_at);
    Ok(Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf: ConfState { voters, learners },
        },
        data,
    })
}

/// Reads and validates one snapshot file.
pub(crate) fn load(file: &SnapFile) -> Result<Snapshot> {
    let bytes = fsutil::read_file(&file.path)?;
    let snap = decode(bytes).map_err(|(off, why)| StorageError::corrupt(&file.path, off, why))?;
    if (snap.meta.index, snap.meta.term) != (file.index, file.term) {
        return Err(StorageError::corrupt(
            &file.path,
            PREFIX_BYTES as u64,
            format!(
                "snapshot holds {} {} but its name says {} {}",
                snap.meta.index, snap.meta.term, file.index, file.term
            ),
        ));
    }
    Ok(snap)
}

/// Durably writes `snap` into `dir`; returns its file.
pub(crate) fn save(dir: &Path, snap: &Snapshot) -> Result<SnapFile> {
    let name = file_name(snap.meta.index, snap.meta.term);
    let head = encode_head(snap);
    fsutil::atomic_write(dir, &name, &[&head, &snap.data])?;
    Ok(SnapFile {
        index: snap.meta.index,
        term: snap.meta.term,
        path: dir.join(name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(10),
                term: Term(3),
                conf: ConfState {
                    voters: [1, 2, 3].into_iter().map(NodeId).collect(),
                    learners: [9].into_iter().map(NodeId).collect(),
                },
            },
            data: Bytes::from_static(b"state machine"),
        }
    }

    #[test]
    fn names_sort_by_index_and_parse_back() {
        let a = file_name(LogIndex(9), Term(100));
        let b = file_name(LogIndex(10), Term(1));
        assert!(a < b);
        assert_eq!(parse_name(&b), Some((LogIndex(10), Term(1))));
        assert_eq!(parse_name("x.snap"), None);
        assert_eq!(parse_name("000000000000000a-zzzzzzzzzzzzzzzz.snap"), None);
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let f = save(dir.path(), &snap()).unwrap();
        assert_eq!(load(&f).unwrap(), snap());
        let empty = Snapshot::default();
        let mut head = encode_head(&empty);
        head.extend_from_slice(&empty.data);
        assert_eq!(decode(head).unwrap(), empty);
    }

    #[test]
    fn every_damage_is_detected() {
        let s = snap();
        let mut good = encode_head(&s);
        good.extend_from_slice(&s.data);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(decode(bad).is_err(), "flip at {i} undetected");
        }
        for cut in 0..good.len() {
            assert!(
                decode(good[..cut].to_vec()).is_err(),
                "cut at {cut} undetected"
            );
        }
    }

    #[test]
    fn name_must_match_contents() {
        let dir = tempfile::tempdir().unwrap();
        let f = save(dir.path(), &snap()).unwrap();
        let renamed = dir.path().join(file_name(LogIndex(11), Term(3)));
        std::fs::rename(&f.path, &renamed).unwrap();
        let err = load(&SnapFile {
            index: LogIndex(11),
            term: Term(3),
            path: renamed,
        })
        .unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }
}
