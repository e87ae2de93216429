//! Upstream faults: an endpoint that goes down gets a prompt `endpoint unavailable` error while
//! other endpoints keep answering in order on the same connection, it is used again once back,
//! and an upstream dying mid-pipeline fails exactly its pending commands, in order.

mod support;

use std::time::{Duration, Instant};

use support::{cmd, show, standard_body, Env, RedisServer, Turnout};

const PROMPT: Duration = Duration::from_secs(5);

fn assert_unavailable(reply: &[u8], endpoint: &str, what: &str) {
    let text = String::from_utf8_lossy(reply);
    let prefix = format!("-ERR turnout: endpoint '{endpoint}' unavailable: ");
    assert!(
        text.starts_with(&prefix) && text.len() > prefix.len() + 2,
        "{what}: expected {prefix}<cause>, got {}",
        show(reply)
    );
    assert!(
        text.ends_with("\r\n") && text.matches("\r\n").count() == 1,
        "{what}: one error line expected, got {}",
        show(reply)
    );
}

#[test]
fn an_endpoint_going_down_and_back_up_keeps_the_client_connection() {
    let mut env = Env::custom(|b| b.proxy_option("connect_timeout = \"1s\""), "legacy");
    let mut c = env.turnout.raw();
    c.expect_cmd(&["SET", "tok:a", "1"], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:a", "1"], b"+OK\r\n");

    env.new.stop();

    // A command for `new` fails promptly; the one for `legacy` behind it still works, in order.
    for round in 0..3 {
        let started = Instant::now();
        let mut request = cmd(&["SET", "tok:b", "2"]);
        request.extend(cmd(&["SET", "web:b", "2"]));
        request.extend(cmd(&["GET", "web:a"]));
        c.send(&request);
        let replies = c.read_frames(3, PROMPT + Duration::from_secs(5));
        let elapsed = started.elapsed();
        assert_unavailable(&replies[0], "new", &format!("round {round}: SET tok:b"));
        assert_eq!(
            show(&replies[1]),
            show(b"+OK\r\n"),
            "round {round}: SET web:b"
        );
        assert_eq!(
            show(&replies[2]),
            show(b"$1\r\n1\r\n"),
            "round {round}: GET web:a"
        );
        assert!(
            elapsed < PROMPT,
            "round {round}: replies took {elapsed:?} (connect_timeout is 1s)"
        );
    }
    assert_eq!(env.legacy.get("web:b").as_deref(), Some("2"));

    env.new.restart();

    // The same client connection reconnects to `new` on a following command.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.send_cmd(&["SET", "tok:c", "3"]);
        let reply = c
            .read_frame_within(PROMPT)
            .unwrap_or_else(|e| panic!("client connection broken while `new` came back: {e:?}"));
        if reply == b"+OK\r\n" {
            break;
        }
        assert_unavailable(&reply, "new", "SET tok:c while new restarts");
        assert!(
            Instant::now() < deadline,
            "`new` is back but turnout still answers {}",
            show(&reply)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(env.new.get("tok:c").as_deref(), Some("3"));
    c.expect_cmd(&["GET", "tok:c"], b"$1\r\n3\r\n");
    c.expect_cmd(&["GET", "web:b"], b"$1\r\n2\r\n");
}

#[test]
fn an_endpoint_down_from_the_start_fails_fast_and_turnout_still_starts() {
    let legacy = RedisServer::start();
    let dead = support::ports::free_port();
    let body = format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.new]
address = "127.0.0.1:{dead}"

[[namespaces]]
name = "token-cache"
prefixes = ["tok:"]
target = "new"

[default]
target = "legacy"
"#,
        legacy.addr()
    );
    let turnout = Turnout::builder(&body)
        .proxy_option("connect_timeout = \"1s\"")
        .start();
    let mut c = turnout.raw();
    let started = Instant::now();
    c.send_cmd(&["GET", "tok:x"]);
    let reply = c.read_frame();
    assert_unavailable(&reply, "new", "GET tok:x with `new` never up");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    c.expect_cmd(&["SET", "web:x", "1"], b"+OK\r\n");
    assert_eq!(legacy.get("web:x").as_deref(), Some("1"));
}

#[test]
fn an_upstream_dying_mid_pipeline_fails_its_pending_commands_in_order() {
    // Default route -> new, so the keyless PING runs on `new` too.
    let mut env = Env::with_default("new");
    let mut c = env.turnout.raw();

    // Phase 1: replies already received are delivered normally.
    let mut first = cmd(&["SET", "web:m1", "a"]);
    first.extend(cmd(&["SET", "tok:m1", "b"]));
    c.send(&first);
    let replies = c.read_frames(2, Duration::from_secs(10));
    assert_eq!(show(&replies[0]), show(b"+OK\r\n"));
    assert_eq!(show(&replies[1]), show(b"+OK\r\n"));

    // Phase 2: the session's connection to `new` is blocked in BLPOP when `new` is killed.
    let pipeline: [(&[&str], Option<&[u8]>); 6] = [
        (&["BLPOP", "tok:never", "2"], None),        // new, blocks
        (&["SET", "web:m2", "d"], Some(b"+OK\r\n")), // legacy
        (&["SET", "tok:m2", "c"], None),             // new
        (&["GET", "web:m1"], Some(b"$1\r\na\r\n")),  // legacy
        (&["PING"], None),                           // new (keyless -> default)
        (&["GET", "web:m2"], Some(b"$1\r\nd\r\n")),  // legacy
    ];
    let mut request = Vec::new();
    for (args, _) in &pipeline {
        request.extend(cmd(args));
    }
    c.send(&request);
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    env.new.kill();

    let replies = c.read_frames(pipeline.len(), Duration::from_secs(10));
    assert!(
        killed.elapsed() < PROMPT,
        "pending replies took {:?} after the upstream died",
        killed.elapsed()
    );
    for (n, ((args, expected), got)) in pipeline.iter().zip(&replies).enumerate() {
        match expected {
            Some(want) => assert_eq!(show(got), show(want), "reply #{n} to {args:?}"),
            None => assert_unavailable(got, "new", &format!("reply #{n} to {args:?}")),
        }
    }
    assert_eq!(env.legacy.get("web:m2").as_deref(), Some("d"));

    // The client connection survives.
    c.expect_cmd(&["SET", "web:m3", "e"], b"+OK\r\n");
}

#[test]
fn a_flip_to_a_down_endpoint_reports_it_and_a_flip_back_recovers() {
    let legacy = RedisServer::start();
    let mut new = RedisServer::start();
    let turnout = Turnout::start(&standard_body(&legacy, &new, "legacy"));
    new.stop();
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "web:f", "1"], b"+OK\r\n");
    turnout.flip("web-cache", "new", "to a dead endpoint");
    c.send_cmd(&["GET", "web:f"]);
    assert_unavailable(&c.read_frame(), "new", "GET web:f after flip to dead `new`");
    turnout.flip("web-cache", "legacy", "back");
    c.expect_cmd(&["GET", "web:f"], b"$1\r\n1\r\n");
}
