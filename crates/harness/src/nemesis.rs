//! # Nemeses: the faults, their schedules, and the log of what was done
//!
//! A nemesis breaks the cluster on a schedule while the clients run. Each
//! kind named on the command line (`--nemesis partition,kill`) runs its own
//! loop, so combined nemeses overlap as they would in production (a
//! partition while a member is down):
//!
//! ```text
//!  healthy gap ──> fault starts ──> held ──> fault healed ──> healthy gap ...
//!  [GAP_MIN,GAP_MAX]              [HOLD_MIN,HOLD_MAX]
//! ```
//!
//! - `partition`: one of random halves (a random minority against the
//!   rest), isolating the current leader, or a majority ring (each member
//!   hears a majority, no two the same one, via one-way drops), applied
//!   inside every member's transport through its admin endpoint.
//! - `kill`: SIGKILL a random minority, or (less often) every member; then
//!   restart them on the same data directories.
//! - `pause`: SIGSTOP the leader (most often) or a random member; then
//!   SIGCONT.
//! - `clock`: skew the timers of some members (ticks from 10x faster to
//!   10x slower) through the admin endpoint; then reset them.
//! - `member`: remove a random member (MemberRemove through the leader),
//!   stop it and wipe its data directory; then add it back (MemberAdd of
//!   its peer URL) and start it empty with `--initial-cluster-state
//!   existing`, so it catches up from the leader. At most a minority is
//!   ever removed ([`crate::Cluster::remove`] refuses more).
//!
//! Every start and end of a fault, and every step that could not be done,
//! goes to the [`NemesisLog`] with its time on the run's [`Clock`].
//!
//! Invariants:
//! 1. A nemesis loop starts no fault after the time limit and heals its
//!    own fault before it returns; every wait is capped at the time limit.
//!    (The run heals everything once more afterwards:
//!    [`crate::Cluster::heal_all`].)
//! 2. Schedules are drawn from a seeded RNG, so a seed names the same
//!    sequence of choices (the moments they hit the system still vary).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cluster::{Cluster, Cut, ProcessState};
use crate::error::HarnessError;
use crate::workload::Clock;

/// Shortest healthy gap before a fault: several election timeouts, so the
/// cluster can elect a leader and serve between faults and the history
/// holds healthy stretches too.
pub const GAP_MIN: Duration = Duration::from_millis(1500);
/// Longest healthy gap.
pub const GAP_MAX: Duration = Duration::from_millis(3500);
/// Shortest fault: long enough that members time out and elect (the
/// election timeout is 500 ms).
pub const HOLD_MIN: Duration = Duration::from_millis(2000);
/// Longest fault: long enough for a minority's operations to time out and
/// for a stale member to fall far behind.
pub const HOLD_MAX: Duration = Duration::from_millis(6000);

/// Percent of `kill` faults that kill every member rather than a minority.
const KILL_ALL_PERCENT: u32 = 25;
/// Percent of `pause` faults aimed at the leader.
const PAUSE_LEADER_PERCENT: u32 = 75;
/// Timer scales the clock nemesis picks from (percent of the configured
/// tick: 10 = ten times faster, 1000 = ten times slower).
const CLOCK_SCALES_PERCENT: [u64; 6] = [10, 25, 50, 200, 400, 1000];

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NemesisKind {
    /// Network partitions inside the transport.
    Partition,
    /// kill -9 and restart.
    Kill,
    /// SIGSTOP and SIGCONT.
    Pause,
    /// Timer skew.
    Clock,
    /// Membership change: remove a member, wipe it, add it back.
    Member,
}

impl NemesisKind {
    /// Every kind, in CLI order.
    pub const ALL: [NemesisKind; 5] = [
        NemesisKind::Partition,
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Clock,
        NemesisKind::Member,
    ];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            NemesisKind::Partition => "partition",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Clock => "clock",
            NemesisKind::Member => "member",
        }
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NemesisKind {
    type Err = HarnessError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NemesisKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                HarnessError::Config(format!(
                    "unknown nemesis {s:?} (expected partition, kill, pause, clock, member or none)"
                ))
            })
    }
}

/// Parses `--nemesis`: a comma-separated list of kinds, or `none`.
pub fn parse_nemeses(text: &str) -> Result<Vec<NemesisKind>, HarnessError> {
    let mut kinds = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part != "none" {
            kinds.insert(part.parse::<NemesisKind>()?);
        }
    }
    Ok(kinds.into_iter().collect())
}

/// One line of the nemesis log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NemesisEvent {
    /// When, in nanoseconds on the run's clock.
    pub time_ns: u64,
    /// Which nemesis (`None`: the run itself, e.g. the final heal).
    pub nemesis: Option<NemesisKind>,
    /// `start`, `end` or `note`.
    pub action: &'static str,
    /// What exactly, with member names.
    pub detail: String,
}

impl fmt::Display for NemesisEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self.nemesis.map_or("run", NemesisKind::as_str);
        write!(
            f,
            "{:>9.3}s  {who:<9}  {:<5}  {}",
            self.time_ns as f64 / 1e9,
            self.action,
            self.detail
        )
    }
}

/// What every nemesis did, in time order.
#[derive(Debug)]
pub struct NemesisLog {
    clock: Clock,
    events: Mutex<Vec<NemesisEvent>>,
}

impl NemesisLog {
    /// An empty log on `clock`.
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            events: Mutex::new(Vec::new()),
        }
    }

    /// Records an event now.
    pub fn record(
        &self,
        nemesis: Option<NemesisKind>,
        action: &'static str,
        detail: impl Into<String>,
    ) {
        let event = NemesisEvent {
            time_ns: self.clock.now(),
            nemesis,
            action,
            detail: detail.into(),
        };
        // A poisoned lock means a panicking nemesis; keep logging anyway.
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.push(event);
    }

    /// The events so far, in time order.
    pub fn events(&self) -> Vec<NemesisEvent> {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        events.sort_by_key(|e| e.time_ns);
        events
    }

    /// Faults started per nemesis.
    pub fn fault_counts(&self) -> Vec<(NemesisKind, usize)> {
        let events = self.events();
        NemesisKind::ALL
            .into_iter()
            .map(|k| {
                let n = events
                    .iter()
                    .filter(|e| e.nemesis == Some(k) && e.action == "start")
                    .count();
                (k, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The log as text, one event per line.
    pub fn to_text(&self) -> String {
        self.events().iter().map(|e| format!("{e}\n")).collect()
    }
}

/// A symmetric partition: members in different groups drop each other's
/// traffic both ways.
pub fn split(n: usize, groups: &[BTreeSet<usize>]) -> Vec<Cut> {
    (0..n)
        .map(|i| {
            let others: BTreeSet<usize> = groups
                .iter()
                .filter(|g| !g.contains(&i))
                .flatten()
                .copied()
                .collect();
            Cut {
                drop_from: others.clone(),
                drop_to: others,
            }
        })
        .collect()
}

/// A random minority (`n / 2` members) against the rest.
pub fn random_halves(n: usize, rng: &mut impl Rng) -> Vec<BTreeSet<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let (minority, majority) = order.split_at(n / 2);
    vec![
        minority.iter().copied().collect(),
        majority.iter().copied().collect(),
    ]
}

/// `victim` alone against the rest.
pub fn isolate(n: usize, victim: usize) -> Vec<BTreeSet<usize>> {
    vec![
        [victim].into_iter().collect(),
        (0..n).filter(|&i| i != victim).collect(),
    ]
}

/// A majority ring: members placed on a ring in a random order; each one
/// hears itself and the next `n / 2` members on the ring (a majority) and
/// drops what the others send. No two members hear the same majority.
/// Drops are one-way (receipt only), as in Jepsen's grudges.
pub fn majority_ring(n: usize, rng: &mut impl Rng) -> Vec<Cut> {
    let mut ring: Vec<usize> = (0..n).collect();
    ring.shuffle(rng);
    let mut cuts = vec![Cut::default(); n];
    for (pos, &member) in ring.iter().enumerate() {
        let heard: BTreeSet<usize> = (0..=n / 2).map(|d| ring[(pos + d) % n]).collect();
        cuts[member].drop_from = (0..n).filter(|j| !heard.contains(j)).collect();
    }
    cuts
}

/// A random minority of `1..=(n-1)/2` members (one member for n <= 2).
pub fn random_minority(n: usize, rng: &mut impl Rng) -> Vec<usize> {
    let most = ((n.saturating_sub(1)) / 2).max(1);
    let size = rng.gen_range(1..=most);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    order.truncate(size);
    order.sort_unstable();
    order
}

fn names(cluster: &Cluster, members: impl IntoIterator<Item = usize>) -> String {
    let names: Vec<&str> = members.into_iter().map(|i| cluster.name(i)).collect();
    format!("{{{}}}", names.join(", "))
}

fn describe_groups(cluster: &Cluster, groups: &[BTreeSet<usize>]) -> String {
    groups
        .iter()
        .map(|g| names(cluster, g.iter().copied()))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn describe_ring(cluster: &Cluster, cuts: &[Cut]) -> String {
    cuts.iter()
        .enumerate()
        .map(|(i, cut)| {
            format!(
                "{} hears {}",
                cluster.name(i),
                names(
                    cluster,
                    (0..cuts.len()).filter(|j| !cut.drop_from.contains(j))
                )
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn random_duration(rng: &mut impl Rng, min: Duration, max: Duration) -> Duration {
    let span = u64::try_from((max - min).as_millis()).unwrap_or(0);
    min + Duration::from_millis(rng.gen_range(0..=span))
}

/// The shared cluster, as nemesis loops see it.
pub type SharedCluster = Arc<tokio::sync::Mutex<Cluster>>;

/// Runs one nemesis until `end_ns` on `clock` (invariant 1).
pub async fn run_nemesis(
    kind: NemesisKind,
    cluster: SharedCluster,
    clock: Clock,
    end_ns: u64,
    seed: u64,
    log: Arc<NemesisLog>,
) {
    let mut rng =
        SmallRng::seed_from_u64(seed ^ (kind as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    let end = clock.instant_at(end_ns);
    // Each turn sleeps at least GAP_MIN, so the loop ends by `end`.
    loop {
        let gap = random_duration(&mut rng, GAP_MIN, GAP_MAX);
        tokio::time::sleep_until((std::time::Instant::now() + gap).min(end).into()).await;
        if std::time::Instant::now() + HOLD_MIN > end {
            return;
        }
        let healer = start_fault(kind, &cluster, &mut rng, &log).await;
        let hold = random_duration(&mut rng, HOLD_MIN, HOLD_MAX);
        tokio::time::sleep_until((std::time::Instant::now() + hold).min(end).into()).await;
        end_fault(kind, &cluster, healer, &log).await;
    }
}

/// What must be undone when a fault ends.
enum Healer {
    Partition,
    Restart(Vec<usize>),
    Resume(usize),
    Clock(Vec<usize>),
    AddBack(usize),
    Nothing,
}

async fn start_fault(
    kind: NemesisKind,
    cluster: &SharedCluster,
    rng: &mut SmallRng,
    log: &NemesisLog,
) -> Healer {
    let mut cluster = cluster.lock().await;
    let n = cluster.len();
    let me = Some(kind);
    match kind {
        NemesisKind::Partition => {
            let (cuts, detail) = match rng.gen_range(0..3) {
                0 => {
                    let groups = random_halves(n, rng);
                    (
                        split(n, &groups),
                        format!("random halves {}", describe_groups(&cluster, &groups)),
                    )
                }
                1 => match cluster.leader().await {
                    Some(leader) => {
                        let groups = isolate(n, leader);
                        (
                            split(n, &groups),
                            format!("isolate leader {}", describe_groups(&cluster, &groups)),
                        )
                    }
                    None => {
                        let groups = random_halves(n, rng);
                        (
                            split(n, &groups),
                            format!(
                                "no leader known; random halves {}",
                                describe_groups(&cluster, &groups)
                            ),
                        )
                    }
                },
                _ => {
                    let cuts = majority_ring(n, rng);
                    let detail = format!("majority ring: {}", describe_ring(&cluster, &cuts));
                    (cuts, detail)
                }
            };
            log.record(me, "start", detail);
            for problem in cluster.partition(&cuts).await {
                log.record(me, "note", problem);
            }
            Healer::Partition
        }
        NemesisKind::Kill => {
            let victims: Vec<usize> = if rng.gen_range(0..100) < KILL_ALL_PERCENT {
                (0..n).collect()
            } else {
                random_minority(n, rng)
            };
            log.record(
                me,
                "start",
                format!("kill -9 {}", names(&cluster, victims.iter().copied())),
            );
            for &i in &victims {
                cluster.kill(i);
            }
            Healer::Restart(victims)
        }
        NemesisKind::Pause => {
            let leader = cluster.leader().await;
            let (victim, why) = match leader {
                Some(l) if rng.gen_range(0..100) < PAUSE_LEADER_PERCENT => (l, "leader"),
                _ => (rng.gen_range(0..n), "member"),
            };
            log.record(
                me,
                "start",
                format!("SIGSTOP {why} {}", cluster.name(victim)),
            );
            if let Err(e) = cluster.pause(victim) {
                log.record(me, "note", e.to_string());
                return Healer::Nothing;
            }
            Healer::Resume(victim)
        }
        NemesisKind::Clock => {
            let victims = random_minority(n, rng);
            let mut details = Vec::new();
            let mut skewed = Vec::new();
            for &i in &victims {
                let Some(&scale) = CLOCK_SCALES_PERCENT.choose(rng) else {
                    continue;
                };
                details.push(format!("{} ticks at {scale}%", cluster.name(i)));
                if let Err(e) = cluster.set_clock(i, scale).await {
                    details.push(format!("({e})"));
                }
                skewed.push(i);
            }
            log.record(me, "start", format!("skew timers: {}", details.join(", ")));
            Healer::Clock(skewed)
        }
        NemesisKind::Member => {
            let candidates: Vec<usize> = (0..n)
                .filter(|&i| cluster.state(i) == ProcessState::Running)
                .collect();
            let Some(&victim) = candidates.choose(rng) else {
                log.record(me, "note", "no running member to remove");
                return Healer::Nothing;
            };
            let leader = cluster.leader().await;
            let why = if leader == Some(victim) {
                "the leader"
            } else {
                "a follower"
            };
            log.record(
                me,
                "start",
                format!("remove {} ({why}), wipe its data", cluster.name(victim)),
            );
            let note = |step: String| log.record(me, "note", step);
            match cluster.remove(victim, &note).await {
                Ok(()) => Healer::AddBack(victim),
                Err(e) => {
                    log.record(me, "note", format!("remove failed: {e}"));
                    // A member whose removal failed half-way (removed from
                    // the configuration but not stopped) is left to the
                    // final heal, which adds back what is removed.
                    if cluster.is_removed(victim) {
                        Healer::AddBack(victim)
                    } else {
                        log.record(me, "end", "nothing to undo");
                        Healer::Nothing
                    }
                }
            }
        }
    }
}

async fn end_fault(kind: NemesisKind, cluster: &SharedCluster, healer: Healer, log: &NemesisLog) {
    let mut cluster = cluster.lock().await;
    let me = Some(kind);
    match healer {
        Healer::Partition => {
            log.record(me, "end", "heal partition");
            for problem in cluster.heal_partitions().await {
                log.record(me, "note", problem);
            }
        }
        Healer::Restart(victims) => {
            log.record(
                me,
                "end",
                format!("restart {}", names(&cluster, victims.iter().copied())),
            );
            for i in victims {
                if let Err(e) = cluster.restart(i).await {
                    log.record(me, "note", e.to_string());
                }
            }
        }
        Healer::Resume(victim) => {
            log.record(me, "end", format!("SIGCONT {}", cluster.name(victim)));
            if let Err(e) = cluster.resume(victim).await {
                log.record(me, "note", e.to_string());
            }
        }
        Healer::Clock(victims) => {
            log.record(
                me,
                "end",
                format!(
                    "reset timers of {}",
                    names(&cluster, victims.iter().copied())
                ),
            );
            for i in victims {
                if let Err(e) = cluster.set_clock(i, 100).await {
                    log.record(me, "note", e.to_string());
                }
            }
        }
        Healer::AddBack(victim) => {
            log.record(
                me,
                "end",
                format!("add {} back, empty, to rejoin", cluster.name(victim)),
            );
            let note = |step: String| log.record(me, "note", step);
            if let Err(e) = cluster.add_back(victim, &note).await {
                log.record(me, "note", format!("add back failed: {e}"));
            }
        }
        Healer::Nothing => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(cuts: &[Cut], i: usize) -> BTreeSet<usize> {
        (0..cuts.len())
            .filter(|j| !cuts[i].drop_from.contains(j))
            .collect()
    }

    #[test]
    fn majority_ring_gives_everyone_a_different_majority() {
        for n in [3, 5, 7] {
            for seed in 0..20 {
                let mut rng = SmallRng::seed_from_u64(seed);
                let cuts = majority_ring(n, &mut rng);
                let majorities: BTreeSet<BTreeSet<usize>> =
                    (0..n).map(|i| heard(&cuts, i)).collect();
                assert_eq!(
                    majorities.len(),
                    n,
                    "n={n}: two members hear the same majority"
                );
                for i in 0..n {
                    let h = heard(&cuts, i);
                    assert!(h.len() > n / 2, "n={n}: member {i} hears only {h:?}");
                    assert!(h.contains(&i));
                    assert!(cuts[i].drop_to.is_empty(), "ring drops are one-way");
                }
            }
        }
    }

    #[test]
    fn halves_and_isolation_are_symmetric_and_leave_a_majority() {
        let mut rng = SmallRng::seed_from_u64(7);
        for n in [3, 5] {
            let groups = random_halves(n, &mut rng);
            assert_eq!(groups[0].len(), n / 2);
            assert_eq!(groups[1].len(), n - n / 2);
            let cuts = split(n, &groups);
            for i in 0..n {
                assert_eq!(cuts[i].drop_from, cuts[i].drop_to);
                for &j in &cuts[i].drop_from {
                    assert!(cuts[j].drop_from.contains(&i), "cut {i}-{j} is one-sided");
                }
            }
            let cuts = split(n, &isolate(n, 1));
            assert_eq!(cuts[1].drop_from.len(), n - 1);
            assert_eq!(cuts[0].drop_from, [1].into_iter().collect());
        }
    }

    #[test]
    fn minorities_are_minorities() {
        let mut rng = SmallRng::seed_from_u64(3);
        for n in [1, 3, 5] {
            for _ in 0..50 {
                let m = random_minority(n, &mut rng);
                assert!(!m.is_empty());
                assert!(m.len() <= ((n - 1) / 2).max(1), "n={n}: {m:?}");
            }
        }
    }

    #[test]
    fn nemesis_lists_parse() {
        assert_eq!(
            parse_nemeses("partition,kill").unwrap(),
            vec![NemesisKind::Partition, NemesisKind::Kill]
        );
        assert!(parse_nemeses("none").unwrap().is_empty());
        assert!(parse_nemeses("partition,bogus").is_err());
    }
}
