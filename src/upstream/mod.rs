//! Endpoint connections: how turnout opens a connection to an endpoint and what can go wrong.
//!
//! Today every endpoint is a standalone server reached over plain TCP. Sentinel discovery,
//! cluster slot maps, TLS and upstream credentials belong here as they arrive; sessions only
//! see [`connect`] and [`UpstreamError`].

use std::time::Duration;
use tokio::net::TcpStream;

/// Why an endpoint could not serve a command. Its `Display` is the cause in
/// `-ERR turnout: endpoint 'NAME' unavailable: <cause>`.
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
    fn timeouts_read_as_durations() {
        assert_eq!(
            UpstreamError::ConnectTimeout(Duration::from_millis(1500)).to_string(),
            "connect timed out after 1s 500ms"
        );
    }
}
