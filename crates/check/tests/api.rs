//! The checker's public contract beyond single verdicts: JSON lines round
//! trip, per-key reports, time budgets that yield `Unknown`, and one hard
//! key that must not stall the easy ones.

use std::time::{Duration, Instant};

use concord_check::history::to_jsonl;
use concord_check::parse::parse_jsonl;
use concord_check::{
    check, check_text, CheckOptions, Format, JsonlWriter, KeyedInput, KvCasRegisterModel, KvModel,
    ModelKind, Operation, RegisterInput as In, RegisterOutput as Out, StringInput, StringOutput,
    UnknownReason, Verdict,
};

fn kv_register_history() -> Vec<Operation<KeyedInput<In>, Out>> {
    vec![
        Operation::ok(
            0,
            0,
            10,
            KeyedInput::new("k1", In::Write { value: 1 }),
            Out::Write,
        ),
        Operation::ok(
            1,
            5,
            12,
            KeyedInput::new(
                "k1",
                In::Cas {
                    expected: 1,
                    new: 4,
                },
            ),
            Out::Cas { applied: true },
        ),
        Operation::info(2, 6, KeyedInput::new("k2", In::Write { value: 7 })),
        Operation::fail(3, 7, 8, KeyedInput::new("k2", In::Write { value: 8 })),
        Operation::ok(
            3,
            20,
            21,
            KeyedInput::new("k1", In::Read),
            Out::Read { value: Some(4) },
        ),
        Operation::ok(
            4,
            22,
            23,
            KeyedInput::new("k2", In::Read),
            Out::Read { value: Some(7) },
        ),
    ]
}

#[test]
fn jsonl_round_trips_and_checks() {
    let history = kv_register_history();
    let text = to_jsonl(ModelKind::KvCasRegister, &history);
    let first = text.lines().next().expect("header");
    assert_eq!(first, r#"{"concord_history":1,"model":"kv-cas-register"}"#);
    assert!(
        text.contains(r#"{"process":1,"call":5,"return":12,"input":{"key":"k1","f":"cas","expected":1,"new":4},"outcome":{"type":"ok","output":{"f":"cas","applied":true}}}"#),
        "schema as documented in concord_check::history:\n{text}"
    );
    let (header, parsed) = parse_jsonl::<KeyedInput<In>, Out>(&text).expect("parses");
    assert_eq!(header.model, ModelKind::KvCasRegister);
    assert_eq!(parsed, history);

    let report = check_text(Format::Jsonl, &text, &CheckOptions::default()).expect("checks");
    assert_eq!(report.verdict, Verdict::Linearizable);
    let keys: Vec<_> = report
        .keys
        .iter()
        .map(|k| (k.key.as_deref(), k.op_count))
        .collect();
    // The failed write is dropped; the unknown write stays.
    assert_eq!(keys, [(Some("k1"), 3), (Some("k2"), 2)]);
}

#[test]
fn streaming_writer_matches_to_jsonl() {
    let history = kv_register_history();
    let mut writer = JsonlWriter::new(Vec::new(), ModelKind::KvCasRegister).expect("header");
    for op in &history {
        writer.write_op(op).expect("line");
    }
    let bytes = writer.finish().expect("flush");
    assert_eq!(
        String::from_utf8(bytes).expect("utf-8"),
        to_jsonl(ModelKind::KvCasRegister, &history)
    );
}

#[test]
fn per_key_verdicts_name_the_bad_key() {
    let mut history = kv_register_history();
    // k2 read a value nobody wrote.
    history.push(Operation::ok(
        5,
        30,
        31,
        KeyedInput::new("k2", In::Read),
        Out::Read { value: Some(9) },
    ));
    let report = check(
        &KvCasRegisterModel::default(),
        &history,
        &CheckOptions::default(),
    )
    .expect("checks");
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let bad: Vec<_> = report
        .keys_with(Verdict::NotLinearizable)
        .map(|k| k.key.clone())
        .collect();
    assert_eq!(bad, [Some("k2".to_owned())]);
    let explanation = report.explanation.expect("explained");
    assert_eq!(explanation.key.as_deref(), Some("k2"));
    assert_eq!(explanation.ops[explanation.failing].result, "9");
}

/// `n` appends to one key, all concurrent, then a get that no order of
/// them can produce: the search must try every order of the appends
/// (the states all differ, so memoization cannot help).
fn hard_key(
    n: usize,
    key: &str,
    first_process: u64,
) -> Vec<Operation<KeyedInput<StringInput>, StringOutput>> {
    let mut ops: Vec<_> = (0..n)
        .map(|i| {
            Operation::ok(
                first_process + i as u64,
                1,
                1000,
                KeyedInput::new(
                    key,
                    StringInput::Append {
                        value: format!("<{i}>"),
                    },
                ),
                StringOutput::Append,
            )
        })
        .collect();
    ops.push(Operation::ok(
        first_process + n as u64,
        2000,
        2001,
        KeyedInput::new(key, StringInput::Get),
        StringOutput::Get {
            value: "impossible".to_owned(),
        },
    ));
    ops
}

/// A sequential key: `n` appends, each followed by a get of the result.
fn easy_key(
    n: usize,
    key: &str,
    process: u64,
) -> Vec<Operation<KeyedInput<StringInput>, StringOutput>> {
    let mut state = String::new();
    let mut ops = Vec::new();
    for i in 0..n as u64 {
        let value = format!("[{i}]");
        state.push_str(&value);
        ops.push(Operation::ok(
            process,
            10 * i,
            10 * i + 4,
            KeyedInput::new(key, StringInput::Append { value }),
            StringOutput::Append,
        ));
        ops.push(Operation::ok(
            process,
            10 * i + 5,
            10 * i + 9,
            KeyedInput::new(key, StringInput::Get),
            StringOutput::Get {
                value: state.clone(),
            },
        ));
    }
    ops
}

#[test]
fn a_hard_key_does_not_stall_the_others_and_times_out_as_unknown() {
    let mut history = hard_key(24, "hard", 1000);
    for k in 0..20 {
        // Larger than the hard key, so a smallest-first queue alone would
        // run the hard key first: only time slicing gets these done.
        history.extend(easy_key(20, &format!("easy{k:02}"), k));
    }
    let budget = Duration::from_millis(500);
    let options = CheckOptions {
        threads: 1,
        explain_budget: Duration::ZERO,
        ..CheckOptions::with_budget(budget)
    };
    let started = Instant::now();
    let report = check(&KvModel::default(), &history, &options).expect("checks");
    let took = started.elapsed();
    assert!(
        took < budget + Duration::from_secs(2),
        "the budget bounds the run: took {took:?}"
    );
    assert_eq!(report.verdict, Verdict::Unknown);
    for key in &report.keys {
        if key.key.as_deref() == Some("hard") {
            assert_eq!(key.verdict, Verdict::Unknown);
            assert!(matches!(
                key.unknown_reason,
                Some(UnknownReason::Timeout | UnknownReason::MemoryLimit)
            ));
        } else {
            assert_eq!(
                key.verdict,
                Verdict::Linearizable,
                "{:?} was starved",
                key.key
            );
        }
    }
}

#[test]
fn a_violation_elsewhere_can_cancel_a_hard_key() {
    let mut history = hard_key(24, "hard", 1000);
    history.push(Operation::ok(
        1,
        0,
        1,
        KeyedInput::new("bad", StringInput::Get),
        StringOutput::Get {
            value: "x".to_owned(),
        },
    ));
    let options = CheckOptions {
        threads: 2,
        stop_on_first_violation: true,
        explain_budget: Duration::ZERO,
        ..CheckOptions::with_budget(Duration::from_secs(30))
    };
    let started = Instant::now();
    let report = check(&KvModel::default(), &history, &options).expect("checks");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cancelled promptly"
    );
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let hard = report
        .keys
        .iter()
        .find(|k| k.key.as_deref() == Some("hard"))
        .expect("reported");
    assert_eq!(hard.unknown_reason, Some(UnknownReason::Cancelled));
}

#[test]
fn memory_cap_yields_unknown() {
    let history = hard_key(24, "hard", 0);
    let options = CheckOptions {
        memo_bytes_max: 1 << 20,
        explain_budget: Duration::ZERO,
        ..CheckOptions::with_budget(Duration::from_secs(30))
    };
    let report = check(&KvModel::default(), &history, &options).expect("checks");
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(
        report.keys[0].unknown_reason,
        Some(UnknownReason::MemoryLimit)
    );
}

#[test]
fn verdicts_print_and_exit_as_the_cli_expects() {
    assert_eq!(Verdict::Linearizable.to_string(), "linearizable");
    assert_eq!(Verdict::NotLinearizable.to_string(), "not linearizable");
    assert_eq!(Verdict::Unknown.to_string(), "unknown");
    assert_eq!(
        [
            Verdict::Linearizable,
            Verdict::NotLinearizable,
            Verdict::Unknown
        ]
        .map(Verdict::exit_code),
        [0, 1, 2]
    );
}
