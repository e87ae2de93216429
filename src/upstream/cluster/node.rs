//! One router's connection to one cluster node, run as its own task.
//!
//! The router hands it requests over a bounded channel, each with a oneshot for its reply.
//! The task opens the connection lazily (TLS and `AUTH` as configured), replays the
//! session's connection state first (answers swallowed), writes requests in order and
//! completes their oneshots in order as replies arrive. When the connection fails, every
//! request it holds is answered with the cause and the task ends; the router opens a new one
//! for the next request.

use crate::config::EndpointConfig;
use crate::resp::reply::ReplyScan;
use crate::stream::Stream;
use crate::upstream::UpstreamError;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
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

/// One request for a node.
pub struct Request {
    /// The bytes to write: one or more commands.
    pub bytes: Bytes,
    /// Leading replies to drop (`ASKING`, a held `MULTI`); the next one is the answer.
    pub swallow: u8,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Reply>,
}

/// The router's handle on a node task.
pub struct Node {
    /// Requests to the node.
    pub tx: mpsc::Sender<Request>,
}

/// Starts a node task for `address`. `state` is the session's connection state, replayed
/// first; `on_failure` is called once if the connection fails.
pub fn spawn(
    endpoint: Arc<EndpointConfig>,
    address: String,
    timeout: Duration,
    state: Vec<Bytes>,
    on_failure: impl FnOnce() + Send + 'static,
) -> Node {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        let mut task = Task {
            rx,
            in_flight: VecDeque::new(),
            scan: ReplyScan::new(),
            scanned: 0,
        };
        if let Err(cause) = task.run(&endpoint, &address, timeout, &state).await {
            let text: Arc<str> = Arc::from(format!(
                "ERR turnout: endpoint '{}' unavailable: {cause} (node {address})",
                endpoint.name
            ));
            tracing::warn!(endpoint = %endpoint.name, node = %address, cause = %cause, "cluster node connection failed");
            on_failure();
            task.fail(&text);
        }
    });
    Node { tx }
}

struct Task {
    rx: mpsc::Receiver<Request>,
    in_flight: VecDeque<(u8, oneshot::Sender<Reply>)>,
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
            .map_err(UpstreamError::Io)?;
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
                    stream.write_all(&out).await.map_err(UpstreamError::Io)?;
                    stream.flush().await.map_err(UpstreamError::Io)?;
                }
                read = stream.read_buf(&mut rbuf) => {
                    if read.map_err(UpstreamError::Io)? == 0 {
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
                // The router may have stopped waiting (session gone): nothing to do then.
                let _ = reply.send(Ok(frame));
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
        for (_, reply) in self.in_flight.drain(..) {
            let _ = reply.send(Err(text.clone()));
        }
        self.rx.close();
        while let Ok(request) = self.rx.try_recv() {
            let _ = request.reply.send(Err(text.clone()));
        }
    }
}
