//! Pub/Sub: subscriptions run on a connection of their own, to the Pub/Sub endpoint.
//!
//! A subscribed RESP2 connection can run nothing else, and its frames (confirmations,
//! messages) do not answer requests one for one, so they cannot share a link's reply FIFO.
//! The session opens a dedicated connection on the first subscription command and places a
//! marker in its pending FIFO; once the marker is due, every complete frame from that
//! connection is forwarded as it arrives, between replies (never inside one). Confirmations
//! are parsed for the subscription count, so the session knows when subscribed mode ends.
//! In RESP2 subscribed mode only (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, PING, QUIT and RESET are
//! accepted, as in Redis; PING then goes to the Pub/Sub connection for Redis's own answer.

use super::link::{Conn, Link};
use super::{write_all_ready, End, Session, Source};
use crate::config::EndpointId;
use crate::resp::reply::ReplyScan;
use crate::upstream::UpstreamError;
use bytes::{Buf, Bytes};
use std::task::{Context, Poll};
use std::time::Instant;

/// The session's Pub/Sub connection.
pub struct Pubsub {
    /// Connection and buffers (its reply accounting is unused: frames flow freely).
    link: Link,
    /// The marker is due: frames are forwarded as they arrive.
    streaming: bool,
    /// Subscribed mode as far as the session knows: from the first subscription command
    /// until a confirmation reports no subscription left.
    pub subscribed: bool,
}

impl Session {
    /// A subscription command: sent on the Pub/Sub connection, opened on first use.
    pub(super) fn subscribe(
        &mut self,
        frame: &[u8],
        table: &crate::route::RouteTable,
        now: Instant,
    ) {
        if self.pubsub.is_none() {
            let endpoint = self.pubsub_endpoint(table);
            let mut link = Link::new(endpoint);
            // A RESP3 session gets RESP3 pushes: replay its accepted HELLO first.
            if let Some(hello) = &self.state[crate::command::policy::StateKind::Hello as usize] {
                link.replay.extend_from_slice(hello);
                link.skip += 1;
                link.replay_unanswered += 1;
            }
            let address = self.shared.config.endpoints[endpoint].address.clone();
            link.conn = Conn::Connecting(Box::pin(crate::upstream::connect_owned(
                address,
                self.shared.config.proxy.connect_timeout,
            )));
            self.pubsub = Some(Pubsub {
                link,
                streaming: false,
                subscribed: false,
            });
        }
        let Some(pubsub) = self.pubsub.as_mut() else {
            return;
        };
        pubsub.link.wbuf.extend_from_slice(frame);
        pubsub.subscribed = true;
        if !pubsub.streaming
            && !self
                .pending
                .iter()
                .any(|p| matches!(p.source, Source::PubsubStart))
        {
            self.expect(Source::PubsubStart, now);
        }
    }

    /// PING in RESP2 subscribed mode, answered by the Pub/Sub connection as Redis does.
    pub(super) fn pubsub_ping(&mut self, frame: &[u8]) -> bool {
        match self.pubsub.as_mut() {
            Some(pubsub) if pubsub.subscribed => {
                pubsub.link.wbuf.extend_from_slice(frame);
                true
            }
            _ => false,
        }
    }

    /// Whether a RESP2 client is in subscribed mode (and so limited to Pub/Sub commands).
    pub(super) fn resp2_subscribed(&self) -> bool {
        self.pubsub.as_ref().is_some_and(|p| p.subscribed) && !self.resp3()
    }

    /// Whether the session speaks RESP3 (an accepted `HELLO 3`).
    pub(super) fn resp3(&self) -> bool {
        self.state[crate::command::policy::StateKind::Hello as usize]
            .as_ref()
            .is_some_and(|hello| hello.windows(5).any(|w| w == b"\r\n3\r\n"))
    }

    /// The endpoint subscriptions and PUBLISH go to.
    pub(super) fn pubsub_endpoint(&self, table: &crate::route::RouteTable) -> EndpointId {
        match &self.pubsub {
            Some(pubsub) => pubsub.link.endpoint,
            None => self
                .shared
                .config
                .pubsub_endpoint
                .unwrap_or_else(|| table.target(self.shared.router.namespaces.default_id())),
        }
    }

    /// The marker is due: from now on the connection's frames flow to the client.
    pub(super) fn start_streaming(&mut self) -> bool {
        if let Some(pubsub) = self.pubsub.as_mut() {
            pubsub.streaming = true;
        }
        true
    }

    /// Forwards every complete frame the Pub/Sub connection has, tracking subscribed mode.
    pub(super) fn forward_pubsub(&mut self) -> Result<(), End> {
        let Some(pubsub) = self.pubsub.as_mut() else {
            return Ok(());
        };
        if !pubsub.streaming || self.front_started {
            return Ok(());
        }
        if let Err(cause) = pubsub.link.consume_replayed() {
            return Err(End::Pubsub(cause));
        }
        if pubsub.link.skip > 0 {
            return Ok(());
        }
        loop {
            let len = match crate::resp::reply::complete_len(&pubsub.link.rbuf) {
                Ok(Some(len)) => len,
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::Pubsub(UpstreamError::Protocol(e))),
            };
            if let Some(count) = unsubscribe_count(&pubsub.link.rbuf[..len]) {
                pubsub.subscribed = count > 0;
            }
            self.cout.extend_from_slice(&pubsub.link.rbuf[..len]);
            pubsub.link.rbuf.advance(len);
        }
    }

    /// Connects, writes and reads the Pub/Sub connection; `Err` ends the session (the
    /// client's subscriptions are gone with it, so it must reconnect).
    pub(super) fn poll_pubsub(&mut self, cx: &mut Context<'_>, room: bool) -> Result<bool, End> {
        let Some(pubsub) = self.pubsub.as_mut() else {
            return Ok(false);
        };
        let link = &mut pubsub.link;
        let mut progressed = false;
        if let Conn::Connecting(attempt) = &mut link.conn {
            match attempt.as_mut().poll(cx) {
                Poll::Ready(Ok(stream)) => {
                    let name = &self.shared.config.endpoints[link.endpoint].name;
                    link.conn = Conn::Ready(stream, crate::metrics::upstream_connected(name));
                    progressed = true;
                }
                Poll::Ready(Err(cause)) => return Err(End::Pubsub(cause)),
                Poll::Pending => return Ok(false),
            }
        }
        let Conn::Ready(stream, _) = &mut link.conn else {
            return Ok(progressed);
        };
        let wrote =
            write_all_ready(stream, cx, &mut link.replay, usize::MAX).map_err(End::Pubsub)?;
        progressed |= wrote > 0;
        if link.replay.is_empty() && link.replay_unanswered == 0 {
            progressed |=
                write_all_ready(stream, cx, &mut link.wbuf, usize::MAX).map_err(End::Pubsub)? > 0;
        }
        let may_read = room
            && (pubsub.streaming || link.rbuf.len() < self.shared.config.proxy.max_buffered_bytes);
        if may_read {
            if link.rbuf.capacity() - link.rbuf.len() < super::READ_CHUNK / 4 {
                link.rbuf.reserve(super::READ_CHUNK);
            }
            match super::poll_read_some(stream, cx, &mut link.rbuf) {
                Poll::Ready(Ok(0)) => return Err(End::Pubsub(UpstreamError::Closed)),
                Poll::Ready(Ok(_)) => progressed = true,
                Poll::Ready(Err(e)) => return Err(End::Pubsub(UpstreamError::Io(e))),
                Poll::Pending => {}
            }
        }
        Ok(progressed)
    }
}

/// For an unsubscribe-type confirmation (`unsubscribe`, `punsubscribe`, `sunsubscribe`, or
/// a subscribe-type one), the subscription count it reports.
fn unsubscribe_count(frame: &[u8]) -> Option<i64> {
    // [kind, channel, count] as an array (RESP2) or a push (RESP3).
    let rest = frame
        .strip_prefix(b"*3\r\n")
        .or_else(|| frame.strip_prefix(b">3\r\n"))?;
    let (kind, rest) = element(rest)?;
    let kind = kind.strip_prefix(b"$")?;
    let body_start = kind.iter().position(|&b| b == b'\n')? + 1;
    let name = kind.get(body_start..kind.len().checked_sub(2)?)?;
    let known = [
        &b"subscribe"[..],
        b"psubscribe",
        b"ssubscribe",
        b"unsubscribe",
        b"punsubscribe",
        b"sunsubscribe",
    ];
    if !known.contains(&name) {
        return None;
    }
    let (_, rest) = element(rest)?;
    let count = rest.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(count).ok()?.parse().ok()
}

/// Splits the first complete RESP element off `buf`.
fn element(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut scan = ReplyScan::new();
    let len = scan.advance(buf).ok()?;
    scan.is_done().then(|| buf.split_at(len))
}

/// Redis's refusal of a non-Pub/Sub command in RESP2 subscribed mode.
pub fn not_in_subscribed_mode(name: &str) -> Bytes {
    Bytes::from(format!(
        "-ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_counts_are_read_from_confirmations() {
        assert_eq!(
            unsubscribe_count(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:2\r\n"),
            Some(2)
        );
        assert_eq!(
            unsubscribe_count(b">3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n"),
            Some(0)
        );
        assert_eq!(
            unsubscribe_count(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
            Some(0)
        );
        assert_eq!(
            unsubscribe_count(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"),
            None
        );
        assert_eq!(unsubscribe_count(b"+OK\r\n"), None);
    }
}
