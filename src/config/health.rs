//! `[health]`: how often turnout checks each endpoint and how long one check may take.
//!
//! The checks themselves live in [`crate::health`]; `/readyz`, `/v1/endpoints` and the
//! `turnout_endpoint_up` gauge show their results. A check's timeout defaults to the
//! connect timeout, capped at the interval, so a hung endpoint never makes checks pile up.

use super::{parse_duration, problem, Problem};
use serde::Deserialize;
use std::time::Duration;

/// Default for `[health] interval`.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest `[health] interval` accepted: checks more often would only load the endpoints.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);

/// `[health]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct FileHealth {
    /// `interval`.
    pub interval: Option<String>,
    /// `timeout`.
    pub timeout: Option<String>,
}

/// `[health]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between the starts of two checks of one endpoint.
    pub interval: Duration,
    /// Bound on one check: connecting (when needed) and every command it sends.
    pub timeout: Duration,
}

/// Validates `[health]` (absent: every default). `connect_timeout` is `[proxy]`'s, the
/// default timeout (capped at the interval).
pub fn validate(
    file: Option<&FileHealth>,
    connect_timeout: Duration,
    problems: &mut Vec<Problem>,
) -> HealthConfig {
    let empty = FileHealth::default();
    let file = file.unwrap_or(&empty);
    let mut interval = parse_duration(
        "health.interval",
        file.interval.as_deref(),
        DEFAULT_HEALTH_INTERVAL,
        problems,
    );
    if interval < MIN_HEALTH_INTERVAL {
        problem(
            problems,
            "health.interval",
            format!(
                "must be at least {}",
                humantime::format_duration(MIN_HEALTH_INTERVAL)
            ),
        );
        interval = MIN_HEALTH_INTERVAL;
    }
    let timeout = match file.timeout.as_deref() {
        None => connect_timeout.min(interval),
        Some(_) => {
            let timeout = parse_duration(
                "health.timeout",
                file.timeout.as_deref(),
                connect_timeout,
                problems,
            );
            if timeout > interval {
                problem(
                    problems,
                    "health.timeout",
                    format!(
                        "must not be longer than health.interval ({})",
                        humantime::format_duration(interval)
                    ),
                );
            }
            timeout.min(interval)
        }
    };
    HealthConfig { interval, timeout }
}
