//! The WAL writer: a thread that makes the replica loop's `Ready`s durable,
//! so the loop applies, answers and takes new proposals while the disk
//! syncs (Raft thesis 10.2.1; etcd's raft node likewise persists beside its
//! apply loop).
//!
//! ```text
//!  loop --submit(job)--> [ queue ] --> writer: append all queued jobs,
//!                                              one fdatasync (group commit),
//!                                              send their after-persist messages,
//!                                              inbox <- Persisted(markers)
//! ```
//!
//! Invariants (the `Ready` contract, `raft/src/ready.rs`, steps 2 and 3):
//! 1. Jobs are written in the order they were submitted, and a job's
//!    after-persist messages go out, and its marker goes back to the loop,
//!    only after an fsync that covers it and every earlier job. A job with
//!    nothing to write still waits for the jobs before it.
//! 2. The loop touches the storage itself only after [`WalWriter::drain`]
//!    (nothing queued or being written), so its own writes (snapshot
//!    install, compaction, the final commit at shutdown) keep their order
//!    with the jobs.
//! 3. A storage error ends the writer: it writes nothing more, sends
//!    nothing more, and the loop learns it (`Request::WalFailed`) and stops
//!    the member (replica invariant 4); `drain` fails from then on.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use concord_raft::{Entry, HardState, Message, PersistMarker};
use concord_storage::RaftStorage;

use crate::inbox::InboxSender;
use crate::replica::Request;
use crate::transport::Transport;

/// The writer stopped after a storage error; nothing is written any more.
#[derive(Debug, thiserror::Error)]
#[error("the WAL writer stopped after an error: {0}")]
pub struct WalFailed(String);

/// One `Ready`'s durable part.
pub struct PersistJob {
    /// Entries to append.
    pub entries: Vec<Entry>,
    /// Hard state to record.
    pub hard_state: Option<HardState>,
    /// Sent once the job is durable.
    pub messages_after_persist: Vec<Message>,
    /// Handed back to the loop once the job is durable.
    pub marker: PersistMarker,
}

struct Queue {
    jobs: VecDeque<PersistJob>,
    /// Jobs taken by the writer and not finished yet.
    writing: usize,
    stop: bool,
    failed: Option<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signals the writer (work or stop) and drainers (work done).
    changed: Condvar,
    storage: Mutex<RaftStorage>,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The loop's handle on the writer thread.
pub struct WalWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl WalWriter {
    /// Starts the writer thread over `storage`.
    pub fn start(
        storage: RaftStorage,
        transport: Arc<Transport>,
        inbox: InboxSender<Request>,
    ) -> std::io::Result<WalWriter> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                writing: 0,
                stop: false,
                failed: None,
            }),
            changed: Condvar::new(),
            storage: Mutex::new(storage),
        });
        let thread = std::thread::Builder::new()
            .name("concord-wal".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared, &transport, &inbox)
            })?;
        Ok(WalWriter {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues a job (invariant 1).
    pub fn submit(&self, job: PersistJob) {
        let wake = {
            let mut queue = self.shared.queue();
            queue.jobs.push_back(job);
            queue.jobs.len() == 1 && queue.writing == 0
        };
        // Signalled after the lock is released: the woken writer's first
        // act is to take it, and the loop, signalling with it held, could
        // be preempted right there (by the followers its sends had just
        // woken), leaving the writer asleep on the lock until the loop ran
        // again. Syscall traces at one client showed the leader's write
        // start 70-190 µs late that way; its apply waits for that write.
        if wake {
            self.shared.changed.notify_all();
        }
    }

    /// True if no job is queued or being written.
    pub fn idle(&self) -> bool {
        let queue = self.shared.queue();
        queue.jobs.is_empty() && queue.writing == 0
    }

    /// Waits until every submitted job is durable, then hands out the
    /// storage (invariant 2). Fails once the writer failed (invariant 3).
    pub fn drain(&self) -> Result<MutexGuard<'_, RaftStorage>, WalFailed> {
        let mut queue = self.shared.queue();
        loop {
            if let Some(why) = &queue.failed {
                return Err(WalFailed(why.clone()));
            }
            if queue.jobs.is_empty() && queue.writing == 0 {
                break;
            }
            queue = self
                .shared
                .changed
                .wait(queue)
                .unwrap_or_else(|p| p.into_inner());
        }
        drop(queue);
        Ok(self
            .shared
            .storage
            .lock()
            .unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        self.shared.queue().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, transport: &Transport, inbox: &InboxSender<Request>) {
    loop {
        let jobs: Vec<PersistJob> = {
            let mut queue = shared.queue();
            while queue.jobs.is_empty() && !queue.stop {
                queue = shared
                    .changed
                    .wait(queue)
                    .unwrap_or_else(|p| p.into_inner());
            }
            if queue.jobs.is_empty() {
                return; // stopping, and everything submitted is written
            }
            queue.writing = queue.jobs.len();
            queue.jobs.drain(..).collect()
        };
        let written = {
            let mut storage = shared.storage.lock().unwrap_or_else(|p| p.into_inner());
            write_group(&mut storage, &jobs)
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "WAL write failed; the member stops");
            let mut queue = shared.queue();
            queue.failed = Some(e.to_string());
            queue.writing = 0;
            shared.changed.notify_all();
            drop(queue);
            let _ = inbox.send(Request::WalFailed(e));
            return;
        }
        let mut markers = Vec::with_capacity(jobs.len());
        for job in jobs {
            transport.send(job.messages_after_persist);
            markers.push(job.marker);
        }
        // The loop may have stopped (its inbox closed): nothing to tell.
        let _ = inbox.send(Request::Persisted(markers));
        shared.queue().writing = 0;
        shared.changed.notify_all();
    }
}

/// Writes every job in order and syncs once (group commit); also what the
/// loop uses, after [`WalWriter::drain`], for the Ready that installs a
/// snapshot.
pub(crate) fn write_group(
    storage: &mut RaftStorage,
    jobs: &[PersistJob],
) -> Result<(), concord_storage::StorageError> {
    let mut any = false;
    for job in jobs {
        if !job.entries.is_empty() {
            storage.append(&job.entries)?;
            any = true;
        }
        if let Some(hs) = &job.hard_state {
            storage.set_hard_state(hs)?;
            any = true;
        }
    }
    if any {
        storage.sync()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::inbox;
    use concord_raft::{EntryKind, LogIndex, NodeId, Term};
    use concord_storage::StorageOptions;
    use std::time::{Duration, Instant};

    fn entry(index: u64) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: bytes::Bytes::from_static(b"x"),
        }
    }

    fn job(indexes: std::ops::RangeInclusive<u64>, hard_state: Option<HardState>) -> PersistJob {
        let entries: Vec<Entry> = indexes.map(entry).collect();
        PersistJob {
            marker: PersistMarker {
                last_entry: entries.last().map(|e| (e.index, e.term)),
                snapshot_index: None,
            },
            entries,
            hard_state,
            messages_after_persist: Vec::new(),
        }
    }

    /// Markers from the writer, in arrival order, until `count` came or a
    /// failure was reported.
    fn markers(
        rx: &crate::inbox::InboxReceiver<Request>,
        count: usize,
    ) -> (Vec<PersistMarker>, bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut got, mut failed, mut batch) = (Vec::new(), false, Vec::new());
        while got.len() < count && !failed && Instant::now() < deadline {
            rx.recv_until(&mut batch, 64, Instant::now() + Duration::from_millis(50));
            for request in batch.drain(..) {
                match request {
                    Request::Persisted(m) => got.extend(m),
                    Request::WalFailed(_) => failed = true,
                    _ => {}
                }
            }
        }
        (got, failed)
    }

    #[test]
    fn jobs_become_durable_in_order_and_failures_stop_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = RaftStorage::open(dir.path(), StorageOptions::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let transport = Transport::new(NodeId(1), 7, runtime.handle().clone());
        let (tx, rx) = inbox();
        let writer = WalWriter::start(storage, transport, tx).unwrap();
        let hs = |term| HardState {
            term: Term(term),
            vote: Some(NodeId(1)),
            commit: LogIndex(0),
        };
        writer.submit(job(1..=3, Some(hs(2))));
        writer.submit(job(4..=4, None));
        writer.submit(job(5..=9, None));
        let (got, failed) = markers(&rx, 3);
        assert!(!failed);
        let last: Vec<_> = got.iter().map(|m| m.last_entry.unwrap().0 .0).collect();
        assert_eq!(last, [3, 4, 9], "markers come back in submission order");
        {
            let storage = writer.drain().unwrap();
            assert_eq!(storage.last_index(), LogIndex(9));
            assert_eq!(storage.hard_state().term, Term(2));
        }
        assert!(writer.idle());
        // A term going backwards is refused by the storage: the writer
        // reports it, writes nothing after it, and drain fails for good.
        writer.submit(job(10..=10, Some(hs(1))));
        writer.submit(job(11..=11, None));
        let (got, failed) = markers(&rx, 1);
        assert!(failed && got.is_empty(), "{got:?}");
        assert!(writer.drain().is_err());
        drop(writer);
        let (storage, _) = RaftStorage::open(dir.path(), StorageOptions::default()).unwrap();
        assert!(storage.last_index() <= LogIndex(10));
    }
}
