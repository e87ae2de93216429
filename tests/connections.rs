//! Connection handling: many concurrent clients, large values in both directions, clients
//! vanishing mid-pipeline, upstream connections released when clients leave, QUIT, and an
//! unresponsive endpoint bounded by connect_timeout.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::{cmd, show, wait_until, Env, RedisServer, Turnout};

#[test]
fn a_hundred_concurrent_clients_each_see_their_own_replies() {
    let env = Env::standard();
    let threads: Vec<_> = (0..100)
        .map(|client| {
            let addr = env.turnout.proxy_addr();
            std::thread::spawn(move || {
                let mut c = support::RawClient::connect(&addr);
                for seq in 0..20 {
                    let (web, tok) = (
                        format!("web:c{client}:{seq}"),
                        format!("tok:c{client}:{seq}"),
                    );
                    let value = format!("{client}-{seq}");
                    let mut request = cmd(&["SET", &web, &value]);
                    request.extend(cmd(&["SET", &tok, &value]));
                    request.extend(cmd(&["GET", &web]));
                    request.extend(cmd(&["GET", &tok]));
                    c.send(&request);
                    let replies = c.read_frames(4, Duration::from_secs(20));
                    let bulk = format!("${}\r\n{value}\r\n", value.len());
                    let expected = [
                        b"+OK\r\n".as_slice(),
                        b"+OK\r\n",
                        bulk.as_bytes(),
                        bulk.as_bytes(),
                    ];
                    for (got, want) in replies.iter().zip(expected) {
                        assert_eq!(show(got), show(want), "client {client} seq {seq}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert_eq!(env.legacy.dbsize(), 2000);
    assert_eq!(env.new.dbsize(), 2000);
}

#[test]
fn large_values_pass_through_intact() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let big: String = (0..4 * 1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    c.expect_cmd(&["SET", "web:big", &big], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:big", &big[..1024 * 1024]], b"+OK\r\n");
    assert_eq!(env.legacy.get("web:big").map(|v| v.len()), Some(big.len()));
    let expected = format!("${}\r\n{big}\r\n", big.len());
    c.send(&cmd(&["GET", "web:big"]));
    let got = c.read_frame();
    assert!(
        got == expected.as_bytes(),
        "GET web:big: {} bytes back",
        got.len()
    );
    // Two large replies from two endpoints, pipelined.
    let mut request = cmd(&["GET", "tok:big"]);
    request.extend(cmd(&["GET", "web:big"]));
    c.send(&request);
    let replies = c.read_frames(2, Duration::from_secs(30));
    assert_eq!(
        replies[0].len(),
        1024 * 1024 + format!("${}\r\n\r\n", 1024 * 1024).len()
    );
    assert!(replies[1] == expected.as_bytes());
}

#[test]
fn a_client_vanishing_mid_pipeline_does_not_disturb_others() {
    let env = Env::standard();
    let mut bystander = env.turnout.raw();
    bystander.expect_cmd(&["SET", "web:stay", "1"], b"+OK\r\n");
    for _ in 0..10 {
        let mut stream = TcpStream::connect(env.turnout.proxy_addr()).expect("connect");
        let mut request = Vec::new();
        for i in 0..2000 {
            request.extend(cmd(&["SET", &format!("web:gone{i}"), "x"]));
            request.extend(cmd(&["GET", &format!("tok:gone{i}")]));
        }
        request.extend(b"*2\r\n$3\r\nGET\r\n$10\r\nweb:"); // and a partial frame
        let _ = stream.write_all(&request);
        drop(stream);
    }
    bystander.expect_cmd(&["GET", "web:stay"], b"$1\r\n1\r\n");
    bystander.expect_cmd(&["SET", "tok:stay", "2"], b"+OK\r\n");
    assert_eq!(env.turnout.admin_get("/healthz").status, 200);
}

fn connected_clients(server: &RedisServer) -> i64 {
    let info = server
        .command(&["INFO", "clients"])
        .bulk_text()
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("connected_clients in INFO")
}

#[test]
fn upstream_connections_are_released_when_clients_leave() {
    // Dedicated connections, one per client and endpoint (shared ones outlive their clients).
    let env = Env::custom(|b| b.proxy_option("multiplex = false"), "legacy");
    // Our own INFO connection counts as one.
    let baseline_legacy = connected_clients(&env.legacy);
    let baseline_new = connected_clients(&env.new);
    let mut clients: Vec<_> = (0..20).map(|_| env.turnout.raw()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_cmd(&["SET", &format!("web:l{i}"), "1"], b"+OK\r\n");
        c.expect_cmd(&["SET", &format!("tok:l{i}"), "1"], b"+OK\r\n");
    }
    assert!(connected_clients(&env.legacy) >= baseline_legacy + 20);
    assert!(connected_clients(&env.new) >= baseline_new + 20);
    drop(clients);
    let released = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        connected_clients(&env.legacy) <= baseline_legacy
            && connected_clients(&env.new) <= baseline_new
    });
    assert!(
        released,
        "upstream connections left open: legacy {} (baseline {baseline_legacy}), new {} (baseline {baseline_new})",
        connected_clients(&env.legacy),
        connected_clients(&env.new)
    );
}

#[test]
fn quit_answers_ok_and_closes() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["SET", "web:q", "1"], b"+OK\r\n");
    c.send_cmd(&["QUIT"]);
    let (got, eof) = c.read_to_eof(Duration::from_secs(5));
    assert_eq!(show(&got), show(b"+OK\r\n"));
    assert!(eof, "QUIT closes the connection");
}

/// A listener whose accept queue is full: connects to it hang, as with a dead host.
struct Blackhole {
    _listener: TcpListener,
    _fill: Vec<TcpStream>,
    addr: SocketAddr,
}

impl Blackhole {
    fn new() -> Option<Blackhole> {
        let listener = TcpListener::bind("127.0.0.1:0").ok()?;
        let addr = listener.local_addr().ok()?;
        let mut fill = Vec::new();
        for _ in 0..5000 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fill.push(s),
                Err(_) => {
                    return Some(Blackhole {
                        _listener: listener,
                        _fill: fill,
                        addr,
                    })
                }
            }
        }
        None
    }
}

#[test]
fn an_unresponsive_endpoint_fails_within_connect_timeout() {
    let legacy = RedisServer::start();
    let Some(hole) = Blackhole::new() else {
        panic!("could not fill a listener's accept queue to simulate an unresponsive host");
    };
    let body = format!(
        r#"[endpoints.legacy]
address = "{}"

[endpoints.new]
address = "{}"

[[namespaces]]
name = "token-cache"
prefixes = ["tok:"]
target = "new"

[default]
target = "legacy"
"#,
        legacy.addr(),
        hole.addr
    );
    let turnout = Turnout::builder(&body)
        .proxy_option("connect_timeout = \"500ms\"")
        .start();
    let mut c = turnout.raw();
    let started = Instant::now();
    let mut request = cmd(&["GET", "tok:x"]);
    request.extend(cmd(&["SET", "web:x", "1"]));
    c.send(&request);
    let replies = c.read_frames(2, Duration::from_secs(10));
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&replies[0]);
    assert!(
        text.starts_with("-ERR turnout: endpoint 'new' unavailable: "),
        "{}",
        show(&replies[0])
    );
    assert_eq!(show(&replies[1]), show(b"+OK\r\n"));
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
        "connect_timeout is 500ms but the error took {elapsed:?}"
    );
}
