//! `CoalescedWrites` under a real `h2` server: answers of a few hundred
//! bytes that are ready together leave in a few writes, not one each. The
//! control case runs the same exchange on the bare stream and shows the
//! one-write-per-answer behaviour the adapter exists to remove.

use bytes::Bytes;
use concord_etcd_proto::coalesce::CoalescedWrites;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Answers in flight at once, each with a body over h2's 256-byte copy
/// threshold for vectored streams.
const ANSWERS: usize = 16;
const BODY_BYTES: usize = 300;

/// A duplex stream that counts the write calls reaching it and, like a
/// `TcpStream`, supports vectored writes.
struct CountedStream {
    io: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        me.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut me.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        me.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut me.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Runs `ANSWERS` calls whose answers the server makes ready together and
/// returns how many write calls the server's stream saw while sending them.
async fn writes_for_ready_answers(coalesce: bool) -> usize {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = CountedStream {
        io: server_io,
        writes: Arc::clone(&writes),
    };
    let server = tokio::spawn(async move {
        async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
            io: T,
            writes: Arc<AtomicUsize>,
        ) -> usize {
            let mut connection = h2::server::handshake(io).await.unwrap();
            let mut pending = Vec::new();
            while pending.len() < ANSWERS {
                let (_request, respond) = connection.accept().await.unwrap().unwrap();
                pending.push(respond);
            }
            // Everything before the answers (settings, acks) is not counted.
            let before = writes.load(Ordering::SeqCst);
            for mut respond in pending {
                let mut body = respond
                    .send_response(http::Response::new(()), false)
                    .unwrap();
                body.send_data(Bytes::from(vec![b'a'; BODY_BYTES]), true)
                    .unwrap();
            }
            // Driving the connection writes the queued answers out; it ends
            // when the client hangs up.
            while let Some(Ok(_)) = connection.accept().await {}
            writes.load(Ordering::SeqCst) - before
        }
        if coalesce {
            serve(CoalescedWrites::new(counted), writes).await
        } else {
            serve(counted, writes).await
        }
    });
    let (send, connection) = h2::client::handshake(client_io).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut calls = Vec::new();
    for _ in 0..ANSWERS {
        let mut send = send.clone().ready().await.unwrap();
        let request = http::Request::post("http://test/call").body(()).unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        calls.push(response);
    }
    for call in calls {
        let mut body = call.await.unwrap().into_body();
        let mut got = 0;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            got += chunk.len();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        assert_eq!(got, BODY_BYTES);
    }
    drop(send);
    driver.abort();
    server.await.unwrap()
}

#[tokio::test]
async fn answers_ready_together_share_writes() {
    let writes = writes_for_ready_answers(true).await;
    assert!(
        writes <= 2,
        "{ANSWERS} answers took {writes} writes through CoalescedWrites"
    );
}

#[tokio::test]
async fn without_the_adapter_each_answer_takes_a_write() {
    let writes = writes_for_ready_answers(false).await;
    assert!(
        writes >= ANSWERS,
        "{ANSWERS} answers took only {writes} writes on the bare stream: \
         h2 no longer writes each long payload alone, and the adapter may \
         no longer be needed"
    );
}
