//! Changing a route: serialized, checked, persisted, then published, then audited.
//!
//! Order matters. The new table is written to the state file before it is swapped in, so a
//! crash never leaves a process whose routes are newer than its file, and the swap happens
//! before the API answers, so every command read after the answer uses the new target.

use super::{Mode, NsId, RouteTable, Router};
use crate::config::Config;
use crate::state::{self, StateError};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Mutex;

/// Most history entries kept (in memory and in the state file).
pub const HISTORY_LIMIT: usize = 1000;

/// One audited change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Table version the change produced.
    pub version: u64,
    /// When it was accepted.
    pub at: SystemTime,
    /// The route changed.
    pub namespace: String,
    /// Endpoint before.
    pub from: String,
    /// Endpoint after.
    pub to: String,
    /// Mode before, described.
    pub from_mode: String,
    /// Mode after, described.
    pub to_mode: String,
    /// Why, as the operator said.
    pub reason: String,
    /// Who: the `X-Turnout-Actor` header, or the caller's address.
    pub actor: String,
}

/// A requested mode, as the API names it.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeRequest {
    /// `direct`, `shadow` or `dual-write`.
    pub mode: String,
    /// Shadow mode: the endpoint copies go to.
    pub shadow: Option<String>,
    /// Dual-write mode: the endpoint writes are mirrored to.
    pub secondary: Option<String>,
    /// Fraction of reads compared (default: `[shadow] sample`).
    pub sample: Option<f64>,
    /// Shadow mode: mirror writes too (default false).
    pub writes: Option<bool>,
    /// Dual-write mode: compare reads (default false).
    pub compare: Option<bool>,
}

/// A requested change of one route's target, mode or both.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    /// Route name (a namespace or `default`).
    pub namespace: String,
    /// Endpoint name; `None` keeps the target.
    pub target: Option<String>,
    /// The mode; `None` keeps the mode.
    pub mode: Option<ModeRequest>,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// Expected current table version (`If-Match`).
    pub if_match: Option<u64>,
    /// The cutover holding this namespace makes the change, and releases the hold with it.
    pub release_hold: bool,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such route.
    #[error("unknown namespace \"{0}\"")]
    UnknownNamespace(String),
    /// No such endpoint.
    #[error("unknown endpoint \"{0}\"")]
    UnknownEndpoint(String),
    /// `If-Match` named an older version.
    #[error("route table version is {current}, not {expected}")]
    Stale {
        /// What the caller expected.
        expected: u64,
        /// What it is.
        current: u64,
    },
    /// A cutover holds the namespace.
    #[error("a cutover of \"{0}\" is running; wait for it to end")]
    CutoverRunning(String),
    /// The mode is not valid for this route.
    #[error("{0}")]
    BadMode(String),
    /// The state file could not be written; nothing changed.
    #[error("could not persist the change, nothing changed: {0}")]
    Persist(#[from] StateError),
}

/// Serializes route changes and keeps the audit history.
#[derive(Debug)]
pub struct RouteControl {
    router: Arc<Router>,
    config: Arc<Config>,
    history: Mutex<Vec<HistoryEntry>>,
}

impl RouteControl {
    /// Takes over `router`, with the history restored from the state file.
    pub fn new(router: Arc<Router>, config: Arc<Config>, history: Vec<HistoryEntry>) -> Self {
        RouteControl {
            router,
            config,
            history: Mutex::new(history),
        }
    }

    /// The router it changes.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The audit history, oldest first.
    pub async fn history(&self) -> Vec<HistoryEntry> {
        self.history.lock().await.clone()
    }

    /// Holds or releases a namespace's commands (a cutover's hold step, or its abort).
    /// Nothing is persisted: a hold never outlives the process. Returns the epoch of the
    /// snapshot that carries it.
    pub async fn set_hold(&self, ns: NsId, hold: bool) -> u64 {
        let _serialized = self.history.lock().await;
        let mut next = RouteTable::clone(&self.router.snapshot());
        if let Some(route) = next.routes.get_mut(usize::from(ns)) {
            route.hold = hold;
        }
        self.router.store(next)
    }

    /// A requested mode, checked against the config.
    fn resolve_mode(&self, req: &ModeRequest) -> Result<Mode, ChangeError> {
        let endpoint = |name: &Option<String>, field: &str| match name {
            None => Err(ChangeError::BadMode(format!(
                "mode {} needs \"{field}\": the endpoint to copy to",
                req.mode
            ))),
            Some(name) => self
                .config
                .endpoint_id(name)
                .ok_or_else(|| ChangeError::UnknownEndpoint(name.clone())),
        };
        let sample = req.sample.unwrap_or(self.config.shadow.sample);
        if !(0.0..=1.0).contains(&sample) {
            return Err(ChangeError::BadMode(format!(
                "sample must be between 0.0 and 1.0, not {sample}"
            )));
        }
        let unused = |field: &str, present: bool| {
            if present {
                Err(ChangeError::BadMode(format!(
                    "\"{field}\" does not apply to mode {}",
                    req.mode
                )))
            } else {
                Ok(())
            }
        };
        match req.mode.as_str() {
            "direct" => {
                unused("shadow", req.shadow.is_some())?;
                unused("secondary", req.secondary.is_some())?;
                unused("sample", req.sample.is_some())?;
                unused("writes", req.writes.is_some())?;
                unused("compare", req.compare.is_some())?;
                Ok(Mode::Direct)
            }
            "shadow" => {
                unused("secondary", req.secondary.is_some())?;
                unused("compare", req.compare.is_some())?;
                Ok(Mode::Shadow {
                    endpoint: endpoint(&req.shadow, "shadow")?,
                    sample,
                    writes: req.writes.unwrap_or(false),
                })
            }
            "dual-write" => {
                unused("shadow", req.shadow.is_some())?;
                unused("writes", req.writes.is_some())?;
                Ok(Mode::DualWrite {
                    secondary: endpoint(&req.secondary, "secondary")?,
                    compare: req.compare.unwrap_or(false),
                    sample,
                })
            }
            other => Err(ChangeError::BadMode(format!(
                "unknown mode \"{other}\" (direct, shadow or dual-write)"
            ))),
        }
    }

    /// Applies a change; a change to the current target is accepted without a new version.
    ///
    /// # Errors
    /// [`ChangeError`]; on any error the route table is unchanged.
    pub async fn change(&self, req: ChangeRequest) -> Result<Arc<RouteTable>, ChangeError> {
        // The history lock serializes changes end to end, persistence included.
        let mut history = self.history.lock().await;
        let ns: NsId = self
            .router
            .namespaces
            .id(&req.namespace)
            .ok_or_else(|| ChangeError::UnknownNamespace(req.namespace.clone()))?;
        let current = self.router.snapshot();
        let route_now = &current.routes[usize::from(ns)];
        if route_now.hold && !req.release_hold {
            return Err(ChangeError::CutoverRunning(req.namespace.clone()));
        }
        let target = match &req.target {
            Some(name) => self
                .config
                .endpoint_id(name)
                .ok_or_else(|| ChangeError::UnknownEndpoint(name.clone()))?,
            None => route_now.target,
        };
        let mode = match &req.mode {
            Some(m) => self.resolve_mode(m)?,
            None => route_now.mode,
        };
        if mode.mirror_endpoint() == Some(target) {
            let endpoint = &self.config.endpoints[target].name;
            return Err(ChangeError::BadMode(if req.mode.is_some() {
                format!(
                    "mode {} cannot copy to \"{endpoint}\": it is the route's own target",
                    mode.name()
                )
            } else {
                format!(
                    "the route is in {} mode towards \"{endpoint}\"; set \"mode\" too (e.g. \"direct\") to make it the target",
                    mode.name()
                )
            }));
        }
        if let Some(mirror) = mode.mirror_endpoint() {
            if self.router.namespaces.keyspace.is_single_db(mirror) {
                let endpoint = &self.config.endpoints[mirror].name;
                return Err(ChangeError::BadMode(format!(
                    "mode {} cannot copy to \"{endpoint}\": it uses key_prefix, and copies are not rewritten",
                    mode.name()
                )));
            }
        }
        if let Some(expected) = req.if_match {
            if expected != current.version {
                return Err(ChangeError::Stale {
                    expected,
                    current: current.version,
                });
            }
        }
        let before = current.target(ns);
        let mode_before = route_now.mode;
        if before == target && mode_before == mode && !route_now.hold {
            return Ok(current);
        }
        let now = SystemTime::now();
        let mut next = RouteTable::clone(&current);
        next.version += 1;
        let route = &mut next.routes[usize::from(ns)];
        route.target = target;
        route.mode = mode;
        route.hold = false;
        route.changed_at = now;
        route.reason = req.reason.clone();

        let mut new_history = history.clone();
        new_history.push(HistoryEntry {
            version: next.version,
            at: now,
            namespace: req.namespace.clone(),
            from: self.config.endpoints[before].name.clone(),
            to: self.config.endpoints[target].name.clone(),
            from_mode: mode_before.describe(&self.config.endpoints),
            to_mode: mode.describe(&self.config.endpoints),
            reason: req.reason,
            actor: req.actor,
        });
        if new_history.len() > HISTORY_LIMIT {
            let excess = new_history.len() - HISTORY_LIMIT;
            new_history.drain(..excess);
        }

        let file =
            state::StateFile::capture(&self.config, &self.router.namespaces, &next, &new_history);
        let path = self.config.state_path.clone();
        tokio::task::spawn_blocking(move || state::save(&path, &file))
            .await
            .map_err(|e| StateError::Io {
                path: self.config.state_path.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;

        let version = next.version;
        self.router.store(next);
        *history = new_history;
        crate::metrics::route_changed(&req.namespace, version);
        tracing::info!(
            namespace = %req.namespace,
            from = %self.config.endpoints[before].name,
            to = %self.config.endpoints[target].name,
            mode = %mode.describe(&self.config.endpoints),
            version,
            "route changed"
        );
        Ok(self.router.snapshot())
    }
}
