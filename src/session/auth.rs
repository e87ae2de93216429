//! Clients authenticating to turnout itself: AUTH and HELLO … AUTH, checked against
//! `[proxy.auth]`. Credentials are never forwarded to an endpoint and never logged.

use super::Session;
use crate::metrics::{self, ErrorKind};
use bytes::{Bytes, BytesMut};
use std::ops::Range;
use std::time::Instant;

const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
/// Redis's reply to a command before authentication.
pub const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
/// Redis's reply to HELLO without AUTH before authentication.
pub const NOAUTH_HELLO: &[u8] = b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n";

/// What HELLO's arguments say about authentication.
pub enum HelloAuth {
    /// No AUTH option.
    Absent,
    /// AUTH with good credentials: forward this frame, which has the option removed.
    Accepted(Bytes),
    /// AUTH with bad credentials, or a malformed AUTH option.
    Refused,
}

impl Session {
    /// AUTH [username] password.
    pub(super) fn auth_command(&mut self, frame: &[u8], args: &[Range<usize>], now: Instant) {
        let arg = |i: usize| &frame[args[i].clone()];
        let reply: &'static [u8] = match args.len() {
            2 if self.shared.config.proxy.auth.is_none() => {
                b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n"
            }
            2 if self.verdict(b"default", arg(1)) => b"+OK\r\n",
            3 if self.verdict(arg(1), arg(2)) => b"+OK\r\n",
            2 | 3 => WRONGPASS,
            1 => b"-ERR wrong number of arguments for 'auth' command\r\n",
            _ => b"-ERR syntax error\r\n",
        };
        self.local(Bytes::from_static(reply), now);
    }

    /// Checks credentials; on success the session is authenticated.
    fn verdict(&mut self, user: &[u8], password: &[u8]) -> bool {
        let ok = match &self.shared.config.proxy.auth {
            Some(auth) => auth.check(user, password),
            // Without [proxy.auth] every user is "nopass", as Redis's default user.
            None => true,
        };
        if ok {
            self.authenticated = true;
        } else {
            metrics::error(ErrorKind::Auth);
            tracing::info!("client authentication failed");
        }
        ok
    }

    /// Looks for `AUTH user pass` in a HELLO request, checks it, and rewrites the request
    /// without it.
    pub(super) fn hello_auth(&mut self, frame: &[u8], args: &[Range<usize>]) -> HelloAuth {
        let Some(at) = args
            .iter()
            .skip(2)
            .position(|r| frame[r.clone()].eq_ignore_ascii_case(b"AUTH"))
        else {
            return HelloAuth::Absent;
        };
        let at = at + 2;
        if at + 2 >= args.len() {
            return HelloAuth::Refused;
        }
        let (user, password) = (&frame[args[at + 1].clone()], &frame[args[at + 2].clone()]);
        if !self.verdict(user, password) {
            return HelloAuth::Refused;
        }
        let kept: Vec<&Range<usize>> = args
            .iter()
            .enumerate()
            .filter(|(i, _)| !(at..at + 3).contains(i))
            .map(|(_, r)| r)
            .collect();
        let mut out = BytesMut::with_capacity(frame.len());
        out.extend_from_slice(format!("*{}\r\n", kept.len()).as_bytes());
        for r in kept {
            out.extend_from_slice(format!("${}\r\n", r.len()).as_bytes());
            out.extend_from_slice(&frame[r.clone()]);
            out.extend_from_slice(b"\r\n");
        }
        HelloAuth::Accepted(out.freeze())
    }
}

/// The reply for a refused HELLO … AUTH.
pub fn wrongpass() -> Bytes {
    Bytes::from_static(WRONGPASS)
}
