//! The simulation loop: real `concord_raft::Raft` cores, a virtual clock, an
//! event queue, a faulty network, faulty disks, clients and a nemesis.
//!
//! One seed drives everything: the fault mix ([`Params::draw`]), every
//! latency, loss, crash and client choice, and each core's election jitter.
//! A run has two phases. In the safety phase every fault is on: crashes,
//! partitions, loss, duplication, reordering, slow and torn disks, clock
//! drift, leadership transfers and membership changes. In the liveness phase
//! every node is up and a voter again, and the network is healthy (no cuts,
//! no loss, no reordering); by its end there is a leader, every node has
//! applied its commit index, and every acknowledged write is applied on
//! every node.
//!
//! The runtime side of the `Ready` contract is modelled exactly: `messages`
//! leave at once; a Ready's writes are queued on the node's disk and become
//! durable only when a later fsync completes; only then do its
//! `messages_after_persist` leave and `on_persisted` run. Committed entries
//! are applied as they are handed out (they are durable already); an
//! installed snapshot is applied when its fsync completes.
//!
//! Invariants:
//! 1. Nothing here reads a real clock or an unseeded RNG: a seed replays
//!    bit for bit.
//! 2. After every event the [`Checker`] properties hold, or the run stops
//!    with a [`Violation`] naming the first one broken.
//! 3. A crashed node keeps only its disk (durable image, plus a torn prefix
//!    of queued writes); everything else is rebuilt through `RestoredState`.
//! 4. A Ready with nothing to write still waits behind the writes queued
//!    before it: its acknowledgements may be about their entries.

use crate::checker::Checker;
use crate::disk::{Disk, QueuedWrite};
use crate::history::History;
use crate::kv::{Kv, Write};
use crate::net::Links;
use crate::params::Params;
use bytes::Bytes;
use concord_raft::config::LeaseReadConfig;
use concord_raft::{
    ConfChange, ConfChangeKind, ConfState, Config, LogIndex, Message, MessageBody, NodeId,
    ProposeError, Raft, Ready, RestoredState, Role, Snapshot, Term,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Trace lines kept in memory while tracing; a failing run prints the tail.
pub const TRACE_KEEP: usize = 20_000;

/// Share of the liveness phase at its end during which clients start no new
/// operation, so the cluster can settle before the final check.
const QUIET_TAIL_PCT: u64 = 40;

/// Client retry delay after a refusal (not leader, node down), microseconds:
/// about a tick, so a client finds a new leader soon without spinning.
const CLIENT_RETRY_US: u64 = 10_000;

/// Events in flight, at most. A healthy run of 7 nodes keeps a few thousand;
/// far more means the cores amplify messages (a storm), which is a bug in
/// its own right and would otherwise exhaust memory.
const MAX_QUEUED_EVENTS: usize = 100_000;

/// Events processed per run, at most (a 7-node run takes about 25,000).
const MAX_EVENTS: u64 = 500_000;

// The quiet tail is a part of the heal phase, and leaves some of it for
// clients.
const _: () = assert!(QUIET_TAIL_PCT > 0 && QUIET_TAIL_PCT < 100);
// A storm is declared well above what any healthy run queues.
const _: () = assert!(MAX_QUEUED_EVENTS as u64 <= MAX_EVENTS);

/// During the heal phase the leader re-adds every node that a membership
/// change removed, one change per this many microseconds, so the final
/// check can expect every node to be a caught-up voter.
const RESTORE_EVERY_US: u64 = 20_000;

/// How to run one simulation.
#[derive(Clone, Copy)]
pub struct SimOptions {
    /// The seed: it alone determines the run.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Keep a trace (slower; used to replay a failing seed).
    pub trace: bool,
    /// Adjusts the drawn fault mix (used by tests that need a harsher mix).
    pub tune: Option<fn(&mut Params)>,
    /// Called on every core right after it is created or restarted. The
    /// mistake tests use it to switch on `Raft::set_mistakes`; the binaries
    /// never set it.
    pub on_raft_created: Option<fn(&mut Raft)>,
}

impl SimOptions {
    /// Plain options for `seed` on `nodes` nodes.
    pub fn new(seed: u64, nodes: usize) -> SimOptions {
        SimOptions {
            seed,
            nodes,
            trace: false,
            tune: None,
            on_raft_created: None,
        }
    }
}

/// The first property a run broke.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Virtual time, microseconds.
    pub at_us: u64,
    /// What broke.
    pub what: String,
}

/// Counters describing what a run exercised.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Events processed.
    pub events: u64,
    /// Messages handed to the network.
    pub messages: u64,
    /// Distinct (term, leader) pairs seen.
    pub leaders: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Crashes that kept a torn prefix of unsynced writes.
    pub torn_crashes: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Leadership transfers requested.
    pub transfers: u64,
    /// Membership changes proposed (and accepted by a leader).
    pub conf_changes: u64,
    /// Writes acknowledged to clients.
    pub writes_acked: u64,
    /// Writes that ended without an acknowledgement.
    pub writes_unacked: u64,
    /// Reads served.
    pub reads_ok: u64,
    /// Reads refused or timed out.
    pub reads_failed: u64,
    /// Reads the leader answered at once (leader lease).
    pub reads_without_round_trip: u64,
    /// Log compactions.
    pub compactions: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Snapshot data loaded back from "disk" for a follower.
    pub snapshot_loads: u64,
    /// Highest commit index reached.
    pub max_commit: u64,
}

impl Stats {
    /// Adds another run's counters.
    pub fn add(&mut self, o: &Stats) {
        self.events += o.events;
        self.messages += o.messages;
        self.leaders += o.leaders;
        self.crashes += o.crashes;
        self.torn_crashes += o.torn_crashes;
        self.partitions += o.partitions;
        self.transfers += o.transfers;
        self.conf_changes += o.conf_changes;
        self.writes_acked += o.writes_acked;
        self.writes_unacked += o.writes_unacked;
        self.reads_ok += o.reads_ok;
        self.reads_failed += o.reads_failed;
        self.reads_without_round_trip += o.reads_without_round_trip;
        self.compactions += o.compactions;
        self.snapshots_installed += o.snapshots_installed;
        self.snapshot_loads += o.snapshot_loads;
        self.max_commit += o.max_commit;
    }
}

/// The result of one run.
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// The fault mix it drew.
    pub params: Params,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// What the run exercised.
    pub stats: Stats,
    /// The last trace lines (empty unless tracing).
    pub trace: Vec<String>,
}

/// Runs one simulation. Panics inside the core (its assertions) are caught
/// and reported as violations.
pub fn run(options: SimOptions) -> Outcome {
    let mut sim = Sim::new(options);
    let result = catch_unwind(AssertUnwindSafe(|| sim.run()));
    if let Err(panic) = result {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string());
        sim.violation.get_or_insert(Violation {
            at_us: sim.now,
            what: format!("panic: {msg}"),
        });
    }
    Outcome {
        seed: options.seed,
        nodes: options.nodes,
        params: sim.params.clone(),
        violation: sim.violation.take(),
        stats: sim.stats.clone(),
        trace: sim.trace.map(Vec::from).unwrap_or_default(),
    }
}

enum EventKind {
    Tick(usize, u64),
    Deliver(Message),
    FsyncDone(usize, u64),
    SnapshotLoaded(usize, u64, LogIndex),
    Crash,
    Restart(usize),
    Partition,
    Heal,
    Transfer,
    Reconfigure,
    Restore,
    ClientStep(usize),
    ClientTimeout(usize, u64),
    Liveness,
}

struct Event {
    at: u64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse for earliest first; `seq` breaks
        // ties in scheduling order, keeping runs deterministic.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Proposal {
    client: usize,
    op: u64,
    term: Term,
    value: u64,
}

struct PendingRead {
    client: usize,
    op: u64,
    index: LogIndex,
}

struct SimNode {
    raft: Option<Raft>,
    epoch: u64,
    disk: Disk,
    sm: Kv,
    tick_us: u64,
    last_snapshot: LogIndex,
    proposals: BTreeMap<LogIndex, Proposal>,
    reads: BTreeMap<u64, (usize, u64)>,
    waiting_reads: BTreeMap<u64, PendingRead>,
    seen_commit: LogIndex,
    seen_leader_term: Option<Term>,
}

enum OpKind {
    Write { key: u8, value: u64 },
    Read { key: u8, floor_len: usize },
}

struct ClientOp {
    id: u64,
    kind: OpKind,
}

struct Client {
    op: Option<ClientOp>,
    next_op: u64,
    next_value: u64,
    leader_hint: Option<usize>,
}

#[derive(PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness,
}

struct Sim {
    options: SimOptions,
    params: Params,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Event>,
    nodes: Vec<SimNode>,
    links: Links,
    clients: Vec<Client>,
    checker: Checker,
    history: History,
    phase: Phase,
    next_ctx: u64,
    stats: Stats,
    violation: Option<Violation>,
    trace: Option<VecDeque<String>>,
}

fn node_index(id: NodeId) -> usize {
    (id.0 - 1) as usize
}

fn node_id(index: usize) -> NodeId {
    NodeId(index as u64 + 1)
}

impl Sim {
    fn new(options: SimOptions) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut params = Params::draw(&mut rng, options.nodes);
        if let Some(tune) = options.tune {
            tune(&mut params);
        }
        let nodes = (0..options.nodes)
            .map(|i| SimNode {
                raft: None,
                epoch: 0,
                disk: Disk::default(),
                sm: Kv::default(),
                tick_us: params.tick_us[i],
                last_snapshot: LogIndex(0),
                proposals: BTreeMap::new(),
                reads: BTreeMap::new(),
                waiting_reads: BTreeMap::new(),
                seen_commit: LogIndex(0),
                seen_leader_term: None,
            })
            .collect();
        let clients = (0..params.clients)
            .map(|_| Client {
                op: None,
                next_op: 0,
                next_value: 0,
                leader_hint: None,
            })
            .collect();
        Sim {
            links: Links::new(options.nodes),
            trace: options.trace.then(VecDeque::new),
            options,
            params,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            clients,
            checker: Checker::default(),
            history: History::default(),
            phase: Phase::Safety,
            next_ctx: 1,
            stats: Stats::default(),
            violation: None,
        }
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            let t = self.now;
            trace.push_back(format!("{:>5}.{:03}ms {}", t / 1000, t % 1000, line()));
            if trace.len() > TRACE_KEEP {
                trace.pop_front();
            }
        }
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.log(|| format!("VIOLATION: {what}"));
            self.violation = Some(Violation {
                at_us: self.now,
                what,
            });
        }
    }

    fn check(&mut self, result: Result<(), String>) {
        if let Err(e) = result {
            self.fail(e);
        }
    }

    fn schedule(&mut self, delay: u64, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Event {
            at: self.now + delay,
            seq: self.seq,
            kind,
        });
    }

    fn uniform(&mut self, (lo, hi): (u64, u64)) -> u64 {
        self.rng.gen_range(lo..=hi)
    }

    /// An exponential-ish gap with the given mean (uniform on [0, 2*mean]).
    fn gap(&mut self, mean: u64) -> u64 {
        self.rng.gen_range(0..=2 * mean)
    }

    fn run(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        let p = self.params.clone();
        let g = self.gap(p.crash_every_us);
        self.schedule(g, EventKind::Crash);
        let g = self.gap(p.partition_every_us);
        self.schedule(g, EventKind::Partition);
        let g = self.gap(p.transfer_every_us);
        self.schedule(g, EventKind::Transfer);
        let g = self.gap(p.reconfigure_every_us);
        self.schedule(g, EventKind::Reconfigure);
        for c in 0..self.clients.len() {
            let g = self.uniform(p.think_us);
            self.schedule(g, EventKind::ClientStep(c));
        }
        self.schedule(p.safety_us, EventKind::Liveness);
        let end = p.safety_us + p.liveness_us;
        while let Some(event) = self.queue.pop() {
            if event.at > end || self.violation.is_some() {
                break;
            }
            self.now = event.at;
            self.stats.events += 1;
            if self.queue.len() > MAX_QUEUED_EVENTS || self.stats.events > MAX_EVENTS {
                let queued = self.queue.len();
                self.fail(format!(
                    "message storm: {queued} events queued, {} processed",
                    self.stats.events
                ));
                break;
            }
            self.handle(event.kind);
            if self.violation.is_none() {
                self.check_cluster();
            }
        }
        if self.violation.is_none() {
            self.now = end;
            self.final_check();
        }
    }

    fn handle(&mut self, kind: EventKind) {
        match kind {
            EventKind::Tick(n, epoch) => {
                if self.nodes[n].epoch != epoch {
                    return;
                }
                if let Some(raft) = self.nodes[n].raft.as_mut() {
                    raft.tick();
                }
                self.drain(n);
                let period = self.nodes[n].tick_us;
                self.schedule(period, EventKind::Tick(n, epoch));
            }
            EventKind::Deliver(m) => {
                let (from, to) = (node_index(m.from), node_index(m.to));
                if !self.links.up(from, to) || self.nodes[to].raft.is_none() {
                    return;
                }
                self.log(|| format!("{} -> {} {} {}", m.from, m.to, m.term, describe(&m.body)));
                if let Some(raft) = self.nodes[to].raft.as_mut() {
                    raft.step(m);
                }
                self.drain(to);
            }
            EventKind::FsyncDone(n, epoch) => {
                if self.nodes[n].disk.epoch == epoch && self.nodes[n].raft.is_some() {
                    self.fsync_done(n);
                }
            }
            EventKind::SnapshotLoaded(n, epoch, index) => {
                if self.nodes[n].disk.epoch != epoch {
                    return;
                }
                let node = &mut self.nodes[n];
                let Some(raft) = node.raft.as_mut() else {
                    return;
                };
                match &node.disk.durable.snapshot {
                    Some(snap) if snap.meta.index == index => {
                        raft.provide_snapshot_data(index, snap.data.clone());
                        self.stats.snapshot_loads += 1;
                    }
                    _ => raft.snapshot_load_failed(index),
                }
                self.log(|| format!("{} loaded snapshot {index}", node_id(n)));
                self.drain(n);
            }
            EventKind::Crash => {
                if self.phase == Phase::Safety {
                    let up: Vec<usize> = (0..self.nodes.len())
                        .filter(|i| self.nodes[*i].raft.is_some())
                        .collect();
                    if !up.is_empty() {
                        let n = up[self.rng.gen_range(0..up.len())];
                        self.crash(n);
                        let d = self.uniform(self.params.down_us);
                        self.schedule(d, EventKind::Restart(n));
                    }
                    let g = self.gap(self.params.crash_every_us);
                    self.schedule(g, EventKind::Crash);
                }
            }
            EventKind::Restart(n) => {
                if self.nodes[n].raft.is_none() {
                    self.start_node(n);
                }
            }
            EventKind::Partition => {
                if self.phase == Phase::Safety {
                    self.links.partition(&mut self.rng);
                    self.stats.partitions += 1;
                    let links = self.links.to_string();
                    self.log(|| format!("partition: {links}"));
                    let d = self.uniform(self.params.partition_us);
                    self.schedule(d, EventKind::Heal);
                    let g = self.gap(self.params.partition_every_us);
                    self.schedule(d + g, EventKind::Partition);
                }
            }
            EventKind::Heal => {
                self.links.heal();
                self.log(|| "network healed".to_string());
            }
            EventKind::Transfer => {
                if self.phase == Phase::Safety {
                    self.transfer();
                    let g = self.gap(self.params.transfer_every_us);
                    self.schedule(g, EventKind::Transfer);
                }
            }
            EventKind::Reconfigure => {
                if self.phase == Phase::Safety {
                    self.reconfigure();
                    let g = self.gap(self.params.reconfigure_every_us);
                    self.schedule(g, EventKind::Reconfigure);
                }
            }
            EventKind::Restore => {
                self.restore_membership();
                self.schedule(RESTORE_EVERY_US, EventKind::Restore);
            }
            EventKind::ClientStep(c) => self.client_step(c),
            EventKind::ClientTimeout(c, op) => {
                if self.clients[c].op.as_ref().is_some_and(|o| o.id == op) {
                    self.log(|| format!("client {c} op {op} timed out"));
                    self.finish_op(c, false);
                }
            }
            EventKind::Liveness => {
                self.phase = Phase::Liveness;
                self.links.heal();
                self.params.loss = 0.0;
                self.params.duplicate = 0.0;
                self.params.reorder = 0.0;
                self.log(|| "liveness phase: all up, network healthy".to_string());
                for n in 0..self.nodes.len() {
                    if self.nodes[n].raft.is_none() {
                        self.start_node(n);
                    }
                }
                self.schedule(0, EventKind::Restore);
            }
        }
    }

    // ------------------------------------------------------------ nodes

    fn config(&self, n: usize) -> Config {
        let p = &self.params;
        let mut config = Config::new(node_id(n), self.options.seed);
        (
            config.election_timeout_ticks_min,
            config.election_timeout_ticks_max,
        ) = p.election_ticks;
        config.max_inflight_appends = p.max_inflight_appends;
        config.max_append_bytes = p.max_append_bytes;
        config.snapshot_chunk_bytes = p.snapshot_chunk_bytes;
        config.pre_vote = p.pre_vote;
        config.check_quorum = p.check_quorum;
        if p.lease_reads && p.check_quorum {
            config.lease_read = Some(LeaseReadConfig {
                clock_drift_bound_ticks: p.drift_bound_ticks(),
            });
        }
        // A new jitter stream per incarnation, still from the seed.
        config.seed = self.options.seed ^ (self.nodes[n].epoch << 32);
        config
    }

    fn start_node(&mut self, n: usize) {
        let config = self.config(n);
        let voters = ConfState::with_voters((0..self.nodes.len()).map(node_id));
        let durable = self.nodes[n].disk.durable.clone();
        let snap_kv = match &durable.snapshot {
            Some(s) => match Kv::decode(&s.data) {
                Some(kv) => Some(kv),
                None => {
                    self.fail(format!("{} durable snapshot does not decode", node_id(n)));
                    return;
                }
            },
            None => None,
        };
        let node = &mut self.nodes[n];
        let sm = match snap_kv {
            Some(kv) if kv.applied > node.disk.sm_checkpoint.applied => kv,
            _ => node.disk.sm_checkpoint.clone(),
        };
        let restored = RestoredState {
            hard_state: durable.hard_state,
            snapshot: durable.snapshot.clone(),
            entries: durable.entries,
            initial_conf: voters,
            applied: sm.applied,
        };
        let mut raft = Raft::new(config, restored).expect("simulator config is valid");
        if self.params.release_snapshot_data {
            raft.release_snapshot_data();
        }
        if let Some(hook) = self.options.on_raft_created {
            hook(&mut raft);
        }
        node.seen_commit = raft.log().committed();
        node.seen_leader_term = None;
        node.last_snapshot = raft.log().snapshot_meta().index;
        node.sm = sm;
        node.raft = Some(raft);
        let epoch = node.epoch;
        let (applied, hs) = (node.sm.applied, durable.hard_state);
        self.log(|| {
            format!(
                "{} start: term {} vote {:?} commit {} applied {applied}",
                node_id(n),
                hs.term,
                hs.vote,
                hs.commit
            )
        });
        let sm = self.nodes[n].sm.clone();
        let r = self.checker.observe_applied(node_id(n), &sm);
        self.check(r);
        // Clock skew: each incarnation starts at a random phase of its tick.
        let phase = self.rng.gen_range(0..self.nodes[n].tick_us);
        self.schedule(phase, EventKind::Tick(n, epoch));
    }

    fn crash(&mut self, n: usize) {
        self.stats.crashes += 1;
        let torn = if self.rng.gen_bool(self.params.torn_write) {
            let records = self.nodes[n].disk.queued_records();
            Some(self.rng.gen_range(0..=records))
        } else {
            None
        };
        if torn.is_some_and(|k| k > 0) {
            self.stats.torn_crashes += 1;
        }
        let node = &mut self.nodes[n];
        let queued = node.disk.queued_records();
        node.disk.crash(torn);
        node.raft = None;
        node.epoch += 1;
        node.proposals.clear();
        node.reads.clear();
        node.waiting_reads.clear();
        self.log(|| {
            format!(
                "{} CRASH ({queued} unsynced records, {} kept)",
                node_id(n),
                torn.unwrap_or(0)
            )
        });
    }

    fn transfer(&mut self) {
        let leader = (0..self.nodes.len()).find(|i| {
            self.nodes[*i]
                .raft
                .as_ref()
                .is_some_and(|r| r.role() == Role::Leader)
        });
        let Some(l) = leader else { return };
        let mut target = self.rng.gen_range(0..self.nodes.len() - 1);
        if target >= l {
            target += 1;
        }
        self.stats.transfers += 1;
        self.log(|| format!("{} transfer leadership to {}", node_id(l), node_id(target)));
        if let Some(raft) = self.nodes[l].raft.as_mut() {
            let _ = raft.transfer_leadership(node_id(target));
        }
        self.drain(l);
    }

    fn leader_index(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|i| {
                self.nodes[*i]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == Role::Leader)
            })
            .max_by_key(|i| self.nodes[*i].raft.as_ref().map(Raft::term))
    }

    fn propose_change(&mut self, l: usize, kind: ConfChangeKind, node: usize) {
        let change = ConfChange {
            kind,
            node: node_id(node),
            context: Bytes::new(),
        };
        let Some(raft) = self.nodes[l].raft.as_mut() else {
            return;
        };
        let result = raft.propose_conf_change(change);
        if result.is_ok() {
            self.stats.conf_changes += 1;
        }
        self.log(|| {
            format!(
                "{} conf change {kind:?} {}: {result:?}",
                node_id(l),
                node_id(node)
            )
        });
        self.drain(l);
    }

    /// A random single-member change: add a missing node (as learner or
    /// voter), promote a learner, or remove a voter (never below two, so
    /// the group keeps a quorum that is not one node).
    fn reconfigure(&mut self) {
        let Some(l) = self.leader_index() else { return };
        let Some(conf) = self.nodes[l].raft.as_ref().map(|r| r.conf().clone()) else {
            return;
        };
        let mut options = Vec::new();
        for n in 0..self.nodes.len() {
            let id = node_id(n);
            if !conf.contains(id) {
                options.push((ConfChangeKind::AddLearner, n));
                options.push((ConfChangeKind::AddVoter, n));
            } else if conf.learners.contains(&id) {
                options.push((ConfChangeKind::AddVoter, n));
                options.push((ConfChangeKind::Remove, n));
            } else if conf.voters.len() > 2 {
                options.push((ConfChangeKind::Remove, n));
            }
        }
        if options.is_empty() {
            return;
        }
        let (kind, n) = options[self.rng.gen_range(0..options.len())];
        self.propose_change(l, kind, n);
    }

    /// Heal phase: make every node a voter again, one change at a time.
    fn restore_membership(&mut self) {
        let Some(l) = self.leader_index() else { return };
        let Some(conf) = self.nodes[l].raft.as_ref().map(|r| r.conf().clone()) else {
            return;
        };
        if let Some(n) = (0..self.nodes.len()).find(|n| !conf.voters.contains(&node_id(*n))) {
            self.propose_change(l, ConfChangeKind::AddVoter, n);
        }
    }

    /// Hands every pending `Ready` of node `n` to the runtime model.
    fn drain(&mut self, n: usize) {
        loop {
            let Some(raft) = self.nodes[n].raft.as_mut() else {
                return;
            };
            if !raft.has_ready() {
                return;
            }
            let ready = raft.ready();
            let prev_term = ready
                .entries
                .first()
                .and_then(|e| raft.log().term(e.index.prev()));
            self.handle_ready(n, ready, prev_term);
            if self.violation.is_some() {
                return;
            }
        }
    }

    fn handle_ready(&mut self, n: usize, ready: Ready, prev_term: Option<Term>) {
        let id = node_id(n);
        if let Some(soft) = ready.soft_state {
            self.log(|| format!("{id} soft state {soft:?}"));
        }
        if !ready.entries.is_empty() {
            let r = self.checker.observe_written(id, &ready.entries, prev_term);
            self.check(r);
        }
        // Step 1: messages that depend on nothing unpersisted.
        for m in ready.messages {
            self.send(m);
        }
        // Steps 2 and 3: persist, and only then release what waits on it.
        let write = QueuedWrite {
            snapshot: ready.snapshot,
            entries: ready.entries,
            hard_state: ready.hard_state,
            after_persist: ready.messages_after_persist,
            marker: ready.persist_marker,
        };
        let needs_disk = write.snapshot.is_some()
            || !write.entries.is_empty()
            || write.hard_state.is_some()
            || !self.nodes[n].disk.queue.is_empty();
        if needs_disk {
            self.nodes[n].disk.enqueue(write);
            self.maybe_start_fsync(n);
        } else {
            for m in write.after_persist {
                self.send(m);
            }
            if let Some(raft) = self.nodes[n].raft.as_mut() {
                raft.on_persisted(write.marker);
            }
        }
        if let Some(index) = ready.load_snapshot {
            let d = self.uniform(self.params.fsync_us);
            let epoch = self.nodes[n].disk.epoch;
            self.schedule(d, EventKind::SnapshotLoaded(n, epoch, index));
        }
        // Step 4: apply (these entries are durable already).
        for entry in &ready.committed_entries {
            let write = self.nodes[n].sm.apply(entry);
            let sm_snapshot = self.nodes[n].sm.clone();
            let r = self.checker.observe_applied(id, &sm_snapshot);
            self.check(r);
            if let Some(p) = self.nodes[n].proposals.remove(&entry.index) {
                let current = self.clients[p.client]
                    .op
                    .as_ref()
                    .is_some_and(|o| o.id == p.op);
                if entry.term == p.term {
                    if write.map(|w| w.value) != Some(p.value) {
                        self.fail(format!(
                            "{id} applied a different entry at {} {} than it proposed",
                            entry.index, entry.term
                        ));
                        return;
                    }
                    if current {
                        let key = write.map(|w| w.key).unwrap_or(0);
                        let content = self.nodes[n].sm.keys.get(&key).cloned().unwrap_or_default();
                        let r = self.history.ack_write(p.value, &content, self.now);
                        self.check(r);
                        self.log(|| format!("{id} ACK write {:#x} at {}", p.value, entry.index));
                        self.finish_op(p.client, true);
                    }
                } else if current {
                    self.finish_op(p.client, false);
                }
            }
        }
        if !ready.committed_entries.is_empty() {
            self.after_apply(n);
        }
        for rs in ready.read_states {
            let Some((client, op)) = self.nodes[n].reads.remove(&rs.context) else {
                continue;
            };
            match rs.index {
                Some(index) => {
                    self.nodes[n]
                        .waiting_reads
                        .insert(rs.context, PendingRead { client, op, index });
                }
                None => {
                    if self.clients[client].op.as_ref().is_some_and(|o| o.id == op) {
                        self.finish_op(client, false);
                    }
                }
            }
        }
        self.serve_reads(n);
    }

    fn after_apply(&mut self, n: usize) {
        let p_checkpoint = self.params.sm_checkpoint;
        let compact_every = self.params.compact_every_entries;
        if self.rng.gen_bool(p_checkpoint) {
            self.nodes[n].disk.sm_checkpoint = self.nodes[n].sm.clone();
        }
        let node = &mut self.nodes[n];
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let applied = node.sm.applied;
        if applied != raft.log().applied() || applied.0 < node.last_snapshot.0 + compact_every {
            return;
        }
        let data = node.sm.encode();
        match raft.compact(applied, data.clone()) {
            Ok(meta) => {
                node.disk.durable.compact(Snapshot { meta, data });
                if self.params.release_snapshot_data {
                    raft.release_snapshot_data();
                }
                node.last_snapshot = applied;
                self.stats.compactions += 1;
            }
            Err(e) => self.fail(format!("compact refused at applied index: {e}")),
        }
    }

    fn serve_reads(&mut self, n: usize) {
        let applied = self.nodes[n].sm.applied;
        let ready: Vec<u64> = self.nodes[n]
            .waiting_reads
            .iter()
            .filter(|(_, r)| r.index <= applied)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in ready {
            let Some(read) = self.nodes[n].waiting_reads.remove(&ctx) else {
                continue;
            };
            let Some(ClientOp {
                id,
                kind: OpKind::Read { key, floor_len },
            }) = self.clients[read.client].op.as_ref()
            else {
                continue;
            };
            if *id != read.op {
                continue;
            }
            let (key, floor_len) = (*key, *floor_len);
            let content = self.nodes[n].sm.keys.get(&key).cloned().unwrap_or_default();
            let r = self
                .history
                .complete_read(key, floor_len, &content, self.now);
            self.check(r);
            self.log(|| {
                format!(
                    "{} READ key {key} at {} (applied {applied}): {} values",
                    node_id(n),
                    read.index,
                    content.len()
                )
            });
            self.finish_op(read.client, true);
        }
    }

    fn maybe_start_fsync(&mut self, n: usize) {
        if self.nodes[n].disk.start_sync() {
            let d = self.uniform(self.params.fsync_us);
            let epoch = self.nodes[n].disk.epoch;
            self.schedule(d, EventKind::FsyncDone(n, epoch));
        }
    }

    fn fsync_done(&mut self, n: usize) {
        let id = node_id(n);
        let done = self.nodes[n].disk.complete_sync();
        for write in done {
            if let Some(snap) = &write.snapshot {
                let Some(kv) = Kv::decode(&snap.data) else {
                    self.fail(format!("{id} received a snapshot that does not decode"));
                    return;
                };
                if kv.applied != snap.meta.index {
                    self.fail(format!(
                        "{id} snapshot at {} holds state at {}",
                        snap.meta.index, kv.applied
                    ));
                    return;
                }
                let r = self.checker.observe_applied(id, &kv);
                self.check(r);
                self.stats.snapshots_installed += 1;
                self.log(|| format!("{id} installed snapshot at {}", snap.meta.index));
                let node = &mut self.nodes[n];
                node.proposals.retain(|index, _| *index > kv.applied);
                node.sm = kv.clone();
                node.disk.sm_checkpoint = kv;
                node.last_snapshot = snap.meta.index;
            }
            for m in write.after_persist {
                self.send(m);
            }
            let release = write.snapshot.is_some() && self.params.release_snapshot_data;
            if let Some(raft) = self.nodes[n].raft.as_mut() {
                raft.on_persisted(write.marker);
                if release {
                    raft.release_snapshot_data();
                }
            }
        }
        self.maybe_start_fsync(n);
        self.serve_reads(n);
        self.drain(n);
    }

    // ---------------------------------------------------------- network

    fn send(&mut self, m: Message) {
        self.stats.messages += 1;
        let (from, to) = (node_index(m.from), node_index(m.to));
        if to >= self.nodes.len() || !self.links.up(from, to) {
            return;
        }
        if self.rng.gen_bool(self.params.loss) {
            return;
        }
        if self.rng.gen_bool(self.params.duplicate) {
            let d = self.latency();
            self.schedule(d, EventKind::Deliver(m.clone()));
        }
        let d = self.latency();
        self.schedule(d, EventKind::Deliver(m));
    }

    fn latency(&mut self) -> u64 {
        let mut d = self.uniform(self.params.latency_us);
        if self.rng.gen_bool(self.params.reorder) {
            d += self.rng.gen_range(0..=self.params.reorder_us);
        }
        d
    }

    // ---------------------------------------------------------- clients

    fn client_step(&mut self, c: usize) {
        if self.clients[c].op.is_some() {
            return;
        }
        let end = self.params.safety_us + self.params.liveness_us;
        if self.now > end - self.params.liveness_us * QUIET_TAIL_PCT / 100 {
            return;
        }
        let n = match self.clients[c].leader_hint {
            Some(l) if self.rng.gen_bool(0.7) => l,
            _ => self.rng.gen_range(0..self.nodes.len()),
        };
        let key = self.rng.gen_range(0..self.params.keys);
        let is_read = self.rng.gen_bool(self.params.read_ratio);
        let Some(raft) = self.nodes[n].raft.as_mut() else {
            self.clients[c].leader_hint = None;
            self.schedule(CLIENT_RETRY_US, EventKind::ClientStep(c));
            return;
        };
        let op_id = self.clients[c].next_op;
        let result = if is_read {
            let ctx = self.next_ctx;
            raft.read_index(ctx).map(|()| {
                self.next_ctx += 1;
                self.nodes[n].reads.insert(ctx, (c, op_id));
                OpKind::Read {
                    key,
                    floor_len: self.history.invoke_read(key),
                }
            })
        } else {
            // Values are unique across clients: client id in the top bits.
            let value = ((c as u64) << 40) | self.clients[c].next_value;
            let term = raft.term();
            raft.propose(Write { key, value }.encode()).map(|index| {
                self.clients[c].next_value += 1;
                self.nodes[n].proposals.insert(
                    index,
                    Proposal {
                        client: c,
                        op: op_id,
                        term,
                        value,
                    },
                );
                self.history.invoke_write(key, value, self.now);
                OpKind::Write { key, value }
            })
        };
        match result {
            Ok(kind) => {
                self.log(|| match &kind {
                    OpKind::Write { key, value } => {
                        format!("client {c} -> {} write key {key} {value:#x}", node_id(n))
                    }
                    OpKind::Read { key, floor_len } => {
                        format!(
                            "client {c} -> {} read key {key} (floor {floor_len})",
                            node_id(n)
                        )
                    }
                });
                self.clients[c].next_op += 1;
                self.clients[c].op = Some(ClientOp { id: op_id, kind });
                self.clients[c].leader_hint = Some(n);
                let t = self.params.client_timeout_us;
                self.schedule(t, EventKind::ClientTimeout(c, op_id));
            }
            Err(e) => {
                self.clients[c].leader_hint = match e {
                    ProposeError::NotLeader { leader: Some(l) } => Some(node_index(l)),
                    _ => None,
                };
                self.schedule(CLIENT_RETRY_US, EventKind::ClientStep(c));
            }
        }
        let ctx = self.next_ctx - 1;
        let was_read = is_read && self.nodes[n].reads.contains_key(&ctx);
        self.drain(n);
        if was_read && !self.nodes[n].reads.contains_key(&ctx) {
            // Answered without a round trip: a lease read or a lone voter.
            self.stats.reads_without_round_trip += 1;
        }
    }

    fn finish_op(&mut self, c: usize, ok: bool) {
        let Some(op) = self.clients[c].op.take() else {
            return;
        };
        match (op.kind, ok) {
            (OpKind::Write { .. }, true) => self.stats.writes_acked += 1,
            (OpKind::Write { .. }, false) => self.stats.writes_unacked += 1,
            (OpKind::Read { .. }, true) => self.stats.reads_ok += 1,
            (OpKind::Read { .. }, false) => self.stats.reads_failed += 1,
        }
        if !ok {
            self.clients[c].leader_hint = None;
        }
        let think = self.uniform(self.params.think_us);
        self.schedule(think, EventKind::ClientStep(c));
    }

    // ----------------------------------------------------------- checks

    fn check_cluster(&mut self) {
        for n in 0..self.nodes.len() {
            let Some(raft) = self.nodes[n].raft.as_ref() else {
                continue;
            };
            if raft.role() == Role::Leader && self.nodes[n].seen_leader_term != Some(raft.term()) {
                let term = raft.term();
                match self.checker.observe_leader(raft) {
                    Ok(new) => {
                        if new {
                            self.stats.leaders += 1;
                        }
                    }
                    Err(e) => return self.fail(e),
                }
                self.nodes[n].seen_leader_term = Some(term);
            }
            let Some(raft) = self.nodes[n].raft.as_ref() else {
                continue;
            };
            let committed = raft.log().committed();
            if committed <= self.nodes[n].seen_commit {
                continue;
            }
            let from = self.nodes[n]
                .seen_commit
                .next()
                .max(raft.log().first_index());
            let entries = raft
                .log()
                .slice(from, committed, usize::MAX)
                .unwrap_or_default();
            self.nodes[n].seen_commit = committed;
            self.stats.max_commit = self.stats.max_commit.max(committed.0);
            for entry in &entries {
                let leaders = self
                    .nodes
                    .iter()
                    .filter_map(|x| x.raft.as_ref())
                    .filter(|r| r.role() == Role::Leader);
                let term = self.nodes[n]
                    .raft
                    .as_ref()
                    .map(Raft::term)
                    .unwrap_or_default();
                if let Err(e) = self
                    .checker
                    .observe_committed(node_id(n), term, entry, leaders)
                {
                    return self.fail(e);
                }
            }
        }
    }

    fn final_check(&mut self) {
        // Liveness: the healed cluster has a leader, every node caught up
        // with the highest commit index, and every acknowledged write is
        // applied on every node.
        let leader = self
            .nodes
            .iter()
            .filter_map(|x| x.raft.as_ref())
            .find(|r| r.role() == Role::Leader);
        let Some(leader) = leader else {
            return self.fail("liveness: no leader at the end of the heal phase".to_string());
        };
        if leader.conf().voters.len() != self.nodes.len() {
            return self.fail(format!(
                "liveness: membership not restored by the end of the heal phase: {:?}",
                leader.conf()
            ));
        }
        let target = leader.log().committed();
        for n in 0..self.nodes.len() {
            let applied = self.nodes[n].sm.applied;
            if applied < target {
                return self.fail(format!(
                    "liveness: {} applied only {applied} of {target} after the heal phase",
                    node_id(n)
                ));
            }
        }
        let acked: Vec<(u64, u8)> = self.history.acknowledged().collect();
        for n in 0..self.nodes.len() {
            let sm = &self.nodes[n].sm;
            let sets: BTreeMap<u8, std::collections::BTreeSet<u64>> = sm
                .keys
                .iter()
                .map(|(k, v)| (*k, v.iter().copied().collect()))
                .collect();
            for (value, key) in &acked {
                if !sets.get(key).is_some_and(|s| s.contains(value)) {
                    return self.fail(format!(
                        "durability: acknowledged write {value:#x} to key {key} is missing on {}",
                        node_id(n)
                    ));
                }
            }
        }
    }
}

/// A short description of a message body, for traces.
pub fn describe(body: &MessageBody) -> String {
    let mut s = String::from(body.name());
    let _ = match body {
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        }
        | MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            ..
        } => write!(s, " last {last_log_index} {last_log_term}"),
        MessageBody::PreVoteResponse { reject } | MessageBody::RequestVoteResponse { reject } => {
            write!(s, " reject={reject}")
        }
        MessageBody::Append {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => write!(
            s,
            " prev {prev_log_index} {prev_log_term} +{} commit {leader_commit}",
            entries.len()
        ),
        MessageBody::AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } => write!(s, " reject={reject} {index} hint {hint_index} {hint_term}"),
        MessageBody::CommitNotice {
            prev_log_index,
            prev_log_term,
            leader_commit,
        } => write!(
            s,
            " prev {prev_log_index} {prev_log_term} commit {leader_commit}"
        ),
        MessageBody::Heartbeat { commit, read_round } => {
            write!(s, " commit {commit} round {read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => write!(s, " round {read_round}"),
        MessageBody::Snapshot {
            meta,
            total_bytes,
            offset,
            chunk,
        } => write!(
            s,
            " at {} {} {offset}+{}/{total_bytes}",
            meta.index,
            meta.term,
            chunk.len()
        ),
        MessageBody::SnapshotResponse {
            snapshot_index,
            received_bytes,
            installed,
            reject,
        } => write!(
            s,
            " {snapshot_index} got {received_bytes} installed={installed} reject={reject}"
        ),
        MessageBody::TimeoutNow => Ok(()),
        MessageBody::ReadIndex { context } => write!(s, " ctx {context}"),
        MessageBody::ReadIndexResponse { context, index } => {
            write!(s, " ctx {context} {index:?}")
        }
    };
    s
}

/// Renders a failing outcome: seed, replay command, fault mix, trace tail.
pub fn report(outcome: &Outcome, trace_lines: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "seed {} nodes {}", outcome.seed, outcome.nodes);
    if let Some(v) = &outcome.violation {
        let _ = writeln!(s, "VIOLATION at {} us: {}", v.at_us, v.what);
    }
    let _ = writeln!(
        s,
        "replay: cargo run --release --bin concord-sim -- --seed {} --nodes {}",
        outcome.seed, outcome.nodes
    );
    let _ = writeln!(s, "{}", outcome.params);
    let _ = writeln!(s, "stats: {:?}", outcome.stats);
    let skip = outcome.trace.len().saturating_sub(trace_lines);
    for line in &outcome.trace[skip..] {
        let _ = writeln!(s, "  {line}");
    }
    s
}
