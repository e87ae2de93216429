//! Commands for more than one node: connection state (SELECT, HELLO, CLIENT SETNAME, …)
//! on every node connection, and commands every primary must run (SCRIPT LOAD, KEYS,
//! DBSIZE), answered once.

use super::{Entry, Part, Pending, Router};
use crate::command::policy::StateKind;
use crate::upstream::cluster::merge::Merge;
use bytes::Bytes;

impl Router {
    /// A command for every primary; replies merged by `how`.
    pub(super) async fn everywhere(&mut self, frame: Bytes, how: Merge) {
        let primaries = self.cluster.map.load().nodes().to_vec();
        let mut entry = Entry {
            how,
            keys: 0,
            parts: Vec::new(),
            follow: false,
            state_undo: None,
        };
        for address in primaries {
            let rx = self.send(&address, frame.clone(), 0).await;
            let mut pending = Pending::new(Part::keyless(frame.clone()));
            pending.rx = Some(rx);
            entry.parts.push(pending);
        }
        if entry.parts.is_empty() {
            return self.push(Entry::ready(
                b"-ERR turnout: the cluster has no known primaries\r\n",
            ));
        }
        self.push(entry);
    }

    /// A connection-state command: kept for new node connections and sent to every open one
    /// (the keyless node at least); answered once.
    pub(super) async fn state_command(&mut self, kind: StateKind, argv: &[&[u8]], frame: Bytes) {
        let sub = if kind == StateKind::SetInfo {
            Bytes::copy_from_slice(
                argv.get(2)
                    .copied()
                    .unwrap_or_default()
                    .to_ascii_lowercase()
                    .as_slice(),
            )
        } else {
            Bytes::new()
        };
        // Open the keyless node first, with the state as it was: its connection replays that
        // and then runs this command like every other open node.
        let keyless = self.keyless_node();
        self.ensure_node(&keyless);
        let undo = self.state.clone();
        self.state.retain(|(k, s, _)| !(*k == kind && *s == sub));
        self.state.push((kind, sub, frame.clone()));
        self.broadcast_open(keyless, frame, Some(undo)).await;
    }

    /// `RESET`: the connection state is forgotten and every open node connection reset
    /// (new ones start fresh anyway); answered once, by the keyless node.
    pub(super) async fn reset(&mut self, frame: Bytes) {
        let keyless = self.keyless_node();
        self.ensure_node(&keyless);
        self.state.clear();
        self.tx = super::Tx::default();
        self.broadcast_open(keyless, frame, None).await;
    }

    /// Sends `frame` to `first` and every other open node connection; the entry's answer is
    /// `first`'s reply, or the first error.
    async fn broadcast_open(
        &mut self,
        first: String,
        frame: Bytes,
        undo: Option<Vec<super::StateEntry>>,
    ) {
        let keyless = first;
        let mut targets: Vec<String> = vec![keyless];
        for (address, node) in &self.nodes {
            if !targets.contains(address) && !node.tx.is_closed() {
                targets.push(address.clone());
            }
        }
        let mut entry = Entry {
            how: Merge::First,
            keys: 0,
            parts: Vec::new(),
            follow: false,
            state_undo: undo,
        };
        for address in targets {
            let rx = self.send(&address, frame.clone(), 0).await;
            let mut pending = Pending::new(Part::keyless(frame.clone()));
            pending.rx = Some(rx);
            entry.parts.push(pending);
        }
        self.push(entry);
    }
}
