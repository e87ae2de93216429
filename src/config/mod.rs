//! Configuration: the TOML file, its validation, and the secrets it points at.
//!
//! Loading has two stages. [`file`] mirrors the file as written; [`Config::from_toml`] checks it
//! and produces a validated [`Config`] with parsed addresses, durations and defaults applied.
//! Every problem is reported at once, each with its path (`namespaces[2].target: …`).

pub mod auth;
mod file;
pub mod health;
mod namespace;
pub mod shadow;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use file::FileConfig;

/// Default for `[proxy] max_clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Default for `[proxy] max_request_bytes`: Redis's own `proto-max-bulk-len`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 512 * 1024 * 1024;
/// Default for `[proxy] max_buffered_bytes`: bytes buffered per client before turnout stops
/// reading from it (backpressure, not an error).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;
/// Default for `[proxy] multiplex`: sessions without connection state share upstream
/// connections, so unpipelined clients are pipelined together.
pub const DEFAULT_MULTIPLEX: bool = true;
/// Upper bound for `[proxy] shared_connections`.
pub const MAX_SHARED_CONNECTIONS: usize = 64;

/// Upper bound for `[proxy] worker_threads`.
pub const MAX_WORKER_THREADS: usize = 64;

/// Default for `[proxy] worker_threads`: half the CPUs, at least one.
///
/// A sidecar shares its machine with the application it serves. Each worker thread that runs
/// out of work sleeps and is woken again for the next request, and a task woken on another
/// thread costs a cross-thread wake-up: measured on 2 vCPUs (redis-benchmark -c 50 -P 1
/// GET, with Redis and the load generator on the same cores), one worker spent about a third
/// less CPU per request than two and answered no slower. See docs/benchmarks.md.
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, MAX_WORKER_THREADS))
}

/// Default for `[proxy] connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default for `[proxy] shutdown_grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default for `[endpoints.NAME] sentinel_recheck`: how often the sentinels are asked for the
/// primary besides listening for `+switch-master`.
pub const DEFAULT_SENTINEL_RECHECK: Duration = Duration::from_secs(1);
/// At most this many endpoints: a session tracks endpoints in a 64-bit set.
pub const MAX_ENDPOINTS: usize = 64;
/// At most this many namespaces: routes are indexed by a 16-bit id, `default` included.
pub const MAX_NAMESPACES: usize = u16::MAX as usize - 1;
/// Upper bound for `[proxy] max_clients`.
pub const MAX_CLIENTS_LIMIT: usize = 1_000_000;
/// Highest `db` a namespace may name (Redis's `databases` defaults to 16; larger settings are
/// rare, and a session tracks its database in a `u8`).
pub const MAX_DB: u8 = 255;
/// The reserved name of the route for keys outside every namespace.
pub const DEFAULT_ROUTE: &str = "default";

/// Index of an endpoint in [`Config::endpoints`].
pub type EndpointId = usize;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[proxy]`.
    pub proxy: ProxyConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[state] path`.
    pub state_path: PathBuf,
    /// Endpoints, sorted by name; an [`EndpointId`] indexes this.
    pub endpoints: Vec<EndpointConfig>,
    /// Namespaces in file order.
    pub namespaces: Vec<NamespaceConfig>,
    /// Initial target of the `default` route.
    pub default_target: EndpointId,
    /// Keyed commands the command table lacks (`[[commands]]`).
    pub extra_commands: Vec<ExtraCommand>,
    /// The endpoint for Pub/Sub (`[pubsub] endpoint`); `None`: the default route's at
    /// subscription time.
    pub pubsub_endpoint: Option<EndpointId>,
    /// `[shadow]`: bounds of shadow traffic and dual-write.
    pub shadow: shadow::ShadowConfig,
    /// `[health]`: periodic endpoint checks.
    pub health: health::HealthConfig,
}

/// A keyed command from `[[commands]]`, with Redis's legacy key positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraCommand {
    /// Lower-case name.
    pub name: String,
    /// Index of the first key (the command name is 0).
    pub first_key: usize,
    /// Index of the last key; negative counts from the end (-1: the last argument).
    pub last_key: i64,
    /// Distance between keys.
    pub step: usize,
}

/// `[proxy]`, validated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Client-facing listen address.
    pub listen: SocketAddr,
    /// Connections beyond this get `-ERR max number of clients reached`.
    pub max_clients: usize,
    /// Largest single request, in bytes.
    pub max_request_bytes: usize,
    /// Per-client buffered bytes before turnout stops reading from the client.
    pub max_buffered_bytes: usize,
    /// Sessions without connection state share upstream connections (`multiplex`).
    pub multiplex: bool,
    /// Shared upstream connections per endpoint when multiplexing.
    pub shared_connections: usize,
    /// Threads of the async runtime that serves clients and endpoints (one: tokio's
    /// current-thread scheduler; more: its multi-thread scheduler).
    pub worker_threads: usize,
    /// Bound on opening an upstream connection.
    pub connect_timeout: Duration,
    /// Bound on graceful shutdown.
    pub shutdown_grace: Duration,
    /// Credentials clients must present (`[proxy.auth]`); `None`: no authentication.
    pub auth: Option<auth::AuthConfig>,
    /// TLS for clients (`[proxy.tls]`); `None`: plain TCP.
    pub tls: Option<ProxyTls>,
}

/// `[proxy.tls]`, validated: its files were read and the server config built
/// ([`crate::tls::server_config`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyTls {
    /// PEM certificate chain turnout presents to clients.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
}

/// `[admin]`, validated.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin HTTP listen address.
    pub listen: SocketAddr,
    /// Bearer token for mutating calls, when configured.
    pub token: Option<Secret>,
}

/// One endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Its name (`legacy`, `new`, …).
    pub name: String,
    /// How turnout finds the server(s) behind it.
    pub kind: EndpointKind,
    /// What turnout presents to the endpoint (AUTH on every connection), if anything.
    pub credentials: Option<Credentials>,
    /// TLS to the endpoint (`[endpoints.NAME.tls]`); `None`: plain TCP.
    pub tls: Option<TlsSettings>,
    /// Prefix for the keys of every namespace routed here that has none of its own
    /// (`key_prefix`); makes the endpoint single-database.
    pub key_prefix: Option<String>,
}

impl EndpointConfig {
    /// A standalone endpoint at `address`, plain TCP, no credentials.
    pub fn standalone(name: &str, address: &str) -> Self {
        EndpointConfig {
            name: name.to_string(),
            kind: EndpointKind::Standalone {
                address: address.to_string(),
            },
            credentials: None,
            tls: None,
            key_prefix: None,
        }
    }

    /// Where it is, for people: the address, the Sentinel master name, or the cluster seeds.
    pub fn describe(&self) -> String {
        match &self.kind {
            EndpointKind::Standalone { address } => address.clone(),
            EndpointKind::Sentinel {
                sentinels,
                master_name,
                ..
            } => format!(
                "sentinel master '{master_name}' via {}",
                sentinels.join(",")
            ),
            EndpointKind::Cluster { seeds } => format!("cluster via {}", seeds.join(",")),
        }
    }
}

/// How an endpoint is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointKind {
    /// One server at `host:port`, resolved at connect time.
    Standalone {
        /// `host:port`.
        address: String,
    },
    /// The primary that Sentinel names.
    Sentinel {
        /// Sentinel addresses (`host:port`), asked in order.
        sentinels: Vec<String>,
        /// The master name the sentinels monitor.
        master_name: String,
        /// What turnout presents to the sentinels (`sentinel_username`,
        /// `sentinel_password_env`/`_file`), if anything: sentinels have their own.
        sentinel_credentials: Option<Credentials>,
        /// How often the sentinels are asked for the primary besides listening for switches.
        recheck: Duration,
    },
    /// A Redis Cluster, routed by hash slot.
    Cluster {
        /// Nodes asked for the slot map (`host:port`).
        seeds: Vec<String>,
    },
}

/// TLS to an endpoint, as configured. Validation reads the files and builds the client config
/// once ([`crate::tls::client_config`]); connections reuse it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// PEM CA bundle to trust; `None`: the system roots.
    pub ca_file: Option<PathBuf>,
    /// Name to present (SNI) and verify; `None`: the host of the address.
    pub server_name: Option<String>,
    /// PEM client certificate chain, for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Upstream credentials of an endpoint: separate from the clients' (`[proxy.auth]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// ACL user; `None`: `AUTH <password>` (the `default` user).
    pub username: Option<String>,
    /// The password (never logged or shown).
    pub password: Secret,
}

/// One namespace.
#[derive(Debug, Clone)]
pub struct NamespaceConfig {
    /// Its name.
    pub name: String,
    /// Key prefixes that select it (none: every key of `db`).
    pub prefixes: Vec<String>,
    /// The session database it matches (`db`); `None`: every database.
    pub db: Option<u8>,
    /// Prefixes its keys take on single-database endpoints (`key_prefix = { new = "db1:" }`).
    pub key_prefixes: Vec<(EndpointId, String)>,
    /// Initial target.
    pub target: EndpointId,
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself; use only to compare or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `namespaces[2].target`.
    pub path: String,
    /// What.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a value has the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// The file parsed but is not valid; every problem is listed.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

fn display_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

impl ConfigError {
    /// Every problem as one line each, `path: message`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(problems) => problems.iter().map(Problem::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem found.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, &|name| std::env::var(name).ok())
    }

    /// Validates config text; `env` looks up environment variables (injected for tests).
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem found.
    pub fn from_toml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let deserializer = toml::Deserializer::new(text);
        let parsed: FileConfig = serde_ignored::deserialize(deserializer, |path| {
            problems.push(Problem {
                path: toml_path(&path),
                message: "unknown field".to_string(),
            });
        })
        .map_err(|e| ConfigError::Syntax(e.to_string().trim_end().to_string()))?;
        let config = validate(parsed, env, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Looks an endpoint up by name.
    pub fn endpoint_id(&self, name: &str) -> Option<EndpointId> {
        self.endpoints.iter().position(|e| e.name == name)
    }
}

/// Formats a `serde_ignored` path the way the rest of turnout names config paths.
fn toml_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{}]", toml_path(parent), index),
        P::Map { parent, key } => {
            let parent = toml_path(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            toml_path(parent)
        }
    }
}

fn problem(problems: &mut Vec<Problem>, path: impl Into<String>, message: impl Into<String>) {
    problems.push(Problem {
        path: path.into(),
        message: message.into(),
    });
}

fn validate(
    file: FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Config {
    let placeholder: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let proxy = validate_proxy(&file.proxy, env, problems, placeholder);
    let admin = validate_admin(&file.admin, env, problems, placeholder);
    if file.state.path.trim().is_empty() {
        problem(problems, "state.path", "must not be empty");
    }

    let endpoints = validate_endpoints(&file.endpoints, env, problems);
    let ids: HashMap<&str, EndpointId> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    let resolve = |path: String, name: &str, problems: &mut Vec<Problem>| -> EndpointId {
        match ids.get(name) {
            Some(id) => *id,
            None => {
                let known: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
                problem(
                    problems,
                    path,
                    format!("unknown endpoint \"{name}\" (known: {})", known.join(", ")),
                );
                0
            }
        }
    };

    if file.namespaces.len() > MAX_NAMESPACES {
        problem(
            problems,
            "namespaces",
            format!("at most {MAX_NAMESPACES} namespaces are supported"),
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut namespaces = Vec::with_capacity(file.namespaces.len());
    let mut matchers = namespace::Matchers::default();
    for (i, ns) in file.namespaces.iter().enumerate() {
        let path = format!("namespaces[{i}]");
        if ns.name.is_empty() {
            problem(problems, format!("{path}.name"), "must not be empty");
        } else if ns.name == DEFAULT_ROUTE {
            problem(
                problems,
                format!("{path}.name"),
                "\"default\" is reserved for the [default] route",
            );
        } else if let Some(first) = names.insert(ns.name.as_str(), i) {
            problem(
                problems,
                format!("{path}.name"),
                format!(
                    "duplicate namespace \"{}\" (also namespaces[{first}])",
                    ns.name
                ),
            );
        }
        let db = namespace::validate_db(&path, ns.db, problems);
        matchers.check(&path, i, ns, db, problems);
        let mut key_prefixes = Vec::with_capacity(ns.key_prefix.len());
        for (endpoint, prefix) in &ns.key_prefix {
            let kpath = format!("{path}.key_prefix.{endpoint}");
            if prefix.is_empty() {
                problem(problems, &kpath, "must not be empty");
            }
            if let Some(found) = ids.get(endpoint.as_str()).map(|&id| &endpoints[id]) {
                check_cluster_prefix(&kpath, found, prefix, problems);
            }
            let ep = resolve(kpath, endpoint, problems);
            // An unknown endpoint is reported above; standing in for it would only add
            // problems about an endpoint the line never named.
            if ids.contains_key(endpoint.as_str()) {
                key_prefixes.push((ep, prefix.clone()));
            }
        }
        let target = resolve(format!("{path}.target"), &ns.target, problems);
        namespaces.push(NamespaceConfig {
            name: ns.name.clone(),
            prefixes: ns.prefixes.clone(),
            db,
            key_prefixes,
            target,
        });
    }
    namespace::check_key_prefixes(&endpoints, &namespaces, problems);
    let default_target = resolve("default.target".to_string(), &file.default.target, problems);
    let extra_commands = validate_commands(&file.commands, problems);
    let pubsub_endpoint = file
        .pubsub
        .as_ref()
        .map(|p| resolve("pubsub.endpoint".to_string(), &p.endpoint, problems));

    let shadow = shadow::validate(file.shadow.as_ref(), problems);
    let health = health::validate(file.health.as_ref(), proxy.connect_timeout, problems);

    Config {
        shadow,
        health,
        proxy,
        admin,
        state_path: PathBuf::from(&file.state.path),
        endpoints,
        namespaces,
        default_target,
        extra_commands,
        pubsub_endpoint,
    }
}

fn validate_commands(
    commands: &[file::FileCommand],
    problems: &mut Vec<Problem>,
) -> Vec<ExtraCommand> {
    let mut out: Vec<ExtraCommand> = Vec::with_capacity(commands.len());
    for (i, c) in commands.iter().enumerate() {
        let path = format!("commands[{i}]");
        let name = c.name.to_ascii_lowercase();
        if name.is_empty() {
            problem(problems, format!("{path}.name"), "must not be empty");
        } else if crate::command::resolve(name.as_bytes(), None).id != crate::command::UNKNOWN {
            problem(
                problems,
                format!("{path}.name"),
                format!("\"{name}\" is in the command table already"),
            );
        } else if out.iter().any(|o| o.name == name) {
            problem(
                problems,
                format!("{path}.name"),
                format!("duplicate command \"{name}\""),
            );
        }
        if c.first_key < 1 {
            problem(
                problems,
                format!("{path}.first_key"),
                "must be at least 1 (0 is the command name)",
            );
        }
        if c.step < 1 {
            problem(problems, format!("{path}.step"), "must be at least 1");
        }
        if c.last_key >= 0 && c.last_key < c.first_key {
            problem(
                problems,
                format!("{path}.last_key"),
                "must be at least first_key, or negative to count from the end",
            );
        }
        out.push(ExtraCommand {
            name,
            first_key: usize::try_from(c.first_key.max(1)).unwrap_or(1),
            last_key: c.last_key,
            step: usize::try_from(c.step.max(1)).unwrap_or(1),
        });
    }
    out
}

fn validate_proxy(
    p: &file::FileProxy,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
    placeholder: SocketAddr,
) -> ProxyConfig {
    let listen = parse_socket_addr("proxy.listen", &p.listen, problems).unwrap_or(placeholder);
    let positive =
        |path: &str, value: Option<usize>, default: usize, problems: &mut Vec<Problem>| match value
        {
            Some(0) => {
                problem(problems, path, "must be greater than 0");
                default
            }
            Some(v) => v,
            None => default,
        };
    let max_request_bytes = positive(
        "proxy.max_request_bytes",
        p.max_request_bytes,
        DEFAULT_MAX_REQUEST_BYTES,
        problems,
    );
    if max_request_bytes > u32::MAX as usize {
        problem(
            problems,
            "proxy.max_request_bytes",
            format!("must be at most {}", u32::MAX),
        );
    }
    let max_clients = positive(
        "proxy.max_clients",
        p.max_clients,
        DEFAULT_MAX_CLIENTS,
        problems,
    );
    if max_clients > MAX_CLIENTS_LIMIT {
        problem(
            problems,
            "proxy.max_clients",
            format!("must be at most {MAX_CLIENTS_LIMIT}"),
        );
    }
    let worker_threads = positive(
        "proxy.worker_threads",
        p.worker_threads,
        default_worker_threads(),
        problems,
    );
    if worker_threads > MAX_WORKER_THREADS {
        problem(
            problems,
            "proxy.worker_threads",
            format!("must be at most {MAX_WORKER_THREADS}"),
        );
    }
    let worker_threads = worker_threads.min(MAX_WORKER_THREADS);
    // One shared connection per worker thread, unless said otherwise.
    let shared_connections = positive(
        "proxy.shared_connections",
        p.shared_connections,
        worker_threads.min(MAX_SHARED_CONNECTIONS),
        problems,
    );
    if shared_connections > MAX_SHARED_CONNECTIONS {
        problem(
            problems,
            "proxy.shared_connections",
            format!("must be at most {MAX_SHARED_CONNECTIONS}"),
        );
    }
    ProxyConfig {
        listen,
        max_clients: max_clients.min(MAX_CLIENTS_LIMIT),
        max_request_bytes,
        max_buffered_bytes: positive(
            "proxy.max_buffered_bytes",
            p.max_buffered_bytes,
            DEFAULT_MAX_BUFFERED_BYTES,
            problems,
        ),
        multiplex: p.multiplex.unwrap_or(DEFAULT_MULTIPLEX),
        shared_connections: shared_connections.min(MAX_SHARED_CONNECTIONS),
        worker_threads,
        connect_timeout: parse_duration(
            "proxy.connect_timeout",
            p.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
            problems,
        ),
        shutdown_grace: parse_duration(
            "proxy.shutdown_grace",
            p.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
            problems,
        ),
        auth: p
            .auth
            .as_ref()
            .and_then(|a| auth::validate(a, env, problems)),
        tls: p.tls.as_ref().and_then(|t| validate_proxy_tls(t, problems)),
    }
}

/// `[proxy.tls]`: both files must exist, parse and belong together (every unusable file is
/// reported).
fn validate_proxy_tls(t: &file::FileProxyTls, problems: &mut Vec<Problem>) -> Option<ProxyTls> {
    let mut ok = true;
    for (key, value) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
        if value.trim().is_empty() {
            problem(problems, format!("proxy.tls.{key}"), "must not be empty");
            ok = false;
        }
    }
    let settings = ProxyTls {
        cert_file: PathBuf::from(&t.cert_file),
        key_file: PathBuf::from(&t.key_file),
    };
    if !ok {
        return None;
    }
    let errors = crate::tls::check_files(None, Some(&settings.cert_file), Some(&settings.key_file));
    if !errors.is_empty() {
        for e in errors {
            problem(problems, format!("proxy.tls.{}", e.field), tls_message(&e));
        }
        return None;
    }
    match crate::tls::server_config(&settings) {
        Ok(_) => Some(settings),
        Err(e) => {
            problem(problems, format!("proxy.tls.{}", e.field), tls_message(&e));
            None
        }
    }
}

/// A TLS file problem without its field (the problem's path names it).
fn tls_message(e: &crate::tls::TlsFileError) -> String {
    match &e.path {
        Some(path) => format!("{}: {}", path.display(), e.message),
        None => e.message.clone(),
    }
}

/// `[endpoints.NAME.tls]`: cert and key go together, the name parses, and the files exist
/// and parse (the client config is built now and cached).
fn validate_endpoint_tls(
    path: &str,
    t: &file::FileTls,
    problems: &mut Vec<Problem>,
) -> TlsSettings {
    let before = problems.len();
    if t.cert_file.is_some() != t.key_file.is_some() {
        problem(
            problems,
            format!("{path}.tls"),
            "cert_file and key_file go together (mutual TLS needs both)",
        );
    }
    match t.server_name.as_deref() {
        Some("") => problem(
            problems,
            format!("{path}.tls.server_name"),
            "must not be empty",
        ),
        Some(name) if rustls_pki_types::ServerName::try_from(name).is_err() => problem(
            problems,
            format!("{path}.tls.server_name"),
            format!("\"{name}\" is not a DNS name or an IP address"),
        ),
        _ => {}
    }
    let settings = TlsSettings {
        ca_file: t.ca_file.as_ref().map(PathBuf::from),
        server_name: t.server_name.clone(),
        cert_file: t.cert_file.as_ref().map(PathBuf::from),
        key_file: t.key_file.as_ref().map(PathBuf::from),
    };
    for e in crate::tls::check_files(
        settings.ca_file.as_deref(),
        settings.cert_file.as_deref(),
        settings.key_file.as_deref(),
    ) {
        problem(problems, format!("{path}.tls.{}", e.field), tls_message(&e));
    }
    if problems.len() == before {
        if let Err(e) = crate::tls::client_config(&settings) {
            problem(problems, format!("{path}.tls.{}", e.field), tls_message(&e));
        }
    }
    settings
}

fn validate_admin(
    a: &file::FileAdmin,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
    placeholder: SocketAddr,
) -> AdminConfig {
    let listen = parse_socket_addr("admin.listen", &a.listen, problems);
    let token = match &a.token_env {
        None => None,
        Some(var) => match env(var) {
            Some(value) if !value.is_empty() => Some(Secret::new(value)),
            _ => {
                problem(
                    problems,
                    "admin.token_env",
                    format!("environment variable {var} is not set or empty"),
                );
                None
            }
        },
    };
    if let Some(addr) = listen {
        if !addr.ip().is_loopback() && a.token_env.is_none() {
            problem(
                problems,
                "admin.listen",
                format!("{addr} is not a loopback address; set admin.token_env so that mutating calls need a token"),
            );
        }
    }
    AdminConfig {
        listen: listen.unwrap_or(placeholder),
        token,
    }
}

fn validate_endpoints(
    file: &BTreeMap<String, file::FileEndpoint>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Vec<EndpointConfig> {
    if file.is_empty() {
        problem(problems, "endpoints", "at least one endpoint is required");
    }
    if file.len() > MAX_ENDPOINTS {
        problem(
            problems,
            "endpoints",
            format!("at most {MAX_ENDPOINTS} endpoints are supported"),
        );
    }
    let mut out = Vec::with_capacity(file.len());
    for (name, ep) in file {
        let path = format!("endpoints.{name}");
        if name == DEFAULT_ROUTE {
            problem(problems, &path, "\"default\" cannot name an endpoint");
        }
        let kind = endpoint_kind(&path, ep, env, problems);
        let tls = ep
            .tls
            .as_ref()
            .map(|t| validate_endpoint_tls(&path, t, problems));
        let credentials = match (&ep.username, &ep.password_env, &ep.password_file) {
            (None, None, None) => None,
            (username, password_env, password_file) => {
                match auth::read_password(password_env.as_deref(), password_file.as_deref(), env) {
                    Ok(p) if p.is_empty() => {
                        problem(problems, &path, "the password is empty");
                        None
                    }
                    Ok(p) => Some(Credentials {
                        username: username.clone(),
                        password: Secret::new(p),
                    }),
                    Err(message) => {
                        problem(problems, &path, message);
                        None
                    }
                }
            }
        };
        if ep.username.as_deref() == Some("") {
            problem(problems, format!("{path}.username"), "must not be empty");
        }
        if ep.key_prefix.as_deref() == Some("") {
            problem(
                problems,
                format!("{path}.key_prefix"),
                "must not be empty (leave it out for no prefix)",
            );
        }
        let endpoint = EndpointConfig {
            name: name.clone(),
            kind,
            credentials,
            tls,
            key_prefix: ep.key_prefix.clone().filter(|p| !p.is_empty()),
        };
        if let Some(prefix) = &endpoint.key_prefix {
            check_cluster_prefix(&format!("{path}.key_prefix"), &endpoint, prefix, problems);
        }
        out.push(endpoint);
    }
    out
}

/// A key prefix on a cluster endpoint must not hold `{` or `}`: a prefix with a hash tag (or
/// half of one) would change the slot of every key it is put before, so keys that share a
/// slot through their own `{tag}` would no longer, and multi-key commands would fail.
fn check_cluster_prefix(
    path: &str,
    endpoint: &EndpointConfig,
    prefix: &str,
    problems: &mut Vec<Problem>,
) {
    if matches!(endpoint.kind, EndpointKind::Cluster { .. }) && prefix.contains(['{', '}']) {
        problem(
            problems,
            path,
            format!(
                "must not contain '{{' or '}}': endpoint \"{}\" is a cluster, and a brace in the prefix would change the hash slot of every key",
                endpoint.name
            ),
        );
    }
}

/// An endpoint's kind: exactly one of `address`, `sentinels` (with `master_name`) and
/// `cluster_seeds`.
fn endpoint_kind(
    path: &str,
    ep: &file::FileEndpoint,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> EndpointKind {
    let addresses = |key: &str, list: &[String], problems: &mut Vec<Problem>| {
        if list.is_empty() {
            problem(
                problems,
                format!("{path}.{key}"),
                "must list at least one host:port",
            );
        }
        for (i, address) in list.iter().enumerate() {
            if let Err(message) = check_host_port(address) {
                problem(problems, format!("{path}.{key}[{i}]"), message);
            }
        }
    };
    if ep.sentinels.is_none() {
        let sentinel_only = [
            ("sentinel_recheck", ep.sentinel_recheck.is_some()),
            ("sentinel_username", ep.sentinel_username.is_some()),
            ("sentinel_password_env", ep.sentinel_password_env.is_some()),
            (
                "sentinel_password_file",
                ep.sentinel_password_file.is_some(),
            ),
        ];
        for (key, _) in sentinel_only.iter().filter(|(_, set)| *set) {
            problem(
                problems,
                format!("{path}.{key}"),
                "only goes with sentinels",
            );
        }
    }
    match (&ep.address, &ep.sentinels, &ep.cluster_seeds) {
        (Some(address), None, None) => {
            if let Err(message) = check_host_port(address) {
                problem(problems, format!("{path}.address"), message);
            }
            if ep.master_name.is_some() {
                problem(
                    problems,
                    format!("{path}.master_name"),
                    "only goes with sentinels",
                );
            }
            EndpointKind::Standalone {
                address: address.clone(),
            }
        }
        (None, Some(sentinels), None) => {
            addresses("sentinels", sentinels, problems);
            let master_name = match &ep.master_name {
                Some(name) if !name.is_empty() => name.clone(),
                _ => {
                    problem(
                        problems,
                        format!("{path}.master_name"),
                        "a Sentinel endpoint needs the master name its sentinels monitor",
                    );
                    String::new()
                }
            };
            EndpointKind::Sentinel {
                sentinels: sentinels.clone(),
                master_name,
                sentinel_credentials: sentinel_credentials(path, ep, env, problems),
                recheck: parse_duration(
                    &format!("{path}.sentinel_recheck"),
                    ep.sentinel_recheck.as_deref(),
                    DEFAULT_SENTINEL_RECHECK,
                    problems,
                ),
            }
        }
        (None, None, Some(seeds)) => {
            addresses("cluster_seeds", seeds, problems);
            if ep.master_name.is_some() {
                problem(
                    problems,
                    format!("{path}.master_name"),
                    "only goes with sentinels",
                );
            }
            EndpointKind::Cluster {
                seeds: seeds.clone(),
            }
        }
        _ => {
            problem(
                problems,
                path,
                "give exactly one of address (standalone), sentinels (with master_name) or cluster_seeds",
            );
            EndpointKind::Standalone {
                address: String::new(),
            }
        }
    }
}

/// Checks a `host:port` string (IPv6 hosts in brackets).
fn check_host_port(address: &str) -> Result<(), String> {
    let bad = || format!("\"{address}\" is not host:port");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty()
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .is_empty()
    {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("\"{address}\": port must be 1-65535")),
        Ok(_) => Ok(()),
    }
}

fn parse_socket_addr(path: &str, value: &str, problems: &mut Vec<Problem>) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problem(
                problems,
                path,
                format!("\"{value}\" is not an IP:port address"),
            );
            None
        }
    }
}

/// The credentials turnout presents to a Sentinel endpoint's sentinels, if any.
fn sentinel_credentials(
    path: &str,
    ep: &file::FileEndpoint,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<Credentials> {
    if ep.sentinel_username.as_deref() == Some("") {
        problem(
            problems,
            format!("{path}.sentinel_username"),
            "must not be empty",
        );
    }
    let (env_var, file) = (&ep.sentinel_password_env, &ep.sentinel_password_file);
    if env_var.is_none() && file.is_none() {
        if ep.sentinel_username.is_some() {
            problem(
                problems,
                path,
                "sentinel_username needs sentinel_password_env or sentinel_password_file",
            );
        }
        return None;
    }
    match auth::read_password(env_var.as_deref(), file.as_deref(), env) {
        Ok(p) if p.is_empty() => {
            problem(problems, path, "the sentinel password is empty");
            None
        }
        Ok(p) => Some(Credentials {
            username: ep.sentinel_username.clone(),
            password: Secret::new(p),
        }),
        Err(message) => {
            problem(
                problems,
                path,
                format!(
                    "sentinel credentials: {}",
                    message.replace("password_", "sentinel_password_")
                ),
            );
            None
        }
    }
}

/// Longest duration any setting accepts (timeouts, intervals, grace periods, tolerances).
/// Far beyond any useful value, and small enough that adding it to an instant can never
/// overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Parses a duration setting: above zero and at most [`MAX_DURATION`].
fn parse_duration(
    path: &str,
    value: Option<&str>,
    default: Duration,
    problems: &mut Vec<Problem>,
) -> Duration {
    match value {
        None => default,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                problem(problems, path, "must be greater than 0");
                default
            }
            Ok(d) if d > MAX_DURATION => {
                problem(
                    problems,
                    path,
                    format!(
                        "must be at most {}",
                        humantime::format_duration(MAX_DURATION)
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                problem(
                    problems,
                    path,
                    format!("\"{text}\" is not a duration like \"500ms\" or \"2s\": {e}"),
                );
                default
            }
        },
    }
}

#[cfg(test)]
pub(crate) mod tests;
