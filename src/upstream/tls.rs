//! TLS to endpoints: the handshake on a fresh TCP connection, within the connect timeout.
//!
//! The rustls client config comes from [`crate::tls::client_config`] (built at config
//! validation, cached). The name presented (SNI) and verified is `server_name`, or else the
//! host of the address, which may be an IP address. Every failure is an
//! [`UpstreamError::Tls`] (or [`UpstreamError::TlsTimeout`]), a `tls_error` health event and
//! a warning; nothing ever falls back to plain TCP.

use super::{health, UpstreamError};
use crate::config::{EndpointConfig, TlsSettings};
use crate::stream::Stream;
use rustls_pki_types::ServerName;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// Wraps a TCP connection to `address` in TLS, handshake done within `timeout`.
///
/// # Errors
/// [`UpstreamError::Tls`] naming the cause: unusable files, a certificate the settings do not
/// trust or that does not match the name, a peer that does not speak TLS;
/// [`UpstreamError::TlsTimeout`] when the handshake did not finish in time.
pub async fn wrap(
    endpoint: &EndpointConfig,
    settings: &TlsSettings,
    address: &str,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<Stream, UpstreamError> {
    let failed = match handshake(settings, address, tcp, timeout).await {
        Ok(stream) => return Ok(stream),
        Err(Failed::Refused(cause)) => UpstreamError::Tls(cause),
        Err(Failed::TimedOut) => UpstreamError::TlsTimeout(timeout),
    };
    health::record(&endpoint.name, health::Event::TlsError);
    tracing::warn!(endpoint = %endpoint.name, address = %address, cause = %failed, "TLS to the endpoint failed");
    Err(failed)
}

/// Why a handshake failed: a timeout may be a slow or busy server, so it is not backed off
/// like a refusal.
enum Failed {
    /// Files, name, certificate or protocol.
    Refused(String),
    /// No handshake within the timeout.
    TimedOut,
}

async fn handshake(
    settings: &TlsSettings,
    address: &str,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<Stream, Failed> {
    let config = crate::tls::client_config(settings).map_err(|e| Failed::Refused(e.to_string()))?;
    let name = server_name(settings, address).map_err(Failed::Refused)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Err(_) => Err(Failed::TimedOut),
        Ok(Err(e)) => Err(Failed::Refused(describe(&e))),
        Ok(Ok(stream)) => Ok(Stream::TlsClient(Box::new(stream))),
    }
}

/// The name to present and verify: `server_name`, or the host part of `host:port`.
fn server_name(settings: &TlsSettings, address: &str) -> Result<ServerName<'static>, String> {
    let host = match &settings.server_name {
        Some(name) => name.as_str(),
        None => address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']'),
    };
    ServerName::try_from(host)
        .map(|name| name.to_owned())
        .map_err(|_| format!("\"{host}\" is not a DNS name or an IP address to verify"))
}

/// rustls's reason for an I/O error, when rustls raised it.
pub(super) fn rustls_cause(e: &std::io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("{tls} (does the endpoint speak TLS on this port?)")
        }
        other => other.to_string(),
    })
}

/// A handshake error as an operator reads it: rustls's own reason when there is one.
fn describe(e: &std::io::Error) -> String {
    if let Some(cause) = rustls_cause(e) {
        return cause;
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            "the endpoint closed the connection during the handshake".to_string()
        }
        _ => format!("handshake failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(server_name: Option<&str>) -> TlsSettings {
        TlsSettings {
            ca_file: None,
            server_name: server_name.map(str::to_string),
            cert_file: None,
            key_file: None,
        }
    }

    #[test]
    fn the_name_is_the_setting_or_the_host_of_the_address() {
        let name = |s, a| {
            server_name(&settings(s), a)
                .expect("valid")
                .to_str()
                .to_string()
        };
        assert_eq!(name(None, "127.0.0.1:6380"), "127.0.0.1");
        assert_eq!(name(None, "[::1]:6380"), "::1");
        assert_eq!(name(None, "redis.internal:6380"), "redis.internal");
        assert_eq!(
            name(Some("cache.example"), "10.0.0.1:6380"),
            "cache.example"
        );
        assert!(matches!(
            server_name(&settings(None), "127.0.0.1:6380"),
            Ok(ServerName::IpAddress(_))
        ));
    }
}
