//! `concord check` and `concord check-history`: verification from the
//! command line. Thin wrappers: the harness (`concord-harness`) runs the
//! test, the checker (`concord-check`) decides histories.
//!
//! Exit codes of both: 0 linearizable (valid), 1 not linearizable,
//! 2 unknown (the checker's budget ran out, or nothing could be checked),
//! 3 the run or the file could not be checked at all (a bad flag, a
//! cluster that never came up, a malformed file).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use concord_check::{check_file, render_timeline_html, Format};
use concord_harness::{parse_nemeses, RunConfig, WorkloadKind};

/// Exit code for "could not check at all" (0, 1, 2 are verdicts).
const EXIT_ERROR: i32 = 3;

/// Exit code after Ctrl-C or SIGTERM (128 + SIGINT, the shell convention).
const EXIT_INTERRUPTED: i32 = 130;

/// How long the runtime may take to drop its tasks (and with them the
/// cluster, whose members are then killed) after the run ends.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Flags of `concord check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Members of the test cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Workload: register (read/write/cas), set (unique adds, final read) or
    /// lock (Lock service, leases, fenced writes, Unlock).
    #[arg(long, default_value = "register")]
    workload: String,
    /// Faults, comma-separated: partition, kill, pause, clock, member (or none).
    #[arg(long, default_value = "partition")]
    nemesis: String,
    /// Seconds of load and faults.
    #[arg(long, default_value_t = 30)]
    time_limit: u64,
    /// Output folder, new or empty (default: concord-check-<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Concurrent clients (default: two per member).
    #[arg(long)]
    clients: Option<usize>,
    /// Serve reads locally (not linearizable by design: for testing the test).
    #[arg(long)]
    serializable_reads: bool,
    /// lock workload: drop the fence from the writes (stale holders' writes
    /// then apply: for testing the test).
    #[arg(long)]
    unfenced_writes: bool,
    /// Seed of the random choices (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Per-operation client deadline in milliseconds.
    #[arg(long, default_value_t = 1000)]
    op_timeout_ms: u64,
    /// Seconds the checker may spend before answering `unknown`.
    #[arg(long, default_value_t = 60)]
    check_budget: u64,
}

/// Flags of `concord check-history`.
#[derive(clap::Args, Debug)]
pub struct CheckHistoryArgs {
    /// jepsen-etcd, porcupine-kv or jsonl (what `concord check` writes).
    #[arg(long)]
    format: String,
    /// The history file.
    file: PathBuf,
    /// Seconds the checker may spend before answering `unknown`.
    #[arg(long, default_value_t = 60)]
    budget: u64,
    /// Also write the explanation of a non-linearizable history here.
    #[arg(long)]
    html: Option<PathBuf>,
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn config_from(args: CheckArgs) -> anyhow::Result<RunConfig> {
    let concord_bin = std::env::current_exe().context("locating the concord binary")?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("concord-check-{}", unix_seconds())));
    let mut config = RunConfig::new(concord_bin, out);
    config.nodes = args.nodes;
    config.workload = args.workload.parse::<WorkloadKind>()?;
    config.nemeses = parse_nemeses(&args.nemesis)?;
    config.time_limit = Duration::from_secs(args.time_limit);
    config.clients = args.clients.unwrap_or(2 * args.nodes);
    config.serializable_reads = args.serializable_reads;
    config.lock.fenced = !args.unfenced_writes;
    config.seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    config.op_timeout = Duration::from_millis(args.op_timeout_ms);
    config.check_budget = Duration::from_secs(args.check_budget);
    config.progress = Some(Arc::new(|line: &str| eprintln!("{line}")));
    if config.workload != WorkloadKind::Register && config.serializable_reads {
        bail!("--serializable-reads applies to the register workload only");
    }
    if config.workload != WorkloadKind::Lock && args.unfenced_writes {
        bail!("--unfenced-writes applies to the lock workload only");
    }
    config.validate()?;
    Ok(config)
}

/// Runs `concord check` and exits with the verdict's code. Ctrl-C or
/// SIGTERM abandons the run; the cluster's members are killed as it drops.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let code = match run_check(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("concord check: {e:#}");
            EXIT_ERROR
        }
    };
    std::process::exit(code);
}

fn run_check(args: CheckArgs) -> anyhow::Result<i32> {
    let config = config_from(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = runtime.block_on(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        tokio::select! {
            outcome = concord_harness::run(config) => {
                let outcome = outcome?;
                println!("{}", outcome.verdict);
                println!("report: {}", outcome.out.join("report.html").display());
                Ok(outcome.verdict.exit_code())
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("concord check: interrupted; stopping the cluster");
                Ok(EXIT_INTERRUPTED)
            }
            _ = terminate.recv() => {
                eprintln!("concord check: terminated; stopping the cluster");
                Ok(EXIT_INTERRUPTED)
            }
        }
    });
    // Dropping the tasks drops the cluster, which kills every member; do
    // not wait for a checker thread still searching an abandoned history.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    code
}

/// Runs `concord check-history`: prints `linearizable`, `not linearizable`
/// or `unknown` and exits 0, 1 or 2 (3 if the file cannot be checked).
pub fn run_history(args: CheckHistoryArgs) -> anyhow::Result<()> {
    let code = match check_history(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("concord check-history: {e:#}");
            EXIT_ERROR
        }
    };
    std::process::exit(code);
}

fn check_history(args: CheckHistoryArgs) -> anyhow::Result<i32> {
    let format: Format = args.format.parse()?;
    let report = check_file(format, &args.file, Duration::from_secs(args.budget))?;
    println!("{}", report.verdict);
    for key in report.keys_with(concord_check::Verdict::NotLinearizable) {
        eprintln!(
            "  key {:?}: not linearizable ({} ops)",
            key.key.as_deref().unwrap_or("-"),
            key.op_count
        );
    }
    if let Some(explanation) = &report.explanation {
        eprint!("{}", explanation.summary());
        if let Some(html) = &args.html {
            std::fs::write(html, render_timeline_html(explanation))
                .with_context(|| format!("writing {}", html.display()))?;
        }
    }
    Ok(report.verdict.exit_code())
}
