//! Sentinel endpoints: which server is the primary now, and following it through failovers.
//!
//! The primary of a Sentinel endpoint is found with `SENTINEL GET-MASTER-ADDR-BY-NAME`,
//! asking the configured sentinels in order, and remembered per endpoint name in a
//! process-wide table ([`Watch`]), so that opening a connection costs no sentinel round trip.
//! [`open`] connects to the remembered primary and checks with `ROLE` that it still is one;
//! if not (a failover in progress, stale information) it asks the sentinels again, within the
//! connect timeout.
//!
//! A [`monitor`] task per endpoint keeps the table fresh: it listens for `+switch-master` on a
//! sentinel's Pub/Sub and rechecks periodically. Every change of primary bumps the endpoint's
//! **generation**; a session link remembers the generation its connection was opened under and
//! drops a connection of an older one before queueing a command on it (one atomic load, see
//! [`generation`]), so commands reach the new primary without the client reconnecting.

pub mod monitor;

pub use monitor::Monitors;

use super::{exchange, UpstreamError};
use crate::config::{EndpointConfig, EndpointKind};
use crate::stream::Stream;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most connection attempts [`open`] makes (each to the primary the sentinels name then).
pub const MAX_OPEN_ATTEMPTS: usize = 3;
/// Pause between [`open`]'s attempts, so a failover in progress can settle.
const OPEN_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// A discovery's outcome is shared with every connection that asks within this time after
/// it ended: while the primary is down, N clients cost the sentinels one discovery per
/// gap, not N per command.
pub const DISCOVERY_MIN_GAP: Duration = Duration::from_millis(100);

/// What turnout knows about one Sentinel endpoint's primary.
#[derive(Debug, Default)]
pub struct Watch {
    /// The primary's `host:port`, once known.
    primary: Mutex<Option<String>>,
    /// Bumped on every change of primary after the first.
    generation: Arc<AtomicU64>,
    /// The last discovery for a connection: when it ended and the address it found (or why
    /// it failed). Held while one runs, so that concurrent connections share it.
    discovery: tokio::sync::Mutex<Option<(Instant, Result<String, String>)>>,
}

impl Watch {
    fn lock(&self) -> MutexGuard<'_, Option<String>> {
        // A panic while holding it cannot leave the address half-written: keep using it.
        self.primary.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The primary's address, if known.
    pub fn primary(&self) -> Option<String> {
        self.lock().clone()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records `address` as the primary (learnt `via` a switch message, a recheck or a
    /// connection attempt). Returns whether it changed. A change from a known primary bumps
    /// the generation and counts as a failover.
    pub fn set(&self, endpoint: &str, address: &str, via: &'static str) -> bool {
        let mut primary = self.lock();
        if primary.as_deref() == Some(address) {
            return false;
        }
        let previous = primary.replace(address.to_string());
        if let Some(previous) = &previous {
            // Bumped under the lock, after the address: whoever sees the new generation
            // finds the new primary.
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            tracing::warn!(endpoint = %endpoint, from = %previous, to = %address, via, generation, "primary changed");
        } else {
            tracing::info!(endpoint = %endpoint, primary = %address, via, "primary discovered");
        }
        drop(primary);
        super::health::set_primary(endpoint, address);
        true
    }
}

/// Per endpoint name.
static WATCHES: Mutex<Option<HashMap<String, Arc<Watch>>>> = Mutex::new(None);

/// The watch of the endpoint called `name` (created empty on first use).
pub fn watch(name: &str) -> Arc<Watch> {
    let mut guard = WATCHES.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// The generation counter a session link follows: `Some` for a Sentinel endpoint only, so
/// that other endpoints pay nothing.
pub fn generation(endpoint: &EndpointConfig) -> Option<Arc<AtomicU64>> {
    match endpoint.kind {
        EndpointKind::Sentinel { .. } => Some(watch(&endpoint.name).generation.clone()),
        _ => None,
    }
}

/// Opens a connection to the primary the sentinels name, checked with `ROLE`. If it is not a
/// primary (a failover in progress) or cannot be reached, the sentinels are asked again, up to
/// [`MAX_OPEN_ATTEMPTS`] times within `timeout`.
///
/// # Errors
/// [`UpstreamError::Sentinel`] when no sentinel names a primary, [`UpstreamError::NotPrimary`]
/// when the named server is a replica, or what [`super::open_node`] returns.
pub async fn open(endpoint: &EndpointConfig, timeout: Duration) -> Result<Stream, UpstreamError> {
    let watch = watch(&endpoint.name);
    // Config caps timeouts, but an instant must never overflow whatever the caller passes.
    let now = Instant::now();
    let deadline = now.checked_add(timeout).unwrap_or(now);
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut attempt = 1;
    let mut cause = match watch.primary() {
        Some(address) => match connect_primary(endpoint, &address, timeout).await {
            Ok(stream) => return Ok(stream),
            Err(cause) => {
                tracing::debug!(endpoint = %endpoint.name, primary = %address, cause = %cause, "primary unusable; asking the sentinels again");
                cause
            }
        },
        None => {
            attempt = 0;
            UpstreamError::Sentinel("not asked yet".to_string())
        }
    };
    loop {
        if attempt > 0 {
            if attempt >= MAX_OPEN_ATTEMPTS || left() <= OPEN_RETRY_PAUSE {
                return Err(cause);
            }
            tokio::time::sleep(OPEN_RETRY_PAUSE).await;
        }
        attempt += 1;
        cause = match refresh(endpoint, &watch, left().max(OPEN_RETRY_PAUSE)).await {
            Ok(stream) => return Ok(stream),
            Err(cause) => cause,
        };
    }
}

/// Opens a connection to `address` and checks that it is a primary.
async fn connect_primary(
    endpoint: &EndpointConfig,
    address: &str,
    timeout: Duration,
) -> Result<Stream, UpstreamError> {
    let mut stream = super::open_node(endpoint, address, timeout).await?;
    let reply = tokio::time::timeout(
        timeout,
        exchange(&mut stream, &crate::resp::command(&[b"ROLE"])),
    )
    .await
    .map_err(|_| UpstreamError::ConnectTimeout(timeout))??;
    match role(&reply) {
        Role::Primary | Role::Unknown => Ok(stream),
        Role::Other(role) => Err(UpstreamError::NotPrimary {
            address: address.to_string(),
            role,
        }),
    }
}

/// What a `ROLE` reply says. One rule for every caller (opening a connection, the health
/// checker): only `master` is a primary, and a `-NOPERM` refusal (an ACL user without `ROLE`)
/// leaves the sentinels' word standing.
#[derive(Debug, PartialEq, Eq)]
pub enum Role {
    /// `master`.
    Primary,
    /// `slave`, `sentinel`, or something unexpected (the reply, for messages).
    Other(String),
    /// `ROLE` was refused (`-NOPERM`: an ACL user without it): the sentinels are trusted.
    Unknown,
}

/// Reads a `ROLE` reply.
pub fn role(reply: &[u8]) -> Role {
    if reply.starts_with(b"-NOPERM") {
        return Role::Unknown;
    }
    let first = crate::resp::reply::elements(reply)
        .and_then(|items| items.first().and_then(|r| crate::resp::reply::bulk(r)))
        .map(|r| String::from_utf8_lossy(r).into_owned());
    match first {
        Some(role) if role == "master" => Role::Primary,
        Some(role) => Role::Other(role),
        None => Role::Other(String::from_utf8_lossy(reply).trim_end().to_string()),
    }
}

/// Asks the sentinels for the primary, checks it with `ROLE`, records it and returns a
/// connection to it.
///
/// # Errors
/// As [`find_primary`].
async fn refresh(
    endpoint: &EndpointConfig,
    watch: &Watch,
    timeout: Duration,
) -> Result<Stream, UpstreamError> {
    // Single flight: whoever waited here while another connection's discovery ran takes its
    // outcome instead of asking the sentinels again.
    let mut last = watch.discovery.lock().await;
    if let Some((ended, outcome)) = last.as_ref() {
        if ended.elapsed() < DISCOVERY_MIN_GAP {
            return match outcome {
                Ok(address) => connect_primary(endpoint, address, timeout).await,
                Err(cause) => Err(UpstreamError::Repeated(cause.clone())),
            };
        }
    }
    let found = find_primary(endpoint, None, timeout).await;
    *last = Some((
        Instant::now(),
        match &found {
            Ok((address, _)) => Ok(address.clone()),
            Err(cause) => Err(cause.to_string()),
        },
    ));
    drop(last);
    let (address, stream) = found?;
    let stream = match stream {
        Some(stream) => stream,
        None => connect_primary(endpoint, &address, timeout).await?,
    };
    watch.set(&endpoint.name, &address, "sentinel query");
    Ok(stream)
}

/// Asks the endpoint's sentinels in order for the primary's address and returns the first
/// one named that is `known` (the primary already followed: nothing to check) or that
/// answers `ROLE` as a primary, with the connection opened to check it. A sentinel that
/// lags behind a failover names the old primary, now a replica: its answer is passed over
/// for the next sentinel's, so turnout never flips back to a replica. Each request is
/// bounded by `timeout`.
///
/// # Errors
/// What connecting to the last server named returned (such as
/// [`UpstreamError::NotPrimary`]) when sentinels named servers but none is a primary;
/// [`UpstreamError::Sentinel`] with every sentinel's answer when none names one;
/// [`UpstreamError::Unsupported`] for an endpoint that is not a Sentinel one.
pub async fn find_primary(
    endpoint: &EndpointConfig,
    known: Option<&str>,
    timeout: Duration,
) -> Result<(String, Option<Stream>), UpstreamError> {
    let EndpointKind::Sentinel {
        sentinels,
        master_name,
        ..
    } = &endpoint.kind
    else {
        return Err(UpstreamError::Unsupported(format!(
            "endpoint '{}' is not a Sentinel endpoint",
            endpoint.name
        )));
    };
    let mut causes = Vec::with_capacity(sentinels.len());
    let mut checked: Vec<String> = Vec::new();
    let mut unusable = None;
    for sentinel in sentinels {
        let address = match ask(endpoint, sentinel, master_name, timeout).await {
            Ok(address) => address,
            Err(cause) => {
                causes.push(format!("{sentinel}: {cause}"));
                continue;
            }
        };
        if known == Some(address.as_str()) {
            return Ok((address, None));
        }
        if checked.contains(&address) {
            continue;
        }
        match connect_primary(endpoint, &address, timeout).await {
            Ok(stream) => return Ok((address, Some(stream))),
            Err(cause) => {
                tracing::debug!(endpoint = %endpoint.name, sentinel = %sentinel, named = %address, cause = %cause, "a sentinel names a server that is not a usable primary");
                checked.push(address);
                unusable = Some(cause);
            }
        }
    }
    Err(unusable.unwrap_or_else(|| {
        UpstreamError::Sentinel(format!(
            "no sentinel knows master '{master_name}' ({})",
            causes.join("; ")
        ))
    }))
}

/// Asks one sentinel for the primary's address.
async fn ask(
    endpoint: &EndpointConfig,
    sentinel: &str,
    master_name: &str,
    timeout: Duration,
) -> Result<String, String> {
    let request = crate::resp::command(&[
        b"SENTINEL",
        b"GET-MASTER-ADDR-BY-NAME",
        master_name.as_bytes(),
    ]);
    let reply = async {
        let mut stream = connect_sentinel(endpoint, sentinel, timeout).await?;
        exchange(&mut stream, &request).await
    };
    let reply = tokio::time::timeout(timeout, reply)
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(timeout).to_string())?
        .map_err(|e| e.to_string())?;
    master_address(&reply)
}

/// Opens a connection to a sentinel, over TLS when the endpoint uses it, authenticated with
/// the endpoint's sentinel credentials when it has them.
///
/// # Errors
/// As [`super::connect`], plus TLS failures and [`UpstreamError::Auth`].
pub async fn connect_sentinel(
    endpoint: &EndpointConfig,
    sentinel: &str,
    timeout: Duration,
) -> Result<Stream, UpstreamError> {
    let tcp = super::connect(sentinel, timeout).await?;
    let mut stream = match &endpoint.tls {
        None => Stream::Tcp(tcp),
        Some(settings) => super::tls::wrap(endpoint, settings, sentinel, tcp, timeout).await?,
    };
    if let EndpointKind::Sentinel {
        sentinel_credentials: Some(credentials),
        ..
    } = &endpoint.kind
    {
        super::auth(&mut stream, credentials, timeout).await?;
    }
    Ok(stream)
}

/// The `host:port` in a `GET-MASTER-ADDR-BY-NAME` reply.
fn master_address(reply: &[u8]) -> Result<String, String> {
    let text = || String::from_utf8_lossy(reply).trim_end().to_string();
    if let Some(error) = reply.strip_prefix(b"-") {
        return Err(format!(
            "refused: {}",
            String::from_utf8_lossy(error).trim_end()
        ));
    }
    if reply.starts_with(b"*-1") || reply.starts_with(b"_") || reply.starts_with(b"$-1") {
        return Err("master unknown".to_string());
    }
    let items = crate::resp::reply::elements(reply)
        .ok_or_else(|| format!("unexpected reply {:?}", text()))?;
    let field = |i: usize| {
        items
            .get(i)
            .and_then(|r| crate::resp::reply::bulk(r))
            .and_then(|b| std::str::from_utf8(b).ok())
    };
    match (field(0), field(1).and_then(|p| p.parse::<u16>().ok())) {
        (Some(host), Some(port)) if host.contains(':') => Ok(format!("[{host}]:{port}")),
        (Some(host), Some(port)) => Ok(format!("{host}:{port}")),
        _ => Err(format!("unexpected reply {:?}", text())),
    }
}

#[cfg(test)]
mod tests;
