//! Random sequences of appends (with overwrites), hard-state changes,
//! snapshots, compactions, syncs, clean reopens and crashes, checked against
//! a plain in-memory model of a Raft member's persistent state.
//!
//! After a clean reopen (sync, then drop) the recovered state must equal the
//! model. After a crash (drop without sync) it must equal the state at the
//! last sync plus some prefix of the entries appended since, one entry at a
//! time: a crash may lose a suffix of unsynced writes, never anything else.

mod common;

use bytes::Bytes;
use common::snapshot;
use concord_raft::{Entry, EntryKind, HardState, LogIndex, NodeId, Term};
use concord_storage::{RaftStorage, Recovered, StorageOptions};
use proptest::prelude::*;
use std::path::Path;

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries starting `back` indexes before `last + 1`.
    Append {
        back: u64,
        count: u64,
        data_len: usize,
    },
    Sync,
    /// Vote in a new term, or (same term) vote if not voted yet.
    Vote {
        new_term: bool,
        for_node: u64,
    },
    /// Snapshot the local log at `last - back`.
    LocalSnapshot {
        back: u64,
    },
    /// Install a leader's snapshot `ahead` beyond the log.
    InstallSnapshot {
        ahead: u64,
    },
    /// Install a leader's snapshot inside the log with a different term.
    ConflictingSnapshot {
        back: u64,
    },
    Compact,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..4u64, 1..6u64, 0..40usize)
            .prop_map(|(back, count, data_len)| Op::Append { back, count, data_len }),
        3 => Just(Op::Sync),
        1 => (any::<bool>(), 1..4u64).prop_map(|(new_term, for_node)| Op::Vote { new_term, for_node }),
        1 => (0..6u64).prop_map(|back| Op::LocalSnapshot { back }),
        1 => (1..5u64).prop_map(|ahead| Op::InstallSnapshot { ahead }),
        1 => (0..4u64).prop_map(|back| Op::ConflictingSnapshot { back }),
        1 => Just(Op::Compact),
        2 => Just(Op::Reopen),
        2 => Just(Op::Crash),
    ]
}

/// What a member has persisted, kept the simplest way.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    /// Snapshot point: `(index, term)`.
    base: (u64, u64),
    /// Entries after `base`, in order.
    log: Vec<Entry>,
    /// Term and vote.
    term_vote: (u64, Option<u64>),
}

impl State {
    fn last(&self) -> u64 {
        self.base.0 + self.log.len() as u64
    }

    fn term_at(&self, i: u64) -> Option<u64> {
        if i == self.base.0 {
            return Some(self.base.1);
        }
        let pos = i.checked_sub(self.base.0 + 1)? as usize;
        self.log.get(pos).map(|e| e.term.0)
    }

    fn apply_entry(&mut self, e: &Entry) {
        let pos = (e.index.0 - self.base.0 - 1) as usize;
        self.log.truncate(pos);
        self.log.push(e.clone());
    }

    /// Raft figure 13 steps 6 and 7.
    fn apply_snapshot(&mut self, index: u64, term: u64) {
        if self.term_at(index) == Some(term) {
            self.log.drain(..(index - self.base.0) as usize);
        } else {
            self.log.clear();
        }
        self.base = (index, term);
    }

    fn assert_recovered(&self, rec: &Recovered) {
        assert_eq!(rec.entries, self.log);
        assert_eq!(
            (rec.hard_state.term.0, rec.hard_state.vote.map(|n| n.0)),
            self.term_vote
        );
        assert_eq!(rec.hard_state.commit, LogIndex(self.base.0));
        match &rec.snapshot {
            None => assert_eq!(self.base, (0, 0)),
            Some(s) => {
                assert_eq!(*s, snapshot(self.base.0, self.base.1));
            }
        }
    }
}

struct Harness<'a> {
    dir: &'a Path,
    opts: StorageOptions,
    storage: Option<RaftStorage>,
    /// The state including everything not yet synced.
    now: State,
    /// The state as of the last sync.
    synced: State,
    /// Entries appended since the last sync, one by one.
    pending: Vec<Entry>,
    next_term: u64,
}

impl Harness<'_> {
    fn s(&mut self) -> &mut RaftStorage {
        self.storage.as_mut().expect("open")
    }

    fn synced_now(&mut self) {
        self.synced = self.now.clone();
        self.pending.clear();
    }

    fn reopen(&mut self) -> Recovered {
        self.storage = None;
        let (s, rec) = RaftStorage::open(self.dir, self.opts).expect("reopen");
        self.storage = Some(s);
        rec
    }

    fn check_storage_matches(&mut self) {
        let now = self.now.clone();
        let s = self.s();
        assert_eq!(s.last_index(), LogIndex(now.last()));
        assert_eq!(s.snapshot_point(), (LogIndex(now.base.0), Term(now.base.1)));
        for i in now.base.0..=now.last() {
            assert_eq!(
                s.term(LogIndex(i)).map(|t| t.0),
                now.term_at(i),
                "term at {i}"
            );
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Append {
                back,
                count,
                data_len,
            } => {
                let start = (self.now.last() + 1)
                    .saturating_sub(back)
                    .max(self.now.base.0 + 1);
                if start <= self.now.last() {
                    // A conflict means a newer leader.
                    self.next_term += 1;
                }
                let term = self.next_term;
                let batch: Vec<Entry> = (start..start + count)
                    .map(|i| Entry {
                        term: Term(term),
                        index: LogIndex(i),
                        kind: if i.is_multiple_of(5) {
                            EntryKind::ConfChange
                        } else {
                            EntryKind::Normal
                        },
                        data: Bytes::from(vec![(i + term) as u8; data_len]),
                    })
                    .collect();
                self.s().append(&batch).expect("append");
                for e in &batch {
                    self.now.apply_entry(e);
                }
                self.pending.extend(batch);
            }
            Op::Sync => {
                self.s().sync().expect("sync");
                self.synced_now();
            }
            Op::Vote { new_term, for_node } => {
                let (mut term, mut vote) = self.now.term_vote;
                if new_term {
                    self.next_term += 1;
                    term = self.next_term;
                    vote = Some(for_node);
                } else if vote.is_none() {
                    vote = Some(for_node);
                }
                let hs = HardState {
                    term: Term(term),
                    vote: vote.map(NodeId),
                    commit: LogIndex(0),
                };
                self.s().set_hard_state(&hs).expect("set_hard_state");
                self.now.term_vote = (term, vote);
            }
            Op::LocalSnapshot { back } => {
                let index = self.now.last().saturating_sub(back);
                if index <= self.now.base.0 {
                    return;
                }
                let term = self.now.term_at(index).expect("in the log");
                self.save_snapshot(index, term);
            }
            Op::InstallSnapshot { ahead } => {
                self.next_term += 1;
                let index = self.now.last() + ahead;
                self.save_snapshot(index, self.next_term);
            }
            Op::ConflictingSnapshot { back } => {
                let index = self.now.last().saturating_sub(back);
                if index <= self.now.base.0 {
                    return;
                }
                self.next_term += 1;
                self.save_snapshot(index, self.next_term);
            }
            Op::Compact => {
                let base = self.now.base.0;
                self.s().compact(LogIndex(base)).expect("compact");
            }
            Op::Reopen => {
                self.s().sync().expect("sync");
                self.synced_now();
                let rec = self.reopen();
                self.now.assert_recovered(&rec);
            }
            Op::Crash => {
                let rec = self.reopen();
                // Some prefix of the pending entries survived.
                let mut candidate = self.synced.clone();
                let mut matched = candidate.log == rec.entries;
                for e in &self.pending {
                    if matched {
                        break;
                    }
                    candidate.apply_entry(e);
                    matched = candidate.log == rec.entries;
                }
                assert!(
                    matched,
                    "recovered {:?} is no prefix of the pending appends",
                    rec.entries
                        .iter()
                        .map(|e| (e.index.0, e.term.0))
                        .collect::<Vec<_>>()
                );
                candidate.assert_recovered(&rec);
                self.now = candidate;
                self.synced_now();
            }
        }
        self.check_storage_matches();
    }

    /// Snapshots are durable when saved; the harness syncs right after so
    /// that a crash only ever has appends pending.
    fn save_snapshot(&mut self, index: u64, term: u64) {
        self.s()
            .save_snapshot(&snapshot(index, term))
            .expect("save_snapshot");
        self.now.apply_snapshot(index, term);
        self.s().sync().expect("sync");
        self.synced_now();
    }
}

fn run(ops: &[Op], opts: StorageOptions) {
    let tmp = tempfile::tempdir().unwrap();
    let empty = State {
        base: (0, 0),
        log: Vec::new(),
        term_vote: (0, None),
    };
    let mut h = Harness {
        dir: tmp.path(),
        opts,
        storage: None,
        now: empty.clone(),
        synced: empty,
        pending: Vec::new(),
        next_term: 1,
    };
    let rec = h.reopen();
    h.now.assert_recovered(&rec);
    for op in ops {
        h.step(op);
    }
    h.step(&Op::Reopen);
}

proptest! {
    // Each case fsyncs dozens of times; these counts keep the file at tens of
    // seconds on a real disk.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Small segments and a tiny write buffer, so rolls, compactions and
    /// partial writes before a crash all happen often.
    #[test]
    fn storage_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops, StorageOptions { segment_bytes_max: 300, write_flush_bytes: 64 });
    }

    /// Default sizes: everything in one segment, written only at sync.
    #[test]
    fn storage_matches_the_model_with_default_sizes(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops, StorageOptions::default());
    }
}
