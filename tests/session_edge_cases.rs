//! Session edge cases found in review, each reproduced against real `redis-server` children:
//!
//! - a pipelined SELECT that the default endpoint refuses is not replayed on an upstream
//!   connection opened for a later command of the same pipeline;
//! - two pipelined SELECTs, the first refused by one endpoint: once the client has both
//!   replies, every endpoint is in the database of the second;
//! - after a SELECT refused by one endpoint, commands to either endpoint and QUIT still answer
//!   (nothing waits forever on a connection that has to be put back);
//! - a client that writes a whole large pipeline before reading any reply does not deadlock
//!   the proxy (Redis buffers the replies; turnout keeps reading requests);
//! - an admin `PUT /v1/routes/{ns}` whose client disconnects right away leaves the live route
//!   table and the state file in agreement.
//!
//! Every wait is bounded; every port is a free loopback port.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{cmd, route_of, show, wait_until, Env, RedisServer, Turnout};

/// What Redis answers to a SELECT beyond its `databases`.
const OUT_OF_RANGE: &[u8] = b"-ERR DB index is out of range\r\n";

/// Bound on each single reply in the scenarios that used to hang.
const REPLY_BOUND: Duration = Duration::from_secs(5);

/// Reads one reply within [`REPLY_BOUND`], panicking with `what` and the partial bytes.
fn reply_within_bound(c: &mut support::RawClient, what: &str) -> Vec<u8> {
    c.read_frame_within(REPLY_BOUND)
        .unwrap_or_else(|e| panic!("{what}: no reply within {REPLY_BOUND:?}: {e:?}"))
}

fn assert_reply(got: &[u8], expected: &[u8], what: &str) {
    assert_eq!(
        show(got),
        show(expected),
        "{what}: got {} expected {}",
        show(got),
        show(expected)
    );
}

// ---------------------------------------------------------------------------------------------
// 1. A refused in-flight SELECT is not replayed on a connection opened later.
// ---------------------------------------------------------------------------------------------

/// The default route's endpoint (`legacy`, 4 dbs) refuses `SELECT 5`; `web:` goes to `new`
/// (16 dbs), whose connection is opened for the `SET` pipelined behind the SELECT. The client
/// was told the SELECT failed, so the SET must run in db 0 of `new`, not db 5.
#[test]
fn a_select_refused_by_the_default_endpoint_is_not_replayed_on_a_later_pipelined_connection() {
    let legacy = RedisServer::start_with_args(&["--databases", "4"]);
    let new = RedisServer::start_with_args(&["--databases", "16"]);
    let turnout = Turnout::start(&support::standard_body(&legacy, &new, "legacy"));
    turnout.flip("web-cache", "new", "refused select test");

    let mut c = turnout.raw();
    let mut pipeline = cmd(&["SELECT", "5"]);
    pipeline.extend(cmd(&["SET", "web:x", "written"]));
    c.send(&pipeline);
    let select = reply_within_bound(&mut c, "SELECT 5 (pipelined)");
    let set = reply_within_bound(&mut c, "SET web:x written (pipelined after SELECT 5)");

    let in_db5 = new.get_db(5, "web:x");
    let in_db0 = new.get_db(0, "web:x");
    assert_reply(&select, OUT_OF_RANGE, "SELECT 5 refused by legacy (4 dbs)");
    assert_reply(&set, b"+OK\r\n", "SET web:x after the refused SELECT 5");
    assert_eq!(
        in_db5, None,
        "the client was told SELECT 5 failed, yet web:x landed in db 5 of `new` \
         (db 0 has {in_db0:?})"
    );
    assert_eq!(
        in_db0.as_deref(),
        Some("written"),
        "web:x should be in db 0 of `new`"
    );
    assert_eq!(
        legacy.get_db(0, "web:x"),
        None,
        "web:x must not be on legacy"
    );

    c.send_cmd(&["GET", "web:x"]);
    let get = reply_within_bound(&mut c, "GET web:x");
    assert_reply(&get, b"$7\r\nwritten\r\n", "GET web:x through turnout");
}

// ---------------------------------------------------------------------------------------------
// 2. Two pipelined SELECTs, the first refused by one endpoint.
// ---------------------------------------------------------------------------------------------

/// Both upstream connections are open; `new` (4 dbs) refuses `SELECT 5`, `legacy` (16 dbs)
/// accepts it and must be put back. `SELECT 2` follows in the same pipeline and succeeds: once
/// the client has both replies, both endpoints must be in db 2 (not 0, not 5).
#[test]
fn after_two_pipelined_selects_with_the_first_partially_refused_every_endpoint_is_in_the_second_db()
{
    let legacy = RedisServer::start_with_args(&["--databases", "16"]);
    let new = RedisServer::start_with_args(&["--databases", "4"]);
    let turnout = Turnout::start(&support::standard_body(&legacy, &new, "legacy"));
    assert_eq!(turnout.target("web-cache"), "legacy");
    assert_eq!(turnout.target("token-cache"), "new");

    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "web:open", "1"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:open", "1"], b"+OK\r\n");

    let mut pipeline = cmd(&["SELECT", "5"]);
    pipeline.extend(cmd(&["SELECT", "2"]));
    c.send(&pipeline);
    let first = reply_within_bound(&mut c, "SELECT 5 (pipelined)");
    let second = reply_within_bound(&mut c, "SELECT 2 (pipelined after SELECT 5)");
    // Both replies are in: from here on, every endpoint must be in db 2. Everything is
    // observed before asserting, so a failure reports the whole picture.
    c.send_cmd(&["SET", "web:k", "v"]);
    let set_web = reply_within_bound(&mut c, "SET web:k v");
    c.send_cmd(&["SET", "tok:k", "v"]);
    let set_tok = reply_within_bound(&mut c, "SET tok:k v");
    let web = [0, 2, 5].map(|db| legacy.get_db(db, "web:k"));
    let tok = [0, 2].map(|db| new.get_db(db, "tok:k"));
    let seen = format!(
        "SELECT 5 -> {}, SELECT 2 -> {}, SET web:k -> {}, SET tok:k -> {}; web:k on legacy \
         db0/db2/db5 = {web:?}; tok:k on new db0/db2 = {tok:?}",
        show(&first),
        show(&second),
        show(&set_web),
        show(&set_tok)
    );

    assert_reply(
        &first,
        OUT_OF_RANGE,
        &format!("SELECT 5 refused by new (4 dbs) [{seen}]"),
    );
    assert_reply(
        &second,
        b"+OK\r\n",
        &format!("SELECT 2 after the refused SELECT 5 [{seen}]"),
    );
    assert_reply(&set_web, b"+OK\r\n", &format!("SET web:k v [{seen}]"));
    assert_reply(&set_tok, b"+OK\r\n", &format!("SET tok:k v [{seen}]"));
    assert_eq!(
        web,
        [None, Some("v".to_string()), None],
        "web:k must be in legacy db 2 only [{seen}]"
    );
    assert_eq!(
        tok,
        [None, Some("v".to_string())],
        "tok:k must be in new db 2 only [{seen}]"
    );

    c.send_cmd(&["GET", "web:k"]);
    assert_reply(
        &reply_within_bound(&mut c, "GET web:k"),
        b"$1\r\nv\r\n",
        "GET web:k",
    );
    c.send_cmd(&["GET", "tok:k"]);
    assert_reply(
        &reply_within_bound(&mut c, "GET tok:k"),
        b"$1\r\nv\r\n",
        "GET tok:k",
    );
}

// ---------------------------------------------------------------------------------------------
// 3. No hang after a SELECT refused by one endpoint.
// ---------------------------------------------------------------------------------------------

/// `SELECT 5` is accepted by `legacy` (16 dbs, default route and web-cache) and refused by
/// `new` (4 dbs, token-cache), so `legacy`'s connection has to be put back to db 0. Each later
/// command, to either endpoint, must answer within 5 s, from db 0; QUIT must answer and close.
#[test]
fn after_a_select_refused_by_one_endpoint_the_session_keeps_answering_and_quits() {
    let legacy = RedisServer::start_with_args(&["--databases", "16"]);
    let new = RedisServer::start_with_args(&["--databases", "4"]);
    let turnout = Turnout::start(&support::standard_body(&legacy, &new, "legacy"));

    let mut c = turnout.raw();
    c.expect_cmd(&["SET", "web:a", "1"], b"+OK\r\n");
    c.expect_cmd(&["SET", "tok:a", "1"], b"+OK\r\n");

    c.send_cmd(&["SELECT", "5"]);
    let select = reply_within_bound(&mut c, "SELECT 5");
    assert_reply(&select, OUT_OF_RANGE, "SELECT 5 refused by new (4 dbs)");

    c.send_cmd(&["GET", "tok:a"]);
    let tok = reply_within_bound(&mut c, "GET tok:a after the refused SELECT 5");
    assert_reply(&tok, b"$1\r\n1\r\n", "GET tok:a after the refused SELECT 5");

    c.send_cmd(&["GET", "web:a"]);
    let web = reply_within_bound(&mut c, "GET web:a after the refused SELECT 5");
    assert_reply(
        &web,
        b"$1\r\n1\r\n",
        "GET web:a after the refused SELECT 5 (legacy must be back in db 0)",
    );

    c.send_cmd(&["QUIT"]);
    let quit = reply_within_bound(&mut c, "QUIT");
    assert_reply(&quit, b"+OK\r\n", "QUIT");
    let (rest, closed) = c.read_to_eof(REPLY_BOUND);
    assert!(
        closed,
        "turnout did not close the connection within {REPLY_BOUND:?} of QUIT (got {})",
        show(&rest)
    );
    assert!(rest.is_empty(), "bytes after QUIT's +OK: {}", show(&rest));
}

// ---------------------------------------------------------------------------------------------
// 4. A whole pipeline written before any reply is read.
// ---------------------------------------------------------------------------------------------

const BIG_COUNT: usize = 20_000;
const BIG_LEN: usize = 8 * 1024;
/// How long the client may take to write the whole pipeline: a deadlock never ends, while a
/// debug build with one worker thread, on two cores shared with the rest of the test suite,
/// once took over 20 s (3.4 s alone).
const WRITE_BOUND: Duration = Duration::from_secs(60);
/// How long reading every reply may take once the pipeline is written.
const READ_BOUND: Duration = Duration::from_secs(90);

/// Writes 20,000 × `GET key` (an 8 KiB value on `legacy`) from a writer thread, waits
/// (bounded) until every byte is written without reading anything, then reads and checks
/// every reply.
fn write_whole_pipeline_then_read(env: &Env, key: &str) {
    let value: String = (0..BIG_LEN)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    env.legacy.set(key, &value);
    let mut frame = format!("${BIG_LEN}\r\n").into_bytes();
    frame.extend_from_slice(value.as_bytes());
    frame.extend_from_slice(b"\r\n");

    let request = cmd(&["GET", key]).repeat(BIG_COUNT);
    let addr: SocketAddr = env.turnout.proxy_addr().parse().expect("proxy addr");
    let mut reader =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to turnout");
    reader.set_nodelay(true).expect("nodelay");
    reader
        .set_write_timeout(Some(WRITE_BOUND + Duration::from_secs(5)))
        .expect("write timeout");
    let mut writer = reader.try_clone().expect("clone stream");

    let (done_tx, done_rx) = mpsc::channel();
    let writing = std::thread::spawn(move || {
        let result = writer.write_all(&request).map(|()| request.len());
        let _ = done_tx.send(());
        result
    });
    let started = Instant::now();
    if done_rx.recv_timeout(WRITE_BOUND).is_err() {
        // Unblock the writer so the thread ends, then fail.
        let _ = reader.shutdown(Shutdown::Both);
        let outcome = writing.join().expect("writer thread");
        panic!(
            "the client could not write its {BIG_COUNT}-command pipeline within {WRITE_BOUND:?} \
             while not reading replies: turnout stopped reading requests (writer: {outcome:?})"
        );
    }
    let written = writing
        .join()
        .expect("writer thread")
        .unwrap_or_else(|e| panic!("writing the pipeline: {e}"));
    eprintln!(
        "wrote {written} bytes ({BIG_COUNT} commands) in {:?}",
        started.elapsed()
    );

    // Every reply must be exactly `frame`; compare as the bytes arrive.
    let total = frame.len() * BIG_COUNT;
    let deadline = Instant::now() + READ_BOUND;
    let mut received = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    while received < total {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {received} of {total} reply bytes ({} complete replies) within {READ_BOUND:?}",
            received / frame.len()
        );
        reader
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        let n = match reader.read(&mut chunk) {
            Ok(0) => panic!(
                "turnout closed the connection after {received} of {total} reply bytes ({} \
                 complete replies)",
                received / frame.len()
            ),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("reading replies after {received} of {total} bytes: {e}"),
        };
        let n = n.min(total - received);
        for (i, &byte) in chunk[..n].iter().enumerate() {
            let at = received + i;
            if byte != frame[at % frame.len()] {
                let start = i.saturating_sub(16);
                panic!(
                    "reply #{} differs at byte {} of its frame: got ...{}...",
                    at / frame.len(),
                    at % frame.len(),
                    show(&chunk[start..(i + 16).min(n)])
                );
            }
        }
        received += n;
    }
    // Nothing more than the replies.
    reader
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    match reader.read(&mut chunk) {
        Ok(0) => panic!("turnout closed the connection after the replies"),
        Ok(n) => panic!("extra bytes after the replies: {}", show(&chunk[..n])),
        Err(_) => {}
    }
    eprintln!(
        "read {BIG_COUNT} replies ({total} bytes) in {:?}",
        started.elapsed()
    );
}

/// 20,000 × `GET web:big` (8 KiB value) written in full before reading a byte: Redis buffers
/// the replies, so turnout must keep reading requests while replies pile up.
#[test]
fn a_client_that_writes_a_whole_large_pipeline_before_reading_does_not_deadlock() {
    let env = Env::standard();
    write_whole_pipeline_then_read(&env, "web:big");
}

/// The same with an 8 KiB key name, so the requests (164 MB) are as large as the replies: they
/// can no longer all be read before turnout's reply buffers fill (with 26-byte requests
/// turnout has read the whole pipeline long before), so this one deadlocks if turnout stops
/// reading requests while replies pile up.
#[test]
fn a_client_that_writes_a_whole_pipeline_of_large_requests_before_reading_does_not_deadlock() {
    let env = Env::standard();
    let mut key = String::from("web:big:");
    while key.len() < BIG_LEN {
        key.push(char::from(b'A' + (key.len() % 26) as u8));
    }
    write_whole_pipeline_then_read(&env, &key);
}

// ---------------------------------------------------------------------------------------------
// 5. Admin PUT whose client disconnects at once.
// ---------------------------------------------------------------------------------------------

/// Sends a complete `PUT /v1/routes/{namespace}` and closes the socket without reading.
fn abandoned_put(admin: &str, namespace: &str, target: &str, reason: &str) {
    let body = serde_json::json!({ "target": target, "reason": reason }).to_string();
    let request = format!(
        "PUT /v1/routes/{namespace} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let addr: SocketAddr = admin.parse().expect("admin addr");
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to admin");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    stream
        .write_all(request.as_bytes())
        .expect("write abandoned PUT");
    drop(stream);
}

/// A normal `PUT`, asserting 200.
fn put(admin: &str, namespace: &str, target: &str, reason: &str) {
    let body = serde_json::json!({ "target": target, "reason": reason }).to_string();
    let r = support::http::request(
        admin,
        "PUT",
        &format!("/v1/routes/{namespace}"),
        &[],
        Some(&body),
    );
    assert_eq!(r.status, 200, "PUT {namespace} -> {target}: {}", r.text());
}

/// Where the live table (admin API) and the state file disagree; `None` when they agree on
/// the version, every route's target and the history's versions.
fn disagreement(turnout: &Turnout) -> Option<String> {
    let live = turnout.routes();
    let history = turnout.admin_get("/v1/history");
    assert_eq!(history.status, 200, "GET /v1/history: {}", history.text());
    let history = history.json();
    let text = match std::fs::read_to_string(turnout.state_path()) {
        Ok(text) => text,
        Err(e) => return Some(format!("state file unreadable: {e}")),
    };
    let file: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return Some(format!("state file is not JSON ({e}): {text}")),
    };
    let mut problems = Vec::new();
    if live["version"] != file["version"] {
        problems.push(format!(
            "version: live {} file {}",
            live["version"], file["version"]
        ));
    }
    for ns in ["web-cache", "token-cache", "impact", "default"] {
        let live_target = &route_of(&live, ns)["target"];
        let file_target = &file["routes"][ns]["target"];
        if live_target != file_target {
            problems.push(format!(
                "{ns} target: live {live_target} file {file_target}"
            ));
        }
    }
    let versions = |doc: &serde_json::Value, field: &str| -> Vec<u64> {
        doc[field]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["version"].as_u64()).collect())
            .unwrap_or_default()
    };
    let (live_history, file_history) = (versions(&history, "entries"), versions(&file, "history"));
    if live_history != file_history {
        problems.push(format!(
            "history versions: live {live_history:?} file {file_history:?}"
        ));
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!(
            "{}\nlive routes: {live}\nstate file: {text}",
            problems.join("; ")
        ))
    }
}

/// Lets a change that is still running finish (an abandoned PUT may complete, or its file
/// write may land, a little after the client left), then waits (bounded) for the live table
/// and the state file to agree; panics if they do not.
fn assert_consistent(turnout: &Turnout, when: &str) {
    std::thread::sleep(Duration::from_millis(500));
    let mut last = None;
    let agreed = wait_until(Duration::from_secs(3), Duration::from_millis(25), || {
        last = disagreement(turnout);
        last.is_none()
    });
    assert!(
        agreed,
        "{when}: the live route table and the state file still disagree 3.5 s later: {}",
        last.unwrap_or_default()
    );
}

fn other_endpoint(target: &str) -> &'static str {
    if target == "new" {
        "legacy"
    } else {
        "new"
    }
}

/// A PUT whose client vanishes mid-request may be applied or not, but never applied halfway:
/// the state file and the live table must agree afterwards, on the version, every target and
/// the history.
#[test]
fn an_admin_put_abandoned_by_its_client_leaves_the_live_table_and_the_state_file_in_agreement() {
    let env = Env::standard();
    let admin = env.turnout.admin_addr();
    // A first change creates the state file.
    put(&admin, "impact", "legacy", "create the state file");
    assert_consistent(&env.turnout, "after a normal PUT");

    let mut applied = 0;
    for i in 0..20 {
        // Always a real change: to the endpoint web-cache is not on.
        let target = other_endpoint(&env.turnout.target("web-cache"));
        let before = env.turnout.version();
        if i % 3 == 2 {
            // A normal PUT of another route racing with the abandoned one.
            let impact_target = other_endpoint(&env.turnout.target("impact"));
            let admin_bg = admin.clone();
            let racing = std::thread::spawn(move || {
                put(&admin_bg, "impact", impact_target, &format!("racing {i}"))
            });
            abandoned_put(&admin, "web-cache", target, &format!("abandoned {i}"));
            racing.join().expect("racing PUT thread");
        } else {
            abandoned_put(&admin, "web-cache", target, &format!("abandoned {i}"));
        }
        assert_consistent(
            &env.turnout,
            &format!("after abandoned PUT #{i} of web-cache -> {target}"),
        );
        if env.turnout.target("web-cache") == target && env.turnout.version() > before {
            applied += 1;
        }
        if i % 2 == 1 {
            // A normal PUT in between, on the route the abandoned ones change.
            let other = other_endpoint(&env.turnout.target("web-cache"));
            put(&admin, "web-cache", other, &format!("normal {i}"));
            assert_consistent(
                &env.turnout,
                &format!("after normal PUT #{i} of web-cache -> {other}"),
            );
        }
    }
    eprintln!("{applied} of 20 abandoned PUTs were applied");

    // The table still takes changes and they are persisted.
    let other = other_endpoint(&env.turnout.target("web-cache"));
    let doc = env.turnout.flip("web-cache", other, "final");
    assert_eq!(route_of(&doc, "web-cache")["target"], other);
    assert_consistent(&env.turnout, "after the final PUT");
}
