//! # Errors: the input's fault, never a verdict
//!
//! Two kinds of failure can happen while checking, and neither is a
//! verdict:
//! - [`ParseError`]: a history file is malformed. Always carries the
//!   1-based line number; the parsers never panic on any input.
//! - [`CheckError`]: the file cannot be read, cannot be parsed, or holds an
//!   operation that breaks the history invariants.
//!
//! Nothing is modified by a failed check (the checker only reads), so every
//! error is safe to report and retry. A non-linearizable history is not an
//! error: it is [`crate::Verdict::NotLinearizable`]. Running out of time or
//! memory is not an error either: it is [`crate::Verdict::Unknown`].

use std::io;
use std::path::PathBuf;

/// A malformed line in a history file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub kind: ParseErrorKind,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// Not of the form `INFO  jepsen.util - <process> <type> <f> <value>`.
    #[error("not a `INFO jepsen.util - <process> <type> <f> <value>` event")]
    NotAnEvent,
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// The process is not a non-negative integer.
    #[error("bad process id `{0}`")]
    BadProcess(String),
    /// The event type is not `:invoke`, `:ok`, `:fail` or `:info`.
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    /// The function is not one the format knows.
    #[error("unknown function `{0}`")]
    UnknownFunction(String),
    /// The value does not fit the function.
    #[error("bad value `{value}` for `{f}`")]
    BadValue {
        /// The function.
        f: String,
        /// The value as written.
        value: String,
    },
    /// A process invoked while its previous operation was still open.
    #[error("process {process} invoked while its operation from line {open_line} is still open")]
    InvokeWhileOpen {
        /// The process.
        process: u64,
        /// Where the open operation was invoked.
        open_line: usize,
    },
    /// A completion for a process with no open operation.
    #[error("process {process} completed an operation it never invoked")]
    CompletionWithoutInvoke {
        /// The process.
        process: u64,
    },
    /// A completion whose function differs from the invocation's.
    #[error(
        "process {process} completed `{completed}` but invoked `{invoked}` on line {invoke_line}"
    )]
    MismatchedCompletion {
        /// The process.
        process: u64,
        /// The invoked function.
        invoked: String,
        /// The completed function.
        completed: String,
        /// Where it was invoked.
        invoke_line: usize,
    },
    /// A completion that contradicts its invocation (a different key, or a
    /// write acknowledging another value).
    #[error("completion does not match the invocation on line {invoke_line}: {detail}")]
    InconsistentCompletion {
        /// Where it was invoked.
        invoke_line: usize,
        /// What differs.
        detail: String,
    },
    /// A syntax error inside a Clojure map line.
    #[error("syntax error at column {column}: {message}")]
    Syntax {
        /// 1-based column (in characters).
        column: usize,
        /// What was expected.
        message: String,
    },
    /// A JSON-lines line is not valid JSON for the schema.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A JSON-lines file without its header line.
    #[error("missing header line `{{\"concord_history\":1,\"model\":...}}`")]
    MissingHeader,
    /// A JSON-lines header of a version this crate cannot read.
    #[error("unsupported history version {0}")]
    UnsupportedVersion(u32),
}

/// Why a history could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is malformed.
    #[error("{}: {source}", path.as_ref().map_or_else(|| "<history>".to_owned(), |p| p.display().to_string()))]
    Parse {
        /// The file, if the history came from one.
        path: Option<PathBuf>,
        /// Where and what.
        #[source]
        source: ParseError,
    },
    /// An operation breaks the history invariants (see [`crate::history`]).
    #[error("operation {index}: {reason}")]
    InvalidOperation {
        /// Its index in the history.
        index: usize,
        /// Which invariant.
        reason: String,
    },
    /// `--format` named no known format.
    #[error("unknown history format `{0}` (expected jepsen-etcd, porcupine-kv or jsonl)")]
    UnknownFormat(String),
}

impl From<ParseError> for CheckError {
    fn from(source: ParseError) -> Self {
        CheckError::Parse { path: None, source }
    }
}
