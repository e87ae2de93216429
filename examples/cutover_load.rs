//! Load generator and cutover driver for `scripts/bench-cutover.sh`: the client-visible pause
//! of a fenced cutover under a pipelined write load.
//!
//! It opens `--clients` connections to turnout, each pipelining `--pipeline` writes at a time
//! (alternately `INCR <prefix>cutbench:<client>:n` and `SET <prefix>cutbench:<client>:<k>
//! <32 bytes>`, all in the namespace being cut over) for the whole run, and meanwhile runs
//! `--cutovers` measured cutovers of `--namespace` from `legacy` to `new` through the admin API
//! (`POST /v1/routes/{ns}/cutover?wait=true`, `fence: "replication"`), each followed by an
//! unmeasured reset back to `legacy` (`fence: "drain"`: `legacy` is not a replica of `new`, so
//! the way back cannot be replication-fenced; with `--promote`, `new` is then made a replica of
//! `legacy` again). Before each measured cutover it waits `--settle-ms` under load, then
//! records the replication state (the master's `master_repl_offset` minus the replica's
//! `slave_repl_offset`, the replica's read first: an upper bound on the bytes not yet applied) and the lag of a probe key written directly
//! on `legacy` until it is readable on `new`.
//!
//! Every client stamps each read that completes at least one reply; a gap is the time between
//! two such reads. The client-visible pause of a cutover is the largest gap, over all clients,
//! that overlaps the window from sending the POST to reading its answer (the gap counts whole,
//! also the part after the window). The baseline of a cutover is the same measure over a
//! window of the same length in the middle of the settle period before it, without a cutover.
//!
//! Times in the output named `*_at_ms` or `*_span_ms` are ms since the program started.
//! Writes the raw results as JSON to `--out`; the script computes percentiles and the report.
//! Everything is bounded: every read by `REPLY_TIMEOUT`, every poll loop by a count and a
//! deadline, the whole run by `--max-seconds`.

#![forbid(unsafe_code)]

#[path = "support/loopback.rs"]
mod support;

use bytes::{Buf, BytesMut};
use clap::Parser;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::loopback;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnout::resp::reply::complete_len;

/// Bound on waiting for any one reply (Redis, turnout or the admin API).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting anywhere.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Gaps shorter than this are not logged (the largest gap of a window is exact as long as
/// one gap overlapping it is at least this long; otherwise it is reported as below it).
const GAP_LOG_MIN: Duration = Duration::from_micros(200);
/// Most gaps logged per client (memory bound; the run stops being exact beyond it, which the
/// output reports).
const GAP_LOG_MAX: usize = 400_000;
/// Most batches any client sends.
const MAX_BATCHES: u64 = 100_000_000;
/// Bound on the probe and replication waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on waiting for a replica link after `REPLICAOF` (`--promote`).
const RELINK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(
    about = "Pause of fenced cutovers under a pipelined write load (scripts/bench-cutover.sh)"
)]
struct Args {
    /// turnout's proxy address.
    #[arg(long)]
    proxy: String,
    /// turnout's admin address.
    #[arg(long)]
    admin: String,
    /// The legacy redis-server (the master), as host:port.
    #[arg(long)]
    legacy: String,
    /// The new redis-server (a writable replica of legacy), as host:port.
    #[arg(long)]
    new: String,
    /// Namespace cut over; the load writes under `--prefix`, one of its prefixes.
    #[arg(long, default_value = "web-cache")]
    namespace: String,
    /// Key prefix of the namespace.
    #[arg(long, default_value = "web:")]
    prefix: String,
    /// Endpoint names in turnout's config.
    #[arg(long, default_value = "legacy")]
    legacy_name: String,
    #[arg(long, default_value = "new")]
    new_name: String,
    /// Client connections.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Commands per pipelined batch.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Measured cutovers.
    #[arg(long, default_value_t = 20)]
    cutovers: usize,
    /// Load before the first cutover.
    #[arg(long, default_value_t = 2000)]
    warmup_ms: u64,
    /// Load between a reset and the next measured cutover.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Load between a measured cutover and its reset.
    #[arg(long, default_value_t = 300)]
    after_ms: u64,
    /// The cutover's `timeout_ms`.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Measured cutovers also promote `new` (`REPLICAOF NO ONE`); the reset makes it a replica
    /// of legacy again (a full resync).
    #[arg(long)]
    promote: bool,
    /// Bound on the whole run.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Where the raw JSON goes.
    #[arg(long)]
    out: PathBuf,
}

/// What one client saw.
#[derive(Default)]
struct ClientRun {
    replies: u64,
    errors: u64,
    first_error: Option<String>,
    failure: Option<String>,
    /// Gaps of at least `GAP_LOG_MIN`, as (previous read, this read) in ns since the base.
    gaps: Vec<(u64, u64)>,
    gaps_dropped: u64,
    largest_gap_ns: u64,
    largest_gap_at: (u64, u64),
    first_reply_ns: Option<u64>,
    last_reply_ns: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => {}
        Err(e) => {
            eprintln!("cutover_load: {e}");
            std::process::exit(1);
        }
    }
}

fn ns_since(base: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

async fn run(args: Args) -> Result<(), String> {
    if args.clients == 0 || args.pipeline == 0 || args.cutovers == 0 {
        return Err("--clients, --pipeline and --cutovers must be positive".into());
    }
    for addr in [&args.proxy, &args.admin, &args.legacy, &args.new] {
        loopback(addr).map_err(|e| e.to_string())?;
    }
    let base = Instant::now();
    let deadline = base + Duration::from_secs(args.max_seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicU64::new(0));

    // The load.
    let mut handles = Vec::with_capacity(args.clients);
    for id in 0..args.clients {
        let proxy = args.proxy.clone();
        let prefix = args.prefix.clone();
        let stop = stop.clone();
        let connected = connected.clone();
        let pipeline = args.pipeline;
        handles.push(tokio::spawn(async move {
            client(id, proxy, prefix, pipeline, stop, connected, base, deadline).await
        }));
    }
    let all_connected = poll_until(Duration::from_secs(10), || {
        connected.load(Ordering::Relaxed) == args.clients as u64
    })
    .await;
    let load_started = Instant::now();
    let mut result = if all_connected {
        eprintln!(
            "[cutover_load] {} clients connected; warm-up {} ms",
            args.clients, args.warmup_ms
        );
        tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
        drive(&args, base, deadline).await
    } else {
        Err(format!(
            "only {} of {} clients connected within 10 s",
            connected.load(Ordering::Relaxed),
            args.clients
        ))
    };
    stop.store(true, Ordering::Relaxed);
    let load_stopped = Instant::now();
    let mut runs = Vec::with_capacity(handles.len());
    for h in handles {
        match tokio::time::timeout(REPLY_TIMEOUT + Duration::from_secs(5), h).await {
            Ok(Ok(r)) => runs.push(r),
            Ok(Err(e)) => return Err(format!("a client task failed: {e}")),
            Err(_) => return Err("a client did not stop in time".into()),
        }
    }
    let failures: Vec<String> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.failure.as_ref().map(|f| format!("client {i}: {f}")))
        .collect();
    if !failures.is_empty() && result.is_ok() {
        result = Err(format!("client failures: {}", failures.join("; ")));
    }
    let cutovers = result?;

    // Analysis: the largest gap overlapping each window.
    let mut out = Vec::with_capacity(cutovers.len());
    for mut c in cutovers {
        let (s, e) = (c.window.0, c.window.1);
        let (gap, who, at) = max_gap(&runs, s, e);
        let (bs, be) = c.baseline;
        let (bgap, _, _) = max_gap(&runs, bs, be);
        let after = runs.iter().filter(|r| r.last_reply_ns > e).count();
        let obj = c.record.as_object_mut().expect("record is an object");
        obj.insert("window_ms".into(), json!(ms(e - s)));
        obj.insert("window_at_ms".into(), json!([ms(s), ms(e)]));
        obj.insert("baseline_at_ms".into(), json!([ms(bs), ms(be)]));
        obj.insert("client_max_gap_ms".into(), json!(gap.map(ms)));
        obj.insert("client_max_gap_client".into(), json!(who));
        obj.insert(
            "client_max_gap_span_ms".into(),
            json!(at.map(|(a, b)| [ms(a), ms(b)])),
        );
        obj.insert("baseline_max_gap_ms".into(), json!(bgap.map(ms)));
        obj.insert("clients_with_a_reply_after_the_window".into(), json!(after));
        out.push(c.record);
    }
    let replies: u64 = runs.iter().map(|r| r.replies).sum();
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    let load_s = load_stopped.duration_since(load_started).as_secs_f64();
    let doc = json!({
        "params": {
            "clients": args.clients, "pipeline": args.pipeline, "cutovers": args.cutovers,
            "namespace": args.namespace, "prefix": args.prefix, "warmup_ms": args.warmup_ms,
            "settle_ms": args.settle_ms, "after_ms": args.after_ms, "timeout_ms": args.timeout_ms,
            "promote": args.promote, "gap_log_min_ms": GAP_LOG_MIN.as_secs_f64() * 1000.0,
            "commands": format!("pipelines of {} alternating INCR {p}cutbench:<client>:n and SET {p}cutbench:<client>:<0..999> <32 bytes>", args.pipeline, p = args.prefix),
        },
        "load": {
            "seconds": load_s,
            "replies": replies,
            "replies_per_second": replies as f64 / load_s,
            "error_replies": errors,
            "first_error": runs.iter().find_map(|r| r.first_error.clone()),
            "gaps_logged": runs.iter().map(|r| r.gaps.len()).sum::<usize>(),
            "gaps_dropped": runs.iter().map(|r| r.gaps_dropped).sum::<u64>(),
            "largest_gap_whole_run_ms": runs.iter().map(|r| r.largest_gap_ns).max().map(ms),
            "largest_gap_whole_run_span_ms": runs
                .iter()
                .max_by_key(|r| r.largest_gap_ns)
                .map(|r| [ms(r.largest_gap_at.0), ms(r.largest_gap_at.1)]),
            "load_started_ms": ms(ns_since(base, load_started)),
            "load_stopped_ms": ms(ns_since(base, load_stopped)),
            "replies_per_client_min": runs.iter().map(|r| r.replies).min(),
            "replies_per_client_max": runs.iter().map(|r| r.replies).max(),
        },
        "cutovers": out,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, text + "\n")
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    eprintln!(
        "[cutover_load] {replies} replies in {load_s:.1} s ({:.0}/s), {errors} error replies; wrote {}",
        replies as f64 / load_s,
        args.out.display()
    );
    Ok(())
}

/// The largest logged gap over all clients that overlaps `[from, to]`: its length, its client
/// and its span (ns since the base); `None` when no gap of at least `GAP_LOG_MIN` does.
#[allow(clippy::type_complexity)]
fn max_gap(
    runs: &[ClientRun],
    from: u64,
    to: u64,
) -> (Option<u64>, Option<usize>, Option<(u64, u64)>) {
    let mut best: Option<(u64, usize, (u64, u64))> = None;
    for (i, r) in runs.iter().enumerate() {
        // Gaps are in time order; skip those that ended before `from`.
        let start = r.gaps.partition_point(|&(_, b)| b < from);
        for &(a, b) in &r.gaps[start..] {
            if a > to {
                break;
            }
            if best.map_or(true, |(g, _, _)| b - a > g) {
                best = Some((b - a, i, (a, b)));
            }
        }
    }
    (best.map(|b| b.0), best.map(|b| b.1), best.map(|b| b.2))
}

async fn poll_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    for _ in 0..100_000 {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

fn resp(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One pipelining writer, until `stop` or the deadline.
#[allow(clippy::too_many_arguments)]
async fn client(
    id: usize,
    proxy: String,
    prefix: String,
    pipeline: usize,
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicU64>,
    base: Instant,
    deadline: Instant,
) -> ClientRun {
    let mut run = ClientRun::default();
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&proxy)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            run.failure = Some(format!("connect {proxy}: {e}"));
            return run;
        }
        Err(_) => {
            run.failure = Some(format!("connect {proxy}: timed out"));
            return run;
        }
    };
    let _ = conn.set_nodelay(true);
    connected.fetch_add(1, Ordering::Relaxed);
    let counter = format!("{prefix}cutbench:{id}:n");
    let value = [b'v'; 32];
    let mut out = Vec::with_capacity(pipeline * 64);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut last: Option<u64> = None;
    let mut k = 0u64;
    for _ in 0..MAX_BATCHES {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        out.clear();
        for j in 0..pipeline {
            if j % 2 == 0 {
                resp(&[b"INCR", counter.as_bytes()], &mut out);
            } else {
                let key = format!("{prefix}cutbench:{id}:{}", k % 1000);
                k += 1;
                resp(&[b"SET", key.as_bytes(), &value], &mut out);
            }
        }
        if let Err(e) = conn.write_all(&out).await {
            run.failure = Some(format!("write: {e}"));
            return run;
        }
        let mut got = 0;
        while got < pipeline {
            match tokio::time::timeout(REPLY_TIMEOUT, conn.read_buf(&mut buf)).await {
                Ok(Ok(0)) => {
                    run.failure = Some("connection closed by turnout".into());
                    return run;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    run.failure = Some(format!("read: {e}"));
                    return run;
                }
                Err(_) => {
                    run.failure = Some(format!("no reply within {REPLY_TIMEOUT:?}"));
                    return run;
                }
            }
            let now = ns_since(base, Instant::now());
            let mut complete = 0;
            loop {
                match complete_len(&buf) {
                    Ok(Some(n)) => {
                        if buf[0] == b'-' {
                            run.errors += 1;
                            if run.first_error.is_none() {
                                run.first_error =
                                    Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_string());
                            }
                        }
                        buf.advance(n);
                        complete += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        run.failure = Some(format!("invalid reply: {e}"));
                        return run;
                    }
                }
            }
            if complete == 0 {
                continue;
            }
            got += complete;
            run.replies += complete as u64;
            run.first_reply_ns.get_or_insert(now);
            if let Some(prev) = last {
                let gap = now - prev;
                if gap > run.largest_gap_ns {
                    run.largest_gap_ns = gap;
                    run.largest_gap_at = (prev, now);
                }
                if gap >= GAP_LOG_MIN.as_nanos() as u64 {
                    if run.gaps.len() < GAP_LOG_MAX {
                        run.gaps.push((prev, now));
                    } else {
                        run.gaps_dropped += 1;
                    }
                }
            }
            last = Some(now);
            run.last_reply_ns = now;
        }
        if got > pipeline {
            run.failure = Some(format!("{got} replies to {pipeline} commands"));
            return run;
        }
    }
    run
}

/// A measured cutover: its window and baseline window (ns since the base) and its record.
struct Cutover {
    window: (u64, u64),
    baseline: (u64, u64),
    record: Value,
}

async fn drive(args: &Args, base: Instant, deadline: Instant) -> Result<Vec<Cutover>, String> {
    let mut done = Vec::with_capacity(args.cutovers);
    let mut settle_from = Instant::now();
    for i in 1..=args.cutovers {
        if Instant::now() + Duration::from_secs(30) > deadline {
            return Err(format!(
                "--max-seconds {} reached before cutover {i}",
                args.max_seconds
            ));
        }
        let rest = Duration::from_millis(args.settle_ms).saturating_sub(settle_from.elapsed());
        tokio::time::sleep(rest).await;
        let settled = Instant::now();

        // Replication state just before: link, offsets, probe lag.
        let mut legacy = Redis::connect(&args.legacy).await?;
        let mut new = Redis::connect(&args.new).await?;
        // The replica's offset first, the master's right after: their difference is an upper
        // bound on the bytes new had not applied yet when it answered.
        let ni = new.info_replication().await?;
        let li = legacy.info_replication().await?;
        let link = field(&ni, "master_link_status").unwrap_or_default();
        if link != "up" {
            return Err(format!("cutover {i}: new's master_link_status is {link:?}"));
        }
        let master_off: i64 = field(&li, "master_repl_offset")
            .and_then(|v| v.parse().ok())
            .ok_or("no master_repl_offset on legacy")?;
        let replica_off: i64 = field(&ni, "slave_repl_offset")
            .and_then(|v| v.parse().ok())
            .ok_or("no slave_repl_offset on new")?;
        let probe_ms = probe(&mut legacy, &mut new, &args.prefix, i).await?;

        // The measured cutover.
        let body = json!({
            "to": args.new_name, "fence": "replication", "timeout_ms": args.timeout_ms,
            "promote": args.promote, "reason": format!("bench-cutover {i}"),
        });
        let path = format!("/v1/routes/{}/cutover?wait=true", args.namespace);
        let t0 = Instant::now();
        let (status, report) = http_post(&args.admin, &path, &body, args.timeout_ms).await?;
        let t1 = Instant::now();
        if status != 200 {
            return Err(format!("cutover {i}: HTTP {status}: {report}"));
        }
        let outcome = report["outcome"].as_str().unwrap_or("?").to_string();
        let took = |name: &str| -> Value {
            report["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["step"] == name))
                .map_or(Value::Null, |s| s["took_ms"].clone())
        };
        let (s, e) = (ns_since(base, t0), ns_since(base, t1));
        let d = e - s;
        // Baseline: a window of the same length in the middle of the settle period.
        let mid = ns_since(base, settle_from) / 2 + ns_since(base, settled) / 2;
        let baseline = (mid.saturating_sub(d / 2), mid.saturating_sub(d / 2) + d);
        eprintln!(
            "[cutover_load] cutover {i}/{}: {outcome}, pause_ms {:.2}, fence {:.2} ms, probe lag {probe_ms:.2} ms, offset lag {} B",
            args.cutovers,
            report["pause_ms"].as_f64().unwrap_or(f64::NAN),
            took("fence").as_f64().unwrap_or(f64::NAN),
            (master_off - replica_off).max(0)
        );
        let mut record = json!({
            "n": i,
            "outcome": outcome,
            "pause_ms": report["pause_ms"],
            // `held_commands` since the report counts commands; `held_sessions` before.
            "held_commands": report["held_commands"],
            "held_sessions": report["held_sessions"],
            "hold_ms": took("hold"), "drain_ms": took("drain"), "fence_ms": took("fence"),
            "promote_ms": took("promote"), "flip_ms": took("flip"),
            "probe_lag_ms": probe_ms,
            "repl_offset_lag_bytes": (master_off - replica_off).max(0),
            "master_repl_offset": master_off,
            "replica_repl_offset": replica_off,
            "report": report,
        });
        if outcome != "completed" {
            done.push(Cutover {
                window: (s, e),
                baseline,
                record,
            });
            return Err(format!(
                "cutover {i} did not complete: {}",
                done.last().map_or(Value::Null, |c| c.record.clone())
            ));
        }

        // Unmeasured reset: back to legacy.
        tokio::time::sleep(Duration::from_millis(args.after_ms)).await;
        let back = json!({
            "to": args.legacy_name, "fence": "drain", "timeout_ms": args.timeout_ms,
            "promote": false, "reason": format!("bench-cutover reset {i}"),
        });
        let r0 = ns_since(base, Instant::now());
        let (status, r) = http_post(&args.admin, &path, &back, args.timeout_ms).await?;
        let r1 = ns_since(base, Instant::now());
        if status != 200 || r["outcome"] != "completed" {
            return Err(format!("reset {i}: HTTP {status}: {r}"));
        }
        let mut relink_ms = Value::Null;
        if args.promote {
            let t = Instant::now();
            relink(&mut new, &args.legacy).await?;
            relink_ms = json!(t.elapsed().as_secs_f64() * 1000.0);
        }
        if let Some(obj) = record.as_object_mut() {
            obj.insert("reset_pause_ms".into(), r["pause_ms"].clone());
            obj.insert("reset_window_at_ms".into(), json!([ms(r0), ms(r1)]));
            obj.insert("reset_relink_ms".into(), relink_ms);
        }
        settle_from = Instant::now();
        done.push(Cutover {
            window: (s, e),
            baseline,
            record,
        });
    }
    // Let every client get replies after the last window.
    tokio::time::sleep(Duration::from_millis(args.after_ms)).await;
    Ok(done)
}

/// Writes a probe key on legacy and polls new until it is there: ms from sending the SET.
async fn probe(legacy: &mut Redis, new: &mut Redis, prefix: &str, i: usize) -> Result<f64, String> {
    let key = format!("{prefix}cutbench:probe:{i}");
    let token = format!("{i}:{}", std::process::id());
    let want = format!("${}\r\n{token}\r\n", token.len());
    let t0 = Instant::now();
    let r = legacy.cmd(&["SET", &key, &token]).await?;
    if r != b"+OK\r\n" {
        return Err(format!(
            "probe SET on legacy: {}",
            String::from_utf8_lossy(&r)
        ));
    }
    let mut seen = None;
    for _ in 0..1_000_000 {
        if new.cmd(&["GET", &key]).await? == want.as_bytes() {
            seen = Some(t0.elapsed());
            break;
        }
        if t0.elapsed() > PROBE_TIMEOUT {
            break;
        }
    }
    let _ = legacy.cmd(&["DEL", &key]).await?;
    seen.map(|d| d.as_secs_f64() * 1000.0)
        .ok_or_else(|| format!("probe key {key} not on new within {PROBE_TIMEOUT:?}"))
}

/// `REPLICAOF legacy` on new, then waits for the link and a probe key.
async fn relink(new: &mut Redis, legacy_addr: &str) -> Result<(), String> {
    let (host, port) = legacy_addr
        .rsplit_once(':')
        .ok_or_else(|| format!("bad address {legacy_addr}"))?;
    let r = new.cmd(&["REPLICAOF", host, port]).await?;
    if !r.starts_with(b"+OK") {
        return Err(format!("REPLICAOF on new: {}", String::from_utf8_lossy(&r)));
    }
    let t0 = Instant::now();
    for _ in 0..100_000 {
        let info = new.info_replication().await?;
        if field(&info, "master_link_status").as_deref() == Some("up") {
            return Ok(());
        }
        if t0.elapsed() > RELINK_TIMEOUT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(format!(
        "new did not link to legacy within {RELINK_TIMEOUT:?}"
    ))
}

fn field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// A plain connection to a redis-server, one command at a time.
struct Redis {
    conn: TcpStream,
    buf: BytesMut,
}

impl Redis {
    async fn connect(addr: &str) -> Result<Redis, String> {
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect {addr}: timed out"))?
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = conn.set_nodelay(true);
        Ok(Redis {
            conn,
            buf: BytesMut::with_capacity(4096),
        })
    }

    async fn cmd(&mut self, args: &[&str]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        resp(&parts, &mut out);
        self.conn.write_all(&out).await.map_err(|e| e.to_string())?;
        for _ in 0..100_000 {
            if let Some(n) = complete_len(&self.buf).map_err(|e| e.to_string())? {
                let reply = self.buf[..n].to_vec();
                self.buf.advance(n);
                return Ok(reply);
            }
            match tokio::time::timeout(REPLY_TIMEOUT, self.conn.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => return Err("connection closed".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("no reply within {REPLY_TIMEOUT:?}")),
            }
        }
        Err("reply too large".into())
    }

    async fn info_replication(&mut self) -> Result<String, String> {
        let r = self.cmd(&["INFO", "replication"]).await?;
        let text = String::from_utf8_lossy(&r).into_owned();
        if !text.starts_with('$') {
            return Err(format!("INFO replication: {text}"));
        }
        Ok(text)
    }
}

/// `POST path` with a JSON body to the admin API (HTTP/1.1, `Connection: close`); the status
/// and the JSON answer.
async fn http_post(
    addr: &str,
    path: &str,
    body: &Value,
    timeout_ms: u64,
) -> Result<(u16, Value), String> {
    let within = Duration::from_millis(timeout_ms) + REPLY_TIMEOUT;
    let run = async {
        let mut conn = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("admin {addr}: {e}"))?;
        let _ = conn.set_nodelay(true);
        let body = body.to_string();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("admin: malformed answer {text:?}"))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("admin: no status in {head:?}"))?;
        let value = serde_json::from_str(body.trim()).unwrap_or(Value::String(body.to_string()));
        Ok((status, value))
    };
    tokio::time::timeout(within, run)
        .await
        .map_err(|_| format!("admin POST {path}: no answer within {within:?}"))?
}
