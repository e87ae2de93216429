//! Upstream credentials: turnout authenticates every endpoint connection before anything else
//! is sent on it (plain `AUTH password` and ACL `AUTH user password`), a refused password is
//! a clear error with a back-off instead of a reconnect per command, and the secrets never
//! appear in replies, logs, the admin API or metrics.

mod support;

use std::time::Duration;
use support::{RawClient, RedisServer, Turnout};

const LEGACY_PW: &str = "legacy-Secret-4c1d";
const ALICE_PW: &str = "alice-Secret-9e2f";

/// A client logged in to `server` with `auth` (AUTH arguments).
fn logged_in(server: &RedisServer, auth: &[&str]) -> RawClient {
    let mut c = RawClient::connect(&server.addr());
    let mut args = vec!["AUTH"];
    args.extend_from_slice(auth);
    c.expect_cmd(&args, b"+OK\r\n");
    c
}

/// legacy requires a password (the default user), new an ACL user (the default user off).
fn servers() -> (RedisServer, RedisServer) {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let mut c = RawClient::connect(&legacy.addr());
    c.expect_cmd(&["CONFIG", "SET", "requirepass", LEGACY_PW], b"+OK\r\n");
    let mut c = RawClient::connect(&new.addr());
    let password = format!(">{ALICE_PW}");
    c.expect_cmd(
        &[
            "ACL", "SETUSER", "alice", "on", &password, "~*", "&*", "+@all",
        ],
        b"+OK\r\n",
    );
    c.expect_cmd(&["ACL", "SETUSER", "default", "off"], b"+OK\r\n");
    (legacy, new)
}

fn body(legacy: &RedisServer, new: &RedisServer, password_file: &std::path::Path) -> String {
    format!(
        r#"[endpoints.legacy]
address = "{}"
password_env = "TURNOUT_TEST_LEGACY_PW"

[endpoints.new]
address = "{}"
username = "alice"
password_file = "{}"

[[namespaces]]
name = "web-cache"
prefixes = ["web:"]
target = "legacy"

[[namespaces]]
name = "token-cache"
prefixes = ["tok:"]
target = "new"

[default]
target = "legacy"
"#,
        legacy.addr(),
        new.addr(),
        password_file.display()
    )
}

#[test]
fn every_upstream_connection_is_authenticated_first() {
    let (legacy, new) = servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alice");
    std::fs::write(&file, format!("{ALICE_PW}\n")).expect("password file");
    let turnout = Turnout::builder(&body(&legacy, &new, &file))
        .env("TURNOUT_TEST_LEGACY_PW", LEGACY_PW)
        .start();
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "web:a", "on legacy"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:b", "on new"], b"+OK\r\n");
    c.expect_cmd(
        &["MGET", "web:a", "tok:b"],
        b"*2\r\n$9\r\non legacy\r\n$6\r\non new\r\n",
    );
    // Connection state goes after AUTH: SELECT and HELLO work on both.
    c.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:db1", "x"], b"+OK\r\n");
    let mut direct = logged_in(&new, &["alice", ALICE_PW]);
    direct.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    direct.expect_cmd(&["GET", "tok:db1"], b"$1\r\nx\r\n");
    let mut whoami = logged_in(&legacy, &[LEGACY_PW]);
    whoami.expect_cmd(&["GET", "web:a"], b"$9\r\non legacy\r\n");
    let ready = turnout.admin_get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    // Shadow lanes authenticate too.
    let put = turnout.admin_put(
        "/v1/routes/web-cache",
        r#"{"mode": "shadow", "shadow": "new", "reason": "auth"}"#,
        &[],
    );
    assert_eq!(put.status, 200, "{}", put.text());
    c.expect_cmd(&["SELECT", "0"], b"+OK\r\n");
    c.expect_cmd(&["GET", "web:a"], b"$9\r\non legacy\r\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let doc = turnout.admin_get("/v1/shadow").json();
        let row = doc["namespaces"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["namespace"] == "web-cache"))
            .cloned()
            .expect("web-cache row");
        if row["compared"].as_u64() == Some(1) {
            assert_eq!(row["counts"]["shadow_error"], 0, "{row}");
            break;
        }
        assert_eq!(row["counts"]["shadow_error"], 0, "{row}");
        assert!(std::time::Instant::now() < deadline, "{row}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_refused_password_is_a_clear_error_backed_off_and_never_shown() {
    let (legacy, new) = servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alice");
    let wrong = "Wrong-Password-77aa";
    std::fs::write(&file, wrong).expect("password file");
    let turnout = Turnout::builder(&body(&legacy, &new, &file))
        .env("TURNOUT_TEST_LEGACY_PW", LEGACY_PW)
        .start();
    let connections = |server: &RedisServer, auth: &[&str]| -> u64 {
        let mut c = logged_in(server, auth);
        let info = c.read_reply_after(&["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("total_connections_received")
    };
    let before = connections(&new, &["alice", ALICE_PW]);
    let mut c = turnout.raw();
    let reply = c.roundtrip(&["GET", "tok:x"]);
    let text = String::from_utf8_lossy(&reply).to_string();
    assert!(
        text.starts_with(
            "-ERR turnout: endpoint 'new' unavailable: authentication failed: WRONGPASS"
        ),
        "{text}"
    );
    // More commands within the back-off: refused at once, no new connection each time.
    for _ in 0..50 {
        let reply = c.roundtrip(&["GET", "tok:x"]);
        assert!(
            String::from_utf8_lossy(&reply).contains("authentication failed"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    let made = connections(&new, &["alice", ALICE_PW]) - before;
    // Ours (2 for counting) plus at most a couple of attempts by turnout.
    assert!(made <= 4, "{made} connections: a retry storm");
    // The other endpoint is unaffected.
    c.expect_cmd(&["SET", "web:ok", "1"], b"+OK\r\n");
    let ready = turnout.admin_get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        ready.text().contains("authentication failed"),
        "{}",
        ready.text()
    );
    // No secret anywhere: replies, logs, routes, metrics, readiness, config check output.
    let routes = turnout.admin_get("/v1/routes").text();
    let metrics = turnout.admin_get("/metrics").text();
    let logs = turnout.all_logs();
    for secret in [wrong, LEGACY_PW] {
        for (what, body) in [
            ("reply", text.as_str()),
            ("routes", routes.as_str()),
            ("metrics", metrics.as_str()),
            ("readyz", ready.text().as_str()),
            ("logs", logs.as_str()),
        ] {
            assert!(!body.contains(secret), "{what} shows a password:\n{body}");
        }
    }
}
