//! One peer's outbound link: the queue and the socket that the senders (the
//! replica loop, the WAL writer) and the link's writer task share.
//!
//! A send writes its frame to the socket at once, on the sender's thread,
//! when nothing is queued or being written before it: a non-blocking write
//! of a few hundred bytes to a loopback or LAN socket almost always goes
//! through whole. Otherwise it queues, and the writer task (on the I/O
//! runtime) writes the queue out in batched frames. The direct path spares
//! an I/O thread a wake-up per message; on a virtual machine a wake-up costs
//! more than the write (BENCHMARKS.md, session 6).
//!
//! ```text
//!  sender --offer--> [ lock: queue empty, writer idle, connected? ]
//!                       yes: try_write(frame) --whole--> done
//!                                             --part/none--> rest = partial,
//!                                                            writer busy, wake
//!                       no:  queue (bounded), wake the writer
//!  writer task: next_batch() = partial, then queued items as frames;
//!               writes them (async), asks again; idle when nothing is left
//! ```
//!
//! Invariants:
//! 1. Bytes reach the socket in the order their sends were made: a sender
//!    writes only while it holds the lock, nothing is queued and the writer
//!    is not writing; a frame the kernel took in part is finished by the
//!    writer before anything queued after it.
//! 2. No send blocks: the direct write is non-blocking, and the queue holds
//!    at most [`PEER_QUEUE_MESSAGES`] items; beyond that a send is dropped
//!    and counted (Raft retries; transport invariant 1).
//! 3. A failed write drops the connection and, with it, the partial frame
//!    and the queue: the writer reconnects and Raft retries what was lost.
//!    Once closed (the peer was removed), the link takes nothing more.

use crate::codec::{encode_frame, Frame};
use bytes::{Bytes, BytesMut};
use concord_raft::Message;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// Items queued for one peer, at most. Beyond this the peer is too slow or
/// unreachable and new items are dropped (Raft retries).
pub const PEER_QUEUE_MESSAGES: usize = 4096;

/// Bytes batched into one frame by the writer, at most (one append is
/// capped at 1 MiB).
pub const FRAME_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Something to send to a peer.
#[derive(Debug)]
pub enum Outbound {
    /// A Raft message.
    Raft(Message),
    /// A proposal forwarded to the leader.
    Forward(Bytes),
}

impl Outbound {
    /// About how many bytes the item takes in a frame (for batching).
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

/// Encodes items as at most two frames (Raft messages, then forwards).
fn encode(items: Vec<Outbound>) -> Bytes {
    let mut raft = Vec::new();
    let mut forward = Vec::new();
    for item in items {
        match item {
            Outbound::Raft(m) => raft.push(m),
            Outbound::Forward(b) => forward.push(b),
        }
    }
    match (raft.is_empty(), forward.is_empty()) {
        (false, true) => encode_frame(&Frame::Raft(raft)),
        (true, false) => encode_frame(&Frame::Forward(forward)),
        _ => {
            let mut out = BytesMut::new();
            if !raft.is_empty() {
                out.extend_from_slice(&encode_frame(&Frame::Raft(raft)));
            }
            if !forward.is_empty() {
                out.extend_from_slice(&encode_frame(&Frame::Forward(forward)));
            }
            out.freeze()
        }
    }
}

struct LinkState {
    /// The connection, while there is one.
    socket: Option<Arc<OwnedWriteHalf>>,
    queue: VecDeque<Outbound>,
    /// The rest of a frame a sender wrote in part; written first.
    partial: Option<Bytes>,
    /// The writer owns the socket for an async write: senders queue.
    writer_busy: bool,
    closed: bool,
}

/// What [`PeerLink::next_batch`] hands the writer task.
#[derive(Debug)]
pub enum Next {
    /// Write these bytes, then ask again.
    Write(Bytes),
    /// The connection broke (a sender's write failed): reconnect.
    Broken,
    /// The link is closed: stop.
    Closed,
}

/// One peer's outbound link (see the module doc).
pub struct PeerLink {
    state: Mutex<LinkState>,
    /// Wakes the writer: bytes to write, a broken connection, or closing.
    wake: Notify,
}

impl Default for PeerLink {
    fn default() -> Self {
        PeerLink {
            state: Mutex::new(LinkState {
                socket: None,
                queue: VecDeque::new(),
                partial: None,
                writer_busy: false,
                closed: false,
            }),
            wake: Notify::new(),
        }
    }
}

impl PeerLink {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // Every critical section leaves the state whole (no partial updates
        // across a panic point), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `items` (invariants 1 and 2). Returns how many were dropped
    /// because the queue was full or the link closed.
    pub fn offer(&self, items: Vec<Outbound>) -> usize {
        if items.is_empty() {
            return 0;
        }
        let mut state = self.lock();
        if state.closed {
            return items.len();
        }
        if state.queue.is_empty() && !state.writer_busy {
            if let Some(socket) = state.socket.clone() {
                let frame = encode(items);
                match socket.try_write(&frame) {
                    Ok(n) if n == frame.len() => return 0,
                    Ok(n) => {
                        state.partial = Some(frame.slice(n..));
                        state.writer_busy = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        state.partial = Some(frame);
                        state.writer_busy = true;
                    }
                    // Invariant 3: the writer sees the socket gone and
                    // reconnects; this frame is lost.
                    Err(_) => Self::drop_connection(&mut state),
                }
                drop(state);
                self.wake.notify_one();
                return 0;
            }
        }
        let room = PEER_QUEUE_MESSAGES.saturating_sub(state.queue.len());
        let dropped = items.len().saturating_sub(room);
        state.queue.extend(items.into_iter().take(room));
        // A busy writer looks at the queue when its write is done.
        let wake = !state.writer_busy;
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        dropped
    }

    fn drop_connection(state: &mut LinkState) {
        state.socket = None;
        state.partial = None;
        state.queue.clear();
        state.writer_busy = false;
    }

    /// Writer: a connection is up (its hello sent); senders may use it.
    pub fn connected(&self, socket: Arc<OwnedWriteHalf>) {
        let mut state = self.lock();
        state.socket = Some(socket);
        let wake = !state.queue.is_empty();
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Writer: the connection failed or could not be made; what was queued
    /// for it is dropped, so that stale messages do not arrive much later
    /// in bulk (invariant 3).
    pub fn disconnected(&self) {
        Self::drop_connection(&mut self.lock());
    }

    /// Closes the link for good (the peer was removed) and stops its writer.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        Self::drop_connection(&mut state);
        drop(state);
        self.wake.notify_one();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Writer: waits for the next bytes to write on the current connection.
    pub async fn next_batch(&self) -> Next {
        loop {
            {
                let mut state = self.lock();
                if state.closed {
                    return Next::Closed;
                }
                if state.socket.is_none() {
                    state.writer_busy = false;
                    return Next::Broken;
                }
                if state.partial.is_some() || !state.queue.is_empty() {
                    state.writer_busy = true;
                    let partial = state.partial.take();
                    let mut items = Vec::new();
                    let mut bytes = 0;
                    while bytes < FRAME_BATCH_BYTES {
                        let Some(item) = state.queue.pop_front() else {
                            break;
                        };
                        bytes += item.size_bytes();
                        items.push(item);
                    }
                    drop(state);
                    let batch = match (partial, items.is_empty()) {
                        (Some(p), true) => p,
                        (None, _) => encode(items),
                        (Some(p), false) => {
                            let mut out = BytesMut::from(&p[..]);
                            out.extend_from_slice(&encode(items));
                            out.freeze()
                        }
                    };
                    return Next::Write(batch);
                }
                state.writer_busy = false;
            }
            // A notify between the unlock and here leaves a permit, so
            // this returns at once: no wake-up is lost.
            self.wake.notified().await;
        }
    }
}

/// Writes all of `bytes` to a shared write half (which, being shared, has
/// no `&mut` for `AsyncWriteExt::write_all`).
pub async fn write_all(socket: &OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        socket.writable().await?;
        match socket.try_write(&bytes[written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_frame, frame_len, FRAME_HEADER_BYTES};
    use concord_raft::{LogIndex, MessageBody, NodeId, Term};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A message told apart by its term, carrying `data_bytes` of entry.
    fn sized_message(n: u64, data_bytes: usize) -> Outbound {
        let entries = (data_bytes > 0)
            .then(|| concord_raft::Entry {
                term: Term(n),
                index: LogIndex(n),
                kind: concord_raft::EntryKind::Normal,
                data: Bytes::from(vec![7u8; data_bytes]),
            })
            .into_iter()
            .collect();
        Outbound::Raft(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(n),
            body: MessageBody::Append {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries,
                leader_commit: LogIndex(0),
            },
        })
    }

    fn message(n: u64) -> Outbound {
        sized_message(n, 0)
    }

    async fn read_terms(stream: &mut TcpStream, want: usize) -> Vec<u64> {
        let mut terms = Vec::new();
        while terms.len() < want {
            let mut header = [0u8; FRAME_HEADER_BYTES];
            stream.read_exact(&mut header).await.unwrap();
            let (len, crc) = frame_len(&header).unwrap();
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await.unwrap();
            match decode_frame(Bytes::from(payload), crc).unwrap() {
                Frame::Raft(ms) => terms.extend(ms.iter().map(|m| m.term.0)),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        terms
    }

    /// Drives a writer task the way the transport does, on one connection.
    async fn writer(link: Arc<PeerLink>, socket: Arc<OwnedWriteHalf>) {
        loop {
            match link.next_batch().await {
                Next::Write(bytes) => {
                    if write_all(&socket, &bytes).await.is_err() {
                        link.disconnected();
                        return;
                    }
                }
                Next::Broken | Next::Closed => return,
            }
        }
    }

    /// A connected pair on loopback: the accepting end, and the halves of
    /// the connecting end (the write half shared, as the transport does).
    async fn socket_pair() -> (
        TcpStream,
        tokio::net::tcp::OwnedReadHalf,
        Arc<OwnedWriteHalf>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, write) = client.into_split();
        (server, read, Arc::new(write))
    }

    #[tokio::test]
    async fn direct_and_queued_sends_arrive_in_order() {
        let (mut server, _read, socket) = socket_pair().await;
        let link = Arc::new(PeerLink::default());

        // Not connected yet: queued, then written by the writer.
        assert_eq!(link.offer(vec![message(1), message(2)]), 0);
        link.connected(Arc::clone(&socket));
        let task = tokio::spawn(writer(Arc::clone(&link), Arc::clone(&socket)));
        assert_eq!(read_terms(&mut server, 2).await, [1, 2]);
        // Sends from another thread interleave with the writer, direct when
        // it is idle, queued when busy; the order holds either way.
        let sender = {
            let link = Arc::clone(&link);
            std::thread::spawn(move || {
                for n in 3..=2000u64 {
                    let batch = (0..(n % 7)).map(|i| message(n * 10 + i)).collect();
                    assert_eq!(link.offer(batch), 0);
                }
            })
        };
        let want: Vec<u64> = (3..=2000u64)
            .flat_map(|n| (0..(n % 7)).map(move |i| n * 10 + i))
            .collect();
        assert_eq!(read_terms(&mut server, want.len()).await, want);
        sender.join().unwrap();

        link.close();
        task.await.unwrap();
        assert_eq!(
            link.offer(vec![message(9)]),
            1,
            "a closed link takes nothing"
        );
    }

    #[tokio::test]
    async fn frames_the_kernel_takes_in_part_are_finished_before_later_sends() {
        let (mut server, _read, socket) = socket_pair().await;
        let link = Arc::new(PeerLink::default());
        link.connected(Arc::clone(&socket));
        // Nobody reads yet: 32 MiB cannot fit in the socket buffers, so
        // direct writes go through in part or not at all, and later sends
        // queue behind the remainder.
        let count = 512u64;
        for n in 1..=count {
            assert_eq!(link.offer(vec![sized_message(n, 64 << 10)]), 0);
        }
        assert!(
            link.lock().writer_busy,
            "the socket should have filled and handed the rest to the writer"
        );
        let task = tokio::spawn(writer(Arc::clone(&link), Arc::clone(&socket)));
        let want: Vec<u64> = (1..=count).collect();
        assert_eq!(read_terms(&mut server, count as usize).await, want);
        link.close();
        task.await.unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_the_excess() {
        let link = PeerLink::default();
        let first: Vec<_> = (0..PEER_QUEUE_MESSAGES as u64 - 1).map(message).collect();
        assert_eq!(link.offer(first), 0);
        assert_eq!(link.offer(vec![message(1), message(2), message(3)]), 2);
        // A failed connection drops the queue, which takes sends again.
        link.disconnected();
        assert_eq!(link.offer(vec![message(4)]), 0);
    }
}
