//! Shadow traffic and dual-write, per namespace (`PUT /v1/routes/{ns}` with `mode`).
//!
//! Every test runs real `redis-server` processes behind a real `turnout run`:
//!
//! - `shadow_of_identical_data_matches_100k_mixed_operations`: 100k pipelined mixed operations
//!   (strings, counters, hashes, sets, sorted sets, lists, TTL reads, writes mirrored with
//!   `writes: true`) from several clients: every read compared and matched, every write
//!   mirrored, nothing else.
//! - `seeded_divergence_reports_exactly_the_divergent_keys`: 50 of 500 keys differ on the
//!   shadow; exactly those are reported, with the right command names.
//! - `unordered_replies_match_whatever_the_insertion_order`: sets and hashes built in different
//!   orders (SMEMBERS, HGETALL, HKEYS, HVALS, SINTER, SUNION, SDIFF), RESP2 and RESP3.
//! - `killed_shadow_endpoint_costs_clients_nothing_and_memory_stays_flat` and
//!   `frozen_shadow_endpoint_costs_clients_nothing_and_memory_stays_flat`: the shadow
//!   endpoint dies (SIGKILL) or stops answering (SIGSTOP) mid-run.
//! - `dual_write_with_transactions_leaves_identical_datasets`: dual-write of a mixed workload
//!   with MULTI/EXEC, a WATCH-failed EXEC and DISCARD from several clients.
//! - `a_flood_of_mismatches_is_counted_whole_and_logged_a_few_per_second`: an empty shadow
//!   endpoint; every mismatch counted, `mismatch_log` of them per second rendered.
//! - API validation, persistence across restarts, `log_values`, `/metrics`, reset; TTL
//!   tolerance and error normalisation; what is never compared (oversized, blocking, keyless,
//!   nondeterministic); copies run in the session's database and protocol.
//!
//! Regression tests for bugs these tests found (fixed):
//! - `dual_write_with_transactions_leaves_identical_datasets` and
//!   `dual_write_replays_a_transaction_whose_exec_reply_is_long`: a transaction whose EXEC
//!   reply was longer than 16 bytes was never replayed on the secondary (and not counted).
//! - `copies_never_run_in_the_wrong_database`: a copy whose SELECT the secondary refused ran
//!   in database 0 of the secondary and was counted as mirrored.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::raw::encode;
use support::turnout::route_of;
use support::{show, standard_body, wait_until, Env, RawClient, RedisServer, Reply, Turnout};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The standard namespaces (`web-cache` → legacy, `token-cache` and `impact` → new, default →
/// legacy) with a `[shadow]` section made of `shadow_options`.
fn shadow_env(shadow_options: &[&str]) -> Env {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let body = format!(
        "{}\n[shadow]\n{}\n",
        standard_body(&legacy, &new, "legacy"),
        shadow_options.join("\n")
    );
    let turnout = Turnout::builder(&body).start();
    Env {
        turnout,
        legacy,
        new,
    }
}

/// `PUT /v1/routes/{namespace}` with `fields` (a JSON object) plus a reason.
fn put_route(t: &Turnout, namespace: &str, fields: Value) -> support::HttpResponse {
    let mut body = fields;
    if body.get("reason").is_none() {
        body["reason"] = json!("shadow test");
    }
    t.admin_put(&format!("/v1/routes/{namespace}"), &body.to_string(), &[])
}

/// Like [`put_route`], asserting 200; returns the routes document.
fn set_mode(t: &Turnout, namespace: &str, fields: Value) -> Value {
    let r = put_route(t, namespace, fields.clone());
    assert_eq!(
        r.status,
        200,
        "PUT /v1/routes/{namespace} {fields}: {}",
        r.text()
    );
    r.json()
}

/// Per-namespace shadow counts from `GET /v1/shadow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    matched: u64,
    mismatch: u64,
    shadow_error: u64,
    dropped: u64,
    mirrored: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.matched + self.mismatch + self.shadow_error + self.dropped + self.mirrored
    }
}

/// The whole `GET /v1/shadow` document.
fn shadow_doc(t: &Turnout) -> Value {
    let r = t.admin_get("/v1/shadow");
    assert_eq!(r.status, 200, "GET /v1/shadow: {}", r.text());
    r.json()
}

fn shadow_row(doc: &Value, namespace: &str) -> Value {
    doc["namespaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no namespaces array in {doc}"))
        .iter()
        .find(|r| r["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no row for {namespace} in {doc}"))
        .clone()
}

fn counts_of(row: &Value) -> Counts {
    let c = &row["counts"];
    let get = |name: &str| {
        c[name]
            .as_u64()
            .unwrap_or_else(|| panic!("counts.{name} is not a number in {row}"))
    };
    Counts {
        matched: get("match"),
        mismatch: get("mismatch"),
        shadow_error: get("shadow_error"),
        dropped: get("dropped"),
        mirrored: get("mirrored"),
    }
}

fn counts(t: &Turnout, namespace: &str) -> Counts {
    counts_of(&shadow_row(&shadow_doc(t), namespace))
}

/// Polls (bounded) until `done` holds for the namespace's counts and nothing is queued for any
/// shadow lane; panics with the last counts otherwise.
fn wait_counts(
    t: &Turnout,
    namespace: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Counts) -> bool,
) -> Counts {
    let mut last = Counts::default();
    let mut last_doc = Value::Null;
    let ok = wait_until(timeout, Duration::from_millis(50), || {
        last_doc = shadow_doc(t);
        last = counts_of(&shadow_row(&last_doc, namespace));
        done(&last) && last_doc["queued_bytes"].as_u64() == Some(0)
    });
    assert!(
        ok,
        "{what}: shadow counts of {namespace} did not settle within {timeout:?}: {last:?}\n{last_doc}\nrecent mismatches: {}",
        t.admin_get("/v1/shadow/mismatches?limit=3").text()
    );
    last
}

/// Polls (bounded) until `done` holds and nothing is queued, or until the counts have not
/// moved for 3 s (something was lost: the caller's assertion then shows what); returns the
/// last counts.
fn settle(
    t: &Turnout,
    namespace: &str,
    timeout: Duration,
    done: impl Fn(&Counts) -> bool,
) -> Counts {
    let deadline = Instant::now() + timeout;
    let mut last = Counts::default();
    let mut moved = Instant::now();
    loop {
        let doc = shadow_doc(t);
        let now = counts_of(&shadow_row(&doc, namespace));
        let idle = doc["queued_bytes"].as_u64() == Some(0);
        if done(&now) && idle {
            return now;
        }
        if now != last || !idle {
            moved = Instant::now();
        }
        last = now;
        if moved.elapsed() >= Duration::from_secs(3) || Instant::now() >= deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls (bounded) until the namespace's counts stop moving (unchanged for 500 ms) and
/// nothing is queued.
fn wait_stable(t: &Turnout, namespace: &str, timeout: Duration) -> Counts {
    let deadline = Instant::now() + timeout;
    let mut previous = counts(t, namespace);
    let mut stable_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let doc = shadow_doc(t);
        let now = counts_of(&shadow_row(&doc, namespace));
        if now != previous || doc["queued_bytes"].as_u64() != Some(0) {
            previous = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(500) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "shadow counts of {namespace} still moving after {timeout:?}: {now:?}\n{doc}"
        );
    }
}

/// `GET /v1/shadow/mismatches?{query}`, asserting 200.
fn mismatches(t: &Turnout, query: &str) -> Vec<Value> {
    let r = t.admin_get(&format!("/v1/shadow/mismatches?{query}"));
    assert_eq!(r.status, 200, "GET mismatches?{query}: {}", r.text());
    r.json()["mismatches"]
        .as_array()
        .unwrap_or_else(|| panic!("no mismatches array: {}", r.text()))
        .clone()
}

/// Encodes a command given as owned strings.
fn enc(args: &[String]) -> Vec<u8> {
    let parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&parts)
}

/// Builds a command from string-likes.
macro_rules! c {
    ($($arg:expr),+ $(,)?) => { vec![$($arg.to_string()),+] };
}

/// Sends `cmds` pipelined (in chunks of `chunk`) and returns every reply frame.
fn pipeline(client: &mut RawClient, cmds: &[Vec<String>], chunk: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(cmds.len());
    for part in cmds.chunks(chunk.max(1)) {
        let mut bytes = Vec::new();
        for c in part {
            bytes.extend_from_slice(&enc(c));
        }
        client.send(&bytes);
        out.extend(client.read_frames(part.len(), Duration::from_secs(60)));
    }
    out
}

/// Runs `cmds` directly on each server, asserting that none is refused.
fn seed(servers: &[&RedisServer], cmds: &[Vec<String>]) {
    for server in servers {
        let mut client = RawClient::connect(&server.addr());
        let replies = pipeline(&mut client, cmds, 1000);
        for (c, r) in cmds.iter().zip(&replies) {
            assert!(
                !r.starts_with(b"-"),
                "seeding {c:?} on {}: {}",
                server.addr(),
                show(r)
            );
        }
    }
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The pid of a redis-server, from its own INFO.
fn redis_pid(server: &RedisServer) -> u32 {
    let info = server
        .command(&["INFO", "server"])
        .bulk_text()
        .expect("INFO is a bulk string");
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process_id in INFO: {info}"))
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// Resumes a SIGSTOPped process when dropped (even when the test panics).
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// Every key of database 0 of a server (directly).
fn all_keys(server: &RedisServer) -> BTreeSet<String> {
    let mut client = RawClient::connect(&server.addr());
    let mut keys = BTreeSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..100_000 {
        let reply = client.read_reply_after_parsed(&["SCAN", &cursor, "COUNT", "1000"]);
        let Reply::Array(Some(parts)) = reply else {
            panic!("SCAN reply {reply:?}");
        };
        cursor = parts[0].bulk_text().expect("cursor");
        let Reply::Array(Some(found)) = &parts[1] else {
            panic!("SCAN keys {parts:?}");
        };
        keys.extend(found.iter().map(|k| k.bulk_text().expect("key")));
        if cursor == "0" {
            return keys;
        }
    }
    panic!("SCAN did not finish on {}", server.addr());
}

trait ParsedReply {
    fn read_reply_after_parsed(&mut self, args: &[&str]) -> Reply;
}

impl ParsedReply for RawClient {
    fn read_reply_after_parsed(&mut self, args: &[&str]) -> Reply {
        self.send_cmd(args);
        self.read_reply()
    }
}

fn bulk_strings(reply: &Reply) -> Vec<String> {
    match reply {
        Reply::Array(Some(items)) => items
            .iter()
            .map(|i| i.bulk_text().unwrap_or_else(|| format!("{i:?}")))
            .collect(),
        other => panic!("expected an array of bulk strings, got {other:?}"),
    }
}

/// A key's type, value (normalised: sets and hashes sorted) and whether it has a TTL, read
/// directly from a server.
fn key_snapshot(client: &mut RawClient, key: &str) -> (String, String, bool) {
    let kind = match client.read_reply_after_parsed(&["TYPE", key]) {
        Reply::Simple(s) => s,
        other => panic!("TYPE {key}: {other:?}"),
    };
    let value = match kind.as_str() {
        "string" => client
            .read_reply_after_parsed(&["GET", key])
            .bulk_text()
            .unwrap_or_default(),
        "list" => {
            bulk_strings(&client.read_reply_after_parsed(&["LRANGE", key, "0", "-1"])).join("\u{1}")
        }
        "set" => {
            let mut members = bulk_strings(&client.read_reply_after_parsed(&["SMEMBERS", key]));
            members.sort();
            members.join("\u{1}")
        }
        "zset" => {
            bulk_strings(&client.read_reply_after_parsed(&["ZRANGE", key, "0", "-1", "WITHSCORES"]))
                .join("\u{1}")
        }
        "hash" => {
            let flat = bulk_strings(&client.read_reply_after_parsed(&["HGETALL", key]));
            let mut pairs: Vec<String> = flat
                .chunks(2)
                .map(|p| format!("{}={}", p[0], p[1]))
                .collect();
            pairs.sort();
            pairs.join("\u{1}")
        }
        "none" => String::new(),
        other => panic!("unexpected type {other} of {key}"),
    };
    let ttl = match client.read_reply_after_parsed(&["PTTL", key]) {
        Reply::Int(n) => n,
        other => panic!("PTTL {key}: {other:?}"),
    };
    (kind, value, ttl >= 0)
}

/// The Prometheus sample `turnout_shadow_total{namespace,command,outcome}`, if present.
fn shadow_metric(metrics: &str, namespace: &str, command: &str, outcome: &str) -> Option<u64> {
    let prefix = format!(
        "turnout_shadow_total{{namespace=\"{namespace}\",command=\"{command}\",outcome=\"{outcome}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("metric value {v:?}: {e}")) as u64
        })
}

// ---------------------------------------------------------------------------------------------
// 1. Identical data: 100k mixed operations, every read matches
// ---------------------------------------------------------------------------------------------

const MIXED_CLIENTS: usize = 4;
const MIXED_OPS_PER_CLIENT: usize = 25_000;
const MIXED_BATCH: usize = 250;

/// The keys of one client of the mixed workload (disjoint per client, so the per-session order
/// of mirrored writes is the only order that matters).
fn mixed_key(c: usize, kind: &str, i: u64) -> String {
    format!("web:mix:{c}:{kind}{i}")
}

/// Commands that build client `c`'s initial dataset (run on both endpoints).
fn mixed_seed(c: usize) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for i in 0..50 {
        cmds.push(c!("SET", mixed_key(c, "s", i), format!("value-{c}-{i}")));
    }
    for i in 0..10 {
        cmds.push(c!("SET", mixed_key(c, "n", i), i * 7));
    }
    for i in 0..20 {
        let mut hset = c!("HSET", mixed_key(c, "h", i), "cnt", 0);
        for f in 0..10 {
            hset.push(format!("f{f}"));
            hset.push(format!("hv-{i}-{f}"));
        }
        cmds.push(hset);
        let mut sadd = c!("SADD", mixed_key(c, "set", i));
        for m in 0..20 {
            sadd.push(format!("member-{}", (m * 7 + i) % 30));
        }
        cmds.push(sadd);
        let mut zadd = c!("ZADD", mixed_key(c, "z", i));
        for m in 0..15 {
            zadd.push(format!("{}", (m * 13 + i) % 50));
            zadd.push(format!("zm-{m}"));
        }
        cmds.push(zadd);
        let mut rpush = c!("RPUSH", mixed_key(c, "l", i));
        for e in 0..20 {
            rpush.push(format!("le-{i}-{e}"));
        }
        cmds.push(rpush);
        cmds.push(c!(
            "SET",
            mixed_key(c, "t", i),
            format!("ttl-{i}"),
            "EX",
            100_000 + i * 10
        ));
    }
    cmds
}

/// One operation of client `c`'s workload: the command and whether it is a write.
fn mixed_op(c: usize, rng: &mut Rng) -> (Vec<String>, bool) {
    let k = |kind: &str, n: u64| mixed_key(c, kind, n);
    let i = rng.below(20);
    let j = rng.below(20);
    let r = rng.below(100);
    let read = |cmd: Vec<String>| (cmd, false);
    let write = |cmd: Vec<String>| (cmd, true);
    match r {
        // Writes (about a quarter), all deterministic.
        0..=2 => write(c!("SET", k("s", rng.below(50)), format!("w{}", rng.next()))),
        3..=4 => write(c!("INCRBY", k("n", rng.below(10)), rng.below(100))),
        5..=6 => write(c!("HSET", k("h", i), format!("f{}", j % 12), rng.next())),
        7 => write(c!("HINCRBY", k("h", i), "cnt", 1)),
        8..=9 => write(c!("SADD", k("set", i), format!("member-{}", j + 10))),
        10 => write(c!("SREM", k("set", i), format!("member-{}", rng.below(30)))),
        11..=12 => write(c!("ZADD", k("z", i), rng.below(100), format!("zm-{j}"))),
        13 => write(c!("ZINCRBY", k("z", i), 3, format!("zm-{}", j % 15))),
        14..=15 => write(c!(
            "RPUSH",
            k("l", i),
            format!("le-new-{}", rng.below(1000))
        )),
        16 => write(c!("LTRIM", k("l", i), -25, -1)),
        17 => write(c!("LPOP", k("l", i))),
        18 => write(c!("EXPIRE", k("t", i), 100_000 + j)),
        19..=20 => write(c!(
            "SET",
            k("t", i),
            format!("ttl-{j}"),
            "PX",
            100_000_000 + j
        )),
        21..=22 => write(c!("MSET", k("s", i), "m1", k("s", j + 20), "m2")),
        23 => write(c!("DEL", k("s", 49))),
        // Reads.
        24..=31 => read(c!("GET", k("s", rng.below(50)))),
        32..=34 => read(c!("MGET", k("s", i), k("s", j), k("n", j % 10))),
        35..=37 => read(c!("HGET", k("h", i), format!("f{}", j % 12))),
        38..=40 => read(c!("HGETALL", k("h", i))),
        41 => read(c!("HMGET", k("h", i), "f1", "f5", "cnt", "nope")),
        42 => read(c!("HLEN", k("h", i))),
        43..=45 => read(c!("SMEMBERS", k("set", i))),
        46 => read(c!("SISMEMBER", k("set", i), format!("member-{j}"))),
        47 => read(c!("SCARD", k("set", i))),
        48..=49 => read(c!("SINTER", k("set", i), k("set", j))),
        50 => read(c!("SUNION", k("set", i), k("set", j))),
        51 => read(c!("SDIFF", k("set", i), k("set", j))),
        52..=55 => read(c!("ZRANGE", k("z", i), 0, -1, "WITHSCORES")),
        56 => read(c!("ZSCORE", k("z", i), format!("zm-{}", j % 15))),
        57 => read(c!("ZRANK", k("z", i), format!("zm-{}", j % 15))),
        58 => read(c!("ZRANGEBYSCORE", k("z", i), 10, 60)),
        59 => read(c!("ZCARD", k("z", i))),
        60..=63 => read(c!("LRANGE", k("l", i), 0, -1)),
        64 => read(c!("LLEN", k("l", i))),
        65 => read(c!("LINDEX", k("l", i), j)),
        66..=69 => read(c!("TTL", k("t", i))),
        70..=73 => read(c!("PTTL", k("t", i))),
        74 => read(c!("TTL", k("s", i))),
        75..=77 => read(c!("EXISTS", k("s", i), k("l", j), k("missing", 0))),
        78..=80 => read(c!(
            "TYPE",
            k(["s", "h", "set", "z", "l"][j as usize % 5], i)
        )),
        81..=83 => read(c!("STRLEN", k("s", rng.below(50)))),
        84..=86 => read(c!("GETRANGE", k("s", i), 1, 5)),
        87..=89 => read(c!("GET", k("n", rng.below(10)))),
        90..=92 => read(c!("HEXISTS", k("h", i), format!("f{}", j % 12))),
        93..=95 => read(c!("SMISMEMBER", k("set", i), "member-1", "member-12")),
        _ => read(c!("ZCOUNT", k("z", i), 0, 50)),
    }
}

/// Runs client `c`'s workload through turnout; returns (reads, writes, error replies).
fn run_mixed_client(addr: &str, c: usize) -> (u64, u64, Vec<String>) {
    let mut client = RawClient::connect(addr);
    let mut rng = Rng::new(1000 + c as u64);
    let (mut reads, mut writes) = (0u64, 0u64);
    let mut errors = Vec::new();
    let mut done = 0;
    while done < MIXED_OPS_PER_CLIENT {
        let n = MIXED_BATCH.min(MIXED_OPS_PER_CLIENT - done);
        let ops: Vec<(Vec<String>, bool)> = (0..n).map(|_| mixed_op(c, &mut rng)).collect();
        let cmds: Vec<Vec<String>> = ops.iter().map(|(cmd, _)| cmd.clone()).collect();
        let replies = pipeline(&mut client, &cmds, n);
        for ((cmd, is_write), reply) in ops.iter().zip(&replies) {
            if reply.starts_with(b"-") {
                errors.push(format!("{cmd:?} -> {}", show(reply)));
            }
            if *is_write {
                writes += 1;
            } else {
                reads += 1;
            }
        }
        done += n;
    }
    (reads, writes, errors)
}

#[test]
fn shadow_of_identical_data_matches_100k_mixed_operations() {
    let env = shadow_env(&[
        // Capacity for the whole run: this test is about comparisons, not about drops.
        "connections = 4",
        "queue = 200000",
        "compare_timeout = \"10s\"",
        "mismatch_log = 1000",
    ]);
    let t = &env.turnout;
    let seed_cmds: Vec<Vec<String>> = (0..MIXED_CLIENTS).flat_map(mixed_seed).collect();
    seed(&[&env.legacy, &env.new], &seed_cmds);
    set_mode(
        t,
        "web-cache",
        json!({"mode": "shadow", "shadow": "new", "sample": 1.0, "writes": true}),
    );

    let started = Instant::now();
    let addr = t.proxy_addr();
    let handles: Vec<_> = (0..MIXED_CLIENTS)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || run_mixed_client(&addr, c))
        })
        .collect();
    let (mut reads, mut writes, mut errors) = (0u64, 0u64, Vec::new());
    for h in handles {
        let (r, w, e) = h.join().expect("client thread");
        reads += r;
        writes += w;
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "mixed workload: {} operations ({reads} reads, {writes} writes) in {elapsed:?}",
        reads + writes
    );
    assert_eq!(
        reads + writes,
        (MIXED_CLIENTS * MIXED_OPS_PER_CLIENT) as u64
    );
    assert!(
        errors.is_empty(),
        "client errors: {:?}",
        &errors[..errors.len().min(10)]
    );

    let final_counts = settle(t, "web-cache", Duration::from_secs(30), |c| {
        c.total() >= reads + writes
    });
    let recent = mismatches(t, "namespace=web-cache&limit=20");
    assert_eq!(
        final_counts,
        Counts {
            matched: reads,
            mismatch: 0,
            shadow_error: 0,
            dropped: 0,
            mirrored: writes,
        },
        "every read compared and matched, every write mirrored; recent mismatches: {recent:#?}"
    );
    assert!(recent.is_empty(), "{recent:#?}");
    let row = shadow_row(&shadow_doc(t), "web-cache");
    assert_eq!(row["compared"].as_u64(), Some(reads), "{row}");
    assert_eq!(row["match_ratio"].as_f64(), Some(1.0), "{row}");
    assert_eq!(row["mode"], "shadow", "{row}");
    assert_eq!(row["shadow"], "new", "{row}");
    // The other namespaces saw nothing.
    assert_eq!(counts(t, "token-cache"), Counts::default());
    assert_eq!(counts(t, "default"), Counts::default());
    // And the mirrored writes left both endpoints with the same data.
    let keys = all_keys(&env.legacy);
    assert_eq!(keys, all_keys(&env.new), "key sets differ after mirroring");
    let mut a = RawClient::connect(&env.legacy.addr());
    let mut b = RawClient::connect(&env.new.addr());
    for key in &keys {
        assert_eq!(
            key_snapshot(&mut a, key),
            key_snapshot(&mut b, key),
            "{key}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Seeded divergence: exactly the divergent keys are reported
// ---------------------------------------------------------------------------------------------

#[test]
fn seeded_divergence_reports_exactly_the_divergent_keys() {
    let env = shadow_env(&["mismatch_log = 1000"]);
    let t = &env.turnout;
    // 100 keys of each of five types, the same on both endpoints.
    let kinds = [
        ("s", "get"),
        ("h", "hgetall"),
        ("set", "smembers"),
        ("z", "zrange"),
        ("l", "lrange"),
    ];
    let key = |kind: &str, i: usize| format!("web:div:{kind}{i}");
    let mut same = Vec::new();
    for i in 0..100 {
        same.push(c!("SET", key("s", i), format!("value-{i}")));
        same.push(c!("HSET", key("h", i), "a", i, "b", "x"));
        same.push(c!("SADD", key("set", i), "p", "q", format!("r{i}")));
        same.push(c!("ZADD", key("z", i), 1, "one", 2, format!("two{i}")));
        same.push(c!("RPUSH", key("l", i), "x", "y", i));
    }
    seed(&[&env.legacy, &env.new], &same);
    // 50 keys differ on the shadow: 10 of each type.
    let mut expected: BTreeMap<String, &str> = BTreeMap::new();
    let mut diverge = Vec::new();
    for i in (3..100).step_by(10) {
        diverge.push(c!("SET", key("s", i), format!("other-{i}")));
        diverge.push(c!("HSET", key("h", i), "b", "changed"));
        diverge.push(c!("SADD", key("set", i), "extra"));
        diverge.push(c!("ZINCRBY", key("z", i), 5, "one"));
        diverge.push(c!("RPUSH", key("l", i), "tail"));
        for (kind, command) in kinds {
            expected.insert(key(kind, i), command);
        }
    }
    assert_eq!(expected.len(), 50);
    seed(&[&env.new], &diverge);

    set_mode(t, "web-cache", json!({"mode": "shadow", "shadow": "new"}));
    let mut reads = Vec::new();
    for i in 0..100 {
        reads.push(c!("GET", key("s", i)));
        reads.push(c!("HGETALL", key("h", i)));
        reads.push(c!("SMEMBERS", key("set", i)));
        reads.push(c!("ZRANGE", key("z", i), 0, -1, "WITHSCORES"));
        reads.push(c!("LRANGE", key("l", i), 0, -1));
    }
    // Reads that do not see the difference: they must match, divergent keys included.
    for i in 0..100 {
        for (kind, _) in kinds {
            reads.push(c!("EXISTS", key(kind, i)));
        }
    }
    let mut client = t.raw();
    let replies = pipeline(&mut client, &reads, 100);
    assert!(replies.iter().all(|r| !r.starts_with(b"-")));

    let settled = wait_counts(t, "web-cache", Duration::from_secs(20), "divergence", |c| {
        c.total() >= 1000
    });
    assert_eq!(
        settled,
        Counts {
            matched: 950,
            mismatch: 50,
            ..Counts::default()
        }
    );
    let row = shadow_row(&shadow_doc(t), "web-cache");
    assert_eq!(row["compared"].as_u64(), Some(1000));
    let ratio = row["match_ratio"].as_f64().expect("match_ratio");
    assert!((ratio - 0.95).abs() < 1e-9, "{row}");

    let entries = mismatches(t, "namespace=web-cache&limit=1000");
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    for e in &entries {
        assert_eq!(e["namespace"], "web-cache", "{e}");
        assert_eq!(e["outcome"], "mismatch", "{e}");
        assert!(e["at"].as_str().is_some_and(|s| s.len() >= 20), "at: {e}");
        assert_ne!(e["primary"], e["shadow"], "{e}");
        let k = e["key"].as_str().expect("key").to_string();
        let command = e["command"].as_str().expect("command").to_string();
        assert!(
            reported.insert(k.clone(), command).is_none(),
            "{k} reported twice: {entries:#?}"
        );
    }
    let expected: BTreeMap<String, String> = expected
        .into_iter()
        .map(|(k, c)| (k, c.to_string()))
        .collect();
    assert_eq!(reported, expected, "reported keys and commands");
    let r = t.admin_get("/v1/shadow/mismatches?limit=1");
    assert_eq!(
        r.json()["unlogged"],
        0,
        "50 mismatches, 1000 may be logged per second"
    );
    // All namespaces together: the same 50. A limit returns the newest first.
    assert_eq!(mismatches(t, "limit=1000").len(), 50);
    let newest = mismatches(t, "namespace=web-cache&limit=5");
    assert_eq!(newest.len(), 5);
    assert_eq!(newest[..], entries[..5]);
    // Other namespaces have none.
    assert!(mismatches(t, "namespace=token-cache").is_empty());
    // Bad queries.
    let r = t.admin_get("/v1/shadow/mismatches?namespace=nope");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = t.admin_get("/v1/shadow/mismatches?limit=0");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = t.admin_get("/v1/shadow/mismatches?color=red");
    assert_eq!(r.status, 400, "{}", r.text());
}

// ---------------------------------------------------------------------------------------------
// 3. Unordered replies: insertion order does not matter, RESP2 and RESP3
// ---------------------------------------------------------------------------------------------

#[test]
fn unordered_replies_match_whatever_the_insertion_order() {
    let env = shadow_env(&[]);
    let t = &env.turnout;
    let sets = 6;
    let mut forward = Vec::new();
    let mut backward = Vec::new();
    for s in 0..sets {
        // Small and large sets and hashes (listpack and hashtable encodings).
        let members = if s % 2 == 0 { 20 } else { 300 };
        let names: Vec<String> = (0..members)
            .map(|m| format!("m{}", (m * 3 + s) % 400))
            .collect();
        let set_key = format!("web:ord:set{s}");
        let hash_key = format!("web:ord:hash{s}");
        let mut f = c!("SADD", set_key);
        f.extend(names.iter().cloned());
        let mut b = c!("SADD", set_key);
        b.extend(names.iter().rev().cloned());
        forward.push(f);
        backward.push(b);
        for (i, name) in names.iter().enumerate() {
            forward.push(c!("HSET", hash_key, name, format!("v{i}")));
        }
        for (i, name) in names.iter().enumerate().rev() {
            backward.push(c!("HSET", hash_key, name, format!("v{i}")));
        }
    }
    seed(&[&env.legacy], &forward);
    seed(&[&env.new], &backward);

    let mut reads = Vec::new();
    for s in 0..sets {
        let set_key = format!("web:ord:set{s}");
        let hash_key = format!("web:ord:hash{s}");
        let other = format!("web:ord:set{}", (s + 1) % sets);
        reads.push(c!("SMEMBERS", set_key));
        reads.push(c!("HGETALL", hash_key));
        reads.push(c!("HKEYS", hash_key));
        reads.push(c!("HVALS", hash_key));
        reads.push(c!("SINTER", set_key, other));
        reads.push(c!("SUNION", set_key, other));
        reads.push(c!("SDIFF", set_key, other));
        reads.push(c!("SDIFF", other, set_key));
    }
    // The test means something only if the endpoints really answer in different orders.
    let differing = {
        let mut a = RawClient::connect(&env.legacy.addr());
        let mut b = RawClient::connect(&env.new.addr());
        let ra = pipeline(&mut a, &reads, 100);
        let rb = pipeline(&mut b, &reads, 100);
        reads
            .iter()
            .zip(ra.iter().zip(&rb))
            .filter(|(_, (x, y))| x != y)
            .map(|(c, _)| c[0].clone())
            .collect::<BTreeSet<String>>()
    };
    for command in ["SMEMBERS", "HGETALL", "HKEYS", "HVALS", "SUNION"] {
        assert!(
            differing.contains(command),
            "precondition: {command} replies should differ in order between the endpoints \
             (differing: {differing:?})"
        );
    }

    set_mode(t, "web-cache", json!({"mode": "shadow", "shadow": "new"}));
    // RESP2.
    let mut resp2 = t.raw();
    let replies = pipeline(&mut resp2, &reads, 100);
    assert!(replies.iter().all(|r| !r.starts_with(b"-")));
    // RESP3 on another connection.
    let mut resp3 = t.raw();
    let hello = resp3.roundtrip(&["HELLO", "3"]);
    assert!(hello.starts_with(b"%"), "HELLO 3: {}", show(&hello));
    let replies3 = pipeline(&mut resp3, &reads, 100);
    assert!(replies3.iter().all(|r| !r.starts_with(b"-")));
    assert!(
        replies3.iter().any(|r| r.starts_with(b"~"))
            && replies3.iter().any(|r| r.starts_with(b"%")),
        "RESP3 sets and maps expected"
    );
    // A RESP2 connection again after HELLO 3 on the same lane.
    let mut again = t.raw();
    let replies2b = pipeline(&mut again, &reads, 100);
    assert!(replies2b.iter().all(|r| !r.starts_with(b"-")));

    // HELLO 3 and HELLO 2 pipelined with the reads: each copy runs in the protocol its
    // command was sent in.
    let mut switching = t.raw();
    let mut mixed = vec![c!("HELLO", 3)];
    mixed.extend(reads.iter().cloned());
    mixed.push(c!("HELLO", 2));
    mixed.extend(reads.iter().cloned());
    let replies = pipeline(&mut switching, &mixed, mixed.len());
    assert!(replies.iter().all(|r| !r.starts_with(b"-")));
    assert!(replies[1..=reads.len()].iter().any(|r| r.starts_with(b"~")));
    assert!(replies[reads.len() + 2..]
        .iter()
        .all(|r| r.starts_with(b"*")));

    let n = 5 * reads.len() as u64;
    let settled = wait_counts(t, "web-cache", Duration::from_secs(20), "ordering", |c| {
        c.total() >= n
    });
    let recent = mismatches(t, "namespace=web-cache&limit=10");
    assert_eq!(
        settled,
        Counts {
            matched: n,
            ..Counts::default()
        },
        "{recent:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The shadow endpoint dies or freezes mid-run
// ---------------------------------------------------------------------------------------------

const FAULT_CLIENTS: usize = 4;
const FAULT_BATCH: usize = 200;

fn fault_seed() -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for i in 0..1000 {
        cmds.push(c!("SET", format!("web:f:s{i}"), format!("value-{i}")));
    }
    for i in 0..100 {
        cmds.push(c!("HSET", format!("web:f:h{i}"), "a", 1, "b", 2, "c", i));
        cmds.push(c!("SADD", format!("web:f:set{i}"), "x", "y", i));
    }
    cmds
}

/// A background load of shadowed reads: counts the commands answered and every client error.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, deadline: Instant) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..FAULT_CLIENTS)
            .map(|c| {
                let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
                let addr = addr.to_string();
                std::thread::spawn(move || {
                    let mut client = match RawClient::try_connect(&addr, Duration::from_secs(5)) {
                        Ok(client) => client,
                        Err(e) => {
                            errors.lock().unwrap().push(format!("connect: {e}"));
                            return;
                        }
                    };
                    let mut rng = Rng::new(77 + c as u64);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let mut bytes = Vec::new();
                        for _ in 0..FAULT_BATCH {
                            let i = rng.below(100);
                            let command = match rng.below(4) {
                                0 | 1 => c!("GET", format!("web:f:s{}", rng.below(1000))),
                                2 => c!("HGETALL", format!("web:f:h{i}")),
                                _ => c!("SMEMBERS", format!("web:f:set{i}")),
                            };
                            bytes.extend_from_slice(&enc(&command));
                        }
                        if let Err(e) = client.try_send(&bytes) {
                            errors.lock().unwrap().push(format!("send: {e}"));
                            return;
                        }
                        for _ in 0..FAULT_BATCH {
                            match client.read_frame_within(Duration::from_secs(10)) {
                                Ok(f) if f.starts_with(b"-") => {
                                    errors.lock().unwrap().push(show(&f));
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    errors.lock().unwrap().push(format!("read: {e:?}"));
                                    return;
                                }
                            }
                        }
                        done.fetch_add(FAULT_BATCH as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            errors,
            threads,
        }
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `n` commands have been answered in all.
    fn wait_for(&self, n: u64, timeout: Duration, what: &str) {
        let ok = wait_until(timeout, Duration::from_millis(20), || {
            self.done() >= n || !self.errors.lock().unwrap().is_empty()
        });
        let errors = self.errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "{what}: client errors: {errors:?}");
        assert!(
            ok,
            "{what}: only {} of {n} commands answered within {timeout:?}",
            self.done()
        );
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            h.join().expect("load thread");
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.done(), errors)
    }
}

const RSS_GROWTH_LIMIT_KIB: u64 = 32 * 1024;
const RSS_MEASURED_COMMANDS: u64 = 200_000;

#[test]
fn killed_shadow_endpoint_costs_clients_nothing_and_memory_stays_flat() {
    let mut env = shadow_env(&["connections = 2"]);
    seed(&[&env.legacy, &env.new], &fault_seed());
    set_mode(
        &env.turnout,
        "web-cache",
        json!({"mode": "shadow", "shadow": "new", "sample": 1.0}),
    );
    let started = Instant::now();
    let load = Load::start(
        &env.turnout.proxy_addr(),
        started + Duration::from_secs(120),
    );

    load.wait_for(20_000, Duration::from_secs(30), "before the kill");
    let before = counts(&env.turnout, "web-cache");
    assert!(
        before.matched > 0,
        "shadowing works before the kill: {before:?}"
    );
    assert_eq!(before.mismatch, 0, "{before:?}");

    // The shadow endpoint dies mid-run.
    env.new.kill();
    let killed_at = load.done();
    load.wait_for(
        killed_at + 40_000,
        Duration::from_secs(30),
        "after the kill",
    );
    let rss_before = env.turnout.rss_kib();
    let measured_from = load.done();
    load.wait_for(
        measured_from + RSS_MEASURED_COMMANDS,
        Duration::from_secs(90),
        "measuring memory",
    );
    let rss_after = env.turnout.rss_kib();
    let (total, errors) = load.finish();
    eprintln!(
        "killed shadow: {total} commands in {:?}, VmRSS {rss_before} KiB -> {rss_after} KiB",
        started.elapsed()
    );
    assert!(errors.is_empty(), "client errors: {errors:?}");
    assert!(
        rss_after < rss_before + RSS_GROWTH_LIMIT_KIB,
        "turnout's RSS grew from {rss_before} KiB to {rss_after} KiB over {RSS_MEASURED_COMMANDS} commands \
         with the shadow endpoint down"
    );

    let settled = wait_stable(&env.turnout, "web-cache", Duration::from_secs(30));
    assert!(
        settled.dropped + settled.shadow_error > 0,
        "the failed shadow is counted: {settled:?}"
    );
    assert_eq!(
        settled.mismatch, 0,
        "a dead shadow is no mismatch: {settled:?}"
    );
    assert_eq!(settled.mirrored, 0, "{settled:?}");
    assert_eq!(
        settled.matched + settled.shadow_error + settled.dropped,
        total,
        "every shadowed read is accounted for exactly once: {settled:?}"
    );

    // The shadow comes back (empty, then seeded): its lanes reconnect and compare again.
    env.new.restart();
    seed(&[&env.new], &fault_seed());
    let r = env.turnout.admin(
        "POST",
        "/v1/shadow/reset",
        &[],
        Some(r#"{"namespace":"web-cache"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut client = env.turnout.raw();
    let recovered = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let reply = client.roundtrip(&["GET", "web:f:s1"]);
        assert_eq!(reply, b"$7\r\nvalue-1\r\n");
        counts(&env.turnout, "web-cache").matched > 0
    });
    assert!(
        recovered,
        "no match after the shadow came back: {:?}",
        counts(&env.turnout, "web-cache")
    );
    let c = wait_stable(&env.turnout, "web-cache", Duration::from_secs(15));
    assert_eq!(c.mismatch, 0, "{c:?}");
}

#[test]
fn frozen_shadow_endpoint_costs_clients_nothing_and_memory_stays_flat() {
    let env = shadow_env(&["connections = 2", "compare_timeout = \"300ms\""]);
    seed(&[&env.legacy, &env.new], &fault_seed());
    set_mode(
        &env.turnout,
        "web-cache",
        json!({"mode": "shadow", "shadow": "new", "sample": 1.0}),
    );
    let started = Instant::now();
    let load = Load::start(
        &env.turnout.proxy_addr(),
        started + Duration::from_secs(120),
    );
    load.wait_for(20_000, Duration::from_secs(30), "before freezing");
    assert!(counts(&env.turnout, "web-cache").matched > 0);

    // The shadow endpoint stops answering (its socket stays open).
    let redis = redis_pid(&env.new);
    signal(redis, "-STOP");
    let resume = Resume(redis);
    let frozen_at = load.done();
    load.wait_for(
        frozen_at + 40_000,
        Duration::from_secs(30),
        "after freezing",
    );
    let rss_before = env.turnout.rss_kib();
    let measured_from = load.done();
    load.wait_for(
        measured_from + RSS_MEASURED_COMMANDS,
        Duration::from_secs(90),
        "measuring memory",
    );
    let rss_after = env.turnout.rss_kib();
    let during = counts(&env.turnout, "web-cache");
    let (total, errors) = load.finish();
    eprintln!(
        "frozen shadow: {total} commands in {:?}, VmRSS {rss_before} KiB -> {rss_after} KiB, {during:?}",
        started.elapsed()
    );
    assert!(errors.is_empty(), "client errors: {errors:?}");
    assert!(
        rss_after < rss_before + RSS_GROWTH_LIMIT_KIB,
        "turnout's RSS grew from {rss_before} KiB to {rss_after} KiB over {RSS_MEASURED_COMMANDS} commands \
         with the shadow endpoint frozen"
    );
    assert!(
        during.dropped + during.shadow_error > 0,
        "the frozen shadow is counted: {during:?}"
    );
    drop(resume);
    let settled = wait_stable(&env.turnout, "web-cache", Duration::from_secs(30));
    assert_eq!(settled.mismatch, 0, "{settled:?}");
    assert_eq!(
        settled.matched + settled.shadow_error + settled.dropped,
        total,
        "every shadowed read is accounted for exactly once: {settled:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Dual-write with transactions
// ---------------------------------------------------------------------------------------------

const DUAL_CLIENTS: usize = 4;
const DUAL_ROUNDS: usize = 150;

/// What one dual-write client did.
#[derive(Default)]
struct DualTally {
    /// Copies the secondary should have accepted.
    mirrored: u64,
    /// Reads compared.
    reads: u64,
    errors: Vec<String>,
}

fn dual_client(addr: &str, c: usize) -> DualTally {
    let mut main = RawClient::connect(addr);
    let mut spoiler = RawClient::connect(addr);
    let mut rng = Rng::new(500 + c as u64);
    let k = |kind: &str, n: u64| format!("impact:{c}:{kind}{n}");
    let mut tally = DualTally::default();
    let check = |what: &str, got: &[u8], want: Option<&[u8]>, tally: &mut DualTally| {
        let bad = match want {
            Some(w) => got != w,
            None => got.starts_with(b"-"),
        };
        if bad {
            tally.errors.push(format!(
                "{what}: {} (wanted {:?})",
                show(got),
                want.map(show)
            ));
        }
    };
    for round in 0..DUAL_ROUNDS as u64 {
        // Plain writes and reads, pipelined.
        let mut cmds = Vec::new();
        let mut writes = 0;
        let mut reads = 0;
        for _ in 0..40 {
            let i = rng.below(10);
            let j = rng.below(10);
            let (command, write) = match rng.below(20) {
                0 => (c!("SET", k("s", i), format!("v{}", rng.next())), true),
                1 => (c!("INCRBY", k("n", i), rng.below(50)), true),
                2 => (c!("HSET", k("h", i), format!("f{j}"), rng.next()), true),
                3 => (c!("HINCRBY", k("h", i), "cnt", 2), true),
                4 => (c!("SADD", k("set", i), format!("m{j}")), true),
                5 => (c!("SREM", k("set", i), format!("m{}", rng.below(10))), true),
                6 => (
                    c!("ZADD", k("z", i), rng.below(100), format!("zm{j}")),
                    true,
                ),
                7 => (c!("ZINCRBY", k("z", i), 2, format!("zm{j}")), true),
                8 => (c!("RPUSH", k("l", i), rng.below(1000)), true),
                9 => (c!("LPOP", k("l", i)), true),
                10 => (c!("SETEX", k("t", i), 100_000, j), true),
                11 => (c!("PEXPIRE", k("s", i), 50_000_000), true),
                12 => (c!("PERSIST", k("s", i)), true),
                13 => (c!("MSET", k("s", i), "ms1", k("s", j), "ms2"), true),
                14 => (c!("DEL", k("l", j)), true),
                15 => (c!("APPEND", k("a", i), "x"), true),
                16 => (c!("GET", k("s", i)), false),
                17 => (c!("HGETALL", k("h", i)), false),
                18 => (c!("SMEMBERS", k("set", i)), false),
                _ => (c!("ZRANGE", k("z", i), 0, -1, "WITHSCORES"), false),
            };
            if write {
                writes += 1;
            } else {
                reads += 1;
            }
            cmds.push(command);
        }
        // A transaction that runs, pipelined with the rest.
        let i = rng.below(10);
        cmds.push(c!("MULTI"));
        cmds.push(c!("INCR", k("n", i)));
        cmds.push(c!("HSET", k("h", i), "tx", round));
        cmds.push(c!("GET", k("n", i)));
        cmds.push(c!("RPUSH", k("l", i), format!("tx{round}")));
        cmds.push(c!("EXEC"));
        // A transaction that is discarded: none of it may reach either endpoint.
        cmds.push(c!("MULTI"));
        cmds.push(c!("SET", k("discarded", round), "no"));
        cmds.push(c!("INCR", k("n", i)));
        cmds.push(c!("DISCARD"));
        // A transaction with only a read: nothing to mirror.
        cmds.push(c!("MULTI"));
        cmds.push(c!("GET", k("s", i)));
        cmds.push(c!("EXEC"));
        let replies = pipeline(&mut main, &cmds, cmds.len());
        for (command, reply) in cmds.iter().zip(&replies) {
            check(&format!("{command:?}"), reply, None, &mut tally);
        }
        let n = replies.len();
        let exec = &replies[n - 8];
        if !exec.starts_with(b"*4\r\n") {
            tally
                .errors
                .push(format!("EXEC that should run: {}", show(exec)));
        }
        check("DISCARD", &replies[n - 4], Some(b"+OK\r\n"), &mut tally);
        tally.mirrored += writes + 1;
        tally.reads += reads;

        // WATCH, then a write from another connection: EXEC must fail and not be mirrored.
        // The watched key is written by nobody else afterwards (the spoiler's copy travels
        // on another session's lane, so a later write of the same key could overtake it).
        let w = k("w", round);
        check(
            "WATCH",
            &main.roundtrip(&["WATCH", &w]),
            Some(b"+OK\r\n"),
            &mut tally,
        );
        check(
            "spoiler SET",
            &spoiler.roundtrip(&["SET", &w, "spoiler"]),
            Some(b"+OK\r\n"),
            &mut tally,
        );
        tally.mirrored += 1;
        let failed = pipeline(
            &mut main,
            &[
                c!("MULTI"),
                c!("SET", w, "main"),
                c!("SET", k("watchfail", round), "no"),
                c!("EXEC"),
            ],
            4,
        );
        check("MULTI", &failed[0], Some(b"+OK\r\n"), &mut tally);
        check(
            "WATCH-failed EXEC",
            &failed[3],
            Some(b"*-1\r\n"),
            &mut tally,
        );

        // WATCH on a key nobody touches: EXEC runs and is mirrored.
        if round % 3 == 0 {
            let ok = pipeline(
                &mut main,
                &[
                    c!("WATCH", k("calm", round)),
                    c!("MULTI"),
                    c!("SET", k("calm", round), "yes"),
                    c!("SADD", k("set", i), format!("tx{round}")),
                    c!("EXEC"),
                ],
                5,
            );
            if !ok[4].starts_with(b"*2\r\n") {
                tally.errors.push(format!("watched EXEC: {}", show(&ok[4])));
            }
            tally.mirrored += 1;
        }
    }
    tally
}

/// Regression (see `dual_write_replays_a_transaction_whose_exec_reply_is_long`): the
/// committed transaction of each round (EXEC reply `*4` of about 30 bytes) was never
/// replayed on the secondary, so 600 copies were missing and later reads of its keys mismatched.
#[test]
fn dual_write_with_transactions_leaves_identical_datasets() {
    let env = shadow_env(&[
        "connections = 3",
        "queue = 100000",
        "compare_timeout = \"10s\"",
    ]);
    let t = &env.turnout;
    // impact: served by legacy, every write also applied to new.
    let doc = set_mode(
        t,
        "impact",
        json!({"target": "legacy", "mode": "dual-write", "secondary": "new", "compare": true, "sample": 1.0}),
    );
    let route = route_of(&doc, "impact");
    assert_eq!(route["target"], "legacy", "{route}");
    assert_eq!(route["mode"], "dual-write", "{route}");
    assert_eq!(route["secondary"], "new", "{route}");
    assert_eq!(route["compare"], true, "{route}");

    let started = Instant::now();
    let addr = t.proxy_addr();
    let handles: Vec<_> = (0..DUAL_CLIENTS)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || dual_client(&addr, c))
        })
        .collect();
    let mut mirrored = 0;
    let mut reads = 0;
    let mut errors = Vec::new();
    for h in handles {
        let tally = h.join().expect("dual-write client");
        mirrored += tally.mirrored;
        reads += tally.reads;
        errors.extend(tally.errors);
    }
    eprintln!("dual-write workload in {:?}", started.elapsed());
    assert!(
        errors.is_empty(),
        "client errors: {:?}",
        &errors[..errors.len().min(10)]
    );

    let settled = settle(t, "impact", Duration::from_secs(30), |c| {
        c.total() >= mirrored + reads
    });
    let recent = mismatches(t, "namespace=impact&limit=10");
    assert!(settled.mirrored > 0);
    assert_eq!(
        settled,
        Counts {
            matched: reads,
            mismatch: 0,
            shadow_error: 0,
            dropped: 0,
            mirrored,
        },
        "recent: {recent:#?}"
    );

    // Both endpoints hold the same data, key by key.
    let keys = all_keys(&env.legacy);
    let secondary_keys = all_keys(&env.new);
    assert!(keys.len() > 100, "{} keys", keys.len());
    assert_eq!(
        keys.symmetric_difference(&secondary_keys)
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keys on only one endpoint"
    );
    let mut a = RawClient::connect(&env.legacy.addr());
    let mut b = RawClient::connect(&env.new.addr());
    let mut with_ttl = 0;
    for key in &keys {
        let primary = key_snapshot(&mut a, key);
        assert_eq!(primary, key_snapshot(&mut b, key), "{key}");
        with_ttl += primary.2 as usize;
    }
    assert!(with_ttl > 0, "the workload sets TTLs");
    assert!(
        keys.iter()
            .all(|k| !k.contains(":discarded") && !k.contains(":watchfail")),
        "a discarded or failed transaction left a key"
    );
    for c in 0..DUAL_CLIENTS {
        for round in 0..DUAL_ROUNDS {
            let w = format!("impact:{c}:w{round}");
            assert_eq!(env.legacy.get(&w).as_deref(), Some("spoiler"), "{w}");
            assert_eq!(env.new.get(&w).as_deref(), Some("spoiler"), "{w}");
        }
    }
    // Nothing of the other namespaces was mirrored.
    assert_eq!(counts(t, "web-cache"), Counts::default());
}

// ---------------------------------------------------------------------------------------------
// API: validation, listing, history, persistence
// ---------------------------------------------------------------------------------------------

#[test]
fn mode_changes_are_validated() {
    let env = shadow_env(&[]);
    let t = &env.turnout;
    let version = t.version();
    let bad: &[(&str, Value)] = &[
        (
            "unknown shadow endpoint",
            json!({"mode": "shadow", "shadow": "nowhere"}),
        ),
        (
            "unknown secondary",
            json!({"mode": "dual-write", "secondary": "nowhere"}),
        ),
        (
            "shadow is the target",
            json!({"mode": "shadow", "shadow": "legacy"}),
        ),
        (
            "secondary is the target",
            json!({"mode": "dual-write", "secondary": "legacy"}),
        ),
        (
            "shadow is the new target",
            json!({"target": "new", "mode": "shadow", "shadow": "new"}),
        ),
        (
            "sample above 1",
            json!({"mode": "shadow", "shadow": "new", "sample": 1.5}),
        ),
        (
            "negative sample",
            json!({"mode": "shadow", "shadow": "new", "sample": -0.1}),
        ),
        (
            "sample not a number",
            json!({"mode": "shadow", "shadow": "new", "sample": "half"}),
        ),
        (
            "dual-write sample above 1",
            json!({"mode": "dual-write", "secondary": "new", "compare": true, "sample": 2}),
        ),
        ("shadow without mode", json!({"shadow": "new"})),
        ("secondary without mode", json!({"secondary": "new"})),
        (
            "sample without mode",
            json!({"target": "legacy", "sample": 0.5}),
        ),
        ("writes without mode", json!({"writes": true})),
        ("compare without mode", json!({"compare": true})),
        ("unknown mode", json!({"mode": "mirror", "shadow": "new"})),
        ("shadow mode without endpoint", json!({"mode": "shadow"})),
        (
            "dual-write without secondary",
            json!({"mode": "dual-write"}),
        ),
        (
            "compare in shadow mode",
            json!({"mode": "shadow", "shadow": "new", "compare": true}),
        ),
        (
            "writes in dual-write mode",
            json!({"mode": "dual-write", "secondary": "new", "writes": true}),
        ),
        (
            "secondary in shadow mode",
            json!({"mode": "shadow", "shadow": "new", "secondary": "new"}),
        ),
        (
            "fields in direct mode",
            json!({"mode": "direct", "sample": 0.5}),
        ),
        (
            "unknown field",
            json!({"mode": "shadow", "shadow": "new", "colour": "red"}),
        ),
    ];
    for (what, body) in bad {
        let r = put_route(t, "web-cache", body.clone());
        assert_eq!(r.status, 400, "{what}: {body} -> {} {}", r.status, r.text());
        assert!(
            r.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {}",
            r.text()
        );
    }
    let r = put_route(t, "nope", json!({"mode": "shadow", "shadow": "new"}));
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(t.version(), version, "refused changes changed nothing");
    assert_eq!(route_of(&t.routes(), "web-cache")["mode"], "direct");

    // Valid changes, listed in the routes document and in the history.
    let doc = set_mode(
        t,
        "web-cache",
        json!({"mode": "shadow", "shadow": "new", "sample": 0.25}),
    );
    assert_eq!(doc["version"].as_u64(), Some(version + 1));
    let route = route_of(&doc, "web-cache");
    assert_eq!(route["target"], "legacy", "{route}");
    assert_eq!(route["mode"], "shadow", "{route}");
    assert_eq!(route["shadow"], "new", "{route}");
    assert_eq!(route["sample"].as_f64(), Some(0.25), "{route}");
    assert_eq!(route["writes"], false, "{route}");
    assert_eq!(t.routes(), doc, "GET /v1/routes lists the mode");
    // While shadowing to new, web-cache cannot be flipped to new without a mode.
    let r = put_route(t, "web-cache", json!({"target": "new"}));
    assert_eq!(r.status, 400, "{}", r.text());
    // Default sample comes from [shadow] sample (1.0 by default).
    let doc = set_mode(
        t,
        "token-cache",
        json!({"mode": "dual-write", "secondary": "legacy"}),
    );
    let route = route_of(&doc, "token-cache");
    assert_eq!(route["mode"], "dual-write", "{route}");
    assert_eq!(route["secondary"], "legacy", "{route}");
    assert_eq!(route["compare"], false, "{route}");
    assert_eq!(route["sample"].as_f64(), Some(1.0), "{route}");
    // Same mode again: a no-op.
    let again = set_mode(
        t,
        "token-cache",
        json!({"mode": "dual-write", "secondary": "legacy"}),
    );
    assert_eq!(again["version"], doc["version"]);
    // Flip and change mode at once, then back to direct.
    let doc = set_mode(
        t,
        "web-cache",
        json!({"target": "new", "mode": "shadow", "shadow": "legacy", "writes": true}),
    );
    let route = route_of(&doc, "web-cache");
    assert_eq!(route["target"], "new", "{route}");
    assert_eq!(route["shadow"], "legacy", "{route}");
    assert_eq!(route["writes"], true, "{route}");
    let doc = set_mode(t, "web-cache", json!({"mode": "direct"}));
    let route = route_of(&doc, "web-cache");
    assert_eq!(route["mode"], "direct", "{route}");
    assert_eq!(route["target"], "new", "{route}");
    assert!(route.get("shadow").is_none(), "{route}");

    let history = t.admin_get("/v1/history").json()["entries"]
        .as_array()
        .expect("entries")
        .clone();
    assert_eq!(history.len(), 4, "{history:#?}");
    let modes: Vec<(String, String, String)> = history
        .iter()
        .map(|h| {
            (
                h["namespace"].as_str().unwrap_or_default().to_string(),
                h["from_mode"].as_str().unwrap_or_default().to_string(),
                h["to_mode"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(modes[0].0, "web-cache");
    assert_eq!(modes[0].1, "direct");
    assert!(
        modes[0].2.starts_with("shadow") && modes[0].2.contains("new"),
        "{modes:?}"
    );
    assert_eq!(modes[1].0, "token-cache");
    assert!(
        modes[1].2.starts_with("dual-write") && modes[1].2.contains("legacy"),
        "{modes:?}"
    );
    assert_eq!(history[2]["from"], "legacy");
    assert_eq!(history[2]["to"], "new");
    assert!(
        modes[2].1.starts_with("shadow") && modes[2].2.contains("legacy"),
        "{modes:?}"
    );
    assert_eq!(modes[3].2, "direct", "{modes:?}");

    // GET /v1/shadow lists every namespace with its mode.
    let doc = shadow_doc(t);
    let row = shadow_row(&doc, "token-cache");
    assert_eq!(row["mode"], "dual-write", "{row}");
    assert_eq!(row["secondary"], "legacy", "{row}");
    assert_eq!(row["target"], "new", "{row}");
    assert!(row["match_ratio"].is_null(), "nothing compared yet: {row}");
    assert_eq!(row["compared"].as_u64(), Some(0), "{row}");
    assert!(row["since"].as_str().is_some(), "{row}");
    assert_eq!(shadow_row(&doc, "web-cache")["mode"], "direct");
}

#[test]
fn modes_survive_a_restart_with_the_same_state_file() {
    let mut env = shadow_env(&[]);
    set_mode(
        &env.turnout,
        "web-cache",
        json!({"mode": "shadow", "shadow": "new", "sample": 0.5, "writes": true}),
    );
    set_mode(
        &env.turnout,
        "impact",
        json!({"target": "legacy", "mode": "dual-write", "secondary": "new", "compare": true, "sample": 1.0}),
    );
    let before = env.turnout.routes();
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(env.turnout.state_path()).expect("state file"),
    )
    .expect("state file is JSON");
    let text = state.to_string();
    assert!(
        text.contains("dual-write") && text.contains("shadow"),
        "{state:#}"
    );

    env.turnout.restart();
    let after = env.turnout.routes();
    assert_eq!(after["version"], before["version"]);
    for ns in ["web-cache", "impact", "token-cache", "default"] {
        let (a, b) = (route_of(&before, ns), route_of(&after, ns));
        for field in [
            "target",
            "mode",
            "shadow",
            "secondary",
            "sample",
            "writes",
            "compare",
        ] {
            assert_eq!(a.get(field), b.get(field), "{ns}.{field}: {a} vs {b}");
        }
    }
    assert_eq!(route_of(&after, "impact")["mode"], "dual-write");
    assert_eq!(
        env.turnout.admin_get("/v1/history").json()["entries"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // The restored modes are live: writes are dual-written, reads compared.
    let mut client = env.turnout.raw();
    client.expect_cmd(&["SET", "impact:after-restart", "1"], b"+OK\r\n");
    client.expect_cmd(&["GET", "impact:after-restart"], b"$1\r\n1\r\n");
    let c = wait_counts(
        &env.turnout,
        "impact",
        Duration::from_secs(10),
        "after restart",
        |c| c.mirrored == 1 && c.matched == 1,
    );
    assert_eq!(c.total(), 2, "{c:?}");
    assert_eq!(env.new.get("impact:after-restart").as_deref(), Some("1"));
    assert_eq!(env.legacy.get("impact:after-restart").as_deref(), Some("1"));
}

// ---------------------------------------------------------------------------------------------
// Evidence: log_values, truncation, metrics, reset
// ---------------------------------------------------------------------------------------------

/// Seeds one divergent string and one divergent long list, reads both through the shadowed
/// web-cache, and returns the two mismatch entries (string first).
fn divergent_entries(env: &Env) -> (Value, Value) {
    seed(
        &[&env.legacy],
        &[c!("SET", "web:secret", "primary-secret-value")],
    );
    seed(
        &[&env.new],
        &[c!("SET", "web:secret", "shadow-secret-value")],
    );
    let mut long = c!("RPUSH", "web:long");
    long.extend((0..100).map(|i| format!("element-number-{i:04}")));
    seed(&[&env.legacy, &env.new], &[long]);
    seed(&[&env.new], &[c!("RPUSH", "web:long", "one-more")]);
    set_mode(
        &env.turnout,
        "web-cache",
        json!({"mode": "shadow", "shadow": "new"}),
    );
    let mut client = env.turnout.raw();
    client.expect_cmd(&["GET", "web:secret"], b"$20\r\nprimary-secret-value\r\n");
    let list = client.roundtrip(&["LRANGE", "web:long", "0", "-1"]);
    assert!(list.starts_with(b"*100\r\n"), "{}", show(&list));
    wait_counts(
        &env.turnout,
        "web-cache",
        Duration::from_secs(10),
        "divergent",
        |c| c.mismatch == 2,
    );
    let entries = mismatches(&env.turnout, "namespace=web-cache");
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let find = |key: &str| {
        entries
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("no entry for {key}: {entries:#?}"))
            .clone()
    };
    (find("web:secret"), find("web:long"))
}

/// At most 256 bytes of rendering plus an ellipsis.
fn assert_truncated(shown: &str) {
    assert!(
        shown.len() <= 256 + '…'.len_utf8(),
        "{} bytes: {shown}",
        shown.len()
    );
    assert!(shown.ends_with('…'), "long reply is cut: {shown}");
}

#[test]
fn mismatch_reports_hide_values_unless_log_values() {
    let hidden = shadow_env(&[]);
    let (secret, long) = divergent_entries(&hidden);
    assert_eq!(secret["command"], "get");
    let (p, s) = (
        secret["primary"].as_str().expect("primary"),
        secret["shadow"].as_str().expect("shadow"),
    );
    assert!(!p.contains("secret") && !s.contains("secret"), "{secret}");
    assert!(
        p.starts_with("<20 bytes #") && s.starts_with("<19 bytes #"),
        "{secret}"
    );
    assert_ne!(p, s);
    assert_eq!(long["command"], "lrange");
    let lp = long["primary"].as_str().expect("primary");
    assert!(!lp.contains("element-number"), "{long}");
    assert_truncated(lp);
    drop(hidden);

    let shown = shadow_env(&["log_values = true"]);
    let (secret, long) = divergent_entries(&shown);
    assert!(
        secret["primary"]
            .as_str()
            .is_some_and(|p| p.contains("primary-secret-value")),
        "{secret}"
    );
    assert!(
        secret["shadow"]
            .as_str()
            .is_some_and(|s| s.contains("shadow-secret-value")),
        "{secret}"
    );
    let lp = long["primary"].as_str().expect("primary");
    assert!(lp.contains("element-number-0000"), "{long}");
    assert_truncated(lp);
    assert_truncated(long["shadow"].as_str().expect("shadow"));
}

#[test]
fn a_flood_of_mismatches_is_counted_whole_and_logged_a_few_per_second() {
    // An empty shadow endpoint answers every GET differently. Every mismatch is counted, but
    // only `mismatch_log` of them per second are rendered and kept; the rest show as
    // `unlogged`.
    let env = shadow_env(&["mismatch_log = 5"]);
    let t = &env.turnout;
    let keys: Vec<Vec<String>> = (0..300)
        .map(|i| c!("SET", format!("web:flood:{i}"), i))
        .collect();
    seed(&[&env.legacy], &keys);
    set_mode(t, "web-cache", json!({"mode": "shadow", "shadow": "new"}));
    let reads: Vec<Vec<String>> = (0..300)
        .map(|i| c!("GET", format!("web:flood:{i}")))
        .collect();
    let mut client = t.raw();
    let replies = pipeline(&mut client, &reads, 300);
    for (i, reply) in replies.iter().enumerate() {
        let value = i.to_string();
        let expected = format!("${}\r\n{value}\r\n", value.len());
        assert_eq!(reply, expected.as_bytes(), "GET web:flood:{i}");
    }
    let settled = wait_counts(t, "web-cache", Duration::from_secs(20), "flood", |c| {
        c.mismatch == 300
    });
    assert_eq!(settled.total(), 300, "{settled:?}");
    let r = t.admin_get("/v1/shadow/mismatches?limit=100");
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    let logged = doc["mismatches"].as_array().map_or(0, Vec::len);
    assert_eq!(logged, 5, "{doc}");
    let unlogged = doc["unlogged"].as_u64().expect("unlogged");
    // 300 pipelined GETs take well under a second; each further second they might straddle
    // lets 5 more be logged.
    assert!(
        (250..=295).contains(&unlogged),
        "unlogged {unlogged} of 300 mismatches with mismatch_log = 5"
    );
}

#[test]
fn metrics_count_outcomes_and_reset_zeroes_the_counts() {
    let env = shadow_env(&[]);
    let t = &env.turnout;
    seed(
        &[&env.legacy, &env.new],
        &[c!("SET", "web:m", "same"), c!("SET", "tok:m", "same")],
    );
    seed(&[&env.new], &[c!("SET", "web:diff", "other")]);
    seed(&[&env.legacy], &[c!("SET", "web:diff", "mine")]);
    set_mode(t, "web-cache", json!({"mode": "shadow", "shadow": "new"}));
    set_mode(
        t,
        "token-cache",
        json!({"mode": "shadow", "shadow": "legacy"}),
    );
    let mut client = t.raw();
    let mut reads = Vec::new();
    for _ in 0..10 {
        reads.push(c!("GET", "web:m"));
        reads.push(c!("STRLEN", "web:m"));
        reads.push(c!("GET", "tok:m"));
    }
    reads.push(c!("GET", "web:diff"));
    pipeline(&mut client, &reads, 100);
    wait_counts(t, "web-cache", Duration::from_secs(10), "web-cache", |c| {
        c.matched == 20 && c.mismatch == 1
    });
    wait_counts(
        t,
        "token-cache",
        Duration::from_secs(10),
        "token-cache",
        |c| c.matched == 10,
    );

    let metrics = t.admin_get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains("# TYPE turnout_shadow_total counter"),
        "{text}"
    );
    assert_eq!(
        shadow_metric(&text, "web-cache", "get", "match"),
        Some(10),
        "{text}"
    );
    assert_eq!(
        shadow_metric(&text, "web-cache", "strlen", "match"),
        Some(10),
        "{text}"
    );
    assert_eq!(
        shadow_metric(&text, "web-cache", "get", "mismatch"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        shadow_metric(&text, "token-cache", "get", "match"),
        Some(10),
        "{text}"
    );
    assert_eq!(
        shadow_metric(&text, "web-cache", "get", "dropped"),
        None,
        "{text}"
    );

    // Reset one namespace: its counts and log go, the other's stay.
    let since_before = shadow_row(&shadow_doc(t), "web-cache")["since"].clone();
    std::thread::sleep(Duration::from_millis(20));
    let r = t.admin(
        "POST",
        "/v1/shadow/reset",
        &[],
        Some(r#"{"namespace":"web-cache"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        counts_of(&shadow_row(&r.json(), "web-cache")),
        Counts::default()
    );
    let since_after = shadow_row(&r.json(), "web-cache")["since"].clone();
    assert!(
        since_after.as_str() > since_before.as_str(),
        "since moves on reset: {since_before} -> {since_after}"
    );
    assert_eq!(counts(t, "web-cache"), Counts::default());
    assert!(shadow_row(&shadow_doc(t), "web-cache")["match_ratio"].is_null());
    assert!(mismatches(t, "namespace=web-cache").is_empty());
    assert_eq!(counts(t, "token-cache").matched, 10);
    // Prometheus counters are monotonic: a reset does not touch them.
    let text = t.admin_get("/metrics").text();
    assert_eq!(
        shadow_metric(&text, "web-cache", "get", "match"),
        Some(10),
        "{text}"
    );
    // Counting goes on after a reset.
    client.expect_cmd(&["GET", "web:m"], b"$4\r\nsame\r\n");
    wait_counts(
        t,
        "web-cache",
        Duration::from_secs(10),
        "after reset",
        |c| c.matched == 1,
    );
    // Reset everything (no body), unknown namespace, bad body.
    let r = t.admin("POST", "/v1/shadow/reset", &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(counts(t, "web-cache"), Counts::default());
    assert_eq!(counts(t, "token-cache"), Counts::default());
    let r = t.admin(
        "POST",
        "/v1/shadow/reset",
        &[],
        Some(r#"{"namespace":"nope"}"#),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = t.admin(
        "POST",
        "/v1/shadow/reset",
        &[],
        Some(r#"{"ns":"web-cache"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // Changing the mode restarts the counts too.
    client.expect_cmd(&["GET", "web:m"], b"$4\r\nsame\r\n");
    wait_counts(
        t,
        "web-cache",
        Duration::from_secs(10),
        "before mode change",
        |c| c.matched == 1,
    );
    set_mode(
        t,
        "web-cache",
        json!({"mode": "shadow", "shadow": "new", "sample": 0.5}),
    );
    assert_eq!(counts(t, "web-cache"), Counts::default());
}

#[test]
fn direct_mode_and_sample_zero_send_nothing_to_the_shadow() {
    let env = shadow_env(&[]);
    let t = &env.turnout;
    seed(&[&env.legacy, &env.new], &[c!("SET", "web:z", "v")]);
    let mut client = t.raw();
    set_mode(
        t,
        "web-cache",
        json!({"mode": "shadow", "shadow": "new", "sample": 0.0}),
    );
    let reads: Vec<Vec<String>> = (0..200).map(|_| c!("GET", "web:z")).collect();
    pipeline(&mut client, &reads, 200);
    // A write with writes:false is not mirrored either.
    client.expect_cmd(&["SET", "web:only-legacy", "1"], b"+OK\r\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counts(t, "web-cache"), Counts::default());
    assert!(!env.new.exists("web:only-legacy"));
    // Sample 0.5: roughly half (bounded loosely, the sampler is pseudo-random).
    set_mode(
        t,
        "web-cache",
        json!({"mode": "shadow", "shadow": "new", "sample": 0.5}),
    );
    let reads: Vec<Vec<String>> = (0..2000).map(|_| c!("GET", "web:z")).collect();
    pipeline(&mut client, &reads, 500);
    let c = wait_stable(t, "web-cache", Duration::from_secs(10));
    assert!(
        (700..=1300).contains(&c.matched) && c.total() == c.matched,
        "sample 0.5 of 2000 reads: {c:?}"
    );
    // Back to direct: nothing more is compared.
    set_mode(t, "web-cache", json!({"mode": "direct"}));
    pipeline(&mut client, &reads, 500);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counts(t, "web-cache"), Counts::default());
}

// ---------------------------------------------------------------------------------------------
// Normalisation details, what is never compared, connection state of copies
// ---------------------------------------------------------------------------------------------

#[test]
fn ttls_compare_within_the_tolerance_and_errors_by_their_first_word() {
    let env = shadow_env(&["ttl_tolerance = \"5s\"", "log_values = true"]);
    let t = &env.turnout;
    let both = [
        c!("SET", "web:nottl", "v"),
        c!("HSET", "web:hash", "f", "v"),
        c!("SET", "web:num", "not-a-number"),
    ];
    seed(&[&env.legacy, &env.new], &both);
    seed(
        &[&env.legacy],
        &[
            c!("SET", "web:ttl-close", "v", "EX", 1000),
            c!("SET", "web:ttl-far", "v", "EX", 1000),
            c!("SET", "web:pttl-close", "v", "PX", 1_000_000),
            c!("SET", "web:pttl-far", "v", "PX", 1_000_000),
            c!("SET", "web:ttl-vs-none", "v", "EX", 1000),
            c!("SET", "web:typediff", "a-string"),
        ],
    );
    seed(
        &[&env.new],
        &[
            c!("SET", "web:ttl-close", "v", "EX", 997),
            c!("SET", "web:ttl-far", "v", "EX", 900),
            c!("SET", "web:pttl-close", "v", "PX", 998_000),
            c!("SET", "web:pttl-far", "v", "PX", 990_000),
            c!("SET", "web:ttl-vs-none", "v"),
            c!("HSET", "web:typediff", "f", "v"),
        ],
    );
    set_mode(t, "web-cache", json!({"mode": "shadow", "shadow": "new"}));
    let reads = [
        // Match: within 5 s, no TTL on either, no key on either, the same error.
        c!("TTL", "web:ttl-close"),
        c!("PTTL", "web:pttl-close"),
        c!("TTL", "web:nottl"),
        c!("PTTL", "web:missing"),
        c!("GET", "web:hash"),
        c!("INCR", "web:num"), // a write: not compared (writes: false)
        c!("HGET", "web:num", "f"),
        // Mismatch.
        c!("TTL", "web:ttl-far"),
        c!("PTTL", "web:pttl-far"),
        c!("TTL", "web:ttl-vs-none"),
        c!("GET", "web:typediff"),
    ];
    let mut client = t.raw();
    let replies = pipeline(&mut client, &reads, 100);
    assert!(
        show(&replies[4]).starts_with("-WRONGTYPE"),
        "{}",
        show(&replies[4])
    );
    assert!(
        show(&replies[6]).starts_with("-WRONGTYPE"),
        "{}",
        show(&replies[6])
    );
    let c = wait_counts(t, "web-cache", Duration::from_secs(10), "ttl", |c| {
        c.total() >= 10
    });
    let entries = mismatches(t, "namespace=web-cache");
    let reported: BTreeSet<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["command"].as_str().unwrap_or_default().to_string(),
                e["key"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("ttl", "web:ttl-far"),
        ("pttl", "web:pttl-far"),
        ("ttl", "web:ttl-vs-none"),
        ("get", "web:typediff"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(reported, expected, "{entries:#?}");
    assert_eq!(
        c,
        Counts {
            matched: 6,
            mismatch: 4,
            ..Counts::default()
        },
        "{entries:#?}"
    );
    let typediff = entries
        .iter()
        .find(|e| e["key"] == "web:typediff")
        .expect("typediff entry");
    assert!(
        typediff["shadow"]
            .as_str()
            .is_some_and(|s| s.contains("WRONGTYPE")),
        "{typediff}"
    );
}

#[test]
fn oversized_blocking_keyless_and_nondeterministic_replies_are_not_compared() {
    let env = shadow_env(&["max_compare_bytes = 1000"]);
    let t = &env.turnout;
    let big = "x".repeat(5000);
    let both = [
        c!("SET", "web:big", big),
        c!("SADD", "web:set", "a", "b", "c"),
        c!("HSET", "web:hash", "a", 1, "b", 2),
        c!("ZADD", "web:z", 1, "a", 2, "b"),
        c!("RPUSH", "web:list", "a", "b"),
    ];
    seed(&[&env.legacy, &env.new], &both);
    set_mode(t, "web-cache", json!({"mode": "shadow", "shadow": "new"}));
    let mut client = t.raw();
    let got = client.roundtrip(&["GET", "web:big"]);
    assert_eq!(
        got.len(),
        5000 + "$5000\r\n\r\n".len(),
        "the client gets it all"
    );
    let c = wait_counts(t, "web-cache", Duration::from_secs(10), "big", |c| {
        c.dropped == 1
    });
    assert_eq!(
        c,
        Counts {
            dropped: 1,
            ..Counts::default()
        }
    );
    let never = [
        c!("SRANDMEMBER", "web:set"),
        c!("SRANDMEMBER", "web:set", 2),
        c!("HRANDFIELD", "web:hash"),
        c!("ZRANDMEMBER", "web:z"),
        c!("SSCAN", "web:set", 0),
        c!("SCAN", 0, "MATCH", "web:*"),
        c!("DUMP", "web:set"),
        c!("OBJECT", "ENCODING", "web:set"),
        c!("RANDOMKEY"),
        c!("DBSIZE"),
        c!("BLPOP", "web:list", 1),
        c!("SPOP", "web:nothing"),
        c!("SET", "web:written", 1),
    ];
    let replies = pipeline(&mut client, &never, 100);
    for (command, reply) in never.iter().zip(&replies) {
        assert!(!reply.starts_with(b"-"), "{command:?}: {}", show(reply));
    }
    // A comparable read behind them, as a marker that everything before it was handled.
    client.expect_cmd(&["SCARD", "web:set"], b":3\r\n");
    let c = wait_counts(t, "web-cache", Duration::from_secs(10), "marker", |c| {
        c.matched == 1
    });
    assert_eq!(
        c,
        Counts {
            matched: 1,
            dropped: 1,
            ..Counts::default()
        },
        "only the marker was compared"
    );
    assert!(
        !env.new.exists("web:written"),
        "writes: false mirrors nothing"
    );
}

#[test]
fn copies_run_in_the_sessions_database_and_protocol() {
    let env = shadow_env(&[]);
    let t = &env.turnout;
    set_mode(
        t,
        "impact",
        json!({"target": "legacy", "mode": "dual-write", "secondary": "new", "compare": true}),
    );
    let mut db1 = t.raw();
    db1.expect_cmd(&["SELECT", "1"], b"+OK\r\n");
    db1.expect_cmd(&["SET", "impact:db", "one"], b"+OK\r\n");
    db1.expect_cmd(&["HSET", "impact:h", "f", "1"], b":1\r\n");
    let mut resp3 = t.raw();
    let hello = resp3.roundtrip(&["HELLO", "3"]);
    assert!(hello.starts_with(b"%"), "{}", show(&hello));
    resp3.expect_cmd(&["SET", "impact:db", "zero"], b"+OK\r\n");
    resp3.expect_cmd(&["HSET", "impact:h", "g", "2"], b":1\r\n");
    // Reads compared in the right database and protocol.
    db1.expect_cmd(&["GET", "impact:db"], b"$3\r\none\r\n");
    let map = resp3.roundtrip(&["HGETALL", "impact:h"]);
    assert!(map.starts_with(b"%1\r\n"), "{}", show(&map));
    db1.expect_cmd(&["SELECT", "0"], b"+OK\r\n");
    db1.expect_cmd(&["GET", "impact:db"], b"$4\r\nzero\r\n");
    // SELECT pipelined with writes and reads.
    let mut piped = t.raw();
    let replies = pipeline(
        &mut piped,
        &[
            c!("SELECT", 1),
            c!("SET", "impact:piped", "in-1"),
            c!("GET", "impact:db"),
            c!("SELECT", 0),
            c!("SET", "impact:piped", "in-0"),
            c!("GET", "impact:db"),
            c!("SELECT", 1),
            c!("GET", "impact:piped"),
        ],
        100,
    );
    assert_eq!(show(&replies[2]), show(b"$3\r\none\r\n"));
    assert_eq!(show(&replies[5]), show(b"$4\r\nzero\r\n"));
    assert_eq!(show(&replies[7]), show(b"$4\r\nin-1\r\n"));
    let c = wait_counts(t, "impact", Duration::from_secs(10), "databases", |c| {
        c.total() >= 12
    });
    assert_eq!(
        c,
        Counts {
            matched: 6,
            mirrored: 6,
            ..Counts::default()
        },
        "{:#?}",
        mismatches(t, "limit=10")
    );
    assert_eq!(env.new.get_db(1, "impact:db").as_deref(), Some("one"));
    assert_eq!(env.new.get_db(0, "impact:db").as_deref(), Some("zero"));
    assert_eq!(env.new.get_db(1, "impact:piped").as_deref(), Some("in-1"));
    assert_eq!(env.new.get_db(0, "impact:piped").as_deref(), Some("in-0"));
}

/// A copy whose database cannot be selected on the secondary must not run in another one.
///
/// Regression: the lane ignored a refused SELECT and ran the copy in database 0 of the
/// secondary; copies now wait for their SELECT/HELLO to be accepted.
#[test]
fn copies_never_run_in_the_wrong_database() {
    let legacy = RedisServer::start();
    let new = RedisServer::start_with_args(&["--databases", "2"]);
    let body = standard_body(&legacy, &new, "legacy");
    let turnout = Turnout::builder(&body).start();
    let env = Env {
        turnout,
        legacy,
        new,
    };
    let t = &env.turnout;
    set_mode(
        t,
        "impact",
        json!({"target": "legacy", "mode": "dual-write", "secondary": "new"}),
    );
    let mut client = t.raw();
    client.expect_cmd(&["SELECT", "5"], b"+OK\r\n");
    client.expect_cmd(&["SET", "impact:db5", "five"], b"+OK\r\n");
    assert_eq!(env.legacy.get_db(5, "impact:db5").as_deref(), Some("five"));
    let c = wait_counts(t, "impact", Duration::from_secs(10), "db5", |c| {
        c.total() >= 1
    });
    assert!(
        !env.new.exists("impact:db5") && env.new.get_db(1, "impact:db5").is_none(),
        "the copy of a write in database 5 ran in another database of the secondary \
         (which has 2); counts {c:?}"
    );
    assert_eq!(c.mirrored, 0, "{c:?}");
    assert_eq!(
        c.shadow_error + c.dropped,
        1,
        "the failed copy is counted: {c:?}"
    );
}

/// Regression: EXEC's reply was captured with a 16-byte limit and a capture over its limit
/// was emptied, so a transaction whose EXEC reply was longer than 16 bytes was taken for one
/// that did not run: never replayed on the secondary, and not counted either.
#[test]
fn dual_write_replays_a_transaction_whose_exec_reply_is_long() {
    let env = shadow_env(&[]);
    let t = &env.turnout;
    set_mode(
        t,
        "impact",
        json!({"target": "legacy", "mode": "dual-write", "secondary": "new"}),
    );
    let mut client = t.raw();
    let replies = pipeline(
        &mut client,
        &[
            c!("MULTI"),
            c!("SET", "impact:tx:a", 1),
            c!("SET", "impact:tx:b", 2),
            c!("SET", "impact:tx:c", 3),
            c!("SET", "impact:tx:d", 4),
            c!("EXEC"),
            // A short one, then one aborted by Redis while queueing.
            c!("MULTI"),
            c!("SET", "impact:tx:e", 5),
            c!("EXEC"),
            c!("MULTI"),
            c!("SET", "impact:tx:f", 6),
            c!("SET", "impact:tx:g"),
            c!("EXEC"),
        ],
        100,
    );
    assert_eq!(
        show(&replies[5]),
        show(b"*4\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n")
    );
    assert_eq!(show(&replies[8]), show(b"*1\r\n+OK\r\n"));
    assert!(
        replies[12].starts_with(b"-EXECABORT"),
        "{}",
        show(&replies[12])
    );
    let c = wait_stable(t, "impact", Duration::from_secs(10));
    let on_secondary: Vec<String> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|k| format!("impact:tx:{k}"))
        .filter(|k| env.new.exists(k))
        .collect();
    assert_eq!(
        on_secondary,
        [
            "impact:tx:a",
            "impact:tx:b",
            "impact:tx:c",
            "impact:tx:d",
            "impact:tx:e"
        ],
        "the transactions that ran are replayed on the secondary, the aborted one is not; \
         counts {c:?}"
    );
    assert_eq!(c.mirrored, 2, "{c:?}");
}

/// A write acknowledged to one client and then read by another must be compared against a
/// secondary that already has the write: copies of different sessions keep the order in
/// which turnout received them (one lane per endpoint by default).
#[test]
fn a_read_after_another_sessions_write_sees_that_write_on_the_secondary() {
    let env = shadow_env(&[]);
    let t = &env.turnout;
    set_mode(
        t,
        "impact",
        json!({"target": "legacy", "mode": "dual-write", "secondary": "new", "compare": true}),
    );
    let mut writer = t.raw();
    let mut reader = t.raw();
    const ROUNDS: usize = 300;
    for i in 0..ROUNDS {
        let value = i.to_string();
        writer.expect_cmd(&["SET", "impact:causal", &value], b"+OK\r\n");
        let expected = format!("${}\r\n{value}\r\n", value.len());
        reader.expect_cmd(&["GET", "impact:causal"], expected.as_bytes());
    }
    let c = wait_counts(t, "impact", Duration::from_secs(10), "causal", |c| {
        c.total() >= 2 * ROUNDS as u64
    });
    assert_eq!(
        c,
        Counts {
            matched: ROUNDS as u64,
            mirrored: ROUNDS as u64,
            ..Counts::default()
        },
        "{:#?}",
        mismatches(t, "limit=5")
    );
}

/// A split write copies only the keys of mirrored namespaces to the secondary: a key whose
/// namespace the secondary already serves must not be written there a second time (late,
/// possibly over a newer value), nor a key of a namespace that is not mirrored at all.
#[test]
fn split_writes_copy_only_the_mirrored_keys() {
    let env = shadow_env(&[]);
    let t = &env.turnout;
    set_mode(
        t,
        "impact",
        json!({"target": "legacy", "mode": "dual-write", "secondary": "new"}),
    );
    let mut c = t.raw();
    // impact:a and web:e go to legacy, tok:d to new (its namespace's target).
    c.expect_cmd(
        &["MSET", "impact:a", "1", "tok:d", "2", "web:e", "3"],
        b"+OK\r\n",
    );
    // Another client overwrites tok:d; a late second copy of the MSET would undo it.
    t.raw().expect_cmd(&["SET", "tok:d", "newer"], b"+OK\r\n");
    c.expect_cmd(
        &["DEL", "impact:a", "tok:nothing", "web:nothing"],
        b":1\r\n",
    );
    c.expect_cmd(&["MSET", "impact:b", "1", "impact:c", "2"], b"+OK\r\n");
    let counts = wait_counts(t, "impact", Duration::from_secs(10), "split", |c| {
        c.mirrored >= 3
    });
    assert_eq!(counts.mirrored, 3, "{counts:?}");
    assert_eq!(env.new.get("tok:d").as_deref(), Some("newer"));
    assert!(
        !env.new.exists("web:e"),
        "a key of a direct namespace was copied"
    );
    assert!(
        !env.new.exists("impact:a"),
        "the DEL's mirrored part was not copied"
    );
    assert_eq!(env.new.get("impact:b").as_deref(), Some("1"));
    assert_eq!(env.new.get("impact:c").as_deref(), Some("2"));
}

/// SPOP and blocking pops are mirrored by their effect: the members SPOP returned are removed
/// from the secondary, and the element a blocking pop took is popped there without blocking,
/// so both endpoints end with the same data and the lane never blocks.
#[test]
fn random_and_blocking_pops_are_mirrored_by_their_effect() {
    let env = shadow_env(&[]);
    let t = &env.turnout;
    for server in [&env.legacy, &env.new] {
        let mut c = RawClient::connect(&server.addr());
        c.expect_cmd(
            &["SADD", "impact:s", "a", "b", "c", "d", "e", "f"],
            b":6\r\n",
        );
        c.expect_cmd(&["RPUSH", "impact:l", "1", "2", "3", "4", "5"], b":5\r\n");
        c.expect_cmd(
            &["ZADD", "impact:z", "1", "m1", "2", "m2", "3", "m3"],
            b":3\r\n",
        );
    }
    set_mode(
        t,
        "impact",
        json!({"target": "legacy", "mode": "dual-write", "secondary": "new"}),
    );
    let mut c = t.raw();
    c.roundtrip(&["SPOP", "impact:s"]);
    c.roundtrip(&["SPOP", "impact:s", "2"]);
    c.roundtrip(&["SPOP", "impact:nothing"]);
    c.expect_cmd(
        &["BLPOP", "impact:l", "1"],
        b"*2\r\n$8\r\nimpact:l\r\n$1\r\n1\r\n",
    );
    c.expect_cmd(
        &["BRPOP", "impact:l", "1"],
        b"*2\r\n$8\r\nimpact:l\r\n$1\r\n5\r\n",
    );
    c.expect_cmd(
        &["BLMOVE", "impact:l", "impact:l2", "LEFT", "RIGHT", "1"],
        b"$1\r\n2\r\n",
    );
    c.expect_cmd(
        &["BRPOPLPUSH", "impact:l", "impact:l2", "1"],
        b"$1\r\n4\r\n",
    );
    c.roundtrip(&["BZPOPMIN", "impact:z", "1"]);
    c.roundtrip(&["BZPOPMAX", "impact:z", "1"]);
    c.expect_cmd(&["BLPOP", "impact:empty", "0.05"], b"*-1\r\n");
    // A pop released by another client's push, then a write behind it.
    c.send_cmd(&["BLPOP", "impact:q", "5"]);
    std::thread::sleep(Duration::from_millis(100));
    t.raw()
        .expect_cmd(&["RPUSH", "impact:q", "v1", "v2"], b":2\r\n");
    assert_eq!(c.read_frame(), b"*2\r\n$8\r\nimpact:q\r\n$2\r\nv1\r\n");
    c.expect_cmd(&["SET", "impact:after", "1"], b"+OK\r\n");
    // Two SPOPs (the one of a missing key changes nothing), six blocking pops (the
    // timed-out BLPOP changes nothing), RPUSH, the released BLPOP and the SET.
    let counts = wait_counts(t, "impact", Duration::from_secs(10), "effects", |c| {
        c.mirrored >= 11
    });
    assert_eq!(counts.mirrored, 11, "{counts:?}");
    assert_eq!(counts.shadow_error + counts.dropped, 0, "{counts:?}");
    let mut legacy = RawClient::connect(&env.legacy.addr());
    let mut new = RawClient::connect(&env.new.addr());
    for key in [
        "impact:s",
        "impact:l",
        "impact:l2",
        "impact:z",
        "impact:q",
        "impact:after",
    ] {
        assert_eq!(
            key_snapshot(&mut legacy, key),
            key_snapshot(&mut new, key),
            "{key}"
        );
    }
}
