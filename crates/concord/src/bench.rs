//! `concord bench`: load against any etcd v3 endpoint (Concord or etcd).
//! The work is in the `concord-bench` crate; this prints its report: the
//! human summary, then one JSON line, always the last line of stdout.

use anyhow::Context;
use std::io::Write;

pub use concord_bench::BenchArgs;

/// Validates the flags, runs the benchmark and prints the report.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = args.validate()?;
    let op = config.op.name();
    let report = concord_bench::run(config).with_context(|| format!("bench --op {op}"))?;
    let mut out = std::io::stdout().lock();
    let written = write!(out, "{}", report.to_text())
        .and_then(|()| writeln!(out, "{}", report.to_json()))
        .and_then(|()| out.flush());
    match written {
        // A reader that stopped early (`| head`) is not an error of the run.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the report"),
    }
}
