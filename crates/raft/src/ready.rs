//! The output of the core: everything the runtime must do, in order.
//!
//! # Contract (the order is part of it)
//! For each [`Ready`] returned by `Raft::ready`, the runtime must:
//! 1. send [`Ready::messages`] (they depend on nothing unpersisted: a
//!    leader's appends may go out while it writes its own log, thesis 10.2.1);
//! 2. make durable, in this order: [`Ready::snapshot`] (install it), then
//!    [`Ready::entries`] (an entry whose index is already in the log replaces
//!    it and everything after it), then [`Ready::hard_state`]; one fsync may
//!    cover them all (group commit);
//! 3. only then send [`Ready::messages_after_persist`] (vote grants and
//!    append acknowledgements promise durability), and call
//!    `Raft::on_persisted` with [`Ready::persist_marker`];
//! 4. apply the snapshot (if any) and then [`Ready::committed_entries`] to the
//!    state machine, in order, and serve [`Ready::read_states`] once the
//!    applied index reaches each read's index;
//! 5. if [`Ready::load_snapshot`] is set, load that snapshot's data (the core
//!    released it) whenever convenient and hand it back.
//!
//! Several `Ready`s may be in flight; they must be persisted in the order
//! they were returned, and step 3 of a `Ready` waits for every earlier one
//! to be durable too, even when this one has nothing to write: its
//! acknowledgements may be about entries an earlier `Ready` carries (a
//! duplicated append is answered again before the first copy is on disk).
//! [`Ready::committed_entries`] only ever holds entries that earlier
//! `Ready`s made durable (and `on_persisted` reported), so a runtime that
//! persists asynchronously may apply them while this `Ready`'s own writes
//! are in flight; an installed snapshot must be durable before it is
//! applied, and no later entry is handed out for apply until it is.

use crate::message::Message;
use crate::types::{Entry, HardState, LogIndex, NodeId, Snapshot, Term};

/// Volatile state worth reporting when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// Known leader, if any.
    pub leader: Option<NodeId>,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// Current term.
    pub term: Term,
}

/// A linearizable read is ready once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The runtime's request id.
    pub context: u64,
    /// The read index; `None` when leadership could not be confirmed and
    /// the read should be retried or failed.
    pub index: Option<LogIndex>,
}

/// What to hand back to `Raft::on_persisted` once a Ready's writes are durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PersistMarker {
    /// Last entry written by this Ready, with its term.
    pub last_entry: Option<(LogIndex, Term)>,
    /// Index of the snapshot installed by this Ready.
    pub snapshot_index: Option<LogIndex>,
}

/// One batch of work for the runtime. See the module documentation for the
/// order in which it must be carried out.
#[must_use = "a Ready must be persisted, sent and applied"]
#[derive(Debug, Default)]
pub struct Ready {
    /// Changed term, vote or commit.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader, to install.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to the durable log.
    pub entries: Vec<Entry>,
    /// Messages that may be sent at once.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after this Ready is durable.
    pub messages_after_persist: Vec<Message>,
    /// Entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Confirmed (or failed) linearizable reads.
    pub read_states: Vec<ReadState>,
    /// Leader or term changed.
    pub soft_state: Option<SoftState>,
    /// Pass to `Raft::on_persisted` after step 2.
    pub persist_marker: PersistMarker,
    /// The core released the data of its local snapshot at this index
    /// (`Raft::release_snapshot_data`) and a follower needs it: read it back
    /// from disk, at any time and on any thread, and hand it to
    /// `Raft::provide_snapshot_data` (or `Raft::snapshot_load_failed`).
    pub load_snapshot: Option<LogIndex>,
}

impl Ready {
    /// Whether anything must be written to disk for this Ready.
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}
