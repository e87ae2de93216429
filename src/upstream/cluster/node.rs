//! One router's connection to one cluster node, run as its own task.
//!
//! The router hands it requests over a bounded channel, each with a oneshot for its reply.
//! The task opens the connection lazily (TLS and `AUTH` as configured), replays the
//! session's connection state first (answers swallowed), writes requests in order (every
//! write flushed, so TLS sends what it buffered) and completes their oneshots in order as
//! replies arrive, each tagged with the node's address (an empty-host redirect names a port
//! on the host that answered). The bytes of replies handed over and not yet taken by the
//! router are counted in a counter the router shares, which bounds how much it lets pile
//! up. When the connection fails, every request it holds is answered with the cause
//! ([`failure_text`]) and the task ends; the router opens a new one for the next request.

use crate::config::EndpointConfig;
use crate::resp::reply::ReplyScan;
use crate::stream::Stream;
use crate::upstream::UpstreamError;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Requests queued for one node before the router waits.
pub const CHANNEL: usize = 1024;
/// Requests written to a node and not yet answered before the task stops taking more.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Largest single reply accepted from a node (Redis's own `proto-max-bulk-len`).
pub const MAX_REPLY: usize = 512 * 1024 * 1024;

/// A reply, or why there is none: the cause as the client will read it.
pub type Reply = Result<Bytes, Arc<str>>;

/// A reply and the address of the node it came from.
pub struct Answer {
    /// The node's address (`host:port`) as the router reached it.
    pub from: Arc<str>,
    /// The reply.
    pub reply: Reply,
}

/// One request for a node.
pub struct Request {
    /// The bytes to write: one or more commands.
    pub bytes: Bytes,
    /// Leading replies to drop (`ASKING`, a held `MULTI`); the next one is the answer.
    pub swallow: u8,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Answer>,
}

/// The text of the error reply for requests a node connection could not serve: the
/// endpoint's usual wording ([`UpstreamError::client_text`], so TLS failures read
/// `endpoint 'NAME' TLS: …`), then the node.
pub fn failure_text(endpoint: &str, cause: &UpstreamError, address: &str) -> Arc<str> {
    Arc::from(format!("{} (node {address})", cause.client_text(endpoint)))
}

/// The router's handle on a node task.
pub struct Node {
    /// Requests to the node.
    pub tx: mpsc::Sender<Request>,
}

/// Starts a node task for `address`. `state` is the session's connection state, replayed
/// first; `buffered` counts the bytes of replies handed to the router and not yet taken;
/// `on_failure` is called once if the connection fails.
pub fn spawn(
    endpoint: Arc<EndpointConfig>,
    address: String,
    timeout: Duration,
    state: Vec<Bytes>,
    buffered: Arc<AtomicUsize>,
    on_failure: impl FnOnce() + Send + 'static,
) -> Node {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        let mut task = Task {
            rx,
            address: Arc::from(address.as_str()),
            buffered,
            in_flight: VecDeque::new(),
            scan: ReplyScan::new(),
            scanned: 0,
        };
        if let Err(cause) = task.run(&endpoint, &address, timeout, &state).await {
            let text = failure_text(&endpoint.name, &cause, &address);
            tracing::warn!(endpoint = %endpoint.name, node = %address, cause = %cause, "cluster node connection failed");
            on_failure();
            task.fail(&text);
        }
    });
    Node { tx }
}

struct Task {
    rx: mpsc::Receiver<Request>,
    /// The node's address, on every answer.
    address: Arc<str>,
    /// Bytes of replies handed to the router and not taken yet (shared with the router).
    buffered: Arc<AtomicUsize>,
    in_flight: VecDeque<(u8, oneshot::Sender<Answer>)>,
    /// The reply being read: scanned incrementally, so a large reply arriving in many reads
    /// is not rescanned from its start each time.
    scan: ReplyScan,
    /// Bytes of `rbuf` the scan has covered.
    scanned: usize,
}

impl Task {
    async fn run(
        &mut self,
        endpoint: &EndpointConfig,
        address: &str,
        timeout: Duration,
        state: &[Bytes],
    ) -> Result<(), UpstreamError> {
        // Open only once there is something to send: a router that never routes here costs
        // no connection.
        let Some(first) = self.rx.recv().await else {
            return Ok(());
        };
        self.in_flight.push_back((first.swallow, first.reply));
        let mut stream = crate::upstream::open_node(endpoint, address, timeout).await?;
        for command in state {
            let reply =
                tokio::time::timeout(timeout, crate::upstream::exchange(&mut stream, command))
                    .await
                    .map_err(|_| UpstreamError::ConnectTimeout(timeout))??;
            if crate::resp::is_error(&reply) {
                let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
                return Err(UpstreamError::StateReplay(text));
            }
        }
        stream
            .write_all(&first.bytes)
            .await
            .map_err(UpstreamError::io)?;
        // TLS holds back what it encrypted until flushed.
        stream.flush().await.map_err(UpstreamError::io)?;
        self.pump(&mut stream).await
    }

    /// Writes requests and delivers replies until the router goes away or the connection fails.
    async fn pump(&mut self, stream: &mut Stream) -> Result<(), UpstreamError> {
        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        let mut out = BytesMut::new();
        loop {
            let taking = self.in_flight.len() < MAX_IN_FLIGHT;
            tokio::select! {
                request = self.rx.recv(), if taking => {
                    let Some(request) = request else {
                        return Ok(());
                    };
                    out.clear();
                    out.extend_from_slice(&request.bytes);
                    self.in_flight.push_back((request.swallow, request.reply));
                    // Take what else is queued so one write carries a pipeline.
                    while self.in_flight.len() < MAX_IN_FLIGHT && out.len() < 64 * 1024 {
                        let Ok(more) = self.rx.try_recv() else { break };
                        out.extend_from_slice(&more.bytes);
                        self.in_flight.push_back((more.swallow, more.reply));
                    }
                    stream.write_all(&out).await.map_err(UpstreamError::io)?;
                    stream.flush().await.map_err(UpstreamError::io)?;
                }
                read = stream.read_buf(&mut rbuf) => {
                    if read.map_err(UpstreamError::io)? == 0 {
                        return Err(UpstreamError::Closed);
                    }
                    self.deliver(&mut rbuf)?;
                }
            }
        }
    }

    /// Hands every complete reply in `rbuf` to its request.
    fn deliver(&mut self, rbuf: &mut BytesMut) -> Result<(), UpstreamError> {
        loop {
            let rest = rbuf.get(self.scanned..).unwrap_or_default();
            self.scanned += self.scan.advance(rest).map_err(UpstreamError::Protocol)?;
            if !self.scan.is_done() {
                break;
            }
            let frame = rbuf.split_to(self.scanned).freeze();
            self.scanned = 0;
            self.scan = ReplyScan::new();
            if frame.first() == Some(&b'>') {
                // A RESP3 push answers no request (subscriptions do not use node tasks).
                continue;
            }
            let Some(front) = self.in_flight.front_mut() else {
                return Err(UpstreamError::Protocol(
                    crate::resp::ProtocolError::ReplyType(frame.first().copied().unwrap_or(b'?')),
                ));
            };
            if front.0 > 0 {
                front.0 -= 1;
                continue;
            }
            if let Some((_, reply)) = self.in_flight.pop_front() {
                // Counted before it is handed over, so the router never takes away more than
                // was added; a reply nobody waits for (session gone, a transaction's held
                // MULTI) is not counted.
                let len = frame.len();
                self.buffered.fetch_add(len, Ordering::Relaxed);
                let answer = Answer {
                    from: self.address.clone(),
                    reply: Ok(frame),
                };
                if reply.send(answer).is_err() {
                    self.buffered.fetch_sub(len, Ordering::Relaxed);
                }
            }
        }
        if rbuf.len() > MAX_REPLY {
            return Err(UpstreamError::Io(std::io::Error::other("oversized reply")));
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(16 * 1024);
        }
        Ok(())
    }

    /// Answers every request held or queued with `text`.
    fn fail(&mut self, text: &Arc<str>) {
        let answer = |text: &Arc<str>| Answer {
            from: self.address.clone(),
            reply: Err(text.clone()),
        };
        for (_, reply) in self.in_flight.drain(..) {
            let _ = reply.send(answer(text));
        }
        self.rx.close();
        while let Ok(request) = self.rx.try_recv() {
            let _ = request.reply.send(answer(text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_failures_read_like_the_endpoints_own() {
        assert_eq!(
            &*failure_text(
                "new",
                &UpstreamError::Tls("invalid peer certificate: UnknownIssuer".into()),
                "10.0.0.1:7000"
            ),
            "ERR turnout: endpoint 'new' TLS: invalid peer certificate: UnknownIssuer (node 10.0.0.1:7000)"
        );
        assert_eq!(
            &*failure_text("new", &UpstreamError::Closed, "10.0.0.1:7000"),
            "ERR turnout: endpoint 'new' unavailable: connection closed by the endpoint (node 10.0.0.1:7000)"
        );
    }
}
