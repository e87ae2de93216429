//! Transactions on a cluster: MULTI … EXEC pinned to one node.
//!
//! The node is the one serving WATCH's keys, else the first keyed command's after MULTI.
//! MULTI is answered `+OK` at once and keyless commands before the first keyed one
//! `+QUEUED`; they are sent when the node is known (EXEC with no keyed command runs on the
//! keyless node). Replies inside a transaction are never redirected: the node's own answer
//! (and EXEC's `-EXECABORT`) reaches the client.

use super::{Entry, Part, Router, CROSSSLOT, MAX_HELD};
use crate::command::policy::TxCommand;
use crate::upstream::cluster::slots;
use bytes::Bytes;
use std::ops::{ControlFlow, Range};

/// The transaction in progress.
#[derive(Default)]
pub(super) struct Tx {
    /// MULTI was seen, EXEC/DISCARD not yet.
    pub(super) open: bool,
    /// The node it is pinned to (by WATCH or its first keyed command).
    pub(super) node: Option<String>,
    /// MULTI was sent to `node`.
    pub(super) multi_sent: bool,
    /// Keyless commands after MULTI waiting for the node (answered `+QUEUED`).
    pub(super) held: Vec<Bytes>,
}

impl Router {
    pub(super) async fn transaction(
        &mut self,
        tx: TxCommand,
        spec: Option<&'static crate::command::CommandSpec>,
        frame: &Bytes,
        ranges: &[Range<usize>],
    ) {
        match tx {
            TxCommand::Multi if self.tx.open => {
                self.push(Entry::ready(b"-ERR MULTI calls can not be nested\r\n"))
            }
            TxCommand::Multi => {
                self.tx.open = true;
                self.tx.held.clear();
                if let Some(address) = self.tx.node.clone() {
                    self.tx.multi_sent = true;
                    let mut entry = Entry::single(Part::keyless(frame.clone()), false);
                    entry.parts[0].rx = Some(self.send(&address, frame.clone(), 0).await);
                    self.push(entry);
                } else {
                    self.push(Entry::ready(b"+OK\r\n"));
                }
            }
            TxCommand::Watch => {
                let mut slot = None;
                let mut cross = false;
                if let Some(spec) = spec {
                    let _ = crate::command::keys::for_each_key(spec, frame, ranges, |k| {
                        let s = slots::slot(k);
                        cross |= slot.is_some_and(|f| f != s);
                        slot.get_or_insert(s);
                        ControlFlow::Continue(())
                    });
                }
                if cross {
                    return self.push(Entry::ready(CROSSSLOT));
                }
                if self.tx.open {
                    // Redis refuses WATCH inside MULTI; let the pinned node say so.
                    return self.in_transaction(frame.clone(), slot).await;
                }
                let address = match (&self.tx.node, slot) {
                    (Some(pinned), _) => pinned.clone(),
                    (None, Some(slot)) => self.owner(slot),
                    (None, None) => self.keyless_node(),
                };
                self.tx.node = Some(address.clone());
                self.send_pinned(&address, frame.clone()).await;
            }
            TxCommand::Unwatch if !self.tx.open => {
                let address = self.tx.node.take().unwrap_or_else(|| self.keyless_node());
                self.send_pinned(&address, frame.clone()).await;
            }
            TxCommand::Unwatch => self.in_transaction(frame.clone(), None).await,
            TxCommand::Exec | TxCommand::Discard if !self.tx.open => {
                let address = self.tx.node.take().unwrap_or_else(|| self.keyless_node());
                self.send_pinned(&address, frame.clone()).await;
            }
            TxCommand::Exec | TxCommand::Discard => {
                if self.tx.node.is_none() {
                    let address = self.keyless_node();
                    self.pin_transaction(address).await;
                }
                let address = self.tx.node.take().unwrap_or_else(|| self.keyless_node());
                self.tx = Tx::default();
                self.send_pinned(&address, frame.clone()).await;
            }
        }
    }

    /// A command inside MULTI: to the pinned node, or held until a keyed command pins one.
    pub(super) async fn in_transaction(&mut self, frame: Bytes, slot: Option<u16>) {
        if self.tx.node.is_none() || !self.tx.multi_sent {
            match (&self.tx.node, slot) {
                (Some(address), _) => {
                    let address = address.clone();
                    self.pin_transaction(address).await;
                }
                (None, Some(slot)) => {
                    let address = self.owner(slot);
                    self.pin_transaction(address).await;
                }
                (None, None) if self.tx.held.len() < MAX_HELD => {
                    // The client may wait for this reply before sending the command that
                    // picks the node: answer as Redis would for a valid command.
                    self.tx.held.push(frame);
                    return self.push(Entry::ready(b"+QUEUED\r\n"));
                }
                (None, None) => {
                    let address = self.keyless_node();
                    self.pin_transaction(address).await;
                }
            }
        }
        let address = self.tx.node.clone().unwrap_or_else(|| self.keyless_node());
        self.send_pinned(&address, frame).await;
    }

    /// Pins the open transaction to `address`: sends MULTI (already answered) and the held
    /// commands there.
    pub(super) async fn pin_transaction(&mut self, address: String) {
        self.tx.node = Some(address.clone());
        if !self.tx.multi_sent {
            self.tx.multi_sent = true;
            // MULTI was answered when it arrived: its reply here is dropped.
            drop(
                self.send(&address, crate::resp::command(&[b"MULTI"]), 0)
                    .await,
            );
        }
        for request in std::mem::take(&mut self.tx.held) {
            // Answered `+QUEUED` already; a refusal here makes EXEC fail with -EXECABORT.
            drop(self.send(&address, request, 0).await);
        }
    }

    pub(super) async fn send_pinned(&mut self, address: &str, frame: Bytes) {
        let mut entry = Entry::single(Part::keyless(frame.clone()), false);
        entry.parts[0].rx = Some(self.send(address, frame, 0).await);
        self.push(entry);
    }
}
