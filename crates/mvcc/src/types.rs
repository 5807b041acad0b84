//! Plain Rust mirrors of etcd v3's KV, lease and event messages.
//!
//! This module owns the request, response and event types that the store
//! speaks. They mirror the fields of etcd's `rpc.proto` and `kv.proto`
//! (v3.4) one for one, so the API layer maps protobufs to them mechanically,
//! but they are not protobuf types: only the API crate knows protobuf.
//!
//! Invariants:
//! 1. Field meanings are etcd's. Where this module deviates (an enum instead
//!    of a `oneof` plus a loose enum), the doc comment on the type says how the
//!    API layer maps etcd's representation.
//! 2. Revisions in these wire mirrors are plain `i64`, exactly as on the wire
//!    (0 often means "unset"); store-level APIs use the [`Revision`] newtype.
//! 3. Every type here is a value: no handles into the store, no borrowed data.

use serde::{Deserialize, Serialize};

/// An etcd store revision: the cluster-wide counter that every modifying
/// request bumps by exactly one. An empty store is at revision 1.
///
/// A newtype so that a revision cannot be confused with a Raft log index.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Revision(pub i64);

impl Revision {
    /// The revision of a store that has never been written.
    pub const INITIAL: Revision = Revision(1);

    /// The raw value, as etcd puts it on the wire.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Revision of the key's last creation (0 in a DELETE event's `kv`).
    pub create_revision: i64,
    /// Revision of the key's last modification (the deletion revision in a
    /// DELETE event's `kv`).
    pub mod_revision: i64,
    /// Number of modifications since creation, starting at 1; 0 once deleted.
    pub version: i64,
    /// The value (empty when the request asked for `keys_only`).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The attached lease id, 0 for none.
    pub lease: i64,
}

/// `RangeRequest.SortOrder`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortOrder {
    /// No explicit order (see [`RangeRequest::sort_target`] for etcd's quirk).
    #[default]
    None,
    /// Lowest target first.
    Ascend,
    /// Highest target first.
    Descend,
}

/// `RangeRequest.SortTarget`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortTarget {
    /// Sort by key bytes.
    #[default]
    Key,
    /// Sort by `version`.
    Version,
    /// Sort by `create_revision`.
    Create,
    /// Sort by `mod_revision`.
    Mod,
    /// Sort by value bytes.
    Value,
}

/// etcd's `RangeRequest`.
///
/// Key range rules (shared with [`DeleteRangeRequest`] and [`Compare`]):
/// `range_end` empty means the single key `key`; `range_end == [0]` means
/// every key `>= key`; otherwise the half-open interval `[key, range_end)`
/// (a prefix `p` is `[p, p+1)`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeRequest {
    /// First key of the range.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// End of the range, see the type's documentation.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Maximum number of kvs returned; `<= 0` means no limit.
    pub limit: i64,
    /// Point-in-time revision to read at; `<= 0` means the current one.
    pub revision: i64,
    /// Sort order. etcd quirk, reproduced: with `None` and a target other
    /// than `Key`, the result is sorted ascending by that target.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Serializable (member-local) read. The store ignores it; it is the
    /// runtime's decision whether to go through ReadIndex first.
    pub serializable: bool,
    /// Return keys and metadata without values.
    pub keys_only: bool,
    /// Return only `count`, no kvs.
    pub count_only: bool,
    /// Drop kvs whose `mod_revision` is lower (0 = no filter).
    pub min_mod_revision: i64,
    /// Drop kvs whose `mod_revision` is higher (0 = no filter).
    pub max_mod_revision: i64,
    /// Drop kvs whose `create_revision` is lower (0 = no filter).
    pub min_create_revision: i64,
    /// Drop kvs whose `create_revision` is higher (0 = no filter).
    pub max_create_revision: i64,
}

/// etcd's `RangeResponse` (the header is reduced to its revision).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeResponse {
    /// `header.revision`: the store revision the read was served at (the
    /// current revision, even for a point-in-time read, as etcd does).
    pub revision: i64,
    /// The key-values, after filters, sort and limit.
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result.
    pub more: bool,
    /// Number of keys in the range at the read revision, counted before
    /// `limit` and before the min/max revision filters (etcd 3.4 semantics:
    /// the filters prune `kvs` only).
    pub count: i64,
}

/// etcd's `PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PutRequest {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Lease to attach, 0 for none (detaches any previous lease).
    pub lease: i64,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

/// etcd's `PutResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PutResponse {
    /// `header.revision`: the key's new `mod_revision`.
    pub revision: i64,
    /// The previous key-value, if asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// etcd's `DeleteRangeRequest` (range rules as on [`RangeRequest`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    /// First key of the range.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// End of the range.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// etcd's `DeleteRangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    /// `header.revision`: the deletion revision, or the unchanged current
    /// revision when nothing was deleted.
    pub revision: i64,
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted key-values, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// What a [`Compare`] looks at, with the operand.
///
/// etcd carries the target as an enum and the operand in a `oneof`; when the
/// two disagree etcd compares against the zero value, so the API layer maps
/// a missing or mismatched operand to `Version(0)`, `Value(vec![])` and so on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareTarget {
    /// Compare `version`.
    Version(i64),
    /// Compare `create_revision`.
    Create(i64),
    /// Compare `mod_revision`.
    Mod(i64),
    /// Compare the value bytes. Always false for a missing key (etcd: no way
    /// to tell a missing value from an empty one).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Compare the lease id.
    Lease(i64),
}

/// `Compare.CompareResult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareResult {
    /// `==`
    Equal,
    /// `>`
    Greater,
    /// `<`
    Less,
    /// `!=`
    NotEqual,
}

/// etcd's `Compare`. With a `range_end`, every key in the range must satisfy
/// it; an empty range compares against a zero-valued key-value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Compare {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Optional end of range (rules as on [`RangeRequest`]).
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// The relation that must hold: `kv.target <result> operand`.
    pub result: CompareResult,
    /// The target and operand.
    pub target: CompareTarget,
}

/// etcd's `RequestOp`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestOp {
    /// A range read.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
}

/// etcd's `TxnRequest`.
///
/// Decoding rejects nesting deeper than [`crate::TXN_NESTING_MAX`] so that a
/// hostile log entry cannot overflow the stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct TxnRequest {
    /// All must hold for `success` to run, else `failure` runs.
    pub compare: Vec<Compare>,
    /// Ops run when every compare holds.
    pub success: Vec<RequestOp>,
    /// Ops run otherwise.
    pub failure: Vec<RequestOp>,
}

/// etcd's `ResponseOp`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResponseOp {
    /// Answer to a range.
    Range(RangeResponse),
    /// Answer to a put.
    Put(PutResponse),
    /// Answer to a delete.
    DeleteRange(DeleteRangeResponse),
    /// Answer to a nested transaction.
    Txn(TxnResponse),
}

/// etcd's `TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnResponse {
    /// `header.revision`: the revision after the transaction. For a nested
    /// transaction it is 0, as etcd 3.4 leaves nested headers empty.
    pub revision: i64,
    /// Whether the compares held.
    pub succeeded: bool,
    /// One response per op of the branch that ran.
    pub responses: Vec<ResponseOp>,
}

/// etcd's `CompactionRequest`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompactionRequest {
    /// Compact history below this revision.
    pub revision: i64,
    /// etcd waits for the physical removal. Concord always removes the
    /// history inside the apply, so this flag changes nothing here.
    pub physical: bool,
}

/// etcd's `CompactionResponse`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompactionResponse {
    /// `header.revision`: the current revision (compaction does not bump it).
    pub revision: i64,
}

/// etcd's `LeaseGrantRequest`, after the leader has filled in the id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseGrantRequest {
    /// Lease id; 0 is rejected (the leader picks an id before proposing, as
    /// etcd's server does).
    pub id: i64,
    /// Requested TTL in seconds. The store keeps it as given: clamping to the
    /// minimum TTL is the proposer's job, so every member applies the same.
    pub ttl: i64,
}

/// etcd's `LeaseGrantResponse`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    /// `header.revision`: the current revision.
    pub revision: i64,
    /// The granted lease id.
    pub id: i64,
    /// The granted TTL in seconds.
    pub ttl: i64,
}

/// etcd's `LeaseRevokeRequest` (also what the leader proposes on expiry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRevokeRequest {
    /// Lease id.
    pub id: i64,
}

/// etcd's `LeaseRevokeResponse`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRevokeResponse {
    /// `header.revision`: the revision after the attached keys were deleted.
    pub revision: i64,
}

/// One entry of etcd's `LeaseCheckpointRequest`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseCheckpoint {
    /// Lease id (unknown ids are ignored, as in etcd).
    pub id: i64,
    /// Remaining TTL in seconds, persisted so it survives a leader change.
    pub remaining_ttl: i64,
}

/// etcd's `LeaseCheckpointRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseCheckpointRequest {
    /// The checkpoints.
    pub checkpoints: Vec<LeaseCheckpoint>,
}

/// etcd's `LeaseCheckpointResponse`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseCheckpointResponse {
    /// `header.revision`: the current revision.
    pub revision: i64,
}

/// What the store knows about a lease (for LeaseTimeToLive, LeaseLeases
/// and the leader's lessor after a restart or leader change).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeaseInfo {
    /// Lease id.
    pub id: i64,
    /// The TTL granted, in seconds.
    pub granted_ttl: i64,
    /// The last checkpointed remaining TTL in seconds; 0 if never
    /// checkpointed (then a new leader starts from `granted_ttl`).
    pub remaining_ttl: i64,
    /// Attached keys in ascending order (empty from [`crate::StoreReader::leases`]).
    pub keys: Vec<Vec<u8>>,
}

/// `mvccpb.Event.EventType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A put (create or update).
    Put,
    /// A delete.
    Delete,
}

/// etcd's `mvccpb.Event`.
///
/// For a DELETE, `kv` holds only the key and `mod_revision` (the deletion
/// revision), exactly as etcd reports it. `prev_kv`: neither
/// [`crate::Store::apply_batch`] nor [`crate::StoreReader::events_since`]
/// fills it (neither reads previous values back); the watch layer reads it
/// with [`crate::StoreReader::prev_version`], only for watchers that ask, as
/// etcd's watch stream does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// PUT or DELETE.
    pub kind: EventKind,
    /// The key-value after the event.
    pub kv: KeyValue,
    /// The key-value before the event, if the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// Events read back from the stored history by
/// [`crate::StoreReader::events_since`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventBatch {
    /// Events in revision order (and sub-revision order within a revision).
    /// A revision is never split across batches.
    pub events: Vec<Event>,
    /// Where the next call should start: one past the last revision scanned.
    pub next_revision: i64,
    /// The store revision of the snapshot that was read.
    pub current_revision: i64,
    /// The compacted revision at that snapshot (-1 if never compacted).
    pub compact_revision: i64,
}

/// Result of [`crate::StoreReader::hash_kv`], mirroring `HashKVResponse`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashKv {
    /// crc32c over the history up to the requested revision.
    pub hash: u32,
    /// The compacted revision the hash was computed with (-1 if never).
    pub compact_revision: i64,
    /// The current store revision (`header.revision`).
    pub revision: i64,
}
