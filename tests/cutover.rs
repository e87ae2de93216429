//! Fenced cutover (`POST /v1/routes/{ns}/cutover`, `GET /v1/cutovers/{id}`) against real
//! redis-servers: no lost or duplicated writes under load, a bounded pause, aborts that leave
//! the route (and every write) where it was, conflicts, validation, the drain-only fence, and
//! other namespaces flowing while one is held; an abort with replication stopped that clients
//! do not notice, transactions completed during the hold, a subscriber across cutovers of a
//! namespace and of the default route, and 20 cutover/rollback pairs under load.
//!
//! The `impact` namespace starts on `legacy` here (unlike in `support::standard_body`), so it
//! can be cut over to `new`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use support::raw::ReadError;
use support::{wait_until, RawClient, RedisServer, Reply, Turnout};

/// Bound on any single reply a client waits for.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on any writer's whole run.
const WRITER_BOUND: Duration = Duration::from_secs(20);
/// Bound on the number of pipelined batches any writer sends.
const MAX_BATCHES: usize = 200_000;

/// `web-cache` (`web:`) and `impact` (`impact:`) both on `legacy`; default → `legacy`.
fn body(legacy: &RedisServer, new: &RedisServer) -> String {
    format!(
        r#"[endpoints.legacy]
address = "{legacy}"

[endpoints.new]
address = "{new}"

[[namespaces]]
name = "web-cache"
prefixes = ["web:"]
target = "legacy"

[[namespaces]]
name = "impact"
prefixes = ["impact:"]
target = "legacy"

[default]
target = "legacy"
"#,
        legacy = legacy.addr(),
        new = new.addr(),
    )
}

struct CutEnv {
    // Field order is drop order: stop the proxy before its backends.
    turnout: Turnout,
    legacy: RedisServer,
    new: RedisServer,
}

impl CutEnv {
    /// `new` is a writable replica of `legacy`, linked and caught up.
    fn replicated() -> CutEnv {
        // Every harness server runs with `--repl-diskless-sync-delay 0` (it matters on the
        // master), so the first sync starts at once.
        let legacy = RedisServer::start();
        let port = legacy.port().to_string();
        let new = RedisServer::start_with_args(&[
            "--replicaof",
            "127.0.0.1",
            &port,
            "--replica-read-only",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ]);
        let linked = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            info_replication(&new).contains("master_link_status:up")
        });
        assert!(
            linked,
            "replica {} never linked to {}: {}",
            new.addr(),
            legacy.addr(),
            info_replication(&new)
        );
        // After a diskless full sync the master streams nothing to the replica until its first
        // REPLCONF ACK (up to a second later): wait until a write has made it through.
        legacy.set("sync:probe", "1");
        let streaming = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            matches!(
                support::raw::try_command(&new.addr(), &["GET", "sync:probe"], Duration::from_secs(1)),
                Ok(Reply::Bulk(Some(v))) if v == b"1"
            )
        });
        assert!(streaming, "replication to {} never streamed", new.addr());
        let turnout = Turnout::start(&body(&legacy, &new));
        CutEnv {
            turnout,
            legacy,
            new,
        }
    }

    /// `new` is a plain, unrelated server.
    fn plain() -> CutEnv {
        let legacy = RedisServer::start();
        let new = RedisServer::start();
        let turnout = Turnout::start(&body(&legacy, &new));
        CutEnv {
            turnout,
            legacy,
            new,
        }
    }

    fn post_cutover(&self, namespace: &str, query: &str, body: &Value) -> support::HttpResponse {
        self.turnout.admin(
            "POST",
            &format!("/v1/routes/{namespace}/cutover{query}"),
            &[],
            Some(&body.to_string()),
        )
    }

    /// Starts a cutover and waits for its report, asserting 200.
    fn cutover_wait(&self, namespace: &str, body: &Value) -> Value {
        let r = self.post_cutover(namespace, "?wait=true", body);
        assert_eq!(r.status, 200, "cutover {namespace} {body}: {}", r.text());
        r.json()
    }

    /// Starts a cutover without waiting, asserting 202; returns its id.
    fn cutover_start(&self, namespace: &str, body: &Value) -> u64 {
        let r = self.post_cutover(namespace, "", body);
        assert_eq!(r.status, 202, "cutover {namespace} {body}: {}", r.text());
        r.json()["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("202 without a numeric id: {}", r.text()))
    }

    fn report(&self, id: u64) -> Value {
        let r = self.turnout.admin_get(&format!("/v1/cutovers/{id}"));
        assert_eq!(r.status, 200, "GET /v1/cutovers/{id}: {}", r.text());
        r.json()
    }

    /// Polls the report (bounded) until it is no longer running.
    fn wait_ended(&self, id: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let report = self.report(id);
            if report["outcome"] != "running" {
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "cutover {id} still running after {within:?}: {report}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn info_replication(server: &RedisServer) -> String {
    support::raw::try_command(
        &server.addr(),
        &["INFO", "replication"],
        Duration::from_secs(2),
    )
    .ok()
    .and_then(|r| r.bulk_text())
    .unwrap_or_default()
}

fn step_names(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("report without steps: {report}"))
        .iter()
        .map(|s| s["step"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn keys(server: &RedisServer, pattern: &str) -> Vec<String> {
    match server.command(&["KEYS", pattern]) {
        Reply::Array(Some(items)) => items.iter().filter_map(Reply::bulk_text).collect(),
        other => panic!("KEYS {pattern} on {}: {other:?}", server.addr()),
    }
}

fn lrange_all(server: &RedisServer, key: &str) -> Vec<u64> {
    match server.command(&["LRANGE", key, "0", "-1"]) {
        Reply::Array(Some(items)) => items
            .iter()
            .map(|i| {
                i.bulk_text()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("{key} holds a non-number: {i:?}"))
            })
            .collect(),
        other => panic!("LRANGE {key} on {}: {other:?}", server.addr()),
    }
}

/// What one writer saw.
struct WriterRun {
    id: usize,
    /// Every unexpected reply or failure (the test wants none).
    errors: Vec<String>,
    /// INCRs acknowledged (each with the expected next value).
    incrs: u64,
    /// Sequence numbers whose RPUSH was acknowledged, in order.
    pushed: Vec<u64>,
    /// When each reply arrived.
    replies: Vec<Instant>,
}

impl WriterRun {
    fn counter_key(id: usize) -> String {
        format!("impact:cut:{id}:count")
    }

    fn list_key(id: usize) -> String {
        format!("impact:cut:{id}:seq")
    }

    /// The largest gap between consecutive replies that overlaps `[from, to]`.
    fn max_gap_within(&self, from: Instant, to: Instant) -> Duration {
        self.replies
            .windows(2)
            .filter(|w| w[1] >= from && w[0] <= to)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// Asserts the server holds exactly what this writer saw acknowledged.
    fn assert_on(&self, server: &RedisServer, which: &str) {
        let count = server.get(&Self::counter_key(self.id));
        assert_eq!(
            count,
            (self.incrs > 0).then(|| self.incrs.to_string()),
            "writer {}: counter on {which} vs acknowledged INCRs",
            self.id
        );
        let list = lrange_all(server, &Self::list_key(self.id));
        if list != self.pushed {
            let first_diff = list
                .iter()
                .zip(&self.pushed)
                .position(|(a, b)| a != b)
                .unwrap_or(list.len().min(self.pushed.len()));
            panic!(
                "writer {}: list on {which} has {} entries, {} were acknowledged; first \
                 difference at index {first_diff}: on {which} {:?}, acknowledged {:?}",
                self.id,
                list.len(),
                self.pushed.len(),
                list.get(first_diff.saturating_sub(2)..(first_diff + 3).min(list.len())),
                self.pushed
                    .get(first_diff.saturating_sub(2)..(first_diff + 3).min(self.pushed.len())),
            );
        }
        assert!(
            list.windows(2).all(|w| w[0] < w[1]),
            "writer {}: list on {which} is not strictly increasing",
            self.id
        );
    }
}

/// Pipelines `batch` × (INCR counter, RPUSH list seq) through `proxy` until `stop`, checking
/// every reply: INCR answers the next count, RPUSH the next length.
fn writer(proxy: String, id: usize, batch: usize, stop: Arc<AtomicBool>) -> WriterRun {
    let mut run = WriterRun {
        id,
        errors: Vec::new(),
        incrs: 0,
        pushed: Vec::new(),
        replies: Vec::new(),
    };
    let mut client = match RawClient::try_connect(&proxy, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            run.errors.push(format!("connect: {e}"));
            return run;
        }
    };
    let counter = WriterRun::counter_key(id);
    let list = WriterRun::list_key(id);
    let began = Instant::now();
    let mut next_seq = 1u64;
    'batches: for _ in 0..MAX_BATCHES {
        if stop.load(Ordering::Relaxed) || began.elapsed() > WRITER_BOUND {
            break;
        }
        let mut out = Vec::new();
        let first_seq = next_seq;
        for _ in 0..batch {
            out.extend_from_slice(&support::cmd(&["INCR", &counter]));
            out.extend_from_slice(&support::cmd(&["RPUSH", &list, &next_seq.to_string()]));
            next_seq += 1;
        }
        if let Err(e) = client.try_send(&out) {
            run.errors.push(format!("write: {e}"));
            break;
        }
        for i in 0..batch as u64 {
            for is_push in [false, true] {
                let reply = match client.read_reply_within(REPLY_TIMEOUT) {
                    Ok(r) => r,
                    Err(e) => {
                        let what = match e {
                            ReadError::Timeout { .. } => {
                                format!("no reply within {REPLY_TIMEOUT:?}")
                            }
                            other => format!("{other:?}"),
                        };
                        run.errors.push(format!("reading a reply: {what}"));
                        break 'batches;
                    }
                };
                run.replies.push(Instant::now());
                if is_push {
                    let expected = run.pushed.len() as i64 + 1;
                    if reply == Reply::Int(expected) {
                        run.pushed.push(first_seq + i);
                    } else {
                        run.errors.push(format!(
                            "RPUSH {list} {} answered {reply:?}, expected :{expected}",
                            first_seq + i
                        ));
                    }
                } else {
                    let expected = run.incrs as i64 + 1;
                    if reply == Reply::Int(expected) {
                        run.incrs += 1;
                    } else {
                        run.errors.push(format!(
                            "INCR {counter} answered {reply:?}, expected :{expected}"
                        ));
                    }
                }
                if run.errors.len() > 20 {
                    break 'batches;
                }
            }
        }
    }
    run
}

fn start_writers(
    proxy: &str,
    clients: usize,
    batch: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<WriterRun>> {
    (0..clients)
        .map(|id| {
            let proxy = proxy.to_string();
            let stop = Arc::clone(stop);
            std::thread::spawn(move || writer(proxy, id, batch, stop))
        })
        .collect()
}

fn join_writers(handles: Vec<std::thread::JoinHandle<WriterRun>>) -> Vec<WriterRun> {
    handles
        .into_iter()
        .map(|h| h.join().expect("writer thread panicked"))
        .collect()
}

fn assert_no_errors(runs: &[WriterRun]) {
    assert_no_client_errors(runs.iter().map(|r| (r.id, &r.errors[..])));
}

/// Fails with the first client errors, if any writer saw one: (writer id, its errors).
fn assert_no_client_errors<'a>(runs: impl Iterator<Item = (usize, &'a [String])>) {
    let errors: Vec<String> = runs
        .flat_map(|(id, errors)| errors.iter().map(move |e| format!("writer {id}: {e}")))
        .collect();
    assert!(
        errors.is_empty(),
        "{} client error(s), first ones: {:#?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
}

struct LoadedCutover {
    env: CutEnv,
    report: Value,
    runs: Vec<WriterRun>,
    cut_start: Instant,
    cut_end: Instant,
}

const LOAD_CLIENTS: usize = 32;
const LOAD_TIMEOUT_MS: u64 = 2000;

/// 32 pipelining writers on `impact:` while it is cut over, with the replication fence and
/// promotion, from `legacy` to its replica `new`.
fn cutover_under_load() -> LoadedCutover {
    let env = CutEnv::replicated();
    assert_eq!(env.turnout.target("impact"), "legacy");
    let stop = Arc::new(AtomicBool::new(false));
    let handles = start_writers(&env.turnout.proxy_addr(), LOAD_CLIENTS, 12, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let cut_start = Instant::now();
    let r = env.post_cutover(
        "impact",
        "?wait=true",
        &json!({
            "to": "new",
            "fence": "replication",
            "timeout_ms": LOAD_TIMEOUT_MS,
            "promote": true,
            "reason": "cutover under load"
        }),
    );
    let cut_end = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let runs = join_writers(handles);
    assert_eq!(r.status, 200, "cutover: {}", r.text());
    let report = r.json();
    println!(
        "cutover under load: took {:?}, report {report}",
        cut_end - cut_start
    );
    LoadedCutover {
        env,
        report,
        runs,
        cut_start,
        cut_end,
    }
}

#[test]
fn cutover_under_load_loses_and_duplicates_no_write() {
    let LoadedCutover {
        env,
        report,
        runs,
        cut_start: _,
        cut_end,
    } = cutover_under_load();
    assert_no_errors(&runs);
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(report["namespace"], "impact", "{report}");
    assert_eq!(report["from"], "legacy", "{report}");
    assert_eq!(report["to"], "new", "{report}");
    assert!(report["failed_step"].is_null(), "{report}");
    assert!(report["error"].is_null(), "{report}");
    assert_eq!(
        step_names(&report),
        ["hold", "drain", "fence", "promote", "flip"],
        "{report}"
    );
    for step in report["steps"].as_array().expect("steps") {
        assert!(step["error"].is_null(), "step failed: {step}");
        assert!(step["took_ms"].is_number(), "step without took_ms: {step}");
        assert!(step["started_at"].is_string(), "{step}");
    }
    let id = report["id"].as_u64().expect("numeric id");
    assert_eq!(env.report(id), report, "GET /v1/cutovers/{id}");
    assert_eq!(env.turnout.target("impact"), "new");
    assert!(
        info_replication(&env.new).contains("role:master"),
        "new was not promoted: {}",
        info_replication(&env.new)
    );

    // The writers were busy on both sides of the cutover.
    let before: usize = runs
        .iter()
        .map(|r| r.replies.iter().filter(|&&t| t < cut_end).count())
        .sum();
    let after: usize = runs
        .iter()
        .map(|r| r.replies.iter().filter(|&&t| t > cut_end).count())
        .sum();
    println!("replies before the cutover ended: {before}, after: {after}");
    assert!(before > 0 && after > 0, "before {before}, after {after}");
    for run in &runs {
        assert!(run.incrs > 0, "writer {} wrote nothing", run.id);
        // Everything acknowledged, before, during and after, is on the new endpoint, once,
        // in order.
        run.assert_on(&env.new, "new");
        assert_eq!(run.pushed.len() as u64, run.incrs);
        assert!(
            run.pushed.iter().copied().eq(1..=run.incrs),
            "writer {}: acknowledged sequence has gaps",
            run.id
        );
    }
    // The fence key was deleted.
    assert_eq!(
        keys(&env.new, "impact:turnout:fence:*"),
        Vec::<String>::new()
    );
    assert_eq!(
        keys(&env.legacy, "impact:turnout:fence:*"),
        Vec::<String>::new()
    );
}

#[test]
fn cutover_under_load_pauses_less_than_its_timeout() {
    let LoadedCutover {
        env,
        report,
        runs,
        cut_start,
        cut_end,
    } = cutover_under_load();
    assert_no_errors(&runs);
    assert_eq!(report["outcome"], "completed", "{report}");
    let (worst, gap) = runs
        .iter()
        .map(|r| (r.id, r.max_gap_within(cut_start, cut_end)))
        .max_by_key(|&(_, g)| g)
        .expect("writers");
    let pause_ms = report["pause_ms"].as_f64().expect("pause_ms");
    println!(
        "max gap between consecutive replies during the cutover: {gap:?} (writer {worst}); \
         reported pause_ms {pause_ms:.1}; held_commands {}",
        report["held_commands"]
    );
    assert!(
        gap < Duration::from_millis(LOAD_TIMEOUT_MS),
        "a client waited {gap:?} for a reply, timeout_ms is {LOAD_TIMEOUT_MS}"
    );
    assert!(
        pause_ms < LOAD_TIMEOUT_MS as f64,
        "pause_ms {pause_ms} >= timeout_ms {LOAD_TIMEOUT_MS}"
    );
    assert!(report["held_commands"].is_u64(), "{report}");
    // Held commands ran in the order each client sent them: every list is the exact,
    // strictly increasing acknowledged sequence.
    for run in &runs {
        run.assert_on(&env.new, "new");
    }
}

#[test]
fn a_failed_fence_aborts_with_the_route_and_every_write_unchanged() {
    let env = CutEnv::plain();
    env.new.set("impact:untouched", "1");
    let stop = Arc::new(AtomicBool::new(false));
    let handles = start_writers(&env.turnout.proxy_addr(), 8, 8, &stop);
    std::thread::sleep(Duration::from_millis(150));
    let began = Instant::now();
    let report = env.cutover_wait(
        "impact",
        &json!({"to": "new", "fence": "replication", "timeout_ms": 300, "reason": "not a replica"}),
    );
    let took = began.elapsed();
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    let runs = join_writers(handles);
    println!("aborted cutover answered in {took:?}: {report}");

    assert_eq!(report["outcome"], "aborted", "{report}");
    assert_eq!(report["failed_step"], "fence", "{report}");
    assert!(
        report["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{report}"
    );
    assert_eq!(step_names(&report), ["hold", "drain", "fence"], "{report}");
    let fence = &report["steps"][2];
    assert!(
        fence["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{fence}"
    );
    assert!(report["pause_ms"].is_number(), "{report}");
    assert!(
        took < Duration::from_millis(2000),
        "a 300 ms cutover answered after {took:?}"
    );
    let id = report["id"].as_u64().expect("id");
    assert_eq!(env.report(id), report);

    // Route unchanged; writes still go to legacy.
    assert_eq!(env.turnout.target("impact"), "legacy");
    let mut con = env.turnout.raw();
    con.expect_cmd(&["SET", "impact:after-abort", "x"], b"+OK\r\n");
    assert_eq!(env.legacy.get("impact:after-abort").as_deref(), Some("x"));
    assert_eq!(env.new.get("impact:after-abort"), None);

    assert_no_errors(&runs);
    for run in &runs {
        assert!(run.incrs > 0, "writer {} wrote nothing", run.id);
        run.assert_on(&env.legacy, "legacy");
        assert!(
            !env.new.exists(&WriterRun::counter_key(run.id))
                && !env.new.exists(&WriterRun::list_key(run.id)),
            "writer {}: keys reached the new endpoint",
            run.id
        );
    }
    assert_eq!(keys(&env.new, "*"), ["impact:untouched"]);
}

#[test]
fn a_second_cutover_or_a_route_change_conflicts_while_one_runs() {
    let env = CutEnv::plain();
    let id = env.cutover_start(
        "impact",
        &json!({"to": "new", "fence": "replication", "timeout_ms": 1500, "reason": "slow one"}),
    );
    let r = env.post_cutover(
        "impact",
        "?wait=true",
        &json!({"to": "new", "fence": "drain", "timeout_ms": 1000, "reason": "second"}),
    );
    assert_eq!(r.status, 409, "second cutover: {}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());
    let r = env.turnout.admin_put(
        "/v1/routes/impact",
        r#"{"target":"new","reason":"during a cutover"}"#,
        &[],
    );
    assert_eq!(r.status, 409, "PUT during a cutover: {}", r.text());
    let running = env.report(id);
    assert_eq!(running["outcome"], "running", "{running}");
    assert!(running["failed_step"].is_null(), "{running}");
    assert_eq!(running["id"], id);

    let ended = env.wait_ended(id, Duration::from_secs(5));
    assert_eq!(ended["outcome"], "aborted", "{ended}");
    assert_eq!(ended["failed_step"], "fence", "{ended}");
    assert_eq!(env.turnout.target("impact"), "legacy");

    // Once it ended, a new one may start.
    let report = env.cutover_wait(
        "impact",
        &json!({"to": "new", "fence": "drain", "timeout_ms": 2000, "reason": "now"}),
    );
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_ne!(report["id"], id);
    assert_eq!(env.turnout.target("impact"), "new");
}

#[test]
fn invalid_cutovers_are_refused_and_change_nothing() {
    let env = CutEnv::plain();
    let version = env.turnout.version();
    let ok = json!({"to": "new", "fence": "drain", "timeout_ms": 1000, "reason": "r"});
    let with = |key: &str, value: Value| {
        let mut b = ok.clone();
        b[key] = value;
        b
    };
    let cases: Vec<(&str, &str, Value, u16)> = vec![
        ("unknown namespace", "nope", ok.clone(), 404),
        (
            "unknown endpoint",
            "impact",
            with("to", json!("nowhere")),
            400,
        ),
        ("already there", "impact", with("to", json!("legacy")), 400),
        ("timeout 0", "impact", with("timeout_ms", json!(0)), 400),
        (
            "timeout too long",
            "impact",
            with("timeout_ms", json!(600_001)),
            400,
        ),
        ("unknown fence", "impact", with("fence", json!("hope")), 400),
        ("empty reason", "impact", with("reason", json!(" ")), 400),
        ("unknown field", "impact", with("force", json!(true)), 400),
        (
            "missing to",
            "impact",
            json!({"fence": "drain", "reason": "r"}),
            400,
        ),
    ];
    for (what, ns, body, status) in &cases {
        for query in ["", "?wait=true"] {
            let r = env.post_cutover(ns, query, body);
            assert_eq!(r.status, *status, "{what} ({query}): {}", r.text());
            assert!(
                r.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: {}",
                r.text()
            );
        }
    }
    let r = env
        .turnout
        .admin("POST", "/v1/routes/impact/cutover", &[], Some("{not json"));
    assert_eq!(r.status, 400, "malformed body: {}", r.text());
    let r = env.post_cutover("impact", "?wait=maybe", &ok);
    assert_eq!(r.status, 400, "bad query: {}", r.text());
    for path in ["/v1/cutovers/1", "/v1/cutovers/999", "/v1/cutovers/abc"] {
        let r = env.turnout.admin_get(path);
        assert_eq!(r.status, 404, "GET {path}: {}", r.text());
    }
    // Nothing ran, nothing moved.
    assert_eq!(env.turnout.version(), version);
    assert_eq!(env.turnout.target("impact"), "legacy");

    // A namespace in shadow mode cannot be cut over.
    let r = env.turnout.admin_put(
        "/v1/routes/impact",
        r#"{"mode":"shadow","shadow":"new","reason":"compare first"}"#,
        &[],
    );
    assert_eq!(r.status, 200, "set shadow mode: {}", r.text());
    let shadowed = env.turnout.version();
    let r = env.post_cutover("impact", "?wait=true", &ok);
    assert_eq!(r.status, 400, "shadow mode: {}", r.text());
    assert_eq!(env.turnout.version(), shadowed);
    assert_eq!(env.turnout.target("impact"), "legacy");
    assert_eq!(env.turnout.admin_get("/v1/cutovers/1").status, 404);
}

#[test]
fn a_drain_fence_flips_a_cache_quickly() {
    let env = CutEnv::plain();
    let mut before = env.turnout.raw();
    before.expect_cmd(&["SET", "impact:old", "1"], b"+OK\r\n");
    assert_eq!(env.legacy.get("impact:old").as_deref(), Some("1"));
    let began = Instant::now();
    let report = env.cutover_wait(
        "impact",
        &json!({"to": "new", "fence": "drain", "timeout_ms": 2000, "reason": "cache flip"}),
    );
    let took = began.elapsed();
    println!("drain cutover answered in {took:?}: {report}");
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(report["fence"], "drain", "{report}");
    assert_eq!(step_names(&report), ["hold", "drain", "flip"], "{report}");
    // Speed is the cutover benchmark's business (scripts/bench-cutover.sh); here it is enough
    // that the pause was measured and the drain finished inside its timeout (else: aborted).
    let pause_ms = report["pause_ms"].as_f64().expect("pause_ms");
    assert!(pause_ms > 0.0, "{report}");
    assert_eq!(env.turnout.target("impact"), "new");

    // An existing session and a new one both go to the new endpoint now.
    before.expect_cmd(&["GET", "impact:old"], b"$-1\r\n");
    before.expect_cmd(&["SET", "impact:new", "2"], b"+OK\r\n");
    let mut after = env.turnout.raw();
    after.expect_cmd(&["SET", "impact:new2", "3"], b"+OK\r\n");
    assert_eq!(env.new.get("impact:new").as_deref(), Some("2"));
    assert_eq!(env.new.get("impact:new2").as_deref(), Some("3"));
    assert_eq!(env.legacy.get("impact:new"), None);
    assert_eq!(env.legacy.get("impact:new2"), None);
    // Other namespaces did not move.
    after.expect_cmd(&["SET", "web:x", "4"], b"+OK\r\n");
    assert_eq!(env.legacy.get("web:x").as_deref(), Some("4"));
}

#[test]
fn other_namespaces_keep_flowing_while_one_is_held() {
    const HOLD_MS: u64 = 1500;
    let env = CutEnv::plain();
    let mut web = env.turnout.raw();
    web.expect_cmd(&["SET", "web:warm", "1"], b"+OK\r\n");
    let mut held = env.turnout.raw();
    held.expect_cmd(&["SET", "impact:warm", "1"], b"+OK\r\n");

    let started = Instant::now();
    let id = env.cutover_start(
        "impact",
        &json!({"to": "new", "fence": "replication", "timeout_ms": HOLD_MS, "reason": "hold"}),
    );
    // Wait (bounded) until the hold is in place: the fence step has begun.
    let holding = wait_until(Duration::from_secs(1), Duration::from_millis(2), || {
        step_names(&env.report(id)).iter().any(|s| s == "fence")
    });
    assert!(holding, "fence step never began: {}", env.report(id));

    // A command of the held namespace waits...
    let probe = std::thread::spawn(move || {
        let sent = Instant::now();
        held.send_cmd(&["SET", "impact:probe", "held"]);
        let reply = held.read_frame_within(Duration::from_secs(10));
        (sent, sent.elapsed(), reply.map_err(|e| format!("{e:?}")))
    });

    // ...while web: commands, on an existing and on a new session, do not.
    let mut fresh = env.turnout.raw();
    let mut worst = Duration::ZERO;
    let mut count = 0u32;
    let window = Instant::now();
    while window.elapsed() < Duration::from_millis(700) && count < 10_000 {
        for (con, name) in [(&mut web, "existing"), (&mut fresh, "new")] {
            let key = format!("web:k{count}");
            let t = Instant::now();
            con.expect_cmd(&["SET", &key, "v"], b"+OK\r\n");
            con.expect_cmd(&["GET", &key], b"$1\r\nv\r\n");
            let took = t.elapsed();
            assert!(
                took < Duration::from_millis(500),
                "web: SET+GET on the {name} session took {took:?} during the hold"
            );
            worst = worst.max(took);
        }
        count += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let still = env.report(id);
    assert_eq!(
        still["outcome"], "running",
        "the hold ended before the measurement did: {still}"
    );
    println!(
        "{count} web: round trips during the hold, slowest {worst:?}, {:?} after the start",
        started.elapsed()
    );

    let (_, waited, reply) = probe.join().expect("probe thread");
    let reply = reply.expect("held command's reply");
    assert_eq!(support::show(&reply), support::show(b"+OK\r\n"));
    println!("held impact: command waited {waited:?}");
    assert!(
        waited > Duration::from_millis(700),
        "the impact: command was not held ({waited:?})"
    );
    let ended = env.wait_ended(id, Duration::from_secs(5));
    assert_eq!(ended["outcome"], "aborted", "{ended}");
    assert_eq!(ended["failed_step"], "fence", "{ended}");
    // The held command went to the old endpoint.
    assert_eq!(env.legacy.get("impact:probe").as_deref(), Some("held"));
    assert_eq!(env.new.get("impact:probe"), None);
    assert_eq!(env.turnout.target("impact"), "legacy");
}

/// A transaction open across the cutover: MULTI and a queued write of the namespace reach the
/// old endpoint before the hold, EXEC comes after the cutover ended. An acknowledged EXEC must
/// leave its write where the namespace now routes (or the cutover must not complete).
#[test]
fn a_transaction_open_across_the_cutover_loses_no_write() {
    let env = CutEnv::replicated();
    let mut tx = env.turnout.raw();
    tx.expect_cmd(&["MULTI"], b"+OK\r\n");
    tx.expect_cmd(&["SET", "impact:tx", "1"], b"+QUEUED\r\n");
    let r = env.post_cutover(
        "impact",
        "?wait=true",
        &json!({
            "to": "new",
            "fence": "replication",
            "timeout_ms": 1000,
            "promote": true,
            "reason": "open transaction"
        }),
    );
    let report = r.json();
    println!("cutover with an open transaction: {report}");
    tx.send_cmd(&["EXEC"]);
    let exec = tx.read_frame_within(Duration::from_secs(5));
    let exec = exec.unwrap_or_else(|e| panic!("EXEC: {e:?}"));
    assert_eq!(support::show(&exec), support::show(b"*1\r\n+OK\r\n"));
    let target = env.turnout.target("impact");
    let mut reader = env.turnout.raw();
    assert_eq!(
        reader.read_reply_after(&["GET", "impact:tx"]),
        "1",
        "the write acknowledged by EXEC is not where impact routes now ({target}; cutover \
         outcome {}): on legacy {:?}, on new {:?}",
        report["outcome"],
        env.legacy.get("impact:tx"),
        env.new.get("impact:tx")
    );
}

/// What `/v1/history` holds now (route changes; a hold or an abort adds none).
fn history_len(turnout: &Turnout) -> usize {
    let r = turnout.admin_get("/v1/history");
    assert_eq!(r.status, 200, "GET /v1/history: {}", r.text());
    r.json()["entries"]
        .as_array()
        .map_or_else(|| panic!("history without entries: {}", r.text()), Vec::len)
}

/// Guarantee 3, abort is harmless: `new` was a replica of `legacy` but replication stopped
/// before the cutover. The fence cannot pass, the cutover aborts at it, and the pipelining
/// clients see nothing but a pause: no error, and every write they got acknowledged, before,
/// during and after, is on `legacy` (and none on `new`).
#[test]
fn an_abort_with_replication_stopped_is_harmless_to_pipelining_clients() {
    const TIMEOUT_MS: u64 = 500;
    let env = CutEnv::replicated();
    assert_eq!(
        env.new.command(&["REPLICAOF", "NO", "ONE"]),
        Reply::Simple("OK".to_string())
    );
    let stopped = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        info_replication(&env.new).contains("role:master")
            && info_replication(&env.legacy).contains("connected_slaves:0")
    });
    assert!(
        stopped,
        "replication did not stop: new {}, legacy {}",
        info_replication(&env.new),
        info_replication(&env.legacy)
    );
    let version = env.turnout.version();
    let changes = history_len(&env.turnout);

    let stop = Arc::new(AtomicBool::new(false));
    let handles = start_writers(&env.turnout.proxy_addr(), 8, 8, &stop);
    std::thread::sleep(Duration::from_millis(200));
    let cut_start = Instant::now();
    let report = env.cutover_wait(
        "impact",
        &json!({
            "to": "new",
            "fence": "replication",
            "timeout_ms": TIMEOUT_MS,
            "reason": "replication stopped"
        }),
    );
    let cut_end = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let runs = join_writers(handles);
    println!(
        "cutover with replication stopped answered in {:?}: {report}",
        cut_end - cut_start
    );

    assert_eq!(report["outcome"], "aborted", "{report}");
    assert_eq!(report["failed_step"], "fence", "{report}");
    assert_eq!(step_names(&report), ["hold", "drain", "fence"], "{report}");
    assert!(
        report["steps"][2]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{report}"
    );
    assert!(
        cut_end - cut_start < Duration::from_millis(TIMEOUT_MS + 1000),
        "a {TIMEOUT_MS} ms cutover answered after {:?}",
        cut_end - cut_start
    );
    // Nothing changed: same route, same version, no history entry.
    assert_eq!(env.turnout.target("impact"), "legacy");
    assert_eq!(env.turnout.version(), version);
    assert_eq!(history_len(&env.turnout), changes);

    assert_no_errors(&runs);
    let (worst, gap) = runs
        .iter()
        .map(|r| (r.id, r.max_gap_within(cut_start, cut_end)))
        .max_by_key(|&(_, g)| g)
        .expect("writers");
    println!("longest wait for a reply during the aborted cutover: {gap:?} (writer {worst})");
    assert!(
        gap < Duration::from_millis(TIMEOUT_MS + 500),
        "writer {worst} waited {gap:?} for a reply; timeout_ms is {TIMEOUT_MS}"
    );
    let after: usize = runs
        .iter()
        .map(|r| r.replies.iter().filter(|&&t| t > cut_end).count())
        .sum();
    let before: usize = runs
        .iter()
        .map(|r| r.replies.iter().filter(|&&t| t < cut_start).count())
        .sum();
    println!("replies before the cutover: {before}, after it: {after}");
    assert!(
        before > 0 && after > 0,
        "writes did not continue: before {before}, after {after}"
    );
    for run in &runs {
        assert!(run.incrs > 0, "writer {} wrote nothing", run.id);
        // Every acknowledged write is on legacy, once, in order; none reached new.
        run.assert_on(&env.legacy, "legacy");
        assert!(
            !env.new.exists(&WriterRun::counter_key(run.id))
                && !env.new.exists(&WriterRun::list_key(run.id)),
            "writer {}: keys reached the new endpoint",
            run.id
        );
    }
    assert_eq!(keys(&env.new, "impact:*"), Vec::<String>::new());
    println!(
        "fence keys left on legacy after the abort: {:?}",
        keys(&env.legacy, "impact:turnout:fence:*")
    );
    // A new session writes to legacy too.
    env.turnout
        .raw()
        .expect_cmd(&["SET", "impact:after-abort", "x"], b"+OK\r\n");
    assert_eq!(env.legacy.get("impact:after-abort").as_deref(), Some("x"));
    assert_eq!(env.new.get("impact:after-abort"), None);
}

/// Guarantee 4, a transaction open during the hold and completed by the client within the
/// bound: the cutover waits for it and completes; the transaction ran whole, once, either on
/// `legacy` before the fence (and so replicated to `new`) or on `new`. INCRs show a
/// duplicate; promotion cuts replication, so a write that reached `legacy` after the fence
/// would be missing on `new`.
///
/// `queued_before_cutover`: the queued writes are sent before the cutover starts (only EXEC
/// comes during the hold), or only MULTI is, and the writes and EXEC come during the hold.
fn transaction_completed_during_the_hold(queued_before_cutover: bool) {
    let env = CutEnv::replicated();
    let writes: [&[&str]; 3] = [
        &["INCR", "impact:tx:a"],
        &["INCR", "impact:tx:b"],
        &["RPUSH", "impact:tx:list", "x"],
    ];
    let mut tx = env.turnout.raw();
    tx.expect_cmd(&["MULTI"], b"+OK\r\n");
    if queued_before_cutover {
        for w in writes {
            tx.expect_cmd(w, b"+QUEUED\r\n");
        }
    }
    let started = Instant::now();
    let id = env.cutover_start(
        "impact",
        &json!({
            "to": "new",
            "fence": "replication",
            "timeout_ms": 2000,
            "promote": true,
            "reason": "transaction during the hold"
        }),
    );
    std::thread::sleep(Duration::from_millis(100));
    // The drain waits for the open transaction.
    let waiting = env.report(id);
    assert_eq!(waiting["outcome"], "running", "{waiting}");
    assert_eq!(step_names(&waiting), ["hold", "drain"], "{waiting}");
    if !queued_before_cutover {
        for w in writes {
            tx.send_cmd(w);
        }
    }
    tx.send_cmd(&["EXEC"]);
    let mut expected = Vec::new();
    if !queued_before_cutover {
        expected.extend_from_slice(b"+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n");
    }
    expected.extend_from_slice(b"*3\r\n:1\r\n:1\r\n:1\r\n");
    let mut got = Vec::new();
    for _ in 0..if queued_before_cutover { 1 } else { 4 } {
        match tx.read_frame_within(Duration::from_secs(5)) {
            Ok(frame) => got.extend_from_slice(&frame),
            Err(e) => panic!(
                "transaction replies so far {}, then {e:?}; cutover {}",
                support::show(&got),
                env.report(id)
            ),
        }
    }
    let exec_answered = started.elapsed();
    assert_eq!(support::show(&got), support::show(&expected));
    let report = env.wait_ended(id, Duration::from_secs(5));
    println!(
        "EXEC answered {exec_answered:?} after the cutover started; report {report} \
         (queued before the cutover: {queued_before_cutover})"
    );
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(
        step_names(&report),
        ["hold", "drain", "fence", "promote", "flip"],
        "{report}"
    );
    assert!(
        report["steps"][1]["took_ms"]
            .as_f64()
            .is_some_and(|ms| ms >= 90.0),
        "the drain did not wait for the transaction: {report}"
    );
    assert_eq!(env.turnout.target("impact"), "new");

    // Every write of the transaction is on new, exactly once.
    let on = |server: &RedisServer| {
        (
            server.get("impact:tx:a"),
            server.get("impact:tx:b"),
            lrange_all_text(server, "impact:tx:list"),
        )
    };
    let one = (
        Some("1".to_string()),
        Some("1".to_string()),
        vec!["x".to_string()],
    );
    let on_new = on(&env.new);
    let on_legacy = on(&env.legacy);
    assert_eq!(
        on_new, one,
        "the transaction's writes on new (legacy has {on_legacy:?})"
    );
    // On legacy: all of it (it committed there before the fence) or nothing (it ran on new).
    assert!(
        on_legacy == one || on_legacy == (None, None, Vec::new()),
        "legacy has part of the transaction: {on_legacy:?}"
    );
    println!(
        "the transaction ran on {}",
        if on_legacy == one { "legacy" } else { "new" }
    );
    // The session carries on, on new.
    tx.expect_cmd(&["INCR", "impact:tx:a"], b":2\r\n");
    assert_eq!(env.new.get("impact:tx:a").as_deref(), Some("2"));
}

fn lrange_all_text(server: &RedisServer, key: &str) -> Vec<String> {
    match server.command(&["LRANGE", key, "0", "-1"]) {
        Reply::Array(Some(items)) => items.iter().filter_map(Reply::bulk_text).collect(),
        other => panic!("LRANGE {key} on {}: {other:?}", server.addr()),
    }
}

#[test]
fn a_transaction_whose_exec_comes_during_the_hold_runs_once_and_the_cutover_completes() {
    transaction_completed_during_the_hold(true);
}

#[test]
fn a_transaction_queued_and_executed_during_the_hold_runs_once_and_the_cutover_completes() {
    transaction_completed_during_the_hold(false);
}

/// One acknowledged PUBLISH.
struct Published {
    seq: u64,
    /// PUBLISH's answer: how many subscribers the endpoint delivered it to.
    receivers: i64,
    sent: Instant,
    acked: Instant,
}

/// Publishes `seq` on `channel` through `proxy` every couple of milliseconds until `stop`.
fn publisher(
    proxy: String,
    channel: &'static str,
    stop: Arc<AtomicBool>,
) -> (Vec<Published>, Vec<String>) {
    let mut published = Vec::new();
    let mut errors = Vec::new();
    let mut client = match RawClient::try_connect(&proxy, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => return (published, vec![format!("connect: {e}")]),
    };
    let began = Instant::now();
    for seq in 1..=20_000u64 {
        if stop.load(Ordering::Relaxed) || began.elapsed() > WRITER_BOUND {
            break;
        }
        let sent = Instant::now();
        if let Err(e) = client.try_send(&support::cmd(&["PUBLISH", channel, &seq.to_string()])) {
            errors.push(format!("write: {e}"));
            break;
        }
        match client.read_reply_within(REPLY_TIMEOUT) {
            Ok(Reply::Int(receivers)) => published.push(Published {
                seq,
                receivers,
                sent,
                acked: Instant::now(),
            }),
            Ok(other) => errors.push(format!("PUBLISH {seq} answered {other:?}")),
            Err(e) => {
                errors.push(format!("PUBLISH {seq}: {e:?}"));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (published, errors)
}

/// Reads messages of `channel` from a subscribed client until `stop` and a quiet moment.
fn subscriber(
    mut client: RawClient,
    channel: &'static str,
    stop: Arc<AtomicBool>,
) -> (RawClient, Vec<u64>, Vec<String>) {
    let mut received = Vec::new();
    let mut errors = Vec::new();
    let began = Instant::now();
    for _ in 0..100_000 {
        if began.elapsed() > WRITER_BOUND {
            errors.push("still reading at the time bound".to_string());
            break;
        }
        match client.read_reply_within(Duration::from_millis(100)) {
            Ok(Reply::Array(Some(items)))
                if items.len() == 3
                    && items[0].bulk_text().as_deref() == Some("message")
                    && items[1].bulk_text().as_deref() == Some(channel) =>
            {
                match items[2].bulk_text().and_then(|t| t.parse().ok()) {
                    Some(seq) => received.push(seq),
                    None => errors.push(format!("message without a number: {items:?}")),
                }
            }
            Ok(other) => errors.push(format!("unexpected frame {other:?}")),
            Err(ReadError::Timeout { partial }) if partial.is_empty() => {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            Err(e) => {
                errors.push(format!("reading: {e:?}"));
                break;
            }
        }
    }
    (client, received, errors)
}

fn numsub(server: &RedisServer, channel: &str) -> Option<Reply> {
    match server.command(&["PUBSUB", "NUMSUB", channel]) {
        Reply::Array(Some(v)) => v.get(1).cloned(),
        other => panic!("PUBSUB NUMSUB on {}: {other:?}", server.addr()),
    }
}

/// Guarantee 4, a subscriber through turnout: messages published through turnout keep
/// reaching it across a cutover of a namespace (its channel even bears the namespace's
/// prefix: channels are not keys), and, with no `[pubsub] endpoint`, across a cutover of the
/// `default` route, which its subscription follows. Messages published while it moves may
/// be missed (README), but none is duplicated or reordered, every message acknowledged
/// before that cutover (or to the new subscription after it) arrives, and delivery resumes
/// within a second.
#[test]
fn a_subscriber_keeps_receiving_across_cutovers_of_a_namespace_and_of_the_default_route() {
    const CHANNEL: &str = "impact:news";
    let env = CutEnv::plain();
    let mut sub = env.turnout.raw();
    sub.expect_cmd(
        &["SUBSCRIBE", CHANNEL],
        b"*3\r\n$9\r\nsubscribe\r\n$11\r\nimpact:news\r\n:1\r\n",
    );
    assert_eq!(numsub(&env.legacy, CHANNEL), Some(Reply::Int(1)));
    let stop_sub = Arc::new(AtomicBool::new(false));
    let stop_pub = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop_sub);
        std::thread::spawn(move || subscriber(sub, CHANNEL, stop))
    };
    let writer = {
        let stop = Arc::clone(&stop_pub);
        let proxy = env.turnout.proxy_addr();
        std::thread::spawn(move || publisher(proxy, CHANNEL, stop))
    };
    let drain = |to: &str, why: &str| json!({"to": to, "fence": "drain", "timeout_ms": 2000, "reason": why});

    std::thread::sleep(Duration::from_millis(150));
    let ns_start = Instant::now();
    let ns_report = env.cutover_wait("impact", &drain("new", "namespace with subscribers"));
    let ns_end = Instant::now();
    std::thread::sleep(Duration::from_millis(150));
    let default_start = Instant::now();
    let default_report = env.cutover_wait("default", &drain("new", "default route"));
    let default_end = Instant::now();
    std::thread::sleep(Duration::from_millis(1200));
    stop_pub.store(true, Ordering::Relaxed);
    let (published, pub_errors) = writer.join().expect("publisher thread");
    // Let the last messages arrive.
    std::thread::sleep(Duration::from_millis(200));
    stop_sub.store(true, Ordering::Relaxed);
    let (mut sub, received, sub_errors) = reader.join().expect("subscriber thread");
    println!(
        "namespace cutover {:?}: {ns_report}\ndefault cutover {:?}: {default_report}",
        ns_end - ns_start,
        default_end - default_start
    );

    assert_eq!(ns_report["outcome"], "completed", "{ns_report}");
    assert_eq!(default_report["outcome"], "completed", "{default_report}");
    assert_eq!(env.turnout.target("impact"), "new");
    assert_eq!(env.turnout.target("default"), "new");
    assert!(pub_errors.is_empty(), "publisher: {pub_errors:?}");
    assert!(sub_errors.is_empty(), "subscriber: {sub_errors:?}");
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "messages duplicated or reordered: {received:?}"
    );
    let got: std::collections::HashSet<u64> = received.iter().copied().collect();
    let missed: Vec<u64> = published
        .iter()
        .filter(|p| p.receivers == 1 && !got.contains(&p.seq))
        .map(|p| p.seq)
        .collect();
    let unheard: Vec<u64> = published
        .iter()
        .filter(|p| p.receivers == 0)
        .map(|p| p.seq)
        .collect();
    println!(
        "{} published, {} received; delivered to the subscriber but not received: {missed:?}; \
         published with no subscriber: {unheard:?}",
        published.len(),
        received.len()
    );

    // Before the default route moved (the namespace's cutover included): one subscriber,
    // every message received.
    let before: Vec<&Published> = published
        .iter()
        .filter(|p| p.acked < default_start)
        .collect();
    assert!(
        before.iter().any(|p| p.sent > ns_end) && before.iter().any(|p| p.acked < ns_start),
        "the publisher was not busy around the namespace's cutover"
    );
    for p in &before {
        assert_eq!(
            p.receivers, 1,
            "PUBLISH {} before the default route moved reached {} subscribers",
            p.seq, p.receivers
        );
        assert!(
            got.contains(&p.seq),
            "message {} (acknowledged {:?} after the namespace's cutover started) never \
             arrived; received {received:?}",
            p.seq,
            p.acked.saturating_duration_since(ns_start)
        );
    }

    // After: published on new; once the subscription is there again, all arrive.
    let after: Vec<&Published> = published.iter().filter(|p| p.sent > default_end).collect();
    let resumed = after
        .iter()
        .position(|p| p.receivers == 1)
        .unwrap_or_else(|| {
            panic!(
                "no message published after the default route's cutover reached a subscriber \
                 ({} published)",
                after.len()
            )
        });
    let resumed_after = after[resumed].acked - default_end;
    println!("delivery resumed {resumed_after:?} after the default route's cutover");
    assert!(
        resumed_after < Duration::from_secs(1),
        "delivery resumed only {resumed_after:?} after the cutover"
    );
    for p in &after[resumed..] {
        assert_eq!(
            p.receivers, 1,
            "PUBLISH {} after the subscription moved reached {} subscribers",
            p.seq, p.receivers
        );
        assert!(
            got.contains(&p.seq),
            "message {} delivered to the moved subscription never arrived",
            p.seq
        );
    }
    assert!(
        after.len() - resumed > 50,
        "too few messages after the move to tell"
    );
    assert_eq!(numsub(&env.new, CHANNEL), Some(Reply::Int(1)));
    assert_eq!(numsub(&env.legacy, CHANNEL), Some(Reply::Int(0)));
    // Still subscribed, with the same count.
    sub.expect_cmd(
        &["UNSUBSCRIBE", CHANNEL],
        b"*3\r\n$11\r\nunsubscribe\r\n$11\r\nimpact:news\r\n:0\r\n",
    );
    sub.expect_cmd(&["PING"], b"+PONG\r\n");
}

/// What one unique-key writer saw: every SET it got `+OK` for, with wall-clock times (the
/// cutover reports' timestamps are wall-clock too).
struct KeyRun {
    id: usize,
    errors: Vec<String>,
    /// (sequence number, when its batch was sent, when its `+OK` arrived).
    acked: Vec<(u64, SystemTime, SystemTime)>,
}

fn unique_key(client: usize, seq: u64) -> String {
    format!("impact:c{client}:{seq}")
}

/// Pipelines `batch` × `SET impact:c<id>:<seq> v` (each key written once) until `stop`.
fn unique_key_writer(proxy: String, id: usize, batch: usize, stop: Arc<AtomicBool>) -> KeyRun {
    let mut run = KeyRun {
        id,
        errors: Vec::new(),
        acked: Vec::new(),
    };
    let mut client = match RawClient::try_connect(&proxy, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            run.errors.push(format!("connect: {e}"));
            return run;
        }
    };
    let began = Instant::now();
    let mut next_seq = 1u64;
    'batches: for _ in 0..MAX_BATCHES {
        if stop.load(Ordering::Relaxed) || began.elapsed() > WRITER_BOUND {
            break;
        }
        let first_seq = next_seq;
        let mut out = Vec::new();
        for _ in 0..batch {
            out.extend_from_slice(&support::cmd(&["SET", &unique_key(id, next_seq), "v"]));
            next_seq += 1;
        }
        let sent = SystemTime::now();
        if let Err(e) = client.try_send(&out) {
            run.errors.push(format!("write: {e}"));
            break;
        }
        for seq in first_seq..next_seq {
            match client.read_reply_within(REPLY_TIMEOUT) {
                Ok(Reply::Simple(ok)) if ok == "OK" => {
                    run.acked.push((seq, sent, SystemTime::now()));
                }
                Ok(other) => run
                    .errors
                    .push(format!("SET {} answered {other:?}", unique_key(id, seq))),
                Err(e) => {
                    run.errors
                        .push(format!("SET {}: {e:?}", unique_key(id, seq)));
                    break 'batches;
                }
            }
            if run.errors.len() > 20 {
                break 'batches;
            }
        }
    }
    run
}

/// One flip as its report dates it: from its step's start to its end.
struct Flip {
    start: SystemTime,
    end: SystemTime,
    to: String,
}

fn flip_of(report: &Value) -> Flip {
    let flip = report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"] == "flip"))
        .unwrap_or_else(|| panic!("no flip step: {report}"));
    let start = flip["started_at"]
        .as_str()
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("flip without a started_at: {flip}"));
    let took = flip["took_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("flip without took_ms: {flip}"));
    // started_at is truncated to the millisecond: the end is at most 1 ms later than this.
    Flip {
        start,
        end: start + Duration::from_secs_f64(took / 1000.0) + Duration::from_millis(1),
        to: report["to"].as_str().expect("to").to_string(),
    }
}

fn all_keys(server: &RedisServer, pattern: &str) -> std::collections::HashSet<String> {
    match support::raw::try_command(&server.addr(), &["KEYS", pattern], Duration::from_secs(10)) {
        Ok(Reply::Array(Some(items))) => items.iter().filter_map(Reply::bulk_text).collect(),
        other => panic!("KEYS {pattern} on {}: {other:?}", server.addr()),
    }
}

/// Guarantee 5, repetition: 20 cutover/rollback pairs of one namespace in a row
/// (`fence = "drain"`, two standalone servers) under continuous load from pipelining clients
/// writing unique keys. Every cutover completes, no client sees an error, every acknowledged
/// key is on exactly one endpoint, and by the reports' timeline: a write acknowledged clearly
/// before a flip began (and sent after the previous one ended) is on that flip's old
/// endpoint, a write sent clearly after a flip ended (and acknowledged before the next one
/// began) on its new one.
#[test]
fn twenty_cutover_and_rollback_pairs_under_load_put_every_write_on_exactly_one_endpoint() {
    const PAIRS: usize = 20;
    const CLIENTS: usize = 4;
    const MARGIN: Duration = Duration::from_millis(5);
    let env = CutEnv::plain();
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let proxy = env.turnout.proxy_addr();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || unique_key_writer(proxy, id, 16, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let began = Instant::now();
    let mut reports = Vec::with_capacity(2 * PAIRS);
    let mut answered = Vec::with_capacity(2 * PAIRS);
    for i in 0..2 * PAIRS {
        assert!(
            began.elapsed() < Duration::from_secs(12),
            "only {i} cutovers after {:?}",
            began.elapsed()
        );
        let to = if i % 2 == 0 { "new" } else { "legacy" };
        let report = env.cutover_wait(
            "impact",
            &json!({"to": to, "fence": "drain", "timeout_ms": 2000, "reason": format!("round {i}")}),
        );
        answered.push(SystemTime::now());
        reports.push(report);
        std::thread::sleep(Duration::from_millis(40));
    }
    let cutovers_took = began.elapsed();
    std::thread::sleep(Duration::from_millis(60));
    stop.store(true, Ordering::Relaxed);
    let runs: Vec<KeyRun> = handles
        .into_iter()
        .map(|h| h.join().expect("writer thread panicked"))
        .collect();

    assert_no_client_errors(runs.iter().map(|r| (r.id, &r.errors[..])));
    for (i, report) in reports.iter().enumerate() {
        assert_eq!(report["outcome"], "completed", "cutover {i}: {report}");
        assert_eq!(
            step_names(report),
            ["hold", "drain", "flip"],
            "cutover {i}: {report}"
        );
    }
    assert_eq!(env.turnout.target("impact"), "legacy");
    let pauses: Vec<f64> = reports
        .iter()
        .map(|r| r["pause_ms"].as_f64().expect("pause_ms"))
        .collect();
    let flips: Vec<Flip> = reports.iter().map(flip_of).collect();
    for (i, (flip, answered)) in flips.iter().zip(&answered).enumerate() {
        assert!(
            flip.start <= flip.end && flip.end <= *answered + MARGIN,
            "cutover {i}: its flip ended after its POST was answered"
        );
    }
    let acked: usize = runs.iter().map(|r| r.acked.len()).sum();
    println!(
        "{} cutovers in {cutovers_took:?}, pauses {:.1}..{:.1} ms; {acked} writes acknowledged",
        reports.len(),
        pauses.iter().copied().fold(f64::MAX, f64::min),
        pauses.iter().copied().fold(0.0, f64::max),
    );

    // Every acknowledged key on exactly one endpoint, and nothing else there.
    let on_legacy = all_keys(&env.legacy, "impact:c*");
    let on_new = all_keys(&env.new, "impact:c*");
    let mut wrong = Vec::new();
    let mut expected = std::collections::HashSet::with_capacity(acked);
    // Writes that fall between two flips: which period, and where they must be.
    let mut checked = vec![0usize; flips.len() + 1];
    for run in &runs {
        assert!(!run.acked.is_empty(), "writer {} wrote nothing", run.id);
        for &(seq, sent, ack) in &run.acked {
            let key = unique_key(run.id, seq);
            let (l, n) = (on_legacy.contains(&key), on_new.contains(&key));
            if l == n {
                wrong.push(format!("{key}: on legacy {l}, on new {n}"));
            }
            // The period the write was sent in: after the last flip that ended before it.
            let period = flips.partition_point(|f| f.end + MARGIN < sent);
            let before_next = flips.get(period).map_or(true, |f| ack + MARGIN < f.start);
            if before_next {
                let target = if period == 0 {
                    "legacy"
                } else {
                    flips[period - 1].to.as_str()
                };
                checked[period] += 1;
                let on_target = if target == "legacy" { l } else { n };
                if !on_target || l == n {
                    wrong.push(format!(
                        "{key} (sent {:?} after the flip of cutover {}, acknowledged before the \
                         next): on legacy {l}, on new {n}, expected only on {target}",
                        period
                            .checked_sub(1)
                            .and_then(|p| sent.duration_since(flips[p].end).ok()),
                        period as i64 - 1
                    ));
                }
            }
            expected.insert(key);
        }
    }
    let stray: Vec<&String> = on_legacy
        .iter()
        .chain(&on_new)
        .filter(|k| !expected.contains(*k))
        .take(10)
        .collect();
    println!(
        "writes checked against the timeline, per period between flips: {checked:?}; \
         {} keys on legacy, {} on new",
        on_legacy.len(),
        on_new.len()
    );
    assert!(
        wrong.is_empty(),
        "{} acknowledged write(s) misplaced, first ones: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(stray.is_empty(), "keys nobody got acknowledged: {stray:?}");
    assert_eq!(on_legacy.len() + on_new.len(), acked);
    assert!(
        checked.iter().all(|&n| n > 0),
        "some period between flips saw no write to check: {checked:?}"
    );
}

/// An aborted replication fence takes its key out of the application's keyspace (it would
/// otherwise show in KEYS, SCAN and DBSIZE until it expires).
#[test]
fn an_aborted_fence_leaves_no_key_behind() {
    let env = CutEnv::plain();
    let report = env.cutover_wait(
        "impact",
        &json!({"to": "new", "fence": "replication", "timeout_ms": 200, "reason": "no replica"}),
    );
    assert_eq!(report["failed_step"], "fence", "{report}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !keys(&env.legacy, "*turnout:fence*").is_empty() {
        assert!(
            Instant::now() < deadline,
            "fence key left on legacy: {:?}",
            keys(&env.legacy, "*turnout:fence*")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(keys(&env.new, "*turnout:fence*").is_empty());
}
