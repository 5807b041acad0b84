//! Binary encoding of Raft messages and peer frames on the wire.
//!
//! Invariants:
//! 1. Decoding never panics and never allocates more than the frame it was
//!    given: every length read from the wire is checked against the bytes
//!    that remain before anything is allocated (a peer's junk is an error
//!    value, not a crash).
//! 2. Entry and snapshot payloads are zero-copy slices of the received frame.
//! 3. `decode(encode(m)) == m` for every message (property-tested).
//!
//! A frame on a peer connection is `len: u32 LE | crc32c(payload): u32 LE |
//! payload`, and the payload starts with a [`FrameKind`] byte.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use concord_raft::{
    ConfState, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, SnapshotMeta, Term,
};

/// Largest frame accepted from a peer. A batch is built to stay well below
/// (appends are capped at 1 MiB each, snapshot chunks at 1 MiB), so anything
/// larger is corruption or an attack.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of the frame header (length and checksum).
pub const FRAME_HEADER_BYTES: usize = 8;

/// Why bytes from a peer could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A tag or enum value is unknown.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which field.
        what: &'static str,
        /// The value seen.
        tag: u8,
    },
    /// A declared length is larger than the limit or the remaining input.
    #[error("length {len} of {what} is out of range")]
    Length {
        /// Which field.
        what: &'static str,
        /// The declared length.
        len: usize,
    },
    /// The checksum does not match the payload.
    #[error("frame checksum mismatch")]
    Checksum,
    /// A text field is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
}

/// What a frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame on a connection: who is calling, for which cluster.
    Hello {
        /// Sender's member id.
        from: NodeId,
        /// Cluster id the sender belongs to.
        cluster_id: u64,
    },
    /// A batch of Raft messages.
    Raft(Vec<Message>),
    /// Proposals a follower forwards to the leader (already enveloped).
    Forward(Vec<Bytes>),
    /// First frame of a one-shot connection from a member that joins a
    /// running cluster (`--initial-cluster-state existing`) and does not
    /// know its id yet: "which member has these peer URLs?". Answered with
    /// [`Frame::JoinAnswer`], then the connection closes.
    ///
    /// ```text
    ///  joiner ──Join{cluster_id, peer_urls}──▶ member
    ///         ◀──JoinAnswer{member_id, members}──
    /// ```
    Join {
        /// Cluster id the joiner expects.
        cluster_id: u64,
        /// The joiner's advertised peer URLs.
        peer_urls: Vec<String>,
    },
    /// The answer to [`Frame::Join`]: the id of the member with those peer
    /// URLs (0: none, MemberAdd it first) and every member's peer URLs.
    JoinAnswer {
        /// The joiner's id, or 0.
        member_id: u64,
        /// (id, peer URL) of every member, one pair per URL.
        members: Vec<(NodeId, String)>,
    },
    /// Sent back to a member whose id was removed from the cluster, before
    /// the connection closes: it must stop.
    Removed,
}

/// Frame kind bytes.
#[repr(u8)]
enum FrameKind {
    Hello = 1,
    Raft = 2,
    Forward = 3,
    Join = 4,
    JoinAnswer = 5,
    Removed = 6,
}

struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(DecodeError::Truncated(what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32_le())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64_le())
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { what, tag }),
        }
    }
    fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(what)? as usize;
        if len > self.buf.remaining() {
            return Err(DecodeError::Length { what, len });
        }
        Ok(self.buf.split_to(len))
    }
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Utf8(what))
    }
    /// A count of items each at least `min_item_bytes` long.
    fn count(&mut self, what: &'static str, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let len = self.u32(what)? as usize;
        if len.saturating_mul(min_item_bytes) > self.buf.remaining() {
            return Err(DecodeError::Length { what, len });
        }
        Ok(len)
    }
}

fn put_bytes(out: &mut BytesMut, data: &[u8]) {
    out.put_u32_le(data.len() as u32);
    out.put_slice(data);
}

fn put_conf(out: &mut BytesMut, conf: &ConfState) {
    out.put_u32_le(conf.voters.len() as u32);
    for id in &conf.voters {
        out.put_u64_le(id.0);
    }
    out.put_u32_le(conf.learners.len() as u32);
    for id in &conf.learners {
        out.put_u64_le(id.0);
    }
}

fn read_conf(r: &mut Reader) -> Result<ConfState, DecodeError> {
    let mut conf = ConfState::default();
    let voters = r.count("voters", 8)?;
    for _ in 0..voters {
        conf.voters.insert(NodeId(r.u64("voter")?));
    }
    let learners = r.count("learners", 8)?;
    for _ in 0..learners {
        conf.learners.insert(NodeId(r.u64("learner")?));
    }
    Ok(conf)
}

/// Appends the encoding of one message.
pub fn encode_message(out: &mut BytesMut, m: &Message) {
    out.put_u64_le(m.from.0);
    out.put_u64_le(m.to.0);
    out.put_u64_le(m.term.0);
    match &m.body {
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => {
            out.put_u8(1);
            out.put_u64_le(last_log_index.0);
            out.put_u64_le(last_log_term.0);
        }
        MessageBody::PreVoteResponse { reject } => {
            out.put_u8(2);
            out.put_u8(u8::from(*reject));
        }
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            transfer,
        } => {
            out.put_u8(3);
            out.put_u64_le(last_log_index.0);
            out.put_u64_le(last_log_term.0);
            out.put_u8(u8::from(*transfer));
        }
        MessageBody::RequestVoteResponse { reject } => {
            out.put_u8(4);
            out.put_u8(u8::from(*reject));
        }
        MessageBody::Append {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            out.put_u8(5);
            out.put_u64_le(prev_log_index.0);
            out.put_u64_le(prev_log_term.0);
            out.put_u64_le(leader_commit.0);
            out.put_u32_le(entries.len() as u32);
            for e in entries {
                out.put_u64_le(e.term.0);
                out.put_u64_le(e.index.0);
                out.put_u8(match e.kind {
                    EntryKind::Normal => 0,
                    EntryKind::ConfChange => 1,
                });
                put_bytes(out, &e.data);
            }
        }
        MessageBody::AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } => {
            out.put_u8(6);
            out.put_u8(u8::from(*reject));
            out.put_u64_le(index.0);
            out.put_u64_le(hint_index.0);
            out.put_u64_le(hint_term.0);
        }
        MessageBody::CommitNotice {
            prev_log_index,
            prev_log_term,
            leader_commit,
        } => {
            out.put_u8(14);
            out.put_u64_le(prev_log_index.0);
            out.put_u64_le(prev_log_term.0);
            out.put_u64_le(leader_commit.0);
        }
        MessageBody::Heartbeat { commit, read_round } => {
            out.put_u8(7);
            out.put_u64_le(commit.0);
            out.put_u64_le(*read_round);
        }
        MessageBody::HeartbeatResponse { read_round } => {
            out.put_u8(8);
            out.put_u64_le(*read_round);
        }
        MessageBody::Snapshot {
            meta,
            total_bytes,
            offset,
            chunk,
        } => {
            out.put_u8(9);
            out.put_u64_le(meta.index.0);
            out.put_u64_le(meta.term.0);
            put_conf(out, &meta.conf);
            out.put_u64_le(*total_bytes);
            out.put_u64_le(*offset);
            put_bytes(out, chunk);
        }
        MessageBody::SnapshotResponse {
            snapshot_index,
            received_bytes,
            installed,
            reject,
        } => {
            out.put_u8(10);
            out.put_u64_le(snapshot_index.0);
            out.put_u64_le(*received_bytes);
            out.put_u8(u8::from(*installed));
            out.put_u8(u8::from(*reject));
        }
        MessageBody::TimeoutNow => out.put_u8(11),
        MessageBody::ReadIndex { context } => {
            out.put_u8(12);
            out.put_u64_le(*context);
        }
        MessageBody::ReadIndexResponse { context, index } => {
            out.put_u8(13);
            out.put_u64_le(*context);
            match index {
                Some(i) => {
                    out.put_u8(1);
                    out.put_u64_le(i.0);
                }
                None => out.put_u8(0),
            }
        }
    }
}

fn decode_message(r: &mut Reader) -> Result<Message, DecodeError> {
    let from = NodeId(r.u64("from")?);
    let to = NodeId(r.u64("to")?);
    let term = Term(r.u64("term")?);
    let tag = r.u8("message tag")?;
    let body = match tag {
        1 => MessageBody::PreVote {
            last_log_index: LogIndex(r.u64("last index")?),
            last_log_term: Term(r.u64("last term")?),
        },
        2 => MessageBody::PreVoteResponse {
            reject: r.bool("reject")?,
        },
        3 => MessageBody::RequestVote {
            last_log_index: LogIndex(r.u64("last index")?),
            last_log_term: Term(r.u64("last term")?),
            transfer: r.bool("transfer")?,
        },
        4 => MessageBody::RequestVoteResponse {
            reject: r.bool("reject")?,
        },
        5 => {
            let prev_log_index = LogIndex(r.u64("prev index")?);
            let prev_log_term = Term(r.u64("prev term")?);
            let leader_commit = LogIndex(r.u64("commit")?);
            let count = r.count("entries", 21)?;
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let term = Term(r.u64("entry term")?);
                let index = LogIndex(r.u64("entry index")?);
                let kind = match r.u8("entry kind")? {
                    0 => EntryKind::Normal,
                    1 => EntryKind::ConfChange,
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "entry kind",
                            tag,
                        })
                    }
                };
                let data = r.bytes("entry data")?;
                entries.push(Entry {
                    term,
                    index,
                    kind,
                    data,
                });
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            }
        }
        6 => MessageBody::AppendResponse {
            reject: r.bool("reject")?,
            index: LogIndex(r.u64("index")?),
            hint_index: LogIndex(r.u64("hint index")?),
            hint_term: Term(r.u64("hint term")?),
        },
        7 => MessageBody::Heartbeat {
            commit: LogIndex(r.u64("commit")?),
            read_round: r.u64("round")?,
        },
        8 => MessageBody::HeartbeatResponse {
            read_round: r.u64("round")?,
        },
        9 => {
            let index = LogIndex(r.u64("snapshot index")?);
            let term = Term(r.u64("snapshot term")?);
            let conf = read_conf(r)?;
            MessageBody::Snapshot {
                meta: SnapshotMeta { index, term, conf },
                total_bytes: r.u64("total")?,
                offset: r.u64("offset")?,
                chunk: r.bytes("chunk")?,
            }
        }
        10 => MessageBody::SnapshotResponse {
            snapshot_index: LogIndex(r.u64("snapshot index")?),
            received_bytes: r.u64("received")?,
            installed: r.bool("installed")?,
            reject: r.bool("reject")?,
        },
        11 => MessageBody::TimeoutNow,
        12 => MessageBody::ReadIndex {
            context: r.u64("context")?,
        },
        13 => {
            let context = r.u64("context")?;
            let index = if r.bool("has index")? {
                Some(LogIndex(r.u64("index")?))
            } else {
                None
            };
            MessageBody::ReadIndexResponse { context, index }
        }
        14 => MessageBody::CommitNotice {
            prev_log_index: LogIndex(r.u64("prev index")?),
            prev_log_term: Term(r.u64("prev term")?),
            leader_commit: LogIndex(r.u64("commit")?),
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "message",
                tag,
            })
        }
    };
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

/// Encodes a frame, header included.
pub fn encode_frame(frame: &Frame) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    out.put_bytes(0, FRAME_HEADER_BYTES);
    match frame {
        Frame::Hello { from, cluster_id } => {
            out.put_u8(FrameKind::Hello as u8);
            out.put_u64_le(from.0);
            out.put_u64_le(*cluster_id);
        }
        Frame::Raft(messages) => {
            out.put_u8(FrameKind::Raft as u8);
            out.put_u32_le(messages.len() as u32);
            for m in messages {
                encode_message(&mut out, m);
            }
        }
        Frame::Forward(proposals) => {
            out.put_u8(FrameKind::Forward as u8);
            out.put_u32_le(proposals.len() as u32);
            for p in proposals {
                put_bytes(&mut out, p);
            }
        }
        Frame::Join {
            cluster_id,
            peer_urls,
        } => {
            out.put_u8(FrameKind::Join as u8);
            out.put_u64_le(*cluster_id);
            out.put_u32_le(peer_urls.len() as u32);
            for url in peer_urls {
                put_bytes(&mut out, url.as_bytes());
            }
        }
        Frame::JoinAnswer { member_id, members } => {
            out.put_u8(FrameKind::JoinAnswer as u8);
            out.put_u64_le(*member_id);
            out.put_u32_le(members.len() as u32);
            for (id, url) in members {
                out.put_u64_le(id.0);
                put_bytes(&mut out, url.as_bytes());
            }
        }
        Frame::Removed => out.put_u8(FrameKind::Removed as u8),
    }
    let payload_len = out.len() - FRAME_HEADER_BYTES;
    let crc = crc32c::crc32c(&out[FRAME_HEADER_BYTES..]);
    out[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out.freeze()
}

/// Reads the payload length from a frame header, refusing oversized frames.
pub fn frame_len(header: &[u8; FRAME_HEADER_BYTES]) -> Result<(usize, u32), DecodeError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_FRAME_BYTES {
        return Err(DecodeError::Length { what: "frame", len });
    }
    Ok((len, crc))
}

/// Decodes a frame payload whose checksum the header gave.
pub fn decode_frame(payload: Bytes, crc: u32) -> Result<Frame, DecodeError> {
    if crc32c::crc32c(&payload) != crc {
        return Err(DecodeError::Checksum);
    }
    let mut r = Reader { buf: payload };
    let frame = match r.u8("frame kind")? {
        1 => Frame::Hello {
            from: NodeId(r.u64("from")?),
            cluster_id: r.u64("cluster id")?,
        },
        2 => {
            let count = r.count("messages", 25)?;
            let mut messages = Vec::with_capacity(count);
            for _ in 0..count {
                messages.push(decode_message(&mut r)?);
            }
            Frame::Raft(messages)
        }
        3 => {
            let count = r.count("proposals", 4)?;
            let mut proposals = Vec::with_capacity(count);
            for _ in 0..count {
                proposals.push(r.bytes("proposal")?);
            }
            Frame::Forward(proposals)
        }
        4 => {
            let cluster_id = r.u64("cluster id")?;
            let count = r.count("peer URLs", 4)?;
            let mut peer_urls = Vec::with_capacity(count);
            for _ in 0..count {
                peer_urls.push(r.string("peer URL")?);
            }
            Frame::Join {
                cluster_id,
                peer_urls,
            }
        }
        5 => {
            let member_id = r.u64("member id")?;
            let count = r.count("members", 12)?;
            let mut members = Vec::with_capacity(count);
            for _ in 0..count {
                let id = NodeId(r.u64("member id")?);
                members.push((id, r.string("peer URL")?));
            }
            Frame::JoinAnswer { member_id, members }
        }
        6 => Frame::Removed,
        tag => return Err(DecodeError::UnknownTag { what: "frame", tag }),
    };
    if r.buf.has_remaining() {
        return Err(DecodeError::Length {
            what: "trailing bytes",
            len: r.buf.remaining(),
        });
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(frame: Frame) {
        let bytes = encode_frame(&frame);
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header.copy_from_slice(&bytes[..FRAME_HEADER_BYTES]);
        let (len, crc) = frame_len(&header).unwrap();
        assert_eq!(len, bytes.len() - FRAME_HEADER_BYTES);
        let decoded = decode_frame(bytes.slice(FRAME_HEADER_BYTES..), crc).unwrap();
        assert_eq!(decoded, frame);
    }

    fn sample_messages() -> Vec<Message> {
        let conf = ConfState::with_voters([NodeId(1), NodeId(2)]);
        let bodies = vec![
            MessageBody::PreVote {
                last_log_index: LogIndex(3),
                last_log_term: Term(2),
            },
            MessageBody::PreVoteResponse { reject: true },
            MessageBody::RequestVote {
                last_log_index: LogIndex(3),
                last_log_term: Term(2),
                transfer: true,
            },
            MessageBody::RequestVoteResponse { reject: false },
            MessageBody::Append {
                prev_log_index: LogIndex(4),
                prev_log_term: Term(1),
                entries: vec![Entry {
                    term: Term(2),
                    index: LogIndex(5),
                    kind: EntryKind::ConfChange,
                    data: Bytes::from_static(b"xyz"),
                }],
                leader_commit: LogIndex(4),
            },
            MessageBody::AppendResponse {
                reject: true,
                index: LogIndex(9),
                hint_index: LogIndex(7),
                hint_term: Term(3),
            },
            MessageBody::CommitNotice {
                prev_log_index: LogIndex(9),
                prev_log_term: Term(3),
                leader_commit: LogIndex(8),
            },
            MessageBody::Heartbeat {
                commit: LogIndex(2),
                read_round: 77,
            },
            MessageBody::HeartbeatResponse { read_round: 77 },
            MessageBody::Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(10),
                    term: Term(3),
                    conf,
                },
                total_bytes: 100,
                offset: 50,
                chunk: Bytes::from_static(b"chunk"),
            },
            MessageBody::SnapshotResponse {
                snapshot_index: LogIndex(10),
                received_bytes: 55,
                installed: false,
                reject: false,
            },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex { context: 9 },
            MessageBody::ReadIndexResponse {
                context: 9,
                index: Some(LogIndex(4)),
            },
            MessageBody::ReadIndexResponse {
                context: 9,
                index: None,
            },
        ];
        bodies
            .into_iter()
            .map(|body| Message {
                from: NodeId(1),
                to: NodeId(2),
                term: Term(5),
                body,
            })
            .collect()
    }

    #[test]
    fn every_message_kind_round_trips() {
        roundtrip(Frame::Raft(sample_messages()));
        roundtrip(Frame::Hello {
            from: NodeId(3),
            cluster_id: 42,
        });
        roundtrip(Frame::Forward(vec![Bytes::from_static(b"a"), Bytes::new()]));
        roundtrip(Frame::Join {
            cluster_id: 7,
            peer_urls: vec!["http://127.0.0.1:2380".into(), String::new()],
        });
        roundtrip(Frame::JoinAnswer {
            member_id: 5,
            members: vec![(NodeId(5), "http://127.0.0.1:2380".into())],
        });
        roundtrip(Frame::JoinAnswer {
            member_id: 0,
            members: Vec::new(),
        });
        roundtrip(Frame::Removed);
    }

    #[test]
    fn oversized_and_empty_frames_are_refused() {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[0..4].copy_from_slice(&((MAX_FRAME_BYTES + 1) as u32).to_le_bytes());
        assert!(frame_len(&header).is_err());
        assert!(frame_len(&[0u8; FRAME_HEADER_BYTES]).is_err());
    }

    #[test]
    fn corrupted_frames_are_errors_not_panics() {
        let bytes = encode_frame(&Frame::Raft(sample_messages()));
        let payload = bytes.slice(FRAME_HEADER_BYTES..);
        let crc = crc32c::crc32c(&payload);
        // Every truncation is refused.
        for cut in 0..payload.len() {
            let part = payload.slice(..cut);
            let crc = crc32c::crc32c(&part);
            assert!(decode_frame(part, crc).is_err(), "cut at {cut}");
        }
        // A flipped bit is caught by the checksum.
        let mut flipped = payload.to_vec();
        flipped[10] ^= 1;
        assert_eq!(
            decode_frame(Bytes::from(flipped), crc),
            Err(DecodeError::Checksum)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let payload = Bytes::from(data);
            let crc = crc32c::crc32c(&payload);
            let _ = decode_frame(payload, crc);
        }

        #[test]
        fn appends_round_trip(
            prev in 0u64..1000,
            terms in proptest::collection::vec(1u64..5, 0..20),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let entries = terms.iter().enumerate().map(|(i, t)| Entry {
                term: Term(*t),
                index: LogIndex(prev + 1 + i as u64),
                kind: EntryKind::Normal,
                data: Bytes::from(data.clone()),
            }).collect();
            roundtrip(Frame::Raft(vec![Message {
                from: NodeId(1), to: NodeId(2), term: Term(4),
                body: MessageBody::Append {
                    prev_log_index: LogIndex(prev), prev_log_term: Term(1),
                    entries, leader_commit: LogIndex(prev),
                },
            }]));
        }
    }
}
