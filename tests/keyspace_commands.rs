//! Keyspace-wide and admin commands follow the README's policy table: KEYS and SCAN go where
//! their pattern's literal prefix points, other keyless commands to the default route, and
//! commands that would reconfigure a shared endpoint are refused.

mod support;

use support::Env;

#[test]
fn keys_and_scan_follow_the_literal_prefix_of_their_pattern() {
    let env = Env::standard();
    env.legacy.set("web:1", "a");
    env.legacy.set("plain", "p");
    env.new.set("tok:1", "b");
    env.new.set("web:stale", "not routed here");
    let mut c = env.turnout.raw();
    c.expect_cmd(&["KEYS", "web:*"], b"*1\r\n$5\r\nweb:1\r\n");
    c.expect_cmd(&["KEYS", "tok:?"], b"*1\r\n$5\r\ntok:1\r\n");
    c.expect_cmd(&["KEYS", "pl*"], b"*1\r\n$5\r\nplain\r\n");
    c.expect_cmd(
        &["SCAN", "0", "MATCH", "tok:*", "COUNT", "1000"],
        b"*2\r\n$1\r\n0\r\n*1\r\n$5\r\ntok:1\r\n",
    );
    c.expect_cmd(
        &["SCAN", "0", "COUNT", "1000", "MATCH", "web:1"],
        b"*2\r\n$1\r\n0\r\n*1\r\n$5\r\nweb:1\r\n",
    );
    env.turnout.flip("web-cache", "new", "keys test");
    c.expect_cmd(&["KEYS", "web:*"], b"*1\r\n$9\r\nweb:stale\r\n");
}

#[test]
fn commands_that_reconfigure_an_endpoint_are_refused() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    for args in [
        &["REPLICAOF", "127.0.0.1", "1"][..],
        &["SLAVEOF", "127.0.0.1", "1"],
        &["FAILOVER"],
        &["SHUTDOWN", "NOSAVE"],
        &["MONITOR"],
        &["FLUSHALL"],
        &["DEBUG", "SLEEP", "0"],
    ] {
        c.send_cmd(args);
        let reply = c.read_frame();
        assert!(
            reply.starts_with(b"-ERR turnout: "),
            "{args:?}: {}",
            support::show(&reply)
        );
    }
    c.expect_cmd(&["PING"], b"+PONG\r\n");
    let role = env.legacy.command(&["ROLE"]);
    assert!(
        matches!(&role, support::resp::Reply::Array(Some(parts)) if matches!(parts.first(), Some(support::resp::Reply::Bulk(Some(r))) if r == b"master")),
        "legacy must still be a primary: {role:?}"
    );
}
