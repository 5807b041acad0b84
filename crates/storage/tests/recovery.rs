//! Round trips, crash recovery and corruption handling, through the public API
//! and the bytes on disk.

mod common;

use common::*;
use concord_raft::{HardState, LogIndex, NodeId, Term};
use concord_storage::{
    RaftStorage, RecoveryNote, StorageError, StorageOptions, ENTRY_DATA_BYTES_MAX,
    ENTRY_RECORD_OVERHEAD_BYTES, SEGMENT_BYTES_DEFAULT, SEGMENT_HEADER_RECORD_BYTES,
    ZERO_AHEAD_BYTES,
};
use std::fs;
use std::path::Path;

fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: vote.map(NodeId),
        commit: LogIndex(commit),
    }
}

#[test]
fn fresh_directory_recovers_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("member");
    let (s, rec) = open(&dir);
    assert_eq!(rec.hard_state, HardState::default());
    assert!(rec.snapshot.is_none());
    assert!(rec.entries.is_empty());
    assert!(rec.notes.is_empty());
    assert_eq!(s.last_index(), LogIndex(0));
    assert_eq!(s.first_index(), LogIndex(1));
    assert_eq!(wal_files(&dir).len(), 1);
}

#[test]
fn appends_and_hard_state_round_trip_through_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    let mut want = entries(1, 5, 1);
    want.extend(entries(6, 9, 2));
    s.append(&want[..5]).unwrap();
    s.append(&want[5..]).unwrap();
    s.set_hard_state(&hs(2, Some(3), 9)).unwrap();
    s.sync().unwrap();
    assert_eq!(s.last_index(), LogIndex(9));
    assert_eq!(s.term(LogIndex(5)), Some(Term(1)));
    assert_eq!(s.term(LogIndex(6)), Some(Term(2)));
    drop(s);

    let (mut s, rec) = open(tmp.path());
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs(2, Some(3), 9));
    assert!(rec.notes.is_empty(), "{:?}", rec.notes);
    assert_eq!(s.last_index(), LogIndex(9));
    assert_eq!(s.term(LogIndex(9)), Some(Term(2)));

    // The log goes on after a reopen, and again after another.
    s.append(&entries(10, 12, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(tmp.path());
    assert_eq!(indexes(&rec.entries), (1..=12).collect::<Vec<_>>());
}

#[test]
fn unsynced_appends_may_be_lost_but_only_as_a_suffix() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StorageOptions {
        write_flush_bytes: 100,
        ..StorageOptions::default()
    };
    let (mut s, _) = open_with(tmp.path(), opts);
    s.append(&entries(1, 3, 1)).unwrap();
    s.sync().unwrap();
    s.append(&entries(4, 20, 1)).unwrap();
    drop(s); // a crash: the unflushed buffer is gone
    let (_, rec) = open_with(tmp.path(), opts);
    let got = indexes(&rec.entries);
    assert!(got.len() >= 3 && got.len() < 20, "{got:?}");
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
}

/// Offsets where each record of a single-segment log ends.
fn record_ends(data_lens: &[usize]) -> Vec<usize> {
    let mut end = SEGMENT_HEADER_RECORD_BYTES;
    data_lens
        .iter()
        .map(|len| {
            end += ENTRY_RECORD_OVERHEAD_BYTES + len;
            end
        })
        .collect()
}

#[test]
fn torn_tail_is_cut_at_every_byte_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // Reserved space is read back whole by the checks below, for every cut:
    // a small segment keeps that quick.
    let opts = StorageOptions {
        segment_bytes_max: 64 << 10,
        ..StorageOptions::default()
    };
    let (mut s, _) = open_with(&src, opts);
    let written: Vec<_> = (1..=4u64)
        .map(|i| entry(i, 1, &vec![i as u8; (i * 5) as usize]))
        .collect();
    s.append(&written).unwrap();
    s.sync().unwrap();
    drop(s);
    let wal = wal_files(&src).pop().unwrap();
    let name = wal.file_name().unwrap().to_owned();
    let bytes = segment_records(&wal);
    let ends = record_ends(&written.iter().map(|e| e.data.len()).collect::<Vec<_>>());
    assert_eq!(*ends.last().unwrap(), bytes.len());

    // A write is torn either at the end of the file (`padded` false) or
    // inside the newest segment's reserved space, where zeros follow it.
    const RESERVED_TAIL_BYTES: u64 = 1 << 20;
    for (cut, padded) in
        (SEGMENT_HEADER_RECORD_BYTES..=bytes.len()).flat_map(|cut| [(cut, false), (cut, true)])
    {
        let dir = tmp.path().join(format!("cut{cut}-{padded}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(&name), &bytes[..cut]).unwrap();
        let file_len = if padded {
            let len = (cut as u64) + RESERVED_TAIL_BYTES;
            let f = fs::OpenOptions::new().write(true).open(dir.join(&name));
            f.unwrap().set_len(len).unwrap();
            len
        } else {
            cut as u64
        };
        let whole = ends.iter().filter(|&&e| e <= cut).count();

        let (mut s, rec) = open_with(&dir, opts);
        let case = format!("cut at {cut}, padded {padded}");
        assert_eq!(rec.entries, written[..whole], "{case}");
        let at_boundary = cut == SEGMENT_HEADER_RECORD_BYTES || ends.contains(&cut);
        let offset = if whole == 0 {
            SEGMENT_HEADER_RECORD_BYTES
        } else {
            ends[whole - 1]
        };
        if at_boundary {
            assert!(rec.notes.is_empty(), "{case}: {:?}", rec.notes);
        } else {
            assert_eq!(
                rec.notes,
                vec![RecoveryNote::TornTailCut {
                    path: dir.join(&name),
                    offset: offset as u64,
                    bytes_dropped: file_len - offset as u64,
                }],
                "{case}"
            );
        }
        assert_segment_holds(&dir.join(&name), &bytes[..offset]);

        // The log can be appended again right after the valid prefix.
        let next = whole as u64 + 1;
        s.append(&[entry(next, 2, b"after the cut")]).unwrap();
        s.sync().unwrap();
        drop(s);
        let (_, rec) = open_with(&dir, opts);
        let mut want = written[..whole].to_vec();
        want.push(entry(next, 2, b"after the cut"));
        assert_eq!(rec.entries, want, "{case}, reopened");
        assert!(rec.notes.is_empty());
    }
}

#[test]
fn a_cut_inside_the_segment_header_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 2, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let wal = wal_files(tmp.path()).pop().unwrap();
    let bytes = fs::read(&wal).unwrap();
    for cut in 0..SEGMENT_HEADER_RECORD_BYTES {
        fs::write(&wal, &bytes[..cut]).unwrap();
        let err = RaftStorage::open(tmp.path(), StorageOptions::default()).unwrap_err();
        assert!(
            matches!(&err, StorageError::Corrupt { path, offset: 0, .. } if *path == wal),
            "cut at {cut}: {err}"
        );
    }
}

/// Writes five entries, syncs, and returns the single segment and its bytes.
fn five_entries(dir: &Path) -> (std::path::PathBuf, Vec<u8>, Vec<usize>) {
    let (mut s, _) = open(dir);
    let es = entries(1, 5, 1);
    s.append(&es).unwrap();
    s.sync().unwrap();
    drop(s);
    let wal = wal_files(dir).pop().unwrap();
    let bytes = segment_records(&wal);
    let ends = record_ends(&es.iter().map(|e| e.data.len()).collect::<Vec<_>>());
    assert_eq!(bytes.len(), *ends.last().unwrap());
    (wal, bytes, ends)
}

/// Overwrites bytes of a file in place, keeping its size (and so the
/// newest segment's reserved space after them).
fn write_in_place(path: &Path, at: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, at).unwrap();
}

#[test]
fn zeros_end_the_log_and_garbage_tails_are_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, bytes, _) = five_entries(tmp.path());
    let tails: [&[u8]; 3] = [
        &[0u8; 4096],
        b"\x07 not a record at all, just noise",
        &[0xff; 5],
    ];
    for (tail, in_place) in tails.iter().flat_map(|t| [(t, false), (t, true)]) {
        let case = format!("tail {tail:?}, in place {in_place}");
        if in_place {
            // Inside the reserved space: zeros follow the garbage.
            write_in_place(&wal, bytes.len() as u64, tail);
        } else {
            let mut b = bytes.clone();
            b.extend_from_slice(tail);
            fs::write(&wal, &b).unwrap();
        }
        let (_, rec) = open(tmp.path());
        assert_eq!(indexes(&rec.entries), vec![1, 2, 3, 4, 5], "{case}");
        if tail.iter().all(|&b| b == 0) {
            assert!(rec.notes.is_empty(), "{case}: {:?}", rec.notes);
        } else {
            assert!(
                matches!(
                    rec.notes.as_slice(),
                    [RecoveryNote::TornTailCut { offset, .. }] if *offset == bytes.len() as u64
                ),
                "{case}: {:?}",
                rec.notes
            );
        }
        assert_segment_holds(&wal, &bytes);
    }
}

#[test]
fn the_newest_segment_is_preallocated_and_sealed_ones_hold_only_records() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 3, 1)).unwrap();
    s.sync().unwrap();
    let wal = wal_files(tmp.path()).pop().unwrap();
    // This project's machines (ext4, tmpfs) support preallocation; a file
    // system without it would make this fail, and the WAL slower there.
    assert_eq!(
        fs::metadata(&wal).unwrap().len(),
        concord_storage::SEGMENT_BYTES_DEFAULT
    );
    drop(s);

    let small = small_segments();
    let (mut s, _) = open_with(tmp.path(), small);
    s.append(&entries(4, 60, 1)).unwrap();
    s.sync().unwrap();
    let segs = wal_files(tmp.path());
    assert!(segs.len() >= 3, "{segs:?}");
    let (newest, sealed) = segs.split_last().unwrap();
    for seg in sealed {
        let len = fs::metadata(seg).unwrap().len();
        assert_eq!(len, segment_records(seg).len() as u64, "{}", seg.display());
    }
    assert!(fs::metadata(newest).unwrap().len() >= small.segment_bytes_max);
    drop(s);
    let (_, rec) = open_with(tmp.path(), small);
    assert_eq!(indexes(&rec.entries), (1..=60).collect::<Vec<_>>());
    assert!(rec.notes.is_empty(), "{:?}", rec.notes);
}

/// Where the first hole of `path` begins: the end of the bytes the file
/// system holds data for (written zeros count as data, reserved space not).
fn first_hole(path: &Path) -> u64 {
    let f = fs::File::open(path).unwrap();
    rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(0)).unwrap()
}

#[test]
fn zeros_are_kept_written_just_ahead_of_the_records_and_end_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    let wal = wal_files(tmp.path()).pop().unwrap();
    if first_hole(&wal) >= SEGMENT_BYTES_DEFAULT {
        eprintln!("this file system does not report reserved space as holes: nothing to observe");
        return;
    }
    const BLOCK: u64 = 4096;
    let mut records_end = SEGMENT_HEADER_RECORD_BYTES as u64;
    let mut next = 1u64;
    let mut write_batches = |s: &mut RaftStorage, batches: usize, records_end: &mut u64| {
        for _ in 0..batches {
            // 8 entries of 4,000 nonzero bytes: about one stretch per 8 syncs.
            let batch: Vec<_> = (next..next + 8)
                .map(|i| entry(i, 1, &[(i % 250) as u8 + 1; 4000]))
                .collect();
            next += 8;
            s.append(&batch).unwrap();
            s.sync().unwrap();
            *records_end += batch
                .iter()
                .map(|e| (ENTRY_RECORD_OVERHEAD_BYTES + e.data.len()) as u64)
                .sum::<u64>();
            // Written (as zeros) at least half a stretch past the records, at
            // most a whole one (to the block), and the file never grows.
            let hole = first_hole(&wal);
            assert!(
                hole >= *records_end + ZERO_AHEAD_BYTES / 2
                    && hole <= (*records_end + ZERO_AHEAD_BYTES).next_multiple_of(BLOCK),
                "records end at {records_end}, data at {hole}"
            );
            assert_eq!(fs::metadata(&wal).unwrap().len(), SEGMENT_BYTES_DEFAULT);
        }
    };
    write_batches(&mut s, 40, &mut records_end);
    drop(s);

    // The zeros after the records are the end of the log, not a torn tail.
    let (mut s, rec) = open(tmp.path());
    assert_eq!(indexes(&rec.entries), (1..=320).collect::<Vec<_>>());
    assert!(rec.notes.is_empty(), "{:?}", rec.notes);
    assert_eq!(wal_files(tmp.path()), vec![wal.clone()]);
    // The resumed writer zeroes ahead of where the records end too.
    write_batches(&mut s, 10, &mut records_end);
    drop(s);
    let (_, rec) = open(tmp.path());
    assert_eq!(indexes(&rec.entries), (1..=400).collect::<Vec<_>>());
    assert!(rec.notes.is_empty(), "{:?}", rec.notes);
    assert_segment_holds(&wal, &segment_records(&wal));
}

#[test]
fn zeros_after_the_records_of_a_sealed_segment_are_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    write_40_entries_in_small_segments(tmp.path());
    let first = wal_files(tmp.path()).remove(0);
    let len = fs::metadata(&first).unwrap().len();
    for zeros in [1u64, 12, 4096] {
        let f = fs::OpenOptions::new().write(true).open(&first).unwrap();
        f.set_len(len + zeros).unwrap();
        let err = RaftStorage::open(tmp.path(), small_segments()).unwrap_err();
        match &err {
            StorageError::Corrupt { path, offset, .. } => {
                assert_eq!((path, *offset), (&first, len), "{zeros} zeros: {err}");
            }
            other => panic!("{zeros} zeros: {other}"),
        }
    }
}

#[test]
fn damaged_last_record_reaching_the_end_is_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, bytes, ends) = five_entries(tmp.path());
    // Damage inside the last record's data and, separately, its header; at
    // the end of the file and inside the reserved space.
    for at in [bytes.len() - 1, ends[3] + 2] {
        for in_place in [false, true] {
            let mut b = bytes.clone();
            b[at] ^= 0x55;
            if in_place {
                write_in_place(&wal, 0, &b);
            } else {
                fs::write(&wal, &b).unwrap();
            }
            let (_, rec) = open(tmp.path());
            let case = format!("damage at {at}, in place {in_place}");
            assert_eq!(indexes(&rec.entries), vec![1, 2, 3, 4], "{case}");
            assert!(
                matches!(
                    rec.notes.as_slice(),
                    [RecoveryNote::TornTailCut { offset, .. }] if *offset == ends[3] as u64
                ),
                "{case}: {:?}",
                rec.notes
            );
            // Put the record back for the next case.
            write_in_place(&wal, 0, &bytes);
        }
    }
}

#[test]
fn damage_followed_by_valid_records_is_refused_with_path_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, bytes, ends) = five_entries(tmp.path());
    // Each byte of record 2 (index 3): length, length checksum, checksum,
    // type and payload.
    for at in ends[1]..ends[2] {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        fs::write(&wal, &b).unwrap();
        let err = RaftStorage::open(tmp.path(), StorageOptions::default()).unwrap_err();
        match &err {
            StorageError::Corrupt { path, offset, .. } => {
                assert_eq!(path, &wal);
                assert_eq!(*offset, ends[1] as u64, "flip at {at}");
            }
            other => panic!("flip at {at}: {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&wal.display().to_string()) && msg.contains(&ends[1].to_string()));
        // Refusing changes nothing on disk.
        assert_eq!(fs::read(&wal).unwrap(), b);
    }
}

fn small_segments() -> StorageOptions {
    StorageOptions {
        segment_bytes_max: 512,
        ..StorageOptions::default()
    }
}

/// Entries 1..=40, synced, in 512-byte segments (several sealed ones).
fn write_40_entries_in_small_segments(dir: &Path) {
    let (mut s, _) = open_with(dir, small_segments());
    s.append(&entries(1, 40, 1)).unwrap();
    s.sync().unwrap();
}

#[test]
fn damage_in_a_sealed_segment_is_refused_even_at_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    write_40_entries_in_small_segments(tmp.path());
    let segs = wal_files(tmp.path());
    assert!(segs.len() >= 3);
    let first = &segs[0];
    let bytes = fs::read(first).unwrap();
    // Cutting a sealed segment's last record is not a torn write.
    fs::write(first, &bytes[..bytes.len() - 1]).unwrap();
    let err = RaftStorage::open(tmp.path(), small_segments()).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { path, .. } if path == first),
        "{err}"
    );
    // Nor is a damaged last record.
    let mut b = bytes.clone();
    let last = b.len() - 1;
    b[last] ^= 1;
    fs::write(first, &b).unwrap();
    let err = RaftStorage::open(tmp.path(), small_segments()).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { path, .. } if path == first),
        "{err}"
    );
}

#[test]
fn missing_middle_segment_is_inconsistent() {
    let tmp = tempfile::tempdir().unwrap();
    write_40_entries_in_small_segments(tmp.path());
    let segs = wal_files(tmp.path());
    fs::remove_file(&segs[1]).unwrap();
    let err = RaftStorage::open(tmp.path(), small_segments()).unwrap_err();
    assert!(matches!(err, StorageError::Inconsistent { .. }), "{err}");
}

#[test]
fn overwrites_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open_with(tmp.path(), small_segments());
    s.append(&entries(1, 30, 1)).unwrap();
    s.sync().unwrap();
    // A new leader replaces 11..=30 with a shorter log of its own.
    s.append(&entries(11, 15, 2)).unwrap();
    assert_eq!(s.last_index(), LogIndex(15));
    assert_eq!(s.term(LogIndex(16)), None);
    s.sync().unwrap();
    drop(s);

    let (mut s, rec) = open_with(tmp.path(), small_segments());
    let mut want = entries(1, 10, 1);
    want.extend(entries(11, 15, 2));
    assert_eq!(rec.entries, want);
    // Overwrite again after the reopen, reaching back into older segments.
    s.append(&entries(3, 4, 3)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open_with(tmp.path(), small_segments());
    let mut want = entries(1, 2, 1);
    want.extend(entries(3, 4, 3));
    assert_eq!(rec.entries, want);
}

#[test]
fn segments_roll_and_compaction_drops_whole_old_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open_with(tmp.path(), small_segments());
    for batch in 0..10 {
        s.append(&entries(batch * 20 + 1, batch * 20 + 20, 1))
            .unwrap();
    }
    s.sync().unwrap();
    let segs = wal_files(tmp.path());
    assert_eq!(segs.len(), s.segment_count());
    assert!(segs.len() > 10, "{} segments", segs.len());
    for seg in &segs {
        assert!(fs::metadata(seg).unwrap().len() < 512 + 100);
    }
    // Compaction may not pass the snapshot.
    assert!(matches!(
        s.compact(LogIndex(1)),
        Err(StorageError::Rejected { .. })
    ));

    s.save_snapshot(&snapshot(150, 1)).unwrap();
    assert_eq!(s.first_index(), LogIndex(151));
    assert_eq!(s.last_index(), LogIndex(200));
    let before = s.segment_count();
    let dropped = s.compact(LogIndex(150)).unwrap();
    assert!(dropped > 0);
    assert_eq!(s.segment_count(), before - dropped);
    assert_eq!(wal_files(tmp.path()).len(), s.segment_count());
    // Every dropped segment was wholly at or below 150; the oldest kept one
    // must still reach past it, or it would have been dropped too.
    s.append(&entries(201, 210, 2)).unwrap();
    s.sync().unwrap();
    drop(s);

    let (s, rec) = open_with(tmp.path(), small_segments());
    assert_eq!(rec.snapshot, Some(snapshot(150, 1)));
    assert_eq!(indexes(&rec.entries), (151..=210).collect::<Vec<_>>());
    assert_eq!(rec.hard_state.commit, LogIndex(150));
    assert_eq!(s.term(LogIndex(150)), Some(Term(1)));
    assert_eq!(s.term(LogIndex(149)), None);
}

#[test]
fn hard_state_is_replaced_atomically_and_commit_alone_is_lazy() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 10, 1)).unwrap();
    s.set_hard_state(&hs(1, Some(2), 3)).unwrap();
    s.sync().unwrap();
    // Commit alone: kept in memory by sync, written by sync_commit.
    s.set_hard_state(&hs(1, Some(2), 8)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (mut s, rec) = open(tmp.path());
    assert_eq!(rec.hard_state, hs(1, Some(2), 3));
    s.set_hard_state(&hs(1, Some(2), 8)).unwrap();
    s.sync_commit().unwrap();
    drop(s);
    let (mut s, rec) = open(tmp.path());
    assert_eq!(rec.hard_state, hs(1, Some(2), 8));
    assert!(files_with_suffix(tmp.path(), ".tmp").is_empty());

    // Caller bugs are refused and change nothing.
    for bad in [
        hs(0, None, 8),
        hs(1, Some(3), 8),
        hs(1, None, 8),
        hs(2, Some(0), 8),
    ] {
        assert!(
            matches!(s.set_hard_state(&bad), Err(StorageError::Rejected { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(s.hard_state(), hs(1, Some(2), 8));
    // A new term may carry a new vote.
    s.set_hard_state(&hs(2, Some(3), 8)).unwrap();
    s.sync().unwrap();
    drop(s);
    assert_eq!(open(tmp.path()).1.hard_state, hs(2, Some(3), 8));
}

#[test]
fn corrupt_hard_state_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.set_hard_state(&hs(4, Some(1), 0)).unwrap();
    s.sync().unwrap();
    drop(s);
    let path = tmp.path().join("hardstate");
    let good = fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 0x04; // inside the term
    fs::write(&path, &bad).unwrap();
    let err = RaftStorage::open(tmp.path(), StorageOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { path: p, .. } if *p == path),
        "{err}"
    );
    fs::write(&path, &good[..good.len() - 1]).unwrap();
    let err = RaftStorage::open(tmp.path(), StorageOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { path: p, .. } if *p == path),
        "{err}"
    );
}

#[test]
fn commit_beyond_the_recovered_log_is_inconsistent() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 5, 1)).unwrap();
    s.set_hard_state(&hs(1, None, 5)).unwrap();
    s.sync_commit().unwrap();
    drop(s);
    // Synced entries vanish from under the hard state (a lying disk).
    let wal = wal_files(tmp.path()).pop().unwrap();
    let len = segment_records(&wal).len() as u64;
    fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let junk = tmp.path().join("x.snap.tmp");
    fs::write(&junk, b"debris").unwrap();
    let err = RaftStorage::open(tmp.path(), StorageOptions::default()).unwrap_err();
    assert!(matches!(err, StorageError::Inconsistent { .. }), "{err}");
    // Refusing repairs nothing: the torn tail and the debris are still there.
    assert_eq!(fs::metadata(&wal).unwrap().len(), len - 3);
    assert!(junk.exists());
}

#[test]
fn snapshots_keep_the_newest_two_and_open_returns_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 30, 1)).unwrap();
    for i in [10, 20, 25] {
        s.save_snapshot(&snapshot(i, 1)).unwrap();
    }
    assert_eq!(s.snapshot_indexes(), vec![LogIndex(20), LogIndex(25)]);
    assert_eq!(files_with_suffix(tmp.path(), ".snap").len(), 2);
    // Not newer than the stored one: refused, nothing changes.
    assert!(matches!(
        s.save_snapshot(&snapshot(25, 1)),
        Err(StorageError::StaleSnapshot { .. })
    ));
    assert!(matches!(
        s.save_snapshot(&snapshot(5, 1)),
        Err(StorageError::StaleSnapshot { .. })
    ));
    assert_eq!(s.snapshot_point(), (LogIndex(25), Term(1)));
    // Entries at or below the snapshot can no longer be appended.
    assert!(matches!(
        s.append(&entries(25, 26, 2)),
        Err(StorageError::Rejected { .. })
    ));
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(tmp.path());
    assert_eq!(rec.snapshot, Some(snapshot(25, 1)));
    assert_eq!(indexes(&rec.entries), (26..=30).collect::<Vec<_>>());
}

#[test]
fn a_snapshot_file_written_elsewhere_is_adopted_like_a_saved_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 30, 1)).unwrap();
    s.sync().unwrap();
    // Written by another thread while the owner goes on appending.
    let file = RaftStorage::write_snapshot_file(tmp.path(), &snapshot(20, 1)).unwrap();
    assert_eq!(file.index(), LogIndex(20));
    s.append(&entries(31, 40, 1)).unwrap();
    s.adopt_snapshot(file).unwrap();
    assert_eq!(s.snapshot_point(), (LogIndex(20), Term(1)));
    // A file overtaken by a newer snapshot (one from the leader) is refused
    // and deleted; the storage stays usable.
    let late = RaftStorage::write_snapshot_file(tmp.path(), &snapshot(15, 1)).unwrap();
    s.save_snapshot(&snapshot(25, 1)).unwrap();
    assert!(matches!(
        s.adopt_snapshot(late),
        Err(StorageError::StaleSnapshot { .. })
    ));
    assert_eq!(files_with_suffix(tmp.path(), ".snap").len(), 2);
    s.append(&entries(41, 41, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (s, rec) = open(tmp.path());
    assert_eq!(rec.snapshot, Some(snapshot(25, 1)));
    assert_eq!(indexes(&rec.entries), (26..=41).collect::<Vec<_>>());
    // Read back by index, from any thread (the runtime's lazy load).
    let path = s.snapshot_path(LogIndex(25)).unwrap();
    assert_eq!(
        RaftStorage::read_snapshot_file(&path).unwrap(),
        snapshot(25, 1)
    );
    assert_eq!(s.snapshot_path(LogIndex(15)), None);
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_older_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 30, 1)).unwrap();
    s.save_snapshot(&snapshot(10, 1)).unwrap();
    s.save_snapshot(&snapshot(20, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let snaps = files_with_suffix(tmp.path(), ".snap");
    let newest = snaps.last().unwrap();
    let mut b = fs::read(newest).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0x20;
    fs::write(newest, &b).unwrap();

    let (s, rec) = open(tmp.path());
    assert_eq!(rec.snapshot, Some(snapshot(10, 1)));
    assert_eq!(indexes(&rec.entries), (11..=30).collect::<Vec<_>>());
    assert!(matches!(
        rec.notes.as_slice(),
        [RecoveryNote::SnapshotSkipped { path, .. }] if path == newest
    ));
    assert_eq!(s.snapshot_indexes(), vec![LogIndex(10)]);
    assert!(newest.exists(), "a damaged snapshot is kept for inspection");
}

#[test]
fn installing_a_snapshot_beyond_the_log_restarts_the_log_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 5, 1)).unwrap();
    s.sync().unwrap();
    s.save_snapshot(&snapshot(100, 3)).unwrap();
    assert_eq!(s.last_index(), LogIndex(100));
    assert_eq!(s.term(LogIndex(5)), None);
    // The gap 6..=99 is covered by the snapshot.
    s.append(&entries(101, 103, 3)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (mut s, rec) = open(tmp.path());
    assert_eq!(rec.snapshot, Some(snapshot(100, 3)));
    assert_eq!(indexes(&rec.entries), vec![101, 102, 103]);
    assert_eq!(rec.hard_state.commit, LogIndex(100));
    s.append(&entries(104, 104, 3)).unwrap();
    s.sync().unwrap();
}

#[test]
fn a_snapshot_that_conflicts_with_the_log_discards_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 10, 1)).unwrap();
    s.sync().unwrap();
    // The leader's snapshot at 5 has term 2: our 5..=10 are from a dead
    // branch and must not survive (figure 13 step 7).
    s.save_snapshot(&snapshot(5, 2)).unwrap();
    assert_eq!(s.last_index(), LogIndex(5));
    s.sync().unwrap();
    drop(s);
    let (mut s, rec) = open(tmp.path());
    assert!(rec.entries.is_empty(), "{:?}", indexes(&rec.entries));
    s.append(&entries(6, 7, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(tmp.path());
    assert_eq!(rec.entries, entries(6, 7, 2));
}

#[test]
fn a_snapshot_may_not_discard_durably_committed_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 10, 1)).unwrap();
    s.set_hard_state(&hs(1, None, 6)).unwrap();
    s.sync_commit().unwrap();
    let err = s.save_snapshot(&snapshot(6, 2)).unwrap_err();
    assert!(matches!(err, StorageError::Rejected { .. }), "{err}");
    assert!(files_with_suffix(tmp.path(), ".snap").is_empty());
    assert_eq!(s.last_index(), LogIndex(10));
    // Past the commit, a conflicting snapshot is legitimate.
    s.save_snapshot(&snapshot(7, 2)).unwrap();
    assert_eq!(s.last_index(), LogIndex(7));
}

#[test]
fn the_stored_commit_never_passes_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 3, 1)).unwrap();
    // A caller that sets the commit before appending what it covers.
    s.set_hard_state(&hs(1, None, 5)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(tmp.path());
    assert_eq!(rec.hard_state, hs(1, None, 3));
}

#[test]
fn crash_between_snapshot_file_and_reset_record_recovers_the_same_log() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let (mut s, _) = open(&a);
    s.append(&entries(1, 10, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    // Produce the snapshot file elsewhere and drop it into `a`, as if the
    // process stopped right after writing it.
    let (mut other, _) = open(&b);
    other.save_snapshot(&snapshot(5, 2)).unwrap();
    let snap = files_with_suffix(&b, ".snap").pop().unwrap();
    fs::copy(&snap, a.join(snap.file_name().unwrap())).unwrap();

    let (mut s, rec) = open(&a);
    assert!(rec.entries.is_empty());
    assert_eq!(
        rec.notes,
        vec![RecoveryNote::LogResetToSnapshot {
            snapshot_index: LogIndex(5),
            entries_discarded: 5
        }]
    );
    // Entries appended now must not be discarded with the stale ones.
    s.append(&entries(6, 12, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(&a);
    assert_eq!(rec.entries, entries(6, 12, 2));
    assert!(rec.notes.is_empty());
}

#[test]
fn leftover_temp_files_are_removed_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()));
    let junk = tmp.path().join("hardstate.tmp");
    fs::write(&junk, b"half a hard state").unwrap();
    let (_, rec) = open(tmp.path());
    assert_eq!(
        rec.notes,
        vec![RecoveryNote::TempFileRemoved { path: junk.clone() }]
    );
    assert!(!junk.exists());
}

#[test]
fn bad_appends_are_rejected_without_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 3, 1)).unwrap();
    assert!(matches!(
        s.append(&entries(5, 6, 1)),
        Err(StorageError::Rejected { .. })
    ));
    let mut gappy = entries(4, 5, 1);
    gappy[1].index = LogIndex(6);
    assert!(matches!(
        s.append(&gappy),
        Err(StorageError::Rejected { .. })
    ));
    let huge = entry(5, 1, &vec![0u8; ENTRY_DATA_BYTES_MAX + 1]);
    let err = s.append(&[entry(4, 1, b"ok"), huge]).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::EntryTooLarge {
                index: LogIndex(5),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.last_index(), LogIndex(3));
    s.append(&[]).unwrap();
    s.sync().unwrap();
    drop(s);
    assert_eq!(open(tmp.path()).1.entries, entries(1, 3, 1));
}

#[test]
fn an_io_failure_poisons_the_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    // Make the hard-state temp file impossible to create.
    fs::create_dir(tmp.path().join("hardstate.tmp")).unwrap();
    s.set_hard_state(&hs(1, Some(1), 0)).unwrap();
    let err = s.sync().unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert!(matches!(
        s.append(&entries(1, 1, 1)),
        Err(StorageError::Poisoned)
    ));
    assert!(matches!(s.sync(), Err(StorageError::Poisoned)));
}

#[test]
fn invalid_options_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    for opts in [
        StorageOptions {
            segment_bytes_max: 0,
            ..StorageOptions::default()
        },
        StorageOptions {
            write_flush_bytes: 0,
            ..StorageOptions::default()
        },
        StorageOptions {
            segment_bytes_max: u64::MAX,
            ..StorageOptions::default()
        },
    ] {
        assert!(matches!(
            RaftStorage::open(tmp.path(), opts),
            Err(StorageError::Rejected { .. })
        ));
    }
}
