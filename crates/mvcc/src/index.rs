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
//!    exactly the versions `revs` holds for that key (schema invariant 1);
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
    /// Its key in the `revs` table.
    pub fn at(self) -> (i64, u32) {
        (self.main, self.sub)
    }
}

/// A key's retained revisions, ascending. Most keys have one (always so
/// right after a compaction at the current revision), kept inline: a heap
/// allocation per key would cost a third of the index's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Revs {
    /// Exactly one revision.
    One(Rev),
    /// Any number (never empty in the index).
    Many(Vec<Rev>),
}

impl std::ops::Deref for Revs {
    type Target = [Rev];

    fn deref(&self) -> &[Rev] {
        match self {
            Revs::One(r) => std::slice::from_ref(r),
            Revs::Many(v) => v,
        }
    }
}

impl Revs {
    /// Appends a newer revision.
    pub fn push(&mut self, rev: Rev) {
        debug_assert!(self.last().is_none_or(|l| l.at() < rev.at()));
        match self {
            Revs::One(first) => *self = Revs::Many(vec![*first, rev]),
            Revs::Many(v) => v.push(rev),
        }
    }

    /// Appends newer revisions.
    pub fn extend(&mut self, newer: &[Rev]) {
        for r in newer {
            self.push(*r);
        }
    }

    /// Drops the `n` oldest revisions; false if none is left.
    fn cut(&mut self, n: usize) -> bool {
        let left = self.len().saturating_sub(n);
        match left {
            0 => return false,
            1 => *self = Revs::One(*self.last().expect("one left")),
            _ => {
                if let Revs::Many(v) = self {
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

/// The newest revision of `revs` at or below `rev`, tombstones included.
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
pub(crate) fn push(keys: &mut Keys, key: &[u8], rev: Rev) {
    match keys.get_mut(key) {
        Some(revs) => revs.push(rev),
        None => {
            keys.insert(key.into(), Revs::One(rev));
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
}

impl IndexView for Keys {
    fn newest_at(&self, key: &[u8], rev: i64) -> Option<Rev> {
        newest_at(self.get(key)?, rev)
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
        keys.insert(b"a".as_slice().into(), Revs::Many(revs.to_vec()));
        keys.insert(
            b"b".as_slice().into(),
            Revs::Many(vec![r(3, false), r(5, true)]),
        );
        let cuts = keys
            .iter()
            .map(|(k, v)| (k.clone(), compaction_cut(v, &[], 7)))
            .collect();
        apply_cuts(&mut keys, cuts);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[b"a".as_slice()], Revs::One(r(8, false)));
        assert_eq!(std::mem::size_of::<Revs>(), 24, "no bigger than a Vec");
        assert_eq!(newest_at(&[r(8, false)], 7), None);
    }

    #[test]
    fn layered_visits_merge_in_key_order() {
        let mut base = Keys::new();
        for (k, main) in [("a", 2), ("c", 3), ("e", 4)] {
            push(&mut base, k.as_bytes(), r(main, false));
        }
        let mut overlay = Keys::new();
        push(&mut overlay, b"b", r(5, false));
        push(&mut overlay, b"c", r(5, true));
        push(&mut overlay, b"f", r(5, false));
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
