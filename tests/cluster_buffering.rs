//! Reply buffering on a cluster endpoint is bounded by `[proxy] max_buffered_bytes`: once
//! the replies received behind one that is not due yet (a `BLPOP` blocked on one node) reach
//! that many bytes, the slot router stops reading requests, which pushes back on the client.
//! Once the blocked reply comes, every reply arrives, exact and in order: nothing is dropped,
//! and every command ran exactly once.

mod support;

use std::io::Write;
use std::time::Duration;

use support::cluster::RedisCluster;
use support::{cmd, show, Turnout};

/// GETs pipelined behind the blocked BLPOP first: their replies together exceed the bound.
const FIRST: usize = 256;
/// GETs sent once the bound is reached.
const MORE: usize = 2000;
/// Every GET.
const GETS: usize = FIRST + MORE;
/// Size of the value each GET returns.
const VALUE: usize = 16 * 1024;
/// The bound under test.
const MAX_BUFFERED: usize = 1024 * 1024;

/// `cmdstat_get` calls on node `index` (from `INFO commandstats`).
fn get_calls(cluster: &RedisCluster, index: usize) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut cluster.nodes[index].conn())
        .expect("INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Waits until `get_calls` stops moving (the same on consecutive looks), bounded.
fn settled_get_calls(cluster: &RedisCluster, index: usize) -> u64 {
    let mut last = get_calls(cluster, index);
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(200));
        let now = get_calls(cluster, index);
        if now == last && now > 0 {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn replies_behind_a_blocked_one_are_buffered_up_to_max_buffered_bytes() {
    let cluster = RedisCluster::start(3, 0);
    let t = Turnout::builder(&cluster.only_endpoint_toml())
        .proxy_option(&format!("max_buffered_bytes = {MAX_BUFFERED}"))
        .start();
    // A queue on one primary, a large value on another.
    let queue = "{q}:list";
    let (big, big_node) = (0..100)
        .map(|i| format!("{{b{i}}}:big"))
        .map(|k| {
            let node = cluster.primary_of(&k);
            (k, node)
        })
        .find(|(_, node)| *node != cluster.primary_of(queue))
        .expect("a key on another primary");
    let value = "v".repeat(VALUE);
    let mut setup = t.raw();
    setup.expect_cmd(&["SET", &big, &value], b"+OK\r\n");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut cluster.nodes[big_node].conn())
        .expect("CONFIG RESETSTAT");

    // BLPOP first (blocks), then a first batch of GETs whose replies alone exceed the bound.
    let mut client = t.raw();
    let mut pipeline = cmd(&["BLPOP", queue, "0"]);
    for _ in 0..FIRST {
        pipeline.extend(cmd(&["GET", &big]));
    }
    client.send(&pipeline);
    // How many of them run depends on how the pipeline is cut into reads on its way through
    // turnout; once their replies pass the bound, no more are read.
    let ran_first = settled_get_calls(&cluster, big_node);
    assert!(
        ran_first > 0 && ran_first * VALUE as u64 >= MAX_BUFFERED as u64,
        "GETs ran behind the blocked BLPOP until their replies filled the bound: {ran_first}"
    );

    // More GETs, written from another thread: turnout must not read them now.
    let mut out = client.stream_clone();
    let writer = {
        let big = big.clone();
        std::thread::spawn(move || {
            let mut pipeline = Vec::new();
            for _ in 0..MORE {
                pipeline.extend(cmd(&["GET", &big]));
            }
            out.write_all(&pipeline).expect("write the pipeline");
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let ran = settled_get_calls(&cluster, big_node);
    assert_eq!(
        ran, ran_first,
        "past the bound ({MAX_BUFFERED} bytes of replies behind the blocked BLPOP), no more GETs are read"
    );

    // The blocked reply comes: everything follows, exact and in order.
    let mut pusher = t.raw();
    pusher.expect_cmd(&["RPUSH", queue, "job"], b":1\r\n");
    let first = client
        .read_frame_within(Duration::from_secs(30))
        .expect("BLPOP reply");
    let want = format!("*2\r\n${}\r\n{queue}\r\n$3\r\njob\r\n", queue.len());
    assert_eq!(show(&first), show(want.as_bytes()));
    let expected = format!("${VALUE}\r\n{value}\r\n");
    for n in 0..GETS {
        let got = client
            .read_frame_within(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("GET reply {n}: {e:?}"));
        assert!(
            got == expected.as_bytes(),
            "GET reply {n}: {} bytes, starting {}",
            got.len(),
            show(&got[..got.len().min(40)])
        );
    }
    writer.join().expect("writer thread");
    assert_eq!(
        get_calls(&cluster, big_node),
        GETS as u64,
        "every GET ran exactly once"
    );
    client.expect_cmd(&["PING"], b"+PONG\r\n");
}
