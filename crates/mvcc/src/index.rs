//! The in-memory key index: for every key, the revisions of its retained
//! versions (etcd's `treeIndex`).
//!
//! redb stores versions by revision only (`schema.rs`); the index answers
//! "which revision holds key `k` at revision `R`" and "which keys are live
//! in `[a, b)` at `R`" without touching the disk. Counting a range, or
//! checking that a key exists, never reads a value.
//!
//! Invariants:
//! 1. A key's revisions are strictly ascending by `(main, sub)` and name
//!    exactly the versions `chunks` holds for that key (schema invariant 1);
//!    a key with no retained version is absent from the map.
//! 2. After compaction at `C` (see [`compaction_cut`]) a key keeps at most
//!    one revision `<= C`, its newest, and only if that is not a tombstone.
//! 3. The newest revision `<= R` of a key decides the key at `R`: a
//!    tombstone or no revision means absent. Removing what compaction at
//!    `C` removes never changes that answer for `R >= C`; this is why a
//!    reader that checks its revision against the compacted revision can
//!    never miss a record it needs.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::MvccError;

/// One retained version of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rev {
    /// The revision.
    pub main: i64,
    /// Position within the revision.
    pub sub: u32,
    /// The key was deleted at this revision.
    pub tombstone: bool,
}

impl Rev {
    /// Where it is stored: its revision as `(main, sub)`.
    pub fn at(self) -> (i64, u32) {
        (self.main, self.sub)
    }
}

/// What a key's newest version records besides its revision: what a put
/// or delete needs to write the next version without reading the last one
/// back from redb (etcd's `keyIndex` keeps `created` and `ver` for the same
/// reason, and its lessor the key's lease). All zero for a tombstone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Newest {
    /// The key's create revision.
    pub create: i64,
    /// The key's version (puts since creation).
    pub version: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// A key's retained revisions, ascending, and what its newest version
/// records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Revs {
    list: RevList,
    /// Of the newest revision (`self.last()`).
    pub newest: Newest,
}

/// Most keys have one revision (always so right after a compaction at the
/// current revision), kept inline: a heap allocation per key would cost a
/// third of the index's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RevList {
    /// Exactly one revision.
    One(Rev),
    /// Any number (never empty in the index).
    Many(Vec<Rev>),
}

impl std::ops::Deref for Revs {
    type Target = [Rev];

    fn deref(&self) -> &[Rev] {
        match &self.list {
            RevList::One(r) => std::slice::from_ref(r),
            RevList::Many(v) => v,
        }
    }
}

impl Revs {
    /// A key's first retained revision.
    pub fn new(rev: Rev, newest: Newest) -> Revs {
        Revs {
            list: RevList::One(rev),
            newest,
        }
    }

    /// The newest revision and what it records, unless it is a tombstone.
    fn live_newest(&self) -> Option<(Rev, Newest)> {
        let last = *self.last()?;
        (!last.tombstone).then_some((last, self.newest))
    }

    /// Appends a newer revision.
    pub fn push(&mut self, rev: Rev, newest: Newest) {
        debug_assert!(self.last().is_none_or(|l| l.at() < rev.at()));
        match &mut self.list {
            RevList::One(first) => {
                let first = *first;
                self.list = RevList::Many(vec![first, rev]);
            }
            RevList::Many(v) => v.push(rev),
        }
        self.newest = newest;
    }

    /// Appends the revisions of `newer` (all newer than these).
    pub fn extend(&mut self, newer: &Revs) {
        for r in newer.iter() {
            self.push(*r, newer.newest);
        }
    }

    /// Drops the `n` oldest revisions; false if none is left. The newest
    /// stays while any does, so `newest` stays true.
    fn cut(&mut self, n: usize) -> bool {
        let left = self.len().saturating_sub(n);
        match left {
            0 => return false,
            1 => self.list = RevList::One(*self.last().expect("one left")),
            _ => {
                if let RevList::Many(v) = &mut self.list {
                    v.drain(..n);
                    if v.capacity() > 2 * v.len() {
                        v.shrink_to_fit();
                    }
                }
            }
        }
        true
    }
}

/// Key -> ascending retained revisions.
pub(crate) type Keys = BTreeMap<Box<[u8]>, Revs>;

/// The newest of `revs` at or below `rev`, tombstones included.
pub(crate) fn newest_at(revs: &[Rev], rev: i64) -> Option<Rev> {
    let n = revs.partition_point(|r| r.main <= rev);
    n.checked_sub(1).map(|i| revs[i])
}

/// How many of a key's oldest revisions compaction at `c` removes: all
/// below its newest revision `<= c`, and that one too if it is a tombstone
/// (etcd's `keyIndex.compact`). The key's revisions are `base` followed by
/// `over` (an apply batch's, all newer than `base`'s).
pub(crate) fn compaction_cut(base: &[Rev], over: &[Rev], c: i64) -> usize {
    // At or below `c`: a prefix of base, then of over (empty unless all of
    // base is at or below `c`).
    let n = base.partition_point(|r| r.main <= c) + over.partition_point(|r| r.main <= c);
    let newest = match n.checked_sub(1) {
        None => return 0,
        Some(i) if i < base.len() => base[i],
        Some(i) => over[i - base.len()],
    };
    if newest.tombstone {
        n
    } else {
        n - 1
    }
}

/// Removes the `cut` oldest revisions of each key (computed by
/// [`compaction_cut`]), and keys left with none.
pub(crate) fn apply_cuts(keys: &mut Keys, cuts: BTreeMap<Box<[u8]>, usize>) {
    for (key, cut) in cuts {
        let Some(revs) = keys.get_mut(&key) else {
            continue;
        };
        if !revs.cut(cut) {
            keys.remove(&key);
        }
    }
}

/// Appends a version to `key`'s revisions, allocating the key only when it
/// is new.
pub(crate) fn push(keys: &mut Keys, key: &[u8], rev: Rev, newest: Newest) {
    match keys.get_mut(key) {
        Some(revs) => revs.push(rev, newest),
        None => {
            keys.insert(key.into(), Revs::new(rev, newest));
        }
    }
}

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

    /// Bounds of a `Span` for iterating the index.
    fn span_bounds(start: &'a [u8], end: Option<&'a [u8]>) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        (
            Bound::Included(start),
            end.map_or(Bound::Unbounded, Bound::Excluded),
        )
    }
}

/// The callback of [`IndexView::visit_live`]: `(key, revision) -> go on?`.
pub(crate) type Visitor<'f> = dyn FnMut(&[u8], Rev) -> Result<bool, MvccError> + 'f;

/// Read access to a key index: the published one, or (inside an apply
/// batch) the published one with the batch's own writes on top.
pub(crate) trait IndexView {
    /// The newest revision of `key` at or below `rev`, tombstones included.
    fn newest_at(&self, key: &[u8], rev: i64) -> Option<Rev>;

    /// Calls `f(key, revision)` for each key live at `rev` in `range`, in
    /// key order, with the revision that holds it, until `f` returns false.
    fn visit_live(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        f: &mut Visitor<'_>,
    ) -> Result<(), MvccError>;

    /// The revision holding `key` at `rev`, if the key is live then.
    fn live_at(&self, key: &[u8], rev: i64) -> Option<Rev> {
        self.newest_at(key, rev).filter(|r| !r.tombstone)
    }

    /// The newest revision of `key` and what it records, if the key is
    /// live now.
    fn live_newest(&self, key: &[u8]) -> Option<(Rev, Newest)>;
}

impl IndexView for Keys {
    fn newest_at(&self, key: &[u8], rev: i64) -> Option<Rev> {
        newest_at(self.get(key)?, rev)
    }

    fn live_newest(&self, key: &[u8]) -> Option<(Rev, Newest)> {
        self.get(key)?.live_newest()
    }

    fn visit_live(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        f: &mut Visitor<'_>,
    ) -> Result<(), MvccError> {
        match range {
            KeyRange::Empty => {}
            KeyRange::Single(k) => {
                if let Some(r) = self.live_at(k, rev) {
                    f(k, r)?;
                }
            }
            KeyRange::Span { start, end } => {
                for (k, revs) in self.range::<[u8], _>(KeyRange::span_bounds(start, end)) {
                    if let Some(r) = newest_at(revs, rev).filter(|r| !r.tombstone) {
                        if !f(k, r)? {
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The published index with an apply batch's writes on top. Every
/// revision in `overlay` is newer than every revision in `base`.
pub(crate) struct Layered<'a> {
    /// The published index.
    pub base: &'a Keys,
    /// The batch's writes so far.
    pub overlay: &'a Keys,
}

impl IndexView for Layered<'_> {
    fn newest_at(&self, key: &[u8], rev: i64) -> Option<Rev> {
        self.overlay
            .newest_at(key, rev)
            .or_else(|| self.base.newest_at(key, rev))
    }

    fn live_newest(&self, key: &[u8]) -> Option<(Rev, Newest)> {
        // The batch's own newest version decides if it has one.
        match self.overlay.get(key) {
            Some(revs) => revs.live_newest(),
            None => self.base.live_newest(key),
        }
    }

    fn visit_live(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        f: &mut Visitor<'_>,
    ) -> Result<(), MvccError> {
        let (start, end) = match range {
            KeyRange::Empty => return Ok(()),
            KeyRange::Single(k) => {
                if let Some(r) = self.live_at(k, rev) {
                    f(k, r)?;
                }
                return Ok(());
            }
            KeyRange::Span { start, end } => (start, end),
        };
        let bounds = KeyRange::span_bounds(start, end);
        let mut base = self.base.range::<[u8], _>(bounds).peekable();
        let mut over = self.overlay.range::<[u8], _>(bounds).peekable();
        loop {
            let (key, newest) = match (base.peek(), over.peek()) {
                (None, None) => break,
                (Some((bk, _)), Some((ok, _))) if bk == ok => {
                    let (k, b) = base.next().expect("peeked");
                    let (_, o) = over.next().expect("peeked");
                    (k, newest_at(o, rev).or_else(|| newest_at(b, rev)))
                }
                (Some((bk, _)), Some((ok, _))) if ok < bk => {
                    let (k, o) = over.next().expect("peeked");
                    (k, newest_at(o, rev))
                }
                (Some(_), _) => {
                    let (k, b) = base.next().expect("peeked");
                    (k, newest_at(b, rev))
                }
                (None, Some(_)) => {
                    let (k, o) = over.next().expect("peeked");
                    (k, newest_at(o, rev))
                }
            };
            if let Some(r) = newest.filter(|r| !r.tombstone) {
                if !f(key, r)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64, tombstone: bool) -> Rev {
        Rev {
            main,
            sub: 0,
            tombstone,
        }
    }

    fn many(revs: &[Rev]) -> Revs {
        let mut all = Revs::new(revs[0], Newest::default());
        for rev in &revs[1..] {
            all.push(*rev, Newest::default());
        }
        all
    }

    #[test]
    fn compaction_keeps_the_newest_live_version_at_or_below() {
        let revs = [r(2, false), r(4, false), r(6, true), r(8, false)];
        assert_eq!(compaction_cut(&revs, &[], 1), 0);
        assert_eq!(compaction_cut(&revs, &[], 2), 0);
        assert_eq!(compaction_cut(&revs, &[], 5), 1);
        assert_eq!(compaction_cut(&revs, &[], 6), 3, "a tombstone goes too");
        assert_eq!(compaction_cut(&revs, &[], 9), 3);
        for c in 0..10 {
            for split in 0..=revs.len() {
                let (base, over) = revs.split_at(split);
                assert_eq!(compaction_cut(base, over, c), compaction_cut(&revs, &[], c));
            }
        }
        let mut keys = Keys::new();
        keys.insert(b"a".as_slice().into(), many(&revs));
        keys.insert(b"b".as_slice().into(), many(&[r(3, false), r(5, true)]));
        let cuts = keys
            .iter()
            .map(|(k, v)| (k.clone(), compaction_cut(v, &[], 7)))
            .collect();
        apply_cuts(&mut keys, cuts);
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys[b"a".as_slice()],
            Revs::new(r(8, false), Newest::default())
        );
        assert_eq!(
            std::mem::size_of::<Revs>(),
            48,
            "a Vec's size for the revisions, three i64 for the newest"
        );
        assert_eq!(newest_at(&[r(8, false)], 7), None);
    }

    #[test]
    fn newest_follows_the_last_revision() {
        let first = Newest {
            create: 2,
            version: 1,
            lease: 7,
        };
        let second = Newest {
            version: 2,
            lease: 0,
            ..first
        };
        let mut base = Keys::new();
        push(&mut base, b"k", r(2, false), first);
        let mut overlay = Keys::new();
        push(&mut overlay, b"k", r(3, false), second);
        let view = Layered {
            base: &base,
            overlay: &overlay,
        };
        assert_eq!(view.live_newest(b"k"), Some((r(3, false), second)));
        assert_eq!(base.live_newest(b"k"), Some((r(2, false), first)));
        base.get_mut(b"k".as_slice())
            .unwrap()
            .extend(&overlay[b"k".as_slice()]);
        assert_eq!(base[b"k".as_slice()].newest, second);
        // Compaction keeps the newest revision, so `newest` stays true.
        apply_cuts(&mut base, [(b"k".as_slice().into(), 1)].into());
        assert_eq!(base.live_newest(b"k"), Some((r(3, false), second)));
        push(&mut base, b"k", r(4, true), Newest::default());
        assert_eq!(base.live_newest(b"k"), None, "a tombstone is not live");
    }

    #[test]
    fn layered_visits_merge_in_key_order() {
        let mut base = Keys::new();
        for (k, main) in [("a", 2), ("c", 3), ("e", 4)] {
            push(&mut base, k.as_bytes(), r(main, false), Newest::default());
        }
        let mut overlay = Keys::new();
        push(&mut overlay, b"b", r(5, false), Newest::default());
        push(&mut overlay, b"c", r(5, true), Newest::default());
        push(&mut overlay, b"f", r(5, false), Newest::default());
        let view = Layered {
            base: &base,
            overlay: &overlay,
        };
        let mut seen = Vec::new();
        view.visit_live(KeyRange::new(b"a", b"\0"), 5, &mut |k, rev| {
            seen.push((k.to_vec(), rev.main));
            Ok(true)
        })
        .unwrap();
        let want: Vec<(Vec<u8>, i64)> = vec![
            (b"a".to_vec(), 2),
            (b"b".to_vec(), 5),
            (b"e".to_vec(), 4),
            (b"f".to_vec(), 5),
        ];
        assert_eq!(seen, want);
        seen.clear();
        view.visit_live(KeyRange::new(b"b", b"e"), 4, &mut |k, rev| {
            seen.push((k.to_vec(), rev.main));
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, vec![(b"c".to_vec(), 3)]);
        assert_eq!(view.live_at(b"c", 5), None);
        assert_eq!(view.newest_at(b"c", 5), Some(r(5, true)));
    }
}
