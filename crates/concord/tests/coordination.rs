//! Watch, Lease, Lock and Election on real `concord serve` processes with
//! the real `etcd-client` crate: the calls themselves, Kleppmann's fencing
//! example, lease expiry across a leader change, watch delivery across a
//! leader change (a watcher that reconnects with its last revision sees
//! every event exactly once), and a stalled leader that must not revoke
//! leases when it resumes (etcd#15247).

mod support;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseTimeToLiveOptions, LockOptions,
    ProclaimOptions, PutOptions, ResignOptions, Txn, TxnOp, WatchOptions,
};
use std::time::{Duration, Instant};
use support::{assert_grpc_error, connect, Cluster, ELECTION_MS};

const WAIT: Duration = Duration::from_secs(30);

async fn exists(client: &mut Client, key: &str) -> bool {
    let response = client.get(key, None).await.expect("get");
    !response.kvs().is_empty()
}

/// Retries a call until the cluster answers (after a leader change).
async fn put_retry(client: &mut Client, key: &str, value: &str, lease: i64) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        match client.put(key, value, options).await {
            Ok(r) => return r.header().expect("header").revision(),
            Err(e) if Instant::now() < deadline => {
                eprintln!("put {key}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
}

/// Pid of the process serving `data_dir` (found in /proc: the support
/// module keeps the child handle private).
fn pid_of(data_dir: &std::path::Path) -> u32 {
    let needle = data_dir.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.iter().any(|a| a == "serve") && args.contains(&needle) {
            return pid;
        }
    }
    panic!("no process serves {needle}");
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_history_prev_kv_filters_cancel_and_compaction() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    let first = put_retry(&mut client, "w/a", "1", 0).await;
    put_retry(&mut client, "w/a", "2", 0).await;
    client.delete("w/a", None).await.unwrap();

    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(first)
        .with_prev_key();
    let mut stream = client.watch("w/", Some(options)).await.unwrap();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created());
    let mut events = Vec::new();
    while events.len() < 3 {
        let response = stream.message().await.unwrap().unwrap();
        events.extend(response.events().to_vec());
    }
    assert_eq!(events[0].event_type(), EventType::Put);
    assert!(events[0].prev_kv().is_none());
    assert_eq!(events[1].prev_kv().unwrap().value(), b"1");
    assert_eq!(events[2].event_type(), EventType::Delete);
    assert_eq!(events[2].prev_kv().unwrap().value(), b"2");
    let watch_id = created.watch_id();

    // A second watcher on the same stream, deletes only, live.
    stream
        .watch(
            "w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_filters([etcd_client::WatchFilterType::NoPut]),
            ),
        )
        .await
        .unwrap();
    let second = stream.message().await.unwrap().unwrap();
    assert!(second.created());
    put_retry(&mut client, "w/b", "x", 0).await;
    let deleted = client.delete("w/b", None).await.unwrap();
    let delete_revision = deleted.header().unwrap().revision();
    let mut seen_delete = false;
    while !seen_delete {
        let response = stream.message().await.unwrap().unwrap();
        if response.watch_id() == second.watch_id() {
            assert!(response
                .events()
                .iter()
                .all(|e| e.event_type() == EventType::Delete));
            seen_delete = response
                .events()
                .iter()
                .any(|e| e.kv().unwrap().mod_revision() == delete_revision);
        }
    }
    stream.cancel(watch_id).await.unwrap();
    loop {
        let response = stream.message().await.unwrap().unwrap();
        if response.canceled() {
            assert_eq!(response.watch_id(), watch_id);
            break;
        }
    }

    // A start revision below the compaction is reported, not skipped.
    client.compact(delete_revision, None).await.unwrap();
    let mut stream = client
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(first)),
        )
        .await
        .unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    let canceled = stream.message().await.unwrap().unwrap();
    assert!(canceled.canceled());
    assert_eq!(canceled.compact_revision(), delete_revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_keepalive_timetolive_leases_revoke() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    // Through a follower: keep-alive and time-to-live are forwarded.
    let mut client = cluster.client((leader + 1) % 3).await;
    let granted = client.lease_grant(3, None).await.unwrap();
    let id = granted.id();
    assert_eq!(granted.ttl(), 3);
    put_retry(&mut client, "lease/a", "1", id).await;
    put_retry(&mut client, "lease/b", "2", id).await;

    let (mut keeper, mut responses) = client.lease_keep_alive(id).await.unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        keeper.keep_alive().await.unwrap();
        let response = responses.message().await.unwrap().unwrap();
        assert_eq!((response.id(), response.ttl()), (id, 3));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(
        exists(&mut client, "lease/a").await,
        "keep-alive did not extend the lease"
    );
    let ttl = client
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 3);
    assert!(ttl.ttl() >= 1 && ttl.ttl() <= 3, "ttl {}", ttl.ttl());
    assert_eq!(ttl.keys(), [b"lease/a".to_vec(), b"lease/b".to_vec()]);
    let leases = client.leases().await.unwrap();
    assert!(leases.leases().iter().any(|l| l.id() == id));

    // Revoke: both keys deleted in one revision, with events.
    let mut watch = client
        .watch("lease/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());
    let revoked = client.lease_revoke(id).await.unwrap();
    let revision = revoked.header().unwrap().revision();
    let response = watch.message().await.unwrap().unwrap();
    let deletes: Vec<i64> = response
        .events()
        .iter()
        .filter(|e| e.event_type() == EventType::Delete)
        .map(|e| e.kv().unwrap().mod_revision())
        .collect();
    assert_eq!(deletes, vec![revision, revision]);
    assert!(!exists(&mut client, "lease/a").await);
    assert_eq!(client.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
    assert_grpc_error(
        client.lease_revoke(id).await,
        "NotFound",
        "etcdserver: requested lease not found",
    );

    // Expiry: a lease nobody keeps alive is revoked by the leader.
    let short = client.lease_grant(1, None).await.unwrap().id();
    put_retry(&mut client, "lease/short", "v", short).await;
    let since = Instant::now();
    while exists(&mut client, "lease/short").await {
        assert!(since.elapsed() < WAIT, "lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kleppmann's fencing example ("How to do distributed locking", 2016):
/// the holder pauses past its lease, another client takes the lock, and
/// the old holder's write, guarded by the lock key's create revision, is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_fencing_refuses_the_paused_holders_write() {
    let cluster = Cluster::start(3).await;
    let mut client_a = cluster.client_all().await;
    let mut client_b = cluster.client_all().await;
    let lease_a = client_a.lease_grant(2, None).await.unwrap().id();
    let lease_b = client_b.lease_grant(30, None).await.unwrap().id();
    let held = client_a
        .lock("fenced", Some(LockOptions::new().with_lease(lease_a)))
        .await
        .unwrap();
    let key_a = held.key().to_vec();
    let token_a = client_a.get(key_a.clone(), None).await.unwrap().kvs()[0].create_revision();

    let guarded = |key: Vec<u8>, token: i64, value: &'static str| {
        Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, token)])
            .and_then([TxnOp::put("storage", value, None)])
    };
    assert!(client_a
        .txn(guarded(key_a.clone(), token_a, "a1"))
        .await
        .unwrap()
        .succeeded());

    // B waits: mutual exclusion.
    let waiter = tokio::spawn(async move {
        let held = client_b
            .lock("fenced", Some(LockOptions::new().with_lease(lease_b)))
            .await
            .unwrap();
        (client_b, held.key().to_vec())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiter.is_finished(), "B got the lock while A held it");

    // A pauses (a GC pause: no keep-alives) past its lease; B gets the lock.
    let (mut client_b, key_b) = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
    let token_b = client_b.get(key_b.clone(), None).await.unwrap().kvs()[0].create_revision();
    assert!(token_b > token_a);
    assert!(client_b
        .txn(guarded(key_b.clone(), token_b, "b1"))
        .await
        .unwrap()
        .succeeded());

    // A wakes up and writes with its stale token: refused.
    let late = client_a.txn(guarded(key_a, token_a, "a2")).await.unwrap();
    assert!(!late.succeeded());
    let stored = client_a.get("storage", None).await.unwrap();
    assert_eq!(stored.kvs()[0].value(), b"b1");
    client_b.unlock(key_b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_campaign_observe_proclaim_resign() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    let lease_a = client.lease_grant(30, None).await.unwrap().id();
    let lease_b = client.lease_grant(30, None).await.unwrap().id();
    let mut observer = client.observe("elect").await.unwrap();
    let leader_a = client
        .campaign("elect", "a", lease_a)
        .await
        .unwrap()
        .take_leader()
        .unwrap();
    let observed =
        |r: Option<etcd_client::LeaderResponse>| r.unwrap().kv().unwrap().value().to_vec();
    assert_eq!(observed(observer.message().await.unwrap()), b"a");

    let mut other = client.clone();
    let campaign_b = tokio::spawn(async move { other.campaign("elect", "b", lease_b).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!campaign_b.is_finished(), "two leaders");

    client
        .proclaim(
            "a2",
            Some(ProclaimOptions::new().with_leader(leader_a.clone())),
        )
        .await
        .unwrap();
    assert_eq!(observed(observer.message().await.unwrap()), b"a2");
    let now = client.leader("elect").await.unwrap();
    assert_eq!(now.kv().unwrap().value(), b"a2");

    client
        .resign(Some(ResignOptions::new().with_leader(leader_a.clone())))
        .await
        .unwrap();
    let leader_b = tokio::time::timeout(WAIT, campaign_b)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .take_leader()
        .unwrap();
    assert!(leader_b.rev() > leader_a.rev());
    assert_eq!(observed(observer.message().await.unwrap()), b"b");
    assert_grpc_error(
        client
            .proclaim("stale", Some(ProclaimOptions::new().with_leader(leader_a)))
            .await,
        "Unknown",
        "election: not leader",
    );
}

/// A lease keeps its remaining TTL when the leader dies: the new leader
/// does not expire it early, and does expire it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_across_a_leader_change() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut client = connect(
        &survivors
            .iter()
            .map(|&i| cluster.members[i].client_url())
            .collect::<Vec<_>>(),
    )
    .await;
    let ttl = 6;
    let id = client.lease_grant(ttl, None).await.unwrap().id();
    let written = put_retry(&mut client, "survive/key", "v", id).await;
    // From the revision after the put: a member that has not applied it
    // yet would otherwise start before it.
    let mut watch = client
        .watch(
            "survive/key",
            Some(WatchOptions::new().with_start_revision(written + 1)),
        )
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());

    // Last renewal, then the leader dies a second later.
    let (mut keeper, mut responses) = client.lease_keep_alive(id).await.unwrap();
    let renewed_at = Instant::now();
    keeper.keep_alive().await.unwrap();
    assert_eq!(responses.message().await.unwrap().unwrap().ttl(), ttl);
    drop((keeper, responses));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(leader);
    cluster.wait_leader_among(&survivors, WAIT).await;

    // Not before the TTL counted from the last renewal...
    while renewed_at.elapsed() < Duration::from_millis(ttl as u64 * 1000 - 300) {
        assert!(
            exists(&mut client, "survive/key").await,
            "expired {:?} after the last renewal",
            renewed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let remaining = client.lease_time_to_live(id, None).await.unwrap().ttl();
    assert!(remaining >= 0, "lease gone early (ttl {remaining})");
    // ...but within TTL + election timeout + slack.
    let response = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("expiry within the wait")
        .unwrap()
        .unwrap();
    assert_eq!(response.events()[0].event_type(), EventType::Delete);
    let expired_after = renewed_at.elapsed();
    assert!(
        expired_after < Duration::from_millis(ttl as u64 * 1000 + 3 * ELECTION_MS + 5000),
        "expired only {expired_after:?} after the last renewal"
    );
}

/// etcd#15247: a leader whose loop stalls (here: SIGSTOP) must not revoke
/// every lease when it resumes; the stalled time does not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_does_not_revoke_leases_when_it_resumes() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    let id = client.lease_grant(4, None).await.unwrap().id();
    put_retry(&mut client, "stall/key", "v", id).await;
    let granted_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = pid_of(&cluster.members[0].data_dir);
    signal(pid, "-STOP");
    tokio::time::sleep(Duration::from_secs(6)).await;
    signal(pid, "-CONT");
    let resumed_at = Instant::now();
    // About 3 s of the TTL are left; well inside that, the key is there.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        exists(&mut client, "stall/key").await,
        "leases revoked after the stall"
    );
    let remaining = client.lease_time_to_live(id, None).await.unwrap().ttl();
    assert!(remaining >= 1, "remaining {remaining}");
    // And it still expires, once its own time is up.
    while exists(&mut client, "stall/key").await {
        assert!(resumed_at.elapsed() < WAIT, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(granted_at.elapsed() >= Duration::from_secs(4 + 6 - 1));
}

/// A watcher on the leader loses its member; it reconnects to another
/// member with its last revision + 1 and sees every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_across_a_leader_change_without_gaps_or_duplicates() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let survivor_urls: Vec<String> = survivors
        .iter()
        .map(|&i| cluster.members[i].client_url())
        .collect();
    let mut watcher = cluster.client(leader).await;
    let mut writer = connect(&survivor_urls).await;
    let start = put_retry(&mut writer, "marker", "start", 0).await + 1;

    let mut stream = watcher
        .watch(
            "wl/",
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());

    let writes = tokio::spawn(async move {
        let mut last = 0;
        for i in 0..200 {
            last = put_retry(&mut writer, &format!("wl/{}", i % 13), &i.to_string(), 0).await;
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        last
    });

    let mut received: Vec<(i64, Vec<u8>)> = Vec::new();
    // Some events from the leader, then it dies under the watcher.
    while received.len() < 40 {
        let response = stream.message().await.unwrap().unwrap();
        received.extend(response.events().iter().map(|e| {
            (
                e.kv().unwrap().mod_revision(),
                e.kv().unwrap().key().to_vec(),
            )
        }));
    }
    cluster.kill(leader);
    while let Ok(Ok(Some(response))) =
        tokio::time::timeout(Duration::from_secs(10), stream.message()).await
    {
        received.extend(response.events().iter().map(|e| {
            (
                e.kv().unwrap().mod_revision(),
                e.kv().unwrap().key().to_vec(),
            )
        }));
    }
    let last_seen = received.last().unwrap().0;
    let mut resumed = connect(&survivor_urls).await;
    let mut stream = resumed
        .watch(
            "wl/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(last_seen + 1),
            ),
        )
        .await
        .unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    let last_write = tokio::time::timeout(Duration::from_secs(120), writes)
        .await
        .unwrap()
        .unwrap();
    while received.last().unwrap().0 < last_write {
        let response = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        received.extend(response.events().iter().map(|e| {
            (
                e.kv().unwrap().mod_revision(),
                e.kv().unwrap().key().to_vec(),
            )
        }));
    }

    // The truth: the prefix's history on a survivor.
    let mut truth_stream = resumed
        .watch(
            "wl/",
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .unwrap();
    assert!(truth_stream.message().await.unwrap().unwrap().created());
    let mut truth: Vec<(i64, Vec<u8>)> = Vec::new();
    while truth.last().map(|t| t.0).unwrap_or(0) < last_write {
        let response = tokio::time::timeout(WAIT, truth_stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        truth.extend(response.events().iter().map(|e| {
            (
                e.kv().unwrap().mod_revision(),
                e.kv().unwrap().key().to_vec(),
            )
        }));
    }
    let count = resumed
        .get(
            "wl/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(count, 13);
    assert_eq!(received.len(), truth.len(), "missed or duplicated events");
    assert_eq!(received, truth);
}
