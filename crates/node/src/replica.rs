//! The replica loop: one thread that owns the Raft core, its durable
//! storage and the MVCC store, and drives them in the order the core's
//! `Ready` contract requires.
//!
//! ```text
//!  API tasks --Request--> inbox --> [ loop: step/propose/read/tick
//!  peer transport ------> inbox         ready -> send messages
//!  WAL writer -Persisted-> inbox              -> WAL writer: append + fsync
//!                                                (group commit), then send
//!                                                after-persist messages
//!                                                (a follower whose writer is
//!                                                idle does this itself)
//!                                       apply committed (into the store's open txn,
//!                                         committed every tick)
//!                                       answer proposals and reads ]
//! ```
//!
//! Invariants:
//! 1. A proposal is answered only after its entry is applied on this member,
//!    which happens only after it is committed (durable on a quorum) and
//!    durable here (DESIGN rule 2).
//! 2. A linearizable read is released only once this member has applied
//!    through the read index confirmed by the leader.
//! 3. Every waiting request has a deadline; the loop never holds a request
//!    forever, and a full inbox is not possible to create from outside
//!    faster than the API's in-flight limit allows.
//! 4. A storage or store error stops the member with a clear message rather
//!    than continuing with state that may have diverged.
//! 5. Messages from a removed id never reach the core, and a member whose
//!    own id is removed (applied here, or a peer said so) stops with etcd's
//!    "the member has been permanently removed from the cluster": it must
//!    not stand in elections under an id that may have voted already.
//! 6. The leader promotes a learner only once its match index is within
//!    [`PROMOTE_READY_PERCENT`] of the leader's own (etcd's rule), so a
//!    promotion never leaves the quorum waiting on a member far behind.
//! 7. Reads received in one loop turn share one read index, requested
//!    after all of them arrived: each read started before the request, so
//!    the index the leader confirms afterwards is as fresh as each needs.

use crate::commit_notices::{HeldNotices, COMMIT_NOTICE_DELAY};
use crate::envelope::{Envelope, Payload};
use crate::inbox::{InboxReceiver, InboxSender};
use crate::lessor::{LeaseError, Lessor, LessorConfig, TimeToLive};
use crate::members::{ConfChangeContext, Member, Members};
use crate::snapshotter::{self, SnapshotEvent};
use crate::transport::{Inbound, InboundPeer, Transport};
use crate::wal_writer::{write_group, PersistJob, WalFailed, WalWriter};
use bytes::Bytes;
use concord_mvcc::{Command, CommandOutput, Event, MvccError, Store, StoreReader};
use concord_raft::{
    ConfChange, ConfChangeKind, Entry, EntryKind, LogIndex, NodeId, PersistMarker, ProposeError,
    Raft, Ready, Snapshot,
};
use concord_storage::RaftStorage;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot};

/// Requests drained from the inbox per loop turn, at most, before the loop
/// persists and answers (bounds the latency one turn can add).
const MAX_REQUESTS_PER_TURN: usize = 4096;

/// Inbound peer connections the loop reads at most: each live peer
/// keeps one (a reconnect replaces it once the old one reports closed);
/// more means something is wrong, and refusing bounds the poll set.
const MAX_INBOUND_PEERS: usize = 64;

/// A learner is promoted only if its match index is at least this percent
/// of the leader's (etcd's `readyPercent`, 0.9).
pub const PROMOTE_READY_PERCENT: u64 = 90;

/// etcd's answer to promoting a learner that is behind.
pub const LEARNER_NOT_READY: &str =
    "can only promote a learner member which is in sync with leader";

/// How long a member that applied its own removal keeps running, so the
/// entry's commit reaches the others before it goes (etcd waits 1 s too).
const REMOVED_STOP_DELAY: Duration = Duration::from_secs(1);

/// Watch event batches buffered for slow subscribers before they lag.
const EVENT_CHANNEL_BATCHES: usize = 4096;

/// Snapshot data format: the member table, then the store's own stream.
/// What a follower receives and installs.
const SNAPSHOT_FORMAT_FULL: u8 = 1;
/// Snapshot data format: the member table only, standing for "this
/// member's own store, durable through at least the snapshot's index". What
/// a member keeps for its own compactions (etcd's snapshot likewise does not
/// copy its backend); the full form is built from the live store only when
/// a follower needs it (see [`crate::snapshotter`]).
const SNAPSHOT_FORMAT_REFERENCE: u8 = 2;

/// Errors a client can see, with etcd's messages.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No leader is known.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The request did not complete in time; it may or may not take effect.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// Leadership changed while the request was in flight.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// Back-pressure: too many proposals in flight.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// The member is stopping.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A membership change is refused.
    #[error("etcdserver: {0}")]
    Membership(String),
    /// The state machine refused the command.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
}

/// Something the API asks the replica loop to do.
pub enum Request {
    /// Replicate and apply a command.
    Propose {
        /// The command.
        command: Command,
        /// Answered once applied here.
        reply: oneshot::Sender<Result<CommandOutput, ServerError>>,
    },
    /// Wait until a linearizable read may be served locally.
    Read {
        /// Answered once the read index is applied here.
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
    /// Messages or forwarded proposals from a peer.
    Peer(Inbound),
    /// A peer connection past its `Hello`: the loop reads it from now on.
    PeerConnection(InboundPeer),
    /// A membership change; answered with the new member table once applied.
    ConfChange {
        /// The change.
        change: ConfChange,
        /// Answered once applied here.
        reply: oneshot::Sender<Result<Members, ServerError>>,
    },
    /// Move leadership to another member.
    TransferLeader {
        /// Target member id.
        target: u64,
        /// Answered when the transfer started (or failed).
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
    /// A question for the leader's lessor, answered without Raft.
    Lease(LeaseQuery),
    /// Replicate and apply a payload other than a command (an alarm
    /// change); answered once applied here.
    ProposePayload {
        /// What to replicate.
        payload: Payload,
        /// Answered once applied here.
        reply: oneshot::Sender<Result<CommandOutput, ServerError>>,
    },
    /// Rewrite the store file compactly (Maintenance.Defragment). Runs on
    /// the loop thread, which owns the store: this member serves nothing
    /// else meanwhile, as an etcd member during defrag.
    Defragment {
        /// Answered when done.
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
    /// A background snapshot thread finished a step.
    Snapshot(SnapshotEvent),
    /// The WAL writer made these `Ready`s durable, in this order.
    Persisted(Vec<PersistMarker>),
    /// The WAL writer failed (it stopped; the member must too).
    WalFailed(concord_storage::StorageError),
    /// Stop the loop.
    Shutdown,
}

/// What the API asks the lessor (see [`crate::lessor`]). Only the leader's
/// lessor answers; elsewhere the answer is [`LeaseError::NotLeader`].
pub enum LeaseQuery {
    /// A keep-alive: answered with the granted TTL.
    Renew {
        /// Lease id.
        id: i64,
        /// The answer.
        reply: oneshot::Sender<Result<i64, LeaseError>>,
    },
    /// LeaseTimeToLive.
    TimeToLive {
        /// Lease id.
        id: i64,
        /// The answer.
        reply: oneshot::Sender<Result<TimeToLive, LeaseError>>,
    },
}

/// State the API reads without going through the loop.
pub struct Shared {
    /// This member's id.
    pub member_id: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// This member's name.
    pub name: String,
    /// Known leader id (0 = none).
    pub leader: AtomicU64,
    /// Current term.
    pub term: AtomicU64,
    /// Commit index.
    pub commit_index: AtomicU64,
    /// Applied index.
    pub applied_index: AtomicU64,
    /// Whether this member is a learner.
    pub is_learner: AtomicBool,
    /// Set once the loop stopped.
    pub stopped: AtomicBool,
    /// The member table.
    pub members: RwLock<Members>,
    /// Concurrent reads of the MVCC store.
    pub reader: StoreReader,
    /// The loop's inbox.
    pub inbox: InboxSender<Request>,
    /// Applied events, in revision order, for watchers. Sending never
    /// waits: a slow receiver lags and must re-read history. An empty batch
    /// is a gap marker (a snapshot was installed; its events were never
    /// sent): receivers re-read history too. See [`crate::watch_hub`].
    pub events: broadcast::Sender<Arc<Vec<Event>>>,
    /// How long a request may wait.
    pub request_timeout: Duration,
    /// Tick length as a percentage of the configured one (fault injection:
    /// a node whose timers run fast or slow).
    pub tick_scale_percent: AtomicU64,
}

impl Shared {
    /// Sends one request to the loop and waits, at most the request
    /// timeout, for its answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, ServerError> {
        let (reply, rx) = oneshot::channel();
        self.inbox
            .send(request(reply))
            .map_err(|_| ServerError::Stopped)?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Proposes a command and waits for its result.
    pub async fn propose(&self, command: Command) -> Result<CommandOutput, ServerError> {
        self.ask(|reply| Request::Propose { command, reply })
            .await?
    }

    /// Waits until a linearizable read may be served from the local store.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        self.ask(|reply| Request::Read { reply }).await?
    }

    /// Proposes a membership change and waits until it is applied here.
    pub async fn change_membership(&self, change: ConfChange) -> Result<Members, ServerError> {
        self.ask(|reply| Request::ConfChange { change, reply })
            .await?
    }

    /// Asks this member's lessor (see [`LeaseQuery`]).
    pub async fn ask_lessor<T>(
        &self,
        query: impl FnOnce(oneshot::Sender<Result<T, LeaseError>>) -> LeaseQuery,
    ) -> Result<Result<T, LeaseError>, ServerError> {
        self.ask(|reply| Request::Lease(query(reply))).await
    }

    /// Starts a leadership transfer.
    pub async fn transfer_leader(&self, target: u64) -> Result<(), ServerError> {
        self.ask(|reply| Request::TransferLeader { target, reply })
            .await?
    }

    /// Known leader, if any.
    pub fn leader(&self) -> Option<u64> {
        match self.leader.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }
}

type ReadReply = oneshot::Sender<Result<(), ServerError>>;

enum Waiter {
    Command(oneshot::Sender<Result<CommandOutput, ServerError>>),
    Attributes,
    Conf(oneshot::Sender<Result<Members, ServerError>>),
}

/// Everything the loop needs to start.
pub struct ReplicaParts {
    /// The Raft core, restored.
    pub raft: Raft,
    /// Durable log.
    pub storage: RaftStorage,
    /// State machine.
    pub store: Store,
    /// Member table and where it lives.
    pub members: Members,
    /// Path of the member table file.
    pub members_path: PathBuf,
    /// Peer transport.
    pub transport: Arc<Transport>,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The inbox.
    pub inbox: InboxReceiver<Request>,
    /// Tick length.
    pub tick: Duration,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
    /// Entries a snapshot leaves in the log behind it.
    pub snapshot_catchup_entries: u64,
    /// Client URLs to publish.
    pub client_urls: Vec<String>,
    /// Settings of the leader's lessor.
    pub lessor: LessorConfig,
}

/// The loop's state.
pub struct Replica {
    raft: Raft,
    /// The durable log, written on its own thread (`wal_writer.rs`).
    wal: WalWriter,
    /// Commit notices waiting for a message to ride with.
    notices: HeldNotices,
    store: Store,
    members: Members,
    members_path: PathBuf,
    transport: Arc<Transport>,
    shared: Arc<Shared>,
    inbox: InboxReceiver<Request>,
    tick: Duration,
    snapshot_count: u64,
    snapshot_catchup_entries: u64,
    client_urls: Vec<String>,
    next_sequence: u64,
    waiters: HashMap<u64, Waiter>,
    waiter_deadlines: VecDeque<(Instant, u64)>,
    next_read_context: u64,
    /// Reads received this turn; they share one read index (invariant 7).
    reads_this_turn: Vec<ReadReply>,
    reads_in_flight: HashMap<u64, Vec<ReadReply>>,
    read_deadlines: VecDeque<(Instant, u64)>,
    reads_waiting_apply: BTreeMap<LogIndex, Vec<oneshot::Sender<Result<(), ServerError>>>>,
    last_snapshot_index: LogIndex,
    attributes_pending: bool,
    attributes_published: bool,
    lessor: Lessor,
    /// Set once this member's own removal applied: when to stop.
    stop_at: Option<Instant>,
    /// Peer connections this loop reads (transport's [`InboundPeer`]).
    inbound: Vec<InboundPeer>,
}

/// Reads what `peer` holds now into `frames`; false once the connection
/// is done (closed, bad bytes, sender no longer a member).
fn read_peer(peer: &mut InboundPeer, frames: &mut Vec<Inbound>) -> bool {
    match peer.read(frames) {
        Ok(()) => true,
        Err(reason) => {
            tracing::debug!(from = %peer.from(), %reason, "peer connection closed");
            false
        }
    }
}

fn encode_members(format: u8, members: &Members, extra_capacity: usize) -> Vec<u8> {
    let members_json = serde_json::to_vec(members).expect("plain data serializes");
    let mut out = Vec::with_capacity(5 + members_json.len() + extra_capacity);
    out.push(format);
    out.extend_from_slice(&(members_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&members_json);
    out
}

/// Creates the full snapshot payload: member table, then the store's own
/// stream.
pub(crate) fn encode_snapshot(members: &Members, store: &StoreReader) -> Result<Bytes, MvccError> {
    let mut out = encode_members(SNAPSHOT_FORMAT_FULL, members, 1024);
    store.snapshot_to(&mut out)?;
    Ok(Bytes::from(out))
}

/// Creates a reference snapshot payload (see [`SNAPSHOT_FORMAT_REFERENCE`]).
pub(crate) fn encode_snapshot_reference(members: &Members) -> Bytes {
    Bytes::from(encode_members(SNAPSHOT_FORMAT_REFERENCE, members, 0))
}

/// Splits a snapshot payload into the member table and the store stream;
/// the stream is `None` for a reference snapshot.
pub fn decode_snapshot(data: &[u8]) -> Result<(Members, Option<&[u8]>), String> {
    if data.len() < 5 || !matches!(data[0], SNAPSHOT_FORMAT_FULL | SNAPSHOT_FORMAT_REFERENCE) {
        return Err("unknown snapshot format".into());
    }
    let len = u32::from_le_bytes(data[1..5].try_into().expect("4 bytes")) as usize;
    if data.len() < 5 + len {
        return Err("truncated snapshot member table".into());
    }
    let members: Members =
        serde_json::from_slice(&data[5..5 + len]).map_err(|e| format!("member table: {e}"))?;
    let stream = (data[0] == SNAPSHOT_FORMAT_FULL).then_some(&data[5 + len..]);
    Ok((members, stream))
}

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The WAL failed: the member cannot promise durability any more.
    #[error("storage: {0}")]
    Storage(#[from] concord_storage::StorageError),
    /// The state machine failed.
    #[error("state machine: {0}")]
    Store(#[from] MvccError),
    /// The member table could not be saved.
    #[error("member table: {0}")]
    Members(#[from] std::io::Error),
    /// The WAL writer failed earlier (see [`crate::wal_writer`]).
    #[error(transparent)]
    Wal(#[from] WalFailed),
    /// A snapshot from the leader could not be installed.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// This member's id was removed from the cluster (invariant 5).
    #[error("{}", crate::members::REMOVED_MESSAGE)]
    Removed,
}

impl Replica {
    /// Builds the loop from its parts and starts its WAL writer thread.
    pub fn new(parts: ReplicaParts) -> std::io::Result<Replica> {
        let last_snapshot_index = parts.raft.log().snapshot_meta().index;
        // Sequence numbers start from the clock so a restarted member never
        // reuses one still referenced by an unapplied entry of its past life.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let wal = WalWriter::start(
            parts.storage,
            Arc::clone(&parts.transport),
            parts.shared.inbox.clone(),
        )?;
        Ok(Replica {
            raft: parts.raft,
            wal,
            notices: HeldNotices::new(COMMIT_NOTICE_DELAY),
            store: parts.store,
            members: parts.members,
            members_path: parts.members_path,
            transport: parts.transport,
            shared: parts.shared,
            inbox: parts.inbox,
            tick: parts.tick,
            snapshot_count: parts.snapshot_count,
            snapshot_catchup_entries: parts.snapshot_catchup_entries,
            client_urls: parts.client_urls,
            next_sequence: start,
            waiters: HashMap::new(),
            waiter_deadlines: VecDeque::new(),
            next_read_context: 1,
            reads_this_turn: Vec::new(),
            inbound: Vec::new(),
            reads_in_flight: HashMap::new(),
            read_deadlines: VecDeque::new(),
            reads_waiting_apply: BTreeMap::new(),
            last_snapshot_index,
            attributes_pending: false,
            attributes_published: false,
            lessor: Lessor::new(parts.lessor),
            stop_at: None,
        })
    }

    /// Runs until shutdown or a fatal error.
    pub fn run(mut self) -> Result<(), ReplicaError> {
        let mut next_tick = Instant::now() + self.tick;
        let mut batch: Vec<Request> = Vec::new();
        let mut readable = Vec::new();
        let result = 'turns: loop {
            let fds: Vec<_> = self.inbound.iter().map(|peer| peer.fd()).collect();
            let wake_at = self
                .notices
                .next_deadline()
                .map_or(next_tick, |at| at.min(next_tick));
            self.inbox.recv_or_readable(
                &mut batch,
                MAX_REQUESTS_PER_TURN,
                wake_at,
                &fds,
                &mut readable,
            );
            drop(fds);
            if let Err(e) = self.read_peers(&readable) {
                break Err(e);
            }
            for request in batch.drain(..) {
                match self.handle(request) {
                    Ok(false) => {}
                    Ok(true) => break 'turns Ok(()),
                    Err(e) => break 'turns Err(e),
                }
            }
            self.request_read_index();
            let now = Instant::now();
            if now >= next_tick {
                self.raft.tick();
                let scale = self
                    .shared
                    .tick_scale_percent
                    .load(Ordering::Relaxed)
                    .clamp(1, 10_000);
                let interval = self.tick * scale as u32 / 100;
                next_tick = now + interval;
                // The lessor sees how late this tick is: a stall must not
                // expire leases (lessor invariant 1).
                for command in self.lessor.tick(now, interval) {
                    self.propose_own(command);
                }
                self.expire_deadlines(now);
                self.maybe_publish_attributes();
                // etcd's backend batch interval: applied batches wait in
                // the store's open transaction at most about a tick.
                if let Err(e) = self.store.commit_pending() {
                    break Err(e.into());
                }
                if self.transport.removed_from_cluster() || self.stop_at.is_some_and(|at| now >= at)
                {
                    tracing::error!("{}", crate::members::REMOVED_MESSAGE);
                    break Err(ReplicaError::Removed);
                }
            }
            if let Err(e) = self.drive() {
                break Err(e);
            }
            let due = self.notices.due(Instant::now());
            if !due.is_empty() {
                self.transport.send(due);
            }
        };
        self.shared.stopped.store(true, Ordering::Release);
        if let Ok(mut storage) = self.wal.drain() {
            let _ = storage.sync_commit();
        }
        let _ = self.store.flush();
        result
    }

    /// Reads every inbound peer connection that may hold bytes and handles
    /// the frames as requests. `readable` is what the inbox's `poll`
    /// reported; when it reported none (the turn did not sleep, or woke
    /// for the inbox), one non-blocking `poll` asks again, so peers are
    /// read every turn however busy the inbox is.
    fn read_peers(&mut self, readable: &[bool]) -> Result<(), ReplicaError> {
        if self.inbound.is_empty() {
            return Ok(());
        }
        let mut ready = readable.to_vec();
        if ready.len() != self.inbound.len() || !ready.contains(&true) {
            let fds: Vec<_> = self.inbound.iter().map(|peer| peer.fd()).collect();
            crate::inbox::poll_readable(&fds, Some(Duration::ZERO), &mut ready);
        }
        let mut frames = Vec::new();
        let mut ready = ready.into_iter();
        self.inbound
            .retain_mut(|peer| !ready.next().unwrap_or(true) || read_peer(peer, &mut frames));
        self.handle_frames(frames)
    }

    fn handle_frames(&mut self, frames: Vec<Inbound>) -> Result<(), ReplicaError> {
        for inbound in frames {
            self.handle(Request::Peer(inbound))?;
        }
        Ok(())
    }

    /// Handles one request; `Ok(true)` means stop.
    fn handle(&mut self, request: Request) -> Result<bool, ReplicaError> {
        match request {
            Request::Shutdown => return Ok(true),
            Request::Snapshot(event) => self.on_snapshot_event(event),
            Request::Persisted(markers) => {
                for marker in markers {
                    self.raft.on_persisted(marker);
                }
            }
            Request::WalFailed(e) => return Err(e.into()),
            Request::Propose { command, reply } => {
                let sequence = self.next_sequence();
                let envelope = Envelope {
                    origin: self.shared.member_id,
                    sequence,
                    payload: Payload::Kv(command),
                };
                self.propose(envelope.encode(), sequence, Waiter::Command(reply));
            }
            Request::ProposePayload { payload, reply } => {
                let sequence = self.next_sequence();
                let envelope = Envelope {
                    origin: self.shared.member_id,
                    sequence,
                    payload,
                };
                self.propose(envelope.encode(), sequence, Waiter::Command(reply));
            }
            Request::Defragment { reply } => {
                let _ = reply.send(self.store.defragment().map_err(ServerError::from));
            }
            Request::Read { reply } => self.reads_this_turn.push(reply),
            Request::PeerConnection(mut peer) => {
                if self.inbound.len() >= MAX_INBOUND_PEERS {
                    tracing::warn!(from = %peer.from(), "too many peer connections; refused");
                    return Ok(false);
                }
                // Frames that came in with the Hello are buffered already,
                // and `poll` would not report them.
                let mut frames = Vec::new();
                if read_peer(&mut peer, &mut frames) {
                    self.inbound.push(peer);
                }
                self.handle_frames(frames)?;
            }
            Request::Peer(Inbound::Raft(messages)) => {
                for m in messages {
                    // Invariant 5 (the transport refuses them first).
                    if !self.members.removed.contains(&m.from.0) {
                        self.raft.step(m);
                    }
                }
            }
            Request::Peer(Inbound::Forward(proposals)) => {
                for proposal in proposals {
                    // Junk from a peer never enters the log.
                    if Envelope::decode(&proposal).is_ok() {
                        let _ = self.raft.propose(proposal);
                    }
                }
            }
            Request::ConfChange { change, reply } => match self
                .check_conf_change(&change)
                .and_then(|()| self.raft.propose_conf_change(change).map_err(propose_error))
            {
                Ok(index) => {
                    let sequence = index.0 | (1 << 63);
                    self.waiters.insert(sequence, Waiter::Conf(reply));
                    self.waiter_deadlines
                        .push_back((Instant::now() + self.shared.request_timeout, sequence));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::Lease(query) => self.answer_lease(query),
            Request::TransferLeader { target, reply } => {
                let result = self
                    .raft
                    .transfer_leadership(NodeId(target))
                    .map_err(propose_error);
                let _ = reply.send(result);
            }
        }
        Ok(false)
    }

    /// Asks the core for one read index for every read received this turn
    /// (invariant 7): a follower sends one ReadIndex message to the leader,
    /// not one per read.
    fn request_read_index(&mut self) {
        if self.reads_this_turn.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut self.reads_this_turn);
        let context = self.next_read_context;
        self.next_read_context += 1;
        match self.raft.read_index(context) {
            Ok(()) => {
                self.reads_in_flight.insert(context, replies);
                self.read_deadlines
                    .push_back((Instant::now() + self.shared.request_timeout, context));
            }
            Err(_) => {
                for reply in replies {
                    let _ = reply.send(Err(ServerError::NoLeader));
                }
            }
        }
    }

    /// The leader's checks of a membership change before proposing it: a
    /// removed id never comes back, and a learner is promoted only once in
    /// sync (invariant 6).
    fn check_conf_change(&self, change: &ConfChange) -> Result<(), ServerError> {
        let id = change.node.0;
        if change.kind != ConfChangeKind::Remove && self.members.removed.contains(&id) {
            return Err(ServerError::Membership("ID removed".into()));
        }
        let promotion = change.kind == ConfChangeKind::AddVoter
            && self.members.members.get(&id).is_some_and(|m| m.is_learner);
        if promotion && self.raft.role() == concord_raft::Role::Leader {
            let leader_match = self.raft.match_index(self.raft.id()).unwrap_or_default();
            let learner_match = self.raft.match_index(change.node).unwrap_or_default();
            if learner_match.0.saturating_mul(100)
                < leader_match.0.saturating_mul(PROMOTE_READY_PERCENT)
            {
                return Err(ServerError::Membership(LEARNER_NOT_READY.into()));
            }
        }
        Ok(())
    }

    fn answer_lease(&mut self, query: LeaseQuery) {
        let now = Instant::now();
        match query {
            LeaseQuery::Renew { id, reply } => {
                let result = self.lessor.renew(id, now).map(|(ttl, reset)| {
                    if let Some(command) = reset {
                        self.propose_own(command);
                    }
                    ttl
                });
                let _ = reply.send(result);
            }
            LeaseQuery::TimeToLive { id, reply } => {
                let _ = reply.send(self.lessor.time_to_live(id, now));
            }
        }
    }

    /// Proposes a command of the leader's own (lease expiry, checkpoints)
    /// that no client waits for; dropped unless this member leads.
    fn propose_own(&mut self, command: Command) {
        if self.raft.role() != concord_raft::Role::Leader {
            return;
        }
        let envelope = Envelope {
            origin: self.shared.member_id,
            sequence: self.next_sequence(),
            payload: Payload::Kv(command),
        };
        if let Err(e) = self.raft.propose(envelope.encode()) {
            tracing::debug!(error = ?e, "lessor proposal dropped");
        }
    }

    /// Promotes or demotes the lessor when leadership changed.
    fn sync_lessor_role(&mut self) -> Result<(), ReplicaError> {
        let leading = self.raft.role() == concord_raft::Role::Leader;
        if leading && !self.lessor.is_primary() {
            let leases = self.store.reader().leases()?;
            tracing::info!(leases = leases.len(), "lessor promoted");
            self.lessor.promote(leases, Instant::now());
        } else if !leading && self.lessor.is_primary() {
            self.lessor.demote();
        }
        Ok(())
    }

    fn next_sequence(&mut self) -> u64 {
        self.next_sequence = (self.next_sequence + 1) & !(1 << 63);
        self.next_sequence
    }

    fn propose(&mut self, data: Bytes, sequence: u64, waiter: Waiter) {
        let result = if self.raft.role() == concord_raft::Role::Leader {
            self.raft.propose(data).map(|_| ())
        } else {
            match self.raft.leader() {
                Some(leader) => {
                    if self.transport.forward(leader, data) {
                        Ok(())
                    } else {
                        Err(ProposeError::Backpressure)
                    }
                }
                None => Err(ProposeError::NotLeader { leader: None }),
            }
        };
        match result {
            Ok(()) => {
                self.waiters.insert(sequence, waiter);
                self.waiter_deadlines
                    .push_back((Instant::now() + self.shared.request_timeout, sequence));
            }
            Err(e) => match waiter {
                Waiter::Command(reply) => {
                    let _ = reply.send(Err(propose_error(e)));
                }
                Waiter::Conf(reply) => {
                    let _ = reply.send(Err(propose_error(e)));
                }
                Waiter::Attributes => self.attributes_pending = false,
            },
        }
    }

    fn maybe_publish_attributes(&mut self) {
        if self.attributes_published || self.attributes_pending || self.raft.leader().is_none() {
            return;
        }
        let me = self.shared.member_id;
        let current = self.members.members.get(&me);
        if current.is_some_and(|m| m.name == self.shared.name && m.client_urls == self.client_urls)
        {
            self.attributes_published = true;
            return;
        }
        let sequence = self.next_sequence();
        let envelope = Envelope {
            origin: me,
            sequence,
            payload: Payload::MemberAttributes {
                id: me,
                name: self.shared.name.clone(),
                client_urls: self.client_urls.clone(),
            },
        };
        self.attributes_pending = true;
        self.propose(envelope.encode(), sequence, Waiter::Attributes);
    }

    fn expire_deadlines(&mut self, now: Instant) {
        while let Some(&(deadline, sequence)) = self.waiter_deadlines.front() {
            if deadline > now {
                break;
            }
            self.waiter_deadlines.pop_front();
            match self.waiters.remove(&sequence) {
                Some(Waiter::Command(reply)) => {
                    let _ = reply.send(Err(ServerError::Timeout));
                }
                Some(Waiter::Conf(reply)) => {
                    let _ = reply.send(Err(ServerError::Timeout));
                }
                Some(Waiter::Attributes) => self.attributes_pending = false,
                None => {}
            }
        }
        while let Some(&(deadline, context)) = self.read_deadlines.front() {
            if deadline > now {
                break;
            }
            self.read_deadlines.pop_front();
            for reply in self.reads_in_flight.remove(&context).into_iter().flatten() {
                let _ = reply.send(Err(ServerError::Timeout));
            }
        }
    }

    /// Makes `job` durable on this thread, then sends what it promised and
    /// tells the core. The writer is idle once `drain` returns, so the job
    /// keeps its place after every earlier one (WAL writer invariant 2).
    fn persist_here(&mut self, job: PersistJob) -> Result<(), ReplicaError> {
        write_group(&mut *self.wal.drain()?, std::slice::from_ref(&job))?;
        self.transport.send(job.messages_after_persist);
        self.raft.on_persisted(job.marker);
        Ok(())
    }

    /// Processes every pending `Ready`.
    fn drive(&mut self) -> Result<(), ReplicaError> {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            self.process(ready)?;
        }
        Ok(())
    }

    fn process(&mut self, ready: Ready) -> Result<(), ReplicaError> {
        let needs_persist = ready.needs_persist();
        // 1. Messages that depend on nothing unpersisted go out first, so
        //    followers write in parallel with our own fsync.
        //    A leader's commit notices wait a little for the next append
        //    to carry them instead (`commit_notices`).
        let messages = self.notices.filter(ready.messages, Instant::now());
        self.transport.send(messages);

        // 2 and 3. Durability (snapshot, entries, hard state, one fsync),
        //    then what promised it. A snapshot is installed here, after
        //    every earlier write, because the store is replaced with it
        //    before anything later applies; everything else goes to the WAL
        //    writer, which sends the after-persist messages and reports
        //    back (`Request::Persisted`) while this loop goes on applying.
        if let Some(snapshot) = &ready.snapshot {
            self.install_snapshot(snapshot)?;
            let job = PersistJob {
                entries: ready.entries,
                hard_state: ready.hard_state,
                messages_after_persist: ready.messages_after_persist,
                marker: ready.persist_marker,
            };
            self.persist_here(job)?;
            // Durable in its file now; loaded back if we lead one day and a
            // follower needs it.
            self.raft.release_snapshot_data();
        } else if needs_persist || !ready.messages_after_persist.is_empty() {
            let job = PersistJob {
                entries: ready.entries,
                hard_state: ready.hard_state,
                messages_after_persist: ready.messages_after_persist,
                marker: ready.persist_marker,
            };
            // A follower (or candidate) has nothing to do while its append
            // syncs but wait for the next one, which the inbox batches
            // meanwhile: writing here saves two thread hand-offs per append
            // (to the writer and back), each a wake-up that costs more than
            // the work on a virtual machine. A leader keeps its loop free to
            // take proposals and acks while its disk syncs; and a busy
            // writer means a job is in flight, which this one must queue
            // behind (WAL writer invariant 1).
            if self.raft.role() != concord_raft::Role::Leader && self.wal.idle() {
                self.persist_here(job)?;
            } else {
                self.wal.submit(job);
            }
        } else {
            // Nothing written and nothing promised: the marker is empty, and
            // reporting an empty marker early is harmless (it only lets a
            // leader recount its commit index).
            self.raft.on_persisted(ready.persist_marker);
        }
        if let Some(index) = ready.load_snapshot {
            let path = self.wal.drain()?.snapshot_path(index);
            match path {
                Some(path) => snapshotter::spawn_load(
                    index,
                    path,
                    self.store.reader(),
                    self.shared.inbox.clone(),
                ),
                None => self.raft.snapshot_load_failed(index),
            }
        }

        if let Some(soft) = ready.soft_state {
            self.shared
                .leader
                .store(soft.leader.map(|l| l.0).unwrap_or(0), Ordering::Release);
            self.shared.term.store(soft.term.0, Ordering::Release);
            if !soft.is_leader {
                self.notices.clear();
                // Forwarded proposals in flight may be lost with the old
                // leader; their deadlines answer them.
            }
        }

        // 4. Apply (the lessor first learns whether it is primary, so the
        //    lease commands applied below update the right table).
        self.sync_lessor_role()?;
        self.apply(ready.committed_entries)?;
        self.shared
            .commit_index
            .store(self.raft.log().committed().0, Ordering::Release);

        // 5. Reads.
        for read in ready.read_states {
            let Some(replies) = self.reads_in_flight.remove(&read.context) else {
                continue;
            };
            match read.index {
                Some(index) if index.0 <= self.store.applied_index() => {
                    for reply in replies {
                        let _ = reply.send(Ok(()));
                    }
                }
                Some(index) => self
                    .reads_waiting_apply
                    .entry(index)
                    .or_default()
                    .extend(replies),
                None => {
                    for reply in replies {
                        let _ = reply.send(Err(ServerError::LeaderChanged));
                    }
                }
            }
        }
        self.release_reads();
        self.maybe_snapshot()?;
        Ok(())
    }

    fn release_reads(&mut self) {
        let applied = LogIndex(self.store.applied_index());
        while let Some(entry) = self.reads_waiting_apply.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for reply in entry.remove() {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), ReplicaError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch: Vec<(u64, Command)> = Vec::with_capacity(entries.len());
        let mut owners: Vec<Option<u64>> = Vec::with_capacity(entries.len());
        let mut members_changed = false;
        let mut conf_applied: Vec<u64> = Vec::new();
        for entry in entries {
            let index = entry.index.0;
            match entry.kind {
                EntryKind::ConfChange => {
                    if index > self.members.applied_index {
                        if let Ok(change) = ConfChange::decode(&entry.data) {
                            self.apply_conf_change(&change);
                            members_changed = true;
                        }
                    }
                    conf_applied.push(index);
                    batch.push((index, Command::Noop));
                    owners.push(None);
                }
                EntryKind::Normal if entry.data.is_empty() => {
                    batch.push((index, Command::Noop));
                    owners.push(None);
                }
                EntryKind::Normal => match Envelope::decode(&entry.data) {
                    Ok(envelope) => {
                        let mine = envelope.origin == self.shared.member_id;
                        let owner = mine.then_some(envelope.sequence);
                        match envelope.payload {
                            Payload::Kv(command) => {
                                batch.push((index, command));
                                owners.push(owner);
                            }
                            Payload::MemberAttributes {
                                id,
                                name,
                                client_urls,
                            } => {
                                if index > self.members.applied_index {
                                    if let Some(member) = self.members.members.get_mut(&id) {
                                        member.name = name;
                                        member.client_urls = client_urls;
                                        members_changed = true;
                                    }
                                }
                                if mine && self.waiters.remove(&envelope.sequence).is_some() {
                                    self.attributes_pending = false;
                                    self.attributes_published = true;
                                }
                                batch.push((index, Command::Noop));
                                owners.push(None);
                            }
                            Payload::Alarm(change) => {
                                if index > self.members.applied_index
                                    && self.members.alarms.apply(&change)
                                {
                                    members_changed = true;
                                }
                                batch.push((index, Command::Noop));
                                owners.push(owner);
                            }
                        }
                    }
                    Err(e) => {
                        // Every member sees the same bytes, so skipping is
                        // deterministic; it can only come from a bug.
                        tracing::error!(index, error = %e, "skipping undecodable entry");
                        batch.push((index, Command::Noop));
                        owners.push(None);
                    }
                },
            }
        }
        let last_index = batch.last().map(|(i, _)| *i).unwrap_or(0);
        let results = self.store.apply_batch(&batch)?;
        let now = Instant::now();
        for ((_, command), result) in batch.iter().zip(&results) {
            let fresh = !matches!(
                result,
                Ok(CommandOutput {
                    response: concord_mvcc::Response::AlreadyApplied,
                    ..
                })
            );
            if fresh {
                self.lessor.on_applied(command, result.is_ok(), now);
            }
        }
        if members_changed || last_index > self.members.applied_index {
            self.members.applied_index = last_index;
            if members_changed {
                self.members.save(&self.members_path)?;
                *self.shared.members.write().expect("lock") = self.members.clone();
            }
        }
        let mut events: Vec<Event> = Vec::new();
        for (mut result, owner) in results.into_iter().zip(owners) {
            // Moved, not copied: a client's answer never carries events.
            if let Ok(output) = &mut result {
                events.append(&mut output.events);
            }
            let Some(sequence) = owner else { continue };
            if let Some(Waiter::Command(reply)) = self.waiters.remove(&sequence) {
                let _ = reply.send(result.map_err(ServerError::from));
            }
        }
        for index in conf_applied {
            if let Some(Waiter::Conf(reply)) = self.waiters.remove(&(index | (1 << 63))) {
                let _ = reply.send(Ok(self.members.clone()));
            }
        }
        if !events.is_empty() {
            let _ = self.shared.events.send(Arc::new(events));
        }
        self.shared
            .applied_index
            .store(self.store.applied_index(), Ordering::Release);
        Ok(())
    }

    fn apply_conf_change(&mut self, change: &ConfChange) {
        let id = change.node.0;
        let context: ConfChangeContext =
            serde_json::from_slice(&change.context).unwrap_or_default();
        match change.kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner
                if self.members.removed.contains(&id) =>
            {
                // Refused when proposed (check_conf_change); never a member
                // again (members.rs invariant 3).
                tracing::error!(id, "ignoring the re-addition of a removed member id");
            }
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                let member = self.members.members.entry(id).or_insert_with(|| Member {
                    id,
                    ..Default::default()
                });
                if !context.peer_urls.is_empty() {
                    member.peer_urls = context.peer_urls.clone();
                }
                if !context.name.is_empty() && member.name.is_empty() {
                    member.name = context.name.clone();
                }
                member.is_learner = change.kind == ConfChangeKind::AddLearner;
                if id == self.shared.member_id {
                    self.shared
                        .is_learner
                        .store(member.is_learner, Ordering::Release);
                } else if let Some(url) = member.peer_urls.first() {
                    if let Ok(addr) = crate::transport::url_to_addr(url) {
                        self.transport.add_peer(NodeId(id), addr);
                    }
                }
            }
            ConfChangeKind::Remove => {
                self.members.members.remove(&id);
                self.members.removed.insert(id);
                self.transport.mark_removed(NodeId(id));
                self.note_if_removed();
            }
        }
    }

    /// Schedules the stop of a member whose own removal applied
    /// (invariant 5).
    fn note_if_removed(&mut self) {
        if self.stop_at.is_none() && self.members.removed.contains(&self.shared.member_id) {
            tracing::warn!("this member was removed; stopping in {REMOVED_STOP_DELAY:?}");
            self.stop_at = Some(Instant::now() + REMOVED_STOP_DELAY.max(self.tick * 10));
        }
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), ReplicaError> {
        self.wal.drain()?.save_snapshot(snapshot)?;
        let (members, store_stream) =
            decode_snapshot(&snapshot.data).map_err(ReplicaError::Snapshot)?;
        let Some(store_stream) = store_stream else {
            return Err(ReplicaError::Snapshot(
                "the leader sent a reference snapshot, which only its own store can fill".into(),
            ));
        };
        self.store.restore_from(store_stream)?;
        tracing::info!(
            index = snapshot.meta.index.0,
            "installed a snapshot from the leader"
        );
        compact_after_restore(&mut self.store);
        self.members = members;
        self.members.applied_index = snapshot.meta.index.0;
        self.members.save(&self.members_path)?;
        *self.shared.members.write().expect("lock") = self.members.clone();
        for id in &self.members.removed {
            self.transport.mark_removed(NodeId(*id));
        }
        self.note_if_removed();
        for member in self.members.members.values() {
            if member.id != self.shared.member_id {
                if let Some(addr) = member
                    .peer_urls
                    .first()
                    .and_then(|u| crate::transport::url_to_addr(u).ok())
                {
                    self.transport.add_peer(NodeId(member.id), addr);
                }
            }
        }
        self.last_snapshot_index = snapshot.meta.index;
        self.shared
            .applied_index
            .store(self.store.applied_index(), Ordering::Release);
        // Gap marker: watchers re-read history (the events the snapshot
        // covers were never broadcast here).
        let _ = self.shared.events.send(Arc::new(Vec::new()));
        Ok(())
    }

    /// Compacts the log when enough was applied since the last snapshot.
    /// The snapshot is a reference to the store (see
    /// [`SNAPSHOT_FORMAT_REFERENCE`]), so it costs one durable store commit
    /// and a small file, however large the store is.
    /// Takes a snapshot every `snapshot_count` applied entries, at
    /// `snapshot_catchup_entries` behind the applied index, and compacts
    /// the log up to it: the entries after it stay, so a follower that
    /// fell less than that behind catches up from the log (a snapshot of a
    /// large store costs seconds to send and install).
    fn maybe_snapshot(&mut self) -> Result<(), ReplicaError> {
        let applied = LogIndex(self.store.applied_index());
        if applied > self.raft.log().applied() {
            return Ok(());
        }
        let Some(index) = applied.0.checked_sub(self.snapshot_catchup_entries) else {
            return Ok(());
        };
        if index < self.last_snapshot_index.0 + self.snapshot_count {
            return Ok(());
        }
        let index = LogIndex(index);
        // The reference promises the store holds everything through its
        // index after any crash (the store is at `applied`, past it; replay
        // skips what the store already has).
        self.store.flush()?;
        let data = encode_snapshot_reference(&self.members);
        let meta = match self.raft.compact(index, data.clone()) {
            Ok(meta) if meta.index == index => meta,
            // Not compactable, or a snapshot from the leader is newer.
            _ => return Ok(()),
        };
        let mut storage = self.wal.drain()?;
        storage.save_snapshot(&Snapshot { meta, data })?;
        self.raft.release_snapshot_data();
        let keep_from = LogIndex(self.store.durable_applied_index().min(index.0));
        storage.compact(keep_from)?;
        self.last_snapshot_index = index;
        Ok(())
    }

    fn on_snapshot_event(&mut self, event: SnapshotEvent) {
        let SnapshotEvent::Loaded { index, data } = event;
        match data {
            Ok(data) => self.raft.provide_snapshot_data(index, data),
            Err(e) => {
                // Replaced by a newer snapshot meanwhile, most likely; the
                // follower's next need asks again.
                tracing::warn!(%index, error = %e, "snapshot load failed");
                self.raft.snapshot_load_failed(index);
            }
        }
    }
}

/// A restore replaces every record in one transaction, which leaves the
/// file about twice the data (measured: 2.16 GB for a store whose members
/// hold 0.9 GB, over etcd's default 2 GiB quota, so the NOSPACE alarm went
/// off right after a follower caught up by snapshot). Defragmenting gives
/// the space back; failing to is not an error (the data is intact).
pub(crate) fn compact_after_restore(store: &mut Store) {
    let before = store.db_size_bytes().unwrap_or(0);
    match store.defragment() {
        Ok(()) => tracing::info!(
            before,
            after = store.db_size_bytes().unwrap_or(0),
            "store defragmented after restore"
        ),
        Err(e) => tracing::warn!(error = %e, "defragment after restore failed"),
    }
}

fn propose_error(e: ProposeError) -> ServerError {
    match e {
        ProposeError::NotLeader { .. } => ServerError::NoLeader,
        ProposeError::TransferInProgress => ServerError::LeaderChanged,
        ProposeError::Backpressure => ServerError::TooManyRequests,
        ProposeError::ConfChangeInProgress => {
            ServerError::Membership("unhealthy cluster".to_string())
        }
        ProposeError::Invalid(why) => ServerError::Membership(why.to_string()),
    }
}

/// Creates the broadcast channel for applied events.
pub fn event_channel() -> broadcast::Sender<Arc<Vec<Event>>> {
    broadcast::channel(EVENT_CHANNEL_BATCHES).0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removed ids travel with the member table in both snapshot forms
    /// (members.rs invariant 3), so a member restored from a snapshot still
    /// refuses them.
    #[test]
    fn removed_ids_survive_snapshots() {
        let mut members = Members {
            applied_index: 7,
            ..Members::default()
        };
        members.removed.insert(42);
        let reference = encode_snapshot_reference(&members);
        let (decoded, stream) = decode_snapshot(&reference).unwrap();
        assert!(stream.is_none());
        assert_eq!(decoded, members);
        let mut full = encode_members(SNAPSHOT_FORMAT_FULL, &members, 0);
        full.extend_from_slice(b"store");
        let (decoded, stream) = decode_snapshot(&full).unwrap();
        assert_eq!(decoded.removed, members.removed);
        assert_eq!(stream, Some(&b"store"[..]));
    }
}
