//! Self-tests of the harness in `tests/support`, against redis-server alone, so a broken
//! harness is not mistaken for a broken proxy.

mod support;

use std::time::Duration;

use support::{cmd, resp, show, RawClient, RedisServer, Reply};

#[test]
fn redis_server_starts_stops_and_restarts_on_the_same_port() {
    let mut server = RedisServer::start();
    let port = server.port();
    let mut c = RawClient::connect(&server.addr());
    c.expect_cmd(&["PING"], b"+PONG\r\n");
    c.expect_cmd(&["DEBUG", "SLEEP", "0"], b"+OK\r\n");
    server.set("k", "v");
    assert_eq!(server.get("k").as_deref(), Some("v"));
    server.stop();
    let (_, eof) = c.read_to_eof(Duration::from_secs(5));
    assert!(eof);
    assert!(RawClient::try_connect(&server.addr(), Duration::from_millis(500)).is_err());
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.get("k"), None, "nothing persisted");
    assert_eq!(server.dbsize(), 0);
}

#[test]
fn replicaof_links_two_servers() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicaof(&primary);
    primary.set("r", "1");
    assert!(support::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || replica.get("r").as_deref() == Some("1")
    ));
}

#[test]
fn resp_parser_cuts_frames() {
    let mut buf = b"+OK\r\n".to_vec();
    buf.extend(b"*3\r\n$1\r\na\r\n$-1\r\n:7\r\n-ERR x\r\n$2\r\nh");
    let (first, used) = resp::parse(&buf).expect("ok").expect("complete");
    assert_eq!(first, Reply::Simple("OK".into()));
    let rest = &buf[used..];
    let (second, used2) = resp::parse(rest).expect("ok").expect("complete");
    assert_eq!(
        second,
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"a".to_vec())),
            Reply::Bulk(None),
            Reply::Int(7)
        ]))
    );
    let (third, used3) = resp::parse(&rest[used2..]).expect("ok").expect("complete");
    assert_eq!(third.error(), Some("ERR x"));
    assert_eq!(resp::parse(&rest[used2 + used3..]).expect("ok"), None);
    assert_eq!(
        show(&cmd(&["GET", "k"])),
        show(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    );
    let resp3 = b"%1\r\n$1\r\nf\r\n_\r\n,1.5\r\n";
    let (map, used) = resp::parse(resp3).expect("ok").expect("complete");
    assert_eq!(
        map,
        Reply::Resp3(
            '%',
            vec![
                Reply::Bulk(Some(b"f".to_vec())),
                Reply::Resp3('_', vec![Reply::Simple(String::new())])
            ]
        )
    );
    assert!(matches!(
        resp::parse(&resp3[used..]),
        Ok(Some((Reply::Resp3(',', _), 6)))
    ));
}

#[test]
fn raw_client_pipelines_against_redis() {
    let server = RedisServer::start();
    let mut c = RawClient::connect(&server.addr());
    let mut request = Vec::new();
    for i in 0..1000 {
        request.extend(cmd(&["SET", &format!("k{i}"), &i.to_string()]));
    }
    c.send(&request);
    let replies = c.read_frames(1000, Duration::from_secs(10));
    assert!(replies.iter().all(|r| r == b"+OK\r\n"));
    c.send(b"GET k999\r\n");
    assert_eq!(show(&c.read_frame()), show(b"$3\r\n999\r\n"));
}
