//! The byte streams turnout reads and writes: plain TCP, TLS either way, or an in-process pipe.
//!
//! Sessions, shadow lanes and the cutover's fence all speak RESP over one of these. Plain TCP
//! keeps its own fast read path (see [`poll_read_some`]); the other kinds go through tokio's
//! `AsyncRead`/`AsyncWrite`. A TLS stream buffers what it encrypts, so writers call
//! [`poll_flush_tls`] after writing.

use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection, to a client or to an endpoint.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS that turnout started: to an endpoint.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS that a client started: from `[proxy.tls]`.
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// An in-process pipe to a task that speaks for the endpoint (a cluster's slot router).
    Pipe(tokio::io::DuplexStream),
}

impl Stream {
    /// The TCP socket underneath, if there is one.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::TlsClient(s) => Some(s.get_ref().0),
            Stream::TlsServer(s) => Some(s.get_ref().0),
            Stream::Pipe(_) => None,
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(stream: TcpStream) -> Self {
        Stream::Tcp(stream)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Pipe(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Pipe(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Pipe(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::TlsClient(s) => s.is_write_vectored(),
            Stream::TlsServer(s) => s.is_write_vectored(),
            Stream::Pipe(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Pipe(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Pipe(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Pushes out what a TLS stream has encrypted but not yet sent (plain TCP and pipes hold
/// nothing back). `Ready(Ok)` once nothing is left.
pub fn poll_flush_tls(stream: &mut Stream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    match stream {
        Stream::Tcp(_) | Stream::Pipe(_) => Poll::Ready(Ok(())),
        other => Pin::new(other).poll_flush(cx),
    }
}

/// How much a connection's read buffer grows by when it runs out of room.
pub const READ_CHUNK: usize = 16 * 1024;

/// Most bytes reserved ahead for a value announced but not yet received.
const RESERVE_AHEAD_MAX: usize = 1024 * 1024;

/// Room reserved past an announced value, so that the read completing it comes up short
/// (a read that fills the room offered exactly is taken as "maybe more", costing one read
/// that finds nothing).
const RESERVE_SLACK: usize = 1024;

/// Makes room in `buf` for `coming` more bytes that a length already announced (capped at
/// 1 MiB: a length alone costs little to send), so that a large value arrives in one read
/// instead of growing the buffer, and copying what it holds, chunk by chunk.
pub fn reserve_ahead(buf: &mut BytesMut, coming: usize) {
    if coming > 0 {
        buf.reserve(coming.min(RESERVE_AHEAD_MAX) + RESERVE_SLACK);
    }
}

/// Bytes read onto the stack when a TCP read buffer holds no memory at all.
const PROBE: usize = 512;

/// Reads what a stream has into `buf`, registering for wake-up when it has nothing.
///
/// `buf` grows by `chunk` when less than a quarter of that is free. On plain TCP, a buffer
/// that holds no memory (sessions release theirs when idle) is not given any until there
/// are bytes to keep: the first read goes to a small stack array. An idle connection thus
/// costs no read buffer, and one that wakes spuriously allocates nothing.
///
/// On plain TCP, a read that returns less than the room offered means the socket was drained
/// at that moment, so its readiness is cleared right away (`try_io` only clears it if no newer
/// readiness event arrived in between, so no wake-up is lost). The usual way, reading again
/// until `EAGAIN`, costs one extra system call per read: a third of the system calls of an
/// unpipelined request/reply through the proxy.
pub fn poll_read_some(
    stream: &mut Stream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    chunk: usize,
) -> Poll<io::Result<usize>> {
    let stream = match stream {
        Stream::Tcp(s) => s,
        other => {
            if buf.capacity() - buf.len() < chunk / 4 {
                buf.reserve(chunk);
            }
            return tokio_util::io::poll_read_buf(Pin::new(other), cx, buf);
        }
    };
    loop {
        match stream.poll_read_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let mut probe = [0u8; PROBE];
        let probing = buf.capacity() == 0;
        if !probing && buf.capacity() - buf.len() < chunk / 4 {
            buf.reserve(chunk);
        }
        let offered = if probing {
            PROBE
        } else {
            buf.capacity() - buf.len()
        };
        let mut short = 0;
        let result = stream.try_io(tokio::io::Interest::READABLE, || {
            let n = if probing {
                stream.try_read(&mut probe)?
            } else {
                stream.try_read_buf(buf)?
            };
            if n > 0 && n < offered {
                short = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if short == 0 {
                    continue;
                }
                short
            }
            Err(e) => return Poll::Ready(Err(e)),
        };
        if probing && n > 0 {
            buf.reserve(chunk.max(n));
            buf.extend_from_slice(&probe[..n]);
        }
        return Poll::Ready(Ok(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn room_is_made_past_an_announced_value_up_to_the_cap() {
        let mut buf = BytesMut::new();
        reserve_ahead(&mut buf, 0);
        assert_eq!(buf.capacity(), 0, "nothing announced, nothing reserved");
        buf.extend_from_slice(b"$70000\r\n");
        reserve_ahead(&mut buf, 70_002);
        assert!(
            buf.capacity() - buf.len() > 70_002,
            "room for the value and then some"
        );
        let mut huge = BytesMut::new();
        reserve_ahead(&mut huge, usize::MAX);
        assert!(huge.capacity() >= RESERVE_AHEAD_MAX + RESERVE_SLACK);
        assert!(huge.capacity() < 4 * RESERVE_AHEAD_MAX, "capped");
    }

    async fn pair() -> (Stream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Stream::Tcp(accepted.unwrap().0), client.unwrap())
    }

    /// One poll of `poll_read_some`, `None` when it would wait.
    async fn poll_once(stream: &mut Stream, buf: &mut BytesMut) -> Option<usize> {
        poll_fn(|cx| {
            Poll::Ready(match poll_read_some(stream, cx, buf, 16 * 1024) {
                Poll::Ready(result) => Some(result.unwrap()),
                Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn an_idle_connection_gets_no_read_buffer() {
        let (mut stream, mut peer) = pair().await;
        let mut buf = BytesMut::new();
        assert_eq!(poll_once(&mut stream, &mut buf).await, None);
        assert_eq!(buf.capacity(), 0, "nothing to read, nothing allocated");

        // Small and large arrivals both come through whole, in order.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        peer.write_all(&big).await.unwrap();
        drop(peer);
        let mut got = 0;
        loop {
            match poll_once(&mut stream, &mut buf).await {
                Some(0) => break,
                Some(n) => got += n,
                None => tokio::task::yield_now().await,
            }
        }
        assert_eq!(got, 14 + big.len());
        assert_eq!(&buf[..14], b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(&buf[14..], &big[..]);
    }
}
