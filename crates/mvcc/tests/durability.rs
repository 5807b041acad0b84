//! Idempotent replay, restart, durability bookkeeping, snapshots and the
//! command encoding.

mod common;

use common::*;
use concord_mvcc::*;

fn sample_batch(first_index: u64) -> Vec<(u64, Command)> {
    let cmds = vec![
        Command::LeaseGrant(LeaseGrantRequest { id: 5, ttl: 100 }),
        Command::Put(put_req("a", "1")),
        Command::Put(PutRequest {
            key: "b".into(),
            value: "2".into(),
            lease: 5,
            ..Default::default()
        }),
        Command::Noop,
        Command::Put(put_req("a", "3")),
        Command::DeleteRange(DeleteRangeRequest {
            key: "zz".into(),
            ..Default::default()
        }),
        Command::Put(PutRequest {
            key: "c".into(),
            lease: 999,
            ..Default::default()
        }), // fails
        Command::Txn(TxnRequest {
            compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Version(2))],
            success: vec![
                RequestOp::Put(put_req("t", "yes")),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: "a".into(),
                    ..Default::default()
                }),
            ],
            failure: vec![],
        }),
        Command::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints: vec![LeaseCheckpoint {
                id: 5,
                remaining_ttl: 50,
            }],
        }),
    ];
    cmds.into_iter()
        .enumerate()
        .map(|(i, c)| (first_index + i as u64, c))
        .collect()
}

fn dump(store: &Store) -> (RangeResponse, Vec<LeaseInfo>, HashKv, u64) {
    let r = store.reader();
    let all = r.range(&range_req("\0", "\0")).unwrap();
    (
        all,
        r.leases().unwrap(),
        r.hash_kv(0).unwrap(),
        store.applied_index(),
    )
}

#[test]
fn batch_applies_in_order_with_per_command_results() {
    let mut h = Harness::new();
    let out = h.store.apply_batch(&sample_batch(1)).unwrap();
    assert_eq!(out.len(), 9);
    assert!(out[6]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("lease not found"));
    let revs: Vec<_> = out
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(|o| o.revision.get())
        .collect();
    assert_eq!(revs, [1, 2, 3, 3, 4, 4, 5, 5]);
    assert_eq!(h.store.applied_index(), 9);
    assert_eq!(h.rev(), 5);
    assert_eq!(h.get("t").unwrap().value, b"yes");
    assert!(h.get("a").is_none());
}

#[test]
fn replaying_a_batch_changes_nothing() {
    let mut h = Harness::new();
    let batch = sample_batch(1);
    h.store.apply_batch(&batch).unwrap();
    let before = dump(&h.store);
    let again = h.store.apply_batch(&batch).unwrap();
    assert!(again
        .iter()
        .all(|o| o.as_ref().unwrap().response == Response::AlreadyApplied));
    assert_eq!(dump(&h.store), before);
    // A batch that overlaps the applied index applies only the new tail.
    let mut overlap = sample_batch(8);
    overlap.truncate(4);
    let out = h.store.apply_batch(&overlap).unwrap();
    assert_eq!(out[0].as_ref().unwrap().response, Response::AlreadyApplied);
    assert_eq!(out[1].as_ref().unwrap().response, Response::AlreadyApplied);
    assert!(
        matches!(
            out[2].as_ref().unwrap().response,
            Response::LeaseGrant(_) | Response::Put(_)
        ) || out[2].is_err()
    );
    assert_eq!(h.store.applied_index(), 11);
}

#[test]
fn restart_keeps_data_and_applied_index() {
    let mut h = Harness::with_options(StoreOptions {
        commit_durability: CommitDurability::Deferred,
        ..Default::default()
    });
    h.store.apply_batch(&sample_batch(1)).unwrap();
    assert_eq!(
        h.store.durable_applied_index(),
        0,
        "deferred commits are not durable yet"
    );
    h.store.flush().unwrap();
    assert_eq!(h.store.durable_applied_index(), 9);
    let before = dump(&h.store);
    let path = h.path();
    let Harness { dir, store, .. } = h;
    drop(store);
    let reopened = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(dump(&reopened), before);
    assert_eq!(
        (reopened.applied_index(), reopened.durable_applied_index()),
        (9, 9)
    );
    assert_eq!(reopened.current_revision(), Revision(5));
    assert_eq!(
        reopened.reader().lease(5).unwrap().unwrap().remaining_ttl,
        50
    );
    drop(dir);
}

#[test]
fn immediate_durability_and_automatic_durable_commits() {
    let mut h = Harness::with_options(StoreOptions {
        commit_durability: CommitDurability::Immediate,
        ..Default::default()
    });
    h.put("a", "1");
    assert_eq!(h.store.durable_applied_index(), 1);
    let mut h = Harness::with_options(StoreOptions {
        commit_durability: CommitDurability::Deferred,
        durable_commit_every_commands: 3,
        cache_size_bytes: Some(1 << 20),
        ..Default::default()
    });
    h.put("a", "1");
    h.put("a", "2");
    assert_eq!(h.store.durable_applied_index(), 0);
    h.put("a", "3");
    assert_eq!(h.store.durable_applied_index(), 3);
}

#[test]
fn snapshot_round_trip() {
    let mut h = Harness::new();
    h.store.apply_batch(&sample_batch(1)).unwrap();
    h.next_index = 10;
    h.put("x", "1");
    h.ok(Command::Compact(CompactionRequest {
        revision: 4,
        physical: true,
    }));
    let mut bytes = Vec::new();
    let meta = h.store.reader().snapshot_to(&mut bytes).unwrap();
    assert_eq!(
        meta,
        SnapshotMeta {
            applied_index: 11,
            revision: 6,
            compact_revision: 4
        }
    );

    let mut other = Harness::new();
    other.put("junk", "to be replaced");
    let restored = other.store.restore_from(bytes.as_slice()).unwrap();
    assert_eq!(restored, meta);
    assert_eq!(dump(&other.store), dump(&h.store));
    assert_eq!(other.store.compact_revision(), 4);
    assert_eq!(
        other.store.reader().lease(5).unwrap(),
        h.store.reader().lease(5).unwrap()
    );
    let hist = |s: &Store| s.reader().events_since(4, b"\0", b"\0", 0).unwrap();
    assert_eq!(hist(&other.store), hist(&h.store));
    // Both go on identically.
    let cmd = (
        12,
        Command::Txn(TxnRequest {
            success: vec![RequestOp::Put(put_req("y", "2"))],
            ..Default::default()
        }),
    );
    let a = h.store.apply_batch(std::slice::from_ref(&cmd)).unwrap();
    let b = other.store.apply_batch(&[cmd]).unwrap();
    assert_eq!(a[0].as_ref().unwrap(), b[0].as_ref().unwrap());
    assert_eq!(dump(&other.store), dump(&h.store));
}

#[test]
fn corrupt_snapshots_are_rejected_and_change_nothing() {
    let mut h = Harness::new();
    h.store.apply_batch(&sample_batch(1)).unwrap();
    let mut bytes = Vec::new();
    h.store.reader().snapshot_to(&mut bytes).unwrap();

    let mut other = Harness::new();
    other.put("keep", "me");
    let before = dump(&other.store);
    for at in [0, 13, 30, bytes.len() / 2, bytes.len() - 5, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        assert!(
            other.store.restore_from(bad.as_slice()).is_err(),
            "flip at {at}"
        );
    }
    for len in [0, 10, bytes.len() - 1] {
        assert!(other.store.restore_from(&bytes[..len]).is_err());
    }
    assert_eq!(dump(&other.store), before);
    other.put("still", "works");
}

#[test]
fn commands_round_trip_and_garbage_never_panics() {
    let nested = TxnRequest {
        compare: vec![Compare {
            key: "k".into(),
            range_end: "\0".into(),
            result: CompareResult::Less,
            target: CompareTarget::Value(b"v".to_vec()),
        }],
        success: vec![RequestOp::Range(RangeRequest {
            sort_order: SortOrder::Descend,
            limit: 3,
            ..range_req("a", "b")
        })],
        failure: vec![RequestOp::Txn(TxnRequest::default())],
    };
    let commands = [
        Command::Noop,
        Command::Put(PutRequest {
            key: vec![0, 255],
            value: vec![1; 1000],
            lease: -3,
            prev_kv: true,
            ignore_value: false,
            ignore_lease: true,
        }),
        Command::DeleteRange(DeleteRangeRequest {
            key: "a".into(),
            range_end: "\0".into(),
            prev_kv: true,
        }),
        Command::Txn(nested),
        Command::Compact(CompactionRequest {
            revision: 9,
            physical: true,
        }),
        Command::LeaseGrant(LeaseGrantRequest {
            id: i64::MAX,
            ttl: 1,
        }),
        Command::LeaseRevoke(LeaseRevokeRequest { id: -1 }),
        Command::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints: vec![LeaseCheckpoint {
                id: 1,
                remaining_ttl: 2,
            }],
        }),
    ];
    for c in &commands {
        let bytes = c.encode();
        assert_eq!(bytes[0], COMMAND_FORMAT_V1);
        assert_eq!(&Command::decode(&bytes).unwrap(), c);
        // Every truncation and every single-byte corruption decodes or errs.
        for len in 0..bytes.len() {
            let _ = Command::decode(&bytes[..len]);
        }
        for i in 0..bytes.len().min(64) {
            let mut b = bytes.clone();
            b[i] = b[i].wrapping_add(0x41);
            let _ = Command::decode(&b);
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Command::decode(&trailing),
            Err(DecodeError::TrailingBytes(1))
        ));
    }
    assert_eq!(Command::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(
        Command::decode(&[9, 0]),
        Err(DecodeError::UnknownVersion(9))
    );
    // Deep nesting is refused instead of overflowing the stack.
    let mut deep = vec![COMMAND_FORMAT_V1, 3]; // Command::Txn
    for _ in 0..100_000 {
        deep.extend_from_slice(&[0, 1, 3]); // no compares, one success op: Txn
    }
    assert!(matches!(
        Command::decode(&deep),
        Err(DecodeError::Malformed(_))
    ));
    let mut ok = TxnRequest::default();
    for _ in 0..TXN_NESTING_MAX - 1 {
        ok = TxnRequest {
            success: vec![RequestOp::Txn(ok)],
            ..Default::default()
        };
    }
    let c = Command::Txn(ok);
    assert_eq!(Command::decode(&c.encode()).unwrap(), c);
}

#[test]
fn reader_is_consistent_while_writes_continue() {
    let mut h = Harness::new();
    h.put("a", "1");
    let reader = h.store.reader();
    let t = std::thread::spawn(move || {
        let mut last = 0;
        for _ in 0..200 {
            let r = reader.range(&range_req("a", "")).unwrap();
            // The header revision and the data come from one snapshot.
            assert_eq!(r.kvs[0].mod_revision, r.revision);
            assert!(r.revision >= last);
            last = r.revision;
        }
    });
    for i in 0..200 {
        h.put("a", &i.to_string());
    }
    t.join().unwrap();
    assert!(h.store.db_size_bytes().unwrap() > 0);
}
