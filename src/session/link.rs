//! A session's link to one endpoint: its connection, buffers and reply accounting.
//!
//! Replies from one connection come back in request order, so a link only counts: how many
//! replies it owes the session, how many leading replies answer turnout's own state replay
//! (swallowed), and, after a failure, how many complete replies were already received
//! (delivered first) and how many became errors (delivered next). The session's FIFO of
//! pending replies says whose turn it is.

use crate::config::EndpointId;
use crate::metrics::{self, ErrorKind, GaugeGuard};
use crate::resp::reply;
use crate::stream::Stream;
use crate::upstream::UpstreamError;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A connection attempt in progress.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Stream, UpstreamError>> + Send>>;

/// The connection of a link.
pub enum Conn {
    /// Not connected; the next command opens a connection.
    Idle,
    /// Connecting; commands queue in the write buffer meanwhile.
    Connecting(ConnectFuture),
    /// Connected.
    Ready(Stream, GaugeGuard),
    /// On a shared connection, with the requests of other sessions
    /// ([`crate::upstream::mux`]): only while the session has no connection state.
    Shared(crate::upstream::mux::Handle),
}

/// What the next reply of a link is, once skipped replies are consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Not received yet.
    Wait,
    /// A complete reply of this many bytes at the start of the read buffer.
    Frame(usize),
    /// The start of a reply is in the read buffer, the rest is still to come; it can be
    /// streamed to the client as it arrives.
    Partial,
    /// An error reply turnout owes on behalf of a failed connection.
    Error,
}

/// One endpoint's link.
pub struct Link {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// The connection.
    pub conn: Conn,
    /// The session's connection state, written first on a new connection. Requests in
    /// `wbuf` are held until every replayed command has answered OK.
    pub replay: BytesMut,
    /// Requests not yet written.
    pub wbuf: BytesMut,
    /// Replies not yet delivered.
    pub rbuf: BytesMut,
    /// Replies owed to the session's pending FIFO.
    pub owed: u64,
    /// Leading replies to swallow: answers to replayed connection state.
    pub skip: u32,
    /// Complete replies of a failed connection still in `rbuf`, delivered before `owed_errors`.
    pub stale: u64,
    /// Replies that became errors when the connection failed.
    pub owed_errors: u64,
    /// The error reply for `owed_errors`.
    pub error_reply: Bytes,
    /// The session's connection state is queued for the next connection.
    pub prepared: bool,
    /// Unanswered connection-state commands to wait for before the next connection can be
    /// prepared (its starting state depends on their outcome).
    pub awaiting_state: usize,
    /// Replayed state commands not yet answered; requests wait for them.
    pub replay_unanswered: u32,
    /// Requests in `wbuf` (their replies are owed too): on a shared connection they are
    /// handed over as one batch expecting this many replies.
    pub wbuf_frames: u64,
    /// Bytes ever queued in `wbuf` on this connection.
    pub appended: u64,
    /// Bytes of `wbuf` written on this connection.
    pub written: u64,
    /// The connection's `CLIENT ID`, once asked (a cutover unblocks a blocked command by it).
    pub client_id: Option<u64>,
    /// `CLIENT ID` was sent on this connection.
    pub id_asked: bool,
    /// Positions (in `appended` terms) just past each unanswered connection-state command:
    /// nothing beyond the first is written until the session knows whether every endpoint
    /// accepted it, so a refused one can still be undone before later requests run.
    pub holds: VecDeque<u64>,
    /// A Sentinel endpoint's primary generation (`None` for other endpoints): bumped by a
    /// failover, it tells the session to leave a connection opened under an older one.
    pub generation: Option<Arc<AtomicU64>>,
    /// The generation the connection was opened under.
    pub opened_under: u64,
    /// The shared connection this link left while it still owed replies: they come first,
    /// and the dedicated connection is not read until they are all delivered (its replies
    /// wait in the endpoint's output buffer meanwhile, as for a direct client).
    pub draining: Option<crate::upstream::mux::Handle>,
    /// Replies still owed by `draining`, the oldest ones the link owes.
    pub shared_left: u64,
}

impl Link {
    /// An idle link.
    pub fn new(endpoint: EndpointId) -> Self {
        Link {
            endpoint,
            conn: Conn::Idle,
            replay: BytesMut::new(),
            wbuf: BytesMut::new(),
            rbuf: BytesMut::new(),
            owed: 0,
            skip: 0,
            stale: 0,
            owed_errors: 0,
            error_reply: Bytes::new(),
            prepared: false,
            awaiting_state: 0,
            replay_unanswered: 0,
            wbuf_frames: 0,
            appended: 0,
            written: 0,
            holds: VecDeque::new(),
            client_id: None,
            id_asked: false,
            generation: None,
            opened_under: 0,
            draining: None,
            shared_left: 0,
        }
    }

    /// Follows a Sentinel endpoint's primary generation (see [`Link::stale_primary`]).
    pub fn following(mut self, generation: Option<Arc<AtomicU64>>) -> Self {
        self.generation = generation;
        self
    }

    /// Records that a connection is being opened now, under the current generation.
    pub fn opening(&mut self) {
        if let Some(generation) = &self.generation {
            self.opened_under = generation.load(Ordering::Acquire);
        }
    }

    /// Whether the connection was opened before the endpoint's primary last changed: one
    /// atomic load for a Sentinel endpoint, nothing for the others.
    pub fn stale_primary(&self) -> bool {
        match &self.generation {
            // A shared connection follows the primary on its own.
            Some(generation) => {
                matches!(self.conn, Conn::Ready(..) | Conn::Connecting(_))
                    && generation.load(Ordering::Acquire) != self.opened_under
            }
            None => false,
        }
    }

    /// Queues a request whose reply the session waits for.
    pub fn queue(&mut self, frame: &[u8]) {
        self.wbuf.extend_from_slice(frame);
        self.queue_moved(frame.len());
    }

    /// Counts a request of `len` bytes as queued whose bytes the caller puts into the
    /// (empty) `wbuf` itself, before anything else is queued or written.
    pub fn queue_moved(&mut self, len: usize) {
        self.appended += len as u64;
        self.owed += 1;
        self.wbuf_frames += 1;
    }

    /// Queues a connection-state command and holds what follows until it is settled.
    pub fn queue_state(&mut self, frame: &[u8]) {
        self.queue(frame);
        self.holds.push_back(self.appended);
    }

    /// How many bytes of `wbuf` may be written now.
    pub fn writable(&self) -> usize {
        match self.holds.front() {
            Some(hold) => usize::try_from(hold.saturating_sub(self.written)).unwrap_or(usize::MAX),
            None => self.wbuf.len(),
        }
    }

    /// Settles the oldest held connection-state command. With `undo`, the endpoint applied a
    /// command the client was told failed: `undo` is queued right behind it, before anything
    /// held, and its reply swallowed.
    pub fn settle_state(&mut self, undo: Option<&[u8]>) {
        let Some(hold) = self.holds.pop_front() else {
            return;
        };
        let Some(undo) = undo else {
            return;
        };
        let at = usize::try_from(hold.saturating_sub(self.written))
            .unwrap_or(0)
            .min(self.wbuf.len());
        let tail = self.wbuf.split_off(at);
        self.wbuf.extend_from_slice(undo);
        self.wbuf.extend_from_slice(&tail);
        let len = undo.len() as u64;
        self.appended += len;
        for later in &mut self.holds {
            *later += len;
        }
        self.skip += 1;
    }

    /// Whether a connection is open or opening.
    pub fn is_active(&self) -> bool {
        !matches!(self.conn, Conn::Idle)
    }

    /// Consumes the replies to replayed connection state that have arrived.
    ///
    /// # Errors
    /// A replayed command failed (the requests held behind it must not run), or the endpoint
    /// sent bytes that are not RESP.
    pub fn consume_replayed(&mut self) -> Result<(), UpstreamError> {
        // Replies of a shared connection being left come before any replayed state's.
        while self.skip > 0 && self.stale == 0 && self.owed_errors == 0 && self.shared_left == 0 {
            let Some(len) = reply::complete_len(&self.rbuf).map_err(UpstreamError::Protocol)?
            else {
                return Ok(());
            };
            if matches!(self.rbuf.first(), Some(b'-' | b'!')) {
                let text =
                    String::from_utf8_lossy(&self.rbuf[1..len.saturating_sub(2)]).into_owned();
                return Err(UpstreamError::StateReplay(text));
            }
            self.rbuf.advance(len);
            self.skip -= 1;
            self.replay_unanswered = self.replay_unanswered.saturating_sub(1);
        }
        Ok(())
    }

    /// Consumes swallowed replies and says what the next reply is, without consuming it.
    ///
    /// # Errors
    /// As [`Link::consume_replayed`].
    pub fn next_reply(&mut self) -> Result<Next, UpstreamError> {
        match self.next_reply_start()? {
            Next::Partial => {
                match reply::complete_len(&self.rbuf).map_err(UpstreamError::Protocol)? {
                    Some(len) => Ok(Next::Frame(len)),
                    None => Ok(Next::Partial),
                }
            }
            other => Ok(other),
        }
    }

    /// [`Link::next_reply`] without finding where the reply ends: `Partial` as soon as any of
    /// it has arrived. For a caller that streams the reply and scans it anyway.
    ///
    /// # Errors
    /// As [`Link::consume_replayed`].
    pub fn next_reply_start(&mut self) -> Result<Next, UpstreamError> {
        if self.stale == 0 && self.owed_errors > 0 {
            return Ok(Next::Error);
        }
        self.consume_replayed()?;
        if (self.stale == 0 && self.skip > 0 && self.shared_left == 0) || self.rbuf.is_empty() {
            return Ok(Next::Wait);
        }
        Ok(Next::Partial)
    }

    /// Marks the reply that [`Link::next_reply`] returned as delivered. A `Partial` reply's bytes
    /// were already taken from `rbuf` as they streamed.
    pub fn consumed(&mut self, next: &Next) {
        match next {
            Next::Frame(len) => {
                self.rbuf.advance(*len);
                self.stale = self.stale.saturating_sub(1);
            }
            Next::Partial => self.stale = self.stale.saturating_sub(1),
            Next::Error => self.owed_errors -= 1,
            Next::Wait => return,
        }
        self.owed -= 1;
        if self.shared_left > 0 {
            self.shared_left -= 1;
            if self.shared_left == 0 {
                // The dedicated connection's replies are next.
                self.draining = None;
            }
        }
    }

    /// Leaves a shared connection for a dedicated one, at once: the replies the shared one
    /// still owes are read from it first ([`Link::draining`]); the requests not handed over
    /// yet go to the dedicated connection, which starts in the default state the session
    /// had while it shared.
    pub fn leave_shared(&mut self) {
        if let Conn::Shared(handle) = std::mem::replace(&mut self.conn, Conn::Idle) {
            self.shared_left = self.owed - self.wbuf_frames;
            self.draining = (self.shared_left > 0).then_some(handle);
            self.prepared = self.wbuf_frames > 0;
        }
    }

    /// Whether a connection may be opened: a failed connection's replies must be delivered
    /// first, so that a new connection's replies (and replayed state) never interleave with them.
    pub fn may_connect(&self) -> bool {
        matches!(self.conn, Conn::Idle) && self.stale == 0 && self.owed_errors == 0
    }

    /// Records that the connection failed: complete replies already received stay deliverable,
    /// every other owed reply becomes `-ERR turnout: endpoint 'NAME' unavailable: <cause>`, and
    /// the link goes idle so that the next command reconnects.
    ///
    /// A connection is only opened once earlier failures are settled ([`Link::may_connect`]),
    /// so here `stale` and `owed_errors` are zero and swallowed replies lead `rbuf`.
    pub fn fail(&mut self, name: &str, cause: &UpstreamError) {
        let had_connection = matches!(self.conn, Conn::Ready(..) | Conn::Shared(_));
        self.conn = Conn::Idle;
        // A shared connection being left: what it still owes fails too.
        let draining = self.shared_left > 0;
        self.draining = None;
        self.shared_left = 0;
        self.client_id = None;
        self.id_asked = false;
        self.prepared = false;
        self.replay.clear();
        self.wbuf.clear();
        self.wbuf_frames = 0;
        self.holds.clear();
        self.replay_unanswered = 0;
        self.appended = 0;
        self.written = 0;
        let mut kept = 0usize;
        let mut frames = 0u64;
        let owed = self.owed - self.owed_errors;
        while frames < owed {
            match reply::complete_len(&self.rbuf[kept..]) {
                // Only a shared connection's replies were read while it was being left.
                Ok(Some(len)) if self.skip > 0 && !draining => {
                    self.rbuf.advance(len);
                    self.skip -= 1;
                }
                Ok(Some(len)) => {
                    kept += len;
                    frames += 1;
                }
                _ => break,
            }
        }
        self.rbuf.truncate(kept);
        self.skip = 0;
        self.stale += frames;
        let errors = owed - frames;
        if errors > 0 {
            self.owed_errors += errors;
            self.error_reply = Bytes::from(cause.client_reply(name));
            let kind = if had_connection {
                ErrorKind::UpstreamClosed
            } else {
                ErrorKind::UpstreamUnavailable
            };
            metrics::error(kind);
            tracing::warn!(endpoint = %name, cause = %cause, failed_replies = errors, "endpoint unavailable");
        } else {
            tracing::debug!(endpoint = %name, cause = %cause, "idle upstream connection closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_received_replies_and_owes_errors_for_the_rest() {
        let mut link = Link::new(0);
        link.owed = 3;
        link.rbuf.extend_from_slice(b"+OK\r\n:1\r\n$5\r\nhel");
        link.fail("new", &UpstreamError::Closed);
        assert_eq!((link.stale, link.owed_errors), (2, 1));
        let first = link.next_reply().expect("valid");
        assert_eq!(first, Next::Frame(5));
        link.consumed(&first);
        let second = link.next_reply().expect("valid");
        assert_eq!(second, Next::Frame(4));
        link.consumed(&second);
        assert_eq!(link.next_reply().expect("valid"), Next::Error);
        link.consumed(&Next::Error);
        assert_eq!(link.owed, 0);
        assert_eq!(
            &link.error_reply[..],
            b"-ERR turnout: endpoint 'new' unavailable: connection closed by the endpoint\r\n"
        );
    }

    #[test]
    fn a_tls_failure_reads_as_tls() {
        let mut link = Link::new(0);
        link.owed = 1;
        let cause = UpstreamError::Tls("invalid peer certificate: UnknownIssuer".to_string());
        link.fail("new", &cause);
        assert_eq!(
            &link.error_reply[..],
            b"-ERR turnout: endpoint 'new' TLS: invalid peer certificate: UnknownIssuer\r\n"
        );
    }

    #[test]
    fn a_connection_is_stale_once_the_generation_moves() {
        let generation = Arc::new(AtomicU64::new(4));
        let mut link = Link::new(0).following(Some(generation.clone()));
        link.conn = Conn::Connecting(Box::pin(async { Err(UpstreamError::Closed) }));
        link.opening();
        assert!(!link.stale_primary());
        generation.fetch_add(1, Ordering::AcqRel);
        assert!(link.stale_primary());
        link.conn = Conn::Idle;
        assert!(
            !link.stale_primary(),
            "an idle link has no connection to leave"
        );
        let mut plain = Link::new(0);
        plain.conn = Conn::Connecting(Box::pin(async { Err(UpstreamError::Closed) }));
        assert!(!plain.stale_primary());
    }

    #[test]
    fn replayed_state_replies_are_swallowed() {
        let mut link = Link::new(0);
        link.owed = 1;
        link.skip = 2;
        link.rbuf.extend_from_slice(b"+OK\r\n+OK\r\n$1\r\na\r\n");
        assert_eq!(link.next_reply().expect("valid"), Next::Frame(7));
        assert_eq!(link.skip, 0);
    }

    #[test]
    fn a_refused_replay_is_an_error_for_the_held_requests() {
        let mut link = Link::new(0);
        link.owed = 1;
        link.skip = 1;
        link.rbuf
            .extend_from_slice(b"-ERR DB index is out of range\r\n");
        let err = link.next_reply().expect_err("refused");
        assert_eq!(
            err.to_string(),
            "cannot restore the session's connection state: ERR DB index is out of range"
        );
    }

    #[test]
    fn a_failure_before_any_reply_owes_only_errors() {
        let mut link = Link::new(0);
        link.owed = 2;
        link.skip = 1;
        link.fail("legacy", &UpstreamError::Closed);
        assert_eq!((link.stale, link.owed_errors, link.skip), (0, 2, 0));
        assert!(link.rbuf.is_empty());
    }
}
