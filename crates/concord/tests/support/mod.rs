//! Test support: real `concord serve` processes on loopback, a real etcd
//! client, and polling helpers with deadlines.
//!
//! A [`Cluster`] owns its member processes and their data directories.
//! Every child is killed when the cluster is dropped, which also happens
//! while a failing test unwinds; in that case the tail of each member's log
//! is printed so the failure can be read without rerunning.
//!
//! Ports are picked by binding `127.0.0.1:0` and releasing the socket. A
//! port can be taken by someone else in between; [`Cluster::start`] notices
//! a member that could not bind and starts again on fresh ports.
#![allow(dead_code)]

pub mod etcd;

use etcd_client::{Client, ConnectOptions, Error as EtcdError, StatusResponse};
use std::fmt::Debug;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Heartbeat interval given to test members (ms): short so tests are quick.
pub const HEARTBEAT_MS: u64 = 50;
/// Election timeout given to test members (ms).
pub const ELECTION_MS: u64 = 500;

/// How long a cluster gets to elect its first leader.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a member process gets to start listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a member gets to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Attempts at starting a cluster when a picked port was taken meanwhile.
const START_ATTEMPTS: usize = 3;
/// Lines of each member's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// Picks `n` distinct free loopback ports. All sockets are held until every
/// port is picked so one call never returns the same port twice.
///
/// Ports come from below the kernel's ephemeral range
/// (`ip_local_port_range`): the outgoing connections of every test client
/// take ephemeral ports, and one of them could otherwise grab a member's
/// port between its pick and its bind, or while the member is down for a
/// restart. Falls back to port 0 when that range is unusable.
pub fn free_ports(n: usize) -> Vec<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ (u64::from(std::process::id()) << 32);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(n);
    let mut attempts = 0;
    while listeners.len() < n {
        attempts += 1;
        let listener = if ephemeral_low > LOWEST + 1000 && attempts < 10_000 {
            let port = LOWEST + (next() % u64::from(ephemeral_low - LOWEST)) as u16;
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => l,
                Err(_) => continue,
            }
        } else {
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
        };
        listeners.push(listener);
    }
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    /// Label for messages.
    pub label: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Wraps a spawned child.
    pub fn new(label: impl Into<String>, child: Child) -> ChildGuard {
        ChildGuard {
            label: label.into(),
            child: Some(child),
        }
    }

    /// The process id, if still running under this guard.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Exit status if the child has exited (reaping it).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status
    /// when the child stopped by itself.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Last `lines` lines of a text file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What was appended to a log file after `offset`.
fn log_since(path: &Path, offset: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let _ = file.seek(SeekFrom::Start(offset));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    text
}

/// Options for a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of members.
    pub size: usize,
    /// `--snapshot-count`, if not the default.
    pub snapshot_count: Option<u64>,
    /// `--experimental-snapshot-catchup-entries`, if not the default.
    pub snapshot_catchup_entries: Option<u64>,
    /// `--max-request-bytes`, if not the default.
    pub max_request_bytes: Option<usize>,
}

impl ClusterOptions {
    /// `size` members with default settings (and short timers).
    pub fn new(size: usize) -> ClusterOptions {
        ClusterOptions {
            size,
            snapshot_count: None,
            snapshot_catchup_entries: None,
            max_request_bytes: None,
        }
    }
}

/// One member: its fixed addresses and data directory, and its process
/// while running.
pub struct Member {
    /// `--name`.
    pub name: String,
    /// Client port on 127.0.0.1.
    pub client_port: u16,
    /// Peer port on 127.0.0.1.
    pub peer_port: u16,
    /// The data directory (inside the cluster's temporary folder).
    pub data_dir: PathBuf,
    /// Where stdout and stderr of the process go (appended across restarts).
    pub log_path: PathBuf,
    /// Length of the log when the current process was started.
    log_offset: u64,
    process: Option<ChildGuard>,
    /// For a member added to the running cluster: the `--initial-cluster`
    /// it joins with (`--initial-cluster-state existing`).
    join_cluster: Option<String>,
}

impl Member {
    /// `http://127.0.0.1:<client port>`.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:<peer port>`.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// `127.0.0.1:<client port>`.
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:<peer port>`.
    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    /// Process id of the running member, if any.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ChildGuard::pid)
    }

    /// What the member's current process has logged so far.
    pub fn log_since_start(&self) -> String {
        log_since(&self.log_path, self.log_offset)
    }

    /// Whether a process is running for this member (as far as we know).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Names of the snapshot files in this member's WAL directory
    /// (`{index:016x}-{term:016x}.snap`), parsed as (index, term).
    pub fn snapshot_files(&self) -> Vec<(u64, u64)> {
        let dir = self.data_dir.join("member").join("wal");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(stem) = name.strip_suffix(".snap") else {
                continue;
            };
            let Some((index, term)) = stem.split_once('-') else {
                continue;
            };
            if let (Ok(i), Ok(t)) = (
                u64::from_str_radix(index, 16),
                u64::from_str_radix(term, 16),
            ) {
                out.push((i, t));
            }
        }
        out.sort();
        out
    }
}

/// N real `concord serve` processes forming one cluster.
pub struct Cluster {
    /// Members in start order: names n1, n2, ...
    pub members: Vec<Member>,
    /// `--initial-cluster-token`.
    pub token: String,
    options: ClusterOptions,
    initial_cluster: String,
    // Dropped after `members` (fields drop in declaration order), so the
    // processes are gone before their directories are removed.
    _dir: tempfile::TempDir,
}

/// The runtime a synchronous test drives its async helpers with (two
/// workers, as many as the machine has cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Path of the `concord` binary cargo built for these tests.
pub fn concord_bin() -> &'static str {
    env!("CARGO_BIN_EXE_concord")
}

impl Cluster {
    /// Starts `size` members with default options and waits for a leader.
    pub async fn start(size: usize) -> Cluster {
        Cluster::start_with(ClusterOptions::new(size)).await
    }

    /// Starts a cluster and waits until every member agrees on a leader.
    pub async fn start_with(options: ClusterOptions) -> Cluster {
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match Cluster::try_spawn(&options) {
                Ok(cluster) => {
                    let all: Vec<usize> = (0..cluster.members.len()).collect();
                    cluster.wait_leader_among(&all, STARTUP_TIMEOUT).await;
                    return cluster;
                }
                Err(why) => {
                    eprintln!("cluster start attempt {attempt} failed: {why}");
                    last_failure = why;
                }
            }
        }
        panic!("could not start a cluster in {START_ATTEMPTS} attempts: {last_failure}");
    }

    fn try_spawn(options: &ClusterOptions) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("concord-test-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let ports = free_ports(options.size * 2);
        let members: Vec<Member> = (0..options.size)
            .map(|i| {
                let name = format!("n{}", i + 1);
                Member {
                    data_dir: dir.path().join(&name),
                    log_path: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    log_offset: 0,
                    process: None,
                    join_cluster: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "concord-test-{}",
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        );
        let mut cluster = Cluster {
            members,
            token,
            options: options.clone(),
            initial_cluster,
            _dir: dir,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.members.len() {
            // A port clash or a start failure: the caller retries afresh.
            cluster.wait_listening(i)?;
        }
        Ok(cluster)
    }

    /// The command line that (re)starts member `i`.
    fn command(&self, i: usize) -> Command {
        let m = &self.members[i];
        let mut cmd = Command::new(concord_bin());
        cmd.arg("serve")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args([
                "--initial-cluster",
                m.join_cluster.as_deref().unwrap_or(&self.initial_cluster),
            ])
            .args(["--initial-cluster-token", &self.token])
            .args([
                "--initial-cluster-state",
                if m.join_cluster.is_some() {
                    "existing"
                } else {
                    "new"
                },
            ])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()]);
        if let Some(n) = self.options.snapshot_count {
            cmd.args(["--snapshot-count", &n.to_string()]);
        }
        if let Some(n) = self.options.snapshot_catchup_entries {
            cmd.args(["--experimental-snapshot-catchup-entries", &n.to_string()]);
        }
        if let Some(n) = self.options.max_request_bytes {
            cmd.args(["--max-request-bytes", &n.to_string()]);
        }
        cmd
    }

    fn spawn(&mut self, i: usize) {
        assert!(
            !self.members[i].is_running(),
            "{} is already running",
            self.members[i].name
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.members[i].log_path)
            .expect("open member log");
        self.members[i].log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = self
            .command(i)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", concord_bin()));
        self.members[i].process = Some(ChildGuard::new(self.members[i].name.clone(), child));
    }

    /// Waits until member `i` has bound its ports (`concord serve` logs
    /// "serving" once every listener is bound) and accepts connections on
    /// its client port; an early exit is an error carrying the member's
    /// log. A successful connect alone is not enough: another process may
    /// hold the port this member failed to bind.
    fn wait_listening(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        let addr = self.members[i].client_addr();
        loop {
            let member = &mut self.members[i];
            if let Some(status) = member.process.as_mut().and_then(ChildGuard::try_exited) {
                member.process = None;
                return Err(format!(
                    "{} exited at start ({status}); log:\n{}",
                    member.name,
                    tail(&member.log_path, LOG_TAIL_LINES)
                ));
            }
            let serving = log_since(&member.log_path, member.log_offset).contains("serving");
            if serving
                && TcpStream::connect_timeout(
                    &addr.parse().expect("addr"),
                    Duration::from_millis(200),
                )
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not serving on {addr} after {LISTEN_TIMEOUT:?}; log:\n{}",
                    member.name,
                    tail(&member.log_path, LOG_TAIL_LINES)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9 of member `i`.
    pub fn kill(&mut self, i: usize) {
        let member = &mut self.members[i];
        let mut process = member
            .process
            .take()
            .unwrap_or_else(|| panic!("{} is not running", member.name));
        process.kill();
    }

    /// Graceful stop (SIGTERM) of member `i`; panics if it had to be killed
    /// or exited with an error.
    pub fn stop(&mut self, i: usize) {
        let member = &mut self.members[i];
        let mut process = member
            .process
            .take()
            .unwrap_or_else(|| panic!("{} is not running", member.name));
        match process.terminate(STOP_GRACE) {
            Some(status) if status.success() => {}
            other => panic!(
                "{} did not stop cleanly on SIGTERM ({other:?}); log:\n{}",
                member.name,
                tail(&member.log_path, LOG_TAIL_LINES)
            ),
        }
    }

    /// SIGSTOP of member `i` (a stalled process: no crash, no progress).
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// SIGCONT of a paused member `i`.
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let member = &self.members[i];
        let pid = member
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", member.name));
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} ({})", member.name);
    }

    /// Starts member `i` again from its data directory and waits until it
    /// listens.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        if let Err(why) = self.wait_listening(i) {
            panic!("restarting {}: {why}", self.members[i].name);
        }
    }

    /// Reserves ports and a data directory for one more member (named
    /// `n<k>`), not started: add it with `member add`, then start it with
    /// [`Cluster::start_joining`]. Returns its index.
    pub fn reserve_member(&mut self) -> usize {
        let ports = free_ports(2);
        let i = self.members.len();
        let name = format!("n{}", i + 1);
        self.members.push(Member {
            data_dir: self._dir.path().join(&name),
            log_path: self._dir.path().join(format!("{name}.log")),
            name,
            client_port: ports[0],
            peer_port: ports[1],
            log_offset: 0,
            process: None,
            join_cluster: None,
        });
        i
    }

    /// Starts reserved member `i` so it joins the running cluster with
    /// `--initial-cluster-state existing` and this `--initial-cluster`
    /// (what `member add` printed), and waits until it listens.
    pub fn start_joining(&mut self, i: usize, initial_cluster: &str) {
        self.members[i].join_cluster = Some(initial_cluster.to_string());
        self.restart(i);
    }

    /// The cluster's temporary directory (removed with the cluster).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Indexes of the members that are running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].is_running())
            .collect()
    }

    /// Client endpoints (`http://127.0.0.1:port`) of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// A client talking to member `i` only.
    pub async fn client(&self, i: usize) -> Client {
        connect(&[self.members[i].client_url()]).await
    }

    /// A client balancing over every member.
    pub async fn client_all(&self) -> Client {
        connect(&self.endpoints()).await
    }

    /// Maintenance.Status of member `i`.
    pub async fn status(&self, i: usize) -> Result<StatusResponse, EtcdError> {
        let mut client = self.client(i).await;
        client.status().await
    }

    /// Member ids, by index (from each member's Status header).
    pub async fn member_ids(&self) -> Vec<u64> {
        let mut ids = Vec::new();
        for i in 0..self.members.len() {
            let status = self
                .status(i)
                .await
                .unwrap_or_else(|e| panic!("status of n{}: {e}", i + 1));
            ids.push(status.header().expect("status header").member_id());
        }
        ids
    }

    /// Waits until every member in `among` reports the same leader, which
    /// is itself one of `among`; returns the leader's index.
    pub async fn wait_leader_among(&self, among: &[usize], timeout: Duration) -> usize {
        let what = format!("a leader agreed on by members {among:?}");
        let this = self;
        let result = wait_for(&what, timeout, move || async move {
            let mut leader = None;
            let mut ids = Vec::new();
            for &i in among {
                let status = this
                    .status(i)
                    .await
                    .map_err(|e| format!("n{}: {e}", i + 1))?;
                let me = status.header().map(|h| h.member_id()).unwrap_or(0);
                ids.push((i, me));
                match (leader, status.leader()) {
                    (_, 0) => return Err(format!("n{} knows no leader", i + 1)),
                    (None, l) => leader = Some(l),
                    (Some(a), b) if a != b => {
                        return Err(format!("members disagree on the leader: {a:x} vs {b:x}"))
                    }
                    _ => {}
                }
            }
            let leader = leader.expect("among is not empty");
            ids.iter()
                .find(|(_, id)| *id == leader)
                .map(|(i, _)| *i)
                .ok_or_else(|| format!("leader {leader:x} is not among {among:?}"))
        })
        .await;
        // On a panic the cluster's Drop prints every member's log.
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for a leader among the running members.
    pub async fn wait_leader(&self) -> usize {
        self.wait_leader_among(&self.running(), STARTUP_TIMEOUT)
            .await
    }

    /// Prints the tail of every member's log to stderr, with whether its
    /// process is running, stopped by the test, or exited by itself.
    pub fn dump_logs(&mut self) {
        for m in &mut self.members {
            let state = match m.process.as_mut().map(|p| p.try_exited()) {
                None => "not running (stopped by the test)".to_string(),
                Some(None) => "running".to_string(),
                Some(Some(status)) => format!("EXITED BY ITSELF: {status}"),
            };
            eprintln!(
                "----- {} ({state}) log tail -----\n{}",
                m.name,
                tail(&m.log_path, LOG_TAIL_LINES)
            );
        }
    }

    /// Checks that every member that should be running still is (none
    /// crashed); panics with its log otherwise.
    pub fn assert_all_alive(&mut self) {
        for m in &mut self.members {
            if let Some(status) = m.process.as_mut().and_then(ChildGuard::try_exited) {
                m.process = None;
                panic!(
                    "{} exited unexpectedly ({status}); log:\n{}",
                    m.name,
                    tail(&m.log_path, LOG_TAIL_LINES)
                );
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for m in &mut self.members {
            if let Some(mut p) = m.process.take() {
                p.kill();
            }
        }
    }
}

/// Connects the real `etcd-client` to `endpoints`, with bounded timeouts so
/// a dead member fails a call instead of hanging it.
pub async fn connect(endpoints: &[String]) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(15));
    Client::connect(endpoints, Some(options))
        .await
        .unwrap_or_else(|e| panic!("connecting to {endpoints:?}: {e}"))
}

/// Polls `check` until it returns `Ok`, at most for `timeout`; the error
/// names `what` and the last reason it was not yet true.
pub async fn wait_for<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, String>
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(why) if Instant::now() >= deadline => {
                return Err(format!(
                    "timed out after {:?} waiting for {what}; last: {why:?}",
                    start.elapsed()
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Like [`wait_for`], panicking on timeout.
pub async fn must_wait_for<T, E, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    wait_for(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The gRPC status inside a client error, or a panic naming what was got.
pub fn grpc_status(result: Result<impl Debug, EtcdError>) -> tonic_status::Status {
    match result {
        Err(EtcdError::GRpcStatus(status)) => tonic_status::Status {
            code: format!("{:?}", status.code()),
            message: status.message().to_string(),
        },
        other => panic!("expected a gRPC error status, got {other:?}"),
    }
}

/// Asserts that `result` is the gRPC error etcd answers with: code name
/// (as `tonic::Code`'s Debug, e.g. "InvalidArgument") and exact message.
#[track_caller]
pub fn assert_grpc_error(result: Result<impl Debug, EtcdError>, code: &str, message: &str) {
    let status = grpc_status(result);
    assert_eq!(
        (status.code.as_str(), status.message.as_str()),
        (code, message),
        "expected gRPC {code} {message:?}, got {} {:?}",
        status.code,
        status.message
    );
}

/// A gRPC status reduced to comparable strings (tonic is not a direct
/// dependency of the tests).
pub mod tonic_status {
    /// Code name and message.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Status {
        /// `tonic::Code` Debug name.
        pub code: String,
        /// Status message.
        pub message: String,
    }
}

/// Polls a blocking `check` (say, an etcdctl run) until it returns `Ok`, at
/// most for [`STARTUP_TIMEOUT`]; panics naming `what` and the last reason.
pub fn must_wait_for_blocking<T, E: Debug>(
    what: &str,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) if Instant::now() >= deadline => {
                panic!("timed out after {STARTUP_TIMEOUT:?} waiting for {what}; last: {why:?}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
