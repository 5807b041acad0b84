//! etcd v3 wire protocol for Concord.
//!
//! This crate owns Concord's own `.proto` declarations of the etcd v3 API
//! (`proto/`): the `etcdserverpb` services (KV, Watch, Lease, Cluster,
//! Maintenance, Auth), `v3lockpb.Lock`, `v3electionpb.Election`, and the
//! `mvccpb` and `authpb` messages. Package, service, method, message and field
//! names, field numbers and enum values match etcd v3.4, so etcdctl 3.4 and
//! other etcd clients (e.g. the Rust `etcd-client` crate) talk to Concord
//! unchanged. The files are compiled at build time by `protox` (no system
//! `protoc`) and turned into prost messages plus tonic clients and servers.
//!
//! It is the ONLY place protobuf types are defined. The MVCC store and the
//! Raft core never see them: the etcd-facing server converts at its edge.
//!
//! Also provided:
//! * [`health`]: the standard `grpc.health.v1.Health` service (re-export of
//!   `tonic-health`), which etcd registers too;
//! * [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of every file here,
//!   for gRPC reflection and a JSON gateway;
//! * [`GATEWAY_ROUTES`]: etcd's grpc-gateway HTTP paths and the method each
//!   one maps to;
//! * [`coalesce::CoalescedWrites`]: the stream adapter both of Concord's
//!   own HTTP/2 speakers (the client port and the bench's unary calls) put
//!   under `h2`, so small messages share system calls.
//!
//! Tests: `tests/wire_bytes.rs` pins field numbers to hand-computed bytes;
//! `tests/etcd_client_compat.rs` (feature `etcd-client-compat`, needs a
//! `protoc` such as `protox` in `PROTOC` for `etcd-client`'s own build) drives
//! every service through the real `etcd-client` crate.

#![forbid(unsafe_code)]

/// Generated code. Kept in one place so the lint allowances below do not
/// leak into hand-written code.
mod generated {
    #![allow(
        missing_docs,
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        rustdoc::all,
        non_camel_case_types,
        non_snake_case
    )]

    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}

pub mod coalesce;

pub use generated::{authpb, etcdserverpb, mvccpb, v3electionpb, v3lockpb};

/// `grpc.health.v1.Health`: server (`health::server::health_reporter`),
/// client (`health::pb::health_client`) and messages.
pub use tonic_health as health;

/// Re-exports so dependents use exactly the versions this crate was built with.
pub use prost;
pub use tonic;

/// gRPC's length prefix on a message (gRPC over HTTP/2, "Length-Prefixed-Message"):
/// a compression flag byte, then the length as 4 big-endian bytes.
pub const GRPC_PREFIX_BYTES: usize = 5;

/// `message` as one uncompressed length-prefixed gRPC message, for code
/// that speaks HTTP/2 itself (Concord's client port, the bench's unary
/// calls) rather than through tonic.
pub fn grpc_frame<M: prost::Message>(message: &M) -> prost::bytes::Bytes {
    use prost::bytes::BufMut;
    let length = message.encoded_len();
    let mut out = prost::bytes::BytesMut::with_capacity(GRPC_PREFIX_BYTES + length);
    out.put_u8(0);
    out.put_u32(u32::try_from(length).unwrap_or(u32::MAX));
    message
        .encode(&mut out)
        .expect("the buffer was sized for the message");
    out.freeze()
}

/// Encoded `google.protobuf.FileDescriptorSet` of every `.proto` file in this
/// crate (imports included, source info stripped).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/concord_etcd_descriptor.bin"));

/// Fully qualified gRPC service names, as used in request paths
/// (`/<service>/<Method>`) and by health checks and reflection.
pub mod service_names {
    pub const KV: &str = "etcdserverpb.KV";
    pub const WATCH: &str = "etcdserverpb.Watch";
    pub const LEASE: &str = "etcdserverpb.Lease";
    pub const CLUSTER: &str = "etcdserverpb.Cluster";
    pub const MAINTENANCE: &str = "etcdserverpb.Maintenance";
    pub const AUTH: &str = "etcdserverpb.Auth";
    pub const LOCK: &str = "v3lockpb.Lock";
    pub const ELECTION: &str = "v3electionpb.Election";
    pub const HEALTH: &str = "grpc.health.v1.Health";

    /// Every etcd service above (health excluded).
    pub const ALL_ETCD: &[&str] = &[KV, WATCH, LEASE, CLUSTER, MAINTENANCE, AUTH, LOCK, ELECTION];
}

/// etcd's grpc-gateway routes: `(HTTP path, "package.Service/Method")`.
///
/// Every route is `POST` with the whole JSON body as the request message.
/// Paths are those of etcd v3.4 under the `/v3` prefix (etcd 3.4 also
/// serves them under `/v3beta`; that alias is left to the gateway).
/// `/v3/maintenance/hash` is declared for both `Hash` and `HashKV` in etcd
/// 3.4; etcd's gateway (grpc-gateway v1, default first-match mux) routes it
/// to `Hash`, so `HashKV` is reachable only over gRPC and is not listed. Lease `revoke`, `timetolive` and
/// `leases` also have `/v3/kv/lease/...` aliases.
pub const GATEWAY_ROUTES: &[(&str, &str)] = &[
    // KV
    ("/v3/kv/range", "etcdserverpb.KV/Range"),
    ("/v3/kv/put", "etcdserverpb.KV/Put"),
    ("/v3/kv/deleterange", "etcdserverpb.KV/DeleteRange"),
    ("/v3/kv/txn", "etcdserverpb.KV/Txn"),
    ("/v3/kv/compaction", "etcdserverpb.KV/Compact"),
    // Watch (bidi stream; streamed as newline-separated JSON objects)
    ("/v3/watch", "etcdserverpb.Watch/Watch"),
    // Lease
    ("/v3/lease/grant", "etcdserverpb.Lease/LeaseGrant"),
    ("/v3/lease/revoke", "etcdserverpb.Lease/LeaseRevoke"),
    ("/v3/kv/lease/revoke", "etcdserverpb.Lease/LeaseRevoke"),
    ("/v3/lease/keepalive", "etcdserverpb.Lease/LeaseKeepAlive"),
    ("/v3/lease/timetolive", "etcdserverpb.Lease/LeaseTimeToLive"),
    (
        "/v3/kv/lease/timetolive",
        "etcdserverpb.Lease/LeaseTimeToLive",
    ),
    ("/v3/lease/leases", "etcdserverpb.Lease/LeaseLeases"),
    ("/v3/kv/lease/leases", "etcdserverpb.Lease/LeaseLeases"),
    // Cluster
    ("/v3/cluster/member/add", "etcdserverpb.Cluster/MemberAdd"),
    (
        "/v3/cluster/member/remove",
        "etcdserverpb.Cluster/MemberRemove",
    ),
    (
        "/v3/cluster/member/update",
        "etcdserverpb.Cluster/MemberUpdate",
    ),
    ("/v3/cluster/member/list", "etcdserverpb.Cluster/MemberList"),
    (
        "/v3/cluster/member/promote",
        "etcdserverpb.Cluster/MemberPromote",
    ),
    // Maintenance
    ("/v3/maintenance/alarm", "etcdserverpb.Maintenance/Alarm"),
    ("/v3/maintenance/status", "etcdserverpb.Maintenance/Status"),
    (
        "/v3/maintenance/defragment",
        "etcdserverpb.Maintenance/Defragment",
    ),
    ("/v3/maintenance/hash", "etcdserverpb.Maintenance/Hash"),
    (
        "/v3/maintenance/snapshot",
        "etcdserverpb.Maintenance/Snapshot",
    ),
    (
        "/v3/maintenance/transfer-leadership",
        "etcdserverpb.Maintenance/MoveLeader",
    ),
    // Auth
    ("/v3/auth/enable", "etcdserverpb.Auth/AuthEnable"),
    ("/v3/auth/disable", "etcdserverpb.Auth/AuthDisable"),
    ("/v3/auth/authenticate", "etcdserverpb.Auth/Authenticate"),
    ("/v3/auth/user/add", "etcdserverpb.Auth/UserAdd"),
    ("/v3/auth/user/get", "etcdserverpb.Auth/UserGet"),
    ("/v3/auth/user/list", "etcdserverpb.Auth/UserList"),
    ("/v3/auth/user/delete", "etcdserverpb.Auth/UserDelete"),
    (
        "/v3/auth/user/changepw",
        "etcdserverpb.Auth/UserChangePassword",
    ),
    ("/v3/auth/user/grant", "etcdserverpb.Auth/UserGrantRole"),
    ("/v3/auth/user/revoke", "etcdserverpb.Auth/UserRevokeRole"),
    ("/v3/auth/role/add", "etcdserverpb.Auth/RoleAdd"),
    ("/v3/auth/role/get", "etcdserverpb.Auth/RoleGet"),
    ("/v3/auth/role/list", "etcdserverpb.Auth/RoleList"),
    ("/v3/auth/role/delete", "etcdserverpb.Auth/RoleDelete"),
    (
        "/v3/auth/role/grant",
        "etcdserverpb.Auth/RoleGrantPermission",
    ),
    (
        "/v3/auth/role/revoke",
        "etcdserverpb.Auth/RoleRevokePermission",
    ),
    // Lock
    ("/v3/lock/lock", "v3lockpb.Lock/Lock"),
    ("/v3/lock/unlock", "v3lockpb.Lock/Unlock"),
    // Election
    ("/v3/election/campaign", "v3electionpb.Election/Campaign"),
    ("/v3/election/proclaim", "v3electionpb.Election/Proclaim"),
    ("/v3/election/leader", "v3electionpb.Election/Leader"),
    ("/v3/election/observe", "v3electionpb.Election/Observe"),
    ("/v3/election/resign", "v3electionpb.Election/Resign"),
];
