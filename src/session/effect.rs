//! Mirroring a write by its effect, for writes that would do something else if run again.
//!
//! SPOP picks members at random, and a blocking pop (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH,
//! BZPOPMIN, BZPOPMAX) could block the shadow lane for as long as it blocks the client. Their
//! copy for a dual-write secondary is built from the target's reply instead: the members SPOP
//! returned are SREM'd, the element a blocking pop returned is popped with its non-blocking
//! form from the same key (and side), the member BZPOP returned is ZREM'd. Until the reply
//! is in, later copies of the session wait behind it (see `mirror.rs`), so the secondary sees
//! the session's writes in order.

use crate::resp::command;
use crate::resp::reply::{bulk, elements};
use bytes::Bytes;
use std::ops::Range;

/// A write mirrored by its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Effect {
    /// SPOP key [count]: SREM key <the members returned>.
    SetPop,
    /// BLPOP/BRPOP: LPOP/RPOP <the key returned>.
    ListPop { left: bool },
    /// BLMOVE/BRPOPLPUSH: the same move without blocking, if an element moved.
    ListMove { command: Bytes },
    /// BZPOPMIN/BZPOPMAX: ZREM <the key returned> <the member returned>.
    ZsetPop,
}

impl Effect {
    /// The effect form of a command, if it has one; `frame`/`args` are its request.
    pub(super) fn of(name: &str, frame: &[u8], args: &[Range<usize>]) -> Option<Effect> {
        let arg = |i: usize| args.get(i).map(|r| &frame[r.clone()]);
        match name {
            "spop" => Some(Effect::SetPop),
            "blpop" => Some(Effect::ListPop { left: true }),
            "brpop" => Some(Effect::ListPop { left: false }),
            "bzpopmin" | "bzpopmax" => Some(Effect::ZsetPop),
            "brpoplpush" => {
                let (src, dst) = (arg(1)?, arg(2)?);
                Some(Effect::ListMove {
                    command: command(&[b"RPOPLPUSH", src, dst]),
                })
            }
            "blmove" => {
                let (src, dst, from, to) = (arg(1)?, arg(2)?, arg(3)?, arg(4)?);
                Some(Effect::ListMove {
                    command: command(&[b"LMOVE", src, dst, from, to]),
                })
            }
            _ => None,
        }
    }

    /// The copy for the secondary, from the target's reply; `None` when the write changed
    /// nothing (a nil or empty reply, an error) or the reply is not what the command answers.
    pub(super) fn copy(&self, frame: &[u8], args: &[Range<usize>], reply: &[u8]) -> Option<Bytes> {
        if matches!(reply.first(), Some(b'-' | b'!' | b'_')) || reply.starts_with(b"*-1") {
            return None;
        }
        match self {
            Effect::SetPop => {
                let key = &frame[args.get(1)?.clone()];
                let members = if reply.starts_with(b"$") {
                    vec![bulk(reply)?]
                } else {
                    elements(reply)?
                        .into_iter()
                        .map(bulk)
                        .collect::<Option<Vec<_>>>()?
                };
                if members.is_empty() {
                    return None;
                }
                let mut parts: Vec<&[u8]> = vec![b"SREM", key];
                parts.extend(members);
                Some(command(&parts))
            }
            Effect::ListPop { left } => {
                let items = elements(reply)?;
                let key = bulk(items.first()?)?;
                let pop: &[u8] = if *left { b"LPOP" } else { b"RPOP" };
                Some(command(&[pop, key]))
            }
            Effect::ListMove { command } => {
                // The moved element, or nil when the timeout passed.
                bulk(reply)?;
                Some(command.clone())
            }
            Effect::ZsetPop => {
                let items = elements(reply)?;
                let key = bulk(items.first()?)?;
                let member = bulk(items.get(1)?)?;
                Some(command(&[b"ZREM", key, member]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::request::{parse, Parsed};

    fn request(text: &[&str]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut frame = format!("*{}\r\n", text.len()).into_bytes();
        for t in text {
            frame.extend_from_slice(format!("${}\r\n{t}\r\n", t.len()).as_bytes());
        }
        let mut args = Vec::new();
        assert!(matches!(
            parse(&frame, &mut args, usize::MAX),
            Ok(Parsed::Multibulk { .. })
        ));
        (frame, args)
    }

    fn copy_of(text: &[&str], reply: &[u8]) -> Option<Bytes> {
        let (frame, args) = request(text);
        Effect::of(&text[0].to_ascii_lowercase(), &frame, &args)?.copy(&frame, &args, reply)
    }

    #[test]
    fn pops_become_their_effect() {
        assert_eq!(
            copy_of(&["SPOP", "s"], b"$1\r\na\r\n").as_deref(),
            Some(&b"*3\r\n$4\r\nSREM\r\n$1\r\ns\r\n$1\r\na\r\n"[..])
        );
        assert_eq!(
            copy_of(&["SPOP", "s", "2"], b"~2\r\n$1\r\na\r\n$1\r\nb\r\n").as_deref(),
            Some(&b"*4\r\n$4\r\nSREM\r\n$1\r\ns\r\n$1\r\na\r\n$1\r\nb\r\n"[..])
        );
        assert_eq!(copy_of(&["SPOP", "s"], b"$-1\r\n"), None);
        assert_eq!(copy_of(&["SPOP", "s", "2"], b"*0\r\n"), None);
        assert_eq!(
            copy_of(&["BRPOP", "a", "b", "0"], b"*2\r\n$1\r\nb\r\n$1\r\nx\r\n").as_deref(),
            Some(&b"*2\r\n$4\r\nRPOP\r\n$1\r\nb\r\n"[..])
        );
        assert_eq!(copy_of(&["BLPOP", "a", "1"], b"*-1\r\n"), None);
        assert_eq!(copy_of(&["BLPOP", "a", "1"], b"_\r\n"), None);
        assert_eq!(
            copy_of(&["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"], b"$1\r\nx\r\n").as_deref(),
            Some(&b"*5\r\n$5\r\nLMOVE\r\n$1\r\na\r\n$1\r\nb\r\n$4\r\nLEFT\r\n$5\r\nRIGHT\r\n"[..])
        );
        assert_eq!(
            copy_of(
                &["BZPOPMIN", "z", "0"],
                b"*3\r\n$1\r\nz\r\n$1\r\nm\r\n$1\r\n1\r\n"
            )
            .as_deref(),
            Some(&b"*3\r\n$4\r\nZREM\r\n$1\r\nz\r\n$1\r\nm\r\n"[..])
        );
        assert_eq!(copy_of(&["BLPOP", "a", "0"], b"-ERR x\r\n"), None);
        assert_eq!(copy_of(&["GET", "a"], b"$1\r\nx\r\n"), None);
    }
}
