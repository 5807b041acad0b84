//! # Jepsen etcd logs (`--format jepsen-etcd`)
//!
//! One event per line, `INFO  jepsen.util - <process> <type> <f> <value>`,
//! fields separated by tabs or runs of spaces (files 100-102 use spaces);
//! a cas value contains a space (`[1 4]`). Model:
//! [`RegisterModel`](crate::RegisterModel), initially nil.
//!
//! Mapping (Porcupine's `parseJepsenLog`, which the expected verdicts come
//! from):
//! 1. `:invoke :read nil`, `:invoke :write N`, `:invoke :cas [A B]` open an
//!    operation.
//! 2. `:ok :read nil|N`, `:ok :write N`, `:ok :cas [A B]` complete it.
//! 3. `:fail :cas [A B]` completes a cas that did not apply: `Ok` with
//!    `applied: false`, legal only while the register is not `A`.
//! 4. `:fail :read :timed-out` and any other `:fail` are `Fail`. For a read
//!    this is exact: a read changes nothing, so a read with an unknown
//!    output constrains nothing, exactly like one that never happened.
//! 5. `:info ...` leaves the operation `Info` (may take effect at any point
//!    after the invocation, or never).
//! 6. A completion must repeat its invocation's value (`:ok :write 3`
//!    after `:invoke :write 3`); a mismatch is a malformed log.

use crate::error::{ParseError, ParseErrorKind};
use crate::history::{Operation, Outcome};
use crate::model::{RegisterInput, RegisterOutput};

use super::{line_number, Pairer};

/// Parses a Jepsen etcd log. Blank lines are skipped.
pub fn parse_jepsen_etcd(
    text: &str,
) -> Result<Vec<Operation<RegisterInput, RegisterOutput>>, ParseError> {
    let mut pairer = Pairer::new();
    for (index, raw) in text.lines().enumerate() {
        let line = line_number(index);
        if raw.trim().is_empty() {
            continue;
        }
        let event = split_event(raw).map_err(|kind| ParseError { line, kind })?;
        apply(&mut pairer, line, &event)?;
    }
    Ok(pairer.finish())
}

/// The fields of one event line.
struct Event<'a> {
    process: u64,
    kind: &'a str,
    f: &'a str,
    /// The rest of the line, whitespace-normalised (`[1 4]`).
    value: String,
}

fn split_event(raw: &str) -> Result<Event<'_>, ParseErrorKind> {
    let rest = raw
        .trim()
        .strip_prefix("INFO")
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix("jepsen.util"))
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix('-'))
        .ok_or(ParseErrorKind::NotAnEvent)?;
    let mut tokens = rest.split_whitespace();
    let process = tokens
        .next()
        .ok_or(ParseErrorKind::MissingField("process"))?;
    let process = process
        .parse::<u64>()
        .map_err(|_| ParseErrorKind::BadProcess(process.to_owned()))?;
    let kind = tokens.next().ok_or(ParseErrorKind::MissingField("type"))?;
    let f = tokens.next().ok_or(ParseErrorKind::MissingField("f"))?;
    let value = tokens.collect::<Vec<_>>().join(" ");
    if value.is_empty() {
        return Err(ParseErrorKind::MissingField("value"));
    }
    Ok(Event {
        process,
        kind,
        f,
        value,
    })
}

fn apply(
    pairer: &mut Pairer<RegisterInput, RegisterOutput>,
    line: usize,
    event: &Event<'_>,
) -> Result<(), ParseError> {
    let err = |kind| ParseError { line, kind };
    let bad_value = || {
        err(ParseErrorKind::BadValue {
            f: event.f.to_owned(),
            value: event.value.clone(),
        })
    };
    match event.kind {
        ":invoke" => {
            let input = match event.f {
                ":read" if event.value == "nil" => RegisterInput::Read,
                ":write" => RegisterInput::Write {
                    value: parse_int(&event.value).ok_or_else(bad_value)?,
                },
                ":cas" => {
                    let (expected, new) = parse_pair(&event.value).ok_or_else(bad_value)?;
                    RegisterInput::Cas { expected, new }
                }
                ":read" => return Err(bad_value()),
                other => return Err(err(ParseErrorKind::UnknownFunction(other.to_owned()))),
            };
            pairer.invoke(line, event.process, event.f, input)
        }
        ":ok" | ":fail" | ":info" => {
            if !matches!(event.f, ":read" | ":write" | ":cas") {
                return Err(err(ParseErrorKind::UnknownFunction(event.f.to_owned())));
            }
            let open = pairer.take(line, event.process, event.f)?;
            let inconsistent = |detail: String| {
                err(ParseErrorKind::InconsistentCompletion {
                    invoke_line: open.line,
                    detail,
                })
            };
            let outcome = match (event.kind, open.input) {
                (":info", _) => Outcome::Info,
                (":ok", RegisterInput::Read) => {
                    let value = match event.value.as_str() {
                        "nil" => None,
                        v => Some(parse_int(v).ok_or_else(bad_value)?),
                    };
                    Outcome::Ok(RegisterOutput::Read { value })
                }
                (":ok", RegisterInput::Write { value }) => {
                    let acked = parse_int(&event.value).ok_or_else(bad_value)?;
                    if acked != value {
                        return Err(inconsistent(format!("wrote {value}, acknowledged {acked}")));
                    }
                    Outcome::Ok(RegisterOutput::Write)
                }
                // `:fail :read :timed-out`, `:fail :write ...` (rule 4).
                (_, RegisterInput::Read | RegisterInput::Write { .. }) => Outcome::Fail,
                // Only `:ok` and `:fail` are left (rules 2 and 3).
                (kind, RegisterInput::Cas { expected, new }) => match parse_pair(&event.value) {
                    Some(pair) if pair == (expected, new) => Outcome::Ok(RegisterOutput::Cas {
                        applied: kind == ":ok",
                    }),
                    Some((a, b)) => {
                        return Err(inconsistent(format!(
                            "invoked cas [{expected} {new}], completed [{a} {b}]"
                        )))
                    }
                    // `:fail :cas <error>`: did not happen at all.
                    None if kind == ":fail" => Outcome::Fail,
                    None => return Err(bad_value()),
                },
            };
            pairer.complete(line, event.process, open, outcome);
            Ok(())
        }
        other => Err(err(ParseErrorKind::UnknownType(other.to_owned()))),
    }
}

fn parse_int(s: &str) -> Option<i64> {
    s.parse().ok()
}

/// `[A B]` as `(A, B)`.
fn parse_pair(s: &str) -> Option<(i64, i64)> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let mut parts = inner.split_whitespace();
    let a = parse_int(parts.next()?)?;
    let b = parse_int(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabs_and_spaces_both_split() {
        let text = "INFO  jepsen.util - 4\t:invoke\t:cas\t[1 4]\n\
                    INFO  jepsen.util - 4   :fail   :cas    [1 4]\n";
        let ops = parse_jepsen_etcd(text).expect("valid");
        assert_eq!(ops.len(), 1);
        assert_eq!(
            ops[0].input,
            RegisterInput::Cas {
                expected: 1,
                new: 4
            }
        );
        assert_eq!(
            ops[0].outcome,
            Outcome::Ok(RegisterOutput::Cas { applied: false })
        );
        assert_eq!((ops[0].call.0, ops[0].ret.map(|t| t.0)), (1, Some(2)));
    }

    #[test]
    fn open_operations_become_info() {
        let text = "INFO  jepsen.util - 0\t:invoke\t:write\t3\n";
        let ops = parse_jepsen_etcd(text).expect("valid");
        assert_eq!(ops[0].outcome, Outcome::Info);
        assert_eq!(ops[0].ret, None);
    }
}
