//! The command table and what turnout does with each command.
//!
//! [`table`] is generated from Redis's own `COMMAND INFO`; [`keys`] walks its key specs to find
//! a request's keys without allocating; [`policy`] says which commands turnout forwards, which
//! carry connection state to every upstream, and which it refuses with a clear error.

pub mod keys;
pub mod policy;
pub mod spec;
pub mod table;

pub use policy::Policy;
pub use spec::CommandSpec;

/// Index of a command in [`table::COMMANDS`]; `UNKNOWN` for names the table lacks.
pub type CommandId = u16;

/// The id of commands the table does not know (modules, newer Redis versions).
pub const UNKNOWN: CommandId = table_len();

const fn table_len() -> CommandId {
    // The generated table has a few hundred entries; this cannot truncate.
    table::COMMANDS.len() as CommandId
}

/// Number of distinct command ids, `UNKNOWN` included (the size of per-command metric arrays).
pub const fn count() -> usize {
    table::COMMANDS.len() + 1
}

/// The metric label of a command id: the table's own lower-case name.
pub fn label(id: CommandId) -> &'static str {
    table::COMMANDS
        .get(usize::from(id))
        .map_or("unknown", |c| c.name)
}

/// A request's command, resolved through the table.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    /// Top-level id, for metrics.
    pub id: CommandId,
    /// The spec that describes the request's keys and flags (the subcommand's for containers),
    /// or `None` for an unknown command or unknown subcommand.
    pub spec: Option<&'static CommandSpec>,
    /// What turnout does with it.
    pub policy: Policy,
}

/// Resolves a request's command from its first two arguments, case-insensitively and
/// without allocating.
pub fn resolve(name: &[u8], second: Option<&[u8]>) -> Resolved {
    let Some(index) = find(table::COMMANDS, name, 0) else {
        return Resolved {
            id: UNKNOWN,
            spec: None,
            policy: Policy::Forward,
        };
    };
    let top = &table::COMMANDS[index];
    let id = index as CommandId;
    if top.subcommands.is_empty() {
        return Resolved {
            id,
            spec: Some(top),
            policy: policy::of_top(index),
        };
    }
    // Subcommand names are `container|sub`; compare past the `|`.
    let sub = second.and_then(|s| find(top.subcommands, s, top.name.len() + 1));
    match sub {
        Some(i) => {
            let spec = &top.subcommands[i];
            Resolved {
                id,
                spec: Some(spec),
                policy: policy::of_sub(spec.name),
            }
        }
        None => Resolved {
            id,
            spec: None,
            policy: Policy::Forward,
        },
    }
}

/// Longer than every command and subcommand name in the table: a longer name is unknown.
const NAME_MAX: usize = 64;

/// Binary search over a name-sorted slice for `name`, case-insensitively, comparing with each
/// entry's name from byte `skip` on. `name` is lowered once into a stack buffer instead of at
/// every step (`resolve` was 4.2% of turnout's perf samples under pipelined GETs; lowering
/// once took criterion's `classify_12_commands` from 505 to 467 ns).
fn find(entries: &[CommandSpec], name: &[u8], skip: usize) -> Option<usize> {
    let mut lowered = [0u8; NAME_MAX];
    let lowered = lowered.get_mut(..name.len())?;
    for (to, from) in lowered.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    let lowered = &*lowered;
    entries
        .binary_search_by(|entry| {
            let candidate = entry.name.as_bytes().get(skip..).unwrap_or_default();
            // Byte by byte, inlined: most steps differ in the first byte or two, where a call
            // to `memcmp` (what slice `cmp` becomes) cost three times as much in all.
            candidate.iter().copied().cmp(lowered.iter().copied())
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_find_subcommands() {
        let get = resolve(b"gEt", None);
        assert_eq!(label(get.id), "get");
        assert_eq!(get.spec.map(|s| s.name), Some("get"));
        let setname = resolve(b"CLIENT", Some(b"SetName"));
        assert_eq!(label(setname.id), "client");
        assert_eq!(setname.spec.map(|s| s.name), Some("client|setname"));
        assert!(matches!(setname.policy, Policy::State(_)));
        let unknown_sub = resolve(b"client", Some(b"nope"));
        assert!(unknown_sub.spec.is_none());
        let unknown = resolve(b"notacommand", None);
        assert_eq!(unknown.id, UNKNOWN);
        assert_eq!(label(unknown.id), "unknown");
    }

    #[test]
    fn every_name_in_the_table_fits_the_lookup_buffer() {
        for command in table::COMMANDS {
            assert!(command.name.len() < NAME_MAX, "{}", command.name);
            for sub in command.subcommands {
                assert!(sub.name.len() < NAME_MAX, "{}", sub.name);
                let short = &sub.name[command.name.len() + 1..];
                let upper = short.to_ascii_uppercase();
                let found = resolve(command.name.as_bytes(), Some(upper.as_bytes()));
                assert_eq!(found.spec.map(|s| s.name), Some(sub.name));
            }
            let upper = command.name.to_ascii_uppercase();
            assert_eq!(label(resolve(upper.as_bytes(), None).id), command.name);
        }
        let long = vec![b'a'; NAME_MAX + 1];
        assert_eq!(resolve(&long, None).id, UNKNOWN);
    }

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        for pair in table::COMMANDS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for container in table::COMMANDS.iter().filter(|c| !c.subcommands.is_empty()) {
            for pair in container.subcommands.windows(2) {
                assert!(pair[0].name < pair[1].name);
            }
        }
    }
}
