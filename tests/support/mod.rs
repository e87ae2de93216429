//! Test harness for turnout's integration tests.
//!
//! Every test starts its own real processes on free loopback ports, never fixed ones:
//!
//! - [`redis_server`]: a `redis-server` child on a free port (stop, kill, restart on the same port).
//! - [`turnout`]: a `turnout run` child with a generated config, its stderr captured to a file.
//! - [`raw`]: a byte-exact RESP client over `TcpStream` for asserting exact replies.
//! - [`resp`]: a small RESP2 reply parser used by the raw client.
//! - [`http`]: a tiny HTTP/1.1 client for the admin API.
//! - [`ports`]: free-port allocation.
//! - [`tls`]: test certificates, a TLS-only `redis-server`, a blocking TLS client.
//! - [`tls_cluster`]: a Redis Cluster over TLS with ACL users (`app`, `admin`), `default` off.
//! - [`sentinel`]: a primary, a replica and three sentinels (`redis-server --sentinel`).
//!
//! Each test binary compiles this module and uses a different part of it, hence the
//! `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod http;
pub mod ports;
pub mod raw;
pub mod redis_server;
pub mod resp;
pub mod sentinel;
pub mod tls;
pub mod tls_cluster;
pub mod turnout;

use std::time::{Duration, Instant};

pub use http::HttpResponse;
pub use raw::{cmd, show, RawClient};
pub use redis_server::RedisServer;
pub use resp::Reply;
pub use turnout::route_of;
pub use turnout::{run_cli, CliOutput, Turnout, TurnoutBuilder};

/// Polls `check` every `interval` until it returns true or `timeout` passes.
/// Returns whether the condition was met.
pub fn wait_until(timeout: Duration, interval: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval);
    }
}

/// The config body (everything but `[proxy]`, `[admin]` and `[state]`) used by most tests:
///
/// - `web-cache` (`web:`) → `legacy`
/// - `token-cache` (`tok:`, `session:`) → `new`
/// - `impact` (`impact:`) → `new`
/// - default → `default_target`
pub fn standard_body(legacy: &RedisServer, new: &RedisServer, default_target: &str) -> String {
    format!(
        r#"[endpoints.legacy]
address = "{legacy}"

[endpoints.new]
address = "{new}"

[[namespaces]]
name = "web-cache"
prefixes = ["web:"]
target = "legacy"

[[namespaces]]
name = "token-cache"
prefixes = ["tok:", "session:"]
target = "new"

[[namespaces]]
name = "impact"
prefixes = ["impact:"]
target = "new"

[default]
target = "{default_target}"
"#,
        legacy = legacy.addr(),
        new = new.addr(),
    )
}

/// Two backends and a turnout in front of them, configured with [`standard_body`].
pub struct Env {
    // Field order is drop order: stop the proxy before its backends.
    pub turnout: Turnout,
    pub legacy: RedisServer,
    pub new: RedisServer,
}

impl Env {
    /// Standard namespaces, default route → `legacy`.
    pub fn standard() -> Env {
        Env::with_default("legacy")
    }

    /// Standard namespaces, default route → `default_target`.
    pub fn with_default(default_target: &str) -> Env {
        Env::custom(|b| b, default_target)
    }

    /// Standard namespaces; `customize` may add proxy/admin options or env vars.
    pub fn custom(
        customize: impl FnOnce(TurnoutBuilder) -> TurnoutBuilder,
        default_target: &str,
    ) -> Env {
        let legacy = RedisServer::start();
        let new = RedisServer::start();
        let builder = Turnout::builder(&standard_body(&legacy, &new, default_target));
        let turnout = customize(builder).start();
        Env {
            turnout,
            legacy,
            new,
        }
    }
}
