//! A real `redis-server` child process on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use super::ports::free_port;
use super::raw::try_command;
use super::resp::Reply;

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A `redis-server` child. Killed on drop.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
}

fn ensure_installed() {
    static CHECK: Once = Once::new();
    CHECK.call_once(|| {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "redis-server not found: install it with apt-get install -y redis-server"
        );
    });
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        RedisServer::start_with_args(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments (kept across restarts),
    /// e.g. `["--databases", "2"]`.
    pub fn start_with_args(extra_args: &[&str]) -> RedisServer {
        ensure_installed();
        let dir = tempfile::Builder::new()
            .prefix("turnout-redis-")
            .tempdir()
            .expect("temp dir for redis-server");
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// The port it listens on (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's own log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--enable-debug-command", "yes"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "redis-server not found: install it with apt-get install -y redis-server ({e})"
                )
            })?;
        let pid = child.id();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err(format!(
                    "redis-server on port {} exited with {status}: {log}",
                    self.port
                ));
            }
            // Make sure it is our process answering, not someone else on the same port.
            let info = try_command(
                &self.addr(),
                &["INFO", "server"],
                Duration::from_millis(500),
            );
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
                return Err(format!(
                    "redis-server on port {} did not answer within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after a bound).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server: a stopped server keeps its connections
    /// open but answers nothing, as behind a network partition.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Kills the server abruptly (SIGKILL), like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (data is not persisted).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("restarting redis-server on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A `redis` crate connection to logical database `db`.
    pub fn conn_db(&self, db: i64) -> redis::Connection {
        let url = format!("redis://127.0.0.1:{}/{db}", self.port);
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to redis {url}: {e}"));
        con.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        con.set_write_timeout(Some(Duration::from_secs(10)))
            .expect("write timeout");
        con
    }

    /// A `redis` crate connection to database 0.
    pub fn conn(&self) -> redis::Connection {
        self.conn_db(0)
    }

    /// `GET key` in database 0, directly on this server.
    pub fn get(&self, key: &str) -> Option<String> {
        self.get_db(0, key)
    }

    /// `GET key` in database `db`, directly on this server.
    pub fn get_db(&self, db: i64, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.conn_db(db))
            .unwrap_or_else(|e| panic!("GET {key} on {}: {e}", self.addr()))
    }

    /// `EXISTS key` in database 0.
    pub fn exists(&self, key: &str) -> bool {
        let n: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("EXISTS {key} on {}: {e}", self.addr()));
        n == 1
    }

    /// For each key, whether it exists in database 0 (pipelined).
    pub fn exists_many(&self, keys: &[String]) -> Vec<bool> {
        let mut con = self.conn();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("EXISTS").arg(key);
            }
            let found: Vec<i64> = pipe
                .query(&mut con)
                .unwrap_or_else(|e| panic!("EXISTS pipeline on {}: {e}", self.addr()));
            out.extend(found.into_iter().map(|n| n == 1));
        }
        out
    }

    /// `DBSIZE` of database 0.
    pub fn dbsize(&self) -> i64 {
        redis::cmd("DBSIZE")
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("DBSIZE on {}: {e}", self.addr()))
    }

    /// `SET key value` directly in database 0.
    pub fn set(&self, key: &str, value: &str) {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("SET {key} on {}: {e}", self.addr()));
    }

    /// Makes this server a replica of `primary` and waits (bounded) for the link to be up.
    pub fn replicaof(&self, primary: &RedisServer) {
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(primary.port())
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("REPLICAOF on {}: {e}", self.addr()));
        let linked = super::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut self.conn())
                .unwrap_or_default();
            info.contains("master_link_status:up")
        });
        assert!(
            linked,
            "replica {} never linked to {}",
            self.addr(),
            primary.addr()
        );
    }

    /// Raw reply to one command sent directly to this server.
    pub fn command(&self, args: &[&str]) -> Reply {
        try_command(&self.addr(), args, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.addr()))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
