//! The one error type of this crate.
//!
//! Invariants:
//! 1. Every variant that comes from the disk names the file (and, for bad
//!    bytes, the byte offset) so an operator can look at it.
//! 2. Each variant's doc says whether state changed and whose fault it is.
//!    The variants that leave the storage in an unknown state (an I/O error
//!    while writing) also poison it: every later mutating call answers
//!    [`StorageError::Poisoned`] until the directory is opened again.

use concord_raft::LogIndex;
use std::io;
use std::path::PathBuf;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation on `path` (full disk,
    /// permissions, a failed fsync). If it happened while writing, the
    /// storage is poisoned: after a failed fsync the kernel may have dropped
    /// the dirty pages, so the only safe way on is to reopen and re-read the
    /// disk (see the PostgreSQL "fsyncgate" discussion).
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation that failed, for example `"fdatasync"`.
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A file holds bytes this crate did not write: a checksum mismatch, a
    /// malformed record or header, a record cut short anywhere except the
    /// torn tail of the newest segment. Nothing was changed on disk; the
    /// node must not start until an operator has looked (DESIGN.md rule 2).
    #[error("corrupt {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record or field within the file.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },

    /// Every file is intact on its own, but together they do not describe a
    /// log: a segment is missing, the log has a gap no snapshot covers, or
    /// the hard state commits entries that are not there. Nothing was
    /// changed on disk.
    #[error("inconsistent storage in {dir}: {reason}")]
    Inconsistent {
        /// The storage directory.
        dir: PathBuf,
        /// What does not fit.
        reason: String,
    },

    /// The call broke this crate's contract (a non-contiguous append, an
    /// append at or below the snapshot, a vote for node 0, a compaction past
    /// the snapshot, invalid options). A caller bug; nothing was changed.
    #[error("rejected: {reason}")]
    Rejected {
        /// Which rule the call broke.
        reason: String,
    },

    /// One entry would not fit in a log record. Nothing was changed (no
    /// entry of the batch was written), so the caller may refuse the
    /// proposal and go on.
    #[error("entry {index} carries {bytes} bytes, over the {max} byte limit of one log record")]
    EntryTooLarge {
        /// Index of the offending entry.
        index: LogIndex,
        /// Size of its data.
        bytes: usize,
        /// The limit its data must stay under.
        max: usize,
    },

    /// The snapshot is not newer than the one already saved. An expected
    /// race (a leader's snapshot arriving after a local one); nothing was
    /// changed.
    #[error("snapshot at {offered} is not newer than the stored snapshot at {stored}")]
    StaleSnapshot {
        /// Index of the snapshot offered.
        offered: LogIndex,
        /// Index of the snapshot already stored.
        stored: LogIndex,
    },

    /// An earlier write or fsync failed, so what is on disk is unknown.
    /// Nothing was done; reopen the directory to recover.
    #[error("storage is poisoned by an earlier I/O failure; reopen it")]
    Poisoned,
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        StorageError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn rejected(reason: impl Into<String>) -> Self {
        StorageError::Rejected {
            reason: reason.into(),
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
