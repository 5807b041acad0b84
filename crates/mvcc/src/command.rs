//! Replicated commands: what goes into a Raft log entry, and what applying
//! one returns.
//!
//! Invariants:
//! 1. The encoding is `[COMMAND_FORMAT_V1] ++ postcard(Command)`. The leading
//!    byte versions the format; a decoder that meets an unknown version
//!    refuses the entry instead of guessing.
//! 2. [`Command::decode`] is the gateway from disk and network: it never
//!    panics, rejects trailing bytes, and bounds transaction nesting at
//!    [`TXN_NESTING_MAX`] so garbage cannot overflow the stack.
//! 3. Applying a command is deterministic: the same command applied to the
//!    same state gives the same state, response and events on every member.

use std::cell::Cell;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::DecodeError;
use crate::types::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, Event,
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RequestOp, Revision,
    TxnRequest, TxnResponse,
};

/// Leading byte of an encoded command, version 1 (postcard body).
pub const COMMAND_FORMAT_V1: u8 = 1;

/// Deepest transaction nesting a decoded command may have. etcd bounds
/// nesting only indirectly (every level spends from `--max-txn-ops`, 128 by
/// default), so 128 levels accepts everything etcd accepts.
pub const TXN_NESTING_MAX: u32 = 128;

/// One state-machine command, as carried by a Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Advances the applied index only (an empty entry or a configuration
    /// change, which the runtime applies elsewhere).
    Noop,
    /// KV.Put.
    Put(PutRequest),
    /// KV.DeleteRange.
    DeleteRange(DeleteRangeRequest),
    /// KV.Txn.
    Txn(TxnRequest),
    /// KV.Compact.
    Compact(CompactionRequest),
    /// Lease.LeaseGrant, with the id already chosen by the leader.
    LeaseGrant(LeaseGrantRequest),
    /// Lease.LeaseRevoke, or the leader's decision that a lease expired.
    LeaseRevoke(LeaseRevokeRequest),
    /// The leader's periodic checkpoint of remaining TTLs.
    LeaseCheckpoint(LeaseCheckpointRequest),
}

impl Command {
    /// Encodes the command for a Raft log entry.
    pub fn encode(&self) -> Vec<u8> {
        let out = vec![COMMAND_FORMAT_V1];
        // Serializing into a Vec cannot fail: every type here is plain data
        // with no custom Serialize that could return an error.
        postcard::to_extend(self, out).expect("postcard serialization into a Vec is infallible")
    }

    /// Decodes a command from a Raft log entry. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != COMMAND_FORMAT_V1 {
            return Err(DecodeError::UnknownVersion(version));
        }
        NESTING.with(|n| n.set(0));
        let (command, rest) = postcard::take_from_bytes::<Command>(body)
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        }
        Ok(command)
    }
}

thread_local! {
    /// Current `TxnRequest` nesting depth of the decode running on this
    /// thread. Thread-local because serde offers no context parameter.
    static NESTING: Cell<u32> = const { Cell::new(0) };
}

/// Decrements the nesting depth when a nested decode returns, even on error.
struct NestingGuard;

impl Drop for NestingGuard {
    fn drop(&mut self) {
        NESTING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// The derived shape of [`TxnRequest`], decoded under a depth guard.
#[derive(Deserialize)]
struct TxnRequestRepr {
    compare: Vec<Compare>,
    success: Vec<RequestOp>,
    failure: Vec<RequestOp>,
}

impl<'de> Deserialize<'de> for TxnRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let depth = NESTING.with(|n| {
            let d = n.get() + 1;
            n.set(d);
            d
        });
        let _guard = NestingGuard;
        if depth > TXN_NESTING_MAX {
            return Err(serde::de::Error::custom("transaction nesting too deep"));
        }
        let repr = TxnRequestRepr::deserialize(deserializer)?;
        Ok(TxnRequest {
            compare: repr.compare,
            success: repr.success,
            failure: repr.failure,
        })
    }
}

/// The answer to one applied command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The command's index was at or below the applied index: it had been
    /// applied before (replay after a restart) and was skipped. Nothing
    /// changed; the original answer went to the original client.
    AlreadyApplied,
    /// A [`Command::Noop`] was applied.
    Noop,
    /// Answer to [`Command::Put`].
    Put(PutResponse),
    /// Answer to [`Command::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Answer to [`Command::Txn`].
    Txn(TxnResponse),
    /// Answer to [`Command::Compact`].
    Compact(CompactionResponse),
    /// Answer to [`Command::LeaseGrant`].
    LeaseGrant(LeaseGrantResponse),
    /// Answer to [`Command::LeaseRevoke`].
    LeaseRevoke(LeaseRevokeResponse),
    /// Answer to [`Command::LeaseCheckpoint`].
    LeaseCheckpoint(LeaseCheckpointResponse),
}

/// What applying one command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// The Raft index of the command.
    pub index: u64,
    /// The store revision right after this command.
    pub revision: Revision,
    /// The response for the client.
    pub response: Response,
    /// The events this command produced, in order, for the watchers. All
    /// share one revision (a command bumps the revision at most once).
    pub events: Vec<Event>,
}
