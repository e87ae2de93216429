//! TLS to endpoints.

/// Wraps a TCP connection in TLS.
///
/// # Errors
/// Not yet supported.
pub async fn wrap(
    endpoint: &crate::config::EndpointConfig,
    _settings: &crate::config::TlsSettings,
    _address: &str,
    _tcp: tokio::net::TcpStream,
    _timeout: std::time::Duration,
) -> Result<crate::stream::Stream, super::UpstreamError> {
    Err(super::UpstreamError::Unsupported(format!(
        "endpoint '{}': TLS is not supported yet",
        endpoint.name
    )))
}
