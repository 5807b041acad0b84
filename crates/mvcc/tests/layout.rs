//! Schema 3 (versions keyed by revision, many to a value, key index in
//! memory): upgrades from schemas 1 and 2, the index
//! rebuilt at open, readers racing the writer and compaction, defragment,
//! and the snapshot format.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use concord_mvcc::*;

/// A store with some of everything: leases, overwrites, deletes, a Txn and
/// a compaction.
fn busy(h: &mut Harness) {
    h.ok(Command::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 }));
    for i in 0..50 {
        h.put(&format!("k{:02}", i % 17), &format!("v{i}"));
    }
    h.ok(Command::Put(PutRequest {
        key: "leased".into(),
        value: "x".into(),
        lease: 7,
        ..Default::default()
    }));
    h.del("k03", "k06");
    h.ok(Command::Compact(CompactionRequest {
        revision: h.rev() - 5,
        physical: true,
    }));
    h.txn(TxnRequest {
        compare: vec![cmp(
            "k01",
            CompareResult::Greater,
            CompareTarget::Version(0),
        )],
        success: vec![
            RequestOp::Put(put_req("k04", "back")),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "k10".into(),
                ..Default::default()
            }),
        ],
        failure: vec![],
    })
    .unwrap();
    for i in 0..10 {
        h.put(&format!("k{:02}", i), "late");
    }
}

fn everything(r: &StoreReader) -> (RangeResponse, HashKv, EventBatch, Option<LeaseInfo>) {
    (
        r.range(&range_req("\0", "\0")).unwrap(),
        r.hash_kv(0).unwrap(),
        r.events_since(r.compact_revision().unwrap(), b"\0", b"\0", 0)
            .unwrap(),
        r.lease(7).unwrap(),
    )
}

#[test]
fn reopening_rebuilds_the_same_index() {
    let mut h = Harness::new();
    busy(&mut h);
    h.store.reader().verify().unwrap();
    let before = everything(&h.store.reader());
    let revision = h.rev();
    h.store.flush().unwrap();
    let path = h.path();
    let Harness { dir, mut store, .. } = h;
    drop(store);
    store = Store::open(&path, StoreOptions::default()).unwrap();
    store.reader().verify().unwrap();
    assert_eq!(everything(&store.reader()), before);
    assert_eq!(store.current_revision().get(), revision);
    // Point-in-time reads at every readable revision agree too.
    let mut fresh = Harness::new();
    busy(&mut fresh);
    for rev in store.compact_revision()..=revision {
        let mut req = range_req("\0", "\0");
        req.revision = rev;
        assert_eq!(store.range(&req).unwrap(), fresh.store.range(&req).unwrap());
    }
    drop(dir);
}

#[test]
fn count_only_and_limit_answer_from_the_index() {
    let mut h = Harness::new();
    for i in 0..100 {
        h.put(&format!("k{i:03}"), "v");
    }
    let r = h
        .store
        .range(&RangeRequest {
            count_only: true,
            ..range_req("k", "l")
        })
        .unwrap();
    assert_eq!((r.count, r.kvs.len(), r.more), (100, 0, false));
    let r = h
        .store
        .range(&RangeRequest {
            limit: 3,
            keys_only: true,
            ..range_req("k", "l")
        })
        .unwrap();
    assert_eq!((r.count, r.kvs.len(), r.more), (100, 3, true));
    assert!(r
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
}

/// Readers in other threads see complete, consistent states while the
/// writer puts, deletes and compacts: never a missing record, only etcd's
/// "compacted" for revisions that are.
#[test]
fn readers_race_the_writer_and_compaction() {
    const KEYS: usize = 8;
    let mut h = Harness::new();
    for k in 0..KEYS {
        h.put(&format!("key{k}"), "0");
    }
    let done = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let reader = h.store.reader();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) || reads < 100 {
                    reads += 1;
                    // Every key is always live: a current read sees all.
                    let all = reader.range(&range_req("key", "kez")).unwrap();
                    assert_eq!(all.count, KEYS as i64);
                    assert_eq!(all.kvs.len(), KEYS);
                    assert!(all.kvs.iter().all(|kv| kv.mod_revision <= all.revision));
                    // An older revision is either readable or compacted.
                    let mut old = range_req("key", "kez");
                    old.revision = (all.revision - 3 - t).max(1);
                    match reader.range(&old) {
                        // The keys were created at revisions 2..=KEYS+1.
                        Ok(r) => assert_eq!(r.count, (KEYS as i64).min(old.revision - 1)),
                        Err(MvccError::Compacted { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                    let from = reader.compact_revision().unwrap().max(1);
                    match reader.events_since(from, b"key", b"kez", 16) {
                        Ok(batch) => assert!(batch
                            .events
                            .iter()
                            .all(|e| { e.kind == EventKind::Put && e.kv.mod_revision >= from })),
                        Err(MvccError::Compacted { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                    match reader.hash_kv(0) {
                        Ok(_) | Err(MvccError::Compacted { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                reads
            })
        })
        .collect();
    for round in 0..400 {
        let mut batch = Vec::new();
        for k in 0..4 {
            let key = format!("key{}", (round * 3 + k) % KEYS);
            batch.push((
                h.next_index,
                Command::Put(put_req(&key, &round.to_string())),
            ));
            h.next_index += 1;
        }
        if round % 5 == 4 {
            batch.push((
                h.next_index,
                Command::Compact(CompactionRequest {
                    revision: h.rev() - 1,
                    physical: true,
                }),
            ));
            h.next_index += 1;
        }
        for out in h.store.apply_batch(&batch).unwrap() {
            out.unwrap();
        }
    }
    done.store(true, Ordering::Relaxed);
    for t in threads {
        assert!(t.join().unwrap() >= 100);
    }
    h.store.reader().verify().unwrap();
}

#[test]
fn compaction_inside_a_batch_sees_the_batch_and_later_commands_see_it() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    let i = h.next_index;
    let out = h
        .store
        .apply_batch(&[
            (i, Command::Put(put_req("a", "2"))),     // 3
            (i + 1, Command::Put(put_req("b", "1"))), // 4
            (
                i + 2,
                Command::DeleteRange(DeleteRangeRequest {
                    key: "b".into(),
                    ..Default::default()
                }),
            ), // 5
            (
                i + 3,
                Command::Compact(CompactionRequest {
                    revision: 5,
                    physical: true,
                }),
            ),
            (i + 4, Command::Put(put_req("b", "again"))), // 6
            (
                i + 5,
                Command::Compact(CompactionRequest {
                    revision: 6,
                    physical: true,
                }),
            ),
            (i + 6, Command::Put(put_req("a", "3"))), // 7
        ])
        .unwrap();
    assert!(out.iter().all(|o| o.is_ok()), "{out:?}");
    h.store.reader().verify().unwrap();
    let b = h.get("b").unwrap();
    assert_eq!(
        (b.create_revision, b.version),
        (6, 1),
        "recreated after a delete"
    );
    let a = h.get("a").unwrap();
    assert_eq!((a.create_revision, a.version, a.mod_revision), (2, 3, 7));
    let reader = h.store.reader();
    let events = reader.events_since(6, b"a", b"c", 0).unwrap();
    assert_eq!(events.events.len(), 2);
    let prev = |i: usize| {
        let kv = &events.events[i].kv;
        reader.prev_version(&kv.key, kv.mod_revision).unwrap()
    };
    assert_eq!(prev(1).unwrap().value, b"2");
    assert!(prev(0).is_none(), "b's tombstone is compacted");
}

#[test]
fn defragment_gives_space_back_and_keeps_the_data() {
    let mut h = Harness::new();
    let value = "x".repeat(2000);
    for i in 0..2000 {
        h.put(&format!("k{i:05}"), &value);
    }
    h.put("keep", "me");
    h.del("k0", "k1");
    h.ok(Command::Compact(CompactionRequest {
        revision: h.rev(),
        physical: true,
    }));
    h.store.flush().unwrap();
    let before = h.store.db_size_bytes().unwrap();
    let state = everything(&h.store.reader());
    h.store.defragment().unwrap();
    let after = h.store.db_size_bytes().unwrap();
    assert!(after < before / 2, "{before} -> {after}");
    assert_eq!(everything(&h.store.reader()), state);
    h.store.reader().verify().unwrap();
    assert_eq!(h.store.durable_applied_index(), h.store.applied_index());
    h.put("after", "defragment");
    assert_eq!(h.get("keep").unwrap().value, b"me");
}

#[test]
fn defragment_waits_for_a_snapshot_in_flight() {
    struct Slow(Vec<u8>);
    impl std::io::Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_millis(2));
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Harness::new();
    for i in 0..200 {
        h.put(&format!("k{i:03}"), &"v".repeat(500));
    }
    let reader = h.store.reader();
    let snapshot = std::thread::spawn(move || {
        let mut out = Slow(Vec::new());
        reader.snapshot_to(&mut out).unwrap();
        out.0
    });
    std::thread::sleep(std::time::Duration::from_millis(5));
    h.store.defragment().unwrap();
    let bytes = snapshot.join().unwrap();
    let mut other = Harness::new();
    other.store.restore_from(bytes.as_slice()).unwrap();
    assert_eq!(
        other.store.reader().hash_kv(0).unwrap(),
        h.store.reader().hash_kv(0).unwrap()
    );
}

#[test]
fn snapshots_of_format_1_are_refused() {
    let mut h = Harness::new();
    h.put("a", "1");
    let mut bytes = Vec::new();
    h.store.reader().snapshot_to(&mut bytes).unwrap();
    assert_eq!(&bytes[12..16], &2u32.to_le_bytes());
    bytes[12] = 1;
    let err = Harness::new()
        .store
        .restore_from(bytes.as_slice())
        .unwrap_err();
    assert!(err.to_string().contains("unknown format 1"), "{err}");
}

#[test]
fn restore_rebuilds_lease_attachments_and_index() {
    let mut h = Harness::new();
    busy(&mut h);
    let mut bytes = Vec::new();
    h.store.reader().snapshot_to(&mut bytes).unwrap();
    let mut other = Harness::new();
    busy(&mut other);
    other.put("only-here", "gone after restore");
    other.store.restore_from(bytes.as_slice()).unwrap();
    other.store.reader().verify().unwrap();
    assert_eq!(
        everything(&other.store.reader()),
        everything(&h.store.reader())
    );
    assert!(other.get("only-here").is_none());
}

#[test]
fn the_page_cache_is_bounded_by_default() {
    assert_eq!(
        StoreOptions::default().cache_size_bytes,
        Some(CACHE_SIZE_BYTES_DEFAULT)
    );
    const { assert!(CACHE_SIZE_BYTES_DEFAULT <= 128 << 20) };
}

/// Writes `meta` as schemas 1 and 2 did, never compacted, applied up to
/// `revision`.
fn write_old_meta(txn: &redb::WriteTransaction, schema: i64, revision: i64) {
    let meta_def: redb::TableDefinition<&str, i64> = redb::TableDefinition::new("meta");
    let mut meta = txn.open_table(meta_def).unwrap();
    for (k, v) in [
        ("schema", schema),
        ("revision", revision),
        ("compact_revision", -1),
        ("applied_index", revision),
    ] {
        meta.insert(k, v).unwrap();
    }
}

/// Writes lease 5 (TTL 100) with key `c` attached, as `small_history`
/// leaves them (the tables are the same in schemas 1 to 3).
fn write_old_leases(txn: &redb::WriteTransaction) {
    let leases_def: redb::TableDefinition<i64, (i64, i64)> = redb::TableDefinition::new("leases");
    let lease_keys_def: redb::TableDefinition<(i64, &[u8]), ()> =
        redb::TableDefinition::new("lease_keys");
    txn.open_table(leases_def)
        .unwrap()
        .insert(5, (100, 0))
        .unwrap();
    txn.open_table(lease_keys_def)
        .unwrap()
        .insert((5, b"c".as_slice()), ())
        .unwrap();
}

/// A schema-1 record: format 1, flags, main, sub, create, version, lease, value.
fn v1_record(
    tombstone: bool,
    main: i64,
    create: i64,
    version: i64,
    lease: i64,
    value: &str,
) -> Vec<u8> {
    let mut out = vec![1u8, u8::from(tombstone)];
    out.extend_from_slice(&main.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for x in [create, version, lease] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(value.as_bytes());
    out
}

/// The history the hand-written old files below hold, through the API.
fn small_history() -> Harness {
    let mut h = Harness::new();
    h.ok(Command::LeaseGrant(LeaseGrantRequest { id: 5, ttl: 100 })); // rev 1
    h.put("a", "1"); // 2
    h.ok(Command::Put(PutRequest {
        key: "b".into(),
        value: "2".into(),
        lease: 5,
        ..Default::default()
    })); // 3
    h.put("a", "3"); // 4
    h.del("b", ""); // 5
    h.ok(Command::Put(PutRequest {
        key: "c".into(),
        value: "4".into(),
        lease: 5,
        ..Default::default()
    })); // 6
    h
}

/// Everything an upgraded store must answer as the original does.
fn upgrade_view(s: &Store) -> (RangeResponse, HashKv, HashKv, EventBatch, Option<LeaseInfo>) {
    let r = s.reader();
    (
        r.range(&range_req("\0", "\0")).unwrap(),
        r.hash_kv(0).unwrap(),
        r.hash_kv(4).unwrap(),
        r.events_since(1, b"\0", b"\0", 0).unwrap(),
        r.lease(5).unwrap(),
    )
}

/// Opens the old file at `path`, checks it against `h`, writes to both and
/// checks again after a reopen.
fn check_upgrade(path: &std::path::Path, mut h: Harness) {
    let mut upgraded = Store::open(path, StoreOptions::default()).unwrap();
    upgraded.reader().verify().unwrap();
    assert_eq!(upgraded.applied_index(), 6);
    assert_eq!(
        upgrade_view(&upgraded),
        upgrade_view(&h.store),
        "hashes survive the upgrade"
    );
    let next = [(7, Command::Put(put_req("d", "5")))];
    assert_eq!(
        upgraded.apply_batch(&next).unwrap()[0].as_ref().unwrap(),
        h.store.apply_batch(&next).unwrap()[0].as_ref().unwrap()
    );
    drop(upgraded);
    let reopened = Store::open(path, StoreOptions::default()).unwrap();
    reopened.reader().verify().unwrap();
    assert_eq!(upgrade_view(&reopened), upgrade_view(&h.store));
}

#[test]
fn a_schema_1_file_is_upgraded_at_open() {
    use redb::{TableDefinition, TableHandle};
    let h = small_history();
    // The same history written the way schema 1 stored it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let current_def: TableDefinition<&[u8], &[u8]> = TableDefinition::new("current");
            let history_def: TableDefinition<(&[u8], i64, u32), &[u8]> =
                TableDefinition::new("history");
            let revlog_def: TableDefinition<(i64, u32), &[u8]> = TableDefinition::new("revlog");
            write_old_meta(&txn, 1, 6);
            let versions = [
                ("a", v1_record(false, 2, 2, 1, 0, "1")),
                ("b", v1_record(false, 3, 3, 1, 5, "2")),
                ("a", v1_record(false, 4, 2, 2, 0, "3")),
                ("b", v1_record(true, 5, 0, 0, 0, "")),
                ("c", v1_record(false, 6, 6, 1, 5, "4")),
            ];
            let mut history = txn.open_table(history_def).unwrap();
            let mut revlog = txn.open_table(revlog_def).unwrap();
            for (main, (key, record)) in (2i64..).zip(&versions) {
                history
                    .insert((key.as_bytes(), main, 0), record.as_slice())
                    .unwrap();
                revlog.insert((main, 0), key.as_bytes()).unwrap();
            }
            let mut current = txn.open_table(current_def).unwrap();
            current
                .insert(b"a".as_slice(), versions[2].1.as_slice())
                .unwrap();
            current
                .insert(b"c".as_slice(), versions[4].1.as_slice())
                .unwrap();
            write_old_leases(&txn);
            assert_eq!(history_def.name(), "history");
        }
        txn.commit().unwrap();
    }
    check_upgrade(&path, h);
}

/// A schema-2 record: format 2, flags, create, version, lease, key length,
/// key, value (stored under its revision).
fn v2_record(
    tombstone: bool,
    key: &str,
    create: i64,
    version: i64,
    lease: i64,
    value: &str,
) -> Vec<u8> {
    let mut out = vec![2u8, u8::from(tombstone)];
    for x in [create, version, lease] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value.as_bytes());
    out
}

#[test]
fn a_schema_2_file_is_upgraded_at_open() {
    use redb::{TableDefinition, TableHandle};
    let h = small_history();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let revs_def: TableDefinition<(i64, u32), &[u8]> = TableDefinition::new("revs");
            write_old_meta(&txn, 2, 6);
            let mut revs = txn.open_table(revs_def).unwrap();
            for (main, record) in [
                (2, v2_record(false, "a", 2, 1, 0, "1")),
                (3, v2_record(false, "b", 3, 1, 5, "2")),
                (4, v2_record(false, "a", 2, 2, 0, "3")),
                (5, v2_record(true, "b", 0, 0, 0, "")),
                (6, v2_record(false, "c", 6, 1, 5, "4")),
            ] {
                revs.insert((main, 0), record.as_slice()).unwrap();
            }
            write_old_leases(&txn);
            assert_eq!(revs_def.name(), "revs");
        }
        txn.commit().unwrap();
    }
    check_upgrade(&path, h);
    // The old table is gone.
    let db = redb::Database::open(&path).unwrap();
    let tables: Vec<String> = db
        .begin_read()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    assert!(!tables.iter().any(|t| t == "revs"), "{tables:?}");
}

/// A damaged schema-2 version fails the upgrade and leaves the file as it
/// was.
#[test]
fn a_schema_2_file_with_a_bad_version_is_refused() {
    use redb::TableDefinition;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.redb");
    let meta_def: TableDefinition<&str, i64> = TableDefinition::new("meta");
    let revs_def: TableDefinition<(i64, u32), &[u8]> = TableDefinition::new("revs");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            write_old_meta(&txn, 2, 2);
            let mut bad = v2_record(false, "a", 2, 1, 0, "1");
            bad[0] = 9;
            txn.open_table(revs_def)
                .unwrap()
                .insert((2, 0), bad.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Store::open(&path, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, MvccError::Corrupt(_)), "{err}");
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    assert_eq!(
        txn.open_table(meta_def)
            .unwrap()
            .get("schema")
            .unwrap()
            .unwrap()
            .value(),
        2
    );
    assert!(txn
        .open_table(revs_def)
        .unwrap()
        .get((2, 0))
        .unwrap()
        .is_some());
}

/// Chunks that break `chunks.rs`'s invariants, written into a real file
/// behind the store's back, are refused at open with a corruption error
/// naming the chunk (the index rebuild parses every chunk), never a panic
/// or a silently wrong index.
#[test]
fn damaged_chunks_in_the_file_are_refused_at_open() {
    use redb::{ReadableTable, TableDefinition};
    let chunks: TableDefinition<(i64, u32), &[u8]> = TableDefinition::new("chunks");
    // Each damage, applied to a fresh store holding puts at 2, 3 and 4
    // (one chunk each).
    type Damage = fn(&mut redb::Table<'_, (i64, u32), &'static [u8]>);
    let damages: [(&str, Damage); 4] = [
        ("chunk", |t| {
            // Truncated: the directory cut short.
            let bytes = t.get((3, 0)).unwrap().unwrap().value()[..10].to_vec();
            t.insert((3, 0), bytes.as_slice()).unwrap();
        }),
        ("last version", |t| {
            // Stored under a key that is not its last revision.
            let bytes = t.remove((3, 0)).unwrap().unwrap().value().to_vec();
            t.insert((3, 5), bytes.as_slice()).unwrap();
        }),
        ("overlaps", |t| {
            // Chunk 4.0 rewritten to hold 3.0 too, which chunk 3.0 holds:
            // the two overlap.
            let record = |t: &redb::Table<'_, (i64, u32), &'static [u8]>, main: i64| {
                // A one-version chunk: count, one directory entry, record.
                t.get((main, 0)).unwrap().unwrap().value()[4 + 16..].to_vec()
            };
            let (three, four) = (record(t, 3), record(t, 4));
            let mut bytes = 2u32.to_le_bytes().to_vec();
            for (main, end) in [(3i64, three.len()), (4, three.len() + four.len())] {
                bytes.extend_from_slice(&main.to_le_bytes());
                bytes.extend_from_slice(&0u32.to_le_bytes());
                bytes.extend_from_slice(&(end as u32).to_le_bytes());
            }
            bytes.extend_from_slice(&three);
            bytes.extend_from_slice(&four);
            t.insert((4, 0), bytes.as_slice()).unwrap();
        }),
        ("payload ends", |t| {
            // A record's end offset past the payload.
            let mut bytes = t.get((2, 0)).unwrap().unwrap().value().to_vec();
            bytes[16..20].copy_from_slice(&9999u32.to_le_bytes());
            t.insert((2, 0), bytes.as_slice()).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let mut h = Harness::new();
        for v in ["a", "b", "c"] {
            h.put(v, v);
        }
        h.store.flush().unwrap();
        let path = h.path();
        let Harness { dir, store, .. } = h;
        drop(store);
        {
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            damage(&mut txn.open_table(chunks).unwrap());
            txn.commit().unwrap();
        }
        let err = Store::open(&path, StoreOptions::default()).unwrap_err();
        assert!(
            matches!(&err, MvccError::Corrupt(m) if m.contains(what)),
            "{what}: {err}"
        );
        drop(dir);
    }
}

/// One batch of 1,500 puts spans several chunks (`chunks.rs` limits). Its
/// prev_kv puts and a Txn read versions of its own, stored and not yet
/// stored; a compaction inside it takes versions out of every chunk. The
/// result equals the same commands applied one at a time, in both commit
/// modes, and after a reopen.
#[test]
fn a_batch_larger_than_a_chunk_reads_and_compacts_its_own_writes() {
    let mut commands = Vec::new();
    for i in 0..1500 {
        commands.push(Command::Put(PutRequest {
            key: format!("k{:03}", i % 700).into(),
            value: format!("v{i}").repeat(20).into(),
            prev_kv: true,
            ..Default::default()
        }));
    }
    // Revision 2 + 1499 = 1501 wrote k099 last with v1499.
    commands.push(Command::Txn(TxnRequest {
        compare: vec![cmp(
            "k099",
            CompareResult::Equal,
            CompareTarget::Value("v1499".repeat(20).into()),
        )],
        success: vec![RequestOp::Range(range_req("k000", "k010"))],
        failure: vec![],
    }));
    commands.push(Command::Compact(CompactionRequest {
        revision: 1200,
        physical: true,
    }));
    for i in 0..50 {
        commands.push(Command::Put(PutRequest {
            key: format!("k{:03}", i).into(),
            prev_kv: true,
            ..Default::default()
        }));
    }
    for durability in [CommitDurability::Deferred, CommitDurability::Immediate] {
        let options = StoreOptions {
            commit_durability: durability,
            ..StoreOptions::default()
        };
        let mut one = Harness::with_options(options.clone());
        let singly: Vec<_> = commands.iter().map(|c| one.ok(c.clone())).collect();
        let mut batched = Harness::with_options(options);
        let indexed: Vec<_> = (1..).zip(commands.iter().cloned()).collect();
        let together: Vec<_> = batched
            .store
            .apply_batch(&indexed)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(together, singly, "{durability:?}");
        match &together[1500].response {
            Response::Txn(t) => assert!(t.succeeded, "the compare read the batch's own write"),
            other => panic!("{other:?}"),
        }
        batched.store.reader().verify().unwrap();
        let before = everything_at(&batched.store.reader(), 1200);
        assert_eq!(before, everything_at(&one.store.reader(), 1200));
        batched.store.flush().unwrap();
        batched.reopen();
        batched.store.reader().verify().unwrap();
        assert_eq!(everything_at(&batched.store.reader(), 1200), before);
    }
}

fn everything_at(r: &StoreReader, from: i64) -> (RangeResponse, HashKv, EventBatch) {
    (
        r.range(&range_req("\0", "\0")).unwrap(),
        r.hash_kv(0).unwrap(),
        r.events_since(from, b"\0", b"\0", 0).unwrap(),
    )
}

mod batching {
    //! Applying commands in batches of any size gives the same store as
    //! applying them one by one (which `model.rs` checks against etcd's
    //! semantics): the overlay, in-batch compaction and publication are
    //! invisible.

    use super::*;
    use proptest::prelude::*;

    fn command() -> impl Strategy<Value = Command> {
        let key = prop::sample::select(vec!["a", "ab", "b", "c", "d"]);
        prop_oneof![
            5 => (key.clone(), prop::sample::select(vec!["x", "y", ""]))
                .prop_map(|(k, v)| Command::Put(put_req(k, v))),
            2 => (key.clone(), prop::sample::select(vec!["", "\0", "c"]))
                .prop_map(|(k, e)| Command::DeleteRange(del_req(k, e))),
            1 => (key, 0i64..3).prop_map(|(k, v)| Command::Txn(version_txn(k, v, vec![
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: k.into(),
                    ..Default::default()
                }),
            ]))),
            // A revision picked relative to the current one at apply time.
            1 => (0i64..4).prop_map(|back| Command::Compact(CompactionRequest {
                revision: -back,
                physical: true,
            })),
        ]
    }

    /// Resolves relative compaction revisions against `rev`, the revision
    /// the command will see (known because both runs agree on it).
    fn resolve(c: &Command, rev: i64) -> Command {
        match c {
            Command::Compact(r) if r.revision <= 0 => Command::Compact(CompactionRequest {
                revision: rev + r.revision,
                physical: true,
            }),
            c => c.clone(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn batches_apply_like_single_commands(
            commands in prop::collection::vec(command(), 1..50),
            cuts in prop::collection::vec(1usize..8, 1..20),
        ) {
            let mut one = Harness::new();
            let mut resolved = Vec::new();
            let mut outs_one = Vec::new();
            for c in &commands {
                let c = resolve(c, one.rev());
                resolved.push((one.next_index, c.clone()));
                outs_one.push(one.apply(c));
            }
            let mut many = Harness::new();
            let mut outs_many = Vec::new();
            let mut rest = resolved.as_slice();
            for n in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (batch, tail) = rest.split_at((*n).min(rest.len()));
                outs_many.extend(many.store.apply_batch(batch).unwrap());
                rest = tail;
            }
            prop_assert_eq!(outs_many.len(), outs_one.len());
            for (a, b) in outs_one.iter().zip(&outs_many) {
                match (a, b) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                    (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                    _ => prop_assert!(false, "{a:?} vs {b:?}"),
                }
            }
            many.store.reader().verify().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(everything(&many.store.reader()), everything(&one.store.reader()));
            for rev in one.store.compact_revision().max(1)..=one.rev() {
                let mut req = range_req("\0", "\0");
                req.revision = rev;
                prop_assert_eq!(many.store.range(&req).unwrap(), one.store.range(&req).unwrap());
            }
        }
    }
}
