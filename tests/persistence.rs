//! Persistence: route changes survive a restart (state file wins over the config, and says so
//! in the log), history survives too, and a corrupt state file stops start-up without being
//! overwritten.

mod support;

use support::{route_of, standard_body, Env, RedisServer, Turnout};

#[test]
fn a_flip_survives_a_restart_and_the_state_file_wins_over_the_config() {
    let mut env = Env::standard();
    let before = env.turnout.version();
    let doc = env.turnout.flip("web-cache", "new", "persist me");
    assert_eq!(doc["version"].as_u64(), Some(before + 1));

    // The state file is written before the API answers, and is JSON.
    let state = std::fs::read_to_string(env.turnout.state_path())
        .expect("state file exists once a change was accepted");
    serde_json::from_str::<serde_json::Value>(&state)
        .unwrap_or_else(|e| panic!("state file is not JSON ({e}): {state}"));

    // Written atomically: no temporary file is left next to it.
    let leftovers: Vec<String> = std::fs::read_dir(env.turnout.dir())
        .expect("read turnout dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name != "state.json" && name != "turnout.toml" && !name.ends_with(".log"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "unexpected files next to the state file: {leftovers:?}"
    );

    env.turnout.restart(); // SIGTERM, exit code 0, start again

    let routes = env.turnout.routes();
    assert_eq!(routes["version"].as_u64(), Some(before + 1), "{routes}");
    assert_eq!(env.turnout.target("web-cache"), "new");
    assert_eq!(env.turnout.target("token-cache"), "new");
    assert_eq!(env.turnout.target("default"), "legacy");

    let mut c = env.turnout.raw();
    c.expect_cmd(&["SET", "web:after-restart", "1"], b"+OK\r\n");
    assert_eq!(env.new.get("web:after-restart").as_deref(), Some("1"));
    assert_eq!(env.legacy.get("web:after-restart"), None);

    let log = env.turnout.log();
    let line = log.lines().find(|l| {
        let l = l.to_lowercase();
        l.contains("state")
            && [
                "overrid",
                "wins",
                "instead of",
                "replac",
                "differs",
                "takes precedence",
            ]
            .iter()
            .any(|w| l.contains(w))
    });
    match line {
        Some(line) => eprintln!("state override logged as: {line}"),
        None => {
            panic!("the log after restart should say the state file overrides the config:\n{log}")
        }
    }
}

#[test]
fn history_and_route_metadata_survive_a_restart() {
    let mut env = Env::standard();
    env.turnout.flip("web-cache", "new", "first");
    env.turnout.flip("impact", "legacy", "second");
    let routes_before = env.turnout.routes();
    let history_before = env.turnout.admin_get("/v1/history").json();
    assert_eq!(history_before["entries"].as_array().map(Vec::len), Some(2));

    env.turnout.restart();

    let history_after = env.turnout.admin_get("/v1/history").json();
    assert_eq!(history_after, history_before, "history after restart");
    let routes_after = env.turnout.routes();
    assert_eq!(
        routes_after["version"], routes_before["version"],
        "{routes_after}"
    );
    for ns in ["web-cache", "token-cache", "impact", "default"] {
        let (before, after) = (route_of(&routes_before, ns), route_of(&routes_after, ns));
        assert_eq!(after["target"], before["target"], "{ns} after restart");
    }
    // Changed routes keep their reason and time of change.
    for ns in ["web-cache", "impact"] {
        let (before, after) = (route_of(&routes_before, ns), route_of(&routes_after, ns));
        assert_eq!(
            after["reason"], before["reason"],
            "{ns} reason after restart"
        );
        assert_eq!(
            after["changed_at"], before["changed_at"],
            "{ns} changed_at after restart"
        );
    }

    // Versions keep counting from where they were.
    let doc = env.turnout.flip("web-cache", "legacy", "third");
    assert_eq!(
        doc["version"].as_u64(),
        Some(routes_before["version"].as_u64().expect("version") + 1)
    );
    let entries = env.turnout.admin_get("/v1/history").json()["entries"]
        .as_array()
        .expect("entries")
        .clone();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2]["reason"], "third");
}

#[test]
fn a_corrupt_state_file_stops_start_up_and_is_left_untouched() {
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    for garbage in ["this is {not json", "{\"version\": 3, \"routes\": [", ""] {
        let failed = Turnout::builder(&standard_body(&legacy, &new, "legacy"))
            .state_contents(garbage)
            .start_expect_failure();
        let state_path = failed.turnout.state_path();
        assert_ne!(
            failed.status.code(),
            Some(0),
            "state {garbage:?}: turnout run must fail: {}",
            failed.stderr
        );
        assert!(
            failed.status.code().is_some(),
            "state {garbage:?}: turnout should exit, not die of a signal ({})",
            failed.status
        );
        assert!(
            failed.stderr.contains(&*state_path.to_string_lossy()),
            "state {garbage:?}: the error should name the state file {}:\n{}",
            state_path.display(),
            failed.stderr
        );
        let after = std::fs::read_to_string(&state_path).expect("state file still there");
        assert_eq!(
            after, garbage,
            "the corrupt state file must not be rewritten"
        );
    }
}
