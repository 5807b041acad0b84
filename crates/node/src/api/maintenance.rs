//! `etcdserverpb.Maintenance`: status, hashes, leadership moves. Snapshot
//! streaming, defragmentation and space alarms are tracked in issue 5.

use super::{mvcc_status, server_status, Api, ETCD_API_VERSION};
use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::maintenance_server::Maintenance;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl Maintenance for Api {
    async fn alarm(
        &self,
        _request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        // No alarm can be raised yet (the space quota is issue 5), so the
        // list is truthfully empty and deactivation has nothing to clear.
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.header(self.revision_now_or_zero())),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let reader = self.shared.reader.clone();
        let db_size = tokio::task::spawn_blocking(move || reader.db_size_bytes())
            .await
            .map_err(|_| Status::internal("concord: status task failed"))?
            .map_err(|e| mvcc_status(&e))? as i64;
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header(self.revision_now_or_zero())),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: self.shared.leader.load(Ordering::Acquire),
            raft_index: self.shared.commit_index.load(Ordering::Acquire),
            raft_term: self.shared.term.load(Ordering::Acquire),
            raft_applied_index: self.shared.applied_index.load(Ordering::Acquire),
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: self.shared.is_learner.load(Ordering::Acquire),
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(Status::unimplemented(
            "concord: Defragment is not supported yet",
        ))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Err(Status::unimplemented(
            "concord: Hash is not supported; use HashKV",
        ))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        let reader = self.shared.reader.clone();
        let hash = tokio::task::spawn_blocking(move || reader.hash_kv(revision))
            .await
            .map_err(|_| Status::internal("concord: hash task failed"))?
            .map_err(|e| mvcc_status(&e))?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.header(hash.revision)),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
        }))
    }

    type SnapshotStream =
        Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>>;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Ok(Response::new(self.snapshot_stream().await?))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        self.shared
            .transfer_leader(target)
            .await
            .map_err(server_status)?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(self.header(self.revision_now_or_zero())),
        }))
    }
}

impl Api {
    fn revision_now_or_zero(&self) -> i64 {
        self.shared
            .reader
            .current_revision()
            .map(|r| r.0)
            .unwrap_or(0)
    }
}
