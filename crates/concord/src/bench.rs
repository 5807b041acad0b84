//! `concord bench`: load against any etcd v3 endpoint (Concord or etcd).
//! The work is in the `concord-bench` crate; this prints its report: the
//! human summary, then one JSON line, always the last line of stdout.

use anyhow::Context;

pub use concord_bench::BenchArgs;

/// Validates the flags, runs the benchmark and prints the report.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = args.validate()?;
    let op = config.op.name();
    let report = concord_bench::run(config).with_context(|| format!("bench --op {op}"))?;
    print!("{}", report.to_text());
    println!("{}", report.to_json());
    Ok(())
}
