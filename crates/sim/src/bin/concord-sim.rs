//! `concord-sim`: runs seeded swarm simulations of the Raft core.
//!
//! ```text
//! concord-sim --seeds 1000 --nodes 3,5,7     # a batch
//! concord-sim --seed 42 --nodes 5            # replay one seed with its trace
//! concord-sim --minutes 30                   # soak until the time is up
//! ```
//! The last line is always `seeds: N, violations: V`; the exit code is 1 when
//! V > 0. A failing seed is re-run with tracing on, and its fault mix and the
//! tail of its trace are printed, so the report is the same as a replay.
#![forbid(unsafe_code)]

use clap::Parser;
use concord_sim::runner::nodes_for;
use concord_sim::{report, run, run_seeds, SimOptions};
use std::time::{Duration, Instant};

/// Failing seeds reported in full; the rest are only counted.
const REPORTED_FAILURES: usize = 5;

#[derive(Parser)]
#[command(about = "Deterministic swarm simulation of the Concord Raft core")]
struct Args {
    /// Number of seeds to run (ignored with --seed).
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed of a batch.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Replay one seed, printing its fault mix and trace.
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster sizes; seed s uses sizes[s % len].
    #[arg(long, value_delimiter = ',', default_values_t = vec![3usize, 5, 7])]
    nodes: Vec<usize>,
    /// Soak: keep running new seeds for this many minutes.
    #[arg(long)]
    minutes: Option<f64>,
    /// Worker threads (default: available parallelism).
    #[arg(long)]
    threads: Option<usize>,
    /// Trace lines to print for a failing or replayed seed.
    #[arg(long, default_value_t = 120)]
    trace: usize,
}

fn main() {
    let args = Args::parse();
    if args.nodes.is_empty() || args.nodes.iter().any(|n| *n == 0 || *n > 64) {
        eprintln!("--nodes must list cluster sizes between 1 and 64");
        std::process::exit(2);
    }
    if let Some(seed) = args.seed {
        let mut options = SimOptions::new(seed, nodes_for(seed, &args.nodes));
        options.trace = true;
        let outcome = run(options);
        print!("{}", report(&outcome, args.trace));
        let v = u64::from(outcome.violation.is_some());
        println!("seeds: 1, violations: {v}");
        std::process::exit(if v > 0 { 1 } else { 0 });
    }
    // Core assertions are reported as violations with their message; the
    // default hook would also spray a backtrace per failing seed.
    std::panic::set_hook(Box::new(|_| {}));
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let deadline = args
        .minutes
        .map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0));
    let template = SimOptions::new(0, 3);
    let summary = run_seeds(
        args.first,
        args.seeds,
        &args.nodes,
        threads,
        template,
        deadline,
        0,
    );
    for failure in summary.failures.iter().take(REPORTED_FAILURES) {
        let mut options = SimOptions::new(failure.seed, failure.nodes);
        options.trace = true;
        println!("{}", report(&run(options), args.trace));
    }
    for failure in summary.failures.iter().skip(REPORTED_FAILURES) {
        if let Some(v) = &failure.violation {
            println!("seed {} nodes {}: {}", failure.seed, failure.nodes, v.what);
        }
    }
    println!(
        "{:.1} seeds/s on {threads} threads; totals: {:?}",
        summary.seeds_per_second(),
        summary.stats
    );
    let v = summary.failures.len();
    println!("seeds: {}, violations: {v}", summary.seeds);
    std::process::exit(if v > 0 { 1 } else { 0 });
}
