//! The Raft member: roles, elections, replication, commit, reads, transfer
//! and membership. References are to the Raft paper (Ongaro and Ousterhout,
//! 2014) and Ongaro's dissertation (2014).
//!
//! Invariants this module keeps (the simulator checks the cluster-wide ones):
//! 1. Term and vote are handed out for persistence in the same `Ready` as, or
//!    before, any message that depends on them, and such messages are put in
//!    `messages_after_persist` (a crash cannot make a node vote twice).
//! 2. A leader counts its own log towards a quorum only up to what is
//!    durable on its disk (`RaftLog::persisted`), and commits by counting
//!    replicas only entries of its current term (paper section 5.4.2,
//!    figure 8).
//! 3. At most one membership change is uncommitted at a time, and a new
//!    leader proposes none before an entry of its own term commits
//!    (dissertation 4.1 and the single-server-change bug fix).
//! 4. A ReadIndex read is answered only after a heartbeat round sent after
//!    the read arrived was acknowledged by a quorum, and only once the leader
//!    has committed an entry of its term (dissertation 6.4).
//! 5. Nothing here reads a clock or an unseeded RNG: time is `tick()`.
//! 6. A lease read is answered only within a lease from a heartbeat round
//!    of this leadership that a quorum confirmed, and never once this
//!    leader has sent a `TimeoutNow`;
//!    with lease reads on, a member that restarted refuses votes for one
//!    minimum election timeout (it may have granted a lease it no longer
//!    remembers).
//! 7. A snapshot stream keeps the snapshot it started with until the
//!    follower has it (a compaction meanwhile does not restart it), and the
//!    follower's latest figure of what it holds is where resending starts.
//! 8. A refused vote request does not restart a follower's election timer,
//!    even when it brings a higher term (paper figure 2: granting a vote or
//!    hearing from the leader does), and one from an older term is refused
//!    with the current term so the candidate catches up.

use crate::config::{Config, ConfigError};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::{Progress, ReplicationState};
use crate::ready::{PersistMarker, ReadState, Ready, SoftState};
use crate::rng::SplitMix64;
use crate::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta,
    Term,
};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// Committed entries handed out in one `Ready`, at most (bytes). Bounds the
/// memory of one apply batch; the rest follows in the next `Ready`.
pub const MAX_APPLY_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Snapshot chunks in flight to one follower, at most. With 1 MiB chunks this
/// keeps a few MiB on the wire, enough to fill a loopback or LAN link.
pub const SNAPSHOT_WINDOW_CHUNKS: u64 = 4;

/// Largest snapshot a follower will buffer. Four times etcd's largest
/// recommended backend (8 GiB); anything larger is a peer's junk.
pub const MAX_SNAPSHOT_BYTES: u64 = 32 * 1024 * 1024 * 1024;

/// Heartbeat rounds whose send tick is remembered for leader leases.
const ROUND_HISTORY: usize = 64;

/// The role a member plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win before disturbing anyone (pre-vote).
    PreCandidate,
    /// Campaigns in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Durable state handed back to the core on start.
#[derive(Clone, Debug, Default)]
pub struct RestoredState {
    /// Term, vote and (possibly stale) commit.
    pub hard_state: HardState,
    /// The newest durable snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// Configuration to use when there is no snapshot (a new cluster).
    pub initial_conf: ConfState,
    /// Index the state machine has already applied (its own durable record).
    pub applied: LogIndex,
}

/// Why a proposal, read or transfer was refused. Nothing changed in the core.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader accepts this; `leader` is the best known hint.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// Known leader, if any.
        leader: Option<NodeId>,
    },
    /// Proposals pause while leadership moves to another member.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// Too many proposed bytes are not yet committed: back off.
    #[error("too many uncommitted proposals")]
    Backpressure,
    /// A membership change is already in flight, or this leader has not yet
    /// committed an entry of its own term.
    #[error("a membership change is already in progress")]
    ConfChangeInProgress,
    /// The request is malformed (for example an unknown transfer target).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

/// Why a compaction was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CompactError {
    /// The state machine has not applied that far yet.
    #[error("cannot compact to {index}: only {applied} applied")]
    NotApplied {
        /// Requested index.
        index: LogIndex,
        /// Applied index.
        applied: LogIndex,
    },
}

/// A snapshot of the member's state, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This member.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Vote in the current term.
    pub vote: Option<NodeId>,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: LogIndex,
    /// Applied index (handed out for apply).
    pub applied: LogIndex,
    /// Durable index.
    pub persisted: LogIndex,
    /// Last log index.
    pub last_index: LogIndex,
    /// First index still in the log.
    pub first_index: LogIndex,
    /// Current configuration.
    pub conf: ConfState,
}

/// Test-only switches that re-introduce classic mistakes, so the simulator
/// can prove that it catches them. Absent from product builds.
#[cfg(feature = "mistakes")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mistakes {
    /// Commit an earlier term's entry by counting replicas (paper figure 8).
    pub commit_old_term_by_counting: bool,
    /// Send a vote grant before the vote is durable.
    pub vote_before_durable: bool,
    /// Acknowledge appended entries before they are durable.
    pub ack_append_before_fsync: bool,
    /// Take a commit notice's index as it comes: no log matching check,
    /// and no cap at the notice's anchor (commit through whatever we hold).
    pub commit_notice_unchecked: bool,
}

struct PendingRead {
    context: u64,
    index: LogIndex,
    round: u64,
    from: Option<NodeId>,
}

struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    buffer: Vec<u8>,
    /// Chunks that arrived ahead of `buffer`'s end, by offset. The leader
    /// keeps at most `SNAPSHOT_WINDOW_CHUNKS` in flight, so holding that
    /// many absorbs any reordering within the window; without it every
    /// reordered chunk was dropped and resent a heartbeat later, and the
    /// simulator saw small-chunk streams crawl at one chunk per round trip.
    ahead: BTreeMap<u64, Bytes>,
}

/// One Raft member. See the crate documentation for the call protocol.
pub struct Raft {
    config: Config,
    rng: SplitMix64,
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    conf: ConfState,
    /// Index of the newest conf-change entry (or of the leader's first
    /// entry): no new change is proposed until this commits.
    pending_conf_index: LogIndex,
    progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    now_ticks: u64,
    transferee: Option<NodeId>,
    read_round: u64,
    round_sent_at: VecDeque<(u64, u64)>,
    lease_start_tick: Option<u64>,
    /// Heartbeat rounds up to this one grant no lease: rounds of an earlier
    /// leadership, or every round once a `TimeoutNow` went out (`u64::MAX`
    /// until the next leadership): the transfer target's election bypasses
    /// the voters' stickiness, so no acknowledgement promises anything.
    lease_fence_round: u64,
    pending_reads: Vec<PendingRead>,
    reads_awaiting_term_commit: Vec<(u64, Option<NodeId>)>,
    read_broadcast_needed: bool,
    append_broadcast_needed: bool,
    commit_broadcast_needed: bool,
    msgs: Vec<Message>,
    read_states: Vec<ReadState>,
    last_hard_state: HardState,
    last_soft_state: SoftState,
    /// The newest local snapshot, kept to stream to lagging followers.
    snapshot: Option<Snapshot>,
    /// The runtime took `snapshot.data` back (it keeps the durable file);
    /// the metadata stays. See [`Raft::release_snapshot_data`].
    snapshot_data_released: bool,
    /// The data must be loaded: asked for in the next `Ready`.
    snapshot_load: Option<LogIndex>,
    /// Asked for and not yet provided (so it is asked for once).
    snapshot_load_outstanding: bool,
    /// The snapshot each follower in `ReplicationState::Snapshot` is being
    /// sent, pinned when the stream starts: a compaction during the stream
    /// replaces `snapshot`, and restarting the stream on every compaction
    /// could starve a slow follower forever (found by the simulator).
    outgoing_snapshots: BTreeMap<NodeId, Snapshot>,
    incoming: Option<IncomingSnapshot>,
    snapshot_to_install: Option<Snapshot>,
    uncommitted_bytes: usize,
    #[cfg(feature = "mistakes")]
    mistakes: Mistakes,
}

impl Raft {
    /// Creates a member from its configuration and durable state.
    pub fn new(config: Config, restored: RestoredState) -> Result<Raft, ConfigError> {
        config.validate()?;
        if config.lease_read.is_some() && !config.check_quorum {
            // Lease reads are only safe if followers refuse to elect a new
            // leader while they still hear from the old one.
            return Err(ConfigError::DriftBound);
        }
        let (snapshot_meta, conf) = match &restored.snapshot {
            Some(snap) => (snap.meta.clone(), snap.meta.conf.clone()),
            None => (
                SnapshotMeta {
                    conf: restored.initial_conf.clone(),
                    ..SnapshotMeta::default()
                },
                restored.initial_conf.clone(),
            ),
        };
        let mut log = RaftLog::restore(snapshot_meta, restored.entries, restored.hard_state.commit);
        log.set_applied(restored.applied);
        let rng = SplitMix64::new(config.seed ^ config.id.0.wrapping_mul(0x9E37_79B9));
        let mut raft = Raft {
            rng,
            term: restored.hard_state.term,
            vote: restored.hard_state.vote,
            role: Role::Follower,
            leader: None,
            conf,
            pending_conf_index: LogIndex(0),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_timeout_ticks_max,
            now_ticks: 0,
            transferee: None,
            read_round: 0,
            round_sent_at: VecDeque::new(),
            lease_start_tick: None,
            lease_fence_round: 0,
            pending_reads: Vec::new(),
            reads_awaiting_term_commit: Vec::new(),
            read_broadcast_needed: false,
            append_broadcast_needed: false,
            commit_broadcast_needed: false,
            msgs: Vec::new(),
            read_states: Vec::new(),
            last_hard_state: restored.hard_state,
            last_soft_state: SoftState {
                leader: None,
                is_leader: false,
                term: restored.hard_state.term,
            },
            snapshot: restored.snapshot,
            snapshot_data_released: false,
            snapshot_load: None,
            snapshot_load_outstanding: false,
            outgoing_snapshots: BTreeMap::new(),
            incoming: None,
            snapshot_to_install: None,
            uncommitted_bytes: 0,
            #[cfg(feature = "mistakes")]
            mistakes: Mistakes::default(),
            log,
            config,
        };
        // Replay committed membership changes after the snapshot; remember an
        // uncommitted one so no second change is proposed on top of it.
        let committed = raft.log.committed();
        let changes: Vec<(LogIndex, Bytes)> = raft
            .log
            .entries()
            .filter(|e| e.kind == EntryKind::ConfChange)
            .map(|e| (e.index, e.data.clone()))
            .collect();
        for (index, data) in changes {
            if index <= committed {
                if let Ok(cc) = ConfChange::decode(&data) {
                    raft.conf = cc.apply_to(&raft.conf);
                }
            }
            raft.pending_conf_index = index;
        }
        raft.reset_election_timer();
        Ok(raft)
    }

    /// Switches on test-only mistakes.
    #[cfg(feature = "mistakes")]
    pub fn set_mistakes(&mut self, mistakes: Mistakes) {
        self.mistakes = mistakes;
    }

    fn mistake_commit_old_term(&self) -> bool {
        #[cfg(feature = "mistakes")]
        {
            self.mistakes.commit_old_term_by_counting
        }
        #[cfg(not(feature = "mistakes"))]
        {
            false
        }
    }

    fn mistake_vote_before_durable(&self) -> bool {
        #[cfg(feature = "mistakes")]
        {
            self.mistakes.vote_before_durable
        }
        #[cfg(not(feature = "mistakes"))]
        {
            false
        }
    }

    fn mistake_commit_notice_unchecked(&self) -> bool {
        #[cfg(feature = "mistakes")]
        {
            self.mistakes.commit_notice_unchecked
        }
        #[cfg(not(feature = "mistakes"))]
        {
            false
        }
    }

    fn mistake_ack_before_fsync(&self) -> bool {
        #[cfg(feature = "mistakes")]
        {
            self.mistakes.ack_append_before_fsync
        }
        #[cfg(not(feature = "mistakes"))]
        {
            false
        }
    }

    // ----------------------------------------------------------------- queries

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Known leader.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The in-memory log (read only).
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// Current configuration.
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }

    /// A summary of the member's state.
    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed(),
            applied: self.log.applied(),
            persisted: self.log.persisted(),
            last_index: self.log.last_index(),
            first_index: self.log.first_index(),
            conf: self.conf.clone(),
        }
    }

    /// Match index of a follower as the leader sees it.
    pub fn match_index(&self, id: NodeId) -> Option<LogIndex> {
        if id == self.config.id {
            return Some(self.log.persisted());
        }
        self.progress.get(&id).map(|p| p.match_index)
    }

    // ------------------------------------------------------------------ inputs

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.now_ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
                self.election_elapsed = 0;
                if self.config.pre_vote {
                    self.campaign_pre_vote();
                } else {
                    self.campaign(false);
                }
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks_min {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                if !self.quorum_recently_active() {
                    let term = self.term;
                    self.become_follower(term, None);
                    return;
                }
                for progress in self.progress.values_mut() {
                    progress.recent_active = false;
                }
            }
            // A transfer that did not finish within an election timeout is
            // abandoned so the cluster is not left without proposals.
            self.transferee = None;
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Proposes one command. Returns the index it will occupy if committed.
    pub fn propose(&mut self, data: Bytes) -> Result<LogIndex, ProposeError> {
        self.propose_entries(vec![(EntryKind::Normal, data)])
            .map(|(first, _)| first)
    }

    /// Proposes several commands as one batch; returns the first and last
    /// index they will occupy.
    pub fn propose_batch(
        &mut self,
        commands: Vec<Bytes>,
    ) -> Result<(LogIndex, LogIndex), ProposeError> {
        self.propose_entries(
            commands
                .into_iter()
                .map(|data| (EntryKind::Normal, data))
                .collect(),
        )
    }

    /// Proposes a membership change (one at a time).
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<LogIndex, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.pending_conf_index > self.log.committed() {
            return Err(ProposeError::ConfChangeInProgress);
        }
        let next = change.apply_to(&self.conf);
        if next.voters.is_empty() {
            return Err(ProposeError::Invalid(
                "a change may not remove the last voter",
            ));
        }
        let (index, _) = self.propose_entries(vec![(EntryKind::ConfChange, change.encode())])?;
        self.pending_conf_index = index;
        Ok(index)
    }

    fn propose_entries(
        &mut self,
        commands: Vec<(EntryKind, Bytes)>,
    ) -> Result<(LogIndex, LogIndex), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let bytes: usize = commands.iter().map(|(_, d)| d.len() + 24).sum();
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + bytes > self.config.max_uncommitted_bytes
        {
            return Err(ProposeError::Backpressure);
        }
        self.uncommitted_bytes += bytes;
        let first = self.log.last_index().next();
        let term = self.term;
        let mut index = first;
        let entries: Vec<Entry> = commands
            .into_iter()
            .map(|(kind, data)| {
                let entry = Entry {
                    term,
                    index,
                    kind,
                    data,
                };
                index = index.next();
                entry
            })
            .collect();
        self.log.append(entries);
        self.append_broadcast_needed = true;
        Ok((first, self.log.last_index()))
    }

    /// Asks for a linearizable read. The answer arrives as a [`ReadState`]
    /// with the same `context` in a later `Ready`.
    pub fn read_index(&mut self, context: u64) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => {
                self.leader_read(context, None);
                Ok(())
            }
            _ => match self.leader {
                Some(leader) => {
                    self.send(leader, MessageBody::ReadIndex { context });
                    Ok(())
                }
                None => Err(ProposeError::NotLeader { leader: None }),
            },
        }
    }

    /// Starts moving leadership to `target` (dissertation 3.10).
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.config.id {
            return Ok(());
        }
        if !self.conf.voters.contains(&target) {
            return Err(ProposeError::Invalid("transfer target is not a voter"));
        }
        self.transferee = Some(target);
        self.election_elapsed = 0;
        let caught_up = self
            .progress
            .get(&target)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.send_append(target, true);
        }
        Ok(())
    }

    /// The runtime took a state-machine snapshot at `index` (<= applied):
    /// entries up to it are dropped from memory and the snapshot is kept to
    /// stream to followers that fall behind. Returns its metadata, which the
    /// runtime stores with the data.
    pub fn compact(&mut self, index: LogIndex, data: Bytes) -> Result<SnapshotMeta, CompactError> {
        if index > self.log.applied() {
            return Err(CompactError::NotApplied {
                index,
                applied: self.log.applied(),
            });
        }
        if index <= self.log.snapshot_meta().index {
            return Ok(self.log.snapshot_meta().clone());
        }
        let meta = SnapshotMeta {
            index,
            term: self
                .log
                .term(index)
                .expect("applied entries are in the log"),
            conf: self.conf_at(index),
        };
        self.log.compact(meta.clone());
        self.set_snapshot(Snapshot {
            meta: meta.clone(),
            data,
        });
        Ok(meta)
    }

    fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = Some(snapshot);
        self.snapshot_data_released = false;
        self.snapshot_load = None;
        self.snapshot_load_outstanding = false;
    }

    /// Drops the core's copy of the newest local snapshot's data, which can
    /// be as large as the whole state machine; its metadata stays. Streams
    /// already under way keep their own reference until they end. When a
    /// follower next needs the snapshot, a `Ready` asks for the data in
    /// [`Ready::load_snapshot`] and the runtime must answer with
    /// [`provide_snapshot_data`](Self::provide_snapshot_data) (or
    /// [`snapshot_load_failed`](Self::snapshot_load_failed)). Call it only
    /// once the snapshot is durable, so that it can be read back.
    pub fn release_snapshot_data(&mut self) {
        if let Some(snapshot) = &mut self.snapshot {
            snapshot.data = Bytes::new();
            self.snapshot_data_released = true;
        }
    }

    /// The runtime loaded the data a `Ready` asked for. Data for any other
    /// snapshot than the newest local one is ignored (it was replaced
    /// meanwhile). Followers waiting for a snapshot are then sent it.
    pub fn provide_snapshot_data(&mut self, index: LogIndex, data: Bytes) {
        let Some(snapshot) = &mut self.snapshot else {
            return;
        };
        if !self.snapshot_data_released || snapshot.meta.index != index {
            return;
        }
        snapshot.data = data;
        self.snapshot_data_released = false;
        self.snapshot_load_outstanding = false;
        if self.role == Role::Leader {
            let peers: Vec<NodeId> = self
                .progress
                .keys()
                .copied()
                .filter(|&p| p != self.config.id)
                .collect();
            for peer in peers {
                self.send_append(peer, true);
            }
        }
    }

    /// The runtime could not load the data a `Ready` asked for; the next
    /// follower that needs the snapshot asks again.
    pub fn snapshot_load_failed(&mut self, index: LogIndex) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == index)
        {
            self.snapshot_load_outstanding = false;
        }
    }

    /// The configuration in force after applying the log through `index`:
    /// the snapshot boundary's configuration (the initial one before any
    /// snapshot) plus the changes logged after it.
    fn conf_at(&self, index: LogIndex) -> ConfState {
        let mut conf = self.log.snapshot_meta().conf.clone();
        for entry in self.log.entries() {
            if entry.index > index {
                break;
            }
            if entry.kind == EntryKind::ConfChange {
                if let Ok(cc) = ConfChange::decode(&entry.data) {
                    conf = cc.apply_to(&conf);
                }
            }
        }
        conf
    }

    /// Handles one message from a peer.
    pub fn step(&mut self, m: Message) {
        if m.to != self.config.id {
            return;
        }
        if m.term > self.term {
            let is_vote_request = matches!(
                m.body,
                MessageBody::PreVote { .. }
                    | MessageBody::RequestVote {
                        transfer: false,
                        ..
                    }
            );
            let min = self.config.election_timeout_ticks_min;
            let heard_from_leader = self.leader.is_some() && self.election_elapsed < min;
            // A member that just restarted may have acknowledged a heartbeat
            // that granted some leader its lease right before it crashed, and
            // it no longer knows that leader. With lease reads on, it honours
            // that possible promise for one minimum election timeout;
            // otherwise its vote could elect a new leader while the old one
            // still serves reads from its lease (found by a scenario test).
            let restarted = self.config.lease_read.is_some() && self.now_ticks < u64::from(min);
            let in_lease = self.config.check_quorum && (heard_from_leader || restarted);
            if is_vote_request && in_lease {
                // Sticky leader (dissertation 4.2.3): we heard from a live
                // leader recently, so this candidate is disruptive.
                return;
            }
            match m.body {
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { reject: false } => {}
                MessageBody::Append { .. }
                | MessageBody::CommitNotice { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. } => self.become_follower(m.term, Some(m.from)),
                MessageBody::RequestVote { .. } if self.role != Role::Leader => {
                    // Adopt the term but keep counting towards our own
                    // timeout: only a granted vote restarts it (paper figure
                    // 2, rules for followers). Restarting it on every request
                    // let a candidate with a stale log, whose clock ran
                    // faster, keep the up-to-date nodes from ever standing:
                    // no leader, forever (found by the simulator with clock
                    // drift and pre-vote off).
                    let timer = (self.election_elapsed, self.randomized_election_timeout);
                    self.become_follower(m.term, None);
                    (self.election_elapsed, self.randomized_election_timeout) = timer;
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::Append { .. }
                | MessageBody::CommitNotice { .. }
                | MessageBody::Heartbeat { .. }
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    // A stale leader: tell it our term so it steps down
                    // instead of lingering (it may be cut off from us only
                    // one way).
                    self.send(
                        m.from,
                        MessageBody::AppendResponse {
                            reject: true,
                            index: LogIndex(0),
                            hint_index: LogIndex(0),
                            hint_term: Term(0),
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { reject: true });
                }
                MessageBody::RequestVote { .. } => {
                    // Refuse with our term (paper figure 2), so the candidate
                    // catches up. Ignoring it left a candidate with the most
                    // up-to-date log forever a term behind voters whose terms
                    // a stale candidate kept raising: no leader, ever (found
                    // by the simulator, pre-vote off, after membership
                    // changes left the two candidates with different voters).
                    self.send(m.from, MessageBody::RequestVoteResponse { reject: true });
                }
                _ => {}
            }
            return;
        }

        match m.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => self.handle_vote_request(m.from, m.term, true, last_log_index, last_log_term),
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => self.handle_vote_request(m.from, m.term, false, last_log_index, last_log_term),
            MessageBody::PreVoteResponse { reject } => {
                if self.role == Role::PreCandidate && m.term == Term(self.term.0 + 1) {
                    self.poll(m.from, !reject, true);
                }
            }
            MessageBody::RequestVoteResponse { reject } => {
                if self.role == Role::Candidate && m.term == self.term {
                    self.poll(m.from, !reject, false);
                }
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.follow(m.from);
                self.handle_append(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                );
            }
            MessageBody::CommitNotice {
                prev_log_index,
                prev_log_term,
                leader_commit,
            } => {
                self.follow(m.from);
                self.handle_commit_notice(prev_log_index, prev_log_term, leader_commit);
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.follow(m.from);
                self.advance_commit(commit);
                self.send(m.from, MessageBody::HeartbeatResponse { read_round });
            }
            MessageBody::Snapshot {
                meta,
                total_bytes,
                offset,
                chunk,
            } => {
                self.follow(m.from);
                self.handle_snapshot_chunk(m.from, meta, total_bytes, offset, chunk);
            }
            MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_response(m.from, reject, index, hint_index, hint_term);
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(m.from, read_round);
                }
            }
            MessageBody::SnapshotResponse {
                snapshot_index,
                received_bytes,
                installed,
                reject,
            } => {
                if self.role == Role::Leader {
                    self.handle_snapshot_response(
                        m.from,
                        snapshot_index,
                        received_bytes,
                        installed,
                        reject,
                    );
                }
            }
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader && self.promotable() && self.leader == Some(m.from) {
                    self.campaign(true);
                }
            }
            MessageBody::ReadIndex { context } => {
                if self.role == Role::Leader {
                    self.leader_read(context, Some(m.from));
                } else {
                    self.send(
                        m.from,
                        MessageBody::ReadIndexResponse {
                            context,
                            index: None,
                        },
                    );
                }
            }
            MessageBody::ReadIndexResponse { context, index } => {
                self.read_states.push(ReadState { context, index });
            }
        }
    }

    /// A message from the leader of our term arrived: follow it.
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower {
            let term = self.term;
            self.become_follower(term, Some(leader));
        }
        self.leader = Some(leader);
        self.election_elapsed = 0;
    }

    // --------------------------------------------------------------- elections

    fn promotable(&self) -> bool {
        self.conf.voters.contains(&self.config.id)
    }

    fn campaign_pre_vote(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.fail_pending_reads();
        self.votes.insert(self.config.id, true);
        if self.votes_won() {
            self.campaign(false);
            return;
        }
        let proposed = Term(self.term.0 + 1);
        let body = MessageBody::PreVote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        let voters: Vec<NodeId> = self.other_voters().collect();
        for to in voters {
            self.msgs.push(Message {
                from: self.config.id,
                to,
                term: proposed,
                body: body.clone(),
            });
        }
    }

    fn campaign(&mut self, transfer: bool) {
        self.role = Role::Candidate;
        self.term = Term(self.term.0 + 1);
        self.vote = Some(self.config.id);
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.fail_pending_reads();
        self.votes.insert(self.config.id, true);
        if self.votes_won() {
            self.become_leader();
            return;
        }
        let body = MessageBody::RequestVote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        let voters: Vec<NodeId> = self.other_voters().collect();
        for to in voters {
            self.send(to, body.clone());
        }
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        if can_vote && self.log.is_up_to_date(last_log_index, last_log_term) {
            if pre_vote {
                self.msgs.push(Message {
                    from: self.config.id,
                    to: from,
                    term,
                    body: MessageBody::PreVoteResponse { reject: false },
                });
            } else {
                self.vote = Some(from);
                self.election_elapsed = 0;
                self.send(from, MessageBody::RequestVoteResponse { reject: false });
            }
        } else if pre_vote {
            self.send(from, MessageBody::PreVoteResponse { reject: true });
        } else {
            self.send(from, MessageBody::RequestVoteResponse { reject: true });
        }
    }

    fn poll(&mut self, from: NodeId, granted: bool, pre_vote: bool) {
        if !self.conf.voters.contains(&from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        if self.votes_won() {
            if pre_vote {
                self.campaign(false);
            } else {
                self.become_leader();
            }
        } else if self.votes_lost() {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    fn votes_won(&self) -> bool {
        let granted = self
            .conf
            .voters
            .iter()
            .filter(|id| self.votes.get(id) == Some(&true))
            .count();
        granted >= self.conf.quorum()
    }

    fn votes_lost(&self) -> bool {
        let rejected = self
            .conf
            .voters
            .iter()
            .filter(|id| self.votes.get(id) == Some(&false))
            .count();
        rejected >= self.conf.quorum()
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.fail_pending_reads();
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.outgoing_snapshots.clear();
        self.votes.clear();
        self.transferee = None;
        self.lease_start_tick = None;
        self.uncommitted_bytes = 0;
        self.append_broadcast_needed = false;
        self.commit_broadcast_needed = false;
        self.read_broadcast_needed = false;
        self.reset_election_timer();
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.transferee = None;
        self.lease_start_tick = None;
        self.lease_fence_round = self.read_round;
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let last = self.log.last_index();
        self.progress = self
            .conf
            .members()
            .filter(|id| *id != self.config.id)
            .map(|id| (id, Progress::new(last)))
            .collect();
        // An empty entry of the new term lets earlier entries commit (5.4.2)
        // and gates membership changes and reads until it does.
        let entry = Entry {
            term: self.term,
            index: last.next(),
            kind: EntryKind::Normal,
            data: Bytes::new(),
        };
        self.log.append([entry]);
        self.pending_conf_index = self.log.last_index();
        self.uncommitted_bytes = 0;
        self.append_broadcast_needed = true;
        self.maybe_commit();
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout = self.rng.range_inclusive(
            self.config.election_timeout_ticks_min,
            self.config.election_timeout_ticks_max,
        );
    }

    fn quorum_recently_active(&self) -> bool {
        let active = self
            .conf
            .voters
            .iter()
            .filter(|id| {
                **id == self.config.id || self.progress.get(id).is_some_and(|p| p.recent_active)
            })
            .count();
        active >= self.conf.quorum()
    }

    fn other_voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.config.id;
        self.conf.voters.iter().copied().filter(move |id| *id != me)
    }

    // ------------------------------------------------------------- replication

    fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_log_index: LogIndex,
        mut prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        let committed = self.log.committed();
        if prev_log_index < committed {
            // Entries up to our commit index are settled; skip them and use
            // the committed entry as the anchor of the consistency check.
            match entries.iter().position(|e| e.index == committed) {
                Some(pos) => {
                    prev_log_index = entries[pos].index;
                    prev_log_term = entries[pos].term;
                    entries.drain(..=pos);
                }
                None => {
                    self.send(
                        from,
                        MessageBody::AppendResponse {
                            reject: false,
                            index: committed,
                            hint_index: LogIndex(0),
                            hint_term: Term(0),
                        },
                    );
                    return;
                }
            }
        }
        match self.log.try_append(prev_log_index, prev_log_term, &entries) {
            Some(last_new) => {
                self.advance_commit(leader_commit.min(last_new));
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        reject: false,
                        index: last_new,
                        hint_index: LogIndex(0),
                        hint_term: Term(0),
                    },
                );
            }
            None => {
                let (hint_index, hint_term) = self
                    .log
                    .conflict_hint(prev_log_index.min(self.log.last_index()), prev_log_term);
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        reject: true,
                        index: prev_log_index,
                        hint_index,
                        hint_term,
                    },
                );
            }
        }
    }

    fn handle_commit_notice(
        &mut self,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        leader_commit: LogIndex,
    ) {
        // Log matching: if our entry at `prev_log_index` has the leader's
        // term, our log equals the leader's through it, so what the leader
        // committed up to there is committed here too. An entry we lack or
        // hold from another term says nothing (the append that fixes it is
        // answered), so the notice is dropped.
        if self.mistake_commit_notice_unchecked() {
            self.advance_commit(leader_commit);
            return;
        }
        if self.log.term(prev_log_index) == Some(prev_log_term) {
            self.advance_commit(leader_commit.min(prev_log_index));
        }
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    ) {
        let hint = if reject && hint_term.0 > 0 {
            self.log.conflict_hint(hint_index, hint_term).0
        } else {
            hint_index
        };
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        if reject {
            if progress.reject(index, hint) {
                self.send_append(from, true);
            }
            return;
        }
        let moved = progress.acknowledge(index);
        if moved && self.maybe_commit() {
            self.commit_broadcast_needed = true;
        }
        self.send_appends(from);
        if self.transferee == Some(from)
            && self.progress.get(&from).map(|p| p.match_index) == Some(self.log.last_index())
        {
            self.send_timeout_now(from);
        }
    }

    /// Sends as many appends to `to` as flow control allows.
    fn send_appends(&mut self, to: NodeId) {
        while self.send_append(to, false) {}
    }

    /// Sends one append (or snapshot chunks) to `to` if flow control allows.
    /// Returns whether an append carrying entries was sent.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(progress) = self.progress.get(&to) else {
            return false;
        };
        if matches!(progress.state, ReplicationState::Snapshot { .. }) {
            return false;
        }
        if !progress.can_send(self.config.max_inflight_appends) {
            return false;
        }
        let prev = progress.next_index.prev();
        let prev_term = self.log.term(prev);
        let entries = self.log.slice(
            progress.next_index,
            self.log.last_index(),
            self.config.max_append_bytes,
        );
        let (Some(prev_term), Some(entries)) = (prev_term, entries) else {
            self.start_snapshot(to);
            return false;
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let has_entries = !entries.is_empty();
        let last = LogIndex(prev.0 + entries.len() as u64);
        let leader_commit = self.log.committed();
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.sent(last, has_entries);
        }
        self.send(
            to,
            MessageBody::Append {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit,
            },
        );
        has_entries
    }

    /// Tells a replicating follower the commit index, anchored at the last
    /// entry sent to it (see [`MessageBody::CommitNotice`]).
    fn send_commit_notice(&mut self, to: NodeId) {
        let Some(progress) = self.progress.get(&to) else {
            return;
        };
        let prev = progress.next_index.prev();
        let Some(prev_term) = self.log.term(prev) else {
            // Compacted: the follower is behind the log, and an append or a
            // snapshot will reach it instead.
            return;
        };
        let leader_commit = self.log.committed();
        self.send(
            to,
            MessageBody::CommitNotice {
                prev_log_index: prev,
                prev_log_term: prev_term,
                leader_commit,
            },
        );
    }

    fn maybe_commit(&mut self) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let mut matched: Vec<LogIndex> = self
            .conf
            .voters
            .iter()
            .map(|id| self.match_index(*id).unwrap_or(LogIndex(0)))
            .collect();
        if matched.is_empty() {
            return false;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.conf.quorum() - 1];
        if candidate <= self.log.committed() {
            return false;
        }
        // Figure 8: only an entry of the current term may be committed by
        // counting replicas; earlier ones commit indirectly with it.
        if self.log.term(candidate) != Some(self.term) && !self.mistake_commit_old_term() {
            return false;
        }
        self.advance_commit(candidate)
    }

    /// Raises the commit index and performs what depends on it.
    fn advance_commit(&mut self, index: LogIndex) -> bool {
        let old = self.log.committed();
        if !self.log.commit_to(index) {
            return false;
        }
        let new = self.log.committed();
        let mut changes = Vec::new();
        let mut committed_bytes = 0usize;
        if let Some(entries) = self.log.slice(old.next(), new, usize::MAX) {
            for entry in entries {
                committed_bytes += entry.data.len() + 24;
                if entry.kind == EntryKind::ConfChange {
                    if let Ok(cc) = ConfChange::decode(&entry.data) {
                        changes.push(cc);
                    }
                }
            }
        }
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(committed_bytes);
        for change in changes {
            self.apply_conf_change(change);
        }
        if self.role == Role::Leader && self.log.term(self.log.committed()) == Some(self.term) {
            let waiting = std::mem::take(&mut self.reads_awaiting_term_commit);
            for (context, from) in waiting {
                self.leader_read(context, from);
            }
        }
        true
    }

    fn apply_conf_change(&mut self, change: ConfChange) {
        self.conf = change.apply_to(&self.conf);
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        if self.conf.contains(change.node) && change.node != self.config.id {
            self.progress
                .entry(change.node)
                .or_insert_with(|| Progress::new(last));
            self.append_broadcast_needed = true;
        } else if !self.conf.contains(change.node) {
            self.progress.remove(&change.node);
            self.outgoing_snapshots.remove(&change.node);
            if self.transferee == Some(change.node) {
                self.transferee = None;
            }
        }
        if !self.conf.voters.contains(&self.config.id) {
            // A leader removed from the voters steps down once the removal
            // commits (dissertation 4.2.2).
            let term = self.term;
            self.become_follower(term, None);
            return;
        }
        // The quorum may have shrunk.
        if self.maybe_commit() {
            self.commit_broadcast_needed = true;
        }
    }

    // ---------------------------------------------------------------- snapshots

    fn start_snapshot(&mut self, to: NodeId) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        let index = snapshot.meta.index;
        if self.snapshot_data_released {
            // The follower stays as it is; once the data is back,
            // `provide_snapshot_data` starts its stream.
            if !self.snapshot_load_outstanding {
                self.snapshot_load = Some(index);
                self.snapshot_load_outstanding = true;
            }
            return;
        }
        let Some(progress) = self.progress.get_mut(&to) else {
            return;
        };
        progress.become_snapshot(index);
        self.outgoing_snapshots.insert(to, snapshot.clone());
        self.send_snapshot_chunks(to, true);
    }

    fn send_snapshot_chunks(&mut self, to: NodeId, first: bool) {
        let Some(snapshot) = self.outgoing_snapshots.get(&to).cloned() else {
            return;
        };
        let chunk_bytes = self.config.snapshot_chunk_bytes as u64;
        let total = snapshot.data.len() as u64;
        let Some(progress) = self.progress.get_mut(&to) else {
            return;
        };
        let ReplicationState::Snapshot {
            index,
            mut sent_bytes,
            acked_bytes,
            advanced,
        } = progress.state
        else {
            return;
        };
        if index != snapshot.meta.index {
            return;
        }
        let mut out = Vec::new();
        if total == 0 {
            if first {
                out.push((0, Bytes::new()));
            }
        } else {
            while sent_bytes < total
                && sent_bytes - acked_bytes < SNAPSHOT_WINDOW_CHUNKS * chunk_bytes
            {
                let end = (sent_bytes + chunk_bytes).min(total);
                out.push((
                    sent_bytes,
                    snapshot.data.slice(sent_bytes as usize..end as usize),
                ));
                sent_bytes = end;
            }
        }
        progress.state = ReplicationState::Snapshot {
            index,
            sent_bytes,
            acked_bytes,
            advanced,
        };
        for (offset, chunk) in out {
            self.send(
                to,
                MessageBody::Snapshot {
                    meta: snapshot.meta.clone(),
                    total_bytes: total,
                    offset,
                    chunk,
                },
            );
        }
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: LogIndex,
        received_bytes: u64,
        installed: bool,
        reject: bool,
    ) {
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        let ReplicationState::Snapshot {
            index,
            sent_bytes,
            acked_bytes,
            advanced,
        } = progress.state
        else {
            return;
        };
        if index != snapshot_index {
            return;
        }
        if installed {
            progress.acknowledge(index);
            progress.become_probe();
            self.outgoing_snapshots.remove(&from);
            if self.maybe_commit() {
                self.commit_broadcast_needed = true;
            }
            self.send_append(from, true);
            return;
        }
        let (sent, acked, advanced) = if reject {
            (0, 0, true)
        } else {
            // `acked_bytes` follows the follower's latest word, even
            // downwards: a follower that restarted or began the stream again
            // holds less than it acknowledged before, and only its own figure
            // says what to resend (found by the simulator: trusting an older,
            // higher figure stalled the stream for good). A stale, reordered
            // answer may lower it too; that only holds back new chunks until
            // the next answer. Resending is left to the heartbeat that sees no
            // progress, never to an answer, so answers cannot multiply into a
            // storm (the simulator found that one too).
            (
                sent_bytes.max(received_bytes),
                received_bytes,
                advanced || received_bytes > acked_bytes,
            )
        };
        progress.state = ReplicationState::Snapshot {
            index,
            sent_bytes: sent,
            acked_bytes: acked,
            advanced,
        };
        self.send_snapshot_chunks(from, reject);
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        chunk: Bytes,
    ) {
        let respond = |raft: &mut Raft, received: u64, installed: bool, reject: bool| {
            raft.send(
                from,
                MessageBody::SnapshotResponse {
                    snapshot_index: meta.index,
                    received_bytes: received,
                    installed,
                    reject,
                },
            );
        };
        if meta.index <= self.log.committed() {
            // We already have everything the snapshot covers.
            self.incoming = None;
            respond(self, total_bytes, true, false);
            return;
        }
        if total_bytes > MAX_SNAPSHOT_BYTES {
            respond(self, 0, false, true);
            return;
        }
        // Any chunk of a new snapshot starts a buffer, not only offset 0:
        // with reordering the first to arrive may be a later one (it waits
        // in `ahead`).
        if self
            .incoming
            .as_ref()
            .is_none_or(|i| i.meta.index != meta.index || i.total_bytes != total_bytes)
        {
            self.incoming = Some(IncomingSnapshot {
                meta: meta.clone(),
                total_bytes,
                buffer: Vec::new(),
                ahead: BTreeMap::new(),
            });
        }
        let Some(incoming) = self.incoming.as_mut() else {
            return;
        };
        if offset.saturating_add(chunk.len() as u64) > total_bytes {
            self.incoming = None;
            respond(self, 0, false, true);
            return;
        }
        let received = incoming.buffer.len() as u64;
        if offset == received {
            incoming.buffer.extend_from_slice(&chunk);
            // Splice in chunks that arrived early and now fit.
            while let Some(entry) = incoming.ahead.first_entry() {
                let (start, have) = (*entry.key(), incoming.buffer.len() as u64);
                if start > have {
                    break;
                }
                let early = entry.remove();
                let end = start + early.len() as u64;
                if end > have {
                    incoming
                        .buffer
                        .extend_from_slice(&early[(have - start) as usize..]);
                }
            }
        } else if offset > received && (incoming.ahead.len() as u64) < SNAPSHOT_WINDOW_CHUNKS {
            incoming.ahead.insert(offset, chunk);
        }
        let received = incoming.buffer.len() as u64;
        if received < total_bytes {
            respond(self, received, false, false);
            return;
        }
        let Some(incoming) = self.incoming.take() else {
            return;
        };
        if self.log.matches(meta.index, meta.term) {
            // Our log already holds the snapshot's last entry: keep the log
            // and just learn that it is committed.
            self.advance_commit(meta.index);
        } else {
            let snapshot = Snapshot {
                meta: incoming.meta,
                data: Bytes::from(incoming.buffer),
            };
            self.log.install_snapshot(snapshot.meta.clone());
            self.conf = snapshot.meta.conf.clone();
            self.pending_conf_index = snapshot.meta.index;
            self.set_snapshot(snapshot.clone());
            self.snapshot_to_install = Some(snapshot);
        }
        respond(self, total_bytes, true, false);
    }

    // ------------------------------------------------------------------- reads

    fn leader_read(&mut self, context: u64, from: Option<NodeId>) {
        if self.log.term(self.log.committed()) != Some(self.term) {
            // Until an entry of our term commits we do not know the true
            // commit index of the cluster (dissertation 6.4, step 1).
            self.reads_awaiting_term_commit.push((context, from));
            return;
        }
        let index = self.log.committed();
        let sole_voter = self.conf.voters.len() == 1 && self.conf.voters.contains(&self.config.id);
        if sole_voter || self.lease_valid() {
            self.answer_read(context, from, Some(index));
            return;
        }
        self.pending_reads.push(PendingRead {
            context,
            index,
            round: self.read_round + 1,
            from,
        });
        self.read_broadcast_needed = true;
    }

    fn answer_read(&mut self, context: u64, from: Option<NodeId>, index: Option<LogIndex>) {
        match from {
            None => self.read_states.push(ReadState { context, index }),
            Some(to) => self.send(to, MessageBody::ReadIndexResponse { context, index }),
        }
    }

    fn lease_valid(&self) -> bool {
        let Some(lease) = self.config.lease_read else {
            return false;
        };
        let Some(start) = self.lease_start_tick else {
            return false;
        };
        let span =
            u64::from(self.config.election_timeout_ticks_min - lease.clock_drift_bound_ticks);
        self.now_ticks < start + span
    }

    /// Tells the transfer target to campaign now. The target's election
    /// ignores the voters' leader stickiness, and the `TimeoutNow` may
    /// arrive (and the target win) at any later point of this term, so from
    /// here on this leader serves no lease read at all: reads go through
    /// ReadIndex rounds, which a newer leader's voters do not answer. (A
    /// first fix only fenced rounds sent before the `TimeoutNow`; the
    /// simulator then found a stale read from a lease renewed by a voter
    /// that went on to elect the target.)
    fn send_timeout_now(&mut self, to: NodeId) {
        self.lease_start_tick = None;
        self.lease_fence_round = u64::MAX;
        self.send(to, MessageBody::TimeoutNow);
    }

    fn broadcast_heartbeat(&mut self) {
        self.read_round += 1;
        self.read_broadcast_needed = false;
        self.round_sent_at
            .push_back((self.read_round, self.now_ticks));
        while self.round_sent_at.len() > ROUND_HISTORY {
            self.round_sent_at.pop_front();
        }
        let committed = self.log.committed();
        let targets: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .map(|(id, p)| (*id, p.match_index.min(committed)))
            .collect();
        let read_round = self.read_round;
        for (to, commit) in targets {
            self.send(to, MessageBody::Heartbeat { commit, read_round });
        }
        // A lone voter confirms its own rounds.
        self.confirm_reads();
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last = self.log.last_index();
        let max_inflight = self.config.max_inflight_appends;
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        progress.acked_round = progress.acked_round.max(read_round);
        let mut resend_snapshot = false;
        match &mut progress.state {
            ReplicationState::Probe { paused } => *paused = false,
            ReplicationState::Replicate => {
                if progress.inflight.len() >= max_inflight {
                    // An append may have been lost: free one slot so the
                    // pipeline cannot stall forever.
                    progress.inflight.pop_front();
                }
            }
            ReplicationState::Snapshot {
                sent_bytes,
                acked_bytes,
                advanced,
                ..
            } => {
                if !*advanced {
                    *sent_bytes = *acked_bytes;
                    resend_snapshot = true;
                }
                *advanced = false;
            }
        }
        let lagging = progress.match_index < last;
        if resend_snapshot {
            self.send_snapshot_chunks(from, true);
        } else if lagging {
            self.send_append(from, true);
        }
        self.confirm_reads();
    }

    fn confirm_reads(&mut self) {
        let mut rounds: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|id| {
                if *id == self.config.id {
                    self.read_round
                } else {
                    self.progress.get(id).map(|p| p.acked_round).unwrap_or(0)
                }
            })
            .collect();
        if rounds.is_empty() {
            return;
        }
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = rounds[self.conf.quorum() - 1];
        if let Some(&(_, sent_at)) = self.round_sent_at.iter().find(|(r, _)| *r == confirmed) {
            if confirmed > self.lease_fence_round
                && self.lease_start_tick.is_none_or(|t| t < sent_at)
            {
                self.lease_start_tick = Some(sent_at);
            }
        }
        if self.pending_reads.iter().all(|r| r.round > confirmed) {
            return;
        }
        let (ready, waiting): (Vec<PendingRead>, Vec<PendingRead>) =
            std::mem::take(&mut self.pending_reads)
                .into_iter()
                .partition(|r| r.round <= confirmed);
        self.pending_reads = waiting;
        for read in ready {
            self.answer_read(read.context, read.from, Some(read.index));
        }
    }

    fn fail_pending_reads(&mut self) {
        let pending = std::mem::take(&mut self.pending_reads);
        for read in pending {
            self.answer_read(read.context, read.from, None);
        }
        let waiting = std::mem::take(&mut self.reads_awaiting_term_commit);
        for (context, from) in waiting {
            self.answer_read(context, from, None);
        }
    }

    // ------------------------------------------------------------------ output

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        });
    }

    fn flush_broadcasts(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if self.append_broadcast_needed {
            self.append_broadcast_needed = false;
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for to in peers {
                self.send_appends(to);
            }
        }
        if self.commit_broadcast_needed {
            self.commit_broadcast_needed = false;
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for to in peers {
                // Tell followers the new commit index promptly, so follower
                // reads and applies do not wait for the next heartbeat. A
                // full pipeline will carry it on the append its next
                // acknowledgement lets out, so only an open one gets a
                // notice (or that append, if entries are waiting).
                let max_inflight = self.config.max_inflight_appends;
                let open = self.progress.get(&to).is_some_and(|p| {
                    matches!(p.state, ReplicationState::Replicate) && p.can_send(max_inflight)
                });
                if open && !self.send_append(to, false) {
                    self.send_commit_notice(to);
                }
            }
        }
        if self.read_broadcast_needed {
            self.broadcast_heartbeat();
        }
    }

    /// Whether [`Raft::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        let hard_state = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        };
        !self.msgs.is_empty()
            || self.log.has_unstable()
            || self.log.has_committed()
            || self.snapshot_to_install.is_some()
            || self.snapshot_load.is_some()
            || !self.read_states.is_empty()
            || hard_state != self.last_hard_state
            || self.soft_state() != self.last_soft_state
            || (self.role == Role::Leader
                && (self.append_broadcast_needed
                    || self.commit_broadcast_needed
                    || self.read_broadcast_needed))
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            is_leader: self.role == Role::Leader,
            term: self.term,
        }
    }

    /// Collects the work for the runtime. See [`Ready`] for the contract.
    pub fn ready(&mut self) -> Ready {
        self.flush_broadcasts();
        let hard_state = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        };
        let term_or_vote_changed = hard_state.term != self.last_hard_state.term
            || hard_state.vote != self.last_hard_state.vote;
        let mut ready = Ready::default();
        if hard_state != self.last_hard_state {
            ready.hard_state = Some(hard_state);
            self.last_hard_state = hard_state;
        }
        ready.snapshot = self.snapshot_to_install.take();
        ready.load_snapshot = self.snapshot_load.take();
        ready.entries = self.log.take_unstable();
        ready.persist_marker = PersistMarker {
            last_entry: ready.entries.last().map(|e| (e.index, e.term)),
            snapshot_index: ready.snapshot.as_ref().map(|s| s.meta.index),
        };
        let vote_early = self.mistake_vote_before_durable();
        let ack_early = self.mistake_ack_before_fsync();
        for message in self.msgs.drain(..) {
            let wait = match &message.body {
                MessageBody::RequestVoteResponse { .. } => !vote_early,
                MessageBody::AppendResponse { .. }
                | MessageBody::SnapshotResponse {
                    installed: true, ..
                } => !ack_early,
                _ => term_or_vote_changed,
            };
            if wait {
                ready.messages_after_persist.push(message);
            } else {
                ready.messages.push(message);
            }
        }
        coalesce_append_acks(&mut ready.messages_after_persist);
        coalesce_append_acks(&mut ready.messages);
        ready.committed_entries = self.log.take_committed(MAX_APPLY_BATCH_BYTES);
        ready.read_states = std::mem::take(&mut self.read_states);
        let soft = self.soft_state();
        if soft != self.last_soft_state {
            ready.soft_state = Some(soft);
            self.last_soft_state = soft;
        }
        ready
    }

    /// The runtime made a `Ready`'s writes durable.
    pub fn on_persisted(&mut self, marker: PersistMarker) {
        if let Some(index) = marker.snapshot_index {
            self.log.snapshot_persisted(index);
        }
        if let Some((index, term)) = marker.last_entry {
            self.log.persisted_to(index, term);
        }
        if self.role == Role::Leader && self.maybe_commit() {
            self.commit_broadcast_needed = true;
        }
    }
}

/// Merges successful append acknowledgements to one peer in one term that
/// follow each other (no other append answer to that peer between them)
/// into the last of them, carrying the highest index. Each says "my log
/// matches yours up to `index`", and within a term the leader's log only
/// grows, so the highest says all the others did; the leader's progress
/// takes acknowledgements as a maximum and frees every inflight append at
/// or below it. A follower that took several appends in one turn (while its
/// previous fsync ran) then answers with one message instead of one per
/// append. A rejection is never passed: what the leader learns keeps its
/// order.
fn coalesce_append_acks(messages: &mut Vec<Message>) {
    let mut merged_away = vec![false; messages.len()];
    // (peer, term) -> position of its latest ack not yet followed by a
    // rejection to that peer.
    let mut open: Vec<((NodeId, Term), usize)> = Vec::new();
    for at in 0..messages.len() {
        let (key, reject, index) = match messages[at].body {
            MessageBody::AppendResponse { reject, index, .. } => {
                ((messages[at].to, messages[at].term), reject, index)
            }
            _ => continue,
        };
        let slot = open.iter().position(|(k, _)| *k == key);
        if reject {
            if let Some(slot) = slot {
                open.swap_remove(slot);
            }
            continue;
        }
        if let Some(slot) = slot {
            let earlier = open[slot].1;
            if let MessageBody::AppendResponse { index: before, .. } = messages[earlier].body {
                if let MessageBody::AppendResponse { index: now, .. } = &mut messages[at].body {
                    *now = (*now).max(before).max(index);
                }
            }
            merged_away[earlier] = true;
            open[slot].1 = at;
        } else {
            open.push((key, at));
        }
    }
    let mut at = 0;
    messages.retain(|_| {
        at += 1;
        !merged_away[at - 1]
    });
}
