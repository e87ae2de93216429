//! Namespaces by database index and key prefixes for single-database endpoints: SELECT picks
//! the namespace; keys sent to an endpoint with a `key_prefix` are rewritten and the key names
//! in replies stripped; SELECT never reaches such an endpoint; commands that cannot be
//! rewritten are refused; three databases move into one under three prefixes, unseen by an
//! unchanged application.

mod support;

use support::raw::encode;
use support::{RawClient, RedisServer, Reply, Turnout};

/// `legacy` and `new`; namespaces `one`, `two`, `three` for databases 1, 2, 3 with prefixes
/// `db1:`, `db2:`, `db3:` on `new`, each initially on `target_n`; default → legacy.
fn three_db_body(legacy: &RedisServer, new: &RedisServer, targets: [&str; 3]) -> String {
    let mut body = format!(
        "[endpoints.legacy]\naddress = \"{}\"\n\n[endpoints.new]\naddress = \"{}\"\n\n",
        legacy.addr(),
        new.addr()
    );
    for (i, (name, target)) in ["one", "two", "three"].iter().zip(targets).enumerate() {
        let db = i + 1;
        body.push_str(&format!(
            "[[namespaces]]\nname = \"{name}\"\ndb = {db}\nkey_prefix = {{ new = \"db{db}:\" }}\ntarget = \"{target}\"\n\n"
        ));
    }
    body.push_str("[default]\ntarget = \"legacy\"\n");
    body
}

fn bulks(items: &[&str]) -> Vec<u8> {
    let parts: Vec<&[u8]> = items.iter().map(|s| s.as_bytes()).collect();
    encode(&parts)
}

fn bulk(s: &str) -> Vec<u8> {
    format!("${}\r\n{s}\r\n", s.len()).into_bytes()
}

/// The bulk strings of an array reply, sorted.
fn sorted(reply: Reply) -> Vec<String> {
    let Reply::Array(Some(items)) = reply else {
        panic!("not an array: {reply:?}");
    };
    let mut out: Vec<String> = items.iter().map(|r| r.bulk_text().expect("bulk")).collect();
    out.sort();
    out
}

/// Every key of database `db` of `server`, sorted.
fn keys_on(server: &RedisServer, db: i64) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut server.conn_db(db))
        .expect("KEYS");
    keys.sort();
    keys
}

#[test]
fn select_routes_to_the_namespace_of_the_database() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let body = format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.new]
address = "{}"

[[namespaces]]
name = "a"
db = 1
target = "legacy"

[[namespaces]]
name = "b"
db = 2
target = "new"

[[namespaces]]
name = "b-web"
db = 2
prefixes = ["web:"]
target = "legacy"

[default]
target = "legacy"
"#,
        legacy.addr(),
        new.addr()
    );
    let turnout = Turnout::start(&body);
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "k", "zero"], b"+OK\r\n");
    c.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    c.expect_cmd(&["SET", "k", "one"], b"+OK\r\n");
    c.expect_cmd(&["SELECT", "2"], b"+OK\r\n");
    c.expect_cmd(&["SET", "k", "two"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:k", "two-web"], b"+OK\r\n");
    // Keyless commands of database 2 go to the namespace matching the whole database.
    c.expect_cmd(&["DBSIZE"], b":1\r\n");
    c.expect_cmd(&["GET", "k"], &bulk("two"));
    c.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    c.expect_cmd(&["GET", "k"], &bulk("one"));
    // A refused SELECT leaves the session where it was.
    assert!(c.roundtrip(&["SELECT", "99"]).starts_with(b"-ERR"));
    c.expect_cmd(&["GET", "k"], &bulk("one"));
    assert_eq!(legacy.get_db(0, "k").as_deref(), Some("zero"));
    assert_eq!(legacy.get_db(1, "k").as_deref(), Some("one"));
    assert_eq!(new.get_db(2, "k").as_deref(), Some("two"));
    assert_eq!(legacy.get_db(2, "web:k").as_deref(), Some("two-web"));
    assert_eq!(keys_on(&new, 0), Vec::<String>::new());
    assert_eq!(keys_on(&legacy, 2), vec!["web:k"]);
    let routes = turnout.routes();
    assert_eq!(support::route_of(&routes, "a")["db"], 1);
    assert_eq!(support::route_of(&routes, "b-web")["prefixes"][0], "web:");
    assert!(support::route_of(&routes, "default").get("db").is_none());
}

/// A session in database 1 of the three-database config, routed to `new`.
fn db1_on_new() -> (Turnout, RedisServer, RedisServer, RawClient) {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let turnout = Turnout::start(&three_db_body(&legacy, &new, ["new", "new", "legacy"]));
    let mut c = turnout.raw();
    c.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    (turnout, legacy, new, c)
}

#[test]
fn keys_are_prefixed_on_the_way_in() {
    let (_turnout, legacy, new, mut c) = db1_on_new();
    c.expect_cmd(&["SET", "a", "1"], b"+OK\r\n");
    c.expect_cmd(&["GET", "a"], &bulk("1"));
    c.expect_cmd(&["MSET", "b", "2", "c", "3"], b"+OK\r\n");
    c.expect_cmd(
        &["MGET", "a", "b", "c", "zz"],
        b"*4\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n$-1\r\n",
    );
    c.expect_cmd(&["EXISTS", "a", "b", "zz"], b":2\r\n");
    c.expect_cmd(&["RENAME", "c", "c2"], b"+OK\r\n");
    c.expect_cmd(&["DEL", "b"], b":1\r\n");
    c.expect_cmd(&["HSET", "h", "f", "v"], b":1\r\n");
    c.expect_cmd(&["HGET", "h", "f"], &bulk("v"));
    c.expect_cmd(&["RPUSH", "l", "x", "y"], b":2\r\n");
    c.expect_cmd(&["LRANGE", "l", "0", "-1"], &bulks(&["x", "y"]));
    c.expect_cmd(&["SADD", "s", "m"], b":1\r\n");
    c.expect_cmd(&["SMEMBERS", "s"], &bulks(&["m"]));
    c.expect_cmd(&["ZADD", "z", "1", "m"], b":1\r\n");
    c.expect_cmd(
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &bulks(&["m", "1"]),
    );
    c.expect_cmd(&["SORT", "l", "ALPHA", "STORE", "sorted"], b":2\r\n");
    c.expect_cmd(&["OBJECT", "ENCODING", "a"], b"$3\r\nint\r\n");
    // Database 2's namespace takes its own prefix on the same endpoint.
    c.expect_cmd(&["SELECT", "2"], b"+OK\r\n");
    c.expect_cmd(&["SET", "a", "other"], b"+OK\r\n");
    c.expect_cmd(&["GET", "a"], &bulk("other"));
    assert_eq!(
        keys_on(&new, 0),
        vec![
            "db1:a",
            "db1:c2",
            "db1:h",
            "db1:l",
            "db1:s",
            "db1:sorted",
            "db1:z",
            "db2:a"
        ]
    );
    for db in 1..4 {
        assert_eq!(keys_on(&new, db), Vec::<String>::new(), "new db {db}");
        assert_eq!(keys_on(&legacy, db), Vec::<String>::new(), "legacy db {db}");
    }
}

#[test]
fn replies_naming_keys_are_stripped() {
    let (_turnout, _legacy, new, mut c) = db1_on_new();
    // Another namespace's keys on the same endpoint stay out of sight.
    new.set("db2:other", "x");
    new.set("plain", "x");
    for key in ["k1", "k2", "k3"] {
        c.expect_cmd(&["SET", key, "v"], b"+OK\r\n");
    }
    c.send_cmd(&["KEYS", "*"]);
    assert_eq!(sorted(c.read_reply()), vec!["k1", "k2", "k3"]);
    c.expect_cmd(&["KEYS", "k2"], &bulks(&["k2"]));
    c.expect_cmd(&["KEYS", "db2:*"], b"*0\r\n");
    // SCAN without MATCH sees the namespace only; with MATCH the pattern is confined too.
    let scan_all = |c: &mut RawClient, extra: &[&str]| {
        let mut cursor = "0".to_string();
        let mut seen = Vec::new();
        loop {
            let mut args = vec!["SCAN", cursor.as_str()];
            args.extend_from_slice(extra);
            c.send_cmd(&args);
            let Reply::Array(Some(parts)) = c.read_reply() else {
                panic!("SCAN reply");
            };
            let next = parts[0].bulk_text().expect("cursor");
            seen.extend(sorted(parts[1].clone()));
            if next == "0" {
                break;
            }
            cursor = next;
        }
        seen.sort();
        seen
    };
    assert_eq!(scan_all(&mut c, &[]), vec!["k1", "k2", "k3"]);
    assert_eq!(scan_all(&mut c, &["COUNT", "1"]), vec!["k1", "k2", "k3"]);
    assert_eq!(scan_all(&mut c, &["MATCH", "k[12]"]), vec!["k1", "k2"]);
    assert_eq!(
        scan_all(&mut c, &["MATCH", "*", "TYPE", "string"]),
        vec!["k1", "k2", "k3"]
    );
    c.expect_cmd(&["DEL", "k1", "k3"], b":2\r\n");
    // Drawn among the namespace's keys only, however many others the endpoint holds.
    for i in 0..200 {
        new.set(&format!("db2:filler{i}"), "x");
    }
    for _ in 0..5 {
        c.expect_cmd(&["RANDOMKEY"], &bulk("k2"));
    }
    c.expect_cmd(&["SELECT", "2"], b"+OK\r\n");
    c.expect_cmd(&["DEL", "other"], b":1\r\n");
    c.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    // Blocking and multi-key pops answer with the client's key names.
    c.expect_cmd(&["RPUSH", "l", "x", "y", "z"], b":3\r\n");
    c.expect_cmd(&["BLPOP", "none", "l", "1"], &bulks(&["l", "x"]));
    c.expect_cmd(&["BRPOP", "l", "1"], &bulks(&["l", "z"]));
    c.expect_cmd(
        &["BLMPOP", "1", "1", "l", "LEFT"],
        b"*2\r\n$1\r\nl\r\n*1\r\n$1\r\ny\r\n",
    );
    c.expect_cmd(&["BLPOP", "l", "0.1"], b"*-1\r\n");
    c.expect_cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c"], b":3\r\n");
    c.expect_cmd(&["BZPOPMIN", "z", "1"], &bulks(&["z", "a", "1"]));
    c.expect_cmd(&["BZPOPMAX", "z", "1"], &bulks(&["z", "c", "3"]));
    c.expect_cmd(
        &["BZMPOP", "1", "1", "z", "MIN"],
        b"*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n",
    );
    // Stream reads name their streams as the client did.
    c.expect_cmd(&["XADD", "st", "1-1", "f", "v"], &bulk("1-1"));
    let entries = b"*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n";
    let mut expected = b"*1\r\n*2\r\n$2\r\nst\r\n".to_vec();
    expected.extend_from_slice(entries);
    c.expect_cmd(&["XREAD", "STREAMS", "st", "0"], &expected);
    c.expect_cmd(&["XGROUP", "CREATE", "st", "g", "0"], b"+OK\r\n");
    c.expect_cmd(
        &["XREADGROUP", "GROUP", "g", "me", "STREAMS", "st", ">"],
        &expected,
    );
    c.expect_cmd(&["XREAD", "BLOCK", "100", "STREAMS", "st", "$"], b"*-1\r\n");
    let mut left = keys_on(&new, 0);
    left.retain(|k| !k.starts_with("db2:filler"));
    assert_eq!(left, vec!["db1:k2", "db1:st", "plain"]);
}

#[test]
fn select_is_not_forwarded_to_a_single_database_endpoint() {
    let (_turnout, legacy, new, mut c) = db1_on_new();
    c.expect_cmd(&["CLIENT", "SETNAME", "app"], b"+OK\r\n");
    c.expect_cmd(&["SET", "k", "v"], b"+OK\r\n");
    c.expect_cmd(&["SELECT", "2"], b"+OK\r\n");
    c.expect_cmd(&["SET", "k", "v2"], b"+OK\r\n");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut new.conn())
        .expect("CLIENT LIST");
    let app: Vec<&str> = list.lines().filter(|l| l.contains("name=app")).collect();
    assert_eq!(app.len(), 1, "{list}");
    assert!(app[0].contains(" db=0 "), "{list}");
    assert!(!list.contains("cmd=select"), "{list}");
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(&mut new.conn())
        .expect("INFO");
    assert!(info.contains("db0:keys=2,"), "{info}");
    assert!(!info.contains("db1:") && !info.contains("db2:"), "{info}");
    // The legacy endpoint (default route) did follow the session's SELECTs.
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut legacy.conn())
        .expect("CLIENT LIST");
    assert!(
        list.lines()
            .any(|l| l.contains("name=app") && l.contains(" db=2 ")),
        "{list}"
    );
}

#[test]
fn commands_that_cannot_be_rewritten_are_refused() {
    let (_turnout, _legacy, new, mut c) = db1_on_new();
    c.expect_cmd(&["RPUSH", "l", "1"], b":1\r\n");
    let refused = [
        vec!["EVAL", "return redis.call('GET', KEYS[1])", "1", "a"],
        vec![
            "EVALSHA",
            "0123456789012345678901234567890123456789",
            "1",
            "a",
        ],
        vec!["FCALL", "f", "1", "a"],
        vec!["SORT", "l", "GET", "#"],
        vec!["MOVE", "l", "2"],
        vec!["COPY", "l", "l2", "DB", "2"],
        vec!["DBSIZE"],
        // Keyless in database 1: the namespace of the whole database, so `new`.
        vec!["NOSUCHCMD", "a"],
    ];
    for args in refused {
        let reply = c.roundtrip(&args);
        let text = String::from_utf8_lossy(&reply).to_string();
        assert!(
            text.starts_with("-ERR turnout: ") && text.contains("single-database endpoint 'new'"),
            "{args:?}: {text}"
        );
    }
    // Patterns naming other keys were refused before (for every endpoint).
    let reply = c.roundtrip(&["SORT", "l", "BY", "w_*"]);
    assert!(
        reply.starts_with(b"-ERR turnout: the keys of this 'sort' cannot be determined"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    for args in [vec!["FLUSHDB"], vec!["SWAPDB", "0", "1"]] {
        c.expect_cmd(
            &args,
            b"-ERR turnout: this command affects every namespace; run it on each endpoint directly\r\n",
        );
    }
    c.expect_cmd(
        &["MIGRATE", "127.0.0.1", "1", "l", "0", "1000"],
        b"-ERR turnout: MIGRATE is not supported: it moves keys outside the route table\r\n",
    );
    c.expect_cmd(&["LRANGE", "l", "0", "-1"], &bulks(&["1"]));
    assert_eq!(keys_on(&new, 0), vec!["db1:l"]);
}

#[test]
fn a_namespace_without_a_prefix_there_is_refused_outside_database_0() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let body = format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.new]
address = "{}"

[[namespaces]]
name = "x"
db = 3
target = "legacy"

[[namespaces]]
name = "y"
db = 4
key_prefix = {{ new = "db4:" }}
target = "legacy"

[[namespaces]]
name = "web"
prefixes = ["web:"]
target = "new"

[default]
target = "legacy"
"#,
        legacy.addr(),
        new.addr()
    );
    let turnout = Turnout::start(&body);
    // Config refuses it as a target; a route change can still send it there.
    turnout.flip("x", "new", "no prefix there");
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "web:a", "0"], b"+OK\r\n");
    c.expect_cmd(&["SELECT", "3"], b"+OK\r\n");
    c.expect_cmd(
        &["SET", "k", "v"],
        b"-ERR turnout: namespace 'x' has no key_prefix for endpoint 'new' (database 3)\r\n",
    );
    // Database 3's namespace takes every key of database 3, web: ones included.
    c.expect_cmd(
        &["GET", "web:a"],
        b"-ERR turnout: namespace 'x' has no key_prefix for endpoint 'new' (database 3)\r\n",
    );
    c.expect_cmd(&["SELECT", "5"], b"+OK\r\n");
    c.expect_cmd(
        &["GET", "web:a"],
        b"-ERR turnout: namespace 'web' matches every database, so its keys from database 5 cannot go to single-database endpoint 'new' (give the namespace a db)\r\n",
    );
    assert_eq!(keys_on(&new, 0), vec!["web:a"]);
    assert_eq!(keys_on(&new, 3), Vec::<String>::new());
}

#[test]
fn transactions_run_with_rewritten_keys() {
    let (_turnout, _legacy, new, mut c) = db1_on_new();
    c.expect_cmd(&["WATCH", "w"], b"+OK\r\n");
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "w", "1"], b"+QUEUED\r\n");
    c.expect_cmd(&["INCR", "n"], b"+QUEUED\r\n");
    c.expect_cmd(&["EXEC"], b"*2\r\n+OK\r\n:1\r\n");
    assert_eq!(new.get("db1:w").as_deref(), Some("1"));
    assert_eq!(new.get("db1:n").as_deref(), Some("1"));
    // A watched key changed elsewhere (under its prefixed name) aborts the transaction.
    c.expect_cmd(&["WATCH", "w"], b"+OK\r\n");
    new.set("db1:w", "changed");
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "w", "2"], b"+QUEUED\r\n");
    c.expect_cmd(&["EXEC"], b"*-1\r\n");
    // A reply naming keys cannot be stripped inside EXEC's: refused, and the MULTI aborts.
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "w", "3"], b"+QUEUED\r\n");
    let reply = c.roundtrip(&["KEYS", "*"]);
    assert!(
        String::from_utf8_lossy(&reply)
            .starts_with("-ERR turnout: 'keys' is not supported inside MULTI"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(c.roundtrip(&["EXEC"]).starts_with(b"-EXECABORT"));
    assert_eq!(new.get("db1:w").as_deref(), Some("changed"));
}

#[test]
fn routes_show_db_and_key_prefix_and_copies_to_prefixed_endpoints_are_refused() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let turnout = Turnout::start(&three_db_body(&legacy, &new, ["legacy", "new", "legacy"]));
    let routes = turnout.routes();
    let one = support::route_of(&routes, "one");
    assert_eq!(one["db"], 1);
    assert_eq!(one["key_prefix"], serde_json::json!({ "new": "db1:" }));
    assert_eq!(one["prefixes"], serde_json::json!([]));
    for mode in [
        r#"{"mode": "shadow", "shadow": "new", "reason": "t"}"#,
        r#"{"mode": "dual-write", "secondary": "new", "reason": "t"}"#,
    ] {
        let r = turnout.admin_put("/v1/routes/one", mode, &[]);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("it uses key_prefix"), "{}", r.text());
    }
    assert_eq!(
        support::route_of(&turnout.routes(), "one")["mode"],
        "direct"
    );
}

/// What an application sees of databases 1 to 3, through `c`.
fn transcript(c: &mut RawClient) -> Vec<String> {
    let mut out = Vec::new();
    for db in ["1", "2", "3"] {
        c.expect_cmd(&["SELECT", db], b"+OK\r\n");
        c.send_cmd(&["KEYS", "*"]);
        out.push(format!("{db} keys {:?}", sorted(c.read_reply())));
        for args in [
            vec!["GET", "str"],
            vec!["HGETALL", "hash"],
            vec!["LRANGE", "list", "0", "-1"],
            vec!["ZRANGE", "zset", "0", "-1", "WITHSCORES"],
            vec!["EXISTS", "str", "hash", "nothing"],
            vec!["TYPE", "set"],
        ] {
            out.push(format!(
                "{db} {args:?} {}",
                support::show(&c.roundtrip(&args))
            ));
        }
        c.send_cmd(&["SMEMBERS", "set"]);
        out.push(format!("{db} set {:?}", sorted(c.read_reply())));
    }
    out
}

#[test]
fn three_databases_become_one_with_three_prefixes_unseen_by_the_application() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let turnout = Turnout::start(&three_db_body(
        &legacy,
        &new,
        ["legacy", "legacy", "legacy"],
    ));
    let mut app = turnout.raw();
    for db in ["1", "2", "3"] {
        app.expect_cmd(&["SELECT", db], b"+OK\r\n");
        let value = format!("value-{db}");
        app.expect_cmd(&["SET", "str", &value], b"+OK\r\n");
        app.expect_cmd(&["HSET", "hash", "db", db, "f", "v"], b":2\r\n");
        app.expect_cmd(&["RPUSH", "list", db, "b", "c"], b":3\r\n");
        app.expect_cmd(&["SADD", "set", db, "s"], b":2\r\n");
        app.expect_cmd(&["ZADD", "zset", db, "m"], b":1\r\n");
    }
    let before = transcript(&mut app);
    assert_eq!(
        before[0],
        "1 keys [\"hash\", \"list\", \"set\", \"str\", \"zset\"]"
    );
    assert!(before[1].contains("value-1"), "{before:#?}");
    // Copy every database of legacy into database 0 of new under its prefix.
    let mut target = new.conn();
    for db in 1..4 {
        let mut source = legacy.conn_db(db);
        for key in keys_on(&legacy, db) {
            let dump: Vec<u8> = redis::cmd("DUMP")
                .arg(&key)
                .query(&mut source)
                .expect("DUMP");
            let _: () = redis::cmd("RESTORE")
                .arg(format!("db{db}:{key}"))
                .arg(0)
                .arg(dump)
                .query(&mut target)
                .expect("RESTORE");
        }
    }
    assert_eq!(keys_on(&new, 0).len(), 15);
    for namespace in ["one", "two", "three"] {
        turnout.flip(namespace, "new", "move into one database");
    }
    // The same connection and a new one see the same data.
    assert_eq!(transcript(&mut app), before);
    let mut fresh = turnout.raw();
    assert_eq!(transcript(&mut fresh), before);
    // Legacy is no longer read: writes land on new, under the prefix.
    legacy.set("str", "stale");
    app.expect_cmd(&["SELECT", "2"], b"+OK\r\n");
    app.expect_cmd(&["SET", "str", "after"], b"+OK\r\n");
    assert_eq!(new.get("db2:str").as_deref(), Some("after"));
    assert_eq!(legacy.get_db(2, "str").as_deref(), Some("value-2"));
    for db in 1..4 {
        assert_eq!(keys_on(&new, db), Vec::<String>::new());
    }
}

/// Pipelined SELECTs, the first refused and the second accepted: the session routes by the
/// database its connections are in (the second's).
#[test]
fn a_refused_select_followed_by_an_accepted_one_routes_by_the_accepted_one() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let body = format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.new]
address = "{}"

[[namespaces]]
name = "b"
db = 2
target = "new"

[default]
target = "legacy"
"#,
        legacy.addr(),
        new.addr()
    );
    let turnout = Turnout::start(&body);
    let mut c = turnout.raw();
    let mut batch = bulks(&["SELECT", "99"]);
    batch.extend_from_slice(&bulks(&["SELECT", "2"]));
    c.send(&batch);
    assert!(c.read_frame().starts_with(b"-ERR"));
    assert_eq!(c.read_frame(), b"+OK\r\n");
    c.expect_cmd(&["SET", "k", "two"], b"+OK\r\n");
    c.expect_cmd(&["GET", "k"], &bulk("two"));
    assert_eq!(new.get_db(2, "k").as_deref(), Some("two"));
    assert_eq!(keys_on(&legacy, 0), Vec::<String>::new());
    assert_eq!(keys_on(&legacy, 2), Vec::<String>::new());
}
