//! Key prefixes that would make two databases share keys on a single-database endpoint: a
//! namespace of database N ≠ 0 never falls back to the endpoint's `key_prefix` (database 0's),
//! and a config whose prefixes of different databases are identical or nested is refused.

mod support;

use support::{RedisServer, Turnout};

/// `new` is single-database with `key_prefix = "app:"`; namespace `three` (database 3, no
/// prefix of its own) starts on `legacy`.
fn body(legacy: &RedisServer, new: &RedisServer) -> String {
    format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.new]
address = "{}"
key_prefix = "app:"

[[namespaces]]
name = "three"
db = 3
target = "legacy"

[default]
target = "new"
"#,
        legacy.addr(),
        new.addr()
    )
}

#[test]
fn a_database_namespace_moved_to_a_prefixed_endpoint_never_takes_database_0s_prefix() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let turnout = Turnout::start(&body(&legacy, &new));
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "k", "zero"], b"+OK\r\n");
    assert_eq!(new.get("app:k").as_deref(), Some("zero"));
    turnout.flip("three", "new", "collision test");
    c.expect_cmd(&["SELECT", "3"], b"+OK\r\n");
    c.expect_cmd(
        &["SET", "k", "three"],
        b"-ERR turnout: namespace 'three' has no key_prefix for endpoint 'new' (database 3)\r\n",
    );
    c.expect_cmd(&["SELECT", "0"], b"+OK\r\n");
    c.expect_cmd(&["GET", "k"], b"$4\r\nzero\r\n");
    assert_eq!(new.get("app:k").as_deref(), Some("zero"));
}

#[test]
fn a_config_with_colliding_prefixes_is_refused_at_start() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let text = body(&legacy, &new)
        .replace("target = \"legacy\"", "target = \"new\"")
        .replace(
            "[default]",
            "[[namespaces]]\nname = \"one\"\ndb = 1\nkey_prefix = { new = \"x:\" }\ntarget = \"new\"\n\n[[namespaces]]\nname = \"two\"\ndb = 2\nkey_prefix = { new = \"x:y:\" }\ntarget = \"new\"\n\n[default]",
        );
    let failed = Turnout::builder(&text).start_expect_failure();
    assert!(!failed.status.success());
    for line in [
        "namespaces[0].key_prefix: database 3 goes to single-database endpoint \"new\", which needs a key_prefix of its own for it",
        "namespaces[2].key_prefix.new: \"x:y:\" (database 2) starts with \"x:\", the prefix of database 1 (namespaces[1] \"one\") on endpoint \"new\": their keys would collide",
    ] {
        assert!(failed.stderr.contains(line), "{line} missing from:\n{}", failed.stderr);
    }
}
