//! # One run of `concord check`: start, load, break, heal, read, check, write
//!
//! [`run`] is the whole test:
//! 1. start an N-member cluster under `OUT/cluster` and wait for a leader;
//! 2. run the workload's clients and every nemesis loop for the time limit;
//! 3. heal everything ([`crate::Cluster::heal_all`]), wait for the cluster
//!    to settle (bounded by [`SETTLE_TIMEOUT`]), run the final reads;
//! 4. stop the cluster, check the history with `concord-check` (the kv
//!    register model; for `set`, the adds and the final read expressed in
//!    that model) and write the output folder:
//!
//! ```text
//! OUT/history.jsonl   every operation, JSON lines (`concord check-history --format jsonl`)
//! OUT/nemesis.log     what the nemeses did, when (seconds on the history's clock)
//! OUT/verdict.txt     the verdict on the first line, then the details
//! OUT/report.html     the timeline of the smallest failing piece, or a summary
//! OUT/cluster/        each member's data directory and log
//! ```
//!
//! Invariants:
//! 1. The run is bounded: time limit + nemesis healing + settle + final
//!    reads + the checker's budget, each with its own named bound.
//! 2. The verdict is the checker's, except that a `set` run whose final
//!    read never succeeded is `unknown` (nothing was checked), never
//!    `linearizable`.
//! 3. The output folder must be new or empty, so a folder never mixes two
//!    runs' histories and data directories.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_check::{
    check, render_timeline_html, CheckOptions, CheckReport, JsonlWriter, KvCasRegisterModel,
    ModelKind, Outcome, RegisterInput, Verdict,
};

use crate::cluster::{Cluster, ClusterSpec};
use crate::error::HarnessError;
use crate::nemesis::{run_nemesis, NemesisKind, NemesisLog};
use crate::report;
use crate::workload::{
    final_register_reads, final_set_read, finish_set, run_register, run_set, Clock, ErrorTally,
    RegisterOp, SetSummary, WorkloadConfig, WorkloadKind, OP_TIMEOUT_DEFAULT, STAGGER_MEAN,
};

/// How long the healed cluster gets to agree on a leader and catch up
/// before the final reads (which retry anyway). Restarted members replay
/// a few seconds of log; 20 s is generous on a loaded machine.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Default time budget of the checker. Histories of a 30-second run are
/// decided in well under a second; a budget runs out only on a history far
/// larger or far stranger than the harness produces, and then the verdict
/// is `unknown`.
pub const CHECK_BUDGET_DEFAULT: Duration = Duration::from_secs(60);

/// The longest run accepted (`--time-limit`), so a typo cannot start an
/// hour-long test.
pub const TIME_LIMIT_MAX: Duration = Duration::from_secs(3600);

/// The most clients accepted.
pub const CLIENTS_MAX: usize = 256;

/// Called with one line of progress at each step of a run.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// What to run.
#[derive(Clone)]
pub struct RunConfig {
    /// Members (3 or 5 usually).
    pub nodes: usize,
    /// The workload.
    pub workload: WorkloadKind,
    /// Nemeses (empty: none).
    pub nemeses: Vec<NemesisKind>,
    /// How long clients run and nemeses act.
    pub time_limit: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Serializable (local) reads instead of linearizable ones.
    pub serializable_reads: bool,
    /// The output folder (new or empty).
    pub out: PathBuf,
    /// The `concord` binary members run.
    pub concord_bin: PathBuf,
    /// Seed of every random choice.
    pub seed: u64,
    /// Per-operation deadline.
    pub op_timeout: Duration,
    /// Mean pause between a client's operations.
    pub stagger_mean: Duration,
    /// The checker's time budget.
    pub check_budget: Duration,
    /// Where progress lines go (none: silent).
    pub progress: Option<Progress>,
}

impl RunConfig {
    /// The defaults: 3 members, register, no nemesis, 30 s, 2 clients per
    /// member, linearizable reads.
    pub fn new(concord_bin: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            nodes: 3,
            workload: WorkloadKind::Register,
            nemeses: Vec::new(),
            time_limit: Duration::from_secs(30),
            clients: 6,
            serializable_reads: false,
            out: out.into(),
            concord_bin: concord_bin.into(),
            seed: 0,
            op_timeout: OP_TIMEOUT_DEFAULT,
            stagger_mean: STAGGER_MEAN,
            check_budget: CHECK_BUDGET_DEFAULT,
            progress: None,
        }
    }

    /// Checks ranges before anything starts.
    pub fn validate(&self) -> Result<(), HarnessError> {
        let bad = |m: String| Err(HarnessError::Config(m));
        if self.nodes == 0 || self.nodes > crate::cluster::NODES_MAX {
            return bad(format!(
                "--nodes must be between 1 and {}, not {}",
                crate::cluster::NODES_MAX,
                self.nodes
            ));
        }
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return bad(format!("--clients must be between 1 and {CLIENTS_MAX}"));
        }
        if self.time_limit.is_zero() || self.time_limit > TIME_LIMIT_MAX {
            return bad(format!(
                "--time-limit must be between 1 and {} seconds",
                TIME_LIMIT_MAX.as_secs()
            ));
        }
        if self.op_timeout.is_zero() {
            return bad("the operation timeout must be positive".into());
        }
        Ok(())
    }

    fn say(&self, line: &str) {
        if let Some(progress) = &self.progress {
            progress(line);
        }
    }

    /// One line naming the run's settings.
    pub fn describe(&self) -> String {
        let nemeses = if self.nemeses.is_empty() {
            "none".to_owned()
        } else {
            self.nemeses
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let reads = match (self.workload, self.serializable_reads) {
            (WorkloadKind::Register, true) => " (serializable reads)",
            (WorkloadKind::Register, false) => " (linearizable reads)",
            (WorkloadKind::Set, _) => "",
        };
        format!(
            "workload {}{reads}, nemesis {nemeses}, {} nodes, {} clients, {} s, seed {}",
            self.workload,
            self.nodes,
            self.clients,
            self.time_limit.as_secs_f64(),
            self.seed
        )
    }
}

/// Operations by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Completed.
    pub ok: usize,
    /// Definitely not applied.
    pub fail: usize,
    /// Unknown.
    pub info: usize,
    /// Reads among them.
    pub reads: usize,
    /// Writes among them.
    pub writes: usize,
    /// Compare-and-sets among them.
    pub cas: usize,
}

impl OpCounts {
    fn of(history: &[RegisterOp]) -> Self {
        let mut counts = OpCounts::default();
        for op in history {
            match op.outcome {
                Outcome::Ok(_) => counts.ok += 1,
                Outcome::Fail => counts.fail += 1,
                Outcome::Info => counts.info += 1,
            }
            match op.input.op {
                RegisterInput::Read => counts.reads += 1,
                RegisterInput::Write { .. } => counts.writes += 1,
                RegisterInput::Cas { .. } => counts.cas += 1,
            }
        }
        counts
    }

    /// All operations.
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.info
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The verdict (invariant 2).
    pub verdict: Verdict,
    /// The output folder.
    pub out: PathBuf,
    /// The content of `verdict.txt`.
    pub summary: String,
    /// Operations by outcome.
    pub counts: OpCounts,
    /// The set checker's findings (set workload only).
    pub set: Option<SetSummary>,
    /// The checker's report.
    pub report: CheckReport,
    /// Why operations failed or ended unknown.
    pub errors: ErrorTally,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

fn prepare_out(out: &Path) -> Result<(), HarnessError> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out)
            .map_err(|e| HarnessError::io(format!("reading {}", out.display()), e))?;
        if entries.next().is_some() {
            return Err(HarnessError::Config(format!(
                "output folder {} is not empty; choose a new --out",
                out.display()
            )));
        }
    }
    std::fs::create_dir_all(out)
        .map_err(|e| HarnessError::io(format!("creating {}", out.display()), e))
}

fn write_file(path: &Path, contents: &str) -> Result<(), HarnessError> {
    std::fs::write(path, contents)
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
}

/// Runs the test described by `config`. See the module docs.
pub async fn run(config: RunConfig) -> Result<RunOutcome, HarnessError> {
    let started = Instant::now();
    config.validate()?;
    prepare_out(&config.out)?;
    config.say(&format!("concord check: {}", config.describe()));

    let spec = ClusterSpec::new(
        config.nodes,
        &config.concord_bin,
        config.out.join("cluster"),
    );
    let cluster = Cluster::start(spec).await?;
    let urls = cluster.client_urls();
    config.say(&format!(
        "cluster of {} up in {:.1} s; clients run for {} s",
        config.nodes,
        started.elapsed().as_secs_f64(),
        config.time_limit.as_secs_f64()
    ));

    let clock = Clock::new();
    let log = Arc::new(NemesisLog::new(clock));
    log.record(None, "note", format!("cluster up: {}", config.describe()));
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let end_ns = u64::try_from(config.time_limit.as_nanos()).unwrap_or(u64::MAX);
    let nemesis_tasks: Vec<_> = config
        .nemeses
        .iter()
        .map(|&kind| {
            tokio::spawn(run_nemesis(
                kind,
                Arc::clone(&cluster),
                clock,
                end_ns,
                config.seed,
                Arc::clone(&log),
            ))
        })
        .collect();

    let workload = WorkloadConfig {
        clients: config.clients,
        time_limit: config.time_limit,
        serializable_reads: config.serializable_reads,
        op_timeout: config.op_timeout,
        stagger_mean: config.stagger_mean,
        seed: config.seed,
    };
    let recorded = match config.workload {
        WorkloadKind::Register => run_register(&urls, &workload, clock).await?,
        WorkloadKind::Set => run_set(&urls, &workload, clock).await?,
    };
    let errors = recorded.errors;
    let mut history = recorded.history;
    for task in nemesis_tasks {
        // A nemesis loop returns by itself at the time limit (nemesis
        // invariant 1); a join error is a harness bug, already logged by
        // tokio.
        let _ = task.await;
    }
    log.record(
        None,
        "note",
        format!("workload done: {} operations", history.len()),
    );

    config.say("healing every fault and waiting for the cluster to settle");
    {
        let mut cluster = cluster.lock().await;
        log.record(
            None,
            "start",
            "heal all: resume, restart, clear partitions and timer skew",
        );
        for problem in cluster.heal_all().await {
            log.record(None, "note", problem);
        }
        let settled = cluster.wait_settled(SETTLE_TIMEOUT).await;
        log.record(
            None,
            "end",
            if settled {
                "cluster settled: one leader, every member applied the same commit index".to_owned()
            } else {
                format!("cluster did not settle within {SETTLE_TIMEOUT:?}; final reads retry")
            },
        );
    }

    // Final reads use process ids above every client's.
    let final_process = history.iter().map(|op| op.process.0).max().unwrap_or(0) + 1;
    let set_summary = match config.workload {
        WorkloadKind::Register => {
            let reads =
                final_register_reads(&urls, clock, final_process, config.op_timeout).await?;
            let ok = reads
                .iter()
                .filter(|op| matches!(op.outcome, Outcome::Ok(_)))
                .count();
            log.record(None, "note", format!("final reads: {ok} keys read"));
            history.extend(reads);
            None
        }
        WorkloadKind::Set => {
            let read = final_set_read(&urls, clock, config.op_timeout).await;
            log.record(
                None,
                "note",
                match &read {
                    Some(r) => format!("final read: {} elements", r.elements.len()),
                    None => "final read failed on every attempt".to_owned(),
                },
            );
            Some(finish_set(&mut history, read.as_ref(), final_process))
        }
    };
    // Stop the members before checking: the checker wants the CPU.
    drop(cluster);

    history.sort_by_key(|op| (op.call, op.process));
    let counts = OpCounts::of(&history);
    config.say(&format!(
        "checking {} operations ({} ok, {} fail, {} info)",
        counts.total(),
        counts.ok,
        counts.fail,
        counts.info
    ));
    let options = CheckOptions::with_budget(config.check_budget);
    let to_check = history.clone();
    let report = tokio::task::spawn_blocking(move || {
        check(&KvCasRegisterModel::default(), &to_check, &options)
    })
    .await
    .map_err(|e| HarnessError::Config(format!("checker thread failed: {e}")))??;

    let verdict = match &set_summary {
        Some(set) if !set.final_read => Verdict::Unknown,
        _ => report.verdict,
    };
    let elapsed = started.elapsed();
    let facts = report::Facts {
        config: &config,
        verdict,
        history: &history,
        counts: &counts,
        errors: &errors,
        report: &report,
        set: set_summary.as_ref(),
        log: &log,
        elapsed,
    };
    let summary = report::verdict_text(&facts);
    let section = report::summary_section(&facts);
    let file = std::fs::File::create(config.out.join("history.jsonl"))
        .map_err(|e| HarnessError::io("creating history.jsonl", e))?;
    let mut writer = JsonlWriter::new(std::io::BufWriter::new(file), ModelKind::KvCasRegister)
        .map_err(|e| HarnessError::io("writing history.jsonl", e))?;
    for op in &history {
        writer
            .write_op(op)
            .map_err(|e| HarnessError::io("writing history.jsonl", e))?;
    }
    writer
        .finish()
        .map_err(|e| HarnessError::io("writing history.jsonl", e))?;
    write_file(&config.out.join("nemesis.log"), &log.to_text())?;
    write_file(&config.out.join("verdict.txt"), &summary)?;
    let html = match &report.explanation {
        // The run's summary (with the failing operation in short) first,
        // then the checker's timeline of the whole failing piece.
        Some(explanation) => {
            let timeline = render_timeline_html(explanation);
            let body = timeline.find("<body>").map(|at| at + "<body>".len());
            match (body, timeline.rfind("</body>")) {
                (Some(open), Some(close)) if open <= close => format!(
                    "{}\n{section}<hr>\n{}{}",
                    &timeline[..open],
                    &timeline[open..close],
                    &timeline[close..]
                ),
                _ => timeline,
            }
        }
        None => report::page(&format!("concord check: {verdict}"), &section),
    };
    write_file(&config.out.join("report.html"), &html)?;
    config.say(&format!(
        "{verdict} ({} in {:.1} s)",
        config.out.display(),
        elapsed.as_secs_f64()
    ));
    Ok(RunOutcome {
        verdict,
        out: config.out.clone(),
        summary,
        counts,
        set: set_summary,
        report,
        errors,
        elapsed,
    })
}
