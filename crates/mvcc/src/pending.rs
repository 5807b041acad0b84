//! Versions that apply batches published but no redb commit holds yet.
//!
//! With deferred commits (`store.rs`) the store keeps one redb write
//! transaction open across many apply batches and commits it about every
//! 100 ms (etcd's batch interval), so a put costs a few page updates
//! instead of a commit. Readers cannot see into an open write transaction,
//! so every batch also hands its records, the same bytes it wrote to
//! `chunks`, to this log, which readers consult before their redb read
//! transaction (etcd's `txReadBuffer` plays the same part for bbolt).
//!
//! Invariants:
//! 1. Chunks are in ascending revision order, each one non-empty and
//!    ascending inside (one apply batch each); every record is at a
//!    revision above the store's last commit and at or below the
//!    published revision.
//! 2. Records leave only all at once, under the store's write lock, after
//!    a commit that holds them all. So a reader that, holding the read lock,
//!    does not find a published record here began its read transaction
//!    after that commit and finds it there.
//! 3. A record here is byte for byte the one in `chunks` (versions are
//!    immutable), so a reader that finds a record in both may use either.

use std::sync::Arc;

use crate::schema::RevKey;

/// One apply batch's records: `(revision, encoded record)`, ascending.
pub(crate) type Chunk = Arc<[(RevKey, Box<[u8]>)]>;

/// The published, uncommitted records (module invariants).
#[derive(Clone, Default)]
pub(crate) struct Pending {
    chunks: Vec<Chunk>,
}

impl Pending {
    /// Appends one batch's records (invariant 1: newer than all held).
    pub fn push(&mut self, records: Vec<(RevKey, Box<[u8]>)>) {
        if records.is_empty() {
            return;
        }
        debug_assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(self.last().is_none_or(|last| last < records[0].0));
        self.chunks.push(Arc::from(records));
    }

    /// Forgets every record (invariant 2: only after a commit holds them).
    pub fn clear(&mut self) {
        self.chunks.clear();
    }

    /// True if no record is held.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn last(&self) -> Option<RevKey> {
        self.chunks.last().and_then(|c| c.last()).map(|(at, _)| *at)
    }

    /// The record at `at`, if held.
    pub fn get(&self, at: RevKey) -> Option<&[u8]> {
        let first = self.chunks.first()?.first()?.0;
        if at < first {
            return None;
        }
        // The first chunk whose last record is at or after `at`.
        let c = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|(last, _)| *last < at));
        let chunk = self.chunks.get(c)?;
        let i = chunk.binary_search_by(|(k, _)| k.cmp(&at)).ok()?;
        Some(&chunk[i].1)
    }

    /// The held records after `after` and at or before `upto`, ascending.
    pub fn range(&self, after: RevKey, upto: RevKey) -> impl Iterator<Item = (RevKey, &[u8])> {
        self.chunks
            .iter()
            .filter(move |c| c.last().is_some_and(|(last, _)| *last > after))
            .flat_map(|c| c.iter())
            .skip_while(move |(at, _)| *at <= after)
            .take_while(move |(at, _)| *at <= upto)
            .map(|(at, bytes)| (*at, &bytes[..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(main: i64, sub: u32) -> (RevKey, Box<[u8]>) {
        ((main, sub), format!("{main}.{sub}").into_bytes().into())
    }

    #[test]
    fn lookups_and_ranges_across_chunks() {
        let mut p = Pending::default();
        assert!(p.get((1, 0)).is_none());
        p.push(vec![rec(2, 0), rec(2, 1)]);
        p.push(Vec::new());
        p.push(vec![rec(3, 0)]);
        p.push(vec![rec(5, 0), rec(5, 1), rec(5, 2)]);
        assert_eq!(p.get((2, 1)), Some(&b"2.1"[..]));
        assert_eq!(p.get((5, 2)), Some(&b"5.2"[..]));
        assert_eq!(p.get((1, 0)), None);
        assert_eq!(p.get((4, 0)), None);
        assert_eq!(p.get((5, 3)), None);
        assert_eq!(p.get((6, 0)), None);
        let ats = |after, upto| p.range(after, upto).map(|(at, _)| at).collect::<Vec<_>>();
        assert_eq!(ats((2, 0), (5, 0)), [(2, 1), (3, 0), (5, 0)]);
        assert_eq!(ats((0, 0), (2, u32::MAX)), [(2, 0), (2, 1)]);
        assert_eq!(ats((5, 2), (9, 0)), Vec::<RevKey>::new());
        p.clear();
        assert!(p.is_empty() && p.get((2, 0)).is_none());
    }
}
