//! Filling Raft snapshots for followers, off the loop thread.
//!
//! A member's own snapshot is a reference: the member table plus the
//! promise that its store is durable through the snapshot's index
//! (`replica::SNAPSHOT_FORMAT_REFERENCE`), so compaction costs one durable
//! store commit and a small file, never a copy of the store. (The earlier
//! design serialized the whole store, history included, at every compaction:
//! 370 MB at a million keys, which stalled the loop past the election
//! timeout and later cost a disk's worth of writes in the background.) The
//! Raft core keeps no snapshot bytes in memory either; when a follower needs
//! the snapshot, the core asks for them and this module builds the full form
//! from the live store on a background thread:
//!
//! ```text
//!  loop: Ready.load_snapshot(index) ──load(file, reader)──▶ thread
//!        thread: member table from the file + one consistent store view
//!  loop ◀── Loaded{index, data} ──  raft.provide_snapshot_data
//! ```
//!
//! Invariant: the store view may be newer than the snapshot's index (the
//! loop keeps applying meanwhile). That is safe: applying is idempotent by
//! Raft index (the store skips entries at or below its own applied index),
//! so a follower that installs the snapshot and replays the log after the
//! index reaches the same state, and membership changes after the index are
//! replayed into the member table from the log.

use crate::inbox::InboxSender;
use crate::replica::{decode_snapshot, encode_snapshot, Request};
use bytes::Bytes;
use concord_mvcc::StoreReader;
use concord_raft::LogIndex;
use concord_storage::RaftStorage;
use std::path::PathBuf;

/// What a background snapshot thread reports to the loop.
pub enum SnapshotEvent {
    /// A snapshot's full data was built for a follower.
    Loaded {
        /// The snapshot's index.
        index: LogIndex,
        /// The data, or why it could not be built.
        data: Result<Bytes, String>,
    },
}

/// Builds the full data of the snapshot at `index` (its file at `path`) from
/// the member table it records and the live store, on a background thread.
pub(crate) fn spawn_load(
    index: LogIndex,
    path: PathBuf,
    reader: StoreReader,
    inbox: InboxSender<Request>,
) {
    let job = move || -> Result<Bytes, String> {
        let snapshot = RaftStorage::read_snapshot_file(&path).map_err(|e| e.to_string())?;
        let (members, _) = decode_snapshot(&snapshot.data)?;
        encode_snapshot(&members, &reader).map_err(|e| e.to_string())
    };
    let inbox_for_failure = inbox.clone();
    let spawned = std::thread::Builder::new()
        .name("concord-snapshot".into())
        .spawn(move || {
            let data = job();
            // A stopped loop no longer needs the result.
            let _ = inbox.send(Request::Snapshot(SnapshotEvent::Loaded { index, data }));
        });
    if let Err(e) = spawned {
        let _ = inbox_for_failure.send(Request::Snapshot(SnapshotEvent::Loaded {
            index,
            data: Err(format!("cannot start a snapshot thread: {e}")),
        }));
    }
}
