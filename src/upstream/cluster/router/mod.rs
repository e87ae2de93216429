//! The per-connection slot router: one task per pipe, speaking for the whole cluster.
//!
//! It reads complete requests from the pipe, picks a node for each (the primary of its keys'
//! slot; a fixed node for keyless commands, so their order holds), and keeps a bounded FIFO
//! of pending entries, each waiting for one reply per part. Only the FIFO's head is awaited
//! ([`reply`]): its `-MOVED` or `-ASK` is followed there (at most [`MAX_REDIRECTS`] times,
//! then a turnout error naming the loop), so a resent command never overtakes an earlier
//! one, and newer requests for a slot whose owner changed are held back until the older
//! ones are answered ([`order`]). Finished entries are merged ([`super::merge`]) and written
//! back in request order.
//!
//! Memory is bounded twice: at most [`MAX_PENDING`] entries, and at most `max_buffered`
//! bytes (the connection's `[proxy] max_buffered_bytes`) of replies received for entries
//! not yet due. Past either bound the router stops reading requests, which pushes back on
//! the session through the pipe; nothing is dropped, and requests already read resume as
//! soon as there is room again.
//!
//! A transaction is pinned to one node: the node of WATCH's keys, else of the first keyed
//! command after MULTI. MULTI is answered `+OK` at once, keyless commands before the first
//! keyed one `+QUEUED`, and they are sent when that node is known (EXEC with no keyed command
//! runs on the keyless node). Replies inside a transaction are never
//! redirected: the node's own answer (and EXEC's `-EXECABORT`) reaches the client.

mod order;
mod pubsub;
mod redirect;
mod reply;
mod state;
mod transaction;

use super::merge::{self, Merge, Part};
use super::node::{self, Answer, Node};
use super::{slots, Cluster};
use crate::command::policy::{Policy, StateKind};
use crate::config::EndpointConfig;
use crate::resp::request::{self, Parsed};
use bytes::{Bytes, BytesMut};
use reply::head;
use std::collections::{HashMap, VecDeque};
use std::ops::{ControlFlow, Range};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::oneshot;
use transaction::Tx;

/// Redirects followed per command; one more gets a turnout error naming the loop.
pub const MAX_REDIRECTS: u8 = 5;
/// Requests awaiting replies before the router stops reading the pipe.
pub const MAX_PENDING: usize = 4096;
/// Largest request accepted from the pipe.
pub const MAX_REQUEST: usize = 512 * 1024 * 1024 + 64 * 1024;
/// Keyless commands held after MULTI, waiting for the transaction's node.
pub const MAX_HELD: usize = 1024;

const CROSSSLOT: &[u8] = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n";

/// One part of a pending entry.
struct Pending {
    part: Part,
    rx: Option<oneshot::Receiver<Answer>>,
    reply: Option<Bytes>,
    redirects: u8,
    /// The slot it was routed by and is counted in ([`order`]) until answered.
    slot: Option<u16>,
}

impl Pending {
    fn new(part: Part) -> Pending {
        Pending {
            part,
            rx: None,
            reply: None,
            redirects: 0,
            slot: None,
        }
    }
}

/// One request's pending reply.
struct Entry {
    how: Merge,
    keys: usize,
    parts: Vec<Pending>,
    /// Redirects are followed (not inside a transaction).
    follow: bool,
    /// Connection state to undo if the reply is an error.
    state_undo: Option<Vec<StateEntry>>,
}

impl Entry {
    fn ready(reply: &[u8]) -> Entry {
        let mut entry = Entry::single(Part::keyless(Bytes::new()), false);
        entry.parts[0].reply = Some(Bytes::copy_from_slice(reply));
        entry
    }

    fn single(part: Part, follow: bool) -> Entry {
        Entry {
            how: Merge::Pass,
            keys: 0,
            parts: vec![Pending::new(part)],
            follow,
            state_undo: None,
        }
    }

    fn done(&self) -> bool {
        self.parts.iter().all(|p| p.reply.is_some())
    }
}

impl Part {
    fn keyless(request: Bytes) -> Part {
        Part {
            slot: 0,
            request,
            positions: Vec::new(),
        }
    }
}

type StateEntry = (StateKind, Bytes, Bytes);

/// A router: the pipe's other end and its node connections.
struct Router {
    cluster: Arc<Cluster>,
    endpoint: Arc<EndpointConfig>,
    timeout: Duration,
    nodes: HashMap<String, Node>,
    /// Connection state, replayed on every new node connection: kind, sub-key, command.
    state: Vec<StateEntry>,
    queue: VecDeque<Entry>,
    keyless: Option<String>,
    tx: Tx,
    /// Per slot, where its unanswered requests went ([`order`]).
    flights: HashMap<u16, order::Flight>,
    /// Requests held back, in request order ([`order`]).
    held: order::HeldQueue,
    /// Bytes of replies the node tasks handed over and not yet taken.
    buffered: Arc<AtomicUsize>,
    /// Bound on `buffered` before the router stops reading requests.
    max_buffered: usize,
}

/// Runs a router until the session drops its end of the pipe.
pub async fn run(
    cluster: Arc<Cluster>,
    endpoint: Arc<EndpointConfig>,
    pipe: DuplexStream,
    timeout: Duration,
    max_buffered: usize,
) {
    let (mut reader, mut writer) = tokio::io::split(pipe);
    let mut router = Router {
        cluster,
        endpoint,
        timeout,
        nodes: HashMap::new(),
        state: Vec::new(),
        queue: VecDeque::new(),
        keyless: None,
        tx: Tx::default(),
        flights: HashMap::new(),
        held: order::HeldQueue::default(),
        buffered: Arc::new(AtomicUsize::new(0)),
        max_buffered,
    };
    if let Err(e) = router.serve(&mut reader, &mut writer).await {
        tracing::debug!(endpoint = %router.endpoint.name, cause = %e, "cluster router closed");
    }
}

impl Router {
    async fn serve(
        &mut self,
        reader: &mut ReadHalf<DuplexStream>,
        writer: &mut WriteHalf<DuplexStream>,
    ) -> std::io::Result<()> {
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let mut args: Vec<Range<usize>> = Vec::new();
        // Complete requests may be left in `inbuf` when a bound stopped the last take: they
        // are taken as soon as there is room, not when more bytes arrive (which may be never:
        // a client waiting for their replies sends nothing more).
        let mut left = false;
        loop {
            if left && self.has_room() {
                if self.take(&mut inbuf, &mut args, reader, writer).await? {
                    return Ok(());
                }
                left = !self.has_room();
            }
            let reading = self.has_room();
            let waiting = !self.queue.is_empty();
            tokio::select! {
                got = head(&mut self.queue), if waiting => {
                    self.settle(got).await;
                }
                read = reader.read_buf(&mut inbuf), if reading => {
                    if read? == 0 {
                        return Ok(());
                    }
                    if self.take(&mut inbuf, &mut args, reader, writer).await? {
                        return Ok(());
                    }
                    left = !self.has_room();
                }
            }
            self.flush(writer).await?;
        }
    }

    /// Whether the router may take more requests: the FIFO and the reply bytes waiting in
    /// it are under their bounds. An empty FIFO always has room (so the loop always waits
    /// on something, and no count can keep it from reading).
    fn has_room(&self) -> bool {
        self.queue.is_empty()
            || (self.queue.len() < MAX_PENDING
                && self.buffered.load(Ordering::Relaxed) < self.max_buffered)
    }

    /// Takes the complete requests in `inbuf`; true when the connection is done with (handed
    /// to a subscriber connection that ended, or a protocol error answered).
    async fn take(
        &mut self,
        inbuf: &mut BytesMut,
        args: &mut Vec<Range<usize>>,
        reader: &mut ReadHalf<DuplexStream>,
        writer: &mut WriteHalf<DuplexStream>,
    ) -> std::io::Result<bool> {
        match self.take_requests(inbuf, args).await {
            Ok(None) => Ok(false),
            Ok(Some(address)) => {
                let inbuf = std::mem::take(inbuf);
                self.pass_through(address, inbuf, reader, writer).await?;
                Ok(true)
            }
            Err(e) => {
                // The replies due before the error first.
                self.drain(writer).await?;
                let mut out = BytesMut::new();
                crate::resp::write_protocol_error(&mut out, e);
                writer.write_all(&out).await?;
                writer.flush().await?;
                Ok(true)
            }
        }
    }

    /// Dispatches every complete request in `inbuf` while there is room, up to a subscribe
    /// command: then the node the connection is to be handed to (the request stays in
    /// `inbuf`).
    async fn take_requests(
        &mut self,
        inbuf: &mut BytesMut,
        args: &mut Vec<Range<usize>>,
    ) -> Result<Option<String>, crate::resp::ProtocolError> {
        while self.has_room() {
            match request::parse(inbuf, args, MAX_REQUEST)? {
                Parsed::Incomplete => return Ok(None),
                Parsed::Empty { len } => {
                    let _ = inbuf.split_to(len);
                }
                Parsed::Inline { len } => {
                    let line = inbuf.split_to(len);
                    let mut converted = BytesMut::new();
                    request::inline_to_multibulk(&line, &mut converted)?;
                    if let Parsed::Multibulk { len } =
                        request::parse(&converted, args, MAX_REQUEST)?
                    {
                        let frame = converted.split_to(len).freeze();
                        self.dispatch(frame, args).await;
                    }
                }
                Parsed::Multibulk { len } => {
                    if let Some(address) = self.subscribe_node(inbuf, args) {
                        return Ok(Some(address));
                    }
                    let frame = inbuf.split_to(len).freeze();
                    self.dispatch(frame, args).await;
                }
            }
        }
        Ok(None)
    }

    /// Routes one request and queues its entry.
    async fn dispatch(&mut self, frame: Bytes, ranges: &[Range<usize>]) {
        let argv: Vec<&[u8]> = ranges.iter().map(|r| &frame[r.clone()]).collect();
        let Some(name) = argv.first().copied() else {
            return;
        };
        let resolved = crate::command::resolve(name, argv.get(1).copied());
        match resolved.policy {
            Policy::State(kind) => return self.state_command(kind, &argv, frame.clone()).await,
            Policy::Transaction(tx) => {
                return self.transaction(tx, resolved.spec, &frame, ranges).await
            }
            Policy::Everywhere => return self.everywhere(frame, Merge::First).await,
            Policy::Reset => return self.reset(frame).await,
            Policy::Pattern if name.eq_ignore_ascii_case(b"keys") => {
                return self.everywhere(frame, Merge::Concat).await
            }
            Policy::Forward if name.eq_ignore_ascii_case(b"dbsize") => {
                return self.everywhere(frame, Merge::Sum).await
            }
            _ => {}
        }
        let keys = match resolved.spec {
            Some(_) if name.eq_ignore_ascii_case(b"spublish") => {
                argv.get(1).map(|c| vec![*c]).unwrap_or_default()
            }
            Some(spec) => {
                let mut keys = Vec::new();
                // Keys that cannot all be known (SORT … BY pattern): the ones found first
                // still pick the node, and Redis judges the rest.
                let _ = crate::command::keys::for_each_key(spec, &frame, ranges, |k| {
                    keys.push(k);
                    ControlFlow::Continue(())
                });
                keys
            }
            None => Vec::new(),
        };
        if self.tx.open {
            return self
                .in_transaction(frame.clone(), keys.first().map(|k| slots::slot(k)))
                .await;
        }
        let Some(first) = keys.first() else {
            let address = self.keyless_node();
            let mut entry = Entry::single(Part::keyless(frame.clone()), true);
            entry.parts[0].rx = Some(self.send(&address, frame.clone(), 0).await);
            return self.push(entry);
        };
        let slot = slots::slot(first);
        if keys.iter().all(|k| slots::slot(k) == slot) {
            return self
                .keyed(Entry::single(
                    Part {
                        slot,
                        request: frame.clone(),
                        positions: Vec::new(),
                    },
                    true,
                ))
                .await;
        }
        match merge::splittable(name) {
            Some((how, per_key)) if argv.len() > 1 && (argv.len() - 1) % per_key == 0 => {
                let parts = merge::split(&argv, per_key, slots::slot);
                let entry = Entry {
                    how,
                    keys: (argv.len() - 1) / per_key,
                    parts: parts.into_iter().map(Pending::new).collect(),
                    follow: true,
                    state_undo: None,
                };
                self.keyed(entry).await
            }
            // A wrong argument count: the first key's node answers with Redis's own error.
            Some(_) => {
                self.keyed(Entry::single(
                    Part {
                        slot,
                        request: frame.clone(),
                        positions: Vec::new(),
                    },
                    true,
                ))
                .await
            }
            None => self.push(Entry::ready(CROSSSLOT)),
        }
    }

    /// Sends every part of a keyed entry to its slot's primary (or holds it back, see
    /// [`order`]) and queues it.
    async fn keyed(&mut self, mut entry: Entry) {
        for pending in &mut entry.parts {
            let slot = pending.part.slot;
            pending.slot = Some(slot);
            pending.rx = Some(self.send_slot(slot, pending.part.request.clone()).await);
        }
        self.push(entry);
    }

    fn push(&mut self, entry: Entry) {
        self.queue.push_back(entry);
    }

    /// The primary serving `slot`, or the keyless node when no one is known to.
    fn owner(&mut self, slot: u16) -> String {
        match self.cluster.map.load().owner(slot) {
            Some(address) => address.to_string(),
            None => self.keyless_node(),
        }
    }

    /// The node for keyless commands: fixed while it stays a primary.
    fn keyless_node(&mut self) -> String {
        let map = self.cluster.map.load();
        if let Some(current) = &self.keyless {
            if map.nodes().contains(current) {
                return current.clone();
            }
        }
        let chosen = map
            .nodes()
            .first()
            .cloned()
            .unwrap_or_else(|| match &self.endpoint.kind {
                crate::config::EndpointKind::Cluster { seeds } => {
                    seeds.first().cloned().unwrap_or_default()
                }
                _ => String::new(),
            });
        self.keyless = Some(chosen.clone());
        chosen
    }

    /// Sends `request` to the node at `address` now (opening its connection task if
    /// needed); `reply` gets the answer.
    async fn deliver(
        &mut self,
        address: &str,
        request: Bytes,
        swallow: u8,
        reply: oneshot::Sender<Answer>,
    ) {
        let mut message = node::Request {
            bytes: request,
            swallow,
            reply,
        };
        for _ in 0..2 {
            self.ensure_node(address);
            let Some(node) = self.nodes.get(address) else {
                break;
            };
            match node.tx.send(message).await {
                Ok(()) => return,
                Err(returned) => message = returned.0,
            }
        }
        let text = node::failure_text(
            &self.endpoint.name,
            &crate::upstream::UpstreamError::Closed,
            address,
        );
        let _ = message.reply.send(Answer {
            from: Arc::from(address),
            reply: Err(text),
        });
    }

    /// Sends `request` to the node at `address` now, whatever is held back: a redirect of
    /// the FIFO's head, which everything held waits for.
    async fn send_now(
        &mut self,
        address: &str,
        request: Bytes,
        swallow: u8,
    ) -> oneshot::Receiver<Answer> {
        let (reply, rx) = oneshot::channel();
        self.deliver(address, request, swallow, reply).await;
        rx
    }

    /// Starts a connection task for `address` unless a live one exists; it replays the
    /// connection state as it is now.
    fn ensure_node(&mut self, address: &str) {
        if self.nodes.get(address).is_some_and(|n| !n.tx.is_closed()) {
            return;
        }
        // Forget ended connection tasks, so the map holds at most the live ones.
        self.nodes.retain(|_, node| !node.tx.is_closed());
        let cluster = self.cluster.clone();
        let state = self.state.iter().map(|(_, _, c)| c.clone()).collect();
        let spawned = node::spawn(
            self.endpoint.clone(),
            address.to_string(),
            self.timeout,
            state,
            self.buffered.clone(),
            move || cluster.node_failed(),
        );
        self.nodes.insert(address.to_string(), spawned);
    }
}
