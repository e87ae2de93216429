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
//! through an `ArcSwap` without a lock; a refresh task reloads it from `CLUSTER SLOTS` every
//! [`REFRESH_EVERY`] and on demand after a redirect or a node failure (coalesced, at most
//! one per [`REFRESH_MIN_GAP`]). The task ends when no router of the endpoint is left.

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
use std::time::Duration;
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

    /// Records a `-MOVED`: the slot is served by `address` now.
    pub fn moved(&self, slot: u16, address: &str) {
        health::record(&self.endpoint.name, health::Event::Moved);
        let map = self.map.load();
        if map.owner(slot) != Some(address) {
            self.map.store(Arc::new(map.with_owner(slot, address)));
        }
        self.request_refresh();
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
            match tokio::time::timeout(self.timeout * 2, attempt).await {
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

/// Opens a pipe to a new slot router for the cluster.
///
/// # Errors
/// No seed or known node answered `CLUSTER SLOTS` with a usable map.
pub async fn open(endpoint: &EndpointConfig, timeout: Duration) -> Result<Stream, UpstreamError> {
    let cluster = shared(endpoint, timeout);
    if cluster.map.load().is_empty() {
        cluster.refresh_now().await?;
        health::set_up(&endpoint.name, Ok(()));
    }
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(router::run(
        cluster,
        Arc::new(endpoint.clone()),
        theirs,
        timeout,
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
        if let Err(e) = live.refresh_now().await {
            tracing::warn!(endpoint = %live.endpoint.name, cause = %e, asked, "cluster slot map refresh failed");
            health::set_up(&live.endpoint.name, Err(e.to_string()));
        } else {
            health::set_up(&live.endpoint.name, Ok(()));
        }
        drop(live);
        tokio::time::sleep(REFRESH_MIN_GAP).await;
    }
}
