//! Periodic endpoint health checks: one task per endpoint, every `[health] interval`.
//!
//! A check asks what a client needs from the endpoint:
//!
//! - standalone: connect ([`upstream::open`]) and `PING`;
//! - Sentinel: connect to the primary the sentinels name ([`upstream::open`] resolves it),
//!   `PING`, and `ROLE` must say `master`;
//! - cluster: connect to the first seed that answers ([`upstream::open_node`]), `PING`, and
//!   `CLUSTER INFO` must say `cluster_state:ok`.
//!
//! Each check is bounded by `[health] timeout`, and endpoints never wait for each other. A
//! connection that works is kept for the next check; after a failure the check reconnects
//! once at once (a restarted server or a Sentinel failover leave a dead or demoted
//! connection behind), and otherwise at the next interval. A Sentinel endpoint's checker also
//! reconnects when the registry's primary changes (another connection learnt of a failover). Results go to the registry in
//! [`crate::upstream::health`], which `/readyz`, `/v1/endpoints` and the metrics read.
//! Transitions are logged once each (down at warn, up again at info), not every failed check.

use crate::config::{Config, EndpointConfig, EndpointKind};
use crate::stream::Stream;
use crate::upstream::sentinel::Role;
use crate::upstream::{self, health};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Longest piece of an unexpected reply quoted in an error.
const QUOTE_MAX: usize = 120;

/// Registers every endpoint's series and starts one checker task per endpoint. The tasks
/// end when shutdown begins.
pub fn start(config: &Config, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    health::init(config.endpoints.iter().map(|e| e.name.as_str()));
    config
        .endpoints
        .iter()
        .map(|endpoint| {
            let checker = Checker::new(endpoint.clone(), config.health.timeout);
            tokio::spawn(checker.run(config.health.interval, shutdown.clone()))
        })
        .collect()
}

/// Checks an endpoint once on a new connection and records the result (for `/readyz` before
/// the periodic checker has reported).
///
/// # Errors
/// Why the endpoint is not healthy.
pub async fn check_once(endpoint: &EndpointConfig, timeout: Duration) -> Result<(), String> {
    let result = Checker::new(endpoint.clone(), timeout).check().await;
    health::set_up(&endpoint.name, result.clone());
    result
}

/// Why a check failed, and whether the connection is still worth keeping.
#[derive(Debug)]
struct Fault {
    message: String,
    /// The connection is broken, or points at the wrong server.
    reconnect: bool,
}

impl Fault {
    fn broken(message: impl Into<String>) -> Self {
        Fault {
            message: message.into(),
            reconnect: true,
        }
    }

    fn answered(message: impl Into<String>) -> Self {
        Fault {
            message: message.into(),
            reconnect: false,
        }
    }
}

/// One endpoint's checker: its kept connection and the last outcome it logged.
struct Checker {
    endpoint: EndpointConfig,
    timeout: Duration,
    connection: Option<Stream>,
    /// The primary the registry named when the kept connection was opened.
    connected_primary: Option<String>,
    last_up: Option<bool>,
}

impl Checker {
    fn new(endpoint: EndpointConfig, timeout: Duration) -> Self {
        Checker {
            endpoint,
            timeout,
            connection: None,
            connected_primary: None,
            last_up: None,
        }
    }

    async fn run(mut self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        if let EndpointKind::Standalone { address } = &self.endpoint.kind {
            health::set_primary(&self.endpoint.name, address);
        }
        let mut ticks = tokio::time::interval(interval);
        // A slow check delays the next one instead of causing a burst to catch up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let round = async {
                ticks.tick().await;
                let result = self.check().await;
                self.report(result);
            };
            tokio::select! {
                () = round => {}
                () = crate::shutdown::wait(&mut shutdown) => return,
            }
        }
    }

    /// One check, bounded by the timeout.
    async fn check(&mut self) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.attempt()).await {
            Ok(result) => result,
            Err(_) => {
                self.connection = None;
                Err(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ))
            }
        }
    }

    /// Probes on the kept connection; if that breaks, once more on a new one.
    async fn attempt(&mut self) -> Result<(), String> {
        if matches!(self.endpoint.kind, EndpointKind::Sentinel { .. })
            && health::primary(&self.endpoint.name) != self.connected_primary
        {
            // Another connection learnt of a new primary (even one the old primary has not
            // heard of, behind a partition): follow it.
            self.connection = None;
        }
        if let Some(mut stream) = self.connection.take() {
            match probe(&self.endpoint.kind, &mut stream).await {
                Ok(()) => {
                    self.connection = Some(stream);
                    return Ok(());
                }
                Err(fault) if !fault.reconnect => {
                    self.connection = Some(stream);
                    return Err(fault.message);
                }
                Err(fault) => {
                    tracing::debug!(endpoint = %self.endpoint.name, cause = %fault.message, "health check connection failed; reconnecting");
                }
            }
        }
        let mut stream = self.connect().await?;
        self.connected_primary = health::primary(&self.endpoint.name);
        match probe(&self.endpoint.kind, &mut stream).await {
            Ok(()) => {
                self.connection = Some(stream);
                Ok(())
            }
            Err(fault) => {
                if !fault.reconnect {
                    self.connection = Some(stream);
                }
                Err(fault.message)
            }
        }
    }

    async fn connect(&self) -> Result<Stream, String> {
        let EndpointKind::Cluster { seeds } = &self.endpoint.kind else {
            return upstream::open(&self.endpoint, self.timeout)
                .await
                .map_err(|e| e.to_string());
        };
        let mut errors = Vec::with_capacity(seeds.len());
        for seed in seeds {
            match upstream::open_node(&self.endpoint, seed, self.timeout).await {
                Ok(stream) => return Ok(stream),
                Err(e) => errors.push(format!("{seed}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// Records a result, logging only changes.
    fn report(&mut self, result: Result<(), String>) {
        let name = &self.endpoint.name;
        match (&result, self.last_up) {
            (Err(cause), None | Some(true)) => {
                tracing::warn!(endpoint = %name, cause = %cause, "endpoint is down");
            }
            (Ok(()), Some(false)) => tracing::info!(endpoint = %name, "endpoint is up again"),
            (Ok(()), None) => tracing::debug!(endpoint = %name, "endpoint is up"),
            _ => {}
        }
        self.last_up = Some(result.is_ok());
        health::set_up(name, result);
    }
}

/// Asks what the endpoint's kind needs on an open connection.
async fn probe(kind: &EndpointKind, stream: &mut Stream) -> Result<(), Fault> {
    let reply = ask(stream, &[b"PING"]).await?;
    if reply != b"+PONG\r\n" {
        return Err(Fault::answered(format!("PING answered {}", quote(&reply))));
    }
    match kind {
        EndpointKind::Standalone { .. } => Ok(()),
        EndpointKind::Sentinel { .. } => {
            let reply = ask(stream, &[b"ROLE"]).await?;
            // The rule connections are opened by: an ACL user without ROLE trusts the
            // sentinels rather than never being ready.
            match upstream::sentinel::role(&reply) {
                Role::Primary | Role::Unknown => Ok(()),
                // The sentinels may name another primary now: ask them again.
                Role::Other(_) => Err(Fault::broken(format!(
                    "ROLE answered {} instead of master",
                    quote(&reply)
                ))),
            }
        }
        EndpointKind::Cluster { .. } => {
            let reply = ask(stream, &[b"CLUSTER", b"INFO"]).await?;
            match cluster_state(&reply) {
                Some(b"ok") => Ok(()),
                Some(state) => Err(Fault::answered(format!("cluster_state:{}", quote(state)))),
                None => Err(Fault::answered(format!(
                    "CLUSTER INFO answered {}",
                    quote(&reply)
                ))),
            }
        }
    }
}

async fn ask(stream: &mut Stream, args: &[&[u8]]) -> Result<Vec<u8>, Fault> {
    upstream::exchange(stream, &crate::resp::command(args))
        .await
        .map_err(|e| Fault::broken(e.to_string()))
}

/// The `cluster_state` field of a `CLUSTER INFO` reply.
fn cluster_state(reply: &[u8]) -> Option<&[u8]> {
    let text = crate::resp::reply::bulk(reply)?;
    text.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.strip_prefix(b"cluster_state:")
    })
}

/// A reply for an error message: printable, one line, bounded.
fn quote(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\r', '\n']);
    let mut out: String = text
        .chars()
        .take(QUOTE_MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > QUOTE_MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_state_is_found_in_the_info_text() {
        let info = b"cluster_enabled:1\r\ncluster_state:fail\r\ncluster_slots_assigned:0\r\n";
        let reply = [format!("${}\r\n", info.len()).as_bytes(), info, b"\r\n"].concat();
        assert_eq!(cluster_state(&reply), Some(&b"fail"[..]));
        assert_eq!(
            cluster_state(b"$16\r\ncluster_state:ok\r\n"),
            Some(&b"ok"[..])
        );
        assert_eq!(
            cluster_state(b"-ERR This instance has cluster support disabled\r\n"),
            None
        );
    }

    #[test]
    fn quoted_replies_are_one_bounded_line() {
        assert_eq!(quote(b"-LOADING busy\r\n"), "-LOADING busy");
        let long = vec![b'x'; 500];
        let quoted = quote(&long);
        assert_eq!(quoted.chars().count(), QUOTE_MAX + 1);
        assert_eq!(quote(b"a\r\nb\xff"), "a  b\u{fffd}");
    }
}
