//! Metric names, registration and the Prometheus text.
//!
//! Cold-path metrics (connections, errors, flips, route version) go through the `metrics`
//! facade to the Prometheus exporter. The two per-command metrics would cost a registry
//! lookup per command that way, so sessions count them in plain atomics instead: requests in
//! a flat `[namespace][endpoint][command]` array, latency in fixed histogram buckets, both
//! accumulated per session and flushed once per event-loop turn. A scrape publishes them.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `turnout_requests_total` | counter | namespace, endpoint, command |
//! | `turnout_request_duration_seconds` | histogram | |
//! | `turnout_errors_total` | counter | kind |
//! | `turnout_client_connections` | gauge | |
//! | `turnout_upstream_connections` | gauge | endpoint |
//! | `turnout_route_table_version` | gauge | |
//! | `turnout_flips_total` | counter | namespace |
//! | `turnout_endpoint_up` | gauge | endpoint (1: the last health check passed) |
//! | `turnout_endpoint_events_total` | counter | endpoint, event (`connect_error`, `tls_error`, `auth_failure`, `moved`, `ask`, `failover`) |
//! | `turnout_endpoint_primary` | gauge | endpoint, address (1: the current primary) |
//!
//! The endpoint series come from [`crate::upstream::health`] and exist, at 0, from start-up.

use crate::command::{self, CommandId};
use crate::config::{Config, EndpointId};
use crate::route::{Namespaces, NsId};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;
/// Distinct request counters a session accumulates before publishing.
const LOCAL_COUNTERS: usize = 8;

/// Kinds of errors, the `kind` label of `turnout_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A client sent malformed RESP.
    Protocol,
    /// An endpoint could not be reached.
    UpstreamUnavailable,
    /// An endpoint closed or broke a connection with commands pending.
    UpstreamClosed,
    /// An endpoint sent bytes that are not RESP.
    UpstreamProtocol,
    /// A command turnout refuses.
    Refused,
    /// A multi-key command whose keys span endpoints.
    CrossEndpoint,
    /// A connection refused because of `max_clients`.
    MaxClients,
    /// A client presented wrong credentials.
    Auth,
    /// A client's TLS handshake failed or timed out (`[proxy.tls]`).
    TlsHandshake,
}

impl ErrorKind {
    fn label(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "protocol",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamClosed => "upstream_closed",
            ErrorKind::UpstreamProtocol => "upstream_protocol",
            ErrorKind::Refused => "refused",
            ErrorKind::CrossEndpoint => "cross_endpoint",
            ErrorKind::MaxClients => "max_clients",
            ErrorKind::Auth => "auth",
            ErrorKind::TlsHandshake => "tls_handshake",
        }
    }
}

/// Counts an error.
pub fn error(kind: ErrorKind) {
    metrics::counter!("turnout_errors_total", "kind" => kind.label()).increment(1);
}

/// Tracks a client connection: +1 now, -1 when the guard drops.
pub fn client_connected() -> GaugeGuard {
    let gauge = metrics::gauge!("turnout_client_connections");
    gauge.increment(1.0);
    GaugeGuard(gauge)
}

/// Tracks an upstream connection to `endpoint`.
pub fn upstream_connected(endpoint: &str) -> GaugeGuard {
    let gauge = metrics::gauge!("turnout_upstream_connections", "endpoint" => endpoint.to_string());
    gauge.increment(1.0);
    GaugeGuard(gauge)
}

/// Decrements its gauge when dropped.
pub struct GaugeGuard(metrics::Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl std::fmt::Debug for GaugeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GaugeGuard")
    }
}

/// Records an accepted route change.
pub fn route_changed(namespace: &str, version: u64) {
    metrics::counter!("turnout_flips_total", "namespace" => namespace.to_string()).increment(1);
    metrics::gauge!("turnout_route_table_version").set(version as f64);
}

/// Counts a finished cutover (`completed` or `aborted`) and records its pause.
pub fn cutover_finished(namespace: &str, outcome: &'static str, pause: std::time::Duration) {
    metrics::counter!("turnout_cutover_total", "namespace" => namespace.to_string(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("turnout_cutover_pause_seconds", "namespace" => namespace.to_string())
        .record(pause.as_secs_f64());
}

/// Commands of a namespace a cutover holds, waiting in sessions (0 once it ended).
pub fn cutover_held(namespace: &str, sessions: usize) {
    metrics::gauge!("turnout_cutover_held_commands", "namespace" => namespace.to_string())
        .set(sessions as f64);
}

/// Sets the route table version gauge (at start-up).
pub fn route_version(version: u64) {
    metrics::gauge!("turnout_route_table_version").set(version as f64);
}

/// Installs the process-wide Prometheus recorder (once; later calls reuse it).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // A real histogram for cutover pauses (a summary by default).
            let builder = builder
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "turnout_cutover_pause_seconds".to_string(),
                    ),
                    &[
                        0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The per-command counters shared by every session.
#[derive(Debug)]
pub struct RequestStats {
    endpoints: usize,
    requests: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl RequestStats {
    /// Sized for the config's namespaces and endpoints.
    pub fn new(namespaces: usize, endpoints: usize) -> Self {
        let len = namespaces * endpoints * command::count();
        RequestStats {
            endpoints,
            requests: (0..len).map(|_| AtomicU64::new(0)).collect(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    #[inline]
    fn index(&self, ns: NsId, endpoint: EndpointId, command: CommandId) -> usize {
        (usize::from(ns) * self.endpoints + endpoint) * command::count() + usize::from(command)
    }

    /// Renders the Prometheus text: the exporter's metrics plus these.
    pub fn render(
        &self,
        handle: &PrometheusHandle,
        config: &Config,
        namespaces: &Namespaces,
    ) -> String {
        for ns in 0..namespaces.len() {
            for (ep, endpoint) in config.endpoints.iter().enumerate() {
                for cmd in 0..command::count() {
                    let value =
                        self.requests[self.index(ns as NsId, ep, cmd as CommandId)].load(Relaxed);
                    if value > 0 {
                        metrics::counter!(
                            "turnout_requests_total",
                            "namespace" => namespaces.name(ns as NsId).to_string(),
                            "endpoint" => endpoint.name.clone(),
                            "command" => command::label(cmd as CommandId),
                        )
                        .absolute(value);
                    }
                }
            }
        }
        let mut out = handle.render();
        let name = "turnout_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from reading a request to queueing its reply to the client."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
        out
    }
}

/// A session's unflushed counts; flushing costs a few atomic adds per event-loop turn
/// instead of several per command.
#[derive(Debug)]
pub struct LocalStats {
    /// (counter index, count) pairs not yet published; a pipeline mixing a few commands
    /// and namespaces publishes each counter once per turn.
    requests: [(usize, u64); LOCAL_COUNTERS],
    used: usize,
    buckets: [u64; BUCKETS],
    sum_nanos: u64,
    dirty: bool,
}

impl Default for LocalStats {
    fn default() -> Self {
        LocalStats {
            requests: [(0, 0); LOCAL_COUNTERS],
            used: 0,
            buckets: [0; BUCKETS],
            sum_nanos: 0,
            dirty: false,
        }
    }
}

impl LocalStats {
    /// Counts one request.
    #[inline]
    pub fn request(
        &mut self,
        shared: &RequestStats,
        ns: NsId,
        endpoint: EndpointId,
        command: CommandId,
    ) {
        let index = shared.index(ns, endpoint, command);
        self.dirty = true;
        if let Some(slot) = self.requests[..self.used]
            .iter_mut()
            .find(|(i, _)| *i == index)
        {
            slot.1 += 1;
            return;
        }
        if self.used == LOCAL_COUNTERS {
            self.flush_requests(shared);
        }
        self.requests[self.used] = (index, 1);
        self.used += 1;
    }

    fn flush_requests(&mut self, shared: &RequestStats) {
        for (index, count) in &self.requests[..self.used] {
            shared.requests[*index].fetch_add(*count, Relaxed);
        }
        self.used = 0;
    }

    /// Records one request's latency.
    #[inline]
    pub fn latency(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket] += 1;
        self.sum_nanos += elapsed.as_nanos() as u64;
        self.dirty = true;
    }

    /// Publishes the counts to the shared stats.
    pub fn flush(&mut self, shared: &RequestStats) {
        if !self.dirty {
            return;
        }
        self.flush_requests(shared);
        for (local, global) in self.buckets.iter_mut().zip(shared.buckets.iter()) {
            if *local > 0 {
                global.fetch_add(*local, Relaxed);
                *local = 0;
            }
        }
        if self.sum_nanos > 0 {
            shared.sum_nanos.fetch_add(self.sum_nanos, Relaxed);
            self.sum_nanos = 0;
        }
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_distinct_counters_than_slots_are_all_counted() {
        let shared = RequestStats::new(1, 1);
        let mut local = LocalStats::default();
        for command in 0..(LOCAL_COUNTERS as u16 * 3) {
            local.request(&shared, 0, 0, command);
            local.request(&shared, 0, 0, command);
        }
        local.flush(&shared);
        for command in 0..(LOCAL_COUNTERS as u16 * 3) {
            assert_eq!(
                shared.requests[shared.index(0, 0, command)].load(Relaxed),
                2
            );
        }
    }

    #[test]
    fn local_counts_reach_the_shared_stats_on_flush() {
        let shared = RequestStats::new(2, 2);
        let mut local = LocalStats::default();
        local.request(&shared, 0, 1, 3);
        local.request(&shared, 0, 1, 3);
        local.request(&shared, 1, 0, 4);
        local.latency(Duration::from_micros(70));
        local.latency(Duration::from_secs(20));
        assert_eq!(
            shared.requests[shared.index(0, 1, 3)].load(Relaxed),
            0,
            "published only on flush"
        );
        local.flush(&shared);
        assert_eq!(shared.requests[shared.index(0, 1, 3)].load(Relaxed), 2);
        assert_eq!(shared.requests[shared.index(1, 0, 4)].load(Relaxed), 1);
        assert_eq!(
            shared.buckets[1].load(Relaxed),
            1,
            "70us falls in the 100us bucket"
        );
        assert_eq!(
            shared.buckets[BUCKETS - 1].load(Relaxed),
            1,
            "20s falls in +Inf"
        );
    }
}
