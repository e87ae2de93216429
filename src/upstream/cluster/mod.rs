//! Cluster endpoints: a per-connection slot router behind an in-process pipe.
//!
//! [`open`] returns [`Stream::Pipe`]; a router task ([`router`]) owns the other end and
//! speaks for the whole cluster: it routes each request to the primary serving its keys'
//! slot ([`slots`]) over one lazily opened connection per node ([`node`]), splits and merges
//! multi-key commands ([`merge`]), follows `-MOVED` and `-ASK`, and writes replies back in
//! request order. So sessions, shadow lanes, the fence and probes treat a cluster exactly as
//! one server.
//!
//! The slot map is shared by every router of an endpoint ([`Cluster`]): readers load it
//! through an `ArcSwap` without a lock, and a `-MOVED` updates it with a read-copy-update, so
//! two routers applying redirects at once both keep theirs. A refresh task reloads it from
//! `CLUSTER SLOTS` every [`REFRESH_EVERY`] and on demand after a redirect or a node failure
//! (coalesced, at most one per [`REFRESH_MIN_GAP`]). The task ends when no router of the
//! endpoint is left. It never changes the endpoint's up/down state, which is the health
//! checker's ([`crate::health`]): a failed refresh is logged and the map kept.
//!
//! Connections opened while the endpoint has no map yet share one walk of the seeds (single
//! flight): the ones that waited for a walk that failed get its error rather than starting
//! their own.

pub mod merge;
pub mod node;
pub mod router;
pub mod slots;

use crate::config::{EndpointConfig, EndpointKind};
use crate::stream::Stream;
use crate::upstream::{health, UpstreamError};
use arc_swap::ArcSwap;
use slots::SlotMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Periodic map refresh.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Shortest time between two refreshes.
pub const REFRESH_MIN_GAP: Duration = Duration::from_millis(200);
/// Bytes buffered in each direction of the pipe.
pub const PIPE_BYTES: usize = 64 * 1024;

/// What every router of one cluster endpoint shares.
pub struct Cluster {
    /// The endpoint (name, credentials, TLS, seeds).
    pub endpoint: Arc<EndpointConfig>,
    /// The slot map now.
    pub map: ArcSwap<SlotMap>,
    /// Wakes the refresh task early.
    refresh: Notify,
    /// A node connection failed since the last refresh: an owner change is a failover.
    node_failed: AtomicBool,
    /// Connect timeout for refreshes.
    timeout: Duration,
    /// Held while a connection loads the first map; the last failed load (when it ended,
    /// its error), shared with the connections that waited for it.
    loading: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl Cluster {
    /// Asks for a map refresh soon (coalesced with others).
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Records that a node connection failed and asks for a refresh.
    pub fn node_failed(&self) {
        self.node_failed.store(true, Ordering::Relaxed);
        self.request_refresh();
    }

    /// Records a `-MOVED`: the slot is served by `address` now. The map is updated with a
    /// read-copy-update: a concurrent update (another router's redirect) is never lost.
    pub fn moved(&self, slot: u16, address: &str) {
        health::record(&self.endpoint.name, health::Event::Moved);
        self.map.rcu(|map| {
            if map.owner(slot) == Some(address) {
                Arc::clone(map)
            } else {
                Arc::new(map.with_owner(slot, address))
            }
        });
        self.request_refresh();
    }

    /// Loads the first map unless there is one; concurrent callers share one seed walk.
    async fn load_first(&self) -> Result<(), UpstreamError> {
        let asked = Instant::now();
        let mut last_failure = self.loading.lock().await;
        if !self.map.load().is_empty() {
            return Ok(());
        }
        if let Some((ended, text)) = last_failure.as_ref() {
            // It ended after this caller asked: this caller waited for it, so shares it.
            if *ended >= asked {
                return Err(UpstreamError::Repeated(text.clone()));
            }
        }
        match self.refresh_now().await {
            Ok(()) => {
                *last_failure = None;
                Ok(())
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }

    /// Loads the map from the known primaries, then the seeds: the first good answer wins.
    async fn fetch(&self) -> Result<SlotMap, UpstreamError> {
        let mut candidates: Vec<String> = self.map.load().nodes().to_vec();
        if let EndpointKind::Cluster { seeds } = &self.endpoint.kind {
            for seed in seeds {
                if !candidates.contains(seed) {
                    candidates.push(seed.clone());
                }
            }
        }
        let request = crate::resp::command(&[b"CLUSTER", b"SLOTS"]);
        let mut last = UpstreamError::Unsupported(format!(
            "endpoint '{}' has no cluster seeds",
            self.endpoint.name
        ));
        for address in candidates.iter().take(slots::MAX_NODES) {
            let attempt = async {
                let mut stream =
                    crate::upstream::open_node(&self.endpoint, address, self.timeout).await?;
                crate::upstream::exchange_limited(&mut stream, &request, node::MAX_REPLY).await
            };
            match tokio::time::timeout(self.timeout.saturating_mul(2), attempt).await {
                Ok(Ok(reply)) => match SlotMap::from_cluster_slots(&reply, address) {
                    Some(map) if !map.is_empty() => return Ok(map),
                    _ => {
                        last = UpstreamError::Unsupported(format!(
                            "{address} answered CLUSTER SLOTS with no slots: {}",
                            String::from_utf8_lossy(&reply).trim_end()
                        ))
                    }
                },
                Ok(Err(e)) => last = e,
                Err(_) => last = UpstreamError::ConnectTimeout(self.timeout),
            }
        }
        Err(last)
    }

    /// Fetches and installs a new map; records failovers.
    async fn refresh_now(&self) -> Result<(), UpstreamError> {
        let failed = self.node_failed.swap(false, Ordering::Relaxed);
        let fresh = self.fetch().await?;
        let old = self.map.load_full();
        if *old != fresh {
            let changes = old.changed_owners(&fresh);
            if failed && !changes.is_empty() {
                for (from, to) in &changes {
                    tracing::warn!(endpoint = %self.endpoint.name, from = %from, to = %to, "cluster slots changed primary after a node failure");
                    health::record(&self.endpoint.name, health::Event::Failover);
                }
            }
            self.map.store(Arc::new(fresh));
        }
        Ok(())
    }
}

/// Live clusters by endpoint name. Only [`open`] takes this lock, never a command.
static CLUSTERS: Mutex<Option<HashMap<String, Weak<Cluster>>>> = Mutex::new(None);

/// Opens a pipe to a new slot router for the cluster. `max_buffered` bounds the reply bytes
/// the router lets pile up behind a reply not yet due before it stops reading requests
/// (the connection's `[proxy] max_buffered_bytes`).
///
/// # Errors
/// No seed or known node answered `CLUSTER SLOTS` with a usable map.
pub async fn open(
    endpoint: &EndpointConfig,
    timeout: Duration,
    max_buffered: usize,
) -> Result<Stream, UpstreamError> {
    let cluster = shared(endpoint, timeout);
    if cluster.map.load().is_empty() {
        cluster.load_first().await?;
    }
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(router::run(
        cluster,
        Arc::new(endpoint.clone()),
        theirs,
        timeout,
        max_buffered,
    ));
    Ok(Stream::Pipe(ours))
}

/// The endpoint's shared state, started with its refresh task on first use.
fn shared(endpoint: &EndpointConfig, timeout: Duration) -> Arc<Cluster> {
    let mut guard = match CLUSTERS.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let clusters = guard.get_or_insert_with(HashMap::new);
    if let Some(live) = clusters.get(&endpoint.name).and_then(Weak::upgrade) {
        if live.endpoint.kind == endpoint.kind {
            return live;
        }
    }
    let cluster = Arc::new(Cluster {
        endpoint: Arc::new(endpoint.clone()),
        map: ArcSwap::from_pointee(SlotMap::default()),
        refresh: Notify::new(),
        node_failed: AtomicBool::new(false),
        timeout,
        loading: tokio::sync::Mutex::new(None),
    });
    clusters.insert(endpoint.name.clone(), Arc::downgrade(&cluster));
    tokio::spawn(refresh_loop(Arc::downgrade(&cluster)));
    cluster
}

/// Refreshes the map every [`REFRESH_EVERY`] or when asked, until no router holds the cluster.
async fn refresh_loop(cluster: Weak<Cluster>) {
    loop {
        let Some(live) = cluster.upgrade() else {
            return;
        };
        let asked = {
            let notified = live.refresh.notified();
            tokio::time::timeout(REFRESH_EVERY, notified).await.is_ok()
        };
        // Up or down is the health checker's to say (`crate::health`): a refresh that fails
        // leaves the map as it was and is only logged.
        if let Err(e) = live.refresh_now().await {
            tracing::warn!(endpoint = %live.endpoint.name, cause = %e, asked, "cluster slot map refresh failed");
        }
        drop(live);
        tokio::time::sleep(REFRESH_MIN_GAP).await;
    }
}
