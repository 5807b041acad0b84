//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.
//!
//! While a NOSPACE alarm is active (see [`crate::alarm`]) Put and a Txn
//! with a put in it are refused with etcd's `database space exceeded`;
//! Range, DeleteRange, Compact and read-or-delete-only Txns are served.

use super::convert::*;
use super::{mvcc_status, server_status, Api};
use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::kv_server::Kv;
use concord_etcd_proto::prost::Message;
use concord_mvcc::{check, Command, RequestOp, Response, TxnRequest};
use tonic::{Request, Status};

fn unexpected(what: &str) -> Status {
    Status::internal(format!("concord: unexpected response to {what}"))
}

/// Whether a Txn may allocate space: a put in either branch, at any depth
/// (etcd 3.4 looks at the top level only; a nested put allocates too).
pub(crate) fn txn_puts(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        RequestOp::Put(_) => true,
        RequestOp::Txn(inner) => txn_puts(inner),
        RequestOp::Range(_) | RequestOp::DeleteRange(_) => false,
    })
}

impl Api {
    /// Refuses a write that allocates space while a NOSPACE alarm is
    /// active (etcd's capped applier; ResourceExhausted).
    pub(crate) fn refuse_if_out_of_space(&self) -> Result<(), Status> {
        if crate::alarm::out_of_space(&self.shared) {
            return Err(Status::resource_exhausted(crate::alarm::NO_SPACE_MESSAGE));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Kv for Api {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<tonic::Response<pb::RangeResponse>, Status> {
        let request = request.into_inner();
        self.check_size(request.encoded_len())?;
        let range = range_from_pb(request)?;
        check::check_range(&range).map_err(|e| mvcc_status(&e))?;
        if !range.serializable {
            self.shared.read_barrier().await.map_err(server_status)?;
        }
        let reader = self.shared.reader.clone();
        let response = if range.range_end.is_empty() {
            // One key: an index lookup and at most one record read, cheaper
            // than the two thread hand-offs of a blocking task (measured:
            // point reads are the common case, in the benchmarks and in
            // etcd's users).
            reader.range(&range)
        } else {
            // A range can visit the whole key space; keep it off the
            // runtime's few worker threads.
            tokio::task::spawn_blocking(move || reader.range(&range))
                .await
                .map_err(|_| Status::internal("concord: range task failed"))?
        }
        .map_err(|e| mvcc_status(&e))?;
        let header = self.header(response.revision);
        Ok(tonic::Response::new(range_to_pb(response, header)))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<tonic::Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        self.check_size(request.encoded_len())?;
        let put = put_from_pb(request);
        check::check_put(&put).map_err(|e| mvcc_status(&e))?;
        self.refuse_if_out_of_space()?;
        let output = self
            .shared
            .propose(Command::Put(put))
            .await
            .map_err(server_status)?;
        match output.response {
            Response::Put(r) => {
                let header = self.header(output.revision.0);
                Ok(tonic::Response::new(put_to_pb(r, header)))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<tonic::Response<pb::DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        self.check_size(request.encoded_len())?;
        let delete = delete_from_pb(request);
        check::check_delete_range(&delete).map_err(|e| mvcc_status(&e))?;
        let output = self
            .shared
            .propose(Command::DeleteRange(delete))
            .await
            .map_err(server_status)?;
        match output.response {
            Response::DeleteRange(r) => {
                let header = self.header(output.revision.0);
                Ok(tonic::Response::new(delete_to_pb(r, header)))
            }
            _ => Err(unexpected("delete")),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<tonic::Response<pb::TxnResponse>, Status> {
        let request = request.into_inner();
        self.check_size(request.encoded_len())?;
        let txn = txn_from_pb(request)?;
        check::check_txn(&txn, self.max_txn_ops).map_err(|e| mvcc_status(&e))?;
        if txn_puts(&txn) {
            self.refuse_if_out_of_space()?;
        }
        let output = self
            .shared
            .propose(Command::Txn(txn))
            .await
            .map_err(server_status)?;
        match output.response {
            Response::Txn(r) => {
                let header = self.header(output.revision.0);
                Ok(tonic::Response::new(txn_to_pb(r, header)))
            }
            _ => Err(unexpected("txn")),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<tonic::Response<pb::CompactionResponse>, Status> {
        let request = request.into_inner();
        let output = self
            .shared
            .propose(Command::Compact(concord_mvcc::CompactionRequest {
                revision: request.revision,
                physical: request.physical,
            }))
            .await
            .map_err(server_status)?;
        match output.response {
            Response::Compact(_) => Ok(tonic::Response::new(pb::CompactionResponse {
                header: Some(self.header(output.revision.0)),
            })),
            _ => Err(unexpected("compact")),
        }
    }
}
