//! Multi-key commands whose keys live on different endpoints: MGET, MSET, DEL, UNLINK,
//! EXISTS and TOUCH are split into one command per endpoint, and the replies merged back as
//! one, in the client's key order.
//!
//! A split MSET is not atomic: each endpoint applies its part on its own. A command of any
//! other kind whose keys span endpoints is refused before anything runs.

use super::link::Next;
use super::{End, Session, Source};
use crate::config::EndpointId;
use crate::resp::reply::ReplyScan;
use bytes::{Bytes, BytesMut};
use std::fmt::Write as _;
use std::ops::Range;
use std::time::Instant;

/// How the parts' replies become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOp {
    /// MGET: one array, elements in the client's key order.
    Array,
    /// MSET: `+OK` if every part said so.
    Ok,
    /// DEL, UNLINK, EXISTS, TOUCH: the sum of the parts' integers.
    Sum,
}

/// The split of one request, waiting for its parts' replies.
#[derive(Debug)]
pub struct Merge {
    op: MergeOp,
    /// Endpoints with a part, as a bit set.
    mask: u64,
    /// For MGET, the endpoint of each key in the client's order.
    order: Vec<EndpointId>,
}

impl Merge {
    /// Endpoints with a part.
    pub fn mask(&self) -> u64 {
        self.mask
    }
}

/// How a command splits, if it does: its merge and how many arguments each key takes.
pub fn splittable(name: &str) -> Option<(MergeOp, usize)> {
    match name {
        "mget" => Some((MergeOp::Array, 1)),
        "mset" => Some((MergeOp::Ok, 2)),
        "del" | "unlink" | "exists" | "touch" => Some((MergeOp::Sum, 1)),
        _ => None,
    }
}

/// Adapts a `BytesMut` to `fmt::Write`.
struct Buf<'a>(&'a mut BytesMut);

impl std::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Session {
    /// Splits `frame` by endpoint and queues one part per endpoint, plus the merge.
    pub(super) fn split(
        &mut self,
        frame: &[u8],
        args: &[Range<usize>],
        (op, per_key): (MergeOp, usize),
        table: &crate::route::RouteTable,
        now: Instant,
    ) {
        if (args.len() - 1) % per_key != 0 {
            // Redis refuses it whole (MSET k v k); a split must not run the paired part.
            let name = String::from_utf8_lossy(&frame[args[0].clone()]).to_ascii_lowercase();
            return self.local(
                Bytes::from(format!(
                    "-ERR wrong number of arguments for '{name}' command\r\n"
                )),
                now,
            );
        }
        let shared = self.shared.clone();
        let namespaces = &shared.router.namespaces;
        let keyspace = &namespaces.keyspace;
        // (endpoint, number of keys, body)
        let mut parts: Vec<(EndpointId, usize, BytesMut)> = Vec::new();
        let mut order = Vec::new();
        let mut i = 1;
        while i + per_key <= args.len() {
            let ns = namespaces.of_key_in(self.db, &frame[args[i].clone()]);
            let endpoint = table.target(ns);
            let prefix = if keyspace.is_single_db(endpoint) {
                match keyspace.prefix_for(ns, endpoint, self.db) {
                    Ok(prefix) => prefix,
                    Err(why) => {
                        let message = self.prefix_refusal(ns, endpoint, why);
                        return self.refuse(&message, crate::metrics::ErrorKind::Refused, now);
                    }
                }
            } else {
                &[]
            };
            let at = match parts.iter().position(|(ep, _, _)| *ep == endpoint) {
                Some(at) => at,
                None => {
                    parts.push((endpoint, 0, BytesMut::new()));
                    parts.len() - 1
                }
            };
            let part = &mut parts[at];
            part.1 += 1;
            for (n, arg) in args[i..i + per_key].iter().enumerate() {
                if n == 0 && !prefix.is_empty() {
                    let key = &frame[arg.clone()];
                    let _ = write!(Buf(&mut part.2), "${}\r\n", prefix.len() + key.len());
                    part.2.extend_from_slice(prefix);
                    part.2.extend_from_slice(key);
                    part.2.extend_from_slice(b"\r\n");
                } else {
                    crate::resp::write_bulk(&mut part.2, &frame[arg.clone()]);
                }
            }
            if op == MergeOp::Array {
                order.push(endpoint);
            }
            i += per_key;
        }
        let name = &frame[args[0].clone()];
        let mut mask = 0u64;
        for (endpoint, keys, body) in parts {
            let mut part = BytesMut::with_capacity(body.len() + 32);
            let _ = write!(Buf(&mut part), "*{}\r\n", keys * per_key + 1);
            crate::resp::write_bulk(&mut part, name);
            part.extend_from_slice(&body);
            self.prepare_link(endpoint);
            self.links[endpoint].queue(&part);
            mask |= 1 << endpoint;
        }
        self.expect(Source::Merge(Box::new(Merge { op, mask, order })), now);
    }

    /// Delivers the merge at the front once every part has answered; true when done.
    pub(super) fn merge_front(&mut self, mask: u64) -> Result<bool, End> {
        let Some(nexts) = self.complete_replies(mask)? else {
            return Ok(false);
        };
        let taken = self
            .pending
            .front_mut()
            .map(|p| std::mem::replace(&mut p.source, Source::Local(Bytes::new())));
        let Some(Source::Merge(merge)) = taken else {
            return Ok(false);
        };
        let first_error = (0..self.links.len()).find_map(|ep| match &nexts[ep] {
            Some(Next::Error) => Some(self.links[ep].error_reply.clone()),
            Some(Next::Frame(len)) if self.links[ep].rbuf.first() == Some(&b'-') => {
                Some(Bytes::copy_from_slice(&self.links[ep].rbuf[..*len]))
            }
            _ => None,
        });
        match first_error {
            Some(error) => self.cout.extend_from_slice(&error),
            None => self.write_merged(&merge, &nexts),
        }
        for (ep, next) in nexts.iter().enumerate() {
            if let Some(next) = next {
                self.links[ep].consumed(next);
            }
        }
        Ok(true)
    }

    fn write_merged(&mut self, merge: &Merge, nexts: &[Option<Next>]) {
        match merge.op {
            MergeOp::Ok => self.cout.extend_from_slice(b"+OK\r\n"),
            MergeOp::Sum => {
                let total: i64 = (0..self.links.len())
                    .filter_map(|ep| match nexts[ep] {
                        Some(Next::Frame(len)) => integer(&self.links[ep].rbuf[..len]),
                        _ => None,
                    })
                    .sum();
                let _ = write!(Buf(&mut self.cout), ":{total}\r\n");
            }
            MergeOp::Array => {
                // Each part's reply is an array header followed by its elements in order.
                let mut cursors = [0usize; crate::config::MAX_ENDPOINTS];
                for (ep, next) in nexts.iter().enumerate() {
                    if let Some(Next::Frame(_)) = next {
                        let rbuf = &self.links[ep].rbuf;
                        cursors[ep] = rbuf.iter().position(|&b| b == b'\n').map_or(0, |nl| nl + 1);
                    }
                }
                let _ = write!(Buf(&mut self.cout), "*{}\r\n", merge.order.len());
                for &ep in &merge.order {
                    let rbuf = &self.links[ep].rbuf;
                    let start = cursors[ep];
                    let mut scan = ReplyScan::new();
                    let len = scan
                        .advance(rbuf.get(start..).unwrap_or_default())
                        .unwrap_or(0);
                    if scan.is_done() && len > 0 {
                        self.cout.extend_from_slice(&rbuf[start..start + len]);
                        cursors[ep] = start + len;
                    } else {
                        self.cout.extend_from_slice(b"$-1\r\n");
                    }
                }
            }
        }
    }
}

/// The value of a complete `:N` reply.
fn integer(reply: &[u8]) -> Option<i64> {
    let body = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_commands_split() {
        assert_eq!(splittable("mget"), Some((MergeOp::Array, 1)));
        assert_eq!(splittable("mset"), Some((MergeOp::Ok, 2)));
        assert_eq!(splittable("exists"), Some((MergeOp::Sum, 1)));
        assert_eq!(splittable("msetnx"), None);
        assert_eq!(splittable("rename"), None);
    }

    #[test]
    fn integers_are_read_from_complete_replies() {
        assert_eq!(integer(b":42\r\n"), Some(42));
        assert_eq!(integer(b":-1\r\n"), Some(-1));
        assert_eq!(integer(b"+OK\r\n"), None);
    }
}
