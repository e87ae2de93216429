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
