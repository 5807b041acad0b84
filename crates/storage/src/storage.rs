//! [`RaftStorage`]: the durable state of one Raft member in one directory,
//! and its recovery.
//!
//! Invariants:
//! 1. The log the storage describes is `snapshot point + entries`, where
//!    `terms` mirrors the entries' terms and the WAL's records, replayed by
//!    [`crate::replay`], produce exactly that log.
//! 2. Ordering on disk: a snapshot file is durable before the WAL record that
//!    depends on it; the WAL is fdatasynced before the hard-state file is
//!    rewritten, and the commit written is clamped to the last index, so a
//!    stored commit never points past durable entries.
//! 3. After an I/O error in a mutating call the storage is poisoned and
//!    refuses further mutation: memory and disk may disagree, and only a
//!    fresh [`RaftStorage::open`] (which re-reads the disk) may go on.
//! 4. Arguments are checked before anything is written, so a
//!    [`StorageError::Rejected`] or [`StorageError::EntryTooLarge`] leaves
//!    memory and disk exactly as they were.

use crate::error::{Result, StorageError};
use crate::fsutil::{self, FileBytes, TMP_SUFFIX};
use crate::hard_state;
use crate::record::ENTRY_DATA_BYTES_MAX;
use crate::replay::Replay;
use crate::snapshot::{self, SnapFile, SNAPSHOTS_KEPT};
use crate::terms::TermRuns;
use crate::wal::{
    self, SegmentEnd, SegmentInfo, TornTail, Wal, WalLimits, SEGMENT_BYTES_DEFAULT,
    SEGMENT_BYTES_LIMIT, SEGMENT_FILE_BYTES_LIMIT, WRITE_FLUSH_BYTES_DEFAULT,
};
use concord_raft::{Entry, HardState, LogIndex, NodeId, Snapshot, Term};
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Tunables of the storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// The WAL rolls to a new segment before an entry once the current
    /// segment holds at least this many bytes. At most
    /// [`SEGMENT_BYTES_LIMIT`]; default [`SEGMENT_BYTES_DEFAULT`] (64 MiB).
    pub segment_bytes_max: u64,
    /// Appended records are buffered in memory and written to the file when
    /// this many bytes accumulate, or at `sync`. Default
    /// [`WRITE_FLUSH_BYTES_DEFAULT`] (1 MiB); tests shrink it to exercise
    /// crashes after partial writes.
    pub write_flush_bytes: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            write_flush_bytes: WRITE_FLUSH_BYTES_DEFAULT,
        }
    }
}

/// What [`RaftStorage::open`] found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Term, vote and commit. The commit may be lower than it was before the
    /// restart (see [`RaftStorage::set_hard_state`]) and is at least the
    /// snapshot's index; it never exceeds the last recovered index.
    pub hard_state: HardState,
    /// The newest valid snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot: contiguous, starting at the snapshot's
    /// index + 1 (or 1 without a snapshot).
    pub entries: Vec<Entry>,
    /// What recovery repaired or skipped, for the runtime to log. Recovery
    /// never repairs silently (DESIGN.md rule 2).
    pub notes: Vec<RecoveryNote>,
}

/// Something recovery repaired or skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryNote {
    /// The newest segment ended in a torn record (a write interrupted by a
    /// crash, never acknowledged since it was not synced); the file was cut
    /// at `offset`.
    TornTailCut {
        /// The segment file.
        path: PathBuf,
        /// Where the valid records end.
        offset: u64,
        /// How many bytes were cut.
        bytes_dropped: u64,
    },
    /// A snapshot file was damaged or misnamed and was skipped (left on disk
    /// for inspection); an older one was used, if any.
    SnapshotSkipped {
        /// The snapshot file.
        path: PathBuf,
        /// Why it was skipped.
        reason: String,
    },
    /// A temporary file of an interrupted atomic write was removed.
    TempFileRemoved {
        /// The removed file.
        path: PathBuf,
    },
    /// The process stopped after saving a snapshot that did not match the
    /// log but before recording the log's reset; recovery discarded the log
    /// as the writer had (Raft paper figure 13) and recorded the reset.
    LogResetToSnapshot {
        /// Index of the snapshot the log now follows.
        snapshot_index: LogIndex,
        /// Entries after that index that were discarded.
        entries_discarded: u64,
    },
}

/// A durable snapshot file written by
/// [`RaftStorage::write_snapshot_file`], waiting to be adopted.
#[derive(Debug)]
pub struct SnapshotFile(SnapFile);

impl SnapshotFile {
    /// The snapshot's last included index.
    pub fn index(&self) -> LogIndex {
        self.0.index
    }
}

/// The durable state of one Raft member: a segmented write-ahead log of
/// entries, the hard state, and snapshots, all in one directory.
///
/// # Contract
///
/// - **Durability point.** Nothing passed to [`append`](Self::append) or
///   [`set_hard_state`](Self::set_hard_state) is durable until
///   [`sync`](Self::sync) returns `Ok`; then all of it is, with one
///   `fdatasync` of the log (group commit), plus a rewrite of the hard-state
///   file when term or vote changed. Acknowledge nothing (votes, appends)
///   before that. Dropping the storage without `sync` behaves like a crash:
///   some prefix of the unsynced appends may survive.
/// - **Overwrites.** Appending at an index `<= last_index()` replaces the log
///   from that index on (Raft section 5.3), durably after the next `sync`.
/// - **Snapshots.** [`save_snapshot`](Self::save_snapshot) is durable on
///   return. If the log holds the snapshot's `(index, term)`, the entries
///   after it are kept; otherwise the whole log is discarded and continues
///   at index + 1 (Raft figure 13, steps 6 and 7). Entries at or below the
///   snapshot are then gone from the storage's view; their segments are
///   deleted by [`compact`](Self::compact).
/// - **Reads.** The storage serves no entry reads: the runtime keeps the log
///   it recovered and appended in memory. [`term`](Self::term) answers term
///   look-ups cheaply.
/// - **Failure.** Argument errors change nothing. An I/O error poisons the
///   storage (every later mutation answers [`StorageError::Poisoned`]);
///   reopen the directory, which re-reads what is really on disk.
/// - **One owner.** Only one `RaftStorage` may use a directory at a time;
///   this is not enforced by a lock file.
///
/// A typical turn of the runtime loop: `append(ready.entries)`,
/// `set_hard_state(ready.hard_state)`, `save_snapshot` if one arrived,
/// `sync()`, and only then send the messages that depend on them.
#[derive(Debug)]
pub struct RaftStorage {
    dir: PathBuf,
    wal: Wal,
    terms: TermRuns,
    /// The hard state most recently given to `set_hard_state`.
    hard_state: HardState,
    /// What the hard-state file holds.
    stored_hard_state: HardState,
    /// Valid snapshot files on disk, oldest first; the last is the newest.
    snapshots: Vec<SnapFile>,
    poisoned: bool,
}

impl RaftStorage {
    /// Opens (creating if needed) the storage in `dir` and recovers its
    /// state: the hard state, the newest valid snapshot, and the log after
    /// it. A torn final record in the newest segment is cut off; damage
    /// anywhere else is refused with [`StorageError::Corrupt`] naming the
    /// file and byte offset.
    ///
    /// The disk is changed only once every check has passed (and every
    /// change is reported in [`Recovered::notes`]): leftover temporary files
    /// are removed, the torn tail is cut, and, if a crash came between a
    /// snapshot and its log-reset record, the reset is recorded. A refusal
    /// leaves the directory as it was found.
    pub fn open(dir: &Path, opts: StorageOptions) -> Result<(RaftStorage, Recovered)> {
        if opts.segment_bytes_max == 0 || opts.segment_bytes_max > SEGMENT_BYTES_LIMIT {
            return Err(StorageError::rejected(format!(
                "segment_bytes_max must be in 1..={SEGMENT_BYTES_LIMIT}"
            )));
        }
        if opts.write_flush_bytes == 0 {
            return Err(StorageError::rejected("write_flush_bytes must be positive"));
        }
        let limits = WalLimits {
            segment_bytes_max: opts.segment_bytes_max,
            write_flush_bytes: opts.write_flush_bytes,
        };
        create_dir(dir)?;
        let mut notes = Vec::new();
        let listing = list_dir(dir, &mut notes)?;

        let mut hard_state = hard_state::load(dir)?;
        let stored_hard_state = hard_state;

        let (snapshot, snapshots) = load_newest_snapshot(listing.snapshots, &mut notes)?;
        let base = snapshot
            .as_ref()
            .map_or((LogIndex(0), Term(0)), |s| (s.meta.index, s.meta.term));

        let (segments, replay, torn) = match replay_segments(dir, &listing.segments, base, true)? {
            Some(done) => done,
            // The newest segment's records run into its unread zero tail
            // (only after a crash): replay again, reading all of it.
            None => replay_segments(dir, &listing.segments, base, false)?
                .expect("a whole read always ends"),
        };
        let replayed = replay.finish()?;
        let reset_needed = replayed.reset_needed;
        if reset_needed {
            notes.push(RecoveryNote::LogResetToSnapshot {
                snapshot_index: base.0,
                entries_discarded: replayed.discarded,
            });
        }
        let entries = replayed.entries;

        let mut terms = TermRuns::new(base);
        for e in &entries {
            terms.push(e.index, e.term);
        }
        if hard_state.commit > terms.last() {
            return Err(StorageError::Inconsistent {
                dir: dir.to_path_buf(),
                reason: format!(
                    "the hard state commits up to {} but the log ends at {}: synced entries are lost",
                    hard_state.commit,
                    terms.last()
                ),
            });
        }
        hard_state.commit = hard_state.commit.max(base.0);

        // Every check passed: only now repair the disk, so that a refusal
        // leaves it exactly as found.
        for path in listing.temp_files {
            fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
            notes.push(RecoveryNote::TempFileRemoved { path });
        }
        let mut last_len = torn.valid_len;
        if let Some(cut) = torn.cut {
            let path = &segments.last().expect("a torn tail has a segment").path;
            cut_torn_tail(path, cut.offset)?;
            last_len = cut.offset;
            notes.push(RecoveryNote::TornTailCut {
                path: path.clone(),
                offset: cut.offset,
                bytes_dropped: cut.bytes_dropped,
            });
        }

        let mut wal = if segments.is_empty() {
            Wal::create(dir, limits, base.0.next())?
        } else {
            Wal::resume(dir, limits, segments, last_len)?
        };
        if reset_needed {
            // Record the decision, so that entries appended from now on are
            // not discarded with the stale ones at the next recovery.
            wal.append_reset(base.0, base.1)?;
            wal.sync()?;
        }

        let storage = RaftStorage {
            dir: dir.to_path_buf(),
            wal,
            terms,
            hard_state,
            stored_hard_state,
            snapshots,
            poisoned: false,
        };
        let recovered = Recovered {
            hard_state,
            snapshot,
            entries,
            notes,
        };
        Ok((storage, recovered))
    }

    /// The storage directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Index of the last entry, or the snapshot's index if no entry follows it.
    pub fn last_index(&self) -> LogIndex {
        self.terms.last()
    }

    /// Index of the first entry the log can hold: the snapshot's index + 1.
    pub fn first_index(&self) -> LogIndex {
        self.terms.base().0.next()
    }

    /// `(index, term)` of the newest saved snapshot (`(0, 0)` if none).
    pub fn snapshot_point(&self) -> (LogIndex, Term) {
        self.terms.base()
    }

    /// Term of the entry at `index` (or of the snapshot, at its index), if
    /// the log covers it.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        self.terms.term(index)
    }

    /// The hard state most recently set (durable only after `sync`).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Appends entries, replacing the log from `entries[0].index` on if that
    /// is not after the last index. The entries must be consecutive, start
    /// after the snapshot and no later than `last_index() + 1`. Buffered: one
    /// write for the batch in the common case, durable at the next `sync`.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_poisoned()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let (base, _) = self.terms.base();
        if first.index <= base {
            return Err(StorageError::rejected(format!(
                "append at {} is at or below the snapshot at {base}",
                first.index
            )));
        }
        if first.index > self.last_index().next() {
            return Err(StorageError::rejected(format!(
                "append at {} leaves a gap after the last index {}",
                first.index,
                self.last_index()
            )));
        }
        for (i, e) in entries.iter().enumerate() {
            let expected = LogIndex(first.index.0 + i as u64);
            if e.index != expected {
                return Err(StorageError::rejected(format!(
                    "append batch is not consecutive: found {} where {expected} belongs",
                    e.index
                )));
            }
            if e.data.len() > ENTRY_DATA_BYTES_MAX {
                return Err(StorageError::EntryTooLarge {
                    index: e.index,
                    bytes: e.data.len(),
                    max: ENTRY_DATA_BYTES_MAX,
                });
            }
        }
        let written = self.wal.append(entries);
        self.poison_on_err(written)?;
        for e in entries {
            self.terms.push(e.index, e.term);
        }
        Ok(())
    }

    /// Records the hard state, to be persisted by the next `sync`.
    ///
    /// Cheap path: the hard-state file (two fsyncs and a rename) is rewritten
    /// by `sync` only when term or vote changed, which is all Raft's safety
    /// needs. A change of commit alone stays in memory until the next rewrite
    /// (or [`sync_commit`](Self::sync_commit)), so the commit recovered after
    /// a crash may be stale, i.e. lower: that only means re-applying
    /// committed entries from an earlier point, which apply must tolerate
    /// anyway.
    ///
    /// Rejected, as caller bugs that would break Raft: a vote for node 0,
    /// a term going backwards, and a changed vote within one term.
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<()> {
        if hs.vote == Some(NodeId(0)) {
            return Err(StorageError::rejected(
                "vote for node 0, which means nobody",
            ));
        }
        let cur = self.hard_state;
        if hs.term < cur.term {
            return Err(StorageError::rejected(format!(
                "term going backwards from {} to {}",
                cur.term, hs.term
            )));
        }
        if hs.term == cur.term && cur.vote.is_some() && hs.vote != cur.vote {
            return Err(StorageError::rejected(format!(
                "vote changing within {} from {:?} to {:?}",
                cur.term, cur.vote, hs.vote
            )));
        }
        self.hard_state = *hs;
        Ok(())
    }

    /// Makes everything appended and set so far durable (see the contract on
    /// the type): one write and one `fdatasync` of the log, then, if term or
    /// vote changed, an atomic rewrite of the hard-state file.
    pub fn sync(&mut self) -> Result<()> {
        self.sync_inner(false)
    }

    /// Like [`sync`](Self::sync), and also rewrites the hard-state file when
    /// only its commit changed, so the next recovery resumes apply from the
    /// current commit (for example at a clean shutdown, or now and then).
    pub fn sync_commit(&mut self) -> Result<()> {
        self.sync_inner(true)
    }

    fn sync_inner(&mut self, with_commit: bool) -> Result<()> {
        self.check_poisoned()?;
        let synced = self.wal.sync();
        self.poison_on_err(synced)?;
        // Invariant 2: the log is durable by now, and the commit stored is
        // clamped to it, so the stored commit never points past durable
        // entries, whatever order the caller set things in.
        let hs = HardState {
            commit: self.hard_state.commit.min(self.last_index()),
            ..self.hard_state
        };
        let stored = self.stored_hard_state;
        let changed = (hs.term, hs.vote) != (stored.term, stored.vote);
        if changed || (with_commit && hs.commit != stored.commit) {
            let written = hard_state::store(&self.dir, &hs);
            self.poison_on_err(written)?;
            self.stored_hard_state = hs;
        }
        Ok(())
    }

    /// Durably saves a snapshot, keeps the [`SNAPSHOTS_KEPT`] newest snapshot
    /// files, and moves the log's start past the snapshot (see the contract
    /// on the type). A snapshot not newer than the stored one is refused with
    /// [`StorageError::StaleSnapshot`]; one that would discard entries at or
    /// below the durable commit (its term differs from the log's there) is
    /// [`StorageError::Rejected`].
    pub fn save_snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        self.check_poisoned()?;
        self.check_snapshot_point(snap.meta.index, snap.meta.term)?;
        let saved = snapshot::save(&self.dir, snap);
        let file = self.poison_on_err(saved)?;
        self.adopt(file)
    }

    /// Writes a snapshot file durably into `dir` without touching any
    /// storage: the slow half of [`save_snapshot`](Self::save_snapshot), for
    /// a background thread (a large state machine must not stall the thread
    /// that owns the log). Hand the result to
    /// [`adopt_snapshot`](Self::adopt_snapshot). A file that is never adopted
    /// is a valid snapshot that recovery may use; that is safe because its
    /// state was applied (and so committed) before it was taken.
    pub fn write_snapshot_file(dir: &Path, snap: &Snapshot) -> Result<SnapshotFile> {
        snapshot::save(dir, snap).map(SnapshotFile)
    }

    /// Makes a file from [`write_snapshot_file`](Self::write_snapshot_file)
    /// this storage's newest snapshot, exactly as
    /// [`save_snapshot`](Self::save_snapshot) would have. A file that is no
    /// longer newer than the stored snapshot (one arrived from the leader
    /// meanwhile) is deleted and [`StorageError::StaleSnapshot`] returned;
    /// nothing else changes and the storage stays usable.
    pub fn adopt_snapshot(&mut self, file: SnapshotFile) -> Result<()> {
        self.check_poisoned()?;
        let file = file.0;
        if let Err(e) = self.check_snapshot_point(file.index, file.term) {
            let _ = fs::remove_file(&file.path);
            return Err(e);
        }
        self.adopt(file)
    }

    fn check_snapshot_point(&self, index: LogIndex, term: Term) -> Result<()> {
        let (stored, _) = self.terms.base();
        if index <= stored {
            return Err(StorageError::StaleSnapshot {
                offered: index,
                stored,
            });
        }
        let continues_log = self.terms.term(index) == Some(term);
        let durable_commit = self.stored_hard_state.commit;
        if !continues_log && index <= durable_commit {
            return Err(StorageError::rejected(format!(
                "snapshot at {index} {term} conflicts with the log at or below the durable \
                 commit {durable_commit}: discarding committed entries would break Raft"
            )));
        }
        Ok(())
    }

    /// Invariant 2: the file is durable before the reset record that needs it.
    fn adopt(&mut self, file: SnapFile) -> Result<()> {
        let (index, term) = (file.index, file.term);
        let continues_log = self.terms.term(index) == Some(term);
        self.snapshots.retain(|f| f.index < index);
        self.snapshots.push(file);
        if continues_log {
            self.terms.compact_to((index, term));
        } else {
            let reset = self.wal.append_reset(index, term);
            self.poison_on_err(reset)?;
            self.terms = TermRuns::new((index, term));
        }
        while self.snapshots.len() > SNAPSHOTS_KEPT {
            let old = self.snapshots.remove(0);
            match fs::remove_file(&old.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.poisoned = true;
                    return Err(StorageError::io("remove", &old.path, e));
                }
            }
        }
        Ok(())
    }

    /// Deletes the log segments whose records all lie at or below `upto`
    /// (never the segment being written). `upto` may not exceed the snapshot
    /// index. Passing the older kept snapshot's index instead of the newest
    /// keeps the log needed to fall back to it if the newest snapshot file is
    /// ever found damaged. Returns the number of segments deleted.
    pub fn compact(&mut self, upto: LogIndex) -> Result<usize> {
        self.check_poisoned()?;
        let (base, _) = self.terms.base();
        if upto > base {
            return Err(StorageError::rejected(format!(
                "compact({upto}) beyond the snapshot at {base}"
            )));
        }
        let compacted = self.wal.compact(upto);
        self.poison_on_err(compacted)
    }

    /// The file holding the kept snapshot at `index`, if any: read it with
    /// [`read_snapshot_file`](Self::read_snapshot_file), on any thread.
    pub fn snapshot_path(&self, index: LogIndex) -> Option<PathBuf> {
        self.snapshots
            .iter()
            .find(|f| f.index == index)
            .map(|f| f.path.clone())
    }

    /// Reads and validates a snapshot file (checksums, and the name against
    /// the contents). A file deleted meanwhile (a newer snapshot replaced
    /// it) is an I/O error like any other.
    pub fn read_snapshot_file(path: &Path) -> Result<Snapshot> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some((index, term)) = snapshot::parse_name(name) else {
            return Err(StorageError::corrupt(path, 0, "not a snapshot file name"));
        };
        snapshot::load(&SnapFile {
            index,
            term,
            path: path.to_path_buf(),
        })
    }

    /// Indexes of the snapshot files kept, oldest first.
    pub fn snapshot_indexes(&self) -> Vec<LogIndex> {
        self.snapshots.iter().map(|f| f.index).collect()
    }

    /// Number of WAL segment files.
    pub fn segment_count(&self) -> usize {
        self.wal.segments().len()
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        Ok(())
    }

    fn poison_on_err<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }
}

/// Creates `dir` if needed, durably.
fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsutil::sync_dir(parent)?;
    }
    Ok(())
}

/// The storage files found in a directory.
struct Listing {
    segments: Vec<SegmentInfo>,
    snapshots: Vec<SnapFile>,
    /// Debris of interrupted atomic writes, to remove once recovery succeeds.
    temp_files: Vec<PathBuf>,
}

/// Lists the directory.
fn list_dir(dir: &Path, notes: &mut Vec<RecoveryNote>) -> Result<Listing> {
    let mut listing = Listing {
        segments: Vec::new(),
        snapshots: Vec::new(),
        temp_files: Vec::new(),
    };
    let read = fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    for dirent in read {
        let dirent = dirent.map_err(|e| StorageError::io("list", dir, e))?;
        let path = dirent.path();
        // Names this crate writes are ASCII; anything else is not ours.
        let Some(name) = dirent.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
            listing.temp_files.push(path);
        } else if wal::is_segment_name(&name) {
            let Some((seq, first_index)) = wal::parse_name(&name) else {
                return Err(StorageError::corrupt(
                    path,
                    0,
                    "unrecognised segment file name",
                ));
            };
            listing.segments.push(SegmentInfo {
                seq,
                first_index,
                path,
                max_index: None,
            });
        } else if snapshot::is_snapshot_name(&name) {
            match snapshot::parse_name(&name) {
                Some((index, term)) => listing.snapshots.push(SnapFile { index, term, path }),
                None => notes.push(RecoveryNote::SnapshotSkipped {
                    path,
                    reason: "unrecognised snapshot file name".into(),
                }),
            }
        }
        // The hard-state file is read by name; foreign files are left alone.
    }
    listing.segments.sort_by_key(|s| s.seq);
    listing.snapshots.sort_by_key(|s| s.index);
    Ok(listing)
}

/// Loads the newest valid snapshot; returns it and the snapshot files still
/// considered valid (the damaged ones are reported and left alone).
fn load_newest_snapshot(
    mut files: Vec<SnapFile>,
    notes: &mut Vec<RecoveryNote>,
) -> Result<(Option<Snapshot>, Vec<SnapFile>)> {
    while let Some(newest) = files.last() {
        match snapshot::load(newest) {
            Ok(snap) => return Ok((Some(snap), files)),
            Err(StorageError::Corrupt { reason, offset, .. }) => {
                notes.push(RecoveryNote::SnapshotSkipped {
                    path: newest.path.clone(),
                    reason: format!("at byte {offset}: {reason}"),
                });
                files.pop();
            }
            Err(e) => return Err(e),
        }
    }
    Ok((None, files))
}

/// The end of the newest segment, as recovery found it.
struct Tail {
    /// Bytes in the newest segment (0 if there is none).
    valid_len: u64,
    /// Its torn final record, to cut once recovery has succeeded.
    cut: Option<TornTail>,
}

/// Replays every segment in order into a [`Replay`]. Returns the segments
/// (with their max indexes), the replay, and the newest segment's tail.
/// Changes nothing on disk.
///
/// With `skip_zero_tail`, the newest segment's reserved space is not read
/// (see [`fsutil::read_skipping_zero_tail`]); `None` then means its records
/// run into that space and the replay must be done again without skipping.
fn replay_segments(
    dir: &Path,
    segments: &[SegmentInfo],
    base: (LogIndex, Term),
    skip_zero_tail: bool,
) -> Result<Option<(Vec<SegmentInfo>, Replay, Tail)>> {
    let mut segments = segments.to_vec();
    for pair in segments.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            return Err(StorageError::Inconsistent {
                dir: dir.to_path_buf(),
                reason: format!(
                    "segment {} is missing between {} and {}",
                    pair[0].seq + 1,
                    pair[0].path.display(),
                    pair[1].path.display()
                ),
            });
        }
    }
    let mut replay = Replay::new(dir, base);
    let mut tail = Tail {
        valid_len: 0,
        cut: None,
    };
    let count = segments.len();
    for (i, seg) in segments.iter_mut().enumerate() {
        let is_last = i + 1 == count;
        let len = fs::metadata(&seg.path)
            .map_err(|e| StorageError::io("stat", &seg.path, e))?
            .len();
        if len > SEGMENT_FILE_BYTES_LIMIT {
            return Err(StorageError::corrupt(
                &seg.path,
                SEGMENT_FILE_BYTES_LIMIT,
                "segment file larger than any segment this storage writes",
            ));
        }
        let read = if is_last && skip_zero_tail {
            fsutil::read_skipping_zero_tail(&seg.path)?
        } else {
            FileBytes {
                bytes: fsutil::read_file(&seg.path)?,
                zeros_after: 0,
            }
        };
        let path = seg.path.clone();
        let (end, max_index) =
            wal::scan_segment(seg, &read.bytes, read.zeros_after, is_last, |rec, off| {
                replay.record(rec, &path, off)
            })?;
        seg.max_index = max_index;
        tail = match end {
            SegmentEnd::Clean { valid_len } => Tail {
                valid_len,
                cut: None,
            },
            SegmentEnd::Torn(torn) => Tail {
                valid_len: torn.offset,
                cut: Some(torn),
            },
            SegmentEnd::NeedsWholeFile => return Ok(None),
        };
    }
    Ok(Some((segments, replay, tail)))
}

/// Cuts a torn tail durably, so the next appends land right after the last
/// valid record and a second crash cannot bring the garbage back.
fn cut_torn_tail(path: &Path, offset: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("open", path, e))?;
    f.set_len(offset)
        .map_err(|e| StorageError::io("truncate", path, e))?;
    f.sync_all().map_err(|e| StorageError::io("fsync", path, e))
}
