//! Clients authenticate to turnout itself (`[proxy.auth]`), with AUTH or HELLO … AUTH, in
//! the password and the user/password forms. Until then every command gets `-NOAUTH`. The
//! credentials never reach an endpoint and never appear in turnout's logs.

mod support;

use support::{standard_body, RedisServer, Turnout};

const PASSWORD: &str = "correct horse battery staple";
const APP_PASSWORD: &str = "app-secret-from-a-file";

fn start(legacy: &RedisServer, new: &RedisServer, dir: &std::path::Path) -> Turnout {
    let file = dir.join("app.password");
    std::fs::write(&file, format!("{APP_PASSWORD}\n")).expect("password file");
    let auth = format!(
        "auth = {{ users = [ {{ name = \"default\", password_env = \"TURNOUT_TEST_PASSWORD\" }}, {{ name = \"app\", password_file = {} }} ] }}",
        support::turnout::toml_string(&file.display().to_string())
    );
    Turnout::builder(&standard_body(legacy, new, "legacy"))
        .proxy_option(&auth)
        .env("TURNOUT_TEST_PASSWORD", PASSWORD)
        .start()
}

#[test]
fn commands_need_authentication_first() {
    let (legacy, new) = (RedisServer::start(), RedisServer::start());
    let dir = tempfile::tempdir().expect("tempdir");
    let turnout = start(&legacy, &new, dir.path());
    let mut c = turnout.raw();
    c.expect_cmd(
        &["SET", "web:a", "1"],
        b"-NOAUTH Authentication required.\r\n",
    );
    c.expect_cmd(&["PING"], b"-NOAUTH Authentication required.\r\n");
    c.expect_cmd(
        &["AUTH", "wrong"],
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    c.expect_cmd(&["GET", "web:a"], b"-NOAUTH Authentication required.\r\n");
    c.expect_cmd(&["AUTH", PASSWORD], b"+OK\r\n");
    c.expect_cmd(&["SET", "web:a", "1"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:a", "2"], b"+OK\r\n");
    assert_eq!(legacy.get("web:a").as_deref(), Some("1"));
    assert_eq!(new.get("tok:a").as_deref(), Some("2"));
    // A failed re-authentication keeps the session authenticated, as in Redis.
    c.expect_cmd(
        &["AUTH", "app", "wrong"],
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    c.expect_cmd(&["AUTH", "app", APP_PASSWORD], b"+OK\r\n");
    c.expect_cmd(
        &["AUTH", "nobody", APP_PASSWORD],
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    c.expect_cmd(&["GET", "web:a"], b"$1\r\n1\r\n");
    c.expect_cmd(
        &["AUTH"],
        b"-ERR wrong number of arguments for 'auth' command\r\n",
    );

    let log = turnout.log();
    assert!(
        !log.contains(PASSWORD) && !log.contains(APP_PASSWORD),
        "a password reached the log"
    );
    assert!(
        log.contains("client authentication failed"),
        "failures are logged, without credentials"
    );
}

#[test]
fn hello_can_authenticate_and_pick_the_protocol() {
    let (legacy, new) = (RedisServer::start(), RedisServer::start());
    let dir = tempfile::tempdir().expect("tempdir");
    let turnout = start(&legacy, &new, dir.path());
    let mut c = turnout.raw();
    c.send_cmd(&["HELLO", "3"]);
    assert!(c
        .read_frame()
        .starts_with(b"-NOAUTH HELLO must be called with the client already authenticated"));
    c.expect_cmd(
        &["HELLO", "3", "AUTH", "default", "nope"],
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    c.send_cmd(&[
        "HELLO",
        "3",
        "AUTH",
        "app",
        APP_PASSWORD,
        "SETNAME",
        "worker-1",
    ]);
    let hello = c.read_frame();
    assert!(
        hello.starts_with(b"%"),
        "HELLO 3 answers a RESP3 map from the endpoint: {}",
        support::show(&hello)
    );
    c.expect_cmd(&["CLIENT", "GETNAME"], b"$8\r\nworker-1\r\n");
    c.expect_cmd(&["SET", "tok:h", "1"], b"+OK\r\n");
    // RESP3 from every endpoint the session uses.
    c.expect_cmd(&["HSET", "tok:map", "f", "v"], b":1\r\n");
    c.expect_cmd(&["HGETALL", "tok:map"], b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
}

#[test]
fn without_proxy_auth_every_client_is_in_like_redis_default_user() {
    let (legacy, new) = (RedisServer::start(), RedisServer::start());
    let turnout = Turnout::start(&standard_body(&legacy, &new, "legacy"));
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "web:a", "1"], b"+OK\r\n");
    c.expect_cmd(
        &["AUTH", "secret"],
        b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
    );
    c.expect_cmd(&["AUTH", "default", "anything"], b"+OK\r\n");
    c.send_cmd(&["HELLO", "2", "AUTH", "default", "anything"]);
    assert!(c.read_frame().starts_with(b"*"), "HELLO 2 answers an array");
}
