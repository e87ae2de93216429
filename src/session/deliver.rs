//! Returning replies to the client in request order.
//!
//! The pending FIFO says whose reply is next. Upstream replies are forwarded as received,
//! never re-encoded; the front reply streams through as its bytes arrive, so a large value
//! never has to fit in memory whole. Replies of other endpoints wait in their links' buffers.

use super::link::Next;
use super::{End, Session, Source};
use crate::config::EndpointId;
use crate::resp::reply::ReplyScan;
use crate::upstream::UpstreamError;
use bytes::Buf;
use std::time::Instant;

impl Session {
    /// Moves every reply that is due and available to the client buffer.
    pub(super) fn deliver(&mut self) -> Result<(), End> {
        let mut now: Option<Instant> = None;
        while let Some(front) = self.pending.front() {
            let delivered = match &front.source {
                Source::Local(reply) => {
                    self.cout.extend_from_slice(reply);
                    true
                }
                Source::Upstream(ep) => {
                    let ep = *ep;
                    self.stream_front(ep)?
                }
                Source::Gather { mask, primary } => {
                    let (mask, primary) = (*mask, *primary);
                    self.gather(mask, primary)?
                }
            };
            if !delivered {
                break;
            }
            if let Some(done) = self.pending.pop_front() {
                let now = *now.get_or_insert_with(Instant::now);
                self.stats
                    .latency(now.saturating_duration_since(done.since));
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
                match self.links[ep].next_reply() {
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
            self.cout.extend_from_slice(&link.rbuf[..scanned]);
            link.rbuf.advance(scanned);
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

    /// One reply from every endpoint in `mask`: the first error, else `primary`'s reply.
    fn gather(&mut self, mask: u64, primary: EndpointId) -> Result<bool, End> {
        let mut nexts = [const { None }; crate::config::MAX_ENDPOINTS];
        for ep in (0..self.links.len()).filter(|ep| mask & (1 << ep) != 0) {
            match self.links[ep].next_reply() {
                Ok(Next::Wait | Next::Partial) => return Ok(false),
                Ok(next) => nexts[ep] = Some(next),
                Err(cause) => return self.broken_endpoint(ep, cause).map(|()| false),
            }
        }
        let is_error = |ep: usize, next: &Next, links: &[super::link::Link]| match next {
            Next::Error => true,
            Next::Frame(_) => links[ep].rbuf.first() == Some(&b'-'),
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
        match chosen.and_then(|ep| nexts[ep].as_ref().map(|n| (ep, n))) {
            Some((ep, Next::Frame(len))) => {
                self.cout.extend_from_slice(&self.links[ep].rbuf[..*len])
            }
            Some((ep, Next::Error)) => self.cout.extend_from_slice(&self.links[ep].error_reply),
            _ => self
                .cout
                .extend_from_slice(b"-ERR turnout: no endpoint answered\r\n"),
        }
        for (ep, next) in nexts.iter().enumerate() {
            if let Some(next) = next {
                self.links[ep].consumed(next);
            }
        }
        Ok(true)
    }

    /// An endpoint sent something that is not RESP: its connection cannot be trusted, and
    /// every reply it still owes becomes an error.
    fn broken_endpoint(&mut self, ep: EndpointId, cause: UpstreamError) -> Result<(), End> {
        crate::metrics::error(crate::metrics::ErrorKind::UpstreamProtocol);
        let link = &mut self.links[ep];
        link.rbuf.clear();
        link.stale = 0;
        link.skip = 0;
        self.fail_link(ep, cause)
    }
}
