//! The cutover endpoints.
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | `/v1/routes/{namespace}/cutover` | start one: `{"to", "fence": "replication"\|"drain", "timeout_ms", "promote", "reason"}`; 202 with its id, or with `?wait=true` 200 with its report once it ended |
//! | GET | `/v1/cutovers/{id}` | its report: steps with timestamps, pause, outcome |

use super::{error, json_reply, AdminState, Reply};
use crate::cutover::{Fence, Outcome, Report, Request, StartError};
use crate::state::rfc3339;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    to: String,
    #[serde(default)]
    fence: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    promote: bool,
    reason: String,
}

/// `POST /v1/routes/{namespace}/cutover`.
pub(super) async fn start(
    state: &AdminState,
    namespace: String,
    body: &[u8],
    query: Option<&str>,
    actor: String,
) -> Reply {
    let body: Body = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad body: {e}")),
    };
    let fence = match body.fence.as_deref() {
        None | Some("replication") => Fence::Replication,
        Some("drain") => Fence::Drain,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown fence \"{other}\" (replication or drain)"),
            )
        }
    };
    let mut wait = false;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match (&*key, &*value) {
            ("wait", "true" | "1") => wait = true,
            ("wait", "false" | "0") => wait = false,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter \"{key}={value}\" (wait=true)"),
                )
            }
        }
    }
    let request = Request {
        namespace,
        to: body.to,
        fence,
        timeout: Duration::from_millis(body.timeout_ms.unwrap_or(2000)),
        promote: body.promote,
        reason: body.reason,
        actor,
    };
    let (id, mut done, held) = match state.cutovers.start(request) {
        Ok(started) => started,
        Err(e @ StartError::UnknownNamespace(_)) => {
            return error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e @ StartError::Invalid(_)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ StartError::Running { .. }) => return error(StatusCode::CONFLICT, e.to_string()),
    };
    // Answer once the hold is in place: from then on a PUT of the route gets 409.
    let _ = held.await;
    if !wait {
        return json_reply(
            StatusCode::ACCEPTED,
            &json!({ "id": id, "report": format!("/v1/cutovers/{id}") }),
        );
    }
    // The cutover runs in its own task: a caller that goes away does not cancel it.
    while !*done.borrow() {
        if done.changed().await.is_err() {
            break;
        }
    }
    show(state, id)
}

/// `GET /v1/cutovers/{id}`.
pub(super) fn show(state: &AdminState, id: u64) -> Reply {
    match state.cutovers.report(id) {
        Some(report) => json_reply(StatusCode::OK, &render(&report)),
        None => error(StatusCode::NOT_FOUND, format!("no cutover {id}")),
    }
}

fn render(r: &Report) -> Value {
    let (outcome, failed_step, reason) = match &r.outcome {
        Outcome::Running => ("running", None, None),
        Outcome::Completed => ("completed", None, None),
        Outcome::Aborted { step, reason } => ("aborted", Some(*step), Some(reason.clone())),
    };
    let steps: Vec<Value> = r
        .steps
        .iter()
        .map(|s| {
            json!({
                "step": s.name,
                "started_at": rfc3339(s.started),
                "took_ms": s.took.map(|d| d.as_secs_f64() * 1000.0),
                "error": s.error,
            })
        })
        .collect();
    json!({
        "id": r.id,
        "namespace": r.request.namespace,
        "from": r.from,
        "to": r.request.to,
        "fence": match r.request.fence { Fence::Replication => "replication", Fence::Drain => "drain" },
        "timeout_ms": r.request.timeout.as_millis() as u64,
        "promote": r.request.promote,
        "reason": r.request.reason,
        "actor": r.request.actor,
        "outcome": outcome,
        "failed_step": failed_step,
        "error": reason,
        "pause_ms": r.pause.map(|d| d.as_secs_f64() * 1000.0),
        "held_commands": r.held_commands,
        "steps": steps,
    })
}
