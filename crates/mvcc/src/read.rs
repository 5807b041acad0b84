//! Reads: etcd's Range in two steps, and Txn compares.
//!
//! A Range is planned on the key index ([`plan_range`]: which keys, at which
//! revision, how many) and then finished on a redb table of records
//! ([`RangePlan::finish`]: fetch what is returned, post-process). A reader
//! plans under the index lock and fetches after releasing it; an apply
//! batch does both on its own view (published index plus its writes, and
//! its write transaction). `count_only` never fetches, a `limit` fetches
//! only the first `limit + 1` keys, and `keys_only` never copies a value.
//!
//! Invariants:
//! 1. Results are in ascending key order before any requested sort.
//! 2. Revision checks follow etcd 3.4 exactly: `rev > current` is a future
//!    revision; `rev < compacted` (strictly) is compacted.

use std::cmp::Ordering;

use redb::ReadableTable;

use crate::chunks;
use crate::error::MvccError;
use crate::index::{IndexView, KeyRange, Rev};
use crate::pending::Pending;
use crate::schema::{Record, RevKey};
use crate::types::{
    Compare, CompareResult, CompareTarget, KeyValue, RangeRequest, RangeResponse, SortOrder,
    SortTarget,
};

/// Checks a read revision the way etcd's `rangeKeys` does and resolves 0.
pub(crate) fn resolve_read_revision(
    requested: i64,
    current: i64,
    compacted: i64,
) -> Result<i64, MvccError> {
    if requested > current {
        return Err(MvccError::FutureRevision {
            current_revision: current,
        });
    }
    let rev = if requested <= 0 { current } else { requested };
    if rev < compacted {
        return Err(MvccError::Compacted {
            compact_revision: compacted,
        });
    }
    Ok(rev)
}

/// Somewhere versions can be looked up by revision: a table of chunks
/// ([`Stored`]), a reader's pending log in front of one
/// ([`ReaderRecords`]), or an apply batch's own writes in front of one.
pub(crate) trait Records {
    /// Calls `f` with the record stored at `at` (`None` if not held).
    fn with_bytes<R>(
        &self,
        at: RevKey,
        f: impl FnOnce(Option<&[u8]>) -> Result<R, MvccError>,
    ) -> Result<R, MvccError>;
}

/// A `chunks` table (`chunks.rs`) as [`Records`].
pub(crate) struct Stored<'a, T>(pub &'a T);

impl<T: ReadableTable<RevKey, &'static [u8]>> Records for Stored<'_, T> {
    fn with_bytes<R>(
        &self,
        at: RevKey,
        f: impl FnOnce(Option<&[u8]>) -> Result<R, MvccError>,
    ) -> Result<R, MvccError> {
        chunks::get(self.0, at, f)
    }
}

/// Calls `f` with the decoded record at `rev`; a revision the index names
/// but `records` lack is corruption.
pub(crate) fn with_record<T>(
    records: &impl Records,
    rev: Rev,
    f: impl FnOnce(Record<'_>) -> Result<T, MvccError>,
) -> Result<T, MvccError> {
    records.with_bytes(rev.at(), |bytes| f(decode_at(bytes, rev)?))
}

/// Decodes the record at `rev` from its stored bytes (`None`: the table
/// lacks it, which is corruption).
fn decode_at(bytes: Option<&[u8]>, rev: Rev) -> Result<Record<'_>, MvccError> {
    let Some(bytes) = bytes else {
        return Err(MvccError::Corrupt(format!(
            "revision {}.{} is indexed but not stored",
            rev.main, rev.sub
        )));
    };
    let record = Record::decode(rev.main, rev.sub, bytes)?;
    if record.tombstone != rev.tombstone {
        return Err(MvccError::Corrupt(format!(
            "record {}.{} disagrees with the key index",
            rev.main, rev.sub
        )));
    }
    Ok(record)
}

/// The callback of [`ReaderRecords::scan`]: `(revision, bytes) -> go on?`.
pub(crate) type RecordVisitor<'f> = dyn FnMut(RevKey, &[u8]) -> Result<bool, MvccError> + 'f;

/// A reader's records: the versions no commit holds yet (`pending.rs`),
/// then its redb read transaction's `chunks` table.
pub(crate) struct ReaderRecords<'a, T> {
    /// A copy of the published pending log, taken under the read lock.
    pub pending: &'a Pending,
    /// `chunks` of a read transaction begun under the same lock.
    pub table: &'a T,
}

impl<T: ReadableTable<RevKey, &'static [u8]>> Records for ReaderRecords<'_, T> {
    /// Pending invariant 2: a record not pending is in the table.
    fn with_bytes<R>(
        &self,
        at: RevKey,
        f: impl FnOnce(Option<&[u8]>) -> Result<R, MvccError>,
    ) -> Result<R, MvccError> {
        match self.pending.get(at) {
            Some(bytes) => f(Some(bytes)),
            None => chunks::get(self.table, at, f),
        }
    }
}

impl<T: ReadableTable<RevKey, &'static [u8]>> ReaderRecords<'_, T> {
    /// Calls `f(revision, bytes)` for every record at or below `upto` from
    /// `from` on, ascending, until it returns false: the table's records,
    /// then the pending ones it does not hold yet (a pending record at or
    /// below the table's last is in the table, pending invariant 2).
    pub fn scan(
        &self,
        from: RevKey,
        upto: RevKey,
        f: &mut RecordVisitor<'_>,
    ) -> Result<(), MvccError> {
        let (last, stopped) = chunks::scan(self.table, from, upto, f)?;
        if stopped {
            return Ok(());
        }
        let after = match last {
            Some(at) => at,
            // Nothing stored in range: every pending record from `from` on.
            None => match from {
                (main, 0) => (main.saturating_sub(1), u32::MAX),
                (main, sub) => (main, sub - 1),
            },
        };
        for (at, bytes) in self.pending.range(after, upto) {
            if !f(at, bytes)? {
                break;
            }
        }
        Ok(())
    }
}

/// What a Range returns, decided on the index alone.
pub(crate) struct RangePlan<'q> {
    req: &'q RangeRequest,
    /// The revision the response header reports.
    header_revision: i64,
    /// Keys live at `read_revision` in range.
    count: i64,
    /// The versions to fetch, in key order.
    targets: Vec<Rev>,
    order: SortOrder,
    with_value: bool,
    /// Targets already read from the pending log, by position
    /// ([`RangePlan::prefetch`]).
    fetched: Vec<Option<KeyValue>>,
}

/// etcd 3.4's `applierV3backend.Range` (etcdserver/apply.go), first half:
/// resolves the revision and picks the versions to fetch.
pub(crate) fn plan_range<'q>(
    index: &impl IndexView,
    req: &'q RangeRequest,
    revision: i64,
    compacted: i64,
) -> Result<RangePlan<'q>, MvccError> {
    let rev = resolve_read_revision(req.revision, revision, compacted)?;
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // etcd fetches everything when it has to sort or filter, and one extra
    // kv otherwise so that it can tell whether there is `more`.
    let mut limit = req.limit;
    if req.sort_order != SortOrder::None || filtered {
        limit = 0;
    }
    if limit > 0 {
        limit += 1;
    }
    // etcd's quirk: with order NONE and a target other than KEY it still
    // sorts, ascending. Keys already come out ascending, so NONE/KEY is
    // ASCEND/KEY.
    let order = match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let with_value =
        !req.keys_only || (order != SortOrder::None && req.sort_target == SortTarget::Value);
    let take = if req.count_only {
        0
    } else if limit <= 0 {
        usize::MAX
    } else {
        limit as usize
    };
    let mut targets = Vec::new();
    let mut count = 0i64;
    index.visit_live(KeyRange::new(&req.key, &req.range_end), rev, &mut |_, r| {
        count += 1;
        if targets.len() < take {
            targets.push(r);
        }
        Ok(true)
    })?;
    Ok(RangePlan {
        req,
        header_revision: revision,
        count,
        targets,
        order,
        with_value,
        fetched: Vec::new(),
    })
}

impl RangePlan<'_> {
    /// Reads the planned versions the pending log holds (a reader does
    /// this under the read lock, so that it needs no copy of the log; the
    /// rest comes from its read transaction in [`RangePlan::finish`]).
    pub fn prefetch(&mut self, pending: &Pending) -> Result<(), MvccError> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut fetched = Vec::with_capacity(self.targets.len());
        for rev in &self.targets {
            fetched.push(match pending.get(rev.at()) {
                Some(bytes) => Some(decode_at(Some(bytes), *rev)?.to_kv(self.with_value)),
                None => None,
            });
        }
        self.fetched = fetched;
        Ok(())
    }

    /// Second half: fetches the planned versions not prefetched from
    /// `records` (a view of the store that retains every version the plan
    /// names) and applies etcd's filters, sort and limit.
    pub fn finish(self, records: &impl Records) -> Result<RangeResponse, MvccError> {
        let req = self.req;
        let mut kvs = Vec::with_capacity(self.targets.len());
        let mut fetched = self.fetched.into_iter();
        for rev in &self.targets {
            kvs.push(match fetched.next().flatten() {
                Some(kv) => kv,
                None => with_record(records, *rev, |r| Ok(r.to_kv(self.with_value)))?,
            });
        }

        // The filters prune kvs but not `count`, exactly as etcd 3.4 does.
        if req.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
        }
        if req.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
        }
        if req.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
        }
        if req.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
        }

        if self.order != SortOrder::None {
            let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
                match req.sort_target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                }
            };
            // Stable, so ties keep ascending key order in both directions
            // (what Go's sort.Sort does for the small inputs it sorts by
            // insertion).
            match self.order {
                SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
                _ => kvs.sort_by(cmp),
            }
        }

        let mut more = false;
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        Ok(RangeResponse {
            revision: self.header_revision,
            kvs,
            more,
            count: self.count,
        })
    }
}

/// etcd's `applyCompare`, evaluated at `revision`.
pub(crate) fn compare(
    index: &impl IndexView,
    records: &impl Records,
    revision: i64,
    c: &Compare,
) -> Result<bool, MvccError> {
    let range = KeyRange::new(&c.key, &c.range_end);
    let mut any = false;
    let mut holds = true;
    index.visit_live(range, revision, &mut |_, rev| {
        any = true;
        holds = with_record(records, rev, |r| Ok(compare_record(c, Some(&r))))?;
        Ok(holds)
    })?;
    if !any {
        // etcd: comparing a value on a missing key always fails (no way to
        // tell a missing value from an empty one); other targets compare
        // against zero.
        return Ok(!matches!(c.target, CompareTarget::Value(_)) && compare_record(c, None));
    }
    Ok(holds)
}

/// etcd's `compareKV` on one stored version (`None`: a zero key-value).
fn compare_record(c: &Compare, r: Option<&Record<'_>>) -> bool {
    let ord = match &c.target {
        CompareTarget::Value(v) => r.map_or(&[][..], |r| r.value).cmp(v.as_slice()),
        CompareTarget::Create(x) => r.map_or(0, |r| r.create).cmp(x),
        CompareTarget::Mod(x) => r.map_or(0, |r| r.mod_main).cmp(x),
        CompareTarget::Version(x) => r.map_or(0, |r| r.version).cmp(x),
        CompareTarget::Lease(x) => r.map_or(0, |r| r.lease).cmp(x),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}
