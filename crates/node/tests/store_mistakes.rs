//! Teeth for the store's deferred commits: each safety mechanism switched
//! off (`concord-mvcc` feature `mistakes`, on for this crate's tests only)
//! and the check that catches its absence. The same checks pass with the
//! mechanism on (the control cases), and run in full in
//! `crates/mvcc/tests/deferred.rs`.

use concord_mvcc::{
    Command, CommitDurability, LeaseGrantRequest, Mistakes, PutRequest, RangeRequest, Store,
    StoreOptions,
};

fn put(key: &str, value: &str, lease: i64) -> Command {
    Command::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..Default::default()
    })
}

fn everything() -> RangeRequest {
    RangeRequest {
        key: b"\0".to_vec(),
        range_end: b"\0".to_vec(),
        ..Default::default()
    }
}

fn store(dir: &tempfile::TempDir, name: &str, mistakes: Mistakes) -> Store {
    Store::open(
        dir.path().join(name),
        StoreOptions {
            commit_durability: CommitDurability::Deferred,
            mistakes,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// What the deferred-vs-immediate property compares, for one script:
/// a put, then a lease grant and a leased put, each read back at once.
fn reads_after_each_step(store: &mut Store) -> Vec<String> {
    let script = [
        put("a", "1", 0),
        Command::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 60 }),
        put("b", "2", 9),
        put("a", "3", 0),
    ];
    let mut seen = Vec::new();
    for (i, command) in script.into_iter().enumerate() {
        store.apply_batch(&[(i as u64 + 1, command)]).unwrap();
        let reader = store.reader();
        seen.push(format!(
            "{:?} {:?} {:?}",
            reader.range(&everything()).map(|r| r
                .kvs
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect::<Vec<_>>()),
            reader.leases().map(|l| l.len()),
            reader.lease(9).map(|l| l.map(|l| l.keys)),
        ));
    }
    seen
}

fn reference() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut immediate = Store::open(
        dir.path().join("immediate"),
        StoreOptions {
            commit_durability: CommitDurability::Immediate,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    reads_after_each_step(&mut immediate)
}

/// The script's reads from a deferred store with `mistakes` switched on.
fn reads_with(mistakes: Mistakes) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    reads_after_each_step(&mut store(&dir, "deferred", mistakes))
}

#[test]
fn control_deferred_commits_read_like_immediate_ones() {
    assert_eq!(reads_with(Mistakes::default()), reference());
}

#[test]
fn without_the_pending_log_readers_miss_applied_versions() {
    let seen = reads_with(Mistakes {
        publish_without_pending: true,
        ..Mistakes::default()
    });
    assert_ne!(seen, reference(), "the comparison must catch it");
    assert!(
        seen[0].contains("indexed but not stored"),
        "the first read names a version no one holds: {}",
        seen[0]
    );
}

#[test]
fn deferring_lease_batches_leaves_lease_reads_stale() {
    let seen = reads_with(Mistakes {
        defer_lease_batches: true,
        ..Mistakes::default()
    });
    let reference = reference();
    assert_ne!(seen, reference, "the comparison must catch it");
    assert_eq!(seen[0], reference[0], "plain puts are unaffected");
    assert!(
        seen[1].contains("Ok(0)"),
        "the granted lease is not seen: {}",
        seen[1]
    );
}
