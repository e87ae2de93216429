//! The admin HTTP API (HTTP/1.1, JSON), one hyper service.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/v1/routes` | the route table and its version (also as `ETag`) |
//! | PUT | `/v1/routes/{namespace}` | change a route: `{"target": "new", "reason": "…"}` flips it; `mode` (`direct`, `shadow` with `shadow`/`sample`/`writes`, `dual-write` with `secondary`/`compare`/`sample`) sets how it is served; optional `If-Match: N` |
//! | GET | `/v1/history` | the audit log of route changes |
//! | POST | `/v1/routes/{namespace}/cutover` | a fenced cutover ([`cutover`]) |
//! | GET | `/v1/cutovers/{id}` | a cutover's report |
//! | GET | `/v1/shadow` | shadow counts and match ratio per namespace ([`shadow`]) |
//! | POST | `/v1/shadow/reset` | restart shadow counts |
//! | GET | `/v1/shadow/mismatches` | recent mismatches |
//! | GET | `/v1/endpoints` | every endpoint: kind, where, up, last error, last check, primary, event counts ([`endpoints`]) |
//! | GET | `/healthz` | the process is up |
//! | GET | `/readyz` | every endpoint in use (routes, shadows, secondaries, Pub/Sub) passed its last health check: 200, else 503 |
//! | GET | `/metrics` | Prometheus text |
//!
//! Mutating calls need `Authorization: Bearer <token>` when `[admin] token_env` is set.
//! Errors are `{"error": "…"}` with 400, 401, 404, 405, 409, 412 or 500.

mod cutover;
mod endpoints;
pub mod probe;
mod shadow;

use crate::route::change::{ChangeError, ChangeRequest, ModeRequest, RouteControl};
use crate::route::RouteTable;
use crate::session::Shared;
use crate::state::rfc3339;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// What the admin handlers need.
#[derive(Debug)]
pub struct AdminState {
    /// Route changes.
    pub control: Arc<RouteControl>,
    /// Config, router and request stats.
    pub shared: Arc<Shared>,
    /// The Prometheus exporter.
    pub prometheus: PrometheusHandle,
    /// Fenced cutovers.
    pub cutovers: Arc<crate::cutover::Cutovers>,
}

type Reply = Response<Full<Bytes>>;

/// Serves the admin API until shutdown.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = crate::shutdown::wait(&mut shutdown) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(cause = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state, peer).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(cause = %e, "admin connection ended");
            }
        });
    }
}

async fn handle(req: Request<Incoming>, state: &AdminState, peer: SocketAddr) -> Reply {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), &method) {
        (["v1", "routes"], &Method::GET) => routes(&state.control.router().snapshot(), state),
        (["v1", "routes", ns], &Method::PUT) => {
            let ns = (*ns).to_string();
            put_route(req, state, peer, ns).await
        }
        (["v1", "history"], &Method::GET) => history(state).await,
        (["v1", "routes", ns, "cutover"], &Method::POST) => {
            if !authorized(&req, state) {
                return unauthorized();
            }
            let ns = (*ns).to_string();
            let query = req.uri().query().map(str::to_string);
            let actor = actor_of(&req, peer);
            match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => {
                    cutover::start(state, ns, &body.to_bytes(), query.as_deref(), actor).await
                }
                Err(e) => error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")),
            }
        }
        (["v1", "cutovers", id], &Method::GET) => match id.parse::<u64>() {
            Ok(id) => cutover::show(state, id),
            Err(_) => error(StatusCode::NOT_FOUND, format!("no cutover {id}")),
        },
        (["v1", "shadow"], &Method::GET) => shadow::summary(state),
        (["v1", "shadow", "mismatches"], &Method::GET) => {
            shadow::mismatches(state, req.uri().query())
        }
        (["v1", "shadow", "reset"], &Method::POST) => {
            if !authorized(&req, state) {
                return unauthorized();
            }
            match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => shadow::reset(state, &body.to_bytes()),
                Err(e) => error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")),
            }
        }
        (["v1", "endpoints"], &Method::GET) => endpoints::list(state),
        (["healthz"], &Method::GET) => text(StatusCode::OK, "ok\n"),
        (["readyz"], &Method::GET) => endpoints::ready(state).await,
        (["metrics"], &Method::GET) => {
            let mut body = state.shared.stats.render(
                &state.prometheus,
                &state.shared.config,
                &state.shared.router.namespaces,
            );
            state
                .shared
                .shadow
                .report
                .render(&mut body, &state.shared.router.namespaces);
            let mut reply = Response::new(Full::new(Bytes::from(body)));
            reply.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            reply
        }
        (
            ["v1", "routes"]
            | ["v1", "routes", _]
            | ["v1", "history"]
            | ["v1", "routes", _, "cutover"]
            | ["v1", "cutovers", _]
            | ["v1", "shadow"]
            | ["v1", "shadow", "mismatches" | "reset"]
            | ["v1", "endpoints"]
            | ["healthz"]
            | ["readyz"]
            | ["metrics"],
            _,
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_string())));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *reply.status_mut() = status;
    reply
}

fn error(status: StatusCode, message: String) -> Reply {
    json_reply(status, &json!({ "error": message }))
}

/// The route table document, with its version as `ETag`.
fn routes(table: &RouteTable, state: &AdminState) -> Reply {
    let namespaces = &state.shared.router.namespaces;
    let endpoints = &state.shared.config.endpoints;
    let routes: Vec<Value> = table
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let ns = i as u16;
            let mut route = json!({
                "namespace": namespaces.name(ns),
                "prefixes": namespaces.prefixes(ns),
                "target": endpoints[r.target].name,
                "changed_at": rfc3339(r.changed_at),
                "reason": r.reason,
            });
            if let Value::Object(fields) = &mut route {
                fields.extend(r.mode.to_json(endpoints));
                fields.extend(namespaces.keyspace.to_json(ns, endpoints));
            }
            route
        })
        .collect();
    let mut reply = json_reply(
        StatusCode::OK,
        &json!({ "version": table.version, "routes": routes }),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", table.version)) {
        reply.headers_mut().insert(ETAG, etag);
    }
    reply
}

/// Who makes a change: the `X-Turnout-Actor` header and the caller's address.
fn actor_of(req: &Request<Incoming>, peer: SocketAddr) -> String {
    req.headers()
        .get("x-turnout-actor")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| peer.to_string(), |a| format!("{a} ({peer})"))
}

fn unauthorized() -> Reply {
    let mut reply = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token".to_string(),
    );
    reply
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    reply
}

/// Checks the bearer token of a mutating call, in constant time.
fn authorized(req: &Request<Incoming>, state: &AdminState) -> bool {
    let Some(token) = &state.shared.config.admin.token else {
        return true;
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes()))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRoute {
    target: Option<String>,
    reason: String,
    mode: Option<String>,
    shadow: Option<String>,
    secondary: Option<String>,
    sample: Option<f64>,
    writes: Option<bool>,
    compare: Option<bool>,
}

async fn put_route(
    req: Request<Incoming>,
    state: &AdminState,
    peer: SocketAddr,
    namespace: String,
) -> Reply {
    if !authorized(&req, state) {
        return unauthorized();
    }
    let if_match = match req.headers().get(IF_MATCH).map(|v| {
        v.to_str()
            .map(|s| s.trim().trim_matches('"').parse::<u64>())
    }) {
        None => None,
        Some(Ok(Ok(v))) => Some(v),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "If-Match must be a route table version".to_string(),
            )
        }
    };
    let actor = actor_of(&req, peer);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")),
    };
    let change: PutRoute = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad body: {e}")),
    };
    if change.reason.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "reason must not be empty".to_string(),
        );
    }
    let mode = match change.mode {
        Some(mode) => Some(ModeRequest {
            mode,
            shadow: change.shadow,
            secondary: change.secondary,
            sample: change.sample,
            writes: change.writes,
            compare: change.compare,
        }),
        None if change.shadow.is_some()
            || change.secondary.is_some()
            || change.sample.is_some()
            || change.writes.is_some()
            || change.compare.is_some() =>
        {
            return error(
                StatusCode::BAD_REQUEST,
                "shadow, secondary, sample, writes and compare need \"mode\"".to_string(),
            )
        }
        None => None,
    };
    if change.target.is_none() && mode.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "give \"target\", \"mode\" or both".to_string(),
        );
    }
    let before = state.control.router().snapshot();
    let request = ChangeRequest {
        release_hold: false,
        namespace: namespace.clone(),
        mode,
        target: change.target,
        reason: change.reason,
        actor,
        if_match,
    };
    // The change runs in its own task: if the caller disconnects, hyper drops this future, and
    // a change cancelled between persisting and publishing would leave the file ahead of the
    // live table. A spawned task always finishes.
    let control = state.control.clone();
    let outcome = match tokio::spawn(async move { control.change(request).await }).await {
        Ok(outcome) => outcome,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("route change failed: {e}"),
            )
        }
    };
    match outcome {
        Ok(table) => {
            // Shadow counts run from the moment the mode was set.
            let router = &state.shared.router;
            if let Some(ns) = router.namespaces.id(&namespace) {
                if before.routes.get(usize::from(ns)).map(|r| r.mode)
                    != table.routes.get(usize::from(ns)).map(|r| r.mode)
                {
                    state.shared.shadow.report.reset(ns);
                }
            }
            routes(&table, state)
        }
        Err(e @ ChangeError::UnknownNamespace(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ (ChangeError::UnknownEndpoint(_) | ChangeError::BadMode(_))) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e @ (ChangeError::Stale { .. } | ChangeError::CutoverRunning(_))) => {
            let status = if matches!(e, ChangeError::Stale { .. }) {
                StatusCode::PRECONDITION_FAILED
            } else {
                StatusCode::CONFLICT
            };
            error(status, e.to_string())
        }
        Err(e @ ChangeError::Persist(_)) => {
            tracing::error!(cause = %e, "route change not persisted");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

async fn history(state: &AdminState) -> Reply {
    let entries: Vec<Value> = state
        .control
        .history()
        .await
        .iter()
        .map(|h| {
            json!({
                "version": h.version,
                "at": rfc3339(h.at),
                "namespace": h.namespace,
                "from": h.from,
                "to": h.to,
                "from_mode": h.from_mode,
                "to_mode": h.to_mode,
                "reason": h.reason,
                "actor": h.actor,
            })
        })
        .collect();
    json_reply(StatusCode::OK, &json!({ "entries": entries }))
}

/// Sends one PING to `address` and expects PONG (readiness checks, the demo).
///
/// # Errors
/// Why the endpoint is not ready.
pub async fn probe_ping(
    address: &str,
    timeout: std::time::Duration,
) -> Result<(), probe::ProbeError> {
    let endpoint = crate::config::EndpointConfig::standalone(address, address);
    probe::ping(&endpoint, timeout).await
}
