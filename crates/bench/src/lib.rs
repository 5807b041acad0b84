//! # concord-bench: an etcd v3 load generator
//!
//! `concord bench` drives a cluster through the etcd v3 gRPC protocol, with
//! the messages generated in `concord-etcd-proto` (not a third-party etcd
//! client), so one run measures Concord and a real etcd alike and the
//! results can be compared as ratios. Unary KV calls go straight onto an
//! HTTP/2 connection ([`unary`]), streams through tonic's clients.
//!
//! What it measures, per run: throughput, latency percentiles from an HDR
//! histogram (p50/p90/p99/p99.9/max), and errors grouped by kind. It prints
//! a human summary and, as its very last line, one JSON object that scripts
//! (`bench/race.sh`) read.
//!
//! Two load models:
//! * **closed loop** (default): `--clients` tasks, each with one request in
//!   flight; latency is measured from send to answer.
//! * **open loop** (`--rate R`): requests are due on a fixed schedule, one
//!   every `1/R` s, and latency is measured from the *scheduled* time. When
//!   the server falls behind, the queueing delay shows up in the latency
//!   instead of silently lowering the offered load ("coordinated omission").
//!
//! Operations (`--op`): `put`, `range` (linearizable), `range-serializable`,
//! `txn-cas` (compare mod_revision and swap), `watch-latency` (time from a
//! put's send to its event reaching a watcher), `lease-keepalive` (one
//! keep-alive round trip on a stream), `fsync-probe` (write + fdatasync
//! in a local file: the disk's physical floor for a durable write), and
//! `chain-probe` (the least a replicated put does, in local threads: the
//! machine's floor for a 3-member put; see [`chain_probe`]).
//!
//! What it deliberately does not do: start or stop servers, or read their
//! CPU and memory (the race script does that from `/proc`); and it asserts
//! nothing about speed, it only reports.
#![forbid(unsafe_code)]

pub mod chain_probe;
pub mod error;
pub mod fsync_probe;
pub mod keys;
pub mod options;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod timer;
pub mod unary;

pub use error::BenchError;
pub use options::{BenchArgs, BenchConfig, Op};
pub use report::Report;

/// Runs one benchmark to completion on its own tokio runtime and returns
/// the report. Blocks the calling thread.
pub fn run(config: BenchConfig) -> Result<Report, BenchError> {
    match config.op {
        Op::FsyncProbe => return fsync_probe::run(&config),
        Op::ChainProbe => return chain_probe::run(&config),
        _ => {}
    }
    if !runner::uses_streams(config.op) {
        return runner::run_sharded(config);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime
        .worker_threads(config.threads)
        .enable_all()
        .thread_name("concord-bench");
    // As in the server (crates/node/src/node.rs): requests written by
    // clients woken together are flushed together.
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    let runtime = runtime
        .build()
        .map_err(|e| BenchError::Runtime(e.to_string()))?;
    runtime.block_on(runner::run(config))
}
