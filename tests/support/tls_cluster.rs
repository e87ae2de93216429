//! A real Redis Cluster over TLS with ACL users: N `redis-server --port 0 --tls-port …
//! --tls-cluster yes --tls-replication yes --cluster-enabled yes` children (certificates from
//! [`Pki`]), joined with `redis-cli --tls … --cluster create`, then given two ACL users on
//! every node (`app`, the application's, and `admin`, the harness's) with the `default` user
//! switched off. Killed on drop.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::resp::Reply;
use super::tls::{Pki, TlsClient, TlsRedis, SERVER_NAME};
use super::wait_until;

/// The application's ACL user and its password.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret-7f3e";
/// The harness's own user (checks and setup done directly on the nodes).
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-secret-91c2";

/// How long the cluster may take to agree on `cluster_state:ok`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running TLS + ACL cluster (primaries only).
pub struct TlsCluster {
    /// Every node, in creation order.
    pub nodes: Vec<TlsRedis>,
    pki_client: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
}

impl TlsCluster {
    /// `primaries` primaries, every slot assigned, state ok, ACL users in place.
    pub fn start(pki: &Pki, primaries: usize) -> TlsCluster {
        let mut nodes = Vec::with_capacity(primaries);
        let client_cert = pki.path("client.pem").to_string_lossy().into_owned();
        let client_key = pki.path("client.key").to_string_lossy().into_owned();
        for _ in 0..primaries {
            let bus = super::ports::free_port().to_string();
            nodes.push(TlsRedis::start_with_args(
                pki,
                false,
                &[
                    // The cluster bus always asks the connecting node for a client
                    // certificate; the server certificate is for server auth only.
                    "--tls-client-cert-file",
                    &client_cert,
                    "--tls-client-key-file",
                    &client_key,
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                ],
            ));
        }
        let mut args: Vec<String> = vec!["--tls".into(), "--cacert".into()];
        args.push(pki.path("ca.pem").to_string_lossy().into_owned());
        args.push("--cert".into());
        args.push(pki.path("client.pem").to_string_lossy().into_owned());
        args.push("--key".into());
        args.push(pki.path("client.key").to_string_lossy().into_owned());
        args.extend(["--cluster".into(), "create".into()]);
        args.extend(nodes.iter().map(|n| n.addr()));
        args.extend([
            "--cluster-replicas".into(),
            "0".into(),
            "--cluster-yes".into(),
        ]);
        create(&args, &nodes);
        let cluster = TlsCluster {
            nodes,
            pki_client: pki.client_config("ca.pem", true),
        };
        let ok = wait_until(READY_TIMEOUT, Duration::from_millis(100), || {
            (0..cluster.nodes.len()).all(|i| {
                cluster
                    .try_open(i, None)
                    .and_then(|mut c| c.try_command(&["CLUSTER", "INFO"], Duration::from_secs(1)))
                    .ok()
                    .and_then(|r| r.bulk_text())
                    .is_some_and(|t| t.contains("cluster_state:ok"))
            })
        });
        assert!(
            ok,
            "TLS cluster did not reach cluster_state:ok within {READY_TIMEOUT:?}"
        );
        for i in 0..cluster.nodes.len() {
            let mut c = cluster.try_open(i, None).expect("TLS connect");
            for setuser in [
                &[
                    "ACL",
                    "SETUSER",
                    APP_USER,
                    "on",
                    &format!(">{APP_PASSWORD}"),
                    "~*",
                    "&*",
                    "+@all",
                ][..],
                &[
                    "ACL",
                    "SETUSER",
                    ADMIN_USER,
                    "on",
                    &format!(">{ADMIN_PASSWORD}"),
                    "~*",
                    "&*",
                    "+@all",
                ],
                &["ACL", "SETUSER", "default", "off"],
            ] {
                assert_eq!(
                    c.command(setuser),
                    Reply::Simple("OK".into()),
                    "{setuser:?}"
                );
            }
        }
        cluster
    }

    /// A TLS connection to node `index`, authenticated as `user` (name, password) if given.
    fn try_open(&self, index: usize, user: Option<(&str, &str)>) -> Result<TlsClient, String> {
        let mut c = TlsClient::connect(
            &self.nodes[index].addr(),
            self.pki_client.clone(),
            SERVER_NAME,
        )?;
        if let Some((name, password)) = user {
            let reply = c.try_command(&["AUTH", name, password], Duration::from_secs(5))?;
            if reply != Reply::Simple("OK".into()) {
                return Err(format!("AUTH {name}: {reply:?}"));
            }
        }
        Ok(c)
    }

    /// A TLS connection to node `index` as the harness's admin user.
    pub fn admin(&self, index: usize) -> TlsClient {
        self.try_open(index, Some((ADMIN_USER, ADMIN_PASSWORD)))
            .unwrap_or_else(|e| panic!("admin connection to node {index}: {e}"))
    }

    /// One command on node `index` as admin.
    pub fn command(&self, index: usize, args: &[&str]) -> Reply {
        self.admin(index).command(args)
    }

    /// The seed list for a turnout config: `["127.0.0.1:p1", …]`.
    pub fn seeds_toml(&self) -> String {
        let quoted: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.addr()))
            .collect();
        format!("[{}]", quoted.join(", "))
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn keyslot(&self, key: &str) -> u16 {
        match self.command(0, &["CLUSTER", "KEYSLOT", key]) {
            Reply::Int(slot) => u16::try_from(slot).expect("slot"),
            other => panic!("CLUSTER KEYSLOT: {other:?}"),
        }
    }

    /// Index in `nodes` of the primary serving `slot`, from `CLUSTER SLOTS`.
    pub fn primary_of_slot(&self, slot: u16) -> usize {
        let Reply::Array(Some(ranges)) = self.command(0, &["CLUSTER", "SLOTS"]) else {
            panic!("CLUSTER SLOTS")
        };
        for range in ranges {
            let Reply::Array(Some(fields)) = range else {
                panic!("range")
            };
            let (Reply::Int(first), Reply::Int(last), Reply::Array(Some(primary))) =
                (&fields[0], &fields[1], &fields[2])
            else {
                panic!("range fields: {fields:?}")
            };
            if (*first..=*last).contains(&i64::from(slot)) {
                let Reply::Int(port) = primary[1] else {
                    panic!("port: {primary:?}")
                };
                return self
                    .nodes
                    .iter()
                    .position(|n| i64::from(n.port()) == port)
                    .expect("the primary is one of ours");
            }
        }
        panic!("slot {slot} unassigned");
    }

    /// Index in `nodes` of the primary serving `key`.
    pub fn primary_of(&self, key: &str) -> usize {
        self.primary_of_slot(self.keyslot(key))
    }

    /// The value of `key`, read as admin on the primary that serves it.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.command(self.primary_of(key), &["GET", key]) {
            Reply::Bulk(value) => value.map(|v| String::from_utf8_lossy(&v).into_owned()),
            other => panic!("GET {key}: {other:?}"),
        }
    }

    /// Every key of node `index` (`KEYS *` as admin), sorted.
    pub fn keys(&self, index: usize) -> Vec<String> {
        let Reply::Array(Some(items)) = self.command(index, &["KEYS", "*"]) else {
            panic!("KEYS")
        };
        let mut keys: Vec<String> = items.iter().filter_map(Reply::bulk_text).collect();
        keys.sort();
        keys
    }

    /// Every key of the cluster, sorted.
    pub fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = (0..self.nodes.len()).flat_map(|i| self.keys(i)).collect();
        keys.sort();
        keys
    }
}

/// Runs `redis-cli ARGS` (the cluster creation), bounded by [`READY_TIMEOUT`].
fn create(args: &[String], nodes: &[TlsRedis]) {
    let dir = tempfile::tempdir().expect("temp dir for redis-cli output");
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).expect("redis-cli output file");
    let err = out.try_clone().expect("redis-cli output file");
    let mut child = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("redis-cli not found: install it with apt-get install -y redis-tools");
    let mut status = None;
    let finished = wait_until(READY_TIMEOUT, Duration::from_millis(50), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let output = || {
        let logs: Vec<String> = nodes.iter().map(TlsRedis::log).collect();
        format!(
            "{}\n--- node logs ---\n{}",
            std::fs::read_to_string(&out_path).unwrap_or_default(),
            logs.join("\n---\n")
        )
    };
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "redis-cli --tls --cluster create did not finish within {READY_TIMEOUT:?}: {}",
            output()
        );
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "redis-cli --tls --cluster create failed: {}",
        output()
    );
}
