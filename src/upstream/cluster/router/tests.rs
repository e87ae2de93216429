//! The router against fake cluster nodes: redirects followed up to the bound, ASKING sent
//! before a command redirected by `-ASK`.

use super::*;
use crate::config::EndpointKind;
use crate::upstream::cluster::slots::SlotMap;
use arc_swap::ArcSwap;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Notify;

type Seen = Arc<Mutex<Vec<String>>>;

/// A fake node on a free port answering each command with `answer(name)`; records names.
async fn fake_node(answer: impl Fn(&str, &str) -> String + Send + 'static) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let seen: Seen = Arc::default();
    let (record, me) = (seen.clone(), address.clone());
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buf = BytesMut::new();
        let mut args = Vec::new();
        for _ in 0..1000 {
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            while let Ok(Parsed::Multibulk { len }) = request::parse(&buf, &mut args, 1 << 20) {
                let name = String::from_utf8_lossy(&buf[args[0].clone()]).to_uppercase();
                record.lock().expect("lock").push(name.clone());
                let reply = answer(&name, &me);
                let _ = buf.split_to(len);
                if socket.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    });
    (address, seen)
}

/// A router whose map sends every slot to `address`; returns the client end of its pipe.
fn router_for(address: &str) -> DuplexStream {
    let endpoint = EndpointConfig {
        name: "t".to_string(),
        kind: EndpointKind::Cluster {
            seeds: vec![address.to_string()],
        },
        credentials: None,
        tls: None,
        key_prefix: None,
    };
    let mut map = SlotMap::default();
    for slot in 0..slots::SLOTS as u16 {
        map = map.with_owner(slot, address);
    }
    let cluster = Arc::new(Cluster {
        endpoint: Arc::new(endpoint.clone()),
        map: ArcSwap::from_pointee(map),
        refresh: Notify::new(),
        node_failed: AtomicBool::new(false),
        timeout: Duration::from_secs(2),
    });
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(run(
        cluster,
        Arc::new(endpoint),
        theirs,
        Duration::from_secs(2),
    ));
    ours
}

async fn roundtrip(pipe: &mut DuplexStream, request: &[u8]) -> Vec<u8> {
    pipe.write_all(request).await.expect("write");
    let mut buf = BytesMut::new();
    for _ in 0..100 {
        if let Ok(Some(len)) = crate::resp::reply::complete_len(&buf) {
            return buf[..len].to_vec();
        }
        let read = tokio::time::timeout(Duration::from_secs(5), pipe.read_buf(&mut buf))
            .await
            .expect("a reply within 5 s")
            .expect("read");
        assert!(read > 0, "pipe closed");
    }
    panic!("no complete reply");
}

#[tokio::test]
async fn moved_is_followed_at_most_max_redirects_times() {
    let (address, seen) = fake_node(|_, me| format!("-MOVED 12182 {me}\r\n")).await;
    let mut pipe = router_for(&address);
    let reply = roundtrip(&mut pipe, &crate::resp::command(&[b"GET", b"foo"])).await;
    assert_eq!(reply, format!("-MOVED 12182 {address}\r\n").into_bytes());
    let names = seen.lock().expect("lock").clone();
    assert_eq!(names.len(), usize::from(MAX_REDIRECTS) + 1, "{names:?}");
}

#[tokio::test]
async fn ask_sends_asking_first_and_swallows_its_reply() {
    let (target, target_seen) = fake_node(|name, _| match name {
        "ASKING" => "+OK\r\n".to_string(),
        _ => "$3\r\nbar\r\n".to_string(),
    })
    .await;
    let redirect = format!("-ASK 12182 {target}\r\n");
    let (source, source_seen) = fake_node(move |name, _| match name {
        "GET" => redirect.clone(),
        _ => "+PONG\r\n".to_string(),
    })
    .await;
    let mut pipe = router_for(&source);
    let mut both = BytesMut::from(crate::resp::command(&[b"GET", b"foo"]).as_ref());
    both.extend_from_slice(&crate::resp::command(&[b"PING"]));
    pipe.write_all(&both).await.expect("write");
    let first = roundtrip(&mut pipe, b"").await;
    assert_eq!(first, b"$3\r\nbar\r\n");
    assert_eq!(*target_seen.lock().expect("lock"), vec!["ASKING", "GET"]);
    assert_eq!(*source_seen.lock().expect("lock"), vec!["GET", "PING"]);
}
