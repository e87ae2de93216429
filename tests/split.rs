//! MGET, MSET, DEL, UNLINK, EXISTS and TOUCH whose keys live on different endpoints are split
//! per endpoint and their replies merged in the client's key order; every other multi-key
//! command spanning endpoints is refused before anything runs.

mod support;

use support::Env;

#[test]
fn mget_across_endpoints_answers_in_key_order() {
    let env = Env::standard();
    env.legacy.set("web:a", "1");
    env.legacy.set("web:c", "3");
    env.new.set("tok:b", "2");
    env.new.set("impact:d", "4");
    let mut c = env.turnout.raw();
    c.expect_cmd(
        &[
            "MGET",
            "web:a",
            "tok:b",
            "web:missing",
            "web:c",
            "impact:d",
            "tok:missing",
            "web:a",
        ],
        b"*7\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n$1\r\n3\r\n$1\r\n4\r\n$-1\r\n$1\r\n1\r\n",
    );
    // Still pipelined in order with ordinary commands around it.
    c.send_cmd(&["GET", "tok:b"]);
    c.send_cmd(&["MGET", "tok:b", "web:a"]);
    c.send_cmd(&["GET", "web:c"]);
    assert_eq!(c.read_frame(), b"$1\r\n2\r\n");
    assert_eq!(c.read_frame(), b"*2\r\n$1\r\n2\r\n$1\r\n1\r\n");
    assert_eq!(c.read_frame(), b"$1\r\n3\r\n");
}

#[test]
fn mset_across_endpoints_writes_each_key_where_it_belongs() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(
        &[
            "MSET",
            "web:x",
            "1",
            "tok:y",
            "2",
            "web:z",
            "",
            "session:w",
            "4",
        ],
        b"+OK\r\n",
    );
    assert_eq!(env.legacy.get("web:x").as_deref(), Some("1"));
    assert_eq!(env.legacy.get("web:z").as_deref(), Some(""));
    assert_eq!(env.new.get("tok:y").as_deref(), Some("2"));
    assert_eq!(env.new.get("session:w").as_deref(), Some("4"));
    assert_eq!(env.new.get("web:x"), None);
    assert_eq!(env.legacy.get("tok:y"), None);
}

#[test]
fn counting_commands_across_endpoints_add_up() {
    let env = Env::standard();
    for key in ["web:1", "web:2"] {
        env.legacy.set(key, "v");
    }
    for key in ["tok:1", "impact:1"] {
        env.new.set(key, "v");
    }
    let mut c = env.turnout.raw();
    c.expect_cmd(
        &["EXISTS", "web:1", "tok:1", "web:1", "tok:none", "impact:1"],
        b":4\r\n",
    );
    c.expect_cmd(&["TOUCH", "web:1", "tok:1", "web:none"], b":2\r\n");
    c.expect_cmd(&["DEL", "web:1", "tok:1", "tok:none"], b":2\r\n");
    c.expect_cmd(&["UNLINK", "web:2", "impact:1"], b":2\r\n");
    assert_eq!(env.legacy.dbsize(), 0);
    assert_eq!(env.new.dbsize(), 0);
}

#[test]
fn a_split_follows_a_flip() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["MSET", "web:f", "old", "tok:f", "t"], b"+OK\r\n");
    env.turnout.flip("web-cache", "new", "split test");
    // Now both keys are on `new`: the command goes there whole.
    c.expect_cmd(&["MGET", "web:f", "tok:f"], b"*2\r\n$-1\r\n$1\r\nt\r\n");
    c.expect_cmd(&["MSET", "web:f", "new", "tok:f", "u"], b"+OK\r\n");
    assert_eq!(env.new.get("web:f").as_deref(), Some("new"));
    assert_eq!(env.legacy.get("web:f").as_deref(), Some("old"));
}

#[test]
fn a_part_on_an_unavailable_endpoint_fails_the_whole_reply() {
    let mut env = Env::standard();
    env.legacy.set("web:a", "1");
    env.new.stop();
    let mut c = env.turnout.raw();
    c.send_cmd(&["MGET", "web:a", "tok:b"]);
    let reply = String::from_utf8_lossy(&c.read_frame()).into_owned();
    assert!(
        reply.starts_with("-ERR turnout: endpoint 'new' unavailable: "),
        "{reply:?}"
    );
    c.expect_cmd(&["GET", "web:a"], b"$1\r\n1\r\n");
}

/// An MSET with a key and no value is Redis's arity error, wherever its keys live: nothing
/// of it may run (a split must not drop the unpaired key and write the rest).
#[test]
fn mset_with_an_odd_argument_count_is_refused_whole() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(
        &["MSET", "web:a", "1", "tok:b"],
        b"-ERR wrong number of arguments for 'mset' command\r\n",
    );
    c.expect_cmd(&["GET", "web:a"], b"$-1\r\n");
    c.expect_cmd(
        &["MSET", "web:a", "1", "tok:b", "2", "web:c"],
        b"-ERR wrong number of arguments for 'mset' command\r\n",
    );
    assert_eq!(env.legacy.get("web:a"), None);
    assert_eq!(env.new.get("tok:b"), None);
}
