//! Cluster and Maintenance services of in-process members on loopback,
//! through the generated tonic clients: membership changes sent to a
//! follower (forwarded to the leader), and the NOSPACE alarm of the space
//! quota (raise, refuse writes, serve reads, compact + defragment + disarm).

use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::cluster_client::ClusterClient;
use concord_etcd_proto::etcdserverpb::kv_client::KvClient;
use concord_etcd_proto::etcdserverpb::lease_client::LeaseClient;
use concord_etcd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use concord_node::config::NodeConfig;
mod support;

use concord_node::node::{start, RunningNode};
use std::future::Future;
use std::time::{Duration, Instant};
use support::{free_port, run, Cluster, TIMEOUT};
use tonic::transport::Channel;

const TOKEN: &str = "maintenance-test";

const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
const REMOVED: &str = "the member has been permanently removed from the cluster";

fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .unwrap()
        .connect_lazy()
}

/// Retries `f` while the member answers Unavailable (no leader yet).
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

async fn member_list(client: &ClusterClient<Channel>) -> Vec<pb::Member> {
    retry(|| {
        let mut c = client.clone();
        async move { c.member_list(pb::MemberListRequest::default()).await }
    })
    .await
    .into_inner()
    .members
}

/// MemberAdd, MemberUpdate, MemberPromote and MemberRemove sent to a
/// follower take effect (the follower forwards them to the leader), and the
/// follower's own MemberList shows each change as soon as the call returns.
/// (The learner never starts, so the leader refuses to promote it.)
#[test]
fn membership_changes_sent_to_a_follower_are_forwarded() {
    let cluster = Cluster::start(3, TOKEN, |_, _| {});
    let follower = cluster.follower();
    let url = cluster.urls[follower].clone();
    let follower_id = cluster.nodes[follower].as_ref().unwrap().shared.member_id;
    run(async move {
        let client = ClusterClient::new(channel(&url));
        let before = member_list(&client).await;
        assert_eq!(before.len(), 3);

        // A learner that never starts: harmless to quorum.
        let learner_url = format!("http://127.0.0.1:{}", free_port());
        let added = retry(|| {
            let mut c = client.clone();
            let request = pb::MemberAddRequest {
                peer_ur_ls: vec![learner_url.clone()],
                is_learner: true,
            };
            async move { c.member_add(request).await }
        })
        .await
        .into_inner();
        let new = added.member.expect("the added member");
        assert!(new.is_learner);
        assert_eq!(new.peer_ur_ls, vec![learner_url.clone()]);
        assert_eq!(added.members.len(), 4);
        let listed = member_list(&client).await;
        assert!(
            listed.iter().any(|m| m.id == new.id && m.is_learner),
            "the follower's list lacks the learner right after MemberAdd: {listed:?}"
        );

        // Errors still come from the leader's checks, unchanged.
        let err = client
            .clone()
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec![learner_url.clone()],
                is_learner: true,
            })
            .await
            .unwrap_err();
        assert_eq!(err.message(), "etcdserver: Peer URLs already exists");

        let moved = format!("http://127.0.0.1:{}", free_port());
        retry(|| {
            let mut c = client.clone();
            let request = pb::MemberUpdateRequest {
                id: new.id,
                peer_ur_ls: vec![moved.clone()],
            };
            async move { c.member_update(request).await }
        })
        .await;
        let listed = member_list(&client).await;
        let m = listed.iter().find(|m| m.id == new.id).unwrap();
        assert_eq!(m.peer_ur_ls, vec![moved.clone()]);

        let err = client
            .clone()
            .member_promote(pb::MemberPromoteRequest { id: new.id })
            .await
            .unwrap_err();
        assert_eq!(err.message(), LEARNER_NOT_READY, "{err:?}");
        let listed = member_list(&client).await;
        assert!(listed.iter().any(|m| m.id == new.id && m.is_learner));

        retry(|| {
            let mut c = client.clone();
            async move {
                c.member_remove(pb::MemberRemoveRequest { id: new.id })
                    .await
            }
        })
        .await;
        let listed = member_list(&client).await;
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert!(listed.iter().any(|m| m.id == follower_id));

        // The cluster still writes.
        let mut kv = KvClient::new(channel(&url));
        kv.put(pb::PutRequest {
            key: b"after".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    });
}

/// A member without a leader answers a membership change with etcd's
/// "no leader" once its request timeout passes, instead of hanging.
#[test]
fn membership_change_without_a_leader_fails_in_bounded_time() {
    let mut cluster = Cluster::start(3, TOKEN, |_, _| {});
    let leader = cluster.leader();
    let lonely = (leader + 1) % 3;
    let url = cluster.urls[lonely].clone();
    for i in 0..3 {
        if i != lonely {
            cluster.stop(i);
        }
    }
    let timeout = cluster.nodes[lonely]
        .as_ref()
        .unwrap()
        .shared
        .request_timeout;
    run(async move {
        let mut client = ClusterClient::new(channel(&url));
        let started = Instant::now();
        let err = client
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec![format!("http://127.0.0.1:{}", free_port())],
                is_learner: true,
            })
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(
            err.message() == "etcdserver: no leader"
                || err.message() == "etcdserver: request timed out",
            "{err:?}"
        );
        assert!(took < timeout + Duration::from_secs(3), "took {took:?}");
    });
}

const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

fn put_request(key: &str, value_bytes: usize) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: vec![b'x'; value_bytes],
        ..Default::default()
    }
}

fn nospace(member_id: u64) -> pb::AlarmMember {
    pb::AlarmMember {
        member_id,
        alarm: pb::AlarmType::Nospace as i32,
    }
}

async fn alarm(
    client: &MaintenanceClient<Channel>,
    action: pb::alarm_request::AlarmAction,
    member_id: u64,
    kind: pb::AlarmType,
) -> Vec<pb::AlarmMember> {
    retry(|| {
        let mut c = client.clone();
        let request = pb::AlarmRequest {
            action: action as i32,
            member_id,
            alarm: kind as i32,
        };
        async move { c.alarm(request).await }
    })
    .await
    .into_inner()
    .alarms
}

fn assert_no_space<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    let status = result.expect_err("refused while out of space");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::ResourceExhausted, NO_SPACE),
        "{status:?}"
    );
}

/// Alarm ACTIVATE/DEACTIVATE/GET through a follower, with etcd's answers;
/// while NOSPACE is active, puts, txns with puts and lease grants are
/// refused everywhere and reads, deletes, read-only txns and compaction
/// are served; the alarm survives a restart; disarming lets writes in.
#[test]
fn alarms_replicate_gate_writes_and_survive_restart() {
    let mut cluster = Cluster::start(3, TOKEN, |_, _| {});
    let follower = cluster.follower();
    let urls = cluster.urls.clone();
    let target = cluster.nodes[follower].as_ref().unwrap().shared.member_id;
    use pb::alarm_request::AlarmAction::{Activate, Deactivate, Get};
    run(async {
        let maintenance = MaintenanceClient::new(channel(&urls[follower]));
        assert!(alarm(&maintenance, Get, 0, pb::AlarmType::None)
            .await
            .is_empty());
        assert_eq!(
            alarm(&maintenance, Activate, target, pb::AlarmType::Nospace).await,
            vec![nospace(target)]
        );
        for url in &urls {
            let m = MaintenanceClient::new(channel(url));
            assert_eq!(
                alarm(&m, Get, 0, pb::AlarmType::None).await,
                vec![nospace(target)]
            );
            assert!(alarm(&m, Get, 0, pb::AlarmType::Corrupt).await.is_empty());
            let status = m
                .clone()
                .status(pb::StatusRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                status.errors,
                vec![format!("memberID:{target} alarm:NOSPACE ")]
            );
        }
        for url in &urls {
            let mut kv = KvClient::new(channel(url));
            // The alarm has applied on every member (GET above was linearizable
            // and every member answered it), so every member refuses.
            assert_no_space(kv.put(put_request("k", 10)).await);
            assert_no_space(
                kv.txn(pb::TxnRequest {
                    success: vec![pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(put_request("k", 1))),
                    }],
                    ..Default::default()
                })
                .await,
            );
            assert_no_space(
                LeaseClient::new(channel(url))
                    .lease_grant(pb::LeaseGrantRequest { ttl: 10, id: 0 })
                    .await,
            );
            kv.range(pb::RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
            .expect("reads are served");
            kv.delete_range(pb::DeleteRangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
            .expect("deletes are served");
            kv.txn(pb::TxnRequest {
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestDeleteRange(
                        pb::DeleteRangeRequest {
                            key: b"k".to_vec(),
                            ..Default::default()
                        },
                    )),
                }],
                ..Default::default()
            })
            .await
            .expect("txns without puts are served");
        }
    });
    // The alarm is durable: a restarted member still refuses.
    let other = (follower + 1) % 3;
    cluster.stop(other);
    cluster.restart(other);
    run(async {
        let maintenance = MaintenanceClient::new(channel(&urls[other]));
        assert_eq!(
            alarm(&maintenance, Get, 0, pb::AlarmType::None).await,
            vec![nospace(target)]
        );
        let mut kv = KvClient::new(channel(&urls[other]));
        assert_no_space(kv.put(put_request("k", 10)).await);
        // Disarm (etcdctl alarm disarm: DEACTIVATE of each listed alarm).
        assert_eq!(
            alarm(&maintenance, Deactivate, target, pb::AlarmType::Nospace).await,
            vec![nospace(target)]
        );
        assert!(
            alarm(&maintenance, Deactivate, target, pb::AlarmType::Nospace)
                .await
                .is_empty()
        );
        assert!(alarm(&maintenance, Get, 0, pb::AlarmType::None)
            .await
            .is_empty());
        retry(|| {
            let mut kv = kv.clone();
            async move { kv.put(put_request("k", 10)).await }
        })
        .await;
    });
}

/// A small `--quota-backend-bytes`: puts go on until a member's backend
/// passes the quota, then that member raises NOSPACE through Raft and
/// writes are refused (bounded: the loop must end in a refusal), while
/// reads are still served; delete + compact + defragment bring every
/// member under the quota, and after `alarm disarm` writes are accepted
/// and stay accepted.
#[test]
fn space_quota_raises_nospace_and_refuses_writes() {
    const QUOTA: u64 = 4 * 1024 * 1024;
    let cluster = Cluster::start(3, TOKEN, |c, _| c.quota_backend_bytes = QUOTA);
    let leader = cluster.leader();
    let url = cluster.urls[leader].clone();
    let urls = cluster.urls.clone();
    use pb::alarm_request::AlarmAction::{Deactivate, Get};
    run(async move {
        let mut kv = KvClient::new(channel(&url));
        let maintenance = MaintenanceClient::new(channel(&url));
        let before = maintenance
            .clone()
            .status(pb::StatusRequest {})
            .await
            .unwrap();
        assert!(before.into_inner().errors.is_empty());
        let mut accepted = 0;
        let refused = loop {
            assert!(
                accepted < 2_000,
                "no refusal after {accepted} puts of 64 KiB"
            );
            match kv
                .put(put_request(&format!("big/{accepted}"), 64 * 1024))
                .await
            {
                Ok(_) => accepted += 1,
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(30)).await
                }
                Err(status) => break status,
            }
        };
        assert_eq!(
            (refused.code(), refused.message()),
            (tonic::Code::ResourceExhausted, NO_SPACE),
            "after {accepted} puts"
        );
        let status = maintenance
            .clone()
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(status.db_size as u64 > QUOTA, "{status:?}");
        assert!(
            status.errors.iter().any(|e| e.ends_with(" alarm:NOSPACE ")),
            "{status:?}"
        );
        let alarms = alarm(
            &maintenance,
            pb::alarm_request::AlarmAction::Get,
            0,
            pb::AlarmType::Nospace,
        )
        .await;
        assert!(!alarms.is_empty());
        let read = kv
            .range(pb::RangeRequest {
                key: b"big/0".to_vec(),
                ..Default::default()
            })
            .await
            .expect("reads are served")
            .into_inner();
        assert_eq!(read.kvs.len(), 1);

        // etcd's way out: delete, compact, defragment every member, disarm.
        let deleted = kv
            .delete_range(pb::DeleteRangeRequest {
                key: b"big/".to_vec(),
                range_end: b"big0".to_vec(),
                ..Default::default()
            })
            .await
            .expect("deletes are served")
            .into_inner();
        assert_eq!(deleted.deleted, accepted as i64);
        let revision = deleted.header.unwrap().revision;
        kv.compact(pb::CompactionRequest {
            revision,
            physical: true,
        })
        .await
        .expect("compaction is served");
        for url in &urls {
            // A linearizable read first: the member has applied the delete
            // and the compaction before it defragments.
            KvClient::new(channel(url))
                .range(pb::RangeRequest {
                    key: b"big/0".to_vec(),
                    ..Default::default()
                })
                .await
                .expect("read barrier");
            let mut m = MaintenanceClient::new(channel(url));
            m.defragment(pb::DefragmentRequest {})
                .await
                .expect("defragment");
            let status = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
            assert!(
                (status.db_size as u64) < QUOTA,
                "{url}: {} bytes after defragment",
                status.db_size
            );
        }
        for a in alarm(&maintenance, Get, 0, pb::AlarmType::None).await {
            let pb_kind = pb::AlarmType::try_from(a.alarm).unwrap();
            assert_eq!(
                alarm(&maintenance, Deactivate, a.member_id, pb_kind).await,
                vec![a]
            );
        }
        assert!(alarm(&maintenance, Get, 0, pb::AlarmType::None)
            .await
            .is_empty());
        kv.put(put_request("after", 10))
            .await
            .expect("writes accepted again");
        // Below the quota now: the alarm is not raised again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        kv.put(put_request("after", 10))
            .await
            .expect("still accepted");
        assert!(alarm(&maintenance, Get, 0, pb::AlarmType::None)
            .await
            .is_empty());
    });
}

impl Cluster {
    /// The configuration of a new member `name` that joins this cluster
    /// (`--initial-cluster-state existing`) at fresh ports and an empty
    /// data directory (kept alive by the cluster).
    fn joiner(&mut self, name: &str, peer_url: Option<String>) -> NodeConfig {
        let peer = peer_url.unwrap_or_else(|| format!("http://127.0.0.1:{}", free_port()));
        let client = format!("http://127.0.0.1:{}", free_port());
        let dir = tempfile::tempdir().unwrap();
        let mut c = self.configs[0].clone();
        c.name = name.to_string();
        c.data_dir = dir.path().to_path_buf();
        c.listen_client_urls = vec![client.clone()];
        c.advertise_client_urls = vec![client];
        c.listen_peer_urls = vec![peer.clone()];
        c.initial_advertise_peer_urls = vec![peer.clone()];
        c.initial_cluster.retain(|(n, _)| n != name);
        c.initial_cluster.push((name.to_string(), peer));
        c.initial_cluster_state = concord_node::config::ClusterState::Existing;
        self.dirs.push(dir);
        c
    }

    /// Takes member `i` out of the cluster's care (it may stop on its own).
    fn take(&mut self, i: usize) -> RunningNode {
        self.nodes[i].take().expect("running")
    }

    fn leader_node(&self) -> &RunningNode {
        self.nodes[self.leader()].as_ref().unwrap()
    }
}

/// Waits until `node` has applied what the leader had committed when asked.
fn wait_caught_up(cluster: &Cluster, node: &RunningNode) {
    use std::sync::atomic::Ordering;
    let target = cluster
        .leader_node()
        .shared
        .commit_index
        .load(Ordering::Acquire);
    let deadline = Instant::now() + TIMEOUT;
    while node.shared.applied_index.load(Ordering::Acquire) < target {
        assert!(Instant::now() < deadline, "the member did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn put_keys(url: &str, prefix: &str, count: usize) {
    let kv = KvClient::new(channel(url));
    for i in 0..count {
        retry(|| {
            let mut kv = kv.clone();
            let request = pb::PutRequest {
                key: format!("{prefix}/{i}").into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            };
            async move { kv.put(request).await }
        })
        .await;
    }
}

async fn member_add(url: &str, peer_url: &str, is_learner: bool) -> pb::Member {
    let client = ClusterClient::new(channel(url));
    retry(|| {
        let mut c = client.clone();
        let request = pb::MemberAddRequest {
            peer_ur_ls: vec![peer_url.to_string()],
            is_learner,
        };
        async move { c.member_add(request).await }
    })
    .await
    .into_inner()
    .member
    .expect("the added member")
}

async fn member_remove(url: &str, id: u64) {
    let client = ClusterClient::new(channel(url));
    retry(|| {
        let mut c = client.clone();
        async move { c.member_remove(pb::MemberRemoveRequest { id }).await }
    })
    .await;
}

/// Starts a removed member and returns why it stopped (at start, or
/// once its peers refused it).
fn start_removed(config: NodeConfig) -> String {
    match start(config) {
        Ok(node) => node.wait().unwrap_err().to_string(),
        Err(e) => e.to_string(),
    }
}

async fn promote(url: &str, id: u64) -> Result<Vec<pb::Member>, tonic::Status> {
    let mut client = ClusterClient::new(channel(url));
    let answer = client
        .member_promote(pb::MemberPromoteRequest { id })
        .await?;
    Ok(answer.into_inner().members)
}

/// The member-id reuse bug: a member removed and added back with the same
/// peer URL gets a new id (ids of added members are fresh, not derived
/// from the URL), learns it from the cluster when it starts empty with
/// `--initial-cluster-state existing`, persists it across a restart, and
/// catches up.
#[test]
fn readded_member_gets_a_new_id_and_catches_up() {
    let mut cluster = Cluster::start(3, TOKEN, |_, _| {});
    let leader = cluster.leader();
    let victim = (leader + 1) % 3;
    let old_id = cluster.nodes[victim].as_ref().unwrap().shared.member_id;
    let peer_url = cluster.configs[victim].initial_advertise_peer_urls[0].clone();
    let leader_url = cluster.urls[leader].clone();
    run(put_keys(&leader_url, "before", 20));

    // Removed while running: refused by its peers (or having applied its
    // own removal), it stops.
    let removed = cluster.take(victim);
    run(member_remove(&leader_url, old_id));
    let stopped = removed.wait();
    assert_eq!(stopped.unwrap_err().to_string(), REMOVED);
    // With its old data it does not rejoin: refused at start if it applied
    // its removal, else told by its peers.
    assert_eq!(start_removed(cluster.configs[victim].clone()), REMOVED);

    let added = run(member_add(&leader_url, &peer_url, false));
    assert_ne!(added.id, old_id, "a re-added peer URL must get a new id");
    run(put_keys(&leader_url, "after", 20));

    let name = cluster.configs[victim].name.clone();
    let config = cluster.joiner(&name, Some(peer_url));
    let joined = start(config.clone()).expect("the re-added member starts");
    assert_eq!(joined.shared.member_id, added.id);
    wait_caught_up(&cluster, &joined);
    let client = joined.client_addrs[0];
    joined.shutdown().unwrap();
    // The learned id lives in the data directory: a restart keeps it.
    let joined = start(config).expect("restarts");
    assert_eq!(joined.shared.member_id, added.id);
    wait_caught_up(&cluster, &joined);
    run(async move {
        let mut kv = KvClient::new(channel(&format!("http://{client}")));
        let got = kv
            .range(pb::RangeRequest {
                key: b"after/19".to_vec(),
                serializable: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.kvs.len(), 1, "the re-added member has the data");
        let listed = member_list(&ClusterClient::new(channel(&leader_url))).await;
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|m| m.id != old_id));
    });
    joined.shutdown().unwrap();
}

/// A member removed while it was down, restarted with its old data
/// directory, is told by its peers that it was removed and stops with
/// etcd's message, without disturbing the leader; restarted once more it
/// refuses to start at all (it applied its removal meanwhile, or not: either
/// way it stops). The others keep serving.
#[test]
fn removed_member_restarted_with_old_data_is_refused() {
    let mut cluster = Cluster::start(3, TOKEN, |_, _| {});
    let leader = cluster.leader();
    let victim = (leader + 1) % 3;
    let old_id = cluster.nodes[victim].as_ref().unwrap().shared.member_id;
    let leader_url = cluster.urls[leader].clone();
    cluster.stop(victim);
    run(member_remove(&leader_url, old_id));
    let term_before = cluster
        .leader_node()
        .shared
        .term
        .load(std::sync::atomic::Ordering::Acquire);

    let config = cluster.configs[victim].clone();
    let started = Instant::now();
    assert_eq!(start_removed(config.clone()), REMOVED);
    assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
    // Started again: refused at once or told again by its peers.
    assert_eq!(start_removed(config), REMOVED);

    assert_eq!(cluster.leader(), leader, "the leader kept its place");
    let term_after = cluster
        .leader_node()
        .shared
        .term
        .load(std::sync::atomic::Ordering::Acquire);
    assert_eq!(term_before, term_after, "no election was forced");
    run(put_keys(&leader_url, "still", 5));
    let listed = run(async move { member_list(&ClusterClient::new(channel(&leader_url))).await });
    assert_eq!(listed.len(), 2);
}

/// MemberPromote of a learner that is behind is refused with etcd's
/// message, and accepted once it caught up. A member started with
/// `--initial-cluster-state existing` before MemberAdd is refused with a
/// clear error.
#[test]
fn promote_waits_for_the_learner_to_catch_up() {
    let mut cluster = Cluster::start(3, TOKEN, |_, _| {});
    let follower = cluster.follower();
    let url = cluster.urls[follower].clone();
    run(put_keys(&url, "k", 50));
    let config = cluster.joiner("learner", None);
    let err = start(config.clone()).err().expect("not added yet");
    assert!(err.to_string().contains("add it first"), "{err}");
    std::fs::remove_dir_all(config.data_dir.join("member")).unwrap();

    let peer_url = config.initial_advertise_peer_urls[0].clone();
    let learner = run(member_add(&url, &peer_url, true));
    assert!(learner.is_learner);
    // Not started: far behind (sent to a follower, refused by the leader).
    let err = run(promote(&url, learner.id)).unwrap_err();
    assert_eq!(err.message(), LEARNER_NOT_READY, "{err:?}");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let node = start(config).expect("the learner starts");
    assert_eq!(node.shared.member_id, learner.id);
    wait_caught_up(&cluster, &node);
    let deadline = Instant::now() + TIMEOUT;
    run(async move {
        loop {
            match promote(&url, learner.id).await {
                Ok(members) => {
                    assert!(members.iter().any(|m| m.id == learner.id && !m.is_learner));
                    break;
                }
                // The leader hears of the learner's progress a heartbeat later.
                Err(e) if e.message() == LEARNER_NOT_READY && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("promote failed: {e:?}"),
            }
        }
    });
    node.shutdown().unwrap();
}

/// The server-side recipes write through Txn puts: while NOSPACE is active
/// Lock and Campaign (enqueue) and Proclaim are refused with etcd's error,
/// while Unlock and Resign (deletes) are served, so a full cluster can
/// still release its locks and leaders; after disarming, Lock works again.
#[test]
fn lock_and_election_writes_are_refused_under_nospace() {
    use concord_etcd_proto::v3electionpb as epb;
    use concord_etcd_proto::v3electionpb::election_client::ElectionClient;
    use concord_etcd_proto::v3lockpb as lpb;
    use concord_etcd_proto::v3lockpb::lock_client::LockClient;
    use pb::alarm_request::AlarmAction::{Activate, Deactivate};
    let cluster = Cluster::start(1, TOKEN, |_, _| {});
    let url = cluster.urls[cluster.leader()].clone();
    let target = cluster.nodes[0].as_ref().unwrap().shared.member_id;
    run(async {
        let leases = LeaseClient::new(channel(&url));
        let grant = || {
            let mut leases = leases.clone();
            async move {
                leases
                    .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
                    .await
                    .expect("lease grant")
                    .into_inner()
                    .id
            }
        };
        let (held, leading, other) = (grant().await, grant().await, grant().await);
        let mut lock = LockClient::new(channel(&url));
        let mut election = ElectionClient::new(channel(&url));
        let lock_key = lock
            .lock(lpb::LockRequest {
                name: b"l".to_vec(),
                lease: held,
            })
            .await
            .expect("lock before the alarm")
            .into_inner()
            .key;
        let leader = election
            .campaign(epb::CampaignRequest {
                name: b"e".to_vec(),
                lease: leading,
                value: b"v1".to_vec(),
            })
            .await
            .expect("campaign before the alarm")
            .into_inner()
            .leader;

        let maintenance = MaintenanceClient::new(channel(&url));
        alarm(&maintenance, Activate, target, pb::AlarmType::Nospace).await;
        assert_no_space(
            lock.lock(lpb::LockRequest {
                name: b"l2".to_vec(),
                lease: other,
            })
            .await,
        );
        assert_no_space(
            election
                .campaign(epb::CampaignRequest {
                    name: b"e2".to_vec(),
                    lease: other,
                    value: b"v".to_vec(),
                })
                .await,
        );
        assert_no_space(
            election
                .proclaim(epb::ProclaimRequest {
                    leader: leader.clone(),
                    value: b"v2".to_vec(),
                })
                .await,
        );
        // Nothing was written by the refused calls.
        let mut kv = KvClient::new(channel(&url));
        let queued = kv
            .range(pb::RangeRequest {
                key: b"l2/".to_vec(),
                range_end: b"l20".to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(queued.count, 0, "{queued:?}");
        election
            .resign(epb::ResignRequest { leader })
            .await
            .expect("resign (a delete) is served");
        lock.unlock(lpb::UnlockRequest { key: lock_key })
            .await
            .expect("unlock (a delete) is served");

        alarm(&maintenance, Deactivate, target, pb::AlarmType::Nospace).await;
        lock.lock(lpb::LockRequest {
            name: b"l2".to_vec(),
            lease: other,
        })
        .await
        .expect("lock after disarming");
    });
}
