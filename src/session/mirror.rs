//! Shadow and dual-write from the session's side: which commands are copied, and in what order.
//!
//! After a command is forwarded to its target, its keys decide whether a copy goes to a
//! shadow or secondary endpoint ([`crate::route::Mode`]):
//! - a write, when a key's namespace is in `dual-write` (or `shadow` with `writes`), is
//!   mirrored whole to that namespace's secondary;
//! - a read whose keys all belong to namespaces shadowed to the same endpoint (`shadow`, or
//!   `dual-write` with `compare`) is, if sampled, sent there too, and the client's reply is
//!   captured as it streams past so the lane can compare the two.
//!
//! Nondeterministic commands (RANDOMKEY, SPOP, SCAN, ...; Redis's own
//! `nondeterministic_output` tip), blocking commands and keyless commands are never compared.
//! A transaction is mirrored only after its EXEC succeeded on the target, so its copy
//! depends on a reply still to come; every later copy of the session waits behind it in a
//! bounded backlog, which keeps the secondary's order the session's order.

use super::effect::Effect;
use super::{Pending, Session};
use crate::command::keys::for_each_key;
use crate::command::spec::flags;
use crate::command::{CommandSpec, Resolved};
use crate::config::EndpointId;
use crate::route::{Mode, NsId, RouteTable};
use crate::shadow::compare::Compare;
use crate::shadow::report::Outcome;
use crate::shadow::{Check, ConnState, Job, Primary};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::ops::{ControlFlow, Range};
use tokio::sync::oneshot;

/// Most copies a session holds back behind a transaction whose EXEC has not answered.
const MAX_BACKLOG: usize = 4096;
/// Most bytes of queued commands a transaction's copy may hold.
const MAX_TX_MIRROR: usize = 4 * 1024 * 1024;
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// A session's mirroring state.
#[derive(Debug)]
pub(super) struct Mirror {
    /// Picks the session's lane, so its copies keep their order.
    lane: u64,
    /// Sampling state (xorshift64).
    rng: u64,
    /// Copies waiting behind an unfilled hole, oldest first.
    backlog: VecDeque<Slot>,
    /// Copies ready to go, sent once per event-loop turn (one message per lane).
    outbox: Vec<(EndpointId, Job)>,
}

#[derive(Debug)]
enum Slot {
    Job(EndpointId, Job),
    /// A hole that turned out to need no copy.
    Skip,
    /// A copy that depends on a reply still to come.
    Hole,
}

/// Part of the client's reply kept for mirroring, attached to its pending entry.
#[derive(Debug)]
pub(super) struct Capture {
    bytes: BytesMut,
    over: bool,
    limit: usize,
    sink: Sink,
}

#[derive(Debug)]
enum Sink {
    /// The lane compares it with the shadow's reply.
    Compare(oneshot::Sender<Primary>),
    /// An EXEC: if it ran, the transaction's copy fills the session's oldest hole.
    Exec(Box<TxCopy>),
    /// A write mirrored by its effect: the copy built from the reply fills the oldest hole.
    Effect(Box<EffectCopy>),
}

/// What is needed to build a write's effect once its reply is in.
#[derive(Debug)]
pub(super) struct EffectCopy {
    endpoint: EndpointId,
    ns: NsId,
    command: crate::command::CommandId,
    effect: Effect,
    frame: Bytes,
    args: Vec<Range<usize>>,
}

/// A transaction's copy, built while it is queued.
#[derive(Debug)]
pub(super) struct TxCopy {
    endpoint: EndpointId,
    ns: NsId,
    command: crate::command::CommandId,
    /// Where the first key lies in `frame`.
    key: Range<usize>,
    frame: BytesMut,
    replies: u32,
    /// Too large to keep: the transaction is counted as dropped.
    over: bool,
}

impl Mirror {
    pub(super) fn new(lane: u64) -> Self {
        Mirror {
            lane,
            rng: lane.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            backlog: VecDeque::new(),
            outbox: Vec::new(),
        }
    }

    /// True with probability `p`.
    fn sampled(&mut self, p: f64) -> bool {
        if p >= 1.0 {
            return true;
        }
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let r = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        r < p
    }
}

impl Capture {
    /// Keeps up to `limit` bytes of a reply for `sink`.
    fn new(limit: usize, sink: Sink) -> Box<Capture> {
        Box::new(Capture {
            bytes: BytesMut::new(),
            over: false,
            limit,
            sink,
        })
    }

    /// Adds reply bytes as they are delivered.
    pub(super) fn extend(&mut self, bytes: &[u8]) {
        if self.over {
            return;
        }
        if matches!(self.sink, Sink::Exec(_)) {
            // Only the first bytes matter: keep them, whatever the reply's length.
            let room = self.limit.saturating_sub(self.bytes.len());
            self.bytes
                .extend_from_slice(&bytes[..room.min(bytes.len())]);
            return;
        }
        if self.bytes.len() + bytes.len() > self.limit {
            self.over = true;
            self.bytes = BytesMut::new();
        } else {
            self.bytes.extend_from_slice(bytes);
        }
    }
}

/// What a command is, for mirroring.
fn is_write(spec: &CommandSpec) -> bool {
    spec.flags & flags::WRITE != 0
        // Scripts and functions are not flagged `write` but may write.
        || (spec.flags & flags::SCRIPTING != 0 && spec.flags & flags::READONLY == 0)
}

fn is_comparable_read(spec: &CommandSpec) -> bool {
    let deterministic =
        spec.flags & flags::NONDETERMINISTIC_OUTPUT == 0 || matches!(spec.name, "ttl" | "pttl");
    spec.flags & flags::READONLY != 0
        && spec.flags & (flags::WRITE | flags::BLOCKING | flags::ADMIN | flags::PUBSUB) == 0
        && deterministic
}

impl Session {
    /// Copies a forwarded command to a shadow or secondary endpoint when its namespaces say
    /// so. `reply_pending`: the command's reply is the newest pending entry (a capture can be
    /// attached to it).
    pub(super) fn mirror(
        &mut self,
        resolved: &Resolved,
        frame: &[u8],
        args: &[Range<usize>],
        table: &RouteTable,
        reply_pending: bool,
    ) {
        if !table.mirrored {
            return;
        }
        let Some(spec) = resolved.spec else {
            return;
        };
        if is_write(spec) {
            if let Some(effect) = Effect::of(spec.name, frame, args) {
                return self.mirror_effect(
                    effect,
                    resolved,
                    spec,
                    frame,
                    args,
                    table,
                    reply_pending,
                );
            }
        }
        if spec.flags & flags::BLOCKING != 0 {
            // A blocking copy could stall the lane; a blocked write cannot be mirrored.
            if is_write(spec) {
                if let Some((ns, _, _)) = self.mirror_target(spec, frame, args, table, true) {
                    self.shared
                        .shadow
                        .report
                        .record(ns, resolved.id, Outcome::Dropped);
                }
            }
            return;
        }
        if is_write(spec) {
            let Some((ns, endpoint, key)) = self.mirror_target(spec, frame, args, table, true)
            else {
                return;
            };
            if spec.flags & flags::NONDETERMINISTIC_OUTPUT != 0 {
                // SPOP, XADD with `*` and the like would do something else on the secondary.
                self.shared
                    .shadow
                    .report
                    .record(ns, resolved.id, Outcome::Dropped);
                return;
            }
            let (copied, key) = match super::split::splittable(crate::command::label(resolved.id)) {
                Some((_, per_key)) => {
                    match mirrored_part(self, frame, args, per_key, endpoint, table) {
                        Some(part) => part,
                        None => return,
                    }
                }
                None => (Bytes::copy_from_slice(frame), key),
            };
            let job = Job {
                ns,
                command: resolved.id,
                key,
                frame: copied,
                state: self.conn_state(),
                check: Check::Write { replies: 1 },
            };
            return self.send_copy(endpoint, job);
        }
        if !reply_pending || !is_comparable_read(spec) {
            return;
        }
        let Some((ns, endpoint, key)) = self.mirror_target(spec, frame, args, table, false) else {
            return;
        };
        let sample = match table.routes[usize::from(ns)].mode {
            Mode::Shadow { sample, .. } | Mode::DualWrite { sample, .. } => sample,
            Mode::Direct => return,
        };
        if !self.mirror.sampled(sample) {
            return;
        }
        let Some(pending) = self.pending.back_mut() else {
            return;
        };
        if pending.silent || pending.capture.is_some() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        pending.capture = Some(Capture::new(
            self.shared.shadow.max_compare_bytes,
            Sink::Compare(tx),
        ));
        let copied = Bytes::copy_from_slice(frame);
        let job = Job {
            ns,
            command: resolved.id,
            key,
            frame: copied,
            state: self.conn_state(),
            check: Check::Compare {
                primary: rx,
                how: Compare::of(spec),
            },
        };
        self.send_copy(endpoint, job);
    }

    /// SPOP and blocking pops: the copy waits for the reply, which says what to remove.
    #[allow(clippy::too_many_arguments)]
    fn mirror_effect(
        &mut self,
        effect: Effect,
        resolved: &Resolved,
        spec: &CommandSpec,
        frame: &[u8],
        args: &[Range<usize>],
        table: &RouteTable,
        reply_pending: bool,
    ) {
        let Some((ns, endpoint, _)) = self.mirror_target(spec, frame, args, table, true) else {
            return;
        };
        let limit = self.shared.shadow.max_compare_bytes;
        let capture = match self.pending.back_mut() {
            Some(pending) if reply_pending && !pending.silent && pending.capture.is_none() => {
                pending
            }
            _ => {
                // CLIENT REPLY OFF: the reply, and so the effect, is never seen.
                return self
                    .shared
                    .shadow
                    .report
                    .record(ns, resolved.id, Outcome::Dropped);
            }
        };
        capture.capture = Some(Capture::new(
            limit,
            Sink::Effect(Box::new(EffectCopy {
                endpoint,
                ns,
                command: resolved.id,
                effect,
                frame: Bytes::copy_from_slice(frame),
                args: args.to_vec(),
            })),
        ));
        self.mirror.backlog.push_back(Slot::Hole);
    }

    /// Where a command's copy goes: for a write, the first key whose namespace mirrors
    /// writes; for a read, the shadow endpoint shared by every key's namespace (none if they
    /// differ). Returns the namespace, the endpoint and that key.
    fn mirror_target(
        &self,
        spec: &CommandSpec,
        frame: &[u8],
        args: &[Range<usize>],
        table: &RouteTable,
        write: bool,
    ) -> Option<(NsId, EndpointId, Range<usize>)> {
        let namespaces = &self.shared.router.namespaces;
        let mut found: Option<(NsId, EndpointId, &[u8])> = None;
        let mut keys = 0usize;
        let mut mixed = false;
        let _ = for_each_key(spec, frame, args, |key| {
            keys += 1;
            let ns = namespaces.of_key_in(self.db, key);
            let to = match (table.routes[usize::from(ns)].mode, write) {
                (Mode::DualWrite { secondary, .. }, true) => Some(secondary),
                (
                    Mode::Shadow {
                        endpoint,
                        writes: true,
                        ..
                    },
                    true,
                ) => Some(endpoint),
                (Mode::Shadow { endpoint, .. }, false) => Some(endpoint),
                (
                    Mode::DualWrite {
                        secondary,
                        compare: true,
                        ..
                    },
                    false,
                ) => Some(secondary),
                _ => None,
            };
            match (to, &found) {
                (Some(ep), None) if keys == 1 || write => {
                    found = Some((ns, ep, key));
                    if write {
                        return ControlFlow::Break(());
                    }
                }
                (Some(ep), Some((_, e, _))) if *e == ep => {}
                _ if write => {}
                _ => {
                    mixed = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if mixed {
            return None;
        }
        // Where the key lies in the frame, so a copy of the frame can share it.
        found.map(|(ns, ep, key)| {
            let start = (key.as_ptr() as usize).saturating_sub(frame.as_ptr() as usize);
            (ns, ep, start..start + key.len())
        })
    }

    /// The connection state a copy must run in.
    fn conn_state(&self) -> ConnState {
        use crate::command::policy::StateKind;
        let latest = |kind: StateKind| {
            self.state_inflight
                .iter()
                .rev()
                .find(|(k, _)| *k == kind)
                .map(|(_, f)| f.clone())
                .or_else(|| self.state[kind as usize].clone())
        };
        ConnState {
            select: latest(StateKind::Select),
            hello: latest(StateKind::Hello),
        }
    }

    /// Hands a copy to its lane, or to the backlog while an earlier copy is still unknown.
    fn send_copy(&mut self, endpoint: EndpointId, job: Job) {
        if self.mirror.backlog.is_empty() {
            return self.mirror.outbox.push((endpoint, job));
        }
        if self.mirror.backlog.len() >= MAX_BACKLOG {
            return self
                .shared
                .shadow
                .report
                .record(job.ns, job.command, Outcome::Dropped);
        }
        self.mirror.backlog.push_back(Slot::Job(endpoint, job));
    }

    /// Sends this turn's copies: one batch per endpoint, in order.
    pub(super) fn flush_copies(&mut self) {
        if self.mirror.outbox.is_empty() {
            return;
        }
        let mut outbox = std::mem::take(&mut self.mirror.outbox);
        if let Some(&(ep, _)) = outbox.first() {
            if outbox.iter().all(|(e, _)| *e == ep) {
                // The usual case: one shadow endpoint.
                let batch = outbox.drain(..).map(|(_, job)| job).collect();
                self.shared.shadow.submit(ep, self.mirror.lane, batch);
                self.mirror.outbox = outbox;
                return;
            }
        }
        while let Some(&(ep, _)) = outbox.first() {
            let (batch, rest): (Vec<_>, Vec<_>) = outbox.into_iter().partition(|(e, _)| *e == ep);
            self.shared.shadow.submit(
                ep,
                self.mirror.lane,
                batch.into_iter().map(|(_, job)| job).collect(),
            );
            outbox = rest;
        }
        // Keep the allocation for the next turn.
        self.mirror.outbox = outbox;
    }

    /// Fills the oldest hole and sends every copy no longer waiting.
    fn fill_hole(&mut self, copy: Option<(EndpointId, Job)>) {
        if let Some(slot) = self
            .mirror
            .backlog
            .iter_mut()
            .find(|s| matches!(s, Slot::Hole))
        {
            *slot = match copy {
                Some((ep, job)) => Slot::Job(ep, job),
                None => Slot::Skip,
            };
        }
        while matches!(
            self.mirror.backlog.front(),
            Some(Slot::Job(..) | Slot::Skip)
        ) {
            if let Some(Slot::Job(ep, job)) = self.mirror.backlog.pop_front() {
                self.mirror.outbox.push((ep, job));
            }
        }
    }

    /// A queued command inside MULTI: added to the transaction's copy when it is a write to
    /// a mirrored namespace.
    pub(super) fn mirror_queued(
        &mut self,
        resolved: &Resolved,
        frame: &[u8],
        args: &[Range<usize>],
    ) {
        let Some(tx) = self.tx.as_ref() else {
            return;
        };
        let table = tx.table.clone();
        if !table.mirrored {
            return;
        }
        let Some(spec) = resolved.spec else {
            return;
        };
        if !is_write(spec) {
            // Reads change nothing on the secondary.
            return;
        }
        let target = self.mirror_target(spec, frame, args, &table, true);
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        match (&mut tx.copy, target) {
            (Some(copy), Some(_)) => append(copy, frame),
            (None, Some((ns, endpoint, key))) => {
                let mut copy = TxCopy {
                    endpoint,
                    ns,
                    command: resolved.id,
                    key: MULTI.len() + key.start..MULTI.len() + key.end,
                    frame: BytesMut::from(MULTI),
                    replies: 1,
                    over: false,
                };
                append(&mut copy, frame);
                tx.copy = Some(Box::new(copy));
            }
            (_, None) => {}
        }
    }

    /// EXEC of a transaction with a copy has been forwarded: its reply decides the copy.
    pub(super) fn mirror_exec(&mut self, copy: Box<TxCopy>) {
        let Some(pending) = self.pending.back_mut() else {
            return;
        };
        if copy.over || pending.capture.is_some() {
            self.shared
                .shadow
                .report
                .record(copy.ns, copy.command, Outcome::Dropped);
            return;
        }
        // Only the first bytes of an EXEC reply are looked at.
        pending.capture = Some(Capture::new(16, Sink::Exec(copy)));
        self.mirror.backlog.push_back(Slot::Hole);
    }

    /// A pending reply with a capture was delivered (or abandoned: `delivered` false).
    pub(super) fn captured(&mut self, pending: Pending, delivered: bool) {
        let Some(capture) = pending.capture else {
            return;
        };
        let Capture {
            bytes, over, sink, ..
        } = *capture;
        match sink {
            Sink::Compare(tx) => {
                if !delivered || (bytes.is_empty() && !over) {
                    return; // dropping the sender tells the lane
                }
                let _ = tx.send(if over {
                    Primary::TooLarge
                } else {
                    Primary::Reply(bytes.freeze())
                });
            }
            Sink::Effect(e) => {
                if !delivered || over {
                    self.shared
                        .shadow
                        .report
                        .record(e.ns, e.command, Outcome::Dropped);
                    return self.fill_hole(None);
                }
                let Some(frame) = e.effect.copy(&e.frame, &e.args, &bytes) else {
                    // Nothing was removed: nothing to copy.
                    return self.fill_hole(None);
                };
                let key = second_argument(&frame);
                let job = Job {
                    ns: e.ns,
                    command: e.command,
                    key,
                    frame,
                    state: self.conn_state(),
                    check: Check::Write { replies: 1 },
                };
                self.fill_hole(Some((e.endpoint, job)));
            }
            Sink::Exec(copy) => {
                // The first bytes say it all: an array that is not nil means EXEC ran.
                let ran = delivered && bytes.first() == Some(&b'*') && !bytes.starts_with(b"*-1");
                if !ran {
                    return self.fill_hole(None);
                }
                let mut copy = copy;
                copy.frame.extend_from_slice(EXEC);
                copy.replies += 1;
                let job = Job {
                    ns: copy.ns,
                    command: copy.command,
                    key: copy.key,
                    frame: copy.frame.freeze(),
                    state: self.conn_state(),
                    check: Check::Write {
                        replies: copy.replies,
                    },
                };
                self.fill_hole(Some((copy.endpoint, job)));
            }
        }
    }
}

/// The part of a split write (MSET, DEL, UNLINK, TOUCH) whose keys belong to namespaces
/// mirrored to `endpoint`, with where its first key lies; `None` if no key does. Keys of
/// other namespaces must not be written there: one already served by that endpoint would be
/// written twice, the copy arriving late.
fn mirrored_part(
    session: &Session,
    frame: &[u8],
    args: &[Range<usize>],
    per_key: usize,
    endpoint: EndpointId,
    table: &RouteTable,
) -> Option<(Bytes, Range<usize>)> {
    let namespaces = &session.shared.router.namespaces;
    let mirrors =
        |key: &[u8]| match table.routes[usize::from(namespaces.of_key_in(session.db, key))].mode {
            Mode::DualWrite { secondary, .. } => secondary == endpoint,
            Mode::Shadow {
                endpoint: to,
                writes: true,
                ..
            } => to == endpoint,
            _ => false,
        };
    let groups: Vec<usize> = (1..args.len())
        .step_by(per_key.max(1))
        .filter(|&i| i + per_key <= args.len() && mirrors(&frame[args[i].clone()]))
        .collect();
    let first = *groups.first()?;
    if groups.len() * per_key == args.len() - 1 {
        let key = args[first].clone();
        return Some((Bytes::copy_from_slice(frame), key));
    }
    let mut out = BytesMut::with_capacity(frame.len());
    out.extend_from_slice(format!("*{}\r\n", 1 + groups.len() * per_key).as_bytes());
    crate::resp::write_bulk(&mut out, &frame[args[0].clone()]);
    let mut key = 0..0;
    for (n, &i) in groups.iter().enumerate() {
        for (j, arg) in args[i..i + per_key].iter().enumerate() {
            let bytes = &frame[arg.clone()];
            crate::resp::write_bulk(&mut out, bytes);
            if n == 0 && j == 0 {
                let end = out.len() - 2;
                key = end - bytes.len()..end;
            }
        }
    }
    Some((out.freeze(), key))
}

/// Where a request's first argument after its name lies (for reports).
fn second_argument(frame: &[u8]) -> Range<usize> {
    let mut args = Vec::new();
    match crate::resp::request::parse(frame, &mut args, usize::MAX) {
        Ok(crate::resp::request::Parsed::Multibulk { .. }) => args.get(1).cloned().unwrap_or(0..0),
        _ => 0..0,
    }
}

fn append(copy: &mut TxCopy, frame: &[u8]) {
    if copy.over || copy.frame.len() + frame.len() > MAX_TX_MIRROR {
        copy.over = true;
        copy.frame = BytesMut::new();
        return;
    }
    copy.frame.extend_from_slice(frame);
    copy.replies += 1;
}
