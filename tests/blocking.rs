//! Blocking commands through turnout: BLPOP, BRPOP, BLMOVE, BLMPOP, BZPOPMIN, BZPOPMAX,
//! BZMPOP, XREAD BLOCK, XREADGROUP BLOCK and WAIT.
//!
//! A blocking command parks a client on the backend that owns its key until another client
//! feeds that key, or until its timeout. A proxy can get this wrong in several ways that only
//! show with real blocking: the command lands on the wrong backend (and never wakes up), the
//! reply is lost or delivered out of order with the pipelined commands around it, a parked
//! session stalls other clients, or a timeout reply is rewritten. Every test here blocks
//! clients on real `redis-server` processes, wakes them with a direct client on the owning
//! backend, and asserts exact reply bytes within bounded waits. Redis 7.0 answers every timeout
//! of these commands with a null array (`*-1` in RESP2, `_` in RESP3), which turnout must pass
//! through as is. A client that disconnects while blocked must be released as Redis releases
//! it, or its parked command would later consume an element for nobody.

mod support;

use std::time::{Duration, Instant};

use support::raw::ReadError;
use support::{show, wait_until, Env, RawClient, RedisServer};

/// How long a test waits for a client to show up as blocked on a backend.
const BLOCK_WAIT: Duration = Duration::from_secs(5);
/// How long a woken client may take to get its reply.
const WAKE_WAIT: Duration = Duration::from_secs(3);

/// `blocked_clients` from `INFO clients` on `server`.
fn blocked_clients(server: &RedisServer) -> i64 {
    let info = server
        .command(&["INFO", "clients"])
        .bulk_text()
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("blocked_clients in INFO clients")
}

/// Waits (bounded) until exactly `n` clients are blocked on `server`.
fn wait_blocked(server: &RedisServer, n: i64, what: &str) {
    let reached = wait_until(BLOCK_WAIT, Duration::from_millis(10), || {
        blocked_clients(server) == n
    });
    assert!(
        reached,
        "{what}: expected {n} blocked client(s) on {} within {BLOCK_WAIT:?}, found {}",
        server.addr(),
        blocked_clients(server)
    );
}

/// Asserts that no reply arrives on `c` for `quiet`.
fn assert_no_reply(c: &mut RawClient, quiet: Duration, what: &str) {
    match c.read_frame_within(quiet) {
        Err(ReadError::Timeout { partial }) => assert!(
            partial.is_empty(),
            "{what}: partial reply while it should still be blocked: {}",
            show(&partial)
        ),
        Ok(frame) => panic!(
            "{what}: got {} while it should still be blocked",
            show(&frame)
        ),
        Err(e) => panic!("{what}: connection failed while blocked: {e:?}"),
    }
}

/// Reads one reply within [`WAKE_WAIT`] and asserts its exact bytes.
fn expect_reply(c: &mut RawClient, expected: &[u8], what: &str) {
    let got = c
        .read_frame_within(WAKE_WAIT)
        .unwrap_or_else(|e| panic!("{what}: no reply within {WAKE_WAIT:?}: {e:?}"));
    assert_eq!(show(&got), show(expected), "{what}");
}

/// Runs `args` on `server` directly, asserting the exact reply.
fn direct(server: &RedisServer, args: &[&str], expected: &[u8]) {
    let mut c = RawClient::connect(&server.addr());
    c.expect_cmd(args, expected);
}

/// Sends `blocking` through turnout, checks it parks on `owner` (and not on `other`), that
/// nothing is answered while it waits, then runs `feed` directly on `owner` and expects
/// `expected` through turnout.
fn block_then_feed(
    c: &mut RawClient,
    blocking: &[&str],
    (owner, other): (&RedisServer, &RedisServer),
    feed: (&[&str], &[u8]),
    expected: &[u8],
) {
    let what = format!("{blocking:?}");
    c.send_cmd(blocking);
    wait_blocked(owner, 1, &what);
    assert_eq!(
        blocked_clients(other),
        0,
        "{what} blocked on the wrong backend"
    );
    assert_no_reply(c, Duration::from_millis(100), &what);
    direct(owner, feed.0, feed.1);
    expect_reply(c, expected, &what);
    wait_blocked(owner, 0, &what);
}

#[test]
fn list_pops_wake_up_with_the_element_pushed_on_the_owning_backend() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let new = (&env.new, &env.legacy);
    let legacy = (&env.legacy, &env.new);

    block_then_feed(
        &mut c,
        &["BLPOP", "tok:l", "5"],
        new,
        (&["RPUSH", "tok:l", "a"], b":1\r\n"),
        b"*2\r\n$5\r\ntok:l\r\n$1\r\na\r\n",
    );
    block_then_feed(
        &mut c,
        &["BRPOP", "web:missing", "web:l", "5"],
        legacy,
        (&["RPUSH", "web:l", "x", "y"], b":2\r\n"),
        b"*2\r\n$5\r\nweb:l\r\n$1\r\ny\r\n",
    );
    block_then_feed(
        &mut c,
        &["BLMOVE", "tok:src", "tok:dst", "RIGHT", "LEFT", "5"],
        new,
        (&["RPUSH", "tok:src", "m"], b":1\r\n"),
        b"$1\r\nm\r\n",
    );
    direct(
        &env.new,
        &["LRANGE", "tok:dst", "0", "-1"],
        b"*1\r\n$1\r\nm\r\n",
    );
    block_then_feed(
        &mut c,
        &["BLMPOP", "5", "2", "web:m1", "web:m2", "LEFT", "COUNT", "2"],
        legacy,
        (&["RPUSH", "web:m2", "p", "q", "r"], b":3\r\n"),
        b"*2\r\n$6\r\nweb:m2\r\n*2\r\n$1\r\np\r\n$1\r\nq\r\n",
    );
    // The element left over and the one pushed on the other backend are where they belong.
    direct(
        &env.legacy,
        &["LRANGE", "web:m2", "0", "-1"],
        b"*1\r\n$1\r\nr\r\n",
    );
    direct(&env.legacy, &["LLEN", "web:l"], b":1\r\n");
    direct(&env.new, &["EXISTS", "tok:l", "tok:src"], b":0\r\n");
    // The connection is still in step.
    c.expect_cmd(&["GET", "web:none"], b"$-1\r\n");
}

#[test]
fn sorted_set_pops_wake_up_with_the_member_added_on_the_owning_backend() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let new = (&env.new, &env.legacy);
    let legacy = (&env.legacy, &env.new);

    block_then_feed(
        &mut c,
        &["BZPOPMIN", "tok:z", "5"],
        new,
        (&["ZADD", "tok:z", "2", "b", "1", "a"], b":2\r\n"),
        b"*3\r\n$5\r\ntok:z\r\n$1\r\na\r\n$1\r\n1\r\n",
    );
    block_then_feed(
        &mut c,
        &["BZPOPMAX", "web:z", "5"],
        legacy,
        (&["ZADD", "web:z", "1", "a", "3.5", "c"], b":2\r\n"),
        b"*3\r\n$5\r\nweb:z\r\n$1\r\nc\r\n$3\r\n3.5\r\n",
    );
    block_then_feed(
        &mut c,
        &[
            "BZMPOP",
            "5",
            "2",
            "session:z0",
            "tok:zm",
            "MAX",
            "COUNT",
            "5",
        ],
        new,
        (&["ZADD", "tok:zm", "1", "a", "2", "b"], b":2\r\n"),
        b"*2\r\n$6\r\ntok:zm\r\n*2\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n",
    );
    direct(
        &env.new,
        &["ZRANGE", "tok:z", "0", "-1"],
        b"*1\r\n$1\r\nb\r\n",
    );
    direct(
        &env.legacy,
        &["ZRANGE", "web:z", "0", "-1"],
        b"*1\r\n$1\r\na\r\n",
    );
    direct(&env.new, &["EXISTS", "tok:zm"], b":0\r\n");
}

#[test]
fn stream_reads_wake_up_with_the_entry_added_on_the_owning_backend() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let new = (&env.new, &env.legacy);
    let legacy = (&env.legacy, &env.new);

    block_then_feed(
        &mut c,
        &["XREAD", "BLOCK", "5000", "STREAMS", "tok:s", "$"],
        new,
        (&["XADD", "tok:s", "5-1", "f", "v"], b"$3\r\n5-1\r\n"),
        b"*1\r\n*2\r\n$5\r\ntok:s\r\n*1\r\n*2\r\n$3\r\n5-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
    );
    // Two streams of two namespaces on the same backend: the one fed answers.
    block_then_feed(
        &mut c,
        &[
            "XREAD",
            "COUNT",
            "10",
            "BLOCK",
            "5000",
            "STREAMS",
            "tok:s",
            "session:s",
            "5-1",
            "$",
        ],
        new,
        (&["XADD", "session:s", "6-1", "a", "b"], b"$3\r\n6-1\r\n"),
        b"*1\r\n*2\r\n$9\r\nsession:s\r\n*1\r\n*2\r\n$3\r\n6-1\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n",
    );

    c.expect_cmd(
        &["XGROUP", "CREATE", "web:s", "g", "$", "MKSTREAM"],
        b"+OK\r\n",
    );
    direct(&env.legacy, &["XLEN", "web:s"], b":0\r\n");
    block_then_feed(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "10",
            "BLOCK",
            "5000",
            "STREAMS",
            "web:s",
            ">",
        ],
        legacy,
        (&["XADD", "web:s", "7-1", "k", "v"], b"$3\r\n7-1\r\n"),
        b"*1\r\n*2\r\n$5\r\nweb:s\r\n*1\r\n*2\r\n$3\r\n7-1\r\n*2\r\n$1\r\nk\r\n$1\r\nv\r\n",
    );
    // The delivery was recorded in the group on the owning backend, for consumer c1.
    direct(
        &env.legacy,
        &["XPENDING", "web:s", "g"],
        b"*4\r\n:1\r\n$3\r\n7-1\r\n$3\r\n7-1\r\n*1\r\n*2\r\n$2\r\nc1\r\n$1\r\n1\r\n",
    );
}

/// Every blocking command, on a key nobody feeds, with a short timeout.
const TIMING_OUT: [&[&str]; 10] = [
    &["BLPOP", "tok:empty", "0.1"],
    &["BRPOP", "web:empty", "0.1"],
    &["BLMOVE", "tok:empty", "tok:dst", "LEFT", "RIGHT", "0.1"],
    &["BLMPOP", "0.1", "1", "web:empty", "LEFT"],
    &["BZPOPMIN", "tok:empty", "0.1"],
    &["BZPOPMAX", "web:empty", "0.1"],
    &["BZMPOP", "0.1", "1", "tok:empty", "MIN"],
    &["XREAD", "BLOCK", "100", "STREAMS", "web:empty", "$"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "100",
        "STREAMS",
        "impact:gs",
        ">",
    ],
    &["WAIT", "1", "100"],
];

#[test]
fn timeouts_answer_the_null_reply_redis_gives() {
    let env = Env::standard();
    // A plain Redis, to compare with: it must answer exactly what turnout answers.
    let plain = RedisServer::start();
    for server in [&env.new, &plain] {
        direct(
            server,
            &["XGROUP", "CREATE", "impact:gs", "g", "$", "MKSTREAM"],
            b"+OK\r\n",
        );
    }
    for (protocol, null) in [("2", b"*-1\r\n".as_slice()), ("3", b"_\r\n")] {
        let mut proxied = env.turnout.raw();
        let mut reference = RawClient::connect(&plain.addr());
        for c in [&mut proxied, &mut reference] {
            c.send_cmd(&["HELLO", protocol]);
            let hello = c.read_frame();
            assert!(
                hello.starts_with(if protocol == "2" {
                    b"*14\r\n"
                } else {
                    b"%7\r\n"
                }),
                "HELLO {protocol}: {}",
                show(&hello)
            );
        }
        for command in TIMING_OUT {
            let wanted: &[u8] = if command[0] == "WAIT" {
                b":0\r\n"
            } else {
                null
            };
            let start = Instant::now();
            let got = proxied.roundtrip(command);
            let elapsed = start.elapsed();
            assert_eq!(show(&got), show(wanted), "RESP{protocol} {command:?}");
            assert!(
                elapsed >= Duration::from_millis(90),
                "RESP{protocol} {command:?} answered after {elapsed:?}, before its timeout"
            );
            assert!(
                elapsed < Duration::from_secs(3),
                "RESP{protocol} {command:?} took {elapsed:?}"
            );
            let direct_reply = reference.roundtrip(command);
            assert_eq!(
                show(&got),
                show(&direct_reply),
                "RESP{protocol} {command:?}: turnout and Redis differ"
            );
        }
        // Nothing was left blocked behind.
        proxied.expect_cmd(&["ECHO", "done"], b"$4\r\ndone\r\n");
    }
    assert_eq!(blocked_clients(&env.legacy), 0);
    assert_eq!(blocked_clients(&env.new), 0);
    // The list/zset timeouts created nothing.
    direct(&env.new, &["EXISTS", "tok:empty", "tok:dst"], b":0\r\n");
}

#[test]
fn a_pipeline_around_a_blocking_command_answers_in_order_after_the_push() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let mut request = support::cmd(&["SET", "web:x", "1"]);
    request.extend(support::cmd(&["BLPOP", "tok:q", "5"]));
    request.extend(support::cmd(&["GET", "web:x"]));
    c.send(&request);
    expect_reply(&mut c, b"+OK\r\n", "SET web:x before BLPOP");
    wait_blocked(&env.new, 1, "pipelined BLPOP tok:q");
    // GET web:x is answered by legacy at once, but must wait behind the BLPOP's reply.
    assert_no_reply(&mut c, Duration::from_millis(300), "GET web:x behind BLPOP");
    direct(&env.new, &["LPUSH", "tok:q", "hello"], b":1\r\n");
    expect_reply(
        &mut c,
        b"*2\r\n$5\r\ntok:q\r\n$5\r\nhello\r\n",
        "pipelined BLPOP",
    );
    expect_reply(&mut c, b"$1\r\n1\r\n", "GET web:x after BLPOP");

    // The same pipeline where the blocking command times out instead.
    let mut request = support::cmd(&["SET", "web:y", "2"]);
    request.extend(support::cmd(&["BZPOPMIN", "tok:none", "0.2"]));
    request.extend(support::cmd(&[
        "XREAD", "BLOCK", "200", "STREAMS", "web:st", "$",
    ]));
    request.extend(support::cmd(&["GET", "web:y"]));
    request.extend(support::cmd(&["INCR", "tok:n"]));
    c.send(&request);
    let replies = c.read_frames(5, Duration::from_secs(5));
    let expected: [&[u8]; 5] = [
        b"+OK\r\n",
        b"*-1\r\n",
        b"*-1\r\n",
        b"$1\r\n2\r\n",
        b":1\r\n",
    ];
    for (got, want) in replies.iter().zip(expected) {
        assert_eq!(show(got), show(want));
    }

    // Two blocking commands on two backends in one pipeline, fed in the reverse order.
    let mut request = support::cmd(&["BLPOP", "web:first", "5"]);
    request.extend(support::cmd(&["BLPOP", "tok:second", "5"]));
    request.extend(support::cmd(&["PING"]));
    c.send(&request);
    wait_blocked(&env.legacy, 1, "pipelined BLPOP web:first");
    wait_blocked(&env.new, 1, "pipelined BLPOP tok:second");
    direct(&env.new, &["RPUSH", "tok:second", "2"], b":1\r\n");
    assert_no_reply(
        &mut c,
        Duration::from_millis(300),
        "replies behind BLPOP web:first",
    );
    direct(&env.legacy, &["RPUSH", "web:first", "1"], b":1\r\n");
    expect_reply(
        &mut c,
        b"*2\r\n$9\r\nweb:first\r\n$1\r\n1\r\n",
        "BLPOP web:first",
    );
    expect_reply(
        &mut c,
        b"*2\r\n$10\r\ntok:second\r\n$1\r\n2\r\n",
        "BLPOP tok:second",
    );
    expect_reply(&mut c, b"+PONG\r\n", "PING after both");
}

#[test]
fn a_blocked_client_never_delays_other_clients() {
    let env = Env::standard();
    // One client parked on each backend, plus one in WAIT on the default route.
    let mut on_new = env.turnout.raw();
    on_new.send_cmd(&["BLPOP", "tok:park", "10"]);
    let mut on_legacy = env.turnout.raw();
    on_legacy.send_cmd(&["XREAD", "BLOCK", "10000", "STREAMS", "web:park", "$"]);
    let mut waiting = env.turnout.raw();
    let wait_started = Instant::now();
    waiting.send_cmd(&["WAIT", "1", "3000"]);
    wait_blocked(&env.new, 1, "BLPOP tok:park");
    wait_blocked(&env.legacy, 2, "XREAD web:park and WAIT");

    // Meanwhile other clients, old and new connections, are answered promptly on both backends.
    let mut other = env.turnout.raw();
    let start = Instant::now();
    for i in 0..100 {
        for key in [format!("web:o{i}"), format!("tok:o{i}")] {
            let t = Instant::now();
            other.expect_cmd(&["SET", &key, "v"], b"+OK\r\n");
            other.expect_cmd(&["GET", &key], b"$1\r\nv\r\n");
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "SET+GET {key} took {:?} while other clients were blocked",
                t.elapsed()
            );
        }
    }
    for i in 0..10 {
        let mut fresh = env.turnout.raw();
        fresh.expect_cmd(&["SET", &format!("tok:fresh{i}"), "1"], b"+OK\r\n");
        fresh.expect_cmd(&["GET", &format!("web:o{i}")], b"$1\r\nv\r\n");
    }
    // Another client blocks and is woken while the first ones stay parked.
    let mut second = env.turnout.raw();
    second.send_cmd(&["BLPOP", "tok:other", "5"]);
    wait_blocked(&env.new, 2, "BLPOP tok:other");
    direct(&env.new, &["RPUSH", "tok:other", "z"], b":1\r\n");
    expect_reply(
        &mut second,
        b"*2\r\n$9\r\ntok:other\r\n$1\r\nz\r\n",
        "BLPOP tok:other",
    );
    let busy = start.elapsed();
    assert!(
        busy < Duration::from_secs(5),
        "400 round trips and 10 connections took {busy:?} while clients were blocked"
    );
    // The parked clients are still parked, then get their own replies.
    assert_no_reply(&mut on_new, Duration::from_millis(50), "BLPOP tok:park");
    assert_no_reply(&mut on_legacy, Duration::from_millis(50), "XREAD web:park");
    direct(&env.new, &["RPUSH", "tok:park", "p"], b":1\r\n");
    expect_reply(
        &mut on_new,
        b"*2\r\n$8\r\ntok:park\r\n$1\r\np\r\n",
        "BLPOP tok:park",
    );
    direct(
        &env.legacy,
        &["XADD", "web:park", "1-1", "f", "v"],
        b"$3\r\n1-1\r\n",
    );
    expect_reply(
        &mut on_legacy,
        b"*1\r\n*2\r\n$8\r\nweb:park\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
        "XREAD web:park",
    );
    // WAIT 1 3000 without replicas: :0 after its timeout, not before.
    let got = waiting
        .read_frame_within(Duration::from_secs(6))
        .unwrap_or_else(|e| panic!("WAIT 1 3000: {e:?}"));
    assert_eq!(show(&got), show(b":0\r\n"), "WAIT 1 3000");
    assert!(
        wait_started.elapsed() >= Duration::from_millis(2900),
        "WAIT 1 3000 answered after {:?}",
        wait_started.elapsed()
    );
}

#[test]
fn clients_blocked_on_one_key_are_served_in_the_order_they_blocked() {
    let env = Env::standard();
    let mut first = env.turnout.raw();
    let mut second = env.turnout.raw();
    first.send_cmd(&["BLPOP", "tok:fifo", "5"]);
    wait_blocked(&env.new, 1, "first BLPOP");
    second.send_cmd(&["BRPOP", "tok:fifo", "5"]);
    wait_blocked(&env.new, 2, "second BRPOP");
    direct(&env.new, &["RPUSH", "tok:fifo", "1"], b":1\r\n");
    expect_reply(&mut first, b"*2\r\n$8\r\ntok:fifo\r\n$1\r\n1\r\n", "first");
    assert_no_reply(&mut second, Duration::from_millis(200), "second");
    direct(&env.new, &["RPUSH", "tok:fifo", "2"], b":1\r\n");
    expect_reply(
        &mut second,
        b"*2\r\n$8\r\ntok:fifo\r\n$1\r\n2\r\n",
        "second",
    );
    wait_blocked(&env.new, 0, "both served");
}

#[test]
fn a_blocking_command_spanning_endpoints_is_refused_without_blocking() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let refusals: [&[&str]; 4] = [
        &["BLPOP", "web:a", "tok:b", "5"],
        &["BLMOVE", "web:a", "tok:b", "LEFT", "LEFT", "5"],
        &["BZMPOP", "5", "2", "web:z", "impact:z", "MIN"],
        &[
            "XREAD", "BLOCK", "5000", "STREAMS", "web:s", "tok:s", "$", "$",
        ],
    ];
    let namespaces = [
        ("web-cache", "token-cache"),
        ("web-cache", "token-cache"),
        ("web-cache", "impact"),
        ("web-cache", "token-cache"),
    ];
    for (command, (first, other)) in refusals.iter().zip(namespaces) {
        let start = Instant::now();
        let expected = format!(
            "-CROSSNS keys of this command are routed to different endpoints \
             ({first} -> legacy, {other} -> new)\r\n"
        );
        c.expect_cmd(command, expected.as_bytes());
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{command:?} took {:?}",
            start.elapsed()
        );
    }
    assert_eq!(blocked_clients(&env.legacy), 0);
    assert_eq!(blocked_clients(&env.new), 0);
    c.expect_cmd(&["PING"], b"+PONG\r\n");
}

#[test]
fn wait_counts_the_replicas_of_the_default_endpoint() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let start = Instant::now();
    c.expect_cmd(&["WAIT", "0", "100"], b":0\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "WAIT 0 100 took {:?}",
        start.elapsed()
    );

    // With a replica of legacy (the default route), a write on legacy is acknowledged by it.
    let replica = RedisServer::start();
    replica.replicaof(&env.legacy);
    let mut request = support::cmd(&["SET", "web:w", "replicated"]);
    request.extend(support::cmd(&["WAIT", "1", "5000"]));
    request.extend(support::cmd(&["GET", "web:w"]));
    c.send(&request);
    let replies = c.read_frames(3, Duration::from_secs(8));
    let expected: [&[u8]; 3] = [b"+OK\r\n", b":1\r\n", b"$10\r\nreplicated\r\n"];
    for (got, want) in replies.iter().zip(expected) {
        assert_eq!(show(got), show(want));
    }
    assert_eq!(replica.get("web:w").as_deref(), Some("replicated"));
}

/// `turnout_client_connections` from turnout's `/metrics`.
fn client_connections(env: &Env) -> f64 {
    let text = env.turnout.admin_get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix("turnout_client_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no turnout_client_connections in /metrics:\n{text}"))
}

#[test]
fn a_client_that_disconnects_while_blocked_is_released_like_on_redis() {
    let env = Env::standard();
    // Reference: a client blocked directly on Redis is freed as soon as it closes.
    {
        let mut direct_client = RawClient::connect(&env.new.addr());
        direct_client.send_cmd(&["BLPOP", "tok:ghost", "0"]);
        wait_blocked(&env.new, 1, "direct BLPOP tok:ghost 0");
    }
    wait_blocked(&env.new, 0, "direct client closed while blocked");

    // Through turnout, a consumer blocked forever goes away (a worker dying, say).
    let mut consumer = env.turnout.raw();
    consumer.send_cmd(&["BLPOP", "tok:ghost", "0"]);
    wait_blocked(&env.new, 1, "BLPOP tok:ghost 0 through turnout");
    drop(consumer);
    let released = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        blocked_clients(&env.new) == 0
    });
    let disconnected = wait_until(Duration::from_secs(1), Duration::from_millis(20), || {
        client_connections(&env) == 0.0
    });
    // The next job pushed must wait for a live consumer, not be popped for the one gone.
    direct(&env.new, &["RPUSH", "tok:ghost", "job"], b":1\r\n");
    let mut left = RawClient::connect(&env.new.addr());
    let llen = left.roundtrip(&["LLEN", "tok:ghost"]);
    assert!(
        released && disconnected && llen == b":1\r\n",
        "after a client blocked in BLPOP tok:ghost 0 closed its connection: \
         upstream BLPOP released within 5s: {released} (Redis: at once); \
         turnout_client_connections back to 0: {disconnected} (now {}); \
         LLEN tok:ghost after pushing one job: {} (expected :1, the job must not be popped \
         for the departed client)",
        client_connections(&env),
        show(&llen)
    );
    let mut next = env.turnout.raw();
    next.expect_cmd(&["LPOP", "tok:ghost"], b"$3\r\njob\r\n");
}
