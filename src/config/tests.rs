use super::*;

/// A valid two-endpoint config (legacy, new; web-cache on legacy, token-cache on new), shared
/// by the unit tests of other modules.
pub(crate) const GOOD: &str = r#"
[proxy]
listen = "127.0.0.1:6380"
[admin]
listen = "127.0.0.1:9900"
[state]
path = "turnout-state.json"
[endpoints.legacy]
address = "127.0.0.1:6379"
[endpoints.new]
address = "127.0.0.1:6390"
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

fn no_env(_: &str) -> Option<String> {
    None
}

/// [`GOOD`], validated.
pub(crate) fn good() -> Config {
    match Config::from_toml(GOOD, &no_env) {
        Ok(config) => config,
        Err(e) => panic!("the shared test config is invalid: {e}"),
    }
}

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml(text, &no_env) {
        Ok(_) => Vec::new(),
        Err(e) => e.lines(),
    }
}

#[test]
fn the_issue_example_is_valid_with_defaults() {
    let config = Config::from_toml(GOOD, &no_env).expect("valid");
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:6380");
    assert_eq!(config.proxy.max_clients, DEFAULT_MAX_CLIENTS);
    assert_eq!(config.proxy.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(config.endpoints.len(), 2);
    let new = config.endpoint_id("new").expect("new exists");
    assert_eq!(config.namespaces[1].target, new);
    assert_eq!(config.namespaces[1].prefixes, vec!["tok:", "session:"]);
    assert_eq!(config.endpoints[config.default_target].name, "legacy");
    assert!(config.admin.token.is_none());
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let text = GOOD
        .replace(
            "listen = \"127.0.0.1:6380\"",
            "listen = \"127.0.0.1:6380\"\nlisen = 1",
        )
        .replace(
            "prefixes = [\"tok:\", \"session:\"]",
            "prefixes = [\"tok:\", \"web:\"]",
        )
        .replace("target = \"new\"", "target = \"nwe\"")
        .replace(
            "[default]\ntarget = \"legacy\"",
            "[default]\ntarget = \"legacy\"\nextra = true",
        );
    let lines = problems(&text);
    assert!(
        lines.contains(&"proxy.lisen: unknown field".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"default.extra: unknown field".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"namespaces[1].prefixes[1]: duplicate prefix \"web:\" (also in namespaces[0] \"web-cache\")".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(
            &"namespaces[1].target: unknown endpoint \"nwe\" (known: legacy, new)".to_string()
        ),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 4, "{lines:?}");
}

#[test]
fn duplicate_names_reserved_names_and_empty_prefixes_are_errors() {
    let text = GOOD
        .replace("name = \"token-cache\"", "name = \"web-cache\"")
        .replace("prefixes = [\"web:\"]", "prefixes = [\"\"]");
    let lines = problems(&text);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("namespaces[1].name: duplicate namespace \"web-cache\"")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("namespaces[0].prefixes[0]: an empty prefix")),
        "{lines:?}"
    );
    let lines = problems(&GOOD.replace("name = \"web-cache\"", "name = \"default\""));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("namespaces[0].name: \"default\" is reserved")),
        "{lines:?}"
    );
}

#[test]
fn addresses_and_durations_are_parsed() {
    let text = GOOD
        .replace(
            "listen = \"127.0.0.1:6380\"",
            "listen = \"localhost\"\nconnect_timeout = \"soon\"\nshutdown_grace = \"0s\"",
        )
        .replace(
            "address = \"127.0.0.1:6390\"",
            "address = \"redis.example:0\"",
        );
    let lines = problems(&text);
    assert!(
        lines.contains(&"proxy.listen: \"localhost\" is not an IP:port address".to_string()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("proxy.connect_timeout: \"soon\" is not a duration")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"proxy.shutdown_grace: must be greater than 0".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(
            &"endpoints.new.address: \"redis.example:0\": port must be 1-65535".to_string()
        ),
        "{lines:?}"
    );
    let text = GOOD.replace(
        "listen = \"127.0.0.1:6380\"",
        "listen = \"127.0.0.1:6380\"\nconnect_timeout = \"250ms\"",
    );
    let config = Config::from_toml(&text, &no_env).expect("valid");
    assert_eq!(config.proxy.connect_timeout, Duration::from_millis(250));
}

#[test]
fn admin_token_comes_from_the_environment_and_is_never_printed() {
    let text = GOOD.replace(
        "listen = \"127.0.0.1:9900\"",
        "listen = \"127.0.0.1:9900\"\ntoken_env = \"T\"",
    );
    let lines = problems(&text);
    assert_eq!(
        lines,
        vec!["admin.token_env: environment variable T is not set or empty".to_string()]
    );
    let env = |name: &str| (name == "T").then(|| "s3cret".to_string());
    let config = Config::from_toml(&text, &env).expect("valid");
    let token = config.admin.token.as_ref().expect("token");
    assert_eq!(token.expose(), "s3cret");
    assert!(!format!("{config:?}").contains("s3cret"));
}

#[test]
fn a_non_loopback_admin_needs_a_token() {
    let text = GOOD.replace("listen = \"127.0.0.1:9900\"", "listen = \"0.0.0.0:9900\"");
    let lines = problems(&text);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("admin.listen: 0.0.0.0:9900 is not a loopback address"),
        "{lines:?}"
    );
}

#[test]
fn syntax_and_type_errors_say_where() {
    let err = Config::from_toml("[proxy\nlisten=1", &no_env).expect_err("bad toml");
    assert!(matches!(err, ConfigError::Syntax(_)));
    let err = Config::from_toml(
        &GOOD.replace("address = \"127.0.0.1:6379\"", "address = 6379"),
        &no_env,
    )
    .expect_err("bad type");
    assert!(err.to_string().contains("address"), "{err}");
}

#[test]
fn extra_keyed_commands_are_checked() {
    let text = format!(
        "{GOOD}\n[[commands]]\nname = \"JSON.GET\"\nfirst_key = 1\nlast_key = 1\n\
         [[commands]]\nname = \"get\"\nfirst_key = 0\nlast_key = -1\nstep = 0\n"
    );
    let lines = problems(&text);
    assert_eq!(
        lines,
        vec![
            "commands[1].name: \"get\" is in the command table already".to_string(),
            "commands[1].first_key: must be at least 1 (0 is the command name)".to_string(),
            "commands[1].step: must be at least 1".to_string(),
        ]
    );
    let ok = format!("{GOOD}\n[[commands]]\nname = \"JSON.GET\"\nfirst_key = 1\nlast_key = 1\n");
    let config = Config::from_toml(&ok, &no_env).expect("valid");
    assert_eq!(config.extra_commands[0].name, "json.get");
}

#[test]
fn limits_that_would_overflow_internal_ids_are_errors() {
    let text = GOOD.replace(
        "listen = \"127.0.0.1:6380\"",
        "listen = \"127.0.0.1:6380\"\nmax_clients = 99999999999",
    );
    let lines = problems(&text);
    assert_eq!(
        lines,
        vec![format!(
            "proxy.max_clients: must be at most {MAX_CLIENTS_LIMIT}"
        )]
    );
}

#[test]
fn endpoint_credentials_come_from_the_environment_or_a_file_and_are_never_printed() {
    let text = GOOD
        .replace(
            "address = \"127.0.0.1:6379\"",
            "address = \"127.0.0.1:6379\"\nusername = \"app\"\npassword_env = \"EP_PW\"",
        )
        .replace(
            "address = \"127.0.0.1:6390\"",
            "address = \"127.0.0.1:6390\"\nusername = \"\"",
        );
    let env = |name: &str| (name == "EP_PW").then(|| "ep-secret".to_string());
    let lines = match Config::from_toml(&text, &env) {
        Ok(_) => Vec::new(),
        Err(e) => e.lines(),
    };
    assert_eq!(
        lines,
        vec![
            "endpoints.new: set exactly one of password_env and password_file".to_string(),
            "endpoints.new.username: must not be empty".to_string(),
        ]
    );
    let text = text.replace("username = \"\"", "password_env = \"EP_PW\"");
    let config = Config::from_toml(&text, &env).expect("valid");
    let legacy = &config.endpoints[config.endpoint_id("legacy").expect("legacy")];
    let creds = legacy.credentials.as_ref().expect("credentials");
    assert_eq!(creds.username.as_deref(), Some("app"));
    assert_eq!(creds.password.expose(), "ep-secret");
    let new = &config.endpoints[config.endpoint_id("new").expect("new")];
    assert!(new
        .credentials
        .as_ref()
        .is_some_and(|c| c.username.is_none()));
    assert!(!format!("{config:?}").contains("ep-secret"));
}

/// [`GOOD`] with `tls` lines under `[endpoints.new.tls]` and `proxy_tls` under `[proxy.tls]`.
fn with_tls(tls: &str, proxy_tls: &str) -> String {
    let mut text = GOOD.replace(
        "address = \"127.0.0.1:6390\"\n",
        &format!("address = \"127.0.0.1:6390\"\n[endpoints.new.tls]\n{tls}\n"),
    );
    if !proxy_tls.is_empty() {
        text = text.replace("[admin]", &format!("[proxy.tls]\n{proxy_tls}\n[admin]"));
    }
    text
}

/// A self-signed certificate and its key, written to `dir` as `NAME.pem` and `NAME.key`.
fn self_signed(dir: &Path, name: &str) -> (String, String) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("self-signed");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, generated.cert.pem()).expect("write cert");
    std::fs::write(&key, generated.key_pair.serialize_pem()).expect("write key");
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn tls_files_are_read_and_checked_at_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path(), "a");
    let text = with_tls(
        &format!(
            "ca_file = \"{cert}\"\nserver_name = \"localhost\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\""
        ),
        &format!("cert_file = \"{cert}\"\nkey_file = \"{key}\""),
    );
    let config = Config::from_toml(&text, &no_env).expect("valid");
    let proxy = config.proxy.tls.as_ref().expect("[proxy.tls]");
    assert_eq!(proxy.cert_file, PathBuf::from(&cert));
    let new = &config.endpoints[config.endpoint_id("new").expect("new")];
    let tls = new.tls.as_ref().expect("[endpoints.new.tls]");
    assert_eq!(tls.server_name.as_deref(), Some("localhost"));
    assert_eq!(tls.key_file, Some(PathBuf::from(&key)));
    assert!(config.endpoints[0].tls.is_none());
}

#[test]
fn missing_or_unparsable_tls_files_are_problems_with_their_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM\n").expect("write");
    let garbage = garbage.display().to_string();
    let text = with_tls(
        "ca_file = \"/nonexistent/turnout-ca.pem\"",
        &format!("cert_file = \"{garbage}\"\nkey_file = \"/nonexistent/turnout.key\""),
    );
    let lines = problems(&text);
    assert_eq!(
        lines,
        vec![
            format!("proxy.tls.cert_file: {garbage}: no PEM certificate in the file"),
            "proxy.tls.key_file: /nonexistent/turnout.key: cannot read: No such file or directory (os error 2)".to_string(),
            "endpoints.new.tls.ca_file: /nonexistent/turnout-ca.pem: cannot read: No such file or directory (os error 2)".to_string(),
        ]
    );
}

#[test]
fn a_client_certificate_needs_its_key_and_names_must_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = self_signed(dir.path(), "a");
    let lines = problems(&with_tls(
        &format!("ca_file = \"{cert}\"\ncert_file = \"{cert}\"\nserver_name = \"not a name!\""),
        "",
    ));
    assert_eq!(
        lines,
        vec![
            "endpoints.new.tls: cert_file and key_file go together (mutual TLS needs both)"
                .to_string(),
            "endpoints.new.tls.server_name: \"not a name!\" is not a DNS name or an IP address"
                .to_string(),
        ]
    );
    let lines = problems(&with_tls(
        &format!("ca_file = \"{cert}\""),
        "cert_file = \"\"\nkey_file = \"\"",
    ));
    assert_eq!(
        lines,
        vec![
            "proxy.tls.cert_file: must not be empty".to_string(),
            "proxy.tls.key_file: must not be empty".to_string(),
        ]
    );
}

#[test]
fn a_proxy_key_of_another_certificate_is_a_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = self_signed(dir.path(), "a");
    let (_, other_key) = self_signed(dir.path(), "b");
    let lines = problems(&with_tls(
        &format!("ca_file = \"{cert}\""),
        &format!("cert_file = \"{cert}\"\nkey_file = \"{other_key}\""),
    ));
    assert_eq!(
        lines,
        vec![format!(
            "proxy.tls.key_file: {other_key}: the private key does not belong to cert_file's certificate"
        )]
    );
}

#[test]
fn health_checks_default_to_every_second_within_the_connect_timeout() {
    let config = good();
    assert_eq!(config.health.interval, health::DEFAULT_HEALTH_INTERVAL);
    assert_eq!(config.health.timeout, DEFAULT_CONNECT_TIMEOUT);
    let text = GOOD.replace(
        "listen = \"127.0.0.1:6380\"",
        "listen = \"127.0.0.1:6380\"\nconnect_timeout = \"250ms\"",
    );
    let config = Config::from_toml(&text, &no_env).expect("valid");
    assert_eq!(config.health.timeout, Duration::from_millis(250));
    // The default timeout never exceeds the interval.
    let text = format!("{GOOD}\n[health]\ninterval = \"200ms\"\n");
    let config = Config::from_toml(&text, &no_env).expect("valid");
    assert_eq!(config.health.interval, Duration::from_millis(200));
    assert_eq!(config.health.timeout, Duration::from_millis(200));
    let text = format!("{GOOD}\n[health]\ninterval = \"5s\"\ntimeout = \"2s\"\n");
    let config = Config::from_toml(&text, &no_env).expect("valid");
    assert_eq!(
        config.health,
        health::HealthConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2)
        }
    );
}

#[test]
fn health_settings_are_checked_together() {
    let text = format!("{GOOD}\n[health]\ninterval = \"10ms\"\ntimeout = \"1s\"\nevery = 1\n");
    assert_eq!(
        problems(&text),
        vec![
            "health.every: unknown field".to_string(),
            "health.interval: must be at least 100ms".to_string(),
            "health.timeout: must not be longer than health.interval (100ms)".to_string(),
        ]
    );
    let text = format!("{GOOD}\n[health]\ninterval = \"often\"\ntimeout = \"0s\"\n");
    let lines = problems(&text);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("health.interval: \"often\" is not a duration"),
        "{lines:?}"
    );
    assert_eq!(
        lines[1], "health.timeout: must be greater than 0",
        "{lines:?}"
    );
}

/// [`GOOD`]'s header and endpoints, with `namespaces` after them.
fn with_namespaces(namespaces: &str, new_endpoint_extra: &str) -> String {
    let head = GOOD.split("[[namespaces]]").next().unwrap_or_default();
    let head = head.replace(
        "address = \"127.0.0.1:6390\"",
        &format!("address = \"127.0.0.1:6390\"\n{new_endpoint_extra}"),
    );
    format!("{head}{namespaces}\n[default]\ntarget = \"legacy\"\n")
}

#[test]
fn namespaces_may_match_by_database_and_carry_key_prefixes() {
    let text = with_namespaces(
        r#"
[[namespaces]]
name = "db1"
db = 1
key_prefix = { new = "db1:" }
target = "legacy"
[[namespaces]]
name = "db2-web"
db = 2
prefixes = ["web:"]
target = "legacy"
[[namespaces]]
name = "web"
prefixes = ["web:"]
target = "legacy"
"#,
        "key_prefix = \"shared:\"",
    );
    let config = Config::from_toml(&text, &no_env).expect("valid");
    let new = config.endpoint_id("new").expect("new");
    assert_eq!(config.namespaces[0].db, Some(1));
    assert!(config.namespaces[0].prefixes.is_empty());
    assert_eq!(
        config.namespaces[0].key_prefixes,
        vec![(new, "db1:".to_string())]
    );
    assert_eq!(config.namespaces[1].db, Some(2));
    assert_eq!(config.namespaces[2].db, None);
    assert_eq!(config.endpoints[new].key_prefix.as_deref(), Some("shared:"));
}

#[test]
fn database_and_key_prefix_mistakes_are_reported_with_their_paths() {
    let text = with_namespaces(
        r#"
[[namespaces]]
name = "nothing"
target = "legacy"
[[namespaces]]
name = "db1"
db = 1
target = "legacy"
[[namespaces]]
name = "db1-again"
db = 1
target = "legacy"
[[namespaces]]
name = "big"
db = 256
key_prefix = { nwe = "x:", new = "" }
target = "legacy"
[[namespaces]]
name = "p1"
db = 3
prefixes = ["a:"]
target = "legacy"
[[namespaces]]
name = "p2"
db = 3
prefixes = ["a:"]
target = "legacy"
[[namespaces]]
name = "p3"
db = 4
prefixes = ["a:"]
target = "legacy"
"#,
        "key_prefix = \"\"",
    );
    let lines = problems(&text);
    let expected = [
        "namespaces[0].prefixes: must list at least one prefix (or set db to match a whole database)",
        "namespaces[2].db: database 1 is already matched whole by namespaces[1] \"db1\"",
        "namespaces[3].db: must be 0 to 255",
        "namespaces[3].key_prefix.new: must not be empty",
        "namespaces[3].key_prefix.nwe: unknown endpoint \"nwe\" (known: legacy, new)",
        "namespaces[5].prefixes[0]: duplicate prefix \"a:\" in database 3 (also in namespaces[4] \"p1\")",
        "endpoints.new.key_prefix: must not be empty (leave it out for no prefix)",
    ];
    for line in expected {
        assert!(
            lines.contains(&line.to_string()),
            "{line}\nnot in {lines:#?}"
        );
    }
    // The same prefix in another database is no duplicate.
    assert!(
        !lines.iter().any(|l| l.starts_with("namespaces[6]")),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
}

#[test]
fn sentinel_endpoints_take_a_recheck_interval_and_their_own_credentials() {
    let sentinel =
        "sentinels = [\"127.0.0.1:26379\", \"127.0.0.1:26380\"]\nmaster_name = \"mymaster\"";
    let text = GOOD.replace("address = \"127.0.0.1:6390\"", sentinel);
    let config = Config::from_toml(&text, &no_env).expect("valid");
    let new = &config.endpoints[config.endpoint_id("new").expect("new")];
    assert_eq!(
        new.kind,
        EndpointKind::Sentinel {
            sentinels: vec!["127.0.0.1:26379".to_string(), "127.0.0.1:26380".to_string()],
            master_name: "mymaster".to_string(),
            sentinel_credentials: None,
            recheck: DEFAULT_SENTINEL_RECHECK,
        }
    );

    let text = GOOD.replace(
        "address = \"127.0.0.1:6390\"",
        &format!("{sentinel}\nsentinel_recheck = \"250ms\"\nsentinel_username = \"watcher\"\nsentinel_password_env = \"S_PW\""),
    );
    let env = |name: &str| (name == "S_PW").then(|| "s-secret".to_string());
    let config = Config::from_toml(&text, &env).expect("valid");
    let new = &config.endpoints[config.endpoint_id("new").expect("new")];
    let EndpointKind::Sentinel {
        sentinel_credentials: Some(creds),
        recheck,
        ..
    } = &new.kind
    else {
        panic!("a Sentinel endpoint with credentials: {:?}", new.kind);
    };
    assert_eq!(*recheck, Duration::from_millis(250));
    assert_eq!(creds.username.as_deref(), Some("watcher"));
    assert_eq!(creds.password.expose(), "s-secret");
    assert!(
        new.credentials.is_none(),
        "the servers' credentials are separate"
    );
    assert!(!format!("{config:?}").contains("s-secret"));
}

#[test]
fn sentinel_settings_are_checked() {
    let text = GOOD
        .replace(
            "address = \"127.0.0.1:6379\"",
            "address = \"127.0.0.1:6379\"\nsentinel_recheck = \"1s\"",
        )
        .replace(
            "address = \"127.0.0.1:6390\"",
            "sentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"m\"\nsentinel_recheck = \"0s\"\nsentinel_username = \"w\"",
        );
    assert_eq!(
        problems(&text),
        vec![
            "endpoints.legacy.sentinel_recheck: only goes with sentinels".to_string(),
            "endpoints.new: sentinel_username needs sentinel_password_env or sentinel_password_file"
                .to_string(),
            "endpoints.new.sentinel_recheck: must be greater than 0".to_string(),
        ]
    );
    let text = GOOD.replace(
        "address = \"127.0.0.1:6390\"",
        "sentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"m\"\nsentinel_password_env = \"UNSET\"",
    );
    assert_eq!(
        problems(&text),
        vec![
            "endpoints.new: sentinel credentials: environment variable UNSET is not set"
                .to_string()
        ]
    );
}

#[test]
fn a_cluster_key_prefix_with_braces_is_reported_with_its_path() {
    let text = r#"
[proxy]
listen = "127.0.0.1:6380"

[admin]
listen = "127.0.0.1:6381"

[state]
path = "turnout-state.json"

[endpoints.legacy]
address = "127.0.0.1:6379"
key_prefix = "{plain}:"

[endpoints.new]
cluster_seeds = ["127.0.0.1:7000"]
key_prefix = "all{"

[[namespaces]]
name = "db1"
db = 1
key_prefix = { new = "{db1}:", legacy = "db1{x}:" }
target = "legacy"

[[namespaces]]
name = "db2"
db = 2
key_prefix = { new = "db2}:", legacy = "db2:" }
target = "legacy"

[[namespaces]]
name = "db3"
db = 3
key_prefix = { new = "db3:", legacy = "db3:" }
target = "legacy"

[default]
target = "legacy"
"#;
    let lines = problems(text);
    let braces = "must not contain '{' or '}': endpoint \"new\" is a cluster, and a brace in the prefix would change the hash slot of every key";
    let expected = vec![
        format!("endpoints.new.key_prefix: {braces}"),
        format!("namespaces[0].key_prefix.new: {braces}"),
        format!("namespaces[1].key_prefix.new: {braces}"),
    ];
    assert_eq!(lines, expected, "{lines:#?}");
}

#[test]
fn configured_durations_are_capped_at_an_hour() {
    let huge = "\"100000000000y\"";
    let text = GOOD
        .replace(
            "listen = \"127.0.0.1:6380\"",
            &format!(
                "listen = \"127.0.0.1:6380\"\nconnect_timeout = {huge}\nshutdown_grace = \"61m\""
            ),
        )
        .replace(
            "address = \"127.0.0.1:6390\"",
            &format!(
                "sentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"m\"\nsentinel_recheck = {huge}"
            ),
        );
    let text = format!(
        "{text}\n[health]\ninterval = {huge}\ntimeout = \"2h\"\n[shadow]\ncompare_timeout = {huge}\nttl_tolerance = \"1h 1s\"\n"
    );
    let lines = problems(&text);
    for key in [
        "proxy.connect_timeout",
        "proxy.shutdown_grace",
        "endpoints.new.sentinel_recheck",
        "health.interval",
        "health.timeout",
        "shadow.compare_timeout",
        "shadow.ttl_tolerance",
    ] {
        let line = format!("{key}: must be at most 1h");
        assert!(lines.contains(&line), "{line} missing from {lines:?}");
    }
    // Exactly the maximum is accepted.
    let text = GOOD.replace(
        "listen = \"127.0.0.1:6380\"",
        "listen = \"127.0.0.1:6380\"\nconnect_timeout = \"1h\"",
    );
    let config = Config::from_toml(&text, &no_env).expect("1h is allowed");
    assert_eq!(config.proxy.connect_timeout, MAX_DURATION);
}

/// [`GOOD`] with `key_prefix = "app:"` on `new` and these namespaces added.
fn with_prefixed_new(namespaces: &str) -> String {
    GOOD.replace(
        "address = \"127.0.0.1:6390\"",
        "address = \"127.0.0.1:6390\"\nkey_prefix = \"app:\"",
    )
    .replace("[default]", &format!("{namespaces}\n[default]"))
}

#[test]
fn a_database_namespace_needs_its_own_prefix_on_a_single_database_target() {
    let text = with_prefixed_new(
        "[[namespaces]]\nname = \"three\"\ndb = 3\ntarget = \"new\"\n[[namespaces]]\nname = \"zero\"\ndb = 0\nprefixes = [\"z:\"]\ntarget = \"new\"\n[[namespaces]]\nname = \"four\"\ndb = 4\ntarget = \"legacy\"",
    );
    assert_eq!(
        problems(&text),
        vec!["namespaces[2].key_prefix: database 3 goes to single-database endpoint \"new\", which needs a key_prefix of its own for it (the endpoint's prefix, if any, is database 0's)".to_string()]
    );
    let text = with_prefixed_new(
        "[[namespaces]]\nname = \"three\"\ndb = 3\nkey_prefix = { new = \"db3:\" }\ntarget = \"new\"",
    );
    assert_eq!(problems(&text), Vec::<String>::new());
}

#[test]
fn key_prefixes_of_different_databases_must_not_be_identical_or_nested() {
    let text = with_prefixed_new(
        r#"[[namespaces]]
name = "one"
db = 1
key_prefix = { new = "x:" }
target = "new"
[[namespaces]]
name = "two"
db = 2
key_prefix = { new = "x:" }
target = "new"
[[namespaces]]
name = "three"
db = 3
key_prefix = { new = "app:3:" }
target = "legacy"
[[namespaces]]
name = "one-web"
db = 1
prefixes = ["web:"]
key_prefix = { new = "x:" }
target = "new""#,
    );
    assert_eq!(
        problems(&text),
        vec![
            "namespaces[4].key_prefix.new: \"app:3:\" (database 3) starts with \"app:\", the prefix of database 0 (endpoint \"new\") on endpoint \"new\": their keys would collide".to_string(),
            "namespaces[3].key_prefix.new: \"x:\" (database 2) is also the prefix of database 1 (namespaces[2] \"one\") on endpoint \"new\": their keys would collide".to_string(),
            "namespaces[5].key_prefix.new: \"x:\" (database 1) is also the prefix of database 2 (namespaces[3] \"two\") on endpoint \"new\": their keys would collide".to_string(),
        ]
    );
    // Distinct, non-nested prefixes of different databases, and one shared within a
    // database, are fine.
    let text = with_prefixed_new(
        "[[namespaces]]\nname = \"one\"\ndb = 1\nkey_prefix = { new = \"db1:\" }\ntarget = \"new\"\n[[namespaces]]\nname = \"one-web\"\ndb = 1\nprefixes = [\"web:\"]\nkey_prefix = { new = \"db1:\" }\ntarget = \"new\"\n[[namespaces]]\nname = \"two\"\ndb = 2\nkey_prefix = { new = \"db2:\" }\ntarget = \"new\"",
    );
    assert_eq!(problems(&text), Vec::<String>::new());
}

#[test]
fn worker_threads_default_to_half_the_cpus_and_size_the_shared_connections() {
    let config = good();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(config.proxy.worker_threads, (cpus / 2).max(1));
    assert_eq!(config.proxy.shared_connections, config.proxy.worker_threads);

    let with = |lines: &str| {
        GOOD.replace(
            "listen = \"127.0.0.1:6380\"",
            &format!("listen = \"127.0.0.1:6380\"\n{lines}"),
        )
    };
    let config = Config::from_toml(&with("worker_threads = 3"), &no_env).expect("valid");
    assert_eq!(config.proxy.worker_threads, 3);
    assert_eq!(config.proxy.shared_connections, 3);
    let config = Config::from_toml(&with("worker_threads = 3\nshared_connections = 1"), &no_env)
        .expect("valid");
    assert_eq!(config.proxy.shared_connections, 1);

    assert_eq!(
        problems(&with("worker_threads = 0")),
        vec!["proxy.worker_threads: must be greater than 0".to_string()]
    );
    assert_eq!(
        problems(&with("worker_threads = 65")),
        vec![format!(
            "proxy.worker_threads: must be at most {MAX_WORKER_THREADS}"
        )]
    );
}
