//! A deliberately tiny, single-node, in-memory etcd used only by this crate's
//! tests. It exists to exercise the generated tonic servers and clients (and
//! the real `etcd-client` crate) over a real TCP socket; its semantics are
//! just good enough for the assertions in the tests, nothing more.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use concord_etcd_proto::etcdserverpb::{
    self as pb, auth_server, cluster_server, compare, kv_server, lease_server, maintenance_server,
    request_op, response_op, watch_request, watch_server,
};
use concord_etcd_proto::mvccpb::{event::EventType, Event, KeyValue};
use concord_etcd_proto::{authpb, v3electionpb as epb, v3lockpb as lpb};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

pub const CLUSTER_ID: u64 = 0xC0C0_0001;
pub const MEMBER_ID: u64 = 0x1111;

type Tx<T> = UnboundedSender<Result<T, Status>>;
type RespStream<T> = UnboundedReceiverStream<Result<T, Status>>;

struct Watcher {
    id: i64,
    key: Vec<u8>,
    range_end: Vec<u8>,
    prev_kv: bool,
    tx: Tx<pb::WatchResponse>,
}

#[derive(Default)]
struct State {
    rev: i64,
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    leases: BTreeMap<i64, i64>,
    next_lease: i64,
    watchers: Vec<Watcher>,
    next_watch: i64,
    observers: Vec<(Vec<u8>, Tx<epb::LeaderResponse>)>,
    members: Vec<pb::Member>,
    alarms: Vec<pb::AlarmMember>,
    users: BTreeMap<String, (String, Vec<String>)>,
    roles: BTreeMap<String, Vec<authpb::Permission>>,
    auth_enabled: bool,
    /// Every `token` metadata value seen on a KV request.
    tokens_seen: Vec<String>,
}

/// `start <= key < end` with etcd's conventions for an empty and a "\0" end.
fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

impl State {
    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: CLUSTER_ID,
            member_id: MEMBER_ID,
            revision: self.rev,
            raft_term: 1,
        })
    }

    fn range(&self, r: &pb::RangeRequest) -> pb::RangeResponse {
        let matched: Vec<&KeyValue> = self
            .kvs
            .values()
            .filter(|kv| in_range(&kv.key, &r.key, &r.range_end))
            .collect();
        let count = matched.len() as i64;
        let limit = if r.limit > 0 {
            r.limit as usize
        } else {
            usize::MAX
        };
        let kvs: Vec<KeyValue> = if r.count_only {
            Vec::new()
        } else {
            matched
                .iter()
                .take(limit)
                .map(|kv| {
                    let mut kv = (*kv).clone();
                    if r.keys_only {
                        kv.value.clear();
                    }
                    kv
                })
                .collect()
        };
        pb::RangeResponse {
            header: self.header(),
            more: !r.count_only && matched.len() > kvs.len(),
            kvs,
            count,
        }
    }

    fn notify(&mut self, ev: Event) {
        let header = self.header();
        let key = ev.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default();
        self.watchers.retain(|w| {
            if !in_range(&key, &w.key, &w.range_end) {
                return true;
            }
            let mut ev = ev.clone();
            if !w.prev_kv {
                ev.prev_kv = None;
            }
            let resp = pb::WatchResponse {
                header,
                watch_id: w.id,
                events: vec![ev],
                ..Default::default()
            };
            w.tx.send(Ok(resp)).is_ok()
        });
    }

    /// Writes one key at revision `wr` (the caller bumps `self.rev`).
    fn put_at(&mut self, wr: i64, p: &pb::PutRequest) -> Result<pb::PutResponse, Status> {
        let prev = self.kvs.get(&p.key).cloned();
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(Status::invalid_argument("etcdserver: key not found"));
        }
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(wr, |kv| kv.create_revision),
            mod_revision: wr,
            version: prev.as_ref().map_or(1, |kv| kv.version + 1),
            value: if p.ignore_value {
                prev.as_ref().map(|kv| kv.value.clone()).unwrap_or_default()
            } else {
                p.value.clone()
            },
            lease: if p.ignore_lease {
                prev.as_ref().map_or(0, |kv| kv.lease)
            } else {
                p.lease
            },
        };
        self.kvs.insert(kv.key.clone(), kv.clone());
        self.rev = wr;
        self.notify(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        Ok(pb::PutResponse {
            header: self.header(),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete_at(&mut self, wr: i64, d: &pb::DeleteRangeRequest) -> pb::DeleteRangeResponse {
        let keys: Vec<Vec<u8>> = self
            .kvs
            .keys()
            .filter(|k| in_range(k, &d.key, &d.range_end))
            .cloned()
            .collect();
        let mut prev_kvs = Vec::new();
        if !keys.is_empty() {
            self.rev = wr;
        }
        for k in &keys {
            if let Some(prev) = self.kvs.remove(k) {
                self.notify(Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(KeyValue {
                        key: k.clone(),
                        mod_revision: wr,
                        ..Default::default()
                    }),
                    prev_kv: Some(prev.clone()),
                });
                prev_kvs.push(prev);
            }
        }
        pb::DeleteRangeResponse {
            header: self.header(),
            deleted: keys.len() as i64,
            prev_kvs: if d.prev_kv { prev_kvs } else { Vec::new() },
        }
    }

    fn compare(&self, c: &pb::Compare) -> bool {
        use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
        let kv = self.kvs.get(&c.key);
        let ord = match (T::try_from(c.target), &c.target_union) {
            (Ok(T::Version), Some(U::Version(v))) => kv.map_or(0, |kv| kv.version).cmp(v),
            (Ok(T::Create), Some(U::CreateRevision(v))) => {
                kv.map_or(0, |kv| kv.create_revision).cmp(v)
            }
            (Ok(T::Mod), Some(U::ModRevision(v))) => kv.map_or(0, |kv| kv.mod_revision).cmp(v),
            (Ok(T::Lease), Some(U::Lease(v))) => kv.map_or(0, |kv| kv.lease).cmp(v),
            (Ok(T::Value), Some(U::Value(v))) => match kv {
                Some(kv) => kv.value.as_slice().cmp(v.as_slice()),
                None => return false,
            },
            _ => return false,
        };
        match R::try_from(c.result) {
            Ok(R::Equal) => ord.is_eq(),
            Ok(R::Greater) => ord.is_gt(),
            Ok(R::Less) => ord.is_lt(),
            Ok(R::NotEqual) => ord.is_ne(),
            Err(_) => false,
        }
    }

    fn txn(&mut self, t: &pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        let succeeded = t.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { &t.success } else { &t.failure };
        let wr = self.rev + 1;
        let mut responses = Vec::new();
        for op in ops {
            let resp = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    response_op::Response::ResponseRange(self.range(r))
                }
                Some(request_op::Request::RequestPut(p)) => {
                    response_op::Response::ResponsePut(self.put_at(wr, p)?)
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    response_op::Response::ResponseDeleteRange(self.delete_at(wr, d))
                }
                Some(request_op::Request::RequestTxn(_)) | None => {
                    return Err(Status::unimplemented("nested txn"))
                }
            };
            responses.push(pb::ResponseOp {
                response: Some(resp),
            });
        }
        Ok(pb::TxnResponse {
            header: self.header(),
            succeeded,
            responses,
        })
    }

    /// Current leader of election `name`: the lowest create_revision under `name/`.
    fn election_leader(&self, name: &[u8]) -> Option<KeyValue> {
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        self.kvs
            .values()
            .filter(|kv| kv.key.starts_with(&prefix))
            .min_by_key(|kv| kv.create_revision)
            .cloned()
    }

    fn notify_observers(&mut self, name: &[u8]) {
        let Some(kv) = self.election_leader(name) else {
            return;
        };
        let header = self.header();
        self.observers.retain(|(n, tx)| {
            n != name
                || tx
                    .send(Ok(epb::LeaderResponse {
                        header,
                        kv: Some(kv.clone()),
                    }))
                    .is_ok()
        });
    }
}

/// Cheap to clone; every clone serves the same store.
#[derive(Clone)]
pub struct MiniEtcd {
    state: Arc<Mutex<State>>,
}

impl Default for MiniEtcd {
    fn default() -> Self {
        let state = State {
            rev: 1,
            next_lease: 0x7000,
            next_watch: 0,
            members: vec![pb::Member {
                id: MEMBER_ID,
                name: "mini".into(),
                peer_ur_ls: vec!["http://127.0.0.1:2380".into()],
                client_ur_ls: vec!["http://127.0.0.1:2379".into()],
                is_learner: false,
            }],
            ..Default::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }
}

fn lease_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut k = name.to_vec();
    k.extend_from_slice(format!("/{lease:x}").as_bytes());
    k
}

impl MiniEtcd {
    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// `token` metadata values seen on KV requests, in order.
    pub fn tokens_seen(&self) -> Vec<String> {
        self.st().tokens_seen.clone()
    }

    fn saw<T>(&self, req: &Request<T>) {
        if let Some(t) = req.metadata().get("token") {
            let t = t.to_str().unwrap_or("<non-ascii>").to_string();
            self.st().tokens_seen.push(t);
        }
    }

    /// Serves every etcd service plus `grpc.health.v1.Health` on
    /// 127.0.0.1:<ephemeral>; the server lives as long as the runtime.
    pub async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reporter, health) = concord_etcd_proto::health::server::health_reporter();
        reporter
            .set_service_status("", concord_etcd_proto::health::ServingStatus::Serving)
            .await;
        let router = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(kv_server::KvServer::new(self.clone()))
            .add_service(watch_server::WatchServer::new(self.clone()))
            .add_service(lease_server::LeaseServer::new(self.clone()))
            .add_service(cluster_server::ClusterServer::new(self.clone()))
            .add_service(maintenance_server::MaintenanceServer::new(self.clone()))
            .add_service(auth_server::AuthServer::new(self.clone()))
            .add_service(lpb::lock_server::LockServer::new(self.clone()))
            .add_service(epb::election_server::ElectionServer::new(self.clone()));
        tokio::spawn(async move {
            router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        addr
    }
}

fn ok<T>(t: T) -> Result<Response<T>, Status> {
    Ok(Response::new(t))
}

#[tonic::async_trait]
impl kv_server::Kv for MiniEtcd {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.saw(&req);
        ok(self.st().range(req.get_ref()))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.saw(&req);
        let mut st = self.st();
        let wr = st.rev + 1;
        st.put_at(wr, req.get_ref()).map(Response::new)
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        self.saw(&req);
        let mut st = self.st();
        let wr = st.rev + 1;
        ok(st.delete_at(wr, req.get_ref()))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        self.saw(&req);
        self.st().txn(req.get_ref()).map(Response::new)
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        self.saw(&req);
        let st = self.st();
        if req.get_ref().revision > st.rev {
            return Err(Status::out_of_range(
                "etcdserver: mvcc: required revision is a future revision",
            ));
        }
        ok(pb::CompactionResponse {
            header: st.header(),
        })
    }
}

#[tonic::async_trait]
impl watch_server::Watch for MiniEtcd {
    type WatchStream = RespStream<pb::WatchResponse>;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = input.message().await {
                let mut st = this.st();
                let header = st.header();
                match msg.request_union {
                    Some(watch_request::RequestUnion::CreateRequest(c)) => {
                        let id = if c.watch_id != 0 {
                            c.watch_id
                        } else {
                            st.next_watch += 1;
                            st.next_watch
                        };
                        // Under the lock, so "created" precedes any event.
                        let _ = tx.send(Ok(pb::WatchResponse {
                            header,
                            watch_id: id,
                            created: true,
                            ..Default::default()
                        }));
                        st.watchers.push(Watcher {
                            id,
                            key: c.key,
                            range_end: c.range_end,
                            prev_kv: c.prev_kv,
                            tx: tx.clone(),
                        });
                    }
                    Some(watch_request::RequestUnion::CancelRequest(c)) => {
                        st.watchers
                            .retain(|w| !(w.id == c.watch_id && w.tx.same_channel(&tx)));
                        let _ = tx.send(Ok(pb::WatchResponse {
                            header,
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        }));
                    }
                    Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                        let _ = tx.send(Ok(pb::WatchResponse {
                            header,
                            watch_id: -1,
                            ..Default::default()
                        }));
                    }
                    None => {}
                }
            }
        });
        ok(UnboundedReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl lease_server::Lease for MiniEtcd {
    type LeaseKeepAliveStream = RespStream<pb::LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        let id = if r.id != 0 {
            r.id
        } else {
            st.next_lease += 1;
            st.next_lease
        };
        st.leases.insert(id, r.ttl);
        ok(pb::LeaseGrantResponse {
            header: st.header(),
            id,
            ttl: r.ttl,
            error: String::new(),
        })
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = req.get_ref().id;
        let mut st = self.st();
        if st.leases.remove(&id).is_none() {
            return Err(Status::not_found("etcdserver: requested lease not found"));
        }
        let keys: Vec<Vec<u8>> = st
            .kvs
            .values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key.clone())
            .collect();
        let wr = st.rev + 1;
        for key in keys {
            st.delete_at(
                wr,
                &pb::DeleteRangeRequest {
                    key,
                    ..Default::default()
                },
            );
        }
        ok(pb::LeaseRevokeResponse {
            header: st.header(),
        })
    }

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = input.message().await {
                let st = this.st();
                let ttl = st.leases.get(&msg.id).copied().unwrap_or(0);
                let resp = pb::LeaseKeepAliveResponse {
                    header: st.header(),
                    id: msg.id,
                    ttl,
                };
                if tx.send(Ok(resp)).is_err() {
                    break;
                }
            }
        });
        ok(UnboundedReceiverStream::new(rx))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let st = self.st();
        let ttl = st.leases.get(&r.id).copied().unwrap_or(-1);
        let keys = if r.keys {
            st.kvs
                .values()
                .filter(|kv| kv.lease == r.id)
                .map(|kv| kv.key.clone())
                .collect()
        } else {
            Vec::new()
        };
        ok(pb::LeaseTimeToLiveResponse {
            header: st.header(),
            id: r.id,
            ttl,
            granted_ttl: ttl,
            keys,
        })
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let st = self.st();
        ok(pb::LeaseLeasesResponse {
            header: st.header(),
            leases: st.leases.keys().map(|&id| pb::LeaseStatus { id }).collect(),
        })
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for MiniEtcd {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        let member = pb::Member {
            id: MEMBER_ID + st.members.len() as u64,
            name: String::new(),
            peer_ur_ls: r.peer_ur_ls,
            client_ur_ls: Vec::new(),
            is_learner: r.is_learner,
        };
        st.members.push(member.clone());
        ok(pb::MemberAddResponse {
            header: st.header(),
            member: Some(member),
            members: st.members.clone(),
        })
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = req.get_ref().id;
        let mut st = self.st();
        let before = st.members.len();
        st.members.retain(|m| m.id != id);
        if st.members.len() == before {
            return Err(Status::not_found("etcdserver: member not found"));
        }
        ok(pb::MemberRemoveResponse {
            header: st.header(),
            members: st.members.clone(),
        })
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        let Some(m) = st.members.iter_mut().find(|m| m.id == r.id) else {
            return Err(Status::not_found("etcdserver: member not found"));
        };
        m.peer_ur_ls = r.peer_ur_ls;
        ok(pb::MemberUpdateResponse {
            header: st.header(),
            members: st.members.clone(),
        })
    }

    async fn member_list(
        &self,
        _req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let st = self.st();
        ok(pb::MemberListResponse {
            header: st.header(),
            members: st.members.clone(),
        })
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = req.get_ref().id;
        let mut st = self.st();
        let Some(m) = st.members.iter_mut().find(|m| m.id == id) else {
            return Err(Status::not_found("etcdserver: member not found"));
        };
        m.is_learner = false;
        ok(pb::MemberPromoteResponse {
            header: st.header(),
            members: st.members.clone(),
        })
    }
}

#[tonic::async_trait]
impl maintenance_server::Maintenance for MiniEtcd {
    type SnapshotStream = RespStream<pb::SnapshotResponse>;

    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let r = req.into_inner();
        let mut st = self.st();
        let member = pb::AlarmMember {
            member_id: r.member_id,
            alarm: r.alarm,
        };
        match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Get) => {}
            Ok(AlarmAction::Activate) => st.alarms.push(member),
            Ok(AlarmAction::Deactivate) => st.alarms.retain(|a| *a != member),
            Err(_) => return Err(Status::invalid_argument("bad alarm action")),
        }
        ok(pb::AlarmResponse {
            header: st.header(),
            alarms: st.alarms.clone(),
        })
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let st = self.st();
        ok(pb::StatusResponse {
            header: st.header(),
            version: "3.4.0".into(),
            db_size: 4096,
            leader: MEMBER_ID,
            raft_index: st.rev as u64,
            raft_term: 1,
            raft_applied_index: st.rev as u64,
            errors: Vec::new(),
            db_size_in_use: 2048,
            is_learner: false,
        })
    }

    async fn defragment(
        &self,
        _req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        ok(pb::DefragmentResponse {
            header: self.st().header(),
        })
    }

    async fn hash(
        &self,
        _req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        ok(pb::HashResponse {
            header: self.st().header(),
            hash: 0xDEAD_BEEF,
        })
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let st = self.st();
        let hash = st
            .kvs
            .values()
            .flat_map(|kv| kv.key.iter().chain(kv.value.iter()))
            .fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(*b)));
        ok(pb::HashKvResponse {
            header: st.header(),
            hash: hash ^ req.get_ref().revision as u32,
            compact_revision: 1,
        })
    }

    async fn snapshot(
        &self,
        _req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let header = self.st().header();
        for (blob, remaining) in [(b"snap".to_vec(), 4u64), (b"shot".to_vec(), 0)] {
            let _ = tx.send(Ok(pb::SnapshotResponse {
                header,
                remaining_bytes: remaining,
                blob,
            }));
        }
        ok(UnboundedReceiverStream::new(rx))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        if req.get_ref().target_id != MEMBER_ID {
            return Err(Status::failed_precondition(
                "etcdserver: bad leader transferee",
            ));
        }
        ok(pb::MoveLeaderResponse {
            header: self.st().header(),
        })
    }
}

#[tonic::async_trait]
impl auth_server::Auth for MiniEtcd {
    async fn auth_enable(
        &self,
        _req: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let mut st = self.st();
        if !st.users.contains_key("root") {
            return Err(Status::failed_precondition(
                "etcdserver: root user does not exist",
            ));
        }
        st.auth_enabled = true;
        ok(pb::AuthEnableResponse {
            header: st.header(),
        })
    }

    async fn auth_disable(
        &self,
        _req: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let mut st = self.st();
        st.auth_enabled = false;
        ok(pb::AuthDisableResponse {
            header: st.header(),
        })
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let r = req.into_inner();
        let st = self.st();
        match st.users.get(&r.name) {
            Some((pw, _)) if *pw == r.password => ok(pb::AuthenticateResponse {
                header: st.header(),
                token: format!("tok-{}", r.name),
            }),
            _ => Err(Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            )),
        }
    }

    async fn user_add(
        &self,
        req: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        if st.users.contains_key(&r.name) {
            return Err(Status::failed_precondition(
                "etcdserver: user name already exists",
            ));
        }
        st.users.insert(r.name, (r.password, Vec::new()));
        ok(pb::AuthUserAddResponse {
            header: st.header(),
        })
    }

    async fn user_get(
        &self,
        req: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let st = self.st();
        let Some((_, roles)) = st.users.get(&req.get_ref().name) else {
            return Err(Status::failed_precondition(
                "etcdserver: user name not found",
            ));
        };
        ok(pb::AuthUserGetResponse {
            header: st.header(),
            roles: roles.clone(),
        })
    }

    async fn user_list(
        &self,
        _req: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let st = self.st();
        ok(pb::AuthUserListResponse {
            header: st.header(),
            users: st.users.keys().cloned().collect(),
        })
    }

    async fn user_delete(
        &self,
        req: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let mut st = self.st();
        st.users.remove(&req.get_ref().name);
        ok(pb::AuthUserDeleteResponse {
            header: st.header(),
        })
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        if let Some(u) = st.users.get_mut(&r.name) {
            u.0 = r.password;
        }
        ok(pb::AuthUserChangePasswordResponse {
            header: st.header(),
        })
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        if let Some(u) = st.users.get_mut(&r.user) {
            u.1.push(r.role);
        }
        ok(pb::AuthUserGrantRoleResponse {
            header: st.header(),
        })
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        if let Some(u) = st.users.get_mut(&r.name) {
            u.1.retain(|x| *x != r.role);
        }
        ok(pb::AuthUserRevokeRoleResponse {
            header: st.header(),
        })
    }

    async fn role_add(
        &self,
        req: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let mut st = self.st();
        st.roles.entry(req.into_inner().name).or_default();
        ok(pb::AuthRoleAddResponse {
            header: st.header(),
        })
    }

    async fn role_get(
        &self,
        req: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let st = self.st();
        let Some(perm) = st.roles.get(&req.get_ref().role) else {
            return Err(Status::failed_precondition(
                "etcdserver: role name not found",
            ));
        };
        ok(pb::AuthRoleGetResponse {
            header: st.header(),
            perm: perm.clone(),
        })
    }

    async fn role_list(
        &self,
        _req: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let st = self.st();
        ok(pb::AuthRoleListResponse {
            header: st.header(),
            roles: st.roles.keys().cloned().collect(),
        })
    }

    async fn role_delete(
        &self,
        req: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let mut st = self.st();
        st.roles.remove(&req.get_ref().role);
        ok(pb::AuthRoleDeleteResponse {
            header: st.header(),
        })
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        let Some(perms) = st.roles.get_mut(&r.name) else {
            return Err(Status::failed_precondition(
                "etcdserver: role name not found",
            ));
        };
        perms.extend(r.perm);
        ok(pb::AuthRoleGrantPermissionResponse {
            header: st.header(),
        })
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        if let Some(perms) = st.roles.get_mut(&r.role) {
            perms.retain(|p| !(p.key == r.key && p.range_end == r.range_end));
        }
        ok(pb::AuthRoleRevokePermissionResponse {
            header: st.header(),
        })
    }
}

#[tonic::async_trait]
impl lpb::lock_server::Lock for MiniEtcd {
    async fn lock(
        &self,
        req: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        let key = lease_key(&r.name, r.lease);
        if !st.kvs.contains_key(&key) {
            let wr = st.rev + 1;
            st.put_at(
                wr,
                &pb::PutRequest {
                    key: key.clone(),
                    lease: r.lease,
                    ..Default::default()
                },
            )?;
        }
        ok(lpb::LockResponse {
            header: st.header(),
            key,
        })
    }

    async fn unlock(
        &self,
        req: Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        let mut st = self.st();
        let wr = st.rev + 1;
        st.delete_at(
            wr,
            &pb::DeleteRangeRequest {
                key: req.into_inner().key,
                ..Default::default()
            },
        );
        ok(lpb::UnlockResponse {
            header: st.header(),
        })
    }
}

#[tonic::async_trait]
impl epb::election_server::Election for MiniEtcd {
    type ObserveStream = RespStream<epb::LeaderResponse>;

    async fn campaign(
        &self,
        req: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.st();
        let key = lease_key(&r.name, r.lease);
        let wr = st.rev + 1;
        st.put_at(
            wr,
            &pb::PutRequest {
                key: key.clone(),
                value: r.value,
                lease: r.lease,
                ..Default::default()
            },
        )?;
        let rev = st.kvs[&key].create_revision;
        st.notify_observers(&r.name);
        ok(epb::CampaignResponse {
            header: st.header(),
            leader: Some(epb::LeaderKey {
                name: r.name,
                key,
                rev,
                lease: r.lease,
            }),
        })
    }

    async fn proclaim(
        &self,
        req: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let r = req.into_inner();
        let leader = r.leader.unwrap_or_default();
        let mut st = self.st();
        match st.kvs.get(&leader.key) {
            Some(kv) if kv.create_revision == leader.rev => {}
            _ => return Err(Status::failed_precondition("election: not leader")),
        }
        let wr = st.rev + 1;
        st.put_at(
            wr,
            &pb::PutRequest {
                key: leader.key.clone(),
                value: r.value,
                lease: leader.lease,
                ..Default::default()
            },
        )?;
        st.notify_observers(&leader.name);
        ok(epb::ProclaimResponse {
            header: st.header(),
        })
    }

    async fn leader(
        &self,
        req: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let st = self.st();
        let Some(kv) = st.election_leader(&req.get_ref().name) else {
            return Err(Status::not_found("election: no leader"));
        };
        ok(epb::LeaderResponse {
            header: st.header(),
            kv: Some(kv),
        })
    }

    async fn observe(
        &self,
        req: Request<epb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let name = req.into_inner().name;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.st();
        if let Some(kv) = st.election_leader(&name) {
            let _ = tx.send(Ok(epb::LeaderResponse {
                header: st.header(),
                kv: Some(kv),
            }));
        }
        st.observers.push((name, tx));
        ok(UnboundedReceiverStream::new(rx))
    }

    async fn resign(
        &self,
        req: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let leader = req.into_inner().leader.unwrap_or_default();
        let mut st = self.st();
        let wr = st.rev + 1;
        st.delete_at(
            wr,
            &pb::DeleteRangeRequest {
                key: leader.key,
                ..Default::default()
            },
        );
        ok(epb::ResignResponse {
            header: st.header(),
        })
    }
}
