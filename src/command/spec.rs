//! The shape of one command-table entry, as Redis describes it in `COMMAND INFO`.
//!
//! The table itself (`table.rs`) is generated from a real `redis-server` by
//! `tools/gen_command_table.py`; this file is the hand-written vocabulary it is written in.

/// Command flags, a bit set. Only the flags turnout acts on are kept.
pub mod flags {
    /// `write`: may modify the keyspace.
    pub const WRITE: u32 = 1 << 0;
    /// `readonly`: only reads.
    pub const READONLY: u32 = 1 << 1;
    /// `admin`: server administration (CONFIG, DEBUG, SHUTDOWN, ...).
    pub const ADMIN: u32 = 1 << 2;
    /// `pubsub`: publish/subscribe.
    pub const PUBSUB: u32 = 1 << 3;
    /// `noscript`: not allowed in scripts.
    pub const NOSCRIPT: u32 = 1 << 4;
    /// `blocking`: may block the connection (BLPOP, XREAD BLOCK, WAIT, ...).
    pub const BLOCKING: u32 = 1 << 5;
    /// `loading`, `stale`, `fast` and the like are not kept.
    /// `movablekeys`: key positions depend on the arguments.
    pub const MOVABLE_KEYS: u32 = 1 << 6;
    /// `no_multi`: refused inside MULTI.
    pub const NO_MULTI: u32 = 1 << 7;
    /// `denyoom`: refused when the server is out of memory.
    pub const DENYOOM: u32 = 1 << 8;
    /// ACL category `@transaction` (MULTI, EXEC, DISCARD, WATCH, UNWATCH).
    pub const TRANSACTION: u32 = 1 << 9;
    /// ACL category `@connection` (connection-state commands: SELECT, HELLO, CLIENT, AUTH, ...).
    pub const CONNECTION: u32 = 1 << 10;
    /// ACL category `@scripting`.
    pub const SCRIPTING: u32 = 1 << 11;
    /// ACL category `@dangerous`.
    pub const DANGEROUS: u32 = 1 << 12;
    /// Has subcommands (CLIENT, CONFIG, OBJECT, XINFO, ...): look the subcommand up.
    pub const CONTAINER: u32 = 1 << 13;
    /// Command tip `nondeterministic_output`: the reply may differ between two servers holding
    /// the same data (RANDOMKEY, SRANDMEMBER, TIME, INFO, SCAN, ...).
    pub const NONDETERMINISTIC_OUTPUT: u32 = 1 << 14;
    /// Command tip `nondeterministic_output_order`: the reply's elements are the same, their
    /// order may differ (SMEMBERS, HGETALL, KEYS, SINTER, ...).
    pub const UNORDERED_OUTPUT: u32 = 1 << 15;
}

/// Where the search for keys begins (`begin_search` of a key spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// Keys begin at this argument index (the command name is index 0).
    Index(u16),
    /// Keys begin after the first occurrence of `keyword` searching from `start_from`
    /// (negative: from the end, backwards).
    Keyword {
        /// The keyword, upper case as Redis lists it.
        keyword: &'static str,
        /// Index to start searching from; negative counts from the end.
        start_from: i16,
    },
    /// Redis could not describe it (`unknown`).
    Unknown,
}

/// How keys are found once the search began (`find_keys` of a key spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// A range of keys: the last key is `last_key` relative to the begin index
    /// (negative: relative to the end, -1 = last argument), every `step` arguments;
    /// `limit` > 1 means only 1/limit of the remaining arguments are keys (XREAD STREAMS).
    Range {
        /// Last key, relative to begin; negative counts from the end of the arguments.
        last_key: i16,
        /// Distance between keys.
        step: u16,
        /// 0 or 1: no limit; N: stop after (remaining / N) arguments.
        limit: u16,
    },
    /// The number of keys is an argument: at `keynum_idx` relative to begin, keys start
    /// at `first_key` relative to begin, every `step` arguments (EVAL, ZUNIONSTORE, ...).
    Keynum {
        /// Index of the numkeys argument, relative to begin.
        keynum_idx: u16,
        /// Index of the first key, relative to begin.
        first_key: u16,
        /// Distance between keys.
        step: u16,
    },
    /// Redis could not describe it (`unknown`).
    Unknown,
}

/// Key-spec flags, a bit set (`RO`, `RW`, `OW`, `RM`, `INCOMPLETE`, ...).
pub mod key_flags {
    /// Read-only access to the key.
    pub const RO: u16 = 1 << 0;
    /// Read-write access.
    pub const RW: u16 = 1 << 1;
    /// Overwrite.
    pub const OW: u16 = 1 << 2;
    /// Remove.
    pub const RM: u16 = 1 << 3;
    /// The spec may miss keys: Redis itself calls the command's key finder.
    pub const INCOMPLETE: u16 = 1 << 4;
    /// The "key" is not a key (e.g. a channel); not used for routing.
    pub const NOT_KEY: u16 = 1 << 5;
    /// Variable flags (depends on arguments).
    pub const VARIABLE_FLAGS: u16 = 1 << 6;
}

/// One key spec of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Where the search begins.
    pub begin: BeginSearch,
    /// How keys are found from there.
    pub find: FindKeys,
    /// `key_flags` bits.
    pub flags: u16,
}

/// One command or subcommand, as `COMMAND INFO` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower-case name; a subcommand is `container|sub`, e.g. `client|setname`.
    pub name: &'static str,
    /// Redis arity: positive = exact argument count (name included), negative = at least -arity.
    pub arity: i16,
    /// `flags` bits.
    pub flags: u32,
    /// Legacy first key index (0 = no keys).
    pub first_key: i16,
    /// Legacy last key index (negative counts from the end).
    pub last_key: i16,
    /// Legacy key step.
    pub step: i16,
    /// Key specs, in Redis's order.
    pub key_specs: &'static [KeySpec],
    /// Subcommands, sorted by name (empty unless `flags::CONTAINER`).
    pub subcommands: &'static [CommandSpec],
}
