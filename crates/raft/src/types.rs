//! Newtypes and plain data shared by every part of the Raft core.
//!
//! Invariants kept here:
//! 1. `Term`, `LogIndex` and `NodeId` are distinct types: a term can never be
//!    passed where an index is expected (nor an etcd revision, which lives in
//!    another crate entirely).
//! 2. `LogIndex(0)` and `Term(0)` mean "before the first entry"; real entries
//!    start at index 1 and term 1.

use bytes::Bytes;
use std::collections::BTreeSet;
use std::fmt;

/// Identifies a member of the Raft group. Zero is reserved for "nobody".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

/// A Raft term: a logical epoch with at most one leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Term(pub u64);

/// A position in the replicated log (1-based; 0 is "empty log").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The index after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }
    /// The index before this one (saturating at zero).
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}
impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Opaque state-machine command from the runtime (possibly empty: a new
    /// leader appends an empty entry of its term to commit earlier ones).
    Normal,
    /// A membership change, encoded by [`ConfChange::encode`]. The core applies
    /// it to its own configuration when it commits.
    ConfChange,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position in the log.
    pub index: LogIndex,
    /// How to interpret `data`.
    pub kind: EntryKind,
    /// The command bytes (shared, so fan-out to followers does not copy).
    pub data: Bytes,
}

impl Entry {
    /// Approximate size on the wire, used for batching limits.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 24
    }
}

/// State that must be on stable storage before any message that depends on it
/// is sent (Raft paper figure 2, "persistent state on all servers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Highest index known committed. Persisting it is an optimisation for
    /// restart (apply can resume further); safety does not depend on it.
    pub commit: LogIndex,
}

/// The voting configuration of the group.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfState {
    /// Members whose votes and acknowledgements count towards quorums.
    pub voters: BTreeSet<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    /// A configuration of voters only.
    pub fn with_voters(ids: impl IntoIterator<Item = NodeId>) -> ConfState {
        ConfState {
            voters: ids.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }
    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
    /// Voters then learners.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
    /// Number of voter acknowledgements that make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// Describes the prefix of the log that a snapshot replaces.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    /// Last index covered by the snapshot.
    pub index: LogIndex,
    /// Term of the entry at `index`.
    pub term: Term,
    /// Configuration in force at `index`.
    pub conf: ConfState,
}

/// A state-machine snapshot: its metadata and the runtime's opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Where the snapshot sits in the log.
    pub meta: SnapshotMeta,
    /// The state machine's serialized state; the core never interprets it.
    pub data: Bytes,
}

/// The kinds of single-member change (Raft dissertation, section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeKind {
    /// Add a voter (or promote a learner).
    AddVoter,
    /// Add a non-voting learner.
    AddLearner,
    /// Remove a voter or learner.
    Remove,
}

/// One membership change, proposed through the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChange {
    /// What to do.
    pub kind: ConfChangeKind,
    /// To whom.
    pub node: NodeId,
    /// Runtime data (for example peer URLs), carried opaquely.
    pub context: Bytes,
}

/// Why a conf-change entry could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed conf change entry ({0} bytes)")]
pub struct MalformedConfChange(pub usize);

impl ConfChange {
    /// Encodes as `kind:u8 | node:u64 LE | context`.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(9 + self.context.len());
        out.push(match self.kind {
            ConfChangeKind::AddVoter => 1,
            ConfChangeKind::AddLearner => 2,
            ConfChangeKind::Remove => 3,
        });
        out.extend_from_slice(&self.node.0.to_le_bytes());
        out.extend_from_slice(&self.context);
        Bytes::from(out)
    }

    /// Decodes what [`ConfChange::encode`] produced.
    pub fn decode(data: &Bytes) -> Result<ConfChange, MalformedConfChange> {
        if data.len() < 9 {
            return Err(MalformedConfChange(data.len()));
        }
        let kind = match data[0] {
            1 => ConfChangeKind::AddVoter,
            2 => ConfChangeKind::AddLearner,
            3 => ConfChangeKind::Remove,
            _ => return Err(MalformedConfChange(data.len())),
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&data[1..9]);
        Ok(ConfChange {
            kind,
            node: NodeId(u64::from_le_bytes(id)),
            context: data.slice(9..),
        })
    }

    /// The configuration that results from applying this change to `conf`.
    pub fn apply_to(&self, conf: &ConfState) -> ConfState {
        let mut next = conf.clone();
        match self.kind {
            ConfChangeKind::AddVoter => {
                next.learners.remove(&self.node);
                next.voters.insert(self.node);
            }
            ConfChangeKind::AddLearner => {
                if !next.voters.contains(&self.node) {
                    next.learners.insert(self.node);
                }
            }
            ConfChangeKind::Remove => {
                next.voters.remove(&self.node);
                next.learners.remove(&self.node);
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_change_round_trips() {
        let cc = ConfChange {
            kind: ConfChangeKind::AddLearner,
            node: NodeId(7),
            context: Bytes::from_static(b"http://127.0.0.1:2380"),
        };
        assert_eq!(ConfChange::decode(&cc.encode()).unwrap(), cc);
        assert!(ConfChange::decode(&Bytes::from_static(b"\x09abcdefgh")).is_err());
        assert!(ConfChange::decode(&Bytes::from_static(b"\x01")).is_err());
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        for n in 1..10u64 {
            let conf = ConfState::with_voters((1..=n).map(NodeId));
            let q = conf.quorum();
            assert!(2 * q > n as usize, "two quorums of {n} must intersect");
            assert!(2 * (q - 1) <= n as usize, "quorum of {n} must be minimal");
        }
    }
}
