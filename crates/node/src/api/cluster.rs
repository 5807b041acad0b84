//! `etcdserverpb.Cluster`: the member list and membership changes, which go
//! through Raft as one-at-a-time configuration changes.
//!
//! Only the leader proposes a configuration change. A follower forwards
//! MemberAdd/Remove/Update/Promote to the leader as a gRPC client of the
//! leader's client URL (from the member table), marked with
//! [`FORWARDED_METADATA`] so that a member that is not the leader any more
//! refuses instead of forwarding again (no loops), then waits until its own
//! member table shows the change, so a MemberList sent to it next sees it
//! (etcd's follower also answers only once the change applied locally).
//!
//! ```text
//!  client ─MemberAdd─▶ follower ─MemberAdd (forwarded)─▶ leader: conf change
//!         ◀─members───  (waits until applied here)  ◀──members──
//! ```
//!
//! Invariants:
//! 1. The whole call, forwarding and retries included, is bounded by the
//!    member's request timeout.
//! 2. A change is never applied twice: an attempt is retried (on a new
//!    leader) only when it surely did not reach Raft ([`Attempt::Retry`]):
//!    - no leader is known, or its client URL is not published yet;
//!    - the connection to the leader could not be opened (the request was
//!      never sent: each forward opens its own connection first);
//!    - the member called answered that it refused before proposing:
//!      "not leader" (a forwarded call reaching a member that does not
//!      lead), or etcd's "no leader" / "leader changed", which the leader's
//!      replica loop answers only when Raft refused the proposal
//!      (`replica::propose_error`).
//!
//!    Anything else is returned as is ([`Attempt::Fail`]), including a
//!    connection that broke after the request was sent and a timeout after
//!    the proposal: the change may still apply, as with etcd's own
//!    "request timed out". The client decides (MemberList shows whether
//!    it did).
//! 3. MemberAdd gives the new member a fresh id chosen by the member that
//!    proposes the change (the leader; see `members::fresh_member_id`),
//!    never one that is a member or was removed; a follower that forwarded
//!    the call reports the id the leader answered.

use super::lease::FORWARDED_METADATA;
use super::{server_status, Api};
use crate::members::{fresh_member_id, ConfChangeContext, Members};
use crate::replica::ServerError;
use bytes::Bytes;
use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::cluster_client::ClusterClient;
use concord_etcd_proto::etcdserverpb::cluster_server::Cluster;
use concord_raft::{ConfChange, ConfChangeKind, NodeId};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Pause between attempts to reach a leader.
const LEADER_RETRY: Duration = Duration::from_millis(50);

/// The message of a forwarded call that reached a member not leading.
const NOT_LEADER: &str = "etcdserver: not leader";

/// A call of the leader's Cluster service, boxed so the four RPCs share the
/// forwarding loop.
type LeaderCall<T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>;

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

/// etcd's answer when the leader could not be reached in time.
const CONNECTION_LOST: &str = "etcdserver: request timed out, possibly due to connection lost";

/// How long opening a connection to the leader may take.
const LEADER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of one failed attempt (invariant 2).
enum Attempt {
    /// Surely did not reach Raft: may be sent again.
    Retry(Status),
    /// May have reached Raft, or was refused for good: returned as is.
    Fail(Status),
}

/// Whether an error answered by the member called (or by this member's
/// own replica loop) says the change was refused before it was proposed
/// (invariant 2).
fn refused_before_proposal(status: &Status) -> bool {
    let message = status.message();
    message == NOT_LEADER
        || message == ServerError::NoLeader.to_string()
        || message == ServerError::LeaderChanged.to_string()
}

fn classify(status: Status) -> Attempt {
    if refused_before_proposal(&status) {
        Attempt::Retry(status)
    } else {
        Attempt::Fail(status)
    }
}

fn members_to_pb(members: &Members) -> Vec<pb::Member> {
    members
        .members
        .values()
        .map(|m| pb::Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: m.client_urls.clone(),
            is_learner: m.is_learner,
        })
        .collect()
}

/// Where a membership change is carried out.
enum Route {
    /// This member leads: propose here.
    Here,
    /// Another member leads: call it at this client URL.
    Leader(String),
}

/// Opens a connection of its own to the leader, so that a failure here
/// means the request was never sent (invariant 2).
async fn connect(url: &str) -> Result<ClusterClient<Channel>, Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| Status::unavailable(format!("etcdserver: leader URL {url}: {e}")))?
        .connect_timeout(LEADER_CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|_| Status::unavailable(CONNECTION_LOST))?;
    Ok(ClusterClient::new(channel))
}

impl Api {
    /// Carries out a membership change: proposed here when this member
    /// leads (`change` builds it, each time anew), else forwarded to the
    /// leader (see the module doc); then waits until the local member
    /// table satisfies `applied` given the leader's answer. Returns the
    /// member table and, if forwarded, the leader's answer.
    async fn change_on_leader<T: Send + 'static>(
        &self,
        forwarded: bool,
        change: impl Fn(&Members) -> Result<ConfChange, Status>,
        forward: impl Fn(ClusterClient<Channel>) -> LeaderCall<T>,
        applied: impl Fn(&Members, &T) -> bool,
    ) -> Result<(Members, Option<T>), Status> {
        let deadline = Instant::now() + self.shared.request_timeout;
        loop {
            let attempt = match self.route(forwarded)? {
                Some(Route::Here) => {
                    let change = change(&self.shared.members.read().expect("lock"))?;
                    match self.shared.change_membership(change).await {
                        Ok(members) => return Ok((members, None)),
                        Err(e) => classify(server_status(e)),
                    }
                }
                Some(Route::Leader(url)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let call = async {
                        let client = match connect(&url).await {
                            Ok(client) => client,
                            Err(status) => return Err(Attempt::Retry(status)),
                        };
                        let answer = match forward(client).await {
                            Ok(answer) => answer.into_inner(),
                            Err(status) => return Err(classify(status)),
                        };
                        match self.wait_applied(deadline, |m| applied(m, &answer)).await {
                            Ok(members) => Ok((members, Some(answer))),
                            Err(status) => Err(Attempt::Fail(status)),
                        }
                    };
                    match tokio::time::timeout(left, call).await {
                        Ok(Ok(done)) => return Ok(done),
                        Ok(Err(attempt)) => attempt,
                        Err(_) => Attempt::Fail(server_status(ServerError::Timeout)),
                    }
                }
                None => Attempt::Retry(server_status(ServerError::NoLeader)),
            };
            match attempt {
                Attempt::Retry(status) if Instant::now() < deadline => {
                    tracing::debug!(%status, "membership change not proposed; retrying");
                }
                Attempt::Retry(status) | Attempt::Fail(status) => return Err(status),
            }
            tokio::time::sleep(LEADER_RETRY).await;
        }
    }

    /// Where a change goes now; `None` while no leader is known (or its
    /// client URL is not published yet).
    fn route(&self, forwarded: bool) -> Result<Option<Route>, Status> {
        let Some(leader) = self.shared.leader() else {
            return Ok(None);
        };
        if leader == self.shared.member_id {
            return Ok(Some(Route::Here));
        }
        if forwarded {
            // Invariant: a forwarded call is never forwarded again.
            return Err(Status::unavailable(NOT_LEADER));
        }
        let url = self
            .shared
            .members
            .read()
            .expect("lock")
            .members
            .get(&leader)
            .and_then(|m| m.client_urls.first().cloned());
        Ok(url.map(Route::Leader))
    }

    /// Waits until the local member table satisfies `applied` (the change
    /// the leader applied reached this member).
    async fn wait_applied(
        &self,
        deadline: Instant,
        applied: impl Fn(&Members) -> bool,
    ) -> Result<Members, Status> {
        loop {
            let members = self.shared.members.read().expect("lock").clone();
            if applied(&members) {
                return Ok(members);
            }
            if Instant::now() >= deadline {
                return Err(server_status(ServerError::Timeout));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn member_list_now(&self) -> Vec<pb::Member> {
        members_to_pb(&self.shared.members.read().expect("lock"))
    }

    fn revision_now(&self) -> i64 {
        self.shared
            .reader
            .current_revision()
            .map(|r| r.0)
            .unwrap_or(0)
    }
}

#[tonic::async_trait]
impl Cluster for Api {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        if request.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument("etcdserver: no peer URLs given"));
        }
        for url in &request.peer_ur_ls {
            crate::transport::url_to_addr(url)
                .map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
        }
        let urls_taken = |members: &Members| {
            members
                .members
                .values()
                .any(|m| m.peer_urls.iter().any(|u| request.peer_ur_ls.contains(u)))
        };
        if urls_taken(&self.shared.members.read().expect("lock")) {
            return Err(Status::failed_precondition(
                "etcdserver: Peer URLs already exists",
            ));
        }
        // Invariant 3: a fresh id, chosen where the change is proposed; the
        // new member learns it from the cluster when it joins.
        let change = |members: &Members| {
            if urls_taken(members) {
                return Err(Status::failed_precondition(
                    "etcdserver: Peer URLs already exists",
                ));
            }
            let mut now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            let mut id = fresh_member_id(&request.peer_ur_ls, &self.cluster_token, now);
            while members.members.contains_key(&id) || members.removed.contains(&id) {
                now = now.wrapping_add(1);
                id = fresh_member_id(&request.peer_ur_ls, &self.cluster_token, now);
            }
            let context = ConfChangeContext {
                name: String::new(),
                peer_urls: request.peer_ur_ls.clone(),
            };
            Ok(ConfChange {
                kind: if request.is_learner {
                    ConfChangeKind::AddLearner
                } else {
                    ConfChangeKind::AddVoter
                },
                node: NodeId(id),
                context: Bytes::from(serde_json::to_vec(&context).expect("plain data")),
            })
        };
        let (members, answer) = self
            .change_on_leader(
                forwarded,
                change,
                |mut leader| {
                    let request = mark_forwarded(request.clone());
                    Box::pin(async move { leader.member_add(request).await })
                },
                |m, answer: &pb::MemberAddResponse| {
                    answer
                        .member
                        .as_ref()
                        .is_none_or(|added| m.members.contains_key(&added.id))
                },
            )
            .await?;
        let all = members_to_pb(&members);
        // The leader's answer names the id it chose; proposed here, the
        // added member is the one with the requested peer URLs.
        let added = match answer.and_then(|a| a.member) {
            Some(added) => all
                .iter()
                .find(|m| m.id == added.id)
                .cloned()
                .or(Some(added)),
            None => all
                .iter()
                .find(|m| m.peer_ur_ls == request.peer_ur_ls)
                .cloned(),
        };
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.header(self.revision_now())),
            member: added,
            members: all,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let id = request.into_inner().id;
        if !self
            .shared
            .members
            .read()
            .expect("lock")
            .members
            .contains_key(&id)
        {
            return Err(Status::not_found("etcdserver: member not found"));
        }
        let change = |_: &Members| {
            Ok(ConfChange {
                kind: ConfChangeKind::Remove,
                node: NodeId(id),
                context: Bytes::new(),
            })
        };
        let (members, _) = self
            .change_on_leader(
                forwarded,
                change,
                |mut leader| {
                    let request = mark_forwarded(pb::MemberRemoveRequest { id });
                    Box::pin(async move { leader.member_remove(request).await })
                },
                |m, _| !m.members.contains_key(&id),
            )
            .await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.header(self.revision_now())),
            members: members_to_pb(&members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        if request.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument("etcdserver: no peer URLs given"));
        }
        for url in &request.peer_ur_ls {
            crate::transport::url_to_addr(url)
                .map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
        }
        let is_learner = {
            let members = self.shared.members.read().expect("lock");
            let Some(member) = members.members.get(&request.id) else {
                return Err(Status::not_found("etcdserver: member not found"));
            };
            let taken = members.members.values().any(|m| {
                m.id != request.id && m.peer_urls.iter().any(|u| request.peer_ur_ls.contains(u))
            });
            if taken {
                return Err(Status::failed_precondition(
                    "etcdserver: Peer URLs already exists",
                ));
            }
            member.is_learner
        };
        // Re-adding a member in its current role changes nothing in Raft's
        // configuration; applying it replaces the peer URLs in the member
        // table and re-points the transport (etcd's UpdateNode).
        let context = ConfChangeContext {
            name: String::new(),
            peer_urls: request.peer_ur_ls.clone(),
        };
        let change = |_: &Members| {
            Ok(ConfChange {
                kind: if is_learner {
                    ConfChangeKind::AddLearner
                } else {
                    ConfChangeKind::AddVoter
                },
                node: NodeId(request.id),
                context: Bytes::from(serde_json::to_vec(&context).expect("plain data")),
            })
        };
        let (members, _) = self
            .change_on_leader(
                forwarded,
                change,
                |mut leader| {
                    let request = mark_forwarded(request.clone());
                    Box::pin(async move { leader.member_update(request).await })
                },
                |m, _| {
                    m.members
                        .get(&request.id)
                        .is_none_or(|member| member.peer_urls == request.peer_ur_ls)
                },
            )
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: Some(self.header(self.revision_now())),
            members: members_to_pb(&members),
        }))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header(self.revision_now())),
            members: self.member_list_now(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let id = request.into_inner().id;
        let is_learner = {
            let members = self.shared.members.read().expect("lock");
            match members.members.get(&id) {
                None => return Err(Status::not_found("etcdserver: member not found")),
                Some(m) => m.is_learner,
            }
        };
        if !is_learner {
            return Err(Status::failed_precondition(
                "etcdserver: can only promote a learner member",
            ));
        }
        // The leader's replica loop refuses a learner that is not in sync
        // (etcd's "can only promote a learner member which is in sync with
        // leader"; `replica::PROMOTE_READY_PERCENT`).
        let change = |_: &Members| {
            Ok(ConfChange {
                kind: ConfChangeKind::AddVoter,
                node: NodeId(id),
                context: Bytes::new(),
            })
        };
        let (members, _) = self
            .change_on_leader(
                forwarded,
                change,
                |mut leader| {
                    let request = mark_forwarded(pb::MemberPromoteRequest { id });
                    Box::pin(async move { leader.member_promote(request).await })
                },
                |m, _| m.members.get(&id).is_none_or(|member| !member.is_learner),
            )
            .await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(self.header(self.revision_now())),
            members: members_to_pb(&members),
        }))
    }
}
