//! Reading a cluster node's redirect replies.

use crate::upstream::cluster::slots;
use bytes::{Bytes, BytesMut};

/// `-MOVED slot host:port` or `-ASK slot host:port`, answered by the node at `from`: whether
/// it is ASK, the slot, the address to go to.
///
/// An empty host (`-MOVED 3999 :6381`, what Redis 7 sends with
/// `cluster-preferred-endpoint-type unknown-endpoint`) means the host the client used to
/// reach the node that answered: `from`'s.
pub fn parse_redirect(reply: &[u8], from: &str) -> Option<(bool, u16, String)> {
    let (ask, rest) = if let Some(rest) = reply.strip_prefix(b"-MOVED ") {
        (false, rest)
    } else {
        (true, reply.strip_prefix(b"-ASK ")?)
    };
    let text = std::str::from_utf8(rest.strip_suffix(b"\r\n")?).ok()?;
    let (slot, address) = text.split_once(' ')?;
    let slot: u16 = slot
        .parse()
        .ok()
        .filter(|s| usize::from(*s) < slots::SLOTS)?;
    if address.is_empty() {
        return None;
    }
    let address = if address.starts_with(':') {
        let host = from.rsplit_once(':').map_or(from, |(host, _)| host);
        format!("{host}{address}")
    } else {
        address.to_string()
    };
    Some((ask, slot, address))
}

/// The reply for a command still redirected after [`super::MAX_REDIRECTS`]: a turnout error
/// naming the loop and the last redirect, rather than a `-MOVED` a non-cluster client cannot
/// use.
pub fn redirect_loop(endpoint: &str, slot: u16, last: &[u8]) -> Bytes {
    let last = String::from_utf8_lossy(last.strip_prefix(b"-").unwrap_or(last));
    let text = format!(
        "ERR turnout: endpoint '{endpoint}': redirect loop on slot {slot}: gave up after {} redirects, last -{}",
        super::MAX_REDIRECTS,
        last.trim_end()
    );
    let mut out = BytesMut::new();
    crate::resp::write_error(&mut out, &text);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "10.1.2.3:7000";

    #[test]
    fn redirects_parse() {
        assert_eq!(
            parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n", FROM),
            Some((false, 3999, "127.0.0.1:6381".to_string()))
        );
        assert_eq!(
            parse_redirect(b"-ASK 1 10.0.0.2:7000\r\n", FROM),
            Some((true, 1, "10.0.0.2:7000".to_string()))
        );
        assert_eq!(parse_redirect(b"-MOVED 99999 h:1\r\n", FROM), None);
        assert_eq!(parse_redirect(b"-MOVED 1 \r\n", FROM), None);
        assert_eq!(parse_redirect(b"-ERR MOVED\r\n", FROM), None);
        assert_eq!(parse_redirect(b"+OK\r\n", FROM), None);
    }

    #[test]
    fn an_empty_host_is_the_host_of_the_node_that_answered() {
        assert_eq!(
            parse_redirect(b"-MOVED 3999 :6381\r\n", FROM),
            Some((false, 3999, "10.1.2.3:6381".to_string()))
        );
        assert_eq!(
            parse_redirect(b"-ASK 12 :7001\r\n", "redis-a.internal:7000"),
            Some((true, 12, "redis-a.internal:7001".to_string()))
        );
        assert_eq!(
            parse_redirect(b"-MOVED 5 :7002\r\n", "[::1]:7000"),
            Some((false, 5, "[::1]:7002".to_string()))
        );
    }

    #[test]
    fn a_redirect_loop_names_the_slot_and_the_last_redirect() {
        assert_eq!(
            &redirect_loop("new", 12, b"-MOVED 12 127.0.0.1:7000\r\n")[..],
            b"-ERR turnout: endpoint 'new': redirect loop on slot 12: gave up after 5 redirects, last -MOVED 12 127.0.0.1:7000\r\n"
        );
    }
}
