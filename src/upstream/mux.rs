//! Shared upstream connections: the stateless commands of many sessions, pipelined together.
//!
//! Unpipelined clients cost Redis (and turnout) one read and one write per request on a
//! dedicated connection each. Here a few connections per endpoint ([`Pool`]) carry the
//! requests of every session still in the plain state (database 0, no transaction, no
//! blocking command, no connection state): each session hands its link's queued requests
//! over as one batch with the number of replies it expects; the connection's task writes
//! whatever batches are waiting in one (vectored) write, small ones copied together and large
//! ones in their own buffers ([`Chain`]), and splits the replies back by count into each
//! session's [`Inbox`], in order. A session's batches to one endpoint always go to the same
//! connection, so its replies keep their order.
//!
//! A session that needs its own connection state leaves for a dedicated connection once the
//! shared one owes it nothing (see the session's link). When a shared connection fails,
//! every session it owed replies to gets the failure in its inbox, after the complete replies
//! already received; its requests still queued are dropped (they become error replies, as on
//! a dedicated connection), and the next request reconnects.
//!
//! Bounds: the queue of requests waiting to be written stops taking batches past
//! `max_buffered_bytes` (sessions wait and their clients are pushed back), and at most
//! [`MAX_INFLIGHT_BATCHES`] batches await replies. A shared connection cannot stop reading
//! for one slow client, so a session whose unread replies pass `max_buffered_bytes` hands
//! over nothing more and moves to its own connection, where the endpoint buffers what the
//! client cannot take yet: its inbox only grows by the replies to batches already sent.

use super::chain::Chain;
use super::UpstreamError;
use crate::config::{Config, EndpointConfig, EndpointId, EndpointKind};
use crate::resp::reply::ReplyScan;
use crate::stream::{poll_read_some, Stream, READ_CHUNK};
use bytes::{Buf, BytesMut};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Most batches one shared connection may have written and not yet answered.
pub const MAX_INFLIGHT_BATCHES: usize = 64 * 1024;
/// How much a shared connection's read buffer grows by: replies of many sessions arrive
/// together, and a few such buffers per endpoint cost little.
const SHARED_READ_CHUNK: usize = 4 * READ_CHUNK;
/// Replies of one session this large (or larger), read together, are handed over in the
/// buffer they were read into instead of being copied.
const OWN_BUFFER_AT: usize = super::chain::OWN_SEGMENT_AT;
/// Largest reply held back until whole (it then goes over in one piece); a larger one is
/// handed over as it comes.
const HOLD_MAX: usize = 1024 * 1024;
/// Turns of a connection's loop before it yields to other tasks.
const TURNS_BEFORE_YIELD: usize = 32;

/// Locks a mutex; a poisoned one (a panic elsewhere) is still used: its data stays whole,
/// as every critical section here only moves bytes and counters.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared connections of every endpoint that may have them.
#[derive(Debug, Default)]
pub struct Pool {
    /// Per endpoint, its shared connections (none for a cluster endpoint, or when
    /// `[proxy] multiplex` is off).
    endpoints: Vec<Vec<Arc<MuxConn>>>,
}

impl Pool {
    /// The pool for `config`: `proxy.shared_connections` per endpoint, opened lazily.
    pub fn new(config: &Config) -> Pool {
        if !config.proxy.multiplex {
            return Pool::default();
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|endpoint| match endpoint.kind {
                // The slot router behind a cluster endpoint keeps its own connections.
                EndpointKind::Cluster { .. } => Vec::new(),
                _ => (0..config.proxy.shared_connections)
                    .map(|_| {
                        Arc::new(MuxConn::new(
                            endpoint.clone(),
                            config.proxy.connect_timeout,
                            config.proxy.max_buffered_bytes,
                        ))
                    })
                    .collect(),
            })
            .collect();
        Pool { endpoints }
    }

    /// A new handle on one of `ep`'s shared connections (chosen by `session`, so that a
    /// session's batches always take the same one), or `None` if `ep` has none.
    pub fn attach(&self, ep: EndpointId, session: u64) -> Option<Handle> {
        let conns = self.endpoints.get(ep)?;
        if conns.is_empty() {
            return None;
        }
        let conn = conns[(session % conns.len() as u64) as usize].clone();
        Some(Handle {
            conn,
            inbox: Arc::new(Inbox::default()),
        })
    }
}

/// A session's attachment to one shared connection: where its batches go and its replies
/// come back. A new handle (a new inbox) is taken after every failure.
pub struct Handle {
    conn: Arc<MuxConn>,
    inbox: Arc<Inbox>,
}

impl Handle {
    /// Hands `requests` (expecting `replies` replies) to the shared connection, leaving
    /// `requests` empty. `Pending` (with the task woken later) while its queue is full.
    pub fn submit(&self, cx: &mut Context<'_>, requests: &mut BytesMut, replies: u64) -> Poll<()> {
        let wake = {
            let mut queue = lock(&self.conn.queue);
            if !queue.buf.is_empty() && queue.buf.len() + requests.len() > self.conn.limit {
                if !queue.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    queue.waiters.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let len = requests.len();
            queue.buf.append(requests);
            self.inbox.outstanding.fetch_add(replies, Ordering::AcqRel);
            queue.batches.push_back(Batch {
                inbox: self.inbox.clone(),
                replies,
                len,
            });
            if !queue.running {
                queue.running = true;
                tokio::spawn(run(self.conn.clone()));
            }
            queue.task.take()
        };
        if let Some(task) = wake {
            task.wake();
        }
        Poll::Ready(())
    }

    /// Whether every request handed over has been answered in full (or the connection
    /// failed): only then have they all run, and a dedicated connection that takes the
    /// session's later requests cannot overtake them.
    pub fn all_answered(&self) -> bool {
        self.inbox.outstanding.load(Ordering::Acquire) == 0
            || self.inbox.failed.load(Ordering::Acquire)
    }

    /// Reply bytes waiting in the inbox, not yet taken.
    pub fn buffered(&self) -> usize {
        self.inbox.buffered.load(Ordering::Relaxed)
    }

    /// Moves the replies received so far into `rbuf`; returns whether any came, and the
    /// failure of the shared connection once its replies are all in. Registers for a wake-up
    /// when nothing came.
    pub fn take(
        &self,
        cx: &mut Context<'_>,
        rbuf: &mut BytesMut,
    ) -> (bool, Option<Arc<UpstreamError>>) {
        let mut state = lock(&self.inbox.state);
        let moved = !state.buf.is_empty();
        if moved {
            self.inbox.buffered.store(0, Ordering::Relaxed);
            if rbuf.is_empty() {
                // The session's emptied buffer is not kept: one read to its end may still
                // hold, or share, a large allocation while reporting no room (a reply piece
                // handed over whole), and nothing here can tell.
                *rbuf = std::mem::take(&mut state.buf);
            } else {
                rbuf.extend_from_slice(&state.buf);
                state.buf.clear();
                if !recyclable(&state.buf) {
                    state.buf = BytesMut::new();
                }
            }
        }
        let failure = state.failure.take();
        if !moved && failure.is_none() {
            match &state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
        }
        (moved, failure)
    }
}

/// Whether the inbox's own emptied buffer may take its next replies: a small one it grew itself
/// (never read from, so its capacity is all it holds). A reply piece handed over whole is at
/// least [`OWN_BUFFER_AT`] and may share a larger allocation: it goes.
fn recyclable(buf: &BytesMut) -> bool {
    buf.capacity() < OWN_BUFFER_AT
}

/// Where a shared connection puts one session's replies.
#[derive(Debug, Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
    /// The connection failed with replies owed to this inbox: its queued batches are dropped.
    failed: AtomicBool,
    /// Bytes in `state.buf`, readable without the lock.
    buffered: AtomicUsize,
    /// Replies handed over and not yet received in full.
    outstanding: AtomicU64,
}

#[derive(Debug, Default)]
struct InboxState {
    /// Reply bytes not yet taken by the session (the last one may be partial).
    buf: BytesMut,
    /// The connection's failure, for the session to turn what is still owed into errors.
    failure: Option<Arc<UpstreamError>>,
    /// The session to wake.
    waker: Option<Waker>,
}

impl Inbox {
    /// Appends reply bytes (`put` adds them to the inbox's buffer), `completed` of whose
    /// replies end in them, and wakes the session.
    fn deliver(self: &Arc<Self>, completed: u64, put: impl FnOnce(&mut BytesMut)) {
        self.outstanding.fetch_sub(completed, Ordering::AcqRel);
        if Arc::strong_count(self) == 1 {
            // The session is gone: nobody reads these replies.
            return;
        }
        let waker = {
            let mut state = lock(&self.state);
            put(&mut state.buf);
            self.buffered.store(state.buf.len(), Ordering::Relaxed);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn fail(&self, cause: &Arc<UpstreamError>) {
        self.failed.store(true, Ordering::Release);
        let waker = {
            let mut state = lock(&self.state);
            if state.failure.is_none() {
                state.failure = Some(cause.clone());
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Requests of one session, in one piece of the connection's byte stream.
struct Batch {
    inbox: Arc<Inbox>,
    /// Replies still owed.
    replies: u64,
    /// Its bytes.
    len: usize,
}

/// Batches waiting to be taken by the connection's task.
#[derive(Default)]
struct Queue {
    buf: Chain,
    batches: VecDeque<Batch>,
    /// The connection's task, to wake when a batch arrives.
    task: Option<Waker>,
    /// The task has been spawned.
    running: bool,
    /// Sessions waiting for room.
    waiters: Vec<Waker>,
}

/// One shared connection to an endpoint.
struct MuxConn {
    endpoint: EndpointConfig,
    connect_timeout: Duration,
    /// Bytes of waiting batches past which sessions wait.
    limit: usize,
    /// A Sentinel endpoint's primary generation: a connection opened under an older one is
    /// left for the new primary.
    generation: Option<Arc<AtomicU64>>,
    queue: Mutex<Queue>,
}

impl std::fmt::Debug for MuxConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxConn")
            .field("endpoint", &self.endpoint.name)
            .finish_non_exhaustive()
    }
}

impl MuxConn {
    fn new(endpoint: EndpointConfig, connect_timeout: Duration, limit: usize) -> Self {
        MuxConn {
            generation: super::sentinel::generation(&endpoint),
            endpoint,
            connect_timeout,
            limit,
            queue: Mutex::new(Queue::default()),
        }
    }

    /// `Ready` once batches are waiting.
    fn poll_work(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut queue = lock(&self.queue);
        if queue.batches.is_empty() {
            queue.task = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Whether batches wait to be taken.
    fn has_queued(&self) -> bool {
        !lock(&self.queue).batches.is_empty()
    }

    /// Moves waiting batches behind `wbuf` and `inflight`, dropping those whose session was
    /// told its connection failed; returns whether any moved.
    fn take_queued(
        &self,
        cx: &mut Context<'_>,
        wbuf: &mut Chain,
        inflight: &mut VecDeque<Batch>,
    ) -> bool {
        let waiters = {
            let mut queue = lock(&self.queue);
            match &queue.task {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => queue.task = Some(cx.waker().clone()),
            }
            if queue.batches.is_empty() {
                return false;
            }
            let queue = &mut *queue;
            if queue
                .batches
                .iter()
                .any(|b| b.inbox.failed.load(Ordering::Acquire))
            {
                for batch in queue.batches.drain(..) {
                    if batch.inbox.failed.load(Ordering::Acquire) {
                        queue.buf.move_front(batch.len, None);
                    } else {
                        queue.buf.move_front(batch.len, Some(wbuf));
                        inflight.push_back(batch);
                    }
                }
            } else {
                wbuf.append_chain(&mut queue.buf);
                inflight.extend(queue.batches.drain(..));
            }
            queue.buf.clear();
            std::mem::take(&mut queue.waiters)
        };
        for waiter in waiters {
            waiter.wake();
        }
        true
    }

    /// A connection could not be opened: every waiting batch fails with `cause`.
    fn fail_queued(&self, cause: &Arc<UpstreamError>) {
        let (batches, waiters) = {
            let mut queue = lock(&self.queue);
            queue.buf.clear();
            let batches: Vec<Batch> = queue.batches.drain(..).collect();
            (batches, std::mem::take(&mut queue.waiters))
        };
        for batch in batches {
            batch.inbox.fail(cause);
        }
        for waiter in waiters {
            waiter.wake();
        }
    }
}

/// A shared connection's task: connects when batches wait, serves until the connection
/// fails, and starts over.
async fn run(conn: Arc<MuxConn>) {
    loop {
        poll_fn(|cx| conn.poll_work(cx)).await;
        let opened_under = conn.generation.as_ref().map(|g| g.load(Ordering::Acquire));
        let stream = match super::open_owned(
            conn.endpoint.clone(),
            conn.connect_timeout,
            conn.limit,
        )
        .await
        {
            Ok(stream) => stream,
            Err(cause) => {
                tracing::debug!(endpoint = %conn.endpoint.name, cause = %cause, "shared connection could not be opened");
                conn.fail_queued(&Arc::new(cause));
                continue;
            }
        };
        let _gauge = crate::metrics::upstream_connected(&conn.endpoint.name);
        let mut driver = Driver {
            stream,
            wbuf: Chain::default(),
            rbuf: BytesMut::new(),
            inflight: VecDeque::new(),
            scan: ReplyScan::new(),
            held: 0,
            opened_under,
            gathered: false,
        };
        let cause = loop {
            match poll_fn(|cx| driver.poll(&conn, cx)).await {
                Step::Gather => tokio::task::yield_now().await,
                Step::Failed(cause) => break Arc::new(cause),
            }
        };
        if driver.inflight.is_empty() {
            tracing::debug!(endpoint = %conn.endpoint.name, cause = %cause, "idle shared connection closed");
        } else {
            tracing::debug!(endpoint = %conn.endpoint.name, cause = %cause, "shared connection failed");
        }
        for batch in driver.inflight.drain(..) {
            batch.inbox.fail(&cause);
        }
    }
}

/// Why a shared connection's driver stopped polling.
enum Step {
    /// Batches wait and nothing is being written: let every session that is ready run
    /// first (tokio's `yield_now` waits for the next look at the sockets), so that their
    /// requests go out together in one write. Without this the connection's task, woken by
    /// the first session, ran right after it (tokio runs a task woken by the running one
    /// next) and wrote one request per write: Redis then read and answered about two
    /// requests per system call instead of ten, and spent twice the CPU of twemproxy's.
    Gather,
    /// The connection failed, and why.
    Failed(UpstreamError),
}

/// One open shared connection.
struct Driver {
    stream: Stream,
    /// Requests not yet written.
    wbuf: Chain,
    /// Replies not yet split out.
    rbuf: BytesMut,
    /// Batches written (or being written) whose replies are still owed, oldest first.
    inflight: VecDeque<Batch>,
    /// Progress through the reply at the start of `rbuf`.
    scan: ReplyScan,
    /// Bytes at the start of `rbuf` that begin the front reply, scanned and held back until
    /// it is whole (see [`Driver::split_replies`]).
    held: usize,
    /// The Sentinel generation the connection was opened under.
    opened_under: Option<u64>,
    /// The driver has let other tasks run since its last write emptied `wbuf`.
    gathered: bool,
}

impl Driver {
    /// Serves until the connection fails (returning why) or until it should gather batches.
    fn poll(&mut self, conn: &MuxConn, cx: &mut Context<'_>) -> Poll<Step> {
        for _ in 0..TURNS_BEFORE_YIELD {
            if let (Some(generation), Some(opened)) = (&conn.generation, self.opened_under) {
                if generation.load(Ordering::Acquire) != opened {
                    return Poll::Ready(Step::Failed(UpstreamError::Failover));
                }
            }
            let mut progressed = false;
            if self.wbuf.is_empty() && !self.gathered && conn.has_queued() {
                self.gathered = true;
                return Poll::Ready(Step::Gather);
            }
            if self.wbuf.len() < conn.limit && self.inflight.len() < MAX_INFLIGHT_BATCHES {
                progressed |= conn.take_queued(cx, &mut self.wbuf, &mut self.inflight);
            }
            match super::write_chain_ready(&mut self.stream, cx, &mut self.wbuf) {
                Ok(wrote) => progressed |= wrote > 0,
                Err(cause) => return Poll::Ready(Step::Failed(cause)),
            }
            if self.wbuf.is_empty() {
                self.gathered = false;
            }
            match poll_read_some(&mut self.stream, cx, &mut self.rbuf, SHARED_READ_CHUNK) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Step::Failed(UpstreamError::Closed)),
                Poll::Ready(Ok(_)) => {
                    if let Err(cause) = self.split_replies() {
                        return Poll::Ready(Step::Failed(cause));
                    }
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Step::Failed(UpstreamError::io(e))),
                Poll::Pending => {}
            }
            if !progressed {
                return Poll::Pending;
            }
        }
        // Busy: let other tasks run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Hands the replies in `rbuf` to their sessions. A reply not yet whole waits in `rbuf`
    /// while it (with what is still announced) fits in [`HOLD_MAX`], with room made for the
    /// rest, so that a large value goes over in one piece, uncopied; a larger one goes over
    /// in pieces as it comes, without being buffered whole (the last MiB of it may wait).
    fn split_replies(&mut self) -> Result<(), UpstreamError> {
        // Scanned up to `pos` (`rbuf[..held]` is the start of the front reply, scanned
        // already), handed over up to `start`; the reply being scanned began at `reply_start`.
        // What lies between `start` and `pos` is held back.
        let mut pos = self.held;
        let mut start = 0;
        let mut reply_start = 0;
        let mut handed_over = false;
        while pos < self.rbuf.len() {
            let Some(front) = self.inflight.front_mut() else {
                return Err(UpstreamError::Unsupported(
                    "the endpoint sent a reply nobody asked for on a shared connection".into(),
                ));
            };
            let mut completed = 0;
            while front.replies > 0 && pos < self.rbuf.len() {
                pos += self
                    .scan
                    .advance(&self.rbuf[pos..])
                    .map_err(UpstreamError::Protocol)?;
                if !self.scan.is_done() {
                    break;
                }
                self.scan = ReplyScan::new();
                front.replies -= 1;
                completed += 1;
                reply_start = pos;
            }
            let whole = front.replies == 0 || pos == reply_start;
            let announced = usize::try_from(self.scan.bulk_left()).unwrap_or(usize::MAX);
            let hold = !whole && (pos - reply_start).saturating_add(announced) <= HOLD_MAX;
            // What goes now: up to the reply held back, or all that was scanned.
            let end = if hold { reply_start } else { pos };
            if end - start >= OWN_BUFFER_AT {
                // A large piece leaves in the buffer it was read into: what came before it
                // has been copied out already, and the buffer reads on in a new allocation
                // (cheaper than copying the value).
                self.rbuf.advance(start);
                let mut piece = self.rbuf.split_to(end - start);
                handed_over = true;
                // A reply too large to hold began in the piece: the rest of it goes later.
                (pos, reply_start, start) = (pos - end, reply_start.saturating_sub(end), 0);
                front.inbox.deliver(completed, |buf| {
                    if buf.is_empty() {
                        std::mem::swap(buf, &mut piece);
                    } else {
                        buf.extend_from_slice(&piece);
                    }
                });
            } else if end > start || completed > 0 {
                let piece = &self.rbuf[start..end];
                front
                    .inbox
                    .deliver(completed, |buf| buf.extend_from_slice(piece));
                start = end;
            }
            if front.replies > 0 {
                break;
            }
            self.inflight.pop_front();
        }
        self.held = pos - start;
        self.rbuf.advance(start);
        if handed_over && self.rbuf.is_empty() {
            // What is left of an allocation whose piece went: the next read starts afresh
            // rather than keep (and later reclaim) the whole of it for good.
            self.rbuf = BytesMut::new();
        }
        if self.held > 0 {
            let announced = usize::try_from(self.scan.bulk_left()).unwrap_or(usize::MAX);
            crate::stream::reserve_ahead(&mut self.rbuf, announced);
        }
        // Batches answered already (or expecting nothing) leave the line too.
        while self.inflight.front().is_some_and(|b| b.replies == 0) {
            self.inflight.pop_front();
        }
        Ok(())
    }
}
