//! Namespaces and the route table.
//!
//! Namespaces and their prefixes are fixed by the config ([`Namespaces`]); what changes at
//! run time is where each one points. That lives in an immutable, versioned [`RouteTable`]
//! snapshot behind an `ArcSwap`: a session loads it once per batch of commands (one atomic
//! load), and a change builds a new table and swaps it in whole ([`change`]).

pub mod change;
pub mod keyspace;
pub mod trie;

use crate::config::{Config, EndpointId, DEFAULT_ROUTE};
use arc_swap::{ArcSwap, Guard};
use std::sync::Arc;
use std::time::SystemTime;
pub use trie::NsId;
use trie::PrefixTrie;

/// The namespaces of the config, the `default` route last.
#[derive(Debug)]
pub struct Namespaces {
    names: Vec<String>,
    prefixes: Vec<Vec<String>>,
    trie: PrefixTrie,
    /// Database scopes and key prefixes.
    pub keyspace: keyspace::Keyspace,
}

impl Namespaces {
    /// Builds the namespace set from a validated config.
    pub fn new(config: &Config) -> Self {
        let mut names: Vec<String> = config.namespaces.iter().map(|n| n.name.clone()).collect();
        let mut prefixes: Vec<Vec<String>> = config
            .namespaces
            .iter()
            .map(|n| n.prefixes.clone())
            .collect();
        names.push(DEFAULT_ROUTE.to_string());
        prefixes.push(Vec::new());
        let trie = PrefixTrie::new(
            config
                .namespaces
                .iter()
                .enumerate()
                .flat_map(|(i, n)| n.prefixes.iter().map(move |p| (p.as_bytes(), i as NsId))),
        );
        Namespaces {
            names,
            prefixes,
            trie,
            keyspace: keyspace::Keyspace::new(config),
        }
    }

    /// The id of the `default` route.
    pub fn default_id(&self) -> NsId {
        (self.names.len() - 1) as NsId
    }

    /// The namespace of a key (the default route when no prefix matches).
    #[inline]
    pub fn of_key(&self, key: &[u8]) -> NsId {
        self.trie.lookup(key).unwrap_or_else(|| self.default_id())
    }

    /// The namespace of a key in the session's database `db`: a namespace scoped to `db`
    /// first (its longest prefix, else the one matching the whole database), then the
    /// namespaces of every database, then the default route. Without `db` in the config this
    /// is [`Namespaces::of_key`].
    #[inline]
    pub fn of_key_in(&self, db: u8, key: &[u8]) -> NsId {
        if self.keyspace.by_db() {
            if let Some(ns) = self.keyspace.scoped(db, key) {
                return ns;
            }
        }
        self.of_key(key)
    }

    /// The route of a keyless command in database `db`: the namespace matching that whole
    /// database, else the default route.
    #[inline]
    pub fn keyless(&self, db: u8) -> NsId {
        self.keyspace.whole(db).unwrap_or_else(|| self.default_id())
    }

    /// Number of routes, `default` included.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: the default route exists.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A route's name.
    pub fn name(&self, ns: NsId) -> &str {
        self.names
            .get(usize::from(ns))
            .map_or(DEFAULT_ROUTE, String::as_str)
    }

    /// A route's prefixes (none for `default`).
    pub fn prefixes(&self, ns: NsId) -> &[String] {
        self.prefixes
            .get(usize::from(ns))
            .map_or(&[], Vec::as_slice)
    }

    /// Looks a route up by name.
    pub fn id(&self, name: &str) -> Option<NsId> {
        self.names.iter().position(|n| n == name).map(|i| i as NsId)
    }
}

/// How a route serves its namespace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Every command goes to the target.
    Direct,
    /// The target serves the client; a sample of reads (and, with `writes`, every write) is
    /// also sent to `endpoint` and the two replies are compared.
    Shadow {
        /// Where the copies go.
        endpoint: EndpointId,
        /// Fraction of reads copied, 0.0 to 1.0.
        sample: f64,
        /// Also mirror writes (for warming an empty cache; never for a CDC-fed store).
        writes: bool,
    },
    /// Writes go to the target and to `secondary`; the client gets the target's reply.
    DualWrite {
        /// Where writes are mirrored.
        secondary: EndpointId,
        /// Also compare a sample of reads against the secondary.
        compare: bool,
        /// Fraction of reads compared when `compare`.
        sample: f64,
    },
}

impl Mode {
    /// The mode's name in the API and the state file.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Shadow { .. } => "shadow",
            Mode::DualWrite { .. } => "dual-write",
        }
    }

    /// The endpoint copies go to, if any.
    pub fn mirror_endpoint(&self) -> Option<EndpointId> {
        match *self {
            Mode::Direct => None,
            Mode::Shadow { endpoint, .. } => Some(endpoint),
            Mode::DualWrite { secondary, .. } => Some(secondary),
        }
    }

    /// A one-line description for logs and the audit history, e.g. `shadow -> new (sample 0.5)`.
    pub fn describe(&self, endpoints: &[crate::config::EndpointConfig]) -> String {
        let name = |ep: EndpointId| endpoints.get(ep).map_or("?", |e| e.name.as_str());
        match *self {
            Mode::Direct => "direct".to_string(),
            Mode::Shadow {
                endpoint,
                sample,
                writes,
            } => format!(
                "shadow -> {} (sample {sample}{})",
                name(endpoint),
                if writes { ", writes" } else { "" }
            ),
            Mode::DualWrite {
                secondary,
                compare,
                sample,
            } => format!(
                "dual-write -> {}{}",
                name(secondary),
                if compare {
                    format!(" (compare, sample {sample})")
                } else {
                    String::new()
                }
            ),
        }
    }

    /// The mode's fields as JSON object members (`mode`, and `shadow`/`sample`/`writes` or
    /// `secondary`/`compare`/`sample`), endpoint names resolved.
    pub fn to_json(
        &self,
        endpoints: &[crate::config::EndpointConfig],
    ) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let name = |ep: EndpointId| {
            Value::String(
                endpoints
                    .get(ep)
                    .map_or("?", |e| e.name.as_str())
                    .to_string(),
            )
        };
        let mut map = serde_json::Map::new();
        map.insert("mode".into(), Value::String(self.name().to_string()));
        match *self {
            Mode::Direct => {}
            Mode::Shadow {
                endpoint,
                sample,
                writes,
            } => {
                map.insert("shadow".into(), name(endpoint));
                map.insert("sample".into(), serde_json::json!(sample));
                map.insert("writes".into(), Value::Bool(writes));
            }
            Mode::DualWrite {
                secondary,
                compare,
                sample,
            } => {
                map.insert("secondary".into(), name(secondary));
                map.insert("compare".into(), Value::Bool(compare));
                map.insert("sample".into(), serde_json::json!(sample));
            }
        }
        map
    }
}

/// Where one namespace points.
#[derive(Debug, Clone)]
pub struct Route {
    /// The primary endpoint.
    pub target: EndpointId,
    /// How it is served.
    pub mode: Mode,
    /// When it last changed (start-up time for routes never changed).
    pub changed_at: SystemTime,
    /// Why it last changed.
    pub reason: String,
    /// A cutover holds the namespace's commands (never persisted).
    pub hold: bool,
}

/// An immutable, versioned snapshot of every route, indexed by [`NsId`].
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Goes up by one with every accepted change.
    pub version: u64,
    /// One route per namespace, `default` last.
    pub routes: Vec<Route>,
    /// Some route is not `direct` (sessions skip every mirroring check when none is).
    pub mirrored: bool,
    /// Some route is held by a cutover (sessions skip every hold check when none is).
    pub any_held: bool,
    /// Goes up with every published snapshot, holds included (the version counts only
    /// accepted changes).
    pub epoch: u64,
}

impl RouteTable {
    /// The initial table from the config.
    pub fn from_config(config: &Config, now: SystemTime) -> Self {
        let route = |target| Route {
            target,
            mode: Mode::Direct,
            changed_at: now,
            reason: "initial target from the config file".to_string(),
            hold: false,
        };
        let mut routes: Vec<Route> = config.namespaces.iter().map(|n| route(n.target)).collect();
        routes.push(route(config.default_target));
        RouteTable {
            version: 1,
            routes,
            mirrored: false,
            any_held: false,
            epoch: 0,
        }
    }

    /// Recomputes [`RouteTable::mirrored`] and [`RouteTable::any_held`] after routes changed.
    pub fn refresh(&mut self) {
        self.mirrored = self.routes.iter().any(|r| r.mode != Mode::Direct);
        self.any_held = self.routes.iter().any(|r| r.hold);
    }

    /// Whether a namespace's commands are held.
    #[inline]
    pub fn held(&self, ns: NsId) -> bool {
        self.any_held && self.routes.get(usize::from(ns)).is_some_and(|r| r.hold)
    }

    /// The endpoint a namespace's commands go to.
    #[inline]
    pub fn target(&self, ns: NsId) -> EndpointId {
        self.routes.get(usize::from(ns)).map_or(0, |r| r.target)
    }

    /// Endpoints some route points at.
    pub fn endpoints_in_use(&self) -> Vec<EndpointId> {
        let mut used: Vec<EndpointId> = self.routes.iter().map(|r| r.target).collect();
        used.sort_unstable();
        used.dedup();
        used
    }
}

/// The live routing state shared by every session: fixed namespaces plus the swappable table.
#[derive(Debug)]
pub struct Router {
    /// The namespaces (fixed for the process lifetime).
    pub namespaces: Namespaces,
    table: ArcSwap<RouteTable>,
    /// The epoch of the newest snapshot: sessions waiting on a hold wake when it changes.
    epoch: tokio::sync::watch::Sender<u64>,
}

impl Router {
    /// A router starting from `table`.
    pub fn new(namespaces: Namespaces, table: RouteTable) -> Self {
        let (epoch, _) = tokio::sync::watch::channel(table.epoch);
        Router {
            namespaces,
            table: ArcSwap::from_pointee(table),
            epoch,
        }
    }

    /// Notified whenever a snapshot is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// The current snapshot: one atomic load, no lock.
    #[inline]
    pub fn load(&self) -> Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// The current snapshot as an owned `Arc` (for the admin API).
    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Publishes a new snapshot. Only [`change::RouteControl`] calls this, after persisting.
    pub(crate) fn store(&self, mut table: RouteTable) -> u64 {
        let epoch = self.table.load().epoch + 1;
        table.epoch = epoch;
        table.refresh();
        self.table.store(Arc::new(table));
        self.epoch.send_replace(epoch);
        epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_namespaces_and_targets() {
        let config = crate::config::tests::good();
        let ns = Namespaces::new(&config);
        let table = RouteTable::from_config(&config, SystemTime::UNIX_EPOCH);
        let new = config.endpoint_id("new").expect("new");
        let legacy = config.endpoint_id("legacy").expect("legacy");
        assert_eq!(ns.name(ns.of_key(b"web:1")), "web-cache");
        assert_eq!(ns.name(ns.of_key(b"session:1")), "token-cache");
        assert_eq!(ns.name(ns.of_key(b"other")), "default");
        assert_eq!(table.target(ns.of_key(b"web:1")), legacy);
        assert_eq!(table.target(ns.of_key(b"tok:1")), new);
        assert_eq!(table.target(ns.default_id()), legacy);
        assert_eq!(
            table.endpoints_in_use(),
            vec![legacy.min(new), legacy.max(new)]
        );
        assert_eq!(ns.id("default"), Some(ns.default_id()));
        assert_eq!(
            ns.prefixes(1),
            &["tok:".to_string(), "session:".to_string()]
        );
    }
}
