//! Feeding watchers: the seam between the store's history and the live
//! events the replica loop broadcasts after every apply.
//!
//! The replica loop never waits for a watcher: it sends each applied batch
//! of events on a bounded broadcast channel ([`crate::replica::Shared::events`])
//! that overwrites the oldest batch when full. A watcher that falls behind
//! (its receiver *lags*) therefore loses live batches, and catches up from
//! the store's history ([`concord_mvcc::StoreReader::events_since`]) instead,
//! then goes live again. The same happens when a follower installs a Raft
//! snapshot: the loop sends an empty batch, the *gap marker*, because the
//! events the snapshot covers were never broadcast here.
//!
//! The seam, for one watcher that wants every event from revision `next`:
//! ```text
//!  1. subscribe to the broadcast            (events committed later are queued)
//!  2. read history from `next` up to the store's revision R, in chunks
//!  3. next = R + 1; go live                 (nothing <= R is lost: it was in history)
//!  4. live batch: deliver events >= next, then next = batch max + 1
//!                                           (events <= R queued in 1 are skipped)
//!  5. lag or gap marker: back to 2 from `next`
//! ```
//! Step 3 is sound because the loop broadcasts a batch only after the store
//! committed it: any batch the watcher has already taken from its receiver
//! was committed before the history read started, so R covers it.
//!
//! Invariants:
//! 1. A cursor yields each event of its key range exactly once, in revision
//!    order, and never splits one revision across two results.
//! 2. A start revision below the compacted revision is reported as
//!    [`CursorError::Compacted`], never silently skipped.
//! 3. Nothing here can block the replica loop (broadcast sends never wait).

use crate::replica::Shared;
use concord_mvcc::{Event, EventBatch, MvccError};
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};

/// Events read from history per chunk (soft: a revision is never split).
pub const HISTORY_CHUNK_EVENTS: usize = 1000;

/// A key range with etcd's rules: an empty `range_end` is the single key,
/// `range_end == [0]` is every key `>= key`, otherwise `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    key: Vec<u8>,
    range_end: Vec<u8>,
}

impl KeyRange {
    /// The range `[key, range_end)` with etcd's rules.
    pub fn new(key: Vec<u8>, range_end: Vec<u8>) -> KeyRange {
        KeyRange { key, range_end }
    }

    /// The first key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The end, as given.
    pub fn range_end(&self) -> &[u8] {
        &self.range_end
    }

    /// Whether `k` is in the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        if self.range_end.is_empty() {
            k == self.key.as_slice()
        } else if self.range_end == [0] {
            k >= self.key.as_slice()
        } else {
            k >= self.key.as_slice() && k < self.range_end.as_slice()
        }
    }
}

/// The revision an event belongs to (a DELETE's `kv.mod_revision` is the
/// deletion revision).
pub fn event_revision(event: &Event) -> i64 {
    event.kv.mod_revision
}

/// Reads history on the blocking pool (redb reads may touch the disk).
pub async fn history(
    shared: &Arc<Shared>,
    start_revision: i64,
    range: &KeyRange,
    limit: usize,
) -> Result<EventBatch, MvccError> {
    let reader = shared.reader.clone();
    let (key, end) = (range.key.clone(), range.range_end.clone());
    match tokio::task::spawn_blocking(move || {
        reader.events_since(start_revision, &key, &end, limit)
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(MvccError::Invariant("history read task failed".into())),
    }
}

/// Why a cursor stopped.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// The revision the cursor needed is compacted.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The store's compacted revision.
        compact_revision: i64,
    },
    /// The member is stopping.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The store failed.
    #[error("{0}")]
    Store(MvccError),
}

impl From<MvccError> for CursorError {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::Compacted { compact_revision } => {
                CursorError::Compacted { compact_revision }
            }
            other => CursorError::Store(other),
        }
    }
}

/// Every event of one key range from a start revision on, gap-free (see
/// the module documentation). Used by the Lock and Election recipes; the
/// Watch service runs the same seam for many watchers at once.
pub struct EventCursor {
    shared: Arc<Shared>,
    rx: broadcast::Receiver<Arc<Vec<Event>>>,
    range: KeyRange,
    next: i64,
    live: bool,
}

impl EventCursor {
    /// A cursor over `range` from `start_revision` (which must be > 0).
    /// Subscribes at once, so nothing committed after this call is missed.
    pub fn new(shared: Arc<Shared>, range: KeyRange, start_revision: i64) -> EventCursor {
        let rx = shared.events.subscribe();
        EventCursor {
            shared,
            rx,
            range,
            next: start_revision.max(1),
            live: false,
        }
    }

    /// The next revision the cursor will yield events from.
    pub fn next_revision(&self) -> i64 {
        self.next
    }

    /// The next events (one or more whole revisions, at least one event).
    pub async fn next(&mut self) -> Result<Vec<Event>, CursorError> {
        loop {
            if !self.live {
                let batch =
                    history(&self.shared, self.next, &self.range, HISTORY_CHUNK_EVENTS).await?;
                self.next = self.next.max(batch.next_revision);
                if batch.next_revision > batch.current_revision {
                    self.live = true;
                }
                if !batch.events.is_empty() {
                    return Ok(batch.events);
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(batch) if batch.is_empty() => self.live = false,
                Ok(batch) => {
                    let next = self.next;
                    let events: Vec<Event> = batch
                        .iter()
                        .filter(|e| event_revision(e) >= next && self.range.contains(&e.kv.key))
                        .cloned()
                        .collect();
                    if let Some(last) = batch.iter().map(event_revision).max() {
                        self.next = self.next.max(last + 1);
                    }
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                Err(RecvError::Lagged(_)) => self.live = false,
                Err(RecvError::Closed) => return Err(CursorError::Stopped),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ranges_follow_etcd_rules() {
        let single = KeyRange::new(b"a".to_vec(), Vec::new());
        assert!(single.contains(b"a") && !single.contains(b"ab"));
        let from = KeyRange::new(b"b".to_vec(), vec![0]);
        assert!(from.contains(b"b") && from.contains(b"zzz") && !from.contains(b"a"));
        let all = KeyRange::new(Vec::new(), vec![0]);
        assert!(all.contains(b"") && all.contains(b"x"));
        let prefix = KeyRange::new(b"p/".to_vec(), b"p0".to_vec());
        assert!(prefix.contains(b"p/") && prefix.contains(b"p/x") && !prefix.contains(b"p0"));
        let empty = KeyRange::new(b"z".to_vec(), b"a".to_vec());
        assert!(!empty.contains(b"z") && !empty.contains(b"m"));
    }
}
