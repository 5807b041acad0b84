//! The etcd v3 gRPC face of a member: request validation, conversion at the
//! edge, and the mapping of errors to etcd's codes and messages.
//!
//! Invariants:
//! 1. Every request is validated (size, empty key, txn limits) before it
//!    reaches the log, with etcd's exact error strings.
//! 2. Writes go through Raft and are answered only after they apply; reads
//!    are linearizable unless the client asked for `serializable`.
//! 3. One client's bad request or disconnect never affects another: all
//!    per-request state is owned by that request's task.

pub mod authority;
pub mod cluster;
pub mod convert;
pub mod election;
pub mod gateway;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
mod recipe;
pub mod serve;
pub mod snapshot;
pub mod watch;

use crate::replica::{ServerError, Shared};
use concord_etcd_proto::etcdserverpb as pb;
use concord_mvcc::MvccError;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Status};

/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// gRPC framing allowance over `--max-request-bytes`, as etcd adds, so that
/// a slightly oversized request gets etcd's own "request is too large"
/// message rather than a transport error.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// The version string members report (etcdctl and clients gate features on
/// the major.minor of the etcd API they talk to).
pub const ETCD_API_VERSION: &str = "3.4.23";

/// State shared by all services of one member.
#[derive(Clone)]
pub struct Api {
    /// The replica's shared state.
    pub shared: Arc<Shared>,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--initial-cluster-token`, from which member ids are derived.
    pub cluster_token: String,
    /// Settings and state of the Watch, Lease, Lock and Election services.
    pub coordination: Arc<Coordination>,
}

/// Settings and shared state of the coordination services.
pub struct Coordination {
    /// Leases granted with a shorter TTL get this one (etcd: ceil(1.5 x
    /// election timeout) seconds, so a lease outlives a leader election).
    pub lease_ttl_min_secs: i64,
    /// Interval of automatic watch progress notifications.
    pub watch_progress_notify_interval: Duration,
    /// The election timeout: streams that require a leader are ended after
    /// three of them without one (etcd's `monitorLeader`).
    pub election_timeout: Duration,
    /// etcd's request id generator (prefix and counting suffix), for lease
    /// ids the client left to us.
    lease_id_prefix: u64,
    lease_id_suffix: AtomicU64,
    /// A client channel to the leader's client URL (URL, channel), for the
    /// lease calls only the leader answers.
    leader_channel: Mutex<Option<(String, tonic::transport::Channel)>>,
}

impl Coordination {
    /// Settings for a member with this id and election timeout.
    pub fn new(member_id: u64, election_timeout: Duration) -> Coordination {
        let ms = election_timeout.as_millis() as i64;
        // etcd's idutil.Generator: 16 bits of member id, 40 bits of start
        // time in ms, 8 bits of counter, so ids from different members and
        // restarts do not collide.
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let prefix = (member_id & 0xffff) << 48;
        let suffix = (unix_ms & ((1 << 40) - 1)) << 8;
        Coordination {
            lease_ttl_min_secs: ((3 * ms / 2 + 999) / 1000).max(1),
            watch_progress_notify_interval: watch::PROGRESS_NOTIFY_INTERVAL_DEFAULT,
            election_timeout,
            lease_id_prefix: prefix,
            lease_id_suffix: AtomicU64::new(suffix),
            leader_channel: Mutex::new(None),
        }
    }

    /// A fresh lease id (positive, non-zero).
    pub fn next_lease_id(&self) -> i64 {
        loop {
            let suffix = self.lease_id_suffix.fetch_add(1, Ordering::Relaxed) + 1;
            let id =
                ((self.lease_id_prefix | (suffix & ((1 << 48) - 1))) & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }

    /// A (lazily connecting) client channel to `url`, reused while the
    /// leader's URL stays the same.
    pub fn channel_to(&self, url: &str) -> Result<tonic::transport::Channel, Status> {
        let mut cached = self.leader_channel.lock().expect("lock");
        if let Some((cached_url, channel)) = cached.as_ref() {
            if cached_url == url {
                return Ok(channel.clone());
            }
        }
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| Status::unavailable(format!("etcdserver: leader URL {url}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        *cached = Some((url.to_string(), channel.clone()));
        Ok(channel)
    }
}

impl Api {
    /// A response header at `revision`.
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.shared.cluster_id,
            member_id: self.shared.member_id,
            revision,
            raft_term: self.shared.term.load(Ordering::Acquire),
        }
    }

    /// Refuses a request larger than `--max-request-bytes`.
    pub fn check_size(&self, encoded_len: usize) -> Result<(), Status> {
        if encoded_len > self.max_request_bytes {
            return Err(Status::invalid_argument("etcdserver: request is too large"));
        }
        Ok(())
    }
}

/// gRPC metadata by which a client asks to fail rather than be served by a
/// member without a leader (`clientv3.WithRequireLeader`).
pub const REQUIRE_LEADER_METADATA: &str = "hasleader";

/// Whether the request carries `hasleader: true`.
pub fn requires_leader<T>(request: &tonic::Request<T>) -> bool {
    request
        .metadata()
        .get(REQUIRE_LEADER_METADATA)
        .is_some_and(|v| v.as_bytes() == b"true")
}

/// Maps a store error to etcd's status.
pub fn mvcc_status(e: &MvccError) -> Status {
    let code = match e.grpc_code_name() {
        "OutOfRange" => Code::OutOfRange,
        "NotFound" => Code::NotFound,
        "InvalidArgument" => Code::InvalidArgument,
        "FailedPrecondition" => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// Maps a server error to etcd's status.
pub fn server_status(e: ServerError) -> Status {
    match e {
        ServerError::Mvcc(m) => mvcc_status(&m),
        ServerError::TooManyRequests => Status::resource_exhausted(e.to_string()),
        ServerError::Membership(_) => Status::failed_precondition(e.to_string()),
        ServerError::NoLeader
        | ServerError::Timeout
        | ServerError::LeaderChanged
        | ServerError::Stopped => Status::unavailable(e.to_string()),
    }
}
