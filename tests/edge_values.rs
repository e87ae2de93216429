//! Values and replies at the edges of what a RESP proxy must carry unchanged.
//!
//! turnout cuts requests out of its read buffer and streams replies through a scanner without
//! re-encoding them. These tests push that machinery to its edges with real `redis-server`
//! processes:
//!
//! - a 100 MB value, SET and GET through turnout, compared by length, checksum and content
//!   (the reply is streamed and checked as it arrives, so the test never holds it twice);
//! - binary keys and values (every byte value, `\r\n` and RESP look-alikes inside, the empty
//!   key and the empty value) routed by their prefix bytes to the right backend, including
//!   through split MGET/MSET;
//! - a RESP3 reply nested 50 levels deep (maps, sets, doubles, big numbers, booleans and
//!   errors inside arrays) that must come back byte for byte as the backend sends it;
//! - clients that vanish in the middle of a 10,000-command pipeline, which must neither disturb
//!   other clients nor leak connections (`turnout_client_connections` returns to its value).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::raw::encode;
use support::{show, wait_until, Env, RawClient, RedisServer, Reply};

// ---------------------------------------------------------------------------------------------
// A 100 MB value
// ---------------------------------------------------------------------------------------------

const HUGE_LEN: usize = 100 * 1024 * 1024;
/// Everything about the 100 MB value (SET, GET and the checks) must finish within this.
const HUGE_BUDGET: Duration = Duration::from_secs(20);

/// FNV-1a, 64 bits: a position-sensitive checksum, enough to tell a shifted or corrupted
/// stream from the original.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// `len` pseudo-random bytes (xorshift64*), so every byte value, `\r\n` and RESP type bytes
/// occur all over the value.
fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(HUGE_BUDGET))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(HUGE_BUDGET))
        .expect("write timeout");
    stream
}

/// Reads one `\r\n`-terminated line (without the terminator).
fn read_line(reader: &mut impl BufRead, what: &str) -> Vec<u8> {
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .unwrap_or_else(|e| panic!("{what}: reading a reply line: {e}"));
    assert!(
        line.ends_with(b"\r\n"),
        "{what}: truncated reply line {}",
        show(&line)
    );
    line.truncate(line.len() - 2);
    line
}

/// Reads a bulk reply of exactly `expected.len()` bytes in chunks, comparing each chunk with
/// `expected` as it arrives; returns the checksum of what was received.
fn read_bulk_streaming(reader: &mut impl BufRead, expected: &[u8], what: &str) -> Fnv {
    let header = read_line(reader, what);
    let announced = format!("${}", expected.len());
    assert_eq!(
        show(&header),
        announced,
        "{what}: bulk header (length {} expected)",
        expected.len()
    );
    let mut sum = Fnv::new();
    let mut chunk = vec![0u8; 1024 * 1024];
    let mut at = 0;
    while at < expected.len() {
        let want = chunk.len().min(expected.len() - at);
        reader
            .read_exact(&mut chunk[..want])
            .unwrap_or_else(|e| panic!("{what}: after {at} of {} bytes: {e}", expected.len()));
        if chunk[..want] != expected[at..at + want] {
            let offset = chunk[..want]
                .iter()
                .zip(&expected[at..at + want])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!("{what}: first differing byte at offset {}", at + offset);
        }
        sum.update(&chunk[..want]);
        at += want;
    }
    let mut crlf = [0u8; 2];
    reader
        .read_exact(&mut crlf)
        .unwrap_or_else(|e| panic!("{what}: bulk terminator: {e}"));
    assert_eq!(&crlf, b"\r\n", "{what}: bulk not terminated by CRLF");
    sum
}

/// Both defaults leave room for it: redis-server's `proto-max-bulk-len` (512 MB) and turnout's
/// `max_request_bytes` (512 MiB).
#[test]
fn a_100_mb_value_round_trips_intact() {
    let env = Env::standard();
    let started = Instant::now();
    let value = pseudo_random(HUGE_LEN, 0x9e37_79b9_7f4a_7c15);
    let mut sent_sum = Fnv::new();
    sent_sum.update(&value);

    let mut stream = connect(&env.turnout.proxy_addr());
    let mut reader = BufReader::with_capacity(1024 * 1024, stream.try_clone().expect("clone"));
    // SET web:huge <100 MB>, written as header, value and terminator without building a copy.
    stream
        .write_all(format!("*3\r\n$3\r\nSET\r\n$8\r\nweb:huge\r\n${HUGE_LEN}\r\n").as_bytes())
        .expect("write SET header");
    stream.write_all(&value).expect("write the 100 MB value");
    stream.write_all(b"\r\n").expect("write SET terminator");
    assert_eq!(show(&read_line(&mut reader, "SET web:huge")), "+OK");

    // It is stored, whole, on the owning backend only.
    let mut legacy = RawClient::connect(&env.legacy.addr());
    legacy.expect_cmd(
        &["STRLEN", "web:huge"],
        format!(":{HUGE_LEN}\r\n").as_bytes(),
    );
    for offset in [0, 1, HUGE_LEN / 2 + 3, HUGE_LEN - 16] {
        let range = &value[offset..offset + 16];
        let mut expected = b"$16\r\n".to_vec();
        expected.extend_from_slice(range);
        expected.extend_from_slice(b"\r\n");
        legacy.send(&encode(&[
            b"GETRANGE",
            b"web:huge",
            offset.to_string().as_bytes(),
            (offset + 15).to_string().as_bytes(),
        ]));
        assert_eq!(
            show(&legacy.read_frame()),
            show(&expected),
            "bytes {offset}..{} on legacy",
            offset + 16
        );
    }
    let mut new = RawClient::connect(&env.new.addr());
    new.expect_cmd(&["EXISTS", "web:huge"], b":0\r\n");

    // GET it back, pipelined with small commands on both backends around it.
    let mut request = encode(&[b"SET", b"tok:small", b"s"]);
    request.extend(encode(&[b"GET", b"web:huge"]));
    request.extend(encode(&[b"GET", b"tok:small"]));
    stream.write_all(&request).expect("write GET pipeline");
    assert_eq!(show(&read_line(&mut reader, "SET tok:small")), "+OK");
    let got_sum = read_bulk_streaming(&mut reader, &value, "GET web:huge");
    assert_eq!(
        got_sum.0, sent_sum.0,
        "checksum of the value read back differs from the one sent"
    );
    assert_eq!(show(&read_line(&mut reader, "GET tok:small")), "$1");
    assert_eq!(show(&read_line(&mut reader, "GET tok:small")), "s");

    let elapsed = started.elapsed();
    assert!(
        elapsed < HUGE_BUDGET,
        "100 MB SET + GET took {elapsed:?} (budget {HUGE_BUDGET:?})"
    );
}

// ---------------------------------------------------------------------------------------------
// Binary keys and values
// ---------------------------------------------------------------------------------------------

/// Every byte value once, in order.
fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A bulk string reply.
fn bulk(data: &[u8]) -> Vec<u8> {
    concat(&[format!("${}\r\n", data.len()).as_bytes(), data, b"\r\n"])
}

/// Sends binary `args` on `c` and asserts the exact reply.
fn expect_bin(c: &mut RawClient, args: &[&[u8]], expected: &[u8], what: &str) {
    c.send(&encode(args));
    let got = c.read_frame();
    assert_eq!(show(&got), show(expected), "{what}");
}

#[test]
fn binary_keys_and_values_are_routed_by_their_prefix_bytes() {
    // Default route → new, so only `web:` keys belong on legacy and a misrouted key shows.
    let env = Env::with_default("new");
    let bytes = all_bytes();
    let resp_lookalike: &[u8] = b"*1\r\n$4\r\nPING\r\n";
    // (key, value, whether it belongs on legacy)
    let cases: Vec<(Vec<u8>, Vec<u8>, bool)> = vec![
        (concat(&[b"web:", &bytes]), bytes.clone(), true),
        (
            concat(&[b"web:\r\n$3\r\nGET\r\n"]),
            concat(&[b"a\r\nb", &bytes, b"\r\n"]),
            true,
        ),
        (b"web:".to_vec(), b"\r\n".to_vec(), true),
        (b"web:empty-value".to_vec(), Vec::new(), true),
        (
            concat(&[b"tok:\r\n", &bytes]),
            resp_lookalike.to_vec(),
            false,
        ),
        (b"session:\x00".to_vec(), b"$-1\r\n".to_vec(), false),
        (
            b"impact:\xff\xfe\x00".to_vec(),
            b"-ERR not an error\r\n".to_vec(),
            false,
        ),
        // Outside every namespace: the default route.
        (Vec::new(), b"the empty key".to_vec(), false),
        (b"\x00web:x".to_vec(), bytes.clone(), false),
        (b"WEB:x".to_vec(), b"case matters".to_vec(), false),
        (b"web".to_vec(), b"no colon".to_vec(), false),
        (b"we\r\nb:".to_vec(), b"split prefix".to_vec(), false),
    ];
    let mut c = env.turnout.raw();
    let mut legacy = RawClient::connect(&env.legacy.addr());
    let mut new = RawClient::connect(&env.new.addr());
    for (key, value, on_legacy) in &cases {
        let what = format!("key {}", show(key));
        expect_bin(&mut c, &[b"SET", key, value], b"+OK\r\n", &what);
        expect_bin(&mut c, &[b"GET", key], &bulk(value), &what);
        expect_bin(
            &mut c,
            &[b"STRLEN", key],
            format!(":{}\r\n", value.len()).as_bytes(),
            &what,
        );
        let (owner, other) = if *on_legacy {
            (&mut legacy, &mut new)
        } else {
            (&mut new, &mut legacy)
        };
        expect_bin(
            owner,
            &[b"GET", key],
            &bulk(value),
            &format!("{what} on owner"),
        );
        expect_bin(
            other,
            &[b"EXISTS", key],
            b":0\r\n",
            &format!("{what} elsewhere"),
        );
    }

    // All of them at once through split MSET and MGET, in the client's key order.
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    let values: Vec<Vec<u8>> = (0..cases.len())
        .map(|i| concat(&[&[i as u8, b'\r', b'\n'], &bytes[i..]]))
        .collect();
    for ((key, _, _), value) in cases.iter().zip(&values) {
        mset.push(key);
        mset.push(value);
    }
    expect_bin(&mut c, &mset, b"+OK\r\n", "split MSET of binary keys");
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(cases.iter().rev().map(|(key, _, _)| key.as_slice()));
    mget.push(b"web:\x00missing");
    let mut expected = format!("*{}\r\n", cases.len() + 1).into_bytes();
    for value in values.iter().rev() {
        expected.extend(bulk(value));
    }
    expected.extend_from_slice(b"$-1\r\n");
    expect_bin(&mut c, &mget, &expected, "split MGET of binary keys");
    for ((key, _, on_legacy), value) in cases.iter().zip(&values) {
        let owner = if *on_legacy { &mut legacy } else { &mut new };
        expect_bin(
            owner,
            &[b"GET", key],
            &bulk(value),
            &format!("MSET {} on owner", show(key)),
        );
    }

    // Binary fields and members in aggregate replies.
    expect_bin(
        &mut c,
        &[b"HSET", b"web:h\x00", &bytes, b"\r\n", b"", b""],
        b":2\r\n",
        "HSET binary fields",
    );
    expect_bin(
        &mut c,
        &[b"HGET", b"web:h\x00", &bytes],
        &bulk(b"\r\n"),
        "HGET binary field",
    );
    expect_bin(
        &mut legacy,
        &[b"HGET", b"web:h\x00", b""],
        &bulk(b""),
        "HGET empty field on legacy",
    );
    expect_bin(
        &mut c,
        &[b"RPUSH", b"tok:l\r\n", b"", b"\r\n", &bytes, resp_lookalike],
        b":4\r\n",
        "RPUSH binary elements",
    );
    let mut lrange = b"*4\r\n".to_vec();
    for element in [b"".as_slice(), b"\r\n", &bytes, resp_lookalike] {
        lrange.extend(bulk(element));
    }
    expect_bin(
        &mut c,
        &[b"LRANGE", b"tok:l\r\n", b"0", b"-1"],
        &lrange,
        "LRANGE binary elements",
    );
    expect_bin(
        &mut new,
        &[b"LLEN", b"tok:l\r\n"],
        b":4\r\n",
        "binary list on new",
    );

    // Counting commands split across endpoints, with the empty key among them.
    let mut del: Vec<&[u8]> = vec![b"DEL"];
    del.extend(cases.iter().map(|(key, _, _)| key.as_slice()));
    expect_bin(
        &mut c,
        &del,
        format!(":{}\r\n", cases.len()).as_bytes(),
        "split DEL of binary keys",
    );
    expect_bin(&mut legacy, &[b"DBSIZE"], b":1\r\n", "left on legacy");
    expect_bin(&mut new, &[b"DBSIZE"], b":1\r\n", "left on new");
}

// ---------------------------------------------------------------------------------------------
// A deeply nested RESP3 reply
// ---------------------------------------------------------------------------------------------

/// Builds a reply `ARGV[1]` levels deep, cycling through RESP3 maps, arrays with booleans,
/// nested errors and bulk strings holding `\r\n`, doubles, big numbers and sets.
const NESTED_SCRIPT: &str = r#"
redis.setresp(3)
local function level(d)
  if d == 0 then
    return {double = 3.5}
  end
  local inner = level(d - 1)
  local kind = d % 4
  if kind == 0 then
    return {map = {['k' .. d] = inner, ['s' .. d] = {set = {['m' .. d] = true, x = true}}}}
  elseif kind == 1 then
    return {d, inner, 'leaf\r\n' .. d, true, false, {err = 'E' .. d .. ' nested error'}}
  elseif kind == 2 then
    return {inner, {double = d + 0.25}, {big_number = '123456789012345678901234567890' .. d}}
  else
    return {map = {[d] = inner}}
  end
end
return level(tonumber(ARGV[1]))
"#;

const NESTING: usize = 50;

/// Aggregate nesting depth of a parsed reply (a scalar is 0).
fn depth(reply: &Reply) -> usize {
    let children: &[Reply] = match reply {
        Reply::Array(Some(items)) => items,
        Reply::Resp3('%' | '~' | '>' | '|', items) => items,
        _ => return 0,
    };
    1 + children.iter().map(depth).max().unwrap_or(0)
}

/// `HELLO protocol`, then the nested EVAL; returns the EVAL reply's raw bytes.
fn nested_eval(c: &mut RawClient, protocol: &str) -> Vec<u8> {
    c.send_cmd(&["HELLO", protocol]);
    let hello = c.read_frame();
    let expected_start: &[u8] = if protocol == "3" {
        b"%7\r\n"
    } else {
        b"*14\r\n"
    };
    assert!(
        hello.starts_with(expected_start),
        "HELLO {protocol}: {}",
        show(&hello)
    );
    c.roundtrip(&["EVAL", NESTED_SCRIPT, "0", &NESTING.to_string()])
}

#[test]
fn a_deeply_nested_resp3_reply_passes_through_byte_for_byte() {
    // Keyless EVAL goes to the default route, legacy.
    let env = Env::standard();
    let mut proxied = env.turnout.raw();
    let mut direct = RawClient::connect(&env.legacy.addr());
    for protocol in ["3", "2"] {
        let through = nested_eval(&mut proxied, protocol);
        let reference = nested_eval(&mut direct, protocol);
        assert!(
            through == reference,
            "RESP{protocol}: nested EVAL reply differs\nthrough turnout: {}\ndirect:          {}",
            show(&through),
            show(&reference)
        );
        let (parsed, used) = support::resp::parse(&through)
            .expect("valid RESP")
            .expect("complete reply");
        assert_eq!(used, through.len(), "RESP{protocol}: one reply");
        assert_eq!(depth(&parsed), NESTING, "RESP{protocol}: nesting depth");
        let text = String::from_utf8_lossy(&through).into_owned();
        assert!(text.contains("-E49 nested error\r\n"), "{text}");
        assert!(text.contains("$8\r\nleaf\r\n49\r\n"), "{text}");
        if protocol == "3" {
            for marker in [
                "\r\n%2\r\n",
                "\r\n%1\r\n",
                "\r\n~2\r\n",
                ",3.5\r\n",
                "#t\r\n",
            ] {
                assert!(
                    text.contains(marker),
                    "RESP3 reply lacks {marker:?}: {text}"
                );
            }
            assert!(
                text.contains("\r\n(12345678901234567890123456789050\r\n"),
                "{text}"
            );
        } else {
            assert!(!text.contains("\r\n%"), "RESP2 reply holds a map: {text}");
        }
    }

    // Pipelined between commands of the other backend, it still comes back in place.
    proxied.send_cmd(&["HELLO", "3"]);
    let _ = proxied.read_frame();
    let mut request = support::cmd(&["SET", "tok:n", "before"]);
    request.extend(support::cmd(&[
        "EVAL",
        NESTED_SCRIPT,
        "0",
        &NESTING.to_string(),
    ]));
    request.extend(support::cmd(&["GET", "tok:n"]));
    proxied.send(&request);
    let replies = proxied.read_frames(3, Duration::from_secs(10));
    assert_eq!(show(&replies[0]), show(b"+OK\r\n"));
    let reference = nested_eval(&mut direct, "3");
    assert!(replies[1] == reference, "pipelined nested EVAL differs");
    assert_eq!(show(&replies[2]), show(b"$6\r\nbefore\r\n"));
}

// ---------------------------------------------------------------------------------------------
// Clients vanishing mid-pipeline
// ---------------------------------------------------------------------------------------------

/// The value of an unlabelled metric (or the one with exactly these labels).
fn metric(env: &Env, series: &str) -> f64 {
    let r = env.turnout.admin_get("/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    let text = r.text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// Waits (bounded) until `series` reads `value`, asserting it does.
fn wait_metric(env: &Env, series: &str, value: f64, what: &str) {
    let reached = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        metric(env, series) == value
    });
    assert!(
        reached,
        "{what}: {series} is {} after 10s, expected {value}\n{}",
        metric(env, series),
        connection_report(env)
    );
}

/// turnout's connection gauges and each backend's client list, for failure messages.
fn connection_report(env: &Env) -> String {
    let metrics = env.turnout.admin_get("/metrics").text();
    let gauges: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("_connections") && !l.starts_with('#'))
        .collect();
    let clients = |server: &RedisServer| {
        server
            .command(&["CLIENT", "LIST"])
            .bulk_text()
            .unwrap_or_default()
    };
    format!(
        "turnout gauges: {gauges:?}\nlegacy CLIENT LIST:\n{}new CLIENT LIST:\n{}",
        clients(&env.legacy),
        clients(&env.new)
    )
}

/// One round trip on each backend for `bystander`, each answered within a second.
fn bystander_round(bystander: &mut RawClient, round: usize) {
    for key in [format!("web:stay{round}"), format!("tok:stay{round}")] {
        let start = Instant::now();
        bystander.send_cmd(&["SET", &key, "here"]);
        bystander.send_cmd(&["GET", &key]);
        let replies = bystander.read_frames(2, Duration::from_secs(5));
        assert_eq!(show(&replies[0]), show(b"+OK\r\n"), "SET {key}");
        assert_eq!(show(&replies[1]), show(b"$4\r\nhere\r\n"), "GET {key}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "bystander SET+GET {key} took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn clients_vanishing_mid_pipeline_disturb_no_one_and_leak_nothing() {
    // One shared connection per endpoint: every plain client's commands travel on it, so the
    // gauges below count it once, whoever comes and goes.
    let env = Env::custom(|b| b.proxy_option("shared_connections = 1"), "legacy");
    env.legacy.set("web:big", &"b".repeat(64 * 1024));
    let mut bystander = env.turnout.raw();
    bystander_round(&mut bystander, 0);
    // Only the bystander is connected (the harness's readiness probes are gone).
    wait_metric(&env, "turnout_client_connections", 1.0, "baseline");
    let legacy_series = "turnout_upstream_connections{endpoint=\"legacy\"}";
    let new_series = "turnout_upstream_connections{endpoint=\"new\"}";
    assert_eq!(metric(&env, legacy_series), 1.0, "bystander's legacy link");
    assert_eq!(metric(&env, new_series), 1.0, "bystander's new link");

    // 0: small commands on three namespaces; 1: also 500 GETs of 64 KB, so turnout is holding
    // back replies for a client that never reads when it leaves; 2: ends in a partial frame.
    for variant in 0..3 {
        let mut request = Vec::new();
        for i in 0..10_000 {
            let args: Vec<String> = match i % 4 {
                0 => vec!["SET".into(), format!("web:gone{variant}:{i}"), "x".into()],
                1 => vec!["GET".into(), format!("tok:gone{variant}:{i}")],
                2 if variant == 1 && i % 20 == 2 => vec!["GET".into(), "web:big".into()],
                2 => vec!["INCR".into(), "impact:count".into()],
                _ => vec!["PING".into()],
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            request.extend(support::cmd(&args));
        }
        if variant == 2 {
            request.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$10\r\nweb:"); // and a partial frame
        }
        let mut stream = TcpStream::connect(env.turnout.proxy_addr()).expect("connect");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("write timeout");
        stream
            .write_all(&request)
            .unwrap_or_else(|e| panic!("variant {variant}: writing 10,000 commands: {e}"));
        // Gone without reading a single reply.
        drop(stream);
        bystander_round(&mut bystander, variant + 1);
    }

    wait_metric(
        &env,
        "turnout_client_connections",
        1.0,
        "after the clients left",
    );
    wait_metric(
        &env,
        legacy_series,
        1.0,
        "legacy links after the clients left",
    );
    wait_metric(&env, new_series, 1.0, "new links after the clients left");
    bystander_round(&mut bystander, 9);
    assert_eq!(env.turnout.admin_get("/healthz").status, 200);
    // New clients are served as before.
    let mut fresh = env.turnout.raw();
    fresh.expect_cmd(&["GET", "web:stay9"], b"$4\r\nhere\r\n");
    drop(fresh);
    wait_metric(
        &env,
        "turnout_client_connections",
        1.0,
        "after a fresh client",
    );
}
