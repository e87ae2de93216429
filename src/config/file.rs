//! The config file exactly as written.
//!
//! Unknown keys are errors. They are collected with `serde_ignored` rather than
//! `#[serde(deny_unknown_fields)]`, which stops at the first one: an operator fixing a file
//! wants every problem in one pass. Nothing here is trusted yet; `super::validate` turns it
//! into a [`super::Config`].

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole TOML file.
#[derive(Debug, Deserialize)]
pub struct FileConfig {
    pub proxy: FileProxy,
    pub admin: FileAdmin,
    pub state: FileState,
    pub endpoints: BTreeMap<String, FileEndpoint>,
    #[serde(default)]
    pub namespaces: Vec<FileNamespace>,
    pub default: FileDefault,
    #[serde(default)]
    pub commands: Vec<FileCommand>,
    pub pubsub: Option<FilePubsub>,
    pub shadow: Option<super::shadow::FileShadow>,
    pub health: Option<super::health::FileHealth>,
}

/// `[pubsub]`.
#[derive(Debug, Deserialize)]
pub struct FilePubsub {
    pub endpoint: String,
}

/// `[[commands]]`: a keyed command missing from the command table (a module's, a newer
/// Redis's), with its key positions.
#[derive(Debug, Deserialize)]
pub struct FileCommand {
    pub name: String,
    pub first_key: i64,
    pub last_key: i64,
    #[serde(default = "one")]
    pub step: i64,
}

fn one() -> i64 {
    1
}

/// `[proxy]`.
#[derive(Debug, Deserialize)]
pub struct FileProxy {
    pub listen: String,
    pub max_clients: Option<usize>,
    pub max_request_bytes: Option<usize>,
    pub max_buffered_bytes: Option<usize>,
    pub multiplex: Option<bool>,
    pub shared_connections: Option<usize>,
    pub worker_threads: Option<usize>,
    pub connect_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub auth: Option<super::auth::FileAuth>,
    pub tls: Option<FileProxyTls>,
}

/// `[proxy.tls]`: clients connect to turnout over TLS.
#[derive(Debug, Deserialize)]
pub struct FileProxyTls {
    pub cert_file: String,
    pub key_file: String,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
pub struct FileAdmin {
    pub listen: String,
    pub token_env: Option<String>,
}

/// `[state]`.
#[derive(Debug, Deserialize)]
pub struct FileState {
    pub path: String,
}

/// `[endpoints.NAME]`.
#[derive(Debug, Deserialize)]
pub struct FileEndpoint {
    pub address: Option<String>,
    pub sentinels: Option<Vec<String>>,
    pub master_name: Option<String>,
    pub sentinel_recheck: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password_env: Option<String>,
    pub sentinel_password_file: Option<String>,
    pub cluster_seeds: Option<Vec<String>>,
    pub tls: Option<FileTls>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub key_prefix: Option<String>,
}

/// `[endpoints.NAME.tls]`.
#[derive(Debug, Deserialize)]
pub struct FileTls {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// `[[namespaces]]`.
#[derive(Debug, Deserialize)]
pub struct FileNamespace {
    pub name: String,
    #[serde(default)]
    pub prefixes: Vec<String>,
    pub db: Option<i64>,
    #[serde(default)]
    pub key_prefix: BTreeMap<String, String>,
    pub target: String,
}

/// `[default]`.
#[derive(Debug, Deserialize)]
pub struct FileDefault {
    pub target: String,
}
