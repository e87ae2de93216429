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
    /// Why, as the operator said.
    pub reason: String,
    /// Who: the `X-Turnout-Actor` header, or the caller's address.
    pub actor: String,
}

/// A requested change of one route's target.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    /// Route name (a namespace or `default`).
    pub namespace: String,
    /// Endpoint name.
    pub target: String,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// Expected current table version (`If-Match`).
    pub if_match: Option<u64>,
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
        let target = self
            .config
            .endpoint_id(&req.target)
            .ok_or_else(|| ChangeError::UnknownEndpoint(req.target.clone()))?;
        let current = self.router.snapshot();
        if let Some(expected) = req.if_match {
            if expected != current.version {
                return Err(ChangeError::Stale {
                    expected,
                    current: current.version,
                });
            }
        }
        let before = current.target(ns);
        if before == target {
            return Ok(current);
        }
        let now = SystemTime::now();
        let mut next = RouteTable::clone(&current);
        next.version += 1;
        let route = &mut next.routes[usize::from(ns)];
        route.target = target;
        route.mode = Mode::Direct;
        route.changed_at = now;
        route.reason = req.reason.clone();

        let mut new_history = history.clone();
        new_history.push(HistoryEntry {
            version: next.version,
            at: now,
            namespace: req.namespace.clone(),
            from: self.config.endpoints[before].name.clone(),
            to: req.target.clone(),
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
            to = %req.target,
            version,
            "route flipped"
        );
        Ok(self.router.snapshot())
    }
}
