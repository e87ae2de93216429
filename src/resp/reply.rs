//! Finding where one upstream reply ends, incrementally.
//!
//! A [`ReplyScan`] walks a reply element by element and can stop anywhere: when the buffer
//! runs out it remembers how many elements (and how many bytes of the current bulk string)
//! are still owed. The session forwards the bytes scanned so far and resumes on the next read,
//! so a 100 MiB reply costs one buffer of memory, not 100 MiB. RESP2 and RESP3 are both
//! covered; attributes (`|`) count as part of the reply they precede.

use super::{find_crlf, parse_int, ProtocolError};

/// Longest reply header line accepted (simple strings and errors included).
pub const MAX_REPLY_LINE: usize = 1024 * 1024;
/// Most elements one aggregate may announce (Redis's own aggregates stay far below; a larger
/// count can only come from a broken or hostile endpoint).
const MAX_AGGREGATE: i64 = 1 << 32;
/// Most elements a scan may still owe, nested aggregates included.
const MAX_PENDING_ELEMENTS: u64 = 1 << 40;

/// Incremental state of one reply being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyScan {
    /// Elements still to scan, the current one included.
    remaining: u64,
    /// Bytes of the current bulk payload (CRLF included) still to pass.
    bulk_left: u64,
    /// Whether the top-level frame is a RESP3 push (`>`), which answers no request.
    push: Option<bool>,
}

impl Default for ReplyScan {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplyScan {
    /// A scan positioned at the start of a reply.
    pub const fn new() -> Self {
        ReplyScan {
            remaining: 1,
            bulk_left: 0,
            push: None,
        }
    }

    /// Whether the reply has been scanned to its end.
    pub fn is_done(&self) -> bool {
        self.remaining == 0 && self.bulk_left == 0
    }

    /// Bytes of the bulk payload being scanned (its CRLF included) that have not arrived yet;
    /// 0 between elements. A reader streaming a large value can make room for all of it.
    pub fn bulk_left(&self) -> u64 {
        self.bulk_left
    }

    /// Whether the top-level frame is a push frame (known once its first byte was scanned).
    pub fn is_push(&self) -> bool {
        self.push == Some(true)
    }

    /// Scans as much of `buf` as forms whole elements (or bulk payload) of this reply and
    /// returns how many bytes belong to it. Stops at the reply's end; call [`is_done`].
    ///
    /// # Errors
    /// [`ProtocolError`] when the bytes are not RESP.
    ///
    /// [`is_done`]: ReplyScan::is_done
    pub fn advance(&mut self, buf: &[u8]) -> Result<usize, ProtocolError> {
        let mut pos = 0;
        loop {
            if self.bulk_left > 0 {
                let take = self.bulk_left.min((buf.len() - pos) as u64);
                pos += take as usize;
                self.bulk_left -= take;
                if self.bulk_left > 0 {
                    return Ok(pos);
                }
            }
            if self.remaining == 0 {
                return Ok(pos);
            }
            let rest = &buf[pos..];
            let Some(&kind) = rest.first() else {
                return Ok(pos);
            };
            let Some(cr) = find_crlf(rest) else {
                return if rest.len() > MAX_REPLY_LINE {
                    Err(ProtocolError::LineTooLong)
                } else {
                    Ok(pos)
                };
            };
            if cr == 0 {
                return Err(ProtocolError::ReplyType(kind));
            }
            if self.push.is_none() {
                self.push = Some(kind == b'>');
            }
            let header = &rest[1..cr];
            pos += cr + 2;
            self.remaining -= 1;
            match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {}
                b'$' | b'!' | b'=' => {
                    if header.first() == Some(&b'?') {
                        return Err(ProtocolError::Streamed);
                    }
                    match parse_int(header) {
                        Some(-1) if kind == b'$' => {}
                        Some(n) if n >= 0 => self.bulk_left = n as u64 + 2,
                        _ => return Err(ProtocolError::BulkLength),
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    if header.first() == Some(&b'?') {
                        return Err(ProtocolError::Streamed);
                    }
                    let n = match parse_int(header) {
                        Some(-1) if kind == b'*' => 0,
                        Some(n) if (0..=MAX_AGGREGATE).contains(&n) => n as u64,
                        _ => return Err(ProtocolError::MultibulkLength),
                    };
                    let elements = match kind {
                        b'%' => n * 2,
                        // An attribute map is followed by the value it annotates.
                        b'|' => n * 2 + 1,
                        _ => n,
                    };
                    self.remaining = self
                        .remaining
                        .checked_add(elements)
                        .filter(|r| *r <= MAX_PENDING_ELEMENTS)
                        .ok_or(ProtocolError::MultibulkLength)?;
                }
                other => return Err(ProtocolError::ReplyType(other)),
            }
        }
    }
}

/// The payload of a complete bulk string reply (`None` for nil or another type).
pub fn bulk(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"$")?;
    let end = find_crlf(rest)?;
    let len = usize::try_from(parse_int(&rest[..end])?).ok()?;
    rest.get(end + 2..end + 2 + len)
}

/// The elements of a complete top-level array or set reply (`None` for nil, another type,
/// or an incomplete reply).
pub fn elements(reply: &[u8]) -> Option<Vec<&[u8]>> {
    let rest = reply
        .strip_prefix(b"*")
        .or_else(|| reply.strip_prefix(b"~"))?;
    let end = find_crlf(rest)?;
    let count = usize::try_from(parse_int(&rest[..end])?).ok()?;
    let mut pos = 1 + end + 2;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = complete_len(reply.get(pos..)?).ok()??;
        out.push(&reply[pos..pos + len]);
        pos += len;
    }
    Some(out)
}

/// The length of the complete reply at the start of `buf`, or `None` if it is not all there.
///
/// # Errors
/// [`ProtocolError`] when the bytes are not RESP.
pub fn complete_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let mut scan = ReplyScan::new();
    let len = scan.advance(buf)?;
    Ok(scan.is_done().then_some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: [&[u8]; 9] = [
        b"+OK\r\n",
        b"-ERR wrong\r\n",
        b":42\r\n",
        b"$5\r\nhello\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+x\r\n",
        b"$0\r\n\r\n",
        b"*0\r\n",
    ];

    const RESP3: [&[u8]; 6] = [
        b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n",
        b"~2\r\n,1.5\r\n#t\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$2\r\nhi\r\n",
        b"=7\r\ntxt:abc\r\n",
        b"!3\r\nERR\r\n",
        b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
    ];

    #[test]
    fn a_partly_scanned_bulk_tells_how_many_bytes_are_still_to_come() {
        let mut scan = ReplyScan::new();
        assert_eq!(scan.bulk_left(), 0);
        assert_eq!(scan.advance(b"$10\r\nabcd").expect("valid"), 9);
        assert_eq!(scan.bulk_left(), 8, "6 payload bytes and the CRLF");
        assert_eq!(scan.advance(b"efghij\r").expect("valid"), 7);
        assert_eq!(scan.bulk_left(), 1);
        assert_eq!(scan.advance(b"\n").expect("valid"), 1);
        assert!(scan.is_done());
        assert_eq!(scan.bulk_left(), 0);
        let mut array = ReplyScan::new();
        assert_eq!(array.advance(b"*2\r\n$3\r\nab").expect("valid"), 10);
        assert_eq!(array.bulk_left(), 3);
        assert_eq!(array.advance(b"c\r\n$-1\r\n").expect("valid"), 8);
        assert!(array.is_done());
    }

    #[test]
    fn complete_replies_agree_with_redis_protocol_at_every_split() {
        for sample in SAMPLES {
            for cut in 0..=sample.len() {
                let ours = complete_len(&sample[..cut]).expect("valid prefix");
                let reference = redis_protocol::resp2::decode::decode_range(&sample[..cut])
                    .expect("valid prefix")
                    .map(|(_, amt)| amt);
                assert_eq!(ours, reference, "sample {sample:?} cut {cut}");
            }
        }
        for sample in RESP3 {
            for cut in 0..=sample.len() {
                let ours = complete_len(&sample[..cut]).expect("valid prefix");
                let reference =
                    redis_protocol::resp3::decode::complete::decode_range(&sample[..cut])
                        .expect("valid prefix")
                        .map(|(_, amt)| amt);
                assert_eq!(ours, reference, "sample {sample:?} cut {cut}");
            }
        }
    }

    #[test]
    fn scanning_resumes_across_any_split() {
        for sample in SAMPLES.iter().chain(RESP3.iter()) {
            for cut in 0..=sample.len() {
                let mut scan = ReplyScan::new();
                let first = scan.advance(&sample[..cut]).expect("valid");
                let second = scan.advance(&sample[first..]).expect("valid");
                assert!(scan.is_done(), "sample {sample:?} cut {cut}");
                assert_eq!(first + second, sample.len());
            }
        }
    }

    #[test]
    fn the_scan_stops_at_the_end_of_one_reply() {
        assert_eq!(complete_len(b"+OK\r\n:1\r\n"), Ok(Some(5)));
        let mut scan = ReplyScan::new();
        assert_eq!(scan.advance(b">1\r\n+x\r\n+OK\r\n"), Ok(8));
        assert!(scan.is_done() && scan.is_push());
    }

    #[test]
    fn large_bulk_payloads_pass_through_in_pieces() {
        let mut scan = ReplyScan::new();
        assert_eq!(scan.advance(b"$10\r\n0123"), Ok(9));
        assert!(!scan.is_done());
        assert_eq!(scan.advance(b"456789\r"), Ok(7));
        assert_eq!(scan.advance(b"\n+next\r\n"), Ok(1));
        assert!(scan.is_done());
    }

    #[test]
    fn a_blank_line_is_an_error_not_a_panic() {
        assert_eq!(complete_len(b"\r\n"), Err(ProtocolError::ReplyType(b'\r')));
        assert_eq!(
            complete_len(b"*1\r\n\r\n"),
            Err(ProtocolError::ReplyType(b'\r'))
        );
    }

    #[test]
    fn absurd_nested_lengths_are_errors_not_overflows() {
        let nested = b"*999999999999999999\r\n".repeat(30);
        assert_eq!(complete_len(&nested), Err(ProtocolError::MultibulkLength));
        assert_eq!(
            complete_len(b"%999999999999999999\r\n"),
            Err(ProtocolError::MultibulkLength)
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(complete_len(b"?\r\n"), Err(ProtocolError::ReplyType(b'?')));
        assert_eq!(complete_len(b"$x\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(complete_len(b"*?\r\n"), Err(ProtocolError::Streamed));
        assert_eq!(
            complete_len(b"%-1\r\n"),
            Err(ProtocolError::MultibulkLength)
        );
    }
}
