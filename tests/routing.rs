//! Routing: keys land on their namespace's endpoint (checked on the backends directly), the
//! longest prefix wins, keyless commands go to the default route, multi-key commands within one
//! endpoint work and across endpoints are refused without side effects, SELECT follows the
//! session to every upstream.

mod support;

use support::{Env, RedisServer, Turnout};

#[test]
fn keys_land_on_the_endpoint_of_their_namespace() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let cases = [
        ("web:1", "w1", "legacy"),
        ("tok:1", "t1", "new"),
        ("session:1", "s1", "new"),
        ("impact:1", "i1", "new"),
        ("other:1", "o1", "legacy"),
        ("plainkey", "p1", "legacy"),
        // Prefixes match the start of the key only.
        ("xweb:1", "x1", "legacy"),
        ("my-tok:1", "m1", "legacy"),
    ];
    for (key, value, _) in cases {
        c.expect_cmd(&["SET", key, value], b"+OK\r\n");
    }
    for (key, value, endpoint) in cases {
        let (on, off) = match endpoint {
            "legacy" => (&env.legacy, &env.new),
            _ => (&env.new, &env.legacy),
        };
        assert_eq!(
            on.get(key).as_deref(),
            Some(value),
            "{key} should be on {endpoint}"
        );
        assert_eq!(off.get(key), None, "{key} should only be on {endpoint}");
        let expected = format!("${}\r\n{value}\r\n", value.len());
        c.expect_cmd(&["GET", key], expected.as_bytes());
    }
    // A key that exists only on the other endpoint is not visible through the proxy.
    env.new.set("web:only-on-new", "x");
    c.expect_cmd(&["GET", "web:only-on-new"], b"$-1\r\n");
    env.legacy.set("tok:only-on-legacy", "x");
    c.expect_cmd(&["GET", "tok:only-on-legacy"], b"$-1\r\n");
}

#[test]
fn longest_prefix_wins_whatever_the_declaration_order() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let body = format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.new]
address = "{}"

[[namespaces]]
name = "a"
prefixes = ["a:"]
target = "legacy"

[[namespaces]]
name = "a-b"
prefixes = ["a:b:"]
target = "new"

[[namespaces]]
name = "c-d"
prefixes = ["c:d:"]
target = "legacy"

[[namespaces]]
name = "c"
prefixes = ["c:"]
target = "new"

[default]
target = "legacy"
"#,
        legacy.addr(),
        new.addr()
    );
    let turnout = Turnout::start(&body);
    let mut c = turnout.raw();
    let cases = [
        ("a:x", "legacy"),
        ("a:b:x", "new"),
        ("a:bx", "legacy"),
        ("a:b", "legacy"),
        ("c:d:x", "legacy"),
        ("c:x", "new"),
        ("c:dx", "new"),
        ("x:a:b:1", "legacy"),
    ];
    for (key, _) in cases {
        c.expect_cmd(&["SET", key, key], b"+OK\r\n");
    }
    for (key, endpoint) in cases {
        let (on, off) = if endpoint == "legacy" {
            (&legacy, &new)
        } else {
            (&new, &legacy)
        };
        assert_eq!(
            on.get(key).as_deref(),
            Some(key),
            "{key} should be on {endpoint}"
        );
        assert_eq!(off.get(key), None, "{key} should only be on {endpoint}");
    }
}

#[test]
fn keyless_commands_go_to_the_default_route() {
    for default in ["legacy", "new"] {
        let env = Env::with_default(default);
        let (default_server, other) = if default == "legacy" {
            (&env.legacy, &env.new)
        } else {
            (&env.new, &env.legacy)
        };
        default_server.set("d1", "1");
        default_server.set("d2", "2");
        default_server.set("d3", "3");
        other.set("o1", "1");
        let mut c = env.turnout.raw();
        c.expect_cmd(&["PING"], b"+PONG\r\n");
        c.expect_cmd(&["PING", "hello"], b"$5\r\nhello\r\n");
        c.expect_cmd(&["ECHO", "turnout"], b"$7\r\nturnout\r\n");
        c.expect_cmd(&["DBSIZE"], b":3\r\n");
        let info = c.read_reply_after(&["INFO", "server"]);
        let port_line = format!("tcp_port:{}\r\n", default_server.port());
        assert!(
            info.contains(&port_line),
            "INFO via the proxy should come from the default endpoint ({default}): {info}"
        );
    }
}

#[test]
fn multi_key_commands_within_one_endpoint_work() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    // token-cache and impact are two namespaces, both on `new`.
    c.expect_cmd(&["MSET", "tok:m1", "a", "impact:m2", "b"], b"+OK\r\n");
    c.expect_cmd(
        &["MGET", "tok:m1", "impact:m2", "session:none"],
        b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n",
    );
    assert_eq!(env.new.get("tok:m1").as_deref(), Some("a"));
    assert_eq!(env.new.get("impact:m2").as_deref(), Some("b"));
    assert_eq!(env.legacy.dbsize(), 0);
    // web-cache and the default route are both on `legacy`.
    c.expect_cmd(&["MSET", "web:m3", "c", "zzz:m4", "d"], b"+OK\r\n");
    assert_eq!(env.legacy.get("web:m3").as_deref(), Some("c"));
    assert_eq!(env.legacy.get("zzz:m4").as_deref(), Some("d"));
    c.expect_cmd(&["EXISTS", "tok:m1", "impact:m2", "tok:none"], b":2\r\n");
    c.expect_cmd(&["DEL", "tok:m1", "impact:m2"], b":2\r\n");
    assert_eq!(env.new.dbsize(), 0);
    c.expect_cmd(&["RENAME", "web:m3", "zzz:m5"], b"+OK\r\n");
    assert_eq!(env.legacy.get("zzz:m5").as_deref(), Some("c"));
}

#[test]
fn multi_key_commands_across_endpoints_are_refused_and_run_nowhere() {
    let env = Env::standard();
    let mut c = env.turnout.raw();

    c.send_cmd(&["MSETNX", "web:x", "1", "tok:x", "2"]);
    let reply = String::from_utf8_lossy(&c.read_frame()).into_owned();
    assert_eq!(
        reply,
        "-CROSSNS keys of this command are routed to different endpoints (web-cache -> legacy, token-cache -> new)\r\n",
        "MSETNX web:x tok:x"
    );
    assert!(
        reply.ends_with("\r\n") && reply.lines().count() == 1,
        "{reply:?}"
    );
    assert_eq!(
        env.legacy.get("web:x"),
        None,
        "nothing may be written on legacy"
    );
    assert_eq!(env.new.get("tok:x"), None, "nothing may be written on new");

    c.expect_cmd(&["SET", "web:src", "v"], b"+OK\r\n");
    c.send_cmd(&["RENAME", "web:src", "tok:dst"]);
    let reply = String::from_utf8_lossy(&c.read_frame()).into_owned();
    assert!(
        reply.starts_with("-CROSSNS "),
        "RENAME web:src tok:dst: got {reply:?}"
    );
    assert_eq!(env.legacy.get("web:src").as_deref(), Some("v"));
    assert_eq!(env.new.get("tok:dst"), None);

    c.send_cmd(&["SUNIONSTORE", "tok:dest", "web:s1", "tok:s2"]);
    let reply = String::from_utf8_lossy(&c.read_frame()).into_owned();
    assert!(reply.starts_with("-CROSSNS "), "SUNIONSTORE: got {reply:?}");
    assert_eq!(env.new.dbsize(), 0);

    // The connection stays usable.
    c.expect_cmd(&["PING"], b"+PONG\r\n");
    c.expect_cmd(&["SET", "tok:after", "1"], b"+OK\r\n");
}

#[test]
fn select_applies_to_every_upstream_of_the_session() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    // SELECT before any upstream connection is used.
    c.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:s1", "a"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:s1", "b"], b"+OK\r\n");
    assert_eq!(env.legacy.get_db(1, "web:s1").as_deref(), Some("a"));
    assert_eq!(env.new.get_db(1, "tok:s1").as_deref(), Some("b"));
    assert_eq!(env.legacy.get_db(0, "web:s1"), None);
    assert_eq!(env.new.get_db(0, "tok:s1"), None);
    c.expect_cmd(&["GET", "web:s1"], b"$1\r\na\r\n");
    c.expect_cmd(&["GET", "tok:s1"], b"$1\r\nb\r\n");

    // SELECT again once both upstream connections are open.
    c.expect_cmd(&["SELECT", "2"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:s2", "c"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:s2", "d"], b"+OK\r\n");
    assert_eq!(env.new.get_db(2, "tok:s2").as_deref(), Some("c"));
    assert_eq!(env.legacy.get_db(2, "web:s2").as_deref(), Some("d"));
    c.expect_cmd(&["GET", "tok:s1"], b"$-1\r\n");
    c.expect_cmd(&["DBSIZE"], b":1\r\n");

    // Another session is unaffected: it starts in db 0.
    let mut other = env.turnout.raw();
    other.expect_cmd(&["GET", "web:s1"], b"$-1\r\n");
    other.expect_cmd(&["SET", "tok:s0", "e"], b"+OK\r\n");
    assert_eq!(env.new.get_db(0, "tok:s0").as_deref(), Some("e"));
}

#[test]
fn select_sent_by_a_client_library_at_connect_is_honoured() {
    let env = Env::standard();
    let url = format!("redis://{}/3", env.turnout.proxy_addr());
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut con = client
        .get_connection_with_timeout(std::time::Duration::from_secs(5))
        .expect("connect through turnout with db 3");
    let _: () = redis::cmd("SET")
        .arg("session:lib")
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let _: () = redis::cmd("SET")
        .arg("web:lib")
        .arg("w")
        .query(&mut con)
        .expect("SET");
    assert_eq!(env.new.get_db(3, "session:lib").as_deref(), Some("v"));
    assert_eq!(env.legacy.get_db(3, "web:lib").as_deref(), Some("w"));
}

/// SELECT 2, then a SELECT that Redis refuses, then traffic to the open upstream (legacy) and
/// to one opened afterwards (new): both must still use db 2.
fn refused_select_keeps_db(refused: &str) {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["SELECT", "2"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:r1", "a"], b"+OK\r\n");
    c.send_cmd(&["SELECT", refused]);
    let reply = String::from_utf8_lossy(&c.read_frame()).into_owned();
    assert!(reply.starts_with("-ERR"), "SELECT {refused}: {reply:?}");
    c.expect_cmd(&["SET", "web:r2", "b"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:r3", "c"], b"+OK\r\n");
    assert_eq!(
        env.legacy.get_db(2, "web:r2").as_deref(),
        Some("b"),
        "after a refused SELECT {refused}, web:r2 should be in legacy db 2"
    );
    let db0 = env.new.get_db(0, "tok:r3");
    assert_eq!(
        env.new.get_db(2, "tok:r3").as_deref(),
        Some("c"),
        "after a refused SELECT {refused}, tok:r3 should be in new db 2 (found in db 0: {db0:?})"
    );
}

#[test]
fn a_select_refused_as_out_of_range_does_not_change_the_session_database() {
    refused_select_keeps_db("99999");
}

#[test]
fn a_select_refused_as_not_a_number_does_not_change_the_session_database() {
    refused_select_keeps_db("notanumber");
}

#[test]
fn the_selected_database_follows_a_flip() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["SELECT", "5"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:before", "1"], b"+OK\r\n");
    env.turnout.flip("web-cache", "new", "db test");
    c.expect_cmd(&["SET", "web:after", "2"], b"+OK\r\n");
    assert_eq!(env.legacy.get_db(5, "web:before").as_deref(), Some("1"));
    assert_eq!(env.new.get_db(5, "web:after").as_deref(), Some("2"));
    assert_eq!(env.new.get_db(0, "web:after"), None);
    c.expect_cmd(&["GET", "web:before"], b"$-1\r\n");
    c.expect_cmd(&["GET", "web:after"], b"$1\r\n2\r\n");
}

#[test]
fn traffic_follows_a_flip_on_an_open_connection() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["SET", "web:k", "old"], b"+OK\r\n");
    env.turnout.flip("web-cache", "new", "switch");
    c.expect_cmd(&["GET", "web:k"], b"$-1\r\n");
    c.expect_cmd(&["SET", "web:k", "new"], b"+OK\r\n");
    env.turnout.flip("web-cache", "legacy", "switch back");
    c.expect_cmd(&["GET", "web:k"], b"$3\r\nold\r\n");
    assert_eq!(env.new.get("web:k").as_deref(), Some("new"));
    assert_eq!(env.legacy.get("web:k").as_deref(), Some("old"));
}

/// `new` has only 2 databases, so replaying the session's `SELECT 5` there fails. The command
/// that opened the connection must then not run in db 0 as if nothing happened.
#[test]
fn a_failed_select_replay_does_not_run_the_command_in_the_wrong_database() {
    let legacy = RedisServer::start();
    let new = RedisServer::start_with_args(&["--databases", "2"]);
    let turnout = Turnout::start(&support::standard_body(&legacy, &new, "legacy"));
    let mut c = turnout.raw();
    c.expect_cmd(&["SELECT", "5"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:db5", "a"], b"+OK\r\n");
    assert_eq!(legacy.get_db(5, "web:db5").as_deref(), Some("a"));
    c.send_cmd(&["SET", "tok:db5", "b"]);
    let reply = c.read_frame();
    let db0 = new.get_db(0, "tok:db5");
    assert!(
        reply.starts_with(b"-ERR"),
        "SET tok:db5 with SELECT 5 impossible on `new`: expected an error reply, got {} \
         (tok:db5 in new db 0: {db0:?})",
        support::show(&reply)
    );
    assert_eq!(db0, None, "the write must not land in db 0 of `new`");
    c.expect_cmd(&["SET", "web:db5b", "c"], b"+OK\r\n");
    assert_eq!(legacy.get_db(5, "web:db5b").as_deref(), Some("c"));
}

/// Both upstreams are open; `SELECT 5` succeeds on `legacy` but `new` has only 2 databases.
/// Like a refused SELECT on Redis, the client must end up with no endpoint switched: a session
/// where web: keys go to db 5 and tok: keys to db 0 after the client was told "ERR" is a
/// split-brain the client cannot see.
#[test]
fn a_select_refused_by_one_endpoint_switches_no_endpoint() {
    let legacy = RedisServer::start();
    let new = RedisServer::start_with_args(&["--databases", "2"]);
    let turnout = Turnout::start(&support::standard_body(&legacy, &new, "legacy"));
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "web:a", "1"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:a", "1"], b"+OK\r\n");
    c.send_cmd(&["SELECT", "5"]);
    let reply = c.read_frame();
    if reply.starts_with(b"-ERR") {
        // Refused: every endpoint must still be on db 0.
        c.expect_cmd(&["SET", "web:after", "2"], b"+OK\r\n");
        assert_eq!(
            legacy.get_db(5, "web:after"),
            None,
            "the client was told SELECT 5 failed, yet web: keys now go to legacy db 5"
        );
        assert_eq!(legacy.get_db(0, "web:after").as_deref(), Some("2"));
    } else {
        // Accepted: a tok: command must not silently run in db 0 of `new`.
        assert_eq!(support::show(&reply), support::show(b"+OK\r\n"));
        c.send_cmd(&["SET", "tok:after", "2"]);
        let reply = c.read_frame();
        assert!(
            reply.starts_with(b"-ERR"),
            "SELECT 5 was accepted but `new` cannot select db 5; SET tok:after got {}",
            support::show(&reply)
        );
        assert_eq!(new.get_db(0, "tok:after"), None);
    }
}

#[test]
fn hello_3_applies_to_every_upstream_of_the_session() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    env.legacy.command(&["HSET", "web:h", "f", "v"]);
    env.new.command(&["HSET", "tok:h", "f", "v"]);
    c.expect_cmd(&["GET", "web:x"], b"$-1\r\n"); // legacy upstream open before HELLO
    c.send_cmd(&["HELLO", "3"]);
    let hello = c.read_frame();
    assert!(
        hello.starts_with(b"%"),
        "HELLO 3: {}",
        support::show(&hello)
    );
    let map: &[u8] = b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n";
    c.expect_cmd(&["HGETALL", "web:h"], map);
    c.expect_cmd(&["HGETALL", "tok:h"], map); // `new` opened after HELLO
    c.expect_cmd(&["GET", "tok:none"], b"_\r\n");
}
