//! From request bytes to an endpoint's write buffer.
//!
//! Each complete request is classified through the command table, its keys are mapped to
//! namespaces and through the route snapshot to one endpoint, and its original bytes are
//! appended to that endpoint's link. The route snapshot is loaded once per batch.

use super::{auth, split, Session, Source};
use crate::command::keys::{for_each_key, KeysError};
use crate::command::policy::StateKind;
use crate::command::{self, CommandId, Policy};
use crate::config::EndpointId;
use crate::metrics::{self, ErrorKind};
use crate::resp::{self, request::Parsed};
use crate::route::{NsId, RouteTable};
use bytes::{Buf, Bytes, BytesMut};
use std::ops::ControlFlow;
use std::time::Instant;

/// Requests of at least this many bytes, forwarded whole to an endpoint with nothing else
/// queued, are moved out of the client buffer instead of copied (a large value's copy was
/// 7.6% of turnout's CPU under 64 KiB SETs).
const MOVE_AT_LEAST: usize = 16 * 1024;

/// Where a request's keys lead.
pub(super) enum Destination {
    /// One endpoint.
    One { ns: NsId, endpoint: EndpointId },
    /// No keys: the default route's endpoint.
    Keyless { ns: NsId, endpoint: EndpointId },
    /// Keys on two endpoints: the first key's and the first key elsewhere.
    Split { first: NsId, other: NsId },
    /// Keys that cannot be found from the command's arguments.
    Unknowable,
}

/// How many complete requests the held part of the read buffer starts with (for a
/// cutover's report), counted as bytes arrive: each turn parses only what came in since the
/// last, not the whole held buffer again.
#[derive(Debug, Default)]
pub(super) struct HeldCount {
    /// Where counting stopped: the end of the last complete request counted.
    pos: usize,
    /// Complete requests before `pos`.
    count: usize,
    /// Progress through the partly received request at `pos`.
    resume: resp::request::Resume,
    /// Its arguments so far.
    args: Vec<std::ops::Range<usize>>,
}

impl HeldCount {
    /// Complete requests at the start of `buf`, which is the buffer last counted with bytes
    /// appended (or anything, after [`HeldCount::reset`]).
    pub(super) fn count(&mut self, buf: &[u8], max_request: usize) -> usize {
        while let Some(rest) = buf.get(self.pos..) {
            match resp::request::parse_resumable(
                rest,
                &mut self.args,
                max_request,
                &mut self.resume,
            ) {
                Ok(Parsed::Multibulk { len } | Parsed::Inline { len } | Parsed::Empty { len }) => {
                    self.pos += len;
                    self.count += 1;
                    self.resume = Default::default();
                }
                _ => break,
            }
        }
        self.count
    }

    /// Starts over: the buffer was replaced, or nothing is held.
    pub(super) fn reset(&mut self) {
        self.pos = 0;
        self.count = 0;
        self.resume = Default::default();
        self.args.clear();
    }
}

/// The namespace a KEYS or SCAN pattern stays within: the one whose prefix starts the
/// pattern's literal part (before any `*`, `?`, `[` or backslash), else the default route.
pub(super) fn pattern_namespace(
    namespaces: &crate::route::Namespaces,
    db: u8,
    frame: &[u8],
    args: &[std::ops::Range<usize>],
) -> NsId {
    let arg = |i: usize| args.get(i).map(|r| &frame[r.clone()]);
    let is_keys = arg(0).is_some_and(|n| n.eq_ignore_ascii_case(b"KEYS"));
    let pattern = if is_keys {
        arg(1)
    } else {
        (2..args.len())
            .find(|&i| arg(i).is_some_and(|a| a.eq_ignore_ascii_case(b"MATCH")))
            .and_then(|i| arg(i + 1))
    };
    let Some(pattern) = pattern else {
        return namespaces.keyless(db);
    };
    let literal_end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    // The namespace whose prefix starts the literal part contains every key that matches.
    namespaces.of_key_in(db, &pattern[..literal_end])
}

/// Whether a command needs the session's own upstream connection rather than a shared one:
/// it sets connection state, starts a transaction or a subscription, may block (a blocked
/// shared connection would stall every session on it), or asks about the connection itself
/// (CLIENT …). Unknown commands are assumed to need it. AUTH does not: it is checked against
/// turnout's own credentials and never reaches an endpoint, whose connections always
/// authenticate as the endpoint's configured user.
fn needs_own_connection(resolved: &command::Resolved) -> bool {
    match resolved.policy {
        Policy::State(_) | Policy::Transaction(_) | Policy::Subscribe | Policy::Reset => true,
        Policy::Auth => false,
        _ => match resolved.spec {
            None => true,
            Some(spec) => {
                spec.flags & command::spec::flags::BLOCKING != 0
                    || matches!(command::label(resolved.id), "client" | "wait" | "waitaof")
            }
        },
    }
}

impl Session {
    /// Dispatches every complete request in the client buffer, as far as limits allow.
    pub(super) fn dispatch_buffered(&mut self) {
        self.holding = false;
        self.held_requests = 0;
        if self.cin.is_empty() || !self.wants_requests() {
            self.held_count.reset();
            return;
        }
        let shared = self.shared.clone();
        let live = shared.router.load();
        if live.any_held || live.epoch != self.drain_reported {
            // The drain report must look at this snapshot.
            self.routes_dirty = true;
        }
        let now = Instant::now();
        let max_request = shared.config.proxy.max_request_bytes;
        let mut cin = std::mem::take(&mut self.cin);
        let unparsed = cin.len();
        while self.wants_requests() {
            let mut args = std::mem::take(&mut self.args);
            let parsed =
                resp::request::parse_resumable(&cin, &mut args, max_request, &mut self.resume);
            match parsed {
                Ok(Parsed::Incomplete) => {
                    self.args = args;
                    // A large value whose length is known: room for all of it now.
                    let coming = self.resume.wanted().saturating_sub(cin.len());
                    crate::stream::reserve_ahead(&mut cin, coming);
                    break;
                }
                Ok(Parsed::Empty { len }) => cin.advance(len),
                Ok(Parsed::Multibulk { len }) => {
                    // A transaction routes with the snapshot it began with.
                    let snapshot = self.tx.as_ref().map(|tx| tx.table.clone());
                    if snapshot.is_none()
                        && live.any_held
                        && self.is_held(&cin[..len], &args, &live)
                    {
                        // A cutover holds its namespace: it waits here, unsent, with what
                        // follows it, until the hold is released.
                        self.holding = true;
                        self.args = args;
                        self.resume = Default::default();
                        break;
                    }
                    let table = snapshot.as_ref().unwrap_or(&*live);
                    if len >= MOVE_AT_LEAST {
                        self.movable = Some((cin.as_ptr() as usize, len));
                    }
                    self.request(&cin[..len], &args, table, now);
                    self.movable = None;
                    match self.moved_to.take() {
                        // `forward` counted it first in the endpoint's empty buffer; whatever
                        // was queued there after it follows it. (A link failed meanwhile has
                        // forgotten what it counted, and fails the request's reply itself.)
                        Some((ep, counted)) if self.links[ep].appended >= counted => {
                            let mut moved = cin.split_to(len);
                            let link = &mut self.links[ep];
                            if !link.wbuf.is_empty() {
                                moved.extend_from_slice(&link.wbuf);
                            }
                            link.wbuf = moved;
                        }
                        _ => cin.advance(len),
                    }
                }
                Ok(Parsed::Inline { len }) => {
                    let mut inline = std::mem::take(&mut self.inline);
                    inline.clear();
                    let converted = resp::request::inline_to_multibulk(&cin[..len], &mut inline)
                        .and_then(|()| resp::request::parse(&inline, &mut args, usize::MAX));
                    match converted {
                        Ok(Parsed::Multibulk { len: n })
                            if self.tx.is_none()
                                && live.any_held
                                && self.is_held(&inline[..n], &args, &live) =>
                        {
                            self.holding = true;
                            self.inline = inline;
                            self.args = args;
                            self.resume = Default::default();
                            break;
                        }
                        Ok(Parsed::Multibulk { len }) => {
                            let snapshot = self.tx.as_ref().map(|tx| tx.table.clone());
                            let table = snapshot.as_ref().unwrap_or(&*live);
                            self.request(&inline[..len], &args, table, now)
                        }
                        Ok(_) => {}
                        Err(e) => self.protocol_error(e, now),
                    }
                    self.inline = inline;
                    cin.advance(len);
                }
                Err(e) => {
                    self.protocol_error(e, now);
                    cin.clear();
                }
            }
            self.args = args;
        }
        if self.holding {
            if cin.len() != unparsed {
                // Requests went out this turn: the held one is not the one counted from.
                self.held_count.reset();
            }
            // The held request stays first in `cin` while held; only bytes are appended.
            self.held_requests = self.held_count.count(&cin, max_request);
        } else {
            self.held_count.reset();
        }
        self.cin = cin;
    }

    /// Whether a request belongs to a namespace a cutover holds: a keyed command by any of
    /// its keys, a keyless forwarded one by the default route, KEYS/SCAN by their pattern.
    fn is_held(&self, frame: &[u8], args: &[std::ops::Range<usize>], table: &RouteTable) -> bool {
        let Some(name) = args.first().map(|r| &frame[r.clone()]) else {
            return false;
        };
        let resolved = command::resolve(name, args.get(1).map(|r| &frame[r.clone()]));
        let namespaces = &self.shared.router.namespaces;
        match resolved.policy {
            Policy::Forward => {}
            Policy::Pattern => {
                return table.held(pattern_namespace(namespaces, self.db, frame, args))
            }
            _ => return false,
        }
        let mut keyed = false;
        let mut held = false;
        if let Some(spec) = resolved.spec {
            let _ = for_each_key(spec, frame, args, |key| {
                keyed = true;
                held = table.held(namespaces.of_key_in(self.db, key));
                if held {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
        }
        held || (!keyed && table.held(namespaces.keyless(self.db)))
    }

    /// Answers a malformed request and stops reading: Redis closes such connections too.
    fn protocol_error(&mut self, err: resp::ProtocolError, now: Instant) {
        metrics::error(ErrorKind::Protocol);
        tracing::debug!(cause = %err, "client protocol error");
        let mut reply = BytesMut::new();
        resp::write_protocol_error(&mut reply, err);
        self.local(reply.freeze(), now);
        self.stop_reading = true;
    }

    /// Queues a reply made by turnout.
    pub(super) fn local(&mut self, reply: Bytes, since: Instant) {
        if self.pending.is_empty() && !self.front_started && self.reply_mode == super::ReplyMode::On
        {
            self.cout.extend_from_slice(&reply);
            return;
        }
        self.expect(Source::Local(reply), since);
    }

    pub(super) fn refuse(&mut self, message: &str, kind: ErrorKind, since: Instant) {
        metrics::error(kind);
        let mut reply = BytesMut::with_capacity(message.len() + 16);
        resp::write_error(&mut reply, message);
        self.local(reply.freeze(), since);
    }

    /// Handles one request, `frame` being its complete multibulk bytes.
    fn request(
        &mut self,
        frame: &[u8],
        args: &[std::ops::Range<usize>],
        table: &std::sync::Arc<RouteTable>,
        now: Instant,
    ) {
        let Some(name) = args.first().map(|r| &frame[r.clone()]) else {
            return;
        };
        let second = args.get(1).map(|r| &frame[r.clone()]);
        let resolved = command::resolve(name, second);
        if self.mux_ok && needs_own_connection(&resolved) {
            self.leave_mux();
        }
        // Credentials are turnout's own: never queued, never forwarded.
        if resolved.policy == Policy::Auth {
            return self.auth_command(frame, args, now);
        }
        if !self.authenticated
            && !matches!(
                resolved.policy,
                Policy::Quit | Policy::Reset | Policy::State(StateKind::Hello)
            )
        {
            return self.local(Bytes::from_static(auth::NOAUTH), now);
        }
        if let Policy::Transaction(which) = resolved.policy {
            return self.transaction_command(which, resolved, frame, args, table, now);
        }
        if resolved.policy == Policy::Reset {
            return self.reset(now);
        }
        if self.resp2_subscribed() && !matches!(resolved.policy, Policy::Subscribe | Policy::Quit) {
            if name.eq_ignore_ascii_case(b"PING") && self.pubsub_ping(frame, now) {
                return;
            }
            let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
            return self.local(super::pubsub::not_in_subscribed_mode(&lower), now);
        }
        if self.in_multi() && resolved.policy != Policy::Quit {
            return self.queue(resolved, frame, args, table, now);
        }
        match resolved.policy {
            Policy::Everywhere => {
                return self.everywhere(frame, table, resolved.id, now);
            }
            Policy::ClientReply => {
                let mode = args.get(2).map(|r| &frame[r.clone()]);
                return match mode {
                    Some(m) if m.eq_ignore_ascii_case(b"ON") => {
                        self.reply_mode = super::ReplyMode::On;
                        self.local(Bytes::from_static(b"+OK\r\n"), now);
                    }
                    Some(m) if m.eq_ignore_ascii_case(b"OFF") => {
                        self.reply_mode = super::ReplyMode::Off
                    }
                    Some(m) if m.eq_ignore_ascii_case(b"SKIP") => {
                        self.reply_mode = super::ReplyMode::Skip
                    }
                    _ => self.local(Bytes::from_static(b"-ERR syntax error\r\n"), now),
                };
            }
            Policy::Reset => {}
            Policy::Subscribe => return self.subscribe(frame, args, table, now),
            Policy::Publish => {
                let endpoint = self.pubsub_endpoint(table);
                let ns = self.shared.router.namespaces.default_id();
                return self.forward(endpoint, frame, ns, resolved.id, now);
            }
            Policy::Pattern => {
                let ns = pattern_namespace(&self.shared.router.namespaces, self.db, frame, args);
                return self.forward_routed(&resolved, frame, args, ns, table.target(ns), now);
            }
            Policy::Forward | Policy::Transaction(_) | Policy::Auth => {}
            Policy::Quit => {
                self.local(Bytes::from_static(b"+OK\r\n"), now);
                self.stop_reading = true;
                return;
            }
            Policy::Refuse(reason) => {
                self.refuse(&format!("ERR turnout: {reason}"), ErrorKind::Refused, now);
                return;
            }
            Policy::State(kind) => {
                self.connection_state(kind, frame, args, table, resolved.id, now);
                return;
            }
        }
        match self.destination(resolved.spec, frame, args, table) {
            Destination::One { ns, endpoint } => {
                let rewritten = if self
                    .shared
                    .router
                    .namespaces
                    .keyspace
                    .is_single_db(endpoint)
                {
                    match self.rewrite_for(&resolved, frame, args, ns, endpoint) {
                        Ok(rewritten) => Some(rewritten),
                        Err(message) => return self.refuse(&message, ErrorKind::Refused, now),
                    }
                } else {
                    None
                };
                // A blocking command a cutover can unblock and send again. Not on a cluster
                // endpoint: its CLIENT ID would go to the slot router's keyless node, not the
                // node where the command blocks, so an unblock would miss it (or hit another
                // client with that id). A cutover then waits for such a command to return
                // (its reply or its timeout) within the drain's deadline.
                let blocking = self.tx.is_none()
                    && resolved
                        .spec
                        .is_some_and(|s| s.flags & command::spec::flags::BLOCKING != 0)
                    && !matches!(
                        self.shared.config.endpoints[endpoint].kind,
                        crate::config::EndpointKind::Cluster { .. }
                    );
                if blocking && !self.links[endpoint].id_asked {
                    // Its connection's id lets a cutover unblock it later.
                    self.prepare_link(endpoint);
                    self.links[endpoint].queue(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n");
                    self.links[endpoint].id_asked = true;
                    self.expect(Source::ClientId(endpoint), now);
                }
                match rewritten {
                    None => self.forward(endpoint, frame, ns, resolved.id, now),
                    Some(rewritten) => {
                        self.forward(endpoint, &rewritten.frame, ns, resolved.id, now);
                        if let Some(pending) = self.pending.back_mut() {
                            pending.strip = rewritten.strip;
                        }
                    }
                }
                if blocking {
                    // Kept in a reused buffer. The CLIENT ID above and this copy cannot wait
                    // until a cutover runs: one may start while the command blocks, and then
                    // the connection cannot be asked anything and the request is gone.
                    if let Some(pending) = self.pending.back_mut() {
                        pending.reissue = true;
                        self.reissue.clear();
                        self.reissue.extend_from_slice(frame);
                    }
                }
                self.mirror(&resolved, frame, args, table, true);
            }
            Destination::Keyless { ns, endpoint } => {
                self.forward_routed(&resolved, frame, args, ns, endpoint, now);
            }
            Destination::Split { first, other } => {
                match split::splittable(command::label(resolved.id)) {
                    Some(how) => {
                        self.split(frame, args, how, table, now);
                        self.mirror(&resolved, frame, args, table, true);
                    }
                    None => {
                        let namespaces = &self.shared.router.namespaces;
                        let endpoints = &self.shared.config.endpoints;
                        let message = format!(
                    "CROSSNS keys of this command are routed to different endpoints ({} -> {}, {} -> {})",
                    namespaces.name(first),
                    endpoints[table.target(first)].name,
                    namespaces.name(other),
                    endpoints[table.target(other)].name,
                );
                        self.refuse(&message, ErrorKind::CrossEndpoint, now);
                    }
                }
            }
            Destination::Unknowable => {
                let message = format!(
                    "ERR turnout: the keys of this '{}' cannot be determined from its arguments, so it cannot be routed",
                    command::label(resolved.id)
                );
                self.refuse(&message, ErrorKind::Refused, now);
            }
        }
    }

    pub(super) fn destination(
        &self,
        spec: Option<&'static command::CommandSpec>,
        frame: &[u8],
        args: &[std::ops::Range<usize>],
        table: &RouteTable,
    ) -> Destination {
        let namespaces = &self.shared.router.namespaces;
        let mut first: Option<(NsId, EndpointId)> = None;
        let mut other: Option<NsId> = None;
        let db = self.db;
        let mut note = |key: &[u8]| {
            let ns = namespaces.of_key_in(db, key);
            let endpoint = table.target(ns);
            match first {
                None => first = Some((ns, endpoint)),
                Some((_, e)) if e != endpoint => {
                    other = Some(ns);
                    return ControlFlow::Break(());
                }
                Some(_) => {}
            }
            ControlFlow::Continue(())
        };
        if let Some(spec) = spec {
            if for_each_key(spec, frame, args, &mut note) == Err(KeysError::Unknowable) {
                return Destination::Unknowable;
            }
        } else if let Some(extra) = args
            .first()
            .and_then(|name| self.extra_command(&frame[name.clone()]))
        {
            // A keyed command the table lacks, declared in [[commands]].
            let last = if extra.last_key >= 0 {
                extra.last_key
            } else {
                args.len() as i64 + extra.last_key
            };
            let mut i = extra.first_key;
            while (i as i64) <= last
                && i < args.len()
                && note(&frame[args[i].clone()]).is_continue()
            {
                i += extra.step;
            }
        }
        match (first, other) {
            (Some((first, _)), Some(other)) => Destination::Split { first, other },
            (Some((ns, endpoint)), None) => Destination::One { ns, endpoint },
            (None, _) => {
                let ns = namespaces.keyless(db);
                Destination::Keyless {
                    ns,
                    endpoint: table.target(ns),
                }
            }
        }
    }

    /// The `[[commands]]` entry for a command name the table lacks.
    pub(super) fn extra_command(&self, name: &[u8]) -> Option<&crate::config::ExtraCommand> {
        self.shared
            .config
            .extra_commands
            .iter()
            .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
    }

    /// RESET: no transaction, replies on, connection state back to defaults (and not
    /// authenticated when `[proxy.auth]` is set), on the session and on every upstream
    /// connection it has.
    fn reset(&mut self, now: Instant) {
        self.tx = None;
        // Dropping the Pub/Sub connection ends every subscription.
        self.pubsub = None;
        self.reply_mode = super::ReplyMode::On;
        self.authenticated = self.shared.config.proxy.auth.is_none();
        self.state = Default::default();
        self.db = 0;
        self.accepted_db = 0;
        for ep in 0..self.links.len() {
            let link = &self.links[ep];
            if link.is_active() || link.prepared || link.awaiting_state > 0 {
                self.links[ep].queue(b"*1\r\n$5\r\nRESET\r\n");
                self.expect(Source::Swallow(ep), now);
            }
        }
        self.local(Bytes::from_static(b"+RESET\r\n"), now);
    }

    /// SCRIPT LOAD, FUNCTION LOAD and the like: sent to every configured endpoint, so that a
    /// script or function is there whichever endpoint a flip moves a namespace to. The client
    /// gets the first error, else the default route's endpoint's reply.
    fn everywhere(&mut self, frame: &[u8], table: &RouteTable, command: CommandId, now: Instant) {
        let default_ns = self.shared.router.namespaces.default_id();
        let mut mask = 0u64;
        for ep in 0..self.links.len() {
            self.prepare_link(ep);
            self.links[ep].queue(frame);
            mask |= 1 << ep;
            self.stats
                .request(&self.shared.stats, default_ns, ep, command);
        }
        self.expect(
            Source::Gather {
                mask,
                primary: table.target(default_ns),
                state: false,
            },
            now,
        );
    }

    /// Appends a request to an endpoint's link and records whose reply is next.
    pub(super) fn forward(
        &mut self,
        endpoint: EndpointId,
        frame: &[u8],
        ns: NsId,
        command: CommandId,
        now: Instant,
    ) {
        self.prepare_link(endpoint);
        let link = &mut self.links[endpoint];
        if self.movable == Some((frame.as_ptr() as usize, frame.len()))
            && self.moved_to.is_none()
            && link.wbuf.is_empty()
        {
            // The whole client request, unchanged: the dispatch loop moves it in.
            link.queue_moved(frame.len());
            self.moved_to = Some((endpoint, link.appended));
        } else {
            link.queue(frame);
        }
        // Inside a transaction every command may concern any namespace (it all runs at EXEC).
        self.tag = if self.tx.is_some() {
            super::NS_ANY
        } else {
            u32::from(ns)
        };
        self.expect(Source::Upstream(endpoint), now);
        self.stats
            .request(&self.shared.stats, ns, endpoint, command);
    }

    /// SELECT, HELLO, CLIENT SETNAME and the like: applied to every upstream connection the
    /// session has (at least the default route's), and replayed on connections opened later.
    fn connection_state(
        &mut self,
        kind: StateKind,
        frame: &[u8],
        args: &[std::ops::Range<usize>],
        table: &RouteTable,
        command: CommandId,
        now: Instant,
    ) {
        let rewritten;
        let frame = match kind {
            StateKind::Hello => match self.hello_auth(frame, args) {
                auth::HelloAuth::Absent if !self.authenticated => {
                    return self.local(Bytes::from_static(auth::NOAUTH_HELLO), now);
                }
                auth::HelloAuth::Absent => frame,
                auth::HelloAuth::Accepted(without_auth) => {
                    rewritten = without_auth;
                    &rewritten[..]
                }
                auth::HelloAuth::Refused => return self.local(auth::wrongpass(), now),
            },
            _ => frame,
        };
        let default_ns = self.shared.router.namespaces.default_id();
        let primary = table.target(default_ns);
        // Single-database endpoints never see SELECT: the session's database selects
        // namespaces (and so key prefixes) instead.
        let skip = match kind {
            StateKind::Select => match self.select_db(frame, args, now) {
                Some(skip) => skip,
                None => return,
            },
            _ => 0,
        };
        self.prepare_link(primary);
        let mut mask = 0u64;
        for (ep, link) in self.links.iter_mut().enumerate() {
            // Links waiting to be prepared take it too, in order behind their queued requests.
            if skip & (1 << ep) == 0
                && (link.is_active() || link.prepared || link.awaiting_state > 0)
            {
                link.queue_state(frame);
                mask |= 1 << ep;
                self.stats
                    .request(&self.shared.stats, default_ns, ep, command);
            }
        }
        self.state_inflight
            .push_back((kind, Bytes::copy_from_slice(frame)));
        self.expect(
            Source::Gather {
                mask,
                primary,
                state: true,
            },
            now,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::HeldCount;

    #[test]
    fn held_requests_are_counted_as_bytes_arrive() {
        let mut held = HeldCount::default();
        let mut buf = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET".to_vec();
        assert_eq!(held.count(&buf, 1 << 20), 1);
        buf.extend_from_slice(b"\r\n$1\r\nk\r\n\r\nPING\r\n*1\r\n$4\r\nPI");
        assert_eq!(held.count(&buf, 1 << 20), 4);
        // Counting resumes where it stopped: the complete requests are not parsed again.
        assert_eq!(held.pos, buf.len() - b"*1\r\n$4\r\nPI".len());
        buf.extend_from_slice(b"NG\r\n");
        assert_eq!(held.count(&buf, 1 << 20), 5);
        assert_eq!(held.pos, buf.len());
        held.reset();
        assert_eq!(held.count(b"*1\r\n$4\r\nPING\r\n", 1 << 20), 1);
    }
}
