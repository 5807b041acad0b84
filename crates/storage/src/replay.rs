//! Rebuilding the log from WAL records during recovery.
//!
//! The WAL is append-only; overwrites and resets are records, and their
//! meaning is given here:
//! - an entry at index `i` replaces every entry at `i` and beyond recorded
//!   before it (a log conflict, Raft paper section 5.3);
//! - a reset record `(s, t)` discards every entry recorded before it: the log
//!   now follows the snapshot at `s` (figure 13, step 7).
//!
//! Finally the log is cut to what follows the chosen snapshot `(ci, ct)`,
//! applying figure 13's rule once more: if the log holds `ci` with term
//! `ct`, the entries after it stay; otherwise the whole log is discarded.
//! That last step makes a crash between writing a snapshot file and writing
//! its reset record harmless: recovery takes the same decision the writer
//! took.
//!
//! Invariants:
//! 1. `entries` is contiguous at all times.
//! 2. `anchor`, when set, is the point `entries` follows (a reset); when
//!    unset, `entries` starts wherever the oldest kept segment started.
//! 3. Entries at or below the chosen snapshot keep only their index and term
//!    (their data is dropped at the end anyway, so it is not copied).
//! 4. A gap is accepted only where the chosen snapshot covers it (segments
//!    compacted under it); any other gap is an error, never papered over.

use crate::error::{Result, StorageError};
use crate::record::Record;
use bytes::Bytes;
use concord_raft::{Entry, EntryKind, LogIndex, Term};
use std::path::{Path, PathBuf};

/// The log as rebuilt so far.
pub(crate) struct Replay {
    dir: PathBuf,
    snapshot: (LogIndex, Term),
    entries: Vec<Entry>,
    anchor: Option<(LogIndex, Term)>,
}

/// What recovery ends with.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// Entries after the snapshot, contiguous from its index + 1.
    pub(crate) entries: Vec<Entry>,
    /// Entries after the snapshot that figure 13 discarded because the log
    /// did not hold the snapshot's `(index, term)`.
    pub(crate) discarded: u64,
    /// Figure 13 discarded a non-empty log that has no reset record on disk
    /// (a crash came between the snapshot file and its reset record). The
    /// caller must write the reset now: entries appended later would
    /// otherwise follow the stale ones and be discarded with them at the
    /// next recovery.
    pub(crate) reset_needed: bool,
}

impl Replay {
    /// Starts a replay whose result will follow `snapshot` (`(0, 0)` if none).
    pub(crate) fn new(dir: &Path, snapshot: (LogIndex, Term)) -> Self {
        Replay {
            dir: dir.to_path_buf(),
            snapshot,
            entries: Vec::new(),
            anchor: None,
        }
    }

    fn next_index(&self) -> Option<LogIndex> {
        match (self.entries.last(), self.anchor) {
            (Some(last), _) => Some(last.index.next()),
            (None, Some((a, _))) => Some(a.next()),
            (None, None) => None,
        }
    }

    /// Applies one record read at `path:offset`.
    pub(crate) fn record(&mut self, rec: Record<'_>, path: &Path, offset: u64) -> Result<()> {
        match rec {
            Record::SegmentHeader { .. } => Ok(()),
            Record::Entry {
                index,
                term,
                kind,
                data,
            } => self.entry(index, term, kind, data, path, offset),
            Record::Reset { index, term } => {
                if index > self.snapshot.0 {
                    return Err(StorageError::Inconsistent {
                        dir: self.dir.clone(),
                        reason: format!(
                            "{}@{offset} resets the log to a snapshot at {index}, but the newest \
                             valid snapshot file is at {}: that snapshot file is missing or damaged",
                            path.display(),
                            self.snapshot.0
                        ),
                    });
                }
                self.entries.clear();
                self.anchor = Some((index, term));
                Ok(())
            }
        }
    }

    fn entry(
        &mut self,
        index: LogIndex,
        term: Term,
        kind: EntryKind,
        data: &[u8],
        path: &Path,
        offset: u64,
    ) -> Result<()> {
        match self.next_index() {
            Some(next) if index > next => {
                if index > self.snapshot.0.next() {
                    return Err(StorageError::corrupt(
                        path,
                        offset,
                        format!("gap in the log: expected entry {next}, found {index}"),
                    ));
                }
                // Invariant 4: the snapshot covers the gap.
                self.entries.clear();
                self.anchor = None;
            }
            Some(next) if index < next => {
                let first = self.entries.first().map(|e| e.index);
                match (first, self.anchor) {
                    (Some(first), _) if index >= first => {
                        self.entries.truncate((index.0 - first.0) as usize);
                    }
                    (_, Some((a, _))) if index <= a => {
                        return Err(StorageError::corrupt(
                            path,
                            offset,
                            format!(
                                "entry {index} at or below the snapshot {a} the log was reset to"
                            ),
                        ));
                    }
                    _ => self.entries.clear(),
                }
            }
            _ => {}
        }
        let data = if index <= self.snapshot.0 {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(data)
        };
        self.entries.push(Entry {
            term,
            index,
            kind,
            data,
        });
        Ok(())
    }

    /// Cuts the log to what follows the chosen snapshot (figure 13).
    pub(crate) fn finish(self) -> Result<Replayed> {
        let (ci, ct) = self.snapshot;
        let mut entries = self.entries;
        let Some(first) = entries.first().map(|e| e.index) else {
            return Ok(Replayed {
                entries,
                discarded: 0,
                reset_needed: false,
            });
        };
        let term_at_snapshot = match self.anchor {
            Some((a, t)) if a == ci => Some(t),
            _ if first <= ci => entries.get((ci.0 - first.0) as usize).map(|e| e.term),
            _ => None,
        };
        if term_at_snapshot == Some(ct) || (self.anchor.is_none() && first == ci.next()) {
            // The log continues the snapshot: keep what follows it.
            let drop = ci.next().0.saturating_sub(first.0) as usize;
            entries.drain(..drop.min(entries.len()));
            return Ok(Replayed {
                entries,
                discarded: 0,
                reset_needed: false,
            });
        }
        if first > ci.next() {
            return Err(StorageError::Inconsistent {
                dir: self.dir,
                reason: format!(
                    "the log starts at {first} but the snapshot ends at {ci}: entries in between \
                     are missing"
                ),
            });
        }
        let discarded = entries.iter().filter(|e| e.index > ci).count() as u64;
        Ok(Replayed {
            entries: Vec::new(),
            discarded,
            reset_needed: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(snapshot: (u64, u64), records: &[(char, u64, u64)]) -> Result<Vec<(u64, u64)>> {
        let p = Path::new("seg");
        let mut r = Replay::new(Path::new("dir"), (LogIndex(snapshot.0), Term(snapshot.1)));
        for (off, &(ty, i, t)) in records.iter().enumerate() {
            let rec = match ty {
                'e' => Record::Entry {
                    index: LogIndex(i),
                    term: Term(t),
                    kind: EntryKind::Normal,
                    data: b"x",
                },
                _ => Record::Reset {
                    index: LogIndex(i),
                    term: Term(t),
                },
            };
            r.record(rec, p, off as u64)?;
        }
        Ok(r.finish()?
            .entries
            .iter()
            .map(|e| (e.index.0, e.term.0))
            .collect())
    }

    #[test]
    fn overwrites_replace_the_suffix() {
        let log = run(
            (0, 0),
            &[
                ('e', 1, 1),
                ('e', 2, 1),
                ('e', 3, 1),
                ('e', 2, 2),
                ('e', 3, 2),
            ],
        );
        assert_eq!(log.unwrap(), vec![(1, 1), (2, 2), (3, 2)]);
    }

    #[test]
    fn the_log_must_start_at_one_without_a_snapshot() {
        assert!(matches!(
            run((0, 0), &[('e', 2, 1)]),
            Err(StorageError::Inconsistent { .. })
        ));
    }

    #[test]
    fn gaps_are_errors_unless_the_snapshot_covers_them() {
        let err = run((0, 0), &[('e', 1, 1), ('e', 3, 1)]).unwrap_err();
        assert!(
            matches!(err, StorageError::Corrupt { offset: 1, .. }),
            "{err}"
        );
        // Segments holding 3..=9 compacted away under a snapshot at 9.
        let log = run((9, 2), &[('e', 1, 1), ('e', 2, 1), ('e', 10, 2)]).unwrap();
        assert_eq!(log, vec![(10, 2)]);
    }

    #[test]
    fn snapshot_with_matching_entry_keeps_the_suffix() {
        let log = run((2, 1), &[('e', 1, 1), ('e', 2, 1), ('e', 3, 2)]).unwrap();
        assert_eq!(log, vec![(3, 2)]);
    }

    #[test]
    fn snapshot_not_in_the_log_discards_it() {
        // Crash after the snapshot file was written but before its reset
        // record: the term at 2 differs, so figure 13 discards the log.
        let mut r = Replay::new(Path::new("d"), (LogIndex(2), Term(5)));
        for i in 1..=3 {
            r.record(
                Record::Entry {
                    index: LogIndex(i),
                    term: Term(1),
                    kind: EntryKind::Normal,
                    data: b"",
                },
                Path::new("s"),
                0,
            )
            .unwrap();
        }
        let done = r.finish().unwrap();
        assert!(done.entries.is_empty());
        assert_eq!(done.discarded, 1);
        // A log that ends before the snapshot is discarded too.
        assert_eq!(run((10, 5), &[('e', 1, 1)]).unwrap(), vec![]);
    }

    #[test]
    fn reset_restarts_the_log_after_the_snapshot() {
        let log = run(
            (10, 3),
            &[
                ('e', 1, 1),
                ('e', 2, 1),
                ('r', 10, 3),
                ('e', 11, 3),
                ('e', 12, 3),
            ],
        );
        assert_eq!(log.unwrap(), vec![(11, 3), (12, 3)]);
        // Compacted under the snapshot: the oldest kept segment starts at 11.
        assert_eq!(run((10, 3), &[('e', 11, 3)]).unwrap(), vec![(11, 3)]);
    }

    #[test]
    fn reset_beyond_the_chosen_snapshot_is_inconsistent() {
        let err = run((5, 1), &[('r', 10, 3)]).unwrap_err();
        assert!(matches!(err, StorageError::Inconsistent { .. }), "{err}");
    }

    #[test]
    fn entries_at_or_below_a_reset_are_corrupt() {
        let err = run((10, 3), &[('r', 10, 3), ('e', 11, 3), ('e', 9, 3)]).unwrap_err();
        assert!(
            matches!(err, StorageError::Corrupt { offset: 2, .. }),
            "{err}"
        );
    }
}
