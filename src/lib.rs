//! turnout: a RESP-aware sidecar proxy for zero-downtime Redis endpoint cutover.
//!
//! Applications connect to turnout once. It routes every command by key namespace to the
//! legacy or the new endpoint, and operators move one namespace at a time through an admin
//! HTTP API, without restarting anything.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, its validation, secrets.
//! - [`resp`]: cutting requests and replies out of byte streams, without copying.
//! - [`command`]: the command table (generated from Redis), key extraction, policies.
//! - [`route`]: namespaces, the versioned route table snapshot, serialized route changes.
//! - [`session`]: one client connection: dispatch, reply ordering, connection state.
//! - [`upstream`]: opening endpoint connections: standalone, Sentinel, cluster; TLS; AUTH;
//!   shared (multiplexed) connections for sessions without connection state, endpoint health.
//! - [`stream`]: the byte streams sessions read and write (TCP, TLS, in-process pipes).
//! - [`tls`]: TLS files and rustls configs, both ways (to endpoints, from clients).
//! - [`health`]: periodic endpoint health checks.
//! - [`admin`]: the admin HTTP API.
//! - [`state`]: route persistence across restarts.
//! - [`metrics`]: metric names, per-command counters, the Prometheus text.
//! - [`server`]: start-up, the client listener, graceful shutdown.
//! - [`shutdown`]: the shutdown signal.
//! - [`ctl`]: `turnout ctl`, a client of the admin API.
//! - [`demo`]: `turnout demo`, a local two-Redis playground.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod command;
pub mod config;
pub mod ctl;
pub mod cutover;
pub mod demo;
pub mod health;
pub mod metrics;
pub mod resp;
pub mod route;
pub mod server;
pub mod session;
pub mod shadow;
pub mod shutdown;
pub mod state;
pub mod stream;
pub mod tls;
pub mod upstream;
