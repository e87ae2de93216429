//! Pub/Sub through turnout: subscriptions run on a connection of their own to the Pub/Sub
//! endpoint, messages are forwarded as they arrive, RESP2 subscribed mode is enforced as
//! Redis does, and in RESP3 pushes and ordinary replies interleave on one connection.

mod support;

use std::time::Duration;
use support::{standard_body, Env, RedisServer, Turnout};

fn message(kind: &str, channel: &str, payload: &str) -> Vec<u8> {
    format!(
        "*3\r\n${}\r\n{kind}\r\n${}\r\n{channel}\r\n${}\r\n{payload}\r\n",
        kind.len(),
        channel.len(),
        payload.len()
    )
    .into_bytes()
}

#[test]
fn resp2_subscribe_receive_and_unsubscribe() {
    let env = Env::standard();
    let mut sub = env.turnout.raw();
    let mut publisher = env.turnout.raw();
    sub.send_cmd(&["SET", "web:a", "1"]);
    sub.send_cmd(&["SUBSCRIBE", "news", "alerts"]);
    assert_eq!(
        sub.read_frame(),
        b"+OK\r\n",
        "replies before the subscription come first"
    );
    assert_eq!(
        sub.read_frame(),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        sub.read_frame(),
        b"*3\r\n$9\r\nsubscribe\r\n$6\r\nalerts\r\n:2\r\n"
    );
    publisher.expect_cmd(&["PUBLISH", "news", "hello"], b":1\r\n");
    assert_eq!(sub.read_frame(), message("message", "news", "hello"));
    sub.expect_cmd(
        &["GET", "web:a"],
        b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
    sub.expect_cmd(&["PING"], b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    // UNSUBSCRIBE with no channel answers once per channel, in Redis's own (hash) order.
    sub.send_cmd(&["UNSUBSCRIBE"]);
    let (first, second) = (sub.read_frame(), sub.read_frame());
    let confirmation = |channel: &str, left: u8| {
        format!(
            "*3\r\n$11\r\nunsubscribe\r\n${}\r\n{channel}\r\n:{left}\r\n",
            channel.len()
        )
        .into_bytes()
    };
    assert!(
        (first == confirmation("news", 1) && second == confirmation("alerts", 0))
            || (first == confirmation("alerts", 1) && second == confirmation("news", 0)),
        "{} then {}",
        support::show(&first),
        support::show(&second)
    );
    // Out of subscribed mode: ordinary commands work again.
    sub.expect_cmd(&["GET", "web:a"], b"$1\r\n1\r\n");
    publisher.expect_cmd(&["PUBLISH", "news", "nobody"], b":0\r\n");
}

#[test]
fn pattern_subscriptions_get_pmessages() {
    let env = Env::standard();
    let mut sub = env.turnout.raw();
    sub.expect_cmd(
        &["PSUBSCRIBE", "web.*"],
        b"*3\r\n$10\r\npsubscribe\r\n$5\r\nweb.*\r\n:1\r\n",
    );
    env.turnout
        .raw()
        .expect_cmd(&["PUBLISH", "web.flush", "now"], b":1\r\n");
    assert_eq!(
        sub.read_frame(),
        b"*4\r\n$8\r\npmessage\r\n$5\r\nweb.*\r\n$9\r\nweb.flush\r\n$3\r\nnow\r\n"
    );
    sub.expect_cmd(&["RESET"], b"+RESET\r\n");
    sub.expect_cmd(&["SET", "web:after", "1"], b"+OK\r\n");
    env.turnout
        .raw()
        .expect_cmd(&["PUBLISH", "web.flush", "again"], b":0\r\n");
}

#[test]
fn resp3_pushes_and_replies_share_the_connection() {
    let env = Env::standard();
    let mut sub = env.turnout.raw();
    sub.send_cmd(&["HELLO", "3"]);
    assert!(sub.read_frame().starts_with(b"%"));
    sub.expect_cmd(
        &["SUBSCRIBE", "jobs"],
        b">3\r\n$9\r\nsubscribe\r\n$4\r\njobs\r\n:1\r\n",
    );
    sub.expect_cmd(&["SET", "tok:x", "1"], b"+OK\r\n");
    sub.expect_cmd(&["GET", "tok:x"], b"$1\r\n1\r\n");
    env.turnout
        .raw()
        .expect_cmd(&["PUBLISH", "jobs", "j1"], b":1\r\n");
    assert_eq!(
        sub.read_frame(),
        b">3\r\n$7\r\nmessage\r\n$4\r\njobs\r\n$2\r\nj1\r\n"
    );
    sub.expect_cmd(&["PING"], b"+PONG\r\n");
}

#[test]
fn the_pubsub_endpoint_is_configurable() {
    let (legacy, new) = (RedisServer::start(), RedisServer::start());
    let body = format!(
        "{}\n[pubsub]\nendpoint = \"new\"\n",
        standard_body(&legacy, &new, "legacy")
    );
    let turnout = Turnout::start(&body);
    let mut sub = turnout.raw();
    sub.expect_cmd(
        &["SUBSCRIBE", "c"],
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n",
    );
    // The subscription lives on `new`: a publish there reaches the client.
    assert!(matches!(
        new.command(&["PUBLISH", "c", "direct"]),
        support::resp::Reply::Int(1)
    ));
    assert_eq!(sub.read_frame(), message("message", "c", "direct"));
    // PUBLISH through turnout goes to `new` too.
    turnout
        .raw()
        .expect_cmd(&["PUBLISH", "c", "via"], b":1\r\n");
    assert_eq!(sub.read_frame(), message("message", "c", "via"));
    assert!(
        matches!(legacy.command(&["PUBSUB", "NUMSUB", "c"]), support::resp::Reply::Array(Some(ref v)) if matches!(v[..], [_, support::resp::Reply::Int(0)]))
    );
    std::thread::sleep(Duration::from_millis(10));
}

/// PUBSUB CHANNELS / NUMSUB / NUMPAT describe the subscriptions, which live on the Pub/Sub
/// endpoint: they must be answered there, not by the default route's endpoint.
#[test]
fn pubsub_introspection_asks_the_pubsub_endpoint() {
    let (legacy, new) = (RedisServer::start(), RedisServer::start());
    let body = format!(
        "{}\n[pubsub]\nendpoint = \"new\"\n",
        standard_body(&legacy, &new, "legacy")
    );
    let turnout = Turnout::start(&body);
    let mut sub = turnout.raw();
    sub.expect_cmd(
        &["SUBSCRIBE", "chanx"],
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nchanx\r\n:1\r\n",
    );
    sub.expect_cmd(
        &["PSUBSCRIBE", "p*"],
        b"*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n",
    );
    let mut c = turnout.raw();
    c.expect_cmd(
        &["PUBSUB", "NUMSUB", "chanx"],
        b"*2\r\n$5\r\nchanx\r\n:1\r\n",
    );
    c.expect_cmd(&["PUBSUB", "CHANNELS"], b"*1\r\n$5\r\nchanx\r\n");
    c.expect_cmd(&["PUBSUB", "NUMPAT"], b":1\r\n");
}

/// Sends `script` as one pipelined write to `addr` (after `hello`, if any, answered first) and
/// returns the first `replies` frames.
fn pipelined_frames(addr: &str, hello: bool, script: &[&[&str]], replies: usize) -> Vec<String> {
    let mut c = support::RawClient::connect(addr);
    if hello {
        assert!(c.roundtrip(&["HELLO", "3"]).starts_with(b"%"));
    }
    let mut bytes = Vec::new();
    for command in script {
        bytes.extend_from_slice(&support::raw::cmd(command));
    }
    c.send(&bytes);
    c.read_frames(replies, Duration::from_secs(5))
        .iter()
        .map(|f| support::show(f))
        .collect()
}

/// Confirmations of subscription commands keep their place among the replies of a pipeline,
/// as with Redis: replies to commands sent after a SUBSCRIBE come after its confirmation,
/// and RESP2 subscribed mode ends exactly at the UNSUBSCRIBE that leaves no subscription.
#[test]
fn subscription_confirmations_keep_their_place_in_a_pipeline() {
    let env = Env::standard();
    let direct = RedisServer::start();
    let resp2: &[&[&str]] = &[
        // Refused by Redis with one error: it counts as the command's only answer.
        &["SUBSCRIBE"],
        &["SUBSCRIBE", "c1"],
        &["GET", "web:x"],
        &["PING"],
        &["SUBSCRIBE", "c2", "c3"],
        &["PSUBSCRIBE", "p*"],
        &["UNSUBSCRIBE", "c1", "c2", "c3"],
        &["PING", "still"],
        &["PUNSUBSCRIBE"],
        &["GET", "web:x"],
        &["UNSUBSCRIBE"],
        &["SET", "web:x", "1"],
    ];
    let expected = pipelined_frames(&direct.addr(), false, resp2, 15);
    let actual = pipelined_frames(&env.turnout.proxy_addr(), false, resp2, 15);
    assert_eq!(actual, expected, "RESP2");
    let resp3: &[&[&str]] = &[
        &["SUBSCRIBE", "c1"],
        &["GET", "web:y"],
        &["GET", "tok:y"],
        &["SSUBSCRIBE", "s1"],
        &["PING"],
        &["UNSUBSCRIBE", "c1"],
        &["SUNSUBSCRIBE"],
        &["UNSUBSCRIBE"],
        &["GET", "tok:y"],
    ];
    let expected = pipelined_frames(&direct.addr(), true, resp3, 9);
    let actual = pipelined_frames(&env.turnout.proxy_addr(), true, resp3, 9);
    assert_eq!(actual, expected, "RESP3");
}

/// Without `[pubsub] endpoint`, subscriptions follow the default route: after it moves, they
/// are made again on its new endpoint, and the old connection is closed.
#[test]
fn subscriptions_follow_the_default_route_when_it_moves() {
    let env = Env::standard();
    let mut sub = env.turnout.raw();
    sub.expect_cmd(
        &["SUBSCRIBE", "moving"],
        b"*3\r\n$9\r\nsubscribe\r\n$6\r\nmoving\r\n:1\r\n",
    );
    sub.expect_cmd(
        &["PSUBSCRIBE", "mov*"],
        b"*3\r\n$10\r\npsubscribe\r\n$4\r\nmov*\r\n:2\r\n",
    );
    let numsub = |server: &RedisServer| match server.command(&["PUBSUB", "NUMSUB", "moving"]) {
        support::Reply::Array(Some(v)) => v.get(1).cloned(),
        other => panic!("NUMSUB: {other:?}"),
    };
    assert_eq!(numsub(&env.legacy), Some(support::Reply::Int(1)));
    env.turnout.flip("default", "new", "move the default route");
    // Bounded wait for the re-subscription on the new endpoint.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while numsub(&env.new) != Some(support::Reply::Int(1)) {
        assert!(
            std::time::Instant::now() < deadline,
            "subscriptions were not made again on the new endpoint"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(numsub(&env.legacy), Some(support::Reply::Int(0)));
    env.turnout
        .raw()
        .expect_cmd(&["PUBLISH", "moving", "after"], b":2\r\n");
    assert_eq!(sub.read_frame(), message("message", "moving", "after"));
    assert_eq!(
        sub.read_frame(),
        b"*4\r\n$8\r\npmessage\r\n$4\r\nmov*\r\n$6\r\nmoving\r\n$5\r\nafter\r\n"
    );
    // Still in subscribed mode, with the same counts.
    sub.expect_cmd(
        &["UNSUBSCRIBE", "moving"],
        b"*3\r\n$11\r\nunsubscribe\r\n$6\r\nmoving\r\n:1\r\n",
    );
}

/// The `omem=` (output buffer bytes) of the client subscribed to `channel` on `server`.
fn subscriber_omem(server: &RedisServer) -> u64 {
    let support::Reply::Bulk(Some(list)) = server.command(&["CLIENT", "LIST"]) else {
        return 0;
    };
    String::from_utf8_lossy(&list)
        .lines()
        .filter(|l| l.contains(" sub=1 ") || l.contains(" sub=2 "))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("omem=")))
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Messages behind a confirmation that is not due yet (a RESP3 client's blocked command sits
/// between two subscriptions) stay on the endpoint past `max_buffered_bytes`: turnout stops
/// reading them, and loses none.
#[test]
fn messages_behind_an_undue_confirmation_push_back_on_the_endpoint() {
    let env = Env::custom(|b| b.proxy_option("max_buffered_bytes = 65536"), "legacy");
    let mut sub = env.turnout.raw();
    assert!(sub.roundtrip(&["HELLO", "3"]).starts_with(b"%"));
    let mut batch = support::cmd(&["SUBSCRIBE", "a"]);
    batch.extend_from_slice(&support::cmd(&["BLPOP", "web:q", "0"]));
    batch.extend_from_slice(&support::cmd(&["SUBSCRIBE", "b"]));
    sub.send(&batch);
    assert_eq!(
        sub.read_frame(),
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
    );
    // Both subscriptions are made on the endpoint (the second confirmation waits in turnout).
    let subscribed =
        support::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            env.legacy.command(&["PUBSUB", "NUMSUB", "b"])
                == support::Reply::Array(Some(vec![
                    support::Reply::Bulk(Some(b"b".to_vec())),
                    support::Reply::Int(1),
                ]))
        });
    assert!(subscribed, "SUBSCRIBE b never reached the endpoint");
    let payload = "p".repeat(64 * 1024);
    let count = 300;
    let mut publisher = env.legacy.conn();
    for _ in 0..count {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("a")
            .arg(&payload)
            .query(&mut publisher)
            .expect("PUBLISH");
    }
    // Turnout stopped reading: the rest waits in the endpoint's output buffer.
    let pushed_back =
        support::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            subscriber_omem(&env.legacy) > 0
        });
    assert!(
        pushed_back,
        "turnout read every message into its own buffer"
    );
    env.legacy.command(&["RPUSH", "web:q", "job"]);
    assert_eq!(sub.read_frame(), b"*2\r\n$5\r\nweb:q\r\n$3\r\njob\r\n");
    assert_eq!(
        sub.read_frame(),
        b">3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
    );
    let expected = format!(">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$65536\r\n{payload}\r\n");
    for i in 0..count {
        assert!(
            sub.read_frame() == expected.as_bytes(),
            "message {i} differs"
        );
    }
}

/// The names a session subscribes to are bounded (by `max_buffered_bytes`): past that,
/// a subscription command is refused, and the session carries on.
#[test]
fn subscriptions_past_the_bound_are_refused() {
    let env = Env::custom(|b| b.proxy_option("max_buffered_bytes = 65536"), "legacy");
    let mut sub = env.turnout.raw();
    let first = "a".repeat(40 * 1024);
    let second = "b".repeat(40 * 1024);
    sub.send_cmd(&["SUBSCRIBE", &first]);
    let confirmed = sub.read_frame();
    assert!(
        confirmed.ends_with(b":1\r\n"),
        "{}",
        support::show(&confirmed)
    );
    sub.send_cmd(&["SUBSCRIBE", &second]);
    let refused = String::from_utf8_lossy(&sub.read_frame()).into_owned();
    assert!(
        refused.starts_with("-ERR turnout: ") && refused.contains("subscri"),
        "{refused}"
    );
    // Still subscribed to the first; the second was never made.
    assert_eq!(
        env.legacy.command(&["PUBSUB", "NUMSUB", &second]),
        support::Reply::Array(Some(vec![
            support::Reply::Bulk(Some(second.clone().into_bytes())),
            support::Reply::Int(0),
        ]))
    );
    sub.send_cmd(&["UNSUBSCRIBE"]);
    let unsubscribed = sub.read_frame();
    assert!(
        unsubscribed.ends_with(b":0\r\n"),
        "{}",
        support::show(&unsubscribed)
    );
    let confirmation = format!(
        "*3\r\n$9\r\nsubscribe\r\n${}\r\n{second}\r\n:1\r\n",
        second.len()
    );
    sub.expect_cmd(&["SUBSCRIBE", &second], confirmation.as_bytes());
}
