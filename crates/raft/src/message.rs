//! Messages exchanged between Raft peers.
//!
//! The transport contract is weak on purpose: a message may be lost,
//! duplicated, delayed or reordered, and the core must stay safe under all of
//! these. Every message carries the sender's term; a receiver first reconciles
//! terms (section 5.1 of the Raft paper) and only then looks at the body.
//!
//! ```text
//!  candidate                         voter
//!     | --- PreVote(term+1, last) --->  |   (no state change on either side)
//!     | <-- PreVoteResponse ----------  |
//!     | --- RequestVote(term, last) ->  |   voter persists term+vote, then:
//!     | <-- RequestVoteResponse ------  |
//!
//!  leader                            follower
//!     | --- Append(prev, entries) --->  |   follower persists entries, then:
//!     | <-- AppendResponse(match | hint)|
//!     | --- CommitNotice(prev, commit)> |   (not answered)
//!     | --- Heartbeat(commit, round) ->  |
//!     | <-- HeartbeatResponse(round) --  |   round confirms leadership for ReadIndex
//! ```

use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};
use bytes::Bytes;

/// A message from one peer to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// Sender's term (for a pre-vote: the term the sender would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The message kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me in `term`?" Changes no state on either side.
    PreVote {
        /// Index of the candidate's last entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last entry.
        last_log_term: Term,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// True when the vote is refused.
        reject: bool,
    },
    /// A real vote request (section 5.2).
    RequestVote {
        /// Index of the candidate's last entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last entry.
        last_log_term: Term,
        /// Set when the election follows a leadership transfer: voters then
        /// ignore their "I heard from a leader recently" stickiness.
        transfer: bool,
    },
    /// Answer to [`MessageBody::RequestVote`]; sent only after the vote is durable.
    RequestVoteResponse {
        /// True when the vote is refused.
        reject: bool,
    },
    /// Log replication (section 5.3).
    Append {
        /// Index of the entry just before `entries`.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// Entries to append (possibly none, to probe).
        entries: Vec<Entry>,
        /// Leader's commit index.
        leader_commit: LogIndex,
    },
    /// Answer to [`MessageBody::Append`]; sent only after the entries are durable.
    AppendResponse {
        /// True when the consistency check failed.
        reject: bool,
        /// On success: the highest index known to match the leader's log.
        /// On rejection: the `prev_log_index` that was rejected.
        index: LogIndex,
        /// On rejection, a hint for fast backtracking: the follower's last
        /// index, or the first index of the conflicting term.
        hint_index: LogIndex,
        /// On rejection, the term of the follower's entry at `hint_index`.
        hint_term: Term,
    },
    /// "Entries through `leader_commit` are committed": sent when the
    /// commit index moves and no append is due to carry it. Never answered:
    /// it moves nothing the leader tracks, and an answer per commit would
    /// wake the leader once more per write for nothing. The follower uses it
    /// only if its entry at `prev_log_index` has `prev_log_term` (the log
    /// matching check of an append), and then commits through
    /// `min(leader_commit, prev_log_index)`; otherwise it drops it, since the
    /// append it got ahead of will be answered.
    CommitNotice {
        /// Index of the last entry sent to this follower.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// Leader's commit index.
        leader_commit: LogIndex,
    },
    /// Leader keep-alive that also carries the commit index and a read round.
    Heartbeat {
        /// Leader's commit index, capped at what the follower is known to hold.
        commit: LogIndex,
        /// ReadIndex round this heartbeat belongs to (0 = none).
        read_round: u64,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// Echo of the heartbeat's round.
        read_round: u64,
    },
    /// One chunk of a snapshot, streamed in order.
    Snapshot {
        /// The snapshot being sent.
        meta: SnapshotMeta,
        /// Total size of the snapshot data.
        total_bytes: u64,
        /// Byte offset of `chunk` in the data.
        offset: u64,
        /// The bytes.
        chunk: Bytes,
    },
    /// Acknowledges snapshot chunks.
    SnapshotResponse {
        /// Index of the snapshot this answers.
        snapshot_index: LogIndex,
        /// Bytes received contiguously so far (`total_bytes` when installed).
        received_bytes: u64,
        /// Set once the snapshot is durable on the follower.
        installed: bool,
        /// Set when the follower cannot use the stream (the snapshot is too
        /// large, or a chunk runs past its total); the leader restarts from
        /// zero. Chunks that arrive out of order are not rejected: the
        /// follower holds a window of them until they fit.
        reject: bool,
    },
    /// Tells the transfer target to start an election at once.
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndex {
        /// Opaque request id chosen by the follower's runtime.
        context: u64,
    },
    /// The leader's answer to [`MessageBody::ReadIndex`].
    ReadIndexResponse {
        /// Echo of the request id.
        context: u64,
        /// The index the follower must apply before serving the read;
        /// `None` when the leader could not confirm (the runtime retries).
        index: Option<LogIndex>,
    },
}

impl MessageBody {
    /// Short name, for traces.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResp",
            MessageBody::RequestVote { .. } => "Vote",
            MessageBody::RequestVoteResponse { .. } => "VoteResp",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResp",
            MessageBody::CommitNotice { .. } => "CommitNotice",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::SnapshotResponse { .. } => "SnapshotResp",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
        }
    }
}
