//! The generated tonic clients talking to the generated tonic servers over
//! TCP on loopback (via the in-memory test server in `common`): unary,
//! server-streaming and bidi-streaming RPCs of every package, plus the
//! `grpc.health.v1.Health` service.

mod common;

use std::time::Duration;

use common::MiniEtcd;
use concord_etcd_proto::etcdserverpb::{
    self as pb, cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use concord_etcd_proto::health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use concord_etcd_proto::mvccpb::event::EventType;
use concord_etcd_proto::v3electionpb::{election_client::ElectionClient, CampaignRequest};
use concord_etcd_proto::v3lockpb::{lock_client::LockClient, LockRequest, UnlockRequest};
use tokio::time::timeout;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const T: Duration = Duration::from_secs(10);

async fn channel() -> Channel {
    let addr = MiniEtcd::default().serve().await;
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn kv_put_range_txn_delete() {
    let ch = channel().await;
    let mut kv = KvClient::new(ch);

    let put = kv
        .put(pb::PutRequest {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let h = put.header.unwrap();
    assert_eq!(h.cluster_id, common::CLUSTER_ID);
    assert_eq!(h.revision, 2, "first write of an empty store is revision 2");

    let got = kv
        .range(pb::RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.count, 1);
    assert_eq!(got.kvs[0].value, b"1");
    assert_eq!(got.kvs[0].create_revision, 2);

    // CAS: succeeds only if "a" still has mod_revision 2.
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key: b"a".to_vec(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(2)),
            range_end: Vec::new(),
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: b"a".to_vec(),
                value: b"2".to_vec(),
                prev_kv: true,
                ..Default::default()
            })),
        }],
        failure: Vec::new(),
    };
    let first = kv.txn(txn.clone()).await.unwrap().into_inner();
    assert!(first.succeeded);
    match &first.responses[0].response {
        Some(pb::response_op::Response::ResponsePut(p)) => {
            assert_eq!(p.prev_kv.as_ref().unwrap().value, b"1");
        }
        other => panic!("unexpected {other:?}"),
    }
    let second = kv.txn(txn).await.unwrap().into_inner();
    assert!(!second.succeeded, "stale CAS must fail");

    let del = kv
        .delete_range(pb::DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: vec![0],
            prev_kv: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(del.deleted, 1);
    assert_eq!(del.prev_kvs[0].value, b"2");

    let err = kv
        .compact(pb::CompactionRequest {
            revision: 1000,
            physical: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
}

#[tokio::test]
async fn watch_bidi_stream() {
    let ch = channel().await;
    let mut kv = KvClient::new(ch.clone());
    let mut watch = WatchClient::new(ch);

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"w/".to_vec(),
                range_end: b"w0".to_vec(),
                prev_kv: true,
                watch_id: 7,
                ..Default::default()
            },
        )),
    })
    .unwrap();
    let mut events = watch
        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = timeout(T, events.next()).await.unwrap().unwrap().unwrap();
    assert!(created.created);
    assert_eq!(created.watch_id, 7);

    kv.put(pb::PutRequest {
        key: b"w/x".to_vec(),
        value: b"1".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ev = timeout(T, events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ev.watch_id, 7);
    assert_eq!(ev.events[0].r#type, EventType::Put as i32);
    assert_eq!(ev.events[0].kv.as_ref().unwrap().key, b"w/x");

    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    })
    .unwrap();
    let progress = timeout(T, events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(progress.watch_id, -1);
    assert_eq!(progress.header.unwrap().revision, 2);

    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: 7 },
        )),
    })
    .unwrap();
    let canceled = timeout(T, events.next()).await.unwrap().unwrap().unwrap();
    assert!(canceled.canceled);
}

#[tokio::test]
async fn lease_keepalive_and_server_streams() {
    let ch = channel().await;
    let mut lease = LeaseClient::new(ch.clone());
    let grant = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 5, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(grant.id != 0);
    let reqs = tokio_stream::iter(vec![pb::LeaseKeepAliveRequest { id: grant.id }]);
    let mut resps = lease.lease_keep_alive(reqs).await.unwrap().into_inner();
    let ka = timeout(T, resps.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((ka.id, ka.ttl), (grant.id, 5));

    // Maintenance.Snapshot: server streaming.
    let mut maint = MaintenanceClient::new(ch.clone());
    let mut snap = maint
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut blob = Vec::new();
    while let Some(chunk) = timeout(T, snap.next()).await.unwrap() {
        blob.extend(chunk.unwrap().blob);
    }
    assert_eq!(blob, b"snapshot");

    let members = ClusterClient::new(ch)
        .member_list(pb::MemberListRequest {})
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members[0].id, common::MEMBER_ID);
    assert_eq!(members[0].peer_ur_ls, ["http://127.0.0.1:2380"]);
}

#[tokio::test]
async fn lock_election_and_health() {
    let ch = channel().await;
    let mut lock = LockClient::new(ch.clone());
    let held = lock
        .lock(LockRequest {
            name: b"mtx".to_vec(),
            lease: 0x2a,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.key, b"mtx/2a");
    lock.unlock(UnlockRequest { key: held.key }).await.unwrap();

    let mut election = ElectionClient::new(ch.clone());
    let won = election
        .campaign(CampaignRequest {
            name: b"el".to_vec(),
            lease: 1,
            value: b"me".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let leader = won.leader.unwrap();
    assert_eq!(leader.key, b"el/1");
    assert_eq!(leader.rev, won.header.unwrap().revision);

    let mut health = HealthClient::new(ch);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, ServingStatus::Serving as i32);
    assert_eq!(
        concord_etcd_proto::health::pb::health_server::SERVICE_NAME,
        concord_etcd_proto::service_names::HEALTH
    );
}
