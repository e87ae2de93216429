//! `[shadow]`: bounds and defaults of shadow traffic and dual-write.
//!
//! Shadow and secondary traffic must never cost the client anything, so every queue it uses
//! is bounded here, and so is every buffer a comparison holds. Each setting has a default
//! that suits a sidecar; the README's config reference lists them.

use super::{parse_duration, problem, Problem};
use serde::Deserialize;
use std::time::Duration;

/// `[shadow]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct FileShadow {
    /// `sample`.
    pub sample: Option<f64>,
    /// `connections`.
    pub connections: Option<usize>,
    /// `queue`.
    pub queue: Option<usize>,
    /// `in_flight`.
    pub in_flight: Option<usize>,
    /// `max_queued_bytes`.
    pub max_queued_bytes: Option<usize>,
    /// `max_compare_bytes`.
    pub max_compare_bytes: Option<usize>,
    /// `compare_timeout`.
    pub compare_timeout: Option<String>,
    /// `ttl_tolerance`.
    pub ttl_tolerance: Option<String>,
    /// `mismatch_log`.
    pub mismatch_log: Option<usize>,
    /// `log_values`.
    pub log_values: Option<bool>,
}

/// `[shadow]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    /// Fraction of reads compared when a mode change does not say (`sample`).
    pub sample: f64,
    /// Upstream connections per shadow or secondary endpoint; a session always uses the same
    /// one, so its mirrored commands keep their order. With one (the default) copies of
    /// every session keep the order turnout received them in, so a read that follows
    /// another session's acknowledged write is compared against a secondary that has it;
    /// more connections trade that for throughput.
    pub connections: usize,
    /// Commands waiting for each connection; past it they are dropped and counted.
    pub queue: usize,
    /// Commands sent on each connection and not yet answered.
    pub in_flight: usize,
    /// Request bytes held by all shadow queues together; past it commands are dropped.
    pub max_queued_bytes: usize,
    /// Replies larger than this are not compared (counted as dropped).
    pub max_compare_bytes: usize,
    /// How long a comparison waits for the second reply before it counts as a shadow error.
    pub compare_timeout: Duration,
    /// TTL, PTTL, EXPIRETIME and PEXPIRETIME replies this close count as equal.
    pub ttl_tolerance: Duration,
    /// Mismatches kept for `GET /v1/shadow/mismatches`.
    pub mismatch_log: usize,
    /// Show values in mismatch reports instead of their length and hash.
    pub log_values: bool,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            sample: 1.0,
            connections: 1,
            queue: 16384,
            in_flight: 1024,
            max_queued_bytes: 64 * 1024 * 1024,
            max_compare_bytes: 64 * 1024,
            compare_timeout: Duration::from_secs(1),
            ttl_tolerance: Duration::from_secs(2),
            mismatch_log: 256,
            log_values: false,
        }
    }
}

fn bounded(
    path: &str,
    value: Option<usize>,
    default: usize,
    max: usize,
    problems: &mut Vec<Problem>,
) -> usize {
    match value {
        None => default,
        Some(v) if (1..=max).contains(&v) => v,
        Some(_) => {
            problem(problems, path, format!("must be between 1 and {max}"));
            default
        }
    }
}

/// Validates `[shadow]` (absent: every default).
pub fn validate(file: Option<&FileShadow>, problems: &mut Vec<Problem>) -> ShadowConfig {
    let d = ShadowConfig::default();
    let Some(file) = file else {
        return d;
    };
    let sample = match file.sample {
        None => d.sample,
        Some(s) if (0.0..=1.0).contains(&s) => s,
        Some(_) => {
            problem(problems, "shadow.sample", "must be between 0.0 and 1.0");
            d.sample
        }
    };
    ShadowConfig {
        sample,
        connections: bounded(
            "shadow.connections",
            file.connections,
            d.connections,
            64,
            problems,
        ),
        queue: bounded("shadow.queue", file.queue, d.queue, 1 << 20, problems),
        in_flight: bounded(
            "shadow.in_flight",
            file.in_flight,
            d.in_flight,
            1 << 16,
            problems,
        ),
        max_queued_bytes: bounded(
            "shadow.max_queued_bytes",
            file.max_queued_bytes,
            d.max_queued_bytes,
            1 << 34,
            problems,
        ),
        max_compare_bytes: bounded(
            "shadow.max_compare_bytes",
            file.max_compare_bytes,
            d.max_compare_bytes,
            64 << 20,
            problems,
        ),
        compare_timeout: parse_duration(
            "shadow.compare_timeout",
            file.compare_timeout.as_deref(),
            d.compare_timeout,
            problems,
        ),
        ttl_tolerance: parse_duration(
            "shadow.ttl_tolerance",
            file.ttl_tolerance.as_deref(),
            d.ttl_tolerance,
            problems,
        ),
        mismatch_log: bounded(
            "shadow.mismatch_log",
            file.mismatch_log,
            d.mismatch_log,
            100_000,
            problems,
        ),
        log_values: file.log_values.unwrap_or(d.log_values),
    }
}
