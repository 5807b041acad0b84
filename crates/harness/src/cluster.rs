//! # The cluster: real `concord serve` processes on loopback
//!
//! [`Cluster`] owns N member processes (`n1`, `n2`, ...), each with its own
//! data directory and log under the run's output folder, its client, peer
//! and admin ports on 127.0.0.1, and the fault-injection admin endpoint
//! switched on. It is the only code that touches the processes: the
//! nemesis asks it to kill, restart, pause, resume, partition, skew,
//! remove or add back a member; the workload only gets the client URLs.
//!
//! Layout under the cluster directory:
//! ```text
//! n1/        data directory of member n1 (kept across restarts; deleted
//!            when n1 is removed from the cluster, recreated when it is
//!            added back)
//! n1.log     its stdout and stderr, appended across restarts
//! ...
//! ```
//!
//! Invariants:
//! 1. Every child process is killed (SIGKILL) and reaped when the
//!    [`Cluster`] drops, including while a panic unwinds: each child lives
//!    in a guard whose `Drop` kills it. A paused child dies too (SIGKILL is
//!    delivered to stopped processes).
//! 2. The cluster remembers the faults it was asked for (partition rules,
//!    timer scale) per member, and re-applies them when a member comes
//!    back (restart, resume): a fault outlives a crash of its target,
//!    exactly until it is healed.
//! 3. Ports are reserved per cluster in a block that no other harness on
//!    this machine uses at the same time (a lock file per block), below
//!    Linux's ephemeral range so that outgoing connections never take a
//!    killed member's port before it restarts. A program outside the
//!    harness may still bind one of them between the probe and the
//!    member's start; that start alone is retried, on a fresh block.
//! 4. Every wait is bounded ([`READY_TIMEOUT`], [`ADMIN_TIMEOUT`], the
//!    caller's timeouts); a member that does not come up is an error that
//!    says how its process ended and quotes the end of its log.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::cluster_client::ClusterClient;
use concord_etcd_proto::tonic::transport::{Channel, Endpoint};

use crate::error::HarnessError;
use crate::http;

/// Bound on one membership change (remove or add), retries included:
/// room for several elections and the members' own request timeout.
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(20);

/// Budget of one Cluster service call.
const MEMBERSHIP_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long adding a member back waits to see it catch up (only logged;
/// the workload keeps running meanwhile on the other members).
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// Pause between attempts of a membership change.
const MEMBERSHIP_RETRY: Duration = Duration::from_millis(200);

/// A Cluster service client of `url` (connects on first use).
fn cluster_client(url: &str) -> Result<ClusterClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("{url}: {e}"))?
        .connect_timeout(Duration::from_millis(500));
    Ok(ClusterClient::new(endpoint.connect_lazy()))
}

/// Heartbeat interval given to members (ms). Short, so that a test of a
/// few tens of seconds sees many elections; loopback round trips are tens
/// of microseconds, so 50 ms is still generous.
pub const HEARTBEAT_INTERVAL_MS: u64 = 50;

/// Election timeout given to members (ms): ten heartbeats, etcd's ratio.
/// A fault held for a few seconds thus forces several elections.
pub const ELECTION_TIMEOUT_MS: u64 = 500;

/// How long a (re)started member may take to answer on its admin endpoint.
/// A member opens its log and binds its ports in well under a second; the
/// rest is room for a loaded 2-core CI machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Budget of one admin call. Loopback answers take microseconds; a member
/// that does not answer within a second is paused or dead.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Between two polls of a member's status while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Lines of a member's log quoted when it fails to come up.
pub const LOG_TAIL_LINES: usize = 12;

/// Opens the lines each start of a member appends to its log.
const START_MARKER: &str = "--- concord check: starting ";

/// Tries at starting a cluster. The port block is probed free, but another
/// program may bind one of its ports before the member does; such an
/// attempt is retried on a fresh block, anything else fails at once.
const START_ATTEMPTS: usize = 3;

/// Sizes the harness supports: 3 and 5 are what the issue asks for; 1 and 7
/// cost nothing extra.
pub const NODES_MAX: usize = 7;

/// Ports per member: client, peer, admin.
const PORTS_PER_MEMBER: u16 = 3;

/// Ports per reserved block: room for [`NODES_MAX`] members.
const PORT_BLOCK: u16 = 32;

/// Reserved blocks are taken in `[PORT_RANGE_LOW, PORT_RANGE_HIGH)`, below
/// Linux's default ephemeral range (32768-60999) so that a client's
/// outgoing connection cannot occupy the port of a member that is down.
const PORT_RANGE_LOW: u16 = 20_000;
const PORT_RANGE_HIGH: u16 = 32_000;

/// Blocks tried before giving up (there are 375 in the range).
const PORT_BLOCK_ATTEMPTS: usize = 200;

const _: () = assert!(PORTS_PER_MEMBER as usize * NODES_MAX <= PORT_BLOCK as usize);
const _: () = assert!(PORT_RANGE_HIGH <= 32_768);
const _: () = assert!((PORT_RANGE_HIGH - PORT_RANGE_LOW).is_multiple_of(PORT_BLOCK));

/// `GET /status` of a member's admin endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's id.
    pub member_id: u64,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// Its current term.
    pub term: u64,
    /// Its commit index.
    pub commit: u64,
    /// Its applied index.
    pub applied: u64,
}

/// `--snapshot-count` of the members: small, so that a run of a few
/// thousand operations compacts the log several times and a member that was
/// partitioned, paused or restarted catches up by snapshot under the
/// nemesis (etcd's default of 100,000 would never snapshot in a check).
pub const SNAPSHOT_COUNT: u64 = 500;

/// `--experimental-snapshot-catchup-entries` of the members: small as well,
/// so that a short absence is caught up from the log and a long one by
/// snapshot, and a check exercises both.
pub const SNAPSHOT_CATCHUP_ENTRIES: u64 = 100;

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Members (1 to [`NODES_MAX`]).
    pub nodes: usize,
    /// The `concord` binary to run as `concord serve`.
    pub concord_bin: PathBuf,
    /// Folder for data directories and logs (created if missing).
    pub dir: PathBuf,
    /// `--initial-cluster-token`.
    pub token: String,
    /// `--heartbeat-interval` (ms).
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` (ms).
    pub election_timeout_ms: u64,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// `--experimental-snapshot-catchup-entries`.
    pub snapshot_catchup_entries: u64,
}

impl ClusterSpec {
    /// `nodes` members of `concord_bin` under `dir`, with the harness's
    /// timer settings.
    pub fn new(nodes: usize, concord_bin: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        Self {
            nodes,
            concord_bin: concord_bin.into(),
            dir: dir.into(),
            token: "concord-check".to_owned(),
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            election_timeout_ms: ELECTION_TIMEOUT_MS,
            snapshot_count: SNAPSHOT_COUNT,
            snapshot_catchup_entries: SNAPSHOT_CATCHUP_ENTRIES,
        }
    }
}

/// Whether a member's process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    /// Running.
    Running,
    /// Stopped with SIGSTOP.
    Paused,
    /// Killed (or exited); restart it with [`Cluster::restart`].
    Down,
    /// Removed from the cluster (MemberRemove), its process stopped and
    /// its data wiped; bring it back with [`Cluster::add_back`].
    Removed,
}

/// A child process killed and reaped on drop (invariant 1).
#[derive(Debug)]
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A reserved block of ports, released on drop (invariant 3).
#[derive(Debug)]
struct PortBlock {
    base: u16,
    lock: PathBuf,
}

impl Drop for PortBlock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

impl PortBlock {
    fn reserve(ports_needed: u16) -> Result<PortBlock, HarnessError> {
        let lock_dir = std::env::temp_dir().join("concord-harness-ports");
        std::fs::create_dir_all(&lock_dir)
            .map_err(|e| HarnessError::io(format!("creating {}", lock_dir.display()), e))?;
        let blocks = (PORT_RANGE_HIGH - PORT_RANGE_LOW) / PORT_BLOCK;
        let mut rng = rand::thread_rng();
        for _ in 0..PORT_BLOCK_ATTEMPTS {
            let base = PORT_RANGE_LOW + rng.gen_range(0..blocks) * PORT_BLOCK;
            let lock = lock_dir.join(format!("{base}.lock"));
            if !take_lock(&lock) {
                continue;
            }
            let block = PortBlock { base, lock };
            // Another program may hold one of the ports: check them all
            // while holding every listener, then let them go together.
            let listeners: Result<Vec<TcpListener>, _> = (0..ports_needed)
                .map(|offset| TcpListener::bind((Ipv4Addr::LOCALHOST, base + offset)))
                .collect();
            if listeners.is_ok() {
                return Ok(block);
            }
        }
        Err(HarnessError::NoFreePort {
            attempts: PORT_BLOCK_ATTEMPTS,
        })
    }
}

/// The last `lines` lines the member's latest start wrote to the log at
/// `path` (empty if unreadable). Logs of one run are small, so reading the
/// whole file is fine.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let latest = text.rfind(START_MARKER).map_or(&text[..], |at| &text[at..]);
    let all: Vec<&str> = latest.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a start failed because a member exited on a port that another
/// program took after the block was probed.
fn lost_a_port_race(error: &HarnessError) -> bool {
    matches!(
        error,
        HarnessError::NotReady { exit: Some(_), log_tail, .. }
            if log_tail.contains("Address already in use")
    )
}

/// Creates `lock` holding our pid; takes over a lock whose owner is gone.
fn take_lock(lock: &Path) -> bool {
    let pid = std::process::id();
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(lock)
            .and_then(|mut f| write!(f, "{pid}"))
    };
    if create().is_ok() {
        return true;
    }
    let owner_alive = std::fs::read_to_string(lock)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .is_some_and(|owner| Path::new(&format!("/proc/{owner}")).exists());
    if owner_alive {
        return false;
    }
    let _ = std::fs::remove_file(lock);
    create().is_ok()
}

/// What one member drops: its part of a partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cut {
    /// Members (indices) whose traffic this member drops on receipt.
    pub drop_from: BTreeSet<usize>,
    /// Members (indices) this member does not send to.
    pub drop_to: BTreeSet<usize>,
}

impl Cut {
    /// Whether the member drops nothing.
    pub fn is_empty(&self) -> bool {
        self.drop_from.is_empty() && self.drop_to.is_empty()
    }
}

/// Faults the cluster was asked to keep on one member (invariant 2).
#[derive(Clone, Debug, PartialEq, Eq)]
struct MemberFaults {
    cut: Cut,
    /// Timer tick length in percent of the configured one (100: normal).
    tick_scale_percent: u64,
}

impl MemberFaults {
    fn healthy() -> Self {
        Self {
            cut: Cut::default(),
            tick_scale_percent: 100,
        }
    }
}

/// One member: its ports, folders, process and remembered faults.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    admin_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<ChildGuard>,
    paused: bool,
    /// Removed from the cluster's configuration (and not added back yet).
    removed: bool,
    /// Started with `--initial-cluster-state existing` (re-added after a
    /// removal): restarts must join the same way.
    joined: bool,
    /// Learned from `/status` at first start; stable across restarts (it
    /// lives in the data directory).
    id: u64,
    faults: MemberFaults,
    /// How its last process ended, once the harness noticed.
    last_exit: Option<String>,
}

/// N `concord serve` processes. See the module docs.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    members: Vec<Member>,
    // Dropped after `members` (field order): ports are released only once
    // every child is dead.
    _ports: PortBlock,
}

impl Cluster {
    /// Starts every member, waits until each answers on its admin endpoint
    /// and a leader is elected.
    pub async fn start(spec: ClusterSpec) -> Result<Cluster, HarnessError> {
        let mut attempt = 1;
        loop {
            match Cluster::start_once(spec.clone()).await {
                Err(e) if attempt < START_ATTEMPTS && lost_a_port_race(&e) => {
                    // The failed attempt's members are dead (dropped); their
                    // data dirs name the old ports, so start from nothing.
                    for i in 0..spec.nodes {
                        let _ = std::fs::remove_dir_all(spec.dir.join(format!("n{}", i + 1)));
                    }
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(spec: ClusterSpec) -> Result<Cluster, HarnessError> {
        if spec.nodes == 0 || spec.nodes > NODES_MAX {
            return Err(HarnessError::Config(format!(
                "--nodes must be between 1 and {NODES_MAX}, not {}",
                spec.nodes
            )));
        }
        if !spec.concord_bin.is_file() {
            return Err(HarnessError::Config(format!(
                "no concord binary at {}",
                spec.concord_bin.display()
            )));
        }
        std::fs::create_dir_all(&spec.dir)
            .map_err(|e| HarnessError::io(format!("creating {}", spec.dir.display()), e))?;
        let ports = PortBlock::reserve(PORTS_PER_MEMBER * spec.nodes as u16)?;
        let members = (0..spec.nodes)
            .map(|i| {
                let name = format!("n{}", i + 1);
                let base = ports.base + PORTS_PER_MEMBER * i as u16;
                Member {
                    data_dir: spec.dir.join(&name),
                    log_path: spec.dir.join(format!("{name}.log")),
                    name,
                    client_port: base,
                    peer_port: base + 1,
                    admin_port: base + 2,
                    child: None,
                    paused: false,
                    removed: false,
                    joined: false,
                    id: 0,
                    faults: MemberFaults::healthy(),
                    last_exit: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            spec,
            members,
            _ports: ports,
        };
        for i in 0..cluster.len() {
            cluster.launch(i)?;
        }
        for i in 0..cluster.len() {
            let status = cluster.wait_ready(i).await?;
            cluster.members[i].id = status.member_id;
        }
        cluster
            .wait_for_leader(READY_TIMEOUT)
            .await
            .ok_or(HarnessError::NoLeader(READY_TIMEOUT))?;
        Ok(cluster)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never, once started).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The spec it was started with.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Member `i`'s name (`n1`, ...).
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// Member `i`'s id.
    pub fn member_id(&self, i: usize) -> u64 {
        self.members[i].id
    }

    /// Member `i`'s client URL (etcd gRPC).
    pub fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client URL, in member order.
    pub fn client_urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.client_url(i)).collect()
    }

    /// Member `i`'s log file.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.members[i].log_path
    }

    /// Whether member `i` runs, is paused or is down. A child that exited
    /// by itself counts as down.
    pub fn state(&mut self, i: usize) -> ProcessState {
        let member = &mut self.members[i];
        if member.removed {
            return ProcessState::Removed;
        }
        let exit = match &mut member.child {
            None => None,
            Some(child) => match child.0.try_wait() {
                Ok(None) => {
                    return if member.paused {
                        ProcessState::Paused
                    } else {
                        ProcessState::Running
                    };
                }
                Ok(Some(status)) => Some(status.to_string()),
                Err(e) => Some(format!("unknown (waiting for it failed: {e})")),
            },
        };
        if exit.is_some() {
            member.last_exit = exit;
        }
        member.child = None;
        member.paused = false;
        ProcessState::Down
    }

    /// Member `i`'s status, if it answers.
    pub async fn status(&self, i: usize) -> Option<MemberStatus> {
        let member = &self.members[i];
        if member.child.is_none() || member.paused {
            return None;
        }
        let response = http::request(self.admin_addr(i), "GET", "/status", None, ADMIN_TIMEOUT)
            .await
            .ok()?;
        if response.status != 200 {
            return None;
        }
        serde_json::from_str(&response.body).ok()
    }

    /// The member that believes it leads, with the highest term among such
    /// members, if any answers.
    pub async fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for i in 0..self.len() {
            let Some(status) = self.status(i).await else {
                continue;
            };
            if status.leader != 0
                && status.leader == status.member_id
                && best.is_none_or(|(term, _)| status.term > term)
            {
                best = Some((status.term, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Waits up to `timeout` for a leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().await {
                return Some(leader);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits up to `timeout` until every member runs, answers, agrees on
    /// one leader and term, and has applied the same commit index.
    /// Returns whether it settled.
    pub async fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut statuses = Vec::with_capacity(self.len());
            for i in 0..self.len() {
                statuses.push(self.status(i).await);
            }
            let settled = match statuses.first() {
                Some(Some(first)) => {
                    first.leader != 0
                        && statuses.iter().all(|s| {
                            s.as_ref().is_some_and(|s| {
                                s.leader == first.leader
                                    && s.term == first.term
                                    && s.commit == first.commit
                                    && s.applied == s.commit
                            })
                        })
                }
                _ => false,
            };
            if settled {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Kills member `i` with SIGKILL and reaps it. No-op if it is down.
    pub fn kill(&mut self, i: usize) {
        let member = &mut self.members[i];
        // Dropping the guard kills and reaps (invariant 1).
        member.child = None;
        member.paused = false;
    }

    /// Restarts member `i` (killed or exited) on the same ports and data
    /// directory, waits until it answers, and re-applies its faults.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.state(i) != ProcessState::Down {
            return Ok(());
        }
        self.launch(i)?;
        self.wait_ready(i).await?;
        self.reapply_faults(i).await
    }

    /// Stops member `i` with SIGSTOP.
    pub fn pause(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.state(i) != ProcessState::Running {
            return Ok(());
        }
        self.signal(i, "-STOP")?;
        self.members[i].paused = true;
        Ok(())
    }

    /// Resumes member `i` with SIGCONT and re-applies its faults (admin
    /// calls made while it was stopped may have timed out).
    pub async fn resume(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.state(i) != ProcessState::Paused {
            return Ok(());
        }
        self.signal(i, "-CONT")?;
        self.members[i].paused = false;
        self.reapply_faults(i).await
    }

    /// Sets every member's partition rules: `cuts[i]` is what member `i`
    /// drops. Remembered even if a member cannot be reached now; returns
    /// the members that could not be told (they get the rules when they
    /// come back).
    pub async fn partition(&mut self, cuts: &[Cut]) -> Vec<String> {
        let mut unreachable = Vec::new();
        for (i, cut) in cuts.iter().enumerate().take(self.len()) {
            self.members[i].faults.cut = cut.clone();
            if let Err(e) = self.push_partition(i).await {
                unreachable.push(e.to_string());
            }
        }
        unreachable
    }

    /// Clears every partition rule (timer skew stays).
    pub async fn heal_partitions(&mut self) -> Vec<String> {
        let healthy = vec![Cut::default(); self.len()];
        self.partition(&healthy).await
    }

    /// Sets member `i`'s timer tick scale (percent of normal).
    pub async fn set_clock(
        &mut self,
        i: usize,
        tick_scale_percent: u64,
    ) -> Result<(), HarnessError> {
        self.members[i].faults.tick_scale_percent = tick_scale_percent;
        self.push_clock(i).await
    }

    /// Resets every member's timers to normal.
    pub async fn reset_clocks(&mut self) -> Vec<String> {
        let mut unreachable = Vec::new();
        for i in 0..self.len() {
            if let Err(e) = self.set_clock(i, 100).await {
                unreachable.push(e.to_string());
            }
        }
        unreachable
    }

    /// Ends every fault: resumes paused members, restarts dead ones, adds
    /// removed ones back, clears partitions and timer skew. Returns what
    /// could not be done, and the steps of adding members back.
    pub async fn heal_all(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for i in 0..self.len() {
            self.members[i].faults = MemberFaults::healthy();
            let result = match self.state(i) {
                ProcessState::Paused => self.resume(i).await,
                ProcessState::Down => self.restart(i).await,
                ProcessState::Running => self.reapply_faults(i).await,
                // Added back below, once the others run and can elect.
                ProcessState::Removed => Ok(()),
            };
            if let Err(e) = result {
                problems.push(e.to_string());
            }
        }
        for i in 0..self.len() {
            if self.state(i) != ProcessState::Removed {
                continue;
            }
            let steps = std::sync::Mutex::new(Vec::new());
            let note = |step: String| steps.lock().unwrap_or_else(|e| e.into_inner()).push(step);
            let result = self.add_back(i, &note).await;
            problems.extend(steps.into_inner().unwrap_or_else(|e| e.into_inner()));
            if let Err(e) = result {
                problems.push(e.to_string());
            }
        }
        problems
    }

    /// Member `i`'s peer URL.
    pub fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].peer_port)
    }

    /// Whether member `i` is removed from the configuration.
    pub fn is_removed(&self, i: usize) -> bool {
        self.members[i].removed
    }

    /// The member list as member `at` answers it.
    async fn member_list(&self, at: usize) -> Result<Vec<pb::Member>, String> {
        let mut client = cluster_client(&self.client_url(at))?;
        tokio::time::timeout(
            MEMBERSHIP_CALL_TIMEOUT,
            client.member_list(pb::MemberListRequest::default()),
        )
        .await
        .map_err(|_| format!("no answer within {MEMBERSHIP_CALL_TIMEOUT:?}"))?
        .map(|r| r.into_inner().members)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }

    /// Names of the members a member list shows (ids we do not know are
    /// shown in hex).
    fn describe_members(&self, members: &[pb::Member]) -> String {
        let names: Vec<String> = members
            .iter()
            .map(|m| {
                self.members
                    .iter()
                    .find(|ours| ours.id == m.id)
                    .map_or_else(|| format!("{:x}", m.id), |ours| ours.name.clone())
            })
            .collect();
        format!("{{{}}}", names.join(", "))
    }

    /// Removes member `i` from the cluster: MemberRemove sent to the
    /// leader (retried on errors, each retry first asking the leader's
    /// member list whether an earlier attempt took effect), then SIGKILL
    /// and its data directory wiped. Every step is told to `note`. The
    /// caller keeps a majority: removing more than a minority at a time is
    /// refused.
    pub async fn remove(
        &mut self,
        i: usize,
        note: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), HarnessError> {
        let name = self.members[i].name.clone();
        let err = |reason: String| HarnessError::Admin {
            member: name.clone(),
            reason,
        };
        if self.members[i].removed {
            return Err(err("already removed".into()));
        }
        let removed = self.members.iter().filter(|m| m.removed).count();
        if 2 * (removed + 1) >= self.len() {
            return Err(err(format!(
                "removing it would leave {} of {} members: no majority",
                self.len() - removed - 1,
                self.len()
            )));
        }
        let id = self.members[i].id;
        let deadline = Instant::now() + MEMBERSHIP_TIMEOUT;
        loop {
            if let Some(leader) = self.leader().await {
                let leader_name = self.members[leader].name.clone();
                match self.member_list(leader).await {
                    Ok(list) if !list.iter().any(|m| m.id == id) => {
                        note(format!(
                            "{name} is no longer a member (leader {leader_name} lists {})",
                            self.describe_members(&list)
                        ));
                        break;
                    }
                    _ => {}
                }
                note(format!(
                    "MemberRemove {name} (id {id:x}) sent to leader {leader_name}"
                ));
                let answer = match cluster_client(&self.client_url(leader)) {
                    Ok(mut client) => tokio::time::timeout(
                        MEMBERSHIP_CALL_TIMEOUT,
                        client.member_remove(pb::MemberRemoveRequest { id }),
                    )
                    .await
                    .map_err(|_| format!("no answer within {MEMBERSHIP_CALL_TIMEOUT:?}"))
                    .and_then(|r| r.map_err(|s| format!("{:?}: {}", s.code(), s.message()))),
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(response) => {
                        note(format!(
                            "MemberRemove answered: members now {}",
                            self.describe_members(&response.into_inner().members)
                        ));
                        break;
                    }
                    Err(e) => note(format!("MemberRemove via {leader_name}: {e}; retrying")),
                }
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "MemberRemove did not succeed within {MEMBERSHIP_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(MEMBERSHIP_RETRY).await;
        }
        self.kill(i);
        let dir = self.members[i].data_dir.clone();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HarnessError::io(format!("wiping {}", dir.display()), e)),
        }
        self.members[i].removed = true;
        note(format!(
            "stopped {name} (SIGKILL) and wiped its data directory {}",
            dir.display()
        ));
        Ok(())
    }

    /// Adds removed member `i` back: MemberAdd of its peer URL sent to the
    /// leader (retried like [`Cluster::remove`]), then starts it on an
    /// empty data directory with `--initial-cluster-state existing` and the
    /// current members as `--initial-cluster`, so it catches up from the
    /// leader (log or snapshot). Returns its member id: a new one, which the
    /// leader chose and the member learns from the cluster when it joins.
    pub async fn add_back(
        &mut self,
        i: usize,
        note: &(dyn Fn(String) + Send + Sync),
    ) -> Result<u64, HarnessError> {
        let name = self.members[i].name.clone();
        let err = |reason: String| HarnessError::Admin {
            member: name.clone(),
            reason,
        };
        if !self.members[i].removed {
            return Ok(self.members[i].id);
        }
        let url = self.peer_url(i);
        let old_id = self.members[i].id;
        let deadline = Instant::now() + MEMBERSHIP_TIMEOUT;
        let new_id = loop {
            if let Some(leader) = self.leader().await {
                let leader_name = self.members[leader].name.clone();
                if let Ok(list) = self.member_list(leader).await {
                    if let Some(m) = list.iter().find(|m| m.peer_ur_ls.contains(&url)) {
                        note(format!(
                            "{url} is already a member (id {:x}; leader {leader_name} lists {})",
                            m.id,
                            self.describe_members(&list)
                        ));
                        break m.id;
                    }
                }
                note(format!(
                    "MemberAdd {url} ({name}) sent to leader {leader_name}"
                ));
                let answer = match cluster_client(&self.client_url(leader)) {
                    Ok(mut client) => tokio::time::timeout(
                        MEMBERSHIP_CALL_TIMEOUT,
                        client.member_add(pb::MemberAddRequest {
                            peer_ur_ls: vec![url.clone()],
                            is_learner: false,
                        }),
                    )
                    .await
                    .map_err(|_| format!("no answer within {MEMBERSHIP_CALL_TIMEOUT:?}"))
                    .and_then(|r| r.map_err(|s| format!("{:?}: {}", s.code(), s.message()))),
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(response) => {
                        let response = response.into_inner();
                        if let Some(added) = response.member {
                            note(format!(
                                "MemberAdd answered: id {:x}{}; {} members",
                                added.id,
                                if added.id == old_id {
                                    " (the removed member's id: ids derive from peer URLs)"
                                } else {
                                    " (a new id)"
                                },
                                response.members.len()
                            ));
                            break added.id;
                        }
                        note("MemberAdd answered without the added member; checking".into());
                    }
                    Err(e) => note(format!("MemberAdd via {leader_name}: {e}; retrying")),
                }
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "MemberAdd did not succeed within {MEMBERSHIP_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(MEMBERSHIP_RETRY).await;
        };
        let member = &mut self.members[i];
        member.removed = false;
        member.joined = true;
        member.id = new_id;
        self.launch(i)?;
        let status = self.wait_ready(i).await?;
        if status.member_id != new_id {
            note(format!(
                "{name} started as id {:x}, not the added {new_id:x}",
                status.member_id
            ));
            self.members[i].id = status.member_id;
        }
        note(format!(
            "started {name} on an empty data directory with --initial-cluster-state existing"
        ));
        self.reapply_faults(i).await?;
        // Evidence that it rejoined: its applied index reaches what the
        // leader had committed when it started (bounded; the run's final
        // settle checks again).
        let started = Instant::now();
        let target = match self.leader().await {
            Some(leader) => self.status(leader).await.map(|s| s.commit),
            None => None,
        };
        if let Some(target) = target {
            loop {
                let applied = self.status(i).await.map_or(0, |s| s.applied);
                if applied >= target {
                    note(format!(
                        "{name} caught up: applied index {applied} >= leader's commit {target} at start, after {:.1} s",
                        started.elapsed().as_secs_f64()
                    ));
                    break;
                }
                if started.elapsed() >= CATCH_UP_WAIT {
                    note(format!(
                        "{name} has applied {applied} of the leader's {target} after {CATCH_UP_WAIT:?}; not waiting longer"
                    ));
                    break;
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        Ok(new_id)
    }

    fn admin_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.members[i].admin_port))
    }

    /// Starts member `i`'s process and forgets how the previous one ended.
    fn launch(&mut self, i: usize) -> Result<(), HarnessError> {
        let child = self.spawn(i)?;
        let member = &mut self.members[i];
        member.child = Some(child);
        member.last_exit = None;
        Ok(())
    }

    fn spawn(&self, i: usize) -> Result<ChildGuard, HarnessError> {
        let member = &self.members[i];
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        // A member that joined a running cluster names the members of the
        // configuration it joined (every member not removed, itself
        // included); the original members name the initial cluster.
        let initial_cluster = self
            .members
            .iter()
            .enumerate()
            .filter(|(j, m)| !member.joined || *j == i || !m.removed)
            .map(|(_, m)| format!("{}={}", m.name, url(m.peer_port)))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_state = if member.joined { "existing" } else { "new" };
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .map_err(|e| HarnessError::io(format!("opening {}", member.log_path.display()), e))?;
        let _ = writeln!(log, "{START_MARKER}{} ---", member.name);
        let log_err: File = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating a log handle", e))?;
        let child = Command::new(&self.spec.concord_bin)
            .arg("serve")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &url(member.client_port)])
            .args(["--advertise-client-urls", &url(member.client_port)])
            .args(["--listen-peer-urls", &url(member.peer_port)])
            .args(["--initial-advertise-peer-urls", &url(member.peer_port)])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &self.spec.token])
            .args(["--initial-cluster-state", cluster_state])
            .args([
                "--heartbeat-interval",
                &self.spec.heartbeat_interval_ms.to_string(),
            ])
            .args([
                "--election-timeout",
                &self.spec.election_timeout_ms.to_string(),
            ])
            .args(["--snapshot-count", &self.spec.snapshot_count.to_string()])
            .args([
                "--experimental-snapshot-catchup-entries",
                &self.spec.snapshot_catchup_entries.to_string(),
            ])
            .arg("--enable-fault-injection")
            .args(["--fault-admin-url", &url(member.admin_port)])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| {
                HarnessError::io(
                    format!(
                        "starting {} ({})",
                        member.name,
                        self.spec.concord_bin.display()
                    ),
                    e,
                )
            })?;
        Ok(ChildGuard(child))
    }

    async fn wait_ready(&mut self, i: usize) -> Result<MemberStatus, HarnessError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.status(i).await {
                return Ok(status);
            }
            let exited = self.state(i) == ProcessState::Down;
            if exited || started.elapsed() >= READY_TIMEOUT {
                let log = self.members[i].log_path.clone();
                return Err(HarnessError::NotReady {
                    name: self.members[i].name.clone(),
                    waited: started.elapsed(),
                    exit: exited.then(|| {
                        self.members[i]
                            .last_exit
                            .clone()
                            .unwrap_or_else(|| "unknown".to_owned())
                    }),
                    log_tail: log_tail(&log, LOG_TAIL_LINES),
                    log,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn signal(&self, i: usize, signal: &str) -> Result<(), HarnessError> {
        let Some(child) = &self.members[i].child else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.0.id().to_string())
            .status()
            .map_err(|e| HarnessError::io(format!("running kill {signal}"), e))?;
        if !status.success() {
            return Err(HarnessError::Admin {
                member: self.members[i].name.clone(),
                reason: format!("kill {signal} failed ({status})"),
            });
        }
        Ok(())
    }

    async fn reapply_faults(&mut self, i: usize) -> Result<(), HarnessError> {
        self.push_partition(i).await?;
        self.push_clock(i).await
    }

    async fn push_partition(&self, i: usize) -> Result<(), HarnessError> {
        let cut = &self.members[i].faults.cut;
        let ids = |set: &BTreeSet<usize>| -> Vec<u64> {
            set.iter().map(|&j| self.members[j].id).collect()
        };
        let body = serde_json::json!({
            "drop_from": ids(&cut.drop_from),
            "drop_to": ids(&cut.drop_to),
        })
        .to_string();
        self.admin_post(i, "/fault/partition", &body).await
    }

    async fn push_clock(&self, i: usize) -> Result<(), HarnessError> {
        let body = serde_json::json!({
            "tick_scale_percent": self.members[i].faults.tick_scale_percent,
        })
        .to_string();
        self.admin_post(i, "/fault/clock", &body).await
    }

    async fn admin_post(&self, i: usize, path: &str, body: &str) -> Result<(), HarnessError> {
        let member = &self.members[i];
        let err = |reason: String| HarnessError::Admin {
            member: member.name.clone(),
            reason,
        };
        if member.child.is_none() {
            return Err(err("down; the fault applies when it restarts".into()));
        }
        if member.paused {
            return Err(err("paused; the fault applies when it resumes".into()));
        }
        let response = http::request(self.admin_addr(i), "POST", path, Some(body), ADMIN_TIMEOUT)
            .await
            .map_err(err)?;
        if response.status != 200 {
            return Err(err(format!(
                "POST {path}: HTTP {} {}",
                response.status, response.body
            )));
        }
        Ok(())
    }
}
