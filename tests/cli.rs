//! The command line: `check` (every config problem at once, each with its path), `--help`,
//! `ctl routes|flip|history|shadow|cutover` against a running turnout, and `run` failures.

mod support;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{route_of, run_cli, standard_body, wait_until, Env, RedisServer, Turnout};

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
        &["ctl", "shadow", "--help"],
        &["ctl", "flip", "--help"],
        &["ctl", "cutover", "--help"],
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

    // A mode change and a shadow reset are mutating calls too; reading the report is not.
    let out = t.ctl(
        &[
            "flip",
            "web-cache",
            "--mode",
            "shadow",
            "--shadow",
            "new",
            "--reason",
            "x",
        ],
        &[],
    );
    assert_ne!(
        out.code(),
        0,
        "mode change without a token must fail: {out:?}"
    );
    assert_eq!(route_of(&t.routes(), "web-cache")["mode"], "direct");
    let out = t.ctl(&["shadow", "--reset"], &[]);
    assert_ne!(
        out.code(),
        0,
        "shadow reset without a token must fail: {out:?}"
    );
    assert!(out.stderr.contains("401"), "{out:?}");
    let out = t.ctl(
        &["shadow", "--reset", "web-cache"],
        &[("TURNOUT_ADMIN_TOKEN", "ctl-secret")],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let out = t.ctl(&["shadow", "--once"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
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

/// A namespace's row of `GET /v1/shadow`.
fn shadow_row(t: &Turnout, namespace: &str) -> serde_json::Value {
    let doc = t.admin_get("/v1/shadow").json();
    doc["namespaces"]
        .as_array()
        .expect("namespaces array")
        .iter()
        .find(|r| r["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no {namespace} in {doc}"))
        .clone()
}

/// The line of a table that starts with `first`, split into its cells.
fn table_row<'a>(stdout: &'a str, first: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row for {first}:\n{stdout}"))
}

#[test]
fn ctl_flip_sets_modes_and_keeps_the_old_form() {
    let env = Env::standard();
    let t = &env.turnout;

    // A mode without a target keeps the target.
    let out = t.ctl(
        &[
            "flip",
            "web-cache",
            "--mode",
            "shadow",
            "--shadow",
            "new",
            "--sample",
            "0.5",
            "--writes",
            "--reason",
            "try shadow",
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let route = route_of(&t.routes(), "web-cache").clone();
    assert_eq!(route["target"], "legacy", "{route}");
    assert_eq!(route["mode"], "shadow", "{route}");
    assert_eq!(route["shadow"], "new", "{route}");
    assert_eq!(route["sample"], 0.5, "{route}");
    assert_eq!(route["writes"], true, "{route}");
    assert!(
        out.stdout.contains("shadow->new 0.5 writes"),
        "{}",
        out.stdout
    );

    let out = t.ctl(&["routes"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let row = table_row(&out.stdout, "web-cache");
    assert_eq!(
        row[1..5],
        ["legacy", "shadow->new", "0.5", "writes"],
        "{}",
        out.stdout
    );
    assert_eq!(
        table_row(&out.stdout, "token-cache")[1..3],
        ["new", "direct"]
    );

    // Target and mode together.
    let out = t.ctl(
        &[
            "flip",
            "web-cache",
            "new",
            "--mode",
            "dual-write",
            "--secondary",
            "legacy",
            "--compare",
            "--sample",
            "1",
            "--reason",
            "dual",
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let route = route_of(&t.routes(), "web-cache").clone();
    assert_eq!(route["target"], "new", "{route}");
    assert_eq!(route["mode"], "dual-write", "{route}");
    assert_eq!(route["secondary"], "legacy", "{route}");
    assert_eq!(route["compare"], true, "{route}");
    let out = t.ctl(&["routes"], &[]);
    assert!(
        out.stdout.contains("dual-write->legacy compare 1.0"),
        "{}",
        out.stdout
    );

    // The API's refusals come through; nothing changes.
    let version = t.version();
    let out = t.ctl(
        &[
            "flip",
            "web-cache",
            "--mode",
            "shadow",
            "--reason",
            "no endpoint",
        ],
        &[],
    );
    assert_ne!(out.code(), 0, "shadow mode without --shadow: {out:?}");
    assert!(out.stderr.contains("shadow"), "{out:?}");
    let out = t.ctl(
        &[
            "flip",
            "web-cache",
            "--mode",
            "shadow",
            "--shadow",
            "nwe",
            "--reason",
            "typo",
        ],
        &[],
    );
    assert_ne!(out.code(), 0, "unknown shadow endpoint: {out:?}");
    let out = t.ctl(
        &[
            "flip",
            "web-cache",
            "--mode",
            "direct",
            "--writes",
            "--reason",
            "nonsense",
        ],
        &[],
    );
    assert_ne!(out.code(), 0, "--writes with direct: {out:?}");
    assert_eq!(t.version(), version);

    // The command line refuses what cannot mean anything.
    let out = t.ctl(&["flip", "web-cache", "--reason", "neither"], &[]);
    assert_eq!(out.code(), 2, "no target and no mode: {out:?}");
    let out = t.ctl(
        &[
            "flip",
            "web-cache",
            "new",
            "--shadow",
            "new",
            "--reason",
            "x",
        ],
        &[],
    );
    assert_eq!(out.code(), 2, "--shadow without --mode: {out:?}");
    let out = t.ctl(
        &["flip", "web-cache", "--mode", "mirror", "--reason", "x"],
        &[],
    );
    assert_eq!(out.code(), 2, "unknown mode: {out:?}");
    assert_eq!(t.version(), version);

    // Back to direct, and the old form still flips the target alone.
    let out = t.ctl(
        &["flip", "web-cache", "--mode", "direct", "--reason", "done"],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let out = t.ctl(&["flip", "web-cache", "legacy", "--reason", "back"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let route = route_of(&t.routes(), "web-cache").clone();
    assert_eq!(route["target"], "legacy", "{route}");
    assert_eq!(route["mode"], "direct", "{route}");
}

#[test]
fn ctl_shadow_reports_counts_mismatches_and_resets() {
    let env = Env::standard();
    let t = &env.turnout;

    // Before any shadow mode: every namespace is direct with nothing counted, so hidden.
    let out = t.ctl(&["shadow", "--once"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(!out.stdout.contains("web-cache"), "{}", out.stdout);
    let out = t.ctl(&["shadow", "--once", "--all"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    for name in ["web-cache", "token-cache", "impact", "default"] {
        assert!(
            out.stdout.contains(name),
            "--all lists {name}:\n{}",
            out.stdout
        );
    }

    let out = t.ctl(
        &[
            "flip",
            "web-cache",
            "--mode",
            "shadow",
            "--shadow",
            "new",
            "--sample",
            "1",
            "--reason",
            "compare legacy with new",
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");

    // Three keys the same on both, one different.
    for key in ["web:a", "web:b", "web:c"] {
        env.legacy.set(key, "same");
        env.new.set(key, "same");
    }
    env.legacy.set("web:drifted", "old-value");
    env.new.set("web:drifted", "new-value!");
    let mut client = t.client();
    for key in ["web:a", "web:b", "web:c", "web:drifted"] {
        let _: Option<String> = redis::cmd("GET").arg(key).query(&mut client).expect("GET");
    }
    let counted = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let row = shadow_row(t, "web-cache");
        row["counts"]["match"] == 3 && row["counts"]["mismatch"] == 1
    });
    assert!(counted, "{}", shadow_row(t, "web-cache"));

    // The table: the shadowed namespace with its counts; direct ones with nothing hidden.
    let out = t.ctl(&["shadow", "--once"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let header = table_row(&out.stdout, "NAMESPACE");
    assert!(
        header.contains(&"MATCH") && header.contains(&"MISMATCH"),
        "{}",
        out.stdout
    );
    let row = table_row(&out.stdout, "web-cache");
    // NAMESPACE TARGET MODE(2 words) MATCH MISMATCH SHADOW-ERR DROPPED MIRRORED COMPARED RATIO SINCE
    assert_eq!(
        row[1..11],
        [
            "legacy",
            "shadow->new",
            "1.0",
            "3",
            "1",
            "0",
            "0",
            "0",
            "4",
            "75.00%"
        ],
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("token-cache"), "{}", out.stdout);
    assert!(
        !out.stdout.contains('\x1b'),
        "no escapes without a terminal"
    );

    // --json: the API's document, once.
    for args in [&["shadow", "--json"][..], &["--json", "shadow", "--once"]] {
        let out = t.ctl(args, &[]);
        assert_eq!(out.code(), 0, "{args:?}: {out:?}");
        let doc: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} is not JSON ({e}): {}", out.stdout));
        let row = doc["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .find(|r| r["namespace"] == "web-cache")
            .expect("web-cache row")
            .clone();
        assert_eq!(row["counts"]["match"], 3, "{row}");
        assert_eq!(row["mode"], "shadow", "{row}");
    }

    // The mismatch log.
    let out = t.ctl(&["shadow", "--mismatches"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let row = table_row(&out.stdout, "TIME");
    assert_eq!(
        row,
        [
            "TIME",
            "NAMESPACE",
            "COMMAND",
            "OUTCOME",
            "KEY",
            "PRIMARY",
            "SHADOW"
        ],
        "{}",
        out.stdout
    );
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("web:drifted"))
        .unwrap_or_else(|| panic!("the mismatched key is listed:\n{}", out.stdout));
    assert!(
        line.contains("web-cache") && line.contains("mismatch") && line.contains("get"),
        "{line}"
    );
    assert!(
        !out.stdout.contains("web:a"),
        "matches are not logged:\n{}",
        out.stdout
    );
    let out = t.ctl(
        &[
            "shadow",
            "--mismatches",
            "--namespace",
            "web-cache",
            "--limit",
            "1",
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("web:drifted"), "{}", out.stdout);
    let out = t.ctl(
        &["shadow", "--mismatches", "--namespace", "token-cache"],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(!out.stdout.contains("web:drifted"), "{}", out.stdout);
    let out = t.ctl(&["--json", "shadow", "--mismatches"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("--mismatches --json is not JSON ({e}): {}", out.stdout));
    assert_eq!(doc["mismatches"][0]["key"], "web:drifted", "{doc}");
    let out = t.ctl(
        &["shadow", "--mismatches", "--namespace", "no-such-namespace"],
        &[],
    );
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("no-such-namespace"), "{out:?}");
    let out = t.ctl(&["shadow", "--mismatches", "--limit", "0"], &[]);
    assert_eq!(out.code(), 2, "{out:?}");

    // Reset: one namespace, then all of them.
    let out = t.ctl(&["shadow", "--reset", "web-cache"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let row = shadow_row(t, "web-cache");
    for outcome in ["match", "mismatch", "shadow_error", "dropped", "mirrored"] {
        assert_eq!(row["counts"][outcome], 0, "{outcome} after reset: {row}");
    }
    assert_eq!(row["compared"], 0, "{row}");
    assert!(row["match_ratio"].is_null(), "{row}");
    let row = table_row(&out.stdout, "web-cache");
    assert_eq!(
        row[4..11],
        ["0", "0", "0", "0", "0", "0", "-"],
        "{}",
        out.stdout
    );
    let out = t.ctl(&["shadow", "--mismatches"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(!out.stdout.contains("web:drifted"), "{}", out.stdout);

    let _: Option<String> = redis::cmd("GET")
        .arg("web:a")
        .query(&mut client)
        .expect("GET");
    assert!(wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || shadow_row(t, "web-cache")["counts"]["match"] == 1
    ));
    let out = t.ctl(&["shadow", "--reset"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(shadow_row(t, "web-cache")["counts"]["match"], 0);
    let out = t.ctl(&["shadow", "--reset", "no-such-namespace"], &[]);
    assert_ne!(out.code(), 0, "{out:?}");
}

#[test]
fn ctl_shadow_live_view_refreshes_until_interrupted() {
    let env = Env::standard();
    let t = &env.turnout;
    let out = t.ctl(
        &[
            "flip",
            "web-cache",
            "--mode",
            "shadow",
            "--shadow",
            "new",
            "--reason",
            "live",
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");

    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let mut child = Command::new(support::turnout::binary())
        .args([
            "ctl",
            "--admin",
            &t.admin_addr(),
            "shadow",
            "--interval",
            "100ms",
        ])
        .env_remove("TURNOUT_ADMIN")
        .env_remove("TURNOUT_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ctl shadow");
    let frames = || {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .matches("web-cache")
            .count()
    };
    let refreshed = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        frames() >= 3
    });
    let still_running = matches!(child.try_wait(), Ok(None));
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    let exited = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        !matches!(child.try_wait(), Ok(None))
    });
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(refreshed, "fewer than 3 frames in 10s:\n{stdout}");
    assert!(still_running, "the live view exited on its own:\n{stdout}");
    assert!(interrupted.success());
    assert!(exited, "the live view ignored SIGINT");
    assert_eq!(status.code(), Some(0), "{status}\n{stdout}");
    assert!(!stdout.contains('\x1b'), "no escapes without a terminal");

    // A bad address fails at once instead of refreshing an error forever.
    let out = run_cli(&["ctl", "--admin", "127.0.0.1:1", "shadow"], &[]);
    assert_ne!(out.code(), 0, "{out:?}");
    let out = run_cli(&["ctl", "shadow", "--interval", "0s"], &[]);
    assert_eq!(out.code(), 2, "{out:?}");
}

/// The lines of a `ctl cutover` output that show a step: `STEP STATUS TOOK ms`.
fn step_lines(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.len() == 4 && cells[3] == "ms" && cells[2].parse::<f64>().is_ok())
        .map(|cells| (cells[0].to_string(), cells[1].to_string()))
        .collect()
}

#[test]
fn ctl_cutover_with_the_drain_fence_completes() {
    let env = Env::standard();
    let t = &env.turnout;
    env.new.set("web:page", "on new");
    let mut client = t.client();
    let before: Option<String> = redis::cmd("GET")
        .arg("web:page")
        .query(&mut client)
        .expect("GET");
    assert_eq!(before, None, "web-cache starts on legacy");

    let out = t.ctl(
        &[
            "cutover",
            "web-cache",
            "--to",
            "new",
            "--fence",
            "drain",
            "--reason",
            "move the cache",
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let steps = step_lines(&out.stdout);
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["hold", "drain", "flip"], "{}", out.stdout);
    assert!(steps.iter().all(|(_, st)| st == "ok"), "{}", out.stdout);
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("completed in ") && last.contains("pause") && last.contains("held"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains('\x1b'),
        "no escapes without a terminal"
    );

    let out = t.ctl(&["routes"], &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        table_row(&out.stdout, "web-cache")[1],
        "new",
        "{}",
        out.stdout
    );
    let after: Option<String> = redis::cmd("GET")
        .arg("web:page")
        .query(&mut client)
        .expect("GET");
    assert_eq!(after.as_deref(), Some("on new"));
    let entries = t.admin_get("/v1/history").json()["entries"].clone();
    assert!(
        entries[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("move the cache")),
        "{entries}"
    );

    // --json: the final report, and back again.
    let out = t.ctl(
        &[
            "--json",
            "cutover",
            "web-cache",
            "--to",
            "legacy",
            "--fence",
            "drain",
            "--timeout",
            "500ms",
            "--reason",
            "back",
        ],
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("ctl --json cutover is not JSON ({e}): {}", out.stdout));
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(report["namespace"], "web-cache", "{report}");
    assert_eq!(report["from"], "new", "{report}");
    assert_eq!(report["to"], "legacy", "{report}");
    assert_eq!(report["timeout_ms"], 500, "{report}");
    assert!(report["failed_step"].is_null(), "{report}");
    assert!(report["pause_ms"].as_f64().is_some(), "{report}");
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3, "{report}");
    assert!(steps.iter().all(|s| s["took_ms"].is_number()), "{report}");
    assert_eq!(t.target("web-cache"), "legacy");
}

#[test]
fn ctl_cutover_aborts_when_the_replication_fence_cannot_pass() {
    let env = Env::standard();
    let t = &env.turnout;
    let version = t.version();
    // `new` does not replicate from `legacy`: the fence key never reaches it.
    let out = t.ctl(
        &[
            "cutover",
            "web-cache",
            "--to",
            "new",
            "--fence",
            "replication",
            "--timeout",
            "300ms",
            "--reason",
            "not a replica",
        ],
        &[],
    );
    assert_eq!(out.code(), 1, "{out:?}");
    let steps = step_lines(&out.stdout);
    assert_eq!(
        steps.last(),
        Some(&("fence".to_string(), "failed".to_string())),
        "{}",
        out.stdout
    );
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("aborted at fence: "), "{}", out.stdout);
    assert!(out.stderr.contains("aborted"), "{out:?}");
    assert_eq!(t.target("web-cache"), "legacy");
    assert_eq!(t.version(), version, "an aborted cutover changes nothing");
    let out = t.ctl(&["routes"], &[]);
    assert_eq!(
        table_row(&out.stdout, "web-cache")[1],
        "legacy",
        "{}",
        out.stdout
    );

    // The report in JSON says the same; the exit status too.
    let out = t.ctl(
        &[
            "cutover",
            "web-cache",
            "--to",
            "new",
            "--timeout",
            "0.2",
            "--reason",
            "again",
            "--json",
        ],
        &[],
    );
    assert_eq!(out.code(), 1, "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("ctl --json cutover is not JSON ({e}): {}", out.stdout));
    assert_eq!(report["outcome"], "aborted", "{report}");
    assert_eq!(report["failed_step"], "fence", "{report}");
    assert!(report["error"].is_string(), "{report}");
    assert_eq!(t.target("web-cache"), "legacy");
}

#[test]
fn ctl_cutover_refusals_exit_2_with_the_apis_message() {
    let env = Env::custom(
        |b| {
            b.admin_option("token_env = \"TURNOUT_TEST_CUTOVER_TOKEN\"")
                .env("TURNOUT_TEST_CUTOVER_TOKEN", "cut-secret")
        },
        "legacy",
    );
    let t = &env.turnout;
    let token = [("TURNOUT_ADMIN_TOKEN", "cut-secret")];
    let version = t.version();
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["cutover", "no-such-namespace", "--to", "new"],
            &["404", "unknown namespace \"no-such-namespace\""],
        ),
        (
            &["cutover", "web-cache", "--to", "nwe"],
            &["400", "unknown endpoint \"nwe\""],
        ),
        (
            &["cutover", "web-cache", "--to", "legacy"],
            &["400", "already routes to"],
        ),
        (
            &["cutover", "web-cache", "--to", "new", "--reason", " "],
            &[],
        ),
    ];
    for (args, words) in cases {
        let mut args = args.to_vec();
        if !args.contains(&"--reason") {
            args.extend(["--reason", "refused"]);
        }
        let out = t.ctl(&args, &token);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        for word in words {
            assert!(out.stderr.contains(word), "{args:?}: {out:?}");
        }
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
    // A mutating call: no token, no cutover.
    let out = t.ctl(
        &[
            "cutover",
            "web-cache",
            "--to",
            "new",
            "--fence",
            "drain",
            "--reason",
            "x",
        ],
        &[],
    );
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(out.stderr.contains("401"), "{out:?}");
    // The command line's own refusals.
    for args in [
        &["cutover", "web-cache", "--to", "new"][..],
        &["cutover", "web-cache", "--reason", "x"],
        &[
            "cutover",
            "web-cache",
            "--to",
            "new",
            "--reason",
            "x",
            "--fence",
            "none",
        ],
        &[
            "cutover",
            "web-cache",
            "--to",
            "new",
            "--reason",
            "x",
            "--timeout",
            "0s",
        ],
        &[
            "cutover",
            "web-cache",
            "--to",
            "new",
            "--reason",
            "x",
            "--timeout",
            "soon",
        ],
    ] {
        let out = t.ctl(args, &token);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
    }
    assert_eq!(t.version(), version);
    assert_eq!(t.target("web-cache"), "legacy");

    // One cutover of a namespace at a time: the second is refused (409) while the first runs.
    let mut first = Command::new(support::turnout::binary())
        .args([
            "ctl",
            "--admin",
            &t.admin_addr(),
            "cutover",
            "web-cache",
            "--to",
            "new",
            "--timeout",
            "2s",
            "--reason",
            "slow fence",
        ])
        .env_remove("TURNOUT_ADMIN")
        .env("TURNOUT_ADMIN_TOKEN", "cut-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ctl cutover");
    let running = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        let r = t.admin_get("/v1/cutovers/1");
        r.status == 200 && r.json()["outcome"] == "running"
    });
    let out = t.ctl(
        &[
            "cutover",
            "web-cache",
            "--to",
            "new",
            "--fence",
            "drain",
            "--reason",
            "too",
        ],
        &token,
    );
    let status = first.wait().expect("wait for the first cutover");
    assert!(running, "the first cutover never showed as running");
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(
        out.stderr.contains("409") && out.stderr.contains("already running"),
        "{out:?}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "the first cutover aborts at its fence"
    );
    assert_eq!(t.target("web-cache"), "legacy");
}
