//! Malformed history files give typed errors with line numbers, and no
//! input makes a parser panic.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use concord_check::parse::{parse_jepsen_etcd, parse_jsonl, parse_porcupine_kv};
use concord_check::{
    check_file, CheckError, Format, ParseError, ParseErrorKind, RegisterInput, RegisterOutput,
};
use proptest::prelude::*;

const INVOKE_WRITE: &str = "INFO  jepsen.util - 0\t:invoke\t:write\t3";

fn jepsen_error(text: &str) -> ParseError {
    parse_jepsen_etcd(text).expect_err("must be rejected")
}

fn kv_error(text: &str) -> ParseError {
    parse_porcupine_kv(text).expect_err("must be rejected")
}

#[test]
fn jepsen_rejects_lines_that_are_not_events() {
    let e = jepsen_error(&format!("{INVOKE_WRITE}\nWARN  something else\n"));
    assert_eq!(e.line, 2);
    assert_eq!(e.kind, ParseErrorKind::NotAnEvent);
}

#[test]
fn jepsen_rejects_bad_fields() {
    let e = jepsen_error("INFO  jepsen.util - x\t:invoke\t:read\tnil");
    assert_eq!(
        e,
        ParseError {
            line: 1,
            kind: ParseErrorKind::BadProcess("x".into())
        }
    );

    let e = jepsen_error("INFO  jepsen.util - 1\t:begin\t:read\tnil");
    assert_eq!(e.kind, ParseErrorKind::UnknownType(":begin".into()));

    let e = jepsen_error("INFO  jepsen.util - 1\t:invoke\t:delete\tnil");
    assert_eq!(e.kind, ParseErrorKind::UnknownFunction(":delete".into()));

    let e = jepsen_error("INFO  jepsen.util - 1\t:invoke\t:read");
    assert_eq!(e.kind, ParseErrorKind::MissingField("value"));

    let e = jepsen_error("INFO  jepsen.util - 1\t:invoke\t:cas\t[1 x]");
    assert_eq!(
        e.kind,
        ParseErrorKind::BadValue {
            f: ":cas".into(),
            value: "[1 x]".into()
        }
    );

    let e = jepsen_error("INFO  jepsen.util - 1\t:invoke\t:write\t99999999999999999999999");
    assert!(
        matches!(e.kind, ParseErrorKind::BadValue { .. }),
        "overflow is a bad value: {e}"
    );
}

#[test]
fn jepsen_rejects_broken_pairing() {
    let e = jepsen_error(&format!("{INVOKE_WRITE}\n{INVOKE_WRITE}\n"));
    assert_eq!(
        e,
        ParseError {
            line: 2,
            kind: ParseErrorKind::InvokeWhileOpen {
                process: 0,
                open_line: 1
            }
        }
    );

    let e = jepsen_error("INFO  jepsen.util - 4\t:ok\t:read\t1");
    assert_eq!(
        e.kind,
        ParseErrorKind::CompletionWithoutInvoke { process: 4 }
    );

    let e = jepsen_error(&format!(
        "{INVOKE_WRITE}\nINFO  jepsen.util - 0\t:ok\t:read\t3\n"
    ));
    assert!(
        matches!(
            e.kind,
            ParseErrorKind::MismatchedCompletion { invoke_line: 1, .. }
        ),
        "{e}"
    );

    let e = jepsen_error(&format!(
        "{INVOKE_WRITE}\nINFO  jepsen.util - 0\t:ok\t:write\t4\n"
    ));
    assert!(
        matches!(
            e.kind,
            ParseErrorKind::InconsistentCompletion { invoke_line: 1, .. }
        ),
        "{e}"
    );
}

#[test]
fn jepsen_error_messages_name_the_line() {
    let e = jepsen_error("\n\nINFO  jepsen.util - 1\t:ok\t:read\tnil\n");
    assert_eq!(
        e.to_string(),
        "line 3: process 1 completed an operation it never invoked"
    );
}

#[test]
fn kv_rejects_syntax_errors_with_columns() {
    let e = kv_error("{:process 0, :type :invoke, :f :get, :key \"5\", :value nil");
    assert_eq!(e.line, 1);
    assert!(matches!(e.kind, ParseErrorKind::Syntax { .. }), "{e}");

    let e = kv_error("{:process 0, :type :invoke, :f :put, :key \"5, :value nil}");
    assert!(
        matches!(&e.kind, ParseErrorKind::Syntax { message, .. } if message.contains("unterminated")),
        "{e}"
    );

    let e = kv_error("{:process 0 :process 1}");
    assert!(
        matches!(&e.kind, ParseErrorKind::Syntax { column: 13, message } if message.contains("duplicate")),
        "{e}"
    );

    let e = kv_error("[:process 0]");
    assert_eq!(
        e.kind,
        ParseErrorKind::Syntax {
            column: 1,
            message: "expected `{`, found `[`".into()
        }
    );

    let e = kv_error("{:process 0} trailing");
    assert!(
        matches!(&e.kind, ParseErrorKind::Syntax { message, .. } if message.contains("trailing")),
        "{e}"
    );
}

#[test]
fn kv_rejects_missing_and_bad_fields() {
    let e = kv_error("{:process 0, :type :invoke, :f :get, :value nil}");
    assert_eq!(e.kind, ParseErrorKind::MissingField("key"));

    let e = kv_error("{:process -1, :type :invoke, :f :get, :key \"1\", :value nil}");
    assert_eq!(e.kind, ParseErrorKind::BadProcess("-1".into()));

    let e = kv_error("{:process 0, :type :invoke, :f :cas, :key \"1\", :value nil}");
    assert_eq!(e.kind, ParseErrorKind::UnknownFunction(":cas".into()));

    let e = kv_error("{:process 0, :type :invoke, :f :put, :key \"1\", :value nil}");
    assert_eq!(
        e.kind,
        ParseErrorKind::BadValue {
            f: ":put".into(),
            value: "nil".into()
        }
    );

    let e = kv_error(
        "{:process 0, :type :invoke, :f :get, :key \"1\", :value nil}\n\
         {:process 0, :type :ok, :f :get, :key \"2\", :value \"\"}",
    );
    assert_eq!(e.line, 2);
    assert!(
        matches!(
            e.kind,
            ParseErrorKind::InconsistentCompletion { invoke_line: 1, .. }
        ),
        "{e}"
    );
}

#[test]
fn jsonl_rejects_missing_header_and_bad_lines() {
    type Ops = (
        concord_check::JsonlHeader,
        Vec<concord_check::Operation<RegisterInput, RegisterOutput>>,
    );
    let op = r#"{"process":0,"call":1,"return":2,"input":{"f":"read"},"outcome":{"type":"ok","output":{"f":"read","value":null}}}"#;
    let e = parse_jsonl::<RegisterInput, RegisterOutput>(op).expect_err("no header");
    assert_eq!(
        e,
        ParseError {
            line: 1,
            kind: ParseErrorKind::MissingHeader
        }
    );

    let e = parse_jsonl::<RegisterInput, RegisterOutput>(
        r#"{"concord_history":9,"model":"cas-register"}"#,
    )
    .expect_err("future version");
    assert_eq!(e.kind, ParseErrorKind::UnsupportedVersion(9));

    let text =
        format!("{{\"concord_history\":1,\"model\":\"cas-register\"}}\n{op}\n{{\"process\":0}}\n");
    let e = parse_jsonl::<RegisterInput, RegisterOutput>(&text).expect_err("bad op");
    assert_eq!(e.line, 3);
    assert!(matches!(e.kind, ParseErrorKind::Json(_)));

    let good: Ops = parse_jsonl(&format!(
        "{{\"concord_history\":1,\"model\":\"cas-register\"}}\n\n{op}\n"
    ))
    .expect("valid");
    assert_eq!(good.1.len(), 1);
}

#[test]
fn check_file_reports_io_parse_and_format_errors() {
    let missing = check_file(
        Format::JepsenEtcd,
        Path::new("/nonexistent/history.log"),
        Duration::from_secs(1),
    );
    assert!(matches!(missing, Err(CheckError::Io { .. })));

    let dir = std::env::temp_dir().join(format!("concord-check-parse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.log");
    std::fs::write(&path, "INFO  jepsen.util - 0\t:ok\t:read\tnil\n").expect("write");
    let err = check_file(Format::JepsenEtcd, &path, Duration::from_secs(1)).expect_err("malformed");
    assert!(
        matches!(&err, CheckError::Parse { path: Some(p), source } if p == &path && source.line == 1)
    );
    assert!(err.to_string().contains("bad.log: line 1:"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    assert!(matches!(
        Format::from_str("edn"),
        Err(CheckError::UnknownFormat(_))
    ));
    for f in [Format::JepsenEtcd, Format::PorcupineKv, Format::Jsonl] {
        assert_eq!(Format::from_str(f.as_str()).expect("round trip"), f);
    }
}

proptest! {
    #[test]
    fn parsers_never_panic(text in "\\PC{0,200}") {
        let _ = parse_jepsen_etcd(&text);
        let _ = parse_porcupine_kv(&text);
        let _ = parse_jsonl::<RegisterInput, RegisterOutput>(&text);
    }

    #[test]
    fn parsers_never_panic_on_near_misses(
        process in "[0-9x-]{0,3}",
        kind in prop_oneof![Just(":invoke"), Just(":ok"), Just(":fail"), Just(":info"), Just(":x")],
        f in prop_oneof![Just(":read"), Just(":write"), Just(":cas"), Just(":get"), Just(":append")],
        value in prop_oneof![Just("nil"), Just("3"), Just("[1 2]"), Just("[1"), Just(":timed-out"), Just("\"s\"")],
        lines in 1usize..4,
    ) {
        let jepsen = format!("INFO  jepsen.util - {process}\t{kind}\t{f}\t{value}\n").repeat(lines);
        let _ = parse_jepsen_etcd(&jepsen);
        let kv = format!("{{:process {process}, :type {kind}, :f {f}, :key \"1\", :value {value}}}\n").repeat(lines);
        let _ = parse_porcupine_kv(&kv);
    }
}
