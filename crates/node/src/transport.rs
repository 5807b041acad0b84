//! Peer transport: TCP connections between members carrying framed, batched
//! Raft messages and forwarded proposals.
//!
//! Invariants:
//! 1. Sending never blocks the Raft loop: a send writes to the peer's socket
//!    without blocking or joins its bounded outbound queue, and a full queue
//!    drops the message (Raft tolerates loss; the drop is counted). Memory
//!    per peer is therefore bounded. (See [`crate::peer_link`].)
//! 2. A connection starts with a `Hello` naming the sender and cluster; frames
//!    from another cluster or from an unknown member are refused and the
//!    connection is closed. Every frame is checked again against the current
//!    members, so a connection opened before its sender was removed carries
//!    nothing after.
//! 5. A removed id (members.rs invariant 3) is never a peer again: its
//!    connections are answered with `Removed` and closed, and `add_peer`
//!    ignores it. A member told `Removed` by a peer raises
//!    [`Transport::removed_from_cluster`], and its replica loop stops.
//! 6. A member joining a running cluster learns its id on a one-shot
//!    connection ([`join_query`], answered from the member table by the
//!    `directory` given to [`Transport::serve`]).
//! 3. Bad bytes from a peer close that connection only; the node keeps
//!    serving (the peer reconnects with backoff).
//! 4. Fault injection (test flag only) drops traffic by peer and direction,
//!    inside the transport, so nemeses act on the real code path.
//! 7. An inbound connection is read by the tokio runtime only up to its
//!    `Hello`; from then on the replica loop reads it ([`InboundPeer`]),
//!    non-blocking and at most [`READ_BYTES_PER_TURN`] per turn, with the
//!    same checks (2, 3, 4, 5) on every frame.

use crate::codec::{decode_frame, encode_frame, frame_len, Frame, FRAME_HEADER_BYTES};
use crate::peer_link::{self, Next, Outbound, PeerLink};
use bytes::{Bytes, BytesMut};
use concord_raft::{Message, NodeId};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use crate::peer_link::{FRAME_BATCH_BYTES, PEER_QUEUE_MESSAGES};

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
    link: Arc<PeerLink>,
}

/// The peer transport of one member.
pub struct Transport {
    me: NodeId,
    cluster_id: u64,
    peers: Mutex<HashMap<NodeId, Peer>>,
    /// Known member ids, for validating Hello frames.
    members: RwLock<BTreeSet<NodeId>>,
    /// Removed member ids (invariant 5).
    removed: RwLock<BTreeSet<NodeId>>,
    /// A peer told us our id was removed.
    removed_from_cluster: AtomicBool,
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
            removed: RwLock::new(BTreeSet::new()),
            removed_from_cluster: AtomicBool::new(false),
            faults: RwLock::new(FaultRules::default()),
            stats: TransportStats::default(),
            runtime,
        })
    }

    /// Starts (or replaces) the outbound connection to `id` at `addr`.
    /// A removed id is ignored (invariant 5).
    pub fn add_peer(self: &Arc<Self>, id: NodeId, addr: String) {
        if id == self.me || self.removed.read().expect("lock").contains(&id) {
            return;
        }
        self.members.write().expect("lock").insert(id);
        let link = Arc::new(PeerLink::default());
        let old = self.peers.lock().expect("lock").insert(
            id,
            Peer {
                link: Arc::clone(&link),
            },
        );
        if let Some(old) = old {
            old.link.close();
        }
        let transport = Arc::clone(self);
        self.runtime.spawn(async move {
            transport.run_peer_writer(addr, link).await;
        });
    }

    /// Stops talking to a removed member.
    pub fn remove_peer(&self, id: NodeId) {
        if let Some(peer) = self.peers.lock().expect("lock").remove(&id) {
            peer.link.close();
        }
        self.members.write().expect("lock").remove(&id);
    }

    /// Refuses `id` for good: it was removed from the cluster.
    pub fn mark_removed(&self, id: NodeId) {
        self.removed.write().expect("lock").insert(id);
        self.remove_peer(id);
    }

    /// Whether a peer answered that this member's id was removed.
    pub fn removed_from_cluster(&self) -> bool {
        self.removed_from_cluster.load(Ordering::Acquire)
    }

    /// Replaces the nemesis rules.
    pub fn set_faults(&self, rules: FaultRules) {
        *self.faults.write().expect("lock") = rules;
    }

    /// Sends Raft messages to their recipients: one frame per recipient,
    /// written on this thread when its link is idle (see
    /// [`crate::peer_link`]).
    pub fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        // Recipients in order of first appearance; a Ready names a handful.
        let mut by_peer: Vec<(NodeId, Vec<Outbound>)> = Vec::new();
        {
            let faults = self.faults.read().expect("lock");
            for m in messages {
                if faults.drop_to.contains(&m.to) {
                    continue;
                }
                match by_peer.iter_mut().find(|(to, _)| *to == m.to) {
                    Some((_, items)) => items.push(Outbound::Raft(m)),
                    None => by_peer.push((m.to, vec![Outbound::Raft(m)])),
                }
            }
        }
        for (to, items) in by_peer {
            // The map lock is not held across the write.
            let link = self.link(to);
            if let Some(link) = link {
                let dropped = link.offer(items);
                if dropped > 0 {
                    self.stats
                        .dropped_full
                        .fetch_add(dropped as u64, Ordering::Relaxed);
                }
            }
        }
    }

    fn link(&self, id: NodeId) -> Option<Arc<PeerLink>> {
        let peers = self.peers.lock().expect("lock");
        peers.get(&id).map(|peer| Arc::clone(&peer.link))
    }

    /// Forwards proposals to the leader. Returns false if they could not be
    /// queued (the caller fails the requests).
    pub fn forward(&self, leader: NodeId, proposal: Bytes) -> bool {
        if self.faults.read().expect("lock").drop_to.contains(&leader) {
            return true; // silently lost, like a partitioned network
        }
        match self.link(leader) {
            Some(link) => link.offer(vec![Outbound::Forward(proposal)]) == 0,
            None => false,
        }
    }

    async fn run_peer_writer(self: Arc<Self>, addr: String, link: Arc<PeerLink>) {
        let mut backoff = RECONNECT_BACKOFF_MIN;
        loop {
            if link.is_closed() {
                return;
            }
            let mut stream = match TcpStream::connect(&addr).await {
                Ok(s) => s,
                Err(_) => {
                    link.disconnected();
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
            // The peer writes back only to say we were removed (invariant 5).
            let (mut answers, stream) = stream.into_split();
            let transport = Arc::clone(&self);
            tokio::spawn(async move {
                if let Ok(Frame::Removed) = FrameReader::default().next(&mut answers).await {
                    tracing::error!("a peer answered: {}", crate::members::REMOVED_MESSAGE);
                    transport
                        .removed_from_cluster
                        .store(true, Ordering::Release);
                }
            });
            backoff = RECONNECT_BACKOFF_MIN;
            let socket = Arc::new(stream);
            link.connected(Arc::clone(&socket));
            loop {
                match link.next_batch().await {
                    Next::Write(bytes) => {
                        if peer_link::write_all(&socket, &bytes).await.is_err() {
                            // Reconnect; what was in flight is lost, Raft
                            // retries (peer_link invariant 3).
                            link.disconnected();
                            break;
                        }
                    }
                    Next::Broken => break,
                    Next::Closed => return,
                }
            }
        }
    }

    /// Accepts peer connections and hands each, once its `Hello` is
    /// accepted, to `adopt` (the replica loop, which reads it from then
    /// on: [`InboundPeer`]); `directory` answers a joining member's
    /// [`Frame::Join`] (its id, or 0, and every member's peer URLs) from the
    /// member table.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        adopt: impl Fn(InboundPeer) + Send + Sync + Clone + 'static,
        directory: impl Fn(&[String]) -> (u64, Vec<(NodeId, String)>) + Send + Sync + Clone + 'static,
    ) {
        loop {
            let Ok((stream, remote)) = listener.accept().await else {
                continue;
            };
            let transport = Arc::clone(&self);
            let adopt = adopt.clone();
            let directory = directory.clone();
            tokio::spawn(async move {
                if let Err(reason) = transport.serve_connection(stream, adopt, directory).await {
                    tracing::debug!(%remote, %reason, "peer connection closed");
                }
            });
        }
    }

    async fn serve_connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        adopt: impl Fn(InboundPeer),
        directory: impl Fn(&[String]) -> (u64, Vec<(NodeId, String)>),
    ) -> Result<(), String> {
        let _ = stream.set_nodelay(true);
        let mut frames = FrameReader::default();
        let from = match frames.next(&mut stream).await {
            Ok(Frame::Hello { from, cluster_id }) if cluster_id == self.cluster_id => from,
            Ok(Frame::Hello { cluster_id, .. }) | Ok(Frame::Join { cluster_id, .. })
                if cluster_id != self.cluster_id =>
            {
                return Err(format!("cluster id mismatch: {cluster_id:x}"))
            }
            Ok(Frame::Join { peer_urls, .. }) => {
                let (member_id, members) = directory(&peer_urls);
                let answer = encode_frame(&Frame::JoinAnswer { member_id, members });
                stream.write_all(&answer).await.map_err(|e| e.to_string())?;
                let _ = stream.shutdown().await;
                return Ok(());
            }
            Ok(_) => return Err("expected hello".into()),
            Err(e) => {
                self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if let Err(refusal) = self.check_sender(from) {
            if refusal.removed {
                let _ = stream.write_all(&encode_frame(&Frame::Removed)).await;
                let _ = stream.shutdown().await;
            }
            return Err(refusal.reason);
        }
        let stream = stream.into_std().map_err(|e| e.to_string())?;
        adopt(InboundPeer {
            from,
            stream,
            frames,
            transport: self,
        });
        Ok(())
    }

    /// Whether frames from `from` may be delivered now (invariants 2 and 5).
    fn check_sender(&self, from: NodeId) -> Result<(), Refusal> {
        if self.members.read().expect("lock").contains(&from) {
            return Ok(());
        }
        if self.removed.read().expect("lock").contains(&from) {
            return Err(Refusal {
                reason: format!("member {from} was removed from the cluster"),
                removed: true,
            });
        }
        Err(Refusal {
            reason: format!("unknown member {from}"),
            removed: false,
        })
    }
}

/// Why a peer's connection is closed.
struct Refusal {
    reason: String,
    /// The peer was removed: tell it so before closing (invariant 5).
    removed: bool,
}

/// Inbound bytes read from one peer per [`InboundPeer::read`], at most, so
/// one flooding peer cannot hold the loop's turn (the rest waits in the
/// socket, which TCP flow control then bounds).
const READ_BYTES_PER_TURN: usize = 4 * 1024 * 1024;

/// Bytes one `read(2)` of [`InboundPeer::read`] asks for, at most.
const READ_PIECE_BYTES: usize = 16 * 1024;

/// An accepted peer connection, past its `Hello`, read by the replica loop
/// on its own thread: the loop sleeps in `poll(2)` on these sockets and its
/// inbox together (inbox invariant 4), so a frame from a peer wakes one
/// thread, not an I/O thread and then the loop.
pub struct InboundPeer {
    from: NodeId,
    stream: std::net::TcpStream,
    frames: FrameReader,
    transport: Arc<Transport>,
}

impl InboundPeer {
    /// The socket, for `poll`.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.stream.as_fd()
    }

    /// Who is calling.
    pub fn from(&self) -> NodeId {
        self.from
    }

    /// Reads what the socket holds now, without blocking, and appends the
    /// whole frames in it to `out`. `Err` means the connection is done
    /// (closed, bad bytes, or the sender no longer a member); drop it.
    pub fn read(&mut self, out: &mut Vec<Inbound>) -> Result<(), String> {
        use std::io::Read;
        let mut budget = READ_BYTES_PER_TURN;
        loop {
            while let Some(frame) = self.frames.cut().inspect_err(|_| {
                self.transport
                    .stats
                    .bad_frames
                    .fetch_add(1, Ordering::Relaxed);
            })? {
                self.accept(frame, out)?;
            }
            if budget == 0 {
                return Ok(());
            }
            self.frames.make_room();
            let buf = &mut self.frames.buf;
            let start = buf.len();
            // Safe code must zero what it reads into; a piece this size
            // costs little to zero and holds a typical batch of frames.
            let room = (buf.capacity() - start).min(budget).min(READ_PIECE_BYTES);
            buf.resize(start + room, 0);
            match self.stream.read(&mut buf[start..]) {
                Ok(0) => {
                    buf.truncate(start);
                    return Err("connection closed".into());
                }
                Ok(n) => {
                    buf.truncate(start + n);
                    budget -= n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    buf.truncate(start);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(start),
                Err(e) => {
                    buf.truncate(start);
                    return Err(e.to_string());
                }
            }
        }
    }

    fn accept(&mut self, frame: Frame, out: &mut Vec<Inbound>) -> Result<(), String> {
        let transport = &self.transport;
        if transport
            .faults
            .read()
            .expect("lock")
            .drop_from
            .contains(&self.from)
        {
            return Ok(());
        }
        if let Err(refusal) = transport.check_sender(self.from) {
            if refusal.removed {
                use std::io::Write;
                // Best effort, like the rest of a goodbye.
                let _ = self.stream.write(&encode_frame(&Frame::Removed));
            }
            return Err(refusal.reason);
        }
        match frame {
            Frame::Raft(messages) => {
                let from = self.from;
                let messages: Vec<Message> =
                    messages.into_iter().filter(|m| m.from == from).collect();
                out.push(Inbound::Raft(messages));
            }
            Frame::Forward(proposals) => out.push(Inbound::Forward(proposals)),
            Frame::Hello { .. } => return Err("duplicate hello".into()),
            Frame::Join { .. } | Frame::JoinAnswer { .. } | Frame::Removed => {
                return Err("unexpected frame after hello".into())
            }
        }
        Ok(())
    }
}

/// Room a peer connection's buffer keeps for reading: frames that arrive
/// together are read together, not with a read for each header and each
/// payload. The buffer holds at most one frame beyond this
/// ([`MAX_FRAME_BYTES`](crate::codec::MAX_FRAME_BYTES) bounds it).
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Splits a peer's byte stream into frames, reading in chunks.
///
/// Frames are cut out of the buffer without copying: a decoded entry
/// refers to the bytes it arrived in, as it did when each frame had its
/// own buffer; a chunk is freed once nothing decoded from it is alive.
#[derive(Default)]
struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// The next frame; an error for a closed connection or bad bytes.
    async fn next(
        &mut self,
        stream: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> Result<Frame, String> {
        loop {
            if let Some(frame) = self.cut()? {
                return Ok(frame);
            }
            self.make_room();
            let read = stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("connection closed".into());
            }
        }
    }

    /// Keeps at least a quarter chunk free to read into.
    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK_BYTES / 4 {
            self.buf.reserve(READ_CHUNK_BYTES);
        }
    }

    /// A whole frame from the front of the buffer, if one is there.
    fn cut(&mut self) -> Result<Option<Frame>, String> {
        let Some(header) = self.buf.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let header: &[u8; FRAME_HEADER_BYTES] = header.try_into().expect("header length");
        let (len, crc) = frame_len(header).map_err(|e| e.to_string())?;
        if self.buf.len() < FRAME_HEADER_BYTES + len {
            // Room for the rest of this frame, so the reads that bring it
            // land in one buffer.
            self.buf.reserve(FRAME_HEADER_BYTES + len - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(FRAME_HEADER_BYTES + len);
        let payload = frame.split_off(FRAME_HEADER_BYTES).freeze();
        decode_frame(payload, crc)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// Asks the member listening at `addr` which member has `peer_urls`
/// (invariant 6): `(id, members)` with id 0 if none has. Blocking, bounded
/// by `timeout` per step; for a member's start, before its runtime exists.
pub fn join_query(
    addr: &str,
    cluster_id: u64,
    peer_urls: &[String],
    timeout: Duration,
) -> Result<(u64, Vec<(NodeId, String)>), String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let target = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&target, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let query = encode_frame(&Frame::Join {
        cluster_id,
        peer_urls: peer_urls.to_vec(),
    });
    stream.write_all(&query).map_err(|e| e.to_string())?;
    let mut header = [0u8; FRAME_HEADER_BYTES];
    stream
        .read_exact(&mut header)
        .map_err(|e| format!("no answer ({e}): another cluster?"))?;
    let (len, crc) = frame_len(&header).map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).map_err(|e| e.to_string())?;
    match decode_frame(Bytes::from(payload), crc).map_err(|e| e.to_string())? {
        Frame::JoinAnswer { member_id, members } => Ok((member_id, members)),
        _ => Err("unexpected answer".into()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Hands out its bytes at most `step` at a time, as a socket may.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl tokio::io::AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self
                .step
                .min(out.remaining())
                .min(self.bytes.len() - self.at);
            let at = self.at;
            out.put_slice(&self.bytes[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    fn forward(payload: &'static [u8]) -> Frame {
        Frame::Forward(vec![Bytes::from_static(payload)])
    }

    fn stream_of(frames: &[Frame]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|f| encode_frame(f).to_vec())
            .collect()
    }

    #[tokio::test]
    async fn frames_come_out_whole_whatever_the_read_boundaries() {
        let frames = [
            forward(b"a"),
            Frame::Hello {
                from: NodeId(7),
                cluster_id: 9,
            },
            forward(&[5u8; 100_000]),
            forward(b"last"),
        ];
        let bytes = stream_of(&frames);
        for step in [1, 7, FRAME_HEADER_BYTES, 4096, bytes.len()] {
            let mut input = Trickle {
                bytes: bytes.clone(),
                at: 0,
                step,
            };
            let mut reader = FrameReader::default();
            for want in &frames {
                let got = reader.next(&mut input).await.expect("a frame");
                assert_eq!(&got, want, "step {step}");
            }
            let end = reader.next(&mut input).await;
            assert_eq!(end.unwrap_err(), "connection closed", "step {step}");
        }
    }

    #[tokio::test]
    async fn a_bad_length_or_checksum_is_an_error_not_a_wait() {
        let mut zero_length = stream_of(&[forward(b"ok")]);
        zero_length.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
        let mut reader = FrameReader::default();
        let mut input = &zero_length[..];
        assert!(reader.next(&mut input).await.is_ok());
        let err = reader.next(&mut input).await.unwrap_err();
        assert!(err.contains("length"), "{err}");

        let mut corrupt = stream_of(&[forward(b"payload")]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let err = FrameReader::default()
            .next(&mut &corrupt[..])
            .await
            .unwrap_err();
        assert!(err.contains("checksum"), "{err}");
    }
}
