//! `GET /readyz` and `GET /v1/endpoints`: the endpoints' health as the periodic checks
//! ([`crate::health`]) last saw it.
//!
//! Neither probes an endpoint per request, so a load balancer polling `/readyz` adds no load
//! to the endpoints. The one exception is an endpoint in use that has not been checked yet
//! (just after start-up): `/readyz` checks it once itself rather than answer from nothing.

use super::{json_reply, AdminState, Reply};
use crate::config::{Config, EndpointConfig, EndpointId, EndpointKind};
use crate::route::{Mode, RouteTable};
use crate::state::rfc3339;
use crate::upstream::health::{self, Event, Health};
use hyper::StatusCode;
use serde_json::{json, Map, Value};

/// Endpoints that serve clients now: route targets, shadow and dual-write secondaries, and
/// the Pub/Sub endpoint.
pub(super) fn in_use(table: &RouteTable, config: &Config) -> Vec<EndpointId> {
    let mut used: Vec<EndpointId> = Vec::with_capacity(table.routes.len() + 1);
    for route in &table.routes {
        used.push(route.target);
        match route.mode {
            Mode::Direct => {}
            Mode::Shadow { endpoint, .. } => used.push(endpoint),
            Mode::DualWrite { secondary, .. } => used.push(secondary),
        }
    }
    used.extend(config.pubsub_endpoint);
    used.sort_unstable();
    used.dedup();
    used
}

/// `kind` in the JSON.
fn kind(endpoint: &EndpointConfig) -> &'static str {
    match endpoint.kind {
        EndpointKind::Standalone { .. } => "standalone",
        EndpointKind::Sentinel { .. } => "sentinel",
        EndpointKind::Cluster { .. } => "cluster",
    }
}

/// One endpoint's health document (events included for `/v1/endpoints`).
fn document(endpoint: &EndpointConfig, h: &Health, events: bool) -> Value {
    let mut doc = json!({
        "name": endpoint.name,
        "kind": kind(endpoint),
        "up": h.up,
        "last_error": h.last_error,
        "checked_at": h.checked_at.map(rfc3339),
        "primary": h.primary,
    });
    if let (true, Value::Object(fields)) = (events, &mut doc) {
        fields.insert("description".into(), endpoint.describe().into());
        let counts: Map<String, Value> = Event::ALL
            .iter()
            .map(|e| {
                let n = h.events.get(e).copied().unwrap_or(0);
                (e.label().to_string(), n.into())
            })
            .collect();
        fields.insert("events".into(), counts.into());
    }
    doc
}

/// `GET /readyz`: 200 when every endpoint in use passed its last check, else 503.
/// `endpoints.NAME` is `ok` or `error: <cause>`; `checks.NAME` holds the details.
pub(super) async fn ready(state: &AdminState) -> Reply {
    let config = &state.shared.config;
    let used = in_use(&state.shared.router.snapshot(), config);
    // Endpoints not checked yet (start-up) are checked now, concurrently.
    let first: Vec<_> = used
        .iter()
        .filter(|&&ep| health::get(&config.endpoints[ep].name).up.is_none())
        .map(|&ep| {
            let endpoint = config.endpoints[ep].clone();
            let timeout = config.health.timeout;
            tokio::spawn(async move { crate::health::check_once(&endpoint, timeout).await })
        })
        .collect();
    for check in first {
        // The result is in the registry; a failed join leaves the endpoint unchecked.
        let _ = check.await;
    }
    let mut ready = true;
    let mut endpoints = Map::new();
    let mut checks = Map::new();
    for ep in used {
        let endpoint = &config.endpoints[ep];
        let h = health::get(&endpoint.name);
        let status = match (h.up, &h.last_error) {
            (Some(true), _) => "ok".to_string(),
            (Some(false), Some(cause)) => format!("error: {cause}"),
            (Some(false), None) => "error".to_string(),
            (None, _) => "not checked yet".to_string(),
        };
        ready &= h.up == Some(true);
        endpoints.insert(endpoint.name.clone(), status.into());
        checks.insert(endpoint.name.clone(), document(endpoint, &h, false));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_reply(
        status,
        &json!({ "ready": ready, "endpoints": endpoints, "checks": checks }),
    )
}

/// `GET /v1/endpoints`: every configured endpoint, in use or not.
pub(super) fn list(state: &AdminState) -> Reply {
    let config = &state.shared.config;
    let used = in_use(&state.shared.router.snapshot(), config);
    let endpoints: Vec<Value> = config
        .endpoints
        .iter()
        .enumerate()
        .map(|(ep, endpoint)| {
            let mut doc = document(endpoint, &health::get(&endpoint.name), true);
            if let Value::Object(fields) = &mut doc {
                fields.insert("in_use".into(), used.contains(&ep).into());
            }
            doc
        })
        .collect();
    json_reply(
        StatusCode::OK,
        &json!({
            "interval_ms": config.health.interval.as_millis() as u64,
            "timeout_ms": config.health.timeout.as_millis() as u64,
            "endpoints": endpoints,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn in_use_counts_shadows_secondaries_and_pubsub() {
        let mut config = crate::config::tests::good();
        let legacy = config.endpoint_id("legacy").unwrap_or(0);
        let new = config.endpoint_id("new").unwrap_or(0);
        let mut table = RouteTable::from_config(&config, SystemTime::now());
        for route in &mut table.routes {
            route.target = legacy;
        }
        assert_eq!(in_use(&table, &config), vec![legacy]);
        table.routes[0].mode = Mode::Shadow {
            endpoint: new,
            sample: 1.0,
            writes: false,
        };
        assert_eq!(in_use(&table, &config), vec![legacy, new]);
        table.routes[0].mode = Mode::DualWrite {
            secondary: new,
            compare: false,
            sample: 1.0,
        };
        assert_eq!(in_use(&table, &config), vec![legacy, new]);
        table.routes[0].mode = Mode::Direct;
        config.pubsub_endpoint = Some(new);
        assert_eq!(in_use(&table, &config), vec![legacy, new]);
    }

    #[test]
    fn the_document_shows_every_event_and_never_a_password() {
        let mut endpoint = EndpointConfig::standalone("doc-test", "127.0.0.1:1");
        endpoint.credentials = Some(crate::config::Credentials {
            username: Some("app".into()),
            password: crate::config::Secret::new("doc-test-secret".into()),
        });
        health::record("doc-test", Event::AuthFailure);
        let doc = document(&endpoint, &health::get("doc-test"), true);
        assert_eq!(doc["kind"], "standalone");
        assert_eq!(doc["description"], "127.0.0.1:1");
        assert_eq!(doc["events"]["auth_failure"], 1);
        assert_eq!(doc["events"]["connect_error"], 0);
        assert_eq!(doc["up"], Value::Null);
        assert!(!doc.to_string().contains("doc-test-secret"), "{doc}");
    }
}
