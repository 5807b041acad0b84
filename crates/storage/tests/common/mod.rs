//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use concord_raft::{ConfState, Entry, EntryKind, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};
use concord_storage::{RaftStorage, Recovered, StorageOptions};
use std::path::{Path, PathBuf};

pub fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: if index.is_multiple_of(7) {
            EntryKind::ConfChange
        } else {
            EntryKind::Normal
        },
        data: Bytes::copy_from_slice(data),
    }
}

/// Entries `from..=to` of term `term` whose data names index and term.
pub fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| entry(i, term, format!("entry {i} of term {term}").as_bytes()))
        .collect()
}

pub fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(index),
            term: Term(term),
            conf: ConfState {
                voters: [1, 2, 3].into_iter().map(NodeId).collect(),
                learners: [4].into_iter().map(NodeId).collect(),
            },
        },
        data: Bytes::from(format!("state machine at {index}")),
    }
}

pub fn open(dir: &Path) -> (RaftStorage, Recovered) {
    RaftStorage::open(dir, StorageOptions::default()).expect("open")
}

pub fn open_with(dir: &Path, opts: StorageOptions) -> (RaftStorage, Recovered) {
    RaftStorage::open(dir, opts).expect("open")
}

/// Segment files of `dir`, in log order.
pub fn wal_files(dir: &Path) -> Vec<PathBuf> {
    files_with_suffix(dir, ".wal")
}

pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(suffix))
        .collect();
    v.sort();
    v
}

pub fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index.0).collect()
}

/// A segment's records: its bytes without the zeros after them. The newest
/// segment is preallocated, and its reserved space (zeros) is not part of
/// the log. No entry written by these tests ends in a zero byte, so the last
/// nonzero byte is where the records end.
pub fn segment_records(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let end = zero_tail_start(&bytes);
    bytes.truncate(end);
    bytes
}

/// Asserts that the segment at `path` holds exactly `records`, then zeros.
pub fn assert_segment_holds(path: &Path, records: &[u8]) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() >= records.len(),
        "{} is too short",
        path.display()
    );
    assert!(
        bytes[..records.len()] == *records,
        "{} differs",
        path.display()
    );
    let end = zero_tail_start(&bytes);
    assert!(
        end <= records.len(),
        "{} holds a nonzero byte at {} after its records",
        path.display(),
        end - 1
    );
}

/// Where the zeros at the end of `bytes` begin. Compares in blocks (a
/// memcmp), since the debug build's byte loop over a 64 MiB segment is slow.
fn zero_tail_start(bytes: &[u8]) -> usize {
    const BLOCK: usize = 1 << 16;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        if bytes[start..end] != ZEROS[..end - start] {
            let last = bytes[start..end].iter().rposition(|&b| b != 0);
            return start + last.expect("a nonzero byte") + 1;
        }
        end = start;
    }
    0
}
