//! `turnout ctl`: a small client of the admin API for operators and scripts.
//!
//! Human-readable tables by default, the API's own JSON with `--json`.
//!
//! ```text
//! turnout ctl routes
//! turnout ctl flip NAMESPACE [TARGET] --reason TEXT [--mode direct|shadow|dual-write]
//!     [--shadow EP] [--secondary EP] [--sample F] [--writes] [--compare] [--if-version N]
//! turnout ctl history
//! turnout ctl endpoints
//! turnout ctl shadow [--once] [--interval DURATION] [--all]
//! turnout ctl shadow --mismatches [--namespace NS] [--limit N]
//! turnout ctl shadow --reset [NAMESPACE]
//! turnout ctl cutover NAMESPACE --to ENDPOINT --reason TEXT [--fence replication|drain]
//!     [--timeout DURATION] [--promote]
//! ```

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant, SystemTime};

/// How long one admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `ctl cutover` reads the cutover's report.
const CUTOVER_POLL: Duration = Duration::from_millis(20);
/// How long past its `--timeout` `ctl cutover` keeps reading a report that says `running`
/// (turnout ends every cutover by its deadline; the flip's write of the state file may
/// take a little longer).
const CUTOVER_MARGIN: Duration = Duration::from_secs(5);

/// A failure that asks for its own exit code; every other error exits 1.
#[derive(Debug)]
pub struct Failure {
    /// The process's exit code.
    pub code: u8,
    /// What went wrong, for stderr.
    pub message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The admin API answered with an error status.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
struct ApiError {
    status: StatusCode,
    message: String,
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Admin API address (host:port).
    #[arg(
        long,
        env = "TURNOUT_ADMIN",
        default_value = "127.0.0.1:9900",
        global = true
    )]
    pub admin: String,
    /// Bearer token for mutating calls.
    #[arg(
        long,
        env = "TURNOUT_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What to do.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Show every route, its target and the table version.
    Routes,
    /// Point a namespace at another endpoint, or change how it is served, now.
    Flip {
        /// The namespace (or `default`).
        namespace: String,
        /// The endpoint to send it to (optional with --mode: the target stays).
        #[arg(required_unless_present = "mode")]
        target: Option<String>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
        /// How the namespace is served: `direct`; `shadow` (copies of reads, and with
        /// --writes of writes, go to --shadow and the replies are compared); `dual-write`
        /// (writes also go to --secondary; with --compare a sample of reads is compared).
        #[arg(long, value_parser = ["direct", "shadow", "dual-write"])]
        mode: Option<String>,
        /// Shadow mode: the endpoint copies go to.
        #[arg(long, value_name = "ENDPOINT", requires = "mode")]
        shadow: Option<String>,
        /// Dual-write mode: the endpoint writes are mirrored to.
        #[arg(long, value_name = "ENDPOINT", requires = "mode")]
        secondary: Option<String>,
        /// Fraction of reads compared, 0.0 to 1.0 (default: the config's `[shadow] sample`).
        #[arg(long, value_name = "F", requires = "mode")]
        sample: Option<f64>,
        /// Shadow mode: mirror writes too (for warming an empty cache).
        #[arg(long, requires = "mode")]
        writes: bool,
        /// Dual-write mode: also compare a sample of reads with the secondary.
        #[arg(long, requires = "mode")]
        compare: bool,
        /// Only apply if the table is still at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Show the audit log of route changes.
    History,
    /// Show every endpoint: kind, where, whether its last health check passed (and why not),
    /// its primary and its event counts (connect, TLS and auth failures, redirects,
    /// failovers).
    Endpoints,
    /// Show shadow and dual-write evidence per namespace: a live table, refreshed every
    /// --interval until Ctrl-C (--once: one table; --json: the API's JSON once). With
    /// --mismatches, the recent mismatches; with --reset, restart the counts.
    Shadow(ShadowArgs),
    /// Move a namespace to another endpoint with a fenced cutover (hold its commands, drain
    /// the ones in flight, fence, flip) and show each step as it ends. Exit status: 0 when it
    /// completed, 1 when it aborted (the route is unchanged), 2 when it could not start (the
    /// API's refusal is printed), 3 when its outcome is unknown (the report could not be read
    /// to its end; see GET /v1/cutovers/ID).
    Cutover(CutoverArgs),
}

/// `turnout ctl cutover`.
#[derive(Debug, clap::Args)]
pub struct CutoverArgs {
    /// The namespace (or `default`).
    pub namespace: String,
    /// The endpoint to move it to.
    #[arg(long, value_name = "ENDPOINT")]
    pub to: String,
    /// How the new endpoint is known to have every acknowledged write: `replication` (a key
    /// written through the old endpoint must reach the new one, which replicates from it) or
    /// `drain` (only drain the commands in flight: for data that need not carry over, e.g. a
    /// cache).
    #[arg(long, value_parser = ["replication", "drain"], default_value = "replication")]
    pub fence: String,
    /// Bound on the whole cutover (`2s`, `500ms`, or seconds as a number); past it the
    /// cutover aborts and the route stays as it was.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Send `REPLICAOF NO ONE` to the new endpoint after the fence.
    #[arg(long)]
    pub promote: bool,
    /// Why, for the audit log.
    #[arg(long)]
    pub reason: String,
}

/// `turnout ctl shadow`.
#[derive(Debug, clap::Args)]
pub struct ShadowArgs {
    /// Print one table and exit.
    #[arg(long)]
    pub once: bool,
    /// Time between refreshes of the live table (`2s`, `500ms`, or seconds as a number).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Also list direct namespaces that have no shadow counts.
    #[arg(long)]
    pub all: bool,
    /// List recent mismatches and shadow errors, newest first, instead of the counts.
    #[arg(long, conflicts_with_all = ["once", "interval", "all", "reset"])]
    pub mismatches: bool,
    /// With --mismatches: only this namespace's.
    #[arg(long, value_name = "NAMESPACE", requires = "mismatches")]
    pub namespace: Option<String>,
    /// With --mismatches: at most this many (the API's default is 100).
    #[arg(
        long,
        value_name = "N",
        requires = "mismatches",
        value_parser = clap::value_parser!(u64).range(1..=10_000)
    )]
    pub limit: Option<u64>,
    /// Restart the counts (and drop the logged mismatches) of NAMESPACE, or of every
    /// namespace without one, then print the table once.
    #[arg(
        long,
        value_name = "NAMESPACE",
        num_args = 0..=1,
        conflicts_with = "interval"
    )]
    pub reset: Option<Option<String>>,
}

/// `--interval`: a humantime duration (`2s`, `500ms`) or a number of seconds, above zero.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Ok(_) => return Err("must be a positive duration".to_string()),
        Err(_) => humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?,
    };
    if interval < Duration::from_millis(10) || interval > Duration::from_secs(24 * 3600) {
        return Err("must be between 10ms and 24h".to_string());
    }
    Ok(interval)
}

/// `--timeout` of a cutover: a humantime duration (`2s`, `500ms`) or a number of seconds,
/// from 1ms to the API's bound.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = match text.trim().parse::<f64>() {
        Ok(secs) if (0.0..=1e9).contains(&secs) => Duration::from_secs_f64(secs),
        Ok(_) => return Err("must be a positive duration".to_string()),
        Err(_) => humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?,
    };
    let max = crate::cutover::MAX_TIMEOUT;
    if timeout < Duration::from_millis(1) || timeout > max {
        return Err(format!(
            "must be between 1ms and {}",
            humantime::format_duration(max)
        ));
    }
    Ok(timeout)
}

/// Runs one ctl command.
///
/// # Errors
/// The API could not be reached or refused the call; the message says why.
pub async fn run(args: CtlArgs, command: CtlCommand) -> anyhow::Result<()> {
    match command {
        CtlCommand::Routes => {
            let doc = call(&args, Method::GET, "/v1/routes", None, None).await?;
            print_routes(&args, &doc)
        }
        CtlCommand::Flip {
            namespace,
            target,
            reason,
            mode,
            shadow,
            secondary,
            sample,
            writes,
            compare,
            if_version,
        } => {
            let mut body = serde_json::Map::new();
            body.insert("reason".into(), reason.into());
            if let Some(target) = target {
                body.insert("target".into(), target.into());
            }
            if let Some(mode) = mode {
                body.insert("mode".into(), mode.into());
            }
            if let Some(shadow) = shadow {
                body.insert("shadow".into(), shadow.into());
            }
            if let Some(secondary) = secondary {
                body.insert("secondary".into(), secondary.into());
            }
            if let Some(sample) = sample {
                body.insert("sample".into(), sample.into());
            }
            // Flags absent are left out, so that the API's defaults and checks apply.
            if writes {
                body.insert("writes".into(), true.into());
            }
            if compare {
                body.insert("compare".into(), true.into());
            }
            let path = format!("/v1/routes/{namespace}");
            let doc = call(&args, Method::PUT, &path, Some(body.into()), if_version).await?;
            if !args.json {
                let route = doc["routes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["namespace"] == namespace.as_str());
                match route {
                    Some(r) => println!("{namespace} -> {} ({})", s(&r["target"]), mode_label(r)),
                    None => println!("{namespace} changed"),
                }
            }
            print_routes(&args, &doc)
        }
        CtlCommand::History => {
            let doc = call(&args, Method::GET, "/v1/history", None, None).await?;
            if args.json {
                println!("{doc}");
                return Ok(());
            }
            // A mode change keeps the target: show the mode beside it when it is not direct.
            let side = |target: &Value, mode: &Value| match s(mode) {
                "" | "direct" => s(target).to_string(),
                mode => format!("{} [{mode}]", s(target)),
            };
            let entries: Vec<&Value> = doc["entries"].as_array().into_iter().flatten().collect();
            let froms: Vec<String> = entries
                .iter()
                .map(|e| side(&e["from"], &e["from_mode"]))
                .collect();
            let tos: Vec<String> = entries
                .iter()
                .map(|e| side(&e["to"], &e["to_mode"]))
                .collect();
            let wide = |col: &[String]| col.iter().map(String::len).max().unwrap_or(0).max(10);
            let (fw, tw) = (wide(&froms), wide(&tos));
            println!(
                "{:<8} {:<25} {:<16} {:<fw$} {:<tw$} {:<24} REASON",
                "VERSION", "AT", "NAMESPACE", "FROM", "TO", "ACTOR"
            );
            for ((e, from), to) in entries.iter().zip(&froms).zip(&tos) {
                println!(
                    "{:<8} {:<25} {:<16} {:<fw$} {:<tw$} {:<24} {}",
                    e["version"].as_u64().unwrap_or_default(),
                    s(&e["at"]),
                    s(&e["namespace"]),
                    from,
                    to,
                    s(&e["actor"]),
                    s(&e["reason"])
                );
            }
            Ok(())
        }
        CtlCommand::Endpoints => {
            let doc = call(&args, Method::GET, "/v1/endpoints", None, None).await?;
            if args.json {
                println!("{doc}");
            } else {
                print!("{}", endpoints_table(&doc));
            }
            Ok(())
        }
        CtlCommand::Shadow(shadow) => run_shadow(&args, shadow).await,
        CtlCommand::Cutover(cutover) => run_cutover(&args, &cutover).await,
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A route's mode with its endpoint, e.g. `direct`, `shadow->new 1.0`, `shadow->new 0.1 writes`,
/// `dual-write->new`, `dual-write->new compare 0.5`.
fn mode_label(r: &Value) -> String {
    let sample = || match &r["sample"] {
        Value::Null => "?".to_string(),
        v => v.to_string(),
    };
    match s(&r["mode"]) {
        "" => "direct".to_string(),
        "shadow" => format!(
            "shadow->{} {}{}",
            s(&r["shadow"]),
            sample(),
            if r["writes"] == true { " writes" } else { "" }
        ),
        "dual-write" => format!(
            "dual-write->{}{}",
            s(&r["secondary"]),
            if r["compare"] == true {
                format!(" compare {}", sample())
            } else {
                String::new()
            }
        ),
        other => other.to_string(),
    }
}

/// Lays rows out in columns as wide as their widest cell; `right` says which columns are
/// right-aligned (numbers). The last column is not padded.
fn table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let width = widths.get(i).copied().unwrap_or(0);
            if right.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>width$}");
            } else if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn print_routes(args: &CtlArgs, doc: &Value) -> anyhow::Result<()> {
    if args.json {
        println!("{doc}");
        return Ok(());
    }
    println!("route table version {}", doc["version"]);
    let rows: Vec<Vec<String>> = doc["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let prefixes: Vec<&str> = r["prefixes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            vec![
                s(&r["namespace"]).to_string(),
                s(&r["target"]).to_string(),
                mode_label(r),
                s(&r["changed_at"]).to_string(),
                prefixes.join(","),
                s(&r["reason"]).to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAMESPACE",
                "TARGET",
                "MODE",
                "CHANGED AT",
                "PREFIXES",
                "REASON"
            ],
            &[],
            &rows
        )
    );
    Ok(())
}

/// The `ctl endpoints` table: one row per endpoint; EVENTS lists the counts that are not 0.
fn endpoints_table(doc: &Value) -> String {
    let rows: Vec<Vec<String>> = doc["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let state = match e["up"].as_bool() {
                Some(true) => "up",
                Some(false) => "down",
                None => "unchecked",
            };
            let events: Vec<String> = e["events"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(event, n)| format!("{event}={n}"))
                .collect();
            let or_dash = |text: &str| {
                if text.is_empty() {
                    "-".to_string()
                } else {
                    text.to_string()
                }
            };
            vec![
                s(&e["name"]).to_string(),
                s(&e["kind"]).to_string(),
                state.to_string(),
                if e["in_use"] == true { "yes" } else { "no" }.to_string(),
                or_dash(s(&e["primary"])),
                or_dash(s(&e["checked_at"])),
                or_dash(&events.join(" ")),
                s(&e["description"]).to_string(),
                or_dash(s(&e["last_error"])),
            ]
        })
        .collect();
    table(
        &[
            "ENDPOINT",
            "KIND",
            "STATE",
            "IN USE",
            "PRIMARY",
            "CHECKED AT",
            "EVENTS",
            "WHERE",
            "LAST ERROR",
        ],
        &[],
        &rows,
    )
}

/// `turnout ctl shadow`.
async fn run_shadow(args: &CtlArgs, shadow: ShadowArgs) -> anyhow::Result<()> {
    if shadow.mismatches {
        return print_mismatches(args, &shadow).await;
    }
    if let Some(namespace) = &shadow.reset {
        let body = namespace
            .as_ref()
            .map(|ns| serde_json::json!({ "namespace": ns }));
        let doc = call(args, Method::POST, "/v1/shadow/reset", body, None).await?;
        if args.json {
            println!("{doc}");
        } else {
            match namespace {
                Some(ns) => println!("shadow counts of {ns} reset"),
                None => println!("shadow counts of every namespace reset"),
            }
            print!("{}", shadow_table(&doc, shadow.all));
        }
        return Ok(());
    }
    if args.json || shadow.once {
        let doc = call(args, Method::GET, "/v1/shadow", None, None).await?;
        if args.json {
            println!("{doc}");
        } else {
            print!("{}", shadow_table(&doc, shadow.all));
        }
        return Ok(());
    }
    live(args, &shadow).await
}

/// The live view: the table again every `--interval` until Ctrl-C, the screen cleared
/// between refreshes when stdout is a terminal (frames one after the other otherwise).
async fn live(args: &CtlArgs, shadow: &ShadowArgs) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut first = true;
    loop {
        let fetched = tokio::select! {
            fetched = call(args, Method::GET, "/v1/shadow", None, None) => fetched,
            _ = &mut stop => return Ok(()),
        };
        let body = match fetched {
            Ok(doc) => shadow_table(&doc, shadow.all),
            // The first failure is the answer; later ones (a restart of turnout, say) are
            // shown and the view keeps trying.
            Err(e) if first => return Err(e),
            Err(e) => format!("error: {e:#}\n"),
        };
        first = false;
        let mut frame = String::new();
        if terminal {
            frame.push_str("\x1b[H\x1b[2J");
        }
        let _ = writeln!(
            frame,
            "turnout shadow report from {} at {}, every {}; Ctrl-C to stop\n",
            args.admin,
            humantime::format_rfc3339_seconds(SystemTime::now()),
            humantime::format_duration(shadow.interval)
        );
        frame.push_str(&body);
        if !terminal {
            frame.push('\n');
        }
        let mut out = std::io::stdout().lock();
        out.write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
        drop(out);
        tokio::select! {
            () = tokio::time::sleep(shadow.interval) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

/// The `GET /v1/shadow` document as a table; direct namespaces with nothing counted are
/// left out unless `all`.
fn shadow_table(doc: &Value, all: bool) -> String {
    const COUNTS: [&str; 5] = ["match", "mismatch", "shadow_error", "dropped", "mirrored"];
    let mut hidden = 0;
    let mut rows = Vec::new();
    for r in doc["namespaces"].as_array().into_iter().flatten() {
        let counts: Vec<u64> = COUNTS
            .iter()
            .map(|c| r["counts"][c].as_u64().unwrap_or(0))
            .collect();
        let mode = s(&r["mode"]);
        if !all && (mode.is_empty() || mode == "direct") && counts.iter().all(|&c| c == 0) {
            hidden += 1;
            continue;
        }
        let mut row = vec![
            s(&r["namespace"]).to_string(),
            s(&r["target"]).to_string(),
            mode_label(r),
        ];
        row.extend(counts.iter().map(u64::to_string));
        row.push(r["compared"].as_u64().unwrap_or(0).to_string());
        row.push(ratio(&r["match_ratio"]));
        row.push(s(&r["since"]).to_string());
        rows.push(row);
    }
    let mut out = if rows.is_empty() {
        "no namespace is in shadow or dual-write mode or has shadow counts\n".to_string()
    } else {
        table(
            &[
                "NAMESPACE",
                "TARGET",
                "MODE",
                "MATCH",
                "MISMATCH",
                "SHADOW ERR",
                "DROPPED",
                "MIRRORED",
                "COMPARED",
                "MATCH RATIO",
                "SINCE",
            ],
            &[
                false, false, false, true, true, true, true, true, true, true, false,
            ],
            &rows,
        )
    };
    if hidden > 0 {
        let _ = writeln!(
            out,
            "({hidden} direct namespace(s) with no counts not shown; --all shows them)"
        );
    }
    if let Some(bytes) = doc["queued_bytes"].as_u64() {
        let _ = writeln!(
            out,
            "queued for shadow and secondary endpoints: {bytes} bytes"
        );
    }
    out
}

/// A match ratio as a percentage (`-` before anything was compared); never rounded up to
/// 100% when something mismatched.
fn ratio(v: &Value) -> String {
    match v.as_f64() {
        None => "-".to_string(),
        Some(r) => {
            let shown = format!("{:.2}%", r * 100.0);
            if r < 1.0 && shown == "100.00%" {
                "99.99%".to_string()
            } else {
                shown
            }
        }
    }
}

/// `turnout ctl shadow --mismatches`.
async fn print_mismatches(args: &CtlArgs, shadow: &ShadowArgs) -> anyhow::Result<()> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(ns) = &shadow.namespace {
        query.append_pair("namespace", ns);
    }
    if let Some(limit) = shadow.limit {
        query.append_pair("limit", &limit.to_string());
    }
    let query = query.finish();
    let path = if query.is_empty() {
        "/v1/shadow/mismatches".to_string()
    } else {
        format!("/v1/shadow/mismatches?{query}")
    };
    let doc = call(args, Method::GET, &path, None, None).await?;
    if args.json {
        println!("{doc}");
        return Ok(());
    }
    let or_dash = |v: &Value| match s(v) {
        "" => "-".to_string(),
        text => text.to_string(),
    };
    let rows: Vec<Vec<String>> = doc["mismatches"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                s(&m["at"]).to_string(),
                s(&m["namespace"]).to_string(),
                s(&m["command"]).to_string(),
                s(&m["outcome"]).to_string(),
                or_dash(&m["key"]),
                or_dash(&m["primary"]),
                or_dash(&m["shadow"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no mismatches logged");
        return Ok(());
    }
    print!(
        "{}",
        table(
            &[
                "TIME",
                "NAMESPACE",
                "COMMAND",
                "OUTCOME",
                "KEY",
                "PRIMARY",
                "SHADOW"
            ],
            &[],
            &rows
        )
    );
    Ok(())
}

/// `turnout ctl cutover`: starts the cutover, then reads its report every [`CUTOVER_POLL`]
/// and shows each step as it ends, until it completed or aborted.
async fn run_cutover(args: &CtlArgs, cutover: &CutoverArgs) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "to": cutover.to,
        "fence": cutover.fence,
        "timeout_ms": u64::try_from(cutover.timeout.as_nanos().div_ceil(1_000_000))
            .unwrap_or(u64::MAX),
        "promote": cutover.promote,
        "reason": cutover.reason,
    });
    let path = format!("/v1/routes/{}/cutover", cutover.namespace);
    let started = call(args, Method::POST, &path, Some(body), None)
        .await
        .map_err(|e| Failure::new(2, format!("{e:#}")))?;
    let Some(id) = started["id"].as_u64() else {
        return Err(Failure::new(
            2,
            format!("the API answered without a cutover id: {started}"),
        )
        .into());
    };
    let report_path = format!("/v1/cutovers/{id}");
    let mut progress = Progress {
        shown: !args.json,
        terminal: !args.json && std::io::stdout().is_terminal(),
        header: false,
        printed: 0,
        bar: false,
        began: Instant::now(),
        timeout: cutover.timeout,
    };
    let bound = tokio::time::Instant::now() + cutover.timeout + CUTOVER_MARGIN;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut last_error = None;
    let report = loop {
        let fetched = tokio::select! {
            fetched = tokio::time::timeout_at(bound, call(args, Method::GET, &report_path, None, None)) => fetched,
            _ = &mut stop => {
                progress.clear();
                return Err(Failure::new(3, format!(
                    "interrupted; cutover {id} goes on in turnout: see GET {report_path}"
                )).into());
            }
        };
        match fetched {
            Ok(Ok(doc)) => {
                progress.show(&doc)?;
                if doc["outcome"] != "running" {
                    break Some(doc);
                }
            }
            // Read again: turnout may have been busy or restarting.
            Ok(Err(e)) => last_error = Some(e),
            Err(_) => break None,
        }
        if tokio::time::Instant::now() >= bound {
            break None;
        }
        tokio::select! {
            () = tokio::time::sleep(CUTOVER_POLL) => {}
            _ = &mut stop => {
                progress.clear();
                return Err(Failure::new(3, format!(
                    "interrupted; cutover {id} goes on in turnout: see GET {report_path}"
                )).into());
            }
        }
    };
    let Some(report) = report else {
        progress.clear();
        let why = match last_error {
            Some(e) => format!("its report could not be read ({e:#})"),
            None => "its report still said running".to_string(),
        };
        return Err(Failure::new(
            3,
            format!(
                "outcome of cutover {id} unknown: {why} {} after its timeout; see GET {report_path}",
                humantime::format_duration(CUTOVER_MARGIN)
            ),
        )
        .into());
    };
    if args.json {
        println!("{report}");
    }
    match s(&report["outcome"]) {
        "completed" => Ok(()),
        "aborted" => Err(Failure::new(
            1,
            format!(
                "cutover {id} aborted at {}; {} still routes to {}",
                s(&report["failed_step"]),
                s(&report["namespace"]),
                s(&report["from"])
            ),
        )
        .into()),
        other => Err(Failure::new(
            3,
            format!("cutover {id} ended with an unknown outcome \"{other}\""),
        )
        .into()),
    }
}

/// What `ctl cutover` has shown of a report so far: plain lines, one per step as it ends,
/// and on a terminal a progress bar for the running step, redrawn in place.
struct Progress {
    /// Anything is shown (not with `--json`).
    shown: bool,
    /// Stdout is a terminal: draw the bar.
    terminal: bool,
    /// The header line is out.
    header: bool,
    /// Steps whose line is out.
    printed: usize,
    /// The bar is on the screen (the cursor at the end of its line).
    bar: bool,
    /// When the cutover was started, for the bar.
    began: Instant,
    /// The cutover's bound, for the bar.
    timeout: Duration,
}

impl Progress {
    /// Shows what is new in `doc`, a `GET /v1/cutovers/{id}` report.
    fn show(&mut self, doc: &Value) -> anyhow::Result<()> {
        if !self.shown {
            return Ok(());
        }
        let mut out = String::new();
        if self.bar {
            out.push_str("\r\x1b[2K");
            self.bar = false;
        }
        if !self.header {
            self.header = true;
            let _ = writeln!(
                out,
                "cutover {} of {}: {} -> {} (fence {}{}, timeout {})",
                doc["id"],
                s(&doc["namespace"]),
                s(&doc["from"]),
                s(&doc["to"]),
                s(&doc["fence"]),
                if doc["promote"] == true {
                    ", promote"
                } else {
                    ""
                },
                humantime::format_duration(self.timeout)
            );
        }
        let steps: &[Value] = doc["steps"].as_array().map_or(&[], Vec::as_slice);
        for step in steps.iter().skip(self.printed) {
            let Some(took) = step["took_ms"].as_f64() else {
                break;
            };
            let status = if step["error"].is_null() {
                "ok"
            } else {
                "failed"
            };
            let _ = writeln!(out, "{:<9} {:<6} {took:>7.1} ms", s(&step["step"]), status);
            self.printed += 1;
        }
        match s(&doc["outcome"]) {
            "running" => {
                if self.terminal {
                    let name = steps.get(self.printed).map_or("...", |st| s(&st["step"]));
                    out.push_str(&bar(name, self.began.elapsed(), self.timeout));
                    self.bar = true;
                }
            }
            "completed" => {
                let total: f64 = steps.iter().filter_map(|st| st["took_ms"].as_f64()).sum();
                let held = doc["held_commands"].as_u64().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "completed in {total:.1} ms (pause {:.1} ms, {held} command{} held)",
                    doc["pause_ms"].as_f64().unwrap_or(0.0),
                    if held == 1 { "" } else { "s" }
                );
            }
            "aborted" => {
                let _ = writeln!(
                    out,
                    "aborted at {}: {}",
                    s(&doc["failed_step"]),
                    s(&doc["error"])
                );
            }
            other => {
                let _ = writeln!(out, "outcome {other}");
            }
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")
    }

    /// Takes the bar off the screen.
    fn clear(&mut self) {
        if self.bar {
            self.bar = false;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(b"\r\x1b[2K").and_then(|()| stdout.flush());
        }
    }
}

/// The progress bar of the running step: time used of the cutover's bound, no newline.
fn bar(step: &str, elapsed: Duration, timeout: Duration) -> String {
    const WIDTH: usize = 30;
    let used = elapsed.min(timeout);
    let filled = if timeout.is_zero() {
        WIDTH
    } else {
        // At most WIDTH: the ratio is at most 1.
        (used.as_secs_f64() / timeout.as_secs_f64() * WIDTH as f64).round() as usize
    };
    format!(
        "{step:<9} [{}{}] {} / {} ms",
        "#".repeat(filled.min(WIDTH)),
        "-".repeat(WIDTH - filled.min(WIDTH)),
        used.as_millis(),
        timeout.as_millis()
    )
}

async fn call(
    args: &CtlArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_version: Option<u64>,
) -> anyhow::Result<Value> {
    let exchange = exchange(args, method, path, body, if_version);
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .with_context(|| {
            format!(
                "admin API at {} did not answer within {CALL_TIMEOUT:?}",
                args.admin
            )
        })?
}

/// One request and its JSON answer; [`call`] bounds it in time.
async fn exchange(
    args: &CtlArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_version: Option<u64>,
) -> anyhow::Result<Value> {
    let stream = tokio::net::TcpStream::connect(&args.admin)
        .await
        .with_context(|| format!("cannot reach the admin API at {}", args.admin))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", &args.admin)
        .header("x-turnout-actor", actor());
    if let Some(token) = &args.token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if let Some(v) = if_version {
        req = req.header("if-match", v.to_string());
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = req
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    let doc: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if !status.is_success() {
        let message = doc["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| doc.to_string());
        return Err(ApiError { status, message }.into());
    }
    Ok(doc)
}

/// Who is calling, for the audit log.
fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
    format!("{user} via turnout ctl")
}
