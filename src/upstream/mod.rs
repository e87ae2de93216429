//! Endpoint connections: how turnout opens a connection to an endpoint and what can go wrong.
//!
//! An endpoint is a standalone server, the primary a set of sentinels names ([`sentinel`]),
//! or a cluster routed by hash slot ([`cluster`]), reached over TCP or TLS ([`tls`]).
//! [`open`] authenticates every connection before anything else is sent on it, and after a
//! refusal backs off (1 s, doubling to 30 s) instead of retrying on every command. Sessions
//! see [`open`], a [`Stream`] and [`UpstreamError`], and the shared connections of [`mux`],
//! which sessions without connection state use instead of their own.

pub mod chain;
pub mod cluster;
pub mod health;
pub mod mux;
pub mod sentinel;
pub mod tls;

use crate::config::EndpointKind;
use crate::stream::Stream;
use bytes::{Buf, BytesMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// Why an endpoint could not serve a command. Its `Display` is the cause in
/// `-ERR turnout: endpoint 'NAME' unavailable: <cause>` ([`UpstreamError::client_reply`]).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting took longer than `connect_timeout`.
    #[error("connect timed out after {}", humantime::format_duration(*.0))]
    ConnectTimeout(Duration),
    /// Connecting failed.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// The endpoint closed the connection with replies outstanding.
    #[error("connection closed by the endpoint")]
    Closed,
    /// Reading or writing failed.
    #[error("connection error: {0}")]
    Io(std::io::Error),
    /// The endpoint sent bytes that are not RESP.
    #[error("invalid reply from the endpoint: {0}")]
    Protocol(crate::resp::ProtocolError),
    /// A new connection refused the session's connection state (SELECT, HELLO, …), so the
    /// commands queued behind it were not sent.
    #[error("cannot restore the session's connection state: {0}")]
    StateReplay(String),
    /// The endpoint refused turnout's credentials (its reply, which never holds them).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// TLS to the endpoint failed (files, certificate, name, handshake); never retried in
    /// plain text. Clients read `-ERR turnout: endpoint 'NAME' TLS: <cause>`.
    #[error("TLS: {0}")]
    Tls(String),
    /// The TLS handshake did not finish within the connect timeout (a slow server, or one
    /// that does not speak TLS and waits for more): not backed off, unlike [`Self::Tls`].
    #[error("TLS: handshake timed out after {} (does the endpoint speak TLS on this port?)", humantime::format_duration(*.0))]
    TlsTimeout(Duration),
    /// No sentinel of a Sentinel endpoint named its primary (every sentinel's answer).
    #[error("sentinels: {0}")]
    Sentinel(String),
    /// The server the sentinels named is not a primary (a failover in progress).
    #[error("{address} is not the primary (ROLE: {role}); failover in progress?")]
    NotPrimary {
        /// The server.
        address: String,
        /// Its role.
        role: String,
    },
    /// The endpoint's primary changed while the command was in flight: it may or may not
    /// have run on the old primary.
    #[error("the primary changed (failover) while the command was in flight")]
    Failover,
    /// The failure of a Sentinel discovery that another connection ran moments before and
    /// this one shares (see [`sentinel::DISCOVERY_MIN_GAP`]): its words, unchanged.
    #[error("{0}")]
    Repeated(String),
    /// The endpoint's configuration asks for something turnout cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// A shared (multiplexed) connection's failure, told to every session it served.
    #[error(transparent)]
    Shared(Arc<UpstreamError>),
    /// Credentials were refused recently: no new attempt before the back-off ends.
    #[error("authentication failed: {reply} (next attempt in {})", humantime::format_duration(*.retry_in))]
    AuthBackoff {
        /// The endpoint's last refusal.
        reply: String,
        /// Time left.
        retry_in: Duration,
    },
    /// A TLS handshake failed recently: no new attempt before the back-off ends.
    #[error("TLS: {cause} (next attempt in {})", humantime::format_duration(*.retry_in))]
    TlsBackoff {
        /// The last handshake's failure.
        cause: String,
        /// Time left.
        retry_in: Duration,
    },
}

impl UpstreamError {
    /// A read or write error: [`UpstreamError::Tls`] when TLS raised it (a fatal alert after
    /// the handshake, such as a server refusing the client certificate under TLS 1.3),
    /// [`UpstreamError::Io`] otherwise.
    pub fn io(e: std::io::Error) -> UpstreamError {
        match tls::rustls_cause(&e) {
            Some(cause) => UpstreamError::Tls(cause),
            None => UpstreamError::Io(e),
        }
    }

    /// The error reply clients get for commands `endpoint` could not serve: TLS failures name
    /// TLS right after the endpoint, everything else reads `unavailable: <cause>`.
    pub fn client_reply(&self, endpoint: &str) -> String {
        format!("-{}\r\n", self.client_text(endpoint))
    }

    /// [`Self::client_reply`] without the leading `-` and the trailing CRLF.
    pub fn client_text(&self, endpoint: &str) -> String {
        match self {
            UpstreamError::Shared(inner) => inner.client_text(endpoint),
            UpstreamError::Tls(_)
            | UpstreamError::TlsTimeout(_)
            | UpstreamError::TlsBackoff { .. } => {
                format!("ERR turnout: endpoint '{endpoint}' {self}")
            }
            _ => format!("ERR turnout: endpoint '{endpoint}' unavailable: {self}"),
        }
    }
}

/// First wait after refused credentials or a failed TLS handshake; it doubles up to
/// [`AUTH_BACKOFF_MAX`].
pub const AUTH_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait after refused credentials or a failed TLS handshake.
pub const AUTH_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why an endpoint is being backed off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// It refused turnout's credentials.
    Auth,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
}

/// A server's back-off after a refusal that retrying at once would only repeat: until
/// when no new connection is attempted, the next wait, why, and the server's words.
type Backoff = (std::time::Instant, Duration, Refused, String);

/// Per (endpoint name, server address): a cluster's nodes and a Sentinel endpoint's
/// successive primaries share the endpoint's name, and one refusing must not hold back the
/// others.
type BackoffKey = (String, String);

static BACKOFF: std::sync::Mutex<Option<std::collections::HashMap<BackoffKey, Backoff>>> =
    std::sync::Mutex::new(None);

fn backoff_key(endpoint: &str, address: &str) -> BackoffKey {
    (endpoint.to_string(), address.to_string())
}

/// The error for a server still backed off, if it is.
fn backed_off(endpoint: &str, address: &str) -> Option<UpstreamError> {
    let now = std::time::Instant::now();
    let guard = BACKOFF.lock().ok()?;
    let (until, _, why, reason) = guard.as_ref()?.get(&backoff_key(endpoint, address))?;
    // Whole milliseconds read better in a reply than nanoseconds.
    let retry_in = Duration::from_millis(until.checked_duration_since(now)?.as_millis() as u64);
    Some(match why {
        Refused::Auth => UpstreamError::AuthBackoff {
            reply: reason.clone(),
            retry_in,
        },
        Refused::Tls => UpstreamError::TlsBackoff {
            cause: reason.clone(),
            retry_in,
        },
    })
}

/// Starts or lengthens a server's back-off.
fn back_off(endpoint: &str, address: &str, why: Refused, reason: &str) {
    if let Ok(mut guard) = BACKOFF.lock() {
        let m = guard.get_or_insert_with(Default::default);
        let key = backoff_key(endpoint, address);
        let wait = m
            .get(&key)
            .map_or(AUTH_BACKOFF_MIN, |(_, next, _, _)| *next);
        m.insert(
            key,
            (
                std::time::Instant::now()
                    .checked_add(wait)
                    .unwrap_or_else(std::time::Instant::now),
                wait.saturating_mul(2).min(AUTH_BACKOFF_MAX),
                why,
                reason.to_string(),
            ),
        );
    }
}

/// Ends a server's back-off: a connection got through.
fn clear_back_off(endpoint: &str, address: &str) {
    if let Ok(mut guard) = BACKOFF.lock() {
        if let Some(m) = guard.as_mut() {
            m.remove(&backoff_key(endpoint, address));
        }
    }
}

/// Opens a connection to an endpoint, ready for client commands: for a standalone endpoint,
/// its address; for a Sentinel one, the primary the sentinels name now; for a cluster, a
/// pipe to a slot router that speaks for every node. TLS and `AUTH` happen before it is
/// handed over.
///
/// # Errors
/// [`UpstreamError`] naming what failed.
pub async fn open(
    endpoint: &crate::config::EndpointConfig,
    timeout: Duration,
) -> Result<Stream, UpstreamError> {
    open_bounded(endpoint, timeout, crate::config::DEFAULT_MAX_BUFFERED_BYTES).await
}

/// [`open`] for a connection that carries client traffic: `max_buffered` (the config's
/// `[proxy] max_buffered_bytes`) bounds the replies a cluster's slot router lets pile up
/// behind one not yet due before it stops reading requests. Other kinds of endpoint buffer
/// nothing of their own.
///
/// # Errors
/// As [`open`].
pub async fn open_bounded(
    endpoint: &crate::config::EndpointConfig,
    timeout: Duration,
    max_buffered: usize,
) -> Result<Stream, UpstreamError> {
    match &endpoint.kind {
        EndpointKind::Standalone { address } => open_node(endpoint, address, timeout).await,
        EndpointKind::Sentinel { .. } => sentinel::open(endpoint, timeout).await,
        EndpointKind::Cluster { .. } => cluster::open(endpoint, timeout, max_buffered).await,
    }
}

/// Opens a connection to one server of an endpoint at `address`: TCP, TLS when the endpoint
/// has it, then `AUTH` when it has credentials, answered before the connection is handed
/// over.
///
/// # Errors
/// As [`connect`], plus TLS failures, [`UpstreamError::Auth`] or
/// [`UpstreamError::AuthBackoff`].
pub async fn open_node(
    endpoint: &crate::config::EndpointConfig,
    address: &str,
    timeout: Duration,
) -> Result<Stream, UpstreamError> {
    if endpoint.credentials.is_some() || endpoint.tls.is_some() {
        if let Some(e) = backed_off(&endpoint.name, address) {
            return Err(e);
        }
    }
    let tcp = match connect(address, timeout).await {
        Ok(tcp) => tcp,
        Err(e) => {
            health::record(&endpoint.name, health::Event::ConnectError);
            return Err(e);
        }
    };
    let mut stream = match &endpoint.tls {
        None => Stream::Tcp(tcp),
        Some(settings) => match tls::wrap(endpoint, settings, address, tcp, timeout).await {
            Ok(stream) => stream,
            Err(e) => {
                if let UpstreamError::Tls(cause) = &e {
                    back_off(&endpoint.name, address, Refused::Tls, cause);
                }
                return Err(e);
            }
        },
    };
    let Some(credentials) = &endpoint.credentials else {
        if endpoint.tls.is_some() {
            clear_back_off(&endpoint.name, address);
        }
        return Ok(stream);
    };
    match auth(&mut stream, credentials, timeout).await {
        Ok(()) => {
            clear_back_off(&endpoint.name, address);
            Ok(stream)
        }
        Err(UpstreamError::Auth(text)) => {
            health::record(&endpoint.name, health::Event::AuthFailure);
            tracing::warn!(endpoint = %endpoint.name, reply = %text, "endpoint refused turnout's credentials; backing off");
            back_off(&endpoint.name, address, Refused::Auth, &text);
            Err(UpstreamError::Auth(text))
        }
        Err(e) => Err(e),
    }
}

/// Sends `AUTH [username] password` on a new connection and reads the answer within
/// `timeout`.
///
/// # Errors
/// [`UpstreamError::Auth`] with the server's refusal (which never holds the password),
/// [`UpstreamError::ConnectTimeout`], or the connection's failure.
pub async fn auth(
    stream: &mut Stream,
    credentials: &crate::config::Credentials,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    let mut args: Vec<&[u8]> = vec![b"AUTH"];
    if let Some(user) = &credentials.username {
        args.push(user.as_bytes());
    }
    args.push(credentials.password.expose().as_bytes());
    let request = crate::resp::command(&args);
    let reply = tokio::time::timeout(timeout, exchange(stream, &request))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(timeout))??;
    if reply == b"+OK\r\n" {
        return Ok(());
    }
    let text = String::from_utf8_lossy(reply.strip_prefix(b"-").unwrap_or(&reply))
        .trim_end()
        .to_string();
    Err(UpstreamError::Auth(text))
}

/// [`open_bounded`] with an owned endpoint, for futures that outlive the caller's borrow.
///
/// # Errors
/// As [`open`].
pub async fn open_owned(
    endpoint: crate::config::EndpointConfig,
    timeout: Duration,
    max_buffered: usize,
) -> Result<Stream, UpstreamError> {
    open_bounded(&endpoint, timeout, max_buffered).await
}

/// Writes `request` and reads one complete reply (turnout's own short commands: AUTH, the
/// cutover's fence, promotion and unblocking).
///
/// # Errors
/// The connection failed, or the reply is not RESP or larger than 64 KiB.
pub async fn exchange(stream: &mut Stream, request: &[u8]) -> Result<Vec<u8>, UpstreamError> {
    exchange_limited(stream, request, 64 * 1024).await
}

/// [`exchange`] accepting a reply of up to `limit` bytes (a large cluster's `CLUSTER SLOTS`).
///
/// # Errors
/// As [`exchange`].
pub async fn exchange_limited(
    stream: &mut Stream,
    request: &[u8],
    limit: usize,
) -> Result<Vec<u8>, UpstreamError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.map_err(UpstreamError::io)?;
    stream.flush().await.map_err(UpstreamError::io)?;
    let mut buf = bytes::BytesMut::with_capacity(256);
    loop {
        if let Some(len) =
            crate::resp::reply::complete_len(&buf).map_err(UpstreamError::Protocol)?
        {
            return Ok(buf[..len].to_vec());
        }
        if buf.len() > limit {
            return Err(UpstreamError::Io(std::io::Error::other("oversized reply")));
        }
        if stream.read_buf(&mut buf).await.map_err(UpstreamError::io)? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// Idle time before the first keepalive probe on an endpoint connection.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the connection is declared dead (so 30 s + 3 × 10 s).
pub const KEEPALIVE_RETRIES: u32 = 3;

/// Opens a TCP connection to `address` (`host:port`, resolved now) within `timeout`, with
/// `TCP_NODELAY` set: turnout batches writes itself.
///
/// # Errors
/// [`UpstreamError::ConnectTimeout`] or [`UpstreamError::Connect`].
pub async fn connect(address: &str, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(timeout))?
        .map_err(UpstreamError::Connect)?;
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    // A peer that vanishes without a reset (host down, cable pulled) would otherwise leave
    // pending replies waiting forever: probe idle connections so it surfaces as an error.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&keepalive)
        .map_err(UpstreamError::Connect)?;
    Ok(stream)
}

/// [`connect`] with an owned address, for futures that outlive the caller's borrow.
///
/// # Errors
/// As [`connect`].
pub async fn connect_owned(address: String, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    connect(&address, timeout).await
}

/// Writes as much of the first `limit` bytes of `buf` as the socket takes now; returns how
/// many it wrote. TLS output is flushed after.
///
/// # Errors
/// The connection failed.
pub fn write_all_ready(
    stream: &mut Stream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<usize, UpstreamError> {
    let mut offered = 0;
    write_while_ready(stream, cx, |stream, cx| {
        if offered >= limit || buf.is_empty() {
            return None;
        }
        let end = buf.len().min(limit - offered);
        let polled = Pin::new(stream).poll_write(cx, &buf[..end]);
        if let Poll::Ready(Ok(n)) = polled {
            buf.advance(n);
            offered += n;
        }
        Some(polled)
    })
}

/// Writes as much of `chain` as the socket takes now, several buffers per system call;
/// returns how many bytes it wrote. TLS output is flushed after.
///
/// # Errors
/// The connection failed.
pub fn write_chain_ready(
    stream: &mut Stream,
    cx: &mut Context<'_>,
    chain: &mut chain::Chain,
) -> Result<usize, UpstreamError> {
    write_while_ready(stream, cx, |stream, cx| {
        if chain.is_empty() {
            return None;
        }
        let polled = if stream.is_write_vectored() {
            let mut slices = [std::io::IoSlice::new(&[]); chain::MAX_SLICES];
            let mut count = 0;
            for (slot, slice) in slices.iter_mut().zip(chain.slices()) {
                *slot = slice;
                count += 1;
            }
            Pin::new(stream).poll_write_vectored(cx, &slices[..count])
        } else {
            Pin::new(stream).poll_write(cx, chain.first())
        };
        if let Poll::Ready(Ok(n)) = polled {
            chain.advance(n);
        }
        Some(polled)
    })
}

/// Runs `write` (one write, which consumes what it wrote) until it has nothing left to write
/// (`None`) or the socket takes no more; returns the bytes written, then flushes TLS output.
fn write_while_ready(
    stream: &mut Stream,
    cx: &mut Context<'_>,
    mut write: impl FnMut(&mut Stream, &mut Context<'_>) -> Option<Poll<std::io::Result<usize>>>,
) -> Result<usize, UpstreamError> {
    let mut wrote = 0;
    while let Some(polled) = write(stream, cx) {
        match polled {
            Poll::Ready(Ok(0)) => return Err(UpstreamError::Closed),
            Poll::Ready(Ok(n)) => wrote += n,
            Poll::Ready(Err(e)) => return Err(UpstreamError::io(e)),
            Poll::Pending => break,
        }
    }
    if let Poll::Ready(Err(e)) = crate::stream::poll_flush_tls(stream, cx) {
        return Err(UpstreamError::io(e));
    }
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_fails_fast_with_the_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let err = connect(&addr, Duration::from_secs(2))
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, UpstreamError::Connect(_)), "{err}");
        assert!(err.to_string().starts_with("connect failed: "), "{err}");
    }

    #[tokio::test]
    async fn endpoint_connections_are_probed_when_idle() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let stream = connect(&addr, Duration::from_secs(2))
            .await
            .expect("connect");
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(
            sock.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            KEEPALIVE_IDLE
        );
        assert_eq!(
            sock.tcp_keepalive_retries().expect("TCP_KEEPCNT"),
            KEEPALIVE_RETRIES
        );
        assert!(stream.nodelay().expect("TCP_NODELAY"));
    }

    #[test]
    fn a_back_off_holds_back_one_server_of_an_endpoint_only() {
        back_off("backoff-test", "127.0.0.1:1", Refused::Auth, "WRONGPASS");
        assert!(matches!(
            backed_off("backoff-test", "127.0.0.1:1"),
            Some(UpstreamError::AuthBackoff { .. })
        ));
        assert!(backed_off("backoff-test", "127.0.0.1:2").is_none());
        assert!(backed_off("other-endpoint", "127.0.0.1:1").is_none());
        clear_back_off("backoff-test", "127.0.0.1:1");
        assert!(backed_off("backoff-test", "127.0.0.1:1").is_none());
    }

    #[test]
    fn timeouts_read_as_durations() {
        assert_eq!(
            UpstreamError::ConnectTimeout(Duration::from_millis(1500)).to_string(),
            "connect timed out after 1s 500ms"
        );
    }
}
