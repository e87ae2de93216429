//! Cluster endpoints: a namespace routed to a real Redis Cluster through turnout's slot
//! router. Keys land on the primary serving their slot (checked on the nodes directly), hash
//! tags, multi-key commands split by slot and merged with exact replies, CROSSSLOT for the
//! rest, a transaction on one slot, a long pipeline in order; a slot migrated with live keys
//! under load (no client errors, redirects counted); and a primary killed and replaced by its
//! replica.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::cluster::RedisCluster;
use support::{cmd, show, RawClient, Turnout};

fn turnout_for(cluster: &RedisCluster) -> Turnout {
    Turnout::start(&format!(
        r#"[endpoints.cl]
cluster_seeds = {}

[[namespaces]]
name = "cache"
prefixes = ["c:"]
target = "cl"

[default]
target = "cl"
"#,
        cluster.seeds_toml()
    ))
}

fn bulk(value: &str) -> Vec<u8> {
    format!("${}\r\n{value}\r\n", value.len()).into_bytes()
}

/// `turnout_endpoint_events_total{endpoint="cl",event=EVENT}` from `/metrics` (0 if absent).
fn event_count(t: &Turnout, event: &str) -> u64 {
    let text = t.admin_get("/metrics").text();
    text.lines()
        .filter(|l| l.starts_with("turnout_endpoint_events_total"))
        .filter(|l| l.contains("endpoint=\"cl\"") && l.contains(&format!("event=\"{event}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn commands_route_by_slot_split_and_merge() {
    let cluster = RedisCluster::start(3, 0);
    let t = turnout_for(&cluster);
    let mut c = t.raw();

    // Keys on every primary.
    let keys: Vec<String> = (0..30).map(|i| format!("c:key:{i}")).collect();
    for key in &keys {
        c.expect_cmd(&["SET", key, &format!("v-{key}")], b"+OK\r\n");
    }
    let mut owners = std::collections::BTreeSet::new();
    for key in &keys {
        owners.insert(cluster.primary_of(key));
        assert_eq!(
            cluster.get(key),
            Some(format!("v-{key}")),
            "{key} on its primary"
        );
        c.expect_cmd(&["GET", key], &bulk(&format!("v-{key}")));
    }
    assert_eq!(owners.len(), 3, "the keys cover every primary");

    // Hash tags keep keys together; multi-key commands on one slot run as they are.
    c.expect_cmd(&["SADD", "{u1}:a", "x", "y"], b":2\r\n");
    c.expect_cmd(&["SADD", "{u1}:b", "y", "z"], b":2\r\n");
    c.expect_cmd(&["SUNIONSTORE", "{u1}:dst", "{u1}:a", "{u1}:b"], b":3\r\n");
    assert_eq!(cluster.primary_of("{u1}:dst"), cluster.primary_of("u1"));
    // Across slots, Redis's own CROSSSLOT, and nothing is written.
    c.expect_cmd(
        &["SUNIONSTORE", "c:dst", "{u1}:a", "c:other"],
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
    );
    c.expect_cmd(&["EXISTS", "c:dst"], b":0\r\n");

    // MSET/MGET/EXISTS/DEL across slots, split and merged.
    c.expect_cmd(
        &["MSET", "c:m1", "1", "c:m2", "2", "c:m3", "3", "c:m4", "4"],
        b"+OK\r\n",
    );
    for (key, value) in [("c:m1", "1"), ("c:m2", "2"), ("c:m3", "3"), ("c:m4", "4")] {
        assert_eq!(cluster.get(key).as_deref(), Some(value));
    }
    let slots: std::collections::BTreeSet<u16> = ["c:m1", "c:m2", "c:m3", "c:m4"]
        .iter()
        .map(|k| cluster.keyslot(k))
        .collect();
    assert!(slots.len() > 1, "the MSET spans slots");
    c.expect_cmd(
        &["MGET", "c:m4", "c:missing", "c:m1", "c:m3", "c:m2", "c:m1"],
        b"*6\r\n$1\r\n4\r\n$-1\r\n$1\r\n1\r\n$1\r\n3\r\n$1\r\n2\r\n$1\r\n1\r\n",
    );
    c.expect_cmd(&["EXISTS", "c:m1", "c:m2", "c:nope", "c:m1"], b":3\r\n");
    c.expect_cmd(&["TOUCH", "c:m1", "c:m3", "c:nope"], b":2\r\n");
    c.expect_cmd(&["DEL", "c:m1", "c:m2", "c:nope"], b":2\r\n");
    c.expect_cmd(&["UNLINK", "c:m3", "c:m4"], b":2\r\n");
    c.expect_cmd(&["MGET", "c:m1", "c:m4"], b"*2\r\n$-1\r\n$-1\r\n");
    // A wrong argument count is not split into a partial write: the node answers as Redis
    // Cluster does for it (its key spec names keys of two slots).
    c.expect_cmd(
        &["MSET", "c:o1", "1", "c:o2"],
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
    );
    c.expect_cmd(
        &["MSET", "{o}1", "1", "{o}2"],
        b"-ERR wrong number of arguments for 'mset' command\r\n",
    );
    c.expect_cmd(&["EXISTS", "c:o1"], b":0\r\n");

    // A transaction on one slot.
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "{tx}:a", "1"], b"+QUEUED\r\n");
    c.expect_cmd(&["INCR", "{tx}:a"], b"+QUEUED\r\n");
    c.expect_cmd(&["GET", "{tx}:a"], b"+QUEUED\r\n");
    c.expect_cmd(&["EXEC"], b"*3\r\n+OK\r\n:2\r\n$1\r\n2\r\n");
    assert_eq!(cluster.get("{tx}:a").as_deref(), Some("2"));
    // Keyless commands first, then a key: the whole transaction runs on the key's node.
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["PING"], b"+QUEUED\r\n");
    c.expect_cmd(&["INCR", "{tx}:a"], b"+QUEUED\r\n");
    c.expect_cmd(&["EXEC"], b"*2\r\n+PONG\r\n:3\r\n");
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["INCR", "{tx}:a"], b"+QUEUED\r\n");
    c.expect_cmd(&["DISCARD"], b"+OK\r\n");
    c.expect_cmd(&["GET", "{tx}:a"], b"$1\r\n3\r\n");
    // WATCH pins the transaction to its key's node; a write from elsewhere aborts EXEC.
    c.expect_cmd(&["WATCH", "{w}:a"], b"+OK\r\n");
    let owner = cluster.primary_of("{w}:a");
    cluster.nodes[owner].set("{w}:a", "outside");
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "{w}:a", "inside"], b"+QUEUED\r\n");
    c.expect_cmd(&["EXEC"], b"*-1\r\n");
    assert_eq!(cluster.get("{w}:a").as_deref(), Some("outside"));
    c.expect_cmd(&["WATCH", "{w}:a"], b"+OK\r\n");
    c.expect_cmd(&["MULTI"], b"+OK\r\n");
    c.expect_cmd(&["SET", "{w}:a", "inside"], b"+QUEUED\r\n");
    c.expect_cmd(&["EXEC"], b"*1\r\n+OK\r\n");
    assert_eq!(cluster.get("{w}:a").as_deref(), Some("inside"));
    c.expect_cmd(
        &["WATCH", "{w}:a", "c:elsewhere"],
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
    );

    c.expect_cmd(&["RPUSH", "{s}:list", "3", "1", "2"], b":3\r\n");
    c.expect_cmd(
        &["SORT", "{s}:list"],
        b"*3\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n",
    );

    // A large value crosses the router whole.
    let big = "x".repeat(4 * 1024 * 1024 + 7);
    c.expect_cmd(&["SET", "c:big", &big], b"+OK\r\n");
    c.expect_cmd(&["GET", "c:big"], &bulk(&big));
    c.expect_cmd(
        &["STRLEN", "c:big"],
        format!(":{}\r\n", big.len()).as_bytes(),
    );

    // A pipeline of 1200 mixed commands; replies in request order.
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for i in 0..300 {
        let key = format!("c:p:{i}");
        batch.extend(cmd(&["SET", &key, &i.to_string()]));
        expected.extend_from_slice(b"+OK\r\n");
        batch.extend(cmd(&["GET", &key]));
        expected.extend(bulk(&i.to_string()));
        batch.extend(cmd(&["INCR", &format!("c:ctr:{}", i % 7)]));
        expected.extend(format!(":{}\r\n", i / 7 + 1).into_bytes());
        let other = format!("c:p:{}", (i + 150) % 300);
        batch.extend(cmd(&["MGET", &key, &other]));
        let other_value = if (i + 150) % 300 <= i {
            bulk(&((i + 150) % 300).to_string())
        } else {
            b"$-1\r\n".to_vec()
        };
        expected.extend(b"*2\r\n");
        expected.extend(bulk(&i.to_string()));
        expected.extend(other_value);
    }
    c.send(&batch);
    let got: Vec<u8> = c.read_frames(1200, Duration::from_secs(30)).concat();
    assert_eq!(show(&got), show(&expected));
    for i in [0, 7, 299] {
        assert_eq!(cluster.get(&format!("c:p:{i}")), Some(i.to_string()));
    }
}

#[test]
fn connection_state_applies_to_every_node() {
    let cluster = RedisCluster::start(3, 0);
    let t = turnout_for(&cluster);
    let mut c = t.raw();
    c.expect_cmd(&["CLIENT", "SETNAME", "cl-test"], b"+OK\r\n");
    // Keys on every primary: each node connection (opened after the SETNAME) carries the name.
    for i in 0..30 {
        c.expect_cmd(&["SET", &format!("c:n:{i}"), "1"], b"+OK\r\n");
    }
    for node in &cluster.nodes {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut node.conn())
            .expect("CLIENT LIST");
        assert!(list.contains("name=cl-test"), "{}: {list}", node.addr());
    }
    c.expect_cmd(&["SELECT", "0"], b"+OK\r\n");
    c.expect_cmd(&["GET", "c:n:1"], b"$1\r\n1\r\n");
    // RESP3 on every node connection, merged replies included.
    let hello = c.roundtrip(&["HELLO", "3"]);
    assert!(hello.starts_with(b"%"), "{}", show(&hello));
    c.expect_cmd(
        &["MGET", "c:n:1", "c:none", "c:n:2"],
        b"*3\r\n$1\r\n1\r\n_\r\n$1\r\n1\r\n",
    );
    for i in 0..30 {
        c.expect_cmd(&["GET", &format!("c:nothing:{i}")], b"_\r\n");
    }
    // RESET: back to RESP2 and no name on every node connection.
    c.expect_cmd(&["RESET"], b"+RESET\r\n");
    for i in 0..30 {
        c.expect_cmd(&["GET", &format!("c:nothing:{i}")], b"$-1\r\n");
    }
    for node in &cluster.nodes {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut node.conn())
            .expect("CLIENT LIST");
        assert!(!list.contains("name=cl-test"), "{}: {list}", node.addr());
    }
    // Scripts are loaded on every primary, so EVALSHA works on any slot.
    let sha =
        String::from_utf8(c.roundtrip(&["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"]))
            .expect("utf8");
    let sha = sha.trim_start_matches(|ch| ch != '\n').trim();
    for i in 0..10 {
        c.expect_cmd(&["EVALSHA", sha, "1", &format!("c:n:{i}")], b"$1\r\n1\r\n");
    }
    c.expect_cmd(&["DBSIZE"], b":30\r\n");
}

#[test]
fn pubsub_reaches_subscribers_through_the_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let t = turnout_for(&cluster);
    let mut sub = t.raw();
    sub.expect_cmd(
        &["SUBSCRIBE", "news"],
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
    );
    let mut shard = t.raw();
    shard.expect_cmd(
        &["SSUBSCRIBE", "{sh}ch"],
        b"*3\r\n$10\r\nssubscribe\r\n$6\r\n{sh}ch\r\n:1\r\n",
    );
    let mut publisher = t.raw();
    let published = publisher.roundtrip(&["PUBLISH", "news", "hello"]);
    assert!(published.starts_with(b":"), "{}", show(&published));
    assert_eq!(
        show(&sub.read_frame()),
        show(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n")
    );
    publisher.expect_cmd(&["SPUBLISH", "{sh}ch", "hi"], b":1\r\n");
    assert_eq!(
        show(&shard.read_frame()),
        show(b"*3\r\n$8\r\nsmessage\r\n$6\r\n{sh}ch\r\n$2\r\nhi\r\n")
    );
    // The subscriber's connection still answers PING the Pub/Sub way.
    sub.expect_cmd(&["PING"], b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
}

#[test]
fn an_unreachable_cluster_fails_commands_with_the_cause() {
    let closed = support::ports::free_port();
    let t = Turnout::start(&format!(
        r#"[endpoints.cl]
cluster_seeds = ["127.0.0.1:{closed}"]

[default]
target = "cl"
"#
    ));
    let mut c = t.raw();
    let got = c.roundtrip(&["GET", "k"]);
    assert!(
        got.starts_with(b"-ERR turnout: endpoint 'cl' unavailable: connect failed: "),
        "{}",
        show(&got)
    );
}

/// `total_connections_received` of `server` (this query's own connection included).
fn connections_received(server: &support::RedisServer) -> u64 {
    server
        .command(&["INFO", "stats"])
        .bulk_text()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_connections_received in INFO")
}

/// Connections that open while the endpoint has no slot map share one walk of the seeds:
/// ten clients asking at once while the only seed (a server without cluster support) is
/// paused cost it one connection, and all ten get that walk's error.
#[test]
fn concurrent_first_connections_share_one_seed_walk() {
    let seed = support::RedisServer::start();
    let t = Turnout::start(&format!(
        "[endpoints.cl]\ncluster_seeds = [\"{}\"]\n\n[default]\ntarget = \"cl\"\n\n[health]\ninterval = \"1h\"\n",
        seed.addr()
    ));
    // The start-up health check is done (it connected once).
    let checked = support::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        t.admin_get("/v1/endpoints")
            .text()
            .contains("cluster support disabled")
    });
    assert!(checked, "{}", t.admin_get("/v1/endpoints").text());
    let before = connections_received(&seed);
    // Commands wait while the seed is paused; new connections are still accepted.
    let _ = seed.command(&["CLIENT", "PAUSE", "500", "ALL"]);
    let mut clients: Vec<RawClient> = (0..10).map(|_| t.raw()).collect();
    for c in &mut clients {
        c.send(&cmd(&["GET", "k"]));
    }
    let replies: Vec<String> = clients
        .iter_mut()
        .map(|c| {
            show(
                &c.read_frame_within(Duration::from_secs(10))
                    .expect("a reply"),
            )
        })
        .collect();
    let expected = format!(
        "-ERR turnout: endpoint 'cl' unavailable: {} answered CLUSTER SLOTS with no slots: -ERR This instance has cluster support disabled\r\n",
        seed.addr()
    );
    for reply in &replies {
        assert_eq!(reply, &show(expected.as_bytes()));
    }
    // CLIENT PAUSE's connection, one walk's, and this query's own.
    assert_eq!(connections_received(&seed) - before, 3);
}

#[test]
fn a_slot_migrates_with_live_keys_under_load() {
    let cluster = RedisCluster::start(3, 0);
    let t = turnout_for(&cluster);
    let slot = cluster.keyslot("{mig}");
    let from = cluster.primary_of_slot(slot);
    let to = cluster.other_primary(from);
    let mut setup = t.raw();
    for i in 0..200 {
        setup.expect_cmd(
            &["SET", &format!("{{mig}}:{i}"), &format!("v{i}")],
            b"+OK\r\n",
        );
    }
    assert_eq!(cluster.nodes[from].get("{mig}:5").as_deref(), Some("v5"));

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, writes, addr) = (stop.clone(), writes.clone(), t.proxy_addr());
        std::thread::spawn(move || -> Vec<String> {
            let mut c = RawClient::connect(&addr);
            let mut errors = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let i = round % 200;
                let mut batch = cmd(&["GET", &format!("{{mig}}:{i}")]);
                batch.extend(cmd(&[
                    "SET",
                    &format!("{{mig}}:w:{round}"),
                    &round.to_string(),
                ]));
                batch.extend(cmd(&["INCR", "{mig}:counter"]));
                batch.extend(cmd(&["SET", &format!("c:elsewhere:{}", round % 50), "x"]));
                c.send(&batch);
                let replies = c.read_frames(4, Duration::from_secs(10));
                let expected = [
                    bulk(&format!("v{i}")),
                    b"+OK\r\n".to_vec(),
                    Vec::new(),
                    b"+OK\r\n".to_vec(),
                ];
                for (n, (got, want)) in replies.iter().zip(expected.iter()).enumerate() {
                    let ok = if n == 2 {
                        got.starts_with(b":")
                    } else {
                        got == want
                    };
                    if !ok {
                        errors.push(format!("round {round} reply {n}: {}", show(got)));
                    }
                }
                writes.store(round + 1, Ordering::Relaxed);
                round += 1;
            }
            errors
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    cluster.migrate_slot(slot, from, to);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let errors = load.join().expect("load thread");
    assert!(
        errors.is_empty(),
        "client errors during migration: {errors:?}"
    );
    let rounds = writes.load(Ordering::Relaxed);
    assert!(rounds > 10, "load ran ({rounds} rounds)");

    let mut c = t.raw();
    for i in 0..200 {
        c.expect_cmd(&["GET", &format!("{{mig}}:{i}")], &bulk(&format!("v{i}")));
    }
    for round in 0..rounds {
        c.expect_cmd(
            &["GET", &format!("{{mig}}:w:{round}")],
            &bulk(&round.to_string()),
        );
    }
    c.expect_cmd(&["GET", "{mig}:counter"], &bulk(&rounds.to_string()));
    assert_eq!(cluster.nodes[to].get("{mig}:5").as_deref(), Some("v5"));
    let left: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut cluster.nodes[from].conn())
        .expect("COUNTKEYSINSLOT");
    assert_eq!(left, 0, "no key of the slot left on the source");
    let (moved, ask) = (event_count(&t, "moved"), event_count(&t, "ask"));
    eprintln!("{rounds} load rounds; redirects followed: {moved} moved, {ask} ask");
    assert!(
        moved > 0 && ask > 0,
        "redirects counted in /metrics:\n{}",
        t.admin_get("/metrics").text()
    );
}

#[test]
fn a_killed_primary_is_replaced_by_its_replica() {
    let mut cluster = RedisCluster::start(3, 1);
    let t = turnout_for(&cluster);
    let victim_key = "c:fo:victim";
    let victim = cluster.primary_of(victim_key);
    let survivor_key = (0..100)
        .map(|i| format!("c:fo:other:{i}"))
        .find(|k| cluster.primary_of(k) != victim)
        .expect("a key on another primary");
    let mut c = t.raw();
    c.expect_cmd(&["SET", victim_key, "before"], b"+OK\r\n");
    c.expect_cmd(&["SET", &survivor_key, "alive"], b"+OK\r\n");
    // The replica has the write before its primary dies.
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut cluster.nodes[victim].conn())
        .expect("WAIT");
    assert_eq!(acked, 1);
    // And the replica shows it (a replica still in its first sync could otherwise be promoted
    // empty, which is Redis's behaviour, not turnout's).
    let replica = cluster.replica_of(victim);
    let synced = support::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let mut con = cluster.nodes[replica].conn();
        let _: Result<(), _> = redis::cmd("READONLY").query(&mut con);
        redis::cmd("GET")
            .arg(victim_key)
            .query::<Option<String>>(&mut con)
            .ok()
            .flatten()
            .as_deref()
            == Some("before")
    });
    assert!(
        synced,
        "the replica has the key before its primary is killed"
    );

    cluster.nodes[victim].kill();
    let started = Instant::now();
    let mut recovered = None;
    let mut failed_reads = 0;
    while started.elapsed() < Duration::from_secs(15) {
        // Keys on the other primaries keep working throughout.
        c.expect_cmd(&["GET", &survivor_key], b"$5\r\nalive\r\n");
        let got = c.roundtrip(&["GET", victim_key]);
        if got == b"$6\r\nbefore\r\n" {
            recovered = Some(started.elapsed());
            break;
        }
        let text = show(&got);
        assert!(
            got.starts_with(b"-ERR turnout: endpoint 'cl' unavailable: ")
                || got.starts_with(b"-CLUSTERDOWN"),
            "a read of the failed primary's key: {text}"
        );
        failed_reads += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = recovered.unwrap_or_else(|| {
        panic!("the victim's slot did not recover within 15 s ({failed_reads} failed reads)")
    });
    eprintln!("recovered after {took:?} with {failed_reads} failed reads");
    c.expect_cmd(&["SET", victim_key, "after"], b"+OK\r\n");
    assert!(cluster.wait_ok(Duration::from_secs(10)));
    assert_eq!(cluster.get(victim_key).as_deref(), Some("after"));
    assert!(event_count(&t, "failover") > 0, "failover counted");
}

/// `CLUSTER SETSLOT slot ARGS…` on node `index`.
fn setslot(cluster: &RedisCluster, index: usize, slot: u16, args: &[&str]) {
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(args)
        .query(&mut cluster.nodes[index].conn())
        .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {args:?} on node {index}: {e}"));
}

/// `CLUSTER GETKEYSINSLOT slot 100` on node `index`, sorted.
fn keys_in_slot(cluster: &RedisCluster, index: usize, slot: u16) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(100)
        .query(&mut cluster.nodes[index].conn())
        .expect("GETKEYSINSLOT");
    keys.sort();
    keys
}

#[test]
fn a_redirect_loop_ends_in_an_error_after_the_bound() {
    let cluster = RedisCluster::start(3, 0);
    let t = turnout_for(&cluster);
    let slot = cluster.keyslot("c:loop");
    let owner = cluster.primary_of_slot(slot);
    let other = cluster.other_primary(owner);
    let elsewhere = (0..100)
        .map(|i| format!("c:fine:{i}"))
        .find(|k| cluster.primary_of(k) != owner)
        .expect("a key on another primary");
    let mut c = t.raw();
    c.expect_cmd(&["SET", "{c:loop}:present", "here"], b"+OK\r\n");

    // MIGRATING on the owner without IMPORTING on the other node: the owner answers -ASK for
    // a missing key, the other node (not importing, ASKING or not) -MOVED back to the owner.
    setslot(
        &cluster,
        owner,
        slot,
        &["MIGRATING", &cluster.node_id(other)],
    );
    let owner_addr = cluster.nodes[owner].addr();
    let other_addr = cluster.nodes[other].addr();
    assert_eq!(
        show(&RawClient::connect(&cluster.nodes[owner].addr()).roundtrip(&["GET", "c:loop"])),
        show(format!("-ASK {slot} {other_addr}\r\n").as_bytes()),
        "the owner redirects"
    );
    let (moved_before, ask_before) = (event_count(&t, "moved"), event_count(&t, "ask"));
    let started = Instant::now();
    let got = c.roundtrip(&["GET", "c:loop"]);
    let took = started.elapsed();
    let expected = format!(
        "-ERR turnout: endpoint 'cl': redirect loop on slot {slot}: gave up after 5 redirects, last -MOVED {slot} {owner_addr}\r\n"
    );
    assert_eq!(show(&got), show(expected.as_bytes()), "after {took:?}");
    // ASK, MOVED, ASK, MOVED, ASK followed; the sixth redirect is not.
    assert_eq!(event_count(&t, "ask") - ask_before, 3);
    assert_eq!(event_count(&t, "moved") - moved_before, 2);

    // The connection stays usable: a key of the slot the owner still holds, other slots.
    c.expect_cmd(&["GET", "{c:loop}:present"], b"$4\r\nhere\r\n");
    c.expect_cmd(&["SET", &elsewhere, "ok"], b"+OK\r\n");
    c.expect_cmd(&["GET", &elsewhere], b"$2\r\nok\r\n");
    assert_eq!(cluster.get(&elsewhere).as_deref(), Some("ok"));
    // A pipeline: the loop does not hold up or reorder the replies behind it.
    let mut batch = cmd(&["SET", "c:loop", "x"]);
    batch.extend(cmd(&["GET", &elsewhere]));
    batch.extend(cmd(&["PING"]));
    c.send(&batch);
    let replies = c.read_frames(3, Duration::from_secs(10));
    let set_loop = format!(
        "-ERR turnout: endpoint 'cl': redirect loop on slot {slot}: gave up after 5 redirects, last -MOVED {slot} {owner_addr}\r\n"
    );
    assert_eq!(show(&replies[0]), show(set_loop.as_bytes()));
    assert_eq!(show(&replies[1]), show(b"$2\r\nok\r\n"));
    assert_eq!(show(&replies[2]), show(b"+PONG\r\n"));
    assert_eq!(
        keys_in_slot(&cluster, owner, slot),
        vec!["{c:loop}:present"]
    );
    assert!(
        keys_in_slot(&cluster, other, slot).is_empty(),
        "nothing written"
    );

    // Undone: the slot is stable again and the key works.
    setslot(&cluster, owner, slot, &["STABLE"]);
    c.expect_cmd(&["GET", "c:loop"], b"$-1\r\n");
    c.expect_cmd(&["SET", "c:loop", "back"], b"+OK\r\n");
    assert_eq!(cluster.nodes[owner].get("c:loop").as_deref(), Some("back"));
}

#[test]
fn an_ask_redirect_sends_asking_to_the_importing_node() {
    let cluster = RedisCluster::start(3, 0);
    let t = turnout_for(&cluster);
    let slot = cluster.keyslot("{ask}");
    let from = cluster.primary_of_slot(slot);
    let to = cluster.other_primary(from);
    let mut c = t.raw();
    c.expect_cmd(&["SET", "{ask}:old", "on-source"], b"+OK\r\n");
    setslot(&cluster, to, slot, &["IMPORTING", &cluster.node_id(from)]);
    setslot(&cluster, from, slot, &["MIGRATING", &cluster.node_id(to)]);

    // A key that exists only on the importing node, written there the way a client would
    // after -ASK.
    let mut importing = cluster.nodes[to].conn();
    let _: () = redis::cmd("ASKING").query(&mut importing).expect("ASKING");
    let _: () = redis::cmd("SET")
        .arg(&["{ask}:new", "on-target"])
        .query(&mut importing)
        .expect("SET after ASKING");
    // Without ASKING the importing node refuses it: only a client that sends ASKING first
    // can read it.
    let to_addr = cluster.nodes[to].addr();
    let from_addr = cluster.nodes[from].addr();
    assert_eq!(
        show(&RawClient::connect(&cluster.nodes[to].addr()).roundtrip(&["GET", "{ask}:new"])),
        show(format!("-MOVED {slot} {from_addr}\r\n").as_bytes())
    );
    assert_eq!(
        show(&RawClient::connect(&cluster.nodes[from].addr()).roundtrip(&["GET", "{ask}:new"])),
        show(format!("-ASK {slot} {to_addr}\r\n").as_bytes())
    );

    let ask_before = event_count(&t, "ask");
    c.expect_cmd(&["GET", "{ask}:new"], b"$9\r\non-target\r\n");
    assert!(
        event_count(&t, "ask") > ask_before,
        "the read followed -ASK"
    );
    // Twice in a pipeline, between commands the source still serves: ASKING applies to the
    // one command after it, and the replies keep their order.
    let mut batch = cmd(&["GET", "{ask}:new"]);
    batch.extend(cmd(&["GET", "{ask}:old"]));
    batch.extend(cmd(&["GET", "{ask}:new"]));
    batch.extend(cmd(&["EXISTS", "{ask}:old"]));
    c.send(&batch);
    let replies = c.read_frames(4, Duration::from_secs(10));
    assert_eq!(
        replies.iter().map(|r| show(r)).collect::<Vec<_>>(),
        vec![
            show(b"$9\r\non-target\r\n"),
            show(b"$9\r\non-source\r\n"),
            show(b"$9\r\non-target\r\n"),
            show(b":1\r\n"),
        ]
    );
    // A new key written through turnout during the migration lands on the importing node.
    c.expect_cmd(&["SET", "{ask}:written", "w"], b"+OK\r\n");
    let mut importing = cluster.nodes[to].conn();
    let _: () = redis::cmd("ASKING").query(&mut importing).expect("ASKING");
    let on_target: Option<String> = redis::cmd("GET")
        .arg("{ask}:written")
        .query(&mut importing)
        .expect("GET after ASKING");
    assert_eq!(on_target.as_deref(), Some("w"));
    assert_eq!(keys_in_slot(&cluster, from, slot), vec!["{ask}:old"]);

    // Finish the migration: the keys left on the source move, the slot changes owner.
    cluster.migrate_slot(slot, from, to);
    c.expect_cmd(&["GET", "{ask}:old"], b"$9\r\non-source\r\n");
    c.expect_cmd(&["GET", "{ask}:new"], b"$9\r\non-target\r\n");
    assert_eq!(cluster.primary_of_slot(slot), to);
}

/// A blocking command on a cluster endpoint is not given a `CLIENT ID`: that would go to the
/// router's keyless node, not the node where the command blocks, so a cutover could only
/// unblock the wrong connection (or another client's with the same id there).
#[test]
fn a_blocking_command_on_a_cluster_endpoint_asks_no_client_id() {
    let cluster = RedisCluster::start(3, 0);
    let t = turnout_for(&cluster);
    let mut c = t.raw();
    c.expect_cmd(&["BLPOP", "c:queue", "1"], b"*-1\r\n");
    c.expect_cmd(&["RPUSH", "c:queue", "job"], b":1\r\n");
    c.expect_cmd(
        &["BLPOP", "c:queue", "1"],
        b"*2\r\n$7\r\nc:queue\r\n$3\r\njob\r\n",
    );
    for (i, node) in cluster.nodes.iter().enumerate() {
        let support::Reply::Bulk(Some(stats)) = node.command(&["INFO", "commandstats"]) else {
            panic!("no INFO from node {i}");
        };
        let stats = String::from_utf8_lossy(&stats).into_owned();
        assert!(
            !stats.contains("cmdstat_client|id:"),
            "node {i} was asked CLIENT ID:\n{stats}"
        );
    }
}

/// A redirect with an empty host (`-MOVED slot :PORT`, what Redis sends with
/// `cluster-preferred-endpoint-type unknown-endpoint`) goes to that port on the host turnout
/// reached the answering node by: here 127.0.0.2, which the nodes listen on besides
/// 127.0.0.1. The node's `CLIENT LIST` shows which address turnout's `SET` came in on.
#[test]
fn an_empty_host_redirect_goes_to_the_host_of_the_node_that_answered() {
    let cluster = RedisCluster::start_with_args(3, 0, &["--bind", "127.0.0.1", "127.0.0.2"]);
    for node in &cluster.nodes {
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "cluster-preferred-endpoint-type", "unknown-endpoint"])
            .query(&mut node.conn())
            .expect("CONFIG SET cluster-preferred-endpoint-type");
    }
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("\"127.0.0.2:{}\"", n.port()))
        .collect();
    let t = Turnout::start(&format!(
        "[endpoints.cl]\ncluster_seeds = [{}]\n\n[default]\ntarget = \"cl\"\n",
        seeds.join(", ")
    ));
    let key = "c:empty-host";
    let slot = cluster.keyslot(key);
    let from = cluster.primary_of_slot(slot);
    let to = cluster.other_primary(from);
    let mut c = t.raw();
    // The connection loads the map (through 127.0.0.2) and knows `from` as the owner.
    c.expect_cmd(&["GET", key], b"$-1\r\n");

    // The empty slot changes owner; `from` now answers with an empty host.
    let to_id = cluster.node_id(to);
    for index in 0..cluster.nodes.len() {
        setslot(&cluster, index, slot, &["NODE", &to_id]);
    }
    let to_port = cluster.nodes[to].port();
    assert_eq!(
        show(&RawClient::connect(&cluster.nodes[from].addr()).roundtrip(&["GET", key])),
        show(format!("-MOVED {slot} :{to_port}\r\n").as_bytes())
    );
    let moved_before = event_count(&t, "moved");
    c.expect_cmd(&["SET", key, "here"], b"+OK\r\n");
    assert!(
        event_count(&t, "moved") > moved_before,
        "the SET was redirected"
    );

    let clients =
        RawClient::connect(&format!("127.0.0.2:{to_port}")).read_reply_after(&["CLIENT", "LIST"]);
    let sets_on = |host: &str| {
        clients
            .lines()
            .filter(|l| l.contains(&format!("laddr={host}:{to_port} ")) && l.contains("cmd=set "))
            .count()
    };
    assert_eq!(sets_on("127.0.0.2"), 1, "CLIENT LIST:\n{clients}");
    assert_eq!(sets_on("127.0.0.1"), 0, "CLIENT LIST:\n{clients}");
    assert_eq!(cluster.nodes[to].get(key).as_deref(), Some("here"));
}
