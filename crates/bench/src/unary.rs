//! Unary gRPC calls over a bare HTTP/2 connection, for the KV ops the
//! benchmark sends by the hundred thousand.
//!
//! Why not tonic's `Channel`: its calls pass a buffer task and then
//! hyper's connection task before h2 sees them, two cross-task hand-offs
//! per request, each a possible thread wake-up. On the 2-core machines the
//! benchmark runs on, the load generator shares the CPU with the members it
//! measures, so every microsecond it spends per request is taken from the
//! server under test (measured in BENCHMARKS.md, session 8). Here the
//! calling task puts its request straight into h2's stream state; the
//! connection task only moves bytes.
//!
//! Invariants:
//! 1. A call answers exactly one of: the decoded message, or a
//!    [`Status`] that says why not, with the server's gRPC status and
//!    message when it sent one, so error kinds in the report read the same
//!    as through tonic.
//! 2. A response larger than [`RESPONSE_BYTES_MAX`] is an error, not an
//!    allocation of whatever size the peer announced.
//! 3. Every byte of response data received is handed back to the
//!    connection's flow-control window, so a connection never stalls on
//!    data it has consumed.

use bytes::{Buf, Bytes, BytesMut};
use concord_etcd_proto::coalesce::CoalescedWrites;
use concord_etcd_proto::prost::Message;
use concord_etcd_proto::tonic::{Code, Status};
use concord_etcd_proto::{grpc_frame as encode, GRPC_PREFIX_BYTES as PREFIX_BYTES};
use std::time::Duration;
use tokio::net::TcpStream;

/// Largest response accepted: far above any benchmark answer (one key's
/// range or a put's header), and a bound on what a misbehaving server can
/// make the benchmark allocate (invariant 2).
pub const RESPONSE_BYTES_MAX: usize = 64 << 20;

/// HTTP/2 windows as tonic's client sets them by default, so both transports
/// offer the server the same flow control.
const STREAM_WINDOW_BYTES: u32 = 2 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 4 << 20;

/// One HTTP/2 connection; clone it to share it between clients.
#[derive(Clone)]
pub struct UnaryChannel {
    send: h2::client::SendRequest<Bytes>,
    /// `http://host:port`, the scheme and authority of every request.
    origin: String,
}

impl UnaryChannel {
    /// Connects to `endpoint` (`host:port`) and starts the connection task.
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<UnaryChannel, String> {
        let open = async {
            let tcp = TcpStream::connect(endpoint)
                .await
                .map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                // Coalesced: a 256-byte put is a DATA frame h2 would
                // otherwise write with a system call of its own.
                .handshake::<_, Bytes>(CoalescedWrites::new(tcp))
                .await
                .map_err(|e| e.to_string())
        };
        let (send, connection) = tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| "connect timed out".to_string())??;
        tokio::spawn(async move {
            // Its end is seen by every call in flight as an h2 error.
            let _ = connection.await;
        });
        Ok(UnaryChannel {
            send,
            origin: format!("http://{endpoint}"),
        })
    }

    /// Calls `path` (`/package.Service/Method`) with `request`.
    pub async fn call<Q: Message, A: Message + Default>(
        &self,
        path: &str,
        request: &Q,
    ) -> Result<A, Status> {
        let head = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{}{path}", self.origin))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(())
            .map_err(|e| Status::internal(format!("request: {e}")))?;
        let mut send = self.send.clone().ready().await.map_err(transport)?;
        let (response, mut stream) = send.send_request(head, false).map_err(transport)?;
        stream.send_data(encode(request), true).map_err(transport)?;
        let response = response.await.map_err(transport)?;
        // A "trailers-only" answer carries its status in the headers.
        if let Some(status) = status_of(response.headers()) {
            return Err(status.unwrap_err());
        }
        if response.status() != http::StatusCode::OK {
            return Err(Status::unknown(format!(
                "HTTP status {}",
                response.status()
            )));
        }
        let mut body = response.into_body();
        let mut received = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport)?;
            // Invariant 3.
            let _ = body.flow_control().release_capacity(chunk.len());
            if received.len() + chunk.len() > RESPONSE_BYTES_MAX + PREFIX_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "response larger than {RESPONSE_BYTES_MAX} bytes"
                )));
            }
            received.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(transport)?;
        match trailers.as_ref().and_then(status_of) {
            Some(Ok(())) => decode(received.freeze()),
            Some(Err(status)) => Err(status),
            None => Err(Status::internal("response ended without a grpc-status")),
        }
    }
}

/// An h2 error as the Status a client would see from tonic.
fn transport(e: h2::Error) -> Status {
    Status::unavailable(format!("transport: {e}"))
}

/// Decodes exactly one uncompressed length-prefixed message.
fn decode<A: Message + Default>(mut body: Bytes) -> Result<A, Status> {
    if body.len() < PREFIX_BYTES {
        return Err(Status::internal("response without a message"));
    }
    let compressed = body.get_u8();
    let length = body.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::internal("compressed response, none was offered"));
    }
    if length != body.len() {
        return Err(Status::internal(format!(
            "response message of {length} bytes announced, {} received",
            body.len()
        )));
    }
    A::decode(body).map_err(|e| Status::internal(format!("decoding the response: {e}")))
}

/// `Some(Ok)` for grpc-status 0, `Some(Err)` for another status, `None`
/// when the headers carry none.
fn status_of(headers: &http::HeaderMap) -> Option<Result<(), Status>> {
    let code = headers.get("grpc-status")?;
    let code = code
        .to_str()
        .ok()
        .and_then(|c| c.parse::<i32>().ok())
        .map(Code::from)
        .unwrap_or(Code::Unknown);
    if code == Code::Ok {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Some(Err(Status::new(code, message)))
}

/// grpc-message is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_etcd_proto::etcdserverpb::PutRequest;

    #[test]
    fn a_message_survives_the_length_prefix() {
        let request = PutRequest {
            key: b"k".to_vec(),
            value: vec![7; 300],
            ..Default::default()
        };
        let framed = encode(&request);
        assert_eq!(framed[0], 0);
        assert_eq!(
            u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
            framed.len() - PREFIX_BYTES
        );
        let back: PutRequest = decode(framed).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn short_compressed_or_mislabelled_bodies_are_errors() {
        let framed = encode(&PutRequest::default());
        assert!(decode::<PutRequest>(framed.slice(..3)).is_err());
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert!(decode::<PutRequest>(Bytes::from(compressed)).is_err());
        let mut longer = encode(&PutRequest {
            key: b"abc".to_vec(),
            ..Default::default()
        })
        .to_vec();
        longer.push(0);
        let e = decode::<PutRequest>(Bytes::from(longer)).unwrap_err();
        assert!(e.message().contains("announced"), "{e:?}");
    }

    #[test]
    fn the_status_comes_from_grpc_status_and_a_decoded_message() {
        let mut headers = http::HeaderMap::new();
        assert!(status_of(&headers).is_none());
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(matches!(status_of(&headers), Some(Ok(()))));
        headers.insert("grpc-status", "9".parse().unwrap());
        headers.insert(
            "grpc-message",
            "etcdserver:%20requested%20lease%20not%20found"
                .parse()
                .unwrap(),
        );
        let status = status_of(&headers).unwrap().unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "etcdserver: requested lease not found");
        headers.insert("grpc-status", "nonsense".parse().unwrap());
        assert_eq!(
            status_of(&headers).unwrap().unwrap_err().code(),
            Code::Unknown
        );
    }

    #[test]
    fn percent_decoding_leaves_malformed_escapes_alone() {
        assert_eq!(percent_decode(b"a%20b"), "a b");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }
}
