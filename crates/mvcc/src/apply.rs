//! The write path: applying commands inside one redb write transaction.
//!
//! An [`Applier`] holds the open tables of the batch's write transaction,
//! the published key index (read-only) with the batch's own index entries
//! on top (its `overlay`), and the store revision as it advances command by
//! command. The overlay and a pending index compaction are handed back to
//! the store, which publishes them only after the transaction committed.
//! Each command runs in two phases:
//!
//! ```text
//!   validate (reads only)          mutate (writes)
//!   ---------------------------    -----------------------------------
//!   request error -> Fail::Request  any error -> Fail::Fatal
//!   (nothing written, the batch      (the batch's transaction is
//!    goes on)                         aborted, nothing is applied)
//! ```
//!
//! Invariants:
//! 1. A command bumps the revision at most once: all its writes are at
//!    `begin + 1` with increasing sub-revisions, and the revision moves only
//!    if it wrote something.
//! 2. A request error is only ever returned from the validate phase, so a
//!    failed command leaves no partial write. What makes this hold for a
//!    Txn is etcd's own argument: compares and put/range checks run against
//!    the pre-transaction state, and `check_txn_intervals` forbids two writes
//!    to one key, so no op can fail once the checks passed. If one does
//!    anyway, that is a bug and the batch fails as a whole.
//! 3. Every write to `chunks` has its entry in the overlay (index invariant
//!    1 once published), and keeps the schema invariants of `schema.rs`.
//! 4. Compaction deletes its records from `chunks` at once but leaves the
//!    index entries until publication; the batch's later reads are at
//!    revisions `>=` the compacted one, which never need them (index
//!    invariant 3).
//! 5. Every write to `leases` or `lease_keys` sets `leases_changed`, so the
//!    store commits that batch before publishing it (store invariant 8).

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadableTable, Table, WriteTransaction};

use crate::check::check_txn_intervals;
use crate::chunks::{self, CHUNKS, CHUNK_BYTES_MAX, CHUNK_RECORDS_MAX};
use crate::command::{Command, Response};
use crate::error::MvccError;
use crate::index::{self, compaction_cut, IndexView, KeyRange, Keys, Layered, Newest, Rev};
use crate::read::{plan_range, with_record, Records};
use crate::schema::{
    Record, RevKey, LEASES, LEASE_KEYS, META, META_APPLIED_INDEX, META_COMPACT_REVISION,
    META_REVISION,
};
use crate::types::{
    CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyValue,
    LeaseCheckpointResponse, LeaseGrantResponse, LeaseRevokeResponse, PutRequest, PutResponse,
    RequestOp, ResponseOp, TxnRequest, TxnResponse,
};

/// etcd's `MaxLeaseTTL` (lease/lessor.go): 9,000,000,000 seconds.
pub const LEASE_TTL_MAX_SECS: i64 = 9_000_000_000;

/// How a command failed.
pub(crate) enum Fail {
    /// The client's request is refused; nothing was written.
    Request(MvccError),
    /// The store could not proceed; the whole batch must be abandoned.
    Fatal(MvccError),
}

impl From<MvccError> for Fail {
    fn from(e: MvccError) -> Self {
        if e.is_request_error() {
            Fail::Request(e)
        } else {
            Fail::Fatal(e)
        }
    }
}

macro_rules! fatal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Fail {
            fn from(e: $t) -> Self {
                Fail::Fatal(e.into())
            }
        }
    )*};
}
fatal_from!(redb::StorageError, redb::TableError);

/// Turns any error of the mutate phase into a fatal one (invariant 2).
fn in_mutation(e: MvccError) -> Fail {
    if e.is_request_error() {
        Fail::Fatal(MvccError::Invariant(format!(
            "request error after validation passed: {e}"
        )))
    } else {
        Fail::Fatal(e)
    }
}

/// The writes of one command, all at revision `begin + 1`.
struct Writes {
    /// The store revision before the command.
    begin: i64,
    /// Sub-revision of the next write (= writes so far).
    sub: u32,
    /// Events of the writes so far.
    events: Vec<Event>,
}

impl Writes {
    /// The revision a read inside this command sees (etcd's
    /// `storeTxnWrite.Range`: `beginRev`, plus one once anything changed).
    fn read_revision(&self) -> i64 {
        self.begin + i64::from(self.sub > 0)
    }
}

/// What a batch leaves for the store to publish once it committed.
pub(crate) struct Outcome {
    /// Index entries of the batch's writes.
    pub overlay: Keys,
    /// Compaction of the index, to apply after the overlay is merged: how
    /// many of each key's oldest revisions go (index invariant 2).
    pub compact_cuts: BTreeMap<Box<[u8]>, usize>,
    /// Store revision after the batch.
    pub revision: i64,
    /// Compacted revision after the batch.
    pub compacted: i64,
    /// The batch's records, in revision order, for the pending log
    /// (`pending.rs`); empty unless asked for.
    pub written: Vec<(RevKey, Box<[u8]>)>,
    /// Bytes of `written`.
    pub written_bytes: usize,
    /// The batch changed `leases` or `lease_keys`, which readers read only
    /// from committed state: the store commits such a batch at once.
    pub leases_changed: bool,
}

/// The open tables of a batch and the state that advances through it.
pub(crate) struct Applier<'t, 'i> {
    revs: Table<'t, RevKey, &'static [u8]>,
    leases: Table<'t, i64, (i64, i64)>,
    lease_keys: Table<'t, (i64, &'static [u8]), ()>,
    /// The published index (what committed before this batch).
    base: &'i Keys,
    /// Index entries of this batch's writes.
    overlay: Keys,
    /// Index compaction computed by this batch's compactions.
    compact_cuts: BTreeMap<Box<[u8]>, usize>,
    /// Store revision after the commands applied so far.
    pub revision: i64,
    /// Compacted revision after the commands applied so far.
    pub compacted: i64,
    /// Scratch buffer for encoding records, reused to avoid an allocation per write.
    buf: Vec<u8>,
    /// Keep a copy of every record written (for the pending log).
    keep_written: bool,
    /// The batch's records: those not yet in `chunks` (from `flushed` on),
    /// and, if `keep_written`, the ones before them too.
    written: Vec<(RevKey, Box<[u8]>)>,
    /// Records of `written` already stored as chunks.
    flushed: usize,
    /// Bytes of `written[flushed..]`.
    unflushed_bytes: usize,
    written_bytes: usize,
    leases_changed: bool,
}

impl<'t, 'i> Applier<'t, 'i> {
    /// Opens the tables of `txn`.
    pub fn new(
        txn: &'t WriteTransaction,
        base: &'i Keys,
        revision: i64,
        compacted: i64,
        keep_written: bool,
    ) -> Result<Self, MvccError> {
        Ok(Applier {
            revs: txn.open_table(CHUNKS)?,
            leases: txn.open_table(LEASES)?,
            lease_keys: txn.open_table(LEASE_KEYS)?,
            base,
            overlay: Keys::new(),
            compact_cuts: BTreeMap::new(),
            revision,
            compacted,
            buf: Vec::new(),
            keep_written,
            written: Vec::new(),
            flushed: 0,
            unflushed_bytes: 0,
            written_bytes: 0,
            leases_changed: false,
        })
    }

    /// Records the batch's end state in `meta`, in the same transaction as
    /// the data (DESIGN rule 2).
    pub fn write_meta(&self, txn: &WriteTransaction, applied_index: u64) -> Result<(), MvccError> {
        let applied = i64::try_from(applied_index)
            .map_err(|_| MvccError::Invariant(format!("raft index {applied_index} exceeds i64")))?;
        let mut meta = txn.open_table(META)?;
        meta.insert(META_REVISION, self.revision)?;
        meta.insert(META_COMPACT_REVISION, self.compacted)?;
        meta.insert(META_APPLIED_INDEX, applied)?;
        Ok(())
    }

    /// Stores the records written since the last flush as chunks (one, unless
    /// they exceed a chunk's limits). Records stay readable throughout: a
    /// lookup finds unflushed ones in `written`, the rest in `chunks`.
    fn flush(&mut self) -> Result<(), MvccError> {
        chunks::append(&mut self.revs, &self.written[self.flushed..], &mut self.buf)?;
        if !self.keep_written {
            self.written.clear();
        }
        self.flushed = self.written.len();
        self.unflushed_bytes = 0;
        Ok(())
    }

    /// Stores what is left, closes the tables and hands over what the
    /// store publishes.
    pub fn finish(mut self) -> Result<Outcome, MvccError> {
        self.flush()?;
        Ok(Outcome {
            overlay: self.overlay,
            compact_cuts: self.compact_cuts,
            revision: self.revision,
            compacted: self.compacted,
            written: self.written,
            written_bytes: self.written_bytes,
            leases_changed: self.leases_changed,
        })
    }

    /// The versions this batch can read: its own unflushed writes, then
    /// `chunks`.
    fn records(&self) -> BatchRecords<'_, 't> {
        BatchRecords {
            unflushed: &self.written[self.flushed..],
            table: &self.revs,
        }
    }

    fn view(&self) -> Layered<'_> {
        Layered {
            base: self.base,
            overlay: &self.overlay,
        }
    }

    fn lease_exists(&self, id: i64) -> Result<bool, MvccError> {
        Ok(self.leases.get(id)?.is_some())
    }

    /// The live version of `key` as the index knows it (no read).
    fn live(&self, key: &[u8]) -> Option<(Rev, Newest)> {
        self.view().live_newest(key)
    }

    /// The version stored at `rev`, with its value (one read).
    fn read_kv(&self, rev: Rev) -> Result<KeyValue, MvccError> {
        with_record(&self.records(), rev, |r| Ok(r.to_kv(true)))
    }

    /// Applies one command. Returns its response and events.
    pub fn apply(&mut self, command: &Command) -> Result<(Response, Vec<Event>), Fail> {
        let mut w = Writes {
            begin: self.revision,
            sub: 0,
            events: Vec::new(),
        };
        let response = match command {
            Command::Noop => Response::Noop,
            Command::Put(req) => {
                self.validate_put(req)?;
                Response::Put(self.put(&mut w, req).map_err(in_mutation)?)
            }
            Command::DeleteRange(req) => {
                Response::DeleteRange(self.delete_range(&mut w, req).map_err(in_mutation)?)
            }
            Command::Txn(req) => Response::Txn(self.txn(&mut w, req)?),
            Command::Compact(req) => {
                self.compact(req.revision)?;
                Response::Compact(CompactionResponse {
                    revision: self.revision,
                })
            }
            Command::LeaseGrant(req) => {
                if req.id == 0 {
                    return Err(Fail::Request(MvccError::LeaseNotFound));
                }
                if req.ttl > LEASE_TTL_MAX_SECS {
                    return Err(Fail::Request(MvccError::LeaseTtlTooLarge));
                }
                if self.lease_exists(req.id)? {
                    return Err(Fail::Request(MvccError::LeaseExists));
                }
                self.leases.insert(req.id, (req.ttl, 0))?;
                self.leases_changed = true;
                Response::LeaseGrant(LeaseGrantResponse {
                    revision: self.revision,
                    id: req.id,
                    ttl: req.ttl,
                })
            }
            Command::LeaseRevoke(req) => {
                if !self.lease_exists(req.id)? {
                    return Err(Fail::Request(MvccError::LeaseNotFound));
                }
                self.leases_changed = true;
                self.revoke(&mut w, req.id).map_err(in_mutation)?;
                Response::LeaseRevoke(LeaseRevokeResponse {
                    revision: w.read_revision(),
                })
            }
            Command::LeaseCheckpoint(req) => {
                for cp in &req.checkpoints {
                    // etcd ignores checkpoints of leases it does not know.
                    let granted = self.leases.get(cp.id)?.map(|v| v.value().0);
                    if let Some(granted) = granted {
                        self.leases.insert(cp.id, (granted, cp.remaining_ttl))?;
                        self.leases_changed = true;
                    }
                }
                Response::LeaseCheckpoint(LeaseCheckpointResponse {
                    revision: self.revision,
                })
            }
        };
        if w.sub > 0 {
            self.revision = w.begin + 1;
        }
        Ok((response, w.events))
    }

    /// The lease and existence checks etcd runs before a Put (standalone,
    /// or for each Put of a Txn's chosen branch before any op runs).
    fn validate_put(&self, req: &PutRequest) -> Result<(), Fail> {
        if req.lease != 0 && !self.lease_exists(req.lease)? {
            return Err(Fail::Request(MvccError::LeaseNotFound));
        }
        if (req.ignore_value || req.ignore_lease)
            && self.view().live_at(&req.key, i64::MAX).is_none()
        {
            return Err(Fail::Request(MvccError::KeyNotFound));
        }
        Ok(())
    }

    /// etcd's `applierV3backend.Put` after validation. The previous
    /// version is read back only when its value is needed (`prev_kv`,
    /// `ignore_value`); its create revision, version and lease come from
    /// the index.
    fn put(&mut self, w: &mut Writes, req: &PutRequest) -> Result<PutResponse, MvccError> {
        let prev = self.live(&req.key);
        let prev_kv = match prev {
            Some((rev, _)) if req.prev_kv || req.ignore_value => Some(self.read_kv(rev)?),
            _ => None,
        };
        let lease = match prev {
            Some((_, newest)) if req.ignore_lease => newest.lease,
            None if req.ignore_value || req.ignore_lease => return Err(MvccError::KeyNotFound),
            _ => req.lease,
        };
        let kept_value = if req.ignore_value {
            prev_kv.as_ref().map(|p| p.value.as_slice())
        } else {
            None
        };
        let value = kept_value.unwrap_or(&req.value);
        self.write_put(w, &req.key, value, lease, prev.map(|(_, newest)| newest))?;
        Ok(PutResponse {
            revision: w.begin + 1,
            prev_kv: if req.prev_kv { prev_kv } else { None },
        })
    }

    /// Stores a record at the next sub-revision of `w` and indexes it.
    fn write_record(&mut self, w: &mut Writes, record: &Record<'_>) -> Result<(), MvccError> {
        record.encode_into(&mut self.buf);
        let at = (record.mod_main, record.mod_sub);
        self.written_bytes += self.buf.len();
        self.unflushed_bytes += self.buf.len();
        self.written.push((at, self.buf.as_slice().into()));
        if self.unflushed_bytes >= CHUNK_BYTES_MAX
            || self.written.len() - self.flushed >= CHUNK_RECORDS_MAX
        {
            self.flush()?;
        }
        let (rev, newest) = record.index_entry();
        index::push(&mut self.overlay, record.key, rev, newest);
        w.sub = w
            .sub
            .checked_add(1)
            .ok_or_else(|| MvccError::Invariant("sub-revision overflow".into()))?;
        Ok(())
    }

    /// etcd's `storeTxnWrite.put`. `prev`: what the key's live version
    /// records, if it has one. The event carries no `prev_kv`: a watcher
    /// that asks for it reads it at send time (module doc of `types.rs`'s
    /// `Event`), so a put never reads the previous value for it.
    fn write_put(
        &mut self,
        w: &mut Writes,
        key: &[u8],
        value: &[u8],
        lease: i64,
        prev: Option<Newest>,
    ) -> Result<(), MvccError> {
        let main = w.begin + 1;
        let (create, version) = match &prev {
            Some(p) => (p.create, p.version + 1),
            None => (main, 1),
        };
        let record = Record {
            tombstone: false,
            mod_main: main,
            mod_sub: w.sub,
            create,
            version,
            lease,
            key,
            value,
        };
        self.write_record(w, &record)?;
        let old = prev.as_ref().map_or(0, |p| p.lease);
        if old != lease {
            self.leases_changed = true;
            if old != 0 {
                self.lease_keys.remove((old, key))?;
            }
            if lease != 0 {
                self.lease_keys.insert((lease, key), ())?;
            }
        }
        w.events.push(Event {
            kind: EventKind::Put,
            kv: record.to_kv(true),
            prev_kv: None,
        });
        Ok(())
    }

    /// etcd's `storeTxnWrite.delete` of one live key, whose live version
    /// has lease `prev_lease`.
    fn write_delete(
        &mut self,
        w: &mut Writes,
        key: &[u8],
        prev_lease: i64,
    ) -> Result<(), MvccError> {
        let main = w.begin + 1;
        let record = Record {
            tombstone: true,
            mod_main: main,
            mod_sub: w.sub,
            create: 0,
            version: 0,
            lease: 0,
            key,
            value: &[],
        };
        self.write_record(w, &record)?;
        if prev_lease != 0 {
            self.leases_changed = true;
            self.lease_keys.remove((prev_lease, key))?;
        }
        let kv = KeyValue {
            key: key.to_vec(),
            mod_revision: main,
            ..KeyValue::default()
        };
        w.events.push(Event {
            kind: EventKind::Delete,
            kv,
            prev_kv: None,
        });
        Ok(())
    }

    /// etcd's `applierV3backend.DeleteRange`.
    fn delete_range(
        &mut self,
        w: &mut Writes,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let mut victims: Vec<(Box<[u8]>, Rev)> = Vec::new();
        self.view()
            .visit_live(range, w.read_revision(), &mut |key, rev| {
                victims.push((key.into(), rev));
                Ok(true)
            })?;
        let deleted = victims.len() as i64;
        let mut prev_kvs = Vec::new();
        if req.prev_kv {
            for (_, rev) in &victims {
                prev_kvs.push(self.read_kv(*rev)?);
            }
        }
        for (key, _) in victims {
            // Live at the read revision is live now: nothing newer than the
            // store revision exists, and a Txn never writes a key twice.
            let lease = self.live(&key).map_or(0, |(_, newest)| newest.lease);
            self.write_delete(w, &key, lease)?;
        }
        Ok(DeleteRangeResponse {
            revision: w.read_revision(),
            deleted,
            prev_kvs,
        })
    }

    /// etcd's `lessor.Revoke`: deletes the attached keys in ascending key
    /// order, all in one revision, then the lease.
    fn revoke(&mut self, w: &mut Writes, id: i64) -> Result<(), MvccError> {
        let hi = match id.checked_add(1) {
            Some(next) => Bound::Excluded((next, &[][..])),
            None => Bound::Unbounded,
        };
        let mut keys = Vec::new();
        for entry in self
            .lease_keys
            .range::<(i64, &[u8])>((Bound::Included((id, &[][..])), hi))?
        {
            keys.push(entry?.0.value().1.to_vec());
        }
        for key in &keys {
            if let Some((_, newest)) = self.live(key) {
                self.write_delete(w, key, newest.lease)?;
            }
            // Detached by write_delete; removed here too in case the key was
            // already gone, so the lease leaves no trace.
            self.lease_keys.remove((id, key.as_slice()))?;
        }
        self.leases.remove(id)?;
        Ok(())
    }

    /// etcd's `applierV3backend.Txn`.
    fn txn(&mut self, w: &mut Writes, req: &TxnRequest) -> Result<TxnResponse, Fail> {
        // etcd checks this in its API layer; repeated here because
        // invariant 2 depends on it.
        check_txn_intervals(req)?;
        let revision = w.read_revision();
        let compacted = self.compacted;
        let mut path = Vec::new();
        compare_path(&self.view(), &self.records(), revision, req, &mut path)?;
        let mut at = 0;
        check_ops(req, &path, &mut at, &mut |op| match op {
            RequestOp::Put(p) => self.validate_put(p),
            _ => Ok(()),
        })?;
        let mut at = 0;
        check_ops(req, &path, &mut at, &mut |op| match op {
            RequestOp::Range(r) if r.revision != 0 => {
                if r.revision > revision {
                    Err(Fail::Request(MvccError::FutureRevision {
                        current_revision: revision,
                    }))
                } else if r.revision < compacted {
                    Err(Fail::Request(MvccError::Compacted {
                        compact_revision: compacted,
                    }))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        })?;
        let mut at = 0;
        let mut resp = self.exec_txn(w, req, &path, &mut at).map_err(in_mutation)?;
        resp.revision = w.read_revision();
        Ok(resp)
    }

    /// etcd's `applyTxn`: runs the branch `path[*at]` chose; nested
    /// transactions consume the following path entries.
    fn exec_txn(
        &mut self,
        w: &mut Writes,
        req: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<TxnResponse, MvccError> {
        let succeeded = path[*at];
        *at += 1;
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let plan = plan_range(&self.view(), r, w.read_revision(), self.compacted)?;
                    ResponseOp::Range(plan.finish(&self.records())?)
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(w, p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(w, d)?),
                // etcd leaves a nested transaction's header empty.
                RequestOp::Txn(t) => ResponseOp::Txn(self.exec_txn(w, t, path, at)?),
            });
        }
        Ok(TxnResponse {
            revision: 0,
            succeeded,
            responses,
        })
    }

    /// etcd's `Compact` with synchronous physical removal: for every key,
    /// drop the versions below its newest one at or below `rev`, and that
    /// one too if it is a tombstone. The index is walked in memory (etcd's
    /// `treeIndex.Compact`) under the read lock; the records go from `chunks`
    /// in revision order; the index entries go at publication (invariant 4),
    /// where only the keys that lose some are touched.
    fn compact(&mut self, rev: i64) -> Result<(), Fail> {
        if rev <= self.compacted {
            return Err(Fail::Request(MvccError::Compacted {
                compact_revision: self.compacted,
            }));
        }
        if rev > self.revision {
            return Err(Fail::Request(MvccError::FutureRevision {
                current_revision: self.revision,
            }));
        }
        let mut victims: Vec<RevKey> = Vec::new();
        let cuts = &mut self.compact_cuts;
        let mut cut = |key: &[u8], base: &[Rev], over: &[Rev]| {
            let n = compaction_cut(base, over, rev);
            if n > 0 {
                let all = base.iter().chain(over);
                victims.extend(all.take(n).map(|r| r.at()));
                // A later compaction in the batch cuts at least as much.
                cuts.insert(key.into(), n);
            }
        };
        let mut over = self.overlay.iter().peekable();
        for (key, base) in self.base {
            while let Some((k, o)) = over.next_if(|(k, _)| *k < key) {
                cut(k, &[], o);
            }
            match over.next_if(|(k, _)| *k == key) {
                Some((_, o)) => cut(key, base, o),
                None => cut(key, base, &[]),
            }
        }
        for (k, o) in over {
            cut(k, &[], o);
        }
        victims.sort_unstable();
        // The batch's own victims too: store them first, then take every
        // victim out of the chunks at once. A second compaction in one batch
        // finds some already gone.
        self.flush().map_err(Fail::Fatal)?;
        chunks::remove(&mut self.revs, &victims, &mut self.buf).map_err(Fail::Fatal)?;
        self.compacted = rev;
        Ok(())
    }
}

/// An apply batch's readable versions ([`Applier::records`]).
struct BatchRecords<'a, 't> {
    /// Written by this batch, not in `table` yet; ascending.
    unflushed: &'a [(RevKey, Box<[u8]>)],
    table: &'a Table<'t, RevKey, &'static [u8]>,
}

impl Records for BatchRecords<'_, '_> {
    fn with_bytes<R>(
        &self,
        at: RevKey,
        f: impl FnOnce(Option<&[u8]>) -> Result<R, MvccError>,
    ) -> Result<R, MvccError> {
        match self.unflushed.binary_search_by(|(k, _)| k.cmp(&at)) {
            Ok(i) => f(Some(&self.unflushed[i].1)),
            Err(_) => chunks::get(self.table, at, f),
        }
    }
}

/// etcd's `compareToPath`: evaluates the compares of `req` and of every
/// nested transaction on the chosen branches, all against the
/// pre-transaction view, depth first.
fn compare_path(
    view: &impl IndexView,
    records: &impl Records,
    revision: i64,
    req: &TxnRequest,
    path: &mut Vec<bool>,
) -> Result<(), MvccError> {
    let mut succeeded = true;
    for c in &req.compare {
        if !crate::read::compare(view, records, revision, c)? {
            succeeded = false;
            break;
        }
    }
    path.push(succeeded);
    for op in if succeeded {
        &req.success
    } else {
        &req.failure
    } {
        if let RequestOp::Txn(t) = op {
            compare_path(view, records, revision, t, path)?;
        }
    }
    Ok(())
}

/// etcd's `checkRequests`: runs `f` on every non-Txn op of the chosen
/// branches.
fn check_ops(
    req: &TxnRequest,
    path: &[bool],
    at: &mut usize,
    f: &mut dyn FnMut(&RequestOp) -> Result<(), Fail>,
) -> Result<(), Fail> {
    let succeeded = path[*at];
    *at += 1;
    for op in if succeeded {
        &req.success
    } else {
        &req.failure
    } {
        match op {
            RequestOp::Txn(t) => check_ops(t, path, at, f)?,
            op => f(op)?,
        }
    }
    Ok(())
}
