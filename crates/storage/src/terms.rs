//! The term of every index in the log, kept as runs so it costs memory per
//! term change rather than per entry.
//!
//! The writer needs terms, not entries: to decide whether a snapshot's
//! `(index, term)` matches the log (Raft paper figure 13, step 6) and to
//! answer [`crate::RaftStorage::term`]. The runtime keeps the entries.
//!
//! Invariants:
//! 1. The runs cover exactly `base.index + 1 ..= last`, in order, with
//!    strictly increasing start indexes; `base` is the snapshot point.
//! 2. Two neighbouring runs never share a term (they would be one run).

use concord_raft::{LogIndex, Term};

/// Terms of the indexes after a base point.
#[derive(Clone, Debug, Default)]
pub(crate) struct TermRuns {
    base: (LogIndex, Term),
    /// `(first index of the run, term)`.
    runs: Vec<(LogIndex, Term)>,
    last: LogIndex,
}

impl TermRuns {
    /// An empty log following `base`.
    pub(crate) fn new(base: (LogIndex, Term)) -> Self {
        TermRuns {
            base,
            runs: Vec::new(),
            last: base.0,
        }
    }

    /// The snapshot point the log follows.
    pub(crate) fn base(&self) -> (LogIndex, Term) {
        self.base
    }

    /// Last index in the log (the base index when empty).
    pub(crate) fn last(&self) -> LogIndex {
        self.last
    }

    /// Term at `index`, if the log (or its base) covers it.
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.base.0 {
            return Some(self.base.1);
        }
        if index < self.base.0 || index > self.last {
            return None;
        }
        let after = self.runs.partition_point(|&(start, _)| start <= index);
        // index > base and the first run starts at base + 1, so after >= 1.
        self.runs.get(after.checked_sub(1)?).map(|&(_, t)| t)
    }

    /// Appends `index` (which must be `last + 1`, or lower to overwrite).
    pub(crate) fn push(&mut self, index: LogIndex, term: Term) {
        assert!(
            index > self.base.0 && index <= self.last.next(),
            "term runs: {index} does not follow {}",
            self.last
        );
        if index <= self.last {
            self.truncate_from(index);
        }
        if self.runs.last().map(|&(_, t)| t) != Some(term) {
            self.runs.push((index, term));
        }
        self.last = index;
    }

    /// Drops every index `>= index`.
    fn truncate_from(&mut self, index: LogIndex) {
        let keep = self.runs.partition_point(|&(start, _)| start < index);
        self.runs.truncate(keep);
        self.last = index.prev();
    }

    /// Moves the base up to `base`, keeping the indexes after it.
    /// The caller has checked that `base` matches the term at that index.
    pub(crate) fn compact_to(&mut self, base: (LogIndex, Term)) {
        assert_eq!(
            self.term(base.0),
            Some(base.1),
            "compacting to a foreign point"
        );
        if base.0 <= self.base.0 {
            return;
        }
        let from = base.0.next();
        let first_kept = self.runs.partition_point(|&(start, _)| start <= from);
        // The run containing `from` (if any) restarts at `from`.
        let containing = first_kept.checked_sub(1).map(|i| self.runs[i].1);
        let mut runs = Vec::with_capacity(self.runs.len() - first_kept + 1);
        if let Some(t) = containing {
            if from <= self.last {
                runs.push((from, t));
            }
        }
        runs.extend_from_slice(&self.runs[first_kept..]);
        self.runs = runs;
        self.base = base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(runs: &TermRuns, i: u64) -> Option<u64> {
        runs.term(LogIndex(i)).map(|t| t.0)
    }

    #[test]
    fn terms_follow_appends_overwrites_and_compaction() {
        let mut r = TermRuns::new((LogIndex(0), Term(0)));
        for (i, term) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)] {
            r.push(LogIndex(i), Term(term));
        }
        assert_eq!(
            (1..=6).map(|i| t(&r, i)).collect::<Vec<_>>(),
            vec![Some(1), Some(1), Some(2), Some(2), Some(3), None]
        );
        assert_eq!(t(&r, 0), Some(0));
        r.push(LogIndex(4), Term(5));
        assert_eq!(r.last(), LogIndex(4));
        assert_eq!(t(&r, 3), Some(2));
        assert_eq!(t(&r, 4), Some(5));
        assert_eq!(t(&r, 5), None);
        r.compact_to((LogIndex(2), Term(1)));
        assert_eq!(t(&r, 1), None);
        assert_eq!(t(&r, 2), Some(1));
        assert_eq!(t(&r, 3), Some(2));
        assert_eq!(t(&r, 4), Some(5));
        r.compact_to((LogIndex(4), Term(5)));
        assert_eq!(t(&r, 4), Some(5));
        assert_eq!(r.last(), LogIndex(4));
        r.push(LogIndex(5), Term(5));
        assert_eq!(t(&r, 5), Some(5));
    }

    #[test]
    fn compaction_inside_a_run_keeps_its_tail() {
        let mut r = TermRuns::new((LogIndex(0), Term(0)));
        for i in 1..=10 {
            r.push(LogIndex(i), Term(7));
        }
        r.compact_to((LogIndex(5), Term(7)));
        assert_eq!((5..=11).map(|i| t(&r, i)).collect::<Vec<_>>(), {
            let mut v = vec![Some(7); 6];
            v.push(None);
            v
        });
    }
}
