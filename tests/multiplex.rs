//! Shared upstream connections (`[proxy] multiplex`): the stateless commands of many clients
//! travel pipelined together on a few connections, each client still sees its own replies in
//! its own order, a client that needs connection state (SELECT, MULTI, a blocking command,
//! SUBSCRIBE, CLIENT SETNAME) moves to its own connection without losing its place, and a
//! shared connection that dies fails exactly the replies it owed.

mod support;

use std::time::Duration;

use support::{cmd, show, Env, RawClient, Reply};

const WITHIN: Duration = Duration::from_secs(10);

/// Connections of `server` whose last command was a GET, SET or INCR: turnout's data
/// connections (not its health check's, nor the one asking).
fn data_connections(server: &support::RedisServer) -> usize {
    match server.command(&["CLIENT", "LIST", "TYPE", "normal"]) {
        Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| {
                [" cmd=get ", " cmd=set ", " cmd=incr "]
                    .iter()
                    .any(|c| l.contains(c))
            })
            .count(),
        other => panic!("CLIENT LIST: {other:?}"),
    }
}

fn shared_env(connections: usize) -> Env {
    Env::custom(
        |b| b.proxy_option(&format!("shared_connections = {connections}")),
        "legacy",
    )
}

#[test]
fn many_plain_clients_share_few_connections_and_keep_their_order() {
    let env = shared_env(2);
    let clients = 24;
    let rounds = 100;
    let addr = env.turnout.proxy_addr();
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = RawClient::connect(&addr);
                let key = format!("web:counter:{i}");
                let val = format!("web:value:{i}");
                for round in 1..=rounds {
                    // One request at a time, and a few pipelined ones.
                    c.expect_cmd(&["INCR", &key], format!(":{round}\r\n").as_bytes());
                    let value = format!("{i}-{round}");
                    let mut pipeline = cmd(&["SET", &val, &value]);
                    pipeline.extend(cmd(&["GET", &val]));
                    pipeline.extend(cmd(&["GET", &key]));
                    c.send(&pipeline);
                    let replies = c.read_frames(3, WITHIN);
                    assert_eq!(
                        show(&replies[0]),
                        show(b"+OK\r\n"),
                        "client {i} round {round}"
                    );
                    assert_eq!(
                        show(&replies[1]),
                        show(format!("${}\r\n{value}\r\n", value.len()).as_bytes()),
                        "client {i} round {round}"
                    );
                    let count = round.to_string();
                    assert_eq!(
                        show(&replies[2]),
                        show(format!("${}\r\n{count}\r\n", count.len()).as_bytes()),
                        "client {i} round {round}"
                    );
                }
                c
            })
        })
        .collect();
    let open: Vec<RawClient> = workers
        .into_iter()
        .map(|w| w.join().expect("client thread"))
        .collect();
    // Every client is still connected; Redis sees the shared connections (at most two),
    // not one per client.
    let seen = data_connections(&env.legacy);
    assert!(
        (1..=2).contains(&seen),
        "{clients} clients through 2 shared connections: redis-server lists {seen} data connections"
    );
    drop(open);
}

#[test]
fn without_multiplexing_every_client_has_its_own_connection() {
    let env = Env::custom(|b| b.proxy_option("multiplex = false"), "legacy");
    let mut clients: Vec<RawClient> = (0..5).map(|_| env.turnout.raw()).collect();
    for c in &mut clients {
        c.expect_cmd(&["SET", "web:a", "1"], b"+OK\r\n");
    }
    assert_eq!(data_connections(&env.legacy), 5);
}

#[test]
fn select_mid_pipeline_moves_the_client_to_its_own_connection_in_order() {
    let env = shared_env(1);
    let mut plain = env.turnout.raw();
    let mut c = env.turnout.raw();
    plain.expect_cmd(&["SET", "web:x", "db0"], b"+OK\r\n");
    c.expect_cmd(&["GET", "web:x"], b"$3\r\ndb0\r\n");
    let mut pipeline = cmd(&["GET", "web:x"]);
    pipeline.extend(cmd(&["SELECT", "1"]));
    pipeline.extend(cmd(&["GET", "web:x"]));
    pipeline.extend(cmd(&["SET", "web:x", "db1"]));
    pipeline.extend(cmd(&["GET", "web:x"]));
    pipeline.extend(cmd(&["SELECT", "0"]));
    pipeline.extend(cmd(&["GET", "web:x"]));
    c.send(&pipeline);
    let replies: Vec<String> = c.read_frames(7, WITHIN).iter().map(|r| show(r)).collect();
    let expected: Vec<String> = [
        &b"$3\r\ndb0\r\n"[..],
        b"+OK\r\n",
        b"$-1\r\n",
        b"+OK\r\n",
        b"$3\r\ndb1\r\n",
        b"+OK\r\n",
        b"$3\r\ndb0\r\n",
    ]
    .iter()
    .map(|r| show(r))
    .collect();
    assert_eq!(replies, expected);
    c.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    c.expect_cmd(&["GET", "web:x"], b"$3\r\ndb1\r\n");
    // The other client still shares database 0.
    plain.expect_cmd(&["GET", "web:x"], b"$3\r\ndb0\r\n");
    assert_eq!(env.legacy.get_db(1, "web:x").as_deref(), Some("db1"));
    assert_eq!(env.legacy.get_db(0, "web:x").as_deref(), Some("db0"));
}

#[test]
fn transactions_blocking_commands_and_client_names_keep_their_meaning() {
    let env = shared_env(1);
    let mut plain = env.turnout.raw();
    plain.expect_cmd(&["SET", "web:n", "5"], b"+OK\r\n");

    let mut tx = env.turnout.raw();
    tx.expect_cmd(&["GET", "web:n"], b"$1\r\n5\r\n");
    tx.expect_cmd(&["MULTI"], b"+OK\r\n");
    tx.expect_cmd(&["INCR", "web:n"], b"+QUEUED\r\n");
    // Another client's command runs while the transaction is queued, not inside it.
    plain.expect_cmd(&["INCR", "web:n"], b":6\r\n");
    tx.expect_cmd(&["INCR", "web:n"], b"+QUEUED\r\n");
    tx.expect_cmd(&["EXEC"], b"*2\r\n:7\r\n:8\r\n");

    let mut named = env.turnout.raw();
    named.expect_cmd(&["GET", "web:n"], b"$1\r\n8\r\n");
    named.expect_cmd(&["CLIENT", "SETNAME", "mine"], b"+OK\r\n");
    named.expect_cmd(&["CLIENT", "GETNAME"], b"$4\r\nmine\r\n");
    plain.expect_cmd(&["CLIENT", "GETNAME"], b"$-1\r\n");
    named.expect_cmd(&["GET", "web:n"], b"$1\r\n8\r\n");

    let mut blocked = env.turnout.raw();
    blocked.expect_cmd(&["GET", "web:n"], b"$1\r\n8\r\n");
    blocked.send_cmd(&["BLPOP", "web:list", "0"]);
    // The blocked client holds no shared connection: the others carry on meanwhile.
    plain.expect_cmd(&["INCR", "web:n"], b":9\r\n");
    named.expect_cmd(&["GET", "web:n"], b"$1\r\n9\r\n");
    plain.expect_cmd(&["RPUSH", "web:list", "item"], b":1\r\n");
    assert_eq!(
        show(&blocked.read_frame()),
        show(b"*2\r\n$8\r\nweb:list\r\n$4\r\nitem\r\n")
    );
    blocked.expect_cmd(&["GET", "web:n"], b"$1\r\n9\r\n");
}

#[test]
fn a_subscriber_and_plain_publishers_share_nothing_they_should_not() {
    let env = shared_env(1);
    let mut publisher = env.turnout.raw();
    publisher.expect_cmd(&["SET", "web:p", "1"], b"+OK\r\n");
    let mut sub = env.turnout.raw();
    sub.expect_cmd(&["GET", "web:p"], b"$1\r\n1\r\n");
    sub.expect_cmd(
        &["SUBSCRIBE", "news"],
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
    );
    publisher.expect_cmd(&["PUBLISH", "news", "hello"], b":1\r\n");
    assert_eq!(
        show(&sub.read_frame()),
        show(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n")
    );
    sub.expect_cmd(
        &["UNSUBSCRIBE", "news"],
        b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n",
    );
    sub.expect_cmd(&["GET", "web:p"], b"$1\r\n1\r\n");
    publisher.expect_cmd(&["GET", "web:p"], b"$1\r\n1\r\n");
}

fn assert_unavailable(reply: &[u8], what: &str) {
    let text = String::from_utf8_lossy(reply);
    assert!(
        text.starts_with("-ERR turnout: endpoint 'legacy' unavailable: ")
            && text.ends_with("\r\n")
            && text.matches("\r\n").count() == 1,
        "{what}: expected the endpoint-unavailable error, got {}",
        show(reply)
    );
}

#[test]
fn a_shared_connection_dying_fails_what_it_owed_and_service_resumes() {
    let mut env = shared_env(1);
    let mut a = env.turnout.raw();
    let mut b = env.turnout.raw();
    a.expect_cmd(&["SET", "web:k", "1"], b"+OK\r\n");
    b.expect_cmd(&["GET", "web:k"], b"$1\r\n1\r\n");
    // The server stops answering: both clients' requests wait on the shared connection.
    env.legacy.signal("STOP");
    let mut pipeline = cmd(&["GET", "web:k"]);
    pipeline.extend(cmd(&["INCR", "web:k"]));
    a.send(&pipeline);
    b.send_cmd(&["GET", "web:k"]);
    // Give turnout a moment to hand them over; the outcome does not depend on it (requests
    // not yet written fail the same way).
    std::thread::sleep(Duration::from_millis(200));
    env.legacy.kill();
    let a_replies = a.read_frames(2, WITHIN);
    assert_unavailable(&a_replies[0], "a: GET");
    assert_unavailable(&a_replies[1], "a: INCR");
    let b_reply = b.read_frames(1, WITHIN);
    assert_unavailable(&b_reply[0], "b: GET");

    env.legacy.restart();
    let resumed = support::wait_until(WITHIN, Duration::from_millis(50), || {
        a.roundtrip(&["SET", "web:k", "2"]) == b"+OK\r\n"
    });
    assert!(resumed, "the endpoint is back: requests succeed again");
    a.expect_cmd(&["GET", "web:k"], b"$1\r\n2\r\n");
    b.expect_cmd(&["GET", "web:k"], b"$1\r\n2\r\n");
}

#[test]
fn client_kill_of_the_shared_connection_is_survived() {
    let env = shared_env(1);
    let mut clients: Vec<RawClient> = (0..4).map(|_| env.turnout.raw()).collect();
    for c in &mut clients {
        c.expect_cmd(&["SET", "web:z", "1"], b"+OK\r\n");
    }
    match env.legacy.command(&["CLIENT", "KILL", "TYPE", "normal"]) {
        Reply::Int(n) => assert!(n >= 1, "the shared connection was killed"),
        other => panic!("CLIENT KILL: {other:?}"),
    }
    // Nothing was in flight: the next requests reconnect and succeed.
    for c in &mut clients {
        let ok = support::wait_until(WITHIN, Duration::from_millis(50), || {
            c.roundtrip(&["GET", "web:z"]) == b"$1\r\n1\r\n"
        });
        assert!(ok, "service resumes after CLIENT KILL");
    }
}

#[test]
fn clients_authenticated_by_turnout_still_share_connections() {
    // AUTH is turnout's own check: it never reaches Redis, so it needs no connection of its own.
    let env = Env::custom(
        |b| {
            b.proxy_option("shared_connections = 1")
                .proxy_option("auth = { users = [ { name = \"default\", password_env = \"MUX_TEST_PASSWORD\" } ] }")
                .env("MUX_TEST_PASSWORD", "s3cret")
        },
        "legacy",
    );
    let mut clients: Vec<RawClient> = (0..4).map(|_| env.turnout.raw()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_cmd(&["GET", "web:a"], b"-NOAUTH Authentication required.\r\n");
        c.expect_cmd(&["AUTH", "s3cret"], b"+OK\r\n");
        c.expect_cmd(&["SET", "web:a", &i.to_string()], b"+OK\r\n");
    }
    assert_eq!(data_connections(&env.legacy), 1);
}

#[test]
fn a_client_that_does_not_read_moves_to_its_own_connection_with_replies_in_order() {
    // Past max_buffered_bytes of unread replies the client leaves the shared connection (which
    // cannot stop reading for it): the replies it still owed come first, then its own
    // connection's, which Redis buffers meanwhile.
    let env = Env::custom(
        |b| {
            b.proxy_option("shared_connections = 1")
                .proxy_option("max_buffered_bytes = 65536")
        },
        "legacy",
    );
    let value = "v".repeat(64 * 1024);
    env.legacy.set("web:big", &value);
    let mut other = env.turnout.raw();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["GET", "web:none"], b"$-1\r\n");
    let rounds = 300;
    // In three parts: the later ones reach turnout while the replies to the first fill its
    // buffers (the pauses make that likely; the replies must be right either way).
    for part in 0..3 {
        let mut pipeline = Vec::new();
        for _ in 0..rounds / 3 {
            pipeline.extend(cmd(&["GET", "web:big"]));
            pipeline.extend(cmd(&["INCR", "web:count"]));
        }
        c.send(&pipeline);
        if part < 2 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // Another client is served meanwhile.
    other.expect_cmd(&["GET", "web:none"], b"$-1\r\n");
    let replies = c.read_frames(2 * rounds, WITHIN);
    let big = format!("${}\r\n{value}\r\n", value.len());
    for (i, pair) in replies.chunks(2).enumerate() {
        assert!(
            pair[0] == big.as_bytes(),
            "reply {} is not the value",
            2 * i
        );
        assert_eq!(
            show(&pair[1]),
            show(format!(":{}\r\n", i + 1).as_bytes()),
            "INCR {i}"
        );
    }
    c.expect_cmd(&["GET", "web:count"], b"$3\r\n300\r\n");
    other.expect_cmd(&["GET", "web:count"], b"$3\r\n300\r\n");
}

/// A client pipelines writes on the shared connection and, in the same write, a transaction
/// that reads them: the transaction runs on the client's own connection, and must not run
/// before the writes still queued on the shared one (other clients keep that one busy).
#[test]
fn a_transaction_after_shared_writes_runs_after_them() {
    let env = shared_env(1);
    let addr = env.turnout.proxy_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Background clients keep the shared connection's queue non-empty.
    let busy: Vec<_> = (0..8)
        .map(|i| {
            let addr = addr.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = RawClient::connect(&addr);
                let key = format!("web:busy:{i}");
                for _ in 0..2000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let mut pipeline = Vec::new();
                    for _ in 0..16 {
                        pipeline.extend(cmd(&["INCR", &key]));
                    }
                    c.send(&pipeline);
                    c.read_frames(16, WITHIN);
                }
            })
        })
        .collect();
    for round in 0..30 {
        let mut c = RawClient::connect(&addr);
        let key = format!("web:ordered:{round}");
        let writes = 200;
        let mut pipeline = Vec::new();
        for _ in 0..writes {
            pipeline.extend(cmd(&["INCR", &key]));
        }
        pipeline.extend(cmd(&["MULTI"]));
        pipeline.extend(cmd(&["GET", &key]));
        pipeline.extend(cmd(&["EXEC"]));
        c.send(&pipeline);
        let replies = c.read_frames(writes + 3, WITHIN);
        let exec = &replies[writes + 2];
        let want = format!("*1\r\n${}\r\n{writes}\r\n", writes.to_string().len());
        assert_eq!(
            show(exec),
            show(want.as_bytes()),
            "round {round}: the transaction saw every INCR sent before it"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        b.join().expect("busy client");
    }
}

/// Large requests (moved, not copied, out of the client's buffer when their endpoint's buffer
/// is empty) keep their place among small ones: pipelined with GETs and INCRs, inside a
/// transaction and after a blocking command's CLIENT ID, on shared and on dedicated
/// connections, from several clients at once.
#[test]
fn large_requests_keep_their_place_among_small_ones() {
    for env in [
        shared_env(1),
        Env::custom(|b| b.proxy_option("multiplex = false"), "legacy"),
    ] {
        let addr = env.turnout.proxy_addr();
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let addr = addr.clone();
                std::thread::spawn(move || {
                    let mut c = RawClient::connect(&addr);
                    for round in 0..5 {
                        // 20, 40 and 70 KiB: each above the size that is moved.
                        let big: Vec<String> = [20, 40, 70]
                            .iter()
                            .map(|kib| {
                                let fill = char::from(b'a' + ((i + round) % 26) as u8);
                                format!("{i}:{round}:{}", fill.to_string().repeat(kib * 1024))
                            })
                            .collect();
                        let keys: Vec<String> =
                            (0..3).map(|k| format!("web:big:{i}:{k}")).collect();
                        let counter = format!("web:count:{i}");
                        let mut pipeline = cmd(&["SET", &keys[0], &big[0]]);
                        pipeline.extend(cmd(&["INCR", &counter]));
                        pipeline.extend(cmd(&["SET", &keys[1], &big[1]]));
                        pipeline.extend(cmd(&["GET", &keys[0]]));
                        pipeline.extend(cmd(&["MULTI"]));
                        pipeline.extend(cmd(&["SET", &keys[2], &big[2]]));
                        pipeline.extend(cmd(&["INCR", &counter]));
                        pipeline.extend(cmd(&["EXEC"]));
                        pipeline.extend(cmd(&["BLPOP", "web:nothing", "0.01"]));
                        pipeline.extend(cmd(&["SET", &keys[0], &big[2]]));
                        pipeline.extend(cmd(&["GET", &keys[1]]));
                        pipeline.extend(cmd(&["GET", &keys[2]]));
                        pipeline.extend(cmd(&["GET", &keys[0]]));
                        c.send(&pipeline);
                        let replies: Vec<String> =
                            c.read_frames(13, WITHIN).iter().map(|r| show(r)).collect();
                        let bulk = |v: &str| show(format!("${}\r\n{v}\r\n", v.len()).as_bytes());
                        let n = 2 * round + 1;
                        let expected = vec![
                            show(b"+OK\r\n"),
                            show(format!(":{n}\r\n").as_bytes()),
                            show(b"+OK\r\n"),
                            bulk(&big[0]),
                            show(b"+OK\r\n"),
                            show(b"+QUEUED\r\n"),
                            show(b"+QUEUED\r\n"),
                            show(format!("*2\r\n+OK\r\n:{}\r\n", n + 1).as_bytes()),
                            show(b"*-1\r\n"),
                            show(b"+OK\r\n"),
                            bulk(&big[1]),
                            bulk(&big[2]),
                            bulk(&big[2]),
                        ];
                        assert_eq!(replies, expected, "client {i} round {round}");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("client thread");
        }
    }
}

/// A reply short enough to read in a failure message: its start, length and a hash of all of it.
fn brief(bytes: &[u8]) -> String {
    if bytes.len() <= 64 {
        return show(bytes);
    }
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!(
        "{}... ({} bytes, fnv {hash:016x})",
        show(&bytes[..48]),
        bytes.len()
    )
}

/// Requests of every size from many clients at once, on one shared connection: small ones are
/// copied together and large ones keep their own buffers, written together in vectored writes
/// (more buffers than one write takes, at times). Every byte arrives in order: each value
/// reads back whole and each client's replies come in its own order.
#[test]
fn requests_of_every_size_from_many_clients_share_one_connection_intact() {
    let env = shared_env(1);
    let addr = env.turnout.proxy_addr();
    // Around the size that keeps its own buffer (8 KiB), and well past it.
    let sizes = [10, 8_000, 8_191, 8_192, 8_300, 30_000, 100_000];
    let workers: Vec<_> = (0..80)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = RawClient::connect(&addr);
                for round in 0..4 {
                    let size = sizes[(i + round) % sizes.len()];
                    let fill = char::from(b'a' + ((i * 7 + round) % 26) as u8);
                    let big = format!("{i}:{round}:{}", fill.to_string().repeat(size));
                    let key = format!("web:sized:{i}");
                    let counter = format!("web:sized-count:{i}");
                    let mut pipeline = cmd(&["SET", &key, &big]);
                    pipeline.extend(cmd(&["INCR", &counter]));
                    pipeline.extend(cmd(&["GET", &key]));
                    pipeline.extend(cmd(&["SET", &key, &big[..big.len() / 2]]));
                    pipeline.extend(cmd(&["GET", &key]));
                    pipeline.extend(cmd(&["INCR", &counter]));
                    c.send(&pipeline);
                    let replies: Vec<String> =
                        c.read_frames(6, WITHIN).iter().map(|r| brief(r)).collect();
                    let half = &big[..big.len() / 2];
                    let expected = vec![
                        brief(b"+OK\r\n"),
                        brief(format!(":{}\r\n", 2 * round + 1).as_bytes()),
                        brief(format!("${}\r\n{big}\r\n", big.len()).as_bytes()),
                        brief(b"+OK\r\n"),
                        brief(format!("${}\r\n{half}\r\n", half.len()).as_bytes()),
                        brief(format!(":{}\r\n", 2 * round + 2).as_bytes()),
                    ];
                    assert_eq!(replies, expected, "client {i} round {round}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
    assert_eq!(
        data_connections(&env.legacy),
        1,
        "every client stayed on the one shared connection"
    );
}

/// Replies of every size on one shared connection: a reply up to 1 MiB is held until whole and
/// handed over in one piece, a larger one (a 3 MiB value, a 2 MiB list read as one array)
/// goes over in pieces, and small replies of other clients keep flowing around them.
/// Each client gets exactly its own replies, whole and in order.
#[test]
fn large_replies_held_or_streamed_reach_their_clients_whole() {
    let env = shared_env(1);
    let addr = env.turnout.proxy_addr();
    let mut setup = RawClient::connect(&addr);
    let huge = "h".repeat(3 * 1024 * 1024);
    setup.expect_cmd(&["SET", "web:huge", &huge], b"+OK\r\n");
    let item = "i".repeat(1000);
    for _ in 0..20 {
        let mut push = vec!["RPUSH", "web:list"];
        push.extend(std::iter::repeat_n(item.as_str(), 100));
        let reply = setup.roundtrip(&push);
        assert!(reply.starts_with(b":"), "RPUSH: {}", brief(&reply));
    }
    let mut list_reply = b"*2000\r\n".to_vec();
    for _ in 0..2000 {
        list_reply.extend(format!("$1000\r\n{item}\r\n").as_bytes());
    }
    let huge_reply = format!("${}\r\n{huge}\r\n", huge.len()).into_bytes();
    let workers: Vec<_> = (0..12)
        .map(|i| {
            let addr = addr.clone();
            let (huge_reply, list_reply) = (huge_reply.clone(), list_reply.clone());
            std::thread::spawn(move || {
                let mut c = RawClient::connect(&addr);
                for round in 0..3 {
                    let held = format!("{i}:{round}:{}", "m".repeat(200_000 + i * 1000));
                    let key = format!("web:held:{i}");
                    let mut pipeline = cmd(&["SET", &key, &held]);
                    pipeline.extend(cmd(&["GET", "web:huge"]));
                    pipeline.extend(cmd(&["INCR", &format!("web:n:{i}")]));
                    pipeline.extend(cmd(&["GET", &key]));
                    pipeline.extend(cmd(&["LRANGE", "web:list", "0", "-1"]));
                    pipeline.extend(cmd(&["ECHO", &format!("end {i} {round}")]));
                    c.send(&pipeline);
                    let replies: Vec<String> =
                        c.read_frames(6, WITHIN).iter().map(|r| brief(r)).collect();
                    let end = format!("end {i} {round}");
                    let expected = vec![
                        brief(b"+OK\r\n"),
                        brief(&huge_reply),
                        brief(format!(":{}\r\n", round + 1).as_bytes()),
                        brief(format!("${}\r\n{held}\r\n", held.len()).as_bytes()),
                        brief(&list_reply),
                        brief(format!("${}\r\n{end}\r\n", end.len()).as_bytes()),
                    ];
                    assert_eq!(replies, expected, "client {i} round {round}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
}
