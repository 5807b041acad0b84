//! `concord snapshot restore`: seeds a member of a new cluster from a
//! snapshot file (taken with `etcdctl snapshot save`, i.e. the
//! Maintenance.Snapshot stream of a Concord member). Flags follow
//! `etcdctl snapshot restore`. Run it once per member of the new cluster,
//! with the same `--initial-cluster` and `--initial-cluster-token`, then
//! start each member with `concord serve` on its data directory.

use anyhow::Context;
use concord_node::config::{parse_initial_cluster, parse_urls, NodeConfig};
use std::path::PathBuf;

/// `concord snapshot ...`.
#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    action: SnapshotAction,
}

#[derive(clap::Subcommand, Debug)]
enum SnapshotAction {
    /// Create a new member's data directory from a snapshot file.
    Restore(RestoreArgs),
}

#[derive(clap::Args, Debug)]
struct RestoreArgs {
    /// The snapshot file.
    file: PathBuf,
    /// Name of this member in the new cluster.
    #[arg(long, default_value = "default")]
    name: String,
    /// Data directory to create (default: ./<name>.concord).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The new cluster: name=peer-url,...
    #[arg(long, default_value = "default=http://127.0.0.1:2380")]
    initial_cluster: String,
    /// Token of the new cluster.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// This member's peer URLs.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    initial_advertise_peer_urls: String,
}

/// Runs `concord snapshot ...`.
pub fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    match args.action {
        SnapshotAction::Restore(args) => restore(args),
    }
}

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let err = |e: String| anyhow::anyhow!(e);
    let mut config = NodeConfig::single_default();
    config.data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("{}.concord", args.name)));
    config.name = args.name;
    config.initial_cluster = parse_initial_cluster(&args.initial_cluster).map_err(err)?;
    config.initial_cluster_token = args.initial_cluster_token;
    config.initial_advertise_peer_urls =
        parse_urls(&args.initial_advertise_peer_urls).map_err(err)?;
    config.listen_peer_urls = config.initial_advertise_peer_urls.clone();
    let restored = concord_node::restore::restore(&config, &args.file)
        .with_context(|| format!("restoring {}", args.file.display()))?;
    println!(
        "restored {} into {} (member {:x}, revision {}, raft index {})",
        args.file.display(),
        config.data_dir.display(),
        restored.member_id,
        restored.revision,
        restored.index
    );
    Ok(())
}
