//! `v3electionpb.Election`: etcd's server-side election (etcd's
//! v3election, built on `clientv3/concurrency.Election`), on the queue of
//! [`super::recipe`].
//!
//! * Campaign puts `name/<lease hex>` with the proposed value and waits
//!   until it is the oldest key under `name/`: then it leads. The leader
//!   key's create revision (`LeaderKey.rev`) fences the leader's writes.
//! * Proclaim changes the leader's value, only while it still holds the key
//!   with that create revision ("election: not leader" otherwise).
//! * Leader reads the oldest key; Observe streams it, then every change of
//!   it, then the next leader once it is deleted.
//! * Resign deletes the leader key (guarded by its create revision).
//!
//! Errors that etcd returns as plain Go errors (gRPC code Unknown) keep
//! that code and message: "election: not leader", "election: no leader",
//! `"leader" field must be provided`.

use super::recipe::{
    delete_if_owner, enqueue, first_created, owner_key, prefix_end, put_if_owner, queue_prefix,
    wait_for_turn, Withdraw,
};
use super::Api;
use crate::watch_hub::{CursorError, EventCursor, KeyRange};
use concord_etcd_proto::v3electionpb as epb;
use concord_etcd_proto::v3electionpb::election_server::Election;
use concord_mvcc::{EventKind, KeyValue};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

/// Leader changes queued per Observe stream.
const OBSERVE_RESPONSES: usize = 16;

fn not_leader() -> Status {
    Status::new(Code::Unknown, "election: not leader")
}

fn no_leader() -> Status {
    Status::new(Code::Unknown, "election: no leader")
}

fn missing_leader_key() -> Status {
    Status::new(Code::Unknown, "\"leader\" field must be provided")
}

impl Api {
    fn leader_response(&self, revision: i64, kv: KeyValue) -> epb::LeaderResponse {
        epb::LeaderResponse {
            header: Some(self.header(revision)),
            kv: Some(super::convert::kv_to_pb(kv)),
        }
    }

    /// etcd's `Election.observe`, sending into `tx` until it closes.
    async fn observe_into(
        &self,
        prefix: Vec<u8>,
        tx: mpsc::Sender<Result<epb::LeaderResponse, Status>>,
    ) -> Result<(), Status> {
        let shared = Arc::clone(&self.shared);
        loop {
            let (first, revision) = first_created(self, &prefix).await?;
            let (leader, revision) = match first {
                Some(kv) => (kv, revision),
                None => {
                    // Wait for the first key put under the prefix.
                    let range = KeyRange::new(prefix.clone(), prefix_end(&prefix));
                    let mut cursor = EventCursor::new(Arc::clone(&shared), range, revision + 1);
                    let found = loop {
                        match cursor.next().await {
                            Ok(events) => {
                                if let Some(e) =
                                    events.into_iter().find(|e| e.kind == EventKind::Put)
                                {
                                    break Some(e.kv);
                                }
                            }
                            Err(CursorError::Compacted { .. }) => break None,
                            Err(e) => return Err(Status::unavailable(e.to_string())),
                        }
                    };
                    let Some(kv) = found else { continue };
                    let revision = kv.mod_revision;
                    (kv, revision)
                }
            };
            if tx
                .send(Ok(self.leader_response(revision, leader.clone())))
                .await
                .is_err()
            {
                return Ok(());
            }
            // Follow the leader key until it is deleted.
            let range = KeyRange::new(leader.key.clone(), Vec::new());
            let mut cursor = EventCursor::new(Arc::clone(&shared), range, revision + 1);
            'follow: loop {
                let events = match cursor.next().await {
                    Ok(events) => events,
                    Err(CursorError::Compacted { .. }) => break 'follow,
                    Err(e) => return Err(Status::unavailable(e.to_string())),
                };
                for event in events {
                    if event.kind == EventKind::Delete {
                        break 'follow;
                    }
                    let revision = event.kv.mod_revision;
                    if tx
                        .send(Ok(self.leader_response(revision, event.kv)))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Election for Api {
    async fn campaign(
        &self,
        request: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let request = request.into_inner();
        let lease = self.session_lease(request.lease).await?;
        let prefix = queue_prefix(&request.name);
        let key = owner_key(&prefix, lease);
        let queued = enqueue(self, &prefix, &key, request.value.clone(), lease).await?;
        let withdraw = Withdraw::new(self, &key, queued.revision);
        if let Some(existing) = &queued.existing_value {
            if *existing != request.value {
                let (proclaimed, _) =
                    put_if_owner(self, &key, queued.revision, request.value.clone(), lease).await?;
                if !proclaimed {
                    return Err(not_leader());
                }
            }
        }
        let owns = queued
            .owner
            .as_ref()
            .is_none_or(|owner| owner.create_revision == queued.revision);
        if !owns {
            wait_for_turn(self, &prefix, &key, queued.revision).await?;
        }
        withdraw.disarm();
        Ok(Response::new(epb::CampaignResponse {
            header: Some(self.header(queued.header_revision)),
            leader: Some(epb::LeaderKey {
                name: request.name,
                key,
                rev: queued.revision,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let request = request.into_inner();
        let leader = request.leader.ok_or_else(missing_leader_key)?;
        let (proclaimed, revision) =
            put_if_owner(self, &leader.key, leader.rev, request.value, leader.lease).await?;
        if !proclaimed {
            return Err(not_leader());
        }
        Ok(Response::new(epb::ProclaimResponse {
            header: Some(self.header(revision)),
        }))
    }

    async fn leader(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let prefix = queue_prefix(&request.into_inner().name);
        let (first, revision) = first_created(self, &prefix).await?;
        let kv = first.ok_or_else(no_leader)?;
        Ok(Response::new(self.leader_response(revision, kv)))
    }

    type ObserveStream =
        Pin<Box<dyn Stream<Item = Result<epb::LeaderResponse, Status>> + Send + 'static>>;

    async fn observe(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let prefix = queue_prefix(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(OBSERVE_RESPONSES);
        let api = self.clone();
        tokio::spawn(async move {
            let closed = tx.clone();
            tokio::select! {
                _ = closed.closed() => {}
                result = api.observe_into(prefix, tx.clone()) => {
                    if let Err(status) = result {
                        let _ = tx.send(Err(status)).await;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let leader = request.into_inner().leader.ok_or_else(missing_leader_key)?;
        let revision = delete_if_owner(self, &leader.key, leader.rev).await?;
        Ok(Response::new(epb::ResignResponse {
            header: Some(self.header(revision)),
        }))
    }
}
