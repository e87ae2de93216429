//! `turnout ctl`: a small client of the admin API for operators and scripts.
//!
//! Human-readable tables by default, the API's own JSON with `--json`.

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::time::Duration;

/// How long one admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Point a namespace at another endpoint, now.
    Flip {
        /// The namespace (or `default`).
        namespace: String,
        /// The endpoint to send it to.
        target: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
        /// Only apply if the table is still at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Show the audit log of route changes.
    History,
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
            if_version,
        } => {
            let body = serde_json::json!({ "target": target, "reason": reason });
            let path = format!("/v1/routes/{namespace}");
            let doc = call(&args, Method::PUT, &path, Some(body), if_version).await?;
            if !args.json {
                println!("{namespace} -> {target}");
            }
            print_routes(&args, &doc)
        }
        CtlCommand::History => {
            let doc = call(&args, Method::GET, "/v1/history", None, None).await?;
            if args.json {
                println!("{doc}");
                return Ok(());
            }
            println!(
                "{:<8} {:<25} {:<16} {:<10} {:<10} {:<24} REASON",
                "VERSION", "AT", "NAMESPACE", "FROM", "TO", "ACTOR"
            );
            for e in doc["entries"].as_array().into_iter().flatten() {
                println!(
                    "{:<8} {:<25} {:<16} {:<10} {:<10} {:<24} {}",
                    e["version"].as_u64().unwrap_or_default(),
                    s(&e["at"]),
                    s(&e["namespace"]),
                    s(&e["from"]),
                    s(&e["to"]),
                    s(&e["actor"]),
                    s(&e["reason"])
                );
            }
            Ok(())
        }
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn print_routes(args: &CtlArgs, doc: &Value) -> anyhow::Result<()> {
    if args.json {
        println!("{doc}");
        return Ok(());
    }
    println!("route table version {}", doc["version"]);
    println!(
        "{:<16} {:<10} {:<8} {:<25} {:<24} REASON",
        "NAMESPACE", "TARGET", "MODE", "CHANGED AT", "PREFIXES"
    );
    for r in doc["routes"].as_array().into_iter().flatten() {
        let prefixes: Vec<&str> = r["prefixes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<16} {:<10} {:<8} {:<25} {:<24} {}",
            s(&r["namespace"]),
            s(&r["target"]),
            s(&r["mode"]),
            s(&r["changed_at"]),
            prefixes.join(","),
            s(&r["reason"])
        );
    }
    Ok(())
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
    if status != StatusCode::OK {
        let message = doc["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| doc.to_string());
        bail!("{status}: {message}");
    }
    Ok(doc)
}

/// Who is calling, for the audit log.
fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
    format!("{user} via turnout ctl")
}
