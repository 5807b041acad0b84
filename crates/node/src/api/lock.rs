//! `v3lockpb.Lock`: etcd's server-side mutex (etcd's v3lock, built on
//! `clientv3/concurrency.Mutex`), on the queue of [`super::recipe`].
//!
//! `Lock{name, lease}` puts the owner key `name/<lease hex>` attached to the
//! lease, waits until every key under `name/` created before it is gone,
//! and answers with the key. The key's create revision is the fencing
//! token: guard writes with `Compare(CreateRevision(key) == token)`.
//! `Unlock{key}` deletes the key. A holder that loses its lease loses the
//! key, and the next waiter gets the lock.
//!
//! Differences from etcd 3.4, both on the safe side: a waiter whose own key
//! disappears while waiting gets an error instead of the lock, and a waiter
//! whose client goes away deletes its key (etcd only does so on errors its
//! own goroutine sees).

use super::recipe::{enqueue, owner_key, queue_prefix, wait_for_turn, Withdraw};
use super::{mvcc_status, server_status, Api};
use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::v3lockpb;
use concord_etcd_proto::v3lockpb::lock_server::Lock;
use concord_mvcc::{check, Command, DeleteRangeRequest, Response as MvccResponse};
use tonic::{Request, Response, Status};

/// etcd's `concurrency.NewSession` default TTL, used when a Lock request
/// names no lease (etcd grants one, and orphans it: the lock then lasts at
/// most this long unless released).
pub const SESSION_TTL_DEFAULT_SECS: i64 = 60;

impl Api {
    /// A lease for a request that named none, as etcd's session does.
    pub(crate) async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        use concord_etcd_proto::etcdserverpb::lease_server::Lease;
        let granted = self
            .lease_grant(Request::new(pb::LeaseGrantRequest {
                ttl: SESSION_TTL_DEFAULT_SECS,
                id: 0,
            }))
            .await?;
        Ok(granted.into_inner().id)
    }
}

#[tonic::async_trait]
impl Lock for Api {
    async fn lock(
        &self,
        request: Request<v3lockpb::LockRequest>,
    ) -> Result<Response<v3lockpb::LockResponse>, Status> {
        let request = request.into_inner();
        let lease = self.session_lease(request.lease).await?;
        let prefix = queue_prefix(&request.name);
        let key = owner_key(&prefix, lease);
        let queued = enqueue(self, &prefix, &key, Vec::new(), lease).await?;
        let owns = queued
            .owner
            .as_ref()
            .is_none_or(|owner| owner.create_revision == queued.revision);
        if owns {
            return Ok(Response::new(v3lockpb::LockResponse {
                header: Some(self.header(queued.header_revision)),
                key,
            }));
        }
        let withdraw = Withdraw::new(self, &key, queued.revision);
        let revision = wait_for_turn(self, &prefix, &key, queued.revision).await?;
        withdraw.disarm();
        Ok(Response::new(v3lockpb::LockResponse {
            header: Some(self.header(revision)),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<v3lockpb::UnlockRequest>,
    ) -> Result<Response<v3lockpb::UnlockResponse>, Status> {
        let delete = DeleteRangeRequest {
            key: request.into_inner().key,
            ..Default::default()
        };
        check::check_delete_range(&delete).map_err(|e| mvcc_status(&e))?;
        let output = self
            .shared
            .propose(Command::DeleteRange(delete))
            .await
            .map_err(server_status)?;
        match output.response {
            MvccResponse::DeleteRange(_) => Ok(Response::new(v3lockpb::UnlockResponse {
                header: Some(self.header(output.revision.0)),
            })),
            _ => Err(Status::internal("concord: unexpected response to unlock")),
        }
    }
}
