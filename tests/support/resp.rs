//! A small RESP2/RESP3 reply parser (tests only need to cut replies apart and look at them).

/// One parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
    /// Any RESP3-only type (`%`, `~`, `>`, `|`, `_`, `#`, `,`, `(`, `=`, `!`), by its type byte.
    Resp3(char, Vec<Reply>),
}

impl Reply {
    /// The error text (without the leading `-`), if this is an error reply.
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// A bulk string as UTF-8 text (lossy).
    pub fn bulk_text(&self) -> Option<String> {
        match self {
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Parses one reply from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((reply, consumed)))` otherwise.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(line_end) = find_crlf(buf) else {
        return Ok(None);
    };
    let line = &buf[1..line_end];
    let after_line = line_end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    let int = || -> Result<i64, String> {
        text()
            .parse::<i64>()
            .map_err(|e| format!("bad integer {:?}: {e}", text()))
    };
    match buf[0] {
        b'+' => Ok(Some((Reply::Simple(text()), after_line))),
        b'-' => Ok(Some((Reply::Error(text()), after_line))),
        b':' => Ok(Some((Reply::Int(int()?), after_line))),
        b'$' => {
            let len = int()?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after_line)));
            }
            let len = len as usize;
            if buf.len() < after_line + len + 2 {
                return Ok(None);
            }
            if &buf[after_line + len..after_line + len + 2] != b"\r\n" {
                return Err("bulk string not terminated by CRLF".into());
            }
            let data = buf[after_line..after_line + len].to_vec();
            Ok(Some((Reply::Bulk(Some(data)), after_line + len + 2)))
        }
        b'*' => {
            let len = int()?;
            if len < 0 {
                return Ok(Some((Reply::Array(None), after_line)));
            }
            let mut items = Vec::with_capacity(len as usize);
            let mut pos = after_line;
            for _ in 0..len {
                match parse(&buf[pos..])? {
                    None => return Ok(None),
                    Some((item, used)) => {
                        items.push(item);
                        pos += used;
                    }
                }
            }
            Ok(Some((Reply::Array(Some(items)), pos)))
        }
        b'_' | b'#' | b',' | b'(' => Ok(Some((
            Reply::Resp3(buf[0] as char, vec![Reply::Simple(text())]),
            after_line,
        ))),
        b'=' | b'!' => {
            let len = int()? as usize;
            if buf.len() < after_line + len + 2 {
                return Ok(None);
            }
            let data = buf[after_line..after_line + len].to_vec();
            Ok(Some((
                Reply::Resp3(buf[0] as char, vec![Reply::Bulk(Some(data))]),
                after_line + len + 2,
            )))
        }
        b'%' | b'~' | b'>' | b'|' => {
            let len = int()?;
            let items_len = if matches!(buf[0], b'%' | b'|') {
                2 * len
            } else {
                len
            };
            let mut items = Vec::new();
            let mut pos = after_line;
            for _ in 0..items_len {
                match parse(&buf[pos..])? {
                    None => return Ok(None),
                    Some((item, used)) => {
                        items.push(item);
                        pos += used;
                    }
                }
            }
            if buf[0] == b'|' {
                // An attribute precedes the actual reply.
                return match parse(&buf[pos..])? {
                    None => Ok(None),
                    Some((_, used)) => Ok(Some((Reply::Resp3('|', items), pos + used))),
                };
            }
            Ok(Some((Reply::Resp3(buf[0] as char, items), pos)))
        }
        other => Err(format!("unexpected reply type byte {:?}", other as char)),
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}
