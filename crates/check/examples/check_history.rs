//! A stand-in for `concord check-history` until the CLI wires it:
//!
//! ```text
//! cargo run -p concord-check --example check_history -- \
//!     --format jepsen-etcd FILE [--budget-secs N] [--html OUT.html]
//! ```
//!
//! Prints the verdict, per-key verdicts and the explanation; exits 0
//! (linearizable), 1 (not) or 2 (unknown), 3 on bad input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use concord_check::{check_file, render_timeline_html, Format};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut format = None;
    let mut file = None;
    let mut html = None;
    let mut budget = Duration::from_secs(60);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--format" => format = args.next(),
            "--html" => html = args.next().map(PathBuf::from),
            "--budget-secs" => {
                budget = Duration::from_secs(args.next().and_then(|s| s.parse().ok()).unwrap_or(60))
            }
            _ => file = Some(PathBuf::from(arg)),
        }
    }
    let (Some(format), Some(file)) = (format, file) else {
        eprintln!("usage: check_history --format jepsen-etcd|porcupine-kv|jsonl FILE [--html OUT]");
        return ExitCode::from(3);
    };
    let format: Format = match format.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(3);
        }
    };
    let report = match check_file(format, &file, budget) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(3);
        }
    };
    println!("{}", report.verdict);
    for key in &report.keys {
        println!(
            "  key {:?}: {} ({} ops, {:.1?}{})",
            key.key,
            key.verdict,
            key.op_count,
            key.elapsed,
            key.unknown_reason
                .map_or_else(String::new, |r| format!(", {r}"))
        );
    }
    if let Some(explanation) = &report.explanation {
        print!("{}", explanation.summary());
        if let Some(out) = html {
            if let Err(e) = std::fs::write(&out, render_timeline_html(explanation)) {
                eprintln!("cannot write {}: {e}", out.display());
                return ExitCode::from(3);
            }
        }
    }
    ExitCode::from(report.verdict.exit_code() as u8)
}
