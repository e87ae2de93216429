//! Criterion benches for the per-command hot path: cutting a request out of the read buffer,
//! finding a reply's end, and routing a command (table lookup, key extraction, prefix match).
//!
//! `redis-protocol`'s `decode_range` is measured beside turnout's splitter on the same input:
//! it is the reference decoder, and the reason turnout does not call it per command is the
//! `Vec` it allocates per aggregate frame.
//!
//! Run: `cargo bench --bench hot_path`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::ops::ControlFlow;
use turnout::command::{self, keys::for_each_key};
use turnout::config::Config;
use turnout::resp::{reply, request};
use turnout::route::{Namespaces, RouteTable};

const GET: &[u8] = b"*2\r\n$3\r\nGET\r\n$16\r\nweb:key:00001234\r\n";
const SET: &[u8] = b"*3\r\n$3\r\nSET\r\n$16\r\ntok:key:00001234\r\n$3\r\nxyz\r\n";

fn pipeline(n: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    for i in 0..n {
        buf.extend_from_slice(if i % 2 == 0 { GET } else { SET });
    }
    buf
}

fn split(c: &mut Criterion) {
    let buf = pipeline(16);
    let mut group = c.benchmark_group("split_16_requests");
    group.throughput(Throughput::Elements(16));
    group.bench_function("turnout", |b| {
        let mut args = Vec::new();
        b.iter(|| {
            let mut at = 0;
            while let Ok(request::Parsed::Multibulk { len }) =
                request::parse(&buf[at..], &mut args, usize::MAX)
            {
                at += len;
            }
            black_box(at)
        })
    });
    group.bench_function("redis_protocol_decode_range", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Ok(Some((frame, len))) =
                redis_protocol::resp2::decode::decode_range(&buf[at..])
            {
                black_box(frame);
                at += len;
            }
            black_box(at)
        })
    });
    group.finish();

    let replies: Vec<u8> = b"$3\r\nxyz\r\n+OK\r\n*2\r\n$1\r\na\r\n$-1\r\n".repeat(8);
    let mut group = c.benchmark_group("scan_24_replies");
    group.throughput(Throughput::Elements(24));
    group.bench_function("turnout", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Ok(Some(len)) = reply::complete_len(&replies[at..]) {
                at += len;
            }
            black_box(at)
        })
    });
    group.finish();
}

fn config(namespaces: usize) -> Config {
    let mut text = String::from(
        "[proxy]\nlisten = \"127.0.0.1:6380\"\n[admin]\nlisten = \"127.0.0.1:9900\"\n[state]\npath = \"s.json\"\n\
         [endpoints.legacy]\naddress = \"127.0.0.1:6379\"\n[endpoints.new]\naddress = \"127.0.0.1:6390\"\n\
         [default]\ntarget = \"legacy\"\n",
    );
    text.push_str("[[namespaces]]\nname = \"web\"\nprefixes = [\"web:\"]\ntarget = \"legacy\"\n");
    text.push_str(
        "[[namespaces]]\nname = \"tok\"\nprefixes = [\"tok:\", \"session:\"]\ntarget = \"new\"\n",
    );
    for i in 2..namespaces {
        text.push_str(&format!(
            "[[namespaces]]\nname = \"ns{i}\"\nprefixes = [\"ns{i}:\"]\ntarget = \"new\"\n"
        ));
    }
    match Config::from_toml(&text, &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e}"),
    }
}

fn route(c: &mut Criterion) {
    for n in [3usize, 1000] {
        let config = config(n);
        let namespaces = Namespaces::new(&config);
        let table = RouteTable::from_config(&config, std::time::SystemTime::now());
        let mut args = Vec::new();
        c.bench_function(&format!("route_get_{n}_namespaces"), |b| {
            b.iter_batched_ref(
                || (),
                |()| {
                    let _ = request::parse(GET, &mut args, usize::MAX);
                    let name = &GET[args[0].clone()];
                    let resolved = command::resolve(name, args.get(1).map(|r| &GET[r.clone()]));
                    let mut endpoint = usize::MAX;
                    if let Some(spec) = resolved.spec {
                        let _ = for_each_key(spec, GET, &args, |key| {
                            endpoint = table.target(namespaces.of_key(key));
                            ControlFlow::Continue(())
                        });
                    }
                    black_box(endpoint)
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, split, route);
criterion_main!(benches);
