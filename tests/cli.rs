//! The command line: `check` (every config problem at once, each with its path), `--help`,
//! `ctl routes|flip|history` against a running turnout, and `run` failures.

mod support;

use std::net::TcpListener;

use support::{run_cli, standard_body, Env, RedisServer, Turnout};

const GOOD: &str = r#"[proxy]
listen = "127.0.0.1:16380"
connect_timeout = "1s"
shutdown_grace = "10s"

[admin]
listen = "127.0.0.1:19900"

[state]
path = "turnout-state.json"

[endpoints.legacy]
address = "127.0.0.1:16379"

[endpoints.new]
address = "127.0.0.1:16390"

[[namespaces]]
name = "web-cache"
prefixes = ["web:"]
target = "legacy"

[[namespaces]]
name = "token-cache"
prefixes = ["tok:", "session:"]
target = "new"

[default]
target = "legacy"
"#;

fn check(config: &str) -> support::CliOutput {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("turnout.toml");
    std::fs::write(&path, config).expect("write config");
    run_cli(&["check", "--config", &path.to_string_lossy()], &[])
}

#[test]
fn check_accepts_a_good_config() {
    let out = check(GOOD);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout.starts_with("config OK"),
        "stdout: {:?}",
        out.stdout
    );
}

#[test]
fn check_reports_every_problem_at_once_with_its_path() {
    let bad =
        GOOD.replace(
            "connect_timeout = \"1s\"",
            "connect_timeout = \"1s\"\ncolour = \"blue\"",
        )
        .replace(
            "prefixes = [\"tok:\", \"session:\"]\ntarget = \"new\"",
            "prefixes = [\"tok:\", \"session:\"]\ntarget = \"nwe\"",
        ) + "\n[[namespaces]]\nname = \"web-again\"\nprefixes = [\"web:\"]\ntarget = \"legacy\"\n";
    let out = check(&bad);
    assert_eq!(out.code(), 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let find = |path: &str, words: &[&str]| {
        lines.iter().any(|l| {
            let lower = l.to_lowercase();
            l.starts_with(path) && words.iter().all(|w| lower.contains(w))
        })
    };
    assert!(
        find("proxy", &["colour", "unknown field"]),
        "unknown field proxy.colour not reported with its path:\n{}",
        out.stderr
    );
    assert!(
        find("namespaces[1].target: ", &["unknown endpoint \"nwe\""]),
        "unknown endpoint not reported as namespaces[1].target:\n{}",
        out.stderr
    );
    assert!(
        find("namespaces[2]", &["duplicate prefix", "web:"]),
        "duplicate prefix not reported under namespaces[2]:\n{}",
        out.stderr
    );
}

#[test]
fn check_reports_each_kind_of_problem() {
    let cases: [(&str, String, &str, &[&str]); 8] = [
        (
            "duplicate namespace name",
            GOOD.replace("name = \"token-cache\"", "name = \"web-cache\""),
            "namespaces[1]",
            &["duplicate", "web-cache"],
        ),
        (
            "empty prefix list",
            GOOD.replace("prefixes = [\"web:\"]", "prefixes = []"),
            "namespaces[0]",
            &["prefix"],
        ),
        (
            "namespace named default",
            GOOD.replace("name = \"web-cache\"", "name = \"default\""),
            "namespaces[0]",
            &["default"],
        ),
        (
            "bad address",
            GOOD.replace(
                "address = \"127.0.0.1:16379\"",
                "address = \"not-an-address\"",
            ),
            "endpoints.legacy",
            &["address"],
        ),
        (
            "bad duration",
            GOOD.replace("connect_timeout = \"1s\"", "connect_timeout = \"soon\""),
            "proxy.connect_timeout",
            &[],
        ),
        (
            "unknown default endpoint",
            GOOD.replace(
                "[default]\ntarget = \"legacy\"",
                "[default]\ntarget = \"nwe\"",
            ),
            "default.target",
            &["nwe"],
        ),
        (
            "non-loopback admin listen without a token",
            GOOD.replace("listen = \"127.0.0.1:19900\"", "listen = \"0.0.0.0:19900\""),
            "admin",
            &["token"],
        ),
        (
            "unknown top-level section",
            format!("{GOOD}\n[extra]\nx = 1\n"),
            "",
            &["extra"],
        ),
    ];
    for (what, config, path, words) in cases {
        let out = check(&config);
        assert_eq!(out.code(), 1, "{what}: {out:?}");
        let reported = out.stderr.lines().any(|l| {
            let lower = l.to_lowercase();
            l.starts_with(path) && l.contains(": ") && words.iter().all(|w| lower.contains(w))
        });
        assert!(
            reported,
            "{what}: expected a line `{path}...: ...` mentioning {words:?}, stderr:\n{}",
            out.stderr
        );
    }
}

#[test]
fn check_of_a_missing_file_fails() {
    let out = run_cli(&["check", "--config", "/nonexistent/turnout.toml"], &[]);
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("/nonexistent/turnout.toml"), "{out:?}");
}

#[test]
fn help_exits_zero() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["ctl", "--help"],
        &["demo", "--help"],
    ] {
        let out = run_cli(args, &[]);
        assert_eq!(out.code(), 0, "turnout {args:?}: {out:?}");
        assert!(
            out.stdout.to_lowercase().contains("usage"),
            "turnout {args:?} prints usage: {out:?}"
        );
    }
    let top = run_cli(&["--help"], &[]).stdout;
    for sub in ["run", "check", "ctl", "demo"] {
        assert!(top.contains(sub), "--help lists {sub}:\n{top}");
    }
}

#[test]
fn ctl_lists_flips_and_shows_history() {
    let env = Env::standard();
    let t = &env.turnout;

    let out = t.ctl(&["routes"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    for name in ["web-cache", "token-cache", "impact", "default"] {
        assert!(
            out.stdout.contains(name),
            "ctl routes lists {name}:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("legacy") && out.stdout.contains("new"),
        "{}",
        out.stdout
    );

    let out = t.ctl(&["--json", "routes"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("ctl --json routes is not JSON ({e}): {}", out.stdout));
    assert!(json.to_string().contains("web-cache"), "{json}");

    let out = t.ctl(&["flip", "web-cache", "new", "--reason", "ctl test"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(t.target("web-cache"), "new");
    let entries = t.admin_get("/v1/history").json()["entries"].clone();
    assert_eq!(entries[0]["reason"], "ctl test", "{entries}");

    let out = t.ctl(&["history"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout.contains("web-cache") && out.stdout.contains("ctl test"),
        "{}",
        out.stdout
    );
    let out = t.ctl(&["--json", "history"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("ctl --json history is not JSON ({e}): {}", out.stdout));

    // Failures exit non-zero.
    let out = t.ctl(&["flip", "no-such-namespace", "new", "--reason", "x"], &[]);
    assert_ne!(out.code(), 0, "flip of an unknown namespace: {out:?}");
    let out = t.ctl(&["flip", "web-cache", "nwe", "--reason", "x"], &[]);
    assert_ne!(out.code(), 0, "flip to an unknown endpoint: {out:?}");
    assert_eq!(t.target("web-cache"), "new");

    // The admin address can come from TURNOUT_ADMIN.
    let out = run_cli(&["ctl", "routes"], &[("TURNOUT_ADMIN", &t.admin_addr())]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("web-cache"), "{}", out.stdout);
}

#[test]
fn ctl_sends_the_token() {
    let env = Env::custom(
        |b| {
            b.admin_option("token_env = \"TURNOUT_TEST_CTL_TOKEN\"")
                .env("TURNOUT_TEST_CTL_TOKEN", "ctl-secret")
        },
        "legacy",
    );
    let t = &env.turnout;
    let out = t.ctl(&["flip", "web-cache", "new", "--reason", "no token"], &[]);
    assert_ne!(out.code(), 0, "flip without a token must fail: {out:?}");
    assert_eq!(t.target("web-cache"), "legacy");

    let out = t.ctl(
        &[
            "--token",
            "ctl-secret",
            "flip",
            "web-cache",
            "new",
            "--reason",
            "token flag",
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(t.target("web-cache"), "new");

    let out = t.ctl(
        &["flip", "web-cache", "legacy", "--reason", "token env"],
        &[("TURNOUT_ADMIN_TOKEN", "ctl-secret")],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(t.target("web-cache"), "legacy");
}

#[test]
fn run_fails_clearly_when_the_proxy_port_is_taken() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let failed = Turnout::builder(&standard_body(&legacy, &new, "legacy"))
        .proxy_listen(&addr)
        .start_expect_failure();
    assert_ne!(failed.status.code(), Some(0), "{}", failed.stderr);
    assert!(
        failed.status.code().is_some(),
        "exited by signal: {}",
        failed.status
    );
    let lower = failed.stderr.to_lowercase();
    assert!(
        failed.stderr.contains(&addr) || lower.contains("in use"),
        "the error should name the address or say it is in use:\n{}",
        failed.stderr
    );
    drop(taken);
}

#[test]
fn run_fails_on_a_bad_config() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let body =
        standard_body(&legacy, &new, "legacy").replace("target = \"new\"", "target = \"nwe\"");
    let failed = Turnout::builder(&body).start_expect_failure();
    assert_ne!(failed.status.code(), Some(0), "{}", failed.stderr);
    assert!(failed.stderr.contains("nwe"), "{}", failed.stderr);
}
