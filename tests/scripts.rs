//! SCRIPT LOAD/EXISTS/FLUSH and FUNCTION LOAD/DELETE/FLUSH/RESTORE reach every endpoint, so
//! EVALSHA and FCALL keep working after a flip; EVAL, EVALSHA and FCALL are routed by their
//! declared keys, and go to the default route with none.

mod support;

use support::resp::Reply;
use support::Env;

const SCRIPT: &str = "return redis.call('GET', KEYS[1])";
const LIBRARY: &str = "#!lua name=turnoutlib\nredis.register_function('getit', function(keys, args) return redis.call('GET', keys[1]) end)";

#[test]
fn scripts_are_loaded_everywhere_and_survive_a_flip() {
    let env = Env::standard();
    let Reply::Bulk(Some(sha)) = env.legacy.command(&["SCRIPT", "LOAD", SCRIPT]) else {
        panic!("SCRIPT LOAD directly");
    };
    env.legacy.command(&["SCRIPT", "FLUSH"]);
    let sha = String::from_utf8(sha).expect("hex");
    let mut c = env.turnout.raw();
    c.expect_cmd(
        &["SCRIPT", "LOAD", SCRIPT],
        format!("$40\r\n{sha}\r\n").as_bytes(),
    );
    for backend in [&env.legacy, &env.new] {
        let exists = backend.command(&["SCRIPT", "EXISTS", &sha]);
        assert!(
            matches!(exists, Reply::Array(Some(ref v)) if matches!(v[..], [Reply::Int(1)])),
            "{exists:?}"
        );
    }
    env.legacy.set("web:k", "on legacy");
    env.new.set("web:k", "on new");
    c.expect_cmd(&["EVALSHA", &sha, "1", "web:k"], b"$9\r\non legacy\r\n");
    env.turnout.flip("web-cache", "new", "script test");
    c.expect_cmd(&["EVALSHA", &sha, "1", "web:k"], b"$6\r\non new\r\n");
    c.expect_cmd(
        &[
            "SCRIPT",
            "EXISTS",
            &sha,
            "0000000000000000000000000000000000000000",
        ],
        b"*2\r\n:1\r\n:0\r\n",
    );
    c.expect_cmd(&["SCRIPT", "FLUSH"], b"+OK\r\n");
    c.expect_cmd(&["SCRIPT", "EXISTS", &sha], b"*1\r\n:0\r\n");
    let exists = env.new.command(&["SCRIPT", "EXISTS", &sha]);
    assert!(
        matches!(exists, Reply::Array(Some(ref v)) if matches!(v[..], [Reply::Int(0)])),
        "{exists:?}"
    );
}

#[test]
fn functions_are_loaded_everywhere_and_called_by_key() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["FUNCTION", "LOAD", LIBRARY], b"$10\r\nturnoutlib\r\n");
    env.legacy.set("web:f", "legacy value");
    env.new.set("tok:f", "new value");
    c.expect_cmd(
        &["FCALL", "getit", "1", "web:f"],
        b"$12\r\nlegacy value\r\n",
    );
    c.expect_cmd(&["FCALL", "getit", "1", "tok:f"], b"$9\r\nnew value\r\n");
    c.send_cmd(&["FUNCTION", "LOAD", LIBRARY]);
    assert!(c
        .read_frame()
        .starts_with(b"-ERR Library 'turnoutlib' already exists"));
    c.expect_cmd(&["FUNCTION", "DELETE", "turnoutlib"], b"+OK\r\n");
    c.send_cmd(&["FCALL", "getit", "1", "tok:f"]);
    assert!(c.read_frame().starts_with(b"-ERR Function not found"));
    c.expect_cmd(&["FUNCTION", "FLUSH"], b"+OK\r\n");
}

#[test]
fn eval_goes_where_its_keys_are_or_to_the_default_route() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(
        &[
            "EVAL",
            "return redis.call('SET', KEYS[1], ARGV[1])",
            "1",
            "tok:e",
            "x",
        ],
        b"+OK\r\n",
    );
    assert_eq!(env.new.get("tok:e").as_deref(), Some("x"));
    c.expect_cmd(&["EVAL", "return redis.call('DBSIZE')", "0"], b":0\r\n");
    env.new.set("tok:other", "y");
    c.expect_cmd(&["EVAL", "return redis.call('DBSIZE')", "0"], b":0\r\n");
}

/// Inside MULTI a SCRIPT LOAD or FUNCTION LOAD could only reach the transaction's endpoint,
/// leaving the others without it: turnout refuses it at queue time (so EXEC answers
/// EXECABORT) rather than load it on one endpoint only.
#[test]
fn script_and_function_management_inside_multi_is_refused() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:a", "1"], b"+QUEUED\r\n");
    c.send_cmd(&["SCRIPT", "LOAD", "return 7"]);
    let refusal = c.read_frame();
    assert!(
        refusal.starts_with(b"-ERR turnout: SCRIPT and FUNCTION management"),
        "{}",
        String::from_utf8_lossy(&refusal)
    );
    c.expect_cmd(
        &["EXEC"],
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    assert_eq!(env.new.get("tok:a"), None);
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.send_cmd(&["FUNCTION", "LOAD", LIBRARY]);
    assert!(c
        .read_frame()
        .starts_with(b"-ERR turnout: SCRIPT and FUNCTION management"));
    c.expect_cmd(&["DISCARD"], b"+OK\r\n");
    for backend in [&env.legacy, &env.new] {
        let listed = backend.command(&["FUNCTION", "LIST"]);
        assert!(
            matches!(listed, Reply::Array(Some(ref v)) if v.is_empty()),
            "{listed:?}"
        );
    }
}
