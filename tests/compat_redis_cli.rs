//! Compatibility with the real `redis-cli` (Debian's redis-tools), the client operators reach
//! for first during a cutover:
//!
//! - `redis-cli --pipe` mass insertion (a large unacknowledged stream ending in an `ECHO`
//!   marker) must report no errors and every reply, with each key on its namespace's backend;
//! - `redis-cli -3` negotiates RESP3 with `HELLO 3`, which turnout must apply to every upstream
//!   so that maps, sets and doubles come back exactly as the backend holding the key sends them;
//! - plain one-shot commands print what they print against a single Redis.
//!
//! Every `redis-cli` child is bounded by a deadline and killed when it expires.

mod support;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{Env, RedisServer};

const CLI_TIMEOUT: Duration = Duration::from_secs(20);

/// Output of a finished `redis-cli`.
#[derive(Debug)]
struct CliRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` against `addr`, stdin from `stdin` (or
/// empty), bounded by `timeout` (killed and panicking when it expires).
fn redis_cli(addr: &str, args: &[&str], stdin: Option<&Path>, timeout: Duration) -> CliRun {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let stdin = match stdin {
        Some(path) => Stdio::from(File::open(path).expect("open stdin file")),
        None => Stdio::null(),
    };
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", host, "-p", port])
        .args(args)
        .env_remove("REDISCLI_AUTH")
        .env_remove("REDISCLI_HISTFILE")
        .stdin(stdin)
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("redis-cli not found: install redis-tools (apt-get install -y redis-tools)")
        }
        Err(e) => panic!("spawn redis-cli: {e}"),
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("waiting for redis-cli {args:?}: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "redis-cli {args:?} against {addr} did not finish within {timeout:?}\n\
                 stdout: {}\nstderr: {}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    CliRun {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Runs a one-shot command and requires a zero exit status; returns stdout.
fn cli_ok(addr: &str, args: &[&str]) -> String {
    let run = redis_cli(addr, args, None, CLI_TIMEOUT);
    assert!(
        run.status.success(),
        "redis-cli {args:?} against {addr}: {}\nstdout: {}\nstderr: {}",
        run.status,
        run.stdout,
        run.stderr
    );
    run.stdout
}

/// Key prefixes and whether the standard config (default → legacy) routes them to `new`.
const NAMESPACES: [(&str, bool); 5] = [
    ("web:", false),
    ("tok:", true),
    ("session:", true),
    ("impact:", true),
    ("", false),
];

#[test]
fn pipe_mass_insertion_reports_every_reply_and_lands_on_the_right_backends() {
    const N: usize = 20_000;
    let env = Env::standard();
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("mass-insert.resp");
    let key = |i: usize| format!("{}pipe:{i}", NAMESPACES[i % NAMESPACES.len()].0);
    let on_new = |i: usize| NAMESPACES[i % NAMESPACES.len()].1;
    {
        let mut w = BufWriter::new(File::create(&input).expect("create input"));
        for i in 0..N {
            let (k, v) = (key(i), format!("value-{i}"));
            write!(
                w,
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .expect("write input");
        }
        w.flush().expect("flush input");
    }

    let run = redis_cli(
        &env.turnout.proxy_addr(),
        &["--pipe"],
        Some(&input),
        CLI_TIMEOUT,
    );
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        run.status.success(),
        "redis-cli --pipe through turnout exited with {}: {output}",
        run.status
    );
    assert!(
        output.contains(&format!("errors: 0, replies: {N}")),
        "redis-cli --pipe through turnout should report `errors: 0, replies: {N}`, got:\n{output}"
    );

    // Every key on its own backend, none on the other.
    let expected_new = (0..N).filter(|&i| on_new(i)).count() as i64;
    assert_eq!(env.new.dbsize(), expected_new, "keys on new");
    assert_eq!(
        env.legacy.dbsize(),
        N as i64 - expected_new,
        "keys on legacy"
    );
    let (new_keys, legacy_keys): (Vec<usize>, Vec<usize>) = (0..N).partition(|&i| on_new(i));
    let found = env
        .new
        .exists_many(&new_keys.iter().map(|&i| key(i)).collect::<Vec<_>>());
    assert!(
        found.iter().all(|&f| f),
        "a token-cache/impact key is missing on new"
    );
    let found = env
        .legacy
        .exists_many(&legacy_keys.iter().map(|&i| key(i)).collect::<Vec<_>>());
    assert!(
        found.iter().all(|&f| f),
        "a web-cache/default key is missing on legacy"
    );

    // Spot checks of values, at the start, the middle and the end of the stream, for each
    // namespace.
    for i in (0..10).chain(9_995..10_005).chain(N - 10..N) {
        let (own, other, own_name) = if on_new(i) {
            (&env.new, &env.legacy, "new")
        } else {
            (&env.legacy, &env.new, "legacy")
        };
        assert_eq!(
            own.get(&key(i)).as_deref(),
            Some(format!("value-{i}").as_str()),
            "{} on {own_name}",
            key(i)
        );
        assert_eq!(
            other.get(&key(i)),
            None,
            "{} must only be on {own_name}",
            key(i)
        );
    }
}

#[test]
fn resp3_output_through_turnout_equals_the_backend_holding_the_key() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let setup: &[&[&str]] = &[
        &["HSET", "web:h", "f1", "v1", "f2", "two words", "n", "3"],
        &["HSET", "tok:h", "a", "1", "b", ""],
        &["SADD", "session:s", "x", "y", "z"],
        &["SADD", "web:s", "1", "2", "3", "10"],
        &[
            "ZADD", "impact:z", "1.5", "a", "2", "b", "-3", "c", "1e3", "d",
        ],
        &["ZADD", "plain-z", "0.25", "q", "0", "r"],
    ];
    for args in setup {
        c.send_cmd(args);
        let reply = c.read_frame();
        assert!(
            reply.starts_with(b":"),
            "{args:?}: {}",
            support::show(&reply)
        );
    }

    // (command, the backend holding its key, a marker proving the direct output is RESP3)
    let cases: &[(&[&str], &RedisServer, &str)] = &[
        (&["HGETALL", "web:h"], &env.legacy, "=>"),
        (&["HGETALL", "tok:h"], &env.new, "=>"),
        (&["HGETALL", "tok:missing"], &env.new, "(empty hash)"),
        (&["SMEMBERS", "session:s"], &env.new, "~"),
        (&["SMEMBERS", "web:s"], &env.legacy, "~"),
        (&["SMEMBERS", "impact:missing"], &env.new, "(empty set)"),
        (
            &["ZRANGE", "impact:z", "0", "-1", "WITHSCORES"],
            &env.new,
            "(double)",
        ),
        (
            &["ZRANGE", "plain-z", "0", "-1", "WITHSCORES"],
            &env.legacy,
            "(double)",
        ),
        (&["ZSCORE", "impact:z", "a"], &env.new, "(double) 1.5"),
    ];
    for (args, backend, marker) in cases {
        // --no-raw prints RESP3 types (maps, sets, doubles) distinctly; the default output for
        // a pipe is raw. Both must match.
        for style in [&["--no-raw"][..], &[][..]] {
            let mut full = vec!["-3"];
            full.extend_from_slice(style);
            full.extend_from_slice(args);
            let direct = cli_ok(&backend.addr(), &full);
            let proxied = cli_ok(&env.turnout.proxy_addr(), &full);
            if !style.is_empty() {
                assert!(
                    direct.contains(marker),
                    "direct `redis-cli {}` is not the RESP3 output this test expects \
                     (no {marker:?}):\n{direct}",
                    full.join(" ")
                );
            }
            assert_eq!(
                proxied,
                direct,
                "`redis-cli {}` through turnout (left) differs from the same command directly \
                 against {} (right)",
                full.join(" "),
                backend.addr()
            );
        }
    }
}

#[test]
fn one_shot_commands_print_what_a_single_redis_prints() {
    let env = Env::standard();
    // The direct equivalent: one redis-server holding every key.
    let single = RedisServer::start();
    let steps: &[(&[&str], &str)] = &[
        (&["SET", "web:k", "v"], "OK\n"),
        (&["GET", "web:k"], "v\n"),
        (&["--no-raw", "GET", "web:k"], "\"v\"\n"),
        // tok:k does not exist yet: a nil prints as an empty line (raw) or (nil).
        (&["MGET", "web:k", "tok:k"], "v\n\n"),
        (
            &["--no-raw", "MGET", "web:k", "tok:k"],
            "1) \"v\"\n2) (nil)\n",
        ),
        (&["SET", "tok:k", "t"], "OK\n"),
        (&["MGET", "web:k", "tok:k"], "v\nt\n"),
        (
            &["--no-raw", "MGET", "web:k", "tok:k"],
            "1) \"v\"\n2) \"t\"\n",
        ),
        (
            &["--no-raw", "MGET", "tok:k", "web:k", "web:none"],
            "1) \"t\"\n2) \"v\"\n3) (nil)\n",
        ),
        (
            &["--no-raw", "EXISTS", "web:k", "tok:k", "session:none"],
            "(integer) 2\n",
        ),
    ];
    for (args, expected) in steps {
        let proxied = cli_ok(&env.turnout.proxy_addr(), args);
        let direct = cli_ok(&single.addr(), args);
        assert_eq!(
            direct,
            *expected,
            "`redis-cli {}` directly against one redis-server",
            args.join(" ")
        );
        assert_eq!(
            proxied,
            direct,
            "`redis-cli {}` through turnout (left) differs from one redis-server (right)",
            args.join(" ")
        );
    }
    assert_eq!(env.legacy.get("web:k").as_deref(), Some("v"));
    assert_eq!(env.new.get("tok:k").as_deref(), Some("t"));
    assert_eq!(env.new.get("web:k"), None);
    assert_eq!(env.legacy.get("tok:k"), None);
}
