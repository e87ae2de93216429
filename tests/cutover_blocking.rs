//! A cutover does not wait for a blocked command of the namespace: it unblocks it on the old
//! endpoint (`CLIENT UNBLOCK … ERROR`), and the session sends it again to the new endpoint
//! once the hold is released. The client sees one reply, from the new endpoint.

mod support;

use std::time::{Duration, Instant};
use support::Env;

#[test]
fn a_blocked_pop_moves_to_the_new_endpoint_with_its_namespace() {
    let env = Env::standard();
    let t = &env.turnout;
    let route = t.admin_get("/v1/routes").json();
    let impact = route["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["namespace"] == "impact"))
        .cloned()
        .expect("impact route");
    let (from, to) = if impact["target"] == "legacy" {
        ("legacy", "new")
    } else {
        ("new", "legacy")
    };
    let mut blocked = t.raw();
    blocked.send_cmd(&["BLPOP", "impact:queue", "10"]);
    // Let the BLPOP reach the old endpoint and block there.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let report = t
        .admin(
            "POST",
            "/v1/routes/impact/cutover?wait=true",
            &[],
            Some(&format!(
                r#"{{"to": "{to}", "fence": "drain", "timeout_ms": 3000, "reason": "blocked pop"}}"#
            )),
        )
        .json();
    assert_eq!(report["outcome"], "completed", "{report:#}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the cutover waited for the blocked command: {report:#}"
    );
    // The pop now waits on the new endpoint: a push there (through turnout) releases it.
    t.raw()
        .expect_cmd(&["RPUSH", "impact:queue", "job-1"], b":1\r\n");
    assert_eq!(
        blocked.read_frame(),
        b"*2\r\n$12\r\nimpact:queue\r\n$5\r\njob-1\r\n"
    );
    let (old, new) = if from == "legacy" {
        (&env.legacy, &env.new)
    } else {
        (&env.new, &env.legacy)
    };
    assert!(!old.exists("impact:queue"));
    assert!(!new.exists("impact:queue"));
    // The session carries on normally.
    blocked.expect_cmd(&["RPUSH", "impact:queue", "job-2"], b":1\r\n");
    assert_eq!(
        new.command(&["LLEN", "impact:queue"]),
        support::Reply::Int(1)
    );
}

/// `/metrics` shows the commands held while a cutover runs, and counts
/// cutovers by outcome with a histogram of their pauses.
#[test]
fn cutover_metrics_show_held_commands_outcomes_and_pauses() {
    let env = Env::standard();
    let t = &env.turnout;
    let target = |t: &support::Turnout| {
        t.routes()["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["namespace"] == "impact"))
            .map(|r| r["target"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let other = if target(t) == "legacy" {
        "new"
    } else {
        "legacy"
    };
    // Neither endpoint replicates: the replication fence runs until its deadline.
    let started = t.admin(
        "POST",
        "/v1/routes/impact/cutover",
        &[],
        Some(&format!(
            r#"{{"to": "{other}", "fence": "replication", "timeout_ms": 1500, "reason": "metrics"}}"#
        )),
    );
    assert_eq!(started.status, 202, "{}", started.text());
    let id = started.json()["id"].as_u64().expect("id");
    // Wait for the hold to be in place.
    let deadline = Instant::now() + Duration::from_secs(1);
    while !t.admin_get(&format!("/v1/cutovers/{id}")).json()["steps"]
        .as_array()
        .is_some_and(|s| {
            s.iter()
                .any(|s| s["step"] == "hold" && !s["took_ms"].is_null())
        })
    {
        assert!(Instant::now() < deadline, "the hold did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut held = t.raw();
    held.send_cmd(&["SET", "impact:held", "1"]);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let metrics = t.admin_get("/metrics").text();
        if metrics
            .lines()
            .any(|l| l == "turnout_cutover_held_commands{namespace=\"impact\"} 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no held session in /metrics:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The cutover aborts; the held SET runs where it was going.
    assert_eq!(held.read_frame(), b"+OK\r\n");
    let deadline = Instant::now() + Duration::from_secs(3);
    while t.admin_get(&format!("/v1/cutovers/{id}")).json()["outcome"] == "running" {
        assert!(Instant::now() < deadline, "cutover still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = t
        .admin(
            "POST",
            "/v1/routes/impact/cutover?wait=true",
            &[],
            Some(&format!(
                r#"{{"to": "{other}", "fence": "drain", "timeout_ms": 1500, "reason": "metrics"}}"#
            )),
        )
        .json();
    assert_eq!(done["outcome"], "completed", "{done:#}");
    let metrics = t.admin_get("/metrics").text();
    for line in [
        "turnout_cutover_total{namespace=\"impact\",outcome=\"aborted\"} 1",
        "turnout_cutover_total{namespace=\"impact\",outcome=\"completed\"} 1",
        "turnout_cutover_held_commands{namespace=\"impact\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line}:\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("turnout_cutover_pause_seconds_count{namespace=\"impact\"} 2")),
        "{metrics}"
    );
}

/// The `id=` of the client blocked in BLPOP on `server`, once it is blocked there.
fn blocked_client_id(server: &support::RedisServer) -> String {
    let mut id = None;
    let found = support::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        let support::Reply::Bulk(Some(list)) = server.command(&["CLIENT", "LIST"]) else {
            return false;
        };
        let list = String::from_utf8_lossy(&list).into_owned();
        id = list
            .lines()
            .find(|l| l.contains("cmd=blpop"))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_string);
        id.is_some()
    });
    assert!(found, "no client blocked in BLPOP");
    id.unwrap_or_default()
}

/// An application's own `CLIENT UNBLOCK … ERROR` (no cutover) reaches the blocked client as
/// the error Redis sent; the command is not sent again.
#[test]
fn an_application_unblock_reaches_the_blocked_client() {
    let env = Env::with_default("new");
    let t = &env.turnout;
    let mut blocked = t.raw();
    blocked.send_cmd(&["BLPOP", "impact:queue", "5"]);
    let id = blocked_client_id(&env.new);
    t.raw()
        .expect_cmd(&["CLIENT", "UNBLOCK", &id, "ERROR"], b":1\r\n");
    let reply = blocked.read_frame();
    assert!(
        reply.starts_with(b"-UNBLOCKED"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // The session carries on normally.
    blocked.expect_cmd(&["RPUSH", "impact:queue", "job"], b":1\r\n");
    blocked.expect_cmd(&["LPOP", "impact:queue"], b"$3\r\njob\r\n");
}

/// A blocked command followed by a pipelined one: an unblock error answers the blocked one,
/// and the next reply answers the next command.
#[test]
fn an_unblock_error_keeps_pipelined_replies_in_order() {
    let env = Env::with_default("new");
    let t = &env.turnout;
    env.new.set("impact:x", "x");
    let mut blocked = t.raw();
    let mut batch = support::raw::cmd(&["BLPOP", "impact:queue", "5"]);
    batch.extend_from_slice(&support::raw::cmd(&["GET", "impact:x"]));
    blocked.send(&batch);
    let id = blocked_client_id(&env.new);
    t.raw()
        .expect_cmd(&["CLIENT", "UNBLOCK", &id, "ERROR"], b":1\r\n");
    let reply = blocked.read_frame();
    assert!(
        reply.starts_with(b"-UNBLOCKED"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(blocked.read_frame(), b"$1\r\nx\r\n");
}

/// Two pipelined blocking commands: the connection blocks in the first while the session's
/// last command is the second, so a cutover cannot unblock either without an error reaching
/// the client. It does not try: its drain waits (here until its deadline), and both
/// commands end as they would have.
#[test]
fn pipelined_blocking_commands_are_left_alone_by_a_cutover() {
    let env = Env::standard();
    let t = &env.turnout;
    let mut blocked = t.raw();
    let mut batch = support::raw::cmd(&["BLPOP", "impact:q1", "3"]);
    batch.extend_from_slice(&support::raw::cmd(&["BLPOP", "impact:q2", "3"]));
    blocked.send(&batch);
    blocked_client_id(&env.new);
    let report = t
        .admin(
            "POST",
            "/v1/routes/impact/cutover?wait=true",
            &[],
            Some(r#"{"to": "legacy", "fence": "drain", "timeout_ms": 500, "reason": "pipelined"}"#),
        )
        .json();
    assert_eq!(report["outcome"], "aborted", "{report:#}");
    assert_eq!(blocked.read_frame(), b"*-1\r\n");
    assert_eq!(blocked.read_frame(), b"*-1\r\n");
}
