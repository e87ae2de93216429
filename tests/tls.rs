//! TLS both ways: turnout to TLS-only `redis-server`s (CA bundle, SNI and name checks, mutual
//! TLS) with clear `-ERR turnout: endpoint 'NAME' TLS: …` replies and never a plain-text
//! fallback, and clients to turnout over `[proxy.tls]`, where plain-text clients are not
//! served. Certificates are generated per test ([`support::tls::Pki`]).

mod support;

use std::time::{Duration, Instant};
use support::tls::{Pki, TlsClient, TlsRedis, SERVER_NAME};
use support::{cmd, run_cli, show, RedisServer, Reply, Turnout};

/// `[endpoints.NAME]` at `address` with a `[endpoints.NAME.tls]` made of `tls` lines.
fn tls_endpoint(name: &str, address: &str, tls: &[String]) -> String {
    format!(
        "[endpoints.{name}]\naddress = \"{address}\"\n\n[endpoints.{name}.tls]\n{}\n\n",
        tls.join("\n")
    )
}

/// `web:` → legacy, `tok:` → new, default → legacy, after the endpoint tables.
fn with_namespaces(endpoints: &str) -> String {
    format!(
        r#"{endpoints}
[[namespaces]]
name = "web-cache"
prefixes = ["web:"]
target = "legacy"

[[namespaces]]
name = "token-cache"
prefixes = ["tok:"]
target = "new"

[default]
target = "legacy"
"#
    )
}

/// The reply's error text, or the whole reply when it is not an error.
fn error_text(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply).into_owned();
    text.trim_end().to_string()
}

/// How often `redis-server` ran `command` (from `INFO commandstats`).
fn calls(server: &TlsRedis, command: &str) -> u64 {
    let info = server
        .command(&["INFO", "commandstats"])
        .bulk_text()
        .expect("INFO text");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn commands_reach_a_tls_endpoint_verified_by_its_ca() {
    let pki = Pki::generate();
    let secure = TlsRedis::start(&pki, false);
    let legacy = RedisServer::start();
    let body = format!(
        "[endpoints.legacy]\naddress = \"{}\"\n\n{}",
        legacy.addr(),
        tls_endpoint(
            "new",
            &secure.addr(),
            &[format!("ca_file = {}", pki.toml("ca.pem"))]
        )
    );
    let turnout = Turnout::builder(&with_namespaces(&body)).start();
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "tok:a", "over TLS"], b"+OK\r\n");
    c.expect_cmd(&["GET", "tok:a"], b"$8\r\nover TLS\r\n");
    c.expect_cmd(&["SET", "web:a", "plain"], b"+OK\r\n");
    assert_eq!(
        secure.command(&["GET", "tok:a"]).bulk_text().as_deref(),
        Some("over TLS")
    );
    assert_eq!(legacy.get("web:a").as_deref(), Some("plain"));

    // A pipelined batch: 200 SETs and GETs in one write, replies in order.
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend_from_slice(&cmd(&["SET", &format!("tok:p{i}"), &format!("v{i}")]));
        batch.extend_from_slice(&cmd(&["GET", &format!("tok:p{i}")]));
    }
    c.send(&batch);
    let replies = c.read_frames(400, Duration::from_secs(20));
    for (i, pair) in replies.chunks(2).enumerate() {
        assert_eq!(show(&pair[0]), "+OK\\r\\n", "SET tok:p{i}");
        let value = format!("v{i}");
        assert_eq!(
            show(&pair[1]),
            show(format!("${}\r\n{value}\r\n", value.len()).as_bytes()),
            "GET tok:p{i}"
        );
    }

    // A value larger than TLS records (16 KiB) and turnout's read chunks.
    let large: String = (0..(1 << 20) + 4321)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    c.expect_cmd(&["SET", "tok:large", &large], b"+OK\r\n");
    match c.read_reply_after(&["GET", "tok:large"]) {
        got if got == large => {}
        got => panic!(
            "GET tok:large: {} bytes back, expected {}",
            got.len(),
            large.len()
        ),
    }
    assert_eq!(
        secure.command(&["STRLEN", "tok:large"]),
        Reply::Int(large.len() as i64)
    );
    // The readiness probe speaks TLS too.
    let ready = turnout.admin_get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
}

#[test]
fn untrusted_or_misnamed_certificates_and_plain_servers_are_refused_without_fallback() {
    let pki = Pki::generate();
    let secure = TlsRedis::start(&pki, false);
    let plain = RedisServer::start();
    let ca = format!("ca_file = {}", pki.toml("ca.pem"));
    let endpoints = [
        // Trusts another CA.
        tls_endpoint(
            "new",
            &secure.addr(),
            &[format!("ca_file = {}", pki.toml("other-ca.pem"))],
        ),
        // Right CA, wrong name.
        tls_endpoint(
            "legacy",
            &secure.addr(),
            &[ca.clone(), "server_name = \"wrong.test\"".to_string()],
        ),
        // Right CA and name (the address is an IP the certificate also names).
        tls_endpoint(
            "named",
            &secure.addr(),
            &[ca.clone(), format!("server_name = \"{SERVER_NAME}\"")],
        ),
        // A server that does not speak TLS.
        tls_endpoint("plain", &plain.addr(), &[ca]),
    ]
    .concat();
    let body = format!(
        r#"{endpoints}
[[namespaces]]
name = "web-cache"
prefixes = ["web:"]
target = "legacy"

[[namespaces]]
name = "token-cache"
prefixes = ["tok:"]
target = "new"

[[namespaces]]
name = "named"
prefixes = ["named:"]
target = "named"

[[namespaces]]
name = "plain"
prefixes = ["plain:"]
target = "plain"

[default]
target = "named"
"#
    );
    let turnout = Turnout::builder(&body).start();
    let mut c = turnout.raw();
    // The health checker may have met the certificate first: then the endpoint is backed off
    // and the reply adds when the next attempt is due.
    let reply = error_text(&c.roundtrip(&["SET", "tok:x", "must not be written"]));
    assert!(
        reply.starts_with(
            "-ERR turnout: endpoint 'new' TLS: invalid peer certificate: UnknownIssuer"
        ),
        "{reply}"
    );
    let reply = error_text(&c.roundtrip(&["SET", "web:x", "must not be written"]));
    assert!(
        reply.starts_with("-ERR turnout: endpoint 'legacy' TLS: invalid peer certificate: certificate not valid for name \"wrong.test\""),
        "{reply}"
    );
    let reply = error_text(&c.roundtrip(&["SET", "plain:x", "must not be written"]));
    assert!(
        reply.starts_with("-ERR turnout: endpoint 'plain' TLS: "),
        "{reply}"
    );
    // The client connection stays usable, and the right name works.
    c.expect_cmd(&["SET", "named:x", "ok"], b"+OK\r\n");
    c.expect_cmd(&["GET", "named:x"], b"$2\r\nok\r\n");

    // Nothing went through in plain text: the refused SETs ran nowhere.
    assert_eq!(secure.command(&["EXISTS", "tok:x", "web:x"]), Reply::Int(0));
    assert_eq!(calls(&secure, "set"), 1, "only named:x was set");
    assert!(!plain.exists("plain:x"));
    let log = turnout.log();
    for (endpoint, cause) in [
        ("new", "UnknownIssuer"),
        ("legacy", "not valid for name"),
        ("plain", ""),
    ] {
        assert!(
            log.lines().any(|l| l.contains("TLS to the endpoint failed")
                && l.contains(&format!("endpoint={endpoint}"))
                && l.contains(cause)),
            "no TLS warning for {endpoint}:\n{log}"
        );
    }
    let metrics = turnout.admin_get("/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("turnout_endpoint_events_total")
                && l.contains("endpoint=\"new\"")
                && l.contains("event=\"tls_error\"")),
        "{metrics}"
    );
}

#[test]
fn mutual_tls_presents_the_client_certificate_and_fails_clearly_without_it() {
    let pki = Pki::generate();
    let secure = TlsRedis::start(&pki, true);
    let ca = format!("ca_file = {}", pki.toml("ca.pem"));
    let body = [
        tls_endpoint(
            "new",
            &secure.addr(),
            &[
                ca.clone(),
                format!("cert_file = {}", pki.toml("client.pem")),
                format!("key_file = {}", pki.toml("client.key")),
            ],
        ),
        tls_endpoint("legacy", &secure.addr(), &[ca]),
    ]
    .concat();
    let turnout = Turnout::builder(&with_namespaces(&body)).start();
    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "tok:m", "mutual"], b"+OK\r\n");
    c.expect_cmd(&["GET", "tok:m"], b"$6\r\nmutual\r\n");
    let reply = error_text(&c.roundtrip(&["SET", "web:m", "must not be written"]));
    assert!(
        reply.starts_with("-ERR turnout: endpoint 'legacy' TLS: "),
        "{reply}"
    );
    assert!(
        reply.contains("CertificateRequired") || reply.contains("HandshakeFailure"),
        "{reply}"
    );
    assert_eq!(secure.command(&["EXISTS", "web:m"]), Reply::Int(0));
    assert_eq!(
        secure.command(&["GET", "tok:m"]).bulk_text().as_deref(),
        Some("mutual")
    );
}

#[test]
fn proxy_tls_serves_tls_clients_and_never_plain_ones() {
    let pki = Pki::generate();
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let turnout = Turnout::builder(&support::standard_body(&legacy, &new, "legacy"))
        .proxy_option("[proxy.tls]")
        .proxy_option(&format!("cert_file = {}", pki.toml("server.pem")))
        .proxy_option(&format!("key_file = {}", pki.toml("server.key")))
        .start();
    let config = pki.client_config("ca.pem", false);
    let mut c = TlsClient::connect(&turnout.proxy_addr(), config.clone(), "127.0.0.1")
        .expect("TLS to turnout");
    c.expect_cmd(&["PING"], b"+PONG\r\n");
    c.expect_cmd(&["SET", "tok:s", "secure"], b"+OK\r\n");
    c.expect_cmd(&["GET", "tok:s"], b"$6\r\nsecure\r\n");
    let mut batch = Vec::new();
    for _ in 0..50 {
        batch.extend_from_slice(&cmd(&["INCR", "web:n"]));
    }
    c.send(&batch);
    for i in 1..=50 {
        let frame = c.read_frame(Duration::from_secs(10)).expect("INCR reply");
        assert_eq!(show(&frame), format!(":{i}\\r\\n"));
    }
    assert_eq!(new.get("tok:s").as_deref(), Some("secure"));
    assert_eq!(legacy.get("web:n").as_deref(), Some("50"));
    // The name in the certificate works too.
    let mut named =
        TlsClient::connect(&turnout.proxy_addr(), config, SERVER_NAME).expect("TLS by name");
    named.expect_cmd(&["GET", "tok:s"], b"$6\r\nsecure\r\n");

    // A client that does not trust turnout's certificate gets no session.
    let untrusted = TlsClient::connect(
        &turnout.proxy_addr(),
        pki.client_config("other-ca.pem", false),
        SERVER_NAME,
    );
    assert!(
        untrusted.is_err(),
        "a client of another CA completed the handshake"
    );

    // A plain-text client is never served: no RESP reply, then the connection closes.
    let mut plain = turnout.raw();
    plain.send(&cmd(&["SET", "tok:plain", "x"]));
    let (bytes, closed) = plain.read_to_eof(Duration::from_secs(15));
    assert!(closed, "still open; got {}", show(&bytes));
    assert!(
        !bytes.starts_with(b"+") && !bytes.starts_with(b"-") && !bytes.starts_with(b"$"),
        "a RESP reply to a plain-text client: {}",
        show(&bytes)
    );
    assert!(!new.exists("tok:plain"));
    let metrics = turnout.admin_get("/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("turnout_errors_total{kind=\"tls_handshake\"}")),
        "{metrics}"
    );
    let log = turnout.log();
    assert!(
        log.contains("client TLS handshake failed"),
        "no log line for the refused client:\n{log}"
    );
}

#[test]
fn a_shadow_lane_reaches_a_tls_endpoint() {
    let pki = Pki::generate();
    let secure = TlsRedis::start(&pki, false);
    let legacy = RedisServer::start();
    let body = format!(
        "[endpoints.legacy]\naddress = \"{}\"\n\n{}",
        legacy.addr(),
        tls_endpoint(
            "new",
            &secure.addr(),
            &[format!("ca_file = {}", pki.toml("ca.pem"))]
        )
    );
    let turnout = Turnout::builder(&with_namespaces(&body)).start();
    legacy.set("web:s", "same");
    let mut direct = secure.client();
    direct.expect_cmd(&["SET", "web:s", "same"], b"+OK\r\n");
    let put = turnout.admin_put(
        "/v1/routes/web-cache",
        r#"{"mode": "shadow", "shadow": "new", "reason": "tls"}"#,
        &[],
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let mut c = turnout.raw();
    c.expect_cmd(&["GET", "web:s"], b"$4\r\nsame\r\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let doc = turnout.admin_get("/v1/shadow").json();
        let row = doc["namespaces"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["namespace"] == "web-cache"))
            .cloned()
            .expect("web-cache row");
        assert_eq!(row["counts"]["shadow_error"], 0, "{row}\n{}", turnout.log());
        if row["compared"].as_u64() == Some(1) {
            assert_eq!(row["counts"]["match"], 1, "{row}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{row}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn check_and_start_name_unusable_tls_files() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing-ca.pem");
    let body = with_namespaces(&format!(
        "[endpoints.legacy]\naddress = \"127.0.0.1:1\"\n\n{}",
        tls_endpoint(
            "new",
            "127.0.0.1:2",
            &[
                format!("ca_file = \"{}\"", missing.display()),
                format!("cert_file = {}", pki.toml("client.pem")),
            ]
        )
    ));
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:16380\"\n[proxy.tls]\ncert_file = {}\nkey_file = {}\n\n[admin]\nlisten = \"127.0.0.1:19900\"\n\n[state]\npath = \"state.json\"\n\n{body}",
        pki.toml("server.pem"),
        pki.toml("client.key"),
    );
    let path = dir.path().join("turnout.toml");
    std::fs::write(&path, &config).expect("write config");
    let out = run_cli(&["check", "--config", &path.to_string_lossy()], &[]);
    assert_ne!(out.code(), 0, "{out:?}");
    // Every problem at once, each with its path.
    for expected in [
        format!(
            "proxy.tls.key_file: {}: the private key does not belong to cert_file's certificate",
            pki.path("client.key").display()
        ),
        "endpoints.new.tls: cert_file and key_file go together (mutual TLS needs both)".to_string(),
        format!(
            "endpoints.new.tls.ca_file: {}: cannot read: No such file or directory",
            missing.display()
        ),
    ] {
        assert!(
            out.stderr.contains(&expected),
            "missing {expected:?} in {out:?}"
        );
    }
    // `run` refuses to start for the same reason.
    let failed = Turnout::builder(&body).start_expect_failure();
    assert!(!failed.status.success());
    let expected = format!(
        "endpoints.new.tls.ca_file: {}: cannot read: No such file or directory",
        missing.display()
    );
    assert!(failed.stderr.contains(&expected), "{}", failed.stderr);
}

#[test]
fn tls_failures_back_off_instead_of_a_handshake_per_command() {
    let pki = Pki::generate();
    let secure = TlsRedis::start(&pki, false);
    let legacy = RedisServer::start();
    let endpoints = format!(
        "[endpoints.legacy]\naddress = \"{}\"\n\n{}",
        legacy.addr(),
        tls_endpoint(
            "new",
            &secure.addr(),
            &[format!("ca_file = {}", pki.toml("other-ca.pem"))],
        )
    );
    let started = Instant::now();
    let turnout = Turnout::builder(&with_namespaces(&endpoints)).start();
    let mut c = turnout.raw();
    // When a reply says the next attempt is due in X, the back-off ends no earlier than X
    // after the request was sent: a request sent before then must be backed off too.
    let mut backed_off_until: Option<Instant> = None;
    for i in 0..30 {
        let sent = Instant::now();
        let reply = error_text(&c.roundtrip(&["SET", &format!("tok:{i}"), "v"]));
        assert!(
            reply.starts_with(
                "-ERR turnout: endpoint 'new' TLS: invalid peer certificate: UnknownIssuer"
            ),
            "{reply}"
        );
        let retry_in = reply
            .split_once("(next attempt in ")
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .map(|text| humantime::parse_duration(text).expect("a duration"));
        if backed_off_until.is_some_and(|until| sent < until) {
            assert!(retry_in.is_some(), "sent within the back-off: {reply}");
        }
        backed_off_until = retry_in.map(|retry_in| sent + retry_in);
    }
    let log = turnout.log();
    // Every back-off window lasts at least 1 s; one handshake may fail per window, plus the
    // first one.
    let windows = started.elapsed().as_secs() as usize;
    let failures = log
        .lines()
        .filter(|l| l.contains("TLS to the endpoint failed") && l.contains("endpoint=new"))
        .count();
    assert!(
        (1..=windows + 1).contains(&failures),
        "{failures} handshakes in {windows} back-off windows:\n{log}"
    );
    c.expect_cmd(&["SET", "web:ok", "1"], b"+OK\r\n");
}

/// A TLS client's last replies (QUIT's `+OK`, a large reply before it) arrive whole, and the
/// connection ends with a TLS close_notify, not a bare TCP close.
#[test]
fn proxy_tls_quit_delivers_the_last_replies_and_closes_cleanly() {
    let pki = Pki::generate();
    let legacy = RedisServer::start();
    let new = RedisServer::start();
    let turnout = Turnout::builder(&support::standard_body(&legacy, &new, "legacy"))
        .proxy_option("[proxy.tls]")
        .proxy_option(&format!("cert_file = {}", pki.toml("server.pem")))
        .proxy_option(&format!("key_file = {}", pki.toml("server.key")))
        .start();
    let config = pki.client_config("ca.pem", false);
    let mut c = TlsClient::connect(&turnout.proxy_addr(), config.clone(), "127.0.0.1")
        .expect("TLS to turnout");
    c.expect_cmd(&["QUIT"], b"+OK\r\n");
    let end = c
        .read_frame(Duration::from_secs(10))
        .expect_err("no reply after QUIT");
    assert!(end.starts_with("closed"), "not a clean TLS close: {end}");

    let value = "v".repeat(4 * 1024 * 1024);
    legacy.set("web:big", &value);
    let mut c =
        TlsClient::connect(&turnout.proxy_addr(), config, "127.0.0.1").expect("TLS to turnout");
    let mut batch = cmd(&["GET", "web:big"]);
    batch.extend_from_slice(&cmd(&["QUIT"]));
    c.send(&batch);
    let big = c.read_frame(Duration::from_secs(30)).expect("GET reply");
    assert_eq!(
        big.len(),
        value.len() + format!("${}\r\n\r\n", value.len()).len()
    );
    assert_eq!(
        c.read_frame(Duration::from_secs(10)).expect("QUIT reply"),
        b"+OK\r\n"
    );
    let end = c
        .read_frame(Duration::from_secs(10))
        .expect_err("no reply after QUIT");
    assert!(end.starts_with("closed"), "not a clean TLS close: {end}");
}

#[test]
fn a_handshake_timeout_is_not_backed_off() {
    let pki = Pki::generate();
    let secure = TlsRedis::start(&pki, false);
    let legacy = RedisServer::start();
    let endpoints = format!(
        "[endpoints.legacy]\naddress = \"{}\"\n\n{}",
        legacy.addr(),
        tls_endpoint(
            "new",
            &secure.addr(),
            &[format!("ca_file = {}", pki.toml("ca.pem"))],
        )
    );
    let turnout = Turnout::builder(&with_namespaces(&endpoints))
        .proxy_option("connect_timeout = \"300ms\"")
        .start();
    let mut c = turnout.raw();
    secure.signal("STOP");
    let reply = error_text(&c.roundtrip(&["SET", "tok:a", "1"]));
    secure.signal("CONT");
    assert_eq!(
        reply,
        "-ERR turnout: endpoint 'new' TLS: handshake timed out after 300ms (does the endpoint speak TLS on this port?)"
    );
    // A slow server is not a refusal: the next command tries again at once.
    c.expect_cmd(&["SET", "tok:b", "1"], b"+OK\r\n");
}
