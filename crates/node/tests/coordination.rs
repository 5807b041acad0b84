//! Watch, Lease, Lock and Election through the real gRPC services of
//! in-process members (one, or three on loopback), with the generated
//! tonic clients. Multi-process tests with the `etcd-client` crate are in
//! `crates/concord/tests/coordination.rs`.

use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::kv_client::KvClient;
use concord_etcd_proto::etcdserverpb::lease_client::LeaseClient;
use concord_etcd_proto::etcdserverpb::watch_client::WatchClient;
use concord_etcd_proto::v3electionpb as epb;
use concord_etcd_proto::v3electionpb::election_client::ElectionClient;
use concord_etcd_proto::v3lockpb as lpb;
use concord_etcd_proto::v3lockpb::lock_client::LockClient;
use concord_node::config::NodeConfig;
mod support;

use std::future::Future;
use std::time::{Duration, Instant};
use support::{run, Cluster, TIMEOUT};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const TOKEN: &str = "coordination-test";

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .unwrap()
        .connect_lazy()
}

/// Retries `f` while the cluster has no leader yet (Unavailable).
async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(30)).await
            }
            Err(s) => panic!("call failed: {s:?}"),
        }
    }
}

async fn put(kv: &KvClient<Channel>, key: &str, value: &str, lease: i64) -> i64 {
    retry(|| {
        let mut kv = kv.clone();
        let request = pb::PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        };
        async move { kv.put(request).await }
    })
    .await
    .into_inner()
    .header
    .unwrap()
    .revision
}

async fn get(kv: &KvClient<Channel>, key: &str) -> Option<pb::RangeResponse> {
    let response = retry(|| {
        let mut kv = kv.clone();
        let request = pb::RangeRequest {
            key: key.into(),
            ..Default::default()
        };
        async move { kv.range(request).await }
    })
    .await
    .into_inner();
    (!response.kvs.is_empty()).then_some(response)
}

async fn grant(lease: &LeaseClient<Channel>, ttl: i64) -> pb::LeaseGrantResponse {
    retry(|| {
        let mut lease = lease.clone();
        async move {
            lease
                .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
                .await
        }
    })
    .await
    .into_inner()
}

async fn time_to_live(lease: &LeaseClient<Channel>, id: i64) -> pb::LeaseTimeToLiveResponse {
    retry(|| {
        let mut lease = lease.clone();
        async move {
            lease
                .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
                .await
        }
    })
    .await
    .into_inner()
}

struct WatchStream {
    tx: mpsc::Sender<pb::WatchRequest>,
    rx: tonic::Streaming<pb::WatchResponse>,
}

async fn watch(url: &str, create: pb::WatchCreateRequest) -> WatchStream {
    let mut client = WatchClient::new(channel(url).await);
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
    })
    .await
    .unwrap();
    let mut rx = client
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = rx.message().await.unwrap().unwrap();
    assert!(created.created);
    WatchStream { tx, rx }
}

impl WatchStream {
    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(TIMEOUT, self.rx.message())
            .await
            .expect("a watch response in time")
            .expect("stream ok")
            .expect("stream open")
    }

    async fn events(&mut self, n: usize) -> Vec<concord_etcd_proto::mvccpb::Event> {
        let mut out = Vec::new();
        while out.len() < n {
            out.extend(self.next().await.events);
        }
        out
    }
}

fn prefix(key: &str) -> pb::WatchCreateRequest {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    pb::WatchCreateRequest {
        key: key.into(),
        range_end: end,
        ..Default::default()
    }
}

#[test]
fn watch_history_live_and_compacted_over_grpc() {
    let cluster = Cluster::start(1, TOKEN, |_, _| {});
    let url = cluster.urls[0].clone();
    run(async move {
        let kv = KvClient::new(channel(&url).await);
        let first = put(&kv, "w/a", "1", 0).await;
        put(&kv, "w/b", "2", 0).await;
        let mut from_past = prefix("w/");
        from_past.start_revision = first;
        from_past.prev_kv = true;
        let mut stream = watch(&url, from_past).await;
        let third = put(&kv, "w/a", "3", 0).await;
        let events = stream.events(3).await;
        let revisions: Vec<i64> = events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect();
        assert_eq!(revisions, vec![first, first + 1, third]);
        assert_eq!(events[2].prev_kv.as_ref().unwrap().value, b"1");

        // Progress: watch_id -1 at a revision >= the last event.
        stream
            .tx
            .send(pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                    pb::WatchProgressRequest {},
                )),
            })
            .await
            .unwrap();
        let progress = stream.next().await;
        assert_eq!(progress.watch_id, -1);
        assert!(progress.header.unwrap().revision >= third);

        let mut kv2 = kv.clone();
        kv2.compact(pb::CompactionRequest {
            revision: third,
            physical: true,
        })
        .await
        .unwrap();
        let mut compacted = prefix("w/");
        compacted.start_revision = first;
        let mut stream = watch(&url, compacted).await;
        let canceled = stream.next().await;
        assert!(canceled.canceled);
        assert_eq!(canceled.compact_revision, third);
    });
}

#[test]
fn lease_grant_revoke_keepalive_expiry_timetolive_list() {
    let cluster = Cluster::start(1, TOKEN, |_, _| {});
    let url = cluster.urls[0].clone();
    run(async move {
        let kv = KvClient::new(channel(&url).await);
        let lease = LeaseClient::new(channel(&url).await);
        // TTL below the minimum is raised (ceil(1.5 x 200 ms) = 1 s); too
        // large is refused with etcd's error.
        let short = grant(&lease, 0).await;
        assert_eq!(short.ttl, 1);
        let err = lease
            .clone()
            .lease_grant(pb::LeaseGrantRequest {
                ttl: 9_000_000_001,
                id: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert_eq!(err.message(), "etcdserver: too large lease TTL");
        let chosen = retry(|| {
            let mut lease = lease.clone();
            async move {
                lease
                    .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 4242 })
                    .await
            }
        })
        .await
        .into_inner();
        assert_eq!(chosen.id, 4242);

        // Revoke deletes the attached keys in one revision, with events.
        let mut stream = watch(&url, prefix("l/")).await;
        put(&kv, "l/a", "1", 4242).await;
        put(&kv, "l/b", "2", 4242).await;
        let ttl = time_to_live(&lease, 4242).await;
        assert_eq!(ttl.granted_ttl, 30);
        assert!(ttl.ttl > 25 && ttl.ttl <= 30, "{ttl:?}");
        assert_eq!(ttl.keys, vec![b"l/a".to_vec(), b"l/b".to_vec()]);
        let listed = lease
            .clone()
            .lease_leases(pb::LeaseLeasesRequest {})
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<i64> = listed.leases.iter().map(|l| l.id).collect();
        assert!(ids.contains(&4242) && ids.contains(&short.id));
        let revoked = lease
            .clone()
            .lease_revoke(pb::LeaseRevokeRequest { id: 4242 })
            .await
            .unwrap()
            .into_inner();
        let events = stream.events(4).await;
        let deletes: Vec<_> = events.iter().filter(|e| e.r#type == 1).collect();
        assert_eq!(deletes.len(), 2);
        assert!(deletes
            .iter()
            .all(|e| e.kv.as_ref().unwrap().mod_revision == revoked.header.unwrap().revision));
        assert!(get(&kv, "l/a").await.is_none());
        assert_eq!(time_to_live(&lease, 4242).await.ttl, -1);
        let err = lease
            .clone()
            .lease_revoke(pb::LeaseRevokeRequest { id: 4242 })
            .await
            .unwrap_err();
        assert_eq!(err.message(), "etcdserver: requested lease not found");

        // Keep-alive extends; when it stops, the leader revokes.
        let kept = grant(&lease, 2).await;
        put(&kv, "l/kept", "v", kept.id).await;
        let (tx, rx) = mpsc::channel(4);
        let mut responses = lease
            .clone()
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            tx.send(pb::LeaseKeepAliveRequest { id: kept.id })
                .await
                .unwrap();
            let response = responses.message().await.unwrap().unwrap();
            assert_eq!((response.id, response.ttl), (kept.id, 2));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            get(&kv, "l/kept").await.is_some(),
            "kept alive past its TTL"
        );
        drop(tx);
        let stopped = Instant::now();
        while get(&kv, "l/kept").await.is_some() {
            assert!(
                stopped.elapsed() < Duration::from_secs(10),
                "lease never expired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            stopped.elapsed() >= Duration::from_millis(1500),
            "expired early"
        );
        // A keep-alive of an unknown lease answers TTL 0.
        let (tx, rx) = mpsc::channel(1);
        tx.send(pb::LeaseKeepAliveRequest { id: kept.id })
            .await
            .unwrap();
        let mut responses = lease
            .clone()
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(responses.message().await.unwrap().unwrap().ttl, 0);
    });
}

#[test]
fn lease_calls_on_followers_are_forwarded_and_survive_a_leader_change() {
    let mut cluster = Cluster::start(3, TOKEN, |_, _| {});
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let urls = cluster.urls.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let id = rt.block_on(async {
        let kv = KvClient::new(channel(&urls[follower]).await);
        let lease = LeaseClient::new(channel(&urls[follower]).await);
        let granted = grant(&lease, 4).await;
        put(&kv, "f/key", "v", granted.id).await;
        // Keep-alive through a follower reaches the leader's lessor.
        let (tx, rx) = mpsc::channel(4);
        let mut responses = lease
            .clone()
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..3 {
            tx.send(pb::LeaseKeepAliveRequest { id: granted.id })
                .await
                .unwrap();
            assert_eq!(responses.message().await.unwrap().unwrap().ttl, 4);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let ttl = time_to_live(&lease, granted.id).await;
        assert_eq!(ttl.granted_ttl, 4);
        assert!(ttl.ttl >= 3, "{ttl:?}");
        assert_eq!(ttl.keys, vec![b"f/key".to_vec()]);
        granted.id
    });
    // The leader goes away 1 s after the last renewal; the new leader
    // must not expire the lease early (it gets its remaining TTL + an
    // election timeout), and must expire it eventually.
    let stopped_at = Instant::now();
    cluster.stop(leader);
    rt.block_on(async {
        let kv = KvClient::new(channel(&urls[other]).await);
        let lease = LeaseClient::new(channel(&urls[other]).await);
        let ttl = time_to_live(&lease, id).await;
        assert!(
            ttl.ttl >= 1,
            "lease shortened by the leader change: {ttl:?}"
        );
        while get(&kv, "f/key").await.is_some() {
            assert!(
                stopped_at.elapsed() < Duration::from_secs(15),
                "never expired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            stopped_at.elapsed() >= Duration::from_secs(2),
            "expired {:?} after the leader stopped",
            stopped_at.elapsed()
        );
    });
}

async fn lock_with(url: &str, name: &str, lease: i64) -> Result<lpb::LockResponse, tonic::Status> {
    let mut client = LockClient::new(channel(url).await);
    client
        .lock(lpb::LockRequest {
            name: name.into(),
            lease,
        })
        .await
        .map(|r| r.into_inner())
}

async fn guarded_put(kv: &KvClient<Channel>, lock_key: &[u8], token: i64, value: &str) -> bool {
    let mut kv = kv.clone();
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Create as i32,
            key: lock_key.to_vec(),
            range_end: Vec::new(),
            target_union: Some(pb::compare::TargetUnion::CreateRevision(token)),
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: b"resource".to_vec(),
                value: value.into(),
                ..Default::default()
            })),
        }],
        failure: Vec::new(),
    };
    kv.txn(txn).await.unwrap().into_inner().succeeded
}

/// Kleppmann's fencing example: the holder pauses past its lease, another
/// client takes the lock, and the old holder's guarded write is refused.
#[test]
fn lock_mutual_exclusion_and_fencing() {
    let cluster = Cluster::start(1, TOKEN, |_, _| {});
    let url = cluster.urls[0].clone();
    run(async move {
        let kv = KvClient::new(channel(&url).await);
        let lease = LeaseClient::new(channel(&url).await);
        let a = grant(&lease, 2).await.id;
        let b = grant(&lease, 30).await.id;
        let held = retry(|| lock_with(&url, "res-lock", a)).await;
        assert!(held.key.starts_with(b"res-lock/"));
        let token_a = get(&kv, std::str::from_utf8(&held.key).unwrap())
            .await
            .unwrap()
            .kvs[0]
            .create_revision;
        assert_eq!(token_a, held.header.unwrap().revision);
        assert!(guarded_put(&kv, &held.key, token_a, "from a").await);

        // B waits while A holds the lock.
        let url_b = url.clone();
        let waiter = tokio::spawn(async move { lock_with(&url_b, "res-lock", b).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiter.is_finished(), "two holders at once");

        // A "pauses" (no keep-alives): its lease expires, B gets the lock.
        let got = tokio::time::timeout(TIMEOUT, waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let token_b = get(&kv, std::str::from_utf8(&got.key).unwrap())
            .await
            .unwrap()
            .kvs[0]
            .create_revision;
        assert!(token_b > token_a, "fencing tokens increase");
        // A wakes up and writes with its old token: refused.
        assert!(!guarded_put(&kv, &held.key, token_a, "late a").await);
        assert!(guarded_put(&kv, &got.key, token_b, "from b").await);
        let value = get(&kv, "resource").await.unwrap().kvs[0].value.clone();
        assert_eq!(value, b"from b");

        // Unlock hands the lock to the next waiter.
        let c = grant(&lease, 30).await.id;
        let url_c = url.clone();
        let waiter = tokio::spawn(async move { lock_with(&url_c, "res-lock", c).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished());
        LockClient::new(channel(&url).await)
            .unlock(lpb::UnlockRequest {
                key: got.key.clone(),
            })
            .await
            .unwrap();
        let next = tokio::time::timeout(TIMEOUT, waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(next.key.ends_with(format!("{c:x}").as_bytes()));

        // A waiter whose lease dies while waiting gets an error, not the lock.
        let d = grant(&lease, 1).await.id;
        let url_d = url.clone();
        let doomed = tokio::spawn(async move { lock_with(&url_d, "res-lock", d).await });
        let result = tokio::time::timeout(TIMEOUT, doomed)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_err(), "{result:?}");
    });
}

async fn observed(stream: &mut tonic::Streaming<epb::LeaderResponse>) -> Vec<u8> {
    let response = tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .expect("an observation in time")
        .unwrap()
        .unwrap();
    response.kv.unwrap().value
}

#[test]
fn election_campaign_proclaim_observe_leader_resign() {
    let cluster = Cluster::start(1, TOKEN, |_, _| {});
    let url = cluster.urls[0].clone();
    run(async move {
        let lease = LeaseClient::new(channel(&url).await);
        let mut election = ElectionClient::new(channel(&url).await);
        let a = grant(&lease, 30).await.id;
        let b = grant(&lease, 30).await.id;
        let err = election
            .leader(epb::LeaderRequest {
                name: b"e".to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.message(), "election: no leader");
        let mut observe = election
            .observe(epb::LeaderRequest {
                name: b"e".to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        let leader_a = retry(|| {
            let mut e = election.clone();
            async move {
                e.campaign(epb::CampaignRequest {
                    name: b"e".to_vec(),
                    lease: a,
                    value: b"a".to_vec(),
                })
                .await
            }
        })
        .await
        .into_inner()
        .leader
        .unwrap();
        assert_eq!(observed(&mut observe).await, b"a");

        let mut e2 = election.clone();
        let campaign_b = tokio::spawn(async move {
            e2.campaign(epb::CampaignRequest {
                name: b"e".to_vec(),
                lease: b,
                value: b"b".to_vec(),
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!campaign_b.is_finished());
        election
            .proclaim(epb::ProclaimRequest {
                leader: Some(leader_a.clone()),
                value: b"a2".to_vec(),
            })
            .await
            .unwrap();
        assert_eq!(observed(&mut observe).await, b"a2");
        let current = election
            .leader(epb::LeaderRequest {
                name: b"e".to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(current.kv.unwrap().value, b"a2");
        election
            .resign(epb::ResignRequest {
                leader: Some(leader_a.clone()),
            })
            .await
            .unwrap();
        let leader_b = tokio::time::timeout(TIMEOUT, campaign_b)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .into_inner()
            .leader
            .unwrap();
        assert!(leader_b.rev > leader_a.rev);
        assert_eq!(observed(&mut observe).await, b"b");
        // The old leader key no longer proclaims.
        let err = election
            .proclaim(epb::ProclaimRequest {
                leader: Some(leader_a),
                value: b"stale".to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.message(), "election: not leader");
    });
}

/// Maintenance.Snapshot streamed from one cluster seeds a new three-member
/// cluster with `restore`: same keys, revision and leases; writes go on.
#[test]
fn snapshot_saved_from_one_cluster_restores_a_new_one() {
    use concord_etcd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    let source = Cluster::start(1, TOKEN, |_, _| {});
    let url = source.urls[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    let (revision, lease_id) = run({
        let file = file.clone();
        async move {
            let kv = KvClient::new(channel(&url).await);
            let lease = LeaseClient::new(channel(&url).await);
            let lease_id = grant(&lease, 600).await.id;
            for i in 0..50 {
                put(&kv, &format!("snap/{i}"), &"v".repeat(i), 0).await;
            }
            let revision = put(&kv, "snap/leased", "x", lease_id).await;
            let mut maintenance = MaintenanceClient::new(channel(&url).await);
            let mut stream = maintenance
                .snapshot(pb::SnapshotRequest {})
                .await
                .unwrap()
                .into_inner();
            let mut bytes = Vec::new();
            let mut first = true;
            while let Some(chunk) = stream.message().await.unwrap() {
                if first {
                    assert_eq!(chunk.header.unwrap().revision, revision);
                    first = false;
                }
                bytes.extend_from_slice(&chunk.blob);
                if chunk.remaining_bytes == 0 {
                    break;
                }
            }
            // etcdctl accepts only files shaped like etcd's: bbolt pages
            // plus a sha256 trailer.
            assert_eq!(bytes.len() % 512, 32);
            std::fs::write(&file, &bytes).unwrap();
            (revision, lease_id)
        }
    });
    drop(source);

    // A damaged snapshot is refused.
    let mut damaged = std::fs::read(&file).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, &damaged).unwrap();
    let mut config = NodeConfig::single_default();
    config.data_dir = dir.path().join("bad-member");
    assert!(concord_node::restore::restore(&config, &bad).is_err());

    let restored = Cluster::start(3, TOKEN, |config, _| {
        let r = concord_node::restore::restore(config, &file).expect("restore");
        assert_eq!(r.revision, revision);
    });
    let urls = restored.urls.clone();
    run(async move {
        let kv = KvClient::new(channel(&urls[2]).await);
        let got = get(&kv, "snap/49").await.expect("restored key");
        assert_eq!(got.kvs[0].value, "v".repeat(49).into_bytes());
        assert_eq!(got.header.unwrap().revision, revision);
        let lease = LeaseClient::new(channel(&urls[1]).await);
        let ttl = time_to_live(&lease, lease_id).await;
        assert_eq!(ttl.granted_ttl, 600);
        assert_eq!(ttl.keys, vec![b"snap/leased".to_vec()]);
        assert_eq!(put(&kv, "after", "restore", 0).await, revision + 1);
    });
}

/// Cluster.MemberUpdate replaces a member's peer URLs through Raft.
#[test]
fn member_update_replaces_peer_urls() {
    use concord_etcd_proto::etcdserverpb::cluster_client::ClusterClient;
    let cluster = Cluster::start(3, TOKEN, |_, _| {});
    // Sent to the leader, which proposes it; a follower would forward it
    // (tests/maintenance.rs covers that path).
    let url = cluster.urls[cluster.leader()].clone();
    run(async move {
        // A new leader takes membership changes only once an entry of its
        // term is committed ("unhealthy cluster" before): a put waits for it.
        put(&KvClient::new(channel(&url).await), "ready", "1", 0).await;
        let mut client = ClusterClient::new(channel(&url).await);
        let list = retry(|| {
            let mut c = client.clone();
            async move { c.member_list(pb::MemberListRequest::default()).await }
        })
        .await
        .into_inner();
        let target = list
            .members
            .iter()
            .find(|m| m.name == "n1")
            .unwrap()
            .clone();
        let other = list
            .members
            .iter()
            .find(|m| m.name == "n0")
            .unwrap()
            .clone();
        let mut urls = target.peer_ur_ls.clone();
        urls.push("http://127.0.0.1:1".into());
        let updated = retry(|| {
            let mut c = client.clone();
            let request = pb::MemberUpdateRequest {
                id: target.id,
                peer_ur_ls: urls.clone(),
            };
            async move { c.member_update(request).await }
        })
        .await
        .into_inner();
        let after = updated.members.iter().find(|m| m.id == target.id).unwrap();
        assert_eq!(after.peer_ur_ls, urls);
        let err = client
            .member_update(pb::MemberUpdateRequest {
                id: target.id,
                peer_ur_ls: other.peer_ur_ls.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.message(), "etcdserver: Peer URLs already exists");
        let err = client
            .member_update(pb::MemberUpdateRequest {
                id: 12345,
                peer_ur_ls: vec!["http://127.0.0.1:2".into()],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        // Still one healthy cluster.
        let kv = KvClient::new(channel(&url).await);
        put(&kv, "after-update", "v", 0).await;
    });
}
