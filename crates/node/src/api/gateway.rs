//! etcd's gRPC-JSON gateway, on the client port beside gRPC.
//!
//! etcd 3.4 serves HTTP/1.1 JSON at `/v3/...` (and the same routes under
//! `/v3beta`) on its client port: `POST /v3/kv/put {"key":"Zm9v",...}`.
//! [`GatewayLayer`] wraps the tonic routes of the client port: a request
//! whose content type is `application/grpc` goes straight to them; any other
//! request is a gateway call. The gateway **transcodes** and never
//! implements a call itself: it turns the JSON body into the method's
//! protobuf request, sends that through the very same tonic service as an
//! in-process gRPC call (same validation, limits, errors and streams), and
//! turns the answer back into JSON. So gRPC and JSON cannot disagree on
//! semantics.
//!
//! The JSON mapping is the one etcd's grpc-gateway (v1, `JSONPb{OrigName:
//! true}`) prints, driven by the descriptors in
//! [`concord_etcd_proto::FILE_DESCRIPTOR_SET`]:
//! * field names as declared in the `.proto` (`create_revision`, `dbSize`,
//!   `ID`, `TTL`), fields at their default value omitted;
//! * `bytes` as base64, 64-bit integers as strings, enums by name;
//! * requests accept field names or JSON names, integers as strings or
//!   numbers, and ignore unknown fields; an empty body is an empty request;
//!   only the first JSON value of the body is read.
//!
//! Answers, as etcd's gateway gives them:
//! * a unary call: `200` and the response object, or the gRPC error as
//!   `{"error":M,"message":M,"code":N}` with the HTTP status grpc-gateway
//!   maps code `N` to ([`http_status`]);
//! * a streaming call (Watch, LeaseKeepAlive, Observe, Snapshot):
//!   newline-separated `{"result":{...}}` objects; an error ends the stream
//!   with `{"error":{"grpc_code":N,"http_code":H,"message":M,"http_status":S}}`
//!   (and sets the HTTP status when it comes before the first result). The
//!   request body of Watch and LeaseKeepAlive is read as a stream of JSON
//!   objects, each one request;
//! * an unknown path: `404`; a route with another method than `POST`:
//!   `405` (`OPTIONS` is answered for CORS, as etcd does).
//!
//! Limits (DESIGN rule 4): a request body is read up to
//! [`GatewayConfig::body_bytes_max`] (twice the gRPC message limit, room for
//! base64 and JSON syntax) and refused past it; the rest is read and dropped,
//! never kept, within a byte and time bound, so that the client sees the
//! refusal instead of a reset under its send. The transcoded message is held
//! to the gRPC message limit
//! (`--max-request-bytes` plus [`super::GRPC_OVERHEAD_BYTES`]), refused with
//! grpc-go's message as etcd's gateway reports it. Both are `429`,
//! `ResourceExhausted`, and the member keeps serving.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use concord_etcd_proto::prost::Message;
use concord_etcd_proto::{FILE_DESCRIPTOR_SET, GATEWAY_ROUTES};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::{Code, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The prefixes etcd 3.4 serves the gateway under (`/v3alpha` went with
/// 3.3, `/v3beta` goes with 3.5).
const PREFIXES: &[&str] = &["/v3", "/v3beta"];

/// Request messages queued between the JSON reader and a streaming call.
const STREAM_REQUESTS_QUEUED: usize = 16;
/// JSON chunks queued towards a slow HTTP client of a streaming call.
const STREAM_CHUNKS_QUEUED: usize = 16;

/// gRPC length-prefixed message header: compression flag + u32 length.
const GRPC_HEADER_BYTES: usize = 5;

/// Gateway limits, from `--max-request-bytes`.
#[derive(Clone, Copy, Debug)]
pub struct GatewayConfig {
    /// Largest protobuf request message (the gRPC decoding limit).
    pub message_bytes_max: usize,
    /// Largest JSON body read (one message, for streaming calls).
    pub body_bytes_max: usize,
}

impl GatewayConfig {
    /// Limits for a member started with this `--max-request-bytes`.
    pub fn new(max_request_bytes: usize) -> GatewayConfig {
        let message_bytes_max = max_request_bytes + super::GRPC_OVERHEAD_BYTES;
        GatewayConfig {
            message_bytes_max,
            body_bytes_max: 2 * message_bytes_max,
        }
    }
}

/// One gateway route.
struct Route {
    /// `/package.Service/Method`.
    grpc_path: &'static str,
    input: MessageDescriptor,
    output: MessageDescriptor,
    client_streaming: bool,
    server_streaming: bool,
}

/// Routes by path without the version prefix (`/kv/range`).
static ROUTES: LazyLock<HashMap<&'static str, Route>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptors built with us");
    GATEWAY_ROUTES
        .iter()
        .map(|(path, method)| {
            let (service, name) = method.split_once('/').expect("Service/Method");
            let method = pool
                .get_service_by_name(service)
                .and_then(|s| s.methods().find(|m| m.name() == name))
                .expect("every gateway route names a declared method");
            let grpc_path: &'static str = Box::leak(format!("/{service}/{name}").into_boxed_str());
            let suffix = path.strip_prefix("/v3").expect("routes are under /v3");
            let route = Route {
                grpc_path,
                input: method.input(),
                output: method.output(),
                client_streaming: method.is_client_streaming(),
                server_streaming: method.is_server_streaming(),
            };
            (suffix, route)
        })
        .collect()
});

fn find_route(path: &str) -> Option<&'static Route> {
    PREFIXES.iter().find_map(|prefix| {
        let rest = path.strip_prefix(prefix)?;
        ROUTES.get(rest)
    })
}

/// Whether `path` is under a gateway prefix (an unknown route there is the
/// gateway's 404, as etcd answers it).
fn under_prefix(path: &str) -> bool {
    PREFIXES.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

const SERIALIZE: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .stringify_64_bit_integers(true)
    .use_enum_numbers(false)
    .skip_default_fields(true);
const DESERIALIZE: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(false);

/// Serves the gateway beside the gRPC services it wraps (module docs).
#[derive(Clone, Copy, Debug)]
pub struct GatewayLayer {
    config: GatewayConfig,
}

impl GatewayLayer {
    /// A layer with these limits.
    pub fn new(config: GatewayConfig) -> GatewayLayer {
        GatewayLayer { config }
    }
}

impl<S> tower_layer::Layer<S> for GatewayLayer {
    type Service = Gateway<S>;

    fn layer(&self, inner: S) -> Gateway<S> {
        Gateway {
            inner,
            config: self.config,
        }
    }
}

/// The client port's service: gRPC to `inner`, the rest to the gateway.
#[derive(Clone, Debug)]
pub struct Gateway<S> {
    inner: S,
    config: GatewayConfig,
}

impl<S> tower_service::Service<Request<Body>> for Gateway<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let grpc = request
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            let future = self.inner.call(request);
            return Box::pin(async move { future.await.map_err(Into::into) });
        }
        // The ready service stays for the next call; the gateway drives a
        // clone of it to readiness itself.
        let service = self.inner.clone();
        let config = self.config;
        Box::pin(async move { Ok(serve(service, config, request).await) })
    }
}

/// Answers one gateway request.
async fn serve<S>(service: S, config: GatewayConfig, request: Request<Body>) -> Response<Body>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
{
    let path = request.uri().path();
    let route = find_route(path);
    if request.method() == Method::OPTIONS && (route.is_some() || under_prefix(path)) {
        return with_cors(Response::new(Body::empty()));
    }
    let Some(route) = route else {
        let text = if under_prefix(path) {
            "Not Found\n"
        } else {
            "404 page not found\n"
        };
        return plain(StatusCode::NOT_FOUND, text);
    };
    if request.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    let metadata = forwarded_metadata(request.headers());
    let body = request.into_body();
    if route.client_streaming {
        serve_bidi(service, config, route, metadata, body).await
    } else {
        serve_single_request(service, config, route, metadata, body).await
    }
}

/// A unary or server-streaming call: the body is one request message.
async fn serve_single_request<S>(
    service: S,
    config: GatewayConfig,
    route: &'static Route,
    metadata: Vec<(HeaderName, HeaderValue)>,
    body: Body,
) -> Response<Body>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
{
    let bytes = match collect_bounded(body, config.body_bytes_max).await {
        Ok(bytes) => bytes,
        Err(BodyRead::TooLarge) => return error_response(&body_too_large(config)),
        Err(BodyRead::Failed(e)) => {
            return error_response(&Status::invalid_argument(format!(
                "reading the request body: {e}"
            )))
        }
    };
    let mut reader = JsonReader::new(bytes);
    // The whole body is here: an incomplete value is an error, no value at
    // all an empty request.
    let frame = match reader.next_value() {
        Ok(Some(value)) => encode_request(route, config, value),
        Ok(None) if reader.only_whitespace() => {
            encode_request(route, config, serde_json::Value::Object(Default::default()))
        }
        Ok(None) => Err(Status::invalid_argument("unexpected EOF")),
        Err(e) => Err(Status::invalid_argument(e.to_string())),
    };
    let frame = match frame {
        Ok(frame) => frame,
        Err(status) => return error_response(&status),
    };
    let grpc_body = Body::new(Full::new(frame));
    let answer = match call(service, route, metadata, grpc_body).await {
        Ok(answer) => answer,
        Err(status) => return error_response(&status),
    };
    if route.server_streaming {
        return stream_response(answer, route, None).await;
    }
    unary_response(answer, route).await
}

/// A client-streaming call (Watch, LeaseKeepAlive): the body is a stream of
/// JSON objects, each one request, fed to the call as they arrive.
async fn serve_bidi<S>(
    service: S,
    config: GatewayConfig,
    route: &'static Route,
    metadata: Vec<(HeaderName, HeaderValue)>,
    body: Body,
) -> Response<Body>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
{
    let mut json = JsonStream {
        body,
        reader: JsonReader::new(Bytes::new()),
        limit: config.body_bytes_max,
    };
    // As etcd's gateway: the first request is read before the call starts,
    // and a bad one is answered with code Unknown.
    let first = match json.next().await {
        Ok(None) => None,
        Ok(Some(value)) => match encode_request(route, config, value) {
            Ok(frame) => Some(frame),
            Err(status) => return error_response(&Status::unknown(status.message())),
        },
        Err(status) => return error_response(&Status::new(Code::Unknown, status.message())),
    };
    let (requests, requests_rx) =
        mpsc::channel::<Result<Frame<Bytes>, Infallible>>(STREAM_REQUESTS_QUEUED);
    let (failed, failed_rx) = oneshot::channel();
    if let Some(first) = first {
        let _ = requests.send(Ok(Frame::data(first))).await;
        tokio::spawn(async move {
            let error = loop {
                let next = tokio::select! {
                    _ = requests.closed() => return,
                    next = json.next() => next,
                };
                let frame = match next {
                    Ok(None) => return,
                    Ok(Some(value)) => encode_request(route, config, value),
                    Err(status) => Err(status),
                };
                match frame {
                    Ok(frame) => {
                        if requests.send(Ok(Frame::data(frame))).await.is_err() {
                            return;
                        }
                    }
                    Err(status) => break status,
                }
            };
            // A bad later request ends the call (etcd's gateway cancels it).
            let _ = failed.send(error);
        });
    }
    let grpc_body = Body::new(StreamBody::new(ReceiverStream::new(requests_rx)));
    match call(service, route, metadata, grpc_body).await {
        Ok(answer) => stream_response(answer, route, Some(failed_rx)).await,
        Err(status) => error_response(&status),
    }
}

/// Sends one in-process gRPC call through the wrapped service.
async fn call<S>(
    mut service: S,
    route: &Route,
    metadata: Vec<(HeaderName, HeaderValue)>,
    body: Body,
) -> Result<GrpcAnswer, Status>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
{
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(route.grpc_path)
        .header(CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(body)
        .map_err(|e| Status::internal(format!("gateway: {e}")))?;
    request.headers_mut().extend(metadata);
    let internal = |e: S::Error| Status::internal(format!("gateway: {}", e.into()));
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(internal)?;
    let response = service.call(request).await.map_err(internal)?;
    // A trailers-only answer carries its status in the headers.
    let ended = Status::from_header_map(response.headers());
    Ok(GrpcAnswer {
        body: response.into_body(),
        buffer: BytesMut::new(),
        ended,
        finished: false,
    })
}

/// The response side of an in-process gRPC call, message by message.
struct GrpcAnswer {
    body: Body,
    buffer: BytesMut,
    /// The call's final status, once known.
    ended: Option<Status>,
    finished: bool,
}

impl GrpcAnswer {
    /// The next message; `None` once the call ended well; the status if it
    /// ended badly.
    async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        loop {
            if self.finished {
                return None;
            }
            if self.buffer.len() >= GRPC_HEADER_BYTES {
                if self.buffer[0] != 0 {
                    self.finished = true;
                    return Some(Err(Status::internal("gateway: compressed gRPC message")));
                }
                let len =
                    u32::from_be_bytes(self.buffer[1..5].try_into().expect("4 bytes")) as usize;
                if self.buffer.len() >= GRPC_HEADER_BYTES + len {
                    self.buffer.advance(GRPC_HEADER_BYTES);
                    return Some(Ok(self.buffer.split_to(len).freeze()));
                }
            }
            if let Some(status) = self.ended.take() {
                self.finished = true;
                if status.code() != Code::Ok {
                    return Some(Err(status));
                }
                if !self.buffer.is_empty() {
                    return Some(Err(Status::internal("gateway: truncated gRPC message")));
                }
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        if let Some(trailers) = frame.trailers_ref() {
                            self.ended =
                                Some(Status::from_header_map(trailers).unwrap_or_else(|| {
                                    Status::internal("gateway: gRPC trailers without a status")
                                }));
                        }
                    }
                },
                Some(Err(e)) => self.ended = Some(Status::from_error(e.into())),
                None => {
                    self.ended = Some(Status::internal("gateway: gRPC call ended without status"))
                }
            }
        }
    }
}

async fn unary_response(mut answer: GrpcAnswer, route: &Route) -> Response<Body> {
    let message = match answer.next().await {
        Some(Ok(message)) => message,
        Some(Err(status)) => return error_response(&status),
        None => return error_response(&Status::internal("empty response")),
    };
    // The call's status comes after its message.
    if let Some(Err(status)) = answer.next().await {
        return error_response(&status);
    }
    match to_json(&route.output, message) {
        Ok(json) => json_response(StatusCode::OK, json, true),
        Err(status) => error_response(&status),
    }
}

/// Streams `{"result":...}` lines; the first is awaited before answering so
/// an early error sets the HTTP status (as etcd's gateway does).
async fn stream_response(
    mut answer: GrpcAnswer,
    route: &'static Route,
    mut failed: Option<oneshot::Receiver<Status>>,
) -> Response<Body> {
    let first = next_result(&mut answer, route, &mut failed).await;
    let first = match first {
        None => return json_response(StatusCode::OK, Vec::new(), true),
        Some(Err(status)) => {
            return json_response(http_status(status.code()), stream_error(&status), false)
        }
        Some(Ok(chunk)) => chunk,
    };
    let (chunks, chunks_rx) =
        mpsc::channel::<Result<Frame<Bytes>, Infallible>>(STREAM_CHUNKS_QUEUED);
    let _ = chunks.send(Ok(Frame::data(first.into()))).await;
    tokio::spawn(async move {
        loop {
            // Stop as soon as the HTTP client goes away: dropping the answer
            // ends the call (a watch without events would otherwise linger).
            let next = tokio::select! {
                _ = chunks.closed() => return,
                next = next_result(&mut answer, route, &mut failed) => next,
            };
            let chunk = match next {
                None => return,
                Some(Ok(chunk)) => chunk,
                Some(Err(status)) => {
                    let _ = chunks
                        .send(Ok(Frame::data(stream_error(&status).into())))
                        .await;
                    return;
                }
            };
            if chunks.send(Ok(Frame::data(chunk.into()))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::new(StreamBody::new(ReceiverStream::new(chunks_rx)));
    with_json_headers(Response::new(body), true)
}

/// The next `{"result":...}\n` line of a stream, or its ending.
async fn next_result(
    answer: &mut GrpcAnswer,
    route: &Route,
    failed: &mut Option<oneshot::Receiver<Status>>,
) -> Option<Result<Vec<u8>, Status>> {
    let next = match failed {
        Some(failed_rx) => tokio::select! {
            status = failed_rx => match status {
                Ok(status) => Some(Err(status)),
                // The request reader ended well: only the answer is left.
                Err(_) => {
                    *failed = None;
                    answer.next().await
                }
            },
            next = answer.next() => next,
        },
        None => answer.next().await,
    };
    Some(next?.and_then(|message| {
        let json = to_json(&route.output, message)?;
        let mut line = Vec::with_capacity(json.len() + 12);
        line.extend_from_slice(br#"{"result":"#);
        line.extend_from_slice(&json);
        line.extend_from_slice(b"}\n");
        Ok(line)
    }))
}

/// JSON value -> protobuf request -> gRPC frame, within the message limit.
fn encode_request(
    route: &Route,
    config: GatewayConfig,
    value: serde_json::Value,
) -> Result<Bytes, Status> {
    let message =
        DynamicMessage::deserialize_with_options(route.input.clone(), value, &DESERIALIZE)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let len = message.encoded_len();
    if len > config.message_bytes_max {
        // grpc-go's words, which etcd's gateway passes on.
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {})",
            config.message_bytes_max
        )));
    }
    let mut frame = BytesMut::with_capacity(GRPC_HEADER_BYTES + len);
    frame.put_u8(0);
    frame.put_u32(len as u32);
    message
        .encode(&mut frame)
        .map_err(|e| Status::internal(format!("gateway: {e}")))?;
    Ok(frame.freeze())
}

/// A protobuf response message as etcd's gateway prints it.
fn to_json(output: &MessageDescriptor, message: Bytes) -> Result<Vec<u8>, Status> {
    let message = DynamicMessage::decode(output.clone(), message)
        .map_err(|e| Status::internal(format!("gateway: decoding the response: {e}")))?;
    let mut json = serde_json::Serializer::new(Vec::new());
    message
        .serialize_with_options(&mut json, &SERIALIZE)
        .map_err(|e| Status::internal(format!("gateway: encoding the response: {e}")))?;
    Ok(json.into_inner())
}

/// Reads JSON values one after another from a buffer (whitespace between
/// them), as Go's `json.Decoder` does.
struct JsonReader {
    buffer: BytesMut,
}

impl JsonReader {
    fn new(bytes: Bytes) -> JsonReader {
        JsonReader {
            buffer: BytesMut::from(bytes),
        }
    }

    /// The next complete value; `Ok(None)` if the buffer holds no complete
    /// value yet (or only whitespace).
    fn next_value(&mut self) -> Result<Option<serde_json::Value>, serde_json::Error> {
        let mut values =
            serde_json::Deserializer::from_slice(&self.buffer).into_iter::<serde_json::Value>();
        match values.next() {
            None => Ok(None),
            Some(Ok(value)) => {
                let used = values.byte_offset();
                self.buffer.advance(used);
                Ok(Some(value))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(e),
        }
    }

    fn only_whitespace(&self) -> bool {
        self.buffer.iter().all(u8::is_ascii_whitespace)
    }
}

/// JSON values from a streamed request body, each bounded by `limit`.
struct JsonStream {
    body: Body,
    reader: JsonReader,
    limit: usize,
}

impl JsonStream {
    /// The next request object; `Ok(None)` at the end of the body.
    async fn next(&mut self) -> Result<Option<serde_json::Value>, Status> {
        loop {
            if let Some(value) = self
                .reader
                .next_value()
                .map_err(|e| Status::invalid_argument(e.to_string()))?
            {
                return Ok(Some(value));
            }
            if self.reader.buffer.len() > self.limit {
                return Err(Status::resource_exhausted(format!(
                    "gateway: a request in the stream is larger than {} bytes",
                    self.limit
                )));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.reader.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(Status::invalid_argument(format!(
                        "reading the request body: {e}"
                    )))
                }
                None if self.reader.only_whitespace() => return Ok(None),
                None => return Err(Status::invalid_argument("unexpected EOF")),
            }
        }
    }
}

/// The HTTP status etcd's gateway (grpc-gateway v1) answers a gRPC code with.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Most bytes of an oversized body read and dropped before the refusal is
/// sent. A client that is still sending when the server answers and closes
/// gets a TCP reset and may lose the answer (curl then reports no status
/// at all); reading on, without keeping anything, lets an ordinary
/// oversized request see its error, and the bound keeps a client that
/// sends forever from holding the connection.
const OVERSIZED_DRAIN_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Longest time spent draining an oversized body (same reason).
const OVERSIZED_DRAIN_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(2);

enum BodyRead {
    TooLarge,
    Failed(BoxError),
}

/// The whole body if it has at most `limit` bytes. A longer one is not
/// kept: it is read on and dropped within the drain bounds above, then
/// refused.
async fn collect_bounded(mut body: Body, limit: usize) -> Result<Bytes, BodyRead> {
    let mut kept = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Ok(kept.freeze()),
            Some(Err(e)) => return Err(BodyRead::Failed(e.into())),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if kept.len() + data.len() > limit {
                    break;
                }
                kept.extend_from_slice(&data);
            }
        }
    }
    drop(kept);
    let drain = async {
        let mut dropped = 0usize;
        while dropped < OVERSIZED_DRAIN_BYTES_MAX {
            match body.frame().await {
                Some(Ok(frame)) => dropped += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(OVERSIZED_DRAIN_TIME_MAX, drain).await;
    Err(BodyRead::TooLarge)
}

fn body_too_large(config: GatewayConfig) -> Status {
    Status::resource_exhausted(format!(
        "gateway: request body is larger than {} bytes (twice --max-request-bytes plus gRPC \
         overhead)",
        config.body_bytes_max
    ))
}

/// `{"error":M,"message":M,"code":N}` with the mapped HTTP status.
fn error_response(status: &Status) -> Response<Body> {
    let message = serde_json::to_string(status.message()).expect("a string");
    let json = format!(
        r#"{{"error":{message},"message":{message},"code":{}}}"#,
        status.code() as i32
    );
    json_response(http_status(status.code()), json.into_bytes(), false)
}

/// The error line that ends a stream.
fn stream_error(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    format!(
        r#"{{"error":{{"grpc_code":{},"http_code":{},"message":{},"http_status":{}}}}}"#,
        status.code() as i32,
        http.as_u16(),
        serde_json::to_string(status.message()).expect("a string"),
        serde_json::to_string(http.canonical_reason().unwrap_or("")).expect("a string"),
    )
    .into_bytes()
}

fn json_response(status: StatusCode, json: Vec<u8>, from_call: bool) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from(json))));
    *response.status_mut() = status;
    with_json_headers(response, from_call)
}

fn with_json_headers(mut response: Response<Body>, from_call: bool) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if from_call {
        // etcd's gateway passes the gRPC response headers on like this.
        headers.insert(
            "grpc-metadata-content-type",
            HeaderValue::from_static("application/grpc"),
        );
    }
    with_cors(response)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    with_cors(response)
}

/// The CORS headers etcd's client port sets on every answer.
fn with_cors(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    response
}

/// HTTP headers passed to the call as gRPC metadata, as grpc-gateway does:
/// `Authorization`, and `Grpc-Metadata-<key>` as `<key>`.
fn forwarded_metadata(headers: &http::HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            if name == http::header::AUTHORIZATION {
                return Some((name.clone(), value.clone()));
            }
            let key = name.as_str().strip_prefix("grpc-metadata-")?;
            let key = HeaderName::from_bytes(key.as_bytes()).ok()?;
            Some((key, value.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_resolves_under_both_prefixes() {
        for (path, method) in GATEWAY_ROUTES {
            let route = find_route(path).expect(path);
            assert_eq!(route.grpc_path, format!("/{method}"));
            let beta = path.replacen("/v3", "/v3beta", 1);
            assert!(find_route(&beta).is_some(), "{beta}");
            assert!(find_route(&path.replacen("/v3", "/v3alpha", 1)).is_none());
        }
        assert!(find_route("/v3/kv/nope").is_none());
        assert!(under_prefix("/v3/kv/nope") && !under_prefix("/v3x/kv"));
    }

    #[test]
    fn json_mapping_is_etcds() {
        let route = find_route("/v3/kv/put").expect("put");
        let value = serde_json::json!({"key": "Zm9v", "value": "YmFy", "lease": "7", "junk": 1});
        let frame = encode_request(route, GatewayConfig::new(1024), value).expect("encodes");
        let request = DynamicMessage::decode(route.input.clone(), &frame[GRPC_HEADER_BYTES..])
            .expect("decodes");
        assert_eq!(
            request.get_field_by_name("key").expect("key").as_bytes(),
            Some(&Bytes::from_static(b"foo"))
        );
        let range = find_route("/v3/kv/range").expect("range");
        let response = concord_etcd_proto::etcdserverpb::RangeResponse {
            header: Some(concord_etcd_proto::etcdserverpb::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 0,
            }),
            kvs: vec![concord_etcd_proto::mvccpb::KeyValue {
                key: b"foo".to_vec(),
                value: b"bar".to_vec(),
                version: 1,
                ..Default::default()
            }],
            count: 1,
            more: false,
        };
        let json = to_json(&range.output, response.encode_to_vec().into()).expect("json");
        assert_eq!(
            String::from_utf8(json).expect("utf-8"),
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3"},"kvs":[{"key":"Zm9v","version":"1","value":"YmFy"}],"count":"1"}"#
        );
    }

    #[test]
    fn json_reader_takes_values_one_by_one() {
        let mut reader = JsonReader::new(Bytes::from_static(b" {\"a\":1}\n{\"b\":"));
        assert_eq!(
            reader.next_value().expect("ok"),
            Some(serde_json::json!({"a": 1}))
        );
        assert_eq!(reader.next_value().expect("ok"), None);
        assert!(!reader.only_whitespace());
        let mut bad = JsonReader::new(Bytes::from_static(b"{bad"));
        assert!(bad.next_value().is_err());
    }

    #[test]
    fn errors_look_like_etcds() {
        let status = Status::not_found("etcdserver: requested lease not found");
        let response = error_response(&status);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            String::from_utf8(stream_error(&status)).expect("utf-8"),
            r#"{"error":{"grpc_code":5,"http_code":404,"message":"etcdserver: requested lease not found","http_status":"Not Found"}}"#
        );
    }
}
