//! Crash faults on real processes: kill -9 of the leader under load, kill -9
//! of every member, and a follower that falls so far behind that it can
//! only catch up from a snapshot. Acknowledged writes must never be lost.

mod support;

use etcd_client::{Client, GetOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{must_wait_for, Cluster, ClusterOptions, ELECTION_MS};

/// Acknowledged writes: key -> (value, revision in the put's header).
type Acked = Arc<Mutex<BTreeMap<String, (String, i64)>>>;

/// Concurrent writers, each starting on its own member and moving to the
/// next member whenever a put fails (the outcome of a failed put is
/// unknown, so it is not recorded).
struct Load {
    acked: Acked,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(cluster: &Cluster, writers: usize, prefix: &str) -> Load {
        let acked: Acked = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for i in 0..cluster.members.len() {
            clients.push(cluster.client(i).await);
        }
        let mut tasks = Vec::new();
        for w in 0..writers {
            let clients: Vec<Client> = clients.clone();
            let (acked, errors, stop) =
                (Arc::clone(&acked), Arc::clone(&errors), Arc::clone(&stop));
            let prefix = prefix.to_string();
            tasks.push(tokio::spawn(async move {
                let mut member = w % clients.len();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}{w:02}/{n:06}");
                    let value = format!("w{w}-n{n}");
                    n += 1;
                    let mut client = clients[member].clone();
                    match client.put(key.as_str(), value.as_str(), None).await {
                        Ok(resp) => {
                            let revision = resp.header().expect("put header").revision();
                            acked.lock().unwrap().insert(key, (value, revision));
                        }
                        Err(e) => {
                            errors.lock().unwrap().push(format!("n{}: {e}", member + 1));
                            member = (member + 1) % clients.len();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        Load {
            acked,
            errors,
            stop,
            tasks,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn wait_acked(&self, at_least: usize, timeout: Duration) {
        let acked = Arc::clone(&self.acked);
        let errors = Arc::clone(&self.errors);
        let what = format!("{at_least} acknowledged writes");
        must_wait_for(&what, timeout, move || {
            let n = acked.lock().unwrap().len();
            let last_error = errors.lock().unwrap().last().cloned();
            async move {
                if n >= at_least {
                    Ok(())
                } else {
                    Err(format!("{n} so far; last error {last_error:?}"))
                }
            }
        })
        .await;
    }

    async fn stop(self) -> BTreeMap<String, (String, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("writer task panicked");
        }
        let errors = self.errors.lock().unwrap();
        eprintln!(
            "load: {} failed puts (unknown outcome), e.g. {:?}",
            errors.len(),
            errors.first()
        );
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Every acknowledged write is on member `i` with its value and exactly
/// the revision it was acknowledged with, read locally (serializable) once
/// the member has applied through `revision`.
async fn assert_member_has(
    cluster: &Cluster,
    i: usize,
    acked: &BTreeMap<String, (String, i64)>,
    prefix: &str,
    revision: i64,
) {
    let client = cluster.client(i).await;
    let what = format!("n{} to apply through revision {revision}", i + 1);
    let resp = must_wait_for(&what, Duration::from_secs(20), move || {
        let mut client = client.clone();
        let prefix = prefix.to_string();
        async move {
            let resp = client
                .get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_serializable()),
                )
                .await
                .map_err(|e| e.to_string())?;
            let at = resp.header().expect("header").revision();
            if at >= revision {
                Ok(resp)
            } else {
                Err(format!("at revision {at}"))
            }
        }
    })
    .await;
    let found: BTreeMap<String, (String, i64)> = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf-8 key").to_string(),
                (
                    kv.value_str().expect("utf-8 value").to_string(),
                    kv.mod_revision(),
                ),
            )
        })
        .collect();
    let mut lost = Vec::new();
    for (key, (value, rev)) in acked {
        match found.get(key) {
            Some((v, r)) if v == value && r == rev => {}
            other => lost.push(format!(
                "{key}: acked ({value}, rev {rev}), found {other:?}"
            )),
        }
    }
    assert!(
        lost.is_empty(),
        "n{} lost or changed {} of {} acknowledged writes, e.g. {:?}",
        i + 1,
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// No two acknowledged writes share a revision (one put, one revision).
fn assert_unique_revisions(acked: &BTreeMap<String, (String, i64)>) {
    let mut by_revision: BTreeMap<i64, &str> = BTreeMap::new();
    for (key, (_, rev)) in acked {
        if let Some(other) = by_revision.insert(*rev, key) {
            panic!("{key} and {other} were both acknowledged at revision {rev}");
        }
    }
}

async fn hash_at(cluster: &Cluster, i: usize, revision: i64) -> u32 {
    let client = cluster.client(i).await;
    let what = format!("HashKV of n{} at {revision}", i + 1);
    must_wait_for(&what, Duration::from_secs(20), move || {
        let mut client = client.clone();
        async move {
            client
                .hash_kv(revision)
                .await
                .map(|h| h.hash())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3).await;
    let old_leader = cluster.wait_leader().await;
    let old_term = cluster
        .status(old_leader)
        .await
        .expect("status")
        .raft_term();

    let load = Load::start(&cluster, 6, "load/").await;
    load.wait_acked(60, Duration::from_secs(30)).await;
    let before_kill = load.acked_count();
    cluster.kill(old_leader);

    // A new leader among the survivors within a few election timeouts
    // (randomized timeouts are 1-2x ELECTION_MS; allow generous slack for a
    // loaded 2-core machine).
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old_leader).collect();
    let new_leader = cluster
        .wait_leader_among(&survivors, Duration::from_millis(20 * ELECTION_MS))
        .await;
    assert_ne!(new_leader, old_leader);
    let new_term = cluster
        .status(new_leader)
        .await
        .expect("status")
        .raft_term();
    assert!(
        new_term > old_term,
        "term must grow: {old_term} -> {new_term}"
    );

    // The load goes on through the survivors.
    load.wait_acked(before_kill + 60, Duration::from_secs(30))
        .await;
    let acked = load.stop().await;
    assert_unique_revisions(&acked);
    let max_revision = acked.values().map(|(_, r)| *r).max().expect("some writes");
    for &i in &survivors {
        assert_member_has(&cluster, i, &acked, "load/", max_revision).await;
    }

    // The old leader comes back, catches up and agrees byte for byte.
    cluster.restart(old_leader);
    assert_member_has(&cluster, old_leader, &acked, "load/", max_revision).await;
    let hashes = [
        hash_at(&cluster, 0, max_revision).await,
        hash_at(&cluster, 1, max_revision).await,
        hash_at(&cluster, 2, max_revision).await,
    ];
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at {max_revision} differs: {hashes:?}"
    );
    cluster.assert_all_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_every_member_then_restart_keeps_acknowledged_writes() {
    let mut cluster = Cluster::start(3).await;
    let load = Load::start(&cluster, 4, "all/").await;
    load.wait_acked(80, Duration::from_secs(30)).await;
    // Kill everyone while writes are still in flight.
    for i in 0..3 {
        cluster.kill(i);
    }
    let acked = load.stop().await;
    assert_unique_revisions(&acked);
    let max_revision = acked.values().map(|(_, r)| *r).max().expect("some writes");

    for i in 0..3 {
        cluster.restart(i);
    }
    let leader = cluster.wait_leader().await;
    for i in 0..3 {
        assert_member_has(&cluster, i, &acked, "all/", max_revision).await;
    }
    // Writes un-acknowledged at the crash may or may not have survived, but
    // the revision counter never goes back: the next write is above every
    // acknowledged revision, and every member agrees on the data.
    let mut c = cluster.client(leader).await;
    let next = c
        .put("after-restart", "x", None)
        .await
        .expect("put after restart");
    let next = next.header().unwrap().revision();
    assert!(
        next > max_revision,
        "revision went back: {next} <= {max_revision}"
    );
    let hashes = [
        hash_at(&cluster, 0, next).await,
        hash_at(&cluster, 1, next).await,
        hash_at(&cluster, 2, next).await,
    ];
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at {next} differs: {hashes:?}"
    );
}

/// What a member logs when it installs a snapshot from its leader.
const SNAPSHOT_INSTALLED: &str = "installed a snapshot from the leader";

/// A follower that was away for fewer entries than a snapshot leaves behind
/// it (`--experimental-snapshot-catchup-entries`) catches up from the log,
/// although the leader has snapshotted and compacted meanwhile: no store
/// snapshot (seconds at a million keys) is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn briefly_stopped_follower_catches_up_from_the_log() {
    const SNAPSHOT_COUNT: u64 = 100;
    const CATCHUP_ENTRIES: u64 = 400;
    let mut cluster = Cluster::start_with(ClusterOptions {
        snapshot_count: Some(SNAPSHOT_COUNT),
        snapshot_catchup_entries: Some(CATCHUP_ENTRIES),
        ..ClusterOptions::new(3)
    })
    .await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;

    // History enough that the leader snapshots (at applied - 400) while
    // the follower is still up.
    let warmup = Load::start(&cluster, 4, "catchup/a/").await;
    warmup.wait_acked(700, Duration::from_secs(60)).await;
    let mut acked = warmup.stop().await;
    let mut c = cluster.client(leader).await;
    let marker = c.put("catchup/marker", "m", None).await.expect("put");
    let marker_revision = marker.header().unwrap().revision();
    acked.insert("catchup/marker".into(), ("m".into(), marker_revision));
    assert_member_has(&cluster, follower, &acked, "catchup/", marker_revision).await;
    let follower_index = cluster
        .status(follower)
        .await
        .expect("follower status")
        .raft_index();
    cluster.stop(follower);

    // Fewer writes than the catch-up margin while it is away.
    let load = Load::start(&cluster, 4, "catchup/b/").await;
    load.wait_acked(150, Duration::from_secs(60)).await;
    acked.extend(load.stop().await);
    let last = c.put("catchup/last", "l", None).await.expect("put");
    let last_revision = last.header().unwrap().revision();
    acked.insert("catchup/last".into(), ("l".into(), last_revision));

    let leader_snapshots = cluster.members[leader].snapshot_files();
    let newest = leader_snapshots
        .last()
        .map(|(index, _)| *index)
        .expect("the leader must have snapshotted");
    assert!(
        newest <= follower_index,
        "the leader kept the entries after index {follower_index} (snapshots \
         {leader_snapshots:?})"
    );

    cluster.restart(follower);
    assert_member_has(&cluster, follower, &acked, "catchup/", last_revision).await;
    assert!(
        !cluster.members[follower]
            .log_since_start()
            .contains(SNAPSHOT_INSTALLED),
        "caught up by snapshot, not from the log:\n{}",
        cluster.members[follower].log_since_start()
    );
    cluster.assert_all_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_follower_catches_up_from_a_snapshot() {
    const SNAPSHOT_COUNT: u64 = 100;
    let mut cluster = Cluster::start_with(ClusterOptions {
        snapshot_count: Some(SNAPSHOT_COUNT),
        // Compact right up to each snapshot: the follower must need one.
        snapshot_catchup_entries: Some(0),
        ..ClusterOptions::new(3)
    })
    .await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;

    // Some history the follower has, then it stops.
    let warmup = Load::start(&cluster, 2, "snap/a/").await;
    warmup.wait_acked(20, Duration::from_secs(30)).await;
    let mut acked = warmup.stop().await;
    let follower_status = cluster.status(follower).await.expect("follower status");
    cluster.stop(follower);
    // The follower's log cannot extend past what the leader had appended.
    let follower_last_index = cluster
        .status(leader)
        .await
        .expect("leader status")
        .raft_index();
    assert!(follower_status.raft_index() <= follower_last_index);

    // Enough writes that the leader snapshots and drops the entries the
    // follower would need (several snapshot intervals).
    let mut c = cluster.client(leader).await;
    let load = Load::start(&cluster, 6, "snap/b/").await;
    load.wait_acked((4 * SNAPSHOT_COUNT) as usize, Duration::from_secs(60))
        .await;
    acked.extend(load.stop().await);
    // A few deletes and overwrites too, so the snapshot carries history.
    c.delete("snap/a/00/000000", None).await.expect("delete");
    acked.remove("snap/a/00/000000");
    let overwrite = c
        .put("snap/a/01/000000", "overwritten", None)
        .await
        .expect("overwrite");
    let last_revision = overwrite.header().unwrap().revision();
    acked.insert(
        "snap/a/01/000000".into(),
        ("overwritten".into(), last_revision),
    );

    let leader_snapshots = cluster.members[leader].snapshot_files();
    let newest = leader_snapshots
        .last()
        .map(|(index, _)| *index)
        .unwrap_or(0);
    assert!(
        newest > follower_last_index + 1,
        "the leader must have compacted past the follower's log (follower at most at index \
         {follower_last_index}, leader snapshots {leader_snapshots:?})"
    );

    cluster.restart(follower);
    assert_member_has(&cluster, follower, &acked, "snap/", last_revision).await;
    assert!(
        cluster.members[follower]
            .log_since_start()
            .contains(SNAPSHOT_INSTALLED),
        "the follower must have caught up by snapshot"
    );
    // Nothing extra either: the same keys, nothing resurrected.
    let mut on_follower = cluster.client(follower).await;
    let all = on_follower
        .get(
            "snap/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_serializable()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count on follower");
    assert_eq!(
        all.count(),
        acked.len() as i64,
        "key count on the caught-up follower"
    );
    let leader_hash = hash_at(&cluster, leader, last_revision).await;
    let follower_hash = hash_at(&cluster, follower, last_revision).await;
    assert_eq!(
        follower_hash, leader_hash,
        "HashKV at {last_revision}: follower vs leader"
    );
    // The follower's own state now starts from a snapshot at least as new as
    // one the leader sent.
    let follower_snapshots = cluster.members[follower].snapshot_files();
    assert!(
        follower_snapshots
            .iter()
            .any(|(index, _)| *index > follower_last_index),
        "follower has no snapshot past its old log: {follower_snapshots:?}"
    );

    // And it keeps replicating normally afterwards.
    let after = c
        .put("snap/after", "x", None)
        .await
        .expect("put after catch-up");
    let after_revision = after.header().unwrap().revision();
    acked.insert("snap/after".into(), ("x".into(), after_revision));
    assert_member_has(&cluster, follower, &acked, "snap/", after_revision).await;
    cluster.assert_all_alive();
}
