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

use crate::error::MvccError;
use crate::index::{IndexView, KeyRange, Rev};
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

/// Reads and decodes the record at `rev`; a revision the index names but
/// the table lacks is corruption.
pub(crate) fn fetch<'g>(
    guard: &'g Option<redb::AccessGuard<'_, &'static [u8]>>,
    rev: Rev,
) -> Result<Record<'g>, MvccError> {
    match guard {
        Some(bytes) => {
            let record = Record::decode(rev.main, rev.sub, bytes.value())?;
            if record.tombstone != rev.tombstone {
                return Err(MvccError::Corrupt(format!(
                    "record {}.{} disagrees with the key index",
                    rev.main, rev.sub
                )));
            }
            Ok(record)
        }
        None => Err(MvccError::Corrupt(format!(
            "revision {}.{} is indexed but not stored",
            rev.main, rev.sub
        ))),
    }
}

/// Calls `f` with the decoded record at `rev`.
pub(crate) fn with_record<T>(
    table: &impl ReadableTable<RevKey, &'static [u8]>,
    rev: Rev,
    f: impl FnOnce(Record<'_>) -> Result<T, MvccError>,
) -> Result<T, MvccError> {
    let guard = table.get(rev.at())?;
    f(fetch(&guard, rev)?)
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
    })
}

impl RangePlan<'_> {
    /// Second half: fetches the planned versions from `records` (a view of
    /// the store that retains every version the plan names) and applies
    /// etcd's filters, sort and limit.
    pub fn finish(
        self,
        records: &impl ReadableTable<RevKey, &'static [u8]>,
    ) -> Result<RangeResponse, MvccError> {
        let req = self.req;
        let mut kvs = Vec::with_capacity(self.targets.len());
        for rev in &self.targets {
            kvs.push(with_record(
                records,
                *rev,
                |r| Ok(r.to_kv(self.with_value)),
            )?);
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
    records: &impl ReadableTable<RevKey, &'static [u8]>,
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
