//! # Histories: what the clients did and what they saw
//!
//! A history is a list of [`Operation`]s. Each one is a call by one process
//! (a client that runs one operation at a time), with the time it was
//! invoked, the time its completion was observed, the model input, and an
//! [`Outcome`]:
//!
//! - `Ok(output)`: it completed and returned `output`; it took effect exactly
//!   once, at some instant between `call` and `ret`.
//! - `Fail`: it definitely did not take effect (the store refused it). The
//!   checker drops it.
//! - `Info`: unknown (a timeout, a lost connection). It may have taken effect
//!   at any instant after `call`, or never, and its output is unknown. The
//!   checker treats it as completing at +infinity; `ret`, if present, is only
//!   shown in reports.
//!
//! Times are opaque `u64`s: an ordinal (a line number) or nanoseconds since
//! the start of the test, as long as one clock is used for the whole history.
//! Two events at the same time count as concurrent.
//!
//! Invariants of an [`Operation`] (validated by [`crate::check`], the gateway
//! for every history, whatever its source):
//! 1. `ret >= call` when `ret` is present.
//! 2. `Ok` and `Fail` operations have a `ret`.
//! 3. An `Ok` output has the shape of its input (a read returns a value, a
//!    write returns nothing); see [`crate::Model::fits`].
//!
//! ## JSON lines
//!
//! The harness writes one JSON object per line with [`JsonlWriter`]. The
//! first line is a header naming the model and the format version:
//!
//! ```json
//! {"concord_history":1,"model":"kv-cas-register"}
//! ```
//!
//! Every further line is one operation:
//!
//! ```json
//! {"process":3,"call":1700,"return":2350,"input":{"key":"k1","f":"cas","expected":1,"new":4},"outcome":{"type":"ok","output":{"f":"cas","applied":true}}}
//! {"process":4,"call":1800,"input":{"key":"k1","f":"write","value":7},"outcome":{"type":"info"}}
//! ```
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `process` | u64 | the client; one operation at a time per process |
//! | `call` | u64 | invocation time |
//! | `return` | u64, optional | completion time; required unless `info` |
//! | `input` | object | the model's input, tagged by `"f"` (below) |
//! | `outcome` | object | `{"type":"ok","output":O}`, `{"type":"fail"}` or `{"type":"info"}` |
//!
//! Inputs and outputs per `model` (keyed models add `"key":"<string>"` to
//! the input object, beside `"f"`):
//!
//! | model | inputs | outputs |
//! |---|---|---|
//! | `cas-register`, `kv-cas-register` | `{"f":"read"}`, `{"f":"write","value":i64}`, `{"f":"cas","expected":i64,"new":i64}` | `{"f":"read","value":i64 or null}`, `{"f":"write"}`, `{"f":"cas","applied":bool}` |
//! | `kv-get-put-append` | `{"f":"get"}`, `{"f":"put","value":str}`, `{"f":"append","value":str}` | `{"f":"get","value":str}`, `{"f":"put"}`, `{"f":"append"}` |
//! | `mutex`, `kv-mutex` | `{"f":"acquire"}`, `{"f":"release","token":u64}` | `{"f":"acquire","token":u64}`, `{"f":"release"}` |
//!
//! Operations may appear in any order; the checker sorts by time.

use std::fmt;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::model::ModelKind;

/// The version written in [`JsonlHeader::concord_history`]. Bump it when
/// the line format changes incompatibly, so old readers refuse new files.
pub const JSONL_VERSION: u32 = 1;

/// A client process: one operation outstanding at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProcessId(pub u64);

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An instant on the history's single clock (an ordinal or nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(pub u64);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How an operation ended, as far as the client knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "output", rename_all = "lowercase")]
pub enum Outcome<O> {
    /// Completed with this output; took effect exactly once within
    /// `[call, ret]`.
    Ok(O),
    /// Definitely did not take effect.
    Fail,
    /// Unknown: may take effect at any point after `call`, or never.
    Info,
}

/// One client operation: invocation, completion and result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation<I, O> {
    /// The process (client) that ran it.
    pub process: ProcessId,
    /// When it was invoked.
    pub call: Time,
    /// When its completion was observed; `None` if never (an `Info` whose
    /// client gave up silently, or a history cut short).
    #[serde(rename = "return", default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Time>,
    /// The model input (what was asked).
    pub input: I,
    /// How it ended.
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    /// A completed operation.
    pub fn ok(process: u64, call: u64, ret: u64, input: I, output: O) -> Self {
        Self {
            process: ProcessId(process),
            call: Time(call),
            ret: Some(Time(ret)),
            input,
            outcome: Outcome::Ok(output),
        }
    }

    /// An operation whose outcome is unknown (may happen after `call`, or
    /// never).
    pub fn info(process: u64, call: u64, input: I) -> Self {
        Self {
            process: ProcessId(process),
            call: Time(call),
            ret: None,
            input,
            outcome: Outcome::Info,
        }
    }

    /// An operation that definitely did not take effect.
    pub fn fail(process: u64, call: u64, ret: u64, input: I) -> Self {
        Self {
            process: ProcessId(process),
            call: Time(call),
            ret: Some(Time(ret)),
            input,
            outcome: Outcome::Fail,
        }
    }

    /// The output, if the operation completed with one.
    pub fn output(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Ok(output) => Some(output),
            Outcome::Fail | Outcome::Info => None,
        }
    }
}

/// The first line of a JSON-lines history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonlHeader {
    /// Format version; [`JSONL_VERSION`] when written by this crate.
    pub concord_history: u32,
    /// The model the operations are checked against.
    pub model: ModelKind,
}

/// Writes a JSON-lines history: the header on construction, then one line
/// per [`JsonlWriter::write_op`]. Streaming, so a harness can record as it
/// goes and lose at most the line being written if it crashes.
#[derive(Debug)]
pub struct JsonlWriter<W: Write> {
    out: W,
}

impl<W: Write> JsonlWriter<W> {
    /// Writes the header for `model` and returns the writer.
    pub fn new(mut out: W, model: ModelKind) -> io::Result<Self> {
        let header = JsonlHeader {
            concord_history: JSONL_VERSION,
            model,
        };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        Ok(Self { out })
    }

    /// Appends one operation as one line.
    pub fn write_op<I: Serialize, O: Serialize>(&mut self, op: &Operation<I, O>) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, op)?;
        self.out.write_all(b"\n")
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Serializes a whole history (header and operations) to a string.
pub fn to_jsonl<I: Serialize, O: Serialize>(model: ModelKind, ops: &[Operation<I, O>]) -> String {
    let mut writer = match JsonlWriter::new(Vec::new(), model) {
        Ok(writer) => writer,
        // Writing to a Vec cannot fail; serializing our own types cannot
        // either (no maps with non-string keys).
        Err(err) => unreachable!("writing JSON to memory failed: {err}"),
    };
    for op in ops {
        if let Err(err) = writer.write_op(op) {
            unreachable!("writing JSON to memory failed: {err}");
        }
    }
    let bytes = writer.out;
    String::from_utf8(bytes)
        .unwrap_or_else(|err| unreachable!("serde_json wrote invalid UTF-8: {err}"))
}
