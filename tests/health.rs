//! Endpoint health checks: the periodic checker drives `/readyz`, `GET /v1/endpoints`,
//! `turnout ctl endpoints` and the `turnout_endpoint_*` metrics; failures show their cause
//! and count their event (connect errors, refused credentials) without ever showing a
//! password.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{standard_body, wait_until, RawClient, RedisServer, Turnout};

/// Long enough for several checks at the 200 ms interval these tests use.
const WITHIN: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
const EVENTS: [&str; 6] = [
    "connect_error",
    "tls_error",
    "auth_failure",
    "moved",
    "ask",
    "failover",
];

fn with_health(body: &str, interval: &str) -> String {
    format!("{body}\n[health]\ninterval = \"{interval}\"\n")
}

/// Polls `/readyz` until it answers `status`; returns its JSON.
fn readyz_becomes(turnout: &Turnout, status: u16) -> Value {
    let mut last = None;
    let ok = wait_until(WITHIN, POLL, || {
        let r = turnout.admin_get("/readyz");
        let done = r.status == status;
        last = Some(r);
        done
    });
    let r = last.expect("at least one /readyz");
    assert!(
        ok,
        "/readyz should become {status}: {} {}",
        r.status,
        r.text()
    );
    r.json()
}

/// The `/v1/endpoints` entry of `name`.
fn endpoint(turnout: &Turnout, name: &str) -> Value {
    let doc = turnout.admin_get("/v1/endpoints").json();
    doc["endpoints"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no endpoint {name} in {doc}"))
}

/// Polls `/v1/endpoints` until `name`'s entry satisfies `check`; returns it.
fn endpoint_becomes(turnout: &Turnout, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(WITHIN, POLL, || {
        last = endpoint(turnout, name);
        check(&last)
    });
    assert!(
        ok,
        "endpoint {name} did not reach the expected state: {last}"
    );
    last
}

/// The value of one exact metric series (`name{labels}`), if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn event_series(endpoint: &str, event: &str) -> String {
    format!("turnout_endpoint_events_total{{endpoint=\"{endpoint}\",event=\"{event}\"}}")
}

#[test]
fn readyz_goes_down_when_an_endpoint_stops_and_up_when_it_returns() {
    let legacy = RedisServer::start();
    let mut new = RedisServer::start();
    let turnout = Turnout::start(&with_health(
        &standard_body(&legacy, &new, "legacy"),
        "200ms",
    ));

    let doc = readyz_becomes(&turnout, 200);
    assert_eq!(doc["ready"], true, "{doc}");
    assert_eq!(doc["endpoints"]["legacy"], "ok", "{doc}");
    assert_eq!(doc["endpoints"]["new"], "ok", "{doc}");
    let check = &doc["checks"]["new"];
    assert_eq!(check["up"], true, "{doc}");
    assert_eq!(check["kind"], "standalone", "{doc}");
    assert_eq!(check["primary"], new.addr().as_str(), "{doc}");
    assert_eq!(check["last_error"], Value::Null, "{doc}");
    assert!(check["checked_at"].is_string(), "{doc}");

    new.stop();
    let doc = readyz_becomes(&turnout, 503);
    assert_eq!(doc["ready"], false, "{doc}");
    assert_eq!(doc["endpoints"]["legacy"], "ok", "{doc}");
    let status = doc["endpoints"]["new"].as_str().unwrap_or_default();
    assert!(status.starts_with("error: "), "{doc}");
    let check = &doc["checks"]["new"];
    assert_eq!(check["up"], false, "{doc}");
    let cause = check["last_error"].as_str().unwrap_or_default();
    assert!(
        cause.starts_with("connect failed") || cause.starts_with("connection"),
        "{doc}"
    );
    assert_eq!(status, format!("error: {cause}"), "{doc}");

    // Still down several checks later: the transition is logged once, not per check.
    let first = endpoint(&turnout, "new")["checked_at"].clone();
    endpoint_becomes(&turnout, "new", |e| {
        e["checked_at"] != first && e["up"] == false
    });
    let second = endpoint(&turnout, "new")["checked_at"].clone();
    endpoint_becomes(&turnout, "new", |e| e["checked_at"] != second);

    new.restart();
    let doc = readyz_becomes(&turnout, 200);
    assert_eq!(doc["endpoints"]["new"], "ok", "{doc}");
    assert_eq!(doc["checks"]["new"]["last_error"], Value::Null, "{doc}");

    let logs = turnout.log();
    let downs = logs
        .lines()
        .filter(|l| l.contains("endpoint is down") && l.contains("endpoint=new"))
        .count();
    let ups = logs
        .lines()
        .filter(|l| l.contains("endpoint is up again") && l.contains("endpoint=new"))
        .count();
    assert_eq!((downs, ups), (1, 1), "{logs}");
}

#[test]
fn readyz_answers_from_the_last_check_without_probing_per_request() {
    let legacy = RedisServer::start();
    let mut new = RedisServer::start();
    // One check at start-up, the next an hour later.
    let turnout = Turnout::start(&with_health(&standard_body(&legacy, &new, "legacy"), "1h"));
    let doc = readyz_becomes(&turnout, 200);
    let checked_at = doc["checks"]["new"]["checked_at"].clone();
    assert!(checked_at.is_string(), "{doc}");
    new.stop();
    for _ in 0..3 {
        let r = turnout.admin_get("/readyz");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["checks"]["new"]["checked_at"], checked_at);
    }
}

#[test]
fn endpoints_api_and_ctl_show_up_down_and_the_last_error() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    // `spare` is used by no route and nothing listens there.
    let spare = support::ports::free_port();
    let body = format!(
        "{}\n[endpoints.spare]\naddress = \"127.0.0.1:{spare}\"\n",
        standard_body(&legacy, &new, "legacy")
    );
    let turnout = Turnout::start(&with_health(&body, "200ms"));

    let down = endpoint_becomes(&turnout, "spare", |e| e["up"] == false);
    assert_eq!(down["in_use"], false, "{down}");
    assert_eq!(down["kind"], "standalone", "{down}");
    assert_eq!(
        down["description"],
        format!("127.0.0.1:{spare}").as_str(),
        "{down}"
    );
    assert!(
        down["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("connect failed")),
        "{down}"
    );
    assert!(
        down["events"]["connect_error"].as_u64() >= Some(1),
        "{down}"
    );
    let up = endpoint_becomes(&turnout, "legacy", |e| e["up"] == true);
    assert_eq!(up["in_use"], true, "{up}");
    assert_eq!(up["primary"], legacy.addr().as_str(), "{up}");
    for event in EVENTS {
        assert_eq!(up["events"][event], 0, "{event}: {up}");
    }
    // An endpoint no route uses does not make turnout unready.
    readyz_becomes(&turnout, 200);

    let out = turnout.ctl(&["endpoints"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ENDPOINT") && lines[0].ends_with("LAST ERROR"),
        "{}",
        out.stdout
    );
    let row = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row: {}", out.stdout))
            .split_whitespace()
            .collect()
    };
    assert_eq!(
        row("legacy")[1..4],
        ["standalone", "up", "yes"],
        "{}",
        out.stdout
    );
    let spare_row = row("spare");
    assert_eq!(
        spare_row[1..4],
        ["standalone", "down", "no"],
        "{}",
        out.stdout
    );
    assert!(
        spare_row.iter().any(|c| c.starts_with("connect_error=")),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("spare") && l.contains("connect failed")),
        "{}",
        out.stdout
    );

    let out = turnout.ctl(&["--json", "endpoints"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("ctl --json endpoints is not JSON ({e}): {}", out.stdout));
    let names: Vec<&str> = doc["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["legacy", "new", "spare"], "{doc}");
}

#[test]
fn metrics_have_every_endpoint_series_and_count_connect_errors() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let spare = support::ports::free_port();
    let body = format!(
        "{}\n[endpoints.spare]\naddress = \"127.0.0.1:{spare}\"\n",
        standard_body(&legacy, &new, "legacy")
    );
    let turnout = Turnout::start(&with_health(&body, "200ms"));

    let mut text = String::new();
    let up = wait_until(WITHIN, POLL, || {
        text = turnout.admin_get("/metrics").text();
        metric(&text, "turnout_endpoint_up{endpoint=\"legacy\"}") == Some(1.0)
    });
    assert!(
        up,
        "turnout_endpoint_up{{endpoint=\"legacy\"}} 1 missing:\n{text}"
    );
    for name in ["legacy", "new"] {
        for event in EVENTS {
            let series = event_series(name, event);
            assert_eq!(metric(&text, &series), Some(0.0), "{series}:\n{text}");
        }
    }
    assert!(
        text.contains("# TYPE turnout_endpoint_events_total counter"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "turnout_endpoint_primary{{endpoint=\"legacy\",address=\"{}\"}} 1",
            legacy.addr()
        )),
        "{text}"
    );

    // Every refused connection counts: the count keeps going up while `spare` is down.
    let series = event_series("spare", "connect_error");
    let mut first = 0.0;
    let counted = wait_until(WITHIN, POLL, || {
        text = turnout.admin_get("/metrics").text();
        first = metric(&text, &series).unwrap_or(0.0);
        first >= 1.0
    });
    assert!(counted, "{series} never counted:\n{text}");
    assert_eq!(
        metric(&text, "turnout_endpoint_up{endpoint=\"spare\"}"),
        Some(0.0),
        "{text}"
    );
    let more = wait_until(WITHIN, POLL, || {
        text = turnout.admin_get("/metrics").text();
        metric(&text, &series).unwrap_or(0.0) > first
    });
    assert!(more, "{series} stayed at {first}:\n{text}");
    let api = endpoint(&turnout, "spare");
    assert!(
        api["events"]["connect_error"].as_f64() >= Some(first),
        "{api}"
    );
}

#[test]
fn a_refused_password_shows_as_auth_failure_and_never_the_password() {
    const RIGHT: &str = "Right-Password-31c7";
    const WRONG: &str = "Wrong-Password-8d02";
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let mut c = RawClient::connect(&new.addr());
    c.expect_cmd(&["CONFIG", "SET", "requirepass", RIGHT], b"+OK\r\n");
    let body = standard_body(&legacy, &new, "legacy").replace(
        &format!("address = \"{}\"", new.addr()),
        &format!(
            "address = \"{}\"\nusername = \"default\"\npassword_env = \"TURNOUT_TEST_NEW_PW\"",
            new.addr()
        ),
    );
    let turnout = Turnout::builder(&with_health(&body, "200ms"))
        .env("TURNOUT_TEST_NEW_PW", WRONG)
        .start();

    let entry = endpoint_becomes(&turnout, "new", |e| {
        e["up"] == false && e["events"]["auth_failure"].as_u64() >= Some(1)
    });
    let cause = entry["last_error"].as_str().unwrap_or_default();
    assert!(
        cause.starts_with("authentication failed: WRONGPASS"),
        "{entry}"
    );
    let ready = readyz_becomes(&turnout, 503);
    assert!(
        ready["endpoints"]["new"]
            .as_str()
            .is_some_and(|s| s.starts_with("error: authentication failed")),
        "{ready}"
    );
    let metrics = turnout.admin_get("/metrics").text();
    let failures = metric(&metrics, &event_series("new", "auth_failure")).unwrap_or(0.0);
    assert!(failures >= 1.0, "{metrics}");
    assert_eq!(
        metric(&metrics, "turnout_endpoint_up{endpoint=\"new\"}"),
        Some(0.0),
        "{metrics}"
    );
    let ctl = turnout.ctl(&["endpoints"], &[]);
    assert_eq!(ctl.code(), 0, "{ctl:?}");
    assert!(ctl.stdout.contains("auth_failure="), "{}", ctl.stdout);
    let ctl_json = turnout.ctl(&["--json", "endpoints"], &[]);
    let endpoints = turnout.admin_get("/v1/endpoints").text();
    let logs = turnout.all_logs();
    for (what, text) in [
        ("/v1/endpoints", endpoints.as_str()),
        ("/readyz", &ready.to_string()),
        ("/metrics", metrics.as_str()),
        ("ctl endpoints", ctl.stdout.as_str()),
        ("ctl --json endpoints", ctl_json.stdout.as_str()),
        ("logs", logs.as_str()),
    ] {
        assert!(!text.contains(WRONG), "{what} shows the password:\n{text}");
        assert!(!text.contains(RIGHT), "{what} shows a password:\n{text}");
    }
}

#[test]
fn a_cluster_endpoint_is_up_once_its_slots_are_served() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let shards = RedisServer::start_with_args(&["--cluster-enabled", "yes"]);
    let body = format!(
        "{}\n[endpoints.shards]\ncluster_seeds = [\"{}\"]\n",
        standard_body(&legacy, &new, "legacy"),
        shards.addr()
    );
    let turnout = Turnout::start(&with_health(&body, "200ms"));

    // A fresh cluster node serves no slots: cluster_state:fail.
    let down = endpoint_becomes(&turnout, "shards", |e| e["up"] == false);
    assert_eq!(down["kind"], "cluster", "{down}");
    assert_eq!(down["last_error"], "cluster_state:fail", "{down}");
    assert_eq!(
        down["description"],
        format!("cluster via {}", shards.addr()).as_str(),
        "{down}"
    );

    let mut c = RawClient::connect(&shards.addr());
    c.expect_cmd(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"], b"+OK\r\n");
    let up = endpoint_becomes(&turnout, "shards", |e| e["up"] == true);
    assert_eq!(up["last_error"], Value::Null, "{up}");
    assert_eq!(up["events"]["connect_error"], 0, "{up}");
}

/// Up or down is the health checker's to say: a cluster connection loading its slot map
/// (which works) does not mark the endpoint up while its last check said down.
#[test]
fn a_slot_map_load_leaves_up_and_down_to_the_health_checks() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let shards = RedisServer::start_with_args(&["--cluster-enabled", "yes"]);
    let body = format!(
        "{}\n[endpoints.shards]\ncluster_seeds = [\"{}\"]\n\n[[namespaces]]\nname = \"sharded\"\nprefixes = [\"sh:\"]\ntarget = \"shards\"\n",
        standard_body(&legacy, &new, "legacy"),
        shards.addr()
    );
    // One check at start-up, the next one an hour later.
    let turnout = Turnout::start(&with_health(&body, "1h"));
    let down = endpoint_becomes(&turnout, "shards", |e| e["up"] == false);
    assert_eq!(down["last_error"], "cluster_state:fail", "{down}");

    // The node serves every slot now: a client's connection loads the slot map and works.
    let mut node = RawClient::connect(&shards.addr());
    node.expect_cmd(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"], b"+OK\r\n");
    let ok = wait_until(WITHIN, POLL, || {
        node.read_reply_after(&["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
    });
    assert!(ok, "the node reports cluster_state:ok");
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "sh:k", "v"], b"+OK\r\n");
    c.expect_cmd(&["GET", "sh:k"], b"$1\r\nv\r\n");

    // The endpoint's state is still the last check's.
    let still = endpoint(&turnout, "shards");
    assert_eq!(still["up"], false, "{still}");
    assert_eq!(still["last_error"], "cluster_state:fail", "{still}");
    assert_eq!(still["checked_at"], down["checked_at"], "{still}");
}

/// Connections `server` has accepted so far (this query's own included).
fn connections_received(server: &RedisServer) -> u64 {
    let info = server
        .command(&["INFO", "stats"])
        .bulk_text()
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_connections_received in INFO")
}

#[test]
fn checks_of_a_working_endpoint_reuse_one_connection() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let turnout = Turnout::start(&with_health(
        &standard_body(&legacy, &new, "legacy"),
        "200ms",
    ));
    endpoint_becomes(&turnout, "legacy", |e| e["up"] == true);
    let before = connections_received(&legacy);
    for _ in 0..3 {
        let seen = endpoint(&turnout, "legacy")["checked_at"].clone();
        endpoint_becomes(&turnout, "legacy", |e| {
            e["checked_at"] != seen && e["up"] == true
        });
    }
    // Three more checks; the only new connection is this second INFO's.
    let made = connections_received(&legacy) - before;
    assert_eq!(made, 1, "{made} connections for three checks");
}
