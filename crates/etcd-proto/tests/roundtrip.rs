//! Encode/decode round trips of every request type of every service, plus
//! consistency of `FILE_DESCRIPTOR_SET`, `GATEWAY_ROUTES` and the generated
//! code (every RPC input type is covered here; every route names a real RPC).

use std::collections::BTreeSet;
use std::fmt::Debug;

use concord_etcd_proto::etcdserverpb::{self as pb, alarm_request, compare, request_op};
use concord_etcd_proto::{authpb, v3electionpb as epb, v3lockpb as lpb};
use concord_etcd_proto::{service_names, FILE_DESCRIPTOR_SET, GATEWAY_ROUTES};
use prost::{Message, Name};
use prost_types::FileDescriptorSet;

/// Round-trips `m` and returns its fully qualified protobuf name.
fn rt<M: Message + Name + Default + PartialEq + Debug>(m: M) -> String {
    let bytes = m.encode_to_vec();
    assert_eq!(bytes.len(), m.encoded_len());
    let back = M::decode(bytes.as_slice()).unwrap();
    assert_eq!(back, m, "{} did not round-trip", M::full_name());
    // A non-default message must not encode to nothing (would mean a field
    // was silently skipped); empty messages are exempt.
    if m != M::default() {
        assert!(!bytes.is_empty(), "{}", M::full_name());
    }
    M::full_name()
}

fn header() -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision: 3,
        raft_term: 4,
    })
}

fn perm() -> authpb::Permission {
    authpb::Permission {
        perm_type: authpb::permission::Type::Readwrite as i32,
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
    }
}

fn leader_key() -> epb::LeaderKey {
    epb::LeaderKey {
        name: b"e".to_vec(),
        key: b"e/1".to_vec(),
        rev: 5,
        lease: 1,
    }
}

/// Every request type, service by service. Returns the names covered.
fn round_trip_all_requests() -> BTreeSet<String> {
    let range = pb::RangeRequest {
        key: b"a".to_vec(),
        range_end: vec![0],
        limit: 1,
        revision: 2,
        sort_order: pb::range_request::SortOrder::Ascend as i32,
        sort_target: pb::range_request::SortTarget::Value as i32,
        serializable: true,
        keys_only: true,
        count_only: false,
        min_mod_revision: 1,
        max_mod_revision: 9,
        min_create_revision: 1,
        max_create_revision: 9,
    };
    let put = pb::PutRequest {
        key: b"k".to_vec(),
        value: vec![0xff, 0, 1],
        lease: -1,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: true,
    };
    let del = pb::DeleteRangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        prev_kv: true,
    };
    let nested = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: compare::CompareResult::Less as i32,
            target: compare::CompareTarget::Value as i32,
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::Value(b"v".to_vec())),
            range_end: Vec::new(),
        }],
        success: vec![pb::RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(del.clone())),
        }],
        failure: Vec::new(),
    };
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            range_end: b"z".to_vec(),
        }],
        success: vec![
            pb::RequestOp {
                request: Some(request_op::Request::RequestPut(put.clone())),
            },
            pb::RequestOp {
                request: Some(request_op::Request::RequestTxn(nested)),
            },
        ],
        failure: vec![pb::RequestOp {
            request: Some(request_op::Request::RequestRange(range.clone())),
        }],
    };

    let names = vec![
        // KV
        rt(range),
        rt(put),
        rt(del),
        rt(txn),
        rt(pb::CompactionRequest {
            revision: 7,
            physical: true,
        }),
        // Watch
        rt(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: b"w".to_vec(),
                    range_end: b"x".to_vec(),
                    start_revision: 3,
                    progress_notify: true,
                    filters: vec![pb::watch_create_request::FilterType::Nodelete as i32],
                    prev_kv: true,
                    watch_id: 42,
                    fragment: true,
                },
            )),
        }),
        rt(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
                pb::WatchCancelRequest { watch_id: 42 },
            )),
        }),
        rt(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                pb::WatchProgressRequest {},
            )),
        }),
        // Lease
        rt(pb::LeaseGrantRequest { ttl: 10, id: 99 }),
        rt(pb::LeaseRevokeRequest { id: 99 }),
        rt(pb::LeaseKeepAliveRequest { id: 99 }),
        rt(pb::LeaseTimeToLiveRequest { id: 99, keys: true }),
        rt(pb::LeaseLeasesRequest {}),
        // Cluster
        rt(pb::MemberAddRequest {
            peer_ur_ls: vec!["http://10.0.0.1:2380".into()],
            is_learner: true,
        }),
        rt(pb::MemberRemoveRequest { id: u64::MAX }),
        rt(pb::MemberUpdateRequest {
            id: 3,
            peer_ur_ls: vec!["http://a:1".into(), "http://b:2".into()],
        }),
        rt(pb::MemberListRequest {}),
        rt(pb::MemberPromoteRequest { id: 3 }),
        // Maintenance
        rt(pb::AlarmRequest {
            action: alarm_request::AlarmAction::Deactivate as i32,
            member_id: 3,
            alarm: pb::AlarmType::Nospace as i32,
        }),
        rt(pb::StatusRequest {}),
        rt(pb::DefragmentRequest {}),
        rt(pb::HashRequest {}),
        rt(pb::HashKvRequest { revision: 4 }),
        rt(pb::SnapshotRequest {}),
        rt(pb::MoveLeaderRequest { target_id: 3 }),
        // Auth
        rt(pb::AuthEnableRequest {}),
        rt(pb::AuthDisableRequest {}),
        rt(pb::AuthenticateRequest {
            name: "root".into(),
            password: "pw".into(),
        }),
        rt(pb::AuthUserAddRequest {
            name: "u".into(),
            password: "p".into(),
            options: Some(authpb::UserAddOptions { no_password: true }),
        }),
        rt(pb::AuthUserGetRequest { name: "u".into() }),
        rt(pb::AuthUserListRequest {}),
        rt(pb::AuthUserDeleteRequest { name: "u".into() }),
        rt(pb::AuthUserChangePasswordRequest {
            name: "u".into(),
            password: "q".into(),
        }),
        rt(pb::AuthUserGrantRoleRequest {
            user: "u".into(),
            role: "r".into(),
        }),
        rt(pb::AuthUserRevokeRoleRequest {
            name: "u".into(),
            role: "r".into(),
        }),
        rt(pb::AuthRoleAddRequest { name: "r".into() }),
        rt(pb::AuthRoleGetRequest { role: "r".into() }),
        rt(pb::AuthRoleListRequest {}),
        rt(pb::AuthRoleDeleteRequest { role: "r".into() }),
        rt(pb::AuthRoleGrantPermissionRequest {
            name: "r".into(),
            perm: Some(perm()),
        }),
        rt(pb::AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        }),
        // Lock
        rt(lpb::LockRequest {
            name: b"l".to_vec(),
            lease: 7,
        }),
        rt(lpb::UnlockRequest {
            key: b"l/7".to_vec(),
        }),
        // Election
        rt(epb::CampaignRequest {
            name: b"e".to_vec(),
            lease: 1,
            value: b"v".to_vec(),
        }),
        rt(epb::ProclaimRequest {
            leader: Some(leader_key()),
            value: b"w".to_vec(),
        }),
        rt(epb::LeaderRequest {
            name: b"e".to_vec(),
        }),
        rt(epb::ResignRequest {
            leader: Some(leader_key()),
        }),
    ];
    names.into_iter().collect()
}

#[test]
fn every_rpc_request_type_round_trips() {
    let covered = round_trip_all_requests();
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut inputs = BTreeSet::new();
    for file in &fds.file {
        for svc in &file.service {
            for m in &svc.method {
                inputs.insert(m.input_type().trim_start_matches('.').to_string());
            }
        }
    }
    let missing: Vec<_> = inputs.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "request types not round-tripped: {missing:?}"
    );
}

#[test]
fn responses_and_data_messages_round_trip() {
    let kv = concord_etcd_proto::mvccpb::KeyValue {
        key: b"k".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 2,
        value: b"v".to_vec(),
        lease: 5,
    };
    rt(concord_etcd_proto::mvccpb::Event {
        r#type: concord_etcd_proto::mvccpb::event::EventType::Delete as i32,
        kv: Some(kv.clone()),
        prev_kv: Some(kv.clone()),
    });
    rt(pb::WatchResponse {
        header: header(),
        watch_id: -1,
        created: true,
        canceled: true,
        compact_revision: 2,
        cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
        fragment: true,
        events: vec![concord_etcd_proto::mvccpb::Event::default()],
    });
    rt(pb::TxnResponse {
        header: header(),
        succeeded: true,
        responses: vec![
            pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponseRange(
                    pb::RangeResponse {
                        header: header(),
                        kvs: vec![kv.clone()],
                        more: true,
                        count: 3,
                    },
                )),
            },
            pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponseDeleteRange(
                    pb::DeleteRangeResponse {
                        header: header(),
                        deleted: 1,
                        prev_kvs: vec![kv],
                    },
                )),
            },
        ],
    });
    rt(pb::StatusResponse {
        header: header(),
        version: "3.4.23".into(),
        db_size: 1,
        leader: 2,
        raft_index: 3,
        raft_term: 4,
        raft_applied_index: 5,
        errors: vec!["NOSPACE".into()],
        db_size_in_use: 6,
        is_learner: true,
    });
    rt(pb::LeaseTimeToLiveResponse {
        header: header(),
        id: 1,
        ttl: 2,
        granted_ttl: 3,
        keys: vec![b"a".to_vec()],
    });
    rt(pb::LeaseCheckpointRequest {
        checkpoints: vec![pb::LeaseCheckpoint {
            id: 1,
            remaining_ttl: 9,
        }],
    });
    rt(authpb::User {
        name: b"u".to_vec(),
        password: b"hash".to_vec(),
        roles: vec!["r".into()],
        options: Some(authpb::UserAddOptions { no_password: false }),
    });
    rt(authpb::Role {
        name: b"r".to_vec(),
        key_permission: vec![perm()],
    });
    rt(epb::CampaignResponse {
        header: header(),
        leader: Some(leader_key()),
    });
    rt(lpb::LockResponse {
        header: header(),
        key: b"l/7".to_vec(),
    });
}

#[test]
fn descriptor_set_has_every_etcd_service() {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut services = BTreeSet::new();
    let mut methods = 0;
    for file in &fds.file {
        assert!(
            file.source_code_info.is_none(),
            "source info should be stripped"
        );
        for svc in &file.service {
            services.insert(format!("{}.{}", file.package(), svc.name()));
            methods += svc.method.len();
        }
    }
    let want: BTreeSet<String> = service_names::ALL_ETCD
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(services, want);
    // KV 5 + Watch 1 + Lease 5 + Cluster 5 + Maintenance 7 + Auth 16 + Lock 2 + Election 5.
    assert_eq!(methods, 46);
}

#[test]
fn gateway_routes_name_real_methods_and_cover_all_but_hashkv() {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut all = BTreeSet::new();
    for file in &fds.file {
        for svc in &file.service {
            for m in &svc.method {
                all.insert(format!("{}.{}/{}", file.package(), svc.name(), m.name()));
            }
        }
    }
    let mut paths = BTreeSet::new();
    let mut routed = BTreeSet::new();
    for (path, method) in GATEWAY_ROUTES {
        assert!(path.starts_with("/v3/"), "{path}");
        assert!(paths.insert(*path), "duplicate path {path}");
        assert!(all.contains(*method), "{path} -> unknown method {method}");
        routed.insert(method.to_string());
    }
    let unrouted: Vec<_> = all.difference(&routed).collect();
    assert_eq!(unrouted, ["etcdserverpb.Maintenance/HashKV"]);
}

#[test]
fn generated_names_match_etcd() {
    assert_eq!(pb::RangeRequest::full_name(), "etcdserverpb.RangeRequest");
    assert_eq!(pb::HashKvRequest::full_name(), "etcdserverpb.HashKVRequest");
    assert_eq!(
        concord_etcd_proto::mvccpb::KeyValue::full_name(),
        "mvccpb.KeyValue"
    );
    assert_eq!(authpb::Permission::full_name(), "authpb.Permission");
    assert_eq!(lpb::LockRequest::full_name(), "v3lockpb.LockRequest");
    assert_eq!(epb::LeaderKey::full_name(), "v3electionpb.LeaderKey");
    // Generated server names equal the constants in `service_names`.
    assert_eq!(pb::kv_server::SERVICE_NAME, service_names::KV);
    assert_eq!(pb::watch_server::SERVICE_NAME, service_names::WATCH);
    assert_eq!(pb::lease_server::SERVICE_NAME, service_names::LEASE);
    assert_eq!(pb::cluster_server::SERVICE_NAME, service_names::CLUSTER);
    assert_eq!(
        pb::maintenance_server::SERVICE_NAME,
        service_names::MAINTENANCE
    );
    assert_eq!(pb::auth_server::SERVICE_NAME, service_names::AUTH);
    assert_eq!(lpb::lock_server::SERVICE_NAME, service_names::LOCK);
    assert_eq!(epb::election_server::SERVICE_NAME, service_names::ELECTION);
}
