//! CLIENT REPLY ON/OFF/SKIP keeps the reply accounting right (turnout silences replies itself,
//! whichever endpoint they come from), and RESET returns the session and every upstream
//! connection to a fresh state.

mod support;

use support::Env;

#[test]
fn client_reply_off_and_skip_silence_exactly_the_right_replies() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.send_cmd(&["CLIENT", "REPLY", "OFF"]);
    c.send_cmd(&["SET", "web:a", "1"]);
    c.send_cmd(&["SET", "tok:b", "2"]);
    c.send_cmd(&["MGET", "web:a", "tok:b"]);
    c.send_cmd(&["NOSUCHCOMMAND"]);
    c.expect_cmd(&["CLIENT", "REPLY", "ON"], b"+OK\r\n");
    assert_eq!(env.legacy.get("web:a").as_deref(), Some("1"));
    assert_eq!(env.new.get("tok:b").as_deref(), Some("2"));

    c.send_cmd(&["CLIENT", "REPLY", "SKIP"]);
    c.send_cmd(&["MGET", "web:a", "tok:b"]);
    c.send_cmd(&["GET", "tok:b"]);
    c.send_cmd(&["CLIENT", "REPLY", "SKIP"]);
    c.send_cmd(&["SET", "web:c", "3"]);
    c.send_cmd(&["GET", "web:c"]);
    assert_eq!(c.read_frame(), b"$1\r\n2\r\n");
    assert_eq!(c.read_frame(), b"$1\r\n3\r\n");
    c.expect_cmd(&["CLIENT", "REPLY", "MAYBE"], b"-ERR syntax error\r\n");
    c.expect_cmd(&["PING"], b"+PONG\r\n");
}

#[test]
fn reset_returns_the_session_and_its_connections_to_a_fresh_state() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["SELECT", "2"], b"+OK\r\n");
    c.expect_cmd(&["CLIENT", "SETNAME", "before"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:x", "1"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:x", "1"], b"+OK\r\n");
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:queued", "1"], b"+QUEUED\r\n");
    c.expect_cmd(&["RESET"], b"+RESET\r\n");
    // RESET also turns replies back on, and answers even when they were off.
    c.send_cmd(&["CLIENT", "REPLY", "OFF"]);
    c.expect_cmd(&["RESET"], b"+RESET\r\n");
    // Out of the transaction, back in db 0 on both endpoints, no name, replies on.
    c.expect_cmd(&["SET", "web:y", "2"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:y", "2"], b"+OK\r\n");
    c.expect_cmd(&["CLIENT", "GETNAME"], b"$-1\r\n");
    assert_eq!(env.legacy.get_db(0, "web:y").as_deref(), Some("2"));
    assert_eq!(env.new.get_db(0, "tok:y").as_deref(), Some("2"));
    assert_eq!(env.legacy.get_db(2, "web:x").as_deref(), Some("1"));
    assert_eq!(env.legacy.get_db(2, "web:queued"), None);
    assert_eq!(env.legacy.get_db(0, "web:queued"), None);
}
