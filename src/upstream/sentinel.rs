//! Sentinel endpoints: which server is the primary now.

/// Opens a connection to the primary the sentinels name.
///
/// # Errors
/// Not yet supported.
pub async fn open(
    endpoint: &crate::config::EndpointConfig,
    _timeout: std::time::Duration,
) -> Result<crate::stream::Stream, super::UpstreamError> {
    Err(super::UpstreamError::Unsupported(format!(
        "endpoint '{}': Sentinel endpoints are not supported yet",
        endpoint.name
    )))
}
