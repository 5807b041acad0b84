//! Peer transport: TCP connections between members carrying framed, batched
//! Raft messages and forwarded proposals.
//!
//! Invariants:
//! 1. Sending never blocks the Raft loop: each peer has a bounded outbound
//!    queue, and a full queue drops the message (Raft tolerates loss; the
//!    drop is counted). Memory per peer is therefore bounded.
//! 2. A connection starts with a `Hello` naming the sender and cluster; frames
//!    from another cluster or from an unknown member are refused and the
//!    connection is closed.
//! 3. Bad bytes from a peer close that connection only; the node keeps
//!    serving (the peer reconnects with backoff).
//! 4. Fault injection (test flag only) drops traffic by peer and direction,
//!    inside the transport, so nemeses act on the real code path.

use crate::codec::{decode_frame, encode_frame, frame_len, Frame, FRAME_HEADER_BYTES};
use bytes::{Bytes, BytesMut};
use concord_raft::{Message, NodeId};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Messages queued for one peer, at most. Beyond this the peer is too slow
/// or unreachable and new messages are dropped (Raft retries).
pub const PEER_QUEUE_MESSAGES: usize = 4096;

/// Bytes batched into one frame, at most (one append is capped at 1 MiB).
pub const FRAME_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Reconnect backoff bounds.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(1000);

/// Something a peer sent us.
#[derive(Debug)]
pub enum Inbound {
    /// Raft messages.
    Raft(Vec<Message>),
    /// Proposals forwarded by a follower.
    Forward(Vec<Bytes>),
}

enum Outbound {
    Raft(Message),
    Forward(Bytes),
}

impl Outbound {
    fn size_bytes(&self) -> usize {
        match self {
            Outbound::Raft(m) => match &m.body {
                concord_raft::MessageBody::Append { entries, .. } => {
                    64 + entries.iter().map(|e| e.size_bytes()).sum::<usize>()
                }
                concord_raft::MessageBody::Snapshot { chunk, .. } => 128 + chunk.len(),
                _ => 64,
            },
            Outbound::Forward(b) => 8 + b.len(),
        }
    }
}

/// Directions of traffic the nemesis has cut.
#[derive(Default, Debug)]
pub struct FaultRules {
    /// Peers whose messages we drop on receipt.
    pub drop_from: BTreeSet<NodeId>,
    /// Peers we do not send to.
    pub drop_to: BTreeSet<NodeId>,
}

/// Counters for status pages and tests.
#[derive(Default, Debug)]
pub struct TransportStats {
    /// Messages dropped because a peer queue was full.
    pub dropped_full: AtomicU64,
    /// Frames refused as malformed.
    pub bad_frames: AtomicU64,
}

struct Peer {
    tx: mpsc::Sender<Outbound>,
}

/// The peer transport of one member.
pub struct Transport {
    me: NodeId,
    cluster_id: u64,
    peers: Mutex<HashMap<NodeId, Peer>>,
    /// Known member ids, for validating Hello frames.
    members: RwLock<BTreeSet<NodeId>>,
    faults: RwLock<FaultRules>,
    /// Counters.
    pub stats: TransportStats,
    runtime: tokio::runtime::Handle,
}

impl Transport {
    /// Creates the transport; call [`Transport::add_peer`] for each member.
    pub fn new(me: NodeId, cluster_id: u64, runtime: tokio::runtime::Handle) -> Arc<Transport> {
        Arc::new(Transport {
            me,
            cluster_id,
            peers: Mutex::new(HashMap::new()),
            members: RwLock::new(BTreeSet::new()),
            faults: RwLock::new(FaultRules::default()),
            stats: TransportStats::default(),
            runtime,
        })
    }

    /// Starts (or replaces) the outbound connection to `id` at `addr`.
    pub fn add_peer(self: &Arc<Self>, id: NodeId, addr: String) {
        if id == self.me {
            return;
        }
        self.members.write().expect("lock").insert(id);
        let (tx, rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
        self.peers.lock().expect("lock").insert(id, Peer { tx });
        let transport = Arc::clone(self);
        self.runtime.spawn(async move {
            transport.run_peer_writer(addr, rx).await;
        });
    }

    /// Stops talking to a removed member.
    pub fn remove_peer(&self, id: NodeId) {
        self.peers.lock().expect("lock").remove(&id);
        self.members.write().expect("lock").remove(&id);
    }

    /// Replaces the nemesis rules.
    pub fn set_faults(&self, rules: FaultRules) {
        *self.faults.write().expect("lock") = rules;
    }

    /// Queues Raft messages for their recipients.
    pub fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let faults = self.faults.read().expect("lock");
        let peers = self.peers.lock().expect("lock");
        for m in messages {
            if faults.drop_to.contains(&m.to) {
                continue;
            }
            if let Some(peer) = peers.get(&m.to) {
                if peer.tx.try_send(Outbound::Raft(m)).is_err() {
                    self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Forwards proposals to the leader. Returns false if they could not be
    /// queued (the caller fails the requests).
    pub fn forward(&self, leader: NodeId, proposal: Bytes) -> bool {
        if self.faults.read().expect("lock").drop_to.contains(&leader) {
            return true; // silently lost, like a partitioned network
        }
        let peers = self.peers.lock().expect("lock");
        match peers.get(&leader) {
            Some(peer) => peer.tx.try_send(Outbound::Forward(proposal)).is_ok(),
            None => false,
        }
    }

    async fn run_peer_writer(self: Arc<Self>, addr: String, mut rx: mpsc::Receiver<Outbound>) {
        let mut backoff = RECONNECT_BACKOFF_MIN;
        let mut pending: Option<Outbound> = None;
        loop {
            let mut stream = match TcpStream::connect(&addr).await {
                Ok(s) => s,
                Err(_) => {
                    // Drain what accumulated while the peer is unreachable so
                    // stale messages are not delivered much later in bulk.
                    while rx.try_recv().is_ok() {}
                    if rx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let hello = encode_frame(&Frame::Hello {
                from: self.me,
                cluster_id: self.cluster_id,
            });
            if stream.write_all(&hello).await.is_err() {
                continue;
            }
            backoff = RECONNECT_BACKOFF_MIN;
            loop {
                let first = match pending.take() {
                    Some(o) => o,
                    None => match rx.recv().await {
                        Some(o) => o,
                        None => return,
                    },
                };
                let mut raft = Vec::new();
                let mut forward = Vec::new();
                let mut bytes = first.size_bytes();
                let mut push = |o: Outbound| match o {
                    Outbound::Raft(m) => raft.push(m),
                    Outbound::Forward(b) => forward.push(b),
                };
                push(first);
                while bytes < FRAME_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(o) => {
                            bytes += o.size_bytes();
                            push(o);
                        }
                        Err(_) => break,
                    }
                }
                let mut out = BytesMut::new();
                if !raft.is_empty() {
                    out.extend_from_slice(&encode_frame(&Frame::Raft(raft)));
                }
                if !forward.is_empty() {
                    out.extend_from_slice(&encode_frame(&Frame::Forward(forward)));
                }
                if stream.write_all(&out).await.is_err() {
                    break; // reconnect; the batch is lost, Raft retries
                }
            }
        }
    }

    /// Accepts peer connections and delivers what they send to `deliver`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        deliver: impl Fn(Inbound) + Send + Sync + Clone + 'static,
    ) {
        loop {
            let Ok((stream, remote)) = listener.accept().await else {
                continue;
            };
            let transport = Arc::clone(&self);
            let deliver = deliver.clone();
            tokio::spawn(async move {
                if let Err(reason) = transport.serve_connection(stream, deliver).await {
                    tracing::debug!(%remote, %reason, "peer connection closed");
                }
            });
        }
    }

    async fn read_frame(stream: &mut TcpStream) -> Result<Frame, String> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        stream
            .read_exact(&mut header)
            .await
            .map_err(|e| e.to_string())?;
        let (len, crc) = frame_len(&header).map_err(|e| e.to_string())?;
        let mut payload = vec![0u8; len];
        stream
            .read_exact(&mut payload)
            .await
            .map_err(|e| e.to_string())?;
        decode_frame(Bytes::from(payload), crc).map_err(|e| e.to_string())
    }

    async fn serve_connection(
        &self,
        mut stream: TcpStream,
        deliver: impl Fn(Inbound),
    ) -> Result<(), String> {
        let _ = stream.set_nodelay(true);
        let from = match Self::read_frame(&mut stream).await {
            Ok(Frame::Hello { from, cluster_id }) if cluster_id == self.cluster_id => from,
            Ok(Frame::Hello { cluster_id, .. }) => {
                return Err(format!("cluster id mismatch: {cluster_id:x}"))
            }
            Ok(_) => return Err("expected hello".into()),
            Err(e) => {
                self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if !self.members.read().expect("lock").contains(&from) {
            return Err(format!("unknown member {from}"));
        }
        loop {
            let frame = match Self::read_frame(&mut stream).await {
                Ok(f) => f,
                Err(e) => {
                    self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            if self.faults.read().expect("lock").drop_from.contains(&from) {
                continue;
            }
            match frame {
                Frame::Raft(messages) => {
                    let messages: Vec<Message> =
                        messages.into_iter().filter(|m| m.from == from).collect();
                    deliver(Inbound::Raft(messages));
                }
                Frame::Forward(proposals) => deliver(Inbound::Forward(proposals)),
                Frame::Hello { .. } => return Err("duplicate hello".into()),
            }
        }
    }
}

/// Resolves a URL like `http://127.0.0.1:2380` to `host:port`.
pub fn url_to_addr(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let host_port = rest.split('/').next().unwrap_or(rest);
    if host_port.parse::<SocketAddr>().is_ok() || host_port.contains(':') {
        Ok(host_port.to_string())
    } else {
        Err(format!("URL {url} has no port"))
    }
}
