//! The lessor: the leader's clock over etcd leases.
//!
//! The MVCC store holds which leases exist, their granted TTL, their last
//! checkpointed remaining TTL and the keys attached to them; it never reads
//! a clock. This module holds the one thing the store cannot: *when* each
//! lease expires. Only the leader's lessor is "primary" and keeps deadlines;
//! it answers keep-alives without going through Raft, and when a deadline
//! passes it asks the replica loop to propose a [`Command::LeaseRevoke`],
//! which every member applies (deleting the attached keys in one revision).
//!
//! The lessor is a plain state machine driven by the replica loop thread:
//! every call takes `now`, and the commands it wants proposed are returned,
//! never sent. It performs no I/O.
//!
//! ```text
//!   follower ──promote(leases from store, now)──▶ primary ──demote──▶ follower
//!                                                  │  renew(id, now)   -> TTL (+ checkpoint reset)
//!                                                  │  tick(now, tick)  -> revokes, checkpoints
//!                                                  │  on_applied(cmd)  <- grants, revokes, checkpoints
//! ```
//!
//! Invariants:
//! 1. A lease is never revoked earlier than its TTL after the last renewal
//!    the leader saw, measured on the leader's monotonic clock while the
//!    leader's loop was running: time during which the loop did not tick
//!    (a stall: slow fsync, CPU starvation, SIGSTOP) is added to every
//!    deadline before expiry is checked (do better than etcd#15247, where a
//!    stalled leader mass-revokes leases when it resumes).
//! 2. A new leader gives every lease at least its remaining TTL from the
//!    last checkpoint (the granted TTL if never checkpointed, or if renewed
//!    since), plus one election timeout: a leader change extends leases,
//!    never shortens them. Checkpoints go through Raft
//!    ([`Command::LeaseCheckpoint`]) every `checkpoint_interval`, so leases
//!    still expire when leaders change more often than their TTL.
//! 3. A renewal of a lease whose stored checkpoint is non-zero proposes a
//!    checkpoint of 0 ("full TTL"), so a stale, small checkpoint can never
//!    make a new leader expire a lease the client kept alive (as etcd 3.5.2).
//! 4. Revocations are rate-limited per tick and retried if they do not apply
//!    within `revoke_retry`; a lease with a revocation in flight answers
//!    renewals as not found (etcd: an expired lease cannot be renewed).

use concord_mvcc::{
    Command, LeaseCheckpoint, LeaseCheckpointRequest, LeaseInfo, LeaseRevokeRequest,
};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// etcd's `maxLeaseCheckpointBatchSize`: checkpoints per proposal, at most.
pub const CHECKPOINTS_PER_PROPOSAL_MAX: usize = 1000;

/// Default interval between checkpoints of one lease (etcd's
/// `defaultLeaseCheckpointInterval`, 5 minutes).
pub const CHECKPOINT_INTERVAL_DEFAULT: Duration = Duration::from_secs(300);

/// Revocations proposed per tick, at most (etcd revokes at most 1000 leases
/// per second; with 100 ms ticks this is the same rate).
pub const REVOKES_PER_TICK_MAX: usize = 100;

/// A tick that comes later than this many tick intervals means the loop
/// stalled; the stalled time does not count against leases.
pub const STALL_TICKS: u32 = 3;

/// Settings of a [`Lessor`].
#[derive(Clone, Debug)]
pub struct LessorConfig {
    /// Added to every lease's remaining TTL on promotion (etcd adds the
    /// election timeout, the time clients may need to find the new leader).
    pub promotion_extension: Duration,
    /// Interval between checkpoints of one lease.
    pub checkpoint_interval: Duration,
    /// How long a proposed revocation may take to apply before it is
    /// proposed again.
    pub revoke_retry: Duration,
}

impl Default for LessorConfig {
    fn default() -> Self {
        LessorConfig {
            promotion_extension: Duration::from_secs(1),
            checkpoint_interval: CHECKPOINT_INTERVAL_DEFAULT,
            revoke_retry: Duration::from_secs(3),
        }
    }
}

/// Why the lessor cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// This member is not the leader: ask the leader.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// No such lease (or it expired and is being revoked).
    #[error("etcdserver: requested lease not found")]
    NotFound,
}

/// A lease's time to live as the primary sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeToLive {
    /// Remaining whole seconds (truncated, as etcd reports it).
    pub remaining_secs: i64,
    /// The granted TTL in seconds.
    pub granted_secs: i64,
}

#[derive(Clone, Debug)]
struct Tracked {
    granted_secs: i64,
    deadline: Instant,
    /// The remaining TTL the store holds (0: use the granted TTL).
    checkpointed_secs: i64,
    next_checkpoint: Option<Instant>,
    revoke_proposed_at: Option<Instant>,
}

/// The leader's lease clock. See the module documentation.
#[derive(Debug)]
pub struct Lessor {
    config: LessorConfig,
    primary: bool,
    leases: HashMap<i64, Tracked>,
    /// `(deadline, id)` of every tracked lease.
    expiry: BTreeSet<(Instant, i64)>,
    /// `(next checkpoint, id)` of leases that want one.
    checkpoints: BTreeSet<(Instant, i64)>,
    /// When the loop last called in (any call that takes `now`).
    last_seen: Option<Instant>,
    /// The tick interval, as of the last tick.
    interval: Duration,
    /// Total stalled time forgiven so far (for status and tests).
    forgiven: Duration,
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    /// A lessor that is not primary.
    pub fn new(config: LessorConfig) -> Lessor {
        Lessor {
            config,
            primary: false,
            leases: HashMap::new(),
            expiry: BTreeSet::new(),
            checkpoints: BTreeSet::new(),
            last_seen: None,
            interval: Duration::from_millis(100),
            forgiven: Duration::ZERO,
        }
    }

    /// Whether this lessor keeps deadlines (this member leads).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Number of leases tracked (0 unless primary).
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether no lease is tracked.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Stalled time forgiven so far (invariant 1).
    pub fn forgiven(&self) -> Duration {
        self.forgiven
    }

    /// Becomes primary with the leases the store holds (invariant 2).
    pub fn promote(&mut self, leases: Vec<LeaseInfo>, now: Instant) {
        self.primary = true;
        self.leases.clear();
        self.expiry.clear();
        self.checkpoints.clear();
        self.last_seen = Some(now);
        for info in leases {
            let remaining = if info.remaining_ttl > 0 {
                info.remaining_ttl
            } else {
                info.granted_ttl
            };
            let deadline = now + secs(remaining) + self.config.promotion_extension;
            self.insert(info.id, info.granted_ttl, info.remaining_ttl, deadline, now);
        }
    }

    /// Stops keeping deadlines (leadership lost).
    pub fn demote(&mut self) {
        self.primary = false;
        self.leases.clear();
        self.expiry.clear();
        self.checkpoints.clear();
        self.last_seen = None;
    }

    /// Notes that the loop runs at `now`; a gap much longer than a tick
    /// since the last call was a stall, forgiven (invariant 1).
    fn observe(&mut self, now: Instant) {
        let last = self.last_seen.replace(now).unwrap_or(now);
        let gap = now.saturating_duration_since(last);
        if gap > self.interval * STALL_TICKS {
            self.extend_all(gap.saturating_sub(self.interval));
        }
    }

    fn insert(
        &mut self,
        id: i64,
        granted: i64,
        checkpointed: i64,
        deadline: Instant,
        now: Instant,
    ) {
        self.remove(id);
        let next_checkpoint = self.checkpoint_due(granted, now);
        self.leases.insert(
            id,
            Tracked {
                granted_secs: granted,
                deadline,
                checkpointed_secs: checkpointed,
                next_checkpoint,
                revoke_proposed_at: None,
            },
        );
        self.expiry.insert((deadline, id));
        if let Some(at) = next_checkpoint {
            self.checkpoints.insert((at, id));
        }
    }

    fn remove(&mut self, id: i64) {
        if let Some(old) = self.leases.remove(&id) {
            self.expiry.remove(&(old.deadline, id));
            if let Some(at) = old.next_checkpoint {
                self.checkpoints.remove(&(at, id));
            }
        }
    }

    /// Leases shorter than the checkpoint interval expire before a
    /// checkpoint would matter (etcd's rule).
    fn checkpoint_due(&self, granted: i64, now: Instant) -> Option<Instant> {
        (secs(granted) > self.config.checkpoint_interval)
            .then(|| now + self.config.checkpoint_interval)
    }

    /// A keep-alive. Returns the granted TTL, and a command to propose when
    /// the stored checkpoint must be reset (invariant 3).
    pub fn renew(&mut self, id: i64, now: Instant) -> Result<(i64, Option<Command>), LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotLeader);
        }
        self.observe(now);
        let Some(lease) = self.leases.get(&id) else {
            return Err(LeaseError::NotFound);
        };
        if lease.revoke_proposed_at.is_some() || lease.deadline <= now {
            return Err(LeaseError::NotFound);
        }
        let granted = lease.granted_secs;
        let checkpointed = lease.checkpointed_secs;
        self.insert(id, granted, 0, now + secs(granted), now);
        let reset = (checkpointed > 0).then(|| {
            Command::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: vec![LeaseCheckpoint {
                    id,
                    remaining_ttl: 0,
                }],
            })
        });
        Ok((granted, reset))
    }

    /// LeaseTimeToLive as the primary sees it.
    pub fn time_to_live(&mut self, id: i64, now: Instant) -> Result<TimeToLive, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotLeader);
        }
        self.observe(now);
        let lease = self.leases.get(&id).ok_or(LeaseError::NotFound)?;
        Ok(TimeToLive {
            remaining_secs: lease.deadline.saturating_duration_since(now).as_secs() as i64,
            granted_secs: lease.granted_secs,
        })
    }

    /// The loop ticked at `now`; `interval` is how long after the previous
    /// tick it was due. Returns the commands to propose (revocations of
    /// expired leases, checkpoints). Does nothing unless primary.
    pub fn tick(&mut self, now: Instant, interval: Duration) -> Vec<Command> {
        if !self.primary {
            return Vec::new();
        }
        self.interval = interval;
        // Invariant 1: if the loop was not running, nobody could renew
        // through us meanwhile, so the stall does not count.
        self.observe(now);
        let mut out = Vec::new();
        let mut revokes = 0;
        let due: Vec<i64> = self
            .expiry
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in due {
            if revokes >= REVOKES_PER_TICK_MAX {
                break;
            }
            let lease = self
                .leases
                .get_mut(&id)
                .expect("expiry entries are tracked");
            let retry = lease
                .revoke_proposed_at
                .is_none_or(|at| now.saturating_duration_since(at) >= self.config.revoke_retry);
            if retry {
                lease.revoke_proposed_at = Some(now);
                out.push(Command::LeaseRevoke(LeaseRevokeRequest { id }));
                revokes += 1;
            }
        }
        let mut batch = Vec::new();
        while let Some(&(at, id)) = self.checkpoints.first() {
            if at > now || batch.len() >= CHECKPOINTS_PER_PROPOSAL_MAX {
                break;
            }
            self.checkpoints.pop_first();
            let next = now + self.config.checkpoint_interval;
            let lease = self
                .leases
                .get_mut(&id)
                .expect("checkpoint entries are tracked");
            lease.next_checkpoint = None;
            if lease.revoke_proposed_at.is_some() {
                continue;
            }
            let remaining = lease.deadline.saturating_duration_since(now);
            // Rounded up: a checkpoint never shortens a lease.
            let remaining_ttl =
                remaining.as_secs() as i64 + i64::from(remaining.subsec_nanos() > 0);
            if remaining_ttl > 0 {
                batch.push(LeaseCheckpoint { id, remaining_ttl });
            }
            lease.next_checkpoint = Some(next);
            self.checkpoints.insert((next, id));
        }
        if !batch.is_empty() {
            out.push(Command::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: batch,
            }));
        }
        out
    }

    fn extend_all(&mut self, by: Duration) {
        self.forgiven += by;
        let ids: Vec<i64> = self.leases.keys().copied().collect();
        self.expiry.clear();
        for id in ids {
            let lease = self.leases.get_mut(&id).expect("listed above");
            lease.deadline += by;
            self.expiry.insert((lease.deadline, id));
        }
    }

    /// A lease command was applied successfully (`ok`) or refused. Keeps
    /// the primary's table in step with the store.
    pub fn on_applied(&mut self, command: &Command, ok: bool, now: Instant) {
        match command {
            Command::LeaseGrant(req) if ok && self.primary => {
                self.insert(req.id, req.ttl, 0, now + secs(req.ttl), now);
            }
            // A refused revoke means the lease is already gone.
            Command::LeaseRevoke(req) => self.remove(req.id),
            Command::LeaseCheckpoint(req) if ok => {
                for cp in &req.checkpoints {
                    if let Some(lease) = self.leases.get_mut(&cp.id) {
                        lease.checkpointed_secs = cp.remaining_ttl;
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_mvcc::LeaseGrantRequest;

    const TICK: Duration = Duration::from_millis(100);

    fn grant(id: i64, ttl: i64) -> Command {
        Command::LeaseGrant(LeaseGrantRequest { id, ttl })
    }

    fn revoked(commands: &[Command]) -> Vec<i64> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::LeaseRevoke(r) => Some(r.id),
                _ => None,
            })
            .collect()
    }

    /// Ticks every TICK from `from` to `to`, collecting revocations (and
    /// applying them at once if `apply`).
    fn run_with(
        lessor: &mut Lessor,
        from: Instant,
        to: Instant,
        apply: bool,
    ) -> Vec<(Duration, i64)> {
        let mut out = Vec::new();
        let mut now = from;
        while now <= to {
            for id in revoked(&lessor.tick(now, TICK)) {
                out.push((now - from, id));
                if apply {
                    lessor.on_applied(&Command::LeaseRevoke(LeaseRevokeRequest { id }), true, now);
                }
            }
            now += TICK;
        }
        out
    }

    fn run(lessor: &mut Lessor, from: Instant, to: Instant) -> Vec<(Duration, i64)> {
        run_with(lessor, from, to, false)
    }

    #[test]
    fn follower_answers_not_leader_and_proposes_nothing() {
        let mut lessor = Lessor::new(LessorConfig::default());
        let now = Instant::now();
        lessor.on_applied(&grant(1, 5), true, now);
        assert_eq!(lessor.renew(1, now), Err(LeaseError::NotLeader));
        assert!(lessor.tick(now + Duration::from_secs(60), TICK).is_empty());
    }

    #[test]
    fn expiry_is_proposed_once_after_the_ttl_and_retried() {
        let mut lessor = Lessor::new(LessorConfig::default());
        let t0 = Instant::now();
        lessor.promote(Vec::new(), t0);
        lessor.on_applied(&grant(7, 2), true, t0);
        let revokes = run(&mut lessor, t0, t0 + Duration::from_secs(4));
        assert_eq!(revokes, vec![(Duration::from_secs(2), 7)]);
        // Not applied within revoke_retry: proposed again.
        let later = run(
            &mut lessor,
            t0 + Duration::from_secs(5),
            t0 + Duration::from_secs(6),
        );
        assert_eq!(later.len(), 1);
        lessor.on_applied(
            &Command::LeaseRevoke(LeaseRevokeRequest { id: 7 }),
            true,
            t0,
        );
        assert!(lessor.is_empty());
    }

    #[test]
    fn renew_pushes_the_deadline() {
        let mut lessor = Lessor::new(LessorConfig::default());
        let t0 = Instant::now();
        lessor.promote(Vec::new(), t0);
        lessor.on_applied(&grant(1, 3), true, t0);
        assert!(run(&mut lessor, t0, t0 + Duration::from_secs(2)).is_empty());
        let (ttl, reset) = lessor.renew(1, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!((ttl, reset), (3, None));
        let ttl = lessor.time_to_live(1, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(
            ttl,
            TimeToLive {
                remaining_secs: 3,
                granted_secs: 3
            }
        );
        let revokes = run(
            &mut lessor,
            t0 + Duration::from_secs(2),
            t0 + Duration::from_secs(6),
        );
        assert_eq!(revokes, vec![(Duration::from_secs(3), 1)]);
        // Expired and being revoked: cannot be renewed.
        assert_eq!(
            lessor.renew(1, t0 + Duration::from_secs(6)),
            Err(LeaseError::NotFound)
        );
        assert_eq!(lessor.renew(99, t0), Err(LeaseError::NotFound));
    }

    #[test]
    fn a_stalled_leader_does_not_mass_revoke_when_it_resumes() {
        let mut lessor = Lessor::new(LessorConfig::default());
        let t0 = Instant::now();
        lessor.promote(Vec::new(), t0);
        for id in 1..=50 {
            lessor.on_applied(&grant(id, 5), true, t0);
        }
        assert!(run(&mut lessor, t0, t0 + Duration::from_secs(1)).is_empty());
        // The loop does not tick for 30 s (a 30 s fsync, or SIGSTOP).
        let resumed = t0 + Duration::from_secs(31);
        assert!(revoked(&lessor.tick(resumed, TICK)).is_empty());
        assert!(lessor.forgiven() >= Duration::from_secs(29));
        // A keep-alive queued during the stall is served, not refused.
        let mut other = Lessor::new(LessorConfig::default());
        other.promote(Vec::new(), t0);
        other.on_applied(&grant(1, 5), true, t0);
        other.tick(t0 + TICK, TICK);
        assert_eq!(other.renew(1, t0 + Duration::from_secs(30)), Ok((5, None)));
        // The 4 s the leases had left still count after the stall.
        let revokes = run(&mut lessor, resumed, resumed + Duration::from_secs(6));
        assert!(!revokes.is_empty());
        assert!(revokes
            .iter()
            .all(|(after, _)| *after >= Duration::from_millis(3900)));
    }

    #[test]
    fn promotion_uses_the_checkpoint_plus_the_extension_and_never_less() {
        let config = LessorConfig {
            promotion_extension: Duration::from_secs(1),
            ..LessorConfig::default()
        };
        let mut lessor = Lessor::new(config);
        let t0 = Instant::now();
        let info = |id, granted_ttl, remaining_ttl| LeaseInfo {
            id,
            granted_ttl,
            remaining_ttl,
            keys: Vec::new(),
        };
        lessor.promote(vec![info(1, 10, 0), info(2, 10, 4)], t0);
        let revokes = run_with(&mut lessor, t0, t0 + Duration::from_secs(12), true);
        assert_eq!(
            revokes,
            vec![(Duration::from_secs(5), 2), (Duration::from_secs(11), 1)]
        );
        lessor.demote();
        assert!(lessor.is_empty());
        assert_eq!(lessor.time_to_live(1, t0), Err(LeaseError::NotLeader));
    }

    #[test]
    fn checkpoints_are_proposed_and_reset_by_a_renewal() {
        let config = LessorConfig {
            checkpoint_interval: Duration::from_secs(2),
            ..LessorConfig::default()
        };
        let mut lessor = Lessor::new(config);
        let t0 = Instant::now();
        lessor.promote(Vec::new(), t0);
        lessor.on_applied(&grant(1, 10), true, t0);
        lessor.on_applied(&grant(2, 1), true, t0);
        run(&mut lessor, t0, t0 + Duration::from_secs(2) - TICK);
        let commands = lessor.tick(t0 + Duration::from_secs(2), TICK);
        let checkpoint = commands
            .iter()
            .find_map(|c| match c {
                Command::LeaseCheckpoint(r) => Some(r.clone()),
                _ => None,
            })
            .expect("a checkpoint of lease 1");
        assert_eq!(
            checkpoint.checkpoints,
            vec![LeaseCheckpoint {
                id: 1,
                remaining_ttl: 8
            }]
        );
        let applied = Command::LeaseCheckpoint(checkpoint);
        lessor.on_applied(&applied, true, t0 + Duration::from_secs(2));
        let (_, reset) = lessor.renew(1, t0 + Duration::from_secs(3)).unwrap();
        assert_eq!(
            reset,
            Some(Command::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: vec![LeaseCheckpoint {
                    id: 1,
                    remaining_ttl: 0
                }]
            }))
        );
        // No further reset until the next checkpoint.
        assert_eq!(
            lessor.renew(1, t0 + Duration::from_secs(3)).unwrap().1,
            None
        );
    }

    #[test]
    fn revocations_are_rate_limited_per_tick() {
        let mut lessor = Lessor::new(LessorConfig::default());
        let t0 = Instant::now();
        lessor.promote(Vec::new(), t0);
        for id in 1..=(REVOKES_PER_TICK_MAX as i64 * 2 + 5) {
            lessor.on_applied(&grant(id, 1), true, t0);
        }
        let at = t0 + Duration::from_secs(1);
        assert!(run(&mut lessor, t0, at - TICK).is_empty());
        assert_eq!(revoked(&lessor.tick(at, TICK)).len(), REVOKES_PER_TICK_MAX);
        assert_eq!(
            revoked(&lessor.tick(at + TICK, TICK)).len(),
            REVOKES_PER_TICK_MAX
        );
        assert_eq!(revoked(&lessor.tick(at + TICK * 2, TICK)).len(), 5);
    }
}
