//! `etcdserverpb.Maintenance`: status, hashes, leadership moves, alarms
//! (see [`crate::alarm`]); snapshot streaming is in `snapshot.rs`.

use super::{mvcc_status, server_status, Api, ETCD_API_VERSION};
use crate::alarm::{self, Alarm, AlarmAction, AlarmChange, AlarmKind};
use crate::replica::ServerError;
use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::alarm_request::AlarmAction as PbAlarmAction;
use concord_etcd_proto::etcdserverpb::maintenance_server::Maintenance;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl Maintenance for Api {
    /// etcd 3.4 sends all three actions through Raft. GET here waits for a
    /// read barrier instead (the same linearizable answer); ACTIVATE and
    /// DEACTIVATE replicate an alarm change and answer once it applied here,
    /// with the alarm (ACTIVATE) or the alarm if it was active (DEACTIVATE),
    /// as etcd's applier does. An alarm type of NONE names no alarm: ACTIVATE
    /// and DEACTIVATE of it change nothing and answer no alarm.
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let request = request.into_inner();
        let kind = AlarmKind::from_etcd(request.alarm);
        let action = PbAlarmAction::try_from(request.action)
            .map_err(|_| Status::invalid_argument("etcdserver: unknown alarm action"))?;
        let alarms = match (action, kind) {
            (PbAlarmAction::Get, _) => {
                self.shared.read_barrier().await.map_err(server_status)?;
                self.shared.members.read().expect("lock").alarms.get(kind)
            }
            (_, None) => Vec::new(),
            (PbAlarmAction::Activate | PbAlarmAction::Deactivate, Some(kind)) => {
                let target = Alarm {
                    member_id: request.member_id,
                    kind,
                };
                let was_active = self
                    .shared
                    .members
                    .read()
                    .expect("lock")
                    .alarms
                    .contains(&target);
                let action = if action == PbAlarmAction::Activate {
                    AlarmAction::Activate
                } else {
                    AlarmAction::Deactivate
                };
                let change = AlarmChange {
                    action,
                    alarm: target,
                };
                alarm::propose_alarm(&self.shared, change)
                    .await
                    .map_err(server_status)?;
                if action == AlarmAction::Activate || was_active {
                    vec![target]
                } else {
                    Vec::new()
                }
            }
        };
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.header(self.revision_now_or_zero())),
            alarms: alarms.iter().map(alarm_to_pb).collect(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let reader = self.shared.reader.clone();
        let (db_size, db_size_in_use) = tokio::task::spawn_blocking(move || {
            Ok::<_, concord_mvcc::MvccError>((
                reader.db_size_bytes()?,
                reader.db_size_on_disk_bytes()?,
            ))
        })
        .await
        .map_err(|_| Status::internal("concord: status task failed"))?
        .map_err(|e| mvcc_status(&e))?;
        let (db_size, db_size_in_use) = (db_size as i64, db_size_in_use as i64);
        let leader = self.shared.leader.load(Ordering::Acquire);
        // etcd's Status errors: "no leader", then every active alarm.
        let mut errors = Vec::new();
        if leader == 0 {
            errors.push(ServerError::NoLeader.to_string());
        }
        errors.extend(
            self.shared
                .members
                .read()
                .expect("lock")
                .alarms
                .get(None)
                .iter()
                .map(alarm::alarm_text),
        );
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header(self.revision_now_or_zero())),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader,
            raft_index: self.shared.commit_index.load(Ordering::Acquire),
            raft_term: self.shared.term.load(Ordering::Acquire),
            raft_applied_index: self.shared.applied_index.load(Ordering::Acquire),
            errors,
            db_size_in_use,
            is_learner: self.shared.is_learner.load(Ordering::Acquire),
        }))
    }

    /// Rewrites this member's store file compactly, giving the space that
    /// compaction freed back to the file system (what lowers the size
    /// below the quota before `alarm disarm`). Like etcd's, it is per
    /// member and blocks that member's loop while it runs.
    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.shared
            .inbox
            .send(crate::replica::Request::Defragment { reply })
            .map_err(|_| server_status(ServerError::Stopped))?;
        // Defragmenting a large store may take longer than a request; the
        // client's own deadline bounds the wait (etcdctl defrag: 15 s).
        rx.await
            .map_err(|_| server_status(ServerError::Stopped))?
            .map_err(server_status)?;
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.header(self.revision_now_or_zero())),
        }))
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

fn alarm_to_pb(alarm: &Alarm) -> pb::AlarmMember {
    pb::AlarmMember {
        member_id: alarm.member_id,
        alarm: alarm.kind.to_etcd(),
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
