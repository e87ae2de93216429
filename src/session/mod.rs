//! One client connection: reading requests, routing them, and returning replies in order.
//!
//! A session is one task that owns its client socket and one [`link::Link`] per endpoint it
//! uses. Its loop is: parse every complete request in the read buffer and append each to its
//! endpoint's write buffer ([`dispatch`]); move every reply that is next in line to the
//! client's write buffer ([`deliver`]); then wait for any socket to be ready. Writes happen
//! at the start of the next wait, so everything parsed from one read goes upstream in one
//! write per endpoint and client pipelining stays pipelining.
//!
//! Memory is bounded: past `max_buffered_bytes` of queued output the session stops reading
//! from its client (and from endpoints whose replies are not yet due), which pushes back on
//! the client through TCP instead of failing it.

mod auth;
mod deliver;
mod dispatch;
mod effect;
pub mod link;
mod mirror;
mod prefix;
mod pubsub;
mod split;
mod strip;
mod transaction;

use crate::command::policy::{StateKind, STATE_KINDS};
use crate::config::{Config, EndpointId};
use crate::metrics::{LocalStats, RequestStats};
use crate::resp::reply::ReplyScan;
use crate::route::Router;
use crate::stream::{poll_read_some, Stream, READ_CHUNK};
use crate::upstream::{write_all_ready, UpstreamError};
use bytes::{Buf, Bytes, BytesMut};
use link::{Conn, Link};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::AsyncWrite;
use tokio::sync::watch;

/// Most replies a session may owe its client before it stops reading requests.
pub const MAX_PENDING: usize = 256 * 1024;
/// How long a TLS client connection may take to flush and send close_notify when it ends.
const TLS_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// An empty buffer larger than this is released, so a burst does not pin memory.
const SHRINK_ABOVE: usize = 64 * 1024;

/// What every session shares.
#[derive(Debug)]
pub struct Shared {
    /// The validated config.
    pub config: Arc<Config>,
    /// Live routes.
    pub router: Arc<Router>,
    /// Per-command counters.
    pub stats: RequestStats,
    /// Shadow and secondary lanes.
    pub shadow: Arc<crate::shadow::Shadow>,
    /// Every session's drain state, for cutovers.
    pub sessions: Arc<crate::cutover::registry::Registry>,
    /// Shared upstream connections for sessions without connection state.
    pub mux: crate::upstream::mux::Pool,
}

/// Where a pending reply comes from.
#[derive(Debug)]
enum Source {
    /// The next reply of one endpoint's link.
    Upstream(EndpointId),
    /// A reply turnout made itself.
    Local(Bytes),
    /// One reply from each endpoint in `mask` (connection state applied everywhere); the
    /// client gets the first error, else `primary`'s reply.
    /// `state`: it answers a connection-state command (which holds what follows it).
    Gather {
        mask: u64,
        primary: EndpointId,
        state: bool,
    },
    /// The parts of a request split across endpoints, merged back into one reply.
    Merge(Box<split::Merge>),
    /// A reply to turnout's own command (a deferred MULTI, a DISCARD), which nobody sees.
    Swallow(EndpointId),
    /// The answer to turnout's own `CLIENT ID`, kept by the link.
    ClientId(EndpointId),
    /// Confirmations from the Pub/Sub connection, up to this many in all (a subscription
    /// command's, or a subscribed PING's). Messages flow between replies at any time;
    /// confirmations keep their place among the replies.
    Pubsub(u64),
}

/// One reply the client is owed, in request order.
#[derive(Debug)]
struct Pending {
    source: Source,
    since: Instant,
    /// CLIENT REPLY OFF or SKIP was in force: the reply is consumed, not sent.
    silent: bool,
    /// The reply is also wanted for a shadow comparison or a transaction's copy.
    capture: Option<Box<mirror::Capture>>,
    /// The namespace the request belongs to, for a cutover's drain: [`NS_ANY`] when it may
    /// concern any (transactions, state commands, split requests), [`NS_NONE`] for
    /// turnout's own replies.
    ns: u32,
    /// A blocking command that a cutover can unblock on the old endpoint and send again to
    /// the new one: its request is the session's `reissue` (only the last blocking command
    /// dispatched can be sent again, as only a command alone in line is unblocked).
    reissue: bool,
    /// The reply names keys of a single-database endpoint: buffered whole, prefix stripped.
    strip: Option<Box<strip::Strip>>,
}

/// A pending reply that may concern any namespace.
const NS_ANY: u32 = u32::MAX;
/// A pending reply that concerns no endpoint.
const NS_NONE: u32 = u32::MAX - 1;

/// CLIENT REPLY's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    /// Silence the next command's reply only.
    Skip,
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client connection error: {0}")]
    Client(io::Error),
    #[error("endpoint {endpoint} failed in the middle of a reply: {cause}")]
    MidReply {
        endpoint: String,
        cause: UpstreamError,
    },
    #[error("the Pub/Sub connection failed: {0}")]
    Pubsub(UpstreamError),
}

/// A client connection being served.
struct Session {
    shared: Arc<Shared>,
    client: Stream,
    /// Client bytes not yet parsed.
    cin: BytesMut,
    /// Reply bytes not yet written to the client.
    cout: BytesMut,
    /// One link per endpoint, indexed by [`EndpointId`].
    links: Vec<Link>,
    /// Replies owed to the client, oldest first.
    pending: VecDeque<Pending>,
    /// Argument ranges of the request being dispatched (reused).
    args: Vec<Range<usize>>,
    /// Where parsing of a partly received request stopped (`args` holds its arguments so far).
    resume: crate::resp::request::Resume,
    /// Scratch buffer for inline commands rewritten as multibulk.
    inline: BytesMut,
    /// Connection-state commands every endpoint accepted, by kind: replayed on every new
    /// upstream connection.
    state: [Option<Bytes>; STATE_KINDS],
    /// Connection-state commands sent but not yet answered, oldest first. A new connection
    /// replays them after `state`, so it ends up where the open ones do whether they succeed
    /// or fail.
    state_inflight: VecDeque<(StateKind, Bytes)>,
    /// Progress through the front reply while it streams.
    front: ReplyScan,
    /// Whether the front reply has started streaming.
    front_started: bool,
    /// CLIENT REPLY's mode.
    reply_mode: ReplyMode,
    /// The client has authenticated (always true without `[proxy.auth]`).
    authenticated: bool,
    /// The Pub/Sub connection, once the client subscribed.
    pubsub: Option<pubsub::Pubsub>,
    /// The transaction in progress, if any.
    tx: Option<transaction::Tx>,
    /// The client closed its side; complete requests already read are still dispatched.
    client_eof: bool,
    /// No more requests will be read: QUIT, a protocol error, EOF or shutdown.
    stop_reading: bool,
    stats: LocalStats,
    /// Shadow and dual-write copies.
    mirror: mirror::Mirror,
    /// The namespace of the next pending entry ([`NS_ANY`] unless `forward` says).
    tag: u32,
    /// The next request belongs to a namespace a cutover holds: it waits in `cin`.
    holding: bool,
    /// Complete requests waiting in `cin` while holding (for the cutover's report).
    held_requests: usize,
    /// Counts `held_requests` incrementally.
    held_count: dispatch::HeldCount,
    /// Where the request being dispatched starts in the client buffer and its length, when
    /// it is large enough to be moved rather than copied into an endpoint's buffer.
    movable: Option<(usize, usize)>,
    /// The endpoint whose empty buffer takes the request being dispatched whole, and its
    /// link's `appended` count with it: the dispatch loop moves the bytes there once the
    /// request is handled.
    moved_to: Option<(EndpointId, u64)>,
    /// The route epoch last recorded in the drain slot while nothing was held.
    drain_reported: u64,
    /// A route snapshot may have changed since the drain was last reported.
    routes_dirty: bool,
    /// The route table had a hold at the last drain report: report every turn.
    drain_held: bool,
    /// The request of the last blocking command dispatched (reused: no allocation per
    /// blocking command).
    reissue: Vec<u8>,
    /// A request was put back into `cin`: dispatch again before waiting.
    redispatch: bool,
    /// This session's drain state, for cutovers.
    registration: crate::cutover::registry::Registration,
    /// The database the session routes by: its last SELECT's (sent, not yet answered).
    db: u8,
    /// The database of its last accepted SELECT.
    accepted_db: u8,
    /// The session may use shared upstream connections: it never set connection state,
    /// opened a transaction, blocked or subscribed. Once false, it stays false.
    mux_ok: bool,
    /// This session's number (picks its shared connections and its shadow lane).
    number: u64,
}

/// Waits for the next published route snapshot and hands the receiver back.
async fn next_change(mut rx: watch::Receiver<u64>) -> watch::Receiver<u64> {
    if rx.changed().await.is_err() {
        // The router is gone (shutdown): never wake again.
        std::future::pending::<()>().await;
    }
    rx
}

/// Numbers sessions, so each keeps to one shadow lane.
static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Serves one client connection until it closes, then returns.
pub async fn serve(client: Stream, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let links = shared
        .config
        .endpoints
        .iter()
        .enumerate()
        .map(|(ep, endpoint)| {
            Link::new(ep).following(crate::upstream::sentinel::generation(endpoint))
        })
        .collect();
    let shared_auth_free = shared.config.proxy.auth.is_none();
    let registration = shared.sessions.register();
    let number = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mux_ok = shared.config.proxy.multiplex;
    let mut session = Session {
        shared,
        client,
        cin: BytesMut::new(),
        cout: BytesMut::new(),
        links,
        pending: VecDeque::new(),
        args: Vec::new(),
        resume: Default::default(),
        inline: BytesMut::new(),
        state: Default::default(),
        state_inflight: VecDeque::new(),
        front: ReplyScan::new(),
        front_started: false,
        tx: None,
        pubsub: None,
        reply_mode: ReplyMode::On,
        authenticated: shared_auth_free,
        stop_reading: false,
        client_eof: false,
        stats: LocalStats::default(),
        mirror: mirror::Mirror::new(number),
        tag: NS_ANY,
        holding: false,
        held_requests: 0,
        held_count: Default::default(),
        movable: None,
        moved_to: None,
        drain_reported: u64::MAX,
        redispatch: false,
        reissue: Vec::new(),
        routes_dirty: true,
        drain_held: false,
        registration,
        db: 0,
        accepted_db: 0,
        mux_ok,
        number,
    };
    let ended = session.run(&mut shutdown).await;
    match &ended {
        Ok(()) => tracing::debug!("client connection closed"),
        Err(End::Client(e)) => tracing::debug!(cause = %e, "client connection ended"),
        Err(e @ (End::MidReply { .. } | End::Pubsub(_))) => {
            tracing::warn!(cause = %e, "closing client connection")
        }
    }
    if matches!(session.client, Stream::TlsServer(_)) && !matches!(ended, Err(End::Client(_))) {
        // TLS holds encrypted bytes back until flushed, and a close without close_notify
        // looks like a truncation to the client: send both (QUIT's `+OK`, the error before a
        // protocol-error close), for a short while at most.
        let close = tokio::io::AsyncWriteExt::shutdown(&mut session.client);
        if let Err(e) = tokio::time::timeout(TLS_CLOSE_TIMEOUT, close).await {
            tracing::debug!(cause = %e, "TLS client close did not finish");
        }
    }
    session.stats.flush(&session.shared.stats);
}

impl Session {
    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), End> {
        if *shutdown.borrow() {
            return Ok(());
        }
        // One future for the whole session: creating a `changed()` future per turn would
        // register with the channel's shared waiter list (a lock) on every command.
        let mut shutdown_started = std::pin::pin!(crate::shutdown::wait(shutdown));
        let mut shut_down = false;
        // Wakes the session when a route snapshot is published. Polling it takes the channel's
        // waiter lock, which every session shares, so it is polled only while the session
        // follows routes: holding a request, or Pub/Sub following the default route.
        let mut routes_changed = Box::pin(next_change(self.shared.router.subscribe()));
        // A cutover wakes every session through its slot when it holds or releases a
        // namespace (to report its drain, or say where it blocks): no shared lock.
        let slot = self.registration.slot.clone();
        loop {
            self.dispatch_buffered();
            self.deliver()?;
            if std::mem::take(&mut self.redispatch) {
                // An unblocked command went back to the read buffer: dispatch it now.
                continue;
            }
            self.flush_copies();
            self.report_drain();
            self.stats.flush(&self.shared.stats);
            self.connect_waiting_links();
            // A client that closed is gone, as Redis sees it: every request it sent still
            // reaches its endpoint, but nobody waits for replies (a blocked command must not
            // outlive its client and swallow the next job).
            if self.client_eof && self.unsent() == 0 && !self.holding {
                return Ok(());
            }
            if self.stop_reading && self.pending.is_empty() && self.cout.is_empty() {
                return Ok(());
            }
            self.release_idle_buffers();
            let follow = self.follows_routes();
            tokio::select! {
                biased;
                result = poll_fn(|cx| self.poll_io(cx)) => result?,
                () = &mut shutdown_started, if !shut_down => {
                    // Finish what was read and dispatched; read nothing more.
                    shut_down = true;
                    self.stop_reading = true;
                    self.cin.clear();
                    self.held_count.reset();
                    self.resume = Default::default();
                    self.holding = false;
                }
                // `report_drain` takes note of the wake-up.
                () = poll_fn(|cx| slot.poll_woken(cx)) => {}
                rx = &mut routes_changed, if follow => {
                    routes_changed = Box::pin(next_change(rx));
                    self.routes_dirty = true;
                    self.follow_pubsub_endpoint();
                }
            }
        }
    }

    /// Whether the session must wake on every route snapshot: a held request waits for its
    /// release, or subscriptions follow the default route.
    fn follows_routes(&self) -> bool {
        self.holding || (self.pubsub.is_some() && self.shared.config.pubsub_endpoint.is_none())
    }

    /// Records whether this session still owes replies for a held namespace.
    ///
    /// Holds change only through a cutover, which wakes every session's slot afterwards, and
    /// dispatch notes a held or new snapshot it loads: without either, and with nothing held
    /// at the last look, nothing can have changed, and the route table is not loaded.
    fn report_drain(&mut self) {
        let woken = self.registration.slot.take_woken();
        if !(std::mem::take(&mut self.routes_dirty) || woken || self.drain_held) {
            return;
        }
        let table = self.shared.router.load();
        self.drain_held = table.any_held;
        if !table.any_held {
            // Nothing held: drained at this epoch. Only a new epoch needs recording, so an
            // ordinary turn touches no shared state.
            if self.drain_reported != table.epoch {
                self.drain_reported = table.epoch;
                self.registration.slot.record(table.epoch, true, 0);
                self.registration.slot.set_blocked(None);
            }
            return;
        }
        self.drain_reported = table.epoch;
        // An open transaction (or WATCH) routes with its own, older snapshot: it may still
        // send anything to the old endpoint, so it drains nothing until it ends.
        let drained = self.tx.is_none()
            && !self.pending.iter().any(|p| {
                p.ns == NS_ANY
                    || (p.ns != NS_NONE && u16::try_from(p.ns).is_ok_and(|ns| table.held(ns)))
            });
        self.registration
            .slot
            .record(table.epoch, drained, self.held_requests);
        // A blocked command of a held namespace, alone in line, can be unblocked and sent
        // again after the flip: say where it blocks. Behind another command on the same
        // connection it does not block yet, and an unblock would hit the one before it.
        let alone = self.pending.len() == 1;
        let blocked = match self.pending.back().filter(|_| alone) {
            Some(Pending {
                source: Source::Upstream(ep),
                reissue: true,
                ns,
                ..
            }) => u16::try_from(*ns)
                .ok()
                .filter(|&ns| table.held(ns))
                .and_then(|ns| self.links[*ep].client_id.map(|id| (*ep, id, ns))),
            _ => None,
        };
        self.registration.slot.set_blocked(blocked);
    }

    /// Records that a reply is owed, silenced if CLIENT REPLY says so. Turnout's own
    /// swallowed replies do not count as the command a SKIP applies to.
    fn expect(&mut self, source: Source, since: Instant) {
        let silent = match (&source, self.reply_mode) {
            (Source::Swallow(_) | Source::ClientId(_), _) | (_, ReplyMode::On) => false,
            (_, ReplyMode::Off) => true,
            (_, ReplyMode::Skip) => {
                self.reply_mode = ReplyMode::On;
                true
            }
        };
        let ns = match source {
            Source::Local(_) => NS_NONE,
            _ => std::mem::replace(&mut self.tag, NS_ANY),
        };
        self.pending.push_back(Pending {
            source,
            since,
            silent,
            capture: None,
            ns,
            reissue: false,
            strip: None,
        });
    }

    /// Whether the session may read more requests now.
    ///
    /// Replies piling up for a client that is not reading do not stop it: like Redis, turnout
    /// keeps taking requests (a client may write its whole pipeline before reading) and stops
    /// reading replies from the endpoints instead, which then buffer them as they would for
    /// a direct client. Requests the endpoints are not taking do stop it.
    fn wants_requests(&self) -> bool {
        !self.stop_reading
            && self.pending.len() < MAX_PENDING
            && self.unsent() < self.shared.config.proxy.max_buffered_bytes
    }

    /// Request bytes queued for endpoints.
    fn unsent(&self) -> usize {
        self.links
            .iter()
            .map(|l| l.wbuf.len() + l.replay.len())
            .sum::<usize>()
    }

    /// Whose reply is due next, if an endpoint's.
    fn front_endpoint(&self) -> Option<EndpointId> {
        match self.pending.front().map(|p| &p.source) {
            Some(Source::Upstream(ep)) => Some(*ep),
            _ => None,
        }
    }

    /// Endpoints whose next reply is due now: they are read even past the buffer bound,
    /// since nothing else can be delivered before their replies are whole.
    fn due_endpoints(&self) -> u64 {
        match self.pending.front().map(|p| &p.source) {
            Some(Source::Upstream(ep)) => 1 << ep,
            Some(Source::Gather { mask, .. }) => *mask,
            Some(Source::Merge(merge)) => merge.mask(),
            Some(Source::Swallow(ep) | Source::ClientId(ep)) => 1 << ep,
            _ => 0,
        }
    }

    /// Polls every socket once; `Ready` when anything moved.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), End>> {
        let mut progressed = false;
        while !self.cout.is_empty() {
            match Pin::new(&mut self.client).poll_write(cx, &self.cout) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(End::Client(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => {
                    self.cout.advance(n);
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(End::Client(e))),
                Poll::Pending => break,
            }
        }
        if let Poll::Ready(Err(e)) = crate::stream::poll_flush_tls(&mut self.client, cx) {
            return Poll::Ready(Err(End::Client(e)));
        }
        for ep in 0..self.links.len() {
            progressed |= self.poll_link_write(ep, cx)?;
        }
        // While a request is held, what follows it waits in `cin`, up to the buffer bound.
        let cin_room =
            !self.holding || self.cin.len() < self.shared.config.proxy.max_buffered_bytes;
        if self.wants_requests() && !self.client_eof && cin_room {
            match poll_read_some(&mut self.client, cx, &mut self.cin, READ_CHUNK) {
                Poll::Ready(Ok(0)) => {
                    self.client_eof = true;
                    progressed = true;
                }
                Poll::Ready(Ok(_)) => progressed = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(End::Client(e))),
                Poll::Pending => {}
            }
        }
        let due = self.due_endpoints();
        let room = self.cout.len() < self.shared.config.proxy.max_buffered_bytes;
        for ep in 0..self.links.len() {
            let may_read = room
                && (due & (1 << ep) != 0
                    || self.links[ep].rbuf.len() < self.shared.config.proxy.max_buffered_bytes);
            if may_read {
                progressed |= self.poll_link_read(ep, cx)?;
            }
        }
        progressed |= self.poll_pubsub(cx, room)?;
        if progressed {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Drives a link's connection attempt and writes its buffered requests.
    fn poll_link_write(&mut self, ep: EndpointId, cx: &mut Context<'_>) -> Result<bool, End> {
        let link = &mut self.links[ep];
        if let Conn::Shared(handle) = &link.conn {
            if !self.mux_ok || link.wbuf.is_empty() {
                return Ok(false);
            }
            let limit = self.shared.config.proxy.max_buffered_bytes;
            if self.cout.len() >= limit || link.rbuf.len() + handle.buffered() >= limit {
                // The client is not keeping up: a shared connection cannot stop reading for
                // it, so it moves to its own, where the endpoint buffers what it cannot take
                // yet (as for a direct client) and turnout's buffers stay bounded.
                self.leave_mux();
                return Ok(true);
            }
            let len = link.wbuf.len() as u64;
            return Ok(match handle.submit(cx, &mut link.wbuf, link.wbuf_frames) {
                Poll::Ready(()) => {
                    link.written += len;
                    link.wbuf_frames = 0;
                    true
                }
                Poll::Pending => false,
            });
        }
        let mut progressed = false;
        if let Conn::Connecting(attempt) = &mut link.conn {
            match attempt.as_mut().poll(cx) {
                Poll::Ready(Ok(stream)) => {
                    let name = &self.shared.config.endpoints[ep].name;
                    link.conn = Conn::Ready(stream, crate::metrics::upstream_connected(name));
                    progressed = true;
                }
                Poll::Ready(Err(cause)) => {
                    self.fail_link(ep, cause)?;
                    return Ok(true);
                }
                Poll::Pending => return Ok(false),
            }
        }
        let link = &mut self.links[ep];
        // Requests that left a shared connection wait until everything handed to it has been
        // answered: on another connection they could otherwise run before those.
        let writable = match &link.draining {
            Some(shared) if !shared.all_answered() => 0,
            _ => link.writable(),
        };
        let Conn::Ready(stream, _) = &mut link.conn else {
            return Ok(progressed);
        };
        // Replayed state goes first; requests wait until it has been accepted.
        let result = match write_all_ready(stream, cx, &mut link.replay, usize::MAX) {
            Ok(wrote) if link.replay.is_empty() && link.replay_unanswered == 0 => {
                // Nothing past an unanswered connection-state command is written.
                write_all_ready(stream, cx, &mut link.wbuf, writable).map(|w| {
                    link.written += w as u64;
                    w > 0 || wrote > 0
                })
            }
            other => other.map(|w| w > 0),
        };
        match result {
            Ok(wrote) => Ok(progressed || wrote),
            Err(cause) => {
                self.fail_link(ep, cause)?;
                Ok(true)
            }
        }
    }

    /// Reads what an endpoint sent.
    fn poll_link_read(&mut self, ep: EndpointId, cx: &mut Context<'_>) -> Result<bool, End> {
        // A large value streaming to the client from this endpoint's own connection: room
        // for the rest of it, so that it comes in one read and leaves in one write instead
        // of a 16 KiB chunk (or a 512-byte probe of an emptied buffer) at a time.
        let coming = if self.front_started && self.front_endpoint() == Some(ep) {
            usize::try_from(self.front.bulk_left()).unwrap_or(usize::MAX)
        } else {
            0
        };
        let link = &mut self.links[ep];
        let shared = match (&link.draining, &link.conn) {
            (Some(handle), _) | (None, Conn::Shared(handle)) => Some(handle),
            _ => None,
        };
        if let Some(handle) = shared {
            let (moved, failure) = handle.take(cx, &mut link.rbuf);
            if let Some(cause) = failure {
                self.fail_link(ep, UpstreamError::Shared(cause))?;
                return Ok(true);
            }
            return Ok(moved);
        }
        let Conn::Ready(stream, _) = &mut link.conn else {
            return Ok(false);
        };
        crate::stream::reserve_ahead(&mut link.rbuf, coming);
        match poll_read_some(stream, cx, &mut link.rbuf, READ_CHUNK) {
            Poll::Ready(Ok(0)) => {
                self.fail_link(ep, UpstreamError::Closed)?;
                Ok(true)
            }
            Poll::Ready(Ok(_)) => {
                // Release held requests as soon as the replayed state is accepted.
                if let Err(cause) = self.links[ep].consume_replayed() {
                    self.fail_link(ep, cause)?;
                }
                Ok(true)
            }
            Poll::Ready(Err(e)) => {
                self.fail_link(ep, UpstreamError::io(e))?;
                Ok(true)
            }
            Poll::Pending => Ok(false),
        }
    }

    /// Fails a link's connection. If the client is in the middle of receiving one of its
    /// replies, no error can be spliced into that frame: the client connection must end.
    fn fail_link(&mut self, ep: EndpointId, cause: UpstreamError) -> Result<(), End> {
        let name = self.shared.config.endpoints[ep].name.clone();
        if self.front_started && self.front_endpoint() == Some(ep) {
            return Err(End::MidReply {
                endpoint: name,
                cause,
            });
        }
        self.links[ep].fail(&name, &cause);
        Ok(())
    }

    /// Opens connections for links that have requests queued and may connect.
    fn connect_waiting_links(&mut self) {
        for ep in 0..self.links.len() {
            if !self.mux_ok && matches!(self.links[ep].conn, Conn::Shared(_)) {
                // What is queued (the command that needs the session's own connection
                // first) goes to a dedicated connection.
                self.links[ep].leave_shared();
            }
            if self.links[ep].prepared && self.links[ep].may_connect() {
                self.start_connect(ep);
            }
        }
    }

    /// Makes a link ready to take requests: the first request queued for a new connection is
    /// preceded by the session's accepted connection state (SELECT, HELLO, …), so that requests
    /// keep the state they were sent under; then connecting starts if it may. While
    /// connection-state commands are still unanswered, the link waits for them first.
    fn prepare_link(&mut self, ep: EndpointId) {
        if self.links[ep].stale_primary() {
            self.leave_old_primary(ep);
        }
        let link = &mut self.links[ep];
        if !link.is_active() && !link.prepared {
            if link.awaiting_state > 0 {
                return;
            }
            if !self.state_inflight.is_empty() {
                // Which state this connection must start in depends on answers still to
                // come: queue its requests and prepare it once they are in.
                link.awaiting_state = self.state_inflight.len();
                return;
            }
            let single_db = self.shared.router.namespaces.keyspace.is_single_db(ep);
            for (kind, frame) in self.state.iter().enumerate() {
                let Some(frame) = frame else { continue };
                if single_db && kind == StateKind::Select as usize {
                    // A single-database endpoint never leaves database 0.
                    continue;
                }
                link.replay.extend_from_slice(frame);
                link.skip += 1;
                link.replay_unanswered += 1;
            }
            link.prepared = true;
        }
        if link.may_connect() {
            self.start_connect(ep);
        }
    }

    fn start_connect(&mut self, ep: EndpointId) {
        if self.mux_ok {
            if let Some(handle) = self.shared.mux.attach(ep, self.number) {
                self.links[ep].conn = Conn::Shared(handle);
                return;
            }
        }
        let config = &self.shared.config;
        let endpoint = config.endpoints[ep].clone();
        let timeout = config.proxy.connect_timeout;
        let max_buffered = config.proxy.max_buffered_bytes;
        // The generation is read before the primary is looked up: a connection is never
        // credited with a newer generation than the primary it reaches.
        self.links[ep].opening();
        self.links[ep].conn = Conn::Connecting(Box::pin(crate::upstream::open_owned(
            endpoint,
            timeout,
            max_buffered,
        )));
    }

    /// A Sentinel endpoint's primary changed since this link's connection was opened: the
    /// next command must reach the new primary. A connection still being opened is simply
    /// opened again (nothing was sent on it); an open one fails, so the replies it owes become
    /// error replies through the usual path. Left alone: a connection whose reply is
    /// streaming to the client (failing it would end the client connection) and one holding
    /// an open transaction; Sentinel's `CLIENT KILL` on the demoted primary ends those.
    fn leave_old_primary(&mut self, ep: EndpointId) {
        match self.links[ep].conn {
            Conn::Connecting(_) => self.start_connect(ep),
            Conn::Ready(..) => {
                let streaming = self.front_started && self.front_endpoint() == Some(ep);
                if streaming || self.tx.is_some() {
                    return;
                }
                let name = &self.shared.config.endpoints[ep].name;
                tracing::debug!(endpoint = %name, "primary changed: leaving the old primary's connection");
                self.links[ep].fail(name, &UpstreamError::Failover);
            }
            // A shared connection leaves the old primary on its own.
            Conn::Idle | Conn::Shared(_) => {}
        }
    }

    /// The session needs its own connection state (or a connection it can block): from now
    /// on every link uses a dedicated connection. A link on a shared connection stays active
    /// until the command that needs it has been queued on it (a state command is sent on
    /// active links, not replayed later), then switches in [`Session::connect_waiting_links`]
    /// ([`Link::leave_shared`]); the replies the shared one owes are delivered first.
    /// Switching here instead broke the SELECT-refusal tests of tests/session_edge_cases.rs.
    fn leave_mux(&mut self) {
        self.mux_ok = false;
    }

    /// Releases empty buffers so that an idle connection holds almost no memory.
    ///
    /// With no reply owed, every empty buffer goes: the next read allocates anew, a small
    /// thread-local allocation, as HAProxy's buffers come and go with the data. While replies
    /// are owed, an empty buffer goes if a burst grew it past [`SHRINK_ABOVE`] or if it was
    /// read to its end: such a buffer reports no capacity yet may still hold its allocation,
    /// or share a larger one it was split from.
    fn release_idle_buffers(&mut self) {
        let idle = self.pending.is_empty();
        let shrink = |buf: &mut BytesMut| {
            if buf.is_empty() && (idle || buf.capacity() == 0 || buf.capacity() > SHRINK_ABOVE) {
                *buf = BytesMut::new();
            }
        };
        shrink(&mut self.cin);
        shrink(&mut self.cout);
        if idle && self.reissue.capacity() > SHRINK_ABOVE {
            self.reissue = Vec::new();
        }
        for link in &mut self.links {
            shrink(&mut link.wbuf);
            shrink(&mut link.rbuf);
        }
    }
}
