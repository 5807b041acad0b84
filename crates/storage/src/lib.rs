//! # concord-storage: the durable state of one Raft member
//!
//! One directory holds everything a member must not forget across a crash
//! (Raft paper figure 2, "persistent state"), behind [`RaftStorage`]:
//!
//! ```text
//!  dir/
//!    0000000000000000-0000000000000001.wal   segments of the write-ahead log,
//!    0000000000000001-00000000000003e9.wal   {seq}-{first index}, in log order
//!    hardstate                               term, vote, commit (atomic replace)
//!    0000000000000400-0000000000000002.snap  snapshots {index}-{term}, newest two
//! ```
//!
//! Modules (each documents its file format and invariants at its top):
//! - `storage`: [`RaftStorage`], its contract, and recovery (`open`).
//! - `wal`: the segmented log, buffered appends, one `fdatasync` per
//!   [`RaftStorage::sync`] (group commit), rolling past a size limit, and the
//!   torn-tail rule of recovery.
//! - `record`: the checksummed record framing shared by every segment.
//! - `replay`: how records (appends, overwrites, resets) rebuild the log.
//! - `hard_state` and `snapshot`: small files replaced atomically.
//! - `terms`: the term of every index, as runs; `fsutil`: atomic replace,
//!   directory fsync, a bounds-checked reader.
//!
//! What this crate deliberately does not do: it keeps no entries in memory
//! and serves no entry reads (the runtime keeps the log it appended; this
//! crate keeps only terms, as runs), it spawns no threads and knows nothing
//! of async, and it interprets neither entry data nor snapshot data.
//!
//! Every byte read from disk is checked before it is believed: a torn final
//! record is cut (and reported in [`Recovered::notes`]), any other damage
//! stops recovery with [`StorageError::Corrupt`] naming file and offset
//! (DESIGN.md rule 2).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod fsutil;
mod hard_state;
mod record;
mod replay;
mod snapshot;
mod storage;
mod terms;
mod wal;

pub use error::{Result, StorageError};
pub use record::{
    ENTRY_DATA_BYTES_MAX, ENTRY_RECORD_OVERHEAD_BYTES, RECORD_BYTES_MAX, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_RECORD_BYTES,
};
pub use snapshot::SNAPSHOTS_KEPT;
pub use storage::{RaftStorage, Recovered, RecoveryNote, SnapshotFile, StorageOptions};
pub use wal::{
    SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_LIMIT, WRITE_FLUSH_BYTES_DEFAULT, ZERO_AHEAD_BYTES,
};
