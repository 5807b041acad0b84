//! The checker against independent histories (`shared/histories`, copied
//! from Porcupine's test data): every row of `EXPECTED.tsv` must get the
//! verdict upstream asserts. DESIGN.md, "Verification, in layers", item 4.
//!
//! Also holds us to the explanation's contract on real data: the
//! explanation of every non-linearizable file is itself not linearizable,
//! and renders.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use concord_check::{
    check, check_file_with, parse::parse_jepsen_etcd, parse::parse_porcupine_kv,
    render_timeline_html, sub_history, CheckOptions, Format, KvModel, Model, Operation,
    RegisterModel, Verdict,
};

/// Per-file budget. Each file takes milliseconds; a budget this large
/// means a regression shows up as a wrong verdict (`unknown`), not a flake.
const BUDGET: Duration = Duration::from_secs(30);

fn histories_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/histories"
    ));
    assert!(
        dir.join("EXPECTED.tsv").is_file(),
        "the shared histories are missing: expected {}/EXPECTED.tsv (the `shared/` folder \
         beside the repository, see shared/histories/README.md)",
        dir.display()
    );
    dir
}

struct Row {
    file: String,
    model: String,
    linearizable: bool,
}

fn expected_rows(dir: &Path) -> Vec<Row> {
    let tsv = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("EXPECTED.tsv is readable");
    tsv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert!(cols.len() >= 3, "malformed EXPECTED.tsv row: {line}");
            Row {
                file: cols[0].to_owned(),
                model: cols[1].to_owned(),
                linearizable: match cols[2] {
                    "true" => true,
                    "false" => false,
                    other => panic!("bad expected_linearizable `{other}` in: {line}"),
                },
            }
        })
        .collect()
}

fn format_for(model: &str) -> Format {
    match model {
        "etcd-cas-register" => Format::JepsenEtcd,
        "kv-get-put-append" => Format::PorcupineKv,
        other => panic!("EXPECTED.tsv names an unknown model `{other}`"),
    }
}

#[test]
fn every_expected_history_gets_its_verdict() {
    let dir = histories_dir();
    let rows = expected_rows(&dir);
    assert_eq!(rows.len(), 56, "EXPECTED.tsv should list 56 histories");
    let options = CheckOptions::with_budget(BUDGET);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for row in &rows {
        let path = dir.join(&row.file);
        let report = check_file_with(format_for(&row.model), &path, &options)
            .unwrap_or_else(|e| panic!("{}: {e}", row.file));
        let want = if row.linearizable {
            Verdict::Linearizable
        } else {
            Verdict::NotLinearizable
        };
        println!(
            "{:<22} {:>4} ops  {:>17}  check {:>8.1?}  explain {:>8.1?}{}",
            row.file,
            report.op_count,
            report.verdict.to_string(),
            report.elapsed,
            report.explain_elapsed,
            report
                .explanation
                .as_ref()
                .map_or_else(String::new, |e| format!(
                    "  ({} ops in explanation)",
                    e.ops.len()
                ))
        );
        if report.elapsed > slowest.0 {
            slowest = (report.elapsed, row.file.clone());
        }
        if report.verdict != want {
            failures.push(format!(
                "{}: expected {want}, got {}",
                row.file, report.verdict
            ));
        }
        if want == Verdict::NotLinearizable && report.explanation.is_none() {
            failures.push(format!("{}: no explanation", row.file));
        }
    }
    println!(
        "{} histories in {:.2?}; slowest check: {} in {:.1?}",
        rows.len(),
        started.elapsed(),
        slowest.1,
        slowest.0
    );
    assert!(
        failures.is_empty(),
        "wrong verdicts:\n{}",
        failures.join("\n")
    );
}

/// Upstream also checks the 1- and 10-client kv logs without partitioning
/// (`kvNoPartitionModel`): same verdicts, which also tests that
/// partitioning by key changes nothing but speed.
#[test]
fn kv_histories_unpartitioned_agree() {
    let dir = histories_dir();
    let options = CheckOptions {
        partition: false,
        explain_budget: Duration::ZERO,
        ..CheckOptions::with_budget(BUDGET)
    };
    for row in expected_rows(&dir)
        .iter()
        .filter(|r| r.model == "kv-get-put-append")
    {
        let report = check_file_with(Format::PorcupineKv, &dir.join(&row.file), &options)
            .unwrap_or_else(|e| panic!("{}: {e}", row.file));
        println!(
            "{:<22} unpartitioned: {} in {:.1?}",
            row.file, report.verdict, report.elapsed
        );
        assert_eq!(report.keys.len(), 1, "{}: one partition", row.file);
        let want = if row.linearizable {
            Verdict::Linearizable
        } else {
            Verdict::NotLinearizable
        };
        assert_eq!(report.verdict, want, "{}", row.file);
    }
}

fn assert_explanation_fails<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    file: &str,
) where
    M::Input: Clone,
    M::Output: Clone,
{
    let report = check(model, history, &CheckOptions::with_budget(BUDGET)).expect("well-formed");
    let explanation = report
        .explanation
        .expect("non-linearizable histories are explained");
    assert!(explanation.failing < explanation.ops.len());
    let sub = sub_history(history, &explanation);
    let again = check(
        model,
        &sub,
        &CheckOptions {
            explain_budget: Duration::ZERO,
            ..CheckOptions::with_budget(BUDGET)
        },
    )
    .expect("well-formed");
    assert_eq!(
        again.verdict,
        Verdict::NotLinearizable,
        "{file}: the explanation must itself be non-linearizable:\n{}",
        explanation.summary()
    );
    let html = render_timeline_html(&explanation);
    assert!(
        html.contains("<svg") && html.contains("#c0392b"),
        "{file}: failing op drawn"
    );
}

#[test]
fn explanations_are_themselves_not_linearizable() {
    let dir = histories_dir();
    for row in expected_rows(&dir).iter().filter(|r| !r.linearizable) {
        let text = std::fs::read_to_string(dir.join(&row.file)).expect("readable");
        match format_for(&row.model) {
            Format::JepsenEtcd => {
                let history = parse_jepsen_etcd(&text).expect("parses");
                assert_explanation_fails(&RegisterModel, &history, &row.file);
            }
            Format::PorcupineKv => {
                let history = parse_porcupine_kv(&text).expect("parses");
                assert_explanation_fails(&KvModel::default(), &history, &row.file);
            }
            Format::Jsonl => unreachable!("EXPECTED.tsv has no jsonl files"),
        }
    }
}
