//! The whole migration, end to end: an application writes three databases of a
//! Sentinel-managed primary (with a replica) through turnout; a stand-in for a CDC tool copies
//! each database into a TLS + ACL Redis Cluster under its own key prefix (`db1:`, `db2:`,
//! `db3:`; the cluster has database 0 only); each namespace is moved with a drain cutover
//! while the application keeps one connection open and keeps reading and writing. The
//! application sees the same data before and after and no error; its writes after each
//! cutover land in the cluster under the prefix, and nothing new lands on the source.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::sentinel::{SentinelSet, MASTER_NAME};
use support::tls::Pki;
use support::tls_cluster::{TlsCluster, APP_PASSWORD, APP_USER};
use support::{show, RawClient, RedisServer, Reply, Turnout};

const PASSWORD_ENV: &str = "TURNOUT_TEST_MIGRATION_PW";
const DBS: [i64; 3] = [1, 2, 3];
/// Bound on the application's run.
const APP_DEADLINE: Duration = Duration::from_secs(30);
const MAX_ROUNDS: u64 = 100_000;

fn body(set: &SentinelSet, cluster: &TlsCluster, pki: &Pki) -> String {
    let mut body = format!(
        r#"[endpoints.legacy]
sentinels = {}
master_name = "{MASTER_NAME}"

[endpoints.new]
cluster_seeds = {}
username = "{APP_USER}"
password_env = "{PASSWORD_ENV}"

[endpoints.new.tls]
ca_file = {}

"#,
        set.sentinels_toml(),
        cluster.seeds_toml(),
        pki.toml("ca.pem")
    );
    for db in DBS {
        body.push_str(&format!(
            "[[namespaces]]\nname = \"db{db}\"\ndb = {db}\nkey_prefix = {{ new = \"db{db}:\" }}\ntarget = \"legacy\"\n\n"
        ));
    }
    body.push_str("[default]\ntarget = \"legacy\"\n");
    body
}

fn bulk(s: &str) -> Vec<u8> {
    format!("${}\r\n{s}\r\n", s.len()).into_bytes()
}

/// What the application reads of its data, database by database.
fn transcript(c: &mut RawClient) -> Vec<String> {
    let mut out = Vec::new();
    for db in DBS {
        c.expect_cmd(&["SELECT", &db.to_string()], b"+OK\r\n");
        for args in [
            vec!["GET", "str"],
            vec!["HGETALL", "hash"],
            vec!["LRANGE", "list", "0", "-1"],
            vec!["ZRANGE", "zset", "0", "-1", "WITHSCORES"],
            vec!["MGET", "str", "{u}:s1", "nothing"],
            vec!["TTL", "str"],
            vec!["EXISTS", "str", "hash", "nothing"],
        ] {
            out.push(format!("{db} {args:?} {}", show(&c.roundtrip(&args))));
        }
        // Set members come in no fixed order (and a restored set may differ): sorted.
        for args in [
            vec!["SMEMBERS", "{u}:set"],
            vec!["SINTER", "{u}:set", "{u}:other"],
        ] {
            c.send_cmd(&args);
            let Reply::Array(Some(items)) = c.read_reply() else {
                panic!("{args:?}: not an array");
            };
            let mut members: Vec<String> = items.iter().filter_map(Reply::bulk_text).collect();
            members.sort();
            out.push(format!("{db} {args:?} {members:?}"));
        }
    }
    out
}

/// Every key of database `db` of `server`, sorted.
fn keys_on(server: &RedisServer, db: i64) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut server.conn_db(db))
        .expect("KEYS");
    keys.sort();
    keys
}

/// Copies `keys` of database `db` into the cluster under `db{db}:` (DUMP, RESTORE on the
/// primary of the new name), as a CDC tool would.
fn copy_keys(source: &RedisServer, db: i64, keys: &[String], cluster: &TlsCluster) {
    let mut con = source.conn_db(db);
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut con).expect("DUMP");
        let target = format!("db{db}:{key}");
        let reply = cluster.admin(cluster.primary_of(&target)).command_bytes(&[
            b"RESTORE",
            target.as_bytes(),
            b"0",
            &dump,
        ]);
        assert_eq!(reply, Reply::Simple("OK".into()), "RESTORE {target}");
    }
}

/// What the application saw while it ran.
struct AppRun {
    client: RawClient,
    errors: Vec<String>,
    /// `(db, round)` of writes made after the application knew `db` had moved.
    after_flip: Vec<(i64, u64)>,
    rounds: u64,
}

/// The application: round after round, in every database, a read of data copied before the
/// cutover, and a write of its own.
fn run_app(
    mut client: RawClient,
    flipped: Arc<[AtomicBool; 3]>,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
) -> AppRun {
    let mut errors = Vec::new();
    let mut after_flip = Vec::new();
    let started = Instant::now();
    let mut round = 0;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < APP_DEADLINE && round < MAX_ROUNDS {
        for (i, db) in DBS.iter().enumerate() {
            let moved = flipped[i].load(Ordering::SeqCst);
            let db_s = db.to_string();
            let value = format!("r{round}");
            let mut batch = support::cmd(&["SELECT", &db_s]);
            batch.extend(support::cmd(&["GET", "str"]));
            batch.extend(support::cmd(&["SET", &format!("w:{round}"), &value]));
            batch.extend(support::cmd(&["HGET", "hash", "db"]));
            client.send(&batch);
            let replies = client.read_frames(4, Duration::from_secs(10));
            let expected = [
                b"+OK\r\n".to_vec(),
                bulk(&format!("value-{db}")),
                b"+OK\r\n".to_vec(),
                bulk(&db_s),
            ];
            for (n, (got, want)) in replies.iter().zip(expected.iter()).enumerate() {
                if got != want {
                    errors.push(format!("round {round} db {db} reply {n}: {}", show(got)));
                }
            }
            if moved {
                after_flip.push((*db, round));
            }
        }
        round += 1;
        progress.store(round, Ordering::SeqCst);
    }
    AppRun {
        client,
        errors,
        after_flip,
        rounds: round,
    }
}

/// Waits (bounded) until the application has done `more` further rounds.
fn wait_rounds(progress: &AtomicU64, more: u64) {
    let from = progress.load(Ordering::SeqCst);
    let ok = support::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        progress.load(Ordering::SeqCst) >= from + more
    });
    assert!(ok, "the application made no progress");
}

#[test]
fn three_sentinel_databases_move_into_a_tls_cluster_under_load() {
    let set = SentinelSet::start();
    let primary_addr = set.master_addr().expect("the sentinels name a primary");
    let source = set.server(&primary_addr);
    let pki = Pki::generate();
    let cluster = TlsCluster::start(&pki, 3);
    let turnout = Turnout::builder(&body(&set, &cluster, &pki))
        .env(PASSWORD_ENV, APP_PASSWORD)
        .start();

    // The application's data, written through turnout into databases 1 to 3 of the source.
    let mut app = turnout.raw();
    for db in DBS {
        let db_s = db.to_string();
        app.expect_cmd(&["SELECT", &db_s], b"+OK\r\n");
        app.expect_cmd(&["SET", "str", &format!("value-{db}")], b"+OK\r\n");
        app.expect_cmd(&["HSET", "hash", "db", &db_s, "f", "v"], b":2\r\n");
        app.expect_cmd(&["RPUSH", "list", &db_s, "b", "c"], b":3\r\n");
        app.expect_cmd(&["ZADD", "zset", &db_s, "m"], b":1\r\n");
        app.expect_cmd(&["SADD", "{u}:set", &db_s, "s", "t"], b":3\r\n");
        app.expect_cmd(&["SADD", "{u}:other", "s", "t", "x"], b":3\r\n");
        app.expect_cmd(&["SET", "{u}:s1", &format!("one-{db}")], b"+OK\r\n");
    }
    let before = transcript(&mut app);
    assert!(before[0].contains("value-1"), "{before:#?}");
    let copied: Vec<Vec<String>> = DBS.iter().map(|&db| keys_on(source, db)).collect();
    assert_eq!(copied[0].len(), 7, "{copied:?}");

    // The CDC stand-in's bulk copy.
    for (i, db) in DBS.iter().enumerate() {
        copy_keys(source, *db, &copied[i], &cluster);
    }
    assert_eq!(cluster.all_keys().len(), 21);

    let flipped: Arc<[AtomicBool; 3]> = Arc::new(Default::default());
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let app_thread = {
        let (flipped, stop, progress) = (flipped.clone(), stop.clone(), progress.clone());
        std::thread::spawn(move || run_app(app, flipped, stop, progress))
    };
    wait_rounds(&progress, 3);
    let mut source_after_flip = Vec::new();
    for (i, db) in DBS.iter().enumerate() {
        let response = turnout.admin(
            "POST",
            &format!("/v1/routes/db{db}/cutover?wait=true"),
            &[],
            Some(
                &json!({"to": "new", "fence": "drain", "timeout_ms": 5000, "reason": format!("database {db} into the cluster")})
                    .to_string(),
            ),
        );
        assert_eq!(response.status, 200, "cutover db{db}: {}", response.text());
        let report = response.json();
        assert_eq!(report["outcome"], "completed", "{report}");
        assert_eq!(turnout.target(&format!("db{db}")), "new");
        // From here on, nothing new may land in this database of the source.
        source_after_flip.push(keys_on(source, *db));
        flipped[i].store(true, Ordering::SeqCst);
        wait_rounds(&progress, 3);
    }
    stop.store(true, Ordering::SeqCst);
    let AppRun {
        client: mut app,
        errors,
        after_flip,
        rounds,
    } = app_thread.join().expect("the application thread");
    assert!(errors.is_empty(), "the application saw errors: {errors:#?}");
    assert!(
        after_flip.len() >= 3,
        "writes after the cutovers: {after_flip:?}"
    );
    eprintln!(
        "{rounds} application rounds, {} writes after a cutover",
        after_flip.len()
    );

    // Its writes after each cutover are in the cluster under the prefix, not on the source.
    for &(db, round) in &after_flip {
        let key = format!("db{db}:w:{round}");
        assert_eq!(cluster.get(&key), Some(format!("r{round}")), "{key}");
    }
    for (i, db) in DBS.iter().enumerate() {
        assert_eq!(
            keys_on(source, *db),
            source_after_flip[i],
            "source db {db} changed"
        );
        assert!(
            after_flip
                .iter()
                .filter(|(d, _)| d == db)
                .all(|(_, round)| !source_after_flip[i].contains(&format!("w:{round}"))),
            "a write after the cutover of db {db} reached the source"
        );
    }
    // The same connection reads the same data as before.
    assert_eq!(transcript(&mut app), before);

    // The CDC stand-in's tail: what the application wrote to the source before each cutover.
    for (i, db) in DBS.iter().enumerate() {
        let missing: Vec<String> = source_after_flip[i]
            .iter()
            .filter(|k| !copied[i].contains(k))
            .cloned()
            .collect();
        copy_keys(source, *db, &missing, &cluster);
    }
    // Now every write of every round reads back through turnout, on a new connection too,
    // and the cluster holds exactly the prefixed keys.
    let mut fresh = turnout.raw();
    assert_eq!(transcript(&mut fresh), before);
    for db in DBS {
        fresh.expect_cmd(&["SELECT", &db.to_string()], b"+OK\r\n");
        for round in 0..rounds {
            fresh.expect_cmd(&["GET", &format!("w:{round}")], &bulk(&format!("r{round}")));
        }
    }
    let in_cluster = cluster.all_keys();
    assert_eq!(in_cluster.len() as u64, 21 + 3 * rounds, "{in_cluster:?}");
    assert!(in_cluster
        .iter()
        .all(|k| k.starts_with("db1:") || k.starts_with("db2:") || k.starts_with("db3:")));
}
