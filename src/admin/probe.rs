//! Readiness probes: does an endpoint answer PING?

use crate::upstream::{self, UpstreamError};
use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection.
    #[error(transparent)]
    Connect(#[from] UpstreamError),
    /// No reply in time.
    #[error("no reply to PING within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// A reply other than PONG (e.g. `-LOADING`, `-NOAUTH`).
    #[error("PING answered {0}")]
    Unexpected(String),
}

/// Sends one PING on a fresh connection and expects `+PONG`, all within `timeout` each for
/// connecting and answering.
///
/// # Errors
/// [`ProbeError`] naming what failed.
pub async fn ping(
    endpoint: &crate::config::EndpointConfig,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let mut stream = upstream::open(endpoint, timeout).await?;
    let exchange = async {
        stream
            .write_all(b"*1\r\n$4\r\nPING\r\n")
            .await
            .map_err(UpstreamError::io)?;
        // TLS buffers what it encrypts: flush so the PING leaves now.
        stream.flush().await.map_err(UpstreamError::io)?;
        let mut buf = BytesMut::with_capacity(256);
        loop {
            if stream.read_buf(&mut buf).await.map_err(UpstreamError::io)? == 0 {
                return Err(ProbeError::Connect(UpstreamError::Closed));
            }
            match decode_bytes_mut(&mut buf) {
                Ok(Some((BytesFrame::SimpleString(s), _, _))) if &s[..] == b"PONG" => return Ok(()),
                Ok(Some((frame, _, _))) => {
                    return Err(ProbeError::Unexpected(format!("{frame:?}")))
                }
                Ok(None) if buf.len() < 64 * 1024 => continue,
                Ok(None) => return Err(ProbeError::Unexpected("an oversized reply".to_string())),
                Err(e) => return Err(ProbeError::Unexpected(format!("invalid RESP: {e:?}"))),
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}
