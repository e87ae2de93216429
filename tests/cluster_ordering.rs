//! Order kept while a slot moves: one client streams a pipeline of `APPEND`s and `INCR`s on
//! keys of one slot, without waiting for replies, while the slot is migrated to another
//! primary and back (`CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT … NODE`).
//! Every `INCR` reply must be exactly one more than the one before it, every `APPEND` reply
//! the length its key has after the appends before it, and the keys' final values the exact
//! ordered concatenation of what was appended: each operation applied once, in order.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::cluster::RedisCluster;
use support::{cmd, show, Turnout};

/// Keys of the slot the client appends to, round-robin.
const KEYS: u64 = 4;
/// Operations the writer may be ahead of the replies read (keeps requests always in flight
/// without queueing unboundedly).
const WINDOW: u64 = 2000;
/// Operations written at most (a safety cap, far above what one run writes).
const MAX_OPS: u64 = 2_000_000;

fn turnout_for(cluster: &RedisCluster) -> Turnout {
    Turnout::builder(&cluster.only_endpoint_toml()).start()
}

fn key(n: u64) -> String {
    format!("{{ord}}:k{n}")
}

/// What the writer sends for operation `seq`: an `APPEND` of `"seq,"` to one key and an
/// `INCR` of the counter.
fn operation(seq: u64) -> Vec<u8> {
    let mut out = cmd(&["APPEND", &key(seq % KEYS), &format!("{seq},")]);
    out.extend(cmd(&["INCR", "{ord}:n"]));
    out
}

#[test]
fn pipelined_writes_keep_their_order_while_their_slot_moves() {
    let cluster = RedisCluster::start(3, 0);
    let t = turnout_for(&cluster);
    let slot = cluster.keyslot("{ord}");
    let from = cluster.primary_of_slot(slot);
    let to = cluster.other_primary(from);

    // Live keys before the move (and filler, so the migration takes several batches).
    let mut setup = t.raw();
    for k in 0..KEYS {
        setup.expect_cmd(&["SET", &key(k), "start,"], b"+OK\r\n");
    }
    for i in 0..100 {
        setup.expect_cmd(&["SET", &format!("{{ord}}:filler:{i}"), "x"], b"+OK\r\n");
    }
    setup.expect_cmd(&["SET", "{ord}:n", "0"], b"+OK\r\n");

    let client = t.raw();
    let mut out = client.stream_clone();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let read = Arc::new(AtomicU64::new(0));
    let writer_done = Arc::new(AtomicBool::new(false));

    let writer = {
        let (stop, written, read, writer_done) = (
            stop.clone(),
            written.clone(),
            read.clone(),
            writer_done.clone(),
        );
        std::thread::spawn(move || {
            let mut seq = 0u64;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && seq < MAX_OPS && Instant::now() < deadline {
                if seq >= read.load(Ordering::Relaxed) + WINDOW {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let mut batch = Vec::new();
                for _ in 0..100 {
                    batch.extend(operation(seq));
                    seq += 1;
                }
                out.write_all(&batch).expect("write the pipeline");
                written.store(seq, Ordering::Relaxed);
            }
            writer_done.store(true, Ordering::Relaxed);
            seq
        })
    };
    let reader = {
        let (written, read, writer_done) = (written.clone(), read.clone(), writer_done.clone());
        let mut client = client;
        std::thread::spawn(move || -> Vec<String> {
            let mut errors = Vec::new();
            let mut lengths = vec!["start,".len() as u64; KEYS as usize];
            let mut seq = 0u64;
            loop {
                if writer_done.load(Ordering::Relaxed) && seq >= written.load(Ordering::Relaxed) {
                    return errors;
                }
                if seq >= written.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let k = (seq % KEYS) as usize;
                lengths[k] += format!("{seq},").len() as u64;
                let appended = match client.read_frame_within(Duration::from_secs(30)) {
                    Ok(frame) => frame,
                    Err(e) => {
                        errors.push(format!("op {seq}: APPEND reply missing: {e:?}"));
                        return errors;
                    }
                };
                let counted = match client.read_frame_within(Duration::from_secs(30)) {
                    Ok(frame) => frame,
                    Err(e) => {
                        errors.push(format!("op {seq}: INCR reply missing: {e:?}"));
                        return errors;
                    }
                };
                let want_append = format!(":{}\r\n", lengths[k]);
                let want_incr = format!(":{}\r\n", seq + 1);
                if errors.len() < 20 {
                    if appended != want_append.as_bytes() {
                        errors.push(format!(
                            "op {seq}: APPEND {} answered {}, expected {}",
                            key(seq % KEYS),
                            show(&appended),
                            show(want_append.as_bytes())
                        ));
                    }
                    if counted != want_incr.as_bytes() {
                        errors.push(format!(
                            "op {seq}: INCR answered {}, expected {}",
                            show(&counted),
                            show(want_incr.as_bytes())
                        ));
                    }
                }
                seq += 1;
                read.store(seq, Ordering::Relaxed);
            }
        })
    };

    // Wait (bounded) until the stream is flowing, then move the slot there and back.
    let flowing = support::wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
        read.load(Ordering::Relaxed) > 1000
    });
    assert!(flowing, "the pipeline is flowing");
    cluster.migrate_slot(slot, from, to);
    let after_first = read.load(Ordering::Relaxed);
    cluster.migrate_slot(slot, to, from);
    // Let the stream run on past the second move before stopping it.
    let ran_on = support::wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
        read.load(Ordering::Relaxed) > after_first + 1000
    });
    stop.store(true, Ordering::Relaxed);
    let ops = writer.join().expect("writer thread");
    let errors = reader.join().expect("reader thread");
    assert!(ran_on, "the stream ran on after the moves");
    assert!(
        errors.is_empty(),
        "replies out of order or failed ({ops} operations):\n{}",
        errors.join("\n")
    );

    // Final values: each key holds exactly its appends, in order; the counter every INCR.
    let mut c = t.raw();
    for k in 0..KEYS {
        let mut want = String::from("start,");
        for seq in (k..ops).step_by(KEYS as usize) {
            want.push_str(&format!("{seq},"));
        }
        let got = c.read_reply_after(&["GET", &key(k)]);
        assert!(
            got == want,
            "{} holds its appends in order (got {} bytes, expected {})",
            key(k),
            got.len(),
            want.len()
        );
    }
    assert_eq!(c.read_reply_after(&["GET", "{ord}:n"]), ops.to_string());
    assert_eq!(cluster.primary_of_slot(slot), from, "the slot moved back");
    eprintln!("{ops} operations streamed across two moves of slot {slot}");
}
