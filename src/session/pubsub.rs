//! Pub/Sub: subscriptions run on a connection of their own, to the Pub/Sub endpoint.
//!
//! A subscribed RESP2 connection can run nothing else, and its frames (confirmations,
//! messages) do not answer requests one for one, so they cannot share a link's reply FIFO.
//! The session opens a dedicated connection on the first subscription command. Each
//! subscription command (and each RESP2 subscribed PING) puts an entry in the pending FIFO
//! for the confirmation frames it will get: one per channel, or, for an UNSUBSCRIBE without
//! arguments, one per name the session will be subscribed to by then (tracked as commands
//! are sent). Published messages are forwarded as they arrive, between replies (never inside
//! one); confirmations only when their entry is due, so they keep their place among the
//! replies exactly as with Redis, pipelined or not. Subscribed mode is known the same way.
//! In RESP2 subscribed mode only (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, PING, QUIT and RESET are
//! accepted, as in Redis; PING then goes to the Pub/Sub connection for Redis's own answer.

use super::link::{Conn, Link};
use super::{End, Session, Source};
use crate::config::EndpointId;
use crate::resp::reply::ReplyScan;
use crate::upstream::write_all_ready;
use crate::upstream::UpstreamError;
use bytes::{Buf, Bytes};
use std::collections::HashSet;
use std::ops::Range;
use std::task::{Context, Poll};
use std::time::Instant;

/// The session's Pub/Sub connection.
pub struct Pubsub {
    /// Connection and buffers (its reply accounting is unused: frames flow freely).
    link: Link,
    /// The marker is due: frames are forwarded as they arrive.
    streaming: bool,
    /// Subscribed mode as it will be once every command sent has run: some subscription
    /// is left (RESP2 refuses other commands then, as Redis does).
    pub subscribed: bool,
    /// Confirmation frames asked for so far (one per channel of a (P|S)(UN)SUBSCRIBE, one
    /// per subscribed PING), in all.
    expected: u64,
    /// Confirmation frames forwarded so far.
    seen: u64,
    /// Channels, patterns and shard channels as they will be once every command sent has
    /// run: an UNSUBSCRIBE without arguments is confirmed once per name (or once if none).
    names: [HashSet<Vec<u8>>; 3],
    /// What `names` holds, counted as in [`name_cost`].
    name_bytes: usize,
}

/// What one subscribed name counts against the bound on a session's subscriptions: its
/// bytes and roughly what the set spends on it.
fn name_cost(name: &[u8]) -> usize {
    name.len() + 48
}

impl Session {
    /// A subscription command: sent on the Pub/Sub connection, opened on first use.
    pub(super) fn subscribe(
        &mut self,
        frame: &[u8],
        args: &[Range<usize>],
        table: &crate::route::RouteTable,
        now: Instant,
    ) {
        if !self.subscription_fits(frame, args) {
            let limit = self.shared.config.proxy.max_buffered_bytes;
            return self.refuse(
                &format!("ERR turnout: the connection's subscriptions would exceed max_buffered_bytes ({limit}); unsubscribe first"),
                crate::metrics::ErrorKind::Refused,
                now,
            );
        }
        if self.pubsub.is_none() {
            let endpoint = self.pubsub_endpoint(table);
            let mut link = Link::new(endpoint);
            // A RESP3 session gets RESP3 pushes: replay its accepted HELLO first.
            if let Some(hello) = &self.state[crate::command::policy::StateKind::Hello as usize] {
                link.replay.extend_from_slice(hello);
                link.skip += 1;
                link.replay_unanswered += 1;
            }
            let address = self.shared.config.endpoints[endpoint].clone();
            link.conn = Conn::Connecting(Box::pin(crate::upstream::open_owned(
                address,
                self.shared.config.proxy.connect_timeout,
                self.shared.config.proxy.max_buffered_bytes,
            )));
            self.pubsub = Some(Pubsub {
                link,
                streaming: false,
                subscribed: false,
                expected: 0,
                seen: 0,
                names: Default::default(),
                name_bytes: 0,
            });
        }
        let Some(pubsub) = self.pubsub.as_mut() else {
            return;
        };
        pubsub.link.wbuf.extend_from_slice(frame);
        let name = args.first().map_or(&b""[..], |r| &frame[r.clone()]);
        let names = args.get(1..).unwrap_or_default();
        let lower = name.to_ascii_lowercase();
        let (kind, adds) = match lower.as_slice() {
            b"subscribe" => (0, true),
            b"unsubscribe" => (0, false),
            b"psubscribe" => (1, true),
            b"punsubscribe" => (1, false),
            b"ssubscribe" => (2, true),
            _ => (2, false),
        };
        let set = &mut pubsub.names[kind];
        let bytes = &mut pubsub.name_bytes;
        let confirmations = if adds {
            for r in names {
                let name = &frame[r.clone()];
                if set.insert(name.to_vec()) {
                    *bytes += name_cost(name);
                }
            }
            // Without a name Redis answers one arity error.
            names.len().max(1)
        } else if names.is_empty() {
            let n = set.len().max(1);
            *bytes -= set.iter().map(|n| name_cost(n)).sum::<usize>().min(*bytes);
            set.clear();
            n
        } else {
            for r in names {
                let name = &frame[r.clone()];
                if set.remove(name) {
                    *bytes = bytes.saturating_sub(name_cost(name));
                }
            }
            names.len()
        };
        pubsub.subscribed = pubsub.names.iter().any(|s| !s.is_empty());
        pubsub.expected += confirmations as u64;
        let upto = pubsub.expected;
        self.expect(Source::Pubsub(upto), now);
    }

    /// Whether the names a subscription command adds keep the session's subscriptions within
    /// `max_buffered_bytes` (they are kept to be made again on a new connection).
    fn subscription_fits(&self, frame: &[u8], args: &[Range<usize>]) -> bool {
        let adds = args.first().is_some_and(|r| {
            let name = &frame[r.clone()];
            [&b"SUBSCRIBE"[..], b"PSUBSCRIBE", b"SSUBSCRIBE"]
                .iter()
                .any(|c| name.eq_ignore_ascii_case(c))
        });
        if !adds {
            return true;
        }
        let held = self.pubsub.as_ref().map_or(0, |p| p.name_bytes);
        let added: usize = args
            .get(1..)
            .unwrap_or_default()
            .iter()
            .map(|r| name_cost(&frame[r.clone()]))
            .sum();
        held.saturating_add(added) <= self.shared.config.proxy.max_buffered_bytes
    }

    /// PING in RESP2 subscribed mode, answered by the Pub/Sub connection as Redis does.
    pub(super) fn pubsub_ping(&mut self, frame: &[u8], now: Instant) -> bool {
        match self.pubsub.as_mut() {
            Some(pubsub) if pubsub.subscribed => {
                pubsub.link.wbuf.extend_from_slice(frame);
                pubsub.expected += 1;
                let upto = pubsub.expected;
                self.expect(Source::Pubsub(upto), now);
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

    /// Subscriptions follow the default route when no `[pubsub] endpoint` is configured: after
    /// a flip or cutover of it, they are made again on its new endpoint (on a new connection,
    /// the old one closed). Messages published meanwhile may be missed, as on any reconnect.
    pub(super) fn follow_pubsub_endpoint(&mut self) {
        if self.shared.config.pubsub_endpoint.is_some() {
            return;
        }
        let table = self.shared.router.load();
        let target = table.target(self.shared.router.namespaces.default_id());
        let hello = self.state[crate::command::policy::StateKind::Hello as usize].clone();
        let Some(pubsub) = self.pubsub.as_mut() else {
            return;
        };
        // Only between confirmations: one still owed would come from the old connection.
        if pubsub.link.endpoint == target || pubsub.seen < pubsub.expected || !pubsub.streaming {
            return;
        }
        let mut link = Link::new(target);
        if let Some(hello) = &hello {
            link.replay.extend_from_slice(hello);
            link.skip += 1;
            link.replay_unanswered += 1;
        }
        let kinds: [&[u8]; 3] = [b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE"];
        for (kind, names) in kinds.iter().zip(&pubsub.names) {
            if names.is_empty() {
                continue;
            }
            let mut args: Vec<&[u8]> = vec![kind];
            args.extend(names.iter().map(Vec::as_slice));
            crate::resp::write_command(&mut link.replay, &args);
            let n = u32::try_from(names.len()).unwrap_or(u32::MAX);
            link.skip += n;
            link.replay_unanswered += n;
        }
        let address = self.shared.config.endpoints[target].clone();
        link.conn = Conn::Connecting(Box::pin(crate::upstream::open_owned(
            address,
            self.shared.config.proxy.connect_timeout,
            self.shared.config.proxy.max_buffered_bytes,
        )));
        tracing::debug!(endpoint = %self.shared.config.endpoints[target].name, "subscriptions follow the default route");
        pubsub.link = link;
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

    /// A `Source::Pubsub(upto)` entry is due: messages flow from now on, and confirmations
    /// up to `upto`; true once they have all been forwarded (or the connection is gone).
    pub(super) fn pubsub_due(&mut self, upto: u64) -> Result<bool, End> {
        let Some(pubsub) = self.pubsub.as_mut() else {
            return Ok(true);
        };
        pubsub.streaming = true;
        self.forward_pubsub()?;
        Ok(self.pubsub.as_ref().map_or(true, |p| p.seen >= upto))
    }

    /// Forwards every complete frame the Pub/Sub connection has, tracking subscribed mode.
    pub(super) fn forward_pubsub(&mut self) -> Result<(), End> {
        // Confirmations may go out only while their own entry is due.
        let confirmations_due = match self.pending.front().map(|p| &p.source) {
            Some(Source::Pubsub(upto)) => *upto,
            _ => 0,
        };
        let Some(pubsub) = self.pubsub.as_mut() else {
            return Ok(());
        };
        if !pubsub.streaming || self.front_started {
            return Ok(());
        }
        loop {
            let len = match crate::resp::reply::complete_len(&pubsub.link.rbuf) {
                Ok(Some(len)) => len,
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::Pubsub(UpstreamError::Protocol(e))),
            };
            let link = &mut pubsub.link;
            if link.skip > 0 && !is_message(&link.rbuf[..len]) {
                // The answer to a replayed HELLO or re-subscription: nobody's reply. Messages
                // of channels already re-subscribed may come in between; they are forwarded.
                if crate::resp::is_error(&link.rbuf) {
                    let text =
                        String::from_utf8_lossy(&link.rbuf[1..len.saturating_sub(2)]).into_owned();
                    return Err(End::Pubsub(UpstreamError::StateReplay(text)));
                }
                link.rbuf.advance(len);
                link.skip -= 1;
                link.replay_unanswered = link.replay_unanswered.saturating_sub(1);
                continue;
            }
            if !is_message(&pubsub.link.rbuf[..len]) {
                if pubsub.seen >= confirmations_due {
                    // Behind replies still owed: it waits, and so does what follows it.
                    return Ok(());
                }
                if crate::resp::is_error(&pubsub.link.rbuf) {
                    // A refused command (NOPERM, arity) is answered once, whatever it named.
                    pubsub.seen = confirmations_due;
                } else {
                    pubsub.seen += 1;
                }
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
        // Bounded even while streaming: forwarding stops at a confirmation that is not due
        // yet, and messages behind it must then wait on the endpoint (backpressure). Past the
        // bound, only a frame larger than it is read on, to be forwarded whole.
        let limit = self.shared.config.proxy.max_buffered_bytes;
        let may_read = room
            && (link.rbuf.len() < limit
                || (pubsub.streaming
                    && matches!(crate::resp::reply::complete_len(&link.rbuf), Ok(None))));
        if may_read {
            match crate::stream::poll_read_some(
                stream,
                cx,
                &mut link.rbuf,
                crate::stream::READ_CHUNK,
            ) {
                Poll::Ready(Ok(0)) => return Err(End::Pubsub(UpstreamError::Closed)),
                Poll::Ready(Ok(_)) => progressed = true,
                Poll::Ready(Err(e)) => return Err(End::Pubsub(UpstreamError::io(e))),
                Poll::Pending => {}
            }
        }
        Ok(progressed)
    }
}

/// Whether a frame is a published message (`message`, `pmessage`, `smessage`), which answers
/// no command and may be forwarded between any two replies.
fn is_message(frame: &[u8]) -> bool {
    let Some(rest) = frame
        .strip_prefix(b"*")
        .or_else(|| frame.strip_prefix(b">"))
        .and_then(|r| r.iter().position(|&b| b == b'\n').map(|i| &r[i + 1..]))
    else {
        return false;
    };
    let Some((kind, _)) = element(rest) else {
        return false;
    };
    matches!(
        kind,
        b"$7\r\nmessage\r\n" | b"$8\r\npmessage\r\n" | b"$8\r\nsmessage\r\n"
    )
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
    fn messages_are_told_from_confirmations() {
        assert!(is_message(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"));
        assert!(is_message(
            b">4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$1\r\nc\r\n$1\r\nm\r\n"
        ));
        assert!(is_message(
            b">3\r\n$8\r\nsmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"
        ));
        assert!(!is_message(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:2\r\n"));
        assert!(!is_message(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"));
        assert!(!is_message(b"-ERR wrong number of arguments\r\n"));
        assert!(!is_message(b"+OK\r\n"));
    }
}
