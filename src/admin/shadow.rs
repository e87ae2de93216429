//! The shadow report endpoints: counts and match ratio per namespace, recent mismatches.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/v1/shadow` | per namespace: mode, counts per outcome and match ratio since the mode was set |
//! | POST | `/v1/shadow/reset` | restart the counts: `{"namespace": "…"}`, or every namespace without a body |
//! | GET | `/v1/shadow/mismatches?namespace=…&limit=…` | recent mismatches and secondary failures, newest first, and how many were counted but not logged |

use super::{error, json_reply, AdminState, Reply};
use crate::route::NsId;
use crate::shadow::report::{Outcome, OUTCOMES};
use crate::state::rfc3339;
use hyper::StatusCode;
use serde_json::{json, Value};

/// Most mismatches one request returns.
const MAX_LIMIT: usize = 10_000;

/// `GET /v1/shadow`.
pub(super) fn summary(state: &AdminState) -> Reply {
    let shared = &state.shared;
    let table = shared.router.snapshot();
    let namespaces = &shared.router.namespaces;
    let report = &shared.shadow.report;
    let rows: Vec<Value> = (0..namespaces.len())
        .map(|i| {
            let ns = i as NsId;
            let (counts, since) = report.counts(ns);
            let mut outcome = serde_json::Map::new();
            for o in OUTCOMES {
                outcome.insert(o.label().to_string(), json!(counts[o as usize]));
            }
            let matched = counts[Outcome::Match as usize];
            let compared = matched + counts[Outcome::Mismatch as usize];
            let mut row = json!({
                "namespace": namespaces.name(ns),
                "target": shared.config.endpoints[table.target(ns)].name,
                "since": rfc3339(since),
                "counts": outcome,
                "compared": compared,
                "match_ratio": if compared == 0 { Value::Null } else { json!(matched as f64 / compared as f64) },
            });
            if let Value::Object(fields) = &mut row {
                fields.extend(table.routes[i].mode.to_json(&shared.config.endpoints));
            }
            row
        })
        .collect();
    json_reply(
        StatusCode::OK,
        &json!({ "namespaces": rows, "queued_bytes": shared.shadow.queued_bytes() }),
    )
}

/// `POST /v1/shadow/reset`.
pub(super) fn reset(state: &AdminState, body: &[u8]) -> Reply {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Reset {
        namespace: Option<String>,
    }
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        Reset { namespace: None }
    } else {
        match serde_json::from_slice::<Reset>(body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad body: {e}")),
        }
    };
    let namespaces = &state.shared.router.namespaces;
    let report = &state.shared.shadow.report;
    match request.namespace {
        Some(name) => match namespaces.id(&name) {
            Some(ns) => report.reset(ns),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("unknown namespace \"{name}\""),
                )
            }
        },
        None => (0..namespaces.len()).for_each(|ns| report.reset(ns as NsId)),
    }
    summary(state)
}

/// `GET /v1/shadow/mismatches`.
pub(super) fn mismatches(state: &AdminState, query: Option<&str>) -> Reply {
    let namespaces = &state.shared.router.namespaces;
    let mut ns = None;
    let mut limit = 100;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "namespace" => match namespaces.id(&value) {
                Some(id) => ns = Some(id),
                None => {
                    return error(
                        StatusCode::NOT_FOUND,
                        format!("unknown namespace \"{value}\""),
                    )
                }
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("limit must be between 1 and {MAX_LIMIT}"),
                    )
                }
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter \"{other}\" (namespace, limit)"),
                )
            }
        }
    }
    let entries: Vec<Value> = state
        .shared
        .shadow
        .report
        .recent(ns, limit)
        .into_iter()
        .map(|e| {
            json!({
                "at": rfc3339(e.at),
                "namespace": namespaces.name(e.namespace),
                "command": crate::command::label(e.command),
                "outcome": e.outcome.label(),
                "key": e.key,
                "primary": e.primary,
                "shadow": e.shadow,
            })
        })
        .collect();
    json_reply(
        StatusCode::OK,
        &json!({ "mismatches": entries, "unlogged": state.shared.shadow.report.unlogged() }),
    )
}
