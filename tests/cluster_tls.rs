//! A cluster endpoint over TLS with an ACL user: turnout reaches a real TLS-only Redis
//! Cluster (`--tls-cluster yes`, `default` user off) with `cluster_seeds`, `username`,
//! `password_env` and `[endpoints.new.tls] ca_file`; keys land on every primary; `-MOVED`
//! is followed over TLS after a slot changes owner; a wrong password gives the
//! authentication error and the password never shows in the log, `/v1/endpoints` or
//! `/metrics`.

mod support;

use std::time::Duration;

use support::tls::Pki;
use support::tls_cluster::{TlsCluster, APP_PASSWORD, APP_USER};
use support::{show, Turnout};

const PASSWORD_ENV: &str = "TURNOUT_TEST_CLUSTER_PW";

fn turnout_for(cluster: &TlsCluster, pki: &Pki, password: &str) -> Turnout {
    Turnout::builder(&format!(
        r#"[endpoints.new]
cluster_seeds = {}
username = "{APP_USER}"
password_env = "{PASSWORD_ENV}"

[endpoints.new.tls]
ca_file = {}

[[namespaces]]
name = "cache"
prefixes = ["c:"]
target = "new"

[default]
target = "new"
"#,
        cluster.seeds_toml(),
        pki.toml("ca.pem"),
    ))
    .env(PASSWORD_ENV, password)
    .start()
}

fn bulk(value: &str) -> Vec<u8> {
    format!("${}\r\n{value}\r\n", value.len()).into_bytes()
}

#[test]
fn a_tls_acl_cluster_is_reached_with_its_user() {
    let pki = Pki::generate();
    let cluster = TlsCluster::start(&pki, 3);
    let t = turnout_for(&cluster, &pki, APP_PASSWORD);
    let mut c = t.raw();

    // Keys on all three primaries, checked on the nodes directly.
    let keys: Vec<String> = (0..30).map(|i| format!("c:tls:{i}")).collect();
    for key in &keys {
        c.expect_cmd(&["SET", key, &format!("v-{key}")], b"+OK\r\n");
    }
    let mut owners = std::collections::BTreeSet::new();
    for key in &keys {
        owners.insert(cluster.primary_of(key));
        assert_eq!(cluster.get(key), Some(format!("v-{key}")), "{key}");
        c.expect_cmd(&["GET", key], &bulk(&format!("v-{key}")));
    }
    assert_eq!(owners.len(), 3, "the keys cover every primary");
    c.expect_cmd(
        &["MGET", "c:tls:0", "c:tls:1", "c:none", "c:tls:2"],
        b"*4\r\n$9\r\nv-c:tls:0\r\n$9\r\nv-c:tls:1\r\n$-1\r\n$9\r\nv-c:tls:2\r\n",
    );
    // Every node connection is the ACL user's.
    c.expect_cmd(&["ACL", "WHOAMI"], b"$3\r\napp\r\n");

    // A slot moved (empty, so no key migration) behind turnout's back: the old owner answers
    // -MOVED over TLS and turnout follows it.
    let key = "c:tls:moving";
    let slot = cluster.keyslot(key);
    let from = cluster.primary_of_slot(slot);
    let to = (0..3).find(|&i| i != from).expect("another primary");
    c.expect_cmd(&["GET", key], b"$-1\r\n");
    let to_id = cluster
        .command(to, &["CLUSTER", "MYID"])
        .bulk_text()
        .expect("MYID");
    let slot_s = slot.to_string();
    for i in [to, from, 3 - to - from] {
        assert_eq!(
            cluster.command(i, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]),
            support::Reply::Simple("OK".into())
        );
    }
    assert_eq!(cluster.primary_of_slot(slot), to);
    c.expect_cmd(&["SET", key, "moved"], b"+OK\r\n");
    c.expect_cmd(&["GET", key], b"$5\r\nmoved\r\n");
    assert!(cluster.keys(to).contains(&key.to_string()));
    assert!(!cluster.keys(from).contains(&key.to_string()));
    let metrics = t.admin_get("/metrics").text();
    let moved: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("turnout_endpoint_events_total"))
        .filter(|l| l.contains("endpoint=\"new\"") && l.contains("event=\"moved\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(moved >= 1.0, "a -MOVED followed:\n{metrics}");

    assert!(!t.all_logs().contains(APP_PASSWORD), "password in the log");
    assert!(!t.admin_get("/v1/endpoints").text().contains(APP_PASSWORD));
    assert!(!metrics.contains(APP_PASSWORD));
}

#[test]
fn a_wrong_cluster_password_is_an_authentication_error_and_never_shown() {
    let pki = Pki::generate();
    let cluster = TlsCluster::start(&pki, 3);
    let wrong = "not-the-app-password-5d1a";
    let t = turnout_for(&cluster, &pki, wrong);
    let mut c = t.raw();
    let got = c.roundtrip(&["GET", "c:k"]);
    assert!(
        got.starts_with(b"-ERR turnout: endpoint 'new' unavailable: authentication failed: "),
        "{}",
        show(&got)
    );
    // The connection stays open and keeps answering with the cause.
    let again = c.roundtrip(&["SET", "c:k", "v"]);
    assert!(
        again.starts_with(b"-ERR turnout: endpoint 'new' unavailable: "),
        "{}",
        show(&again)
    );
    assert!(cluster.all_keys().is_empty(), "nothing written");
    std::thread::sleep(Duration::from_millis(300));
    let endpoints = t.admin_get("/v1/endpoints").text();
    let metrics = t.admin_get("/metrics").text();
    let log = t.all_logs();
    for (name, text) in [
        ("log", &log),
        ("/v1/endpoints", &endpoints),
        ("/metrics", &metrics),
    ] {
        assert!(!text.contains(wrong), "the password in {name}:\n{text}");
        assert!(!text.contains(APP_PASSWORD), "a password in {name}");
    }
    assert!(
        log.contains("authentication failed") || endpoints.contains("authentication failed"),
        "the cause is reported:\n{log}\n{endpoints}"
    );
}

/// Writes over TLS are flushed: a large first request on each new node connection (the
/// bytes TLS holds back would otherwise wait for the next request, which never comes), and
/// the subscribe command a Pub/Sub connection hands to its node.
#[test]
fn large_first_requests_and_subscriptions_cross_a_tls_cluster() {
    let pki = Pki::generate();
    let cluster = TlsCluster::start(&pki, 3);
    let t = turnout_for(&cluster, &pki, APP_PASSWORD);

    // One key per primary; each SET is its node connection's first request.
    let mut keys: Vec<String> = Vec::new();
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..100 {
        let key = format!("c:big:{i}");
        if owners.insert(cluster.primary_of(&key)) {
            keys.push(key);
        }
        if owners.len() == 3 {
            break;
        }
    }
    assert_eq!(keys.len(), 3, "a key on every primary");
    let value = "x".repeat(4 * 1024 * 1024 + 17);
    for key in &keys {
        let mut c = t.raw();
        c.send(&support::cmd(&["SET", key, &value]));
        let got = c
            .read_frame_within(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("SET {key}: {e:?}"));
        assert_eq!(show(&got), show(b"+OK\r\n"), "SET {key}");
    }
    let mut c = t.raw();
    for key in &keys {
        let got = c.roundtrip(&["STRLEN", key]);
        assert_eq!(show(&got), show(format!(":{}\r\n", value.len()).as_bytes()));
    }

    // Pub/Sub through a TLS node.
    let mut sub = t.raw();
    sub.send(&support::cmd(&["SUBSCRIBE", "c:news"]));
    let confirmed = sub
        .read_frame_within(Duration::from_secs(30))
        .expect("SUBSCRIBE confirmation");
    assert_eq!(
        show(&confirmed),
        show(b"*3\r\n$9\r\nsubscribe\r\n$6\r\nc:news\r\n:1\r\n")
    );
    let mut publisher = t.raw();
    publisher.expect_cmd(&["PUBLISH", "c:news", "hello"], b":1\r\n");
    let message = sub
        .read_frame_within(Duration::from_secs(30))
        .expect("the message");
    assert_eq!(
        show(&message),
        show(b"*3\r\n$7\r\nmessage\r\n$6\r\nc:news\r\n$5\r\nhello\r\n")
    );
}
