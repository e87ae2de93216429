//! Namespace matching rules: what `prefixes` and `db` may say, and which (database, prefix)
//! pairs must stay unique across namespaces.

use super::{file, problem, EndpointConfig, NamespaceConfig, Problem, MAX_DB};
use std::collections::HashMap;

/// What the namespaces seen so far match: a (db, prefix) pair, or a whole database, may
/// belong to one namespace only.
#[derive(Default)]
pub(super) struct Matchers<'a> {
    pairs: HashMap<(Option<u8>, &'a str), (usize, &'a str)>,
    whole_dbs: HashMap<u8, (usize, &'a str)>,
}

impl<'a> Matchers<'a> {
    pub(super) fn check(
        &mut self,
        path: &str,
        i: usize,
        ns: &'a file::FileNamespace,
        db: Option<u8>,
        problems: &mut Vec<Problem>,
    ) {
        if ns.prefixes.is_empty() && ns.db.is_none() {
            problem(
                problems,
                format!("{path}.prefixes"),
                "must list at least one prefix (or set db to match a whole database)",
            );
        }
        if ns.prefixes.is_empty() {
            if let Some(db) = db {
                if let Some((other, name)) = self.whole_dbs.insert(db, (i, ns.name.as_str())) {
                    problem(
                        problems,
                        format!("{path}.db"),
                        format!("database {db} is already matched whole by namespaces[{other}] \"{name}\""),
                    );
                }
            }
        }
        for (j, prefix) in ns.prefixes.iter().enumerate() {
            let ppath = format!("{path}.prefixes[{j}]");
            if prefix.is_empty() {
                problem(
                    problems,
                    ppath,
                    "an empty prefix would match every key; use [default] instead",
                );
            } else if let Some((other, other_name)) = self
                .pairs
                .insert((db, prefix.as_str()), (i, ns.name.as_str()))
            {
                let within = db.map_or(String::new(), |db| format!(" in database {db}"));
                problem(
                    problems,
                    ppath,
                    format!("duplicate prefix \"{prefix}\"{within} (also in namespaces[{other}] \"{other_name}\")"),
                );
            }
        }
    }
}

pub(super) fn validate_db(path: &str, db: Option<i64>, problems: &mut Vec<Problem>) -> Option<u8> {
    let db = db?;
    match u8::try_from(db) {
        Ok(db) => Some(db),
        Err(_) => {
            problem(
                problems,
                format!("{path}.db"),
                format!("must be 0 to {MAX_DB}"),
            );
            None
        }
    }
}

/// Key prefixes on single-database endpoints (those with a `key_prefix` of their own or in
/// some namespace), where several databases share one keyspace:
/// - a namespace of database N ≠ 0 must have its own prefix on its target: the endpoint's
///   prefix belongs to database 0, so falling back to it would mix the two databases' keys
///   (the session also refuses such a namespace when a route change sends it to an endpoint
///   where it has none);
/// - non-empty prefixes of different databases on one endpoint must be neither identical nor
///   nested (one a prefix of the other), or a key of one database would be a key of the other.
///
/// Database 0's unprefixed keys are allowed beside prefixed ones: that is how an endpoint
/// keeps its own keys while taking another database's.
pub(super) fn check_key_prefixes(
    endpoints: &[EndpointConfig],
    namespaces: &[NamespaceConfig],
    problems: &mut Vec<Problem>,
) {
    for (ep, endpoint) in endpoints.iter().enumerate() {
        fn own(n: &NamespaceConfig, ep: usize) -> Option<&str> {
            n.key_prefixes
                .iter()
                .find(|(e, _)| *e == ep)
                .map(|(_, p)| p.as_str())
        }
        let single_db =
            endpoint.key_prefix.is_some() || namespaces.iter().any(|n| own(n, ep).is_some());
        if !single_db {
            continue;
        }
        // (prefix, database, where it is set, what sets it): the endpoint's own first.
        let mut entries: Vec<(&str, u8, String, String)> = Vec::new();
        if let Some(prefix) = endpoint.key_prefix.as_deref().filter(|p| !p.is_empty()) {
            entries.push((
                prefix,
                0,
                format!("endpoints.{}.key_prefix", endpoint.name),
                format!("endpoint \"{}\"", endpoint.name),
            ));
        }
        for (i, n) in namespaces.iter().enumerate() {
            let db = n.db.unwrap_or(0);
            match own(n, ep) {
                Some(prefix) if !prefix.is_empty() => entries.push((
                    prefix,
                    db,
                    format!("namespaces[{i}].key_prefix.{}", endpoint.name),
                    format!("namespaces[{i}] \"{}\"", n.name),
                )),
                Some(_) => {}
                None if db != 0 && n.target == ep => problem(
                    problems,
                    format!("namespaces[{i}].key_prefix"),
                    format!(
                        "database {db} goes to single-database endpoint \"{}\", which needs a key_prefix of its own for it (the endpoint's prefix, if any, is database 0's)",
                        endpoint.name
                    ),
                ),
                None => {}
            }
        }
        // Sorted, a prefix comes right before every string it is a prefix of.
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (i, (prefix, db, _, who)) in entries.iter().enumerate() {
            for (other, other_db, other_path, _) in entries[i + 1..]
                .iter()
                .take_while(|e| e.0.starts_with(prefix))
            {
                if other_db == db {
                    continue;
                }
                let how = if other == prefix {
                    "is also".to_string()
                } else {
                    format!("starts with \"{prefix}\",")
                };
                problem(
                    problems,
                    other_path.as_str(),
                    format!(
                        "\"{other}\" (database {other_db}) {how} the prefix of database {db} ({who}) on endpoint \"{}\": their keys would collide",
                        endpoint.name
                    ),
                );
            }
        }
    }
}
