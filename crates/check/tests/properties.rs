//! Property tests: the checker against histories whose answer is known by
//! construction, and against a dumb oracle (every order, by brute force)
//! on tiny histories. (STYLE.md, "Property tests against a dumb oracle".)
//!
//! - Generated sequential executions, given overlapping intervals that each
//!   contain the operation's linearization point, must be accepted.
//! - The same executions with a read made impossible (a value nobody
//!   wrote, or a value overwritten before the read began) must be rejected.
//! - On histories of at most 6 operations with arbitrary outputs, the
//!   checker must agree with brute force, partitioned or not, and every
//!   explanation must itself be rejected.

use std::time::Duration;

use concord_check::{
    check, sub_history, CheckOptions, KeyedInput, KvModel, Model, MutexInput, MutexModel,
    MutexOutput, Operation, Outcome, RegisterInput, RegisterModel, RegisterOutput, Step,
    StringInput, StringOutput, Verdict,
};
use proptest::prelude::*;

/// Generated histories are decided in milliseconds; this only guards
/// against a hang turning into a stuck test.
const BUDGET: Duration = Duration::from_secs(20);

fn options() -> CheckOptions {
    CheckOptions::with_budget(BUDGET)
}

fn verdict<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> Verdict {
    check(model, history, &options())
        .expect("generated histories are well-formed")
        .verdict
}

// ---------------------------------------------------------------------------
// The oracle.

/// Whether some order of the operations, consistent with real time, is a
/// legal sequential execution: tries every order (pruned only by real time).
/// `Fail` operations are left out; `Info` ones complete at +infinity.
fn brute_force<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
    let ops: Vec<&Operation<M::Input, M::Output>> = history
        .iter()
        .filter(|op| !matches!(op.outcome, Outcome::Fail))
        .collect();
    let rets: Vec<u64> = ops
        .iter()
        .map(|op| match op.outcome {
            Outcome::Ok(_) => op.ret.map_or(u64::MAX, |t| t.0),
            Outcome::Fail | Outcome::Info => u64::MAX,
        })
        .collect();
    fn go<M: Model>(
        model: &M,
        ops: &[&Operation<M::Input, M::Output>],
        rets: &[u64],
        used: &mut Vec<bool>,
        state: &M::State,
    ) -> bool {
        if used.iter().all(|&u| u) {
            return true;
        }
        for i in 0..ops.len() {
            if used[i] {
                continue;
            }
            // `i` may go next only if no other remaining operation
            // completed before `i` was invoked.
            let blocked = (0..ops.len()).any(|j| j != i && !used[j] && rets[j] < ops[i].call.0);
            if blocked {
                continue;
            }
            let next = match model.step(state, &ops[i].input, ops[i].output()) {
                Step::Illegal => continue,
                Step::Unchanged => state.clone(),
                Step::Changed(s) => s,
            };
            used[i] = true;
            if go(model, ops, rets, used, &next) {
                return true;
            }
            used[i] = false;
        }
        false
    }
    let mut used = vec![false; ops.len()];
    go(model, &ops, &rets, &mut used, &model.init())
}

// ---------------------------------------------------------------------------
// Sequential executions with intervals around their linearization points.

/// Spacing of linearization points; intervals extend up to
/// `JITTER_MAX` either side, so neighbours overlap heavily.
const POINT_SPACING: u64 = 100;
const JITTER_MAX: u64 = 150;

/// One generated step: what to do and how to time it.
#[derive(Debug, Clone)]
struct PlannedOp {
    kind: u8,
    pick: u8,
    before: u64,
    after: u64,
    /// 0: the outcome is lost (`Info` for writes, `Fail` for reads).
    fate: u8,
}

fn plans(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<PlannedOp>> {
    prop::collection::vec(
        (0u8..3, any::<u8>(), 0..=JITTER_MAX, 0..=JITTER_MAX, 0u8..12).prop_map(
            |(kind, pick, before, after, fate)| PlannedOp {
                kind,
                pick,
                before,
                after,
                fate,
            },
        ),
        len,
    )
}

/// The interval around linearization point `i`.
fn interval(i: usize, plan: &PlannedOp) -> (u64, u64) {
    let point = JITTER_MAX + POINT_SPACING * i as u64;
    (point - plan.before, point + plan.after)
}

/// Gives each operation a process that is idle over its interval (a
/// process runs one operation at a time; after an `Info` it never runs
/// again, as in Jepsen).
fn assign_processes<I, O>(ops: &mut [Operation<I, O>]) {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| ops[i].call);
    let mut busy_until: Vec<u64> = Vec::new();
    for i in order {
        let call = ops[i].call.0;
        let end = match ops[i].outcome {
            Outcome::Info => u64::MAX,
            _ => ops[i].ret.map_or(u64::MAX, |t| t.0),
        };
        let process = match busy_until.iter().position(|&b| b < call) {
            Some(p) => p,
            None => {
                busy_until.push(0);
                busy_until.len() - 1
            }
        };
        busy_until[process] = end;
        ops[i].process.0 = process as u64;
    }
}

/// Values written are unique: 1000 + the step's index.
fn unique_value(i: usize) -> i64 {
    1000 + i as i64
}

/// A register execution, linearizable by construction.
fn register_history(plan: &[PlannedOp]) -> Vec<Operation<RegisterInput, RegisterOutput>> {
    let mut state: Option<i64> = None;
    let mut written: Vec<i64> = Vec::new();
    let mut ops = Vec::with_capacity(plan.len());
    for (i, p) in plan.iter().enumerate() {
        let (call, ret) = interval(i, p);
        let (input, output) = match p.kind {
            0 => (RegisterInput::Read, RegisterOutput::Read { value: state }),
            1 => {
                let value = unique_value(i);
                state = Some(value);
                written.push(value);
                (RegisterInput::Write { value }, RegisterOutput::Write)
            }
            _ => {
                let expected = match (state, p.pick % 3) {
                    (Some(current), 0 | 1) => current,
                    _ if !written.is_empty() => written[p.pick as usize % written.len()],
                    _ => -5,
                };
                let new = unique_value(i);
                let applied = state == Some(expected);
                if applied {
                    state = Some(new);
                    written.push(new);
                }
                (
                    RegisterInput::Cas { expected, new },
                    RegisterOutput::Cas { applied },
                )
            }
        };
        let op = match (p.fate, &input) {
            (0, RegisterInput::Read) => Operation::fail(0, call, ret, input),
            (0, _) => Operation::info(0, call, input),
            _ => Operation::ok(0, call, ret, input, output),
        };
        ops.push(op);
    }
    assign_processes(&mut ops);
    ops
}

/// A key-value execution over three keys, linearizable by construction.
fn kv_history(plan: &[PlannedOp]) -> Vec<Operation<KeyedInput<StringInput>, StringOutput>> {
    const KEYS: [&str; 3] = ["a", "b", "c"];
    let mut state = [String::new(), String::new(), String::new()];
    let mut ops = Vec::with_capacity(plan.len());
    for (i, p) in plan.iter().enumerate() {
        let (call, ret) = interval(i, p);
        let k = p.pick as usize % KEYS.len();
        let (op, output) = match p.kind {
            0 => (
                StringInput::Get,
                StringOutput::Get {
                    value: state[k].clone(),
                },
            ),
            1 => {
                let value = format!("p{i};");
                state[k] = value.clone();
                (StringInput::Put { value }, StringOutput::Put)
            }
            _ => {
                let value = format!("x{i}y;");
                state[k].push_str(&value);
                (StringInput::Append { value }, StringOutput::Append)
            }
        };
        let input = KeyedInput::new(KEYS[k], op);
        let op = match (p.fate, &input.op) {
            (0, StringInput::Get) => Operation::fail(0, call, ret, input),
            (0, _) => Operation::info(0, call, input),
            _ => Operation::ok(0, call, ret, input, output),
        };
        ops.push(op);
    }
    assign_processes(&mut ops);
    ops
}

fn ok_reads(history: &[Operation<RegisterInput, RegisterOutput>]) -> Vec<usize> {
    (0..history.len())
        .filter(|&i| {
            history[i].input == RegisterInput::Read && matches!(history[i].outcome, Outcome::Ok(_))
        })
        .collect()
}

/// The value an operation certainly installed, if it completed with an
/// effect (an `Ok` write or applied cas).
fn installed(op: &Operation<RegisterInput, RegisterOutput>) -> Option<i64> {
    match (&op.input, &op.outcome) {
        (RegisterInput::Write { value }, Outcome::Ok(_)) => Some(*value),
        (RegisterInput::Cas { new, .. }, Outcome::Ok(RegisterOutput::Cas { applied: true })) => {
            Some(*new)
        }
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sequential_register_executions_are_accepted(plan in plans(1..60)) {
        let history = register_history(&plan);
        prop_assert_eq!(verdict(&RegisterModel, &history), Verdict::Linearizable);
    }

    #[test]
    fn sequential_kv_executions_are_accepted(plan in plans(1..80)) {
        let history = kv_history(&plan);
        let model = KvModel::default();
        prop_assert_eq!(verdict(&model, &history), Verdict::Linearizable);
        let whole = CheckOptions { partition: false, ..options() };
        prop_assert_eq!(check(&model, &history, &whole).expect("well-formed").verdict, Verdict::Linearizable);
    }

    #[test]
    fn reading_a_value_nobody_wrote_is_rejected(plan in plans(1..60), sel in any::<usize>()) {
        let mut history = register_history(&plan);
        let reads = ok_reads(&history);
        prop_assume!(!reads.is_empty());
        let r = reads[sel % reads.len()];
        // Written values are >= 1000; -1 never is.
        history[r].outcome = Outcome::Ok(RegisterOutput::Read { value: Some(-1) });
        prop_assert_eq!(verdict(&RegisterModel, &history), Verdict::NotLinearizable);
    }

    #[test]
    fn reading_an_overwritten_value_is_rejected(plan in plans(3..60), sel in any::<usize>()) {
        let mut history = register_history(&plan);
        // w1 installs v1; w2, a write, starts after w1 completed; the read
        // starts after w2 completed. Values are unique, so nothing can
        // reinstall v1: the read of v1 is stale beyond any overlap.
        let mut stale = Vec::new();
        for r in ok_reads(&history) {
            for op2 in &history {
                let is_write = matches!(op2.input, RegisterInput::Write { .. })
                    && matches!(op2.outcome, Outcome::Ok(_));
                if !is_write || op2.ret.is_none_or(|t| t >= history[r].call) {
                    continue;
                }
                for op1 in &history {
                    if let (Some(v1), Some(ret1)) = (installed(op1), op1.ret) {
                        if ret1 < op2.call {
                            stale.push((r, v1));
                        }
                    }
                }
            }
        }
        prop_assume!(!stale.is_empty());
        let (r, v1) = stale[sel % stale.len()];
        history[r].outcome = Outcome::Ok(RegisterOutput::Read { value: Some(v1) });
        prop_assert_eq!(verdict(&RegisterModel, &history), Verdict::NotLinearizable);
    }

    #[test]
    fn getting_a_string_nobody_wrote_is_rejected(plan in plans(1..60), sel in any::<usize>()) {
        let mut history = kv_history(&plan);
        let gets: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].input.op == StringInput::Get && matches!(history[i].outcome, Outcome::Ok(_)))
            .collect();
        prop_assume!(!gets.is_empty());
        let g = gets[sel % gets.len()];
        history[g].outcome = Outcome::Ok(StringOutput::Get { value: "never".to_owned() });
        prop_assert_eq!(verdict(&KvModel::default(), &history), Verdict::NotLinearizable);
    }
}

// ---------------------------------------------------------------------------
// Tiny arbitrary histories against brute force.

fn tiny_timing() -> impl Strategy<Value = (u64, u64, u8)> {
    // Call in 0..12, duration 0..8 (zero-length included), outcome: mostly
    // ok, sometimes unknown or failed.
    (0u64..12, 0u64..8, 0u8..10)
}

fn with_timing<I, O>(
    index: usize,
    (call, len, fate): (u64, u64, u8),
    input: I,
    output: O,
) -> Operation<I, O> {
    let process = index as u64;
    match fate {
        0 => Operation::info(process, call, input),
        1 => Operation::fail(process, call, call + len, input),
        _ => Operation::ok(process, call, call + len, input, output),
    }
}

fn tiny_register_op() -> impl Strategy<Value = (RegisterInput, RegisterOutput)> {
    let value = 0i64..3;
    prop_oneof![
        prop::option::of(value.clone())
            .prop_map(|v| (RegisterInput::Read, RegisterOutput::Read { value: v })),
        value
            .clone()
            .prop_map(|v| (RegisterInput::Write { value: v }, RegisterOutput::Write)),
        (value.clone(), value, any::<bool>()).prop_map(|(expected, new, applied)| (
            RegisterInput::Cas { expected, new },
            RegisterOutput::Cas { applied }
        )),
    ]
}

fn tiny_kv_op() -> impl Strategy<Value = (KeyedInput<StringInput>, StringOutput)> {
    let key = prop_oneof![Just("a"), Just("b")];
    let text = prop_oneof![Just(""), Just("x"), Just("y"), Just("xy")];
    prop_oneof![
        (key.clone(), text.clone()).prop_map(|(k, v)| (
            KeyedInput::new(k, StringInput::Get),
            StringOutput::Get {
                value: v.to_owned()
            }
        )),
        (key.clone(), text.clone()).prop_map(|(k, v)| (
            KeyedInput::new(
                k,
                StringInput::Put {
                    value: v.to_owned()
                }
            ),
            StringOutput::Put
        )),
        (key, text).prop_map(|(k, v)| (
            KeyedInput::new(
                k,
                StringInput::Append {
                    value: v.to_owned()
                }
            ),
            StringOutput::Append
        )),
    ]
}

fn tiny_mutex_op() -> impl Strategy<Value = (MutexInput, MutexOutput)> {
    prop_oneof![
        (0u64..4).prop_map(|token| (MutexInput::Acquire, MutexOutput::Acquire { token })),
        (0u64..4).prop_map(|token| (MutexInput::Release { token }, MutexOutput::Release)),
    ]
}

fn agree_with_brute_force<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
) -> Result<(), TestCaseError>
where
    M::Input: Clone,
    M::Output: Clone,
{
    let oracle = if brute_force(model, history) {
        Verdict::Linearizable
    } else {
        Verdict::NotLinearizable
    };
    let report = check(model, history, &options()).expect("well-formed");
    prop_assert_eq!(report.verdict, oracle, "history: {:#?}", history);
    let whole = CheckOptions {
        partition: false,
        ..options()
    };
    prop_assert_eq!(
        check(model, history, &whole).expect("well-formed").verdict,
        oracle
    );
    if let Some(explanation) = &report.explanation {
        let sub = sub_history(history, explanation);
        prop_assert!(
            !brute_force(model, &sub),
            "explanation is linearizable: {}",
            explanation.summary()
        );
    } else {
        prop_assert_eq!(
            oracle,
            Verdict::Linearizable,
            "a rejected history must be explained"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn tiny_register_histories_agree_with_brute_force(
        ops in prop::collection::vec((tiny_register_op(), tiny_timing()), 0..=6)
    ) {
        let history: Vec<_> = ops
            .into_iter()
            .enumerate()
            .map(|(i, ((input, output), timing))| with_timing(i, timing, input, output))
            .collect();
        agree_with_brute_force(&RegisterModel, &history)?;
    }

    #[test]
    fn tiny_kv_histories_agree_with_brute_force(
        ops in prop::collection::vec((tiny_kv_op(), tiny_timing()), 0..=6)
    ) {
        let history: Vec<_> = ops
            .into_iter()
            .enumerate()
            .map(|(i, ((input, output), timing))| with_timing(i, timing, input, output))
            .collect();
        agree_with_brute_force(&KvModel::default(), &history)?;
    }

    #[test]
    fn tiny_mutex_histories_agree_with_brute_force(
        ops in prop::collection::vec((tiny_mutex_op(), tiny_timing()), 0..=6)
    ) {
        let history: Vec<_> = ops
            .into_iter()
            .enumerate()
            .map(|(i, ((input, output), timing))| with_timing(i, timing, input, output))
            .collect();
        agree_with_brute_force(&MutexModel, &history)?;
    }
}
