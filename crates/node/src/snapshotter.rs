//! Raft snapshots taken off the loop thread.
//!
//! Serializing the whole MVCC store (hundreds of MB at a million keys) and
//! writing it with an fsync used to run on the replica loop and stalled it
//! past the election timeout, so leaders were lost under load. Here both
//! slow halves run on a short-lived background thread each, and report back
//! through the loop's inbox:
//!
//! ```text
//!  loop: applied >= last + count ──encode(index, members, reader)──▶ thread
//!  loop ◀── Encoded{index, data} ──  (reads one consistent store view)
//!  loop: raft.compact(index, data) ──write(meta, data)──────────────▶ thread
//!  loop ◀── Written{file} ──────────  (file + fsync + rename)
//!  loop: storage.adopt_snapshot(file), store.flush, WAL compaction,
//!        raft.release_snapshot_data (the file is the copy now)
//!  ...
//!  loop: Ready.load_snapshot(index) ──load(path)─────────────────────▶ thread
//!  loop ◀── Loaded{index, data} ───  raft.provide_snapshot_data
//! ```
//!
//! The core holds the snapshot's data only while a follower needs it: at a
//! million keys that is hundreds of MB of memory otherwise kept for the
//! rare lagging follower.
//!
//! Invariants:
//! 1. At most one snapshot is in progress per member (the loop's flag).
//! 2. The member table is captured by the loop at `index`; the store view
//!    the thread reads may be newer (the loop keeps applying meanwhile).
//!    That is safe: applying is idempotent by Raft index (the store skips
//!    entries at or below its own applied index), so a member that installs
//!    the snapshot and replays the log after `index` reaches the same state,
//!    and membership changes after `index` are replayed into the table.
//! 3. The file is durable before the storage adopts it, and the WAL is
//!    compacted only below what both the snapshot and the store's durable
//!    point cover.

use crate::inbox::InboxSender;
use crate::members::Members;
use crate::replica::{encode_snapshot, Request};
use bytes::Bytes;
use concord_mvcc::StoreReader;
use concord_raft::{LogIndex, Snapshot};
use concord_storage::{RaftStorage, SnapshotFile};
use std::path::PathBuf;

/// What a background snapshot thread reports to the loop.
pub enum SnapshotEvent {
    /// The state machine was serialized for a snapshot at `index`.
    Encoded {
        /// Raft index the snapshot covers (at least).
        index: LogIndex,
        /// The payload, or why it could not be built.
        data: Result<Bytes, String>,
    },
    /// The snapshot file is durable.
    Written {
        /// The file, or why it could not be written.
        file: Result<SnapshotFile, String>,
    },
    /// A snapshot's data was read back for a follower.
    Loaded {
        /// The snapshot's index.
        index: LogIndex,
        /// The data, or why it could not be read.
        data: Result<Bytes, String>,
    },
}

/// Serializes the member table and the store on a background thread.
pub(crate) fn spawn_encode(
    index: LogIndex,
    members: Members,
    reader: StoreReader,
    inbox: InboxSender<Request>,
) {
    spawn(inbox, move || {
        let data = encode_snapshot(&members, &reader).map_err(|e| e.to_string());
        SnapshotEvent::Encoded { index, data }
    });
}

/// Writes a snapshot file durably on a background thread.
pub(crate) fn spawn_write(dir: PathBuf, snapshot: Snapshot, inbox: InboxSender<Request>) {
    spawn(inbox, move || {
        let file = RaftStorage::write_snapshot_file(&dir, &snapshot).map_err(|e| e.to_string());
        SnapshotEvent::Written { file }
    });
}

/// Reads a durable snapshot's data back on a background thread.
pub(crate) fn spawn_load(index: LogIndex, path: PathBuf, inbox: InboxSender<Request>) {
    spawn(inbox, move || {
        let data = RaftStorage::read_snapshot_file(&path)
            .map(|s| s.data)
            .map_err(|e| e.to_string());
        SnapshotEvent::Loaded { index, data }
    });
}

fn spawn(inbox: InboxSender<Request>, job: impl FnOnce() -> SnapshotEvent + Send + 'static) {
    let inbox_for_failure = inbox.clone();
    let spawned = std::thread::Builder::new()
        .name("concord-snapshot".into())
        .spawn(move || {
            // A stopped loop no longer needs the result.
            let _ = inbox.send(Request::Snapshot(job()));
        });
    if let Err(e) = spawned {
        let _ = inbox_for_failure.send(Request::Snapshot(SnapshotEvent::Written {
            file: Err(format!("cannot start a snapshot thread: {e}")),
        }));
    }
}
