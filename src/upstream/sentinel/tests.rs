//! Unit tests of the Sentinel module's pure parts: reading `GET-MASTER-ADDR-BY-NAME` and
//! `ROLE` replies, the watch's generation, and the error when no sentinel can be reached (a
//! closed port, no server). Everything that needs a sentinel or a server to answer runs
//! against real `redis-server --sentinel` processes in `tests/sentinel.rs`: Redis behaviour
//! is never imitated here.

use super::*;

fn sentinel_endpoint(name: &str, sentinel: &str) -> EndpointConfig {
    let mut endpoint = EndpointConfig::standalone(name, "127.0.0.1:1");
    endpoint.kind = EndpointKind::Sentinel {
        sentinels: vec![sentinel.to_string()],
        master_name: "mymaster".to_string(),
        sentinel_credentials: None,
        recheck: Duration::from_secs(1),
    };
    endpoint
}

#[test]
fn the_master_address_reply_reads_as_host_port() {
    assert_eq!(
        master_address(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n").as_deref(),
        Ok("127.0.0.1:6380")
    );
    assert_eq!(
        master_address(b"*2\r\n$3\r\n::1\r\n$4\r\n6380\r\n").as_deref(),
        Ok("[::1]:6380")
    );
}

#[test]
fn an_unknown_master_and_refusals_are_named() {
    assert_eq!(
        master_address(b"*-1\r\n"),
        Err("master unknown".to_string())
    );
    assert_eq!(master_address(b"_\r\n"), Err("master unknown".to_string()));
    assert_eq!(
        master_address(b"-NOAUTH Authentication required.\r\n"),
        Err("refused: NOAUTH Authentication required.".to_string())
    );
    assert_eq!(
        master_address(b"*2\r\n$9\r\n127.0.0.1\r\n$1\r\nx\r\n"),
        Err("unexpected reply \"*2\\r\\n$9\\r\\n127.0.0.1\\r\\n$1\\r\\nx\"".to_string())
    );
}

#[test]
fn role_tells_a_primary_from_a_replica() {
    assert_eq!(role(b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"), Role::Primary);
    assert_eq!(
        role(b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:1\r\n"),
        Role::Other("slave".to_string())
    );
    assert_eq!(role(b"-NOPERM no\r\n"), Role::Unknown);
    assert_eq!(role(b"-ERR x\r\n"), Role::Other("-ERR x".to_string()));
}

#[test]
fn a_change_of_primary_bumps_the_generation_once() {
    let w = Watch::default();
    assert!(w.set("sentinel-unit-watch", "127.0.0.1:1", "test"));
    assert_eq!(w.generation(), 0);
    assert!(!w.set("sentinel-unit-watch", "127.0.0.1:1", "test"));
    assert!(w.set("sentinel-unit-watch", "127.0.0.1:2", "test"));
    assert_eq!(w.generation(), 1);
    assert_eq!(w.primary().as_deref(), Some("127.0.0.1:2"));
}

#[test]
fn only_sentinel_endpoints_have_a_generation() {
    assert!(generation(&EndpointConfig::standalone(
        "sentinel-unit-plain",
        "127.0.0.1:1"
    ))
    .is_none());
    let endpoint = sentinel_endpoint("sentinel-unit-gen", "127.0.0.1:1");
    let a = generation(&endpoint).expect("a Sentinel endpoint");
    watch("sentinel-unit-gen").set("sentinel-unit-gen", "127.0.0.1:5", "test");
    watch("sentinel-unit-gen").set("sentinel-unit-gen", "127.0.0.1:6", "test");
    assert_eq!(a.load(Ordering::Acquire), 1);
}

#[tokio::test]
async fn no_reachable_sentinel_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let endpoint = sentinel_endpoint("sentinel-unit-none", &addr);
    let Err(err) = open(&endpoint, Duration::from_secs(1)).await else {
        panic!("no sentinel answers, yet a connection opened");
    };
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "sentinels: no sentinel knows master 'mymaster' ({addr}: connect failed: "
        )),
        "{text}"
    );
}
