//! Compatibility with redis-py, the most common Python client, as applications really use it.
//!
//! turnout has to be invisible to an application: the same client code must get the same
//! results through turnout (two backends, keys split by namespace) as against one Redis.
//! redis-py exercises paths a hand-written RESP client does not: its connection handshake
//! (`CLIENT SETINFO`, `HELLO 3`, `CLIENT SETNAME`), large non-transactional pipelines, MULTI/EXEC
//! pipelines, WATCH with its immediate-mode reads, the `transaction()` retry helper, RESP3
//! maps/sets/doubles decoded into dicts, sets and floats, and its error classes.
//!
//! The test builds a virtualenv in a temp dir, installs `redis==5.*` from PyPI into it (a
//! registry that cannot be reached fails the test: it is never skipped), seeds the same data,
//! then runs `tests/py/redis_py_compat.py` against a plain redis-server and against turnout in
//! front of two servers. The script prints a canonical JSON document of every result; both
//! documents must be identical.
//!
//! Pub/Sub is part of the workload, in RESP2 and RESP3: SUBSCRIBE, PSUBSCRIBE and SSUBSCRIBE
//! through redis-py's `PubSub` (confirmations read with bounded `get_message` waits), PUBLISH
//! and SPUBLISH receiver counts from a second client, messages in publication order, PING and
//! a refused command in RESP2 subscribed mode, the UNSUBSCRIBE family, PUBSUB introspection
//! (CHANNELS, NUMSUB, NUMPAT, SHARDCHANNELS, SHARDNUMSUB: keyless, so turnout sends them to the
//! default route, which is also the Pub/Sub endpoint here), a RESP3 subscriber receiving while
//! a BLPOP blocks on another connection, and one RESP3 connection on which pushes and ordinary
//! replies from both backends interleave. Channel names carry namespace prefixes: channels
//! are not keys, and a subscriber and a publisher must meet on one endpoint whatever the names.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Env, RawClient, RedisServer};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/redis_py_compat.py");
const VENV_TIMEOUT: Duration = Duration::from_secs(60);
const PIP_TIMEOUT: Duration = Duration::from_secs(180);
/// Every Pub/Sub wait in the script is bounded (3 s for a message, 0.5 s once one went
/// missing), so even a run that loses every message finishes within this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// The seed of the script's random pipeline: the same for both runs.
const SEED: &str = "20261126";
const NAMESPACES: [&str; 5] = ["web:", "tok:", "session:", "impact:", "other:"];

/// Output of a finished child process.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` with stdout and stderr captured to files, killed (and panicking) after
/// `timeout`.
fn run_bounded(command: &mut Command, timeout: Duration, what: &str) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    command
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("{what}: waiting: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// A virtualenv with redis-py 5 installed from PyPI.
struct Venv {
    _dir: tempfile::TempDir,
    python: PathBuf,
}

fn venv_with_redis_py() -> Venv {
    let dir = tempfile::Builder::new()
        .prefix("turnout-redis-py-")
        .tempdir()
        .expect("temp dir for the virtualenv");
    let venv = dir.path().join("venv");
    let created = run_bounded(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        VENV_TIMEOUT,
        "python3 -m venv",
    );
    assert!(
        created.status.success(),
        "python3 -m venv failed ({}); install it with apt-get install -y python3-venv\n{}{}",
        created.status,
        created.stdout,
        created.stderr
    );
    let python = venv.join("bin").join("python");
    let pip = run_bounded(
        Command::new(&python)
            .args(["-m", "pip", "install"])
            .args(["--disable-pip-version-check", "--no-input"])
            .args(["--timeout", "20", "--retries", "2"])
            .arg("redis==5.*")
            .env("PIP_NO_INPUT", "1"),
        PIP_TIMEOUT,
        "pip install redis==5.*",
    );
    assert!(
        pip.status.success(),
        "pip could not install redis==5.* from PyPI ({}). This test needs PyPI and is never \
         skipped: make the registry reachable (or pip's proxy/certificate settings right).\n\
         --- pip stdout ---\n{}\n--- pip stderr ---\n{}",
        pip.status,
        pip.stdout,
        pip.stderr
    );
    let version = run_bounded(
        Command::new(&python).args(["-c", "import redis; print(redis.__version__)"]),
        VENV_TIMEOUT,
        "import redis",
    );
    assert!(
        version.status.success() && version.stdout.starts_with("5."),
        "redis-py 5 not importable after pip install: {} {}",
        version.stdout,
        version.stderr
    );
    Venv { _dir: dir, python }
}

/// Writes the seed data through `addr` (a plain server or turnout): the same bytes for both.
fn seed(addr: &str) {
    let mut c = RawClient::connect(addr);
    for ns in NAMESPACES {
        for i in 0..5 {
            let key = format!("{ns}seed:{i}");
            let value = format!("seed value {i} of {ns} \u{e9}\u{4e2d}");
            c.expect_cmd(&["SET", &key, &value], b"+OK\r\n");
        }
        c.expect_cmd(
            &["HSET", &format!("{ns}seed:h"), "f1", "v1", "f2", ns],
            b":2\r\n",
        );
        c.expect_cmd(&["RPUSH", &format!("{ns}seed:l"), "a", "b", ns], b":3\r\n");
    }
}

/// Runs the script against `addr`; returns its JSON document.
fn run_script(venv: &Venv, addr: &str, label: &str) -> Value {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let run = run_bounded(
        Command::new(&venv.python)
            .arg(Path::new(SCRIPT))
            .args([host, port, SEED])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONHASHSEED", "0"),
        SCRIPT_TIMEOUT,
        &format!("redis-py workload against {label}"),
    );
    assert!(
        run.status.success(),
        "redis-py workload against {label} ({addr}) exited with {}\nstderr:\n{}",
        run.status,
        run.stderr
    );
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "redis-py workload against {label}: output is not JSON ({e}):\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        )
    })
}

/// Paths where `a` and `b` differ, with both values, at most `limit` of them.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit || a == b {
        return;
    }
    let short = |v: &Value| {
        let text = v.to_string();
        if text.chars().count() > 300 {
            format!("{}…", text.chars().take(300).collect::<String>())
        } else {
            text
        }
    };
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(format!(
                    "{path}: {} items direct, {} through turnout",
                    x.len(),
                    y.len()
                ));
            }
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{path}[{i}]"), out, limit);
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            for (k, p) in x {
                match y.get(k) {
                    Some(q) => differences(p, q, &format!("{path}.{k}"), out, limit),
                    None => out.push(format!("{path}.{k}: only direct: {}", short(p))),
                }
            }
            for (k, q) in y {
                if !x.contains_key(k) && out.len() < limit {
                    out.push(format!("{path}.{k}: only through turnout: {}", short(q)));
                }
            }
        }
        _ => out.push(format!(
            "{path}:\n    direct:  {}\n    turnout: {}",
            short(a),
            short(b)
        )),
    }
}

#[test]
fn redis_py_gets_the_same_results_through_turnout_as_from_one_redis() {
    let venv = venv_with_redis_py();

    let plain = RedisServer::start();
    seed(&plain.addr());
    let direct = run_script(&venv, &plain.addr(), "a plain redis-server");

    let env = Env::standard();
    seed(&env.turnout.proxy_addr());
    let proxied = run_script(&venv, &env.turnout.proxy_addr(), "turnout");

    // The reference run itself is complete and meaningful.
    for section in [
        "seeded",
        "plain",
        "pipeline",
        "transaction",
        "watch",
        "multi_key",
        "resp3",
        "client_name",
        "pubsub",
        "pubsub_resp3",
        "pubsub_resp3_one_connection",
        "seeded_after",
    ] {
        let value = &direct[section];
        assert!(
            value.is_array() && !value.as_array().is_some_and(Vec::is_empty),
            "direct run: section {section} failed or is empty: {value}"
        );
    }
    assert_eq!(direct["pipeline"].as_array().map(Vec::len), Some(1000));
    assert_eq!(direct["seeded"].as_array().map(Vec::len), Some(35));
    assert_eq!(direct["seeded"], direct["seeded_after"]);
    assert_eq!(
        direct["client_name"][2], "compat-app",
        "{}",
        direct["client_name"]
    );
    assert_eq!(direct["resp3"][3], "dict", "{}", direct["resp3"]);
    assert_eq!(direct["resp3"][7], "set", "{}", direct["resp3"]);
    assert_eq!(
        direct["watch"][1]["exception"], "WatchError",
        "{}",
        direct["watch"]
    );
    // Pub/Sub: the reference run got its confirmations and messages (a message that did not
    // come within its bounded wait is recorded as null), with the receiver counts expected.
    let message = |kind: &str, pattern: Option<&str>, channel: &str, data: &str| {
        serde_json::json!([kind, pattern, channel, data])
    };
    let pubsub = &direct["pubsub"];
    assert_eq!(
        pubsub[2],
        serde_json::json!([
            ["subscribe", null, "web:ps:ch1", 1],
            ["subscribe", null, "tok:ps:ch2", 2]
        ]),
        "{pubsub}"
    );
    assert_eq!(
        pubsub[9], 2,
        "PUBLISH to web:ps:ch1 reaches two subscribers: {pubsub}"
    );
    assert_eq!(
        pubsub[15][1],
        message("pmessage", Some("ps:news.*"), "ps:news.sport", "goal"),
        "{pubsub}"
    );
    assert_eq!(pubsub[20].as_array().map(Vec::len), Some(20), "{pubsub}");
    assert!(
        pubsub[20]
            .as_array()
            .is_some_and(|m| m.iter().all(Value::is_array)),
        "{pubsub}"
    );
    assert_eq!(pubsub[23], serde_json::json!([["pong", null, null, ""]]));
    assert_eq!(pubsub[25]["exception"], "ResponseError", "{pubsub}");
    assert_eq!(
        pubsub[54],
        serde_json::json!([
            message("smessage", None, "tok:ps:shard", "s1"),
            message("smessage", None, "web:ps:shard", "s2")
        ]),
        "{pubsub}"
    );
    let resp3 = &direct["pubsub_resp3"];
    assert_eq!(
        resp3[13][2],
        message("smessage", None, "tok:ps3:shard", "m3"),
        "{resp3}"
    );
    assert_eq!(
        resp3[18],
        serde_json::json!([["web:ps3:queue", "job"]]),
        "{resp3}"
    );
    let one = &direct["pubsub_resp3_one_connection"];
    assert_eq!(one[11].as_array().map(Vec::len), Some(9), "{one}");
    assert_eq!(one[12].as_array().map(Vec::len), Some(10), "{one}");
    let errors = direct["pipeline"]
        .as_array()
        .expect("pipeline")
        .iter()
        .filter(|v| v.get("exception").is_some())
        .count();
    assert!(errors > 0 && errors < 200, "pipeline errors: {errors}");
    let empty = [
        Value::Null,
        serde_json::json!([]),
        serde_json::json!({"dict": []}),
        serde_json::json!({"set": []}),
    ];
    let substantial = direct["pipeline"]
        .as_array()
        .expect("pipeline")
        .iter()
        .filter(|v| !empty.contains(v))
        .count();
    assert!(
        substantial > 500,
        "only {substantial} of the 1000 pipelined replies carry data"
    );

    let mut diffs = Vec::new();
    differences(&direct, &proxied, "$", &mut diffs, 25);
    assert!(
        diffs.is_empty(),
        "redis-py results differ between a plain Redis and turnout ({} shown):\n{}\n\
         --- turnout stderr ---\n{}",
        diffs.len(),
        diffs.join("\n"),
        env.turnout.log()
    );

    // And through turnout, the keys live on the backend of their namespace.
    assert!(env.legacy.exists("web:plain") && !env.new.exists("web:plain"));
    assert!(env.new.exists("tok:hash") && !env.legacy.exists("tok:hash"));
    assert!(env.new.exists("session:hash-copy"));
    assert!(env.new.exists("impact:zset") && !env.legacy.exists("impact:zset"));
    assert!(env.legacy.exists("other:tx") && !env.new.exists("other:tx"));
    assert!(env.legacy.exists("other:seed:0") && env.new.exists("tok:seed:0"));
}
