//! Client connections' `:authority` as etcd's Go clients send it.
//!
//! clientv3 3.4 dials a single endpoint as `passthrough:///http://host:port`,
//! so grpc-go puts `http://host:port` in the `:authority` pseudo-header. Go's
//! HTTP/2 server (etcd) lets that through; the Rust `h2` server rejects the
//! stream with PROTOCOL_ERROR, because a scheme is not part of an authority.
//! That broke `etcdctl --endpoints=http://... endpoint status`, `defrag` and
//! `endpoint hashkv` against Concord. [`AuthorityFix`] sits between a client
//! socket and the HTTP/2 server and rewrites such an authority to its
//! `host:port` before `h2` parses the header block.
//!
//! Invariants:
//! 1. The bytes the server reads are the client's bytes, except that a header
//!    block's `:authority` literal whose value starts with `http://` or
//!    `https://` is re-emitted without the scheme (and without any path), in
//!    the same representation (same indexing, same name reference).
//! 2. Rewriting only ever shortens an entry the server's HPACK decoder adds to
//!    its dynamic table. Both tables see the same insertions and each keeps
//!    the newest entries that fit, so the server's table is always a superset
//!    of the client's newest entries and every index the client sends still
//!    names the entry the client meant.
//! 3. Whatever this module does not understand (not HTTP/2, a malformed frame,
//!    a header block over [`MAX_HEADER_BLOCK_BYTES`]) switches the connection
//!    to pass-through: the server then sees the client's bytes unchanged and
//!    reports its own error, exactly as without this module.
//! 4. Memory per connection is bounded: at most one header block (capped) is
//!    held back, plus what one read returned.
//! 5. Writes pass straight through; only the client-to-server direction is
//!    inspected.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest header block (HEADERS plus CONTINUATION frames, with their frame
/// headers) held back for inspection. gRPC request headers are a few hundred
/// bytes; a block this large is left to the server's own limits.
pub const MAX_HEADER_BLOCK_BYTES: usize = 256 * 1024;

/// Longest `:authority` value decoded; real ones are host:port.
const MAX_AUTHORITY_BYTES: usize = 1024;
/// Longest literal header name decoded to compare with `:authority` (10
/// bytes plain); longer names cannot be it and are skipped undecoded.
const MAX_NAME_DECODED_BYTES: usize = 16;

const FRAME_HEADER_BYTES: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Stream dependency (4 bytes) and weight (1 byte) of a HEADERS frame.
const PRIORITY_FIELDS_BYTES: usize = 5;
/// HPACK static table index of `:authority` (RFC 7541 Appendix A).
const STATIC_AUTHORITY_INDEX: u64 = 1;

/// Wraps a client connection so that HTTP/2 header blocks reach the server
/// with a scheme-free `:authority` (see the module doc).
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to the reader, from `ready_from` on.
    ready: Vec<u8>,
    ready_from: usize,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> AuthorityFix<S> {
        AuthorityFix {
            inner,
            rewriter: Rewriter::default(),
            ready: Vec::new(),
            ready_from: 0,
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.ready_from < this.ready.len() {
                let count = buf.remaining().min(this.ready.len() - this.ready_from);
                buf.put_slice(&this.ready[this.ready_from..this.ready_from + count]);
                this.ready_from += count;
                if this.ready_from == this.ready.len() {
                    this.ready.clear();
                    this.ready_from = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.is_pass_through() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let read = &buf.filled()[start..];
            if read.is_empty() {
                // The client hung up mid-frame: release what was held back
                // so the server sees the same truncated stream.
                this.rewriter.finish(&mut this.ready);
                this.eof = true;
            } else {
                this.rewriter.feed(read, &mut this.ready);
            }
            buf.set_filled(start);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Checking that the stream opens with the HTTP/2 preface.
    #[default]
    Preface,
    /// Following frame boundaries.
    Frames,
    /// Not HTTP/2, or something not understood: bytes pass unchanged.
    PassThrough,
}

/// The byte-stream transform behind [`AuthorityFix`], without I/O: bytes go
/// in as they were read, in any chunking, and come out rewritten.
#[derive(Debug, Default)]
pub struct Rewriter {
    phase: Phase,
    /// Bytes read but not yet released: part of the preface, a partial frame
    /// header, or a header block still being received.
    held: Vec<u8>,
    /// Payload bytes of the current (non-header) frame still to pass.
    payload_left: usize,
}

impl Rewriter {
    fn is_pass_through(&self) -> bool {
        self.phase == Phase::PassThrough && self.held.is_empty()
    }

    /// Consumes `input`, appending to `out` every byte that can be released.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        loop {
            if self.phase == Phase::PassThrough {
                out.append(&mut self.held);
                out.extend_from_slice(input);
                return;
            }
            // Frame payloads (the bulk of the bytes) go straight through.
            if self.phase == Phase::Frames && self.held.is_empty() && self.payload_left > 0 {
                let count = self.payload_left.min(input.len());
                out.extend_from_slice(&input[..count]);
                self.payload_left -= count;
                input = &input[count..];
            }
            if input.is_empty() {
                return;
            }
            self.held.extend_from_slice(input);
            input = &[];
            self.release_held(out);
        }
    }

    /// The stream ended: releases whatever was held back, unchanged.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
        self.phase = Phase::PassThrough;
    }

    /// Releases as much of `held` as its content allows.
    fn release_held(&mut self, out: &mut Vec<u8>) {
        let mut at = 0;
        loop {
            let rest = &self.held[at..];
            match self.phase {
                Phase::PassThrough => break,
                Phase::Preface => {
                    let checked = rest.len().min(PREFACE.len());
                    if rest[..checked] != PREFACE[..checked] {
                        self.phase = Phase::PassThrough;
                        break;
                    }
                    if checked < PREFACE.len() {
                        break;
                    }
                    out.extend_from_slice(PREFACE);
                    at += PREFACE.len();
                    self.phase = Phase::Frames;
                }
                Phase::Frames if self.payload_left > 0 => {
                    let count = self.payload_left.min(rest.len());
                    out.extend_from_slice(&rest[..count]);
                    self.payload_left -= count;
                    at += count;
                    if self.payload_left > 0 {
                        break;
                    }
                }
                Phase::Frames => {
                    let Some(header) = FrameHeader::parse(rest) else {
                        break;
                    };
                    if header.kind != FRAME_HEADERS {
                        out.extend_from_slice(&rest[..FRAME_HEADER_BYTES]);
                        self.payload_left = header.length;
                        at += FRAME_HEADER_BYTES;
                        continue;
                    }
                    match scan_header_block(rest) {
                        BlockScan::Incomplete => break,
                        BlockScan::NotUnderstood => {
                            self.phase = Phase::PassThrough;
                            break;
                        }
                        BlockScan::Complete {
                            consumed,
                            rewritten,
                        } => {
                            match rewritten {
                                Some(frames) => out.extend_from_slice(&frames),
                                None => out.extend_from_slice(&rest[..consumed]),
                            }
                            at += consumed;
                        }
                    }
                }
            }
        }
        self.held.drain(..at);
        if self.phase == Phase::PassThrough {
            out.append(&mut self.held);
        }
    }
}

/// An HTTP/2 frame header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    length: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let b = bytes.get(..FRAME_HEADER_BYTES)?;
        Some(FrameHeader {
            length: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream_id: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        let length = u32::try_from(self.length).expect("frame length fits 24 bits");
        out.extend_from_slice(&length.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.stream_id.to_be_bytes());
    }
}

#[derive(Debug, PartialEq, Eq)]
enum BlockScan {
    /// More bytes are needed to see the whole block.
    Incomplete,
    /// A frame sequence the module does not follow (see invariant 3).
    NotUnderstood,
    /// The block spans `consumed` bytes; `rewritten` replaces them when the
    /// block had a schemed authority.
    Complete {
        consumed: usize,
        rewritten: Option<Vec<u8>>,
    },
}

/// Looks at a header block: a HEADERS frame at the start of `bytes` and the
/// CONTINUATION frames that follow it up to END_HEADERS.
fn scan_header_block(bytes: &[u8]) -> BlockScan {
    let Some(first) = FrameHeader::parse(bytes) else {
        return BlockScan::Incomplete;
    };
    let mut fragment = Vec::new();
    let mut fragment_sizes = Vec::new();
    let mut priority: &[u8] = &[];
    let mut at = 0;
    loop {
        let Some(header) = FrameHeader::parse(&bytes[at..]) else {
            return BlockScan::Incomplete;
        };
        let end = at + FRAME_HEADER_BYTES + header.length;
        if end > MAX_HEADER_BLOCK_BYTES {
            return BlockScan::NotUnderstood;
        }
        if at > 0 && (header.kind != FRAME_CONTINUATION || header.stream_id != first.stream_id) {
            return BlockScan::NotUnderstood;
        }
        if end > bytes.len() {
            return BlockScan::Incomplete;
        }
        let mut payload = &bytes[at + FRAME_HEADER_BYTES..end];
        if at == 0 {
            if first.flags & FLAG_PADDED != 0 {
                let Some((&pad, rest)) = payload.split_first() else {
                    return BlockScan::NotUnderstood;
                };
                let Some(unpadded) = rest.len().checked_sub(usize::from(pad)) else {
                    return BlockScan::NotUnderstood;
                };
                payload = &rest[..unpadded];
            }
            if first.flags & FLAG_PRIORITY != 0 {
                if payload.len() < PRIORITY_FIELDS_BYTES {
                    return BlockScan::NotUnderstood;
                }
                (priority, payload) = payload.split_at(PRIORITY_FIELDS_BYTES);
            }
        }
        fragment.extend_from_slice(payload);
        fragment_sizes.push(payload.len());
        at = end;
        if header.flags & FLAG_END_HEADERS != 0 {
            break;
        }
    }
    let Some(block) = rewrite_authority(&fragment) else {
        return BlockScan::Complete {
            consumed: at,
            rewritten: None,
        };
    };
    // Re-frame the shorter block: frame i carries at most what the client's
    // frame i carried, so no frame outgrows the size the client respected.
    // Padding is dropped (it is optional and not flow-controlled).
    let mut frames = Vec::with_capacity(at);
    let mut remaining = &block[..];
    for (i, &size) in fragment_sizes.iter().enumerate() {
        let (chunk, rest) = remaining.split_at(size.min(remaining.len()));
        remaining = rest;
        let last = remaining.is_empty() || i + 1 == fragment_sizes.len();
        let mut flags = if i == 0 {
            first.flags & !(FLAG_PADDED | FLAG_END_HEADERS)
        } else {
            0
        };
        if last {
            flags |= FLAG_END_HEADERS;
        }
        let own_priority = if i == 0 { priority } else { &[] };
        FrameHeader {
            length: own_priority.len() + chunk.len(),
            kind: if i == 0 {
                FRAME_HEADERS
            } else {
                FRAME_CONTINUATION
            },
            flags,
            stream_id: first.stream_id,
        }
        .write(&mut frames);
        frames.extend_from_slice(own_priority);
        frames.extend_from_slice(chunk);
        if last {
            break;
        }
    }
    BlockScan::Complete {
        consumed: at,
        rewritten: Some(frames),
    }
}

/// Walks an HPACK block (RFC 7541 §6) and returns it with every schemed
/// `:authority` literal made plain, or None when there is none (or the block
/// does not parse: the server will say so itself).
fn rewrite_authority(block: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied_to = 0;
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        if first & 0x80 != 0 {
            // Indexed field: refers to an entry, whose value was fixed when
            // it was inserted.
            at += decode_integer(&block[at..], 7)?.1;
            continue;
        }
        if first & 0xe0 == 0x20 {
            // Dynamic table size update.
            at += decode_integer(&block[at..], 5)?.1;
            continue;
        }
        // A literal: with incremental indexing (01), or without / never
        // indexed (0000 / 0001).
        let prefix_bits = if first & 0xc0 == 0x40 { 6 } else { 4 };
        let (name_index, used) = decode_integer(&block[at..], prefix_bits)?;
        at += used;
        let is_authority = if name_index == 0 {
            let (name, used) = decode_string(&block[at..], MAX_NAME_DECODED_BYTES)?;
            at += used;
            name.as_deref() == Some(b":authority".as_slice())
        } else {
            name_index == STATIC_AUTHORITY_INDEX
        };
        let value_start = at;
        let limit = if is_authority { MAX_AUTHORITY_BYTES } else { 0 };
        let (value, used) = decode_string(&block[at..], limit)?;
        at += used;
        let Some(host) = value.as_deref().and_then(without_scheme) else {
            continue;
        };
        let rewritten = out.get_or_insert_with(|| Vec::with_capacity(block.len()));
        rewritten.extend_from_slice(&block[copied_to..value_start]);
        encode_string(host, rewritten);
        copied_to = at;
    }
    let mut rewritten = out?;
    rewritten.extend_from_slice(&block[copied_to..]);
    Some(rewritten)
}

/// `host:port` from `http://host:port[/...]` (scheme matched ignoring case);
/// None when the value has no scheme or nothing after it.
fn without_scheme(value: &[u8]) -> Option<&[u8]> {
    let rest = ["http://", "https://"].iter().find_map(|scheme| {
        let head = value.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme.as_bytes())
            .then(|| &value[scheme.len()..])
    })?;
    let host = rest.split(|&b| b == b'/').next().unwrap_or(rest);
    (!host.is_empty()).then_some(host)
}

/// Decodes an HPACK integer with an `prefix_bits`-bit prefix (RFC 7541
/// §5.1): (value, bytes used). None when truncated or over 2^32.
fn decode_integer(bytes: &[u8], prefix_bits: u32) -> Option<(u64, usize)> {
    let max_prefix = (1u64 << prefix_bits) - 1;
    let value = u64::from(*bytes.first()?) & max_prefix;
    if value < max_prefix {
        return Some((value, 1));
    }
    let mut value = value;
    let mut shift = 0;
    for (i, &byte) in bytes.iter().enumerate().skip(1) {
        value += u64::from(byte & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return None;
        }
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
        shift += 7;
    }
    None
}

/// Decodes an HPACK string literal (RFC 7541 §5.2): (its bytes, bytes used).
/// The bytes are only decoded when the literal is at most `limit` long (they
/// come back None otherwise); the length is always checked. None when the
/// literal is truncated or its Huffman code is invalid.
fn decode_string(bytes: &[u8], limit: usize) -> Option<(Option<Vec<u8>>, usize)> {
    let huffman = *bytes.first()? & 0x80 != 0;
    let (length, used) = decode_integer(bytes, 7)?;
    let length = usize::try_from(length).ok()?;
    let end = used.checked_add(length)?;
    let raw = bytes.get(used..end)?;
    if length > limit {
        return Some((None, end));
    }
    let decoded = if huffman {
        huffman_decode(raw)?
    } else {
        raw.to_vec()
    };
    Some((Some(decoded), end))
}

/// Appends `value` as a string literal, Huffman-coded when that is shorter
/// (as encoders do). A shorter value therefore never encodes longer than the
/// literal it replaces: its code is a prefix of the original's code.
fn encode_string(value: &[u8], out: &mut Vec<u8>) {
    let coded = huffman_encode(value);
    let (huffman_flag, bytes) = if coded.len() < value.len() {
        (0x80, &coded[..])
    } else {
        (0x00, value)
    };
    let mut length = bytes.len();
    if length < 0x7f {
        out.push(huffman_flag | length as u8);
    } else {
        out.push(huffman_flag | 0x7f);
        length -= 0x7f;
        while length >= 0x80 {
            out.push((length as u8 & 0x7f) | 0x80);
            length >>= 7;
        }
        out.push(length as u8);
    }
    out.extend_from_slice(bytes);
}

/// Bit lengths of the HPACK Huffman code (RFC 7541 Appendix B) for symbols
/// 0-255 and EOS (256). The code is canonical: codes are assigned in order of
/// (length, symbol), so the lengths define it completely.
const HUFFMAN_CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // ' ' - '/'
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // '0' - '?'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // '@' - 'O'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 'P' - '_'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // '`' - 'o'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 'p' - 0x7f
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

const HUFFMAN_MAX_BITS: usize = 30;
const HUFFMAN_EOS: u16 = 256;

/// The canonical code's decoding tables, derived from the lengths.
struct HuffmanTables {
    /// First code of each length, and how many codes have that length.
    first_code: [u32; HUFFMAN_MAX_BITS + 1],
    count: [u32; HUFFMAN_MAX_BITS + 1],
    /// Index in `symbols` of the first symbol of each length.
    first_symbol: [usize; HUFFMAN_MAX_BITS + 1],
    /// Symbols in (length, symbol) order.
    symbols: Vec<u16>,
    /// Each symbol's code, for encoding.
    codes: Vec<u32>,
}

fn huffman_tables() -> &'static HuffmanTables {
    static TABLES: OnceLock<HuffmanTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut count = [0u32; HUFFMAN_MAX_BITS + 1];
        for &length in &HUFFMAN_CODE_LENGTHS {
            count[usize::from(length)] += 1;
        }
        let mut symbols: Vec<u16> = (0..=HUFFMAN_EOS).collect();
        symbols.sort_by_key(|&s| (HUFFMAN_CODE_LENGTHS[usize::from(s)], s));
        let mut first_code = [0u32; HUFFMAN_MAX_BITS + 1];
        let mut first_symbol = [0usize; HUFFMAN_MAX_BITS + 1];
        let mut code = 0u32;
        let mut index = 0usize;
        for length in 1..=HUFFMAN_MAX_BITS {
            first_code[length] = code;
            first_symbol[length] = index;
            index += count[length] as usize;
            code = (code + count[length]) << 1;
        }
        let mut codes = vec![0u32; symbols.len()];
        for (rank, &symbol) in symbols.iter().enumerate() {
            let length = usize::from(HUFFMAN_CODE_LENGTHS[usize::from(symbol)]);
            codes[usize::from(symbol)] = first_code[length] + (rank - first_symbol[length]) as u32;
        }
        HuffmanTables {
            first_code,
            count,
            first_symbol,
            symbols,
            codes,
        }
    })
}

/// Huffman-codes `plain`, padding the last byte with the start of EOS (ones).
fn huffman_encode(plain: &[u8]) -> Vec<u8> {
    let tables = huffman_tables();
    let mut out = Vec::with_capacity(plain.len());
    let mut bits = 0u64;
    let mut pending = 0u32;
    for &byte in plain {
        let length = u32::from(HUFFMAN_CODE_LENGTHS[usize::from(byte)]);
        bits = bits << length | u64::from(tables.codes[usize::from(byte)]);
        pending += length;
        while pending >= 8 {
            pending -= 8;
            out.push((bits >> pending) as u8);
        }
    }
    if pending > 0 {
        let padding = 8 - pending;
        out.push((bits << padding | ((1 << padding) - 1)) as u8);
    }
    out
}

/// Decodes a Huffman-coded string; None when the code is invalid (EOS
/// inside, or padding that is longer than 7 bits or not all ones).
fn huffman_decode(coded: &[u8]) -> Option<Vec<u8>> {
    let tables = huffman_tables();
    let mut out = Vec::with_capacity(coded.len() * 8 / 5);
    let mut code = 0u32;
    let mut length = 0usize;
    for &byte in coded {
        for bit in (0..8).rev() {
            code = code << 1 | u32::from(byte >> bit & 1);
            length += 1;
            if length > HUFFMAN_MAX_BITS {
                return None;
            }
            let offset = code.wrapping_sub(tables.first_code[length]);
            if code >= tables.first_code[length] && offset < tables.count[length] {
                let symbol = tables.symbols[tables.first_symbol[length] + offset as usize];
                if symbol == HUFFMAN_EOS {
                    return None;
                }
                out.push(symbol as u8);
                code = 0;
                length = 0;
            }
        }
    }
    (length <= 7 && code == (1u32 << length) - 1).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameHeader {
            length: payload.len(),
            kind,
            flags,
            stream_id,
        }
        .write(&mut out);
        out.extend_from_slice(payload);
        out
    }

    /// RFC 7541 C.4.1's first request with `:authority` Huffman-coded as
    /// `https://www.example.com` (the code of C.6.1's location header).
    fn schemed_block() -> Vec<u8> {
        let mut block = hex("828684 41");
        let coded = hex("9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3");
        block.push(0x80 | coded.len() as u8);
        block.extend_from_slice(&coded);
        block
    }

    /// What the server should see instead: the same literal (incremental
    /// indexing, static name 1) with the plain value, Huffman-coded, which
    /// is exactly RFC 7541 C.4.1.
    fn plain_block() -> Vec<u8> {
        hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")
    }

    fn settings() -> Vec<u8> {
        frame(0x4, 0, 0, &hex("0003 0000 0064"))
    }

    fn connection(block_frames: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(settings());
        for f in block_frames {
            bytes.extend_from_slice(f);
        }
        bytes.extend(frame(0x0, 0x1, 1, b"\0\0\0\0\x05hello"));
        bytes
    }

    fn rewrite_all(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            rewriter.feed(piece, &mut out);
        }
        rewriter.finish(&mut out);
        out
    }

    #[test]
    fn huffman_decodes_rfc7541_vectors() {
        let cases = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
        ];
        for (coded, plain) in cases {
            assert_eq!(
                huffman_decode(&hex(coded)).as_deref(),
                Some(plain.as_bytes())
            );
        }
    }

    #[test]
    fn huffman_rejects_bad_padding_and_eos() {
        // 'a' is 00011: 0x1f is "a" padded with ones.
        assert_eq!(huffman_decode(&[0x1f]).as_deref(), Some(b"a".as_slice()));
        // The same with its padding bits zero.
        assert_eq!(huffman_decode(&[0x18]), None);
        // A full byte of padding (more than 7 bits).
        assert_eq!(huffman_decode(&[0x1f, 0xff]), None);
        // EOS (30 ones) inside the string.
        assert_eq!(huffman_decode(&hex("ffff fffc")), None);
    }

    #[test]
    fn integers_follow_rfc7541_c1() {
        assert_eq!(decode_integer(&[0b0000_1010], 5), Some((10, 1)));
        assert_eq!(
            decode_integer(&[0b0001_1111, 0b1001_1010, 0b0000_1010], 5),
            Some((1337, 3))
        );
        assert_eq!(decode_integer(&[42], 8), Some((42, 1)));
        assert_eq!(decode_integer(&[0x1f, 0x9a], 5), None, "truncated");
        assert_eq!(
            decode_integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], 5),
            None,
            "over 2^32"
        );
        // 300 bytes that Huffman cannot shorten: a raw literal, with a
        // multi-byte length.
        let long = vec![0u8; 300];
        let mut encoded = Vec::new();
        encode_string(&long, &mut encoded);
        assert_eq!(&encoded[..3], &[0x7f, 0xad, 0x01]);
        assert_eq!(decode_string(&encoded, usize::MAX), Some((Some(long), 303)));
    }

    #[test]
    fn huffman_encodes_rfc7541_vectors() {
        assert_eq!(
            huffman_encode(b"www.example.com"),
            hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")
        );
        assert_eq!(huffman_encode(b"no-cache"), hex("a8eb 1064 9cbf"));
        assert_eq!(huffman_encode(b"302"), hex("6402"));
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(
            huffman_decode(&huffman_encode(&every_byte)),
            Some(every_byte)
        );
    }

    #[test]
    fn a_stripped_value_never_encodes_longer() {
        for host in [
            "127.0.0.1:2379",
            "localhost:2379",
            "a-very-long-host-name.in.some.internal.domain.example:2379",
            "[::1]:2379",
        ] {
            for scheme in ["http://", "https://"] {
                let full = format!("{scheme}{host}");
                // The client's literal, in both of its possible encodings.
                for huffman in [false, true] {
                    let mut block = vec![0x41];
                    if huffman {
                        let coded = huffman_encode(full.as_bytes());
                        block.push(0x80 | coded.len() as u8);
                        block.extend_from_slice(&coded);
                    } else {
                        block.push(full.len() as u8);
                        block.extend_from_slice(full.as_bytes());
                    }
                    let rewritten = rewrite_authority(&block).expect("rewritten");
                    assert!(rewritten.len() <= block.len(), "{full} huffman={huffman}");
                    let (value, _) = decode_string(&rewritten[1..], usize::MAX).unwrap();
                    assert_eq!(value.as_deref(), Some(host.as_bytes()));
                }
            }
        }
    }

    #[test]
    fn schemed_authority_becomes_host_port() {
        assert_eq!(rewrite_authority(&schemed_block()), Some(plain_block()));
        // Raw (not Huffman) value, literal name, never-indexed: same form out.
        let mut block = hex("10 0a");
        block.extend_from_slice(b":authority");
        block.push(0x15);
        block.extend_from_slice(b"HTTP://127.0.0.1:2379");
        let mut expected = hex("10 0a");
        expected.extend_from_slice(b":authority");
        encode_string(b"127.0.0.1:2379", &mut expected);
        assert_eq!(rewrite_authority(&block), Some(expected));
        // A path after the host goes too.
        let mut block = hex("01 16");
        block.extend_from_slice(b"http://127.0.0.1:2379/");
        let mut expected = hex("01");
        encode_string(b"127.0.0.1:2379", &mut expected);
        assert_eq!(rewrite_authority(&block), Some(expected));
    }

    #[test]
    fn other_headers_are_left_alone() {
        // C.4.1 as is: a plain authority.
        let plain = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
        assert_eq!(rewrite_authority(&plain), None);
        // A schemed value under another name (`:path`, static index 4).
        let mut block = hex("04 15");
        block.extend_from_slice(b"http://127.0.0.1:2379");
        assert_eq!(rewrite_authority(&block), None);
        // Nothing after the scheme: left for the server to judge.
        let mut block = hex("41 07");
        block.extend_from_slice(b"http://");
        assert_eq!(rewrite_authority(&block), None);
        // Truncated block: not ours to fix.
        assert_eq!(rewrite_authority(&schemed_block()[..8]), None);
    }

    #[test]
    fn connection_is_rewritten_in_any_chunking() {
        let headers = frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &schemed_block());
        let input = connection(&[headers]);
        let expected = connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &plain_block())]);
        for chunk in [1, 2, 3, 7, 9, 10, 24, 33, 64, input.len()] {
            assert_eq!(rewrite_all(&input, chunk), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn continuation_padding_and_priority_are_handled() {
        let block = schemed_block();
        let (head, tail) = block.split_at(5);
        // HEADERS (padded, with priority, END_STREAM) + CONTINUATION.
        let mut payload = vec![3u8];
        payload.extend_from_slice(&hex("8000 0003 0f"));
        payload.extend_from_slice(head);
        payload.extend_from_slice(&[0, 0, 0]);
        let flags = FLAG_PADDED | FLAG_PRIORITY | 0x1;
        let input = connection(&[
            frame(FRAME_HEADERS, flags, 3, &payload),
            frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, tail),
        ]);
        let plain = plain_block();
        let mut first = hex("8000 0003 0f");
        first.extend_from_slice(&plain[..5]);
        let expected = connection(&[
            frame(FRAME_HEADERS, FLAG_PRIORITY | 0x1, 3, &first),
            frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, &plain[5..]),
        ]);
        for chunk in [1, 5, 16, input.len()] {
            assert_eq!(rewrite_all(&input, chunk), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn what_is_not_understood_passes_unchanged() {
        // HTTP/1.1 (the JSON gateway shares the listener).
        let http1 = b"POST /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n{}".to_vec();
        assert_eq!(rewrite_all(&http1, 3), http1);
        // A CONTINUATION for another stream: left for h2 to reject.
        let block = schemed_block();
        let input = connection(&[
            frame(FRAME_HEADERS, 0, 1, &block[..4]),
            frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, &block[4..]),
        ]);
        assert_eq!(rewrite_all(&input, 4), input);
        // A header block over the cap.
        let huge = frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &vec![0x82; MAX_HEADER_BLOCK_BYTES],
        );
        let input = connection(&[huge]);
        assert_eq!(rewrite_all(&input, 4096), input);
        // A stream cut in the middle of a header block.
        let headers = frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &schemed_block());
        let mut cut = PREFACE.to_vec();
        cut.extend_from_slice(&headers[..12]);
        assert_eq!(rewrite_all(&cut, 5), cut);
    }

    #[tokio::test]
    async fn wrapper_rewrites_reads_and_passes_writes() {
        let (client, server) = tokio::io::duplex(64);
        let mut fixed = AuthorityFix::new(server);
        let headers = frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &schemed_block());
        let input = connection(&[headers]);
        let expected = connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &plain_block())]);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            for piece in input.chunks(5) {
                client_write.write_all(piece).await.unwrap();
            }
            client_write.shutdown().await.unwrap();
            client_write
        });
        // Read in tiny buffers, as a worst case for the hand-off.
        let mut seen = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = fixed.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        assert_eq!(seen, expected);
        fixed.write_all(b"reply").await.unwrap();
        let mut reply = [0u8; 5];
        client_read.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");
        drop(writer.await.unwrap());
    }
}
