//! A Sentinel deployment of real processes on free loopback ports: one primary, one replica
//! and three sentinels (`redis-server <conf> --sentinel`), each sentinel with its own
//! generated config file in a temp dir. Everything is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::free_port;
use super::raw::{cmd, try_command, RawClient};
use super::redis_server::RedisServer;
use super::resp::Reply;
use super::wait_until;

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";
/// How many sentinels (a quorum of 2).
const SENTINELS: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the sentinels seeing the replica and each other.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// One `redis-server --sentinel` child. Killed on drop.
pub struct Sentinel {
    port: u16,
    /// The password it requires, if any.
    password: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Sentinel {
    /// Starts a sentinel monitoring `primary` as [`MASTER_NAME`] on a free port; with
    /// `password`, it requires it from clients (and presents it to the other sentinels).
    fn start(primary: &RedisServer, password: Option<&str>) -> Sentinel {
        Sentinel::start_with(primary, password, "")
    }

    /// [`Sentinel::start`] with `extra` config lines appended.
    fn start_with(primary: &RedisServer, password: Option<&str>, extra: &str) -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("turnout-sentinel-")
            .tempdir()
            .expect("temp dir for a sentinel");
        let mut sentinel = Sentinel {
            port: 0,
            password: None,
            dir,
            child: None,
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            sentinel.port = free_port();
            match sentinel.spawn(primary, password, extra) {
                Ok(()) => return sentinel,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start a sentinel: {last_error}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sentinel.log")
    }

    fn spawn(
        &mut self,
        primary: &RedisServer,
        password: Option<&str>,
        extra: &str,
    ) -> Result<(), String> {
        let conf = self.dir.path().join("sentinel.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {log}\n\
             sentinel resolve-hostnames no\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n",
            port = self.port,
            dir = self.dir.path().display(),
            log = self.log_path().display(),
            primary = primary.port(),
        );
        if let Some(password) = password {
            text.push_str(&format!(
                "requirepass {password}\nsentinel sentinel-pass {password}\n"
            ));
        }
        text.push_str(extra);
        self.password = password.map(str::to_string);
        std::fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))?;
        let mut child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server --sentinel: {e}"))?;
        let pid = child.id();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err(format!(
                    "sentinel on port {} exited with {status}: {log}",
                    self.port
                ));
            }
            let info = self.command(&["INFO", "server"]);
            if let Ok(reply) = info {
                let text = reply.bulk_text().unwrap_or_default();
                if text.contains(&format!("process_id:{pid}\r")) {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("sentinel on port {} did not answer", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One command to this sentinel (after `AUTH` when it requires a password).
    pub fn command(&self, args: &[&str]) -> Result<Reply, String> {
        let timeout = Duration::from_secs(2);
        let Some(password) = &self.password else {
            return try_command(&self.addr(), args, timeout);
        };
        let mut client =
            RawClient::try_connect(&self.addr(), timeout).map_err(|e| e.to_string())?;
        client
            .try_send(&cmd(&["AUTH", password]))
            .map_err(|e| e.to_string())?;
        match client.read_reply_within(timeout) {
            Ok(Reply::Simple(ok)) if ok == "OK" => {}
            other => return Err(format!("AUTH: {other:?}")),
        }
        client.try_send(&cmd(args)).map_err(|e| e.to_string())?;
        client
            .read_reply_within(timeout)
            .map_err(|e| format!("{e:?}"))
    }

    /// How many entries `SENTINEL <what> mymaster` lists.
    fn count(&self, what: &str) -> usize {
        match self.command(&["SENTINEL", what, MASTER_NAME]) {
            Ok(Reply::Array(Some(items))) => items.len(),
            _ => 0,
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One primary, one replica, three sentinels.
pub struct SentinelSet {
    // Field order is drop order: sentinels first, so they never fail over while servers stop.
    sentinels: Vec<Sentinel>,
    /// The two data servers: `[0]` starts as the primary, `[1]` as its replica.
    servers: Vec<RedisServer>,
}

impl SentinelSet {
    /// Starts everything and waits (bounded) until every sentinel sees the replica and the
    /// two other sentinels.
    pub fn start() -> SentinelSet {
        SentinelSet::start_with_password(None)
    }

    /// Like [`SentinelSet::start`], with sentinels that require `password` (`requirepass`).
    pub fn start_with_password(password: Option<&str>) -> SentinelSet {
        let primary = RedisServer::start();
        let replica = RedisServer::start();
        replica.replicaof(&primary);
        let sentinels: Vec<Sentinel> = (0..SENTINELS)
            .map(|_| Sentinel::start(&primary, password))
            .collect();
        let set = SentinelSet {
            sentinels,
            servers: vec![primary, replica],
        };
        let ready = wait_until(DISCOVERY_TIMEOUT, Duration::from_millis(100), || {
            set.sentinels
                .iter()
                .all(|s| s.count("REPLICAS") == 1 && s.count("SENTINELS") == SENTINELS - 1)
        });
        assert!(
            ready,
            "sentinels did not discover each other and the replica: {}",
            set.logs()
        );
        set
    }

    /// The sentinels' addresses as a TOML array.
    pub fn sentinels_toml(&self) -> String {
        let quoted: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"{}\"", s.addr()))
            .collect();
        format!("[{}]", quoted.join(", "))
    }

    /// The sentinels.
    pub fn sentinels(&self) -> &[Sentinel] {
        &self.sentinels
    }

    /// Kills sentinel `i` (SIGKILL).
    pub fn kill_sentinel(&mut self, i: usize) {
        if let Some(mut child) = self.sentinels[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The primary's address as the first answering sentinel names it.
    pub fn master_addr(&self) -> Option<String> {
        self.sentinels.iter().find_map(|s| {
            match s.command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]) {
                Ok(Reply::Array(Some(items))) if items.len() == 2 => Some(format!(
                    "{}:{}",
                    items[0].bulk_text()?,
                    items[1].bulk_text()?
                )),
                _ => None,
            }
        })
    }

    /// The data server at `addr`.
    pub fn server(&self, addr: &str) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("no data server at {addr}"))
    }

    /// The data server that is not at `addr`.
    pub fn other(&self, addr: &str) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.addr() != addr)
            .unwrap_or_else(|| panic!("no data server besides {addr}"))
    }

    /// Kills the data server at `addr` (SIGKILL).
    pub fn kill_server(&mut self, addr: &str) {
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("no data server at {addr}"));
        server.kill();
    }

    /// Waits (bounded) until the sentinels name a primary other than `old`; returns it.
    pub fn wait_new_master(&self, old: &str, timeout: Duration) -> String {
        let mut found = None;
        let switched = wait_until(timeout, Duration::from_millis(50), || {
            found = self.master_addr().filter(|a| a != old);
            found.is_some()
        });
        assert!(
            switched,
            "sentinels still name {old} after {timeout:?}: {}",
            self.logs()
        );
        found.unwrap_or_default()
    }

    /// Asks the sentinels for a failover (`SENTINEL FAILOVER`, no server killed) and waits
    /// (bounded) until they name the new primary and the old one reports itself a replica;
    /// returns (old, new).
    pub fn failover(&self) -> (String, String) {
        let old = self.master_addr().expect("a primary before the failover");
        let reply = self.sentinels[0]
            .command(&["SENTINEL", "FAILOVER", MASTER_NAME])
            .expect("SENTINEL FAILOVER");
        assert_eq!(reply, Reply::Simple("OK".to_string()), "SENTINEL FAILOVER");
        let new = self.wait_new_master(&old, DISCOVERY_TIMEOUT);
        let demoted = wait_until(DISCOVERY_TIMEOUT, Duration::from_millis(50), || {
            matches!(self.server(&old).command(&["ROLE"]), Reply::Array(Some(items))
                if items.first().and_then(Reply::bulk_text).as_deref() == Some("slave"))
        });
        assert!(demoted, "{old} still is no replica: {}", self.logs());
        (old, new)
    }

    /// A sentinel that keeps naming `stale` (a server that is no longer the primary) as
    /// [`MASTER_NAME`]'s primary: it monitors `stale` as a user that may not subscribe, so it
    /// never hears the other sentinels' hello messages (the only way it would learn of the
    /// failover), and knowing no other sentinel (quorum 2) and with a long down-after it never
    /// fails over itself. Creates that user on every data server.
    pub fn stale_sentinel(&self, stale: &str) -> Sentinel {
        for server in &self.servers {
            let reply = server.command(&[
                "ACL",
                "SETUSER",
                "blind",
                "on",
                ">blind-pw",
                "~*",
                "&*",
                "+@all",
                "-subscribe",
                "-psubscribe",
                "-ssubscribe",
            ]);
            assert_eq!(reply, Reply::Simple("OK".to_string()), "ACL SETUSER");
        }
        // Knowing no other sentinel, it can never reach its quorum of 2 either.
        let extra = [
            format!("sentinel down-after-milliseconds {MASTER_NAME} 600000"),
            format!("sentinel auth-user {MASTER_NAME} blind"),
            format!("sentinel auth-pass {MASTER_NAME} blind-pw"),
        ]
        .join("\n")
            + "\n";
        let sentinel = Sentinel::start_with(self.server(stale), None, &extra);
        let named = wait_until(DISCOVERY_TIMEOUT, Duration::from_millis(50), || {
            matches!(
                sentinel.command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]),
                Ok(Reply::Array(Some(items))) if items.len() == 2
            )
        });
        assert!(named, "the stale sentinel names no primary");
        sentinel
    }

    /// Every sentinel's log, for failure messages.
    pub fn logs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| {
                format!(
                    "--- sentinel {} ---\n{}",
                    s.addr(),
                    std::fs::read_to_string(s.log_path()).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
