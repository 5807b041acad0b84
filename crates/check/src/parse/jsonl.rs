//! # JSON-lines histories (`--format jsonl`)
//!
//! The format the Concord harness writes with
//! [`JsonlWriter`](crate::JsonlWriter); the schema is in
//! [`crate::history`]. The first non-blank line is the header naming the
//! model; every further non-blank line is one operation.
//!
//! Invariants:
//! 1. A header with a `concord_history` version other than
//!    [`JSONL_VERSION`] is refused, so a reader never misreads a newer
//!    format.
//! 2. Operations are taken as written (times, outcomes); their invariants
//!    are checked by [`crate::check`], which reports the operation's index.

use serde::de::DeserializeOwned;

use crate::error::{ParseError, ParseErrorKind};
use crate::history::{JsonlHeader, Operation, JSONL_VERSION};

use super::line_number;

/// Reads only the header (to pick the model before parsing the rest).
pub fn parse_jsonl_header(text: &str) -> Result<JsonlHeader, ParseError> {
    let Some((index, line)) = text.lines().enumerate().find(|(_, l)| !l.trim().is_empty()) else {
        return Err(ParseError {
            line: 1,
            kind: ParseErrorKind::MissingHeader,
        });
    };
    let line_no = line_number(index);
    // A line that parses as an operation rather than a header is the
    // common mistake: say "missing header", not "unknown field".
    let header: JsonlHeader = serde_json::from_str(line).map_err(|e| ParseError {
        line: line_no,
        kind: if line.contains("\"concord_history\"") {
            ParseErrorKind::Json(e.to_string())
        } else {
            ParseErrorKind::MissingHeader
        },
    })?;
    if header.concord_history != JSONL_VERSION {
        return Err(ParseError {
            line: line_no,
            kind: ParseErrorKind::UnsupportedVersion(header.concord_history),
        });
    }
    Ok(header)
}

/// Parses a whole JSON-lines history: the header and the operations.
pub fn parse_jsonl<I: DeserializeOwned, O: DeserializeOwned>(
    text: &str,
) -> Result<(JsonlHeader, Vec<Operation<I, O>>), ParseError> {
    let header = parse_jsonl_header(text)?;
    let mut ops = Vec::new();
    let mut seen_header = false;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if !seen_header {
            seen_header = true;
            continue;
        }
        let op = serde_json::from_str(line).map_err(|e| ParseError {
            line: line_number(index),
            kind: ParseErrorKind::Json(e.to_string()),
        })?;
        ops.push(op);
    }
    Ok((header, ops))
}
