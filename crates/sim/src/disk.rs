//! A simulated disk per node: writes are buffered until an fsync completes.
//!
//! The runtime contract of `concord_raft::Ready` says a Ready's snapshot,
//! entries and hard state must be durable before its
//! `messages_after_persist` leave and before `on_persisted`. Here a Ready's
//! writes join a queue; one fsync at a time covers everything queued when it
//! started and completes after a random delay (group commit). Only then do
//! the writes reach the durable image. A crash keeps the durable image plus,
//! sometimes, a prefix of the queued records: the OS may have written some of
//! them, and the cut may fall in the middle of a Ready (a torn tail that the
//! WAL's checksum would cut at a record boundary).
//!
//! Invariants:
//! 1. Queued writes reach the durable image in the order they were queued.
//! 2. The durable log is contiguous after the durable snapshot's index.
//! 3. A Ready with nothing to write still waits behind earlier queued
//!    writes: its acknowledgements may be about entries they carry (a
//!    duplicated append is answered before the first copy's fsync finished).

use crate::kv::Kv;
use concord_raft::{Entry, HardState, LogIndex, Message, PersistMarker, Snapshot, Term};
use std::collections::VecDeque;

/// One Ready's worth of durable work and what waits for it.
#[derive(Debug, Default)]
pub struct QueuedWrite {
    /// Snapshot to install.
    pub snapshot: Option<Snapshot>,
    /// Entries to append (replacing any suffix they overlap).
    pub entries: Vec<Entry>,
    /// New term, vote or commit.
    pub hard_state: Option<HardState>,
    /// Messages that may leave only after this write is durable.
    pub after_persist: Vec<Message>,
    /// What to hand back to `on_persisted`.
    pub marker: PersistMarker,
}

/// What survives a crash: Raft's durable state.
#[derive(Clone, Debug, Default)]
pub struct DurableLog {
    /// Term, vote, commit.
    pub hard_state: HardState,
    /// Newest snapshot (compaction or install).
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, contiguous (invariant 2).
    pub entries: Vec<Entry>,
}

impl DurableLog {
    fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map(|s| s.meta.index)
            .unwrap_or_default()
    }

    /// Index of the last durable entry.
    pub fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map(|e| e.index)
            .unwrap_or(self.snapshot_index())
    }

    /// Term of the durable entry at `index`, if held.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        let snap = self.snapshot_index();
        if index == snap {
            return Some(
                self.snapshot
                    .as_ref()
                    .map(|s| s.meta.term)
                    .unwrap_or_default(),
            );
        }
        if index < snap {
            return None;
        }
        self.entries
            .get((index.0 - snap.0 - 1) as usize)
            .map(|e| e.term)
    }

    fn install(&mut self, snapshot: Snapshot) {
        // An installed snapshot replaces the whole log (the core clears its
        // in-memory log the same way).
        self.entries.clear();
        self.snapshot = Some(snapshot);
    }

    fn append(&mut self, entry: Entry) {
        let snap = self.snapshot_index();
        if entry.index <= snap {
            return;
        }
        assert!(
            entry.index <= self.last_index().next(),
            "durable log would get a gap: {} after {}",
            entry.index,
            self.last_index()
        );
        self.entries.truncate((entry.index.0 - snap.0 - 1) as usize);
        self.entries.push(entry);
    }

    /// Replaces the prefix through `snapshot.meta.index` by the snapshot
    /// (log compaction; the entries after it stay).
    pub fn compact(&mut self, snapshot: Snapshot) {
        if snapshot.meta.index <= self.snapshot_index() {
            return;
        }
        let drop = (snapshot.meta.index.0 - self.snapshot_index().0) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.snapshot = Some(snapshot);
    }

    fn apply(&mut self, write: &QueuedWrite, limit: usize) -> usize {
        // Records in WAL order: snapshot, entries, hard state. `limit` cuts
        // the sequence (a torn tail); returns how many records were applied.
        let mut applied = 0;
        if let Some(snap) = &write.snapshot {
            if applied == limit {
                return applied;
            }
            self.install(snap.clone());
            applied += 1;
        }
        for entry in &write.entries {
            if applied == limit {
                return applied;
            }
            self.append(entry.clone());
            applied += 1;
        }
        if let Some(hs) = write.hard_state {
            if applied == limit {
                return applied;
            }
            self.hard_state = hs;
            applied += 1;
        }
        applied
    }
}

fn records(write: &QueuedWrite) -> usize {
    usize::from(write.snapshot.is_some())
        + write.entries.len()
        + usize::from(write.hard_state.is_some())
}

/// One node's disk.
#[derive(Debug, Default)]
pub struct Disk {
    /// What is on stable storage.
    pub durable: DurableLog,
    /// The state machine as last checkpointed durably.
    pub sm_checkpoint: Kv,
    /// Written but not yet synced, in order.
    pub queue: VecDeque<QueuedWrite>,
    /// Writes at the front of `queue` covered by the fsync in flight.
    pub syncing: usize,
    /// Bumped on every crash, so a stale fsync completion is ignored.
    pub epoch: u64,
}

impl Disk {
    /// Queues a write; returns whether an fsync must be started.
    pub fn enqueue(&mut self, write: QueuedWrite) -> bool {
        self.queue.push_back(write);
        self.syncing == 0
    }

    /// Starts an fsync covering everything queued; returns false if one is
    /// already in flight or nothing is queued.
    pub fn start_sync(&mut self) -> bool {
        if self.syncing > 0 || self.queue.is_empty() {
            return false;
        }
        self.syncing = self.queue.len();
        true
    }

    /// The fsync in flight completed: its writes are durable. Returns them
    /// (their messages may now leave) in order.
    pub fn complete_sync(&mut self) -> Vec<QueuedWrite> {
        let done: Vec<QueuedWrite> = self.queue.drain(..self.syncing).collect();
        self.syncing = 0;
        for write in &done {
            self.durable.apply(write, usize::MAX);
        }
        done
    }

    /// Power loss: unsynced writes are lost, except that when `torn` is
    /// `Some(k)` the first `k` records of the queue had reached the platter.
    pub fn crash(&mut self, torn: Option<usize>) {
        let mut budget = torn.unwrap_or(0);
        for write in self.queue.drain(..) {
            if budget == 0 {
                break;
            }
            budget -= self.durable.apply(&write, budget);
        }
        self.syncing = 0;
        self.epoch += 1;
    }

    /// Records queued and not yet durable.
    pub fn queued_records(&self) -> usize {
        self.queue.iter().map(records).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use concord_raft::EntryKind;

    fn entry(i: u64, t: u64) -> Entry {
        Entry {
            term: Term(t),
            index: LogIndex(i),
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    #[test]
    fn crash_keeps_only_synced_or_a_prefix() {
        let mut disk = Disk::default();
        disk.enqueue(QueuedWrite {
            entries: vec![entry(1, 1), entry(2, 1)],
            ..Default::default()
        });
        assert!(disk.start_sync());
        disk.complete_sync();
        disk.enqueue(QueuedWrite {
            entries: vec![entry(3, 1), entry(4, 1)],
            hard_state: Some(HardState {
                term: Term(2),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(disk.queued_records(), 3);
        disk.crash(Some(1));
        assert_eq!(disk.durable.last_index(), LogIndex(3));
        assert_eq!(
            disk.durable.hard_state.term,
            Term(0),
            "torn before the hard state"
        );
    }

    #[test]
    fn overlapping_append_replaces_suffix() {
        let mut log = DurableLog::default();
        for i in 1..=4 {
            log.append(entry(i, 1));
        }
        log.append(entry(3, 2));
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.term(LogIndex(3)), Some(Term(2)));
    }
}
