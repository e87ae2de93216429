//! What turnout does with each command, beyond routing by key.
//!
//! Most commands are forwarded: by their keys, or to the default route when they have none.
//! Commands that set connection state are applied to every upstream connection of the
//! session. Commands whose meaning a per-namespace proxy cannot keep are refused with a clear
//! `-ERR turnout: …` rather than sent to a guessed endpoint.

use super::table::COMMANDS;
use std::sync::LazyLock;

/// Connection state that must hold on every upstream connection of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// `HELLO`: protocol version (and optional SETNAME).
    Hello = 0,
    /// `SELECT`: the logical database.
    Select = 1,
    /// `CLIENT SETNAME`.
    SetName = 2,
    /// `CLIENT SETINFO` (Redis 7.2+).
    SetInfo = 3,
    /// `CLIENT NO-EVICT`.
    NoEvict = 4,
    /// `CLIENT NO-TOUCH` (Redis 7.2+).
    NoTouch = 5,
}

/// Number of [`StateKind`]s.
pub const STATE_KINDS: usize = 6;

/// The transaction commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxCommand {
    /// `MULTI`.
    Multi,
    /// `EXEC`.
    Exec,
    /// `DISCARD`.
    Discard,
    /// `WATCH`.
    Watch,
    /// `UNWATCH`.
    Unwatch,
}

/// Turnout's treatment of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Route by keys; keyless commands go to the default route.
    Forward,
    /// Apply to every upstream connection of the session and replay on new ones.
    State(StateKind),
    /// `QUIT`: answered by turnout, then the connection closes.
    Quit,
    /// A transaction command: the transaction runs whole on one endpoint.
    Transaction(TxCommand),
    /// `AUTH`: checked against turnout's own credentials.
    Auth,
    /// Sent to every endpoint (scripts and functions, so EVALSHA and FCALL work after a flip).
    Everywhere,
    /// KEYS and SCAN: routed by the literal prefix of their pattern.
    Pattern,
    /// `CLIENT REPLY ON|OFF|SKIP`: kept by turnout, which silences replies itself.
    ClientReply,
    /// `RESET`: the session and its upstream connections back to a fresh state.
    Reset,
    /// (P|S)SUBSCRIBE and their UNSUBSCRIBEs: on the session's Pub/Sub connection.
    Subscribe,
    /// PUBLISH, SPUBLISH and PUBSUB introspection: to the Pub/Sub endpoint.
    Publish,
    /// Refused with `-ERR turnout: {reason}`; the connection stays open.
    Refuse(&'static str),
}

const WHOLE_KEYSPACE: &str =
    "this command affects every namespace; run it on each endpoint directly";
const CONNECTION_TAKEOVER: &str =
    "this command takes over the upstream connection and cannot be proxied";

/// Policy of a top-level command without subcommands, by table index.
pub fn of_top(index: usize) -> Policy {
    static POLICIES: LazyLock<Vec<Policy>> =
        LazyLock::new(|| COMMANDS.iter().map(|c| by_name(c.name)).collect());
    POLICIES.get(index).copied().unwrap_or(Policy::Forward)
}

/// Policy of a subcommand, by its `container|sub` name (subcommands are rare on the hot path).
pub fn of_sub(name: &str) -> Policy {
    by_name(name)
}

fn by_name(name: &str) -> Policy {
    match name {
        "quit" => Policy::Quit,
        "select" => Policy::State(StateKind::Select),
        "hello" => Policy::State(StateKind::Hello),
        "client|setname" => Policy::State(StateKind::SetName),
        "client|setinfo" => Policy::State(StateKind::SetInfo),
        "client|no-evict" => Policy::State(StateKind::NoEvict),
        "client|no-touch" => Policy::State(StateKind::NoTouch),
        "multi" => Policy::Transaction(TxCommand::Multi),
        "exec" => Policy::Transaction(TxCommand::Exec),
        "discard" => Policy::Transaction(TxCommand::Discard),
        "watch" => Policy::Transaction(TxCommand::Watch),
        "unwatch" => Policy::Transaction(TxCommand::Unwatch),
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
        | "sunsubscribe" => Policy::Subscribe,
        "publish" | "spublish" | "pubsub|channels" | "pubsub|numsub" | "pubsub|numpat"
        | "pubsub|shardchannels" | "pubsub|shardnumsub" => Policy::Publish,
        "auth" => Policy::Auth,
        "keys" | "scan" => Policy::Pattern,
        "replicaof" | "slaveof" | "failover" => {
            Policy::Refuse("replication commands are refused: they would reconfigure an endpoint shared by every namespace")
        }
        "script|load" | "script|exists" | "script|flush" | "function|load" | "function|delete"
        | "function|flush" | "function|restore" => Policy::Everywhere,
        "client|reply" => Policy::ClientReply,
        "client|tracking" | "client|caching" => {
            Policy::Refuse("client-side caching is not supported yet")
        }
        "reset" => Policy::Reset,
        "flushall" | "flushdb" | "swapdb" => Policy::Refuse(WHOLE_KEYSPACE),
        "monitor" | "sync" | "psync" | "replconf" => Policy::Refuse(CONNECTION_TAKEOVER),
        "debug" => Policy::Refuse(
            "DEBUG is refused: DEBUG SLEEP, RELOAD and the like would stall or crash an endpoint shared by every namespace",
        ),
        "shutdown" => Policy::Refuse(
            "SHUTDOWN is refused: it would stop an endpoint shared by every namespace",
        ),
        "migrate" => {
            Policy::Refuse("MIGRATE is not supported: it moves keys outside the route table")
        }
        "readonly" | "readwrite" | "asking" => {
            Policy::Refuse("cluster connection commands are not supported yet")
        }
        _ => Policy::Forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_command_exists_in_the_table() {
        // A typo in the match above would silently forward the command.
        let names = [
            "quit",
            "select",
            "hello",
            "multi",
            "exec",
            "discard",
            "watch",
            "unwatch",
            "subscribe",
            "psubscribe",
            "ssubscribe",
            "unsubscribe",
            "punsubscribe",
            "sunsubscribe",
            "auth",
            "reset",
            "flushall",
            "flushdb",
            "swapdb",
            "monitor",
            "sync",
            "psync",
            "replconf",
            "shutdown",
            "migrate",
            "readonly",
            "readwrite",
            "asking",
        ];
        for name in names {
            assert!(
                COMMANDS.iter().any(|c| c.name == name),
                "{name} missing from the table"
            );
        }
        let client = COMMANDS
            .iter()
            .find(|c| c.name == "client")
            .expect("client");
        for sub in [
            "client|setname",
            "client|no-evict",
            "client|reply",
            "client|tracking",
            "client|caching",
        ] {
            assert!(
                client.subcommands.iter().any(|c| c.name == sub),
                "{sub} missing"
            );
        }
    }

    #[test]
    fn ordinary_commands_are_forwarded() {
        let get = COMMANDS.iter().position(|c| c.name == "get").expect("get");
        assert_eq!(of_top(get), Policy::Forward);
        let quit = COMMANDS
            .iter()
            .position(|c| c.name == "quit")
            .expect("quit");
        assert_eq!(of_top(quit), Policy::Quit);
    }
}
