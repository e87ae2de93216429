//! Fenced cutover: move a namespace to another endpoint without losing or reordering a write.
//!
//! A cutover runs hold → drain → fence → flip, all within one deadline:
//! - **hold**: a route snapshot marks the namespace held; sessions stop at its next command
//!   (it waits, unsent, in their read buffer) while other namespaces keep flowing;
//! - **drain**: every session reports ([`registry`]) when it owes no reply for the namespace
//!   any more, so nothing of it is in flight to the old endpoint;
//! - **fence** (`replication`): a unique key written through the old endpoint must become
//!   visible on the new one, which proves that replication has caught up past every write
//!   acknowledged so far; it is then deleted; `promote` sends `REPLICAOF NO ONE` to the new
//!   endpoint;
//! - **flip**: the new route is persisted and published with the hold released, and the held
//!   commands go, in each session's order, to the new endpoint.
//!
//! If a step overruns the deadline or fails, the hold is released with the route unchanged:
//! the held commands go to the old endpoint and no client sees an error.

mod fence;
pub mod registry;

use crate::config::{Config, EndpointId};
use crate::route::change::{ChangeRequest, RouteControl};
use crate::route::{Mode, NsId};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Most finished cutovers kept for `GET /v1/cutovers/{id}`.
const KEPT: usize = 100;
/// How often the drain and fence steps look again.
const POLL: Duration = Duration::from_millis(1);
/// Longest `timeout_ms` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// How the new endpoint is known to have every acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Write a key through the old endpoint and wait until it replicates.
    Replication,
    /// Drain only (the operator knows the data is there, e.g. a cache).
    Drain,
}

/// A requested cutover.
#[derive(Debug, Clone)]
pub struct Request {
    /// Route name.
    pub namespace: String,
    /// Endpoint to move to.
    pub to: String,
    /// Fence kind.
    pub fence: Fence,
    /// Bound on the whole cutover.
    pub timeout: Duration,
    /// Send `REPLICAOF NO ONE` to the new endpoint after the fence.
    pub promote: bool,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
}

/// One step's record.
#[derive(Debug, Clone)]
pub struct Step {
    /// `hold`, `drain`, `fence`, `promote`, `flip`.
    pub name: &'static str,
    /// When it started.
    pub started: SystemTime,
    /// How long it took, once it ended.
    pub took: Option<Duration>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Where a cutover is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Running,
    /// The route moved.
    Completed,
    /// The route did not move: `step` failed with `reason`.
    Aborted {
        /// The failed step.
        step: &'static str,
        /// Why.
        reason: String,
    },
}

/// A cutover's report.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its id.
    pub id: u64,
    /// What was asked.
    pub request: Request,
    /// From which endpoint.
    pub from: String,
    /// Steps so far.
    pub steps: Vec<Step>,
    /// Commands held (waiting in sessions) when the hold ended.
    pub held_commands: usize,
    /// From the hold to its release.
    pub pause: Option<Duration>,
    /// Where it is.
    pub outcome: Outcome,
}

/// Why a cutover could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No such route.
    #[error("unknown namespace \"{0}\"")]
    UnknownNamespace(String),
    /// Not a valid request.
    #[error("{0}")]
    Invalid(String),
    /// One is running for this namespace.
    #[error("a cutover of \"{namespace}\" is already running (id {id})")]
    Running {
        /// The namespace.
        namespace: String,
        /// The running cutover.
        id: u64,
    },
}

/// A started cutover: its id, its end, and its hold being in place.
pub type Started = (
    u64,
    tokio::sync::watch::Receiver<bool>,
    tokio::sync::oneshot::Receiver<()>,
);

/// Runs cutovers and keeps their reports.
#[derive(Debug)]
pub struct Cutovers {
    control: Arc<RouteControl>,
    config: Arc<Config>,
    sessions: Arc<registry::Registry>,
    shadow: Arc<crate::shadow::Shadow>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    running: HashMap<NsId, u64>,
    reports: HashMap<u64, Arc<Mutex<Report>>>,
    order: VecDeque<u64>,
    done: HashMap<u64, tokio::sync::watch::Sender<bool>>,
}

impl Cutovers {
    /// A runner over `control`'s routes.
    pub fn new(
        control: Arc<RouteControl>,
        config: Arc<Config>,
        sessions: Arc<registry::Registry>,
        shadow: Arc<crate::shadow::Shadow>,
    ) -> Self {
        Cutovers {
            control,
            config,
            sessions,
            shadow,
            state: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
        }
    }

    /// Checks and starts a cutover; returns its id, a receiver that turns true when it has
    /// ended, and one that fires once the hold is in place (from then on a `PUT` of the
    /// route gets 409).
    ///
    /// # Errors
    /// [`StartError`]; nothing started.
    pub fn start(self: &Arc<Self>, request: Request) -> Result<Started, StartError> {
        let router = self.control.router();
        let ns = router
            .namespaces
            .id(&request.namespace)
            .ok_or_else(|| StartError::UnknownNamespace(request.namespace.clone()))?;
        let to = self
            .config
            .endpoint_id(&request.to)
            .ok_or_else(|| StartError::Invalid(format!("unknown endpoint \"{}\"", request.to)))?;
        let table = router.snapshot();
        let route = &table.routes[usize::from(ns)];
        if route.target == to {
            return Err(StartError::Invalid(format!(
                "\"{}\" already routes to \"{}\"",
                request.namespace, request.to
            )));
        }
        if matches!(route.mode, Mode::Shadow { .. }) {
            return Err(StartError::Invalid(
                "a cutover needs the namespace in direct or dual-write mode (it is in shadow mode)"
                    .to_string(),
            ));
        }
        if request.timeout.is_zero() || request.timeout > MAX_TIMEOUT {
            return Err(StartError::Invalid(format!(
                "timeout_ms must be between 1 and {}",
                MAX_TIMEOUT.as_millis()
            )));
        }
        if request.reason.trim().is_empty() {
            return Err(StartError::Invalid("reason must not be empty".to_string()));
        }
        let from = route.target;
        let mut state = self
            .state
            .lock()
            .map_err(|_| StartError::Invalid("cutover state poisoned".to_string()))?;
        if let Some(&id) = state.running.get(&ns) {
            return Err(StartError::Running {
                namespace: request.namespace,
                id,
            });
        }
        let id = state.next;
        state.next += 1;
        state.running.insert(ns, id);
        let report = Arc::new(Mutex::new(Report {
            id,
            request: request.clone(),
            from: self.config.endpoints[from].name.clone(),
            steps: Vec::new(),
            held_commands: 0,
            pause: None,
            outcome: Outcome::Running,
        }));
        state.reports.insert(id, report.clone());
        state.order.push_back(id);
        while state.order.len() > KEPT {
            let Some(old) = state.order.front().copied() else {
                break;
            };
            if state.running.values().any(|&r| r == old) {
                break;
            }
            state.order.pop_front();
            state.reports.remove(&old);
            state.done.remove(&old);
        }
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        state.done.insert(id, done_tx);
        drop(state);
        let this = self.clone();
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            this.run(ns, from, to, request, &report, held_tx).await;
            if let Ok(mut state) = this.state.lock() {
                state.running.remove(&ns);
                if let Some(done) = state.done.get(&id) {
                    done.send_replace(true);
                }
            }
        });
        Ok((id, done_rx, held_rx))
    }

    /// A cutover's report.
    pub fn report(&self, id: u64) -> Option<Report> {
        let state = self.state.lock().ok()?;
        let report = state.reports.get(&id)?.lock().ok()?;
        Some(report.clone())
    }

    async fn run(
        &self,
        ns: NsId,
        from: EndpointId,
        to: EndpointId,
        request: Request,
        report: &Mutex<Report>,
        held: tokio::sync::oneshot::Sender<()>,
    ) {
        let deadline = Instant::now() + request.timeout;
        let step = |name: &'static str| {
            if let Ok(mut r) = report.lock() {
                r.steps.push(Step {
                    name,
                    started: SystemTime::now(),
                    took: None,
                    error: None,
                });
            }
            Instant::now()
        };
        let end_step = |began: Instant, error: Option<String>| {
            if let Ok(mut r) = report.lock() {
                if let Some(last) = r.steps.last_mut() {
                    last.took = Some(began.elapsed());
                    last.error = error;
                }
            }
        };
        tracing::info!(namespace = %request.namespace, to = %request.to, "cutover: hold");
        let began = step("hold");
        let paused = Instant::now();
        let epoch = self.control.set_hold(ns, true).await;
        self.sessions.wake_all();
        // A change that got in between the checks and the hold wins: nothing to do then.
        let moved = self.control.router().snapshot().routes[usize::from(ns)].target != from;
        end_step(
            began,
            moved.then(|| "the route changed before the hold was in place".to_string()),
        );
        let _ = held.send(());

        let fenced = async {
            if moved {
                return Err((
                    "hold",
                    "the route changed before the hold was in place".to_string(),
                ));
            }
            self.fenced(ns, from, to, &request, deadline, epoch, &step, &end_step)
                .await
        };
        tokio::pin!(fenced);
        // Held sessions are visible in /metrics while the cutover runs.
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let outcome = loop {
            tokio::select! {
                outcome = &mut fenced => break outcome,
                _ = tick.tick() => {
                    crate::metrics::cutover_held(&request.namespace, self.sessions.pending(epoch).1);
                }
            }
        };
        let held = self.sessions.pending(epoch).1;
        let outcome = match outcome {
            Ok(()) => {
                let began = step("flip");
                let change = ChangeRequest {
                    namespace: request.namespace.clone(),
                    target: Some(request.to.clone()),
                    // A dual-write route is served directly once it has moved.
                    mode: match self.control.router().snapshot().routes[usize::from(ns)].mode {
                        Mode::DualWrite { .. } => Some(crate::route::change::ModeRequest {
                            mode: "direct".to_string(),
                            ..Default::default()
                        }),
                        _ => None,
                    },
                    reason: format!("cutover: {}", request.reason),
                    actor: request.actor.clone(),
                    if_match: None,
                    release_hold: true,
                };
                let changed = self.control.change(change).await;
                self.sessions.wake_all();
                match changed {
                    Ok(_) => {
                        end_step(began, None);
                        Outcome::Completed
                    }
                    Err(e) => {
                        end_step(began, Some(e.to_string()));
                        Outcome::Aborted {
                            step: "flip",
                            reason: e.to_string(),
                        }
                    }
                }
            }
            Err((step, reason)) => Outcome::Aborted { step, reason },
        };
        if outcome != Outcome::Completed {
            // Back to the old endpoint: held commands go there, nothing changed.
            self.control.set_hold(ns, false).await;
            self.sessions.wake_all();
        }
        let pause = paused.elapsed();
        crate::metrics::cutover_held(&request.namespace, 0);
        crate::metrics::cutover_finished(
            &request.namespace,
            if outcome == Outcome::Completed {
                "completed"
            } else {
                "aborted"
            },
            pause,
        );
        match &outcome {
            Outcome::Completed => tracing::info!(
                namespace = %request.namespace, to = %request.to,
                pause_ms = pause.as_secs_f64() * 1000.0, "cutover completed"
            ),
            Outcome::Aborted { step, reason } => tracing::warn!(
                namespace = %request.namespace, step, %reason,
                pause_ms = pause.as_secs_f64() * 1000.0, "cutover aborted; route unchanged"
            ),
            Outcome::Running => {}
        }
        if let Ok(mut r) = report.lock() {
            r.held_commands = held;
            r.pause = Some(pause);
            r.outcome = outcome;
        }
    }

    /// Drain, then fence (and promote) as asked.
    #[allow(clippy::too_many_arguments)]
    async fn fenced(
        &self,
        ns: NsId,
        from: EndpointId,
        to: EndpointId,
        request: &Request,
        deadline: Instant,
        epoch: u64,
        step: &impl Fn(&'static str) -> Instant,
        end_step: &impl Fn(Instant, Option<String>),
    ) -> Result<(), (&'static str, String)> {
        let began = step("drain");
        let mut unblocked = std::collections::HashSet::new();
        loop {
            // Blocked commands of the namespace would keep the drain waiting: unblock them;
            // their sessions send them again once the hold is released.
            let blocked = self.sessions.unblock(from, ns, &mut unblocked);
            if !blocked.is_empty() {
                let old = &self.config.endpoints[from];
                if let Err(e) =
                    fence::unblock(old, &blocked, self.config.proxy.connect_timeout).await
                {
                    tracing::warn!(cause = %e, "cutover: could not unblock blocked commands");
                }
            }
            let (undrained, _) = self.sessions.pending(epoch);
            // Dual-write copies still on their way to the secondary would land after the flip.
            let copies = self.shadow.outstanding(ns);
            if undrained == 0 && copies == 0 {
                break;
            }
            if Instant::now() >= deadline {
                let reason = format!(
                    "at the deadline {undrained} session(s) still had commands of the namespace in flight, and {copies} dual-write cop(ies) were not yet answered"
                );
                end_step(began, Some(reason.clone()));
                return Err(("drain", reason));
            }
            tokio::time::sleep(POLL).await;
        }
        end_step(began, None);
        if request.fence == Fence::Replication {
            let began = step("fence");
            let prefix = self
                .control
                .router()
                .namespaces
                .prefixes(ns)
                .first()
                .cloned()
                .unwrap_or_default();
            let keyspace = &self.control.router().namespaces.keyspace;
            // A single-database endpoint holds the namespace under its prefix; another holds
            // it in the namespace's database.
            let side = |ep| match keyspace.is_single_db(ep) {
                true => fence::Side {
                    db: None,
                    prefix: String::from_utf8_lossy(keyspace.prefix(ns, ep)).into_owned(),
                },
                false => fence::Side {
                    db: keyspace.db(ns),
                    prefix: String::new(),
                },
            };
            let (old_side, new_side) = (side(from), side(to));
            let result = fence::replicated(
                &self.config.endpoints[from],
                &self.config.endpoints[to],
                &prefix,
                (&old_side, &new_side),
                self.config.proxy.connect_timeout,
                deadline,
            )
            .await;
            end_step(began, result.as_ref().err().cloned());
            result.map_err(|e| ("fence", e))?;
        }
        if request.promote {
            let began = step("promote");
            let result = fence::promote(
                &self.config.endpoints[to],
                self.config.proxy.connect_timeout,
                deadline,
            )
            .await;
            end_step(began, result.as_ref().err().cloned());
            result.map_err(|e| ("promote", e))?;
        }
        Ok(())
    }
}
