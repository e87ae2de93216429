//! Pipelining: 10,000 pipelined commands alternating between namespaces on different endpoints
//! come back complete and in order, through a client library and through a raw socket.

mod support;

use std::io::Write;
use std::time::Duration;

use redis::Value;
use support::{cmd, show, Env};

const PAIRS: usize = 2_500; // 2,500 x (SET web, SET tok) + 2,500 x (GET web, GET tok) = 10,000

#[test]
fn ten_thousand_pipelined_commands_through_a_client_library() {
    let env = Env::standard();
    let mut con = env.turnout.client();
    let mut pipe = redis::pipe();
    for i in 0..PAIRS {
        pipe.cmd("SET").arg(format!("web:{i}")).arg(format!("w{i}"));
        pipe.cmd("SET").arg(format!("tok:{i}")).arg(format!("t{i}"));
    }
    for i in 0..PAIRS {
        pipe.cmd("GET").arg(format!("web:{i}"));
        pipe.cmd("GET").arg(format!("tok:{i}"));
    }
    let replies: Vec<Value> = pipe.query(&mut con).expect("pipeline through turnout");
    assert_eq!(replies.len(), 4 * PAIRS);
    for (n, reply) in replies[..2 * PAIRS].iter().enumerate() {
        assert_eq!(reply, &Value::Okay, "reply #{n}");
    }
    for (n, reply) in replies[2 * PAIRS..].iter().enumerate() {
        let i = n / 2;
        let expected = if n % 2 == 0 {
            format!("w{i}")
        } else {
            format!("t{i}")
        };
        assert_eq!(
            reply,
            &Value::BulkString(expected.into_bytes()),
            "GET reply #{n}"
        );
    }
    assert_eq!(env.legacy.dbsize(), PAIRS as i64);
    assert_eq!(env.new.dbsize(), PAIRS as i64);
    assert_eq!(env.legacy.get("web:1234").as_deref(), Some("w1234"));
    assert_eq!(env.new.get("tok:1234").as_deref(), Some("t1234"));
}

#[test]
fn ten_thousand_pipelined_commands_written_at_once_on_a_raw_socket() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let mut request = Vec::new();
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for i in 0..PAIRS {
        request.extend(cmd(&["SET", &format!("web:r{i}"), &format!("w{i}")]));
        expected.push(b"+OK\r\n".to_vec());
        request.extend(cmd(&["SET", &format!("tok:r{i}"), &format!("t{i}")]));
        expected.push(b"+OK\r\n".to_vec());
    }
    for i in 0..PAIRS {
        for value in [format!("w{i}"), format!("t{i}")] {
            let key = format!(
                "{}:r{i}",
                if value.starts_with('w') { "web" } else { "tok" }
            );
            request.extend(cmd(&["GET", &key]));
            expected.push(format!("${}\r\n{value}\r\n", value.len()).into_bytes());
        }
    }
    // Write everything in one go from another thread while this one reads, so neither side's
    // socket buffers can stall the test.
    let mut writer = c.stream_clone();
    let writing = std::thread::spawn(move || writer.write_all(&request));
    let replies = c.read_frames(expected.len(), Duration::from_secs(60));
    writing
        .join()
        .expect("writer thread")
        .expect("write pipeline");
    for (n, (got, want)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(show(got), show(want), "reply #{n}");
    }
    assert_eq!(env.legacy.dbsize(), PAIRS as i64);
    assert_eq!(env.new.dbsize(), PAIRS as i64);
    // Nothing extra arrives.
    let (extra, _) = c.read_to_eof(Duration::from_millis(200));
    assert!(extra.is_empty(), "unexpected extra bytes: {}", show(&extra));
}

#[test]
fn replies_keep_client_order_when_a_later_endpoint_answers_first() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["SET", "tok:fast", "f"], b"+OK\r\n");
    // BLPOP on legacy times out after 0.3 s; the GETs on `new` answer long before it.
    let mut request = cmd(&["BLPOP", "web:never", "0.3"]);
    request.extend(cmd(&["GET", "tok:fast"]));
    request.extend(cmd(&["SET", "web:slow", "s"]));
    request.extend(cmd(&["GET", "tok:fast"]));
    c.send(&request);
    let replies = c.read_frames(4, Duration::from_secs(10));
    let expected: [&[u8]; 4] = [b"*-1\r\n", b"$1\r\nf\r\n", b"+OK\r\n", b"$1\r\nf\r\n"];
    for (n, (got, want)) in replies.iter().zip(expected).enumerate() {
        assert_eq!(show(got), show(want), "reply #{n}");
    }
}
