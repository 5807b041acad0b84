//! Reads over a consistent view of the tables: key ranges, point-in-time
//! ranges, etcd's Range post-processing, and Txn compares.
//!
//! The same code serves a redb read transaction (client reads, never
//! blocking the writer) and the write transaction of an apply (reads inside
//! a Txn, which must see the Txn's earlier writes), by being generic over
//! redb's `ReadableTable`.
//!
//! Invariants:
//! 1. A read at the view's current revision is served from `current` alone;
//!    a read at an older revision from `history` with one or two seeks per
//!    key. Both give the same answer at the current revision (schema
//!    invariant 2).
//! 2. Results are in ascending key order before any requested sort.
//! 3. Revision checks follow etcd 3.4 exactly: `rev > current` is a future
//!    revision; `rev < compacted` (strictly) is compacted.

use std::cmp::Ordering;
use std::ops::Bound;

use redb::{AccessGuard, ReadableTable};

use crate::error::MvccError;
use crate::schema::{HistKey, Record};
use crate::types::{
    Compare, CompareResult, CompareTarget, KeyValue, RangeRequest, RangeResponse, SortOrder,
    SortTarget,
};

/// A key range decoded from etcd's `(key, range_end)` convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyRange<'a> {
    /// Exactly one key (`range_end` empty).
    Single(&'a [u8]),
    /// `[start, end)`, or every key `>= start` when `end` is `None`
    /// (`range_end == "\0"`).
    Span {
        start: &'a [u8],
        end: Option<&'a [u8]>,
    },
    /// `range_end <= key`: no key can match.
    Empty,
}

impl<'a> KeyRange<'a> {
    /// Decodes etcd's convention.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::Span {
                start: key,
                end: None,
            },
            end if end <= key => KeyRange::Empty,
            end => KeyRange::Span {
                start: key,
                end: Some(end),
            },
        }
    }

    /// Whether `k` is in the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(s) => k == s,
            KeyRange::Span { start, end } => k >= start && end.is_none_or(|e| k < e),
            KeyRange::Empty => false,
        }
    }

    /// Bounds for iterating `current`.
    fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match *self {
            KeyRange::Single(s) => (Bound::Included(s), Bound::Included(s)),
            KeyRange::Span { start, end } => (
                Bound::Included(start),
                end.map_or(Bound::Unbounded, Bound::Excluded),
            ),
            // Never iterated: callers return early on Empty.
            KeyRange::Empty => (Bound::Excluded(&[][..]), Bound::Excluded(&[][..])),
        }
    }
}

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

/// A consistent view: `current` and `history` from one redb transaction,
/// with the revision that transaction represents.
pub(crate) struct View<'t, C, H> {
    /// The `current` table.
    pub current: &'t C,
    /// The `history` table.
    pub history: &'t H,
    /// The store revision this view shows (inside a Txn: including its
    /// own writes so far).
    pub revision: i64,
    /// The compacted revision.
    pub compacted: i64,
}

impl<'t, C, H> View<'t, C, H>
where
    C: ReadableTable<&'static [u8], &'static [u8]>,
    H: ReadableTable<HistKey<'static>, &'static [u8]>,
{
    /// Calls `f(key, record)` for each key live at `rev` in `range`, in key
    /// order, until `f` returns `false`.
    pub fn visit(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        mut f: impl FnMut(&[u8], Record<'_>) -> Result<bool, MvccError>,
    ) -> Result<(), MvccError> {
        if range == KeyRange::Empty {
            return Ok(());
        }
        if rev >= self.revision {
            if let KeyRange::Single(k) = range {
                if let Some(v) = self.current.get(k)? {
                    f(k, Record::decode(v.value())?)?;
                }
                return Ok(());
            }
            for entry in self.current.range::<&[u8]>(range.bounds())? {
                let (k, v) = entry?;
                if !f(k.value(), Record::decode(v.value())?)? {
                    break;
                }
            }
            return Ok(());
        }
        self.visit_history(range, rev, f)
    }

    /// [`Self::visit`] at a past revision: for each distinct key in range,
    /// seek its newest version at or below `rev`.
    fn visit_history(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        mut f: impl FnMut(&[u8], Record<'_>) -> Result<bool, MvccError>,
    ) -> Result<(), MvccError> {
        if let KeyRange::Single(k) = range {
            if let Some(r) = self.version_at(k, rev)? {
                let (key, value) = r;
                let record = Record::decode(value.value())?;
                if !record.tombstone {
                    f(key.value().0, record)?;
                }
            }
            return Ok(());
        }
        let KeyRange::Span { start, end } = range else {
            return Ok(());
        };
        let hi: Bound<HistKey<'_>> =
            end.map_or(Bound::Unbounded, |e| Bound::Excluded((e, i64::MIN, 0)));
        let mut after: Option<Vec<u8>> = None;
        loop {
            let lo: Bound<HistKey<'_>> = match &after {
                None => Bound::Included((start, i64::MIN, 0)),
                Some(k) => Bound::Excluded((k.as_slice(), i64::MAX, u32::MAX)),
            };
            let next = self
                .history
                .range::<HistKey<'_>>((lo, hi))?
                .next()
                .transpose()?;
            let Some((first_key, _)) = next else { break };
            let (key, oldest_main, _) = first_key.value();
            let key = key.to_vec();
            // The oldest retained version is newer than `rev`: the key did
            // not exist then (compaction keeps the newest version <= C).
            if oldest_main <= rev {
                if let Some((_, value)) = self.version_at(&key, rev)? {
                    let record = Record::decode(value.value())?;
                    if !record.tombstone && !f(&key, record)? {
                        break;
                    }
                }
            }
            after = Some(key);
        }
        Ok(())
    }

    /// The newest stored version of `key` at or below `rev`, tombstones included.
    #[allow(clippy::type_complexity)]
    pub fn version_at(
        &self,
        key: &[u8],
        rev: i64,
    ) -> Result<
        Option<(
            AccessGuard<'t, HistKey<'static>>,
            AccessGuard<'t, &'static [u8]>,
        )>,
        MvccError,
    > {
        let found = self
            .history
            .range::<HistKey<'_>>((key, i64::MIN, 0)..=(key, rev, u32::MAX))?
            .next_back();
        Ok(found.transpose()?)
    }

    /// etcd's mvcc `rangeKeys`: the number of keys live at `rev` in
    /// `range`, and the first `limit` of them (all if `limit <= 0`; none if
    /// `count_only`).
    fn fetch(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        limit: i64,
        count_only: bool,
        with_value: bool,
    ) -> Result<(Vec<KeyValue>, i64), MvccError> {
        let take = if count_only {
            0
        } else if limit <= 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let mut kvs = Vec::new();
        let mut count = 0i64;
        self.visit(range, rev, |k, r| {
            count += 1;
            if kvs.len() < take {
                kvs.push(r.to_kv(k, with_value));
            }
            Ok(true)
        })?;
        Ok((kvs, count))
    }

    /// etcd 3.4's `applierV3backend.Range` (etcdserver/apply.go), answered at
    /// this view's revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let rev = resolve_read_revision(req.revision, self.revision, self.compacted)?;
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // etcd fetches everything when it has to sort or filter, and one
        // extra kv otherwise so that it can tell whether there is `more`.
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
        let range = KeyRange::new(&req.key, &req.range_end);
        let (mut kvs, count) = self.fetch(range, rev, limit, req.count_only, with_value)?;

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

        if order != SortOrder::None {
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
            match order {
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
            revision: self.revision,
            kvs,
            more,
            count,
        })
    }

    /// etcd's `applyCompare`: evaluated at this view's revision.
    pub fn compare(&self, c: &Compare) -> Result<bool, MvccError> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let mut any = false;
        let mut holds = true;
        self.visit(range, self.revision, |_, r| {
            any = true;
            holds = compare_record(c, Some(&r));
            Ok(holds)
        })?;
        if !any {
            // etcd: comparing a value on a missing key always fails (no way
            // to tell a missing value from an empty one); other targets
            // compare against zero.
            return Ok(!matches!(c.target, CompareTarget::Value(_)) && compare_record(c, None));
        }
        Ok(holds)
    }
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
