//! Which sessions have drained a held namespace: the drain step's evidence.
//!
//! Every session owns a [`SessionSlot`] here. At the end of each turn it records the epoch of
//! the route table it checked and whether it still owes replies for a held namespace. The
//! cutover waits until every live session has recorded the hold's epoch as drained: then no
//! command of the namespace is in flight to the old endpoint, and none can be sent there.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// One session's drain state.
#[derive(Debug, Default)]
pub struct SessionSlot {
    /// The newest route-table epoch at which the session owed nothing to a held namespace.
    drained: AtomicU64,
    /// Complete requests the session holds (the held one and those behind it).
    holding: AtomicUsize,
    /// Its last command blocks on this endpoint's connection with this `CLIENT ID`, for
    /// this namespace.
    blocked: Mutex<Option<Blocked>>,
    /// A cutover unblocks (or is about to) this (endpoint, `CLIENT ID`): the `-UNBLOCKED`
    /// error that follows is the cutover's, not the application's.
    unblocked: Mutex<Option<(usize, u64)>>,
    /// A cutover changed holds since the session last looked: it must check its drain.
    woken: AtomicBool,
    /// Wakes the session's task for that (registered without a lock, unlike the route
    /// channel's waiter list, which every session shares).
    waker: atomic_waker::AtomicWaker,
}

/// Where a session's last command blocks: (endpoint, `CLIENT ID`, namespace).
pub type Blocked = (usize, u64, u16);

impl SessionSlot {
    /// Records the session's state at the end of a turn.
    pub fn record(&self, epoch: u64, drained: bool, holding: usize) {
        if drained {
            self.drained.fetch_max(epoch, Relaxed);
        }
        self.holding.store(holding, Relaxed);
    }

    /// Records where the session's last command blocks, if it can be unblocked.
    pub fn set_blocked(&self, blocked: Option<Blocked>) {
        if let Ok(mut b) = self.blocked.lock() {
            if *b != blocked {
                // Another command (or none) blocks now: a mark for the old one is stale.
                if let Ok(mut unblocked) = self.unblocked.lock() {
                    *unblocked = None;
                }
            }
            *b = blocked;
        }
    }

    /// `Ready` once a cutover changed holds and the session has not taken note yet
    /// ([`SessionSlot::take_woken`]); registers the task to be woken otherwise.
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.load(Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.woken.load(Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether a cutover changed holds since the last call.
    pub fn take_woken(&self) -> bool {
        self.woken.load(Acquire) && self.woken.swap(false, Acquire)
    }

    /// Whether a cutover unblocked the command blocking on `endpoint`'s connection `id`;
    /// forgets it either way (called once the blocked command's reply is in).
    pub fn take_unblocked(&self, endpoint: usize, id: u64) -> bool {
        self.unblocked
            .lock()
            .ok()
            .and_then(|mut u| u.take())
            .is_some_and(|u| u == (endpoint, id))
    }
}

/// Every live session's slot.
#[derive(Debug, Default)]
pub struct Registry {
    next: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<SessionSlot>>>,
}

/// Removes a session's slot when the session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
    /// The slot.
    pub slot: Arc<SessionSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.registry.slots.lock() {
            slots.remove(&self.id);
        }
    }
}

impl Registry {
    /// Registers a new session.
    pub fn register(self: &Arc<Self>) -> Registration {
        let id = self.next.fetch_add(1, Relaxed);
        let slot = Arc::new(SessionSlot::default());
        if let Ok(mut slots) = self.slots.lock() {
            slots.insert(id, slot.clone());
        }
        Registration {
            registry: self.clone(),
            id,
            slot,
        }
    }

    /// The `CLIENT ID`s of commands of namespace `ns` blocked on `endpoint` and not in
    /// `done` yet (they are added), each marked in its session's slot as unblocked by a
    /// cutover (before the unblock is sent), so that the session sends it again instead of
    /// passing the error on.
    pub fn unblock(&self, endpoint: usize, ns: u16, done: &mut HashSet<u64>) -> Vec<u64> {
        let Ok(slots) = self.slots.lock() else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        for slot in slots.values() {
            let Some((ep, id, blocked_ns)) = slot.blocked.lock().ok().and_then(|b| *b) else {
                continue;
            };
            if ep != endpoint || blocked_ns != ns || !done.insert(id) {
                continue;
            }
            if let Ok(mut unblocked) = slot.unblocked.lock() {
                *unblocked = Some((ep, id));
                ids.push(id);
            }
        }
        ids
    }

    /// Wakes every session to check its drain: called after a hold is published or
    /// released, so that idle sessions need not watch the route channel.
    pub fn wake_all(&self) {
        let Ok(slots) = self.slots.lock() else {
            return;
        };
        for slot in slots.values() {
            slot.woken.store(true, Release);
            slot.waker.wake();
        }
    }

    /// Sessions that have not drained at `epoch` yet, and requests held by all sessions.
    pub fn pending(&self, epoch: u64) -> (usize, usize) {
        let Ok(slots) = self.slots.lock() else {
            return (usize::MAX, 0);
        };
        let undrained = slots
            .values()
            .filter(|s| s.drained.load(Relaxed) < epoch)
            .count();
        let holding = slots.values().map(|s| s.holding.load(Relaxed)).sum();
        (undrained, holding)
    }
}
