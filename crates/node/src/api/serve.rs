//! The client port's connections: HTTP/2 served on h2 directly, with the
//! KV service's unary calls answered inside the connection's own task.
//!
//! ```text
//!   TCP ──AuthorityFix── first bytes = HTTP/2 preface?
//!        ├─ yes: h2 connection task ──┬─ KV Range/Put/DeleteRange/Txn:
//!        │                            │    a future of this task (decode,
//!        │                            │    Api, encode, answer)
//!        │                            └─ anything else: a task bridging
//!        │                                 the stream to the tonic services
//!        └─ no: HTTP/1.1 (the JSON gateway) through hyper, same services
//! ```
//!
//! Why: with hyper every request is a task of its own that hands its answer
//! to the connection's task, and the replica loop finishing sixteen puts of
//! one connection wakes sixteen tasks, then the connection task sixteen
//! times. Here it wakes one task, which answers all sixteen and flushes
//! once (measured in BENCHMARKS.md, session 8).
//!
//! Invariants:
//! 1. Every stream gets an answer with a gRPC status, or a reset when the
//!    client reset it first or the connection failed; a KV call's answer
//!    matches what tonic would send for the same handler result (status,
//!    message, headers-only form for errors).
//! 2. A request body is read up to `max_message` bytes and no further:
//!    a larger one is refused with `OutOfRange` as tonic's decoder does,
//!    whatever length the client announced.
//! 3. Received data is handed back to flow control as it is consumed, and
//!    a bridged response waits for send capacity before it is queued, so a
//!    slow reader bounds what is buffered for it.
//! 4. Each connection's streams are bounded by
//!    [`MAX_CONCURRENT_STREAMS`]; a connection's failure ends only it.

use super::Api;
use bytes::{Buf, Bytes, BytesMut};
use concord_etcd_proto::coalesce::CoalescedWrites;
use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::kv_server::Kv;
use concord_etcd_proto::prost::Message;
use concord_etcd_proto::{grpc_frame as encode, GRPC_PREFIX_BYTES as PREFIX_BYTES};
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http_body::{Body as _, Frame};
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tonic::Status;
use tower_service::Service;

/// The client preface of HTTP/2 (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams one connection may have open: far above what a client keeps in
/// flight (etcd's Go client multiplexes everything on one connection; our
/// bench puts 32 on each at 256 clients) and a bound on the tasks and
/// buffers one client can pin.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// A connection that has not finished its first bytes by then is closed:
/// it holds a socket and a task and serves no one.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// Flow-control windows: larger than HTTP/2's 64 KiB default so a
/// full-size request (1.5 MiB) or a large range answer does not wait a
/// round trip per 64 KiB.
const STREAM_WINDOW_BYTES: u32 = 2 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 8 << 20;

/// Largest header block accepted (hyper's default, which tonic used).
const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The services behind the client port, as tonic builds them (the routes
/// of every gRPC service, under the JSON gateway's layer).
pub trait Services:
    Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error: Into<BoxError> + Send,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Services for S where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error: Into<BoxError> + Send,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The KV calls answered inside the connection task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KvCall {
    Range,
    Put,
    DeleteRange,
    Txn,
}

impl KvCall {
    fn from_path(path: &str) -> Option<KvCall> {
        match path {
            "/etcdserverpb.KV/Range" => Some(KvCall::Range),
            "/etcdserverpb.KV/Put" => Some(KvCall::Put),
            "/etcdserverpb.KV/DeleteRange" => Some(KvCall::DeleteRange),
            "/etcdserverpb.KV/Txn" => Some(KvCall::Txn),
            _ => None,
        }
    }
}

/// Serves one accepted connection until it ends.
pub async fn serve_connection<IO, S>(io: IO, api: Api, services: S, max_message: usize)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Services,
{
    let mut io = Rewind::new(io);
    let is_h2 = match tokio::time::timeout(PREFACE_TIMEOUT, io.read_prefix(PREFACE.len())).await {
        Ok(Ok(prefix)) => prefix == PREFACE,
        Ok(Err(_)) | Err(_) => return,
    };
    if is_h2 {
        serve_h2(io, api, services, max_message).await;
    } else {
        serve_http1(io, services).await;
    }
}

async fn serve_http1<IO, S>(io: Rewind<IO>, services: S)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Services,
{
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let mut services = services.clone();
            services.call(request.map(tonic::body::Body::new))
        });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

async fn serve_h2<IO, S>(io: Rewind<IO>, api: Api, services: S, max_message: usize)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Services,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        // Coalesced: answers of 256 bytes or more (a range of one key with
        // a 256-byte value) would otherwise take a system call each.
        .handshake::<_, Bytes>(CoalescedWrites::new(io));
    let Ok(Ok(mut connection)) = tokio::time::timeout(PREFACE_TIMEOUT, handshake).await else {
        return;
    };
    let mut calls = FuturesUnordered::new();
    let mut start =
        |(request, respond): (http::Request<RecvStream>, SendResponse<Bytes>)| match fast_path(
            &request,
        ) {
            Some(call) => Some(answer_kv(api.clone(), call, request, respond, max_message)),
            None => {
                tokio::spawn(bridge(services.clone(), request, respond));
                None
            }
        };
    let mut accept = |cx: &mut Context<'_>| match connection.poll_accept(cx) {
        Poll::Ready(Some(Ok(stream))) => Poll::Ready(Some(stream)),
        Poll::Ready(Some(Err(_)) | None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    };
    poll_fn(|cx| poll_turns(cx, &mut accept, &mut start, &mut calls)).await;
    // The peer said goodbye (or the connection failed): calls in flight
    // may still answer on a connection that is closing gracefully.
    let drain = async { while calls.next().await.is_some() {} };
    let close = poll_fn(|cx| connection.poll_closed(cx));
    let _ = tokio::join!(drain, close);
}

/// Drives one connection's streams and calls in turns: a turn takes every
/// stream `accept` has ready, then drives every call until none is ready,
/// and repeats until neither makes progress. `accept` polls the h2
/// connection, and only that writes, so the answers a turn completes are
/// queued before the next write and leave together (one system call with
/// `CoalescedWrites`). Choosing between the two with `select!` wrote
/// after most answers instead: in random order an answer that completed
/// alone was often flushed alone (0.82 writes per put at 64 clients), and
/// answers-first flushed each serializable read before taking the next
/// stream (BENCHMARKS.md, session 13). Ready when `accept` reports the
/// connection ended.
fn poll_turns<S, C: std::future::Future<Output = ()>>(
    cx: &mut Context<'_>,
    accept: &mut impl FnMut(&mut Context<'_>) -> Poll<Option<S>>,
    start: &mut impl FnMut(S) -> Option<C>,
    calls: &mut FuturesUnordered<C>,
) -> Poll<()> {
    loop {
        let mut progressed = false;
        while let Poll::Ready(stream) = accept(cx) {
            let Some(stream) = stream else {
                return Poll::Ready(());
            };
            if let Some(call) = start(stream) {
                calls.push(call);
            }
            progressed = true;
        }
        while let Poll::Ready(Some(())) = calls.poll_next_unpin(cx) {
            progressed = true;
        }
        if !progressed {
            return Poll::Pending;
        }
    }
}

/// The KV call `request` is, when it can be answered in the connection
/// task: a gRPC POST to one of the four unary KV methods.
fn fast_path(request: &http::Request<RecvStream>) -> Option<KvCall> {
    if request.method() != http::Method::POST {
        return None;
    }
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v == b"application/grpc" || v == b"application/grpc+proto"
        });
    if !grpc {
        return None;
    }
    KvCall::from_path(request.uri().path())
}

async fn answer_kv(
    api: Api,
    call: KvCall,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    max_message: usize,
) {
    let (_, mut body) = request.into_parts();
    let outcome = {
        let run = async {
            let message = read_message(&mut body, max_message).await?;
            dispatch(&api, call, message).await
        };
        // A client that resets the stream stops the call (as tonic drops
        // the handler): a read waits for nothing, a proposal keeps its
        // place in the log and its answer goes nowhere.
        tokio::select! {
            outcome = run => outcome,
            _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
        }
    };
    match outcome {
        Ok(encoded) => {
            let Ok(mut stream) = respond.send_response(grpc_head(), false) else {
                return;
            };
            if stream.send_data(encoded, false).is_ok() {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let _ = stream.send_trailers(trailers);
            }
        }
        Err(status) => answer_status(&mut respond, &status),
    }
}

/// A trailers-only answer carrying `status` (gRPC over HTTP/2,
/// "Responses"), as tonic sends for a handler's error.
fn answer_status(respond: &mut SendResponse<Bytes>, status: &Status) {
    let mut head = grpc_head();
    if status.add_header(head.headers_mut()).is_err() {
        head = grpc_head();
        let fallback = Status::internal("concord: status could not be encoded");
        let _ = fallback.add_header(head.headers_mut());
    }
    let _ = respond.send_response(head, true);
}

fn grpc_head() -> http::Response<()> {
    let mut head = http::Response::new(());
    head.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    head
}

/// Reads one uncompressed length-prefixed message (invariant 2).
async fn read_message(body: &mut RecvStream, max_message: usize) -> Result<Bytes, Status> {
    let mut received = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| Status::cancelled(format!("request body: {e}")))?;
        // Invariant 3.
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
        if received.len() >= PREFIX_BYTES {
            let announced =
                u32::from_be_bytes([received[1], received[2], received[3], received[4]]);
            let announced = announced as usize;
            if announced > max_message {
                return Err(too_large(announced, max_message));
            }
        }
        if received.len() > PREFIX_BYTES + max_message {
            return Err(too_large(received.len() - PREFIX_BYTES, max_message));
        }
    }
    if received.len() < PREFIX_BYTES {
        return Err(Status::internal("request without a message"));
    }
    let mut message = received.freeze();
    let compressed = message.get_u8();
    let length = message.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::unimplemented(
            "Message compressed, compression support not enabled.",
        ));
    }
    if length != message.len() {
        return Err(Status::internal(format!(
            "request message of {length} bytes announced, {} received",
            message.len()
        )));
    }
    Ok(message)
}

/// tonic's words for a message over `max_decoding_message_size`.
fn too_large(found: usize, limit: usize) -> Status {
    Status::out_of_range(format!(
        "Error, decoded message length too large: found {found} bytes, the limit is: {limit} bytes"
    ))
}

async fn dispatch(api: &Api, call: KvCall, message: Bytes) -> Result<Bytes, Status> {
    fn decode<M: Message + Default>(message: Bytes) -> Result<tonic::Request<M>, Status> {
        M::decode(message)
            .map(tonic::Request::new)
            .map_err(|e| Status::internal(format!("failed to decode Protobuf message: {e}")))
    }
    match call {
        KvCall::Range => {
            let answer = api.range(decode::<pb::RangeRequest>(message)?).await?;
            Ok(encode(answer.get_ref()))
        }
        KvCall::Put => {
            let answer = api.put(decode::<pb::PutRequest>(message)?).await?;
            Ok(encode(answer.get_ref()))
        }
        KvCall::DeleteRange => {
            let answer = api
                .delete_range(decode::<pb::DeleteRangeRequest>(message)?)
                .await?;
            Ok(encode(answer.get_ref()))
        }
        KvCall::Txn => {
            let answer = api.txn(decode::<pb::TxnRequest>(message)?).await?;
            Ok(encode(answer.get_ref()))
        }
    }
}

/// Serves a stream that is not a unary KV call through the tonic services
/// (watches, leases, the other services, the gateway over HTTP/2).
async fn bridge<S: Services>(
    mut services: S,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let request = request.map(|body| {
        tonic::body::Body::new(RequestBody {
            body,
            data_done: false,
        })
    });
    let response = tokio::select! {
        response = async {
            poll_fn(|cx| services.poll_ready(cx)).await?;
            services.call(request).await
        } => response,
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            let e: BoxError = e.into();
            return answer_status(&mut respond, &Status::internal(format!("concord: {e}")));
        }
    };
    let (head, body) = response.into_parts();
    let end = body.is_end_stream();
    let Ok(stream) = respond.send_response(http::Response::from_parts(head, ()), end) else {
        return;
    };
    if !end {
        pump(body, stream).await;
    }
}

/// Moves a response body onto its stream, waiting for send capacity
/// (invariant 3); a client reset drops the body, which ends the handler's
/// stream (a watch's, a keep-alive's).
async fn pump(mut body: tonic::body::Body, mut stream: SendStream<Bytes>) {
    loop {
        let frame = tokio::select! {
            frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        let frame = match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(_)) => {
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                while !data.is_empty() {
                    stream.reserve_capacity(data.len());
                    match poll_fn(|cx| stream.poll_capacity(cx)).await {
                        Some(Ok(0)) => continue,
                        Some(Ok(room)) => {
                            let chunk = data.split_to(room.min(data.len()));
                            if stream.send_data(chunk, false).is_err() {
                                return;
                            }
                        }
                        Some(Err(_)) | None => return,
                    }
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let _ = stream.send_trailers(trailers);
            return;
        }
    }
}

/// An HTTP/2 request body as an `http_body::Body` for the tonic services.
struct RequestBody {
    body: RecvStream,
    data_done: bool,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.body.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Invariant 3.
                    let _ = self.body.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.body.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// A connection whose first bytes were read to tell HTTP/2 from HTTP/1.1,
/// and are read again by whichever serves it.
struct Rewind<IO> {
    io: IO,
    prefix: Bytes,
}

impl<IO: AsyncRead + Unpin> Rewind<IO> {
    fn new(io: IO) -> Rewind<IO> {
        Rewind {
            io,
            prefix: Bytes::new(),
        }
    }

    /// Reads until `n` bytes or the end of input, keeps them for replay and
    /// returns them.
    async fn read_prefix(&mut self, n: usize) -> std::io::Result<Bytes> {
        let mut buf = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            let read = self.io.read(&mut buf[filled..]).await?;
            if read == 0 {
                break;
            }
            // An HTTP/1.1 request line diverges from the preface early;
            // waiting for all of its bytes could wait forever on a short
            // request that the client sent whole.
            if !PREFACE.starts_with(&buf[..filled + read]) {
                filled += read;
                break;
            }
            filled += read;
        }
        buf.truncate(filled);
        self.prefix = Bytes::from(buf);
        Ok(self.prefix.clone())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let replay = self.prefix.split_to(n);
            buf.put_slice(&replay);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_four_unary_kv_methods_take_the_fast_path() {
        assert_eq!(KvCall::from_path("/etcdserverpb.KV/Put"), Some(KvCall::Put));
        assert_eq!(KvCall::from_path("/etcdserverpb.KV/Txn"), Some(KvCall::Txn));
        assert_eq!(KvCall::from_path("/etcdserverpb.KV/Compact"), None);
        assert_eq!(KvCall::from_path("/etcdserverpb.Watch/Watch"), None);
        assert_eq!(KvCall::from_path("/v3/kv/put"), None);
    }

    #[test]
    fn answers_are_length_prefixed() {
        let header = pb::ResponseHeader {
            revision: 7,
            ..Default::default()
        };
        let framed = encode(&pb::PutResponse {
            header: Some(header),
            prev_kv: None,
        });
        assert_eq!(framed[0], 0);
        assert_eq!(
            u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
            framed.len() - PREFIX_BYTES
        );
        let back = pb::PutResponse::decode(&framed[PREFIX_BYTES..]).unwrap();
        assert_eq!(back.header.unwrap().revision, 7);
    }

    /// What a turn did, in order: each poll of the connection (which is
    /// where h2 writes) and each answer.
    #[derive(Debug, PartialEq, Clone, Copy)]
    enum Step {
        Poll,
        Answer,
    }

    #[test]
    fn a_turn_answers_every_ready_call_before_polling_the_connection_again() {
        use std::cell::RefCell;
        use std::rc::Rc;
        let steps = Rc::new(RefCell::new(Vec::new()));
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut calls = FuturesUnordered::new();
        // Eight streams have arrived; each call answers when first polled
        // (as a serializable range does).
        let mut arrived = 8;
        let poll_steps = Rc::clone(&steps);
        let mut accept = |_: &mut Context<'_>| {
            poll_steps.borrow_mut().push(Step::Poll);
            if arrived > 0 {
                arrived -= 1;
                Poll::Ready(Some(()))
            } else {
                Poll::Pending
            }
        };
        let answer_steps = Rc::clone(&steps);
        let mut start = |()| {
            let steps = Rc::clone(&answer_steps);
            Some(Box::pin(
                async move { steps.borrow_mut().push(Step::Answer) },
            ))
        };
        assert!(poll_turns(&mut cx, &mut accept, &mut start, &mut calls).is_pending());
        let mut expected = vec![Step::Poll; 9];
        expected.extend([Step::Answer; 8]);
        expected.push(Step::Poll);
        assert_eq!(*steps.borrow(), expected);
    }

    #[test]
    fn answers_that_complete_together_later_are_written_together() {
        use std::cell::RefCell;
        use std::rc::Rc;
        let steps = Rc::new(RefCell::new(Vec::new()));
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut calls = FuturesUnordered::new();
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            senders.push(tx);
            receivers.push(rx);
        }
        // Three streams arrive; their answers come later (as a put's do,
        // from the replica loop).
        let poll_steps = Rc::clone(&steps);
        let mut accept = |_: &mut Context<'_>| {
            poll_steps.borrow_mut().push(Step::Poll);
            match receivers.pop() {
                Some(rx) => Poll::Ready(Some(rx)),
                None => Poll::Pending,
            }
        };
        let answer_steps = Rc::clone(&steps);
        let mut start = |rx: tokio::sync::oneshot::Receiver<()>| {
            let steps = Rc::clone(&answer_steps);
            Some(Box::pin(async move {
                let _ = rx.await;
                steps.borrow_mut().push(Step::Answer);
            }))
        };
        assert!(poll_turns(&mut cx, &mut accept, &mut start, &mut calls).is_pending());
        assert!(!steps.borrow().contains(&Step::Answer));
        steps.borrow_mut().clear();
        for tx in senders {
            tx.send(()).unwrap();
        }
        assert!(poll_turns(&mut cx, &mut accept, &mut start, &mut calls).is_pending());
        assert_eq!(
            *steps.borrow(),
            [
                Step::Poll,
                Step::Answer,
                Step::Answer,
                Step::Answer,
                Step::Poll
            ]
        );
    }

    #[test]
    fn turns_end_when_the_connection_does() {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut calls = FuturesUnordered::<std::future::Ready<()>>::new();
        let mut accept = |_: &mut Context<'_>| Poll::Ready(None::<()>);
        let mut start = |()| None;
        assert!(poll_turns(&mut cx, &mut accept, &mut start, &mut calls).is_ready());
    }

    #[tokio::test]
    async fn the_prefix_is_replayed_to_whoever_serves_the_connection() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET /health HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut rewind = Rewind::new(server);
        let prefix = rewind.read_prefix(PREFACE.len()).await.unwrap();
        assert_ne!(&prefix[..], PREFACE);
        let mut all = vec![0u8; 24];
        rewind.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"GET /health HTTP/1.1\r\n\r\n");
    }
}
