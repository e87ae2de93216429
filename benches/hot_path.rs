//! Criterion benches for the per-command hot path: cutting a request out of the read buffer,
//! finding a reply's end, classifying a command (table lookup, policy, key extraction),
//! routing it (prefix match, 3 against 1,000 namespaces) and merging the replies of a split
//! MGET / DEL.
//!
//! `redis-protocol`'s `decode_range` is measured beside turnout's splitter on the same input:
//! it is the reference decoder, and the reason turnout does not call it per command is the
//! `Vec` it allocates per aggregate frame.
//!
//! Run: `cargo bench --bench hot_path`. CI runs `cargo bench --bench hot_path -- --quick`
//! (`.ci/run`), so that the benches keep compiling and running.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::ops::{ControlFlow, Range};
use turnout::command::{self, keys::for_each_key};
use turnout::config::Config;
use turnout::resp::{self, reply, request};
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

/// A mix of requests as a cache client sends them: plain reads and writes, multi-key commands,
/// a container subcommand, keyword-found keys, numkeys-found keys, a keyless command and a
/// command the table does not know.
fn command_mix() -> Vec<Vec<u8>> {
    let mget: Vec<String> = (0..10).map(|i| format!("web:key:{i:08}")).collect();
    let mut mget_args: Vec<&[u8]> = vec![b"MGET"];
    mget_args.extend(mget.iter().map(|k| k.as_bytes()));
    let requests: Vec<Vec<&[u8]>> = vec![
        vec![b"GET", b"web:key:00001234"],
        vec![b"SET", b"tok:key:00001234", b"xyz", b"EX", b"60"],
        mget_args,
        vec![b"DEL", b"web:a", b"tok:b", b"session:c"],
        vec![b"HSET", b"web:hash", b"field", b"value"],
        vec![b"expire", b"web:key:00001234", b"30"],
        vec![b"ZUNIONSTORE", b"web:dst", b"2", b"web:z1", b"web:z2"],
        vec![
            b"XREAD", b"COUNT", b"10", b"STREAMS", b"web:s1", b"web:s2", b"0", b"0",
        ],
        vec![
            b"EVALSHA",
            b"0123456789abcdef0123456789abcdef01234567",
            b"1",
            b"web:k",
            b"arg",
        ],
        vec![b"CLIENT", b"SETNAME", b"bench"],
        vec![b"PING"],
        vec![b"NOSUCHCOMMAND", b"web:x"],
    ];
    requests
        .iter()
        .map(|args| resp::command(args).to_vec())
        .collect()
}

/// Command classification as the session does it per request, after the frame is cut:
/// command table lookup (with subcommand), policy, and every key through the key specs.
fn classify(c: &mut Criterion) {
    let mix = command_mix();
    let parsed: Vec<(Vec<u8>, Vec<Range<usize>>)> = mix
        .into_iter()
        .map(|frame| {
            let mut args = Vec::new();
            match request::parse(&frame, &mut args, usize::MAX) {
                Ok(request::Parsed::Multibulk { .. }) => {}
                other => panic!("bench request did not parse: {other:?}"),
            }
            (frame, args)
        })
        .collect();
    // GET 1, SET 1, MGET 10, DEL 3, HSET 1, EXPIRE 1, ZUNIONSTORE 3, XREAD 2, EVALSHA 1.
    assert_eq!(
        classify_all(&parsed),
        23,
        "key extraction of the bench mix changed"
    );
    let mut group = c.benchmark_group("classify_12_commands");
    group.throughput(Throughput::Elements(parsed.len() as u64));
    group.bench_function("resolve_policy_keys", |b| {
        b.iter(|| black_box(classify_all(black_box(&parsed))))
    });
    group.finish();
}

/// Resolves every request of `parsed` and walks its keys; returns the number of keys found.
fn classify_all(parsed: &[(Vec<u8>, Vec<Range<usize>>)]) -> usize {
    let mut keys = 0usize;
    for (frame, args) in parsed {
        let name = &frame[args[0].clone()];
        let resolved = command::resolve(name, args.get(1).map(|r| &frame[r.clone()]));
        black_box(resolved.policy);
        if let Some(spec) = resolved.spec {
            let _ = for_each_key(spec, frame, args, |key| {
                black_box(key);
                keys += 1;
                ControlFlow::Continue(())
            });
        }
    }
    keys
}

/// The value of key `i` in the merge bench: 64 bytes, distinct per key, so that the check
/// before timing also checks the key order.
fn mget_value(i: usize) -> Vec<u8> {
    format!("{i:04}{}", "x".repeat(60)).into_bytes()
}

/// The replies of one MGET split over two endpoints (keys alternating), as they sit in the two
/// links' read buffers, and the endpoint of each key in the client's order.
fn split_mget_replies(keys: usize) -> ([BytesMut; 2], Vec<usize>) {
    let order: Vec<usize> = (0..keys).map(|i| i % 2).collect();
    let mut parts = [BytesMut::new(), BytesMut::new()];
    for (ep, part) in parts.iter_mut().enumerate() {
        let mine: Vec<usize> = (0..keys).filter(|&i| order[i] == ep).collect();
        part.extend_from_slice(format!("*{}\r\n", mine.len()).as_bytes());
        for i in mine {
            resp::write_bulk(part, &mget_value(i));
        }
    }
    (parts, order)
}

/// Merging a split MGET's replies into one array in the client's key order, and a split DEL's
/// integers into their sum.
///
/// The merge itself (`Session::write_merged` in `src/session/split.rs`) is private to the
/// session; this bench runs the same steps on the public pieces it is made of: check that each
/// part's reply is complete (`reply::complete_len`), skip each part's array header, then copy
/// element after element with a [`reply::ReplyScan`] per element, in key order.
fn merge(c: &mut Criterion) {
    let (parts, order) = split_mget_replies(10);
    let mut out = BytesMut::with_capacity(4096);
    let mut expected = BytesMut::from(&b"*10\r\n"[..]);
    for i in 0..10 {
        resp::write_bulk(&mut expected, &mget_value(i));
    }
    merge_mget(&parts, &order, &mut out);
    assert_eq!(
        out, expected,
        "the bench merge no longer produces the merged reply"
    );
    let mut group = c.benchmark_group("merge_split_replies");
    group.throughput(Throughput::Elements(order.len() as u64));
    group.bench_function("mget_10_keys_2_endpoints", |b| {
        b.iter(|| {
            merge_mget(black_box(&parts), &order, &mut out);
            black_box(out.len())
        })
    });
    let ints: [&[u8]; 2] = [b":3\r\n", b":2\r\n"];
    group.bench_function("del_sum_2_endpoints", |b| {
        b.iter(|| {
            let total: i64 = ints
                .iter()
                .filter_map(|r| {
                    let len = reply::complete_len(black_box(r)).ok()??;
                    let body = r[..len].strip_prefix(b":")?.strip_suffix(b"\r\n")?;
                    std::str::from_utf8(body).ok()?.parse::<i64>().ok()
                })
                .sum();
            black_box(total)
        })
    });
    group.finish();
}

/// The steps of `Session::write_merged` for MGET, on the parts' read buffers.
fn merge_mget(parts: &[BytesMut; 2], order: &[usize], out: &mut BytesMut) {
    out.clear();
    let mut cursors = [0usize; 2];
    for (ep, part) in parts.iter().enumerate() {
        let complete = matches!(reply::complete_len(part), Ok(Some(_)));
        assert!(complete, "bench reply is incomplete");
        cursors[ep] = part.iter().position(|&b| b == b'\n').map_or(0, |nl| nl + 1);
    }
    out.extend_from_slice(format!("*{}\r\n", order.len()).as_bytes());
    for &ep in order {
        let rbuf = &parts[ep];
        let start = cursors[ep];
        let mut scan = reply::ReplyScan::new();
        let len = scan.advance(&rbuf[start..]).unwrap_or(0);
        if scan.is_done() && len > 0 {
            out.extend_from_slice(&rbuf[start..start + len]);
            cursors[ep] = start + len;
        } else {
            out.extend_from_slice(b"$-1\r\n");
        }
    }
}

criterion_group!(benches, split, classify, route, merge);
criterion_main!(benches);
