//! Cutting client requests out of the read buffer.
//!
//! A request is either a RESP multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), whose arguments
//! become byte ranges into the buffer and whose bytes are forwarded untouched, or an inline
//! command (`GET k\r\n`, as typed in telnet), which is split like Redis's `sdssplitargs` and
//! rewritten once as a multibulk so that everything downstream sees one shape.

use super::{find_crlf, parse_int, ProtocolError, MAX_LINE};
use bytes::BytesMut;
use std::ops::Range;

/// Most arguments in one multibulk (Redis's own limit for unauthenticated clients is lower;
/// this is its hard limit).
pub const MAX_ARGS: i64 = 1024 * 1024;

/// What [`parse`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A multibulk request of `len` bytes; its arguments are in the `args` vector.
    Multibulk {
        /// Bytes consumed.
        len: usize,
    },
    /// An inline command line of `len` bytes (line ending included); see [`inline_to_multibulk`].
    Inline {
        /// Bytes consumed.
        len: usize,
    },
    /// Nothing to run (`*0\r\n`, `*-1\r\n`, or an empty inline line): skip `len` bytes.
    Empty {
        /// Bytes consumed.
        len: usize,
    },
}

/// Parses the request at the start of `buf`.
///
/// On `Multibulk`, `args` holds one range per argument (name first). `args` is cleared first
/// and reused across calls, so steady-state parsing allocates nothing.
///
/// # Errors
/// [`ProtocolError`] for bytes that can never become a valid request.
pub fn parse(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
    max_request: usize,
) -> Result<Parsed, ProtocolError> {
    parse_resumable(buf, args, max_request, &mut Resume::default())
}

/// Where parsing of an incomplete multibulk stopped. Passing it back with the same buffer
/// (grown, not moved) resumes after the last complete argument instead of re-parsing the
/// request from its start, so a request with many arguments arriving in small pieces costs
/// time in proportion to its size, not to its size times the number of reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Arguments announced by the header; 0 when no request is in progress.
    count: usize,
    /// Offset of the next argument's header.
    pos: usize,
    /// Bytes the buffer must hold to complete the argument being read, once its header
    /// has been read (0 before).
    wanted: usize,
}

impl Resume {
    /// Bytes the buffer must hold before the request in progress can advance, when known
    /// (its current argument's header has been read); 0 otherwise. Reading into a buffer
    /// reserved to this size takes a large value in one piece, without growing (and
    /// copying) the buffer chunk by chunk.
    pub fn wanted(&self) -> usize {
        self.wanted
    }
}

/// [`parse`], resuming from `resume` and updating it. `args` must be the vector filled by
/// the previous call when `resume` is in progress.
///
/// # Errors
/// As [`parse`].
pub fn parse_resumable(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
    max_request: usize,
    resume: &mut Resume,
) -> Result<Parsed, ProtocolError> {
    if resume.count == 0 {
        args.clear();
        match buf.first() {
            None => return Ok(Parsed::Incomplete),
            Some(b'*') => {}
            Some(_) => return parse_inline_line(buf),
        }
        let Some(cr) = find_crlf(buf) else {
            return if buf.len() > MAX_LINE {
                Err(ProtocolError::LineTooLong)
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        let count = parse_int(&buf[1..cr]).ok_or(ProtocolError::MultibulkLength)?;
        if count > MAX_ARGS {
            return Err(ProtocolError::MultibulkLength);
        }
        if count <= 0 {
            return Ok(Parsed::Empty { len: cr + 2 });
        }
        *resume = Resume {
            count: count as usize,
            pos: cr + 2,
            wanted: 0,
        };
    }
    let result = parse_arguments(buf, args, max_request, resume);
    if !matches!(result, Ok(Parsed::Incomplete)) {
        *resume = Resume::default();
    }
    result
}

fn parse_arguments(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
    max_request: usize,
    resume: &mut Resume,
) -> Result<Parsed, ProtocolError> {
    while args.len() < resume.count {
        let pos = resume.pos;
        let rest = buf.get(pos..).unwrap_or_default();
        match rest.first() {
            None => return Ok(Parsed::Incomplete),
            Some(b'$') => {}
            Some(&other) => return Err(ProtocolError::ExpectedBulk(other)),
        }
        let Some(cr) = find_crlf(rest) else {
            return if rest.len() > MAX_LINE {
                Err(ProtocolError::LineTooLong)
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        let len = parse_int(&rest[1..cr]).ok_or(ProtocolError::BulkLength)?;
        if len < 0 || len as u64 > max_request as u64 {
            return Err(ProtocolError::BulkLength);
        }
        let start = pos + cr + 2;
        let end = start + len as usize;
        if end + 2 > max_request {
            return Err(ProtocolError::RequestTooLarge);
        }
        if buf.len() < end + 2 {
            resume.wanted = end + 2;
            return Ok(Parsed::Incomplete);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        args.push(start..end);
        resume.pos = end + 2;
        resume.wanted = 0;
    }
    Ok(Parsed::Multibulk { len: resume.pos })
}

fn parse_inline_line(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    match buf.iter().position(|&b| b == b'\n') {
        None if buf.len() > MAX_LINE => Err(ProtocolError::LineTooLong),
        None => Ok(Parsed::Incomplete),
        Some(nl) if nl > MAX_LINE => Err(ProtocolError::LineTooLong),
        Some(nl) => {
            let line = &buf[..nl];
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                Ok(Parsed::Empty { len: nl + 1 })
            } else {
                Ok(Parsed::Inline { len: nl + 1 })
            }
        }
    }
}

/// Splits an inline line the way Redis's `sdssplitargs` does (whitespace separated, with
/// `"…"` supporting `\n \r \t \b \a \\ \" \xHH` escapes and `'…'` supporting `\'`), and appends
/// the equivalent multibulk to `out`.
///
/// # Errors
/// [`ProtocolError::UnbalancedQuotes`] as Redis reports it.
pub fn inline_to_multibulk(line: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_args(line)?;
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in &args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            let c = line.get(i).copied();
            if in_dq {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\')
                        if i + 3 < line.len()
                            && line[i + 1] == b'x'
                            && hex_pair(line[i + 2], line[i + 3]).is_some() =>
                    {
                        arg.extend(hex_pair(line[i + 2], line[i + 3]));
                        i += 3;
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        i += 1;
                        arg.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        // The closing quote must be followed by a space or the end.
                        if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => arg.push(other),
                }
            } else if in_sq {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        arg.push(b'\'');
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => arg.push(other),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if b.is_ascii_whitespace() => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(other) => arg.push(other),
                }
            }
            i += 1;
        }
        args.push(arg);
    }
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    Some(digit(hi)? * 16 + digit(lo)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn parse_all(buf: &[u8]) -> Result<Parsed, ProtocolError> {
        let mut args = Vec::new();
        parse(buf, &mut args, MAX)
    }

    #[test]
    fn an_incomplete_value_tells_how_many_bytes_it_needs() {
        let mut args = Vec::new();
        let mut resume = Resume::default();
        let head = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$65536\r\nxyz";
        assert_eq!(
            parse_resumable(head, &mut args, MAX, &mut resume),
            Ok(Parsed::Incomplete)
        );
        // The value starts after the 30 header bytes and ends with CRLF.
        let start = head.len() - 3;
        assert_eq!(resume.wanted(), start + 65536 + 2);
        // Before a bulk header is complete nothing is known.
        let mut resume = Resume::default();
        assert_eq!(
            parse_resumable(b"*3\r\n$3\r\nSET\r\n$6", &mut args, MAX, &mut resume),
            Ok(Parsed::Incomplete)
        );
        assert_eq!(resume.wanted(), 0);
    }

    #[test]
    fn a_multibulk_yields_argument_ranges() {
        let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nextra";
        let mut args = Vec::new();
        assert_eq!(
            parse(buf, &mut args, MAX),
            Ok(Parsed::Multibulk { len: 31 })
        );
        let words: Vec<&[u8]> = args.iter().map(|r| &buf[r.clone()]).collect();
        assert_eq!(words, vec![&b"SET"[..], b"k", b"hello"]);
    }

    #[test]
    fn every_split_point_is_incomplete_until_the_last_byte() {
        let frame = b"*3\r\n$3\r\nSET\r\n$4\r\nk\r\nv\r\n$0\r\n\r\n";
        for cut in 0..frame.len() {
            assert_eq!(
                parse_all(&frame[..cut]),
                Ok(Parsed::Incomplete),
                "cut at {cut}"
            );
        }
        assert_eq!(parse_all(frame), Ok(Parsed::Multibulk { len: frame.len() }));
        let inline = b"SET k v\r\n";
        for cut in 0..inline.len() {
            assert_eq!(
                parse_all(&inline[..cut]),
                Ok(Parsed::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn boundaries_agree_with_redis_protocol_at_every_split() {
        let samples: [&[u8]; 4] = [
            b"*1\r\n$4\r\nPING\r\n",
            b"*2\r\n$3\r\nGET\r\n$10\r\nweb:\r\n\x00\xff12\r\n",
            b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$0\r\n\r\n",
            b"*2\r\n$4\r\nECHO\r\n$20\r\n01234567890123456789\r\n",
        ];
        for sample in samples {
            for cut in 0..=sample.len() {
                let ours = parse_all(&sample[..cut]).expect("valid prefix");
                let reference = redis_protocol::resp2::decode::decode_range(&sample[..cut])
                    .expect("valid prefix");
                match (ours, reference) {
                    (Parsed::Incomplete, None) => {}
                    (Parsed::Multibulk { len }, Some((_, amt))) => assert_eq!(len, amt),
                    other => panic!("disagreement at cut {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn resuming_at_every_split_gives_the_same_request_and_skips_parsed_arguments() {
        let frame = b"*4\r\n$4\r\nMSET\r\n$1\r\na\r\n$5\r\nhello\r\n$0\r\n\r\n";
        for cut in 0..frame.len() {
            let mut args = Vec::new();
            let mut resume = Resume::default();
            assert_eq!(
                parse_resumable(&frame[..cut], &mut args, MAX, &mut resume),
                Ok(Parsed::Incomplete),
                "cut {cut}"
            );
            let parsed_before = args.len();
            assert_eq!(
                parse_resumable(frame, &mut args, MAX, &mut resume),
                Ok(Parsed::Multibulk { len: frame.len() })
            );
            assert_eq!(args, vec![8..12, 18..19, 25..30, 36..36], "cut {cut}");
            assert_eq!(resume, Resume::default());
            assert!(parsed_before <= 4);
        }
        let mut args = Vec::new();
        let mut resume = Resume::default();
        assert_eq!(
            parse_resumable(&frame[..24], &mut args, MAX, &mut resume),
            Ok(Parsed::Incomplete)
        );
        assert_eq!(
            args.len(),
            2,
            "complete arguments are kept, not parsed again"
        );
        assert_eq!(resume.pos, 21);
    }

    #[test]
    fn empty_and_negative_multibulks_are_skipped() {
        assert_eq!(parse_all(b"*0\r\n"), Ok(Parsed::Empty { len: 4 }));
        assert_eq!(parse_all(b"*-1\r\n"), Ok(Parsed::Empty { len: 5 }));
        assert_eq!(parse_all(b"\r\n"), Ok(Parsed::Empty { len: 2 }));
        assert_eq!(parse_all(b"  \n"), Ok(Parsed::Empty { len: 3 }));
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(parse_all(b"*x\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(
            parse_all(b"*9999999\r\n"),
            Err(ProtocolError::MultibulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n:1\r\n"),
            Err(ProtocolError::ExpectedBulk(b':'))
        );
        assert_eq!(parse_all(b"*1\r\n$x\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(parse_all(b"*1\r\n$-1\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(
            parse_all(b"*1\r\n$1\r\nab\r\n"),
            Err(ProtocolError::MissingCrlf)
        );
        let mut args = Vec::new();
        assert_eq!(
            parse(b"*1\r\n$100\r\n", &mut args, 10),
            Err(ProtocolError::BulkLength)
        );
        assert_eq!(
            parse(b"*2\r\n$4\r\nabcd\r\n$4\r\n", &mut args, 16),
            Err(ProtocolError::RequestTooLarge)
        );
        let long = vec![b'a'; MAX_LINE + 2];
        assert_eq!(parse_all(&long), Err(ProtocolError::LineTooLong));
        let mut long_header = b"*1".to_vec();
        long_header.extend(std::iter::repeat_n(b'1', MAX_LINE));
        assert_eq!(parse_all(&long_header), Err(ProtocolError::LineTooLong));
    }

    #[test]
    fn inline_commands_split_like_redis() {
        let mut out = BytesMut::new();
        inline_to_multibulk(b"SET  k \"a b\\n\\x41\" 'it\\'s'\r\n", &mut out).expect("valid");
        assert_eq!(
            &out[..],
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na b\nA\r\n$4\r\nit's\r\n"
        );
        out.clear();
        inline_to_multibulk(b"PING\n", &mut out).expect("valid");
        assert_eq!(&out[..], b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            inline_to_multibulk(b"GET \"k\r\n", &mut out),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            inline_to_multibulk(b"GET \"k\"x\r\n", &mut out),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(parse_all(b"GET k\r\nrest"), Ok(Parsed::Inline { len: 7 }));
    }
}
