//! Keys are found wherever the command table says they are: fixed positions, numkeys-style
//! movable keys (EVAL, ZUNIONSTORE, LMPOP, ...), keywords (XREAD STREAMS, SORT STORE) and
//! container subcommands (OBJECT, MEMORY). Every key here belongs to token-cache (-> `new`)
//! while the default route is `legacy`, so a misrouted command answers from the wrong server.

mod support;

use support::{show, Env};

fn expect(c: &mut support::RawClient, args: &[&str], expected: &[u8]) {
    c.send_cmd(args);
    let got = c.read_frame();
    assert_eq!(show(&got), show(expected), "{args:?}");
}

fn expect_prefix(c: &mut support::RawClient, args: &[&str], prefix: &[u8]) {
    c.send_cmd(args);
    let got = c.read_frame();
    assert!(
        got.starts_with(prefix),
        "{args:?}: expected {}..., got {}",
        show(prefix),
        show(&got)
    );
}

#[test]
fn movable_and_keyword_keys_are_routed_by_their_keys() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    let script = "return redis.call('SET', KEYS[1], ARGV[1])";
    expect(&mut c, &["EVAL", script, "1", "tok:ev", "v"], b"+OK\r\n");
    assert_eq!(env.new.get("tok:ev").as_deref(), Some("v"));

    expect(&mut c, &["ZADD", "tok:z1", "1", "a", "2", "b"], b":2\r\n");
    expect(&mut c, &["ZADD", "session:z2", "3", "c"], b":1\r\n");
    expect(
        &mut c,
        &["ZUNIONSTORE", "tok:zu", "2", "tok:z1", "session:z2"],
        b":3\r\n",
    );
    expect(&mut c, &["ZINTERCARD", "2", "tok:z1", "tok:zu"], b":2\r\n");
    expect(&mut c, &["ZCARD", "tok:zu"], b":3\r\n");

    expect(&mut c, &["RPUSH", "tok:l", "3", "1", "2"], b":3\r\n");
    expect(&mut c, &["SORT", "tok:l", "STORE", "tok:sorted"], b":3\r\n");
    expect(
        &mut c,
        &["LRANGE", "tok:sorted", "0", "-1"],
        b"*3\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n",
    );
    expect(
        &mut c,
        &["LMPOP", "2", "tok:nolist", "tok:sorted", "LEFT"],
        b"*2\r\n$10\r\ntok:sorted\r\n*1\r\n$1\r\n1\r\n",
    );

    expect_prefix(
        &mut c,
        &["XADD", "tok:s", "1-1", "f", "v"],
        b"$3\r\n1-1\r\n",
    );
    expect(
        &mut c,
        &["XREAD", "COUNT", "1", "STREAMS", "tok:s", "0"],
        b"*1\r\n*2\r\n$5\r\ntok:s\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
    );

    // The encoding name depends on the Redis version; on `legacy` the key does not exist.
    c.send_cmd(&["OBJECT", "ENCODING", "tok:l"]);
    let got = c.read_frame();
    assert!(
        got.starts_with(b"$") && !got.starts_with(b"$-1"),
        "OBJECT ENCODING tok:l: {}",
        show(&got)
    );
    expect_prefix(&mut c, &["MEMORY", "USAGE", "tok:ev"], b":");

    expect(&mut c, &["SET", "tok:b1", "\u{ff}"], b"+OK\r\n");
    expect(
        &mut c,
        &["BITOP", "AND", "tok:bd", "tok:b1", "tok:b1"],
        b":2\r\n",
    );
    assert!(env.new.exists("tok:bd"));

    expect(
        &mut c,
        &["GEOADD", "tok:geo", "13.361389", "38.115556", "Palermo"],
        b":1\r\n",
    );
    expect(
        &mut c,
        &[
            "GEOSEARCHSTORE",
            "tok:geodst",
            "tok:geo",
            "FROMLONLAT",
            "15",
            "37",
            "BYRADIUS",
            "200",
            "km",
            "ASC",
        ],
        b":1\r\n",
    );

    // Nothing leaked onto `legacy`.
    assert_eq!(
        env.legacy.dbsize(),
        0,
        "some tok:/session: command was misrouted to legacy"
    );

    // Movable keys spanning endpoints are refused.
    expect_prefix(
        &mut c,
        &["EVAL", "return 1", "2", "tok:a", "web:b"],
        b"-CROSSNS keys of this command are routed to different endpoints (",
    );
    expect_prefix(
        &mut c,
        &["ZUNIONSTORE", "tok:x", "2", "tok:z1", "web:z"],
        b"-CROSSNS keys of this command are routed to different endpoints (",
    );
    expect_prefix(
        &mut c,
        &["SORT", "tok:l", "STORE", "web:sorted"],
        b"-CROSSNS keys of this command are routed to different endpoints (",
    );
    assert_eq!(env.legacy.dbsize(), 0);
    assert!(!env.new.exists("tok:x"));

    // A script with no keys is keyless: default route.
    expect(
        &mut c,
        &["EVAL", "return redis.call('DBSIZE')", "0"],
        b":0\r\n",
    );
}

#[test]
fn odd_keys_are_routed_too() {
    let env = Env::standard();
    let mut c = env.turnout.raw();
    // The empty key and binary keys belong to no namespace: default route.
    expect(&mut c, &["SET", "", "empty"], b"+OK\r\n");
    assert_eq!(env.legacy.get("").as_deref(), Some("empty"));
    let mut binary = b"*3\r\n$3\r\nSET\r\n$6\r\ntok:\xff\x00\r\n$1\r\nb\r\n".to_vec();
    binary.extend(b"*2\r\n$3\r\nGET\r\n$6\r\ntok:\xff\x00\r\n");
    c.send(&binary);
    let replies = c.read_frames(2, std::time::Duration::from_secs(10));
    assert_eq!(show(&replies[0]), show(b"+OK\r\n"));
    assert_eq!(show(&replies[1]), show(b"$1\r\nb\r\n"));
    assert_eq!(env.new.dbsize(), 1, "binary tok: key on new");
    // Prefix matching is case-sensitive.
    expect(&mut c, &["SET", "TOK:upper", "u"], b"+OK\r\n");
    assert_eq!(env.legacy.get("TOK:upper").as_deref(), Some("u"));
}
