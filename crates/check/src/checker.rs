//! # The checker: validate, partition, search in parallel, report
//!
//! [`check`] is the gateway every history goes through, whatever its source:
//! it validates the operations (the invariants of [`crate::history`]), drops
//! what cannot constrain a linearization (`Fail` operations; `Info`
//! operations that never change the state), splits the rest by
//! [`Model::partition_key`] (P-compositionality), and decides each partition
//! with the Wing-Gong / Lowe search.
//!
//! Scheduling: partitions go into one queue, smallest first. Worker threads
//! (std, scoped; at most one per core) take a partition, run its search for
//! a slice of [`SLICE_STEPS`] steps, and put it back at the end of the queue
//! if it is not decided. One hard key thus gets its share of the cores but
//! cannot hold up the easy ones; when the budget runs out, whatever is still
//! undecided is [`Verdict::Unknown`].
//!
//! Invariants:
//! 1. The overall verdict is `NotLinearizable` if any partition is (a
//!    violation on one key is a violation of the whole history), else
//!    `Unknown` if any partition is, else `Linearizable`.
//! 2. A verdict is never a guess: `Unknown` carries the reason.
//! 3. Memory for all searches together stays within
//!    [`CheckOptions::memo_bytes_max`] (see the `wgl` module, invariant 5).
//! 4. The explanation, when present, describes a sub-history that the
//!    search itself proved non-linearizable.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::CheckError;
use crate::explain::{self, Explanation};
use crate::history::{Operation, Outcome};
use crate::model::Model;
use crate::wgl::{MemoryBudget, PreparedOp, Progress, Search, SearchOutcome};

/// Steps one partition runs before going back to the queue. A step is a
/// few dozen nanoseconds to a microsecond, so a slice is a few milliseconds:
/// long enough that switching costs nothing, short enough that a waiting
/// key starts promptly.
pub const SLICE_STEPS: u64 = 1 << 16;

/// Default time budget for deciding a history. The histories this crate is
/// validated on take milliseconds; a minute leaves room for histories a
/// hundred times larger before answering `Unknown`.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

/// Default time for shrinking a failing partition. Each shrinking attempt
/// is a full search of a sub-history; a few seconds covers the ~100
/// attempts a 100-operation partition needs.
pub const DEFAULT_EXPLAIN_BUDGET: Duration = Duration::from_secs(5);

/// Default memory for all memo tables together. The machines are 24 GiB;
/// 2 GiB leaves room for the rest of a test run. A search that needs more
/// is `Unknown` (memory), not an out-of-memory abort.
pub const DEFAULT_MEMO_BYTES_MAX: usize = 2 << 30;

/// Why a partition has no verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownReason {
    /// The time budget ran out.
    Timeout,
    /// The memo hit [`CheckOptions::memo_bytes_max`].
    MemoryLimit,
    /// Stopped because another partition was found non-linearizable and
    /// [`CheckOptions::stop_on_first_violation`] was set.
    Cancelled,
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnknownReason::Timeout => "time budget exhausted",
            UnknownReason::MemoryLimit => "memory budget exhausted",
            UnknownReason::Cancelled => "cancelled after a violation elsewhere",
        })
    }
}

/// The answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Some order consistent with real time is a legal sequential execution.
    Linearizable,
    /// No such order exists.
    NotLinearizable,
    /// Not decided within the budget.
    Unknown,
}

impl Verdict {
    /// The exit code the CLI uses: 0 linearizable, 1 not, 2 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Linearizable => 0,
            Verdict::NotLinearizable => 1,
            Verdict::Unknown => 2,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "not linearizable",
            Verdict::Unknown => "unknown",
        })
    }
}

/// Knobs for [`check`].
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Time for deciding every partition (wall clock, shared).
    pub budget: Duration,
    /// Extra time for shrinking a failing partition into an explanation;
    /// zero skips the explanation.
    pub explain_budget: Duration,
    /// Check per key (P-compositionality). `false` checks the whole
    /// history against the model at once: slower, same verdict; useful to
    /// test the partitioning itself.
    pub partition: bool,
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// Memory for all memo tables together (see [`DEFAULT_MEMO_BYTES_MAX`]).
    pub memo_bytes_max: usize,
    /// Stop the other partitions once one is found non-linearizable (their
    /// verdicts become `Unknown`, reason `Cancelled`). Faster when only the
    /// overall verdict matters.
    pub stop_on_first_violation: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            budget: DEFAULT_BUDGET,
            explain_budget: DEFAULT_EXPLAIN_BUDGET,
            partition: true,
            threads: 0,
            memo_bytes_max: DEFAULT_MEMO_BYTES_MAX,
            stop_on_first_violation: false,
        }
    }
}

impl CheckOptions {
    /// Defaults, with this time budget for the decision.
    pub fn with_budget(budget: Duration) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }
}

/// The verdict on one partition.
#[derive(Clone, Debug, Serialize)]
pub struct KeyReport {
    /// The key; `None` for an unpartitioned history.
    pub key: Option<String>,
    /// Operations searched (after dropping `Fail`s and pure `Info`s).
    pub op_count: usize,
    /// The verdict on this key.
    pub verdict: Verdict,
    /// Why the verdict is `Unknown`.
    pub unknown_reason: Option<UnknownReason>,
    /// The most operations the search linearized at once (equals
    /// `op_count` when linearizable).
    pub deepest: usize,
    /// Time the search ran (summed over its slices).
    pub elapsed: Duration,
}

/// The verdict on a history, per key, and why.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// The model's name.
    pub model: String,
    /// The overall verdict (invariant 1).
    pub verdict: Verdict,
    /// Operations in the history, as given.
    pub op_count: usize,
    /// One report per partition, ordered by key.
    pub keys: Vec<KeyReport>,
    /// Time to decide (excludes the explanation).
    pub elapsed: Duration,
    /// Time spent explaining.
    pub explain_elapsed: Duration,
    /// A small non-linearizable sub-history, if not linearizable and asked.
    pub explanation: Option<Explanation>,
}

impl CheckReport {
    /// The keys with this verdict.
    pub fn keys_with(&self, verdict: Verdict) -> impl Iterator<Item = &KeyReport> {
        self.keys.iter().filter(move |k| k.verdict == verdict)
    }
}

/// One partition: its key and the history indices of its operations.
#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) key: Option<String>,
    pub(crate) ops: Vec<usize>,
}

/// Checks `history` against `model`. Errors only on malformed operations;
/// every well-formed history gets a verdict.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    options: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    let started = Instant::now();
    let deadline = deadline_after(started, options.budget);
    validate(model, history)?;
    let partitions = partition(model, history, options.partition);
    let budget = MemoryBudget::new(options.memo_bytes_max);
    let results = run_partitions(model, history, &partitions, deadline, options, &budget);

    let mut keys: Vec<KeyReport> = partitions
        .iter()
        .zip(results)
        .map(|(part, result)| {
            let (verdict, unknown_reason) = match result.outcome {
                SearchOutcome::Linearizable { .. } => (Verdict::Linearizable, None),
                SearchOutcome::NotLinearizable => (Verdict::NotLinearizable, None),
                SearchOutcome::Unknown(reason) => (Verdict::Unknown, Some(reason)),
            };
            KeyReport {
                key: part.key.clone(),
                op_count: part.ops.len(),
                verdict,
                unknown_reason,
                deepest: result.deepest,
                elapsed: result.elapsed,
            }
        })
        .collect();
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    let verdict = overall(keys.iter().map(|k| k.verdict));
    let elapsed = started.elapsed();

    let explain_started = Instant::now();
    let explanation = if verdict == Verdict::NotLinearizable && !options.explain_budget.is_zero() {
        // The smallest failing partition gives the smallest explanation.
        partitions
            .iter()
            .filter(|p| {
                keys.iter()
                    .any(|k| k.key == p.key && k.verdict == Verdict::NotLinearizable)
            })
            .min_by_key(|p| p.ops.len())
            .and_then(|part| {
                explain::explain(
                    model,
                    history,
                    part,
                    deadline_after(explain_started, options.explain_budget),
                    &budget,
                )
            })
    } else {
        None
    };

    Ok(CheckReport {
        model: model.name(),
        verdict,
        op_count: history.len(),
        keys,
        elapsed,
        explain_elapsed: explain_started.elapsed(),
        explanation,
    })
}

/// `start + budget`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(start: Instant, budget: Duration) -> Instant {
    // A century is "never" for a test run, and fits every platform's Instant.
    const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start
        .checked_add(budget.min(NEVER))
        .or_else(|| start.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(start)
}

fn overall(verdicts: impl Iterator<Item = Verdict>) -> Verdict {
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

/// The gateway check of the history invariants (see [`crate::history`]).
fn validate<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
) -> Result<(), CheckError> {
    for (index, op) in history.iter().enumerate() {
        let invalid = |reason: String| CheckError::InvalidOperation { index, reason };
        if let Some(ret) = op.ret {
            if ret < op.call {
                return Err(invalid(format!(
                    "returns at {ret} before its call at {}",
                    op.call
                )));
            }
        }
        match &op.outcome {
            Outcome::Ok(output) => {
                if op.ret.is_none() {
                    return Err(invalid("`ok` without a return time".to_owned()));
                }
                if !model.fits(&op.input, output) {
                    return Err(invalid(format!(
                        "output `{output}` does not answer input `{}`",
                        op.input
                    )));
                }
            }
            Outcome::Fail => {
                if op.ret.is_none() {
                    return Err(invalid("`fail` without a return time".to_owned()));
                }
            }
            Outcome::Info => {}
        }
    }
    Ok(())
}

/// Whether the search must consider `op` at all.
pub(crate) fn is_relevant<M: Model>(model: &M, op: &Operation<M::Input, M::Output>) -> bool {
    match &op.outcome {
        Outcome::Ok(_) => true,
        // Definitely did not happen.
        Outcome::Fail => false,
        // May happen at any time or never; if it cannot change the state it
        // constrains nothing (model contract 3).
        Outcome::Info => !model.is_pure(&op.input, None),
    }
}

/// Splits the relevant operations by key (or not at all).
fn partition<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    by_key: bool,
) -> Vec<Partition> {
    let mut parts: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        if !is_relevant(model, op) {
            continue;
        }
        let key = if by_key {
            model.partition_key(&op.input)
        } else {
            None
        };
        parts.entry(key).or_default().push(index);
    }
    parts
        .into_iter()
        .map(|(key, ops)| Partition {
            key: key.map(str::to_owned),
            ops,
        })
        .collect()
}

/// The search input for a partition: every op as recorded (`Info` ops
/// complete at +infinity).
pub(crate) fn prepare<'h, M: Model>(
    history: &'h [Operation<M::Input, M::Output>],
    indices: &[usize],
) -> Vec<PreparedOp<'h, M::Input, M::Output>> {
    indices
        .iter()
        .map(|&i| {
            let op = &history[i];
            let (output, ret) = match &op.outcome {
                Outcome::Ok(output) => (Some(output), op.ret.map(|t| t.0)),
                Outcome::Fail | Outcome::Info => (None, None),
            };
            PreparedOp {
                input: &op.input,
                output,
                call: op.call.0,
                ret,
            }
        })
        .collect()
}

struct PartitionResult {
    outcome: SearchOutcome,
    deepest: usize,
    elapsed: Duration,
}

struct Job<'a, M: Model> {
    part: usize,
    search: Option<Search<'a, M>>,
    elapsed: Duration,
}

fn run_partitions<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    partitions: &[Partition],
    deadline: Instant,
    options: &CheckOptions,
    budget: &MemoryBudget,
) -> Vec<PartitionResult> {
    let mut order: Vec<usize> = (0..partitions.len()).collect();
    order.sort_by_key(|&i| partitions[i].ops.len());
    let queue: Mutex<VecDeque<Job<'_, M>>> = Mutex::new(
        order
            .into_iter()
            .map(|part| Job {
                part,
                search: None,
                elapsed: Duration::ZERO,
            })
            .collect(),
    );
    let results: Mutex<Vec<Option<PartitionResult>>> =
        Mutex::new((0..partitions.len()).map(|_| None).collect());
    let cancel = AtomicBool::new(false);
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match options.threads {
        0 => cores,
        n => n,
    }
    .clamp(1, partitions.len().max(1));

    let worker = || loop {
        // A poisoned lock means another worker panicked, which is a bug in
        // this crate; propagate it (the scope re-raises the panic).
        let Some(mut job) = queue.lock().expect("queue lock poisoned").pop_front() else {
            return;
        };
        let slice_started = Instant::now();
        let search = job.search.get_or_insert_with(|| {
            Search::new(
                model,
                prepare::<M>(history, &partitions[job.part].ops),
                budget,
            )
        });
        let progress = search.run(SLICE_STEPS, deadline, &cancel);
        job.elapsed += slice_started.elapsed();
        match progress {
            Progress::Suspended => queue.lock().expect("queue lock poisoned").push_back(job),
            Progress::Done(outcome) => {
                if outcome == SearchOutcome::NotLinearizable && options.stop_on_first_violation {
                    cancel.store(true, Ordering::Relaxed);
                }
                let deepest = match &outcome {
                    SearchOutcome::Linearizable { order } => order.len(),
                    _ => search.deepest(),
                };
                results.lock().expect("results lock poisoned")[job.part] = Some(PartitionResult {
                    outcome,
                    deepest,
                    elapsed: job.elapsed,
                });
            }
        }
    };
    if threads == 1 {
        worker();
    } else {
        thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(worker);
            }
        });
    }
    results
        .into_inner()
        .expect("results lock poisoned")
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| unreachable!("every queued partition is run until it is done"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RegisterInput as In, RegisterModel, RegisterOutput as Out};

    #[test]
    fn overall_verdict_prefers_violation_then_unknown() {
        use Verdict::*;
        assert_eq!(
            overall([Linearizable, Unknown, NotLinearizable].into_iter()),
            NotLinearizable
        );
        assert_eq!(overall([Linearizable, Unknown].into_iter()), Unknown);
        assert_eq!(overall([Linearizable].into_iter()), Linearizable);
        assert_eq!(overall(std::iter::empty()), Linearizable);
    }

    #[test]
    fn malformed_operations_are_errors() {
        let bad_time = vec![Operation::ok(0, 5, 4, In::Read, Out::Read { value: None })];
        assert!(matches!(
            check(&RegisterModel, &bad_time, &CheckOptions::default()),
            Err(CheckError::InvalidOperation { index: 0, .. })
        ));
        let bad_shape = vec![Operation::ok(0, 1, 4, In::Read, Out::Write)];
        assert!(matches!(
            check(&RegisterModel, &bad_shape, &CheckOptions::default()),
            Err(CheckError::InvalidOperation { index: 0, .. })
        ));
    }

    #[test]
    fn zero_budget_is_unknown_with_reason() {
        let history = vec![
            Operation::ok(0, 0, 10, In::Write { value: 1 }, Out::Write),
            Operation::ok(1, 1, 11, In::Read, Out::Read { value: Some(1) }),
        ];
        let report = check(
            &RegisterModel,
            &history,
            &CheckOptions::with_budget(Duration::ZERO),
        )
        .expect("well-formed");
        assert_eq!(report.verdict, Verdict::Unknown);
        assert_eq!(report.keys[0].unknown_reason, Some(UnknownReason::Timeout));
    }
}
