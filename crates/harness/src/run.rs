//! # One run of `concord check`: start, load, break, heal, read, check, write
//!
//! [`run`] is the whole test:
//! 1. start an N-member cluster under `OUT/cluster` and wait for a leader;
//! 2. run the workload's clients and every nemesis loop for the time limit;
//! 3. heal everything ([`crate::Cluster::heal_all`]), wait for the cluster
//!    to settle (bounded by [`SETTLE_TIMEOUT`]), run the final reads;
//! 4. stop the cluster, check the history with `concord-check` (the kv
//!    register model; for `set`, the adds and the final read expressed in
//!    that model; for `lock`, the mutex history with the kv mutex model,
//!    the resources with the kv register model, and the fencing check of
//!    [`crate::lock`]) and write the output folder:
//!
//! ```text
//! OUT/history.jsonl   every operation, JSON lines (`concord check-history --format jsonl`)
//! OUT/resource.jsonl  lock: the resources' reads and fenced writes (same format)
//! OUT/fenced.jsonl    lock: every fenced write with its token and revision
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
//!    `linearizable`; a `lock` run's is the worst of its three checks.
//! 3. The output folder must be new or empty, so a folder never mixes two
//!    runs' histories and data directories.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_check::{
    check, render_timeline_html, CheckOptions, CheckReport, JsonlWriter, Keyed, KvCasRegisterModel,
    Model, ModelKind, MutexInput, MutexModel, Operation, Outcome, RegisterInput, Verdict,
};

use crate::cluster::{Cluster, ClusterSpec};
use crate::error::HarnessError;
use crate::lock::{
    check_fencing, final_resource_reads, run_lock, FenceOutcome, FenceViolation, LockOptions,
    LockRecorded, MutexOp,
};
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
    /// The lock workload's knobs (fencing on or off, stalls).
    pub lock: LockOptions,
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
            lock: LockOptions::default(),
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
            (WorkloadKind::Lock, _) if !self.lock.fenced => " (UNFENCED writes)",
            (WorkloadKind::Lock, _) => "",
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
    /// Writes among them (for `lock`: the fenced writes).
    pub writes: usize,
    /// Compare-and-sets among them.
    pub cas: usize,
    /// Lock acquisitions among them (`lock` only).
    pub acquires: usize,
    /// Lock releases among them (`lock` only).
    pub releases: usize,
}

impl OpCounts {
    fn count<O>(&mut self, outcome: &Outcome<O>) {
        match outcome {
            Outcome::Ok(_) => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Info => self.info += 1,
        }
    }

    fn add_registers(&mut self, history: &[RegisterOp]) {
        for op in history {
            self.count(&op.outcome);
            match op.input.op {
                RegisterInput::Read => self.reads += 1,
                RegisterInput::Write { .. } => self.writes += 1,
                RegisterInput::Cas { .. } => self.cas += 1,
            }
        }
    }

    fn add_mutex(&mut self, history: &[MutexOp]) {
        for op in history {
            self.count(&op.outcome);
            match op.input.op {
                MutexInput::Acquire => self.acquires += 1,
                MutexInput::Release { .. } => self.releases += 1,
            }
        }
    }

    /// All operations.
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.info
    }
}

/// One history's check: what was checked and the checker's report.
#[derive(Debug)]
pub struct Checked {
    /// What the history is (`registers`, `locks`, `resources`).
    pub what: &'static str,
    /// The checker's report.
    pub report: CheckReport,
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
    /// The lock checks' findings (lock workload only).
    pub lock: Option<LockSummary>,
    /// The checker's reports, one per history checked.
    pub reports: Vec<Checked>,
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

fn write_jsonl<I: serde::Serialize, O: serde::Serialize>(
    path: &Path,
    model: ModelKind,
    history: &[Operation<I, O>],
) -> Result<(), HarnessError> {
    let what = || format!("writing {}", path.display());
    let file = std::fs::File::create(path).map_err(|e| HarnessError::io(what(), e))?;
    let mut writer = JsonlWriter::new(std::io::BufWriter::new(file), model)
        .map_err(|e| HarnessError::io(what(), e))?;
    for op in history {
        writer
            .write_op(op)
            .map_err(|e| HarnessError::io(what(), e))?;
    }
    writer.finish().map_err(|e| HarnessError::io(what(), e))?;
    Ok(())
}

/// Checks `history` against `model` on a blocking thread (the checker
/// wants the CPU; the runtime keeps serving signals).
async fn check_blocking<M>(
    model: M,
    history: Vec<Operation<M::Input, M::Output>>,
    budget: Duration,
) -> Result<CheckReport, HarnessError>
where
    M: Model + Send + 'static,
    M::Input: 'static,
    M::Output: 'static,
{
    let options = CheckOptions::with_budget(budget);
    tokio::task::spawn_blocking(move || check(&model, &history, &options))
        .await
        .map_err(|e| HarnessError::Config(format!("checker thread failed: {e}")))?
        .map_err(HarnessError::from)
}

/// The worst of several verdicts: a violation anywhere is a violation,
/// then anything undecided leaves the whole undecided.
fn worst(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut result = Verdict::Linearizable;
    for v in verdicts {
        match v {
            Verdict::NotLinearizable => return Verdict::NotLinearizable,
            Verdict::Unknown => result = Verdict::Unknown,
            Verdict::Linearizable => {}
        }
    }
    result
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
    let mut registers: Vec<RegisterOp> = Vec::new();
    let mut lock_recorded: Option<LockRecorded> = None;
    let errors = match config.workload {
        WorkloadKind::Register | WorkloadKind::Set => {
            let recorded = match config.workload {
                WorkloadKind::Set => run_set(&urls, &workload, clock).await?,
                _ => run_register(&urls, &workload, clock).await?,
            };
            registers = recorded.history;
            recorded.errors
        }
        WorkloadKind::Lock => {
            let mut recorded = run_lock(&urls, &workload, config.lock, clock).await?;
            let errors = std::mem::take(&mut recorded.errors);
            lock_recorded = Some(recorded);
            errors
        }
    };
    for task in nemesis_tasks {
        // A nemesis loop returns by itself at the time limit (nemesis
        // invariant 1); a join error is a harness bug, already logged by
        // tokio.
        let _ = task.await;
    }
    let recorded_ops = registers.len()
        + lock_recorded
            .as_ref()
            .map_or(0, |l| l.mutex.len() + l.resource.len());
    log.record(
        None,
        "note",
        format!("workload done: {recorded_ops} operations"),
    );

    config.say("healing every fault and waiting for the cluster to settle");
    {
        let mut cluster = cluster.lock().await;
        log.record(
            None,
            "start",
            "heal all: resume, restart, re-add removed members, clear partitions and timer skew",
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
    let mut set_summary = None;
    match config.workload {
        WorkloadKind::Register => {
            let final_process = registers.iter().map(|op| op.process.0).max().unwrap_or(0) + 1;
            let reads =
                final_register_reads(&urls, clock, final_process, config.op_timeout).await?;
            let ok = reads
                .iter()
                .filter(|op| matches!(op.outcome, Outcome::Ok(_)))
                .count();
            log.record(None, "note", format!("final reads: {ok} keys read"));
            registers.extend(reads);
        }
        WorkloadKind::Set => {
            let final_process = registers.iter().map(|op| op.process.0).max().unwrap_or(0) + 1;
            let read = final_set_read(&urls, clock, config.op_timeout).await;
            log.record(
                None,
                "note",
                match &read {
                    Some(r) => format!("final read: {} elements", r.elements.len()),
                    None => "final read failed on every attempt".to_owned(),
                },
            );
            set_summary = Some(finish_set(&mut registers, read.as_ref(), final_process));
        }
        WorkloadKind::Lock => {
            if let Some(recorded) = lock_recorded.as_mut() {
                let final_process = recorded
                    .resource
                    .iter()
                    .map(|op| op.process.0)
                    .max()
                    .unwrap_or(0)
                    + 1;
                let reads =
                    final_resource_reads(&urls, clock, final_process, config.op_timeout).await?;
                let ok = reads
                    .iter()
                    .filter(|op| matches!(op.outcome, Outcome::Ok(_)))
                    .count();
                log.record(
                    None,
                    "note",
                    format!("final reads: {ok} resource keys read"),
                );
                recorded.resource.extend(reads);
            }
        }
    }
    // Stop the members before checking: the checker wants the CPU.
    drop(cluster);

    let mut counts = OpCounts::default();
    let mut marks;
    let mut reports = Vec::new();
    let mut lock_summary = None;
    let verdict = match lock_recorded.as_mut() {
        None => {
            registers.sort_by_key(|op| (op.call, op.process));
            counts.add_registers(&registers);
            say_checking(&config, &counts);
            marks = report::marks(&registers);
            let report = check_blocking(
                KvCasRegisterModel::default(),
                registers.clone(),
                config.check_budget,
            )
            .await?;
            let verdict = match &set_summary {
                Some(set) if !set.final_read => Verdict::Unknown,
                _ => report.verdict,
            };
            write_jsonl(
                &config.out.join("history.jsonl"),
                ModelKind::KvCasRegister,
                &registers,
            )?;
            reports.push(Checked {
                what: "registers",
                report,
            });
            verdict
        }
        Some(recorded) => {
            recorded.mutex.sort_by_key(|op| (op.call, op.process));
            recorded.resource.sort_by_key(|op| (op.call, op.process));
            recorded.fenced.sort_by_key(|w| (w.call, w.process));
            counts.add_mutex(&recorded.mutex);
            counts.add_registers(&recorded.resource);
            say_checking(&config, &counts);
            marks = report::marks(&recorded.mutex);
            marks.extend(report::marks(&recorded.resource));
            let violations = check_fencing(&recorded.fenced);
            let mutex_report = check_blocking(
                Keyed::new(MutexModel),
                recorded.mutex.clone(),
                config.check_budget,
            )
            .await?;
            let resource_report = check_blocking(
                KvCasRegisterModel::default(),
                recorded.resource.clone(),
                config.check_budget,
            )
            .await?;
            let summary = LockSummary::new(recorded, violations);
            let fencing = if summary.violations.is_empty() {
                Verdict::Linearizable
            } else {
                Verdict::NotLinearizable
            };
            let verdict = worst([mutex_report.verdict, fencing, resource_report.verdict]);
            write_jsonl(
                &config.out.join("history.jsonl"),
                ModelKind::KvMutex,
                &recorded.mutex,
            )?;
            write_jsonl(
                &config.out.join("resource.jsonl"),
                ModelKind::KvCasRegister,
                &recorded.resource,
            )?;
            let fenced: String = recorded
                .fenced
                .iter()
                .filter_map(|w| serde_json::to_string(w).ok())
                .map(|line| line + "\n")
                .collect();
            write_file(&config.out.join("fenced.jsonl"), &fenced)?;
            reports.push(Checked {
                what: "locks",
                report: mutex_report,
            });
            reports.push(Checked {
                what: "resources",
                report: resource_report,
            });
            lock_summary = Some(summary);
            verdict
        }
    };
    marks.sort_by_key(|m| m.call);

    let elapsed = started.elapsed();
    let facts = report::Facts {
        config: &config,
        verdict,
        marks: &marks,
        counts: &counts,
        errors: &errors,
        reports: &reports,
        set: set_summary.as_ref(),
        lock: lock_summary.as_ref(),
        log: &log,
        elapsed,
    };
    let summary = report::verdict_text(&facts);
    let section = report::summary_section(&facts);
    write_file(&config.out.join("nemesis.log"), &log.to_text())?;
    write_file(&config.out.join("verdict.txt"), &summary)?;
    let explanation = reports.iter().find_map(|c| c.report.explanation.as_ref());
    let html = match explanation {
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
        lock: lock_summary,
        reports,
        errors,
        elapsed,
    })
}

fn say_checking(config: &RunConfig, counts: &OpCounts) {
    config.say(&format!(
        "checking {} operations ({} ok, {} fail, {} info)",
        counts.total(),
        counts.ok,
        counts.fail,
        counts.info
    ));
}

/// What the lock workload's checks found beyond the checker's reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockSummary {
    /// Acquisitions with a known token.
    pub acquired: usize,
    /// Critical sections in which the holder stalled past its lease.
    pub stalls: usize,
    /// Fenced writes that applied.
    pub applied: usize,
    /// Fenced writes refused by the fence (the owner key was gone).
    pub refused: usize,
    /// Fenced writes refused before the log.
    pub failed: usize,
    /// Fenced writes of unknown outcome.
    pub unknown: usize,
    /// Stale tokens accepted.
    pub violations: Vec<FenceViolation>,
}

impl LockSummary {
    fn new(recorded: &LockRecorded, violations: Vec<FenceViolation>) -> Self {
        let mut summary = LockSummary {
            acquired: recorded
                .mutex
                .iter()
                .filter(|op| {
                    op.input.op == MutexInput::Acquire && matches!(op.outcome, Outcome::Ok(_))
                })
                .count(),
            stalls: recorded.stalls,
            violations,
            ..LockSummary::default()
        };
        for w in &recorded.fenced {
            match w.outcome {
                FenceOutcome::Applied => summary.applied += 1,
                FenceOutcome::Refused => summary.refused += 1,
                FenceOutcome::Failed => summary.failed += 1,
                FenceOutcome::Unknown => summary.unknown += 1,
            }
        }
        summary
    }
}
