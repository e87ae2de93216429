//! Route persistence: the state file that makes flips survive restarts.
//!
//! The file is JSON, written atomically (temp file, fsync, rename, fsync of the directory).
//! At start-up its targets win over the config's initial targets, and a log line says so: a
//! restart must never silently send a namespace back to legacy. A file that cannot be read or
//! parsed stops start-up; it is never reset.

use crate::config::Config;
use crate::route::change::HistoryEntry;
use crate::route::{Mode, Namespaces, RouteTable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The state file format version this build writes and reads.
pub const FORMAT: u32 = 1;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is valid but names an endpoint the config no longer defines.
    #[error("state file {path} routes \"{route}\" to endpoint \"{endpoint}\", which the config does not define; add the endpoint back or change the route in the file deliberately")]
    UnknownEndpoint {
        /// The file.
        path: PathBuf,
        /// The route.
        route: String,
        /// The endpoint it names.
        endpoint: String,
    },
    /// The file is not a valid state file.
    #[error("state file {path} is corrupt ({message}); fix or remove it deliberately, turnout will not reset it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// [`FORMAT`].
    pub format: u32,
    /// Route table version.
    pub version: u64,
    /// Route name → its state.
    pub routes: BTreeMap<String, StoredRoute>,
    /// Audit history, oldest first.
    #[serde(default)]
    pub history: Vec<StoredHistory>,
}

/// One route in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRoute {
    /// Endpoint name.
    pub target: String,
    /// Mode: `direct`, `shadow` or `dual-write`.
    pub mode: String,
    /// Shadow mode: where copies go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// Dual-write mode: where writes are mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<String>,
    /// Fraction of reads compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<f64>,
    /// Shadow mode: writes are mirrored too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<bool>,
    /// Dual-write mode: reads are compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<bool>,
    /// RFC 3339.
    pub changed_at: String,
    /// Why.
    pub reason: String,
}

/// One history entry in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredHistory {
    /// Version produced.
    pub version: u64,
    /// RFC 3339.
    pub at: String,
    /// Route.
    pub namespace: String,
    /// Endpoint before.
    pub from: String,
    /// Endpoint after.
    pub to: String,
    /// Mode before (a description; absent in files of older builds).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from_mode: String,
    /// Mode after.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to_mode: String,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
}

/// Formats a time as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn parse_time(path: &Path, text: &str) -> Result<SystemTime, StateError> {
    humantime::parse_rfc3339_weak(text).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: format!("bad time \"{text}\": {e}"),
    })
}

impl StateFile {
    /// Captures a route table and history for writing.
    pub fn capture(
        config: &Config,
        namespaces: &Namespaces,
        table: &RouteTable,
        history: &[HistoryEntry],
    ) -> Self {
        let routes = table
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = |ep: usize| Some(config.endpoints[ep].name.clone());
                let (shadow, secondary, sample, writes, compare) = match r.mode {
                    Mode::Direct => (None, None, None, None, None),
                    Mode::Shadow {
                        endpoint,
                        sample,
                        writes,
                    } => (name(endpoint), None, Some(sample), Some(writes), None),
                    Mode::DualWrite {
                        secondary,
                        compare,
                        sample,
                    } => (None, name(secondary), Some(sample), None, Some(compare)),
                };
                let stored = StoredRoute {
                    target: config.endpoints[r.target].name.clone(),
                    mode: r.mode.name().to_string(),
                    shadow,
                    secondary,
                    sample,
                    writes,
                    compare,
                    changed_at: rfc3339(r.changed_at),
                    reason: r.reason.clone(),
                };
                (namespaces.name(i as u16).to_string(), stored)
            })
            .collect();
        let history = history
            .iter()
            .map(|h| StoredHistory {
                version: h.version,
                at: rfc3339(h.at),
                namespace: h.namespace.clone(),
                from: h.from.clone(),
                to: h.to.clone(),
                from_mode: h.from_mode.clone(),
                to_mode: h.to_mode.clone(),
                reason: h.reason.clone(),
                actor: h.actor.clone(),
            })
            .collect();
        StateFile {
            format: FORMAT,
            version: table.version,
            routes,
            history,
        }
    }
}

/// Reads the state file; `Ok(None)` when it does not exist yet.
///
/// # Errors
/// [`StateError`] when it exists but cannot be read or parsed.
pub fn load(path: &Path) -> Result<Option<StateFile>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if file.format != FORMAT {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            message: format!("format {} is not {FORMAT}", file.format),
        });
    }
    Ok(Some(file))
}

/// Writes the state file atomically: temp file in the same directory, fsync, rename, fsync dir.
///
/// # Errors
/// [`StateError::Io`]; the previous file is then untouched.
pub fn save(path: &Path, file: &StateFile) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec_pretty(file).map_err(|e| io(std::io::Error::other(e)))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    // Unique per write, so two writers can never interleave in one temp file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp_name.push(format!(".tmp.{}.{n}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// What applying a state file to the config's initial table produced.
#[derive(Debug)]
pub struct Restored {
    /// The table to start with.
    pub table: RouteTable,
    /// The audit history.
    pub history: Vec<HistoryEntry>,
    /// Human-readable lines, one per route whose target the file overrides.
    pub overrides: Vec<String>,
    /// Routes in the file that the config no longer has.
    pub ignored: Vec<String>,
}

/// Applies a loaded state file on top of the config's initial table.
///
/// # Errors
/// [`StateError::UnknownEndpoint`] when the file names an endpoint the config lacks: starting anyway
/// would silently move that namespace.
pub fn restore(
    path: &Path,
    file: StateFile,
    config: &Config,
    namespaces: &Namespaces,
    mut table: RouteTable,
) -> Result<Restored, StateError> {
    let mut overrides = Vec::new();
    let mut ignored = Vec::new();
    for (name, stored) in &file.routes {
        let Some(ns) = namespaces.id(name) else {
            ignored.push(name.clone());
            continue;
        };
        let target =
            config
                .endpoint_id(&stored.target)
                .ok_or_else(|| StateError::UnknownEndpoint {
                    path: path.to_path_buf(),
                    route: name.clone(),
                    endpoint: stored.target.clone(),
                })?;
        let route = &mut table.routes[usize::from(ns)];
        if route.target != target {
            overrides.push(format!(
                "{name} -> {} (config says {})",
                stored.target, config.endpoints[route.target].name
            ));
        }
        route.target = target;
        route.mode = stored_mode(path, name, stored, config)?;
        route.changed_at = parse_time(path, &stored.changed_at)?;
        route.reason = stored.reason.clone();
    }
    table.version = file.version.max(1);
    table.refresh();
    let history = file
        .history
        .iter()
        .map(|h| {
            Ok(HistoryEntry {
                version: h.version,
                at: parse_time(path, &h.at)?,
                namespace: h.namespace.clone(),
                from: h.from.clone(),
                to: h.to.clone(),
                from_mode: h.from_mode.clone(),
                to_mode: h.to_mode.clone(),
                reason: h.reason.clone(),
                actor: h.actor.clone(),
            })
        })
        .collect::<Result<Vec<_>, StateError>>()?;
    Ok(Restored {
        table,
        history,
        overrides,
        ignored,
    })
}

/// A stored route's mode, its endpoint names resolved and checked.
fn stored_mode(
    path: &Path,
    route: &str,
    stored: &StoredRoute,
    config: &Config,
) -> Result<Mode, StateError> {
    let corrupt = |message: String| StateError::Corrupt {
        path: path.to_path_buf(),
        message: format!("route \"{route}\": {message}"),
    };
    let endpoint = |name: &Option<String>, field: &str| -> Result<usize, StateError> {
        let name = name
            .as_deref()
            .ok_or_else(|| corrupt(format!("mode {} needs \"{field}\"", stored.mode)))?;
        config
            .endpoint_id(name)
            .ok_or_else(|| StateError::UnknownEndpoint {
                path: path.to_path_buf(),
                route: route.to_string(),
                endpoint: name.to_string(),
            })
    };
    let sample = stored.sample.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample) {
        return Err(corrupt(format!("sample {sample} is not between 0 and 1")));
    }
    match stored.mode.as_str() {
        "direct" => Ok(Mode::Direct),
        "shadow" => Ok(Mode::Shadow {
            endpoint: endpoint(&stored.shadow, "shadow")?,
            sample,
            writes: stored.writes.unwrap_or(false),
        }),
        "dual-write" => Ok(Mode::DualWrite {
            secondary: endpoint(&stored.secondary, "secondary")?,
            compare: stored.compare.unwrap_or(false),
            sample,
        }),
        other => Err(corrupt(format!("unknown mode \"{other}\""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_table_restores_and_overrides_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let config = crate::config::tests::good();
        let ns = Namespaces::new(&config);
        assert!(load(&path).expect("missing is fine").is_none());
        let mut table = RouteTable::from_config(&config, SystemTime::now());
        table.routes[0].target = config.endpoint_id("new").expect("new");
        table.version = 7;
        save(&path, &StateFile::capture(&config, &ns, &table, &[])).expect("saved");
        let loaded = load(&path).expect("readable").expect("present");
        let restored = restore(
            &path,
            loaded,
            &config,
            &ns,
            RouteTable::from_config(&config, SystemTime::now()),
        )
        .expect("ok");
        assert_eq!(restored.table.version, 7);
        assert_eq!(
            restored.table.routes[0].target,
            config.endpoint_id("new").expect("new")
        );
        assert_eq!(
            restored.overrides,
            vec!["web-cache -> new (config says legacy)".to_string()]
        );
    }

    #[test]
    fn a_corrupt_file_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").expect("write");
        let err = load(&path).expect_err("corrupt");
        assert!(err.to_string().contains("is corrupt"), "{err}");
        assert_eq!(std::fs::read(&path).expect("still there"), b"{not json");
    }

    #[test]
    fn an_unknown_endpoint_in_the_file_stops_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let config = crate::config::tests::good();
        let ns = Namespaces::new(&config);
        let table = RouteTable::from_config(&config, SystemTime::now());
        let mut file = StateFile::capture(&config, &ns, &table, &[]);
        if let Some(route) = file.routes.get_mut("web-cache") {
            route.target = "gone".to_string();
        }
        let err = restore(&path, file, &config, &ns, table).expect_err("unknown endpoint");
        assert!(err.to_string().contains("\"gone\""), "{err}");
    }
}
