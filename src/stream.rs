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

/// Reads what a stream has into `buf`, registering for wake-up when it has nothing.
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
) -> Poll<io::Result<usize>> {
    let stream = match stream {
        Stream::Tcp(s) => s,
        other => return tokio_util::io::poll_read_buf(Pin::new(other), cx, buf),
    };
    loop {
        match stream.poll_read_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let offered = buf.capacity() - buf.len();
        let mut short = 0;
        let result = stream.try_io(tokio::io::Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            if n > 0 && n < offered {
                short = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match result {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if short > 0 {
                    return Poll::Ready(Ok(short));
                }
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}
