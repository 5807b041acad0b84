//! The store: opening the redb file, applying batches, and the read handle.
//!
//! Invariants:
//! 1. The applied Raft index is written in the same redb transaction as the
//!    data it covers (DESIGN rule 2), so after any crash the file holds
//!    exactly the effect of the commands up to its `applied_index`.
//! 2. `Store`'s cached `revision`, `compacted` and `applied_index` change
//!    only after a successful commit, and then equal what the file holds.
//! 3. `durable_applied_index <= applied_index`; everything up to the former
//!    survives a crash; the latter may roll back to it.
//! 4. Readers ([`StoreReader`]) see one committed transaction each, and
//!    never block the writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata,
};

use crate::apply::{Applier, Fail};
use crate::command::{Command, CommandOutput, Response};
use crate::error::MvccError;
use crate::read::{KeyRange, View};
use crate::schema::{
    HistKey, Record, CURRENT, HISTORY, LEASES, LEASE_KEYS, META, META_APPLIED_INDEX,
    META_COMPACT_REVISION, META_REVISION, META_SCHEMA, NEVER_COMPACTED, REVLOG, SCHEMA_VERSION,
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

/// How `apply_batch` commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitDurability {
    /// Every batch is fsynced before `apply_batch` returns.
    Immediate,
    /// Batches are committed without fsync (redb `Durability::None`); one in
    /// every `durable_commit_every_commands` commands, and every `flush`,
    /// is fsynced. Safe because the Raft WAL is the durability point: what a
    /// crash loses is replayed from it.
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
    /// redb page cache size in bytes; `None` keeps redb's default.
    pub cache_size_bytes: Option<usize>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            commit_durability: CommitDurability::Deferred,
            durable_commit_every_commands: DURABLE_COMMIT_EVERY_COMMANDS_DEFAULT,
            cache_size_bytes: None,
        }
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
///    [`Store::flush`] to make them equal (e.g. before a WAL compaction, or
///    on a timer, like etcd's 100 ms batch interval).
/// 4. A per-command `Err` is the client's answer (etcd's message); the
///    command still consumed its index. An outer `Err` from `apply_batch`
///    means nothing of the batch was applied and the store cannot go on
///    safely: stop the node (DESIGN rule 2: never silently diverge).
/// 5. Reads go through [`Store::reader`], a cheap clonable handle that
///    reads committed state concurrently with `apply_batch`.
pub struct Store {
    db: Arc<Database>,
    path: Arc<PathBuf>,
    options: StoreOptions,
    revision: i64,
    compacted: i64,
    applied_index: u64,
    durable_applied_index: u64,
    applied_since_durable: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("revision", &self.revision)
            .field("compacted", &self.compacted)
            .field("applied_index", &self.applied_index)
            .field("durable_applied_index", &self.durable_applied_index)
            .finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating an empty one (revision 1) if the
    /// file does not exist.
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
            txn.open_table(CURRENT)?;
            txn.open_table(HISTORY)?;
            txn.open_table(REVLOG)?;
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
                Some(other) => {
                    return Err(MvccError::Corrupt(format!(
                        "schema version {other}, expected {SCHEMA_VERSION}"
                    )))
                }
            }
            read_meta(&meta)?
        };
        txn.commit()?;
        Ok(Store {
            db: Arc::new(db),
            path: Arc::new(path),
            options,
            revision,
            compacted,
            applied_index: applied,
            durable_applied_index: applied,
            applied_since_durable: 0,
        })
    }

    /// A read handle on this store (see [`StoreReader`]).
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            db: Arc::clone(&self.db),
            path: Arc::clone(&self.path),
        }
    }

    /// Applies `commands` in order in ONE redb write transaction, which also
    /// records the new applied index. See the contract on [`Store`].
    ///
    /// The inner results are one per command, in order. The outer error
    /// means the batch was not applied at all.
    #[allow(clippy::type_complexity)]
    pub fn apply_batch(
        &mut self,
        commands: &[(u64, Command)],
    ) -> Result<Vec<Result<CommandOutput, MvccError>>, MvccError> {
        let mut txn = self.db.begin_write()?;
        let fresh = commands
            .iter()
            .filter(|(i, _)| *i > self.applied_index)
            .count() as u64;
        let durable = match self.options.commit_durability {
            CommitDurability::Immediate => true,
            CommitDurability::Deferred => {
                self.applied_since_durable + fresh >= self.options.durable_commit_every_commands
            }
        };
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });

        let mut outputs = Vec::with_capacity(commands.len());
        let mut applied = self.applied_index;
        let outcome: Result<(i64, i64), MvccError> = (|| {
            let mut applier = Applier::new(&txn, self.revision, self.compacted)?;
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
            Ok((applier.revision, applier.compacted))
        })();
        let (revision, compacted) = match outcome {
            Ok(state) => state,
            Err(e) => {
                // Best effort: dropping the transaction aborts it too.
                let _ = txn.abort();
                return Err(e);
            }
        };
        if applied == self.applied_index && !durable {
            // Everything was a replay: nothing to commit.
            let _ = txn.abort();
            return Ok(outputs);
        }
        txn.commit()?;
        self.revision = revision;
        self.compacted = compacted;
        self.applied_index = applied;
        if durable {
            self.durable_applied_index = applied;
            self.applied_since_durable = 0;
        } else {
            self.applied_since_durable += fresh;
        }
        Ok(outputs)
    }

    /// Changes how later batches commit (e.g. `Immediate` while the WAL is
    /// being compacted, `Deferred` again afterwards).
    pub fn set_commit_durability(&mut self, durability: CommitDurability) {
        self.options.commit_durability = durability;
    }

    /// Makes everything applied so far durable (one fsync'd empty commit,
    /// which persists all earlier non-durable commits).
    pub fn flush(&mut self) -> Result<(), MvccError> {
        if self.durable_applied_index == self.applied_index && self.applied_since_durable == 0 {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        txn.commit()?;
        self.durable_applied_index = self.applied_index;
        self.applied_since_durable = 0;
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
    /// was. The commit is durable.
    pub fn restore_from(
        &mut self,
        reader: impl std::io::Read,
    ) -> Result<crate::SnapshotMeta, MvccError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let meta = match crate::snapshot::restore_into(&txn, reader) {
            Ok(meta) => meta,
            Err(e) => {
                let _ = txn.abort();
                return Err(e);
            }
        };
        txn.commit()?;
        self.revision = meta.revision;
        self.compacted = meta.compact_revision;
        self.applied_index = meta.applied_index;
        self.durable_applied_index = meta.applied_index;
        self.applied_since_durable = 0;
        Ok(meta)
    }

    /// Size of the database file in bytes (etcd's `dbSize`).
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
/// consistent committed state (a redb read transaction) without blocking
/// the writer.
#[derive(Clone)]
pub struct StoreReader {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("path", &self.path)
            .finish()
    }
}

/// A [`View`] over the tables of a read transaction.
type ReadView<'a> = View<
    'a,
    ReadOnlyTable<&'static [u8], &'static [u8]>,
    ReadOnlyTable<HistKey<'static>, &'static [u8]>,
>;

/// One read transaction with its tables and meta.
pub(crate) struct Snapshot {
    pub txn: ReadTransaction,
    pub current: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub history: ReadOnlyTable<HistKey<'static>, &'static [u8]>,
    pub revision: i64,
    pub compacted: i64,
    pub applied_index: u64,
}

impl Snapshot {
    fn view(&self) -> ReadView<'_> {
        View {
            current: &self.current,
            history: &self.history,
            revision: self.revision,
            compacted: self.compacted,
        }
    }
}

impl StoreReader {
    pub(crate) fn snapshot(&self) -> Result<Snapshot, MvccError> {
        let txn = self.db.begin_read()?;
        let (revision, compacted, applied_index) = read_meta(&txn.open_table(META)?)?;
        Ok(Snapshot {
            current: txn.open_table(CURRENT)?,
            history: txn.open_table(HISTORY)?,
            txn,
            revision,
            compacted,
            applied_index,
        })
    }

    /// etcd's KV.Range, at the latest committed state.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.snapshot()?.view().range(req)
    }

    /// The latest committed revision.
    pub fn current_revision(&self) -> Result<Revision, MvccError> {
        Ok(Revision(self.snapshot()?.revision))
    }

    /// The compacted revision (-1 if never compacted).
    pub fn compact_revision(&self) -> Result<i64, MvccError> {
        Ok(self.snapshot()?.compacted)
    }

    /// The applied Raft index of the latest committed state.
    pub fn applied_index(&self) -> Result<u64, MvccError> {
        Ok(self.snapshot()?.applied_index)
    }

    /// Size of the database file in bytes.
    pub fn db_size_bytes(&self) -> Result<u64, MvccError> {
        Ok(std::fs::metadata(self.path.as_path())?.len())
    }

    /// The stored history of `[key, range_end)` (etcd's range rules) from
    /// `start_revision` on, for a watch that starts in the past.
    ///
    /// `limit` (0 = none) is soft: reading stops at the first revision
    /// boundary at or after `limit` events, so a revision is never split.
    /// Continue from [`EventBatch::next_revision`]. A `start_revision` below
    /// the compacted revision is [`MvccError::Compacted`] (etcd's watch
    /// rule: strictly below; a watch may start at the compacted revision).
    pub fn events_since(
        &self,
        start_revision: i64,
        key: &[u8],
        range_end: &[u8],
        limit: usize,
    ) -> Result<EventBatch, MvccError> {
        let snap = self.snapshot()?;
        if start_revision < snap.compacted {
            return Err(MvccError::Compacted {
                compact_revision: snap.compacted,
            });
        }
        let mut batch = EventBatch {
            events: Vec::new(),
            next_revision: start_revision.max(snap.revision + 1),
            current_revision: snap.revision,
            compact_revision: snap.compacted,
        };
        let range = KeyRange::new(key, range_end);
        let view = snap.view();
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut last_main = i64::MIN;
        // Returns false once the batch is full at a revision boundary.
        let mut push = |key: &[u8],
                        main: i64,
                        sub: u32,
                        bytes: &[u8],
                        batch: &mut EventBatch|
         -> Result<bool, MvccError> {
            if batch.events.len() >= limit && main != last_main {
                batch.next_revision = main;
                return Ok(false);
            }
            last_main = main;
            let record = Record::decode(bytes)?;
            let prev = view
                .history
                .range::<HistKey<'_>>((key, i64::MIN, 0)..(key, main, sub))?
                .next_back()
                .transpose()?;
            let prev_kv = match prev {
                Some((_, v)) => {
                    let p = Record::decode(v.value())?;
                    (!p.tombstone).then(|| p.to_kv(key, true))
                }
                None => None,
            };
            batch.events.push(if record.tombstone {
                Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: key.to_vec(),
                        mod_revision: main,
                        ..KeyValue::default()
                    },
                    prev_kv,
                }
            } else {
                Event {
                    kind: EventKind::Put,
                    kv: record.to_kv(key, true),
                    prev_kv,
                }
            });
            Ok(true)
        };
        match range {
            KeyRange::Empty => {}
            // One key: its own history is already in revision order.
            KeyRange::Single(k) => {
                for entry in view
                    .history
                    .range::<HistKey<'_>>((k, start_revision, 0)..=(k, i64::MAX, u32::MAX))?
                {
                    let (hk, v) = entry?;
                    let (_, main, sub) = hk.value();
                    if !push(k, main, sub, v.value(), &mut batch)? {
                        break;
                    }
                }
            }
            KeyRange::Span { .. } => {
                let revlog = snap.txn.open_table(REVLOG)?;
                for entry in revlog.range::<(i64, u32)>((start_revision, 0)..)? {
                    let (rk, k) = entry?;
                    let (main, sub) = rk.value();
                    let k = k.value();
                    if !range.contains(k) {
                        continue;
                    }
                    let bytes = view.history.get((k, main, sub))?.ok_or_else(|| {
                        MvccError::Corrupt(format!("revlog entry {main}.{sub} without history"))
                    })?;
                    if !push(k, main, sub, bytes.value(), &mut batch)? {
                        break;
                    }
                }
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
    /// Comparable between Concord members, not with etcd (whose bytes differ).
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv, MvccError> {
        let snap = self.snapshot()?;
        if revision > 0 && revision <= snap.compacted {
            return Err(MvccError::Compacted {
                compact_revision: snap.compacted,
            });
        }
        if revision > snap.revision {
            return Err(MvccError::FutureRevision {
                current_revision: snap.revision,
            });
        }
        let rev = if revision <= 0 {
            snap.revision
        } else {
            revision
        };
        let revlog = snap.txn.open_table(REVLOG)?;
        // etcd starts its hash with the bucket name.
        let mut hash = crc32c::crc32c(b"key");
        for entry in revlog.range::<(i64, u32)>(..=(rev, u32::MAX))? {
            let (rk, k) = entry?;
            let (main, sub) = rk.value();
            let k = k.value();
            if main <= snap.compacted {
                let newer = snap
                    .history
                    .range::<HistKey<'_>>((
                        std::ops::Bound::Excluded((k, main, sub)),
                        std::ops::Bound::Included((k, rev, u32::MAX)),
                    ))?
                    .next()
                    .is_some();
                if newer {
                    continue;
                }
            }
            let bytes = snap.history.get((k, main, sub))?.ok_or_else(|| {
                MvccError::Corrupt(format!("revlog entry {main}.{sub} without history"))
            })?;
            hash = crc32c::crc32c_append(hash, &main.to_le_bytes());
            hash = crc32c::crc32c_append(hash, &sub.to_le_bytes());
            hash = crc32c::crc32c_append(hash, &(k.len() as u64).to_le_bytes());
            hash = crc32c::crc32c_append(hash, k);
            hash = crc32c::crc32c_append(hash, bytes.value());
        }
        Ok(HashKv {
            hash,
            compact_revision: snap.compacted,
            revision: snap.revision,
        })
    }

    /// One lease with its attached keys (LeaseTimeToLive with `keys`).
    pub fn lease(&self, id: i64) -> Result<Option<LeaseInfo>, MvccError> {
        let snap = self.snapshot()?;
        let leases = snap.txn.open_table(LEASES)?;
        let Some((granted_ttl, remaining_ttl)) = leases.get(id)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let lease_keys = snap.txn.open_table(LEASE_KEYS)?;
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
        let snap = self.snapshot()?;
        let leases = snap.txn.open_table(LEASES)?;
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

    /// Checks the schema invariants (`schema.rs`) over the whole store:
    /// O(size), for tests, the simulator and offline corruption checks.
    /// Returns [`MvccError::Corrupt`] naming the first violation.
    pub fn verify(&self) -> Result<(), MvccError> {
        let snap = self.snapshot()?;
        let revlog = snap.txn.open_table(REVLOG)?;
        let leases = snap.txn.open_table(LEASES)?;
        let lease_keys = snap.txn.open_table(LEASE_KEYS)?;
        let bad = |what: String| Err(MvccError::Corrupt(what));
        let (mut versions, mut live, mut leased) = (0u64, 0u64, 0u64);
        let mut newest: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut below_compacted_for_key = 0;
        let mut check_newest = |newest: Option<(Vec<u8>, Vec<u8>)>| -> Result<(), MvccError> {
            let Some((key, bytes)) = newest else {
                return Ok(());
            };
            let record = Record::decode(&bytes)?;
            let cur = snap
                .current
                .get(key.as_slice())?
                .map(|v| v.value().to_vec());
            match (record.tombstone, cur) {
                (true, None) => {}
                (false, Some(c)) if c == bytes => {
                    live += 1;
                    if record.lease != 0 {
                        leased += 1;
                        if lease_keys.get((record.lease, key.as_slice()))?.is_none()
                            || leases.get(record.lease)?.is_none()
                        {
                            return bad(format!("lease {} of {key:?} not recorded", record.lease));
                        }
                    }
                }
                _ => return bad(format!("current of {key:?} disagrees with history")),
            }
            Ok(())
        };
        for entry in snap.history.iter()? {
            let (k, v) = entry?;
            let (key, main, sub) = k.value();
            let record = Record::decode(v.value())?;
            versions += 1;
            if record.mod_main != main || record.mod_sub != sub || main > snap.revision {
                return bad(format!("version {main}.{sub} of {key:?} misplaced"));
            }
            if revlog.get((main, sub))?.map(|g| g.value() == key) != Some(true) {
                return bad(format!("revlog lacks {main}.{sub}"));
            }
            if newest.as_ref().is_none_or(|(k, _)| k.as_slice() != key) {
                check_newest(newest.take())?;
                below_compacted_for_key = 0;
            }
            if main <= snap.compacted {
                below_compacted_for_key += 1;
                if record.tombstone || below_compacted_for_key > 1 {
                    return bad(format!("{key:?} keeps superseded history at {main}"));
                }
            }
            newest = Some((key.to_vec(), v.value().to_vec()));
        }
        check_newest(newest.take())?;
        if revlog.len()? != versions || snap.current.len()? != live || lease_keys.len()? != leased {
            return bad("table sizes disagree".into());
        }
        Ok(())
    }

    /// Streams the whole state machine (for a Raft snapshot): history,
    /// leases and meta, framed and followed by a crc32c. Reads one committed
    /// state; the writer keeps going meanwhile.
    pub fn snapshot_to(
        &self,
        writer: impl std::io::Write,
    ) -> Result<crate::SnapshotMeta, MvccError> {
        let snap = self.snapshot()?;
        crate::snapshot::write_snapshot(&snap, writer)
    }
}
