//! A `turnout run` child process with a generated config on free ports.
//!
//! The builder takes the config body (`[endpoints.*]`, `[[namespaces]]`, `[default]`); the harness
//! adds `[proxy]`, `[admin]` and `[state]` with free loopback ports and a state file in the
//! instance's temp dir. Each start's stderr goes to its own file there, printed when a test
//! panics.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http::{self, HttpResponse};
use super::ports::free_port;
use super::raw::RawClient;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Env vars a developer's shell may carry that would change turnout's or ctl's behaviour.
const SCRUBBED_ENV: [&str; 3] = ["RUST_LOG", "TURNOUT_ADMIN", "TURNOUT_ADMIN_TOKEN"];

/// The turnout binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_turnout")
}

/// Builds a [`Turnout`].
#[derive(Clone)]
pub struct TurnoutBuilder {
    body: String,
    proxy_options: Vec<String>,
    admin_options: Vec<String>,
    env: Vec<(String, String)>,
    state_contents: Option<String>,
    proxy_listen: Option<String>,
}

impl TurnoutBuilder {
    /// Adds a line to `[proxy]`, e.g. `connect_timeout = "1s"`.
    pub fn proxy_option(mut self, line: &str) -> Self {
        self.proxy_options.push(line.to_string());
        self
    }

    /// Adds a line to `[admin]`, e.g. `token_env = "X"`.
    pub fn admin_option(mut self, line: &str) -> Self {
        self.admin_options.push(line.to_string());
        self
    }

    /// Sets an environment variable on the turnout process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Writes this content to the state file before the first start.
    pub fn state_contents(mut self, contents: &str) -> Self {
        self.state_contents = Some(contents.to_string());
        self
    }

    /// Uses this proxy listen address instead of a free port (for failure tests).
    pub fn proxy_listen(mut self, addr: &str) -> Self {
        self.proxy_listen = Some(addr.to_string());
        self
    }

    /// Starts turnout and waits until the proxy accepts and `/healthz` is 200.
    pub fn start(self) -> Turnout {
        let mut turnout = Turnout::prepare(self);
        let mut last = String::new();
        for _ in 0..3 {
            turnout.pick_ports();
            turnout.write_config();
            match turnout.spawn_and_wait() {
                Ok(()) => return turnout,
                Err(e) => {
                    let log = turnout.log().to_lowercase();
                    last = e;
                    // Someone took one of the free ports in the meantime: pick others.
                    if !(log.contains("in use") || log.contains("addrinuse")) {
                        break;
                    }
                }
            }
        }
        panic!(
            "turnout did not start: {last}\n--- turnout stderr ---\n{}",
            turnout.log()
        );
    }

    /// Starts turnout expecting it to exit on its own (bad config, corrupt state, ...).
    pub fn start_expect_failure(self) -> FailedStart {
        let mut turnout = Turnout::prepare(self);
        turnout.pick_ports();
        turnout.write_config();
        turnout.spawn();
        let status = turnout.wait_exit(EXIT_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "turnout kept running although start-up should fail\n--- stderr ---\n{}",
                turnout.log()
            )
        });
        FailedStart {
            status,
            stderr: turnout.log(),
            stdout: std::fs::read_to_string(turnout.stdout_path()).unwrap_or_default(),
            turnout,
        }
    }
}

/// The result of [`TurnoutBuilder::start_expect_failure`].
pub struct FailedStart {
    pub status: ExitStatus,
    pub stderr: String,
    pub stdout: String,
    /// Kept so the temp dir (config, state file) lives as long as the test looks at it.
    pub turnout: Turnout,
}

/// A running (or stopped) `turnout run` child. Killed on drop.
pub struct Turnout {
    dir: tempfile::TempDir,
    opts: TurnoutBuilder,
    proxy_port: u16,
    admin_port: u16,
    child: Option<Child>,
    generation: usize,
}

impl Turnout {
    /// A builder for the given config body.
    pub fn builder(body: &str) -> TurnoutBuilder {
        TurnoutBuilder {
            body: body.to_string(),
            proxy_options: Vec::new(),
            admin_options: Vec::new(),
            env: Vec::new(),
            state_contents: None,
            proxy_listen: None,
        }
    }

    /// Starts turnout with the given config body and default options.
    pub fn start(body: &str) -> Turnout {
        Turnout::builder(body).start()
    }

    fn prepare(opts: TurnoutBuilder) -> Turnout {
        let dir = tempfile::Builder::new()
            .prefix("turnout-test-")
            .tempdir()
            .expect("temp dir for turnout");
        let turnout = Turnout {
            dir,
            opts,
            proxy_port: 0,
            admin_port: 0,
            child: None,
            generation: 0,
        };
        if let Some(contents) = &turnout.opts.state_contents {
            std::fs::write(turnout.state_path(), contents).expect("write state file");
        }
        turnout
    }

    fn pick_ports(&mut self) {
        self.proxy_port = free_port();
        self.admin_port = free_port();
    }

    /// The config file as written.
    pub fn config_text(&self) -> String {
        let proxy_listen = self
            .opts
            .proxy_listen
            .clone()
            .unwrap_or_else(|| self.proxy_addr());
        format!(
            "[proxy]\nlisten = {}\n{}\n\n[admin]\nlisten = {}\n{}\n\n[state]\npath = {}\n\n{}",
            toml_string(&proxy_listen),
            self.opts.proxy_options.join("\n"),
            toml_string(&self.admin_addr()),
            self.opts.admin_options.join("\n"),
            toml_string(&self.state_path().to_string_lossy()),
            self.opts.body,
        )
    }

    fn write_config(&self) {
        std::fs::write(self.config_path(), self.config_text()).expect("write config");
    }

    /// Path of the generated config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("turnout.toml")
    }

    /// Path of the state file.
    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    /// The instance's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self, generation: usize) -> PathBuf {
        self.dir.path().join(format!("stderr.{generation}.log"))
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("stdout.{}.log", self.generation))
    }

    /// `127.0.0.1:PORT` of the proxy listener.
    pub fn proxy_addr(&self) -> String {
        format!("127.0.0.1:{}", self.proxy_port)
    }

    /// `127.0.0.1:PORT` of the admin listener.
    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// The stderr of the current (or last) run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.generation)).unwrap_or_default()
    }

    /// The stderr of every run so far, oldest first.
    pub fn all_logs(&self) -> String {
        (0..=self.generation)
            .map(|g| {
                format!(
                    "--- run {g} ---\n{}",
                    std::fs::read_to_string(self.log_path(g)).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The process id of the running child.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("turnout is not running").id()
    }

    /// The running child's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "turnout is already running");
        let stderr = File::create(self.log_path(self.generation)).expect("stderr log file");
        let stdout = File::create(self.stdout_path()).expect("stdout log file");
        let mut command = Command::new(binary());
        command
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for key in SCRUBBED_ENV {
            command.env_remove(key);
        }
        command.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(command.spawn().expect("spawn turnout"));
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("turnout exited during start-up with {status}"));
                }
            }
            if self.is_serving() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "proxy {} / admin {} not ready within {READY_TIMEOUT:?}",
                    self.proxy_addr(),
                    self.admin_addr()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn is_serving(&self) -> bool {
        let proxy: std::net::SocketAddr = self.proxy_addr().parse().expect("addr");
        if std::net::TcpStream::connect_timeout(&proxy, Duration::from_millis(200)).is_err() {
            return false;
        }
        matches!(
            http::try_request(&self.admin_addr(), "GET", "/healthz", &[], None),
            Ok(r) if r.status == 200
        )
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    /// Waits for the child to exit on its own, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.send_sigterm();
        match self.wait_exit(EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                self.kill();
                panic!(
                    "turnout did not exit within {EXIT_TIMEOUT:?} of SIGTERM\n{}",
                    self.log()
                );
            }
        }
    }

    /// Kills the child (SIGKILL) if it is running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGTERM (asserting exit code 0) if running, then starts it again with the
    /// same config, ports and state file.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.sigterm();
            assert_eq!(
                status.code(),
                Some(0),
                "turnout exit status after SIGTERM: {status}\n{}",
                self.log()
            );
        }
        self.generation += 1;
        if let Err(e) = self.spawn_and_wait() {
            panic!("turnout did not restart: {e}\n{}", self.all_logs());
        }
    }

    /// A raw RESP connection to the proxy.
    pub fn raw(&self) -> RawClient {
        RawClient::connect(&self.proxy_addr())
    }

    /// A `redis` crate connection to the proxy, database 0.
    pub fn client(&self) -> redis::Connection {
        let url = format!("redis://{}/", self.proxy_addr());
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to turnout {url}: {e}"));
        con.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        con.set_write_timeout(Some(Duration::from_secs(10)))
            .expect("write timeout");
        con
    }

    /// Any admin request.
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> HttpResponse {
        http::request(&self.admin_addr(), method, path, headers, body)
    }

    /// `GET path` on the admin API.
    pub fn admin_get(&self, path: &str) -> HttpResponse {
        self.admin("GET", path, &[], None)
    }

    /// `PUT path` with a JSON body on the admin API.
    pub fn admin_put(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.admin("PUT", path, headers, Some(body))
    }

    /// `GET /v1/routes`, asserting 200, as JSON.
    pub fn routes(&self) -> serde_json::Value {
        let r = self.admin_get("/v1/routes");
        assert_eq!(r.status, 200, "GET /v1/routes: {}", r.text());
        r.json()
    }

    /// The route table version.
    pub fn version(&self) -> u64 {
        self.routes()["version"]
            .as_u64()
            .expect("routes document has a numeric version")
    }

    /// The current target of `namespace` (or `default`).
    pub fn target(&self, namespace: &str) -> String {
        route_of(&self.routes(), namespace)["target"]
            .as_str()
            .expect("route target is a string")
            .to_string()
    }

    /// Flips `namespace` to `target` through the API, asserting 200.
    pub fn flip(&self, namespace: &str, target: &str, reason: &str) -> serde_json::Value {
        let body = serde_json::json!({ "target": target, "reason": reason }).to_string();
        let r = self.admin_put(&format!("/v1/routes/{namespace}"), &body, &[]);
        assert_eq!(r.status, 200, "flip {namespace} -> {target}: {}", r.text());
        r.json()
    }

    /// Runs `turnout ctl --admin ADDR ARGS...`.
    pub fn ctl(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let mut all = vec!["ctl", "--admin"];
        let admin = self.admin_addr();
        all.push(&admin);
        all.extend_from_slice(args);
        run_cli(&all, env)
    }
}

impl Drop for Turnout {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- turnout stderr (config {}) ---\n{}",
                self.config_path().display(),
                self.all_logs()
            );
        }
    }
}

/// The route object of `namespace` in a routes document.
pub fn route_of<'a>(doc: &'a serde_json::Value, namespace: &str) -> &'a serde_json::Value {
    doc["routes"]
        .as_array()
        .expect("routes array")
        .iter()
        .find(|r| r["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no route for {namespace:?} in {doc}"))
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Output of a finished CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The exit code (panics when killed by a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }
}

/// Runs the turnout binary with `args` (bounded to 20 s), env scrubbed of turnout variables
/// and `env` added.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut command = Command::new(binary());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    for key in SCRUBBED_ENV {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("spawn turnout");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "turnout {args:?} did not finish within 20s; stderr: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CliOutput {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}
