//! `concord`: the command-line entry point. Thin by design: it parses flags
//! and hands over to the library crates; errors become a message and a
//! non-zero exit here, at the edge.

mod alloc;
mod bench;
mod check;
mod dev;
mod serve;
mod snapshot;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "concord",
    version,
    about = "Concord: a replicated store with an etcd v3 face"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one member (flags follow etcd's names and defaults).
    Serve(serve::ServeArgs),
    /// Start a local cluster of `concord serve` processes; Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Load-test an etcd v3 endpoint (Concord or etcd): throughput, latency, errors.
    Bench(bench::BenchArgs),
    /// Jepsen-style test of a local cluster under faults; exits 0 only for a valid history.
    Check(check::CheckArgs),
    /// Offline snapshot tools (`restore` seeds a new cluster from a snapshot file).
    Snapshot(snapshot::SnapshotArgs),
    /// Check a history file: prints linearizable / not linearizable / unknown, exits 0 / 1 / 2.
    CheckHistory(check::CheckHistoryArgs),
}

fn main() {
    alloc::tune();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(args)) => serve::run(args),
        None => serve::run(serve::ServeArgs::default()),
        Some(Command::Dev(args)) => dev::run(args),
        Some(Command::Snapshot(args)) => snapshot::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Check(args)) => check::run(args),
        Some(Command::CheckHistory(args)) => check::run_history(args),
    };
    if let Err(e) = result {
        eprintln!("concord: {e:#}");
        std::process::exit(1);
    }
}
