//! Returning replies to the client in request order.
//!
//! The pending FIFO says whose reply is next. Upstream replies are forwarded as received,
//! never re-encoded; the front reply streams through as its bytes arrive, so a large value
//! never has to fit in memory whole. Replies of other endpoints wait in their links' buffers.

use super::link::Next;
use super::{End, Session, Source};
use crate::command::policy::StateKind;
use crate::config::EndpointId;
use crate::resp::reply::ReplyScan;
use crate::upstream::UpstreamError;
use bytes::{Buf, Bytes, BytesMut};
use std::time::Instant;

impl Session {
    /// Moves every reply that is due and available to the client buffer.
    pub(super) fn deliver(&mut self) -> Result<(), End> {
        let mut now: Option<Instant> = None;
        self.forward_pubsub()?;
        loop {
            let blocked_on = match self.pending.front() {
                Some(super::Pending {
                    source: Source::Upstream(ep),
                    reissue: true,
                    ..
                }) => Some(*ep),
                _ => None,
            };
            if let Some(ep) = blocked_on {
                match self.unblocked(ep)? {
                    Some(true) => continue,
                    Some(false) => break,
                    None => {}
                }
            }
            let Some(front) = self.pending.front() else {
                break;
            };
            let silent = front.silent;
            let written = self.cout.len();
            let delivered = match &front.source {
                // A silenced reply is taken whole, never streamed: nothing of it may leave.
                Source::Upstream(ep) if silent => {
                    let ep = *ep;
                    self.swallow_reply(ep)?
                }
                Source::Local(reply) => {
                    self.cout.extend_from_slice(reply);
                    true
                }
                Source::Upstream(ep) if front.strip.is_some() => {
                    let ep = *ep;
                    self.stripped_front(ep)?
                }
                Source::Upstream(ep) => {
                    let ep = *ep;
                    self.stream_front(ep)?
                }
                Source::Gather {
                    mask,
                    primary,
                    state,
                } => {
                    let (mask, primary, state) = (*mask, *primary, *state);
                    self.gather(mask, primary, state)?
                }
                Source::Pubsub(upto) => {
                    let upto = *upto;
                    self.pubsub_due(upto)?
                }
                Source::Swallow(ep) => {
                    let ep = *ep;
                    self.swallow_reply(ep)?
                }
                Source::ClientId(ep) => {
                    let ep = *ep;
                    self.client_id_reply(ep)?
                }
                Source::Merge(merge) => {
                    let mask = merge.mask();
                    self.merge_front(mask)?
                }
            };
            if let Some(capture) = self.pending.front_mut().and_then(|p| p.capture.as_mut()) {
                capture.extend(&self.cout[written..]);
            }
            if !delivered {
                break;
            }
            if silent {
                self.cout.truncate(written);
            }
            self.forward_pubsub()?;
            if let Some(done) = self.pending.pop_front() {
                let now = *now.get_or_insert_with(Instant::now);
                self.stats
                    .latency(now.saturating_duration_since(done.since));
                if done.capture.is_some() {
                    self.captured(done, !silent);
                }
            }
        }
        Ok(())
    }

    /// Streams the front reply from `ep`'s link; true once it is complete.
    fn stream_front(&mut self, ep: EndpointId) -> Result<bool, End> {
        loop {
            let next = if self.front_started {
                Next::Partial
            } else {
                // The scan below finds the reply's end: no need to find it twice.
                match self.links[ep].next_reply_start() {
                    Ok(next) => next,
                    Err(cause) => return self.broken_endpoint(ep, cause).map(|()| false),
                }
            };
            match next {
                Next::Wait => return Ok(false),
                Next::Error => {
                    let link = &mut self.links[ep];
                    self.cout.extend_from_slice(&link.error_reply);
                    link.consumed(&next);
                    return Ok(true);
                }
                Next::Frame(_) | Next::Partial => {}
            }
            let link = &mut self.links[ep];
            let scanned = match self.front.advance(&link.rbuf) {
                Ok(n) => n,
                Err(e) => {
                    return self
                        .broken_endpoint(ep, UpstreamError::Protocol(e))
                        .map(|()| false)
                }
            };
            if self.cout.is_empty() && scanned == link.rbuf.len() {
                // All of it goes to the client as it is (a large value, typically): no copy.
                std::mem::swap(&mut self.cout, &mut link.rbuf);
            } else {
                self.cout.extend_from_slice(&link.rbuf[..scanned]);
                link.rbuf.advance(scanned);
            }
            if !self.front.is_done() {
                self.front_started = scanned > 0 || self.front_started;
                return Ok(false);
            }
            let push = self.front.is_push();
            self.front = ReplyScan::new();
            self.front_started = false;
            if push {
                // A RESP3 push answers no request: pass it on and keep waiting for the reply.
                continue;
            }
            link.consumed(&Next::Partial);
            return Ok(true);
        }
    }

    /// The front reply from a single-database endpoint, whole, its key names stripped of
    /// their prefix; true once written. It is buffered up to `max_buffered_bytes`.
    fn stripped_front(&mut self, ep: EndpointId) -> Result<bool, End> {
        let Some(nexts) = self.complete_replies(1 << ep)? else {
            let limit = self.shared.config.proxy.max_buffered_bytes;
            if self.links[ep].rbuf.len() > limit {
                let cause = UpstreamError::Unsupported(format!(
                    "a reply whose key names need their prefix stripped is larger than max_buffered_bytes ({limit})"
                ));
                self.broken_endpoint(ep, cause)?;
            }
            return Ok(false);
        };
        let Some(next) = &nexts[ep] else {
            return Ok(false);
        };
        let limit = self.shared.config.proxy.max_buffered_bytes;
        let link = &mut self.links[ep];
        match next {
            super::link::Next::Frame(len) if *len > limit => {
                crate::resp::write_error(
                    &mut self.cout,
                    &format!("ERR turnout: the reply is larger than max_buffered_bytes ({limit}), too large to strip its key prefix"),
                );
            }
            super::link::Next::Frame(len) => {
                if let Some(strip) = self.pending.front().and_then(|p| p.strip.as_deref()) {
                    super::strip::strip_reply(&link.rbuf[..*len], strip, &mut self.cout);
                }
            }
            _ => self.cout.extend_from_slice(&link.error_reply),
        }
        link.consumed(next);
        Ok(true)
    }

    /// The next complete reply of every endpoint in `mask`, once all are in.
    pub(super) fn complete_replies(&mut self, mask: u64) -> Result<Option<Replies>, End> {
        let mut nexts = [const { None }; crate::config::MAX_ENDPOINTS];
        for ep in (0..self.links.len()).filter(|ep| mask & (1 << ep) != 0) {
            match self.links[ep].next_reply() {
                Ok(Next::Wait | Next::Partial) => return Ok(None),
                Ok(next) => nexts[ep] = Some(next),
                Err(cause) => return self.broken_endpoint(ep, cause).map(|()| None),
            }
        }
        Ok(Some(nexts))
    }

    /// The answer to turnout's `CLIENT ID`: kept by the link.
    fn client_id_reply(&mut self, ep: EndpointId) -> Result<bool, End> {
        let Some(nexts) = self.complete_replies(1 << ep)? else {
            return Ok(false);
        };
        if let Some(next) = &nexts[ep] {
            let link = &mut self.links[ep];
            if let Next::Frame(len) = next {
                link.client_id = link.rbuf[..*len]
                    .strip_prefix(b":")
                    .and_then(|r| r.strip_suffix(b"\r\n"))
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .and_then(|n| n.parse().ok());
            }
            link.consumed(next);
        }
        Ok(true)
    }

    /// A blocking command at the front: if a cutover unblocked it (`-UNBLOCKED`, and the
    /// cutover registry confirms it unblocked this connection for the namespace it holds),
    /// and nothing was dispatched after it, its request goes back to the read buffer, to be
    /// held and sent to the new endpoint; `Some(true)` then. `Some(false)`: its reply is not
    /// complete yet. `None`: an ordinary reply, delivered as usual; so is an `-UNBLOCKED`
    /// that the application's own `CLIENT UNBLOCK` caused.
    fn unblocked(&mut self, ep: EndpointId) -> Result<Option<bool>, End> {
        if self.front_started {
            return Ok(None);
        }
        let Some(nexts) = self.complete_replies(1 << ep)? else {
            return Ok(Some(false));
        };
        let Some(Next::Frame(len)) = &nexts[ep] else {
            return Ok(None);
        };
        // The reply is in: a cutover's mark for this command is used now or never.
        let by_cutover = self.links[ep]
            .client_id
            .is_some_and(|id| self.registration.slot.take_unblocked(ep, id));
        if !by_cutover
            || self.pending.len() != 1
            || !self.links[ep].rbuf[..*len].starts_with(b"-UNBLOCKED")
        {
            return Ok(None);
        }
        let next = Next::Frame(*len);
        self.links[ep].consumed(&next);
        let Some(mut pending) = self.pending.pop_front() else {
            return Ok(Some(true));
        };
        let reissue = std::mem::take(&mut pending.reissue);
        if pending.capture.is_some() {
            // A dual-write copy waiting for this reply: it gets none (the command runs again).
            self.captured(pending, false);
        }
        if reissue {
            // Alone in line, it is the last blocking command dispatched: `self.reissue`.
            let mut cin = BytesMut::with_capacity(self.reissue.len() + self.cin.len());
            cin.extend_from_slice(&self.reissue);
            cin.extend_from_slice(&self.cin);
            self.cin = cin;
            self.held_count.reset();
            self.resume = Default::default();
            self.args.clear();
            self.redispatch = true;
        }
        Ok(Some(true))
    }

    /// Consumes the reply to a command of turnout's own; true once consumed.
    fn swallow_reply(&mut self, ep: EndpointId) -> Result<bool, End> {
        let Some(nexts) = self.complete_replies(1 << ep)? else {
            return Ok(false);
        };
        if let Some(next) = &nexts[ep] {
            self.links[ep].consumed(next);
        }
        Ok(true)
    }

    /// One reply from every endpoint in `mask`: the first error, else `primary`'s reply.
    fn gather(&mut self, mask: u64, primary: EndpointId, state: bool) -> Result<bool, End> {
        if mask == 0 && state {
            // A SELECT only single-database endpoints would have seen: theirs to accept.
            self.cout.extend_from_slice(b"+OK\r\n");
            self.resolve_state(true);
            return Ok(true);
        }
        let Some(nexts) = self.complete_replies(mask)? else {
            return Ok(false);
        };
        let is_error = |ep: usize, next: &Next, links: &[super::link::Link]| match next {
            Next::Error => true,
            Next::Frame(len) => crate::resp::is_error(&links[ep].rbuf[..*len]),
            _ => false,
        };
        let chosen = (0..self.links.len())
            .find(|&ep| {
                nexts[ep]
                    .as_ref()
                    .is_some_and(|n| is_error(ep, n, &self.links))
            })
            .or_else(|| nexts.get(primary).and_then(Option::as_ref).map(|_| primary))
            .or_else(|| (0..self.links.len()).find(|&ep| nexts[ep].is_some()));
        let applied_by: Vec<Option<bool>> = (0..self.links.len())
            .map(|ep| match nexts[ep] {
                Some(Next::Frame(len)) => Some(!crate::resp::is_error(&self.links[ep].rbuf[..len])),
                Some(_) => Some(false),
                None => None,
            })
            .collect();
        let accepted = match chosen.and_then(|ep| nexts[ep].as_ref().map(|n| (ep, n))) {
            Some((ep, Next::Frame(len))) => {
                let reply = &self.links[ep].rbuf[..*len];
                self.cout.extend_from_slice(reply);
                !crate::resp::is_error(reply)
            }
            Some((ep, Next::Error)) => {
                self.cout.extend_from_slice(&self.links[ep].error_reply);
                false
            }
            _ => {
                self.cout
                    .extend_from_slice(b"-ERR turnout: no endpoint answered\r\n");
                false
            }
        };
        for (ep, next) in nexts.iter().enumerate() {
            if let Some(next) = next {
                self.links[ep].consumed(next);
            }
        }
        if !state {
            return Ok(true);
        }
        // Endpoints that applied a command the client was told failed are put back, before
        // anything queued behind it runs (it was held).
        let kind = self.state_inflight.front().map(|(kind, _)| *kind);
        for ep in (0..self.links.len()).filter(|ep| mask & (1 << ep) != 0) {
            let applied = matches!(&applied_by[ep], Some(true));
            let undo = match kind {
                Some(kind) if !accepted && applied => self.undo_frame(kind),
                _ => None,
            };
            self.links[ep].settle_state(undo.as_deref());
        }
        self.resolve_state(accepted);
        Ok(true)
    }

    /// The command that puts an endpoint back to the session's accepted state of `kind`.
    fn undo_frame(&self, kind: StateKind) -> Option<Bytes> {
        match (&self.state[kind as usize], kind) {
            (Some(frame), _) => Some(frame.clone()),
            (None, StateKind::Select) => {
                Some(Bytes::from_static(b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n"))
            }
            (None, StateKind::Hello) => {
                Some(Bytes::from_static(b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n"))
            }
            (None, StateKind::NoEvict) => Some(Bytes::from_static(
                b"*3\r\n$6\r\nCLIENT\r\n$8\r\nNO-EVICT\r\n$3\r\noff\r\n",
            )),
            (None, StateKind::NoTouch) => Some(Bytes::from_static(
                b"*3\r\n$6\r\nCLIENT\r\n$8\r\nNO-TOUCH\r\n$3\r\noff\r\n",
            )),
            // A client name or library info left behind is cosmetic.
            (None, StateKind::SetName | StateKind::SetInfo) => None,
        }
    }

    /// Settles the oldest in-flight connection-state command (every gather answers one, in
    /// dispatch order), then prepares the links that were waiting for it.
    fn resolve_state(&mut self, accepted: bool) {
        if let Some((kind, frame)) = self.state_inflight.pop_front() {
            if kind == StateKind::Select {
                // The session routes by the database of its last SELECT sent. If this one was
                // refused, that is the last SELECT still in flight, else the last accepted.
                match accepted
                    .then(|| super::prefix::selected_db(&frame))
                    .flatten()
                {
                    Some(db) => self.accepted_db = db,
                    None => {
                        self.db = self
                            .state_inflight
                            .iter()
                            .rev()
                            .filter(|(kind, _)| *kind == StateKind::Select)
                            .find_map(|(_, frame)| super::prefix::selected_db(frame))
                            .unwrap_or(self.accepted_db);
                    }
                }
            }
            if accepted {
                self.state[kind as usize] = Some(frame);
            }
        }
        for ep in 0..self.links.len() {
            if self.links[ep].awaiting_state > 0 {
                self.links[ep].awaiting_state -= 1;
                if self.links[ep].awaiting_state == 0 {
                    self.prepare_link(ep);
                }
            }
        }
    }

    /// An endpoint sent something that is not RESP: its connection cannot be trusted, and
    /// every reply it still owes becomes an error.
    fn broken_endpoint(&mut self, ep: EndpointId, cause: UpstreamError) -> Result<(), End> {
        if matches!(cause, UpstreamError::Protocol(_)) {
            crate::metrics::error(crate::metrics::ErrorKind::UpstreamProtocol);
        }
        let link = &mut self.links[ep];
        link.rbuf.clear();
        link.stale = 0;
        link.skip = 0;
        self.fail_link(ep, cause)
    }
}

/// One endpoint's next reply per endpoint index (`None`: not involved).
pub(super) type Replies = [Option<Next>; crate::config::MAX_ENDPOINTS];
