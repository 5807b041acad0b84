//! The fault mix of one simulation, drawn from its seed (swarm testing).
//!
//! TigerBeetle's VOPR lesson: a fixed fault mix explores a narrow band of
//! schedules, so every seed draws its own mix (how lossy the network is, how
//! often nodes crash, how slow fsync is, how fast each node's clock runs) and
//! prints it. Some seeds are calm, some are hostile; together they cover far
//! more of the space than any single setting.
//!
//! Invariants:
//! 1. Every field is derived from the seed's RNG, in a fixed order, so a seed
//!    names exactly one mix (replays are exact).
//! 2. `tick_us` for every node stays within `MAX_DRIFT_PCT` of `BASE_TICK_US`,
//!    and every delay range has `min <= max`.
//! 3. The Raft settings drawn here always pass `Config::validate`.

use rand::Rng;
use std::fmt;

/// Virtual microseconds per tick before drift: 10 ms, etcd's default
/// heartbeat interval is 100 ms, but only ratios matter here.
pub const BASE_TICK_US: u64 = 10_000;

/// Largest per-node clock-rate deviation, in percent. Raft's safety must not
/// depend on clocks at all; its liveness must survive this much drift.
pub const MAX_DRIFT_PCT: u64 = 25;

/// Election timeout bounds in ticks (the core's defaults).
pub const ELECTION_TICKS_MIN: u32 = 10;
/// Upper bound of the election timeout, in ticks.
pub const ELECTION_TICKS_MAX: u32 = 20;

// Raft needs heartbeat < election timeout, and a drifting clock must never
// run backwards or stop.
const _: () = assert!(ELECTION_TICKS_MIN > 1 && ELECTION_TICKS_MIN <= ELECTION_TICKS_MAX);
const _: () = assert!(MAX_DRIFT_PCT < 100);

/// Keys of the register store. Few keys make reads collide with writes.
pub const MAX_KEYS: u8 = 4;

/// The fault and workload mix of one seed.
#[derive(Clone, Debug)]
pub struct Params {
    /// Cluster size.
    pub nodes: usize,
    /// Tick period of each node, microseconds (clock drift).
    pub tick_us: Vec<u64>,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// One-way latency bounds, microseconds (jitter reorders a little).
    pub latency_us: (u64, u64),
    /// Probability that a message is held back by up to `reorder_us` more
    /// (a retransmit or another path: this is what reorders a lot).
    pub reorder: f64,
    /// Largest extra delay of a held-back message, microseconds.
    pub reorder_us: u64,
    /// Mean gap between partitions, microseconds (0: none).
    pub partition_every_us: u64,
    /// Partition lifetime bounds, microseconds.
    pub partition_us: (u64, u64),
    /// Mean gap between crashes, microseconds (0: none).
    pub crash_every_us: u64,
    /// Downtime bounds after a crash, microseconds.
    pub down_us: (u64, u64),
    /// fsync latency bounds, microseconds.
    pub fsync_us: (u64, u64),
    /// Probability that a crash keeps a prefix of the unsynced writes (the
    /// OS wrote some of them) instead of none; the cut may fall inside a Ready.
    pub torn_write: f64,
    /// Probability that an apply batch also checkpoints the state machine
    /// durably (otherwise a restart replays from the last checkpoint).
    pub sm_checkpoint: f64,
    /// Compact once this many entries were applied since the last snapshot.
    pub compact_every_entries: u64,
    /// Whether nodes hand the snapshot data back to the runtime once it is
    /// durable (`Raft::release_snapshot_data`) and load it from "disk", after
    /// an fsync-like delay, when a follower needs it.
    pub release_snapshot_data: bool,
    /// Snapshot chunk size (small so snapshots stream in many chunks).
    pub snapshot_chunk_bytes: usize,
    /// Append pipeline depth per follower.
    pub max_inflight_appends: usize,
    /// Size cap of one append.
    pub max_append_bytes: usize,
    /// Election timeout bounds, in ticks (the core's defaults unless a
    /// test narrows them to provoke split votes).
    pub election_ticks: (u32, u32),
    /// Pre-vote on or off.
    pub pre_vote: bool,
    /// Check-quorum on or off.
    pub check_quorum: bool,
    /// Number of clients.
    pub clients: usize,
    /// Number of keys they use.
    pub keys: u8,
    /// Probability that an operation is a read.
    pub read_ratio: f64,
    /// Client think time bounds between operations, microseconds.
    pub think_us: (u64, u64),
    /// A client gives up on an operation after this long.
    pub client_timeout_us: u64,
    /// Mean gap between leadership transfers, microseconds.
    pub transfer_every_us: u64,
    /// Mean gap between membership changes (add learner, promote, remove
    /// voter), microseconds.
    pub reconfigure_every_us: u64,
    /// Leader-lease reads on (only together with check-quorum, which they
    /// need). The drift bound is derived from `tick_us` when the nodes are
    /// configured ([`Params::drift_bound_ticks`]), so it always covers the
    /// simulated drift and lease reads must stay linearizable.
    pub lease_reads: bool,
    /// Length of the safety phase (faults on), microseconds.
    pub safety_us: u64,
    /// Length of the liveness phase (all up, network healthy), microseconds.
    pub liveness_us: u64,
}

impl Params {
    /// Draws a mix for a cluster of `nodes`. Every fault is possible in
    /// every seed; only its rate varies.
    pub fn draw<R: Rng>(rng: &mut R, nodes: usize) -> Params {
        let drift = rng.gen_range(0..=MAX_DRIFT_PCT);
        let tick_us = (0..nodes)
            .map(|_| {
                let pct = rng.gen_range(0..=2 * drift) as i64 - drift as i64;
                (BASE_TICK_US as i64 * (100 + pct) / 100) as u64
            })
            .collect();
        let lat_min = rng.gen_range(100..2_000);
        let lat_max = lat_min + rng.gen_range(0..4_000);
        let fsync_min = rng.gen_range(50..2_000);
        let fsync_max = fsync_min + rng.gen_range(0..40_000);
        let part_min = rng.gen_range(50_000..300_000);
        let down_min = rng.gen_range(5_000..100_000);
        let mut params = Params {
            nodes,
            tick_us,
            loss: rng.gen_range(0.0..0.15),
            duplicate: rng.gen_range(0.0..0.10),
            latency_us: (lat_min, lat_max),
            reorder: rng.gen_range(0.0..0.3),
            reorder_us: rng.gen_range(1_000..50_000),
            partition_every_us: rng.gen_range(150_000..1_500_000),
            partition_us: (part_min, part_min + rng.gen_range(0..1_000_000)),
            crash_every_us: rng.gen_range(150_000..1_500_000),
            down_us: (down_min, down_min + rng.gen_range(0..800_000)),
            fsync_us: (fsync_min, fsync_max),
            torn_write: rng.gen_range(0.0..1.0),
            sm_checkpoint: rng.gen_range(0.05..1.0),
            compact_every_entries: rng.gen_range(3..60),
            release_snapshot_data: false,
            snapshot_chunk_bytes: rng.gen_range(16..1024),
            max_inflight_appends: rng.gen_range(1..=16),
            max_append_bytes: rng.gen_range(1..4096),
            election_ticks: (ELECTION_TICKS_MIN, ELECTION_TICKS_MAX),
            pre_vote: rng.gen_bool(0.75),
            check_quorum: rng.gen_bool(0.75),
            clients: rng.gen_range(1..=5),
            keys: rng.gen_range(1..=MAX_KEYS),
            read_ratio: rng.gen_range(0.1..0.6),
            think_us: (0, rng.gen_range(1_000..60_000)),
            client_timeout_us: rng.gen_range(200_000..1_500_000),
            transfer_every_us: rng.gen_range(300_000..3_000_000),
            reconfigure_every_us: rng.gen_range(200_000..3_000_000),
            lease_reads: false,
            safety_us: 2_000_000,
            liveness_us: 2_500_000,
        };
        params.lease_reads = params.check_quorum && rng.gen_bool(0.3);
        params.release_snapshot_data = rng.gen_bool(0.5);
        params
    }

    /// The smallest drift bound that makes leases safe with these clocks:
    /// a leader's lease of `min - bound` of its ticks must end before any
    /// follower's `min` ticks do, however fast the leader's clock is
    /// relative to theirs.
    pub fn drift_bound_ticks(&self) -> u32 {
        let fastest = self.tick_us.iter().copied().min().unwrap_or(1) as f64;
        let slowest = self.tick_us.iter().copied().max().unwrap_or(1) as f64;
        let min = f64::from(self.election_ticks.0);
        (min * (1.0 - fastest / slowest)).floor() as u32 + 1
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "nodes={} tick_us={:?}", self.nodes, self.tick_us)?;
        writeln!(
            f,
            "net: loss={:.3} dup={:.3} latency_us={:?} reorder={:.2} reorder_us={} partition_every_us={} partition_us={:?}",
            self.loss,
            self.duplicate,
            self.latency_us,
            self.reorder,
            self.reorder_us,
            self.partition_every_us,
            self.partition_us
        )?;
        writeln!(
            f,
            "crash_every_us={} down_us={:?} fsync_us={:?} torn_write={:.2} sm_checkpoint={:.2}",
            self.crash_every_us, self.down_us, self.fsync_us, self.torn_write, self.sm_checkpoint
        )?;
        writeln!(
            f,
            "raft: election_ticks={:?} compact_every={} release_snapshot_data={} chunk_bytes={} inflight={} append_bytes={} pre_vote={} check_quorum={}",
            self.election_ticks,
            self.compact_every_entries,
            self.release_snapshot_data,
            self.snapshot_chunk_bytes,
            self.max_inflight_appends,
            self.max_append_bytes,
            self.pre_vote,
            self.check_quorum
        )?;
        write!(
            f,
            "clients={} keys={} read_ratio={:.2} think_us={:?} timeout_us={} transfer_every_us={} reconfigure_every_us={} lease_reads={} safety_us={} liveness_us={}",
            self.clients,
            self.keys,
            self.read_ratio,
            self.think_us,
            self.client_timeout_us,
            self.transfer_every_us,
            self.reconfigure_every_us,
            self.lease_reads,
            self.safety_us,
            self.liveness_us
        )
    }
}
