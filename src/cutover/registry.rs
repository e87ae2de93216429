//! Which sessions have drained a held namespace: the drain step's evidence.
//!
//! Every session owns a [`SessionSlot`] here. At the end of each turn it records the epoch of
//! the route table it checked and whether it still owes replies for a held namespace. The
//! cutover waits until every live session has recorded the hold's epoch as drained: then no
//! command of the namespace is in flight to the old endpoint, and none can be sent there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// One session's drain state.
#[derive(Debug, Default)]
pub struct SessionSlot {
    /// The newest route-table epoch at which the session owed nothing to a held namespace.
    drained: AtomicU64,
    /// Complete requests the session holds (the held one and those behind it).
    holding: AtomicUsize,
    /// Its last command blocks on this endpoint's connection with this `CLIENT ID`.
    blocked: Mutex<Option<(usize, u64)>>,
}

impl SessionSlot {
    /// Records the session's state at the end of a turn.
    pub fn record(&self, epoch: u64, drained: bool, holding: usize) {
        if drained {
            self.drained.fetch_max(epoch, Relaxed);
        }
        self.holding.store(holding, Relaxed);
    }

    /// Records where the session's last command blocks, if it can be unblocked.
    pub fn set_blocked(&self, blocked: Option<(usize, u64)>) {
        if let Ok(mut b) = self.blocked.lock() {
            *b = blocked;
        }
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

    /// Blocked commands that may be unblocked: (endpoint, `CLIENT ID`).
    pub fn blocked(&self) -> Vec<(usize, u64)> {
        let Ok(slots) = self.slots.lock() else {
            return Vec::new();
        };
        slots
            .values()
            .filter_map(|s| s.blocked.lock().ok().and_then(|b| *b))
            .collect()
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
