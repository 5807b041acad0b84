//! The store: opening the redb file, applying batches, and the read handle.
//!
//! Two halves hold the state (etcd's `treeIndex` + bbolt):
//!
//! ```text
//!   redb file: meta, chunks (versions by revision), leases, lease_keys
//!   memory:    State { db, keys: key -> revisions, revision, compacted, applied_index,
//!                      pending: versions applied but not committed yet }
//!              behind one RwLock shared by the Store and every StoreReader
//! ```
//!
//! Invariants:
//! 1. The applied Raft index is written in the same redb transaction as the
//!    data it covers (DESIGN rule 2), so after any crash the file holds
//!    exactly the effect of the commands up to its `applied_index`. The key
//!    index is derived data, rebuilt from `chunks` at open.
//! 2. Publication order: an apply batch either commits its redb
//!    transaction or hands its records to the pending log, and only then,
//!    under the write lock, merges its index entries and moves the
//!    published `revision`, `compacted` and `applied_index`. So the
//!    published index never names a revision that is neither committed nor
//!    pending (`pending.rs` invariant 2 says when pending records go).
//! 3. Readers begin their redb read transaction while holding the read
//!    lock, so that transaction is at or after the published state. The
//!    versions it holds beyond the published revision are ignored (readers
//!    read at the published revision). Versions are immutable once
//!    written; only compaction removes some, and what compaction at `C`
//!    removes is never needed by a read at a revision `>= C` (index
//!    invariant 3). A reader therefore only has to check that its
//!    transaction's compacted revision equals the published one: if not, a
//!    compaction committed and is about to be published, and the reader
//!    retries (`StoreReader::consistent`); it is then answered with etcd's
//!    "required revision has been compacted" if it reads below it.
//! 4. Operations that replace versions wholesale (restore, defragment)
//!    commit under the write lock, so no reader can pair an old index with
//!    a new transaction.
//! 5. `Store`'s cached `revision`, `compacted` and `applied_index` change
//!    only after a successful commit, and then equal what the file holds.
//! 6. `durable_applied_index <= applied_index`; everything up to the former
//!    survives a crash; the latter may roll back to it.
//! 7. Readers never hold the lock while they read values from redb (except
//!    `verify`, a test tool); each takes it once, with its redb
//!    transaction, so the index it reads describes that transaction. An
//!    apply batch holds the read lock while it applies and the write lock
//!    only to publish.
//! 8. Deferred commits: at most one write transaction is open, held by the
//!    Store across batches; every write transaction begins by taking it
//!    (redb allows one writer). A batch that changes `leases` or
//!    `lease_keys`, or compacts, is committed before it is published, so
//!    readers of those tables (and compaction checks) read committed state
//!    only, and the pending log never holds a compacted version.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadTransaction, ReadableTable, ReadableTableMetadata};

use crate::apply::{Applier, Fail};
use crate::chunks::CHUNKS;
use crate::command::{Command, CommandOutput, Response};
use crate::error::MvccError;
use crate::index::{self, KeyRange, Keys, Rev};
use crate::pending::Pending;
use crate::read::{plan_range, with_record, ReaderRecords, Stored};
use crate::schema::{
    Record, LEASES, LEASE_KEYS, META, META_APPLIED_INDEX, META_COMPACT_REVISION, META_REVISION,
    META_SCHEMA, NEVER_COMPACTED, SCHEMA_VERSION,
};
use crate::types::{
    Event, EventBatch, EventKind, HashKv, KeyValue, LeaseInfo, RangeRequest, RangeResponse,
    Revision,
};

/// etcd's backend commits its bbolt transaction every 10,000 operations
/// (`defaultBatchLimit`); with deferred durability Concord makes every
/// commit durable once that many commands were applied since the last
/// durable one, so a crash replays at most this many WAL entries.
pub const DURABLE_COMMIT_EVERY_COMMANDS_DEFAULT: u64 = 10_000;

/// Default redb page cache: 64 MiB. redb's own default (1 GiB) is mostly
/// filled by pages that apply reads once: with records keyed by revision,
/// the hot pages are the last leaves of `chunks` (where batches append) and
/// the branch pages above them, and current reads find their record by
/// revision in a few pages. etcd leaves caching to the OS page cache (its
/// bbolt file is mmap'ed), which the file reads still benefit from here.
pub const CACHE_SIZE_BYTES_DEFAULT: usize = 64 << 20;

/// How long a reader waits for a committed compaction to be published
/// before it reports the store broken (module invariant 3).
const PUBLICATION_WAIT: Duration = Duration::from_secs(5);

/// How long [`Store::defragment`] waits for in-flight reads to finish.
const DEFRAGMENT_READS_WAIT: Duration = Duration::from_secs(5);

/// etcd's backend commits at most this many operations per batch
/// transaction (`defaultBatchLimit`); so does a deferred store.
pub const MAX_PENDING_COMMANDS_DEFAULT: u64 = 10_000;

/// Bytes of records a deferred store holds twice (in its open transaction
/// and in the pending log readers see) before it commits: bounds memory
/// when values are large (a batch of 10,000 1.5 MiB puts would be 15 GB).
pub const MAX_PENDING_BYTES_DEFAULT: usize = 16 << 20;

/// Apply batches a deferred store lets pend before it commits: a reader
/// looks a record up among them by binary search, and the runtime's timer
/// commits long before this under light load.
pub const MAX_PENDING_BATCHES_DEFAULT: usize = 4096;

/// How `apply_batch` commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitDurability {
    /// Every batch is committed and fsynced before `apply_batch` returns.
    Immediate,
    /// Batches are applied into one redb write transaction that stays open
    /// across batches (readers see them through the pending log, see
    /// `pending.rs`) and is committed, without fsync (redb
    /// `Durability::None`), when [`Store::commit_pending`] is called, when a
    /// batch changes leases or compacts, or when a `max_pending_*` limit is
    /// reached. One commit in every `durable_commit_every_commands`
    /// commands, and every `flush`, is fsynced. Safe because the Raft WAL is
    /// the durability point: what a crash loses is replayed from it.
    Deferred,
}

/// Options for [`Store::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How batches are committed.
    pub commit_durability: CommitDurability,
    /// With [`CommitDurability::Deferred`]: the number of applied commands
    /// after which the next batch commit is durable.
    pub durable_commit_every_commands: u64,
    /// redb page cache size in bytes; `None` keeps redb's default (1 GiB).
    /// Defaults to [`CACHE_SIZE_BYTES_DEFAULT`].
    pub cache_size_bytes: Option<usize>,
    /// With [`CommitDurability::Deferred`]: commit once this many commands
    /// are uncommitted ([`MAX_PENDING_COMMANDS_DEFAULT`]).
    pub max_pending_commands: u64,
    /// ... or once their records take this many bytes
    /// ([`MAX_PENDING_BYTES_DEFAULT`]).
    pub max_pending_bytes: usize,
    /// ... or once this many batches are uncommitted
    /// ([`MAX_PENDING_BATCHES_DEFAULT`]).
    pub max_pending_batches: usize,
    /// Deliberate bugs, for tests that show the checks catch each missing
    /// safety mechanism; only with the test-only feature `mistakes`.
    #[cfg(feature = "mistakes")]
    pub mistakes: Mistakes,
}

/// Safety mechanisms of deferred commits a test can switch off (feature
/// `mistakes`; without it every switch is off and cannot be turned on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mistakes {
    /// Publish a deferred batch's index entries without its records in the
    /// pending log (readers then find neither, store invariant 2).
    pub publish_without_pending: bool,
    /// Leave a batch that changed leases in the open transaction (lease
    /// readers then read stale committed tables, store invariant 8).
    pub defer_lease_batches: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            commit_durability: CommitDurability::Deferred,
            durable_commit_every_commands: DURABLE_COMMIT_EVERY_COMMANDS_DEFAULT,
            cache_size_bytes: Some(CACHE_SIZE_BYTES_DEFAULT),
            max_pending_commands: MAX_PENDING_COMMANDS_DEFAULT,
            max_pending_bytes: MAX_PENDING_BYTES_DEFAULT,
            max_pending_batches: MAX_PENDING_BATCHES_DEFAULT,
            #[cfg(feature = "mistakes")]
            mistakes: Mistakes::default(),
        }
    }
}

/// What the store and its readers share: the database and the published
/// key index with the state it describes.
pub(crate) struct State {
    db: Database,
    /// The key index at `revision` (module invariants 2 and 3).
    keys: Keys,
    revision: i64,
    compacted: i64,
    applied_index: u64,
    /// Published records no commit holds yet (`pending.rs`).
    pending: Pending,
}

struct Shared {
    state: RwLock<State>,
    path: PathBuf,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while publishing leaves the index half-merged: stop.
        self.state.read().expect("mvcc index lock poisoned")
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().expect("mvcc index lock poisoned")
    }
}

/// The MVCC state machine of the strong face.
///
/// # Contract with the runtime
///
/// 1. Feed committed Raft entries, in log order, to [`Store::apply_batch`]
///    as `(raft index, Command)` pairs; many per call is cheaper (one redb
///    transaction per call). Entries that carry no command (empty entries,
///    configuration changes) go in as [`Command::Noop`] so the applied index
///    keeps up.
/// 2. Commands whose index is `<=` [`Store::applied_index`] are skipped and
///    answered with [`Response::AlreadyApplied`]: after a restart, replay the
///    WAL from `applied_index() + 1`, or from anywhere before; both are safe.
/// 3. [`Store::applied_index`] is what the store holds (what readers see);
///    [`Store::durable_applied_index`] is what survives a crash. Only WAL
///    entries `<= durable_applied_index()` may be compacted away. Call
///    [`Store::flush`] to make them equal (e.g. before a WAL compaction).
///    With deferred commits, call [`Store::commit_pending`] on a timer (etcd's
///    100 ms batch interval) so that applied batches do not wait long in the
///    open transaction.
/// 4. A per-command `Err` is the client's answer (etcd's message); the
///    command still consumed its index. An outer `Err` from `apply_batch`
///    means nothing of the batch was applied and the store cannot go on
///    safely: stop the node (DESIGN rule 2: never silently diverge).
/// 5. Reads go through [`Store::reader`], a cheap clonable handle that
///    reads committed state concurrently with `apply_batch`.
/// 6. Opening rebuilds the in-memory key index by reading every stored
///    version once: 0.8 s for one million keys on a 2-core machine
///    (`examples/apply_cost.rs ... 1000000 1000000 256 64 sequential`,
///    schema 3, 2026-12-07); that index takes roughly 110 MiB for a
///    million 21-byte keys (process RSS after reopening 223 MiB with the
///    64 MiB cache).
pub struct Store {
    shared: Arc<Shared>,
    options: StoreOptions,
    revision: i64,
    compacted: i64,
    applied_index: u64,
    durable_applied_index: u64,
    applied_since_durable: u64,
    /// The write transaction deferred batches apply into (module
    /// invariant 8).
    open: Option<redb::WriteTransaction>,
    /// Commands, record bytes and batches in `open`.
    pending_commands: u64,
    pending_bytes: usize,
    pending_batches: usize,
    /// Set when a write failed half-way: the store refuses to go on.
    failed: Option<String>,
    /// Wakes the writeback thread after a non-durable commit (see
    /// [`spawn_writeback`]); `None` if it could not start.
    writeback: Option<std::sync::mpsc::SyncSender<()>>,
}

/// Starts a thread that `fdatasync`s the database file after each
/// non-durable commit, so the pages those commits leave dirty are written
/// back beside the replica loop rather than all at once inside the next
/// durable commit's fsync (measured: 12-14 ms on the loop for 10,000
/// commands' worth). Safe at any time: the kernel may write dirty pages back
/// whenever it likes, so an extra sync only picks one of the crash states
/// that were already possible. Stops when the store is dropped.
fn spawn_writeback(path: &Path) -> Option<std::sync::mpsc::SyncSender<()>> {
    let file = std::fs::File::open(path).ok()?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("concord-mvcc-writeback".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                let _ = file.sync_data();
            }
        })
        .ok()?;
    Some(tx)
}

impl Drop for Store {
    fn drop(&mut self) {
        // Before the database: redb's `Database::drop` begins a write
        // transaction of its own and would wait for this one forever.
        // Committed (not durably) as a batch committed at once would have
        // been, unless a write failed half-way in it.
        if let Some(txn) = self.open.take() {
            if self.failed.is_none() {
                let _ = txn.commit();
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .field("revision", &self.revision)
            .field("compacted", &self.compacted)
            .field("applied_index", &self.applied_index)
            .field("durable_applied_index", &self.durable_applied_index)
            .finish()
    }
}

/// Builds the key index of every version of `txn`'s `chunks` and of
/// `pending`.
fn load_index(txn: &ReadTransaction, pending: &Pending, revision: i64) -> Result<Keys, MvccError> {
    let revs = txn.open_table(CHUNKS)?;
    let records = ReaderRecords {
        pending,
        table: &revs,
    };
    let mut keys = Keys::new();
    records.scan((0, 0), (i64::MAX, u32::MAX), &mut |(main, sub), bytes| {
        let record = Record::decode(main, sub, bytes)?;
        if main > revision {
            return Err(MvccError::Corrupt(format!(
                "version {main}.{sub} above the store revision {revision}"
            )));
        }
        let (rev, newest) = record.index_entry();
        index::push(&mut keys, record.key, rev, newest);
        Ok(true)
    })?;
    Ok(keys)
}

impl Store {
    /// Opens the store at `path`, creating an empty one (revision 1) if the
    /// file does not exist, upgrading a schema-1 or -2 file in place (one durable
    /// transaction, see `migrate.rs`), and rebuilds the key index.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store, MvccError> {
        let path = path.as_ref().to_path_buf();
        let mut builder = Database::builder();
        if let Some(bytes) = options.cache_size_bytes {
            builder.set_cache_size(bytes);
        }
        let db = builder.create(&path)?;
        let txn = db.begin_write()?;
        let (revision, compacted, applied) = {
            // Opening a table in a write transaction creates it.
            txn.open_table(CHUNKS)?;
            txn.open_table(LEASES)?;
            txn.open_table(LEASE_KEYS)?;
            let mut meta = txn.open_table(META)?;
            let schema = meta.get(META_SCHEMA)?.map(|v| v.value());
            match schema {
                None => {
                    meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
                    meta.insert(META_REVISION, Revision::INITIAL.get())?;
                    meta.insert(META_COMPACT_REVISION, NEVER_COMPACTED)?;
                    meta.insert(META_APPLIED_INDEX, 0)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(old @ (1 | 2)) => {
                    drop(meta);
                    crate::migrate::upgrade(&txn, old)?;
                    meta = txn.open_table(META)?;
                }
                Some(other) => {
                    return Err(MvccError::Corrupt(format!(
                        "schema version {other}, expected {SCHEMA_VERSION}"
                    )))
                }
            }
            read_meta(&meta)?
        };
        // Durable: creation, and an upgrade, must not be
        // undone by a crash after the first batches.
        txn.commit()?;
        let keys = load_index(&db.begin_read()?, &Pending::default(), revision)?;
        let state = State {
            db,
            keys,
            revision,
            compacted,
            applied_index: applied,
            pending: Pending::default(),
        };
        let writeback = (options.commit_durability == CommitDurability::Deferred)
            .then(|| spawn_writeback(&path))
            .flatten();
        Ok(Store {
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                path,
            }),
            options,
            revision,
            compacted,
            applied_index: applied,
            durable_applied_index: applied,
            applied_since_durable: 0,
            open: None,
            pending_commands: 0,
            pending_bytes: 0,
            pending_batches: 0,
            failed: None,
            writeback,
        })
    }

    /// A read handle on this store (see [`StoreReader`]).
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Applies `commands` in order in ONE redb write transaction, which also
    /// records the new applied index. See the contract on [`Store`].
    ///
    /// The inner results are one per command, in order. The outer error
    /// means the batch was not applied at all and the store cannot go on
    /// (contract 4): readers keep the state published before it, and every
    /// later write fails.
    #[allow(clippy::type_complexity)]
    pub fn apply_batch(
        &mut self,
        commands: &[(u64, Command)],
    ) -> Result<Vec<Result<CommandOutput, MvccError>>, MvccError> {
        if let Some(why) = &self.failed {
            return Err(MvccError::Invariant(format!(
                "the store stopped after an earlier failure: {why}"
            )));
        }
        let fresh = commands
            .iter()
            .filter(|(i, _)| *i > self.applied_index)
            .count() as u64;
        let deferred = self.options.commit_durability == CommitDurability::Deferred;
        let mut outputs = Vec::with_capacity(commands.len());
        let mut applied = self.applied_index;
        // Only this writer changes the published state, so reading it
        // under the read lock while readers go on is safe.
        let state = self.shared.read();
        let was_open = self.open.is_some();
        let txn = match self.open.take() {
            Some(txn) => txn,
            None => state.db.begin_write()?,
        };
        let outcome = (|| {
            let mut applier =
                Applier::new(&txn, &state.keys, self.revision, self.compacted, deferred)?;
            for (index, command) in commands {
                if *index <= applied {
                    outputs.push(Ok(CommandOutput {
                        index: *index,
                        revision: Revision(applier.revision),
                        response: Response::AlreadyApplied,
                        events: Vec::new(),
                    }));
                    continue;
                }
                applied = *index;
                match applier.apply(command) {
                    Ok((response, events)) => outputs.push(Ok(CommandOutput {
                        index: *index,
                        revision: Revision(applier.revision),
                        response,
                        events,
                    })),
                    Err(Fail::Request(e)) => outputs.push(Err(e)),
                    Err(Fail::Fatal(e)) => return Err(e),
                }
            }
            if applied != self.applied_index {
                applier.write_meta(&txn, applied)?;
            }
            applier.finish()
        })();
        drop(state);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                // The open transaction holds this batch's partial writes
                // and cannot be rolled back to before them: give it up (what
                // it held is not durable; the WAL replays it after a
                // restart) and refuse to go on.
                self.failed = Some(e.to_string());
                let _ = txn.abort();
                return Err(e);
            }
        };
        if applied == self.applied_index {
            // Everything was a replay: nothing changed; a transaction begun
            // for it alone is not kept open.
            if was_open {
                self.open = Some(txn);
            } else {
                let _ = txn.abort();
            }
            return Ok(outputs);
        }
        self.pending_commands += fresh;
        self.pending_bytes += outcome.written_bytes;
        self.pending_batches += 1;
        let mistakes = self.mistakes();
        let commit_now = !deferred
            || (outcome.leases_changed && !mistakes.defer_lease_batches)
            || outcome.compacted != self.compacted
            || self.pending_commands >= self.options.max_pending_commands
            || self.pending_bytes >= self.options.max_pending_bytes
            || self.pending_batches >= self.options.max_pending_batches
            || self.applied_since_durable + self.pending_commands
                >= self.options.durable_commit_every_commands;
        let mut durable = false;
        if commit_now {
            durable = self.commit(txn, false)?;
        } else {
            self.open = Some(txn);
        }
        // Publish (module invariant 2).
        {
            let mut state = self.shared.write();
            let state = &mut *state;
            for (key, revs) in outcome.overlay {
                match state.keys.get_mut(&key) {
                    Some(existing) => existing.extend(&revs),
                    None => {
                        state.keys.insert(key, revs);
                    }
                }
            }
            index::apply_cuts(&mut state.keys, outcome.compact_cuts);
            state.revision = outcome.revision;
            state.compacted = outcome.compacted;
            state.applied_index = applied;
            if commit_now {
                state.pending.clear();
            } else if !mistakes.publish_without_pending {
                state.pending.push(outcome.written);
            }
        }
        self.revision = outcome.revision;
        self.compacted = outcome.compacted;
        self.applied_index = applied;
        if durable {
            self.durable_applied_index = applied;
        }
        Ok(outputs)
    }

    #[cfg(feature = "mistakes")]
    fn mistakes(&self) -> Mistakes {
        self.options.mistakes
    }

    #[cfg(not(feature = "mistakes"))]
    fn mistakes(&self) -> Mistakes {
        Mistakes::default()
    }

    /// Commits `txn`, which holds everything applied so far; durable if
    /// `force_durable` or due (see
    /// [`StoreOptions::durable_commit_every_commands`]). Resets
    /// the pending counters; the caller clears the pending log under the
    /// write lock (pending invariant 2). Returns whether it was durable.
    fn commit(
        &mut self,
        mut txn: redb::WriteTransaction,
        force_durable: bool,
    ) -> Result<bool, MvccError> {
        let durable = force_durable
            || self.options.commit_durability == CommitDurability::Immediate
            || self.applied_since_durable + self.pending_commands
                >= self.options.durable_commit_every_commands;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        if let Err(e) = txn.commit() {
            self.failed = Some(e.to_string());
            return Err(e.into());
        }
        if durable {
            self.applied_since_durable = 0;
        } else {
            self.applied_since_durable += self.pending_commands;
        }
        self.pending_commands = 0;
        self.pending_bytes = 0;
        self.pending_batches = 0;
        Ok(durable)
    }

    /// Commits the open write transaction, if any (not necessarily durably):
    /// what the runtime calls on a timer, like etcd's 100 ms batch
    /// interval, so that the pending log stays small while writes trickle.
    pub fn commit_pending(&mut self) -> Result<(), MvccError> {
        let Some(txn) = self.open.take() else {
            return Ok(());
        };
        let durable = self.commit(txn, false)?;
        self.shared.write().pending.clear();
        if durable {
            self.durable_applied_index = self.applied_index;
        } else if let Some(writeback) = &self.writeback {
            // Full: a writeback is already due, which covers this commit too.
            let _ = writeback.try_send(());
        }
        Ok(())
    }

    /// True if applied batches wait in an open transaction for a commit.
    pub fn has_uncommitted(&self) -> bool {
        self.open.is_some()
    }

    /// Changes how later batches commit (e.g. `Immediate` while the WAL is
    /// being compacted, `Deferred` again afterwards).
    pub fn set_commit_durability(&mut self, durability: CommitDurability) {
        self.options.commit_durability = durability;
    }

    /// Makes everything applied so far durable (one fsync'd empty commit,
    /// which persists all earlier non-durable commits).
    pub fn flush(&mut self) -> Result<(), MvccError> {
        if self.durable_applied_index == self.applied_index
            && self.applied_since_durable == 0
            && self.open.is_none()
        {
            return Ok(());
        }
        let txn = match self.open.take() {
            Some(txn) => txn,
            None => self.shared.read().db.begin_write()?,
        };
        self.commit(txn, true)?;
        self.shared.write().pending.clear();
        self.durable_applied_index = self.applied_index;
        Ok(())
    }

    /// The Raft index of the last command applied (visible to readers).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The Raft index up to which the store survives a crash. The WAL may
    /// be compacted up to here, no further.
    pub fn durable_applied_index(&self) -> u64 {
        self.durable_applied_index
    }

    /// The current store revision (1 for an empty store).
    pub fn current_revision(&self) -> Revision {
        Revision(self.revision)
    }

    /// The compacted revision; -1 if never compacted (etcd's value).
    pub fn compact_revision(&self) -> i64 {
        self.compacted
    }

    /// Answers a Range at the latest committed state. Shorthand for
    /// `self.reader().range(req)`.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.reader().range(req)
    }

    /// Replaces the whole state with a snapshot stream written by
    /// [`StoreReader::snapshot_to`]. The stream is verified (structure and
    /// checksum) before anything is committed; on error the store is as it
    /// was. The commit is durable. Readers wait while the new state is
    /// committed and published (module invariant 4), not while the stream
    /// is read.
    pub fn restore_from(
        &mut self,
        reader: impl std::io::Read,
    ) -> Result<crate::SnapshotMeta, MvccError> {
        // One writer at a time: what is open commits first, so that a
        // refused stream leaves the store as it was.
        self.commit_pending()?;
        let mut txn = self.shared.read().db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let (meta, keys) = match crate::snapshot::restore_into(&txn, reader) {
            Ok(restored) => restored,
            Err(e) => {
                let _ = txn.abort();
                return Err(e);
            }
        };
        {
            let mut state = self.shared.write();
            txn.commit()?;
            state.keys = keys;
            state.revision = meta.revision;
            state.compacted = meta.compact_revision;
            state.applied_index = meta.applied_index;
            state.pending.clear();
        }
        self.revision = meta.revision;
        self.compacted = meta.compact_revision;
        self.applied_index = meta.applied_index;
        self.durable_applied_index = meta.applied_index;
        self.applied_since_durable = 0;
        Ok(meta)
    }

    /// Rewrites the database file compactly and gives the free space back
    /// to the file system (etcd's Defragment; redb's `Database::compact`).
    ///
    /// redb compacts only when no read transaction is live. Readers start
    /// none while this runs (they begin theirs under the read lock, which
    /// this holds for writing), so it waits up to 5 s for those in flight
    /// to end, then fails with a storage error, the data unchanged (a long
    /// [`StoreReader::snapshot_to`] stream can cause that; retry later).
    /// Reads and applies wait while it runs. It first makes everything
    /// applied so far durable (redb counts undurable commits as live
    /// reads).
    pub fn defragment(&mut self) -> Result<(), MvccError> {
        // redb counts every non-durable commit since the last durable one
        // as a live read: a durable commit first (of the open transaction
        // too, which compaction could not run beside).
        self.flush()?;
        let mut state = self.shared.write();
        let deadline = Instant::now() + DEFRAGMENT_READS_WAIT;
        loop {
            match state.db.compact() {
                Ok(_) => break,
                Err(redb::CompactionError::TransactionInProgress) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(redb::Error::from(e).into()),
            }
        }
        Ok(())
    }

    /// Size of the database file in bytes (etcd's `dbSize`); shrinks after
    /// [`Store::defragment`].
    pub fn db_size_bytes(&self) -> Result<u64, MvccError> {
        self.reader().db_size_bytes()
    }
}

/// Reads `(revision, compacted, applied_index)` from the `meta` table.
pub(crate) fn read_meta(
    meta: &impl ReadableTable<&'static str, i64>,
) -> Result<(i64, i64, u64), MvccError> {
    let get = |name: &str| -> Result<i64, MvccError> {
        meta.get(name)?
            .map(|v| v.value())
            .ok_or_else(|| MvccError::Corrupt(format!("meta.{name} missing")))
    };
    let applied = get(META_APPLIED_INDEX)?;
    let applied = u64::try_from(applied)
        .map_err(|_| MvccError::Corrupt(format!("applied index {applied}")))?;
    Ok((get(META_REVISION)?, get(META_COMPACT_REVISION)?, applied))
}

/// A read handle: cheap to clone, `Send + Sync`, and every call reads one
/// consistent committed state (the published key index and a redb read
/// transaction, see the module invariants) without blocking the writer
/// for longer than it takes to walk the index.
#[derive(Clone)]
pub struct StoreReader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl StoreReader {
    /// The published state and a redb read transaction that holds every
    /// version it names (module invariant 3).
    fn consistent(&self) -> Result<(RwLockReadGuard<'_, State>, ReadTransaction), MvccError> {
        let deadline = Instant::now() + PUBLICATION_WAIT;
        loop {
            let state = self.shared.read();
            let txn = state.db.begin_read()?;
            let compacted = txn
                .open_table(META)?
                .get(META_COMPACT_REVISION)?
                .map(|v| v.value())
                .ok_or_else(|| MvccError::Corrupt("meta.compact_revision missing".into()))?;
            if compacted == state.compacted {
                return Ok((state, txn));
            }
            // A committed compaction waits for the write lock to be
            // published; let it. It takes microseconds, unless the writer
            // failed between commit and publication (and the node stops).
            drop(txn);
            drop(state);
            if Instant::now() > deadline {
                return Err(MvccError::Invariant(format!(
                    "the file is compacted at {compacted}, the key index is not"
                )));
            }
            std::thread::yield_now();
        }
    }

    /// A redb read transaction, begun under the read lock.
    fn read_txn(&self) -> Result<ReadTransaction, MvccError> {
        Ok(self.shared.read().db.begin_read()?)
    }

    /// etcd's KV.Range, at the latest committed state.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let (state, txn) = self.consistent()?;
        let mut plan = plan_range(&state.keys, req, state.revision, state.compacted)?;
        plan.prefetch(&state.pending)?;
        drop(state);
        plan.finish(&Stored(&txn.open_table(CHUNKS)?))
    }

    /// The version of `key` live just before `revision`: a watch event's
    /// `prev_kv`, read when a watcher that asked for it is sent the event
    /// (etcd's `Range(key, rev: mod_revision - 1)` in its watch stream), so
    /// that apply never reads previous values for events. `None` if the
    /// key did not exist then, or that revision is compacted (etcd sends
    /// no `prev_kv` then either).
    pub fn prev_version(&self, key: &[u8], revision: i64) -> Result<Option<KeyValue>, MvccError> {
        if revision <= 1 {
            // Revision 1 is the empty store; 0 would mean "the current one".
            return Ok(None);
        }
        let req = RangeRequest {
            key: key.to_vec(),
            revision: revision - 1,
            ..RangeRequest::default()
        };
        match self.range(&req) {
            Ok(resp) => Ok(resp.kvs.into_iter().next()),
            Err(MvccError::Compacted { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The latest committed revision.
    pub fn current_revision(&self) -> Result<Revision, MvccError> {
        Ok(Revision(self.shared.read().revision))
    }

    /// The compacted revision (-1 if never compacted).
    pub fn compact_revision(&self) -> Result<i64, MvccError> {
        Ok(self.shared.read().compacted)
    }

    /// The applied Raft index of the latest committed state.
    pub fn applied_index(&self) -> Result<u64, MvccError> {
        Ok(self.shared.read().applied_index)
    }

    /// Size of the database file in bytes.
    pub fn db_size_bytes(&self) -> Result<u64, MvccError> {
        Ok(std::fs::metadata(self.shared.path.as_path())?.len())
    }

    /// Bytes the database file takes on disk: its allocated blocks, at
    /// most its length. redb grows its file by doubling and leaves the new
    /// part unwritten (a sparse file), so right after a growth the length
    /// is up to twice what is stored: measured 2.16 GB of length for 1.05 GB
    /// on disk with one million keys. The space quota (etcd's
    /// `--quota-backend-bytes`) is about the latter; bbolt, whose file
    /// grows by at most 1 GiB at a time, shows no such gap.
    pub fn db_size_on_disk_bytes(&self) -> Result<u64, MvccError> {
        let metadata = std::fs::metadata(self.shared.path.as_path())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Ok(metadata.blocks().saturating_mul(512).min(metadata.len()))
        }
        #[cfg(not(unix))]
        {
            Ok(metadata.len())
        }
    }

    /// The stored history of `[key, range_end)` (etcd's range rules) from
    /// `start_revision` on, for a watch that starts in the past.
    ///
    /// `limit` (0 = none) is soft: reading stops at the first revision
    /// boundary at or after `limit` events, so a revision is never split.
    /// Continue from [`EventBatch::next_revision`]. A `start_revision` below
    /// the compacted revision is [`MvccError::Compacted`] (etcd's watch
    /// rule: strictly below; a watch may start at the compacted revision).
    ///
    /// The versions are read without the lock, from one consistent view (a
    /// span walks `chunks` in revision order). Events carry no `prev_kv`: the
    /// watch layer reads it with [`Self::prev_version`] for watchers that
    /// ask.
    pub fn events_since(
        &self,
        start_revision: i64,
        key: &[u8],
        range_end: &[u8],
        limit: usize,
    ) -> Result<EventBatch, MvccError> {
        let (state, txn) = self.consistent()?;
        let (revision, compacted) = (state.revision, state.compacted);
        if start_revision < compacted {
            return Err(MvccError::Compacted {
                compact_revision: compacted,
            });
        }
        let range = KeyRange::new(key, range_end);
        // One key: its revisions are in the index.
        let single: Vec<Rev> = match range {
            KeyRange::Single(k) => {
                let history = state.keys.get(k).map_or(&[][..], |v| &v[..]);
                let from = history.partition_point(|r| r.main < start_revision);
                history[from..].to_vec()
            }
            _ => Vec::new(),
        };
        let pending = state.pending.clone();
        drop(state);

        let mut batch = EventBatch {
            events: Vec::new(),
            next_revision: start_revision.max(revision + 1),
            current_revision: revision,
            compact_revision: compacted,
        };
        let revs = txn.open_table(CHUNKS)?;
        let records = ReaderRecords {
            pending: &pending,
            table: &revs,
        };
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut last_main: Option<i64> = None;
        // Returns false once the batch is full at a revision boundary.
        let mut push = |record: Record<'_>, batch: &mut EventBatch| -> bool {
            let main = record.mod_main;
            if batch.events.len() >= limit && last_main.is_some_and(|last| last != main) {
                batch.next_revision = main;
                return false;
            }
            last_main = Some(main);
            batch.events.push(if record.tombstone {
                Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: record.key.to_vec(),
                        mod_revision: main,
                        ..KeyValue::default()
                    },
                    prev_kv: None,
                }
            } else {
                Event {
                    kind: EventKind::Put,
                    kv: record.to_kv(true),
                    prev_kv: None,
                }
            });
            true
        };
        match range {
            KeyRange::Empty => {}
            KeyRange::Single(_) => {
                for rev in &single {
                    if !with_record(&records, *rev, |record| Ok(push(record, &mut batch)))? {
                        break;
                    }
                }
            }
            KeyRange::Span { .. } if start_revision > revision => {}
            // A span: the versions in revision order, up to the published
            // revision.
            KeyRange::Span { .. } => {
                let (from, upto) = ((start_revision, 0), (revision, u32::MAX));
                records.scan(from, upto, &mut |(main, sub), bytes| {
                    let record = Record::decode(main, sub, bytes)?;
                    Ok(!range.contains(record.key) || push(record, &mut batch))
                })?;
            }
        }

        Ok(batch)
    }

    /// etcd's HashKV: crc32c (Castagnoli, as etcd) over every stored
    /// version up to `revision` (0 = current), in revision order, where a
    /// version at or below the compacted revision counts only if no newer
    /// version of its key is at or below `revision` (etcd's `keep` filter,
    /// which makes the hash independent of physical compaction progress).
    ///
    /// Comparable between Concord members, not with etcd (whose bytes
    /// differ); unchanged by schema 2 (see `Record::hash_into`).
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv, MvccError> {
        let (state, txn) = self.consistent()?;
        let (current, compacted) = (state.revision, state.compacted);
        if revision > 0 && revision <= compacted {
            return Err(MvccError::Compacted {
                compact_revision: compacted,
            });
        }
        if revision > current {
            return Err(MvccError::FutureRevision {
                current_revision: current,
            });
        }
        let rev = if revision <= 0 { current } else { revision };
        // Versions at or below the compacted revision with a newer version
        // at or below `rev`: found on the index, then the lock is released.
        let mut skip: Vec<(i64, u32)> = Vec::new();
        for revs in state.keys.values() {
            for pair in revs.windows(2) {
                if pair[0].main > compacted {
                    break;
                }
                if pair[1].main <= rev {
                    skip.push(pair[0].at());
                }
            }
        }
        let pending = state.pending.clone();
        drop(state);
        skip.sort_unstable();
        let revs = txn.open_table(CHUNKS)?;
        let records = ReaderRecords {
            pending: &pending,
            table: &revs,
        };
        // etcd starts its hash with the bucket name.
        let mut hash = crc32c::crc32c(b"key");
        records.scan((0, 0), (rev, u32::MAX), &mut |(main, sub), bytes| {
            if main <= compacted && skip.binary_search(&(main, sub)).is_ok() {
                return Ok(true);
            }
            hash = Record::decode(main, sub, bytes)?.hash_into(hash);
            Ok(true)
        })?;
        Ok(HashKv {
            hash,
            compact_revision: compacted,
            revision: current,
        })
    }

    /// One lease with its attached keys (LeaseTimeToLive with `keys`).
    pub fn lease(&self, id: i64) -> Result<Option<LeaseInfo>, MvccError> {
        let txn = self.read_txn()?;
        let leases = txn.open_table(LEASES)?;
        let Some((granted_ttl, remaining_ttl)) = leases.get(id)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let lease_keys = txn.open_table(LEASE_KEYS)?;
        let hi = match id.checked_add(1) {
            Some(next) => std::ops::Bound::Excluded((next, &[][..])),
            None => std::ops::Bound::Unbounded,
        };
        let mut keys = Vec::new();
        for entry in
            lease_keys.range::<(i64, &[u8])>((std::ops::Bound::Included((id, &[][..])), hi))?
        {
            keys.push(entry?.0.value().1.to_vec());
        }
        Ok(Some(LeaseInfo {
            id,
            granted_ttl,
            remaining_ttl,
            keys,
        }))
    }

    /// Every lease, by ascending id, without keys (LeaseLeases, and what
    /// a new leader's lessor starts from).
    pub fn leases(&self) -> Result<Vec<LeaseInfo>, MvccError> {
        let txn = self.read_txn()?;
        let leases = txn.open_table(LEASES)?;
        let mut out = Vec::new();
        for entry in leases.iter()? {
            let (id, v) = entry?;
            let (granted_ttl, remaining_ttl) = v.value();
            out.push(LeaseInfo {
                id: id.value(),
                granted_ttl,
                remaining_ttl,
                keys: Vec::new(),
            });
        }
        Ok(out)
    }

    /// Checks the schema invariants (`schema.rs`) and the index invariants
    /// (`index.rs`) over the whole store: O(size), for tests, the simulator
    /// and offline corruption checks. Returns [`MvccError::Corrupt`] naming
    /// the first violation. Holds the read lock throughout.
    pub fn verify(&self) -> Result<(), MvccError> {
        // Not between a commit and its publication (the file ahead of the
        // index); the file may be behind it by what is pending.
        let (state, txn) = loop {
            let (state, txn) = self.consistent()?;
            let meta = read_meta(&txn.open_table(META)?)?;
            if meta == (state.revision, state.compacted, state.applied_index)
                || (meta.2 < state.applied_index && meta.1 == state.compacted)
            {
                break (state, txn);
            }
            drop(state);
            std::thread::yield_now();
        };
        let bad = |what: String| Err(MvccError::Corrupt(what));
        let stored_revision = read_meta(&txn.open_table(META)?)?.0;
        if state
            .pending
            .range((0, 0), (stored_revision, u32::MAX))
            .next()
            .is_some()
        {
            return bad("a pending version is at or below the committed revision".into());
        }
        let stored = load_index(&txn, &state.pending, state.revision)?;
        if stored != state.keys {
            return bad("the key index disagrees with the stored versions".into());
        }
        let revs = txn.open_table(CHUNKS)?;
        let records = ReaderRecords {
            pending: &state.pending,
            table: &revs,
        };
        let leases = txn.open_table(LEASES)?;
        let lease_keys = txn.open_table(LEASE_KEYS)?;
        let mut leased = 0u64;
        for (key, history) in &stored {
            let below = history
                .iter()
                .filter(|r| r.main <= state.compacted)
                .collect::<Vec<_>>();
            if below.len() > 1 || below.iter().any(|r| r.tombstone) {
                return bad(format!("{key:?} keeps superseded history"));
            }
            let newest = *history.last().expect("indexed keys have a version");
            if newest.tombstone {
                continue;
            }
            let lease = with_record(&records, newest, |r| Ok(r.lease))?;
            if lease != 0 {
                leased += 1;
                if lease_keys.get((lease, &key[..]))?.is_none() || leases.get(lease)?.is_none() {
                    return bad(format!("lease {lease} of {key:?} not recorded"));
                }
            }
        }
        if lease_keys.len()? != leased {
            return bad("lease_keys holds detached keys".into());
        }
        Ok(())
    }

    /// Streams the whole state machine (for a Raft snapshot): versions in
    /// revision order, leases and meta, framed and followed by a crc32c.
    /// Reads one redb read transaction (it needs no key index); the writer
    /// keeps going meanwhile. Writes through a small buffer: nothing is
    /// held in memory beyond it.
    pub fn snapshot_to(
        &self,
        writer: impl std::io::Write,
    ) -> Result<crate::SnapshotMeta, MvccError> {
        let (state, txn) = self.consistent()?;
        let published = (state.revision, state.compacted, state.applied_index);
        let pending = state.pending.clone();
        drop(state);
        crate::snapshot::write_snapshot(&txn, &pending, published, writer)
    }
}
