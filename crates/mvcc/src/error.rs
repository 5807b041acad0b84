//! Errors of the MVCC store.
//!
//! Invariants:
//! 1. A variant that etcd also reports has etcd's exact message as its
//!    `Display` (clients match errors by message), and
//!    [`MvccError::grpc_code_name`] gives etcd's gRPC status code for it.
//! 2. Request errors ([`MvccError::is_request_error`]) are returned before
//!    the command changed anything: a failed command leaves the state as it
//!    was, except that its Raft index still counts as applied.
//! 3. The others (`Storage`, `Corrupt`, `Snapshot`, `Invariant`, `Io`) are
//!    the operator's problem, not the client's; when `apply_batch` returns
//!    one, the whole batch was not applied.

/// Errors from applying commands and reading the store.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// The requested revision is below the compacted revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The store's compacted revision (watchers report it to clients).
        compact_revision: i64,
    },
    /// The requested revision is above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision {
        /// The store's current revision.
        current_revision: i64,
    },
    /// A Put or a revoke names a lease that does not exist, or a grant has id 0.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant names a lease id that already exists.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant asks for more than [`crate::LEASE_TTL_MAX_SECS`].
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a non-empty value (API-layer check).
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a non-zero lease (API-layer check).
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// An empty key (API-layer check).
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A transaction writes the same key twice (or puts a key it deletes).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A transaction has more ops than the configured maximum.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// redb failed. Nothing of the current batch or call took effect.
    /// Boxed so that every `Result` on the hot path stays small.
    #[error("concord: mvcc storage error: {0}")]
    Storage(Box<redb::Error>),
    /// Stored bytes do not decode: the file is damaged or from elsewhere.
    #[error("concord: mvcc store is corrupt: {0}")]
    Corrupt(String),
    /// A snapshot stream is malformed or fails its checksum; the store was
    /// left as it was.
    #[error("concord: mvcc snapshot rejected: {0}")]
    Snapshot(String),
    /// A store invariant does not hold: a bug. Like `Storage`, the batch
    /// or call had no effect; the node should stop rather than diverge.
    #[error("concord: mvcc invariant violated: {0}")]
    Invariant(String),
    /// Reading or writing a snapshot stream failed.
    #[error("concord: mvcc snapshot i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl MvccError {
    /// The gRPC status code etcd answers with, by its canonical name
    /// (`tonic::Code` has one variant per name).
    pub fn grpc_code_name(&self) -> &'static str {
        match self {
            MvccError::Compacted { .. } | MvccError::FutureRevision { .. } => "OutOfRange",
            MvccError::LeaseTtlTooLarge => "OutOfRange",
            MvccError::LeaseNotFound => "NotFound",
            MvccError::LeaseExists => "FailedPrecondition",
            MvccError::KeyNotFound
            | MvccError::ValueProvided
            | MvccError::LeaseProvided
            | MvccError::EmptyKey
            | MvccError::DuplicateKey
            | MvccError::TooManyOps => "InvalidArgument",
            MvccError::Storage(_)
            | MvccError::Corrupt(_)
            | MvccError::Snapshot(_)
            | MvccError::Invariant(_)
            | MvccError::Io(_) => "Internal",
        }
    }

    /// True for errors caused by the request (the client's fault, nothing
    /// changed); false for storage, corruption, snapshot and invariant
    /// failures (the operator's problem).
    pub fn is_request_error(&self) -> bool {
        !matches!(
            self,
            MvccError::Storage(_)
                | MvccError::Corrupt(_)
                | MvccError::Snapshot(_)
                | MvccError::Invariant(_)
                | MvccError::Io(_)
        )
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for MvccError {
            fn from(e: $t) -> Self {
                MvccError::Storage(Box::new(e.into()))
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Why a log entry does not decode into a [`crate::Command`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty command")]
    Empty,
    /// The leading format byte is not one this build understands.
    #[error("unknown command format version {0}")]
    UnknownVersion(u8),
    /// The body does not decode.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// The body decoded but bytes were left over.
    #[error("{0} trailing bytes after command")]
    TrailingBytes(usize),
}
