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
use concord_node::node::{start, RunningNode};
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const TIMEOUT: Duration = Duration::from_secs(20);

struct Cluster {
    nodes: Vec<Option<RunningNode>>,
    configs: Vec<NodeConfig>,
    _dirs: Vec<tempfile::TempDir>,
    urls: Vec<String>,
}

/// A free loopback port from below the ephemeral range (10000-32767), so
/// that no client connection of this or another test takes it between the
/// pick and the member's bind; never the same port twice in this process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()).wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + ((seed + n * 104_729) % 22_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Starts `size` members; `tweak` adjusts every member's configuration.
    fn start(size: usize, tweak: impl Fn(&mut NodeConfig)) -> Cluster {
        let peers: Vec<String> = (0..size)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let clients: Vec<String> = (0..size)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let initial: Vec<(String, String)> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("n{i}"), p.clone()))
            .collect();
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        let mut configs = Vec::new();
        for i in 0..size {
            let dir = tempfile::tempdir().unwrap();
            let mut c = NodeConfig::single_default();
            c.name = format!("n{i}");
            c.data_dir = dir.path().to_path_buf();
            c.listen_client_urls = vec![clients[i].clone()];
            c.advertise_client_urls = vec![clients[i].clone()];
            c.listen_peer_urls = vec![peers[i].clone()];
            c.initial_advertise_peer_urls = vec![peers[i].clone()];
            c.initial_cluster = initial.clone();
            c.initial_cluster_token = "maintenance-test".into();
            c.heartbeat_interval_ms = 20;
            c.election_timeout_ms = 200;
            tweak(&mut c);
            nodes.push(Some(start(c.clone()).expect("member starts")));
            configs.push(c);
            dirs.push(dir);
        }
        Cluster {
            nodes,
            configs,
            _dirs: dirs,
            urls: clients,
        }
    }

    fn leader(&self) -> usize {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(node) = node {
                    if node.shared.leader() == Some(node.shared.member_id) {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader elected");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A member that follows a known leader.
    fn follower(&self) -> usize {
        let leader = self.leader();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(node) = node {
                    if i != leader
                        && node
                            .shared
                            .leader()
                            .is_some_and(|l| l != node.shared.member_id)
                    {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no follower knows the leader");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().unwrap();
        }
    }

    fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none());
        self.nodes[i] = Some(start(self.configs[i].clone()).expect("member restarts"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

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
#[test]
fn membership_changes_sent_to_a_follower_are_forwarded() {
    let cluster = Cluster::start(3, |_| {});
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

        retry(|| {
            let mut c = client.clone();
            async move {
                c.member_promote(pb::MemberPromoteRequest { id: new.id })
                    .await
            }
        })
        .await;
        let listed = member_list(&client).await;
        assert!(listed.iter().any(|m| m.id == new.id && !m.is_learner));

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
    let mut cluster = Cluster::start(3, |_| {});
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
    let mut cluster = Cluster::start(3, |_| {});
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
    let cluster = Cluster::start(3, |c| c.quota_backend_bytes = QUOTA);
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
