//! # concord-mvcc: the strong face's replicated state machine
//!
//! An MVCC key-value store with etcd v3.4's semantics, persisted in redb.
//! Raft delivers committed [`Command`]s; [`Store::apply_batch`] applies them
//! in one redb transaction together with the applied Raft index, and returns
//! each command's response and the watch [`Event`]s it produced. Reads
//! ([`StoreReader`]) run on an in-memory key index and redb read
//! transactions, concurrently with applies.
//!
//! The layout is etcd's: redb holds every version keyed by its revision
//! (so a batch of puts appends to a few pages), and an in-memory index maps
//! each key to its revisions (rebuilt at open). See `schema.rs`, `index.rs`
//! and `store.rs` for the invariants that make readers consistent.
//!
//! What the store reproduces from etcd: one cluster revision bumped once per
//! modifying request; `create_revision`, `mod_revision` and `version` per
//! key; Range with every option (including etcd's quirks about sorting and
//! `count`); Put with leases and the `ignore_*` flags; DeleteRange; Txn with
//! nested transactions, evaluated the way etcd's applier does; Compact;
//! leases and their revoke; history for watches; HashKV; error messages.
//!
//! What it deliberately does not do: it knows no protobuf types (the API
//! layer maps them to [`types`]); it never reads a clock (lease expiry is
//! the leader's decision, replicated as a [`Command::LeaseRevoke`]); it
//! does not watch (the runtime feeds the events to watchers, and uses
//! [`StoreReader::events_since`] for watches that start in the past); it
//! does not enforce the space quota or request size limits.
//!
//! Read `schema.rs` for the table layout and its invariants, `store.rs`
//! for how readers stay consistent with the writer, and the documentation
//! of [`Store`] for the contract with the runtime.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apply;
pub mod check;
mod chunks;
mod command;
mod error;
mod index;
mod migrate;
mod pending;
mod read;
mod schema;
mod snapshot;
mod store;
pub mod types;

pub use apply::LEASE_TTL_MAX_SECS;
pub use command::{Command, CommandOutput, Response, COMMAND_FORMAT_V1, TXN_NESTING_MAX};
pub use error::{DecodeError, MvccError};
pub use snapshot::SnapshotMeta;
pub use store::{
    CommitDurability, Mistakes, Store, StoreOptions, StoreReader, CACHE_SIZE_BYTES_DEFAULT,
    DURABLE_COMMIT_EVERY_COMMANDS_DEFAULT, MAX_PENDING_BATCHES_DEFAULT, MAX_PENDING_BYTES_DEFAULT,
    MAX_PENDING_COMMANDS_DEFAULT,
};
pub use types::{
    CompactionRequest, CompactionResponse, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, DeleteRangeResponse, Event, EventBatch, EventKind, HashKv, KeyValue,
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseInfo, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, Revision, SortOrder,
    SortTarget, TxnRequest, TxnResponse,
};
