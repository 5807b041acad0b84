//! The mutex model with fencing tokens, through the checker: two holders
//! at once and tokens that do not increase must be rejected; blocking,
//! unknown outcomes and independent named locks must not be.

use std::time::Duration;

use concord_check::{
    check, CheckOptions, Keyed, KeyedInput, MutexInput as In, MutexModel, MutexOutput as Out,
    Operation, Verdict,
};

fn verdict(history: &[Operation<In, Out>]) -> Verdict {
    check(
        &MutexModel,
        history,
        &CheckOptions::with_budget(Duration::from_secs(10)),
    )
    .expect("well-formed")
    .verdict
}

fn acquire(process: u64, call: u64, ret: u64, token: u64) -> Operation<In, Out> {
    Operation::ok(process, call, ret, In::Acquire, Out::Acquire { token })
}

fn release(process: u64, call: u64, ret: u64, token: u64) -> Operation<In, Out> {
    Operation::ok(process, call, ret, In::Release { token }, Out::Release)
}

#[test]
fn sequential_handovers_are_accepted() {
    let history = [
        acquire(1, 0, 1, 10),
        release(1, 2, 3, 10),
        acquire(2, 4, 5, 11),
        release(2, 6, 7, 11),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn overlapping_holders_are_rejected() {
    // Process 2 holds the lock from 3 on, while process 1 only releases at 4.
    let history = [
        acquire(1, 0, 1, 1),
        acquire(2, 2, 3, 2),
        release(1, 4, 5, 1),
        release(2, 6, 7, 2),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
    let report = check(&MutexModel, &history, &CheckOptions::default()).expect("well-formed");
    let explanation = report.explanation.expect("explained");
    assert_eq!(explanation.ops[explanation.failing].operation, "acquire");
}

#[test]
fn decreasing_tokens_are_rejected() {
    let history = [
        acquire(1, 0, 1, 5),
        release(1, 2, 3, 5),
        acquire(2, 4, 5, 3),
        release(2, 6, 7, 3),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn repeated_tokens_are_rejected() {
    let history = [
        acquire(1, 0, 1, 5),
        release(1, 2, 3, 5),
        acquire(2, 4, 5, 5),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn a_blocked_acquire_may_complete_after_the_release() {
    // Process 1 waits from 1 to 10; process 2 holds from 2 to 5. Tokens
    // follow acquisition order, not invocation order.
    let history = [
        acquire(1, 1, 10, 2),
        acquire(2, 2, 3, 1),
        release(2, 4, 5, 1),
        release(1, 11, 12, 2),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn tokens_out_of_acquisition_order_are_rejected() {
    // Same as above, but the earlier holder got the larger token.
    let history = [
        acquire(1, 1, 10, 1),
        acquire(2, 2, 3, 2),
        release(2, 4, 5, 2),
        release(1, 11, 12, 1),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn releasing_without_holding_is_rejected() {
    let history = [release(1, 0, 1, 7)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn an_unknown_acquire_may_never_have_happened() {
    let history = [
        Operation::info(1, 0, In::Acquire),
        acquire(2, 1, 2, 7),
        release(2, 3, 4, 7),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn an_unknown_acquire_uses_up_a_token_if_it_happened_first() {
    // If process 1's acquire took effect it holds the lock forever (nobody
    // knows its token), so process 2 can only have acquired before it.
    let history = [
        Operation::info(1, 0, In::Acquire),
        acquire(2, 5, 6, 7),
        release(2, 7, 8, 7),
        acquire(3, 9, 10, 8),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn an_unknown_release_may_have_freed_the_lock() {
    let history = [
        acquire(1, 0, 1, 1),
        Operation::info(1, 2, In::Release { token: 1 }),
        acquire(2, 5, 6, 2),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn named_locks_are_independent() {
    let model = Keyed::new(MutexModel);
    let op = |p, call, ret, lock: &str, input, output| {
        Operation::ok(p, call, ret, KeyedInput::new(lock, input), output)
    };
    let history = [
        op(1, 0, 1, "a", In::Acquire, Out::Acquire { token: 1 }),
        op(2, 0, 1, "b", In::Acquire, Out::Acquire { token: 1 }),
        op(1, 2, 3, "a", In::Release { token: 1 }, Out::Release),
        op(2, 2, 3, "b", In::Release { token: 1 }, Out::Release),
    ];
    let report = check(&model, &history, &CheckOptions::default()).expect("well-formed");
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert_eq!(report.keys.len(), 2);

    let overlapping = [
        op(1, 0, 1, "a", In::Acquire, Out::Acquire { token: 1 }),
        op(2, 2, 3, "a", In::Acquire, Out::Acquire { token: 2 }),
        op(3, 0, 1, "b", In::Acquire, Out::Acquire { token: 1 }),
    ];
    let report = check(&model, &overlapping, &CheckOptions::default()).expect("well-formed");
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let verdicts: Vec<_> = report
        .keys
        .iter()
        .map(|k| (k.key.as_deref(), k.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            (Some("a"), Verdict::NotLinearizable),
            (Some("b"), Verdict::Linearizable)
        ]
    );
}
