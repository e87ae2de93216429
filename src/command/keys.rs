//! Finding a request's keys from the command table's key specs, as Redis's own
//! `getKeysUsingKeySpecs` does, without allocating.

use super::spec::{key_flags, BeginSearch, CommandSpec, FindKeys};
use std::ops::{ControlFlow, Range};

/// Why a request's keys cannot be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysError {
    /// A key spec Redis itself cannot describe (SORT's BY/GET patterns, MIGRATE's KEYS).
    Unknowable,
}

/// Calls `f` with every key of the request, in order. `args` are the argument ranges into
/// `buf`, the command name first. Malformed argument counts yield fewer keys; Redis then
/// replies with its own arity or syntax error.
///
/// # Errors
/// [`KeysError::Unknowable`] when a key spec cannot be evaluated.
pub fn for_each_key<'a>(
    spec: &CommandSpec,
    buf: &'a [u8],
    args: &[Range<usize>],
    mut f: impl FnMut(&'a [u8]) -> ControlFlow<()>,
) -> Result<(), KeysError> {
    let argc = args.len();
    let arg = |i: usize| &buf[args[i].clone()];
    if spec.name == "sort" || spec.name == "sort_ro" {
        return sort_keys(argc, arg, f);
    }
    for ks in spec.key_specs {
        if ks.flags & key_flags::NOT_KEY != 0 {
            continue;
        }
        if ks.flags & key_flags::INCOMPLETE != 0 {
            return Err(KeysError::Unknowable);
        }
        let first = match ks.begin {
            BeginSearch::Index(i) => usize::from(i),
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => match find_keyword(keyword, start_from, argc, arg) {
                Some(i) => i + 1,
                None => continue,
            },
            BeginSearch::Unknown => return Err(KeysError::Unknowable),
        };
        let (first, last, step) = match ks.find {
            FindKeys::Range {
                last_key,
                step,
                limit,
            } => {
                let last = if last_key >= 0 {
                    first as i64 + i64::from(last_key)
                } else if limit <= 1 {
                    argc as i64 + i64::from(last_key)
                } else {
                    first as i64
                        + (argc as i64 - first as i64) / i64::from(limit)
                        + i64::from(last_key)
                };
                (first, last, usize::from(step.max(1)))
            }
            FindKeys::Keynum {
                keynum_idx,
                first_key,
                step,
            } => {
                let at = first + usize::from(keynum_idx);
                if at >= argc {
                    continue;
                }
                let Some(numkeys) = parse_count(arg(at)) else {
                    continue;
                };
                let first = first + usize::from(first_key);
                // numkeys is client input: clamp it so the arithmetic cannot overflow.
                let numkeys = numkeys.min(argc as i64);
                (first, first as i64 + numkeys - 1, usize::from(step.max(1)))
            }
            FindKeys::Unknown => return Err(KeysError::Unknowable),
        };
        let mut i = first;
        while (i as i64) <= last && i < argc {
            if f(arg(i)).is_break() {
                return Ok(());
            }
            i += step;
        }
    }
    Ok(())
}

/// Redis's keyword search (`getKeysUsingKeySpecs`): forwards from `start_from` up to but not
/// including the last argument, or backwards from `argc + start_from` down to index 2.
fn find_keyword<'a>(
    keyword: &str,
    start_from: i16,
    argc: usize,
    arg: impl Fn(usize) -> &'a [u8],
) -> Option<usize> {
    let matches = |i: usize| arg(i).eq_ignore_ascii_case(keyword.as_bytes());
    if start_from > 0 {
        (usize::from(start_from.unsigned_abs())..argc.saturating_sub(1)).find(|&i| matches(i))
    } else {
        let start = argc as i64 + i64::from(start_from);
        (2..argc)
            .rev()
            .filter(|&i| i as i64 <= start)
            .find(|&i| matches(i))
    }
}

/// SORT's keys: the sorted key and the STORE destination. Its BY and GET patterns name other
/// keys derived from the elements, which no one can know in advance, so a pattern that
/// dereferences (anything but `BY nosort`-style constants and `GET #`) is unknowable.
fn sort_keys<'a>(
    argc: usize,
    arg: impl Fn(usize) -> &'a [u8],
    mut f: impl FnMut(&'a [u8]) -> ControlFlow<()>,
) -> Result<(), KeysError> {
    if argc < 2 || f(arg(1)).is_break() {
        return Ok(());
    }
    let mut i = 2;
    while i < argc {
        let word = arg(i);
        let operand = (i + 1 < argc).then(|| arg(i + 1));
        if word.eq_ignore_ascii_case(b"STORE") {
            if let Some(dest) = operand {
                if f(dest).is_break() {
                    return Ok(());
                }
            }
            i += 2;
        } else if word.eq_ignore_ascii_case(b"BY") || word.eq_ignore_ascii_case(b"GET") {
            let pattern = operand.unwrap_or_default();
            let constant = pattern == b"#" || !pattern.contains(&b'*');
            if !constant {
                return Err(KeysError::Unknowable);
            }
            i += 2;
        } else if word.eq_ignore_ascii_case(b"LIMIT") {
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn parse_count(digits: &[u8]) -> Option<i64> {
    std::str::from_utf8(digits)
        .ok()?
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::resolve;

    fn keys(words: &[&str]) -> Result<Vec<String>, KeysError> {
        let mut buf = Vec::new();
        let mut args = Vec::new();
        for w in words {
            let start = buf.len();
            buf.extend_from_slice(w.as_bytes());
            args.push(start..buf.len());
        }
        let second = words.get(1).map(|s| s.as_bytes());
        let spec = resolve(words[0].as_bytes(), second)
            .spec
            .expect("known command");
        let mut out = Vec::new();
        for_each_key(spec, &buf, &args, |k| {
            out.push(String::from_utf8_lossy(k).into_owned());
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    #[test]
    fn every_key_spec_shape_is_walked() {
        assert_eq!(keys(&["GET", "a"]), Ok(vec!["a".into()]));
        assert_eq!(
            keys(&["MSET", "a", "1", "b", "2"]),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            keys(&["DEL", "a", "b", "c"]),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            keys(&["EVAL", "s", "2", "k1", "k2", "arg"]),
            Ok(vec!["k1".into(), "k2".into()])
        );
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "2", "s1", "s2", "WEIGHTS", "1", "2"]),
            Ok(vec!["d".into(), "s1".into(), "s2".into()])
        );
        assert_eq!(
            keys(&["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"]),
            Ok(vec!["s1".into(), "s2".into()])
        );
        assert_eq!(
            keys(&["LMPOP", "2", "l1", "l2", "LEFT"]),
            Ok(vec!["l1".into(), "l2".into()])
        );
        assert_eq!(keys(&["OBJECT", "ENCODING", "k"]), Ok(vec!["k".into()]));
        assert_eq!(
            keys(&["BLPOP", "a", "b", "0"]),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            keys(&["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "dst"]),
            Ok(vec!["g".into(), "dst".into()])
        );
        assert_eq!(keys(&["PING"]), Ok(vec![]));
        assert_eq!(
            keys(&["SORT", "k", "BY", "w_*"]),
            Err(KeysError::Unknowable)
        );
        assert_eq!(
            keys(&["SORT", "k", "LIMIT", "0", "5", "ALPHA", "STORE", "d"]),
            Ok(vec!["k".into(), "d".into()])
        );
        assert_eq!(
            keys(&["SORT", "k", "BY", "nosort", "GET", "#"]),
            Ok(vec!["k".into()])
        );
        assert_eq!(
            keys(&["MIGRATE", "h", "1", "", "0", "5", "KEYS", "a", "b"]),
            Err(KeysError::Unknowable)
        );
    }

    #[test]
    fn malformed_argument_counts_yield_fewer_keys() {
        assert_eq!(keys(&["GET"]), Ok(vec![]));
        assert_eq!(keys(&["EVAL", "s", "x"]), Ok(vec![]));
        assert_eq!(keys(&["EVAL", "s", "5", "k1"]), Ok(vec!["k1".into()]));
        assert_eq!(
            keys(&["EVAL", "s", "9223372036854775807", "k1"]),
            Ok(vec!["k1".into()])
        );
    }
}
