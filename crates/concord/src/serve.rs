//! `concord serve`: one member, with etcd's flag names.

use anyhow::{bail, Context};
use concord_node::config::{parse_initial_cluster, parse_urls, ClusterState, NodeConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Flags of `concord serve`; unset ones take etcd's defaults.
#[derive(clap::Args, Default, Debug)]
pub struct ServeArgs {
    /// Human-readable name of this member.
    #[arg(long)]
    name: Option<String>,
    /// Path to the data directory (default: ./<name>.concord).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(long)]
    listen_client_urls: Option<String>,
    /// Client URLs to advertise to the rest of the cluster.
    #[arg(long)]
    advertise_client_urls: Option<String>,
    /// URLs to listen on for peer traffic.
    #[arg(long)]
    listen_peer_urls: Option<String>,
    /// Peer URLs to advertise to the rest of the cluster.
    #[arg(long)]
    initial_advertise_peer_urls: Option<String>,
    /// Initial cluster configuration: name=peer-url,...
    #[arg(long)]
    initial_cluster: Option<String>,
    /// "new" to bootstrap, "existing" to join a running cluster.
    #[arg(long)]
    initial_cluster_state: Option<String>,
    /// Token shared by the members of one cluster.
    #[arg(long)]
    initial_cluster_token: Option<String>,
    /// Largest client request accepted.
    #[arg(long)]
    max_request_bytes: Option<usize>,
    /// Most operations in one Txn.
    #[arg(long)]
    max_txn_ops: Option<usize>,
    /// Backend size at which the space alarm is raised.
    #[arg(long)]
    quota_backend_bytes: Option<u64>,
    /// Heartbeat interval in milliseconds.
    #[arg(long)]
    heartbeat_interval: Option<u64>,
    /// Election timeout in milliseconds.
    #[arg(long)]
    election_timeout: Option<u64>,
    /// Applied entries between snapshots.
    #[arg(long)]
    snapshot_count: Option<u64>,
    /// Entries a snapshot leaves in the log for followers to catch up from
    /// (etcd 3.5's flag; default 5000).
    #[arg(long)]
    experimental_snapshot_catchup_entries: Option<u64>,
    /// Enable the fault-injection admin calls (for `concord check` only).
    #[arg(long, hide = true)]
    enable_fault_injection: bool,
    /// Where the fault-injection admin endpoint listens (with the flag above).
    #[arg(long, hide = true)]
    fault_admin_url: Option<String>,
}

fn to_config(args: ServeArgs) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig::single_default();
    if let Some(name) = args.name {
        config.name = name;
    }
    config.data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("{}.concord", config.name)));
    let err = |e: String| anyhow::anyhow!(e);
    if let Some(urls) = args.listen_client_urls {
        config.listen_client_urls = parse_urls(&urls).map_err(err)?;
        config.advertise_client_urls = config.listen_client_urls.clone();
    }
    if let Some(urls) = args.advertise_client_urls {
        config.advertise_client_urls = parse_urls(&urls).map_err(err)?;
    }
    if let Some(urls) = args.listen_peer_urls {
        config.listen_peer_urls = parse_urls(&urls).map_err(err)?;
        config.initial_advertise_peer_urls = config.listen_peer_urls.clone();
    }
    if let Some(urls) = args.initial_advertise_peer_urls {
        config.initial_advertise_peer_urls = parse_urls(&urls).map_err(err)?;
    }
    config.initial_cluster = match args.initial_cluster {
        Some(text) => parse_initial_cluster(&text).map_err(err)?,
        None => config
            .initial_advertise_peer_urls
            .iter()
            .map(|u| (config.name.clone(), u.clone()))
            .collect(),
    };
    config.initial_cluster_state = match args.initial_cluster_state.as_deref() {
        None | Some("new") => ClusterState::New,
        Some("existing") => ClusterState::Existing,
        Some(other) => bail!("--initial-cluster-state must be new or existing, not {other:?}"),
    };
    if let Some(token) = args.initial_cluster_token {
        config.initial_cluster_token = token;
    }
    if let Some(v) = args.max_request_bytes {
        config.max_request_bytes = v;
    }
    if let Some(v) = args.max_txn_ops {
        config.max_txn_ops = v;
    }
    if let Some(v) = args.quota_backend_bytes {
        config.quota_backend_bytes = v;
    }
    if let Some(v) = args.heartbeat_interval {
        config.heartbeat_interval_ms = v;
    }
    if let Some(v) = args.election_timeout {
        config.election_timeout_ms = v;
    }
    if let Some(v) = args.snapshot_count {
        config.snapshot_count = v;
    }
    if let Some(v) = args.experimental_snapshot_catchup_entries {
        config.snapshot_catchup_entries = v;
    }
    config.enable_fault_injection = args.enable_fault_injection;
    config.fault_admin_url = args.fault_admin_url;
    config.validate().map_err(err)?;
    Ok(config)
}

/// Runs a member until SIGINT/SIGTERM or a fatal error.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = to_config(args)?;
    let name = config.name.clone();
    let node = concord_node::node::start(config).context("starting member")?;
    tracing::info!(
        member = %format!("{:x}", node.shared.member_id),
        name = %name,
        client = ?node.client_addrs,
        "serving"
    );
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    loop {
        if stop.load(Ordering::Relaxed) {
            tracing::info!("stopping");
            node.shutdown().context("stopping member")?;
            return Ok(());
        }
        if node.shared.stopped.load(Ordering::Acquire) {
            // The replica loop stopped by itself: a fatal storage error.
            node.wait().context("member stopped")?;
            bail!("member stopped unexpectedly");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
