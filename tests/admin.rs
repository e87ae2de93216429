//! Admin API: the routes document, flips and versions, If-Match, tokens, every error status,
//! history, health, readiness and metrics.

mod support;

use std::time::Duration;

use support::turnout::route_of;
use support::{wait_until, Env, HttpResponse};

fn assert_error_body(r: &HttpResponse, what: &str) {
    let body = r.json();
    let message = body["error"].as_str().unwrap_or_else(|| {
        panic!("{what}: error body should be {{\"error\":\"...\"}}, got {body}")
    });
    assert!(!message.is_empty(), "{what}: empty error message");
}

fn is_rfc3339(s: &str) -> bool {
    // 2024-05-01T12:34:56Z / 2024-05-01T12:34:56.123+00:00
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z') || s.ends_with('z') || s[19..].contains('+') || s[19..].contains('-'))
}

#[test]
fn get_routes_returns_the_whole_table_with_an_etag() {
    let env = Env::standard();
    let r = env.turnout.admin_get("/v1/routes");
    assert_eq!(r.status, 200);
    let doc = r.json();
    let version = doc["version"].as_u64().expect("numeric version");
    assert_eq!(r.header("etag"), Some(format!("\"{version}\"").as_str()));
    let routes = doc["routes"].as_array().expect("routes array");
    let names: Vec<&str> = routes
        .iter()
        .map(|r| r["namespace"].as_str().expect("namespace"))
        .collect();
    assert_eq!(names, ["web-cache", "token-cache", "impact", "default"]);
    let expect = [
        ("web-cache", vec!["web:"], "legacy"),
        ("token-cache", vec!["tok:", "session:"], "new"),
        ("impact", vec!["impact:"], "new"),
        ("default", vec![], "legacy"),
    ];
    for (name, prefixes, target) in expect {
        let route = route_of(&doc, name);
        assert_eq!(route["prefixes"], serde_json::json!(prefixes), "{name}");
        assert_eq!(route["target"], target, "{name}");
        assert_eq!(route["mode"], "direct", "{name}");
        let changed_at = route["changed_at"].as_str().unwrap_or_default();
        assert!(is_rfc3339(changed_at), "{name}: changed_at {changed_at:?}");
        assert!(
            route["reason"].is_string() || route["reason"].is_null(),
            "{name}: reason {}",
            route["reason"]
        );
    }
}

#[test]
fn put_flips_a_route_bumps_the_version_and_records_history() {
    let env = Env::standard();
    let v0 = env.turnout.version();
    let r = env.turnout.admin_put(
        "/v1/routes/web-cache",
        r#"{"target":"new","reason":"cache warmed"}"#,
        &[("X-Turnout-Actor", "alice")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert_eq!(doc["version"].as_u64(), Some(v0 + 1));
    let route = route_of(&doc, "web-cache");
    assert_eq!(route["target"], "new");
    assert_eq!(route["reason"], "cache warmed");
    assert!(is_rfc3339(route["changed_at"].as_str().unwrap_or_default()));
    assert_eq!(route_of(&doc, "token-cache")["target"], "new");
    assert_eq!(route_of(&doc, "default")["target"], "legacy");
    // The PUT answer is the same document GET returns now.
    let get = env.turnout.admin_get("/v1/routes");
    assert_eq!(get.json(), doc);
    assert_eq!(get.header("etag"), Some(format!("\"{}\"", v0 + 1).as_str()));

    // Traffic follows.
    let mut c = env.turnout.raw();
    c.expect_cmd(&["SET", "web:flipped", "1"], b"+OK\r\n");
    assert_eq!(env.new.get("web:flipped").as_deref(), Some("1"));
    assert_eq!(env.legacy.get("web:flipped"), None);

    // A second change, then a no-op.
    let doc = env.turnout.flip("default", "new", "everything else too");
    assert_eq!(doc["version"].as_u64(), Some(v0 + 2));
    let noop = env.turnout.admin_put(
        "/v1/routes/web-cache",
        r#"{"target":"new","reason":"again"}"#,
        &[],
    );
    assert_eq!(noop.status, 200, "no-op PUT: {}", noop.text());
    assert_eq!(
        noop.json()["version"].as_u64(),
        Some(v0 + 2),
        "no-op keeps the version"
    );
    assert_eq!(
        route_of(&noop.json(), "web-cache")["reason"],
        "cache warmed",
        "no-op does not rewrite the route"
    );

    let history = env.turnout.admin_get("/v1/history");
    assert_eq!(history.status, 200);
    let entries = history.json()["entries"]
        .as_array()
        .expect("entries")
        .clone();
    assert_eq!(
        entries.len(),
        2,
        "no history entry for the no-op: {entries:?}"
    );
    let first = &entries[0];
    assert_eq!(first["version"].as_u64(), Some(v0 + 1));
    assert_eq!(first["namespace"], "web-cache");
    assert_eq!(first["from"], "legacy");
    assert_eq!(first["to"], "new");
    assert_eq!(first["reason"], "cache warmed");
    // The contract says the header is "recorded"; turnout may add who sent it (peer address).
    let actor = first["actor"].as_str().unwrap_or_default();
    assert!(actor.starts_with("alice"), "actor {actor:?}");
    assert!(
        is_rfc3339(first["at"].as_str().unwrap_or_default()),
        "{first}"
    );
    let second = &entries[1];
    assert_eq!(second["version"].as_u64(), Some(v0 + 2));
    assert_eq!(second["namespace"], "default");
    assert_eq!(second["from"], "legacy");
    assert_eq!(second["to"], "new");
}

#[test]
fn if_match_guards_against_stale_writes() {
    let env = Env::standard();
    let v = env.turnout.version();
    let body = r#"{"target":"new","reason":"guarded"}"#;
    let stale = (v + 7).to_string();
    for if_match in [stale.clone(), format!("\"{stale}\"")] {
        let r = env
            .turnout
            .admin_put("/v1/routes/web-cache", body, &[("If-Match", &if_match)]);
        assert_eq!(r.status, 412, "If-Match {if_match}: {}", r.text());
        assert_error_body(&r, "412");
    }
    assert_eq!(env.turnout.version(), v, "a refused PUT changes nothing");
    assert_eq!(env.turnout.target("web-cache"), "legacy");

    let r = env.turnout.admin_put(
        "/v1/routes/web-cache",
        body,
        &[("If-Match", &format!("\"{v}\""))],
    );
    assert_eq!(r.status, 200, "matching quoted If-Match: {}", r.text());
    assert_eq!(r.json()["version"].as_u64(), Some(v + 1));
    let r = env.turnout.admin_put(
        "/v1/routes/web-cache",
        r#"{"target":"legacy","reason":"guarded back"}"#,
        &[("If-Match", &(v + 1).to_string())],
    );
    assert_eq!(r.status, 200, "matching bare If-Match: {}", r.text());
    assert_eq!(r.json()["version"].as_u64(), Some(v + 2));
    // The old version is stale now.
    let r = env.turnout.admin_put(
        "/v1/routes/web-cache",
        body,
        &[("If-Match", &v.to_string())],
    );
    assert_eq!(r.status, 412);
}

#[test]
fn every_error_status() {
    let env = Env::standard();
    let t = &env.turnout;
    let v = t.version();

    let r = t.admin_put(
        "/v1/routes/no-such-namespace",
        r#"{"target":"new","reason":"x"}"#,
        &[],
    );
    assert_eq!(r.status, 404, "unknown namespace: {}", r.text());
    assert_error_body(&r, "unknown namespace");

    for path in ["/v1/nope", "/nope", "/v2/routes", "/"] {
        let r = t.admin_get(path);
        assert_eq!(r.status, 404, "GET {path}: {}", r.text());
    }

    for (method, path) in [
        ("DELETE", "/v1/routes/web-cache"),
        ("POST", "/v1/routes"),
        ("DELETE", "/v1/routes"),
        ("POST", "/v1/history"),
        ("POST", "/healthz"),
    ] {
        let r = t.admin(method, path, &[], None);
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
    }

    let bad_bodies = [
        (r#"{"target":"nwe","reason":"typo"}"#, "unknown endpoint"),
        (r#"{"target":"new","reason":"#, "truncated JSON"),
        ("target=new", "not JSON"),
        (r#"{"target":"new"}"#, "missing reason"),
        (r#"{"target":"new","reason":""}"#, "empty reason"),
        (r#"{"reason":"no target"}"#, "missing target"),
        (r#"{"target":7,"reason":"x"}"#, "target not a string"),
    ];
    for (body, what) in bad_bodies {
        let r = t.admin_put("/v1/routes/web-cache", body, &[]);
        assert_eq!(r.status, 400, "{what} ({body}): {}", r.text());
        assert_error_body(&r, what);
    }

    assert_eq!(t.version(), v, "no refused request changed the table");
    assert_eq!(t.target("web-cache"), "legacy");
    let history = t.admin_get("/v1/history").json();
    assert_eq!(history["entries"], serde_json::json!([]));
}

#[test]
fn a_configured_token_is_required_for_changes_only() {
    let env = Env::custom(
        |b| {
            b.admin_option("token_env = \"TURNOUT_TEST_ADMIN_TOKEN\"")
                .env("TURNOUT_TEST_ADMIN_TOKEN", "s3cret-token")
        },
        "legacy",
    );
    let t = &env.turnout;
    let v = t.version();
    let body = r#"{"target":"new","reason":"with token"}"#;
    let refused: [&[(&str, &str)]; 4] = [
        &[],
        &[("Authorization", "Bearer wrong")],
        &[("Authorization", "Bearer s3cret-token-and-more")],
        &[("Authorization", "s3cret-token")],
    ];
    for headers in refused {
        let r = t.admin_put("/v1/routes/web-cache", body, headers);
        assert_eq!(r.status, 401, "headers {headers:?}: {}", r.text());
        assert_error_body(&r, "401");
    }
    assert_eq!(t.version(), v);

    // Reads need no token.
    assert_eq!(t.admin_get("/v1/routes").status, 200);
    assert_eq!(t.admin_get("/v1/history").status, 200);
    assert_eq!(t.admin_get("/healthz").status, 200);
    assert_eq!(t.admin_get("/metrics").status, 200);

    let r = t.admin_put(
        "/v1/routes/web-cache",
        body,
        &[("Authorization", "Bearer s3cret-token")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"].as_u64(), Some(v + 1));
}

#[test]
fn healthz_is_ok() {
    let env = Env::standard();
    let r = env.turnout.admin_get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim(), "ok");
}

#[test]
fn readyz_follows_the_endpoints_used_by_routes() {
    let legacy = support::RedisServer::start();
    let mut new = support::RedisServer::start();
    // `spare` is configured but used by no route, and nothing listens there.
    let spare = support::ports::free_port();
    let body = format!(
        "{}\n[endpoints.spare]\naddress = \"127.0.0.1:{spare}\"\n",
        support::standard_body(&legacy, &new, "legacy")
    );
    let turnout = support::Turnout::start(&body);

    let ready = |expect: u16| {
        let mut last = None;
        let ok = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            let r = turnout.admin_get("/readyz");
            let status = r.status;
            last = Some(r);
            status == expect
        });
        let r = last.expect("at least one /readyz");
        assert!(
            ok,
            "/readyz should become {expect}: {} {}",
            r.status,
            r.text()
        );
        r.json()
    };

    let doc = ready(200);
    assert_eq!(doc["ready"], true, "{doc}");
    assert_eq!(doc["endpoints"]["legacy"], "ok", "{doc}");
    assert_eq!(doc["endpoints"]["new"], "ok", "{doc}");

    new.stop();
    let doc = ready(503);
    assert_eq!(doc["ready"], false, "{doc}");
    assert_eq!(doc["endpoints"]["legacy"], "ok", "{doc}");
    let cause = doc["endpoints"]["new"].as_str().unwrap_or_default();
    assert!(cause.starts_with("error"), "endpoints.new: {doc}");

    new.restart();
    let doc = ready(200);
    assert_eq!(doc["ready"], true, "{doc}");
}

fn metric_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

fn metric_value(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in metric line {line:?}"))
}

#[test]
fn metrics_count_requests_flips_and_the_table_version() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["SET", "web:m", "1"], b"+OK\r\n");
    c.expect_cmd(&["GET", "web:m"], b"$1\r\n1\r\n");
    c.expect_cmd(&["SET", "tok:m", "1"], b"+OK\r\n");
    c.send_cmd(&["FOOBARBAZQUX", "x"]);
    let unknown = c.read_frame();
    assert!(unknown.starts_with(b"-ERR unknown command"), "{unknown:?}");
    // One protocol error on another connection.
    let mut bad = env.turnout.raw();
    bad.send(b"*2\r\n$3\r\nGET\r\n$x\r\n");
    let _ = bad.read_to_eof(Duration::from_secs(5));
    let version = env.turnout.flip("web-cache", "new", "metrics")["version"]
        .as_u64()
        .expect("version");

    let r = env.turnout.admin_get("/metrics");
    assert_eq!(r.status, 200);
    let text = r.text();

    let requests = metric_lines(&text, "turnout_requests_total");
    let has = |ns: &str, ep: &str, command: &str| {
        requests.iter().any(|l| {
            let lower = l.to_lowercase();
            l.contains(&format!("namespace=\"{ns}\""))
                && l.contains(&format!("endpoint=\"{ep}\""))
                && lower.contains(&format!("command=\"{command}\""))
                && metric_value(l) >= 1.0
        })
    };
    assert!(
        has("web-cache", "legacy", "set"),
        "requests_total web-cache/legacy/set:\n{text}"
    );
    assert!(
        has("web-cache", "legacy", "get"),
        "requests_total web-cache/legacy/get:\n{text}"
    );
    assert!(
        has("token-cache", "new", "set"),
        "requests_total token-cache/new/set:\n{text}"
    );

    let table_version = metric_lines(&text, "turnout_route_table_version");
    assert_eq!(table_version.len(), 1, "{text}");
    assert_eq!(metric_value(table_version[0]), version as f64, "{text}");

    let flips = metric_lines(&text, "turnout_flips_total");
    assert!(
        flips
            .iter()
            .any(|l| l.contains("namespace=\"web-cache\"") && metric_value(l) == 1.0),
        "flips_total{{namespace=\"web-cache\"}} 1:\n{text}"
    );

    for name in [
        "turnout_errors_total",
        "turnout_request_duration_seconds",
        "turnout_client_connections",
        "turnout_upstream_connections",
    ] {
        let present = text
            .lines()
            .any(|l| !l.starts_with('#') && l.starts_with(name));
        assert!(present, "{name} missing:\n{text}");
    }
    assert!(
        !text.to_lowercase().contains("foobarbazqux"),
        "raw client input must not become a metric label:\n{text}"
    );
}

#[test]
fn concurrent_puts_with_the_same_if_match_let_exactly_one_through() {
    let env = Env::standard();
    let admin = env.turnout.admin_addr();
    for round in 0..5 {
        let v = env.turnout.version();
        let target = if round % 2 == 0 { "new" } else { "legacy" };
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let admin = admin.clone();
                std::thread::spawn(move || {
                    let body = format!(r#"{{"target":"{target}","reason":"race {round}/{i}"}}"#);
                    let if_match = format!("\"{v}\"");
                    support::http::request(
                        &admin,
                        "PUT",
                        "/v1/routes/web-cache",
                        &[("If-Match", &if_match)],
                        Some(&body),
                    )
                    .status
                })
            })
            .collect();
        let mut statuses: Vec<u16> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 412, 412, 412, 412, 412, 412, 412],
            "round {round}"
        );
        assert_eq!(env.turnout.version(), v + 1, "round {round}");
        assert_eq!(env.turnout.target("web-cache"), target, "round {round}");
    }
}

#[test]
fn concurrent_flips_get_distinct_consecutive_versions() {
    let env = Env::standard();
    let v0 = env.turnout.version();
    let admin = env.turnout.admin_addr();
    let namespaces = [
        ("web-cache", "legacy"),
        ("token-cache", "new"),
        ("impact", "new"),
        ("default", "legacy"),
    ];
    const FLIPS_EACH: usize = 10;
    let threads: Vec<_> = namespaces
        .iter()
        .map(|&(ns, initial)| {
            let admin = admin.clone();
            std::thread::spawn(move || {
                let other = if initial == "legacy" { "new" } else { "legacy" };
                let mut versions = Vec::new();
                for k in 0..FLIPS_EACH {
                    let target = if k % 2 == 0 { other } else { initial };
                    let body = format!(r#"{{"target":"{target}","reason":"{ns} #{k}"}}"#);
                    let r = support::http::request(
                        &admin,
                        "PUT",
                        &format!("/v1/routes/{ns}"),
                        &[],
                        Some(&body),
                    );
                    assert_eq!(r.status, 200, "{ns} #{k}: {}", r.text());
                    versions.push(r.json()["version"].as_u64().expect("version"));
                }
                versions
            })
        })
        .collect();
    let mut versions: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("flipper"))
        .collect();
    versions.sort_unstable();
    let total = (namespaces.len() * FLIPS_EACH) as u64;
    let expected: Vec<u64> = (v0 + 1..=v0 + total).collect();
    assert_eq!(
        versions, expected,
        "each accepted change gets its own version"
    );
    assert_eq!(env.turnout.version(), v0 + total);

    let entries = env.turnout.admin_get("/v1/history").json()["entries"]
        .as_array()
        .expect("entries")
        .clone();
    let history_versions: Vec<u64> = entries
        .iter()
        .map(|e| e["version"].as_u64().expect("entry version"))
        .collect();
    assert_eq!(
        history_versions, expected,
        "history is complete and oldest first"
    );
    // Each namespace ends where it started (an even number of flips).
    for (ns, initial) in namespaces {
        assert_eq!(env.turnout.target(ns), initial, "{ns}");
    }
}
