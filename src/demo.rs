//! `turnout demo`: two local Redis servers and the proxy in front of them.
//!
//! Legacy is a plain `redis-server`; new is a replica of legacy (writable, so a flipped cache
//! can write to it) so that data written before a flip is readable after it. The addresses
//! come from the demo config. Ctrl-C or SIGTERM stops the proxy and both servers.

use crate::config::Config;
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long each redis-server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the demo until Ctrl-C or SIGTERM.
///
/// # Errors
/// `redis-server` is missing (the message says what to install), the config is invalid, or
/// a server does not start.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let redis = find_in_path("redis-server").context(
        "redis-server not found on PATH; install it with:\n    sudo apt-get install -y redis-server redis-tools",
    )?;
    let config = Config::load(config_path)
        .with_context(|| format!("invalid demo config {}", config_path.display()))?;
    let legacy = endpoint(&config, "legacy")?;
    let new = endpoint(&config, "new")?;
    let dir = config
        .state_path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The demo starts from the config every time.
    let _ = std::fs::remove_file(&config.state_path);

    let (legacy_host, legacy_port) = split(&legacy)?;
    let (new_host, new_port) = split(&new)?;
    let mut children = Vec::new();
    children.push(spawn_redis(
        &redis,
        &dir,
        "legacy",
        legacy_host,
        legacy_port,
        None,
    )?);
    children.push(spawn_redis(
        &redis,
        &dir,
        "new",
        new_host,
        new_port,
        Some((legacy_host, legacy_port)),
    )?);
    for address in [&legacy, &new] {
        wait_for_ping(address).await?;
    }
    wait_for_replication(&new).await?;
    print_banner(&config, &legacy, &new);
    let result = crate::server::run_until_signalled(config).await;
    for child in &mut children {
        let _ = child.kill().await;
    }
    eprintln!("demo stopped: proxy and both redis-server processes are down");
    result.map_err(Into::into)
}

fn endpoint(config: &Config, name: &str) -> anyhow::Result<String> {
    match config.endpoints.iter().find(|e| e.name == name) {
        Some(crate::config::EndpointConfig {
            kind: crate::config::EndpointKind::Standalone { address },
            ..
        }) => Ok(address.clone()),
        Some(_) => bail!("the demo's endpoint \"{name}\" must be a standalone address"),
        None => bail!("the demo config needs an endpoint named \"{name}\""),
    }
}

fn split(address: &str) -> anyhow::Result<(&str, &str)> {
    address
        .rsplit_once(':')
        .with_context(|| format!("\"{address}\" is not host:port"))
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn spawn_redis(
    redis: &Path,
    dir: &Path,
    name: &str,
    host: &str,
    port: &str,
    replica_of: Option<(&str, &str)>,
) -> anyhow::Result<Child> {
    let data = dir.join(format!("redis-{name}"));
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let mut cmd = Command::new(redis);
    cmd.args([
        "--bind",
        host,
        "--port",
        port,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        // Sync a fresh replica at once instead of after the default 5 s diskless delay.
        "--repl-diskless-sync",
        "no",
    ])
    .arg("--dir")
    .arg(&data)
    .args(["--logfile", "redis.log"])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    if let Some((h, p)) = replica_of {
        cmd.args(["--replicaof", h, p, "--replica-read-only", "no"]);
    }
    cmd.spawn()
        .with_context(|| format!("cannot start redis-server for {name} on {host}:{port}"))
}

async fn wait_for_ping(address: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match crate::admin::probe_ping(address, Duration::from_millis(500)).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!("redis-server at {address} did not start: {e} (is the port already in use?)")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until the new server's replication link to legacy is up, so data written through
/// the proxy before a flip is readable after it.
async fn wait_for_replication(address: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let mut stream = crate::upstream::connect(address, Duration::from_millis(500)).await?;
        stream
            .write_all(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n")
            .await?;
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await??;
        if String::from_utf8_lossy(&buf[..n]).contains("master_link_status:up") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("new ({address}) did not finish syncing from legacy within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_banner(config: &Config, legacy: &str, new: &str) {
    let proxy = config.proxy.listen;
    let admin = config.admin.listen;
    eprintln!(
        "
turnout demo is up.
  legacy redis   {legacy}
  new redis      {new}  (replica of legacy, writable)
  proxy          {proxy}    ->  redis-cli -h {ph} -p {pp}
  admin API      http://{admin}/v1/routes

Try, in another terminal:
  redis-cli -p {pp} SET web:home '<h1>hello</h1>'
  redis-cli -p {pp} GET web:home
  cargo run --release -- ctl --admin {admin} routes
  cargo run --release -- ctl --admin {admin} flip web-cache new --reason 'cache warmed'
  redis-cli -p {pp} GET web:home             # now served by new (replicated)
  curl -s http://{admin}/metrics | grep turnout_requests_total

Ctrl-C stops the proxy and both servers.
",
        ph = proxy.ip(),
        pp = proxy.port(),
    );
}
