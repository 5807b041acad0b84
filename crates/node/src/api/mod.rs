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

pub mod cluster;
pub mod convert;
pub mod kv;
pub mod maintenance;

use crate::replica::{ServerError, Shared};
use concord_etcd_proto::etcdserverpb as pb;
use concord_mvcc::MvccError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
