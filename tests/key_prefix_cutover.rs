//! Key prefixes at the edges: the replication fence of a namespace that lives in a database on
//! the old endpoint and under a prefix on the new one (the fence key is written in the
//! namespace's database and awaited under its prefixed name), and the bound on replies that
//! are buffered to have their key names stripped.

mod support;

use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{RedisServer, Turnout};

#[test]
fn the_fence_key_is_written_in_the_database_and_awaited_under_the_prefix() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let body = format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.new]
address = "{}"

[[namespaces]]
name = "one"
db = 1
key_prefix = {{ new = "db1:" }}
target = "legacy"

[default]
target = "legacy"
"#,
        legacy.addr(),
        new.addr()
    );
    let turnout = Turnout::start(&body);
    let mut app = turnout.raw();
    app.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    app.expect_cmd(&["SET", "k", "v"], b"+OK\r\n");
    // A stand-in for a CDC pipeline that renames: legacy db 1 → new db 0 under `db1:`.
    let stop = Arc::new(AtomicBool::new(false));
    let copied = Arc::new(AtomicBool::new(false));
    let cdc = {
        let (stop, copied) = (stop.clone(), copied.clone());
        let (mut source, mut target) = (legacy.conn_db(1), new.conn());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg("*")
                    .query(&mut source)
                    .unwrap_or_default();
                for key in keys {
                    let value: Option<String> = redis::cmd("GET")
                        .arg(&key)
                        .query(&mut source)
                        .unwrap_or(None);
                    if let Some(value) = value {
                        let _: redis::RedisResult<()> = redis::cmd("SET")
                            .arg(format!("db1:{key}"))
                            .arg(value)
                            .query(&mut target);
                        if key.contains("turnout:fence:") {
                            copied.store(true, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let r = turnout.admin(
        "POST",
        "/v1/routes/one/cutover?wait=true",
        &[],
        Some(
            &json!({"to": "new", "fence": "replication", "timeout_ms": 5000, "reason": "t"})
                .to_string(),
        ),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = cdc.join();
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    assert_eq!(report["outcome"], "completed", "{report}");
    assert!(
        copied.load(Ordering::Relaxed),
        "the fence key was never written in database 1"
    );
    assert_eq!(turnout.target("one"), "new");
    app.expect_cmd(&["GET", "k"], b"$1\r\nv\r\n");
    // Nothing was written to database 0 of legacy, and the fence key is gone from legacy.
    let keys0: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut legacy.conn())
        .expect("KEYS");
    assert_eq!(keys0, Vec::<String>::new());
    let keys1: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut legacy.conn_db(1))
        .expect("KEYS");
    assert_eq!(keys1, vec!["k".to_string()]);
}

#[test]
fn a_reply_to_strip_is_buffered_up_to_max_buffered_bytes_only() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let body = format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.new]
address = "{}"
key_prefix = "p:"

[default]
target = "new"
"#,
        legacy.addr(),
        new.addr()
    );
    let turnout = Turnout::builder(&body)
        .proxy_option("max_buffered_bytes = 4096")
        .start();
    let mut c = turnout.raw();
    let mut con = new.conn();
    for i in 0..400 {
        let _: () = redis::cmd("SET")
            .arg(format!("p:key-with-a-long-name-{i:04}"))
            .arg("v")
            .query(&mut con)
            .expect("SET");
    }
    let reply = c.roundtrip(&["KEYS", "*"]);
    let text = String::from_utf8_lossy(&reply).to_string();
    assert!(
        text.starts_with("-ERR") && text.contains("max_buffered_bytes"),
        "{text}"
    );
    // The session goes on; a small reply is stripped as usual.
    c.expect_cmd(&["SET", "k", "v"], b"+OK\r\n");
    // Only a single-database endpoint in play: SELECT is answered here and never sent.
    c.expect_cmd(&["SELECT", "0"], b"+OK\r\n");
    c.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    c.expect_cmd(
        &["GET", "k"],
        b"-ERR turnout: namespace 'default' matches every database, so its keys from database 1 cannot go to single-database endpoint 'new' (give the namespace a db)\r\n",
    );
    c.expect_cmd(&["SELECT", "0"], b"+OK\r\n");
    c.expect_cmd(&["GET", "k"], b"$1\r\nv\r\n");
    c.expect_cmd(&["KEYS", "k"], b"*1\r\n$1\r\nk\r\n");
    assert_eq!(new.get("p:k").as_deref(), Some("v"));
}

#[test]
fn a_blocked_pop_moves_from_a_database_to_a_prefix_with_its_namespace() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let body = format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.new]
address = "{}"

[[namespaces]]
name = "one"
db = 1
key_prefix = {{ new = "db1:" }}
target = "legacy"

[default]
target = "legacy"
"#,
        legacy.addr(),
        new.addr()
    );
    let turnout = Turnout::start(&body);
    let mut blocked = turnout.raw();
    blocked.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    blocked.send_cmd(&["BLPOP", "queue", "10"]);
    std::thread::sleep(Duration::from_millis(200));
    let r = turnout.admin(
        "POST",
        "/v1/routes/one/cutover?wait=true",
        &[],
        Some(
            &json!({"to": "new", "fence": "drain", "timeout_ms": 3000, "reason": "t"}).to_string(),
        ),
    );
    assert_eq!(r.json()["outcome"], "completed", "{}", r.text());
    // The pop now waits on new under the prefix, and answers with the client's key name.
    let mut pusher = turnout.raw();
    pusher.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    pusher.expect_cmd(&["RPUSH", "queue", "job"], b":1\r\n");
    assert_eq!(blocked.read_frame(), b"*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut new.conn())
        .expect("KEYS");
    assert_eq!(keys, Vec::<String>::new());
    blocked.expect_cmd(&["RPUSH", "queue", "again"], b":1\r\n");
    let len: i64 = redis::cmd("LLEN")
        .arg("db1:queue")
        .query(&mut new.conn())
        .expect("LLEN");
    assert_eq!(len, 1);
}
