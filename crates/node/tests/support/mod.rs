//! The in-process test cluster shared by this crate's integration tests:
//! members on loopback ports below the ephemeral range, each in its own
//! temporary data directory, all shut down when the cluster is dropped
//! (also when a test fails).
#![allow(dead_code)] // each test file uses a part

use concord_node::config::NodeConfig;
use concord_node::node::{start, RunningNode};
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a member may take to lead or follow.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub nodes: Vec<Option<RunningNode>>,
    pub configs: Vec<NodeConfig>,
    /// Kept for the members' lifetime: removed when the cluster drops.
    pub dirs: Vec<tempfile::TempDir>,
    pub urls: Vec<String>,
}

/// A free loopback port from below the ephemeral range (10000-32767), so
/// that no client connection of this or another test takes it between the
/// pick and the member's bind; never the same port twice in this process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()).wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + ((seed + n * 104_729) % 22_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Starts `size` members of a cluster named `token`; `prepare(config,
    /// i)` adjusts member `i`'s configuration, or its data directory (e.g.
    /// restores a snapshot into it), before it starts.
    pub fn start(size: usize, token: &str, prepare: impl Fn(&mut NodeConfig, usize)) -> Cluster {
        let peers: Vec<String> = (0..size)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let clients: Vec<String> = (0..size)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let initial: Vec<(String, String)> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("n{i}"), p.clone()))
            .collect();
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        let mut configs = Vec::new();
        for i in 0..size {
            let dir = tempfile::tempdir().unwrap();
            let mut c = NodeConfig::single_default();
            c.name = format!("n{i}");
            c.data_dir = dir.path().to_path_buf();
            c.listen_client_urls = vec![clients[i].clone()];
            c.advertise_client_urls = vec![clients[i].clone()];
            c.listen_peer_urls = vec![peers[i].clone()];
            c.initial_advertise_peer_urls = vec![peers[i].clone()];
            c.initial_cluster = initial.clone();
            c.initial_cluster_token = token.into();
            c.heartbeat_interval_ms = 20;
            c.election_timeout_ms = 200;
            prepare(&mut c, i);
            nodes.push(Some(start(c.clone()).expect("member starts")));
            configs.push(c);
            dirs.push(dir);
        }
        Cluster {
            nodes,
            configs,
            dirs,
            urls: clients,
        }
    }

    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(node) = node {
                    if node.shared.leader() == Some(node.shared.member_id) {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader elected");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A member that follows a known leader.
    pub fn follower(&self) -> usize {
        let leader = self.leader();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(node) = node {
                    if i != leader
                        && node
                            .shared
                            .leader()
                            .is_some_and(|l| l != node.shared.member_id)
                    {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no follower knows the leader");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().unwrap();
        }
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none());
        self.nodes[i] = Some(start(self.configs[i].clone()).expect("member restarts"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}

/// Runs `f` on a fresh 2-thread runtime.
pub fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
