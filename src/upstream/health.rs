//! What turnout knows about each endpoint's health: whether it answers, which server is its
//! primary now, and counts of what went wrong or moved (connect, TLS and auth failures,
//! cluster redirects, failovers).
//!
//! Anything that touches an endpoint records here ([`record`], [`set_primary`], [`set_up`]);
//! `/readyz`, `/v1/endpoints` and the metrics read it. Each event also goes straight to the
//! metrics facade as `turnout_endpoint_events_total{endpoint,event}`; the gauges are
//! `turnout_endpoint_up{endpoint}` and `turnout_endpoint_primary{endpoint,address}` (1 for the
//! current primary, 0 for earlier ones).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// Something that happened on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A TCP connection could not be opened.
    ConnectError,
    /// A TLS handshake failed (certificate, name, protocol).
    TlsError,
    /// The endpoint refused turnout's credentials.
    AuthFailure,
    /// A cluster node answered `-MOVED`.
    Moved,
    /// A cluster node answered `-ASK`.
    Ask,
    /// The primary changed (Sentinel switch, cluster failover).
    Failover,
}

impl Event {
    /// Every event, in the order reports list them.
    pub const ALL: [Event; 6] = [
        Event::ConnectError,
        Event::TlsError,
        Event::AuthFailure,
        Event::Moved,
        Event::Ask,
        Event::Failover,
    ];

    /// The `event` label.
    pub fn label(self) -> &'static str {
        match self {
            Event::ConnectError => "connect_error",
            Event::TlsError => "tls_error",
            Event::AuthFailure => "auth_failure",
            Event::Moved => "moved",
            Event::Ask => "ask",
            Event::Failover => "failover",
        }
    }
}

/// One endpoint's health, as last seen.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The last check passed (`None`: not checked yet).
    pub up: Option<bool>,
    /// Why the last check failed.
    pub last_error: Option<String>,
    /// When it was last checked.
    pub checked_at: Option<SystemTime>,
    /// The primary's address now (Sentinel; standalone: its address), if known.
    pub primary: Option<String>,
    /// Counts per event.
    pub events: HashMap<Event, u64>,
}

static HEALTH: Mutex<Option<HashMap<String, Health>>> = Mutex::new(None);

fn with<R>(endpoint: &str, f: impl FnOnce(&mut Health) -> R) -> Option<R> {
    let mut guard = HEALTH.lock().ok()?;
    let map = guard.get_or_insert_with(HashMap::new);
    if !map.contains_key(endpoint) {
        map.insert(endpoint.to_string(), Health::default());
    }
    map.get_mut(endpoint).map(f)
}

/// Registers every endpoint's series at start-up, so that dashboards and alerts see them
/// before the first event: `turnout_endpoint_up` at 0 (until the first check passes) and
/// every `turnout_endpoint_events_total{event}` at 0.
pub fn init<'a>(endpoints: impl IntoIterator<Item = &'a str>) {
    metrics::describe_gauge!(
        "turnout_endpoint_up",
        "1 when the endpoint's last health check passed, 0 otherwise."
    );
    metrics::describe_counter!(
        "turnout_endpoint_events_total",
        "Connect, TLS and auth failures, cluster redirects and failovers, per endpoint."
    );
    metrics::describe_gauge!(
        "turnout_endpoint_primary",
        "1 for the endpoint's current primary address, 0 for earlier ones."
    );
    for endpoint in endpoints {
        metrics::gauge!("turnout_endpoint_up", "endpoint" => endpoint.to_string()).set(0.0);
        for event in Event::ALL {
            metrics::counter!("turnout_endpoint_events_total", "endpoint" => endpoint.to_string(), "event" => event.label())
                .increment(0);
        }
        with(endpoint, |_| ());
    }
}

/// Counts an event.
pub fn record(endpoint: &str, event: Event) {
    metrics::counter!("turnout_endpoint_events_total", "endpoint" => endpoint.to_string(), "event" => event.label())
        .increment(1);
    with(endpoint, |h| *h.events.entry(event).or_default() += 1);
}

/// Records the address of the endpoint's primary. A change from a known earlier address
/// counts as a failover.
pub fn set_primary(endpoint: &str, address: &str) {
    let previous = with(endpoint, |h| h.primary.replace(address.to_string())).flatten();
    if previous.as_deref() == Some(address) {
        return;
    }
    if let Some(old) = &previous {
        metrics::gauge!("turnout_endpoint_primary", "endpoint" => endpoint.to_string(), "address" => old.clone())
            .set(0.0);
        record(endpoint, Event::Failover);
    }
    metrics::gauge!("turnout_endpoint_primary", "endpoint" => endpoint.to_string(), "address" => address.to_string())
        .set(1.0);
}

/// Records a health check's outcome.
pub fn set_up(endpoint: &str, result: Result<(), String>) {
    let up = result.is_ok();
    metrics::gauge!("turnout_endpoint_up", "endpoint" => endpoint.to_string()).set(if up {
        1.0
    } else {
        0.0
    });
    with(endpoint, |h| {
        h.up = Some(up);
        h.last_error = result.err();
        h.checked_at = Some(SystemTime::now());
    });
}

/// The endpoint's health as last seen.
pub fn get(endpoint: &str) -> Health {
    with(endpoint, |h| h.clone()).unwrap_or_default()
}

/// The current primary's address, if known.
pub fn primary(endpoint: &str) -> Option<String> {
    with(endpoint, |h| h.primary.clone()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_primary_counts_one_failover() {
        let ep = "health-test-failover";
        set_primary(ep, "127.0.0.1:1");
        set_primary(ep, "127.0.0.1:1");
        assert_eq!(get(ep).events.get(&Event::Failover), None);
        set_primary(ep, "127.0.0.1:2");
        assert_eq!(get(ep).events.get(&Event::Failover), Some(&1));
        assert_eq!(primary(ep).as_deref(), Some("127.0.0.1:2"));
    }

    #[test]
    fn checks_keep_the_last_error() {
        let ep = "health-test-up";
        set_up(ep, Err("connect failed".to_string()));
        assert_eq!(get(ep).up, Some(false));
        assert_eq!(get(ep).last_error.as_deref(), Some("connect failed"));
        set_up(ep, Ok(()));
        let h = get(ep);
        assert_eq!((h.up, h.last_error), (Some(true), None));
    }
}
