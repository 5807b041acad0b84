//! Deferred commits (one redb write transaction open across batches, the
//! pending log for readers) are invisible: a deferred store answers every
//! read exactly as a store that commits every batch at once, at every
//! point, whatever the commit points; and readers running beside the
//! writer never miss a record between the pending log and the file.

mod common;

use common::*;
use concord_mvcc::*;
use proptest::prelude::*;

fn command() -> impl Strategy<Value = Command> {
    let key = prop::sample::select(vec!["a", "ab", "b", "c"]);
    prop_oneof![
        6 => (key.clone(), prop::sample::select(vec!["x", "y", ""]))
            .prop_map(|(k, v)| Command::Put(put_req(k, v))),
        1 => (key.clone(), prop::sample::select(vec![7i64, 8]))
            .prop_map(|(k, lease)| Command::Put(PutRequest { lease, ..put_req(k, "leased") })),
        2 => (key.clone(), prop::sample::select(vec!["", "\0"]))
            .prop_map(|(k, e)| Command::DeleteRange(del_req(k, e))),
        1 => (key, 0i64..3).prop_map(|(k, v)| Command::Txn(version_txn(k, v, Vec::new()))),
        1 => prop::sample::select(vec![7i64, 8])
            .prop_map(|id| Command::LeaseGrant(LeaseGrantRequest { id, ttl: 60 })),
        1 => prop::sample::select(vec![7i64, 8])
            .prop_map(|id| Command::LeaseRevoke(LeaseRevokeRequest { id })),
        1 => Just(Command::Noop),
        // Compaction one revision back from the current one at apply time.
        1 => Just(Command::Compact(CompactionRequest { revision: -1, physical: true })),
    ]
}

/// Everything a reader can see, including the snapshot stream's bytes.
#[allow(clippy::type_complexity)]
fn seen(
    r: &StoreReader,
) -> (
    RangeResponse,
    HashKv,
    EventBatch,
    EventBatch,
    Vec<LeaseInfo>,
    Option<LeaseInfo>,
    Vec<u8>,
) {
    let mut snapshot = Vec::new();
    r.snapshot_to(&mut snapshot).unwrap();
    let from = r.compact_revision().unwrap().max(1);
    (
        r.range(&range_req("\0", "\0")).unwrap(),
        r.hash_kv(0).unwrap(),
        r.events_since(from, b"\0", b"\0", 0).unwrap(),
        r.events_since(from, b"a", b"", 0).unwrap(),
        r.leases().unwrap(),
        r.lease(7).unwrap(),
        snapshot,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn deferred_commits_answer_like_immediate_ones(
        commands in prop::collection::vec(command(), 1..60),
        cuts in prop::collection::vec(1usize..5, 1..10),
        commit_after in prop::collection::vec(any::<bool>(), 1..10),
        max_batches in 1usize..6,
    ) {
        let mut immediate = Harness::with_options(StoreOptions {
            commit_durability: CommitDurability::Immediate,
            ..Default::default()
        });
        let mut deferred = Harness::with_options(StoreOptions {
            max_pending_batches: max_batches,
            ..Default::default()
        });
        let mut rest: Vec<(u64, Command)> = commands
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u64 + 1, c.clone()))
            .collect();
        let mut step = 0;
        while !rest.is_empty() {
            let n = cuts[step % cuts.len()].min(rest.len());
            let tail = rest.split_off(n);
            // Relative compactions resolve against the revision both agree on.
            let batch: Vec<(u64, Command)> = rest
                .into_iter()
                .map(|(i, c)| match c {
                    Command::Compact(_) => (i, Command::Compact(CompactionRequest {
                        revision: immediate.rev() - 1,
                        physical: true,
                    })),
                    c => (i, c),
                })
                .collect();
            rest = tail;
            // A compaction later in the same batch resolves to the same
            // revision in both runs, so outcomes still compare.
            let a = immediate.store.apply_batch(&batch).unwrap();
            let b = deferred.store.apply_batch(&batch).unwrap();
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
            if commit_after[step % commit_after.len()] {
                deferred.store.commit_pending().unwrap();
                prop_assert!(!deferred.store.has_uncommitted());
            }
            deferred.store.reader().verify().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(seen(&deferred.store.reader()), seen(&immediate.store.reader()));
            step += 1;
        }
        // And after a restart from a flush, nothing differs either.
        deferred.store.flush().unwrap();
        prop_assert_eq!(deferred.store.durable_applied_index(), deferred.store.applied_index());
        let path = deferred.path();
        let Harness { dir, store, .. } = deferred;
        drop(store);
        let reopened = Store::open(&path, StoreOptions::default()).unwrap();
        prop_assert_eq!(seen(&reopened.reader()), seen(&immediate.store.reader()));
        drop(dir);
    }
}

/// A batch that changes leases is committed before it is published, so
/// lease reads (which read committed state only) see it.
#[test]
fn lease_changes_commit_at_once() {
    let mut h = Harness::new();
    h.put("a", "1");
    assert!(h.store.has_uncommitted(), "a plain put waits for a commit");
    h.ok(Command::LeaseGrant(LeaseGrantRequest { id: 3, ttl: 10 }));
    assert!(!h.store.has_uncommitted());
    assert_eq!(h.store.reader().leases().unwrap().len(), 1);
    h.ok(Command::Put(PutRequest {
        lease: 3,
        ..put_req("b", "2")
    }));
    assert!(!h.store.has_uncommitted());
    assert_eq!(h.store.reader().lease(3).unwrap().unwrap().keys, [b"b"]);
    h.put("b", "3"); // detaches b from lease 3
    assert!(!h.store.has_uncommitted());
    assert!(h.store.reader().lease(3).unwrap().unwrap().keys.is_empty());
}

/// The limits on what pends are kept: commands and batches.
#[test]
fn pending_limits_force_commits() {
    let mut h = Harness::with_options(StoreOptions {
        max_pending_commands: 3,
        ..Default::default()
    });
    h.put("a", "1");
    h.put("a", "2");
    assert!(h.store.has_uncommitted());
    h.put("a", "3");
    assert!(!h.store.has_uncommitted(), "three commands pending commit");
    let mut h = Harness::with_options(StoreOptions {
        max_pending_bytes: 1000,
        ..Default::default()
    });
    h.put("a", &"v".repeat(400));
    assert!(h.store.has_uncommitted());
    h.put("a", &"v".repeat(700));
    assert!(!h.store.has_uncommitted(), "over 1000 record bytes commit");
}

/// Readers beside the writer: every record a published index names is
/// found (in the pending log or in the file), through commits, and reads
/// never go back in time. Every put writes the value of its own revision,
/// so any mix-up of versions shows.
#[test]
fn readers_beside_the_writer_always_find_their_records() {
    let mut h = Harness::with_options(StoreOptions {
        max_pending_batches: 7,
        ..Default::default()
    });
    let reader = h.store.reader();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let reader = reader.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                    let all = reader.range(&range_req("\0", "\0")).unwrap();
                    assert!(
                        all.revision >= last,
                        "went back from {last} to {}",
                        all.revision
                    );
                    last = all.revision;
                    for kv in &all.kvs {
                        assert_eq!(kv.value, kv.mod_revision.to_string().into_bytes());
                    }
                    let events = reader.events_since(1, b"\0", b"\0", 0).unwrap();
                    for e in &events.events {
                        assert_eq!(e.kv.value, e.kv.mod_revision.to_string().into_bytes());
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let mut index = 0u64;
    for round in 0..400u64 {
        let batch: Vec<(u64, Command)> = (0..(round % 5 + 1))
            .map(|_| {
                index += 1;
                // Revision 1 is the empty store; put i makes revision i + 1.
                let key = format!("k{}", index % 13);
                (index, Command::Put(put_req(&key, &(index + 1).to_string())))
            })
            .collect();
        h.store.apply_batch(&batch).unwrap();
        if round % 11 == 0 {
            h.store.commit_pending().unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("a reader failed") > 0);
    }
    h.store.reader().verify().unwrap();
}
