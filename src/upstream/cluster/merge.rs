//! Splitting multi-key commands by slot and merging their replies.
//!
//! MGET, MSET, DEL, EXISTS, UNLINK and TOUCH may name keys of many slots; a cluster node
//! refuses that with `-CROSSSLOT`. The router sends one command per slot instead (keys in
//! their original order within it) and merges: MGET's values back in the client's key
//! order, the counts of DEL, EXISTS, UNLINK and TOUCH summed, MSET's `+OK` when every part
//! said so (else the first error). KEYS and DBSIZE go to every primary and are merged the
//! same way (concatenated, summed).

use bytes::{Bytes, BytesMut};

/// How part replies become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// One part: its reply as is.
    Pass,
    /// MGET: array elements back at their original positions.
    Positions,
    /// Integer replies summed.
    Sum,
    /// `+OK` if every part said so, else the first other reply.
    AllOk,
    /// Arrays concatenated (KEYS on every primary).
    Concat,
    /// The first error, else the first reply (commands sent to every node).
    First,
}

/// One per-slot command of a split request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The slot of its keys.
    pub slot: u16,
    /// The command.
    pub request: Bytes,
    /// For MGET: the positions of its keys in the client's request.
    pub positions: Vec<usize>,
}

/// How a command splits: its merge and the number of arguments per key (MSET: 2).
pub fn splittable(name: &[u8]) -> Option<(Merge, usize)> {
    let lower = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    if lower("mget") {
        Some((Merge::Positions, 1))
    } else if lower("mset") {
        Some((Merge::AllOk, 2))
    } else if lower("del") || lower("exists") || lower("unlink") || lower("touch") {
        Some((Merge::Sum, 1))
    } else {
        None
    }
}

/// Splits `args` (the command name first, then keys, each followed by `per_key - 1` values)
/// into one command per slot, in the order each slot is first named.
pub fn split(args: &[&[u8]], per_key: usize, slot_of: impl Fn(&[u8]) -> u16) -> Vec<Part> {
    // Per slot: its arguments (name first) and the client's key positions.
    type Group<'a> = (u16, Vec<&'a [u8]>, Vec<usize>);
    let mut groups: Vec<Group> = Vec::new();
    let Some((name, rest)) = args.split_first() else {
        return Vec::new();
    };
    for (position, chunk) in rest.chunks(per_key.max(1)).enumerate() {
        let slot = slot_of(chunk[0]);
        let group = match groups.iter().position(|g| g.0 == slot) {
            Some(i) => &mut groups[i],
            None => {
                groups.push((slot, vec![*name], Vec::new()));
                let last = groups.len() - 1;
                &mut groups[last]
            }
        };
        group.1.extend_from_slice(chunk);
        group.2.push(position);
    }
    groups
        .into_iter()
        .map(|(slot, args, positions)| Part {
            slot,
            request: crate::resp::command(&args),
            positions,
        })
        .collect()
}

/// Merges part replies (in part order). `keys` is the number of keys of the client's
/// request (MGET's array length).
pub fn merge(how: Merge, parts: &[Part], replies: &[Bytes], keys: usize) -> Bytes {
    if how == Merge::Pass {
        return replies.first().cloned().unwrap_or_default();
    }
    if let Some(error) = replies.iter().find(|r| crate::resp::is_error(r)) {
        return error.clone();
    }
    let mut out = BytesMut::new();
    match how {
        Merge::Pass | Merge::First => return replies.first().cloned().unwrap_or_default(),
        Merge::Sum => {
            let mut total: i64 = 0;
            for reply in replies {
                match super::slots::int(reply) {
                    Some(n) => total = total.saturating_add(n),
                    None => return unexpected(reply),
                }
            }
            out.extend_from_slice(format!(":{total}\r\n").as_bytes());
        }
        Merge::AllOk => {
            if let Some(other) = replies.iter().find(|r| r.as_ref() != b"+OK\r\n") {
                return other.clone();
            }
            out.extend_from_slice(b"+OK\r\n");
        }
        Merge::Positions => {
            let mut slots: Vec<Option<&[u8]>> = vec![None; keys];
            for (part, reply) in parts.iter().zip(replies) {
                let Some(values) = crate::resp::reply::elements(reply) else {
                    return unexpected(reply);
                };
                if values.len() != part.positions.len() {
                    return unexpected(reply);
                }
                for (&at, value) in part.positions.iter().zip(values) {
                    if let Some(place) = slots.get_mut(at) {
                        *place = Some(value);
                    }
                }
            }
            out.extend_from_slice(format!("*{keys}\r\n").as_bytes());
            for value in slots {
                out.extend_from_slice(value.unwrap_or(b"$-1\r\n"));
            }
        }
        Merge::Concat => {
            let mut all: Vec<&[u8]> = Vec::new();
            for reply in replies {
                match crate::resp::reply::elements(reply) {
                    Some(values) => all.extend(values),
                    None => return unexpected(reply),
                }
            }
            out.extend_from_slice(format!("*{}\r\n", all.len()).as_bytes());
            for value in all {
                out.extend_from_slice(value);
            }
        }
    }
    out.freeze()
}

fn unexpected(reply: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    let shown = String::from_utf8_lossy(&reply[..reply.len().min(64)]).into_owned();
    crate::resp::write_error(
        &mut out,
        &format!("ERR turnout: unexpected reply from a cluster node while merging: {shown}"),
    );
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_byte(key: &[u8]) -> u16 {
        u16::from(key[0])
    }

    #[test]
    fn keys_group_by_slot_in_first_seen_order() {
        let args: Vec<&[u8]> = vec![b"MGET", b"a1", b"b1", b"a2", b"c1"];
        let parts = split(&args, 1, first_byte);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].slot, u16::from(b'a'));
        assert_eq!(
            parts[0].request,
            crate::resp::command(&[b"MGET", b"a1", b"a2"])
        );
        assert_eq!(parts[0].positions, vec![0, 2]);
        assert_eq!(parts[1].positions, vec![1]);
        assert_eq!(parts[2].positions, vec![3]);
        let mset: Vec<&[u8]> = vec![b"MSET", b"a1", b"x", b"b1", b"y", b"a2", b"z"];
        let parts = split(&mset, 2, first_byte);
        assert_eq!(
            parts[0].request,
            crate::resp::command(&[b"MSET", b"a1", b"x", b"a2", b"z"])
        );
        assert_eq!(
            parts[1].request,
            crate::resp::command(&[b"MSET", b"b1", b"y"])
        );
    }

    #[test]
    fn mget_values_return_to_their_positions() {
        let args: Vec<&[u8]> = vec![b"MGET", b"a1", b"b1", b"a2", b"c1"];
        let parts = split(&args, 1, first_byte);
        let replies = [
            Bytes::from_static(b"*2\r\n$1\r\n1\r\n$-1\r\n"),
            Bytes::from_static(b"*1\r\n$1\r\n2\r\n"),
            Bytes::from_static(b"*1\r\n$3\r\nfoo\r\n"),
        ];
        assert_eq!(
            merge(Merge::Positions, &parts, &replies, 4).as_ref(),
            b"*4\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n$3\r\nfoo\r\n"
        );
        let short = [
            replies[0].clone(),
            Bytes::from_static(b"*0\r\n"),
            replies[2].clone(),
        ];
        assert!(merge(Merge::Positions, &parts, &short, 4).starts_with(b"-ERR turnout: unexpected"));
    }

    #[test]
    fn counts_sum_and_errors_win() {
        let replies = [Bytes::from_static(b":2\r\n"), Bytes::from_static(b":3\r\n")];
        assert_eq!(merge(Merge::Sum, &[], &replies, 0).as_ref(), b":5\r\n");
        let failed = [
            Bytes::from_static(b":2\r\n"),
            Bytes::from_static(b"-MOVED 1 x:1\r\n"),
            Bytes::from_static(b"-ERR second\r\n"),
        ];
        assert_eq!(
            merge(Merge::Sum, &[], &failed, 0).as_ref(),
            b"-MOVED 1 x:1\r\n"
        );
    }

    #[test]
    fn mset_is_ok_only_when_every_part_is() {
        let ok = [
            Bytes::from_static(b"+OK\r\n"),
            Bytes::from_static(b"+OK\r\n"),
        ];
        assert_eq!(merge(Merge::AllOk, &[], &ok, 0).as_ref(), b"+OK\r\n");
        let bad = [
            Bytes::from_static(b"+OK\r\n"),
            Bytes::from_static(b"-OOM no\r\n"),
        ];
        assert_eq!(merge(Merge::AllOk, &[], &bad, 0).as_ref(), b"-OOM no\r\n");
    }

    #[test]
    fn keys_concatenate() {
        let replies = [
            Bytes::from_static(b"*1\r\n$1\r\na\r\n"),
            Bytes::from_static(b"*0\r\n"),
            Bytes::from_static(b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ];
        assert_eq!(
            merge(Merge::Concat, &[], &replies, 0).as_ref(),
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        assert_eq!(splittable(b"MGet"), Some((Merge::Positions, 1)));
        assert_eq!(splittable(b"get"), None);
    }
}
