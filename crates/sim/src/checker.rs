//! Cluster-wide safety properties, checked after every simulated event.
//!
//! The checker keeps global knowledge no single node has (every leader ever
//! seen, every entry ever written, every index ever committed or applied) and
//! compares each node's state against it. Each method returns `Err` with a
//! human-readable description at the first violation.
//!
//! Properties (Raft paper figure 3, plus the client-visible ones):
//! 1. Election safety: at most one leader per term.
//! 2. Log matching: an entry with a given index and term has the same data
//!    on every node, and the same term before it; by induction the whole
//!    prefix is identical. Checked on every entry a node writes.
//! 3. Leader completeness: an entry committed in term t (the term of the
//!    node that first knew it committed, not the entry's own term) is in
//!    the log of every leader of a term > t. Checked when a leader is first
//!    seen and whenever a new index commits. A stale leader of an older
//!    term may lack it: that is allowed.
//! 4. State machine safety: no two nodes apply different entries at the same
//!    index. Checked with a running hash so it also covers snapshots.
//! 5. Linearizable reads and durable writes are checked by
//!    [`crate::history::History`].

use crate::kv::{entry_hash, Kv};
use concord_raft::{Entry, LogIndex, NodeId, Raft, Role, Term};
use std::collections::{BTreeMap, HashMap};

/// Global knowledge about the cluster.
#[derive(Default)]
pub struct Checker {
    /// Property 1: the leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Property 2: (index, term) -> (entry hash, term of the entry before).
    written: HashMap<(LogIndex, Term), (u64, Option<Term>)>,
    /// Property 3: per index, the (term, hash) of the committed entry and
    /// the lowest term in which some node knew it committed.
    committed: Vec<Option<(Term, u64, Term)>>,
    /// Property 4: per index, the state machine's chain hash after it.
    chains: Vec<Option<u64>>,
}

fn slot<T: Copy>(v: &mut Vec<Option<T>>, index: LogIndex) -> &mut Option<T> {
    let i = index.0 as usize;
    if v.len() <= i {
        v.resize(i + 1, None);
    }
    &mut v[i]
}

impl Checker {
    /// Highest index known committed anywhere.
    pub fn max_committed(&self) -> LogIndex {
        LogIndex(self.committed.len().saturating_sub(1) as u64)
    }

    /// Property 1 and the election half of property 3: call for every node
    /// that is leader after an event. Returns whether this leader is new.
    pub fn observe_leader(&mut self, raft: &Raft) -> Result<bool, String> {
        debug_assert_eq!(raft.role(), Role::Leader);
        let (id, term) = (raft.id(), raft.term());
        match self.leaders.get(&term) {
            Some(&other) if other != id => {
                return Err(format!(
                    "election safety: {id} and {other} both lead term {term}"
                ))
            }
            Some(_) => return Ok(false),
            None => {}
        }
        self.leaders.insert(term, id);
        // Leader completeness: everything committed so far must be here.
        let log = raft.log();
        for (i, c) in self.committed.iter().enumerate() {
            let Some((cterm, _, commit_term)) = c else {
                continue;
            };
            let index = LogIndex(i as u64);
            if index <= log.snapshot_meta().index || *commit_term >= term {
                continue;
            }
            if log.term(index) != Some(*cterm) {
                return Err(format!(
                    "leader completeness: new leader {id} of {term} has {:?} at {index}, \
                     but {cterm} was committed there",
                    log.term(index)
                ));
            }
        }
        Ok(true)
    }

    /// Property 2 for entries a node hands out for persistence. `prev_term`
    /// is the node's term at the index before the first entry.
    pub fn observe_written(
        &mut self,
        id: NodeId,
        entries: &[Entry],
        mut prev_term: Option<Term>,
    ) -> Result<(), String> {
        for entry in entries {
            let hash = entry_hash(entry);
            match self.written.get(&(entry.index, entry.term)) {
                Some(&(h, p)) => {
                    if h != hash {
                        return Err(format!(
                            "log matching: {id} wrote a different entry at {} {}",
                            entry.index, entry.term
                        ));
                    }
                    if let (Some(p), Some(mine)) = (p, prev_term) {
                        if p != mine {
                            return Err(format!(
                                "log matching: {id} has {mine} before {} {} where others have {p}",
                                entry.index, entry.term
                            ));
                        }
                    }
                }
                None => {
                    self.written
                        .insert((entry.index, entry.term), (hash, prev_term));
                }
            }
            prev_term = Some(entry.term);
        }
        Ok(())
    }

    /// Records that `entry` is committed (node `id`, now in `term`, has a
    /// commit index covering it) and checks property 3 against the current
    /// leaders.
    pub fn observe_committed<'a>(
        &mut self,
        id: NodeId,
        term: Term,
        entry: &Entry,
        leaders: impl Iterator<Item = &'a Raft>,
    ) -> Result<(), String> {
        let hash = entry_hash(entry);
        let s = slot(&mut self.committed, entry.index);
        let commit_term = match *s {
            Some((t, h, _)) if t != entry.term || h != hash => {
                return Err(format!(
                    "commit safety: {id} committed {} {} but {t} was committed there",
                    entry.index, entry.term
                ))
            }
            Some((_, _, c)) if c <= term => return Ok(()),
            _ => {
                *s = Some((entry.term, hash, term));
                term
            }
        };
        for leader in leaders {
            if leader.term() <= commit_term {
                continue;
            }
            let log = leader.log();
            if entry.index <= log.snapshot_meta().index {
                continue;
            }
            if log.term(entry.index) != Some(entry.term) {
                return Err(format!(
                    "leader completeness: {} {} committed, but leader {} of {} has {:?} there",
                    entry.index,
                    entry.term,
                    leader.id(),
                    leader.term(),
                    log.term(entry.index)
                ));
            }
        }
        Ok(())
    }

    /// Property 4: a node's state machine reached `kv.applied` with
    /// `kv.chain`.
    pub fn observe_applied(&mut self, id: NodeId, kv: &Kv) -> Result<(), String> {
        let s = slot(&mut self.chains, kv.applied);
        match *s {
            Some(c) if c != kv.chain => Err(format!(
                "state machine safety: {id} applied a different history through {}",
                kv.applied
            )),
            Some(_) => Ok(()),
            None => {
                *s = Some(kv.chain);
                Ok(())
            }
        }
    }
}
