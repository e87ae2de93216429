//! Each slot's requests in order while the slot moves: per-slot hold-back.
//!
//! Requests are sent as soon as they are routed, so a pipeline stays a pipeline, and only
//! the FIFO's head is awaited and redirected. That alone lets a slot's requests run out of
//! order once its owner changes: the ones already sent to the old owner come back `-MOVED`
//! and are resent one at a time as they reach the head, while newer ones, routed by the
//! updated map, would go straight to the new owner and run first.
//!
//! So the router counts, per slot, its unanswered requests and the node they went to
//! ([`Flight`]). A new request for a slot is held back, not sent, while older ones for the
//! slot are unanswered and either the FIFO's head has been redirected for the slot (`-MOVED`
//! or `-ASK`: more of them may come back redirected, and the slot may even be back on the
//! node they went to, which would run the new request first) or they went to another node
//! than the one the map names now (another connection's redirect or a refresh changed it).
//! Once the slot has no unanswered request left, the held ones are sent in request order
//! ([`Router::release`]). Requests
//! for other slots are not held. Commands without a slot (keyless ones, transactions,
//! connection state, commands for every primary) wait for every held request before them,
//! since what they do may depend on it. The FIFO head's own redirects are never held: all
//! the rest waits for them.
//!
//! Held requests already have their FIFO entries, so they are bounded by the FIFO and need
//! no room in it to be released; they are released as the replies they wait for arrive,
//! which are older entries' and so nearer the head. The cost: while a slot moves, a request
//! for it waits for the older ones' redirects to be followed, one round trip each, instead
//! of being pipelined behind them. A request sent before the router has read the first
//! redirect for its slot is not held; it could still run before an older redirected one
//! only if the slot moved away and back within that moment.

use super::{Answer, Router};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use tokio::sync::oneshot;

/// A slot's unanswered requests: where they went, how many there are, and whether one of
/// them came back redirected.
pub(super) struct Flight {
    node: String,
    count: usize,
    redirected: bool,
}

/// Where a held request goes once released.
enum Target {
    /// The primary serving the slot then.
    Slot(u16),
    /// A given node (keyless, transactions, connection state).
    Node(String),
}

/// A request held back.
pub(super) struct Held {
    target: Target,
    bytes: Bytes,
    swallow: u8,
    reply: oneshot::Sender<Answer>,
}

/// The requests held back, in request order, with counts that answer "must a new request
/// wait behind them?" without a scan.
#[derive(Default)]
pub(super) struct HeldQueue {
    items: VecDeque<Held>,
    /// Held requests per slot.
    slots: HashMap<u16, usize>,
    /// Held requests without a slot.
    barriers: usize,
}

impl HeldQueue {
    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn push(&mut self, held: Held) {
        match held.target {
            Target::Slot(slot) => *self.slots.entry(slot).or_default() += 1,
            Target::Node(_) => self.barriers += 1,
        }
        self.items.push_back(held);
    }

    /// Whether a new request for `slot` must wait behind a held one.
    fn blocks(&self, slot: u16) -> bool {
        self.barriers > 0 || self.slots.contains_key(&slot)
    }

    fn take_all(&mut self) -> VecDeque<Held> {
        self.slots.clear();
        self.barriers = 0;
        std::mem::take(&mut self.items)
    }
}

impl Router {
    /// Sends `request` to the node at `address`, after every request held back before it.
    pub(super) async fn send(
        &mut self,
        address: &str,
        request: Bytes,
        swallow: u8,
    ) -> oneshot::Receiver<Answer> {
        if self.held.is_empty() {
            return self.send_now(address, request, swallow).await;
        }
        let (reply, rx) = oneshot::channel();
        self.held.push(Held {
            target: Target::Node(address.to_string()),
            bytes: request,
            swallow,
            reply,
        });
        rx
    }

    /// Sends a keyed request to the primary serving `slot`, unless it must wait (an older
    /// request for the slot is unanswered on another node, or is held, or a keyless command
    /// is held). Counted in the slot's flight once sent.
    pub(super) async fn send_slot(
        &mut self,
        slot: u16,
        request: Bytes,
    ) -> oneshot::Receiver<Answer> {
        let (reply, rx) = oneshot::channel();
        let address = self.owner(slot);
        if self.held.blocks(slot) || !self.may_send(slot, &address) {
            self.held.push(Held {
                target: Target::Slot(slot),
                bytes: request,
                swallow: 0,
                reply,
            });
            return rx;
        }
        self.deliver(&address, request, 0, reply).await;
        self.track(slot, address);
        rx
    }

    /// Whether a request for `slot` may go to `address` now: none of the slot's is
    /// unanswered, or they all went there and none came back redirected.
    fn may_send(&self, slot: u16, address: &str) -> bool {
        self.flights
            .get(&slot)
            .map_or(true, |f| !f.redirected && f.node == address)
    }

    fn track(&mut self, slot: u16, address: String) {
        self.flights
            .entry(slot)
            .or_insert(Flight {
                node: address,
                count: 0,
                redirected: false,
            })
            .count += 1;
    }

    /// A request counted in `slot`'s flight (if any) got its final reply: once the slot has
    /// none left, what waited for it is released.
    pub(super) async fn answered(&mut self, slot: Option<u16>) {
        let Some(slot) = slot else {
            return;
        };
        let Some(flight) = self.flights.get_mut(&slot) else {
            return;
        };
        flight.count = flight.count.saturating_sub(1);
        if flight.count == 0 {
            self.flights.remove(&slot);
            self.release().await;
        }
    }

    /// The head's request for `slot` came back redirected: newer requests for the slot
    /// wait until every older one is answered.
    pub(super) fn redirected(&mut self, slot: u16) {
        if let Some(flight) = self.flights.get_mut(&slot) {
            flight.redirected = true;
        }
    }

    /// Sends, in order, every held request that need not wait any more.
    pub(super) async fn release(&mut self) {
        if self.held.is_empty() {
            return;
        }
        // Each request is either sent or held again, in order, so the ones held again are
        // what the ones after them must wait behind: a held keyless command holds back
        // everything after it, a held request for a slot the slot's newer ones.
        for held in self.held.take_all() {
            let go = match &held.target {
                _ if self.held.barriers > 0 => None,
                Target::Node(address) if self.held.is_empty() => Some(address.clone()),
                Target::Node(_) => None,
                Target::Slot(slot) if self.held.blocks(*slot) => None,
                Target::Slot(slot) => {
                    let address = self.owner(*slot);
                    self.may_send(*slot, &address).then_some(address)
                }
            };
            let Some(address) = go else {
                self.held.push(held);
                continue;
            };
            self.deliver(&address, held.bytes, held.swallow, held.reply)
                .await;
            if let Target::Slot(slot) = held.target {
                self.track(slot, address);
            }
        }
    }
}
