//! # Explanations: a small piece of the history that cannot be linearized
//!
//! Given a partition the search proved non-linearizable, find a small
//! sub-history that is still not linearizable and whose failure implies the
//! whole history's, so a reader can check it by hand:
//!
//! 1. **Shortest failing prefix.** Cut the history at time `T`: operations
//!    completed by `T` keep their outputs, operations invoked by `T` but not
//!    completed become pending (unknown output, may take effect or not), and
//!    later ones are dropped. Every linearization of the whole history,
//!    restricted to a cut, is one of the cut (what follows the cut only
//!    touches pending operations, whose unknown outputs are always legal:
//!    model contract 2), so "cut not linearizable" implies "history not
//!    linearizable", and it is monotone in `T`: binary search finds the
//!    earliest failing `T`. The operation that completes at `T` is the one
//!    that cannot be linearized; it is highlighted.
//! 2. **Shrink.** Greedily drop operations that cannot change the state
//!    (model contract 3: reads, failed cas), first a whole process's at a
//!    time, then one by one, keeping each drop only if the rest is still
//!    not linearizable. Dropping such an operation only removes
//!    constraints, so the implication of step 1 still holds.
//!    Operations that change the state are never dropped: removing a write
//!    could *create* a violation (a read of a value nobody wrote), and the
//!    explanation would then describe a failure the history does not have.
//! 3. **Witness.** With the failing operation's result made unknown, the
//!    sub-history is linearizable (step 1 made it the first to fail); the
//!    order found is shown, with the state after each step, so the reader
//!    sees what the failing operation should have observed.
//!
//! Invariants:
//! 1. Every sub-history this module returns was proved not linearizable by
//!    the search (not inferred), whether or not the shrinking finished.
//! 2. All work stops at the explanation deadline; an unfinished shrink is
//!    reported as such ([`Explanation::shrunk_fully`] is false).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use crate::checker::Partition;
use crate::history::{Operation, Outcome, ProcessId, Time};
use crate::model::{Model, Step};
use crate::wgl::{search_to_end, MemoryBudget, PreparedOp, SearchOutcome};

/// A small non-linearizable sub-history of one partition.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The partition's key, if partitioned.
    pub key: Option<String>,
    /// The model's name.
    pub model: String,
    /// The operations, ordered by invocation.
    pub ops: Vec<ExplainedOp>,
    /// Index into `ops` of the operation that cannot be linearized.
    pub failing: usize,
    /// A linearization of `ops` with the failing operation's result taken
    /// as unknown; empty if none was found within the budget.
    pub witness: Vec<WitnessStep>,
    /// Operations in the whole partition (for scale).
    pub partition_op_count: usize,
    /// Whether shrinking ran to completion within its budget.
    pub shrunk_fully: bool,
}

/// One operation of an explanation.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainedOp {
    /// Its index in the checked history.
    pub history_index: usize,
    /// The process that ran it.
    pub process: ProcessId,
    /// Invocation time.
    pub call: Time,
    /// Completion time; `None` if pending in this sub-history (its result
    /// is unknown: it may have taken effect at any point after `call`).
    pub ret: Option<Time>,
    /// The input, e.g. `cas(1, 4)`.
    pub operation: String,
    /// The output, e.g. `ok`, or `?` when pending.
    pub result: String,
}

/// One step of the witness linearization.
#[derive(Clone, Debug, Serialize)]
pub struct WitnessStep {
    /// Index into [`Explanation::ops`].
    pub op: usize,
    /// The model state after it.
    pub state_after: String,
}

impl Explanation {
    /// A plain-text rendering, for terminals and logs.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let key = self
            .key
            .as_ref()
            .map_or_else(String::new, |k| format!(" on key {k:?}"));
        let _ = writeln!(
            out,
            "{} of {} operations{key} cannot be linearized together ({} model){}:",
            self.ops.len(),
            self.partition_op_count,
            self.model,
            if self.shrunk_fully {
                ""
            } else {
                "; shrinking ran out of time"
            },
        );
        for (i, op) in self.ops.iter().enumerate() {
            let ret = op.ret.map_or_else(|| "...".to_owned(), |t| t.to_string());
            let mark = if i == self.failing {
                "   <-- cannot be linearized"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  process {:>3}  [{}, {}]  {} -> {}{mark}",
                op.process, op.call, ret, op.operation, op.result
            );
        }
        if !self.witness.is_empty() {
            let _ = writeln!(
                out,
                "a linearization if the marked operation's result were unknown:"
            );
            for step in &self.witness {
                let op = &self.ops[step.op];
                let _ = writeln!(
                    out,
                    "  {} -> {}   state {}",
                    op.operation,
                    if step.op == self.failing {
                        "?"
                    } else {
                        op.result.as_str()
                    },
                    step.state_after
                );
            }
        }
        out
    }
}

/// The operations of an explanation as a history of their own: completed
/// ones as recorded, pending ones as `Info`. Checking it gives
/// `NotLinearizable` (invariant 1), which tests use to hold us to it.
pub fn sub_history<I: Clone, O: Clone>(
    history: &[Operation<I, O>],
    explanation: &Explanation,
) -> Vec<Operation<I, O>> {
    explanation
        .ops
        .iter()
        .map(|e| {
            let op = &history[e.history_index];
            if e.ret.is_some() {
                op.clone()
            } else {
                Operation {
                    ret: None,
                    outcome: Outcome::Info,
                    ..op.clone()
                }
            }
        })
        .collect()
}

/// One operation of a candidate sub-history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// Index into the history.
    index: usize,
    /// Completed with its output (true) or pending (unknown result).
    completed: bool,
}

struct Explainer<'a, M: Model> {
    model: &'a M,
    history: &'a [Operation<M::Input, M::Output>],
    deadline: Instant,
    budget: &'a MemoryBudget,
}

impl<'a, M: Model> Explainer<'a, M> {
    fn ok_ret(&self, index: usize) -> Option<u64> {
        let op = &self.history[index];
        match op.outcome {
            Outcome::Ok(_) => op.ret.map(|t| t.0),
            Outcome::Fail | Outcome::Info => None,
        }
    }

    fn prepared(&self, slots: &[Slot]) -> Vec<PreparedOp<'a, M::Input, M::Output>> {
        slots
            .iter()
            .map(|slot| {
                let op = &self.history[slot.index];
                if slot.completed {
                    PreparedOp {
                        input: &op.input,
                        output: op.output(),
                        call: op.call.0,
                        ret: op.ret.map(|t| t.0),
                    }
                } else {
                    PreparedOp {
                        input: &op.input,
                        output: None,
                        call: op.call.0,
                        ret: None,
                    }
                }
            })
            .collect()
    }

    fn search(&self, slots: &[Slot]) -> SearchOutcome {
        search_to_end(self.model, self.prepared(slots), self.deadline, self.budget)
    }

    fn fails(&self, slots: &[Slot]) -> Option<bool> {
        match self.search(slots) {
            SearchOutcome::NotLinearizable => Some(true),
            SearchOutcome::Linearizable { .. } => Some(false),
            SearchOutcome::Unknown(_) => None,
        }
    }

    /// The history cut at `t` (module docs, step 1). Pending operations that
    /// cannot change the state constrain nothing and are left out.
    fn cut(&self, ops: &[usize], t: u64) -> Vec<Slot> {
        ops.iter()
            .filter(|&&i| self.history[i].call.0 <= t)
            .filter_map(|&i| {
                let completed = self.ok_ret(i).is_some_and(|r| r <= t);
                let op = &self.history[i];
                if !completed && self.model.is_pure(&op.input, None) {
                    None
                } else {
                    Some(Slot {
                        index: i,
                        completed,
                    })
                }
            })
            .collect()
    }

    fn is_droppable(&self, slot: &Slot) -> bool {
        let op = &self.history[slot.index];
        slot.completed && self.model.is_pure(&op.input, op.output())
    }

    fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// Explains why `part` is not linearizable (module docs). `None` only if
/// the partition has no completed operation to blame, which a partition
/// the search rejected always has.
pub(crate) fn explain<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    part: &Partition,
    deadline: Instant,
    budget: &MemoryBudget,
) -> Option<Explanation> {
    let ex = Explainer {
        model,
        history,
        deadline,
        budget,
    };
    let mut shrunk_fully = true;

    // The whole partition, as the main search saw it: proved failing.
    let whole: Vec<Slot> = part
        .ops
        .iter()
        .map(|&i| Slot {
            index: i,
            completed: ex.ok_ret(i).is_some(),
        })
        .collect();

    // Step 1: the earliest failing cut.
    let mut times: Vec<u64> = part.ops.iter().filter_map(|&i| ex.ok_ret(i)).collect();
    times.sort_unstable();
    times.dedup();
    let last = times.len().checked_sub(1)?;
    let (mut lo, mut hi) = (0, last);
    let mut hi_proved = false;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match ex.fails(&ex.cut(&part.ops, times[mid])) {
            Some(true) => {
                hi = mid;
                hi_proved = true;
            }
            Some(false) => lo = mid + 1,
            None => {
                shrunk_fully = false;
                break;
            }
        }
    }
    let mut slots = ex.cut(&part.ops, times[hi]);
    if !hi_proved && ex.fails(&slots) != Some(true) {
        // Only the whole partition is proved to fail (invariant 1).
        slots = whole;
        shrunk_fully = false;
    }

    // The operation that cannot be linearized: the one completing at the
    // cut. With several completing at the same instant, find one that fails
    // on its own (the others pending).
    let cut_time = times[hi];
    let at_cut: Vec<usize> = slots
        .iter()
        .filter(|s| s.completed && ex.ok_ret(s.index) == Some(cut_time))
        .map(|s| s.index)
        .collect();
    let mut failing = *at_cut.first().or_else(|| {
        // The fallback (whole partition): blame the last completion.
        slots
            .iter()
            .filter(|s| s.completed)
            .max_by_key(|s| ex.ok_ret(s.index))
            .map(|s| &s.index)
    })?;
    if at_cut.len() > 1 {
        for &candidate in &at_cut {
            let trial: Vec<Slot> = slots
                .iter()
                .map(|s| Slot {
                    index: s.index,
                    completed: s.completed && (s.index == candidate || !at_cut.contains(&s.index)),
                })
                .collect();
            if ex.fails(&trial) == Some(true) {
                slots = trial;
                failing = candidate;
                break;
            }
        }
    }

    // Step 2: shrink, whole processes first (cheap big steps), then single
    // operations.
    let processes: BTreeSet<ProcessId> = slots
        .iter()
        .filter(|s| s.index != failing && ex.is_droppable(s))
        .map(|s| history[s.index].process)
        .collect();
    for process in processes {
        if ex.out_of_time() {
            shrunk_fully = false;
            break;
        }
        let trial: Vec<Slot> = slots
            .iter()
            .copied()
            .filter(|s| {
                s.index == failing || history[s.index].process != process || !ex.is_droppable(s)
            })
            .collect();
        if trial.len() < slots.len() && ex.fails(&trial) == Some(true) {
            slots = trial;
        }
    }
    let singles: Vec<usize> = slots
        .iter()
        .filter(|s| s.index != failing && ex.is_droppable(s))
        .map(|s| s.index)
        .collect();
    for index in singles {
        if ex.out_of_time() {
            shrunk_fully = false;
            break;
        }
        let trial: Vec<Slot> = slots.iter().copied().filter(|s| s.index != index).collect();
        if ex.fails(&trial) == Some(true) {
            slots = trial;
        }
    }

    // Step 3: the witness.
    slots.sort_by_key(|s| (history[s.index].call, s.index));
    let failing_pos = slots.iter().position(|s| s.index == failing)?;
    let relaxed: Vec<Slot> = slots
        .iter()
        .map(|s| Slot {
            index: s.index,
            completed: s.completed && s.index != failing,
        })
        .collect();
    let witness = match ex.search(&relaxed) {
        SearchOutcome::Linearizable { order } => replay(model, history, &relaxed, &order),
        SearchOutcome::NotLinearizable | SearchOutcome::Unknown(_) => Vec::new(),
    };

    let ops = slots
        .iter()
        .map(|s| {
            let op = &history[s.index];
            ExplainedOp {
                history_index: s.index,
                process: op.process,
                call: op.call,
                ret: if s.completed { op.ret } else { None },
                operation: op.input.to_string(),
                result: match (s.completed, op.output()) {
                    (true, Some(output)) => output.to_string(),
                    _ => "?".to_owned(),
                },
            }
        })
        .collect();
    Some(Explanation {
        key: part.key.clone(),
        model: model.name(),
        ops,
        failing: failing_pos,
        witness,
        partition_op_count: part.ops.len(),
        shrunk_fully,
    })
}

/// States along a linearization (`order` indexes `slots`).
fn replay<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    slots: &[Slot],
    order: &[usize],
) -> Vec<WitnessStep> {
    let mut state = model.init();
    let mut steps = Vec::with_capacity(order.len());
    for &pos in order {
        let slot = slots[pos];
        let op = &history[slot.index];
        let output = if slot.completed { op.output() } else { None };
        match model.step(&state, &op.input, output) {
            Step::Changed(next) => state = next,
            Step::Unchanged => {}
            // The search found this order legal; a model whose step is not
            // a pure function (contract 1) could disagree. Show no witness
            // rather than a wrong one.
            Step::Illegal => return Vec::new(),
        }
        steps.push(WitnessStep {
            op: pos,
            state_after: model.describe_state(&state),
        });
    }
    steps
}

/// Keeps [`prepare`] (the main search's view) and the explainer's view of a
/// whole partition in step: both must see the same operations.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::prepare;
    use crate::model::{RegisterInput as In, RegisterModel, RegisterOutput as Out};

    #[test]
    fn whole_partition_view_matches_the_main_search() {
        let history = vec![
            Operation::ok(0, 0, 3, In::Write { value: 1 }, Out::Write),
            Operation::info(1, 1, In::Write { value: 2 }),
        ];
        let main = prepare::<RegisterModel>(&history, &[0, 1]);
        let budget = MemoryBudget::new(1 << 20);
        let ex = Explainer {
            model: &RegisterModel,
            history: &history,
            deadline: Instant::now(),
            budget: &budget,
        };
        let slots = [
            Slot {
                index: 0,
                completed: true,
            },
            Slot {
                index: 1,
                completed: false,
            },
        ];
        let mine = ex.prepared(&slots);
        for (a, b) in main.iter().zip(&mine) {
            assert_eq!((a.call, a.ret, a.output), (b.call, b.ret, b.output));
        }
    }
}
