//! The in-memory view of the replicated log: a snapshot boundary followed by
//! contiguous entries, with the four cursors that order durability and apply.
//!
//! Invariants (checked by `debug_assert_invariants` after every change):
//! 1. `entries[k].index == snapshot_index + 1 + k`: the log is contiguous.
//! 2. Terms never decrease along the log.
//! 3. `applied <= committed` and `applied <= persisted` (only durable,
//!    committed entries are handed out for apply).
//! 4. `snapshot_index <= applied` once a snapshot is installed, and
//!    `persisted <= last_index()`.
//! 5. `committed` never decreases; an entry at or below it is never replaced
//!    (replacing one would break state machine safety, so it is an assertion).
//!
//! The runtime restores this from its WAL on start (everything restored is
//! durable), so `persisted == last_index()` after a restart.

use crate::types::{Entry, LogIndex, SnapshotMeta, Term};
use std::collections::VecDeque;

/// The log of one member.
#[derive(Debug, Clone)]
pub struct RaftLog {
    /// Everything at or below this index lives only in the snapshot.
    snapshot: SnapshotMeta,
    /// Entries after the snapshot.
    entries: VecDeque<Entry>,
    /// Highest index known committed.
    committed: LogIndex,
    /// Highest index handed to the runtime for apply.
    applied: LogIndex,
    /// Highest index known durable on this member's disk.
    persisted: LogIndex,
    /// First index not yet handed to the runtime for persistence.
    unstable_from: LogIndex,
}

impl RaftLog {
    /// A log restored from durable state: `snapshot` then `entries`.
    pub fn restore(snapshot: SnapshotMeta, entries: Vec<Entry>, committed: LogIndex) -> RaftLog {
        let mut log = RaftLog {
            committed: snapshot.index,
            applied: snapshot.index,
            persisted: snapshot.index,
            unstable_from: snapshot.index.next(),
            snapshot,
            entries: VecDeque::new(),
        };
        for entry in entries {
            if entry.index <= log.snapshot.index {
                continue;
            }
            assert_eq!(
                entry.index,
                log.last_index().next(),
                "restored log is not contiguous"
            );
            log.entries.push_back(entry);
        }
        log.persisted = log.last_index();
        log.unstable_from = log.last_index().next();
        log.committed = committed.max(log.snapshot.index).min(log.last_index());
        log.debug_assert_invariants();
        log
    }

    /// Index of the last entry (the snapshot's index when empty).
    pub fn last_index(&self) -> LogIndex {
        self.entries
            .back()
            .map(|e| e.index)
            .unwrap_or(self.snapshot.index)
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries
            .back()
            .map(|e| e.term)
            .unwrap_or(self.snapshot.term)
    }

    /// First index still held as an entry (snapshot index + 1).
    pub fn first_index(&self) -> LogIndex {
        self.snapshot.index.next()
    }

    /// The snapshot boundary.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// Commit index.
    pub fn committed(&self) -> LogIndex {
        self.committed
    }

    /// Applied index (handed out for apply).
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// Records that the state machine already applied through `index` (on
    /// restart the store knows its own applied index).
    pub fn set_applied(&mut self, index: LogIndex) {
        let index = index.min(self.last_index());
        if index > self.applied {
            self.applied = index;
            if index > self.committed {
                self.committed = index;
            }
        }
    }

    /// Iterates the entries held in memory (after the snapshot).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Durable index.
    pub fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// Term of the entry at `index`, if it is known (the snapshot boundary
    /// counts; compacted or future indexes do not).
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index || index > self.last_index() {
            return None;
        }
        let offset = (index.0 - self.snapshot.index.0 - 1) as usize;
        Some(self.entries[offset].term)
    }

    /// Whether the entry at `index` has `term`.
    pub fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Whether a candidate's log with this tail is at least as up to date as
    /// ours (section 5.4.1).
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries in `[low, high]`, stopping once `max_bytes` is exceeded (at
    /// least one entry is returned if any is in range). `None` when `low` is
    /// compacted.
    pub fn slice(&self, low: LogIndex, high: LogIndex, max_bytes: usize) -> Option<Vec<Entry>> {
        if low <= self.snapshot.index {
            return None;
        }
        let high = high.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut index = low;
        while index <= high {
            let offset = (index.0 - self.snapshot.index.0 - 1) as usize;
            let entry = &self.entries[offset];
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        Some(out)
    }

    /// Appends entries created by the leader at the tail.
    pub fn append(&mut self, new_entries: impl IntoIterator<Item = Entry>) {
        for entry in new_entries {
            assert_eq!(
                entry.index,
                self.last_index().next(),
                "leader append must be contiguous"
            );
            assert!(entry.term >= self.last_term(), "terms must not decrease");
            self.entries.push_back(entry);
        }
        self.debug_assert_invariants();
    }

    /// Follower side of the consistency check: if the entry at `prev_index`
    /// has `prev_term`, merges `new_entries` (dropping any conflicting
    /// suffix) and returns the index of the last entry the leader sent.
    pub fn try_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        new_entries: &[Entry],
    ) -> Option<LogIndex> {
        if !self.matches(prev_index, prev_term) {
            return None;
        }
        let last_new = LogIndex(prev_index.0 + new_entries.len() as u64);
        for entry in new_entries {
            if entry.index <= self.snapshot.index {
                continue;
            }
            match self.term(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    assert!(
                        entry.index > self.committed,
                        "conflict at committed index {} (committed {})",
                        entry.index,
                        self.committed
                    );
                    self.truncate_from(entry.index);
                    self.entries.push_back(entry.clone());
                }
                None => self.entries.push_back(entry.clone()),
            }
        }
        self.debug_assert_invariants();
        Some(last_new)
    }

    /// Drops every entry at or after `index`.
    fn truncate_from(&mut self, index: LogIndex) {
        let keep = (index.0 - self.snapshot.index.0 - 1) as usize;
        self.entries.truncate(keep);
        if self.unstable_from > index {
            self.unstable_from = index;
        }
        if self.persisted >= index {
            self.persisted = index.prev();
        }
    }

    /// For fast backtracking: the largest index `<= index` whose term is
    /// `<= term`, with that term (etcd's findConflictByTerm).
    pub fn conflict_hint(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut probe = index.min(self.last_index());
        loop {
            match self.term(probe) {
                Some(t) if t > term => probe = probe.prev(),
                Some(t) => return (probe, t),
                None => return (probe, Term(0)),
            }
            if probe.0 == 0 {
                return (probe, Term(0));
            }
        }
    }

    /// Raises the commit index (never lowers it, never past the last entry).
    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Entries not yet handed out for persistence; marks them handed out.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from;
        let last = self.last_index();
        if from > last {
            return Vec::new();
        }
        self.unstable_from = last.next();
        self.slice(from, last, usize::MAX).unwrap_or_default()
    }

    /// Whether some entries wait to be handed out for persistence.
    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// The runtime reports the log durable through (`index`, `term`). Stale
    /// reports (the entry was replaced meanwhile) are ignored.
    pub fn persisted_to(&mut self, index: LogIndex, term: Term) -> bool {
        if index > self.persisted && index < self.unstable_from && self.matches(index, term) {
            self.persisted = index;
            true
        } else {
            false
        }
    }

    /// Committed, durable entries not yet applied; marks them applied.
    pub fn take_committed(&mut self, max_bytes: usize) -> Vec<Entry> {
        let high = self.committed.min(self.persisted);
        if high <= self.applied {
            return Vec::new();
        }
        let out = self
            .slice(self.applied.next(), high, max_bytes)
            .expect("applied index is never below the snapshot");
        if let Some(last) = out.last() {
            self.applied = last.index;
        }
        out
    }

    /// Whether committed entries wait to be applied.
    pub fn has_committed(&self) -> bool {
        self.committed.min(self.persisted) > self.applied
    }

    /// Forgets entries up to `index` (already in a snapshot the runtime took).
    pub fn compact(&mut self, meta: SnapshotMeta) {
        assert!(meta.index <= self.applied, "compacting past applied index");
        if meta.index <= self.snapshot.index {
            return;
        }
        let drop = (meta.index.0 - self.snapshot.index.0) as usize;
        self.entries.drain(..drop);
        self.snapshot = meta;
        self.debug_assert_invariants();
    }

    /// Replaces the whole log by an installed snapshot. Everything up to its
    /// index counts as committed and applied (the runtime applies the
    /// snapshot before any later entry) and, once the runtime reports the
    /// snapshot durable, as persisted.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) {
        assert!(meta.index > self.committed, "installing a stale snapshot");
        self.entries.clear();
        self.committed = meta.index;
        self.applied = meta.index;
        self.unstable_from = meta.index.next();
        self.persisted = self.persisted.min(self.snapshot.index);
        self.snapshot = meta;
    }

    /// The runtime reports an installed snapshot durable.
    pub fn snapshot_persisted(&mut self, index: LogIndex) {
        if self.snapshot.index == index && self.persisted < index {
            self.persisted = index;
        }
    }

    fn debug_assert_invariants(&self) {
        if cfg!(debug_assertions) {
            let mut expected = self.snapshot.index.next();
            let mut prev_term = self.snapshot.term;
            for entry in &self.entries {
                assert_eq!(entry.index, expected, "log not contiguous");
                assert!(entry.term >= prev_term, "log terms decrease");
                expected = expected.next();
                prev_term = entry.term;
            }
            assert!(self.applied <= self.committed);
            assert!(self.persisted <= self.last_index());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn log_of(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| entry(i as u64 + 1, *t))
            .collect();
        RaftLog::restore(SnapshotMeta::default(), entries, LogIndex(0))
    }

    #[test]
    fn try_append_truncates_conflicting_suffix() {
        let mut log = log_of(&[1, 1, 2, 2]);
        let last = log.try_append(LogIndex(2), Term(1), &[entry(3, 3)]);
        assert_eq!(last, Some(LogIndex(3)));
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.term(LogIndex(3)), Some(Term(3)));
        assert_eq!(
            log.persisted(),
            LogIndex(2),
            "replaced entries are no longer durable"
        );
        assert_eq!(log.take_unstable().len(), 1);
    }

    #[test]
    fn try_append_keeps_longer_matching_log() {
        // A delayed, shorter append must not truncate entries it agrees with.
        let mut log = log_of(&[1, 1, 2, 2]);
        assert_eq!(
            log.try_append(LogIndex(1), Term(1), &[entry(2, 1)]),
            Some(LogIndex(2))
        );
        assert_eq!(log.last_index(), LogIndex(4));
    }

    #[test]
    fn try_append_rejects_mismatch() {
        let mut log = log_of(&[1, 1]);
        assert_eq!(log.try_append(LogIndex(2), Term(2), &[]), None);
        assert_eq!(log.try_append(LogIndex(5), Term(1), &[]), None);
    }

    #[test]
    fn conflict_hint_skips_a_whole_term() {
        let log = log_of(&[1, 1, 3, 3, 3]);
        assert_eq!(
            log.conflict_hint(LogIndex(5), Term(2)),
            (LogIndex(2), Term(1))
        );
        assert_eq!(
            log.conflict_hint(LogIndex(9), Term(3)),
            (LogIndex(5), Term(3))
        );
    }

    #[test]
    fn only_durable_committed_entries_are_applied() {
        let mut log = log_of(&[]);
        log.append([entry(1, 1), entry(2, 1)]);
        log.commit_to(LogIndex(2));
        assert!(
            log.take_committed(usize::MAX).is_empty(),
            "nothing durable yet"
        );
        let _ = log.take_unstable();
        assert!(log.persisted_to(LogIndex(1), Term(1)));
        assert_eq!(log.take_committed(usize::MAX).len(), 1);
        assert!(
            !log.persisted_to(LogIndex(2), Term(9)),
            "stale term ignored"
        );
    }

    #[test]
    fn compaction_keeps_terms_at_boundary() {
        let mut log = log_of(&[1, 2, 2]);
        log.commit_to(LogIndex(3));
        let _ = log.take_committed(usize::MAX);
        log.compact(SnapshotMeta {
            index: LogIndex(2),
            term: Term(2),
            conf: Default::default(),
        });
        assert_eq!(log.term(LogIndex(2)), Some(Term(2)));
        assert_eq!(log.term(LogIndex(1)), None);
        assert!(log.slice(LogIndex(2), LogIndex(3), usize::MAX).is_none());
        assert_eq!(
            log.slice(LogIndex(3), LogIndex(3), usize::MAX)
                .unwrap()
                .len(),
            1
        );
    }
}
