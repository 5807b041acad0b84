//! `concord check` has teeth and no false alarms: real `concord serve`
//! processes under real partitions and kills.
//!
//! - Serializable reads are served from the local store, so a member cut
//!   off from the leader (or merely lagging) answers stale values: the
//!   register history must be reported NOT linearizable (exit code 1).
//! - The same run with linearizable reads must be valid, and so must the
//!   set workload under kill -9, and the register workload while members
//!   are removed, wiped and added back (`member`).
//! - The lock workload with the fence dropped from its writes lets stalled
//!   ex-holders' writes apply after the next holder's: the run must be
//!   reported NOT valid.
//!
//! Each test starts its own cluster on its own ports and folder and runs
//! for a few seconds; every member is killed when its run ends or fails.
//! A failing run's folder is kept and named in the panic message.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_check::Verdict;
use concord_harness::{run, NemesisKind, RunConfig, WorkloadKind};

/// Seconds of load and faults per run: enough for two or three partitions
/// (a fault every 3.5 to 9.5 s), short enough for the suite's budget.
const TIME_LIMIT: Duration = Duration::from_secs(15);

/// Upper bound on one `concord check` run: the time limit, healing and
/// settling, the checker; far above the ~17 s it takes.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// A `concord check` child that is stopped with SIGTERM (it then kills its
/// cluster) and reaped if the test ends early.
struct CheckProcess(Child);

impl Drop for CheckProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn first_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn serializable_reads_under_partitions_are_not_linearizable() {
    let dir = tempfile::Builder::new()
        .prefix("concord-check-teeth-")
        .tempdir()
        .expect("temp dir");
    let out = dir.path().join("out");
    let mut child = CheckProcess(
        Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(["check", "--nodes", "3", "--workload", "register"])
            .args(["--nemesis", "partition", "--serializable-reads"])
            .args(["--time-limit", &TIME_LIMIT.as_secs().to_string()])
            .args(["--seed", "7"])
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("concord check starts"),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < RUN_DEADLINE,
            "concord check ran over {RUN_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let verdict = first_line(&out.join("verdict.txt"));
    if status.code() != Some(1) || verdict != "not linearizable" {
        let kept = dir.keep();
        panic!(
            "stale serializable reads went unnoticed: exit {:?}, verdict {verdict:?}; see {}",
            status.code(),
            kept.display()
        );
    }
    for file in ["history.jsonl", "nemesis.log", "report.html"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let report = std::fs::read_to_string(out.join("report.html")).expect("report");
    assert!(
        report.contains("Not linearizable"),
        "the report should draw the failing piece"
    );
    assert!(
        std::fs::read_to_string(out.join("nemesis.log"))
            .expect("log")
            .contains("partition  start"),
        "no partition was started"
    );
    // The history on disk is the one judged: re-checking it agrees.
    let recheck = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["check-history", "--format", "jsonl"])
        .arg(out.join("history.jsonl"))
        .output()
        .expect("check-history runs");
    assert_eq!(recheck.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&recheck.stdout).trim(),
        "not linearizable"
    );
}

/// Runs the harness in-process and asserts a valid history.
async fn assert_valid_run(name: &str, configure: impl FnOnce(&mut RunConfig)) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("concord-check-{name}-"))
        .tempdir()
        .expect("temp dir");
    let mut config = RunConfig::new(env!("CARGO_BIN_EXE_concord"), dir.path().join("out"));
    config.time_limit = TIME_LIMIT;
    config.seed = 11;
    config.progress = Some(Arc::new(|line: &str| eprintln!("{line}")));
    configure(&mut config);
    let outcome = tokio::time::timeout(RUN_DEADLINE, run(config))
        .await
        .expect("the run ends in time")
        .expect("the run completes");
    if outcome.verdict.exit_code() != 0 {
        let kept = dir.keep();
        panic!(
            "{name}: expected a valid history; see {}\n{}",
            kept.display(),
            outcome.summary
        );
    }
    assert!(
        outcome.counts.ok > 100,
        "{name}: the cluster barely served:\n{}",
        outcome.summary
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_under_partitions_are_valid() {
    assert_valid_run("partition", |c| {
        c.workload = WorkloadKind::Register;
        c.nemeses = vec![NemesisKind::Partition];
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_under_kills_loses_no_acknowledged_add() {
    assert_valid_run("set-kill", |c| {
        c.workload = WorkloadKind::Set;
        c.nemeses = vec![NemesisKind::Kill];
        c.time_limit = Duration::from_secs(10);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_and_re_added_members_lose_nothing() {
    assert_valid_run("member", |c| {
        c.workload = WorkloadKind::Register;
        c.nemeses = vec![NemesisKind::Member];
    })
    .await;
}

/// Holders stall past their lease (one critical section in five here);
/// without the fence their writes land after the next holder's, which
/// both the mutex history and the fencing check must report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfenced_lock_writes_are_caught() {
    let dir = tempfile::Builder::new()
        .prefix("concord-check-unfenced-")
        .tempdir()
        .expect("temp dir");
    let mut config = RunConfig::new(env!("CARGO_BIN_EXE_concord"), dir.path().join("out"));
    config.time_limit = Duration::from_secs(10);
    config.seed = 3;
    config.workload = WorkloadKind::Lock;
    config.lock.fenced = false;
    config.lock.stall_percent = 20;
    let outcome = tokio::time::timeout(RUN_DEADLINE, run(config))
        .await
        .expect("the run ends in time")
        .expect("the run completes");
    let lock = outcome.lock.as_ref().expect("lock summary");
    if outcome.verdict != Verdict::NotLinearizable || lock.violations.is_empty() {
        let kept = dir.keep();
        panic!(
            "stale writes went unnoticed; see {}\n{}",
            kept.display(),
            outcome.summary
        );
    }
    assert!(lock.stalls > 0);
    assert!(outcome.summary.contains("STALE TOKENS ACCEPTED"));
    let mutex = outcome
        .reports
        .iter()
        .find(|c| c.what == "locks")
        .expect("the mutex history was checked");
    assert_eq!(
        mutex.report.verdict,
        Verdict::NotLinearizable,
        "two holders at once should show in the mutex history:\n{}",
        outcome.summary
    );
    // The mutex history on disk is the one judged: re-checking it agrees.
    let recheck = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["check-history", "--format", "jsonl"])
        .arg(dir.path().join("out/history.jsonl"))
        .output()
        .expect("check-history runs");
    assert_eq!(recheck.status.code(), Some(1));
}
