//! MULTI/EXEC/DISCARD/WATCH run whole on one endpoint, with Redis's exact replies; a queued
//! command whose keys lead elsewhere aborts the transaction; a flip during a transaction
//! takes effect after it.

mod support;

use support::Env;

#[test]
fn a_transaction_runs_on_the_endpoint_of_its_keys() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:a", "1"], b"+QUEUED\r\n");
    c.expect_cmd(&["INCR", "tok:b"], b"+QUEUED\r\n");
    c.expect_cmd(&["PING"], b"+QUEUED\r\n");
    c.expect_cmd(&["EXEC"], b"*3\r\n+OK\r\n:1\r\n+PONG\r\n");
    assert_eq!(env.new.get("tok:a").as_deref(), Some("1"));
    assert_eq!(env.new.get("tok:b").as_deref(), Some("1"));
    assert_eq!(env.legacy.dbsize(), 0);
}

#[test]
fn a_pipelined_transaction_keeps_every_reply_in_order() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let commands: [&[&str]; 7] = [
        &["SET", "web:before", "x"],
        &["MULTI"],
        &["SET", "tok:p", "1"],
        &["GET", "tok:p"],
        &["EXEC"],
        &["GET", "web:before"],
        &["GET", "tok:p"],
    ];
    for command in commands {
        c.send_cmd(command);
    }
    let expected: [&[u8]; 7] = [
        b"+OK\r\n",
        b"+OK\r\n",
        b"+QUEUED\r\n",
        b"+QUEUED\r\n",
        b"*2\r\n+OK\r\n$1\r\n1\r\n",
        b"$1\r\nx\r\n",
        b"$1\r\n1\r\n",
    ];
    for (command, reply) in commands.iter().zip(expected) {
        assert_eq!(
            support::show(&c.read_frame()),
            support::show(reply),
            "{command:?}"
        );
    }
}

#[test]
fn a_queued_command_for_another_endpoint_aborts_the_transaction() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:a", "1"], b"+QUEUED\r\n");
    c.send_cmd(&["SET", "tok:a", "1"]);
    let reply = String::from_utf8_lossy(&c.read_frame()).into_owned();
    assert_eq!(
        reply,
        "-CROSSNS this command's keys are routed to endpoint 'new' but the transaction runs on 'legacy'\r\n"
    );
    c.expect_cmd(
        &["EXEC"],
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    assert_eq!(env.legacy.get("web:a"), None);
    assert_eq!(env.new.get("tok:a"), None);
    // The connection is usable and out of the transaction.
    c.expect_cmd(&["SET", "tok:a", "2"], b"+OK\r\n");
    assert_eq!(env.new.get("tok:a").as_deref(), Some("2"));
}

#[test]
fn a_flip_during_a_transaction_takes_effect_after_exec() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:x", "1"], b"+QUEUED\r\n");
    env.turnout.flip("web-cache", "new", "flip mid-transaction");
    c.expect_cmd(&["SET", "web:y", "2"], b"+QUEUED\r\n");
    c.expect_cmd(&["EXEC"], b"*2\r\n+OK\r\n+OK\r\n");
    assert_eq!(env.legacy.get("web:x").as_deref(), Some("1"));
    assert_eq!(env.legacy.get("web:y").as_deref(), Some("2"));
    c.expect_cmd(&["SET", "web:z", "3"], b"+OK\r\n");
    assert_eq!(env.new.get("web:z").as_deref(), Some("3"));
}

#[test]
fn watch_pins_its_endpoint_and_a_changed_key_fails_exec() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["WATCH", "tok:w"], b"+OK\r\n");
    env.new.set("tok:w", "changed elsewhere");
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:w", "mine"], b"+QUEUED\r\n");
    c.expect_cmd(&["EXEC"], b"*-1\r\n");
    assert_eq!(env.new.get("tok:w").as_deref(), Some("changed elsewhere"));
    // Unchanged watched key: EXEC runs.
    c.expect_cmd(&["WATCH", "tok:w"], b"+OK\r\n");
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:w", "mine"], b"+QUEUED\r\n");
    c.expect_cmd(&["EXEC"], b"*1\r\n+OK\r\n");
    assert_eq!(env.new.get("tok:w").as_deref(), Some("mine"));
    // WATCH then an empty transaction still runs EXEC where the key is.
    c.expect_cmd(&["WATCH", "web:e"], b"+OK\r\n");
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["EXEC"], b"*0\r\n");
    c.send_cmd(&["WATCH", "web:a", "tok:b"]);
    assert!(c.read_frame().starts_with(b"-CROSSNS "));
}

#[test]
fn discard_empty_transactions_and_misuse_answer_like_redis() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:d", "1"], b"+QUEUED\r\n");
    c.expect_cmd(&["DISCARD"], b"+OK\r\n");
    assert_eq!(env.legacy.get("web:d"), None);
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["MULTI"], b"-ERR MULTI calls can not be nested\r\n");
    c.expect_cmd(&["EXEC"], b"*0\r\n");
    c.expect_cmd(&["EXEC"], b"-ERR EXEC without MULTI\r\n");
    c.expect_cmd(&["DISCARD"], b"-ERR DISCARD without MULTI\r\n");
    // Redis's own queue-time errors still abort.
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:q", "1"], b"+QUEUED\r\n");
    c.send_cmd(&["GET"]);
    assert!(c
        .read_frame()
        .starts_with(b"-ERR wrong number of arguments"));
    c.expect_cmd(
        &["EXEC"],
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    assert_eq!(env.legacy.get("web:q"), None);
}
