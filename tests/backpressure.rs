//! A client may write a whole pipeline before reading any reply, as redis-py's
//! `Pipeline.execute` does. Redis keeps reading such a client and buffers the replies, so
//! turnout must keep forwarding its requests while replies pile up (pushing back on the
//! endpoint instead), or the client and turnout wait on each other forever.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{cmd, Env};

/// Large enough that the requests alone overflow every socket buffer and turnout's own
/// `max_buffered_bytes` (16 MiB): 30,000 × ~2 KiB keys ≈ 60 MiB of requests and 30,000 ×
/// 8 KiB = 240 MiB of replies.
const COUNT: usize = 30_000;
const KEY_LEN: usize = 2048;
const VALUE_LEN: usize = 8192;
const WRITE_BOUND: Duration = Duration::from_secs(20);
const READ_BOUND: Duration = Duration::from_secs(60);

#[test]
fn a_pipeline_larger_than_every_buffer_written_before_reading_completes() {
    let env = Env::standard();
    let key = format!("web:{}", "k".repeat(KEY_LEN));
    let value = "v".repeat(VALUE_LEN);
    env.legacy.set(&key, &value);
    let request = cmd(&["GET", &key]).repeat(COUNT);
    let mut reply = format!("${VALUE_LEN}\r\n").into_bytes();
    reply.extend_from_slice(value.as_bytes());
    reply.extend_from_slice(b"\r\n");

    let addr: SocketAddr = env.turnout.proxy_addr().parse().expect("proxy address");
    let mut reader = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    reader
        .set_write_timeout(Some(WRITE_BOUND))
        .expect("write timeout");
    let mut writer = reader.try_clone().expect("clone");
    let (done, finished) = mpsc::channel();
    let writing = std::thread::spawn(move || {
        let result = writer.write_all(&request);
        let _ = done.send(());
        result
    });
    if finished.recv_timeout(WRITE_BOUND).is_err() {
        let _ = reader.shutdown(Shutdown::Both);
        let _ = writing.join();
        panic!("the {COUNT}-command pipeline could not be written within {WRITE_BOUND:?}: turnout stopped reading it");
    }
    writing
        .join()
        .expect("writer thread")
        .expect("pipeline written");

    let total = reply.len() * COUNT;
    let deadline = Instant::now() + READ_BOUND;
    let mut received = Vec::with_capacity(reply.len() * 2);
    let mut checked = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    while checked < COUNT {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {checked} of {COUNT} replies within {READ_BOUND:?}"
        );
        reader.set_read_timeout(Some(left)).expect("read timeout");
        let n = reader.read(&mut chunk).expect("read replies");
        assert!(
            n > 0,
            "connection closed after {checked} of {COUNT} replies"
        );
        received.extend_from_slice(&chunk[..n]);
        while received.len() >= reply.len() {
            assert!(received.starts_with(&reply), "reply {checked} differs");
            received.drain(..reply.len());
            checked += 1;
        }
    }
    assert!(
        received.is_empty(),
        "{} unexpected bytes after {total} reply bytes",
        received.len()
    );
}
