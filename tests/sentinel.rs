//! Sentinel endpoints against real sentinels: discovery, a failover under load, a killed
//! primary, and clear errors when the sentinels cannot name a primary.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::raw::ReadError;
use support::sentinel::{SentinelSet, MASTER_NAME};
use support::{cmd, wait_until, RawClient, Reply, Turnout};

/// turnout in front of `set`: endpoint `main` (the monitored master) is the default route.
/// With `ghost`, `ghost:` keys go to endpoint `ghost`, whose master name no sentinel knows.
fn turnout_for(set: &SentinelSet, ghost: bool) -> Turnout {
    let sentinels = set.sentinels_toml();
    let mut body = format!(
        r#"[endpoints.main]
sentinels = {sentinels}
master_name = "{MASTER_NAME}"

[default]
target = "main"
"#
    );
    if ghost {
        body.push_str(&format!(
            r#"
[endpoints.ghost]
sentinels = {sentinels}
master_name = "nosuch"

[[namespaces]]
name = "ghost"
prefixes = ["ghost:"]
target = "ghost"
"#
        ));
    }
    Turnout::builder(&body)
        .proxy_option(r#"connect_timeout = "1s""#)
        .start()
}

fn metrics(turnout: &Turnout) -> String {
    let r = turnout.admin_get("/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    r.text()
}

/// The value of the metric line starting with `prefix` (`name{labels}`), if present.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
}

fn primary_gauge(addr: &str) -> String {
    format!("turnout_endpoint_primary{{endpoint=\"main\",address=\"{addr}\"}}")
}

#[test]
fn a_sentinel_endpoint_serves_the_primary_and_names_an_unknown_master() {
    let set = SentinelSet::start();
    let primary = set.master_addr().expect("sentinels name the primary");
    let turnout = turnout_for(&set, true);
    let mut client = turnout.raw();
    client.expect_cmd(&["SET", "k1", "v1"], b"+OK\r\n");
    client.expect_cmd(&["GET", "k1"], b"$2\r\nv1\r\n");
    assert_eq!(set.server(&primary).get("k1").as_deref(), Some("v1"));

    let ports: Vec<String> = set.sentinels().iter().map(|s| s.addr()).collect();
    let expected = format!(
        "-ERR turnout: endpoint 'ghost' unavailable: sentinels: no sentinel knows master 'nosuch' ({}: master unknown; {}: master unknown; {}: master unknown)\r\n",
        ports[0], ports[1], ports[2]
    );
    client.expect_cmd(&["GET", "ghost:1"], expected.as_bytes());
    // The connection stays usable.
    client.expect_cmd(&["GET", "k1"], b"$2\r\nv1\r\n");
    let seen = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        metric(&metrics(&turnout), &primary_gauge(&primary)) == Some(1.0)
    });
    assert!(
        seen,
        "no primary gauge for {primary}:\n{}",
        metrics(&turnout)
    );
}

#[test]
fn no_reachable_sentinel_is_a_clear_error() {
    let port = support::ports::free_port();
    let body = format!(
        r#"[endpoints.main]
sentinels = ["127.0.0.1:{port}"]
master_name = "mymaster"

[default]
target = "main"
"#
    );
    let turnout = Turnout::start(&body);
    let mut client = turnout.raw();
    let reply = String::from_utf8_lossy(&client.roundtrip(&["GET", "k"])).into_owned();
    let prefix = format!(
        "-ERR turnout: endpoint 'main' unavailable: sentinels: no sentinel knows master 'mymaster' (127.0.0.1:{port}: connect failed: "
    );
    assert!(reply.starts_with(&prefix), "{reply:?}");
    // The connection stays usable, and says the same.
    let again = String::from_utf8_lossy(&client.roundtrip(&["GET", "k"])).into_owned();
    assert!(again.starts_with(&prefix), "{again:?}");
}

/// What one load client saw.
#[derive(Default)]
struct Outcome {
    /// Acknowledged writes: key, value, when the command was sent.
    writes: Vec<(String, String, Instant)>,
    /// Error replies, with when the command was sent.
    errors: Vec<(String, Instant)>,
    /// The connection broke (EOF, reset, timeout) instead of answering.
    broken: Option<String>,
    /// A reply of the wrong kind, or a GET that read back something other than the value
    /// just written: what happened, and when the SET was sent.
    mismatches: Vec<(String, Instant)>,
}

/// Mixed SET/GET load on one connection until `stop` (bounded to `max_ops` and 60 s).
fn load(addr: String, id: usize, stop: Arc<AtomicBool>, max_ops: usize) -> Outcome {
    let mut client = RawClient::connect(&addr);
    let mut out = Outcome::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..max_ops {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let key = format!("load:{id}:{i}");
        let value = format!("v{i}");
        let set_sent = Instant::now();
        if let Err(e) = client.try_send(&cmd(&["SET", &key, &value])) {
            out.broken = Some(format!("write: {e}"));
            break;
        }
        match client.read_reply_within(Duration::from_secs(10)) {
            Ok(Reply::Simple(s)) if s == "OK" => {
                out.writes.push((key.clone(), value.clone(), set_sent))
            }
            Ok(Reply::Error(e)) => {
                out.errors.push((e, set_sent));
                continue;
            }
            Ok(other) => {
                out.mismatches
                    .push((format!("SET {key}: {other:?}"), set_sent));
                continue;
            }
            Err(e) => {
                out.broken = Some(format!("{e:?}"));
                break;
            }
        }
        let sent = Instant::now();
        if let Err(e) = client.try_send(&cmd(&["GET", &key])) {
            out.broken = Some(format!("write: {e}"));
            break;
        }
        match client.read_reply_within(Duration::from_secs(10)) {
            Ok(Reply::Bulk(Some(v))) if v == value.as_bytes() => {}
            Ok(Reply::Error(e)) => out.errors.push((e, sent)),
            Ok(other) => out
                .mismatches
                .push((format!("GET {key}: {other:?}"), set_sent)),
            Err(ReadError::Eof { .. }) => {
                out.broken = Some("EOF".to_string());
                break;
            }
            Err(e) => {
                out.broken = Some(format!("{e:?}"));
                break;
            }
        }
    }
    out
}

/// Commands a pipelining client keeps in flight.
const WINDOW: usize = 8;

/// SETs with up to [`WINDOW`] in flight on one connection until `stop` (bounded to `max_ops`
/// and 60 s): at the switch, some are in flight on the old primary.
fn pipelined_load(addr: String, id: usize, stop: Arc<AtomicBool>, max_ops: usize) -> Outcome {
    let mut client = RawClient::connect(&addr);
    let mut out = Outcome::default();
    let mut in_flight = std::collections::VecDeque::with_capacity(WINDOW);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0;
    while next < max_ops || !in_flight.is_empty() {
        let more = next < max_ops && !stop.load(Ordering::Relaxed) && Instant::now() < deadline;
        if more && in_flight.len() < WINDOW {
            let (key, value) = (format!("pipe:{id}:{next}"), format!("p{next}"));
            next += 1;
            if let Err(e) = client.try_send(&cmd(&["SET", &key, &value])) {
                out.broken = Some(format!("write: {e}"));
                break;
            }
            in_flight.push_back((key, value, Instant::now()));
            continue;
        }
        let Some((key, value, sent)) = in_flight.pop_front() else {
            break;
        };
        match client.read_reply_within(Duration::from_secs(10)) {
            Ok(Reply::Simple(s)) if s == "OK" => out.writes.push((key, value, sent)),
            Ok(Reply::Error(e)) => out.errors.push((e, sent)),
            Ok(other) => out.mismatches.push((format!("SET {key}: {other:?}"), sent)),
            Err(e) => {
                out.broken = Some(format!("{e:?}"));
                break;
            }
        }
    }
    out
}

#[test]
fn a_failover_under_load_moves_every_client_to_the_new_primary() {
    const CLIENTS: usize = 4;
    let set = SentinelSet::start();
    let old = set.master_addr().expect("sentinels name the primary");
    let turnout = turnout_for(&set, false);
    let stop = Arc::new(AtomicBool::new(false));
    // Clients 0 and 1 wait for each reply (SET, then GET it back); 2 and 3 pipeline SETs.
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (addr, stop) = (turnout.proxy_addr(), stop.clone());
            std::thread::spawn(move || {
                if id < 2 {
                    load(addr, id, stop, 200_000)
                } else {
                    pipelined_load(addr, id, stop, 200_000)
                }
            })
        })
        .collect();
    // Two clients blocked on the old primary: their commands are in flight at the switch.
    // One sends another command after it, the other waits for Sentinel to demote the old
    // primary.
    let mut switching = turnout.raw();
    switching.send_cmd(&["BLPOP", "blocked:a", "25"]);
    let mut blocked = turnout.raw();
    blocked.send_cmd(&["BLPOP", "blocked:list", "25"]);
    std::thread::sleep(Duration::from_millis(500));

    let reply = set.sentinels()[0]
        .command(&["SENTINEL", "FAILOVER", MASTER_NAME])
        .expect("SENTINEL FAILOVER");
    assert_eq!(reply, Reply::Simple("OK".to_string()));
    let new = set.wait_new_master(&old, Duration::from_secs(20));
    // The moment turnout shows the switch: writes sent after it must reach the new primary.
    let mut switched_at = None;
    let followed = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        let seen = metric(&metrics(&turnout), &primary_gauge(&new)) == Some(1.0);
        if seen {
            switched_at = Some(Instant::now());
        }
        seen
    });
    assert!(
        followed,
        "turnout did not follow the switch to {new}:\n{}",
        metrics(&turnout)
    );
    let switched_at = switched_at.unwrap_or_else(Instant::now);
    // A command queued behind one in flight on the old primary: turnout leaves that
    // connection, so the one in flight gets an error reply and the new one reaches the new
    // primary, on the same client connection.
    switching.send_cmd(&["SET", "switching:after", "1"]);
    let frames = switching.read_frames(2, Duration::from_secs(10));
    assert_eq!(
        support::show(&frames[0]),
        support::show(b"-ERR turnout: endpoint 'main' unavailable: the primary changed (failover) while the command was in flight\r\n")
    );
    assert_eq!(support::show(&frames[1]), "+OK\\r\\n");
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<Outcome> = workers
        .into_iter()
        .map(|w| w.join().expect("load thread"))
        .collect();

    let new_server = set.server(&new);
    for (id, out) in outcomes.iter().enumerate() {
        assert_eq!(out.broken, None, "client {id}'s connection broke");
        // A write the old primary acknowledged after Sentinel promoted the replica, but
        // before turnout heard of it, is lost (asynchronous replication): the GET that
        // follows it on the new primary reads nil. At most one per client, and only for a
        // write sent before turnout switched.
        assert!(
            out.mismatches.len() <= 1,
            "client {id}: {:?}",
            out.mismatches
        );
        for (what, set_sent) in &out.mismatches {
            assert!(
                *set_sent < switched_at,
                "client {id}, after the switch: {what}"
            );
            assert!(
                what.starts_with("GET ") && what.ends_with("Bulk(None)"),
                "client {id}: {what}"
            );
        }
        assert!(
            out.errors.len() <= WINDOW,
            "client {id} saw {} errors: {:?}",
            out.errors.len(),
            out.errors
        );
        println!(
            "client {id}: {} writes, errors {:?}, lost writes {:?}",
            out.writes.len(),
            out.errors.iter().map(|(e, _)| e).collect::<Vec<_>>(),
            out.mismatches.iter().map(|(m, _)| m).collect::<Vec<_>>()
        );
        for (error, sent) in &out.errors {
            assert!(
                error.starts_with("ERR turnout: endpoint 'main' unavailable: "),
                "client {id}: {error}"
            );
            assert!(
                *sent < switched_at,
                "client {id}, after the switch: {error}"
            );
        }
        let after: Vec<&(String, String, Instant)> = out
            .writes
            .iter()
            .filter(|(_, _, sent)| *sent > switched_at)
            .collect();
        assert!(
            !after.is_empty(),
            "client {id} made no write after the switch"
        );
        let keys: Vec<String> = after.iter().map(|(k, _, _)| k.clone()).collect();
        let found = new_server.exists_many(&keys);
        let missing: Vec<&String> = keys
            .iter()
            .zip(&found)
            .filter(|(_, f)| !**f)
            .map(|(k, _)| k)
            .collect();
        assert!(
            missing.is_empty(),
            "client {id}: {} writes after the switch missing on {new}: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    // Sentinel demotes the old primary, which unblocks or kills its clients: the blocked
    // command gets an error reply, and its connection then reaches the new primary.
    let unblocked = blocked
        .read_reply_within(Duration::from_secs(20))
        .expect("a reply to the blocked BLPOP");
    let error = unblocked
        .error()
        .unwrap_or_else(|| panic!("BLPOP: {unblocked:?}"));
    assert!(
        error.starts_with("ERR turnout: endpoint 'main' unavailable: ")
            || error.starts_with("UNBLOCKED "),
        "BLPOP: {error}"
    );
    println!("blocked client: {error}");
    blocked.expect_cmd(&["SET", "blocked:after", "1"], b"+OK\r\n");
    assert_eq!(new_server.get("blocked:after").as_deref(), Some("1"));
    assert_eq!(new_server.get("switching:after").as_deref(), Some("1"));
    let readyz = turnout.admin_get("/readyz");
    assert_eq!(readyz.status, 200, "/readyz: {}", readyz.text());
    let text = metrics(&turnout);
    assert_eq!(metric(&text, &primary_gauge(&new)), Some(1.0), "{text}");
    assert_eq!(metric(&text, &primary_gauge(&old)), Some(0.0), "{text}");
    let failovers = metric(
        &text,
        "turnout_endpoint_events_total{endpoint=\"main\",event=\"failover\"}",
    );
    assert!(failovers.is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        turnout.log().contains("primary changed"),
        "{}",
        turnout.log()
    );
}

#[test]
fn a_killed_primary_is_replaced_within_the_failover_time() {
    let mut set = SentinelSet::start();
    let old = set.master_addr().expect("sentinels name the primary");
    let turnout = turnout_for(&set, false);
    let mut client = turnout.raw();
    client.expect_cmd(&["SET", "before", "1"], b"+OK\r\n");
    set.kill_server(&old);
    let started = Instant::now();
    // Each attempt is an error reply until the sentinels promote the replica (down after
    // 1 s, then an election); the connection stays the same throughout.
    let mut errors = Vec::new();
    let mut attempt = 0;
    let served = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        attempt += 1;
        let value = format!("after{attempt}");
        let reply = client.roundtrip(&["SET", "k", &value]);
        if reply == b"+OK\r\n" {
            return true;
        }
        errors.push(String::from_utf8_lossy(&reply).into_owned());
        false
    });
    assert!(
        served,
        "no service {:?} after killing {old}; last errors {:?}\n{}",
        started.elapsed(),
        &errors[errors.len().saturating_sub(3)..],
        set.logs()
    );
    for e in &errors {
        assert!(
            e.starts_with("-ERR turnout: endpoint 'main' unavailable: "),
            "{e}"
        );
    }
    // turnout follows whichever sentinel announces the switch first; the one asked here may
    // learn of it a moment later (it failed once in CI: served, yet still naming `old`).
    let new = set.wait_new_master(&old, Duration::from_secs(10));
    assert_eq!(
        set.server(&new).get("k"),
        Some(format!("after{attempt}")),
        "the write reached the new primary"
    );
    client.expect_cmd(&["GET", "before"], b"$1\r\n1\r\n");
}

#[test]
fn sentinel_credentials_are_presented_to_the_sentinels() {
    let set = SentinelSet::start_with_password(Some("s3cret"));
    let primary = set.master_addr().expect("sentinels name the primary");
    let body = format!(
        r#"[endpoints.main]
sentinels = {sentinels}
master_name = "{MASTER_NAME}"
sentinel_password_env = "SENTINEL_PW"

[endpoints.wrong]
sentinels = {sentinels}
master_name = "{MASTER_NAME}"
sentinel_password_env = "WRONG_PW"

[endpoints.none]
sentinels = {sentinels}
master_name = "{MASTER_NAME}"

[[namespaces]]
name = "wrong"
prefixes = ["wrong:"]
target = "wrong"

[[namespaces]]
name = "none"
prefixes = ["none:"]
target = "none"

[default]
target = "main"
"#,
        sentinels = set.sentinels_toml()
    );
    let turnout = Turnout::builder(&body)
        .env("SENTINEL_PW", "s3cret")
        .env("WRONG_PW", "nope")
        .start();
    let mut client = turnout.raw();
    client.expect_cmd(&["SET", "k", "v"], b"+OK\r\n");
    assert_eq!(set.server(&primary).get("k").as_deref(), Some("v"));
    let first = set.sentinels()[0].addr();
    let wrong = String::from_utf8_lossy(&client.roundtrip(&["GET", "wrong:k"])).into_owned();
    assert!(
        wrong.starts_with(&format!(
            "-ERR turnout: endpoint 'wrong' unavailable: sentinels: no sentinel knows master 'mymaster' ({first}: authentication failed: WRONGPASS"
        )),
        "{wrong:?}"
    );
    let none = String::from_utf8_lossy(&client.roundtrip(&["GET", "none:k"])).into_owned();
    assert!(
        none.starts_with(&format!(
            "-ERR turnout: endpoint 'none' unavailable: sentinels: no sentinel knows master 'mymaster' ({first}: refused: NOAUTH"
        )),
        "{none:?}"
    );
    assert!(!turnout.log().contains("s3cret"), "{}", turnout.log());
}

#[test]
fn a_lost_sentinel_is_replaced_by_the_next_one() {
    let mut set = SentinelSet::start();
    let old = set.master_addr().expect("sentinels name the primary");
    let turnout = turnout_for(&set, false);
    let mut client = turnout.raw();
    // Connection state is replayed on the connection to the new primary.
    client.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    client.expect_cmd(&["SET", "k", "1"], b"+OK\r\n");
    // turnout listens on the first sentinel: without it, the others must tell the switch.
    set.kill_sentinel(0);
    let reply = set.sentinels()[1]
        .command(&["SENTINEL", "FAILOVER", MASTER_NAME])
        .expect("SENTINEL FAILOVER");
    assert_eq!(reply, Reply::Simple("OK".to_string()));
    let new = set.wait_new_master(&old, Duration::from_secs(20));
    let followed = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        metric(&metrics(&turnout), &primary_gauge(&new)) == Some(1.0)
    });
    assert!(
        followed,
        "turnout did not follow the switch to {new}:\n{}",
        metrics(&turnout)
    );
    // Nothing was in flight: the first command after the switch reaches the new primary.
    client.expect_cmd(&["SET", "k", "2"], b"+OK\r\n");
    assert_eq!(set.server(&new).get_db(1, "k").as_deref(), Some("2"));
    assert_eq!(set.server(&new).get("k"), None);
    assert!(
        turnout.log().contains("sentinel subscription lost"),
        "{}",
        turnout.log()
    );
}

/// An ACL user without `ROLE`: connections trust the sentinels, and so must the health
/// checker, or the endpoint would never be ready.
#[test]
fn an_acl_user_without_role_is_served_and_ready() {
    let set = SentinelSet::start();
    let primary = set.master_addr().expect("a primary");
    for addr in [primary.clone(), set.other(&primary).addr()] {
        assert_eq!(
            set.server(&addr)
                .command(&["ACL", "SETUSER", "app", "on", ">app-pw", "~*", "&*", "+@all", "-role"]),
            Reply::Simple("OK".to_string())
        );
    }
    let body = format!(
        r#"[endpoints.main]
sentinels = {}
master_name = "{MASTER_NAME}"
username = "app"
password_env = "APP_PW"

[default]
target = "main"
"#,
        set.sentinels_toml()
    );
    let turnout = Turnout::builder(&body).env("APP_PW", "app-pw").start();
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "k", "v"], b"+OK\r\n");
    let readyz = turnout.admin_get("/readyz");
    assert_eq!(readyz.status, 200, "/readyz: {}", readyz.text());
}

/// After a failover, a sentinel that still names the old primary (first in turnout's list,
/// so asked first on every discovery and recheck) must not send turnout back to it: the old
/// primary answers ROLE as a replica, so the next sentinel's answer is taken. No flip, no
/// failed command.
#[test]
fn a_sentinel_lagging_behind_a_failover_does_not_flip_the_primary_back() {
    let set = SentinelSet::start();
    let (old, new) = set.failover();
    let stale = set.stale_sentinel(&old);
    let names = |s: &support::sentinel::Sentinel| match s.command(&[
        "SENTINEL",
        "GET-MASTER-ADDR-BY-NAME",
        MASTER_NAME,
    ]) {
        Ok(Reply::Array(Some(items))) if items.len() == 2 => format!(
            "{}:{}",
            items[0].bulk_text().unwrap_or_default(),
            items[1].bulk_text().unwrap_or_default()
        ),
        other => panic!("GET-MASTER-ADDR-BY-NAME: {other:?}"),
    };
    assert_eq!(
        names(&stale),
        old,
        "the stale sentinel names the old primary"
    );
    let sentinels: Vec<String> = std::iter::once(stale.addr())
        .chain(set.sentinels().iter().map(|s| s.addr()))
        .map(|a| format!("\"{a}\""))
        .collect();
    let body = format!(
        r#"[endpoints.main]
sentinels = [{}]
master_name = "{MASTER_NAME}"
sentinel_recheck = "50ms"

[default]
target = "main"
"#,
        sentinels.join(", ")
    );
    let turnout = Turnout::start(&body);
    let mut c = turnout.raw();
    // Spread over many rechecks: each asks the stale sentinel first.
    for i in 0..40 {
        c.expect_cmd(&["SET", &format!("k{i}"), "v"], b"+OK\r\n");
        std::thread::sleep(Duration::from_millis(25));
    }
    let server = set.server(&new);
    for i in 0..40 {
        assert!(server.exists(&format!("k{i}")), "k{i} is not on {new}");
    }
    assert_eq!(names(&stale), old, "the stale sentinel stayed stale");
    let text = metrics(&turnout);
    assert_eq!(
        metric(
            &text,
            "turnout_endpoint_events_total{endpoint=\"main\",event=\"failover\"}"
        )
        .unwrap_or(0.0),
        0.0,
        "{text}"
    );
    let log = turnout.log();
    assert!(!log.contains("primary changed"), "{log}");
    assert_eq!(metric(&text, &primary_gauge(&new)), Some(1.0), "{text}");
}

/// Dual-write copies follow a failover: a shadow lane whose connection leads to the old
/// primary (stopped here, so the connection stays open and unanswered, as behind a
/// partition, with a compare timeout far too long to notice) reconnects to the new primary
/// at its next batch, because the endpoint's generation moved.
#[test]
fn dual_write_copies_follow_a_failover() {
    let set = SentinelSet::start();
    let legacy = support::RedisServer::start();
    let body = format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.main]
sentinels = {}
master_name = "{MASTER_NAME}"

[[namespaces]]
name = "dw"
prefixes = ["dw:"]
target = "legacy"

[default]
target = "legacy"

[shadow]
compare_timeout = "1h"
"#,
        legacy.addr(),
        set.sentinels_toml()
    );
    let turnout = Turnout::start(&body);
    let r = turnout.admin_put(
        "/v1/routes/dw",
        r#"{"target": "legacy", "mode": "dual-write", "secondary": "main", "reason": "t"}"#,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let old = set.master_addr().expect("a primary");
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "dw:a", "1"], b"+OK\r\n");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || set
            .server(&old)
            .exists("dw:a")),
        "the first copy never reached {old}"
    );
    set.server(&old).signal("STOP");
    let new = set.wait_new_master(&old, Duration::from_secs(30));
    let known = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        metric(&metrics(&turnout), &primary_gauge(&new)) == Some(1.0)
    });
    assert!(known, "turnout never followed the failover to {new}");
    c.expect_cmd(&["SET", "dw:b", "2"], b"+OK\r\n");
    let copied = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        set.server(&new).exists("dw:b")
    });
    set.server(&old).signal("CONT");
    assert!(copied, "the copy after the failover never reached {new}");
    assert_eq!(legacy.get("dw:b").as_deref(), Some("2"));
}

/// How many connections sentinel `s` has accepted (a sentinel's INFO has no commandstats).
/// turnout opens one per question; the other sentinels keep theirs open.
fn connections(s: &support::sentinel::Sentinel) -> u64 {
    let info = s
        .command(&["INFO", "stats"])
        .ok()
        .and_then(|r| r.bulk_text())
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// While the primary is down, clients retrying commands share discoveries: the sentinels are
/// asked at most once per 100 ms gap (plus one), not several times per command and client.
#[test]
fn clients_share_discoveries_while_the_primary_is_down() {
    const CLIENTS: usize = 8;
    const COMMANDS: usize = 10;
    let mut set = SentinelSet::start();
    let body = format!(
        r#"[endpoints.main]
sentinels = {}
master_name = "{MASTER_NAME}"
sentinel_recheck = "1h"

[default]
target = "main"
"#,
        set.sentinels_toml()
    );
    let turnout = Turnout::start(&body);
    turnout.raw().expect_cmd(&["SET", "k", "v"], b"+OK\r\n");
    let primary = set.master_addr().expect("a primary");
    let replica = set.other(&primary).addr();
    // Nothing left to fail over to: the sentinels keep naming the dead primary.
    set.kill_server(&replica);
    set.kill_server(&primary);
    let started = Instant::now();
    let before = connections(&set.sentinels()[0]);
    let addr = turnout.proxy_addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = RawClient::connect(&addr);
                for i in 0..COMMANDS {
                    let reply = c.roundtrip(&["GET", &format!("k{i}")]);
                    assert!(
                        reply.starts_with(b"-ERR turnout: endpoint 'main' unavailable: "),
                        "{}",
                        String::from_utf8_lossy(&reply)
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    // Less the test's own second INFO connection.
    let asked = connections(&set.sentinels()[0]) - before - 1;
    let gaps = (started.elapsed().as_millis() / 100) as u64 + 1;
    assert!(asked >= 1, "the sentinels were never asked");
    assert!(
        asked <= gaps,
        "{asked} discoveries in {gaps} gaps of 100 ms for {CLIENTS} clients x {COMMANDS} commands"
    );
}

/// When every sentinel names a server that answers ROLE as a replica, commands are refused
/// with the server's role after the bounded retries, and nothing runs there.
#[test]
fn a_replica_named_as_primary_is_refused() {
    let set = SentinelSet::start();
    let (old, _new) = set.failover();
    let stale = set.stale_sentinel(&old);
    let body = format!(
        r#"[endpoints.main]
sentinels = ["{}"]
master_name = "{MASTER_NAME}"

[default]
target = "main"
"#,
        stale.addr()
    );
    let turnout = Turnout::start(&body);
    let mut c = turnout.raw();
    c.expect_cmd(
        &["SET", "k", "v"],
        format!("-ERR turnout: endpoint 'main' unavailable: {old} is not the primary (ROLE: slave); failover in progress?\r\n").as_bytes(),
    );
    assert!(!set.server(&old).exists("k"));
}
