//! Cluster and Maintenance calls through the real `etcd-client` crate on a
//! 3-member cluster of real processes, sent to a follower: MemberList,
//! MemberAdd (as learner), MemberUpdate, MemberRemove, Status, HashKV (equal
//! on every member at one revision), Alarm GET, Defragment, and Snapshot
//! (streamed; etcd's sha256 trailer checked).
//!
//! MemberPromote of a started learner and the NOSPACE alarm cycle are tested
//! with etcdctl in `etcdctl_coord.rs` and in-process in
//! `crates/node/tests/maintenance.rs`.

mod support;

use concord_node::sha256::Sha256;
use etcd_client::{AlarmAction, AlarmType, Client, MemberAddOptions};
use support::{assert_grpc_error, free_ports, Cluster};

async fn peer_urls_of(client: &mut Client, id: u64) -> Option<Vec<String>> {
    let list = client.member_list().await.expect("member list");
    list.members()
        .iter()
        .find(|m| m.id() == id)
        .map(|m| m.peer_urls().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_maintenance_calls_through_a_follower() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let mut client = cluster.client(follower).await;
    let mut revision = 0;
    for i in 0..50 {
        let put = client.put(format!("k{i}"), "v", None).await.expect("put");
        revision = put.header().expect("header").revision();
    }

    // Membership: a learner that is never started is added, renamed and
    // removed again; the cluster keeps its quorum throughout.
    assert_eq!(client.member_list().await.unwrap().members().len(), 3);
    let ports = free_ports(2);
    let first = format!("http://127.0.0.1:{}", ports[0]);
    let second = format!("http://127.0.0.1:{}", ports[1]);
    let added = client
        .member_add(
            [first.as_str()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .expect("member add");
    let member = added.member().expect("added member");
    assert!(member.is_learner());
    assert_eq!(member.peer_urls(), std::slice::from_ref(&first));
    let id = member.id();
    assert_eq!(client.member_list().await.unwrap().members().len(), 4);
    assert_eq!(
        peer_urls_of(&mut client, id).await,
        Some(vec![first.clone()])
    );
    assert_grpc_error(
        client.member_add([first.as_str()], None).await,
        "FailedPrecondition",
        "etcdserver: Peer URLs already exists",
    );
    client
        .member_update(id, vec![second.clone()])
        .await
        .expect("member update");
    assert_eq!(peer_urls_of(&mut client, id).await, Some(vec![second]));
    client.member_remove(id).await.expect("member remove");
    assert_eq!(peer_urls_of(&mut client, id).await, None);
    assert_eq!(client.member_list().await.unwrap().members().len(), 3);
    assert_grpc_error(
        client.member_remove(id).await,
        "NotFound",
        "etcdserver: member not found",
    );

    // Status and HashKV: every member agrees on the store at `revision`.
    let status = client.status().await.expect("status");
    assert_ne!(status.leader(), 0);
    assert!(status.db_size() > 0);
    let mut hashes = Vec::new();
    for i in 0..3 {
        let mut member = cluster.client(i).await;
        // A linearizable read first: the member has applied `revision`.
        member.get("k0", None).await.expect("barrier read");
        let hash = member.hash_kv(revision).await.expect("hash kv");
        hashes.push(hash.hash());
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    assert_grpc_error(
        client.hash_kv(revision + 1_000).await,
        "OutOfRange",
        "etcdserver: mvcc: required revision is a future revision",
    );

    // Alarms: none raised; Defragment answers.
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .expect("alarm get");
    assert!(alarms.alarms().is_empty());
    client.defragment().await.expect("defragment");

    // Snapshot: the blobs end with the sha256 of everything before them.
    let mut stream = client.snapshot().await.expect("snapshot");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.expect("snapshot chunk") {
        bytes.extend_from_slice(chunk.blob());
    }
    assert!(bytes.len() > 32, "snapshot of {} bytes", bytes.len());
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    let mut sha = Sha256::default();
    sha.update(body);
    assert_eq!(sha.finish().as_slice(), trailer, "sha256 trailer");
}
