//! Database-scoped namespaces and key prefixes of single-database endpoints.
//!
//! A namespace may match by the session's selected database (`db = N`), alone or with
//! prefixes, and its keys may take a prefix on an endpoint that holds one database
//! (`key_prefix`). Both are looked up only when the config uses them: a config without `db`
//! leaves [`Keyspace::dbs`] empty and key lookups stay one trie walk.

use super::trie::{NsId, PrefixTrie};
use crate::config::{Config, EndpointId};

/// The namespaces of one database.
#[derive(Debug)]
struct DbRoutes {
    /// Namespaces with this `db` and prefixes.
    trie: PrefixTrie,
    /// The namespace with this `db` and no prefixes: every other key of the database.
    whole: Option<NsId>,
}

/// Why a request cannot go to a single-database endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixError {
    /// The namespace has no prefix for the endpoint, and the session is not in database 0.
    NoPrefix,
    /// The namespace matches every database, so its keys from database `db` would mix with
    /// database 0's on the endpoint.
    NotBound,
}

/// Database matching and key prefixes.
#[derive(Debug)]
pub struct Keyspace {
    /// Indexed by database; empty when no namespace names one.
    dbs: Vec<DbRoutes>,
    /// Each route's `db` (`default` last, `None`).
    db_of: Vec<Option<u8>>,
    /// `[route][endpoint]`: the prefix its keys take there (empty: none).
    prefixes: Vec<Vec<Box<[u8]>>>,
    /// Endpoints that hold one database (some prefix names them).
    single_db: u64,
}

impl Keyspace {
    /// Builds the tables from a validated config; route ids follow `config.namespaces`,
    /// `default` last.
    pub fn new(config: &Config) -> Self {
        let mut dbs: Vec<DbRoutes> = Vec::new();
        let max_db = config.namespaces.iter().filter_map(|n| n.db).max();
        if let Some(max_db) = max_db {
            for db in 0..=max_db {
                let scoped = config
                    .namespaces
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.db == Some(db));
                let trie =
                    PrefixTrie::new(scoped.clone().flat_map(|(i, n)| {
                        n.prefixes.iter().map(move |p| (p.as_bytes(), i as NsId))
                    }));
                let whole = scoped
                    .filter(|(_, n)| n.prefixes.is_empty())
                    .map(|(i, _)| i as NsId)
                    .next();
                dbs.push(DbRoutes { trie, whole });
            }
        }
        let mut single_db = 0u64;
        for (ep, e) in config.endpoints.iter().enumerate() {
            if e.key_prefix.is_some() {
                single_db |= 1 << ep;
            }
        }
        for n in &config.namespaces {
            for (ep, _) in &n.key_prefixes {
                single_db |= 1 << ep;
            }
        }
        let endpoint_prefix = |ep: usize| -> Box<[u8]> {
            config.endpoints[ep]
                .key_prefix
                .as_deref()
                .unwrap_or_default()
                .as_bytes()
                .into()
        };
        let mut prefixes: Vec<Vec<Box<[u8]>>> = config
            .namespaces
            .iter()
            .map(|n| {
                (0..config.endpoints.len())
                    .map(|ep| match n.key_prefixes.iter().find(|(e, _)| *e == ep) {
                        Some((_, p)) => p.as_bytes().into(),
                        // The endpoint's prefix is database 0's: a namespace of another
                        // database has none there (and is refused, see `prefix_for`).
                        None if n.db.is_some_and(|db| db != 0) => Box::default(),
                        None => endpoint_prefix(ep),
                    })
                    .collect()
            })
            .collect();
        prefixes.push((0..config.endpoints.len()).map(endpoint_prefix).collect());
        let mut db_of: Vec<Option<u8>> = config.namespaces.iter().map(|n| n.db).collect();
        db_of.push(None);
        Keyspace {
            dbs,
            db_of,
            prefixes,
            single_db,
        }
    }

    /// Whether some namespace matches by database.
    #[inline]
    pub fn by_db(&self) -> bool {
        !self.dbs.is_empty()
    }

    /// The namespace of a key in database `db`, if one is scoped to that database: its
    /// longest prefix first, else the namespace of the whole database.
    #[inline]
    pub fn scoped(&self, db: u8, key: &[u8]) -> Option<NsId> {
        let routes = self.dbs.get(usize::from(db))?;
        routes.trie.lookup(key).or(routes.whole)
    }

    /// The namespace that takes every key of database `db`, if any.
    pub fn whole(&self, db: u8) -> Option<NsId> {
        self.dbs.get(usize::from(db)).and_then(|r| r.whole)
    }

    /// A route's `db`.
    pub fn db(&self, ns: NsId) -> Option<u8> {
        self.db_of.get(usize::from(ns)).copied().flatten()
    }

    /// Whether an endpoint holds one database (keys are prefixed, SELECT is not sent).
    #[inline]
    pub fn is_single_db(&self, ep: EndpointId) -> bool {
        self.single_db & (1u64 << ep) != 0
    }

    /// Single-database endpoints, as a bit set.
    pub fn single_db_mask(&self) -> u64 {
        self.single_db
    }

    /// The prefix a route's keys take on an endpoint (empty: none).
    pub fn prefix(&self, ns: NsId, ep: EndpointId) -> &[u8] {
        self.prefixes
            .get(usize::from(ns))
            .and_then(|p| p.get(ep))
            .map_or(&[], |p| &p[..])
    }

    /// The prefix for a request of a session in database `db`, routed by `ns` to the
    /// single-database endpoint `ep`.
    ///
    /// # Errors
    /// [`PrefixError`] when the request would land among another database's keys.
    pub fn prefix_for(&self, ns: NsId, ep: EndpointId, db: u8) -> Result<&[u8], PrefixError> {
        let prefix = self.prefix(ns, ep);
        if db == 0 {
            return Ok(prefix);
        }
        if self.db(ns) != Some(db) {
            return Err(PrefixError::NotBound);
        }
        if prefix.is_empty() {
            return Err(PrefixError::NoPrefix);
        }
        Ok(prefix)
    }

    /// A route's `db` (when it has one) and `key_prefix` (endpoint → prefix, for every
    /// single-database endpoint where its keys take one) as JSON object members.
    pub fn to_json(
        &self,
        ns: NsId,
        endpoints: &[crate::config::EndpointConfig],
    ) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut map = serde_json::Map::new();
        if let Some(db) = self.db(ns) {
            map.insert("db".into(), Value::from(db));
        }
        let prefixes: serde_json::Map<String, Value> = endpoints
            .iter()
            .enumerate()
            .filter(|(ep, _)| self.is_single_db(*ep) && !self.prefix(ns, *ep).is_empty())
            .map(|(ep, e)| {
                let prefix = String::from_utf8_lossy(self.prefix(ns, ep)).into_owned();
                (e.name.clone(), Value::String(prefix))
            })
            .collect();
        if !prefixes.is_empty() {
            map.insert("key_prefix".into(), Value::Object(prefixes));
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::super::Namespaces;
    use super::*;

    #[test]
    fn keys_route_by_database_then_prefix_and_take_prefixes() {
        let text = crate::config::tests::GOOD.replace(
            "[default]",
            r#"[[namespaces]]
name = "db1"
db = 1
key_prefix = { new = "db1:" }
target = "new"
[[namespaces]]
name = "db1-web"
db = 1
prefixes = ["web:"]
key_prefix = { new = "db1web:" }
target = "new"
[default]"#,
        );
        let config = Config::from_toml(&text, &|_| None).expect("valid");
        let ns = Namespaces::new(&config);
        let new = config.endpoint_id("new").expect("new");
        let legacy = config.endpoint_id("legacy").expect("legacy");
        let name = |db, key: &[u8]| ns.name(ns.of_key_in(db, key)).to_string();
        assert_eq!(name(0, b"web:1"), "web-cache");
        assert_eq!(name(0, b"x"), "default");
        assert_eq!(name(1, b"x"), "db1");
        assert_eq!(name(1, b"web:1"), "db1-web");
        assert_eq!(name(1, b"tok:1"), "db1");
        assert_eq!(name(2, b"tok:1"), "token-cache");
        assert_eq!(ns.name(ns.keyless(1)), "db1");
        assert_eq!(ns.name(ns.keyless(2)), "default");
        let ks = &ns.keyspace;
        assert!(ks.is_single_db(new) && !ks.is_single_db(legacy));
        let db1 = ns.id("db1").expect("db1");
        assert_eq!(ks.prefix_for(db1, new, 1), Ok(&b"db1:"[..]));
        assert_eq!(ks.prefix_for(db1, legacy, 1), Err(PrefixError::NoPrefix));
        let web = ns.id("web-cache").expect("web");
        assert_eq!(ks.prefix_for(web, new, 0), Ok(&b""[..]));
        assert_eq!(ks.prefix_for(web, new, 1), Err(PrefixError::NotBound));
    }
}
