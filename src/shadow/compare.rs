//! Deciding whether two replies to the same command mean the same thing.
//!
//! The comparison is byte equality of the RESP replies after a normalisation that removes
//! what Redis itself does not promise: the order of unordered replies (Redis marks those
//! commands `nondeterministic_output_order`; RESP3 sets and maps are unordered by type), the
//! exact value of a TTL that ticks between the two reads, and the wording of an error after
//! its first word. Replies are complete and bounded by `[shadow] max_compare_bytes` before
//! they get here; anything that does not parse compares as raw bytes.

use crate::command::spec::flags;
use crate::command::CommandSpec;
use crate::resp::is_error;
use crate::resp::reply::complete_len;
use std::cmp::Ordering;

/// How a command's replies are normalised before comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Byte equality (after the normalisations every reply gets).
    Exact,
    /// The top-level aggregate's elements may come in any order.
    Unordered,
    /// The top-level array is field/value pairs in any order (HGETALL in RESP2).
    UnorderedPairs,
    /// An integer TTL in seconds (TTL, EXPIRETIME).
    Seconds,
    /// An integer TTL in milliseconds (PTTL, PEXPIRETIME).
    Millis,
}

impl Compare {
    /// The normalisation for a command.
    pub fn of(spec: &CommandSpec) -> Compare {
        match spec.name {
            "ttl" | "expiretime" => Compare::Seconds,
            "pttl" | "pexpiretime" => Compare::Millis,
            "hgetall" => Compare::UnorderedPairs,
            _ if spec.flags & flags::UNORDERED_OUTPUT != 0 => Compare::Unordered,
            _ => Compare::Exact,
        }
    }
}

/// Whether `a` and `b` are the same reply once normalised; `tolerance_ms` applies to TTLs.
pub fn same(how: Compare, a: &[u8], b: &[u8], tolerance_ms: u64) -> bool {
    if a == b {
        return true;
    }
    if is_error(a) || is_error(b) {
        return is_error(a) && is_error(b) && first_word(a) == first_word(b);
    }
    match how {
        Compare::Seconds => close(a, b, tolerance_ms.div_ceil(1000)),
        Compare::Millis => close(a, b, tolerance_ms),
        Compare::Exact | Compare::Unordered | Compare::UnorderedPairs => {
            match (normalise(how, a), normalise(how, b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
    }
}

/// An error's first word (`WRONGTYPE`, `ERR`, ...): the rest is wording.
fn first_word(reply: &[u8]) -> &[u8] {
    let body = match reply.first() {
        // A blob error: `!<len>\r\n<text>\r\n`.
        Some(b'!') => reply
            .iter()
            .position(|&c| c == b'\n')
            .map_or(&reply[..0], |i| &reply[i + 1..]),
        _ => reply.get(1..).unwrap_or_default(),
    };
    let end = body
        .iter()
        .position(|&c| c == b' ' || c == b'\r')
        .unwrap_or(body.len());
    &body[..end]
}

/// Two integer replies within `tolerance` of each other; negative ones (no key, no TTL) must
/// be equal.
fn close(a: &[u8], b: &[u8], tolerance: u64) -> bool {
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) if x < 0 || y < 0 => x == y,
        (Some(x), Some(y)) => x.abs_diff(y) <= tolerance,
        _ => false,
    }
}

fn integer(reply: &[u8]) -> Option<i64> {
    let body = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

/// The reply with its unordered parts sorted, or `None` if it does not parse.
fn normalise(how: Compare, reply: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(reply.len());
    let used = normalise_into(how, reply, &mut out, true)?;
    (used == reply.len()).then_some(out)
}

/// Normalises the element at the start of `buf` into `out`; returns its length in `buf`.
/// Only the top level follows `how`; RESP3 sets and maps are sorted at every depth.
fn normalise_into(how: Compare, buf: &[u8], out: &mut Vec<u8>, top: bool) -> Option<usize> {
    let kind = *buf.first()?;
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let header = &buf[..line_end + 2];
    let count = || -> Option<usize> { std::str::from_utf8(&buf[1..line_end]).ok()?.parse().ok() };
    let (elements, group) = match kind {
        b'*' | b'>' if buf.get(1) == Some(&b'-') => {
            out.extend_from_slice(header);
            return Some(header.len());
        }
        b'*' if top && how == Compare::Unordered => (count()?, 1),
        b'*' if top && how == Compare::UnorderedPairs => (count()?, 2),
        b'*' | b'>' => (count()?, 0),
        b'~' => (count()?, 1),
        b'%' => (count()?.checked_mul(2)?, 2),
        b'|' => (count()?.checked_mul(2)?.checked_add(1)?, 0),
        _ => {
            let len = complete_len(buf).ok()??;
            out.extend_from_slice(&buf[..len]);
            return Some(len);
        }
    };
    out.extend_from_slice(header);
    let mut pos = header.len();
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(elements.min(1 << 16));
    for _ in 0..elements {
        let mut part = Vec::new();
        pos += normalise_into(how, buf.get(pos..)?, &mut part, false)?;
        parts.push(part);
    }
    match group {
        0 => parts.iter().for_each(|p| out.extend_from_slice(p)),
        1 => {
            parts.sort_unstable();
            parts.iter().for_each(|p| out.extend_from_slice(p));
        }
        _ => {
            if parts.len() % 2 != 0 {
                return None;
            }
            let mut pairs: Vec<(&[u8], &[u8])> = parts
                .chunks_exact(2)
                .map(|c| (c[0].as_slice(), c[1].as_slice()))
                .collect();
            pairs.sort_unstable_by(|x, y| match x.0.cmp(y.0) {
                Ordering::Equal => x.1.cmp(y.1),
                other => other,
            });
            for (k, v) in pairs {
                out.extend_from_slice(k);
                out.extend_from_slice(v);
            }
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_compare_in_any_order_and_lists_do_not() {
        let a = b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$2\r\ncc\r\n";
        let b = b"*3\r\n$2\r\ncc\r\n$1\r\na\r\n$1\r\nb\r\n";
        assert!(same(Compare::Unordered, a, b, 0));
        assert!(!same(Compare::Exact, a, b, 0));
        let missing = b"*2\r\n$2\r\ncc\r\n$1\r\na\r\n";
        assert!(!same(Compare::Unordered, a, missing, 0));
        // RESP3 sets are unordered whatever the command.
        let s1 = b"~2\r\n$1\r\nx\r\n$1\r\ny\r\n";
        let s2 = b"~2\r\n$1\r\ny\r\n$1\r\nx\r\n";
        assert!(same(Compare::Exact, s1, s2, 0));
    }

    #[test]
    fn hash_pairs_move_together() {
        let a = b"*4\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n";
        let b = b"*4\r\n$1\r\ng\r\n$1\r\n2\r\n$1\r\nf\r\n$1\r\n1\r\n";
        assert!(same(Compare::UnorderedPairs, a, b, 0));
        // Same fields and values, paired differently: a real difference.
        let swapped = b"*4\r\n$1\r\ng\r\n$1\r\n1\r\n$1\r\nf\r\n$1\r\n2\r\n";
        assert!(!same(Compare::UnorderedPairs, a, swapped, 0));
        let m1 = b"%2\r\n$1\r\nf\r\n:1\r\n$1\r\ng\r\n:2\r\n";
        let m2 = b"%2\r\n$1\r\ng\r\n:2\r\n$1\r\nf\r\n:1\r\n";
        assert!(same(Compare::Exact, m1, m2, 0));
    }

    #[test]
    fn ttls_agree_within_the_tolerance() {
        assert!(same(Compare::Seconds, b":100\r\n", b":99\r\n", 2000));
        assert!(!same(Compare::Seconds, b":100\r\n", b":90\r\n", 2000));
        assert!(same(Compare::Millis, b":100000\r\n", b":98500\r\n", 2000));
        assert!(!same(Compare::Millis, b":100000\r\n", b":97000\r\n", 2000));
        // No key or no TTL must agree exactly.
        assert!(!same(Compare::Seconds, b":-1\r\n", b":1\r\n", 2000));
        assert!(!same(Compare::Seconds, b":-2\r\n", b":-1\r\n", 2000));
    }

    #[test]
    fn errors_compare_by_their_first_word() {
        assert!(same(
            Compare::Exact,
            b"-WRONGTYPE Operation against a key\r\n",
            b"-WRONGTYPE other words\r\n",
            0
        ));
        assert!(!same(Compare::Exact, b"-ERR x\r\n", b"-WRONGTYPE x\r\n", 0));
        assert!(!same(Compare::Exact, b"-ERR x\r\n", b"$1\r\nx\r\n", 0));
        assert!(same(Compare::Exact, b"!5\r\nERR x\r\n", b"-ERR y\r\n", 0));
    }

    #[test]
    fn different_values_and_garbage_do_not_match() {
        assert!(!same(Compare::Exact, b"$1\r\na\r\n", b"$1\r\nb\r\n", 0));
        assert!(!same(
            Compare::Unordered,
            b"*2\r\n$1\r\na\r\n",
            b"*1\r\n$1\r\na\r\n",
            0
        ));
        assert!(!same(Compare::Unordered, b"*9\r\n", b"*9\r\n:", 0));
        assert!(same(Compare::Unordered, b"*-1\r\n", b"*-1\r\n", 0));
    }
}
