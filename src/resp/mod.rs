//! RESP framing: cutting requests out of the client stream and finding reply boundaries in
//! upstream streams, without copying or allocating.
//!
//! Requests ([`request`]) are RESP2 multibulk frames or inline commands. Their arguments are
//! recorded as byte ranges into the read buffer, so a request is forwarded as the exact bytes
//! the client sent. Replies ([`reply`]) are scanned incrementally (RESP2 and RESP3), so a large
//! reply streams to the client as it arrives instead of being buffered whole.
//!
//! `redis-protocol` is the reference decoder: the unit tests check these scanners against it
//! on every split of every sample, and `benches/hot_path.rs` compares their cost. Its
//! `decode_range` allocates a `Vec` per aggregate frame, which the per-command hot path must not.

pub mod reply;
pub mod request;

/// A malformed frame: the connection that sent it gets `-ERR Protocol error: …` and is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*N` with a bad or oversized N.
    #[error("invalid multibulk length")]
    MultibulkLength,
    /// `$N` with a bad or oversized N.
    #[error("invalid bulk length")]
    BulkLength,
    /// A multibulk element that is not a bulk string.
    #[error("expected '$', got '{}'", *.0 as char)]
    ExpectedBulk(u8),
    /// A bulk string not followed by CRLF.
    #[error("bulk string not terminated by CRLF")]
    MissingCrlf,
    /// A header or inline line longer than allowed.
    #[error("too big inline request or header line")]
    LineTooLong,
    /// A request larger than `max_request_bytes`.
    #[error("request exceeds max_request_bytes")]
    RequestTooLarge,
    /// Unbalanced quotes in an inline command.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An unknown RESP type byte in a reply.
    #[error("unknown reply type byte '{}'", *.0 as char)]
    ReplyType(u8),
    /// A streamed RESP3 aggregate (`*?`), which Redis never sends.
    #[error("streamed RESP3 aggregates are not supported")]
    Streamed,
}

/// Longest header or inline line accepted (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const MAX_LINE: usize = 64 * 1024;

/// Finds `\r\n` in `buf`, returning the index of `\r`.
#[inline]
fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(nl) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + nl;
        if at > 0 && buf[at - 1] == b'\r' {
            return Some(at - 1);
        }
        from = at + 1;
    }
    None
}

/// Parses a decimal integer as Redis does for lengths (optional `-`, digits only).
#[inline]
fn parse_int(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    Some(if negative { -value } else { value })
}

/// Appends `-ERR Protocol error: {err}\r\n` to `out`.
pub fn write_protocol_error(out: &mut bytes::BytesMut, err: ProtocolError) {
    use std::fmt::Write as _;
    out.extend_from_slice(b"-ERR Protocol error: ");
    // Writing into a BytesMut cannot fail.
    let _ = write!(WriteBytes(out), "{err}");
    out.extend_from_slice(b"\r\n");
}

/// Appends a RESP error line, replacing CR/LF in the message so the frame stays valid.
pub fn write_error(out: &mut bytes::BytesMut, message: &str) {
    out.extend_from_slice(b"-");
    for &b in message.as_bytes() {
        out.extend_from_slice(&[if b == b'\r' || b == b'\n' { b' ' } else { b }]);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string (`$len\r\nbytes\r\n`).
pub fn write_bulk(out: &mut bytes::BytesMut, bytes: &[u8]) {
    use std::fmt::Write as _;
    let _ = write!(WriteBytes(out), "${}\r\n", bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends a request (`*n\r\n` and one bulk string per argument).
pub fn write_command(out: &mut bytes::BytesMut, args: &[&[u8]]) {
    use std::fmt::Write as _;
    let _ = write!(WriteBytes(out), "*{}\r\n", args.len());
    for arg in args {
        write_bulk(out, arg);
    }
}

/// A request of `args`, encoded.
pub fn command(args: &[&[u8]]) -> bytes::Bytes {
    let mut out = bytes::BytesMut::new();
    write_command(&mut out, args);
    out.freeze()
}

/// Whether a complete reply is an error (RESP2 `-` or RESP3 blob error `!`).
pub fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}

/// Adapts a `BytesMut` to `fmt::Write`.
struct WriteBytes<'a>(&'a mut bytes::BytesMut);

impl std::fmt::Write for WriteBytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-1"), Some(-1));
        assert_eq!(parse_int(b"123456"), Some(123_456));
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"-"), None);
        assert_eq!(parse_int(b"1x"), None);
        assert_eq!(parse_int(b"+1"), None);
        assert_eq!(parse_int(b"9999999999999999999"), None);
    }

    #[test]
    fn crlf_is_found_only_as_a_pair() {
        assert_eq!(find_crlf(b"abc\r\n"), Some(3));
        assert_eq!(find_crlf(b"a\nb\r\n"), Some(3));
        assert_eq!(find_crlf(b"abc\r"), None);
        assert_eq!(find_crlf(b"\r\n"), Some(0));
    }

    #[test]
    fn errors_are_single_lines() {
        let mut out = bytes::BytesMut::new();
        write_error(&mut out, "ERR a\r\nb");
        assert_eq!(&out[..], b"-ERR a  b\r\n");
        out.clear();
        write_protocol_error(&mut out, ProtocolError::ExpectedBulk(b'x'));
        assert_eq!(&out[..], b"-ERR Protocol error: expected '$', got 'x'\r\n");
    }
}
