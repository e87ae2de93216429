//! Stripping key prefixes from replies that name keys (KEYS, SCAN, RANDOMKEY, the key of a
//! blocking or multi-key pop, XREAD/XREADGROUP stream names), for requests that
//! [`super::prefix`] rewrote. Such replies are buffered whole (bounded by
//! `max_buffered_bytes`) and re-encoded; every other reply still streams through untouched.

use crate::resp::reply::{bulk, complete_len};
use crate::resp::write_bulk;
use bytes::BytesMut;

/// Which parts of a reply are key names to strip the prefix from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StripKind {
    /// KEYS: every element.
    Keys,
    /// SCAN: every element of the second element.
    Scan,
    /// RANDOMKEY: the bulk string itself.
    Key,
    /// BLPOP, BRPOP, BZPOPMIN/MAX, BLMPOP, BZMPOP, LMPOP, ZMPOP: the first element.
    FirstKey,
    /// XREAD, XREADGROUP: the name of each stream (array of pairs, or a RESP3 map).
    Streams,
}

/// How to strip one reply.
#[derive(Debug)]
pub(super) struct Strip {
    pub kind: StripKind,
    /// The prefixes the request's keys took (a name is stripped of the longest that starts it).
    pub prefixes: Vec<Box<[u8]>>,
}

/// Writes `reply` to `out` with the key names `strip` names stripped of their prefix. A reply
/// of another shape (an error, nil) is copied as it is.
pub(super) fn strip_reply(reply: &[u8], strip: &Strip, out: &mut BytesMut) {
    let done = match strip.kind {
        StripKind::Key => {
            strip_name(reply, &strip.prefixes, out);
            true
        }
        StripKind::Keys => each(reply, out, |i, e, out| {
            let _ = i;
            strip_name(e, &strip.prefixes, out)
        }),
        StripKind::FirstKey => each(reply, out, |i, e, out| {
            if i == 0 {
                strip_name(e, &strip.prefixes, out)
            } else {
                out.extend_from_slice(e)
            }
        }),
        StripKind::Scan => each(reply, out, |i, e, out| {
            if i != 1 || !each(e, out, |_, k, out| strip_name(k, &strip.prefixes, out)) {
                out.extend_from_slice(e);
            }
        }),
        StripKind::Streams if reply.first() == Some(&b'%') => each(reply, out, |i, e, out| {
            if i % 2 == 0 {
                strip_name(e, &strip.prefixes, out)
            } else {
                out.extend_from_slice(e)
            }
        }),
        StripKind::Streams => each(reply, out, |_, pair, out| {
            let stripped = each(pair, out, |j, e, out| {
                if j == 0 {
                    strip_name(e, &strip.prefixes, out)
                } else {
                    out.extend_from_slice(e)
                }
            });
            if !stripped {
                out.extend_from_slice(pair);
            }
        }),
    };
    if !done {
        out.extend_from_slice(reply);
    }
}

/// Writes an aggregate's header and calls `f` with each element (a RESP3 map's keys and
/// values alternate). False, with nothing written, when `reply` is not a complete aggregate.
fn each(reply: &[u8], out: &mut BytesMut, mut f: impl FnMut(usize, &[u8], &mut BytesMut)) -> bool {
    let Some(kind) = reply.first().copied() else {
        return false;
    };
    if !matches!(kind, b'*' | b'~' | b'%' | b'>') {
        return false;
    }
    let Some(nl) = reply.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let Some(count) = std::str::from_utf8(&reply[1..nl.saturating_sub(1)])
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return false;
    };
    let count = if kind == b'%' {
        count.saturating_mul(2)
    } else {
        count
    };
    let mut elements = Vec::with_capacity(count.min(1024));
    let mut pos = nl + 1;
    for _ in 0..count {
        let Some(len) = reply
            .get(pos..)
            .and_then(|r| complete_len(r).ok().flatten())
        else {
            return false;
        };
        elements.push(&reply[pos..pos + len]);
        pos += len;
    }
    out.extend_from_slice(&reply[..=nl]);
    for (i, e) in elements.into_iter().enumerate() {
        f(i, e, out);
    }
    true
}

/// Writes one key name, without the longest of `prefixes` that starts it.
fn strip_name(element: &[u8], prefixes: &[Box<[u8]>], out: &mut BytesMut) {
    let Some(name) = bulk(element) else {
        out.extend_from_slice(element);
        return;
    };
    let longest = prefixes
        .iter()
        .filter(|p| name.starts_with(p))
        .map(|p| p.len())
        .max();
    match longest {
        Some(n) => write_bulk(out, &name[n..]),
        None => out.extend_from_slice(element),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(kind: StripKind, reply: &[u8]) -> Vec<u8> {
        let strip = Strip {
            kind,
            prefixes: vec![b"db1:"[..].into(), b"db1:x:"[..].into()],
        };
        let mut out = BytesMut::new();
        strip_reply(reply, &strip, &mut out);
        out.to_vec()
    }

    #[test]
    fn key_names_lose_their_prefix() {
        assert_eq!(
            strip(StripKind::Keys, b"*2\r\n$5\r\ndb1:a\r\n$3\r\nzzz\r\n"),
            b"*2\r\n$1\r\na\r\n$3\r\nzzz\r\n"
        );
        assert_eq!(
            strip(StripKind::Key, b"$8\r\ndb1:x:ab\r\n"),
            b"$2\r\nab\r\n"
        );
        assert_eq!(strip(StripKind::Key, b"$-1\r\n"), b"$-1\r\n");
        assert_eq!(
            strip(StripKind::Scan, b"*2\r\n$2\r\n17\r\n*1\r\n$5\r\ndb1:k\r\n"),
            b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n"
        );
        assert_eq!(
            strip(StripKind::FirstKey, b"*2\r\n$5\r\ndb1:l\r\n$4\r\ndb1:\r\n"),
            b"*2\r\n$1\r\nl\r\n$4\r\ndb1:\r\n"
        );
        assert_eq!(strip(StripKind::FirstKey, b"*-1\r\n"), b"*-1\r\n");
        assert_eq!(
            strip(StripKind::Streams, b"*1\r\n*2\r\n$5\r\ndb1:s\r\n*0\r\n"),
            b"*1\r\n*2\r\n$1\r\ns\r\n*0\r\n"
        );
        assert_eq!(
            strip(StripKind::Streams, b"%1\r\n$5\r\ndb1:s\r\n*0\r\n"),
            b"%1\r\n$1\r\ns\r\n*0\r\n"
        );
        assert_eq!(strip(StripKind::Keys, b"-ERR x\r\n"), b"-ERR x\r\n");
    }
}
