//! Cluster endpoints: routing by hash slot.

/// Opens a pipe to a slot router for the cluster.
///
/// # Errors
/// Not yet supported.
pub async fn open(
    endpoint: &crate::config::EndpointConfig,
    _timeout: std::time::Duration,
) -> Result<crate::stream::Stream, super::UpstreamError> {
    Err(super::UpstreamError::Unsupported(format!(
        "endpoint '{}': cluster endpoints are not supported yet",
        endpoint.name
    )))
}
