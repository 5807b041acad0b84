//! Tunables of one Raft member, validated before use.
//!
//! All durations are in ticks: the runtime decides how long a tick is (the
//! node uses `--heartbeat-interval`), the simulator decides it per node to
//! model clock drift.

use crate::types::NodeId;

/// Largest in-flight append window per follower. Bounds the memory a slow
/// follower can pin on the leader (etcd uses 512 messages of 1 MiB).
pub const MAX_INFLIGHT_APPENDS_LIMIT: usize = 4096;

/// Configuration of one member.
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's id (non-zero).
    pub id: NodeId,
    /// Election timeout is drawn uniformly from `[min, max]` ticks after every
    /// reset, so that candidates rarely collide (section 5.2).
    pub election_timeout_ticks_min: u32,
    /// Upper bound of the election timeout.
    pub election_timeout_ticks_max: u32,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_interval_ticks: u32,
    /// Appends sent to a follower and not yet acknowledged, at most.
    pub max_inflight_appends: usize,
    /// Size cap of the entries in one append message.
    pub max_append_bytes: usize,
    /// Size of one snapshot chunk on the wire.
    pub snapshot_chunk_bytes: usize,
    /// Proposed but uncommitted bytes a leader accepts before refusing
    /// proposals with back-pressure.
    pub max_uncommitted_bytes: usize,
    /// Run a pre-vote round before a real election (dissertation 9.6), so a
    /// partitioned node that rejoins cannot disrupt a healthy leader.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; followers that heard from a leader recently refuse votes.
    pub check_quorum: bool,
    /// Serve reads on the leader without a heartbeat round while its lease
    /// holds. `None` (the default) means ReadIndex only.
    pub lease_read: Option<LeaseReadConfig>,
    /// Seed of the election-timeout jitter.
    pub seed: u64,
}

/// Leader-lease reads: safe only while clocks drift by less than the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseReadConfig {
    /// How many ticks the leader's clock may run slow relative to a
    /// follower's over one election timeout. The lease is shortened by this
    /// much; a larger real drift breaks linearizability of lease reads.
    pub clock_drift_bound_ticks: u32,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Node id zero is reserved for "no node".
    #[error("node id must be non-zero")]
    ZeroId,
    /// The timeouts do not satisfy heartbeat < election_min <= election_max.
    #[error("need 0 < heartbeat ({heartbeat}) < election min ({min}) <= election max ({max})")]
    Timeouts {
        /// Heartbeat ticks.
        heartbeat: u32,
        /// Minimum election ticks.
        min: u32,
        /// Maximum election ticks.
        max: u32,
    },
    /// A size limit was zero or out of range.
    #[error("limit {0} is out of range")]
    Limit(&'static str),
    /// The lease is not shorter than the election timeout minus the drift.
    #[error("clock drift bound must be below the minimum election timeout")]
    DriftBound,
}

impl Config {
    /// Defaults that match etcd's shape: heartbeat every tick, election after
    /// 10 to 20 ticks.
    pub fn new(id: NodeId, seed: u64) -> Config {
        Config {
            id,
            election_timeout_ticks_min: 10,
            election_timeout_ticks_max: 20,
            heartbeat_interval_ticks: 1,
            max_inflight_appends: 256,
            max_append_bytes: 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            max_uncommitted_bytes: 64 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            lease_read: None,
            seed,
        }
    }

    /// Checks the relations between the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.0 == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_interval_ticks == 0
            || self.heartbeat_interval_ticks >= self.election_timeout_ticks_min
            || self.election_timeout_ticks_min > self.election_timeout_ticks_max
        {
            return Err(ConfigError::Timeouts {
                heartbeat: self.heartbeat_interval_ticks,
                min: self.election_timeout_ticks_min,
                max: self.election_timeout_ticks_max,
            });
        }
        if self.max_inflight_appends == 0 || self.max_inflight_appends > MAX_INFLIGHT_APPENDS_LIMIT
        {
            return Err(ConfigError::Limit("max_inflight_appends"));
        }
        if self.max_append_bytes == 0 {
            return Err(ConfigError::Limit("max_append_bytes"));
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::Limit("snapshot_chunk_bytes"));
        }
        if self.max_uncommitted_bytes == 0 {
            return Err(ConfigError::Limit("max_uncommitted_bytes"));
        }
        if let Some(lease) = self.lease_read {
            if lease.clock_drift_bound_ticks >= self.election_timeout_ticks_min {
                return Err(ConfigError::DriftBound);
            }
        }
        Ok(())
    }
}
