//! The client port's own HTTP/2 handling (crates/node/src/api/serve.rs),
//! driven by a bare h2 client so requests can be malformed in ways no gRPC
//! library sends: compressed, shorter or longer than announced, too large,
//! not protobuf, or abandoned half-sent. Each gets a gRPC error (or, when
//! abandoned, nothing) and the same connection goes on serving.

mod support;

use bytes::{BufMut, Bytes, BytesMut};
use std::time::Duration;
use support::{runtime, Cluster};

/// What the server answered on one stream.
#[derive(Debug)]
struct Answer {
    grpc_status: String,
    grpc_message: String,
    body: Vec<u8>,
}

fn framed(compressed: bool, announced: u32, message: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(u8::from(compressed));
    out.put_u32(announced);
    out.put_slice(message);
    out.freeze()
}

/// A PutRequest `{key: k, value: v}` in protobuf (fields 1 and 2).
fn put_message(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0a, key.len() as u8];
    out.extend_from_slice(key);
    out.push(0x12);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
    out
}

/// grpc-message is percent-encoded on the wire.
fn percent_decoded(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&raw[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn grpc_request(origin: &str, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("{origin}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// An HTTP/2 connection to `addr`, driven by a task of its own.
async fn connect(addr: &str) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

async fn call(
    send: &h2::client::SendRequest<Bytes>,
    origin: &str,
    path: &str,
    body: Bytes,
) -> Answer {
    let mut send = send.clone().ready().await.expect("connection ready");
    let (response, mut stream) = send
        .send_request(grpc_request(origin, path), false)
        .expect("send headers");
    stream.send_data(body, true).expect("send body");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer in time")
        .expect("response headers");
    let header = |map: &http::HeaderMap, name: &str| {
        map.get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (parts, mut recv) = response.into_parts();
    if parts.headers.contains_key("grpc-status") {
        return Answer {
            grpc_status: header(&parts.headers, "grpc-status"),
            grpc_message: percent_decoded(&header(&parts.headers, "grpc-message")),
            body: Vec::new(),
        };
    }
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("response data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await.expect("trailers").unwrap_or_default();
    Answer {
        grpc_status: header(&trailers, "grpc-status"),
        grpc_message: percent_decoded(&header(&trailers, "grpc-message")),
        body,
    }
}

#[test]
fn malformed_kv_calls_get_grpc_errors_and_the_connection_keeps_serving() {
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(3));
    let addr = cluster.members[0].client_addr();
    let origin = format!("http://{addr}");
    rt.block_on(async {
        let send = connect(&addr).await;
        let put = "/etcdserverpb.KV/Put";
        let message = put_message(b"k", b"v");

        let good = call(
            &send,
            &origin,
            put,
            framed(false, message.len() as u32, &message),
        )
        .await;
        assert_eq!(good.grpc_status, "0", "{good:?}");
        assert!(good.body.len() > 5, "{good:?}");

        let compressed = call(
            &send,
            &origin,
            put,
            framed(true, message.len() as u32, &message),
        )
        .await;
        assert_eq!(compressed.grpc_status, "12", "{compressed:?}"); // Unimplemented

        let short = call(&send, &origin, put, framed(false, 100, &message)).await;
        assert_eq!(short.grpc_status, "13", "{short:?}"); // Internal
        assert!(short.grpc_message.contains("announced"), "{short:?}");

        let empty = call(&send, &origin, put, Bytes::new()).await;
        assert_eq!(empty.grpc_status, "13", "{empty:?}");

        let garbage = [0xff_u8; 8];
        let not_protobuf = call(&send, &origin, put, framed(false, 8, &garbage)).await;
        assert_eq!(not_protobuf.grpc_status, "13", "{not_protobuf:?}");
        assert!(
            not_protobuf.grpc_message.contains("decode"),
            "{not_protobuf:?}"
        );

        // Refused on the announced length alone: the 100 MiB never come.
        let huge = call(&send, &origin, put, framed(false, 100 << 20, b"")).await;
        assert_eq!(huge.grpc_status, "11", "{huge:?}"); // OutOfRange
        assert!(huge.grpc_message.contains("too large"), "{huge:?}");

        // Half a request, then the client gives up on it.
        {
            let mut ready = send.clone().ready().await.unwrap();
            let (_response, mut stream) = ready
                .send_request(grpc_request(&origin, put), false)
                .unwrap();
            stream
                .send_data(framed(false, 1000, &message), false)
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            stream.send_reset(h2::Reason::CANCEL);
        }

        // The connection and the member still serve, and the first put
        // is there.
        let range = "/etcdserverpb.KV/Range";
        let get = [0x0a, 1, b'k'];
        let read = call(&send, &origin, range, framed(false, 3, &get)).await;
        assert_eq!(read.grpc_status, "0", "{read:?}");
        assert!(
            // KeyValue.value is field 5: tag 0x2a, length 1, "v".
            read.body.windows(3).any(|w| w == b"\x2a\x01v"),
            "the value is in the answer: {read:?}"
        );
        let again = call(
            &send,
            &origin,
            put,
            framed(false, message.len() as u32, &message),
        )
        .await;
        assert_eq!(again.grpc_status, "0", "{again:?}");
    });
}

#[test]
fn an_unknown_method_is_unimplemented_over_the_same_connection() {
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(1));
    let addr = cluster.members[0].client_addr();
    let origin = format!("http://{addr}");
    rt.block_on(async {
        let send = connect(&addr).await;
        let unknown = call(
            &send,
            &origin,
            "/etcdserverpb.KV/Nope",
            framed(false, 0, b""),
        )
        .await;
        assert_eq!(unknown.grpc_status, "12", "{unknown:?}");
        let service = call(&send, &origin, "/no.Such/Service", framed(false, 0, b"")).await;
        assert_eq!(service.grpc_status, "12", "{service:?}");
        let status = call(
            &send,
            &origin,
            "/etcdserverpb.Maintenance/Status",
            framed(false, 0, b""),
        )
        .await;
        assert_eq!(status.grpc_status, "0", "{status:?}");
    });
}

#[test]
fn silent_and_half_greeting_connections_do_not_hold_up_other_clients() {
    use tokio::io::AsyncWriteExt;
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(1));
    let addr = cluster.members[0].client_addr();
    let origin = format!("http://{addr}");
    rt.block_on(async {
        // Each waits in the server for the first bytes that tell HTTP/2
        // from HTTP/1.1 (at most PREFACE_TIMEOUT, 10 s).
        let mut idle = Vec::new();
        for i in 0..60 {
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            if i % 2 == 1 {
                tcp.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
            }
            idle.push(tcp);
        }
        let started = std::time::Instant::now();
        let send = connect(&addr).await;
        let message = put_message(b"k", b"v");
        let put = call(
            &send,
            &origin,
            "/etcdserverpb.KV/Put",
            framed(false, message.len() as u32, &message),
        )
        .await;
        assert_eq!(put.grpc_status, "0", "{put:?}");
        // A liveness bound, not a speed claim: were the accept loop to wait
        // on a connection's first bytes, this call would come only after
        // the idle connections' 10 s preface timeouts.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "served only after {:?}",
            started.elapsed()
        );
        drop(idle);
    });
}
