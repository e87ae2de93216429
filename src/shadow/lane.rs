//! One connection to a shadow or secondary endpoint, and the bounded queue that feeds it.
//!
//! A lane writes its jobs pipelined, reads the replies in order, and settles each: a mirrored
//! write is counted as accepted or failed; a shadowed read waits (bounded by
//! `compare_timeout`) for the client's reply and is compared. Nothing here can slow a
//! session: the queue is bounded and sessions never wait on it, replies are read as they
//! come whatever the sessions do, a reply larger than `max_compare_bytes` streams through
//! without being kept, and a connection that stops answering is dropped.

use super::compare::{self, Compare};
use super::report::{Outcome, Report};
use super::{Check, ConnState, Job, Primary};
use crate::command::CommandId;
use crate::config::{Config, EndpointId};
use crate::resp::is_error;
use crate::resp::reply::ReplyScan;
use crate::route::NsId;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;

use std::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed},
};
use std::sync::Arc;

use crate::stream::Stream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const SELECT_0: &[u8] = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n";
const HELLO_2: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n";
/// First and longest wait before reconnecting to an endpoint that refused a connection.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Lane read buffers grow by this much.
const READ_CHUNK: usize = 64 * 1024;
/// Longest a lane with comparisons waiting for client replies sleeps before checking them.
const WAITING_TICK: Duration = Duration::from_millis(2);

/// A job whose reply identifies it.
#[derive(Debug)]
struct Meta {
    ns: NsId,
    command: CommandId,
    /// The request, for its key in reports.
    frame: Bytes,
    key: std::ops::Range<usize>,
    /// Request bytes, given back to the budget when settled.
    size: usize,
}

/// A reply the lane waits for, in request order.
#[derive(Debug)]
enum Expect {
    /// To the lane's own SELECT or HELLO.
    State,
    /// To a leading part of a replayed transaction (MULTI, a queued command).
    Part,
    /// To the job itself.
    Done(Meta, DoneCheck),
}

#[derive(Debug)]
enum DoneCheck {
    Compare(oneshot::Receiver<Primary>, Compare),
    Write { transaction: bool },
}

/// A shadow reply waiting for the client's reply to compare with.
#[derive(Debug)]
struct Waiting {
    meta: Meta,
    how: Compare,
    shadow: Bytes,
    primary: oneshot::Receiver<Primary>,
    deadline: Instant,
}

pub(super) struct Lane {
    endpoint: EndpointId,
    config: Arc<Config>,
    report: Arc<Report>,
    queued_bytes: Arc<AtomicUsize>,
    /// Jobs sessions queued for this lane and it has not taken yet.
    queued_jobs: Arc<AtomicUsize>,
    /// Per namespace, jobs submitted and not yet answered, failed or dropped.
    outstanding: Arc<[AtomicU64]>,
    /// The connection's SELECT and HELLO, as last sent.
    applied: ConnState,
    in_flight: VecDeque<(Instant, Expect)>,
    waiting: VecDeque<Waiting>,
    wbuf: BytesMut,
    rbuf: BytesMut,
    scan: ReplyScan,
    /// The reply being read, unless it outgrew `max_compare_bytes`.
    reply: BytesMut,
    oversize: bool,
    /// The first error among the leading parts of the transaction being read.
    part_error: Option<Bytes>,
    /// SELECT/HELLO commands written and not yet answered: jobs wait in `held` meanwhile,
    /// so a refused one never lets a copy run in the wrong database or protocol.
    unsettled_state: usize,
    held: VecDeque<Job>,
    /// A Sentinel endpoint's primary generation (`None` for other endpoints), and the one the
    /// connection was opened under: copies must follow a failover as client commands do.
    generation: Option<Arc<AtomicU64>>,
    opened_under: u64,
    /// A batch taken off the queue after the primary changed, for the next connection.
    carried: Option<Vec<Job>>,
}

impl Lane {
    pub(super) fn new(
        endpoint: EndpointId,
        config: Arc<Config>,
        report: Arc<Report>,
        queued_bytes: Arc<AtomicUsize>,
        queued_jobs: Arc<AtomicUsize>,
        outstanding: Arc<[AtomicU64]>,
    ) -> Self {
        Lane {
            endpoint,
            config,
            report,
            queued_bytes,
            queued_jobs,
            outstanding,
            applied: ConnState::default(),
            in_flight: VecDeque::new(),
            waiting: VecDeque::new(),
            wbuf: BytesMut::new(),
            rbuf: BytesMut::new(),
            scan: ReplyScan::new(),
            reply: BytesMut::new(),
            oversize: false,
            part_error: None,
            unsettled_state: 0,
            held: VecDeque::new(),
            generation: None,
            opened_under: 0,
            carried: None,
        }
    }

    /// Follows a Sentinel endpoint's primary generation (see [`Self::stale_primary`]).
    pub(super) fn following(mut self, generation: Option<Arc<AtomicU64>>) -> Self {
        self.generation = generation;
        self
    }

    /// Whether the endpoint's primary changed since the connection was opened (a Sentinel
    /// failover): the connection then leads to a demoted server.
    fn stale_primary(&self) -> bool {
        self.generation
            .as_ref()
            .is_some_and(|g| g.load(Acquire) != self.opened_under)
    }

    /// Serves jobs until every sender is gone.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Vec<Job>>) {
        let timeout = self.config.proxy.connect_timeout;
        let mut backoff = BACKOFF_MIN;
        loop {
            let batch = match self.carried.take() {
                Some(batch) => batch,
                None => {
                    let Some(batch) = rx.recv().await else {
                        return;
                    };
                    self.queued_jobs.fetch_sub(batch.len(), Relaxed);
                    batch
                }
            };
            // Loaded before connecting: a failover during the connect is seen at the next
            // batch, at worst one reconnection too many.
            if let Some(generation) = &self.generation {
                self.opened_under = generation.load(Acquire);
            }
            let stream = match crate::upstream::open_bounded(
                &self.config.endpoints[self.endpoint],
                timeout,
                self.config.proxy.max_buffered_bytes,
            )
            .await
            {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(endpoint = %self.config.endpoints[self.endpoint].name, cause = %e, "shadow connection failed");
                    batch.into_iter().for_each(|job| self.drop_job(job));
                    if self.back_off(&mut rx, backoff).await {
                        return;
                    }
                    backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            self.applied = ConnState::default();
            self.accept_all(batch);
            match self.serve(stream, &mut rx).await {
                Ok(()) => return,
                Err(cause) => {
                    tracing::debug!(endpoint = %self.config.endpoints[self.endpoint].name, %cause, "shadow connection lost");
                    self.fail_in_flight(&cause);
                }
            }
        }
    }

    /// Drops every job that arrives for `delay`; true if the queue closed.
    async fn back_off(&mut self, rx: &mut mpsc::Receiver<Vec<Job>>, delay: Duration) -> bool {
        let until = later(delay);
        self.settle_waiting(true);
        loop {
            tokio::select! {
                batch = rx.recv() => match batch {
                    Some(batch) => {
                        self.queued_jobs.fetch_sub(batch.len(), Relaxed);
                        batch.into_iter().for_each(|job| self.drop_job(job));
                    }
                    None => return true,
                },
                () = tokio::time::sleep_until(until) => return false,
            }
        }
    }

    /// Takes the batches already queued, while there is room.
    fn take_ready(&mut self, rx: &mut mpsc::Receiver<Vec<Job>>) {
        while self.has_room() {
            match rx.try_recv() {
                Ok(batch) => self.take(batch),
                Err(_) => break,
            }
        }
    }

    /// Accepts a batch from the queue.
    fn take(&mut self, batch: Vec<Job>) {
        self.queued_jobs.fetch_sub(batch.len(), Relaxed);
        self.accept_all(batch);
    }

    fn accept_all(&mut self, batch: Vec<Job>) {
        let now = Instant::now();
        for job in batch {
            self.accept(job, now);
        }
    }

    /// A job leaves the lane (answered, failed or dropped): its bytes and its count go back.
    fn release(&self, ns: NsId, size: usize) {
        self.queued_bytes.fetch_sub(size, Relaxed);
        if let Some(n) = self.outstanding.get(usize::from(ns)) {
            n.fetch_sub(1, Relaxed);
        }
    }

    fn drop_job(&mut self, job: Job) {
        self.release(job.ns, job.frame.len());
        self.report.record(job.ns, job.command, Outcome::Dropped);
    }

    /// Writes a job (after any SELECT or HELLO it needs) and records the replies it owes.
    fn accept(&mut self, job: Job, now: Instant) {
        if self.unsettled_state > 0 {
            // Wait until the connection's state is known before sending more.
            self.held.push_back(job);
        } else if job.state != self.applied {
            self.held.push_back(job);
            self.write_state_for_held(now);
        } else {
            self.write_job(job, now);
        }
    }

    /// Writes the SELECT/HELLO the first held job needs; the job waits for their answers.
    fn write_state_for_held(&mut self, now: Instant) {
        let Some(state) = self.held.front().map(|j| j.state.clone()) else {
            return;
        };
        if state.hello != self.applied.hello {
            let frame = state.hello.as_deref().unwrap_or(HELLO_2);
            self.wbuf.extend_from_slice(frame);
            self.in_flight.push_back((now, Expect::State));
            self.unsettled_state += 1;
        }
        if state.select != self.applied.select {
            let frame = state.select.as_deref().unwrap_or(SELECT_0);
            self.wbuf.extend_from_slice(frame);
            self.in_flight.push_back((now, Expect::State));
            self.unsettled_state += 1;
        }
        self.applied = state;
    }

    /// A SELECT/HELLO was answered: once all are, held jobs go out (or, after a refusal,
    /// those needing the refused state fail).
    fn state_answered(&mut self, refused: Option<Bytes>) {
        self.unsettled_state = self.unsettled_state.saturating_sub(1);
        if let Some(reply) = refused {
            tracing::debug!(reply = %String::from_utf8_lossy(&reply), "shadow connection state refused");
            // Which of the commands took effect is unknown: the next job restates both
            // (an empty frame matches no real state).
            let unknown = ConnState {
                select: Some(Bytes::new()),
                hello: Some(Bytes::new()),
            };
            let wanted = std::mem::replace(&mut self.applied, unknown);
            // Every held job that needed it fails; the others are retried below.
            let held = std::mem::take(&mut self.held);
            for job in held {
                if job.state == wanted {
                    self.release(job.ns, job.frame.len());
                    self.report.log_note(
                        job.ns,
                        job.command,
                        Outcome::ShadowError,
                        key_of(&job.frame, &job.key),
                        &format!(
                            "the endpoint refused the session's connection state: {}",
                            String::from_utf8_lossy(&reply).trim_end()
                        ),
                    );
                } else {
                    self.held.push_back(job);
                }
            }
        }
        if self.unsettled_state > 0 {
            return;
        }
        let now = Instant::now();
        while let Some(job) = self.held.pop_front() {
            if job.state != self.applied {
                self.held.push_front(job);
                return self.write_state_for_held(now);
            }
            self.write_job(job, now);
        }
    }

    fn write_job(&mut self, job: Job, now: Instant) {
        self.wbuf.extend_from_slice(&job.frame);
        let meta = Meta {
            ns: job.ns,
            command: job.command,
            size: job.frame.len(),
            key: job.key,
            frame: job.frame,
        };
        let check = match job.check {
            Check::Compare { primary, how } => DoneCheck::Compare(primary, how),
            Check::Write { replies } => {
                for _ in 1..replies {
                    self.in_flight.push_back((now, Expect::Part));
                }
                DoneCheck::Write {
                    transaction: replies > 1,
                }
            }
        };
        self.in_flight.push_back((now, Expect::Done(meta, check)));
    }

    fn has_room(&self) -> bool {
        self.in_flight.len() + self.waiting.len() + self.held.len() < self.config.shadow.in_flight
    }

    /// Runs one connection until it fails (`Err`) or the queue closes and everything is
    /// settled (`Ok`).
    async fn serve(
        &mut self,
        stream: Stream,
        rx: &mut mpsc::Receiver<Vec<Job>>,
    ) -> Result<(), String> {
        match stream {
            Stream::Tcp(tcp) => {
                let (reader, writer) = tcp.into_split();
                self.serve_halves(reader, writer, false, rx).await
            }
            other => {
                let (reader, writer) = tokio::io::split(other);
                self.serve_halves(reader, writer, true, rx).await
            }
        }
    }

    /// [`Self::serve`] on a connection's two halves. A TLS writer holds back what it has
    /// encrypted until flushed, so `flushes` makes every write end with a flush, retried until
    /// it completes.
    async fn serve_halves<R, W>(
        &mut self,
        mut reader: R,
        mut writer: W,
        flushes: bool,
        rx: &mut mpsc::Receiver<Vec<Job>>,
    ) -> Result<(), String>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut unflushed = false;
        let stall = self.config.shadow.compare_timeout;
        let mut closed = false;
        loop {
            self.settle_waiting(false);
            if closed && self.in_flight.is_empty() && self.waiting.is_empty() {
                return Ok(());
            }
            let room = !closed && self.has_room();
            let stalled_at = self.in_flight.front().map(|(sent, _)| *sent + stall);
            // Client replies are picked up without being awaited (awaiting each would wake
            // this task once per copy): whenever the lane wakes, and at least every tick.
            let wait_until = self
                .waiting
                .front()
                .map(|w| w.deadline.min(Instant::now() + WAITING_TICK));
            let deadline = match (stalled_at, wait_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Read in large pieces: an empty BytesMut would be filled 64 bytes per read.
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
                self.rbuf.reserve(READ_CHUNK);
            }
            let wbuf = &mut self.wbuf;
            let rbuf = &mut self.rbuf;
            let writing = !wbuf.is_empty() || unflushed;
            unflushed |= flushes && !wbuf.is_empty();
            tokio::select! {
                batch = rx.recv(), if room => match batch {
                    Some(batch) if self.stale_primary() => {
                        // Between batches: the next one goes to the new primary.
                        self.queued_jobs.fetch_sub(batch.len(), Relaxed);
                        self.carried = Some(batch);
                        return Err("the primary changed (failover)".to_string());
                    }
                    Some(batch) => {
                        self.take(batch);
                        self.take_ready(rx);
                        // Let every session that is ready hand over its copies first, so
                        // that they leave in one write (tokio would otherwise run this lane
                        // right after the session that woke it, as for shared connections).
                        tokio::task::yield_now().await;
                        self.take_ready(rx);
                    }
                    None => closed = true,
                },
                written = write_flushed(&mut writer, wbuf, flushes), if writing => match written {
                    Ok(0) => return Err("connection closed while writing".to_string()),
                    Ok(_) => unflushed = false,
                    Err(e) => return Err(format!("write failed: {e}")),
                },
                read = reader.read_buf(rbuf) => match read {
                    Ok(0) => return Err("connection closed by the endpoint".to_string()),
                    Ok(_) => self.read_replies()?,
                    Err(e) => return Err(format!("read failed: {e}")),
                },
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let now = Instant::now();
                    if stalled_at.is_some_and(|at| at <= now) {
                        return Err(format!("no reply within {}", humantime::format_duration(stall)));
                    }
                    self.settle_waiting(false);
                },
            }
        }
    }

    /// Settles every complete reply in the read buffer.
    fn read_replies(&mut self) -> Result<(), String> {
        let max = self.config.shadow.max_compare_bytes;
        while !self.rbuf.is_empty() {
            let n = self
                .scan
                .advance(&self.rbuf)
                .map_err(|e| format!("endpoint sent invalid RESP: {e}"))?;
            if !self.oversize {
                if self.reply.len() + n > max {
                    self.oversize = true;
                    self.reply = BytesMut::new();
                } else {
                    self.reply.extend_from_slice(&self.rbuf[..n]);
                }
            }
            self.rbuf.advance(n);
            if !self.scan.is_done() {
                break;
            }
            let push = self.scan.is_push();
            self.scan = ReplyScan::new();
            let oversize = std::mem::take(&mut self.oversize);
            if push {
                self.reply.clear();
                continue;
            }
            let Some((_, expect)) = self.in_flight.pop_front() else {
                return Err("endpoint sent a reply nobody asked for".to_string());
            };
            // The buffer is reused: whatever must outlive this call is copied out of it.
            let reply = std::mem::take(&mut self.reply);
            self.settle_reply(expect, (!oversize).then_some(&reply[..]));
            self.reply = reply;
            self.reply.clear();
        }
        Ok(())
    }

    /// Handles one reply (`None`: too large to keep).
    fn settle_reply(&mut self, expect: Expect, reply: Option<&[u8]>) {
        match expect {
            Expect::State => {
                let refused = match reply {
                    Some(r) if is_error(r) => Some(Bytes::copy_from_slice(r)),
                    Some(_) => None,
                    None => Some(Bytes::from_static(b"-ERR reply too large")),
                };
                self.state_answered(refused);
            }
            Expect::Part => {
                if let Some(reply) = reply.filter(|r| is_error(r)) {
                    self.part_error
                        .get_or_insert_with(|| Bytes::copy_from_slice(reply));
                }
            }
            Expect::Done(meta, DoneCheck::Write { transaction }) => {
                self.release(meta.ns, meta.size);
                let part_error = self.part_error.take();
                let failed = match (&part_error, reply) {
                    (Some(error), _) => Some(&error[..]),
                    (None, Some(r)) if is_error(r) || (transaction && exec_failed(r)) => Some(r),
                    _ => None,
                };
                match failed {
                    Some(error) => self.report.log(
                        meta.ns,
                        meta.command,
                        Outcome::ShadowError,
                        key_of(&meta.frame, &meta.key),
                        b"",
                        error,
                    ),
                    None => self.report.record(meta.ns, meta.command, Outcome::Mirrored),
                }
            }
            Expect::Done(meta, DoneCheck::Compare(primary, how)) => {
                self.release(meta.ns, meta.size);
                let Some(shadow) = reply else {
                    return self.report.record(meta.ns, meta.command, Outcome::Dropped);
                };
                let mut primary = primary;
                match primary.try_recv() {
                    // Usually the client's reply is already there: compare at once.
                    Ok(p) => self.settle(&meta, how, shadow, Some(p)),
                    Err(oneshot::error::TryRecvError::Closed) => {
                        self.settle(&meta, how, shadow, None)
                    }
                    Err(oneshot::error::TryRecvError::Empty) => self.waiting.push_back(Waiting {
                        meta,
                        how,
                        shadow: Bytes::copy_from_slice(shadow),
                        primary,
                        deadline: later(self.config.shadow.compare_timeout),
                    }),
                }
            }
        }
    }

    /// Compares every waiting reply whose client reply has come, and gives up on those
    /// past their deadline (or all of them, with `all`).
    fn settle_waiting(&mut self, all: bool) {
        let now = Instant::now();
        while let Some(front) = self.waiting.front_mut() {
            let primary = match front.primary.try_recv() {
                Ok(p) => Some(p),
                Err(oneshot::error::TryRecvError::Closed) => None,
                Err(oneshot::error::TryRecvError::Empty) if all || front.deadline <= now => None,
                Err(oneshot::error::TryRecvError::Empty) => break,
            };
            if let Some(w) = self.waiting.pop_front() {
                self.settle(&w.meta, w.how, &w.shadow, primary);
            }
        }
    }

    /// Compares a shadow reply with the client's (`None`: never came).
    fn settle(&self, meta: &Meta, how: Compare, shadow: &[u8], primary: Option<Primary>) {
        let tolerance = self.config.shadow.ttl_tolerance.as_millis() as u64;
        match primary {
            Some(Primary::Reply(p)) if compare::same(how, &p, shadow, tolerance) => {
                self.report.record(meta.ns, meta.command, Outcome::Match)
            }
            Some(Primary::Reply(p)) => self.report.log(
                meta.ns,
                meta.command,
                Outcome::Mismatch,
                key_of(&meta.frame, &meta.key),
                &p,
                shadow,
            ),
            Some(Primary::TooLarge) | None => {
                self.report.record(meta.ns, meta.command, Outcome::Dropped)
            }
        }
    }

    /// A connection failed: every reply it owed is a shadow error.
    fn fail_in_flight(&mut self, cause: &str) {
        for job in std::mem::take(&mut self.held) {
            self.release(job.ns, job.frame.len());
            self.report.log_note(
                job.ns,
                job.command,
                Outcome::ShadowError,
                key_of(&job.frame, &job.key),
                cause,
            );
        }
        self.unsettled_state = 0;
        for (_, expect) in std::mem::take(&mut self.in_flight) {
            if let Expect::Done(meta, _) = expect {
                self.release(meta.ns, meta.size);
                self.report.log_note(
                    meta.ns,
                    meta.command,
                    Outcome::ShadowError,
                    key_of(&meta.frame, &meta.key),
                    cause,
                );
            }
        }
        self.wbuf = BytesMut::new();
        self.rbuf = BytesMut::new();
        self.reply = BytesMut::new();
        self.scan = ReplyScan::new();
        self.oversize = false;
        self.part_error = None;
        self.settle_waiting(true);
    }
}

/// A job's key, for reports.
fn key_of<'a>(frame: &'a [u8], key: &std::ops::Range<usize>) -> &'a [u8] {
    frame.get(key.clone()).unwrap_or_default()
}

/// Whether an EXEC reply says the transaction did not run, or a command in it failed.
fn exec_failed(reply: &[u8]) -> bool {
    match crate::resp::reply::elements(reply) {
        Some(items) => items.iter().any(|item| is_error(item)),
        None => true,
    }
}

/// Writes what `wbuf` holds (reporting 1 when it held nothing, so a flush-only call does not
/// read as a closed connection), then flushes when `flushes`.
async fn write_flushed<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    wbuf: &mut BytesMut,
    flushes: bool,
) -> std::io::Result<usize> {
    let n = if wbuf.is_empty() {
        1
    } else {
        writer.write_buf(wbuf).await?
    };
    if flushes {
        writer.flush().await?;
    }
    Ok(n)
}

/// `delay` from now; an instant that would overflow (a delay no config allows) is taken as
/// now rather than panicking.
fn later(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::exec_failed;

    #[test]
    fn exec_replies_with_an_error_inside_count_as_failed() {
        assert!(!exec_failed(b"*2\r\n+OK\r\n:3\r\n"));
        assert!(exec_failed(b"*2\r\n+OK\r\n-WRONGTYPE x\r\n"));
        assert!(exec_failed(b"*-1\r\n"));
        assert!(exec_failed(b"-EXECABORT x\r\n"));
        assert!(!exec_failed(b"*0\r\n"));
    }
}
