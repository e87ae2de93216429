//! Namespace matching rules: what `prefixes` and `db` may say, and which (database, prefix)
//! pairs must stay unique across namespaces.

use super::{file, problem, Problem, MAX_DB};
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
