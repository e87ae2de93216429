//! Keyed commands missing from the command table (a module's, a newer Redis's) can be
//! declared in `[[commands]]` with their key positions and are then routed by key; without a
//! declaration they go to the default route.

mod support;

use support::resp::Reply;
use support::{standard_body, RedisServer, Turnout};

/// How many error replies a server has sent, from `INFO errorstats`.
fn errors(server: &RedisServer) -> u64 {
    let Reply::Bulk(Some(info)) = server.command(&["INFO", "errorstats"]) else {
        panic!("INFO errorstats");
    };
    String::from_utf8_lossy(&info)
        .lines()
        .filter_map(|l| l.split("count=").nth(1))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn declared_commands_are_routed_by_their_keys() {
    let (legacy, new) = (RedisServer::start(), RedisServer::start());
    let body = format!(
        "{}\n[[commands]]\nname = \"MYMODULE.GET\"\nfirst_key = 1\nlast_key = 1\n\n\
         [[commands]]\nname = \"mymodule.mget\"\nfirst_key = 1\nlast_key = -1\n",
        standard_body(&legacy, &new, "legacy")
    );
    let turnout = Turnout::start(&body);
    let mut c = turnout.raw();
    let before = (errors(&legacy), errors(&new));
    // Redis does not know the command, so the endpoint that got it answers with an error.
    c.send_cmd(&["mymodule.get", "tok:k"]);
    assert!(c.read_frame().starts_with(b"-ERR unknown command"));
    assert_eq!(
        (errors(&legacy), errors(&new)),
        (before.0, before.1 + 1),
        "tok: goes to new"
    );
    c.send_cmd(&["MYMODULE.GET", "web:k"]);
    assert!(c.read_frame().starts_with(b"-ERR unknown command"));
    assert_eq!(
        (errors(&legacy), errors(&new)),
        (before.0 + 1, before.1 + 1),
        "web: goes to legacy"
    );
    c.send_cmd(&["mymodule.mget", "tok:a", "web:b"]);
    assert!(
        c.read_frame().starts_with(b"-CROSSNS "),
        "keys on two endpoints are refused"
    );
    c.send_cmd(&["undeclared.get", "tok:k"]);
    assert!(c.read_frame().starts_with(b"-ERR unknown command"));
    assert_eq!(
        (errors(&legacy), errors(&new)),
        (before.0 + 2, before.1 + 1),
        "undeclared: default route"
    );
}
