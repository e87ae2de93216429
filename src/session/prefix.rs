//! Key rewriting for single-database endpoints (`key_prefix`).
//!
//! A request routed to an endpoint that holds one database has each key prefixed with its
//! namespace's prefix there; KEYS and SCAN patterns are confined to the prefix; replies that
//! return key names (KEYS, SCAN, RANDOMKEY, the key of a blocking or multi-key pop, XREAD
//! stream names) are buffered whole and have the prefix stripped. Commands whose keys cannot
//! all be rewritten are refused before anything runs. Only requests to such endpoints come
//! here: sessions that use no prefix never pay for it.

use super::strip::{Strip, StripKind};
use super::Session;
use crate::command::keys::for_each_key;
use crate::command::{self, Resolved};
use crate::config::EndpointId;
use crate::metrics::ErrorKind;
use crate::resp::write_bulk;
use crate::route::keyspace::PrefixError;
use crate::route::NsId;
use bytes::{Bytes, BytesMut};
use std::ops::{ControlFlow, Range};
use std::time::Instant;

/// A request rewritten for a single-database endpoint.
pub(super) struct Rewritten {
    pub frame: BytesMut,
    pub strip: Option<Box<Strip>>,
}

/// RANDOMKEY within a prefix: up to 64 draws of RANDOMKEY for a key with the prefix
/// (`ARGV[1]`), then a SCAN for `ARGV[2]` (the escaped prefix and `*`) when the namespace's
/// keys are too sparse to be drawn; nil when it has none.
const RANDOM_KEY_SCRIPT: &[u8] = b"for _ = 1, 64 do \
local k = redis.call('RANDOMKEY') \
if not k then return false end \
if string.sub(k, 1, #ARGV[1]) == ARGV[1] then return k end \
end \
local c = '0' \
repeat \
local r = redis.call('SCAN', c, 'MATCH', ARGV[2], 'COUNT', 1000) \
if #r[2] > 0 then return r[2][1] end \
c = r[1] \
until c == '0' \
return false";

/// What a family of commands needs on a single-database endpoint.
fn family(name: &str) -> Result<Option<StripKind>, &'static str> {
    Ok(match name {
        "keys" => Some(StripKind::Keys),
        "scan" => Some(StripKind::Scan),
        "randomkey" => Some(StripKind::Key),
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "blmpop" | "bzmpop" | "lmpop" | "zmpop" => {
            Some(StripKind::FirstKey)
        }
        "xread" | "xreadgroup" => Some(StripKind::Streams),
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => {
            return Err("scripts and functions may build key names that cannot be rewritten")
        }
        "migrate" | "move" | "swapdb" => return Err("it moves keys between databases or servers"),
        "flushdb" | "flushall" | "dbsize" => {
            return Err("the database is shared with other namespaces")
        }
        _ => None,
    })
}

/// Escapes glob metacharacters so a prefix matches itself only in a KEYS/SCAN pattern.
fn escape_glob(prefix: &[u8], out: &mut Vec<u8>) {
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Writes a multibulk request: `args` with `replace` applied (argument index → new bytes) and
/// `append` added at the end.
fn write_request(
    frame: &[u8],
    args: &[Range<usize>],
    replace: &[(usize, Vec<u8>)],
    append: &[&[u8]],
) -> BytesMut {
    let mut out = BytesMut::with_capacity(frame.len() + 16 * (replace.len() + append.len()) + 16);
    out.extend_from_slice(format!("*{}\r\n", args.len() + append.len()).as_bytes());
    for (i, range) in args.iter().enumerate() {
        match replace.iter().find(|(at, _)| *at == i) {
            Some((_, bytes)) => write_bulk(&mut out, bytes),
            None => write_bulk(&mut out, &frame[range.clone()]),
        }
    }
    for extra in append {
        write_bulk(&mut out, extra);
    }
    out
}

impl Session {
    /// Forwards a keyless or pattern request to `ep`, rewritten when `ep` holds one
    /// database (refused when it cannot be).
    pub(super) fn forward_routed(
        &mut self,
        resolved: &Resolved,
        frame: &[u8],
        args: &[Range<usize>],
        ns: NsId,
        ep: EndpointId,
        now: Instant,
    ) {
        if !self.shared.router.namespaces.keyspace.is_single_db(ep) {
            return self.forward(ep, frame, ns, resolved.id, now);
        }
        match self.rewrite_for(resolved, frame, args, ns, ep) {
            Ok(rewritten) => {
                self.forward(ep, &rewritten.frame, ns, resolved.id, now);
                if let Some(pending) = self.pending.back_mut() {
                    pending.strip = rewritten.strip;
                }
            }
            Err(message) => self.refuse(&message, ErrorKind::Refused, now),
        }
    }

    /// The request to queue inside a transaction (or WATCH) pinned to `ep`: `None` to send
    /// it as it is. A reply that would need stripping cannot be found inside EXEC's: refused.
    pub(super) fn rewrite_in_tx(
        &self,
        resolved: &Resolved,
        frame: &[u8],
        args: &[Range<usize>],
        ep: EndpointId,
    ) -> Result<Option<BytesMut>, String> {
        if !self.shared.router.namespaces.keyspace.is_single_db(ep) {
            return Ok(None);
        }
        let namespaces = &self.shared.router.namespaces;
        let ns = super::dispatch::pattern_namespace(namespaces, self.db, frame, args);
        let rewritten = self.rewrite_for(resolved, frame, args, ns, ep)?;
        if rewritten.strip.is_some() {
            return Err(format!(
                "ERR turnout: '{}' is not supported inside MULTI on single-database endpoint '{}' (its reply names keys)",
                command::label(resolved.id),
                self.shared.config.endpoints[ep].name
            ));
        }
        Ok(Some(rewritten.frame))
    }

    /// SELECT: notes the database the session now routes by. Returns the endpoints it must
    /// not reach (single-database ones), or `None` when it was answered here.
    pub(super) fn select_db(
        &mut self,
        frame: &[u8],
        args: &[Range<usize>],
        now: Instant,
    ) -> Option<u64> {
        let keyspace = &self.shared.router.namespaces.keyspace;
        let skip = keyspace.single_db_mask();
        let db = args
            .get(1)
            .and_then(|r| std::str::from_utf8(&frame[r.clone()]).ok())
            .and_then(|n| n.parse::<u8>().ok());
        match db {
            Some(db) => self.db = db,
            None if skip != 0 || keyspace.by_db() => {
                // Databases past 255 cannot be routed: refused here whatever Redis allows.
                self.local(
                    Bytes::from_static(b"-ERR DB index is out of range\r\n"),
                    now,
                );
                return None;
            }
            None => {}
        }
        Some(skip)
    }

    /// The message refusing a request routed by `ns` to `ep` from the session's database.
    pub(super) fn prefix_refusal(&self, ns: NsId, ep: EndpointId, why: PrefixError) -> String {
        let namespace = self.shared.router.namespaces.name(ns);
        let endpoint = &self.shared.config.endpoints[ep].name;
        match why {
            PrefixError::NoPrefix => format!(
                "ERR turnout: namespace '{namespace}' has no key_prefix for endpoint '{endpoint}' (database {})",
                self.db
            ),
            PrefixError::NotBound => format!(
                "ERR turnout: namespace '{namespace}' matches every database, so its keys from database {} cannot go to single-database endpoint '{endpoint}' (give the namespace a db)",
                self.db
            ),
        }
    }

    /// Rewrites a request for the single-database endpoint `ep`; `ns` is its route (for
    /// keyless and pattern commands). `Err` holds the refusal.
    pub(super) fn rewrite_for(
        &self,
        resolved: &Resolved,
        frame: &[u8],
        args: &[Range<usize>],
        ns: NsId,
        ep: EndpointId,
    ) -> Result<Rewritten, String> {
        let name = resolved
            .spec
            .map_or(command::label(resolved.id), |s| s.name);
        let kind = family(name).map_err(|why| {
            format!(
                "ERR turnout: '{name}' is not supported on single-database endpoint '{}': {why}",
                self.shared.config.endpoints[ep].name
            )
        })?;
        let keyspace = &self.shared.router.namespaces.keyspace;
        let mut replace: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut append: Vec<&[u8]> = Vec::new();
        let mut prefixes: Vec<Box<[u8]>> = Vec::new();
        let mut note_prefix = |p: &[u8]| {
            if !p.is_empty() && !prefixes.iter().any(|q| &q[..] == p) {
                prefixes.push(p.into());
            }
        };
        let pattern_prefix = |this: &Self| {
            keyspace
                .prefix_for(ns, ep, this.db)
                .map_err(|why| this.prefix_refusal(ns, ep, why))
        };
        let scan_match;
        match kind {
            Some(StripKind::Keys) => {
                let prefix = pattern_prefix(self)?;
                note_prefix(prefix);
                if let Some(range) = args.get(1) {
                    let mut pattern = Vec::with_capacity(prefix.len() + range.len() + 4);
                    escape_glob(prefix, &mut pattern);
                    pattern.extend_from_slice(&frame[range.clone()]);
                    replace.push((1, pattern));
                }
            }
            Some(StripKind::Scan) => {
                let prefix = pattern_prefix(self)?;
                note_prefix(prefix);
                let mut pattern = Vec::with_capacity(prefix.len() + 4);
                escape_glob(prefix, &mut pattern);
                let at = (2..args.len())
                    .step_by(2)
                    .find(|&i| frame[args[i].clone()].eq_ignore_ascii_case(b"MATCH"));
                match at.and_then(|i| args.get(i + 1).map(|r| (i + 1, r))) {
                    Some((i, range)) => {
                        pattern.extend_from_slice(&frame[range.clone()]);
                        replace.push((i, pattern));
                    }
                    None if prefix.is_empty() => {}
                    None => {
                        pattern.push(b'*');
                        scan_match = pattern;
                        append.push(b"MATCH");
                        append.push(&scan_match);
                    }
                }
            }
            Some(StripKind::Key) => {
                let prefix = pattern_prefix(self)?;
                if !prefix.is_empty() {
                    let mut pattern = Vec::with_capacity(prefix.len() + 4);
                    escape_glob(prefix, &mut pattern);
                    pattern.push(b'*');
                    let frame =
                        crate::resp::command(&[b"EVAL", RANDOM_KEY_SCRIPT, b"0", prefix, &pattern]);
                    return Ok(Rewritten {
                        frame: BytesMut::from(&frame[..]),
                        strip: Some(Box::new(Strip {
                            kind: StripKind::Key,
                            prefixes: vec![prefix.into()],
                        })),
                    });
                }
            }
            _ => {}
        }
        let sorts = name == "sort" || name == "sort_ro";
        if sorts
            && args.iter().skip(2).any(|r| {
                let a = &frame[r.clone()];
                a.eq_ignore_ascii_case(b"BY") || a.eq_ignore_ascii_case(b"GET")
            })
        {
            return Err(format!(
                "ERR turnout: SORT with BY or GET is not supported on single-database endpoint '{}': its patterns name other keys",
                self.shared.config.endpoints[ep].name
            ));
        }
        if name == "copy"
            && args
                .iter()
                .skip(3)
                .any(|r| frame[r.clone()].eq_ignore_ascii_case(b"DB"))
        {
            return Err(format!(
                "ERR turnout: COPY with DB is not supported on single-database endpoint '{}'",
                self.shared.config.endpoints[ep].name
            ));
        }
        if let Some(spec) = resolved.spec {
            let namespaces = &self.shared.router.namespaces;
            let mut refusal = None;
            let _ = for_each_key(spec, frame, args, |key| {
                let key_ns = namespaces.of_key_in(self.db, key);
                match keyspace.prefix_for(key_ns, ep, self.db) {
                    Ok(prefix) => {
                        note_prefix(prefix);
                        if !prefix.is_empty() {
                            let offset = key.as_ptr() as usize - frame.as_ptr() as usize;
                            if let Some(i) = args.iter().position(|r| r.start == offset) {
                                if !replace.iter().any(|(at, _)| *at == i) {
                                    let mut k = Vec::with_capacity(prefix.len() + key.len());
                                    k.extend_from_slice(prefix);
                                    k.extend_from_slice(key);
                                    replace.push((i, k));
                                }
                            }
                        }
                        ControlFlow::Continue(())
                    }
                    Err(why) => {
                        refusal = Some(self.prefix_refusal(key_ns, ep, why));
                        ControlFlow::Break(())
                    }
                }
            });
            if let Some(message) = refusal {
                return Err(message);
            }
        } else {
            let name = args.first().map(|r| &frame[r.clone()]).unwrap_or_default();
            let Some(extra) = self.extra_command(name) else {
                return Err(format!(
                    "ERR turnout: unknown command '{}' is not supported on single-database endpoint '{}': its keys cannot be rewritten (declare them in [[commands]])",
                    String::from_utf8_lossy(name).to_ascii_lowercase(),
                    self.shared.config.endpoints[ep].name
                ));
            };
            let last = if extra.last_key >= 0 {
                extra.last_key
            } else {
                args.len() as i64 + extra.last_key
            };
            let namespaces = &self.shared.router.namespaces;
            let mut i = extra.first_key;
            while (i as i64) <= last && i < args.len() {
                let key = &frame[args[i].clone()];
                let key_ns = namespaces.of_key_in(self.db, key);
                let prefix = keyspace
                    .prefix_for(key_ns, ep, self.db)
                    .map_err(|why| self.prefix_refusal(key_ns, ep, why))?;
                if !prefix.is_empty() {
                    replace.push((i, [prefix, key].concat()));
                }
                i += extra.step;
            }
        }
        let strip = match kind {
            Some(kind) if !prefixes.is_empty() => Some(Box::new(Strip { kind, prefixes })),
            _ => None,
        };
        Ok(Rewritten {
            frame: write_request(frame, args, &replace, &append),
            strip,
        })
    }
}

/// The database a SELECT frame selects, if it is one turnout can route by.
pub(super) fn selected_db(frame: &[u8]) -> Option<u8> {
    let mut args = Vec::new();
    match crate::resp::request::parse(frame, &mut args, usize::MAX) {
        Ok(crate::resp::request::Parsed::Multibulk { .. }) => {
            let r = args.get(1)?;
            std::str::from_utf8(&frame[r.clone()]).ok()?.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_metacharacters_are_escaped() {
        let mut out = Vec::new();
        escape_glob(b"a*b?[c]\\:", &mut out);
        assert_eq!(out, b"a\\*b\\?\\[c\\]\\\\:");
    }
}
