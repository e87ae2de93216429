//! A real Redis Cluster: N `redis-server --cluster-enabled yes` children on free loopback
//! ports, joined with `redis-cli --cluster create`, killed on drop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::raw::try_command;
use super::redis_server::RedisServer;
use super::wait_until;

/// How long the cluster may take to agree on `cluster_state:ok`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running cluster.
pub struct RedisCluster {
    /// Every node (primaries first as created; roles change after a failover).
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// A primary other than `than` (for moving a slot or pointing a redirect elsewhere).
    pub fn other_primary(&self, than: usize) -> usize {
        self.primaries()
            .into_iter()
            .find(|&p| p != than)
            .expect("another primary")
    }

    /// A turnout config with this cluster as endpoint `cl` and the default route to it.
    pub fn only_endpoint_toml(&self) -> String {
        format!(
            "[endpoints.cl]\ncluster_seeds = {}\n\n[default]\ntarget = \"cl\"\n",
            self.seeds_toml()
        )
    }

    /// Moves `slot` from `from` to `to` the way `redis-cli --cluster reshard` does: IMPORTING on
    /// the target, MIGRATING on the source, keys moved in batches of 10 (short pauses let the
    /// load see `-ASK`), then `SETSLOT NODE` on the target, the source and the others.
    pub fn migrate_slot(&self, slot: u16, from: usize, to: usize) {
        let cluster = self;
        let from_id = cluster.node_id(from);
        let to_id = cluster.node_id(to);
        let mut src = cluster.nodes[from].conn();
        let mut dst = cluster.nodes[to].conn();
        let slot_s = slot.to_string();
        let _: () = redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot_s, "IMPORTING", &from_id])
            .query(&mut dst)
            .expect("IMPORTING");
        let _: () = redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot_s, "MIGRATING", &to_id])
            .query(&mut src)
            .expect("MIGRATING");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "migration did not finish");
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg(&["GETKEYSINSLOT", &slot_s, "10"])
                .query(&mut src)
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let port = cluster.nodes[to].port().to_string();
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg(&["127.0.0.1", &port, "", "0", "5000", "KEYS"])
                .arg(&keys);
            let _: () = migrate.query(&mut src).expect("MIGRATE");
            std::thread::sleep(Duration::from_millis(30));
        }
        let mut order = vec![to, from];
        order.extend((0..cluster.nodes.len()).filter(|&i| i != to && i != from));
        for index in order {
            let _: () = redis::cmd("CLUSTER")
                .arg(&["SETSLOT", &slot_s, "NODE", &to_id])
                .query(&mut cluster.nodes[index].conn())
                .expect("SETSLOT NODE");
        }
    }

    /// `primaries` primaries with `replicas` replicas each, every slot assigned, state ok.
    pub fn start(primaries: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_with_args(primaries, replicas, &[])
    }

    /// [`RedisCluster::start`] with extra `redis-server` arguments for every node.
    pub fn start_with_args(primaries: usize, replicas: usize, extra: &[&str]) -> RedisCluster {
        let total = primaries * (1 + replicas);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            // The bus port is chosen too: the default (port + 10000) may be taken or too high.
            let bus = super::ports::free_port().to_string();
            let mut args = vec![
                "--cluster-port",
                &bus,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                // Keys of healthy primaries stay served while another primary fails over.
                "--cluster-require-full-coverage",
                "no",
            ];
            args.extend_from_slice(extra);
            nodes.push(RedisServer::start_with_args(&args));
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| n.addr()));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli not found: install it with apt-get install -y redis-tools");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let ok = wait_until(READY_TIMEOUT, Duration::from_millis(100), || {
            cluster.nodes.iter().all(|n| cluster_ok(&n.addr()))
        });
        assert!(
            ok,
            "cluster did not reach cluster_state:ok within {READY_TIMEOUT:?}"
        );
        cluster
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

    /// The node serving `key` as a primary (asked with CLUSTER KEYSLOT and CLUSTER SLOTS on
    /// a live node).
    pub fn primary_of(&self, key: &str) -> usize {
        let slot = self.keyslot(key);
        self.primary_of_slot(slot)
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn keyslot(&self, key: &str) -> u16 {
        let mut con = self.any_conn();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .expect("CLUSTER KEYSLOT")
    }

    /// Index in `nodes` of the primary serving `slot`.
    pub fn primary_of_slot(&self, slot: u16) -> usize {
        let mut con = self.any_conn();
        let ranges: Vec<(u16, u16, Vec<redis::Value>)> = {
            let value: redis::Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query(&mut con)
                .expect("CLUSTER SLOTS");
            let redis::Value::Array(items) = value else {
                panic!("CLUSTER SLOTS: {value:?}")
            };
            items
                .into_iter()
                .map(|item| {
                    let redis::Value::Array(mut fields) = item else {
                        panic!("range {item:?}")
                    };
                    let rest = fields.split_off(2);
                    let first: u16 = redis::from_redis_value(&fields[0]).expect("start");
                    let last: u16 = redis::from_redis_value(&fields[1]).expect("end");
                    (first, last, rest)
                })
                .collect()
        };
        for (first, last, rest) in ranges {
            if (first..=last).contains(&slot) {
                let redis::Value::Array(primary) = &rest[0] else {
                    panic!("primary")
                };
                let port: u16 = redis::from_redis_value(&primary[1]).expect("port");
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port() == port)
                    .expect("primary is one of ours");
            }
        }
        panic!("slot {slot} unassigned");
    }

    /// The node id of node `index`.
    pub fn node_id(&self, index: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[index].conn())
            .expect("CLUSTER MYID")
    }

    /// Index in `nodes` of the (first) replica of primary `index`, from its `ROLE`.
    pub fn replica_of(&self, index: usize) -> usize {
        let role: redis::Value = redis::cmd("ROLE")
            .query(&mut self.nodes[index].conn())
            .expect("ROLE");
        let redis::Value::Array(fields) = role else {
            panic!("ROLE: {role:?}")
        };
        let redis::Value::Array(replicas) = &fields[2] else {
            panic!("ROLE replicas: {fields:?}")
        };
        let redis::Value::Array(first) = &replicas[0] else {
            panic!("no replica: {replicas:?}")
        };
        let port: u16 = redis::from_redis_value(&first[1]).expect("replica port");
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("the replica is one of ours")
    }

    /// A connection to the first running node.
    pub fn any_conn(&self) -> redis::Connection {
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a running node");
        node.conn()
    }

    /// Indexes of the running primaries.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running() && role(&self.nodes[i].addr()) == "master")
            .collect()
    }

    /// The value of `key`, read directly on the primary that serves it.
    pub fn get(&self, key: &str) -> Option<String> {
        let node = self.primary_of(key);
        self.nodes[node].get(key)
    }

    /// Waits (bounded) until every running node reports `cluster_state:ok`.
    pub fn wait_ok(&self, timeout: Duration) -> bool {
        wait_until(timeout, Duration::from_millis(100), || {
            self.nodes
                .iter()
                .filter(|n| n.is_running())
                .all(|n| cluster_ok(&n.addr()))
        })
    }
}

fn cluster_ok(addr: &str) -> bool {
    try_command(addr, &["CLUSTER", "INFO"], Duration::from_millis(500))
        .ok()
        .and_then(|r| r.bulk_text())
        .is_some_and(|t| t.contains("cluster_state:ok"))
}

fn role(addr: &str) -> String {
    match try_command(addr, &["ROLE"], Duration::from_millis(500)) {
        Ok(super::resp::Reply::Array(Some(items))) => items
            .first()
            .and_then(|r| r.bulk_text())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Deadline helper for bounded polls.
pub fn deadline(timeout: Duration) -> Instant {
    Instant::now() + timeout
}
