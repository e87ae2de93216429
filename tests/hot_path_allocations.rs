//! The per-command hot path allocates nothing: cutting a request out of the buffer, resolving
//! its command, finding its keys, mapping them to a namespace and endpoint, counting it, and
//! finding its reply's end. Measured with a counting global allocator around 10,000 commands
//! after one warm-up pass (which may grow the reused argument buffer once).

use std::ops::ControlFlow;
use turnout::command::{self, keys::for_each_key};
use turnout::config::Config;
use turnout::metrics::{LocalStats, RequestStats};
use turnout::resp::{reply, request};
use turnout::route::{Namespaces, RouteTable};

const PIPELINE: &[u8] = b"*2\r\n$3\r\nGET\r\n$8\r\nweb:key1\r\n\
*3\r\n$3\r\nSET\r\n$8\r\ntok:key2\r\n$3\r\nxyz\r\n\
*4\r\n$4\r\nMGET\r\n$5\r\nweb:a\r\n$5\r\nweb:b\r\n$5\r\nweb:c\r\n\
*6\r\n$4\r\nEVAL\r\n$1\r\ns\r\n$1\r\n2\r\n$9\r\nsession:1\r\n$5\r\ntok:2\r\n$1\r\nx\r\n\
*1\r\n$4\r\nPING\r\n";
const REPLIES: &[u8] = b"$3\r\nxyz\r\n+OK\r\n*3\r\n$1\r\na\r\n$-1\r\n$1\r\nc\r\n:1\r\n+PONG\r\n";

fn config() -> Config {
    let text = include_str!("../config/turnout.example.toml");
    match Config::from_toml(text, &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("example config: {e}"),
    }
}

#[test]
fn routing_a_command_does_not_allocate() {
    let config = config();
    let namespaces = Namespaces::new(&config);
    let table = RouteTable::from_config(&config, std::time::SystemTime::now());
    let stats = RequestStats::new(namespaces.len(), config.endpoints.len());
    let mut local = LocalStats::default();
    let mut args = Vec::new();
    let mut routed = 0u64;

    let mut pass = |args: &mut Vec<std::ops::Range<usize>>, local: &mut LocalStats| {
        let mut at = 0;
        while let Ok(request::Parsed::Multibulk { len }) =
            request::parse(&PIPELINE[at..], args, usize::MAX)
        {
            let frame = &PIPELINE[at..at + len];
            let resolved = command::resolve(
                &frame[args[0].clone()],
                args.get(1).map(|r| &frame[r.clone()]),
            );
            let mut endpoint = table.target(namespaces.default_id());
            let mut ns = namespaces.default_id();
            if let Some(spec) = resolved.spec {
                let walked = for_each_key(spec, frame, args, |key| {
                    ns = namespaces.of_key(key);
                    endpoint = table.target(ns);
                    ControlFlow::Continue(())
                });
                assert!(walked.is_ok());
            }
            local.request(&stats, ns, endpoint, resolved.id);
            routed += 1;
            at += len;
        }
        let mut at = 0;
        while let Ok(Some(len)) = reply::complete_len(&REPLIES[at..]) {
            at += len;
        }
        assert_eq!(at, REPLIES.len());
        local.latency(std::time::Duration::from_micros(80));
        local.flush(&stats);
    };

    pass(&mut args, &mut local);
    let info = allocation_counter::measure(|| {
        for _ in 0..2_000 {
            pass(&mut args, &mut local);
        }
    });
    assert_eq!(routed, 2_001 * 5, "every command of every pass was routed");
    assert_eq!(info.count_total, 0, "allocations on the hot path: {info:?}");
}
