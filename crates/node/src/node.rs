//! Starting and stopping a member: the data directory layout, bootstrap of a
//! new cluster, recovery, and wiring of the replica loop, the peer transport
//! and the client API.
//!
//! Data directory layout (`--data-dir`):
//! ```text
//! member/id.json        member id, cluster id (fixed at first start)
//! member/wal/           write-ahead log segments, hard state, snapshots
//! member/db             MVCC store (redb)
//! member/members.json   member table
//! ```
//!
//! Invariants:
//! 1. A new cluster's log starts with one AddVoter entry per initial member,
//!    identical on every member (term 1, committed), so a member that later
//!    replays the log from index 1 learns the same configuration.
//! 2. On restart the flags about the initial cluster are ignored: identity
//!    and membership come from the data directory, as in etcd.
//! 3. A member started with `--initial-cluster-state existing` and no
//!    identity yet learns its id (and the members' peer URLs) from a member
//!    listed in `--initial-cluster`, matched by its advertised peer URLs
//!    (`transport::join_query`), and persists it before anything else; if
//!    no member lists those URLs it stops: it must be added first.
//! 4. A member whose own id is in the table's removed ids does not start
//!    (members.rs invariant 3).

use crate::api::authority::AuthorityFix;
use crate::api::gateway::{GatewayConfig, GatewayLayer};
use crate::api::{Api, Coordination, GRPC_OVERHEAD_BYTES};
use crate::config::{ClusterState, NodeConfig};
use crate::lessor::LessorConfig;
use crate::members::{member_id, ConfChangeContext, Members, REMOVED_MESSAGE};
use crate::replica::{event_channel, Replica, ReplicaError, ReplicaParts, Request, Shared};
use crate::transport::{url_to_addr, FaultRules, Transport};
use bytes::Bytes;
use concord_etcd_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use concord_etcd_proto::v3electionpb::election_server::ElectionServer;
use concord_etcd_proto::v3lockpb::lock_server::LockServer;
use concord_mvcc::{Store, StoreOptions};
use concord_raft::{
    ConfChange, ConfChangeKind, Config as RaftConfig, Entry, EntryKind, HardState, LogIndex,
    NodeId, Raft, RestoredState, Term,
};
use concord_storage::{RaftStorage, StorageOptions};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tower_layer::Layer;

/// After a failed accept (no descriptors left), how long the client
/// listener waits before it tries again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory could not be read or written.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The write-ahead log is damaged.
    #[error("write-ahead log: {0}")]
    Storage(#[from] concord_storage::StorageError),
    /// The MVCC store is damaged.
    #[error("state machine: {0}")]
    Store(#[from] concord_mvcc::MvccError),
    /// The Raft configuration is invalid.
    #[error("raft: {0}")]
    Raft(#[from] concord_raft::ConfigError),
    /// A joining member could not learn its id from the cluster.
    #[error("joining the cluster: {0}")]
    Join(String),
    /// This member's id was removed from the cluster (invariant 4).
    #[error("{}", REMOVED_MESSAGE)]
    Removed,
}

/// How long a joining member keeps asking the members in
/// `--initial-cluster` for its id (one of them may lag behind the
/// MemberAdd, or still be starting).
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one join question to one member.
const JOIN_QUERY_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) member_id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) name: String,
}

/// A running member.
pub struct RunningNode {
    /// Shared state (ids, leader, store reader).
    pub shared: Arc<Shared>,
    /// The peer transport (fault injection for tests).
    pub transport: Arc<Transport>,
    /// Addresses the client API listens on.
    pub client_addrs: Vec<SocketAddr>,
    runtime: Option<tokio::runtime::Runtime>,
    replica_thread: Option<std::thread::JoinHandle<Result<(), ReplicaError>>>,
}

impl RunningNode {
    /// Blocks until the replica loop stops (fatal error or shutdown).
    pub fn wait(mut self) -> Result<(), ReplicaError> {
        let result = match self.replica_thread.take() {
            Some(handle) => handle.join().unwrap_or(Ok(())),
            None => Ok(()),
        };
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        result
    }

    /// Stops the member cleanly.
    pub fn shutdown(self) -> Result<(), ReplicaError> {
        let _ = self.shared.inbox.send(Request::Shutdown);
        self.wait()
    }

    /// A handle on the runtime, for tasks that must run beside the member.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("runtime lives until wait")
    }
}

/// The cluster id: one per cluster token (members of one cluster share it).
pub fn cluster_id_for(token: &str) -> u64 {
    crate::members::fnv1a64(&[b"concord-cluster", token.as_bytes()]).max(1)
}

pub(crate) fn load_or_create_identity(
    dir: &Path,
    config: &NodeConfig,
) -> Result<Identity, StartError> {
    let path = dir.join("id.json");
    if let Ok(bytes) = std::fs::read(&path) {
        return serde_json::from_slice(&bytes)
            .map_err(|e| StartError::Config(format!("{} is damaged: {e}", path.display())));
    }
    let identity = Identity {
        member_id: member_id(
            &config.initial_advertise_peer_urls,
            &config.initial_cluster_token,
        ),
        cluster_id: cluster_id_for(&config.initial_cluster_token),
        name: config.name.clone(),
    };
    crate::members::write_atomically(&path, &serde_json::to_vec(&identity).expect("plain data"))?;
    Ok(identity)
}

/// Asks the members in `--initial-cluster` (other than this one) which id
/// the cluster gave this member's advertised peer URLs (invariant 3).
/// Returns the id and every member's (id, peer URL).
fn join_cluster(
    config: &NodeConfig,
    cluster_id: u64,
) -> Result<(u64, Vec<(NodeId, String)>), StartError> {
    let mine = &config.initial_advertise_peer_urls;
    let peers: Vec<&String> = config
        .initial_cluster
        .iter()
        .map(|(_, url)| url)
        .filter(|url| !mine.contains(url))
        .collect();
    if peers.is_empty() {
        return Err(StartError::Join(
            "--initial-cluster names no other member to ask for this member's id".into(),
        ));
    }
    let deadline = std::time::Instant::now() + JOIN_TIMEOUT;
    let mut answered_unknown = false;
    let mut last_error = String::new();
    loop {
        for url in &peers {
            let answer = url_to_addr(url).and_then(|addr| {
                crate::transport::join_query(&addr, cluster_id, mine, JOIN_QUERY_TIMEOUT)
            });
            match answer {
                Ok((id, members)) if id != 0 => {
                    tracing::info!(member_id = %format!("{id:x}"), from = %url, "learned this member's id from the cluster");
                    return Ok((id, members));
                }
                Ok(_) => answered_unknown = true,
                Err(e) => last_error = format!("{url}: {e}"),
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(StartError::Join(if answered_unknown {
                format!(
                    "the cluster has no member with peer URLs {}: add it first (MemberAdd, \
                     `etcdctl member add`), then start it with --initial-cluster-state existing",
                    mine.join(",")
                )
            } else {
                format!("no member in --initial-cluster answered (last: {last_error})")
            }));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Initial members grouped by name: (id, name, peer URLs), sorted by id.
pub(crate) fn initial_members(config: &NodeConfig) -> Vec<(u64, String, Vec<String>)> {
    let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, url) in &config.initial_cluster {
        by_name.entry(name.clone()).or_default().push(url.clone());
    }
    let mut out: Vec<(u64, String, Vec<String>)> = by_name
        .into_iter()
        .map(|(name, urls)| (member_id(&urls, &config.initial_cluster_token), name, urls))
        .collect();
    out.sort_by_key(|(id, _, _)| *id);
    out
}

/// Answers a joining member (invariant 3): the id of the member whose peer
/// URLs overlap `peer_urls` (0 if none), and every member's peer URLs.
fn join_directory(shared: &Shared, peer_urls: &[String]) -> (u64, Vec<(NodeId, String)>) {
    let members = shared.members.read().expect("lock");
    let id = members
        .members
        .values()
        .find(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        .map_or(0, |m| m.id);
    let all = members
        .members
        .values()
        .flat_map(|m| m.peer_urls.iter().map(move |u| (NodeId(m.id), u.clone())))
        .collect();
    (id, all)
}

/// Starts a member and returns once it is serving.
pub fn start(config: NodeConfig) -> Result<RunningNode, StartError> {
    config.validate().map_err(StartError::Config)?;
    let member_dir = config.data_dir.join("member");
    std::fs::create_dir_all(&member_dir)?;
    let joining = config.initial_cluster_state == ClusterState::Existing;
    // Invariant 3: a joining member asks the cluster for its id.
    let mut joined_peers = Vec::new();
    let identity = if joining && !member_dir.join("id.json").exists() {
        let cluster_id = cluster_id_for(&config.initial_cluster_token);
        let (id, peers) = join_cluster(&config, cluster_id)?;
        let identity = Identity {
            member_id: id,
            cluster_id,
            name: config.name.clone(),
        };
        crate::members::write_atomically(
            &member_dir.join("id.json"),
            &serde_json::to_vec(&identity).expect("plain data"),
        )?;
        joined_peers = peers;
        identity
    } else {
        load_or_create_identity(&member_dir, &config)?
    };

    let (mut storage, recovered) =
        RaftStorage::open(&member_dir.join("wal"), StorageOptions::default())?;
    for note in &recovered.notes {
        tracing::warn!(?note, "write-ahead log recovery");
    }
    let fresh = recovered.snapshot.is_none()
        && recovered.entries.is_empty()
        && recovered.hard_state == HardState::default();
    let mut hard_state = recovered.hard_state;
    let mut entries = recovered.entries;
    if fresh && config.initial_cluster_state == ClusterState::New {
        // Invariant 1: the same bootstrap entries on every initial member.
        let mut index = LogIndex(0);
        for (id, name, urls) in initial_members(&config) {
            index = index.next();
            let context = ConfChangeContext {
                name,
                peer_urls: urls,
            };
            let change = ConfChange {
                kind: ConfChangeKind::AddVoter,
                node: NodeId(id),
                context: Bytes::from(serde_json::to_vec(&context).expect("plain data")),
            };
            entries.push(Entry {
                term: Term(1),
                index,
                kind: EntryKind::ConfChange,
                data: change.encode(),
            });
        }
        hard_state = HardState {
            term: Term(1),
            vote: None,
            commit: index,
        };
        storage.append(&entries)?;
        storage.set_hard_state(&hard_state)?;
        storage.sync_commit()?;
    }

    let mut store = Store::open(member_dir.join("db"), StoreOptions::default())?;
    let members_path = member_dir.join("members.json");
    let mut members = Members::load(&members_path)?;
    if let Some(snapshot) = &recovered.snapshot {
        let snapshot_index = snapshot.meta.index.0;
        if store.applied_index() < snapshot_index || members.applied_index < snapshot_index {
            let (snap_members, stream) = crate::replica::decode_snapshot(&snapshot.data)
                .map_err(|e| StartError::Config(format!("snapshot: {e}")))?;
            if store.applied_index() < snapshot_index {
                // A reference snapshot promises the store already holds it.
                let Some(stream) = stream else {
                    return Err(StartError::Config(format!(
                        "the store in {} is at index {} but the snapshot at {snapshot_index} \
                         says it was durable there: the db file was replaced or lost",
                        member_dir.display(),
                        store.applied_index()
                    )));
                };
                store.restore_from(stream)?;
                crate::replica::compact_after_restore(&mut store);
            }
            if members.applied_index < snapshot_index {
                members = snap_members;
                members.applied_index = snapshot_index;
                members.save(&members_path)?;
            }
        }
    }
    if members.removed.contains(&identity.member_id) {
        // Invariant 4.
        return Err(StartError::Removed);
    }
    if joining && joined_peers.is_empty() && members.members.is_empty() {
        // Joined before, but stopped before learning any member: ask again
        // for the peers (the id is ours already).
        let (id, peers) = join_cluster(&config, identity.cluster_id)?;
        if id != identity.member_id {
            return Err(StartError::Join(format!(
                "{} belongs to member {:x}, but the cluster knows these peer URLs as {id:x}",
                member_dir.display(),
                identity.member_id
            )));
        }
        joined_peers = peers;
    }
    let applied = LogIndex(store.applied_index().min(members.applied_index));

    let election_ticks = (config.election_timeout_ms / config.heartbeat_interval_ms).max(5) as u32;
    let mut raft_config = RaftConfig::new(
        NodeId(identity.member_id),
        identity.member_id ^ std::process::id() as u64,
    );
    raft_config.election_timeout_ticks_min = election_ticks;
    raft_config.election_timeout_ticks_max = election_ticks * 2;
    raft_config.heartbeat_interval_ticks = 1;
    let mut raft = Raft::new(
        raft_config,
        RestoredState {
            hard_state,
            snapshot: recovered.snapshot,
            entries,
            initial_conf: Default::default(),
            applied,
        },
    )?;
    // The snapshot is durable in its file; the core asks for it back only
    // when a follower needs it (see crate::snapshotter).
    raft.release_snapshot_data();

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime
        .worker_threads(client_io_threads())
        .enable_all()
        .thread_name("concord-io");
    // A finished request must not hand its HTTP/2 connection the LIFO slot:
    // that flushes each response alone (see .cargo/config.toml).
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    let runtime = runtime.build()?;
    let transport = Transport::new(
        NodeId(identity.member_id),
        identity.cluster_id,
        runtime.handle().clone(),
    );
    // Peers known from the flags (a new cluster's ids derive from them) or
    // from the cluster this member joined, and from the member table;
    // conf changes applied later add or remove more. Removed ids first, so
    // none of them becomes a peer again.
    for id in &members.removed {
        transport.mark_removed(NodeId(*id));
    }
    if !joining {
        for (id, _, urls) in initial_members(&config) {
            if let Some(addr) = urls.first().and_then(|u| url_to_addr(u).ok()) {
                transport.add_peer(NodeId(id), addr);
            }
        }
    }
    for (id, url) in &joined_peers {
        if let Ok(addr) = url_to_addr(url) {
            transport.add_peer(*id, addr);
        }
    }
    for member in members.members.values() {
        if let Some(addr) = member.peer_urls.first().and_then(|u| url_to_addr(u).ok()) {
            transport.add_peer(NodeId(member.id), addr);
        }
    }

    let (inbox_tx, inbox_rx) = crate::inbox::inbox();
    let is_learner = members
        .members
        .get(&identity.member_id)
        .is_some_and(|m| m.is_learner);
    let shared = Arc::new(Shared {
        member_id: identity.member_id,
        cluster_id: identity.cluster_id,
        name: config.name.clone(),
        leader: AtomicU64::new(0),
        term: AtomicU64::new(hard_state.term.0),
        commit_index: AtomicU64::new(hard_state.commit.0),
        applied_index: AtomicU64::new(store.applied_index()),
        is_learner: AtomicBool::new(is_learner),
        stopped: AtomicBool::new(false),
        members: RwLock::new(members.clone()),
        reader: store.reader(),
        inbox: inbox_tx.clone(),
        events: event_channel(),
        request_timeout: Duration::from_millis(5000 + 2 * config.election_timeout_ms),
        tick_scale_percent: AtomicU64::new(100),
    });

    // Listeners are bound before the loop starts so a port clash is an error
    // at start, not a silent failure later.
    let peer_addr = url_to_addr(&config.listen_peer_urls[0]).map_err(StartError::Config)?;
    let peer_listener = runtime
        .block_on(tokio::net::TcpListener::bind(&peer_addr))
        .map_err(|e| StartError::Config(format!("cannot listen on peer URL {peer_addr}: {e}")))?;
    let mut client_listeners = Vec::new();
    for url in &config.listen_client_urls {
        let addr = url_to_addr(url).map_err(StartError::Config)?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(&addr))
            .map_err(|e| StartError::Config(format!("cannot listen on client URL {addr}: {e}")))?;
        client_listeners.push(listener);
    }
    let client_addrs: Vec<SocketAddr> = client_listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();

    let deliver_inbox = inbox_tx.clone();
    let transport_for_peers = Arc::clone(&transport);
    let directory_shared = Arc::clone(&shared);
    runtime.spawn(async move {
        transport_for_peers
            .serve(
                peer_listener,
                move |peer| {
                    let _ = deliver_inbox.send(Request::PeerConnection(peer));
                },
                move |peer_urls: &[String]| join_directory(&directory_shared, peer_urls),
            )
            .await;
    });

    let api = Api {
        shared: Arc::clone(&shared),
        max_request_bytes: config.max_request_bytes,
        max_txn_ops: config.max_txn_ops,
        cluster_token: config.initial_cluster_token.clone(),
        coordination: Arc::new(Coordination::new(
            identity.member_id,
            Duration::from_millis(config.election_timeout_ms),
        )),
    };
    runtime.spawn(crate::alarm::watch_quota(
        Arc::clone(&shared),
        config.quota_backend_bytes,
    ));
    let max_message = config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let max_request_bytes = config.max_request_bytes;
    for listener in client_listeners {
        let api = api.clone();
        runtime.spawn(async move {
            let (health_reporter, health_service) =
                concord_etcd_proto::health::server::health_reporter();
            health_reporter
                .set_service_status("", concord_etcd_proto::health::ServingStatus::Serving)
                .await;
            let routes = tonic::service::Routes::new(
                KvServer::new(api.clone())
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(max_message))
            .add_service(
                WatchServer::new(api.clone())
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(max_message))
            .add_service(LockServer::new(api.clone()).max_decoding_message_size(max_message))
            .add_service(ElectionServer::new(api.clone()).max_decoding_message_size(max_message))
            .add_service(MaintenanceServer::new(api.clone()).max_decoding_message_size(max_message))
            .add_service(health_service)
            .prepare();
            // Every request that is not gRPC goes to etcd's JSON gateway
            // (api/gateway.rs), over HTTP/1.1 or HTTP/2.
            let services = GatewayLayer::new(GatewayConfig::new(max_request_bytes)).layer(routes);
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: the listener
                        // recovers when connections close; do not spin.
                        tracing::warn!(error = %e, "accepting a client connection");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                // Without NODELAY every response's trailers wait for the
                // client's delayed ACK (~40 ms per request).
                let _ = stream.set_nodelay(true);
                // AuthorityFix: etcd's Go clients may send `:authority` with
                // a scheme, which h2 would refuse (api/authority.rs).
                tokio::spawn(crate::api::serve::serve_connection(
                    AuthorityFix::new(stream),
                    api.clone(),
                    services.clone(),
                    max_message,
                ));
            }
        });
    }

    let replica = Replica::new(ReplicaParts {
        raft,
        storage,
        store,
        members,
        members_path,
        transport: Arc::clone(&transport),
        shared: Arc::clone(&shared),
        inbox: inbox_rx,
        tick: Duration::from_millis(config.heartbeat_interval_ms),
        snapshot_count: config.snapshot_count,
        snapshot_catchup_entries: config.snapshot_catchup_entries,
        client_urls: config.advertise_client_urls.clone(),
        lessor: LessorConfig {
            promotion_extension: Duration::from_millis(config.election_timeout_ms),
            revoke_retry: Duration::from_millis(2 * config.election_timeout_ms)
                .max(Duration::from_secs(1)),
            ..LessorConfig::default()
        },
    })?;
    let replica_thread = std::thread::Builder::new()
        .name("concord-raft".into())
        .spawn(move || replica.run())?;

    transport.set_faults(FaultRules::default());
    if config.enable_fault_injection {
        if let Some(url) = &config.fault_admin_url {
            let addr = url_to_addr(url).map_err(StartError::Config)?;
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(&addr))
                .map_err(|e| {
                    StartError::Config(format!("cannot listen on admin URL {addr}: {e}"))
                })?;
            let state = crate::admin::AdminState {
                shared: Arc::clone(&shared),
                transport: Arc::clone(&transport),
            };
            runtime.spawn(crate::admin::serve(listener, state));
        }
    }
    Ok(RunningNode {
        shared,
        transport,
        client_addrs,
        runtime: Some(runtime),
        replica_thread: Some(replica_thread),
    })
}

/// Worker threads for the client port (and the peer links' writer tasks):
/// half the CPUs, at least one. The other half is for the threads that
/// carry every write, the replica loop, the WAL writer and the store's
/// writeback. On 2 vCPUs one worker beat two (BENCHMARKS.md, session 12:
/// puts at 256 clients +5-10% with 11-17% less CPU per put over two sets
/// of 3 interleaved rounds, 64 clients level):
/// a second worker mostly adds wake-ups, since tokio wakes an idle worker
/// to steal whenever a task is scheduled from the loop's thread.
fn client_io_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}
