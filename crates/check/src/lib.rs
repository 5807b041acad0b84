//! # concord-check: is this history linearizable?
//!
//! The history checker of `concord check` (see `shared/DESIGN.md`,
//! "Verification, in layers", items 3 and 4). A test harness records every
//! client operation (who called what, when it was invoked, when and how it
//! completed); this crate decides whether some total order of those
//! operations, consistent with real time, is a legal sequential execution of
//! a model, and explains the smallest failing piece it can find when none is.
//!
//! ## Code map
//! - [`history`]: operations, outcomes (`Ok` / `Fail` / `Info`) and the
//!   JSON-lines format the harness writes.
//! - [`model`]: the [`Model`] trait and the models: a CAS register
//!   ([`RegisterModel`]), a string register with get/put/append
//!   ([`StringRegisterModel`]), a mutex with fencing tokens ([`MutexModel`]),
//!   and [`Keyed`], which turns any of them into a map of independent objects
//!   checked per key.
//! - `wgl` (private): the Wing-Gong / Lowe search for one partition, with
//!   the "linearized set + model state" memo.
//! - [`checker`]: validation, partitioning by key (P-compositionality), a
//!   time-sliced scheduler over std threads, verdicts.
//! - [`explain`]: shrinks a failing partition to a small sub-history that is
//!   still not linearizable; [`render`] draws it as a self-contained HTML page.
//! - [`parse`]: readers for Jepsen etcd logs, Porcupine's key-value logs and
//!   our own JSON lines; [`mod@file`]: the entry point for the CLI.
//!
//! ## Entry points
//! - [`check_file`]: what `concord check-history --format F FILE` calls.
//! - [`check`]: any model, any in-memory history.
//!
//! ## What this crate deliberately does not do
//! - It never runs the system under test, injects faults or records
//!   histories; the harness does, and hands the history over.
//! - It does not check weaker models (serializability, session guarantees,
//!   CRDT convergence): only linearizability against a sequential model.
//! - It never answers "linearizable" or "not linearizable" without having
//!   decided it: when the time or memory budget runs out the verdict is
//!   [`Verdict::Unknown`], never a guess.
//! - It depends on no other Concord crate, so it can check any store.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checker;
pub mod error;
pub mod explain;
pub mod file;
mod hash;
pub mod history;
pub mod model;
pub mod parse;
pub mod render;
mod wgl;

pub use checker::{check, CheckOptions, CheckReport, KeyReport, UnknownReason, Verdict};
pub use error::{CheckError, ParseError, ParseErrorKind};
pub use explain::{sub_history, ExplainedOp, Explanation, WitnessStep};
pub use file::{check_file, check_file_with, check_text, Format};
pub use history::{JsonlHeader, JsonlWriter, Operation, Outcome, ProcessId, Time};
pub use model::{
    Keyed, KeyedInput, KvCasRegisterModel, KvModel, Model, ModelKind, MutexInput, MutexModel,
    MutexOutput, MutexState, RegisterInput, RegisterModel, RegisterOutput, Step, StringInput,
    StringOutput, StringRegisterModel, Text,
};
pub use render::render_timeline_html;
