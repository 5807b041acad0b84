//! # concord-raft: the Raft consensus core
//!
//! A sans-IO state machine (see `shared/DESIGN.md`, rule 1). Inputs go in
//! through `Raft::step` (a peer's message), `Raft::tick` (one unit of
//! logical time), `Raft::propose` and friends; outputs come out of
//! `Raft::ready` as a `Ready`, whose documentation is the contract the
//! runtime follows: persist, then send what depended on it, then apply, then
//! tell the core with `Raft::on_persisted`.
//!
//! What this crate deliberately does not do: it never reads a clock, never
//! touches a socket, a file or a thread, and never draws unseeded randomness
//! (the election-timeout jitter comes from a PRNG seeded through [`Config`]).
//! That is what lets the simulator run the very same code under faults.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod log;
pub mod message;
pub mod progress;
pub mod raft;
pub mod ready;
mod rng;
pub mod types;

pub use config::{Config, ConfigError};
pub use message::{Message, MessageBody};
#[cfg(feature = "mistakes")]
pub use raft::Mistakes;
pub use raft::{CompactError, ProposeError, Raft, RestoredState, Role, Status};
pub use ready::{PersistMarker, ReadState, Ready, SoftState};
pub use types::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, HardState, LogIndex, NodeId, Snapshot,
    SnapshotMeta, Term,
};
