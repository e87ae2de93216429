//! MULTI/EXEC/DISCARD/WATCH/UNWATCH: a transaction runs whole on one endpoint.
//!
//! From WATCH or MULTI until EXEC, DISCARD or UNWATCH the session routes with the route
//! snapshot it had when the transaction began, so a flip takes effect after the transaction.
//! The endpoint is pinned by the first command with keys (WATCH's, or the first queued one;
//! a keyless first command pins the default route's). MULTI is answered by turnout and sent
//! to the pinned endpoint just before the first queued command, its `+OK` swallowed. A queued
//! command whose keys lead elsewhere is answered with an error at queue time, and EXEC then
//! answers `-EXECABORT`, as Redis does for a command refused while queueing.

use super::dispatch::Destination;
use super::{Session, Source};
use crate::command::policy::TxCommand;
use crate::command::{CommandId, Policy, Resolved};
use crate::config::EndpointId;
use crate::metrics::ErrorKind;
use crate::route::RouteTable;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
const EXECABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";

/// EXEC of a transaction with a refused command answers EXECABORT; DISCARD still answers OK.
fn aborted_reply(which: TxCommand) -> &'static [u8] {
    if which == TxCommand::Exec {
        EXECABORT
    } else {
        b"+OK\r\n"
    }
}

/// A transaction in progress (or keys being watched for one).
#[derive(Debug)]
pub struct Tx {
    /// The routes as they were when it began.
    pub table: Arc<RouteTable>,
    /// The endpoint it runs on, once known.
    pinned: Option<EndpointId>,
    /// Between MULTI and EXEC/DISCARD.
    in_multi: bool,
    /// MULTI has been sent to the pinned endpoint.
    multi_sent: bool,
    /// A command was refused while queueing: EXEC must answer EXECABORT.
    aborted: bool,
    /// Its copy for a dual-write secondary, replayed once EXEC succeeded.
    pub(super) copy: Option<Box<super::mirror::TxCopy>>,
}

impl Session {
    /// Whether requests are being queued in a transaction.
    pub(super) fn in_multi(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.in_multi)
    }

    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    pub(super) fn transaction_command(
        &mut self,
        which: TxCommand,
        resolved: Resolved,
        frame: &[u8],
        args: &[Range<usize>],
        table: &Arc<RouteTable>,
        now: Instant,
    ) {
        let id = resolved.id;
        match which {
            TxCommand::Multi if self.in_multi() => {
                self.local(
                    Bytes::from_static(b"-ERR MULTI calls can not be nested\r\n"),
                    now,
                );
            }
            TxCommand::Multi => {
                let tx = self.tx.get_or_insert_with(|| Tx::new(table.clone()));
                tx.in_multi = true;
                if let Some(pinned) = tx.pinned {
                    // Watching already: the endpoint is known, let it answer MULTI itself.
                    tx.multi_sent = true;
                    self.forward_pinned(pinned, frame, id, now);
                } else {
                    self.local(Bytes::from_static(b"+OK\r\n"), now);
                }
            }
            TxCommand::Exec | TxCommand::Discard if !self.in_multi() => {
                self.forward_keyless(frame, id, table, now)
            }
            TxCommand::Exec | TxCommand::Discard => self.finish(which, id, frame, now),
            TxCommand::Watch if self.in_multi() => self.queue(resolved, frame, args, table, now),
            TxCommand::Watch => self.watch(resolved, frame, args, table, now),
            TxCommand::Unwatch => {
                if self.in_multi() {
                    self.queue(resolved, frame, args, table, now);
                    return;
                }
                match self.tx.take().and_then(|tx| tx.pinned) {
                    Some(pinned) => self.forward_pinned(pinned, frame, id, now),
                    None => self.forward_keyless(frame, id, table, now),
                }
            }
        }
    }

    /// EXEC or DISCARD closing a MULTI.
    fn finish(&mut self, which: TxCommand, id: CommandId, frame: &[u8], now: Instant) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        match (tx.pinned, tx.multi_sent) {
            (Some(pinned), true) if tx.aborted => {
                self.swallow(pinned, DISCARD);
                self.local(Bytes::from_static(aborted_reply(which)), now);
            }
            (Some(pinned), true) => {
                self.forward_pinned(pinned, frame, id, now);
                if let Some(copy) = tx.copy {
                    self.mirror_exec(copy);
                }
            }
            // Watching, nothing queued: EXEC must still run there to honour WATCH.
            (Some(pinned), false) => {
                self.swallow(pinned, MULTI);
                self.forward_pinned(pinned, frame, id, now);
            }
            (None, _) if tx.aborted => self.local(Bytes::from_static(aborted_reply(which)), now),
            (None, _) if which == TxCommand::Exec => self.local(Bytes::from_static(b"*0\r\n"), now),
            (None, _) => self.local(Bytes::from_static(b"+OK\r\n"), now),
        }
    }

    /// WATCH outside MULTI pins the endpoint of its keys.
    fn watch(
        &mut self,
        resolved: Resolved,
        frame: &[u8],
        args: &[Range<usize>],
        table: &Arc<RouteTable>,
        now: Instant,
    ) {
        let Some(endpoint) = self.single_endpoint(resolved, frame, args, table) else {
            self.refuse(
                "CROSSNS keys of this WATCH are routed to different endpoints",
                ErrorKind::CrossEndpoint,
                now,
            );
            return;
        };
        let rewritten = match self.rewrite_in_tx(&resolved, frame, args, endpoint) {
            Ok(rewritten) => rewritten,
            Err(message) => return self.refuse(&message, ErrorKind::Refused, now),
        };
        let frame = rewritten.as_deref().unwrap_or(frame);
        let tx = self.tx.get_or_insert_with(|| Tx::new(table.clone()));
        match tx.pinned {
            Some(pinned) if pinned != endpoint => {
                self.refuse(
                    "CROSSNS watched keys must all be routed to one endpoint",
                    ErrorKind::CrossEndpoint,
                    now,
                );
            }
            _ => {
                tx.pinned = Some(endpoint);
                self.forward_pinned(endpoint, frame, resolved.id, now);
            }
        }
    }

    /// A command between MULTI and EXEC: queued on the pinned endpoint, or refused (which
    /// aborts the transaction).
    pub(super) fn queue(
        &mut self,
        resolved: Resolved,
        frame: &[u8],
        args: &[Range<usize>],
        table: &Arc<RouteTable>,
        now: Instant,
    ) {
        let refusal = match resolved.policy {
            Policy::Refuse(reason) => Some(format!("ERR turnout: {reason}")),
            Policy::State(_) => Some(
                "ERR turnout: connection-state commands are not supported inside MULTI".to_string(),
            ),
            Policy::Quit
            | Policy::Forward
            | Policy::Transaction(_)
            | Policy::Auth
            | Policy::Pattern
            | Policy::Publish
            | Policy::Reset => None,
            Policy::Subscribe => {
                Some("ERR turnout: subscriptions are not supported inside MULTI".to_string())
            }
            Policy::ClientReply => {
                Some("ERR turnout: CLIENT REPLY is not supported inside MULTI".to_string())
            }
            // Inside a transaction it could only reach the pinned endpoint.
            // SCRIPT EXISTS only reads: it may run on the pinned endpoint.
            Policy::Everywhere if resolved.spec.is_some_and(|s| s.name == "script|exists") => None,
            Policy::Everywhere => Some(
                "ERR turnout: SCRIPT and FUNCTION management is not supported inside MULTI (it must reach every endpoint)"
                    .to_string(),
            ),
        };
        if let Some(message) = refusal {
            return self.abort(&message, now);
        }
        let Some(endpoint) = self.single_endpoint(resolved, frame, args, table) else {
            return self.abort(
                "CROSSNS keys of this command are routed to different endpoints",
                now,
            );
        };
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        let pinned = *tx.pinned.get_or_insert(endpoint);
        if pinned != endpoint {
            let message = format!(
                "CROSSNS this command's keys are routed to endpoint '{}' but the transaction runs on '{}'",
                self.shared.config.endpoints[endpoint].name, self.shared.config.endpoints[pinned].name
            );
            return self.abort(&message, now);
        }
        let rewritten = match self.rewrite_in_tx(&resolved, frame, args, pinned) {
            Ok(rewritten) => rewritten,
            Err(message) => return self.abort(&message, now),
        };
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        if !tx.multi_sent {
            tx.multi_sent = true;
            self.swallow(pinned, MULTI);
        }
        self.forward_pinned(
            pinned,
            rewritten.as_deref().unwrap_or(frame),
            resolved.id,
            now,
        );
        self.mirror_queued(&resolved, frame, args);
    }

    fn abort(&mut self, message: &str, now: Instant) {
        if let Some(tx) = self.tx.as_mut() {
            tx.aborted = true;
        }
        self.refuse(message, ErrorKind::Refused, now);
    }

    /// The one endpoint all of a request's keys lead to: for a keyless request, the
    /// transaction's pinned endpoint, else the default route's.
    fn single_endpoint(
        &self,
        resolved: Resolved,
        frame: &[u8],
        args: &[Range<usize>],
        table: &RouteTable,
    ) -> Option<EndpointId> {
        match self.destination(resolved.spec, frame, args, table) {
            Destination::One { endpoint, .. } => Some(endpoint),
            Destination::Keyless { endpoint, .. } => Some(
                self.tx
                    .as_ref()
                    .and_then(|tx| tx.pinned)
                    .unwrap_or(endpoint),
            ),
            Destination::Split { .. } | Destination::Unknowable => None,
        }
    }

    fn forward_pinned(&mut self, endpoint: EndpointId, frame: &[u8], id: CommandId, now: Instant) {
        let ns = self.shared.router.namespaces.default_id();
        self.forward(endpoint, frame, ns, id, now);
    }

    fn forward_keyless(&mut self, frame: &[u8], id: CommandId, table: &RouteTable, now: Instant) {
        let ns = self.shared.router.namespaces.keyless(self.db);
        self.forward(table.target(ns), frame, ns, id, now);
    }

    /// Sends turnout's own command to an endpoint, its reply swallowed.
    fn swallow(&mut self, endpoint: EndpointId, frame: &[u8]) {
        self.prepare_link(endpoint);
        self.links[endpoint].queue(frame);
        self.expect(Source::Swallow(endpoint), Instant::now());
    }
}

impl Tx {
    fn new(table: Arc<RouteTable>) -> Self {
        Tx {
            table,
            pinned: None,
            in_multi: false,
            multi_sent: false,
            aborted: false,
            copy: None,
        }
    }
}
