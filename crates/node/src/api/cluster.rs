//! `etcdserverpb.Cluster`: the member list and membership changes, which go
//! through Raft as one-at-a-time configuration changes.

use super::{server_status, Api};
use crate::members::{member_id, ConfChangeContext, Members};
use bytes::Bytes;
use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::cluster_server::Cluster;
use concord_raft::{ConfChange, ConfChangeKind, NodeId};
use tonic::{Request, Response, Status};

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

impl Api {
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
        let request = request.into_inner();
        if request.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument("etcdserver: no peer URLs given"));
        }
        for url in &request.peer_ur_ls {
            crate::transport::url_to_addr(url)
                .map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
        }
        {
            let members = self.shared.members.read().expect("lock");
            let taken = members
                .members
                .values()
                .any(|m| m.peer_urls.iter().any(|u| request.peer_ur_ls.contains(u)));
            if taken {
                return Err(Status::failed_precondition(
                    "etcdserver: Peer URLs already exists",
                ));
            }
        }
        // The id is derived from the peer URLs and the cluster token, so the
        // new member computes the same id from its own flags when it joins.
        let id = member_id(&request.peer_ur_ls, &self.cluster_token);
        let context = ConfChangeContext {
            name: String::new(),
            peer_urls: request.peer_ur_ls.clone(),
        };
        let change = ConfChange {
            kind: if request.is_learner {
                ConfChangeKind::AddLearner
            } else {
                ConfChangeKind::AddVoter
            },
            node: NodeId(id),
            context: Bytes::from(serde_json::to_vec(&context).expect("plain data")),
        };
        let members = self
            .shared
            .change_membership(change)
            .await
            .map_err(server_status)?;
        let all = members_to_pb(&members);
        let added = all.iter().find(|m| m.id == id).cloned();
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
        let change = ConfChange {
            kind: ConfChangeKind::Remove,
            node: NodeId(id),
            context: Bytes::new(),
        };
        let members = self
            .shared
            .change_membership(change)
            .await
            .map_err(server_status)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.header(self.revision_now())),
            members: members_to_pb(&members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
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
        let change = ConfChange {
            kind: if is_learner {
                ConfChangeKind::AddLearner
            } else {
                ConfChangeKind::AddVoter
            },
            node: NodeId(request.id),
            context: Bytes::from(serde_json::to_vec(&context).expect("plain data")),
        };
        let members = self
            .shared
            .change_membership(change)
            .await
            .map_err(server_status)?;
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
        let change = ConfChange {
            kind: ConfChangeKind::AddVoter,
            node: NodeId(id),
            context: Bytes::new(),
        };
        let members = self
            .shared
            .change_membership(change)
            .await
            .map_err(server_status)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(self.header(self.revision_now())),
            members: members_to_pb(&members),
        }))
    }
}
