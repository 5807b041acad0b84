//! `concord check-history` on every independent history in
//! `shared/histories` (Porcupine's copies of Jepsen etcd logs and its
//! key-value logs): the binary must print the verdict `EXPECTED.tsv` lists
//! and exit with its code (0 linearizable, 1 not).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Rows `EXPECTED.tsv` holds (a shrinking file is a broken checkout).
const EXPECTED_ROWS: usize = 56;

/// Per-file checker budget. Every file is decided in milliseconds; the
/// budget only turns a regression into a clear `unknown` (exit 2).
const BUDGET_SECS: &str = "30";

fn histories_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/histories");
    assert!(
        dir.join("EXPECTED.tsv").is_file(),
        "missing {}/EXPECTED.tsv (the shared/ folder beside the repository)",
        dir.display()
    );
    dir
}

#[test]
fn check_history_agrees_with_every_expected_verdict() {
    let dir = histories_dir();
    let tsv = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("EXPECTED.tsv is readable");
    let started = Instant::now();
    let mut rows = 0;
    let mut failures = Vec::new();
    for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 3, "malformed EXPECTED.tsv row: {line}");
        let (file, model, expected) = (cols[0], cols[1], cols[2]);
        let format = match model {
            "etcd-cas-register" => "jepsen-etcd",
            "kv-get-put-append" => "porcupine-kv",
            other => panic!("EXPECTED.tsv names an unknown model {other:?}"),
        };
        let (want_code, want_text) = match expected {
            "true" => (0, "linearizable"),
            "false" => (1, "not linearizable"),
            other => panic!("bad expected_linearizable {other:?} in: {line}"),
        };
        let output = Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(["check-history", "--format", format, "--budget", BUDGET_SECS])
            .arg(dir.join(file))
            .output()
            .expect("concord runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let code = output.status.code();
        if code != Some(want_code) || stdout.trim() != want_text {
            failures.push(format!(
                "{file}: expected {want_text:?} (exit {want_code}), got {:?} (exit {code:?}); stderr: {}",
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).lines().next().unwrap_or("")
            ));
        }
        rows += 1;
    }
    assert_eq!(
        rows, EXPECTED_ROWS,
        "EXPECTED.tsv should list {EXPECTED_ROWS} histories"
    );
    assert!(
        failures.is_empty(),
        "{} wrong verdicts:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "checking {rows} small histories took {:?}",
        started.elapsed()
    );
}

#[test]
fn check_history_refuses_bad_input_with_exit_3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junk = dir.path().join("junk.log");
    std::fs::write(&junk, "not a history\n").expect("write");
    for format in ["jepsen-etcd", "jsonl", "no-such-format"] {
        let status = Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(["check-history", "--format", format])
            .arg(&junk)
            .output()
            .expect("concord runs")
            .status;
        assert_eq!(status.code(), Some(3), "format {format}");
    }
}
