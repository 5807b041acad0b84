//! `etcdserverpb.Lease`: grant, revoke, keep-alive, time-to-live, list.
//!
//! Grants and revocations go through Raft like any write. Keep-alives and
//! time-to-live questions do not: the leader's lessor ([`crate::lessor`])
//! answers them from its clock. A follower forwards them to the leader as
//! a gRPC client of the leader's client URL (from the member table), on a
//! keep-alive stream of its own per client stream, marked with the
//! [`FORWARDED_METADATA`] header so that a member that is not the leader any
//! more answers "not leader" instead of forwarding again (no loops).
//!
//! ```text
//!  client ─KeepAlive─▶ follower ─KeepAlive (forwarded)─▶ leader: lessor.renew
//!         ◀─{ID, TTL}─          ◀──────{ID, TTL}───────
//! ```
//!
//! Invariants:
//! 1. A granted TTL is at least [`super::Coordination::lease_ttl_min_secs`]
//!    and at most [`LEASE_TTL_MAX_SECS`]; the clamp happens before the
//!    proposal, so every member applies the same TTL.
//! 2. Ids the client leaves to us come from a member-unique generator; a
//!    collision with a client-chosen id is retried with a fresh id.
//! 3. Keep-alive answers follow etcd: TTL 0 for an unknown or expired lease,
//!    the granted TTL otherwise; TimeToLive answers TTL -1 when not found.

use super::{server_status, Api};
use crate::lessor::{LeaseError, TimeToLive};
use crate::replica::{LeaseQuery, ServerError};
use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::lease_client::LeaseClient;
use concord_etcd_proto::etcdserverpb::lease_server::Lease;
use concord_mvcc::{
    Command, LeaseGrantRequest, LeaseRevokeRequest, MvccError, Response as MvccResponse,
    LEASE_TTL_MAX_SECS,
};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Metadata header that marks a call forwarded by a follower.
pub const FORWARDED_METADATA: &str = "concord-forwarded";

/// Keep-alive responses queued per stream.
const KEEPALIVE_RESPONSES: usize = 16;

/// Pause between attempts to reach a leader.
const LEADER_RETRY: Duration = Duration::from_millis(50);

/// How long a forwarded call may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

fn not_leader() -> Status {
    Status::unavailable("etcdserver: not leader")
}

fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().get(FORWARDED_METADATA).is_some()
}

fn mark_forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        FORWARDED_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    request
}

/// A follower's keep-alive stream to the leader, for one client stream.
struct Upstream {
    leader: u64,
    tx: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    rx: Streaming<pb::LeaseKeepAliveResponse>,
}

impl Api {
    fn revision_or_zero(&self) -> i64 {
        self.shared
            .reader
            .current_revision()
            .map(|r| r.0)
            .unwrap_or(0)
    }

    /// The leader's id and a client for its client URL; `None` while no
    /// other member is known to lead.
    fn leader_client(
        &self,
    ) -> Result<Option<(u64, LeaseClient<tonic::transport::Channel>)>, Status> {
        let Some(leader) = self.shared.leader().filter(|l| *l != self.shared.member_id) else {
            return Ok(None);
        };
        let url = {
            let members = self.shared.members.read().expect("lock");
            members
                .members
                .get(&leader)
                .and_then(|m| m.client_urls.first().cloned())
        };
        // A leader that has not published its client URLs yet cannot be
        // reached; the caller retries.
        let Some(url) = url else { return Ok(None) };
        let channel = self.coordination.channel_to(&url)?;
        Ok(Some((leader, LeaseClient::new(channel))))
    }

    /// One keep-alive, answered here if this member leads, else forwarded.
    async fn renew(
        &self,
        id: i64,
        forwarded: bool,
        upstream: &mut Option<Upstream>,
    ) -> Result<i64, Status> {
        let deadline = Instant::now() + self.shared.request_timeout;
        loop {
            match self
                .shared
                .ask_lessor(|reply| LeaseQuery::Renew { id, reply })
                .await
            {
                Ok(Ok(ttl)) => return Ok(ttl),
                Ok(Err(LeaseError::NotFound)) => return Ok(0),
                Ok(Err(LeaseError::NotLeader)) if forwarded => return Err(not_leader()),
                Ok(Err(LeaseError::NotLeader)) => {}
                Err(e) => return Err(server_status(e)),
            }
            let error = match self.forward_renew(id, upstream).await {
                Ok(Some(ttl)) => return Ok(ttl),
                Ok(None) => Status::unavailable(ServerError::NoLeader.to_string()),
                Err(status) => status,
            };
            *upstream = None;
            if Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(LEADER_RETRY).await;
        }
    }

    async fn forward_renew(
        &self,
        id: i64,
        upstream: &mut Option<Upstream>,
    ) -> Result<Option<i64>, Status> {
        let Some((leader, mut client)) = self.leader_client()? else {
            return Ok(None);
        };
        if upstream.as_ref().is_none_or(|u| u.leader != leader) {
            let (tx, rx) = mpsc::channel(KEEPALIVE_RESPONSES);
            let call = client.lease_keep_alive(mark_forwarded(ReceiverStream::new(rx)));
            let stream = tokio::time::timeout(FORWARD_TIMEOUT, call)
                .await
                .map_err(|_| Status::unavailable(ServerError::Timeout.to_string()))??
                .into_inner();
            *upstream = Some(Upstream {
                leader,
                tx,
                rx: stream,
            });
        }
        let up = upstream.as_mut().expect("set above");
        up.tx
            .send(pb::LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| not_leader())?;
        match tokio::time::timeout(FORWARD_TIMEOUT, up.rx.message()).await {
            Ok(Ok(Some(response))) => Ok(Some(response.ttl)),
            Ok(Ok(None)) => Err(not_leader()),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::unavailable(ServerError::Timeout.to_string())),
        }
    }

    async fn time_to_live_here_or_forward(
        &self,
        id: i64,
        keys: bool,
        forwarded: bool,
    ) -> Result<pb::LeaseTimeToLiveResponse, Status> {
        let deadline = Instant::now() + self.shared.request_timeout;
        loop {
            let answer: Result<TimeToLive, LeaseError> = self
                .shared
                .ask_lessor(|reply| LeaseQuery::TimeToLive { id, reply })
                .await
                .map_err(server_status)?;
            match answer {
                Ok(ttl) => {
                    let keys = if keys {
                        self.lease_keys(id).await?
                    } else {
                        Vec::new()
                    };
                    return Ok(pb::LeaseTimeToLiveResponse {
                        header: Some(self.header(self.revision_or_zero())),
                        id,
                        ttl: ttl.remaining_secs,
                        granted_ttl: ttl.granted_secs,
                        keys,
                    });
                }
                Err(LeaseError::NotFound) => {
                    return Ok(pb::LeaseTimeToLiveResponse {
                        header: Some(self.header(self.revision_or_zero())),
                        id,
                        ttl: -1,
                        ..Default::default()
                    })
                }
                Err(LeaseError::NotLeader) if forwarded => return Err(not_leader()),
                Err(LeaseError::NotLeader) => {}
            }
            let error = match self.leader_client()? {
                Some((_, mut client)) => {
                    let call =
                        client.lease_time_to_live(mark_forwarded(pb::LeaseTimeToLiveRequest {
                            id,
                            keys,
                        }));
                    match tokio::time::timeout(FORWARD_TIMEOUT, call).await {
                        Ok(Ok(response)) => {
                            let mut response = response.into_inner();
                            response.header = Some(self.header(self.revision_or_zero()));
                            return Ok(response);
                        }
                        Ok(Err(status)) => status,
                        Err(_) => Status::unavailable(ServerError::Timeout.to_string()),
                    }
                }
                None => Status::unavailable(ServerError::NoLeader.to_string()),
            };
            if Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(LEADER_RETRY).await;
        }
    }

    async fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, Status> {
        let reader = self.shared.reader.clone();
        let info = tokio::task::spawn_blocking(move || reader.lease(id))
            .await
            .map_err(|_| Status::internal("concord: lease read failed"))?
            .map_err(|e| super::mvcc_status(&e))?;
        Ok(info.map(|i| i.keys).unwrap_or_default())
    }
}

#[tonic::async_trait]
impl Lease for Api {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let request = request.into_inner();
        self.refuse_if_out_of_space()?;
        if request.ttl > LEASE_TTL_MAX_SECS {
            return Err(super::mvcc_status(&MvccError::LeaseTtlTooLarge));
        }
        let ttl = request.ttl.max(self.coordination.lease_ttl_min_secs);
        let chosen = request.id != 0;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let id = if chosen {
                request.id
            } else {
                self.coordination.next_lease_id()
            };
            let result = self
                .shared
                .propose(Command::LeaseGrant(LeaseGrantRequest { id, ttl }))
                .await;
            match result {
                Ok(output) => match output.response {
                    MvccResponse::LeaseGrant(granted) => {
                        return Ok(Response::new(pb::LeaseGrantResponse {
                            header: Some(self.header(output.revision.0)),
                            id: granted.id,
                            ttl: granted.ttl,
                            error: String::new(),
                        }))
                    }
                    _ => {
                        return Err(Status::internal(
                            "concord: unexpected response to lease grant",
                        ))
                    }
                },
                // Invariant 2: our generated id met a client-chosen one.
                Err(ServerError::Mvcc(MvccError::LeaseExists)) if !chosen && attempts < 3 => {}
                Err(e) => return Err(server_status(e)),
            }
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = request.into_inner().id;
        let output = self
            .shared
            .propose(Command::LeaseRevoke(LeaseRevokeRequest { id }))
            .await
            .map_err(server_status)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(self.header(output.revision.0)),
        }))
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let forwarded = is_forwarded(&request);
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_RESPONSES);
        let api = self.clone();
        tokio::spawn(async move {
            let mut upstream = None;
            loop {
                let request = tokio::select! {
                    _ = tx.closed() => break,
                    request = incoming.next() => request,
                };
                let Some(Ok(request)) = request else { break };
                let reply = match api.renew(request.id, forwarded, &mut upstream).await {
                    Ok(ttl) => Ok(pb::LeaseKeepAliveResponse {
                        header: Some(api.header(api.revision_or_zero())),
                        id: request.id,
                        ttl,
                    }),
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let response = self
            .time_to_live_here_or_forward(request.id, request.keys, forwarded)
            .await?;
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.shared.read_barrier().await.map_err(server_status)?;
        let reader = self.shared.reader.clone();
        let leases = tokio::task::spawn_blocking(move || reader.leases())
            .await
            .map_err(|_| Status::internal("concord: lease read failed"))?
            .map_err(|e| super::mvcc_status(&e))?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.header(self.revision_or_zero())),
            leases: leases
                .into_iter()
                .map(|l| pb::LeaseStatus { id: l.id })
                .collect(),
        }))
    }
}
