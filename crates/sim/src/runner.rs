//! Runs many seeds on a few OS threads and gathers the results.
//!
//! Invariants:
//! 1. Seed `s` always runs on `nodes[s % nodes.len()]` nodes, whatever the
//!    thread count, so a seed printed by a failing batch replays alone.
//! 2. Each run is independent (no shared state but the result list), so the
//!    thread count changes wall time only, never outcomes.

use crate::sim::{run, Outcome, SimOptions, Stats};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a batch of runs found.
pub struct Summary {
    /// Runs performed.
    pub seeds: u64,
    /// Failing runs, in seed order.
    pub failures: Vec<Outcome>,
    /// Counters summed over every run.
    pub stats: Stats,
    /// Wall time.
    pub elapsed: Duration,
}

impl Summary {
    /// Runs per second of wall time.
    pub fn seeds_per_second(&self) -> f64 {
        self.seeds as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The cluster size seed `seed` runs with (invariant 1).
pub fn nodes_for(seed: u64, nodes: &[usize]) -> usize {
    nodes[(seed % nodes.len() as u64) as usize]
}

/// Runs seeds `first..first + count` (or until `deadline`, if given) on
/// `threads` threads; `template` supplies everything but seed and size.
/// Stops early once `stop_after_failures` runs failed (0: never).
pub fn run_seeds(
    first: u64,
    count: u64,
    nodes: &[usize],
    threads: usize,
    template: SimOptions,
    deadline: Option<Instant>,
    stop_after_failures: usize,
) -> Summary {
    let start = Instant::now();
    let next = AtomicU64::new(first);
    let done = AtomicU64::new(0);
    let results: Mutex<(Vec<Outcome>, Stats)> = Mutex::new((Vec::new(), Stats::default()));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
                if stop_after_failures > 0
                    && results.lock().expect("no poisoned lock").0.len() >= stop_after_failures
                {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if deadline.is_none() && seed >= first + count {
                    return;
                }
                let mut options = template;
                options.seed = seed;
                options.nodes = nodes_for(seed, nodes);
                let outcome = run(options);
                done.fetch_add(1, Ordering::Relaxed);
                let mut r = results.lock().expect("no poisoned lock");
                r.1.add(&outcome.stats);
                if outcome.violation.is_some() {
                    r.0.push(outcome);
                }
            });
        }
    });
    let (mut failures, stats) = results.into_inner().expect("no poisoned lock");
    failures.sort_by_key(|o| o.seed);
    Summary {
        seeds: done.load(Ordering::Relaxed),
        failures,
        stats,
        elapsed: start.elapsed(),
    }
}
