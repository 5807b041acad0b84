//! Member configuration, with etcd's flag names and defaults.
//!
//! Invariant: a `NodeConfig` that passed [`NodeConfig::validate`] names this
//! member in `initial_cluster` with the same peer URLs it advertises, and
//! every limit is within range; the member never starts otherwise.

use std::path::PathBuf;

/// Whether the member bootstraps a new cluster or joins a running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap with the members of `--initial-cluster`.
    New,
    /// Join a cluster that already added this member.
    Existing,
}

/// etcd's default heartbeat interval (ms).
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
/// etcd's default election timeout (ms).
pub const DEFAULT_ELECTION_MS: u64 = 1000;
/// Applied entries between snapshots, etcd 3.4's default. A snapshot
/// serializes the whole store, history included (about 370 MB at a million
/// keys), so taking one every 10,000 entries cost more than the WAL replay
/// it saves (restart time with a full WAL is measured in BENCHMARKS.md).
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;

/// Entries a snapshot leaves in the log behind it, so that a follower that
/// was briefly away catches up from the log instead of by a whole-store
/// snapshot (etcd's `SnapshotCatchUpEntries`, 5,000; etcd 3.5's
/// `--experimental-snapshot-catchup-entries`).
pub const DEFAULT_SNAPSHOT_CATCHUP_ENTRIES: u64 = 5_000;

/// Largest `--snapshot-count` accepted. The core holds the log since the
/// last snapshot in memory, up to `snapshot_count` + catch-up entries, so
/// an unbounded count (etcd takes any) would let memory grow without limit:
/// ten million entries of the usual few hundred bytes are a few GB.
pub const SNAPSHOT_COUNT_MAX: u64 = 10_000_000;

/// Largest `--experimental-snapshot-catchup-entries` accepted, for the same
/// reason (they stay in memory after every snapshot), and because a value
/// past the applied index would postpone the first snapshot for ever.
pub const SNAPSHOT_CATCHUP_ENTRIES_MAX: u64 = 1_000_000;
/// etcd's default backend quota (2 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Configuration of one member.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--listen-client-urls`.
    pub listen_client_urls: Vec<String>,
    /// `--advertise-client-urls`.
    pub advertise_client_urls: Vec<String>,
    /// `--listen-peer-urls`.
    pub listen_peer_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--initial-cluster`, as (name, peer URL) pairs.
    pub initial_cluster: Vec<(String, String)>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--quota-backend-bytes`.
    pub quota_backend_bytes: u64,
    /// `--heartbeat-interval` (ms).
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` (ms).
    pub election_timeout_ms: u64,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// `--experimental-snapshot-catchup-entries`.
    pub snapshot_catchup_entries: u64,
    /// Enables the fault-injection admin calls used by `concord check`.
    pub enable_fault_injection: bool,
    /// Where the fault-injection admin HTTP endpoint listens (test only).
    pub fault_admin_url: Option<String>,
}

impl NodeConfig {
    /// etcd's defaults: a single member on 127.0.0.1:2379/2380 with its data
    /// in `./default.concord`.
    pub fn single_default() -> NodeConfig {
        NodeConfig {
            name: "default".into(),
            data_dir: PathBuf::from("default.concord"),
            listen_client_urls: vec!["http://127.0.0.1:2379".into()],
            advertise_client_urls: vec!["http://127.0.0.1:2379".into()],
            listen_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_advertise_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_cluster: vec![("default".into(), "http://127.0.0.1:2380".into())],
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            max_request_bytes: crate::api::DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: crate::api::DEFAULT_MAX_TXN_OPS,
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_ms: DEFAULT_ELECTION_MS,
            snapshot_count: DEFAULT_SNAPSHOT_COUNT,
            snapshot_catchup_entries: DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
            enable_fault_injection: false,
            fault_admin_url: None,
        }
    }

    /// Checks the settings and their relations.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("--name must not be empty".into());
        }
        if self.listen_client_urls.is_empty() || self.listen_peer_urls.is_empty() {
            return Err("need at least one client and one peer URL to listen on".into());
        }
        let mine: Vec<&String> = self
            .initial_cluster
            .iter()
            .filter(|(n, _)| *n == self.name)
            .map(|(_, u)| u)
            .collect();
        if mine.is_empty() {
            return Err(format!(
                "--initial-cluster has no entry for this member's name {:?}",
                self.name
            ));
        }
        for url in &self.initial_advertise_peer_urls {
            if !mine.contains(&url) {
                return Err(format!(
                    "--initial-advertise-peer-urls {url} is not listed for {:?} in --initial-cluster",
                    self.name
                ));
            }
        }
        if self.heartbeat_interval_ms == 0
            || self.election_timeout_ms < 5 * self.heartbeat_interval_ms
        {
            return Err(format!(
                "--election-timeout ({} ms) must be at least 5 times --heartbeat-interval ({} ms)",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.election_timeout_ms > 50_000 {
            return Err("--election-timeout is too long (maximum 50000 ms)".into());
        }
        if self.max_request_bytes == 0 || self.max_request_bytes > 64 * 1024 * 1024 {
            return Err("--max-request-bytes must be between 1 and 64 MiB".into());
        }
        if self.snapshot_count == 0 || self.snapshot_count > SNAPSHOT_COUNT_MAX {
            return Err(format!(
                "--snapshot-count must be between 1 and {SNAPSHOT_COUNT_MAX} (the log since the last snapshot is held in memory)"
            ));
        }
        if self.snapshot_catchup_entries > SNAPSHOT_CATCHUP_ENTRIES_MAX {
            return Err(format!(
                "--experimental-snapshot-catchup-entries must be at most {SNAPSHOT_CATCHUP_ENTRIES_MAX} (they are held in memory)"
            ));
        }
        Ok(())
    }
}

/// Parses etcd's `--initial-cluster` (`name=url,name=url`).
pub fn parse_initial_cluster(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| format!("--initial-cluster entry {part:?} is not name=url"))?;
        crate::transport::url_to_addr(url)?;
        out.push((name.to_string(), url.to_string()));
    }
    if out.is_empty() {
        return Err("--initial-cluster is empty".into());
    }
    Ok(out)
}

/// Splits a comma-separated URL list.
pub fn parse_urls(text: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    for url in &urls {
        crate::transport::url_to_addr(url)?;
    }
    if urls.is_empty() {
        return Err("empty URL list".into());
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_refuses_junk() {
        let c = parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2").unwrap();
        assert_eq!(c.len(), 2);
        assert!(parse_initial_cluster("a").is_err());
        assert!(parse_initial_cluster("").is_err());
        assert!(parse_initial_cluster("a=http://nohost").is_err());
    }

    #[test]
    fn validation_catches_mismatches() {
        let mut c = NodeConfig::single_default();
        assert!(c.validate().is_ok());
        c.name = "other".into();
        assert!(c.validate().is_err());
        let mut c = NodeConfig::single_default();
        c.election_timeout_ms = 200;
        assert!(c.validate().is_err());
    }

    #[test]
    fn snapshot_settings_are_bounded_because_the_log_behind_them_is_in_memory() {
        let with = |count: u64, catchup: u64| {
            let mut c = NodeConfig::single_default();
            c.snapshot_count = count;
            c.snapshot_catchup_entries = catchup;
            c.validate()
        };
        assert!(with(1, 0).is_ok());
        assert!(with(SNAPSHOT_COUNT_MAX, SNAPSHOT_CATCHUP_ENTRIES_MAX).is_ok());
        for (count, catchup) in [
            (0, 0),
            (SNAPSHOT_COUNT_MAX + 1, 0),
            (u64::MAX, 0),
            (100, SNAPSHOT_CATCHUP_ENTRIES_MAX + 1),
            (100, u64::MAX),
        ] {
            let err = with(count, catchup).unwrap_err();
            assert!(err.contains("snapshot"), "{count}/{catchup}: {err}");
        }
    }
}
