//! turnout finds keys and decides policies from a command table generated from Redis's own
//! `COMMAND INFO` (`src/command/table.rs`, written by `tools/gen_command_table.py`). A table
//! that drifts from the Redis the proxy runs in front of misroutes keys silently: a key spec
//! pointing at the wrong argument sends the command to the wrong endpoint. This test asks the
//! `redis-server` the suite runs against for `COMMAND INFO`, maps every entry exactly as the
//! generator does (names, arity, legacy first/last/step, the kept flags, ACL categories and
//! command tips, key specs with their kept flags) and requires the generated table to match,
//! in both directions, for every command and subcommand.

mod support;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use support::{show, RawClient, RedisServer, Reply};
use turnout::command::spec::{flags, key_flags, BeginSearch, CommandSpec, FindKeys};
use turnout::command::table::{COMMANDS, REDIS_VERSION};

/// Redis command flag → turnout flag bit (the generator's `COMMAND_FLAGS`).
const COMMAND_FLAGS: &[(&str, u32)] = &[
    ("write", flags::WRITE),
    ("readonly", flags::READONLY),
    ("admin", flags::ADMIN),
    ("pubsub", flags::PUBSUB),
    ("noscript", flags::NOSCRIPT),
    ("blocking", flags::BLOCKING),
    ("movablekeys", flags::MOVABLE_KEYS),
    ("no_multi", flags::NO_MULTI),
    ("denyoom", flags::DENYOOM),
];

/// ACL category → turnout flag bit (the generator's `ACL_FLAGS`).
const ACL_FLAGS: &[(&str, u32)] = &[
    ("@transaction", flags::TRANSACTION),
    ("@connection", flags::CONNECTION),
    ("@scripting", flags::SCRIPTING),
    ("@dangerous", flags::DANGEROUS),
];

/// Command tip (`COMMAND INFO` element 7, matched exactly) → turnout flag bit (the generator's
/// `TIP_FLAGS`).
const TIP_FLAGS: &[(&str, u32)] = &[
    ("nondeterministic_output", flags::NONDETERMINISTIC_OUTPUT),
    ("nondeterministic_output_order", flags::UNORDERED_OUTPUT),
];

/// Every flag bit by name, for readable diffs.
const FLAG_NAMES: &[(&str, u32)] = &[
    ("WRITE", flags::WRITE),
    ("READONLY", flags::READONLY),
    ("ADMIN", flags::ADMIN),
    ("PUBSUB", flags::PUBSUB),
    ("NOSCRIPT", flags::NOSCRIPT),
    ("BLOCKING", flags::BLOCKING),
    ("MOVABLE_KEYS", flags::MOVABLE_KEYS),
    ("NO_MULTI", flags::NO_MULTI),
    ("DENYOOM", flags::DENYOOM),
    ("TRANSACTION", flags::TRANSACTION),
    ("CONNECTION", flags::CONNECTION),
    ("SCRIPTING", flags::SCRIPTING),
    ("DANGEROUS", flags::DANGEROUS),
    ("CONTAINER", flags::CONTAINER),
    ("NONDETERMINISTIC_OUTPUT", flags::NONDETERMINISTIC_OUTPUT),
    ("UNORDERED_OUTPUT", flags::UNORDERED_OUTPUT),
];

/// Key-spec flags kept by the generator (matched case-insensitively; ACCESS, UPDATE, INSERT,
/// DELETE are dropped).
const KEY_FLAG_NAMES: &[(&str, u16)] = &[
    ("RO", key_flags::RO),
    ("RW", key_flags::RW),
    ("OW", key_flags::OW),
    ("RM", key_flags::RM),
    ("INCOMPLETE", key_flags::INCOMPLETE),
    ("NOT_KEY", key_flags::NOT_KEY),
    ("VARIABLE_FLAGS", key_flags::VARIABLE_FLAGS),
];

// ------------------------------------------------------------------ a common, owned model

#[derive(Debug, Clone, PartialEq, Eq)]
enum Begin {
    Index(i64),
    Keyword { keyword: String, start_from: i64 },
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Find {
    Range {
        last_key: i64,
        step: i64,
        limit: i64,
    },
    Keynum {
        keynum_idx: i64,
        first_key: i64,
        step: i64,
    },
    Unknown,
}

#[derive(Clone, PartialEq, Eq)]
struct Spec {
    begin: Begin,
    find: Find,
    flags: u16,
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{ begin: {:?}, find: {:?}, flags: {} }}",
            self.begin,
            self.find,
            key_flag_names(self.flags)
        )
    }
}

/// One command (or subcommand) in the shape both sides are compared in. Numbers are `i64` so
/// that a server value outside the table's integer types shows up as a difference.
#[derive(Debug, Clone)]
struct Cmd {
    name: String,
    arity: i64,
    flags: u32,
    first_key: i64,
    last_key: i64,
    step: i64,
    key_specs: Vec<Spec>,
    subcommands: Vec<Cmd>,
}

fn flag_names(bits: u32) -> String {
    let mut names: Vec<String> = FLAG_NAMES
        .iter()
        .filter(|(_, bit)| bits & bit != 0)
        .map(|(name, _)| name.to_string())
        .collect();
    let known = FLAG_NAMES.iter().fold(0, |acc, (_, bit)| acc | bit);
    if bits & !known != 0 {
        names.push(format!("0x{:x}", bits & !known));
    }
    if names.is_empty() {
        "0".into()
    } else {
        names.join("|")
    }
}

fn key_flag_names(bits: u16) -> String {
    let mut names: Vec<String> = KEY_FLAG_NAMES
        .iter()
        .filter(|(_, bit)| bits & bit != 0)
        .map(|(name, _)| name.to_string())
        .collect();
    let known = KEY_FLAG_NAMES.iter().fold(0, |acc, (_, bit)| acc | bit);
    if bits & !known != 0 {
        names.push(format!("0x{:x}", bits & !known));
    }
    if names.is_empty() {
        "0".into()
    } else {
        names.join("|")
    }
}

fn from_table(spec: &CommandSpec) -> Cmd {
    Cmd {
        name: spec.name.to_string(),
        arity: spec.arity.into(),
        flags: spec.flags,
        first_key: spec.first_key.into(),
        last_key: spec.last_key.into(),
        step: spec.step.into(),
        key_specs: spec
            .key_specs
            .iter()
            .map(|ks| Spec {
                begin: match ks.begin {
                    BeginSearch::Index(i) => Begin::Index(i.into()),
                    BeginSearch::Keyword {
                        keyword,
                        start_from,
                    } => Begin::Keyword {
                        keyword: keyword.to_string(),
                        start_from: start_from.into(),
                    },
                    BeginSearch::Unknown => Begin::Unknown,
                },
                find: match ks.find {
                    FindKeys::Range {
                        last_key,
                        step,
                        limit,
                    } => Find::Range {
                        last_key: last_key.into(),
                        step: step.into(),
                        limit: limit.into(),
                    },
                    FindKeys::Keynum {
                        keynum_idx,
                        first_key,
                        step,
                    } => Find::Keynum {
                        keynum_idx: keynum_idx.into(),
                        first_key: first_key.into(),
                        step: step.into(),
                    },
                    FindKeys::Unknown => Find::Unknown,
                },
                flags: ks.flags,
            })
            .collect(),
        subcommands: spec.subcommands.iter().map(from_table).collect(),
    }
}

// ------------------------------------------------------------------ COMMAND INFO → model

fn text(reply: &Reply, what: &str) -> String {
    match reply {
        Reply::Simple(s) => s.clone(),
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("{what}: expected a string, got {other:?}"),
    }
}

fn int(reply: &Reply, what: &str) -> i64 {
    match reply {
        Reply::Int(n) => *n,
        other => panic!("{what}: expected an integer, got {other:?}"),
    }
}

/// An array's items; a nil array is empty (the generator treats both alike).
fn items<'a>(reply: &'a Reply, what: &str) -> &'a [Reply] {
    match reply {
        Reply::Array(Some(items)) => items,
        Reply::Array(None) => &[],
        other => panic!("{what}: expected an array, got {other:?}"),
    }
}

/// A RESP2 flattened map (`[k1, v1, k2, v2, ...]`), keys lower-cased.
fn pairs<'a>(reply: &'a Reply, what: &str) -> BTreeMap<String, &'a Reply> {
    let flat = items(reply, what);
    assert!(
        flat.len() % 2 == 0,
        "{what}: odd-length key/value array {reply:?}"
    );
    flat.chunks(2)
        .map(|kv| (text(&kv[0], what).to_lowercase(), &kv[1]))
        .collect()
}

fn field<'a>(map: &BTreeMap<String, &'a Reply>, key: &str, what: &str) -> &'a Reply {
    map.get(key)
        .copied()
        .unwrap_or_else(|| panic!("{what}: no {key:?} in {map:?}"))
}

fn parse_key_spec(raw: &Reply, what: &str) -> Spec {
    let spec = pairs(raw, what);
    let flags = match spec.get("flags") {
        None => 0,
        Some(list) => {
            let upper: Vec<String> = items(list, what)
                .iter()
                .map(|f| text(f, what).to_uppercase())
                .collect();
            KEY_FLAG_NAMES
                .iter()
                .filter(|(name, _)| upper.iter().any(|f| f == name))
                .fold(0, |acc, (_, bit)| acc | bit)
        }
    };

    let bs = pairs(field(&spec, "begin_search", what), what);
    let btype = text(field(&bs, "type", what), what);
    let bspec = bs.get("spec").map(|s| pairs(s, what)).unwrap_or_default();
    let begin = match btype.as_str() {
        "index" => Begin::Index(int(field(&bspec, "index", what), what)),
        "keyword" => Begin::Keyword {
            keyword: text(field(&bspec, "keyword", what), what),
            start_from: int(field(&bspec, "startfrom", what), what),
        },
        "unknown" => Begin::Unknown,
        other => panic!("{what}: unknown begin_search type {other:?}"),
    };

    let fk = pairs(field(&spec, "find_keys", what), what);
    let ftype = text(field(&fk, "type", what), what);
    let fspec = fk.get("spec").map(|s| pairs(s, what)).unwrap_or_default();
    let find = match ftype.as_str() {
        "range" => Find::Range {
            last_key: int(field(&fspec, "lastkey", what), what),
            step: int(field(&fspec, "keystep", what), what),
            limit: int(field(&fspec, "limit", what), what),
        },
        "keynum" => Find::Keynum {
            keynum_idx: int(field(&fspec, "keynumidx", what), what),
            first_key: int(field(&fspec, "firstkey", what), what),
            step: int(field(&fspec, "keystep", what), what),
        },
        "unknown" => Find::Unknown,
        other => panic!("{what}: unknown find_keys type {other:?}"),
    };
    Spec { begin, find, flags }
}

/// One `COMMAND INFO` entry, mapped as `parse_command` in the generator maps it.
fn parse_command(raw: &Reply) -> Cmd {
    let entry = items(raw, "COMMAND INFO entry");
    assert!(entry.len() >= 6, "short COMMAND INFO entry: {raw:?}");
    let name = text(&entry[0], "command name").to_lowercase();
    let what = name.as_str();
    let redis_flags: Vec<String> = items(&entry[2], what)
        .iter()
        .map(|f| text(f, what).to_lowercase())
        .collect();
    let acl: Vec<String> = match entry.get(6) {
        Some(list) => items(list, what)
            .iter()
            .map(|c| text(c, what).to_lowercase())
            .collect(),
        None => Vec::new(),
    };
    let tips: Vec<String> = match entry.get(7) {
        Some(list) => items(list, what)
            .iter()
            .map(|t| text(t, what).to_lowercase())
            .collect(),
        None => Vec::new(),
    };
    let mut bits = 0;
    for (flag, bit) in COMMAND_FLAGS {
        if redis_flags.iter().any(|f| f == flag) {
            bits |= bit;
        }
    }
    for (category, bit) in ACL_FLAGS {
        if acl.iter().any(|c| c == category) {
            bits |= bit;
        }
    }
    for (tip, bit) in TIP_FLAGS {
        if tips.iter().any(|t| t == tip) {
            bits |= bit;
        }
    }
    let key_specs = match entry.get(8) {
        Some(list) => items(list, what)
            .iter()
            .enumerate()
            .map(|(i, ks)| parse_key_spec(ks, &format!("{name} key spec #{i}")))
            .collect(),
        None => Vec::new(),
    };
    let mut subcommands: Vec<Cmd> = match entry.get(9) {
        Some(list) => items(list, what).iter().map(parse_command).collect(),
        None => Vec::new(),
    };
    subcommands.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    if !subcommands.is_empty() {
        bits |= flags::CONTAINER;
    }
    Cmd {
        arity: int(&entry[1], what),
        flags: bits,
        first_key: int(&entry[3], what),
        last_key: int(&entry[4], what),
        step: int(&entry[5], what),
        key_specs,
        subcommands,
        name,
    }
}

/// `redis_version` from `INFO server`.
fn server_version(client: &mut RawClient) -> String {
    client.send_cmd(&["INFO", "server"]);
    let info = client
        .read_reply()
        .bulk_text()
        .expect("INFO server is a bulk string");
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no redis_version in INFO server: {info}"))
}

/// Every command the server knows, from `COMMAND INFO` (or `COMMAND` on servers where
/// `COMMAND INFO` needs names), as the generator reads it.
fn server_commands(client: &mut RawClient) -> Vec<Cmd> {
    let mut raw = None;
    for request in [&["COMMAND", "INFO"][..], &["COMMAND"][..]] {
        client.send_cmd(request);
        let frame = client
            .read_frame_within(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("reading the reply to {request:?}: {e:?}"));
        match support::resp::parse(&frame) {
            Ok(Some((Reply::Array(Some(list)), _))) if !list.is_empty() => {
                raw = Some(list);
                break;
            }
            Ok(Some(_)) => continue,
            other => panic!(
                "unparsable reply to {request:?}: {other:?} {}",
                show(&frame)
            ),
        }
    }
    let raw = raw.expect("neither COMMAND INFO nor COMMAND listed any command");
    raw.iter()
        .filter(|entry| !matches!(entry, Reply::Array(None) | Reply::Bulk(None)))
        .map(parse_command)
        .collect()
}

// ------------------------------------------------------------------ comparison

/// Compares two lists of commands by name (both directions), then every field of the
/// commands both have, recursing into subcommands. Differences go to `out`.
fn compare_lists(table: &[Cmd], server: &[Cmd], out: &mut Vec<String>) {
    let by_name = |list: &[Cmd], side: &str, out: &mut Vec<String>| {
        let mut map = BTreeMap::new();
        for cmd in list {
            if map.insert(cmd.name.clone(), cmd.clone()).is_some() {
                out.push(format!("{}: listed twice by the {side}", cmd.name));
            }
        }
        map
    };
    let table = by_name(table, "table", out);
    let server = by_name(server, "server", out);
    for name in server.keys().filter(|n| !table.contains_key(*n)) {
        out.push(format!(
            "{name}: known to redis-server, missing from the table"
        ));
    }
    for name in table.keys().filter(|n| !server.contains_key(*n)) {
        out.push(format!("{name}: in the table, unknown to redis-server"));
    }
    for (name, t) in &table {
        if let Some(s) = server.get(name) {
            compare_command(t, s, out);
        }
    }
}

fn compare_command(t: &Cmd, s: &Cmd, out: &mut Vec<String>) {
    let name = &t.name;
    let mut field = |what: &str, table: String, server: String| {
        if table != server {
            out.push(format!(
                "{name}: {what}: table {table}, redis-server {server}"
            ));
        }
    };
    field("arity", t.arity.to_string(), s.arity.to_string());
    field("flags", flag_names(t.flags), flag_names(s.flags));
    field(
        "first_key",
        t.first_key.to_string(),
        s.first_key.to_string(),
    );
    field("last_key", t.last_key.to_string(), s.last_key.to_string());
    field("step", t.step.to_string(), s.step.to_string());
    if t.key_specs.len() != s.key_specs.len() {
        out.push(format!(
            "{name}: {} key specs in the table, {} from redis-server\n    table:        {:?}\n    redis-server: {:?}",
            t.key_specs.len(),
            s.key_specs.len(),
            t.key_specs,
            s.key_specs
        ));
    } else {
        for (i, (tk, sk)) in t.key_specs.iter().zip(&s.key_specs).enumerate() {
            if tk != sk {
                out.push(format!(
                    "{name}: key spec #{i}\n    table:        {tk:?}\n    redis-server: {sk:?}"
                ));
            }
        }
    }
    compare_lists(&t.subcommands, &s.subcommands, out);
}

/// The generated table must be sorted by name (turnout binary-searches it) and subcommands
/// must be named `container|sub`.
fn check_order(list: &[CommandSpec], out: &mut Vec<String>) {
    for pair in list.windows(2) {
        if pair[0].name.as_bytes() >= pair[1].name.as_bytes() {
            out.push(format!(
                "table order: {:?} is listed before {:?} (the table must be sorted by name)",
                pair[0].name, pair[1].name
            ));
        }
    }
    for cmd in list {
        if cmd.name != cmd.name.to_lowercase() {
            out.push(format!("{}: table name is not lower case", cmd.name));
        }
        for sub in cmd.subcommands {
            if !sub.name.starts_with(&format!("{}|", cmd.name)) {
                out.push(format!(
                    "{}: subcommand {:?} is not named {}|...",
                    cmd.name, sub.name, cmd.name
                ));
            }
        }
        check_order(cmd.subcommands, out);
    }
}

#[test]
fn generated_table_matches_command_info_of_the_running_redis() {
    let server = RedisServer::start();
    let mut client = RawClient::connect(&server.addr());
    let version = server_version(&mut client);
    let live = server_commands(&mut client);

    let table: Vec<Cmd> = COMMANDS.iter().map(from_table).collect();
    let mut differences = Vec::new();
    check_order(COMMANDS, &mut differences);
    compare_lists(&table, &live, &mut differences);

    if !differences.is_empty() {
        let versions = if version == REDIS_VERSION {
            format!("both Redis {version}")
        } else {
            format!(
                "the table was generated from Redis {REDIS_VERSION}, the tests run redis-server \
                 {version}: CI runs {version}, so the table must follow it"
            )
        };
        panic!(
            "turnout's command table (src/command/table.rs) disagrees with COMMAND INFO of the \
             running redis-server ({versions}); {} difference(s):\n  {}\n\nRegenerate the table \
             against this redis-server: python3 tools/gen_command_table.py",
            differences.len(),
            differences.join("\n  ")
        );
    }

    // Not vacuous: Redis 7 has a couple of hundred commands and many subcommands.
    let subcommands: usize = live.iter().map(|c| c.subcommands.len()).sum();
    assert!(
        live.len() > 150 && subcommands > 50,
        "redis-server {version} listed only {} commands and {subcommands} subcommands",
        live.len()
    );
    // Nor are the tip bits: Redis 7 gives each tip to more than a handful of commands.
    let every: Vec<&Cmd> = live
        .iter()
        .flat_map(|c| std::iter::once(c).chain(&c.subcommands))
        .collect();
    for (tip, bit) in TIP_FLAGS {
        let tipped = every.iter().filter(|c| c.flags & bit != 0).count();
        assert!(
            tipped >= 5,
            "redis-server {version} tipped only {tipped} commands with {tip}"
        );
    }
}
