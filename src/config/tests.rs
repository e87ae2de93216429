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
