//! [`CoalescedWrites`]: the byte stream under an `h2` connection, so that
//! many small gRPC messages leave in one `write` system call.
//!
//! Why it exists: `h2` copies a DATA frame's payload into its write buffer
//! only when the payload is shorter than a threshold, 256 bytes when the
//! stream reports vectored writes (a `TcpStream` does) and 1,024 bytes when
//! it does not. A longer payload is kept aside and written with the buffer
//! by the next flush, and only one payload can be kept aside at a time. So a
//! gRPC message of 256 bytes or more (a put of a 256-byte value, a range
//! answer carrying one) costs one `writev` of its own, however many calls
//! are ready on the connection. Measured on the 2-core machine, 64 clients
//! over 8 connections putting 256-byte values: the load generator made
//! exactly one `writev` per request (BENCHMARKS.md, session 13).
//!
//! This adapter reports no vectored writes, which raises `h2`'s threshold to
//! 1,024 bytes, and buffers what `h2` writes until `h2` flushes, so a frame
//! kept aside (1,024 bytes or more) still leaves in the same system call as
//! the frames before it instead of two. Payloads at least as long as the
//! buffer bypass it.
//!
//! Invariants:
//! 1. Bytes reach the inner stream in the order they were written.
//! 2. Everything written before a flush reaches the inner stream before the
//!    flush returns `Ready(Ok)`: `h2` flushes after every batch of frames,
//!    so nothing waits in the buffer for more traffic.
//! 3. At most [`COALESCE_BUFFER_BYTES`] are held: a writer that outpaces the
//!    socket is pushed back (`Pending`), not buffered without bound; after a
//!    flush at most [`COALESCE_RETAINED_BYTES`] of capacity are kept.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held between flushes: four times `h2`'s own 16 KiB write
/// buffer, so one flush of a full buffer plus a maximum-size frame kept
/// aside (16 KiB by default) fits. Longer writes bypass the buffer.
pub const COALESCE_BUFFER_BYTES: usize = 64 << 10;

/// Buffer capacity kept after a flush. The buffer grows only as far as a
/// burst needs, and gives back anything above this, so an idle connection
/// that once sent a large answer does not pin 64 KiB.
pub const COALESCE_RETAINED_BYTES: usize = 16 << 10;

/// An `AsyncRead + AsyncWrite` stream whose writes are coalesced until
/// flushed (see the module documentation).
#[derive(Debug)]
pub struct CoalescedWrites<T> {
    io: T,
    /// Bytes written but not yet handed to `io`; `buf[sent..]` remain.
    buf: Vec<u8>,
    sent: usize,
}

impl<T> CoalescedWrites<T> {
    /// Wraps `io`.
    pub fn new(io: T) -> Self {
        CoalescedWrites {
            io,
            buf: Vec::new(),
            sent: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncWrite + Unpin> CoalescedWrites<T> {
    /// Hands every buffered byte to `io` (invariants 1 and 2).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n =
                std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        if self.buf.capacity() > COALESCE_RETAINED_BYTES {
            self.buf.shrink_to(COALESCE_RETAINED_BYTES);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CoalescedWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.buf.len() + data.len() > COALESCE_BUFFER_BYTES {
            // Room first, or order: what is buffered goes before `data`.
            std::task::ready!(me.poll_drain(cx))?;
        }
        if data.len() >= COALESCE_BUFFER_BYTES {
            return Pin::new(&mut me.io).poll_write(cx, data);
        }
        me.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    /// False on purpose: it is what makes `h2` copy payloads under 1,024
    /// bytes into its buffer (module documentation).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        std::task::ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        std::task::ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the write calls that reach `io` and, like a `TcpStream`,
    /// supports vectored writes. Over a `Vec<u8>` it is a sink that keeps
    /// the bytes; over a duplex stream it carries a connection.
    struct Counted<T> {
        io: T,
        writes: Arc<AtomicUsize>,
    }

    impl<T> Counted<T> {
        fn new(io: T) -> Self {
            Counted {
                io,
                writes: Arc::default(),
            }
        }
        fn writes(&self) -> usize {
            self.writes.load(Ordering::SeqCst)
        }
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
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

    #[tokio::test]
    async fn small_writes_leave_together_and_in_order_at_the_flush() {
        let mut io = CoalescedWrites::new(Counted::new(Vec::new()));
        for i in 0..10u8 {
            io.write_all(&[i; 300]).await.unwrap();
        }
        assert_eq!(
            io.get_ref().writes(),
            0,
            "nothing is written before the flush"
        );
        io.flush().await.unwrap();
        assert_eq!(io.get_ref().writes(), 1);
        let expected: Vec<u8> = (0..10u8).flat_map(|i| [i; 300]).collect();
        assert_eq!(io.get_ref().io, expected);
    }

    #[tokio::test]
    async fn a_write_as_large_as_the_buffer_bypasses_it_after_what_came_first() {
        let mut io = CoalescedWrites::new(Counted::new(Vec::new()));
        io.write_all(b"head").await.unwrap();
        let big = vec![7u8; COALESCE_BUFFER_BYTES];
        io.write_all(&big).await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(
            io.get_ref().writes(),
            2,
            "the buffered head, then the payload"
        );
        assert_eq!(&io.get_ref().io[..4], b"head");
        assert_eq!(io.get_ref().io.len(), 4 + COALESCE_BUFFER_BYTES);
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut io = CoalescedWrites::new(a);
        b.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        io.write_all(b"pong").await.unwrap();
        io.flush().await.unwrap();
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }

    /// Takes at most 700 bytes per call and refuses every other call, like
    /// a socket whose send buffer keeps filling.
    #[derive(Default)]
    struct Choking {
        calls: usize,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for Choking {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let me = self.get_mut();
            me.calls += 1;
            if me.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(700);
            me.bytes.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_stream_that_pushes_back_gets_every_byte_in_order_and_the_buffer_stays_bounded() {
        let mut io = CoalescedWrites::new(Choking::default());
        let mut expected = Vec::new();
        for i in 0..200u32 {
            let piece: Vec<u8> = (0..1000u32).map(|j| (i * 7 + j) as u8).collect();
            io.write_all(&piece).await.unwrap();
            expected.extend_from_slice(&piece);
            assert!(io.buf.len() <= COALESCE_BUFFER_BYTES, "invariant 3");
        }
        io.flush().await.unwrap();
        assert_eq!(io.get_ref().bytes, expected);
        assert!(
            io.buf.capacity() <= COALESCE_RETAINED_BYTES,
            "capacity given back"
        );
    }

    /// Answers in flight at once, each with a body over h2's 256-byte copy
    /// threshold for vectored streams.
    const ANSWERS: usize = 16;
    const BODY_BYTES: usize = 300;

    /// Runs `ANSWERS` calls whose answers the server makes ready together and
    /// returns how many write calls the server's stream saw while sending them.
    async fn writes_for_ready_answers(coalesce: bool) -> usize {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
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

    #[test]
    fn reports_no_vectored_writes() {
        assert!(!CoalescedWrites::new(Counted::new(Vec::new())).is_write_vectored());
    }
}
