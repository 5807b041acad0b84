//! # Parsers: history files into typed operations
//!
//! - [`jepsen`]: Jepsen's etcd logs (`INFO jepsen.util - ...` lines) into
//!   [`RegisterModel`](crate::RegisterModel) operations.
//! - [`porcupine`]: Porcupine's key-value logs (one Clojure map per line)
//!   into [`KvModel`](crate::KvModel) operations.
//! - [`jsonl`]: our own JSON lines (schema in [`crate::history`]).
//!
//! Invariants:
//! 1. No input makes a parser panic; every rejection is a [`ParseError`]
//!    with the 1-based line number.
//! 2. Times are line numbers, so they are unique and increasing, and a
//!    report points straight at the file.
//! 3. Events pair per process: an invocation opens an operation, the next
//!    completion for that process closes it, and an invocation while one is
//!    open is an error. `:info` leaves the operation open for good (it may
//!    take effect at any later point, or never); operations still open at
//!    the end of the file are `Info` too.

pub mod jepsen;
pub mod jsonl;
pub mod porcupine;

use std::collections::HashMap;

use crate::error::{ParseError, ParseErrorKind};
use crate::history::{Operation, Outcome, ProcessId, Time};

pub use jepsen::parse_jepsen_etcd;
pub use jsonl::{parse_jsonl, parse_jsonl_header};
pub use porcupine::parse_porcupine_kv;

/// An invocation waiting for its completion.
#[derive(Debug)]
pub(crate) struct Open<I> {
    /// Line of the invocation.
    pub(crate) line: usize,
    /// The function name as written (to match the completion).
    pub(crate) f: String,
    /// The parsed input.
    pub(crate) input: I,
}

/// Pairs invocations with completions per process (invariant 3).
#[derive(Debug)]
pub(crate) struct Pairer<I, O> {
    open: HashMap<u64, Open<I>>,
    ops: Vec<Operation<I, O>>,
}

impl<I, O> Pairer<I, O> {
    pub(crate) fn new() -> Self {
        Self {
            open: HashMap::new(),
            ops: Vec::new(),
        }
    }

    /// Records an invocation on `line`.
    pub(crate) fn invoke(
        &mut self,
        line: usize,
        process: u64,
        f: &str,
        input: I,
    ) -> Result<(), ParseError> {
        if let Some(open) = self.open.get(&process) {
            return Err(ParseError {
                line,
                kind: ParseErrorKind::InvokeWhileOpen {
                    process,
                    open_line: open.line,
                },
            });
        }
        self.open.insert(
            process,
            Open {
                line,
                f: f.to_owned(),
                input,
            },
        );
        Ok(())
    }

    /// Takes the open invocation of `process`, checking its function.
    pub(crate) fn take(
        &mut self,
        line: usize,
        process: u64,
        f: &str,
    ) -> Result<Open<I>, ParseError> {
        let Some(open) = self.open.remove(&process) else {
            return Err(ParseError {
                line,
                kind: ParseErrorKind::CompletionWithoutInvoke { process },
            });
        };
        if open.f != f {
            return Err(ParseError {
                line,
                kind: ParseErrorKind::MismatchedCompletion {
                    process,
                    invoked: open.f,
                    completed: f.to_owned(),
                    invoke_line: open.line,
                },
            });
        }
        Ok(open)
    }

    /// Closes `open` (taken with [`Pairer::take`]) on `line`. For `Info`
    /// the line is kept for display only: the operation stays open to
    /// +infinity (see [`crate::history`]).
    pub(crate) fn complete(
        &mut self,
        line: usize,
        process: u64,
        open: Open<I>,
        outcome: Outcome<O>,
    ) {
        self.ops.push(Operation {
            process: ProcessId(process),
            call: Time(open.line as u64),
            ret: Some(Time(line as u64)),
            input: open.input,
            outcome,
        });
    }

    /// Closes every still-open operation as `Info` and returns all of them,
    /// ordered by invocation.
    pub(crate) fn finish(mut self) -> Vec<Operation<I, O>> {
        let mut open: Vec<(u64, Open<I>)> = self.open.drain().collect();
        open.sort_by_key(|(_, o)| o.line);
        for (process, o) in open {
            self.ops.push(Operation {
                process: ProcessId(process),
                call: Time(o.line as u64),
                ret: None,
                input: o.input,
                outcome: Outcome::Info,
            });
        }
        self.ops.sort_by_key(|op| op.call);
        self.ops
    }
}

/// `line_index` (0-based) as a 1-based line number.
pub(crate) fn line_number(line_index: usize) -> usize {
    line_index + 1
}
