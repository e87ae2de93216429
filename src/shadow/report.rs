//! The evidence shadow traffic produces: counters and a log of recent mismatches.
//!
//! Per namespace there are counts since the mode was set (reset with the mode, or on request)
//! for `GET /v1/shadow`, and monotonic per-command counters for Prometheus
//! (`turnout_shadow_total{namespace, command, outcome}`). Mismatches and secondary failures
//! go to a bounded ring with both replies rendered readably, truncated, and with values
//! replaced by their length and hash unless `[shadow] log_values` is set. At most as many
//! entries as the ring holds are rendered per second; the rest are counted, not logged (a
//! shadow endpoint that answers every request differently, an empty one for instance, would
//! otherwise have every request rendered, then overwritten unread).

use crate::command::{self, CommandId};
use crate::route::{Namespaces, NsId};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// The span within which at most `log_limit` entries are logged.
const LOG_WINDOW: Duration = Duration::from_secs(1);

/// Longest rendering of one reply in a mismatch report.
pub const REPLY_SHOWN: usize = 256;

/// What became of one shadowed or mirrored command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both replies are the same, once normalised.
    Match,
    /// They differ.
    Mismatch,
    /// The shadow or secondary failed: an error reply to a mirrored write, a timeout, a
    /// broken connection.
    ShadowError,
    /// Not sent or not compared: queue full, endpoint down, reply too large to compare,
    /// a write that cannot be mirrored.
    Dropped,
    /// A mirrored write the secondary accepted.
    Mirrored,
}

/// Every outcome, in label order.
pub const OUTCOMES: [Outcome; 5] = [
    Outcome::Match,
    Outcome::Mismatch,
    Outcome::ShadowError,
    Outcome::Dropped,
    Outcome::Mirrored,
];

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::Mismatch => "mismatch",
            Outcome::ShadowError => "shadow_error",
            Outcome::Dropped => "dropped",
            Outcome::Mirrored => "mirrored",
        }
    }
}

/// One logged mismatch or secondary failure.
#[derive(Debug, Clone)]
pub struct Logged {
    /// When it was seen.
    pub at: SystemTime,
    /// Its namespace.
    pub namespace: NsId,
    /// Its command.
    pub command: CommandId,
    /// `mismatch` or `shadow_error`.
    pub outcome: Outcome,
    /// The command's first key, rendered.
    pub key: String,
    /// The client's reply, rendered.
    pub primary: String,
    /// The shadow's or secondary's reply (or what went wrong), rendered.
    pub shadow: String,
}

/// Per-namespace counts since the mode was set.
#[derive(Debug)]
struct Since {
    counts: [AtomicU64; OUTCOMES.len()],
    since: Mutex<SystemTime>,
}

/// Shadow counters and the mismatch log.
#[derive(Debug)]
pub struct Report {
    since: Vec<Since>,
    /// Per namespace, allocated the first time it records anything: one counter per
    /// (command, outcome).
    per_command: Vec<OnceLock<Box<[AtomicU64]>>>,
    log: Mutex<VecDeque<Logged>>,
    log_limit: usize,
    log_values: bool,
    /// Start of the current [`LOG_WINDOW`] and entries logged in it.
    window: Mutex<(Instant, usize)>,
    /// Outcomes counted but not logged, their window's share being spent.
    unlogged: AtomicU64,
}

impl Report {
    /// Counters for `namespaces` routes and a log of at most `log_limit` entries.
    pub fn new(namespaces: usize, log_limit: usize, log_values: bool) -> Self {
        let now = SystemTime::now();
        Report {
            since: (0..namespaces)
                .map(|_| Since {
                    counts: Default::default(),
                    since: Mutex::new(now),
                })
                .collect(),
            per_command: (0..namespaces).map(|_| OnceLock::new()).collect(),
            log: Mutex::new(VecDeque::new()),
            log_limit,
            log_values,
            window: Mutex::new((Instant::now(), 0)),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Whether one more entry may be logged in the current window.
    fn admit(&self) -> bool {
        let Ok(mut window) = self.window.lock() else {
            return false;
        };
        let now = Instant::now();
        if now.duration_since(window.0) >= LOG_WINDOW {
            *window = (now, 0);
        }
        if window.1 < self.log_limit {
            window.1 += 1;
            true
        } else {
            false
        }
    }

    /// Counts an outcome that is not logged, its window's share being spent.
    fn skip(&self, ns: NsId, command: CommandId, outcome: Outcome) {
        self.record(ns, command, outcome);
        self.unlogged.fetch_add(1, Relaxed);
    }

    /// Outcomes counted but not logged since start, because more than the log holds came
    /// within one second.
    pub fn unlogged(&self) -> u64 {
        self.unlogged.load(Relaxed)
    }

    /// Counts one outcome.
    pub fn record(&self, ns: NsId, command: CommandId, outcome: Outcome) {
        let Some(since) = self.since.get(usize::from(ns)) else {
            return;
        };
        let o = outcome as usize;
        since.counts[o].fetch_add(1, Relaxed);
        let Some(cell) = self.per_command.get(usize::from(ns)) else {
            return;
        };
        let counters = cell.get_or_init(|| {
            (0..command::count() * OUTCOMES.len())
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        if let Some(c) = counters.get(usize::from(command) * OUTCOMES.len() + o) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Counts an outcome and logs it with both replies (unless the window's share of
    /// entries is spent).
    pub fn log(
        &self,
        ns: NsId,
        command: CommandId,
        outcome: Outcome,
        key: &[u8],
        primary: &[u8],
        shadow: &[u8],
    ) {
        if !self.admit() {
            return self.skip(ns, command, outcome);
        }
        let (primary, shadow) = (
            render(primary, self.log_values),
            render(shadow, self.log_values),
        );
        self.push(ns, command, outcome, key, primary, shadow);
    }

    /// Counts an outcome and logs it with a note in place of the second reply.
    pub fn log_note(&self, ns: NsId, command: CommandId, outcome: Outcome, key: &[u8], note: &str) {
        if !self.admit() {
            return self.skip(ns, command, outcome);
        }
        let note = note.chars().take(REPLY_SHOWN).collect();
        self.push(ns, command, outcome, key, String::new(), note);
    }

    fn push(
        &self,
        ns: NsId,
        command: CommandId,
        outcome: Outcome,
        key: &[u8],
        primary: String,
        shadow: String,
    ) {
        self.record(ns, command, outcome);
        let entry = Logged {
            at: SystemTime::now(),
            namespace: ns,
            command,
            outcome,
            key: escape(key, REPLY_SHOWN),
            primary,
            shadow,
        };
        if let Ok(mut log) = self.log.lock() {
            if log.len() >= self.log_limit {
                log.pop_front();
            }
            log.push_back(entry);
        }
    }

    /// Counts per outcome for a namespace since its mode was set (or the last reset), and
    /// since when.
    pub fn counts(&self, ns: NsId) -> ([u64; OUTCOMES.len()], SystemTime) {
        let mut out = [0; OUTCOMES.len()];
        let Some(since) = self.since.get(usize::from(ns)) else {
            return (out, SystemTime::UNIX_EPOCH);
        };
        for (o, c) in out.iter_mut().zip(&since.counts) {
            *o = c.load(Relaxed);
        }
        let at = since.since.lock().map_or(SystemTime::UNIX_EPOCH, |at| *at);
        (out, at)
    }

    /// Restarts a namespace's counts (and drops its logged entries). Prometheus counters are
    /// monotonic and are not reset.
    pub fn reset(&self, ns: NsId) {
        if let Some(since) = self.since.get(usize::from(ns)) {
            for c in &since.counts {
                c.store(0, Relaxed);
            }
            if let Ok(mut at) = since.since.lock() {
                *at = SystemTime::now();
            }
        }
        if let Ok(mut log) = self.log.lock() {
            log.retain(|e| e.namespace != ns);
        }
    }

    /// The newest logged entries, newest first, optionally of one namespace.
    pub fn recent(&self, ns: Option<NsId>, limit: usize) -> Vec<Logged> {
        let Ok(log) = self.log.lock() else {
            return Vec::new();
        };
        log.iter()
            .rev()
            .filter(|e| ns.map_or(true, |ns| e.namespace == ns))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Appends `turnout_shadow_total` in Prometheus text format.
    pub fn render(&self, out: &mut String, namespaces: &Namespaces) {
        let name = "turnout_shadow_total";
        let _ = writeln!(
            out,
            "# HELP {name} Shadowed and mirrored commands by namespace, command and outcome."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (ns, cell) in self.per_command.iter().enumerate() {
            let Some(counters) = cell.get() else {
                continue;
            };
            for (i, c) in counters.iter().enumerate() {
                let value = c.load(Relaxed);
                if value == 0 {
                    continue;
                }
                let command = (i / OUTCOMES.len()) as CommandId;
                let outcome = OUTCOMES[i % OUTCOMES.len()];
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\",command=\"{}\",outcome=\"{}\"}} {value}",
                    label_escape(namespaces.name(ns as NsId)),
                    command::label(command),
                    outcome.label()
                );
            }
        }
    }
}

fn label_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Bytes as text: printable ASCII as is, the rest as `\xNN`, cut at `limit` characters.
fn escape(bytes: &[u8], limit: usize) -> String {
    let mut out = String::new();
    for &b in bytes {
        if out.len() >= limit {
            out.push('…');
            break;
        }
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// A reply as readable text, at most [`REPLY_SHOWN`] bytes (plus an ellipsis). Bulk strings
/// become `<N bytes #hash>` unless `values`.
pub fn render(reply: &[u8], values: bool) -> String {
    let mut out = String::new();
    if render_into(reply, values, &mut out, 0).is_none() {
        out.clear();
        out.push_str("raw \"");
        out.push_str(&escape(reply, REPLY_SHOWN));
        out.push('"');
    }
    if out.len() > REPLY_SHOWN {
        let mut cut = REPLY_SHOWN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Renders the element at the start of `buf`; returns its length. Stops early (still
/// `Some`) once the text is long enough to be cut.
fn render_into(buf: &[u8], values: bool, out: &mut String, depth: usize) -> Option<usize> {
    if depth > 32 {
        return None;
    }
    let kind = *buf.first()?;
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = &buf[1..line_end];
    let mut pos = line_end + 2;
    let number = || -> Option<i64> { std::str::from_utf8(line).ok()?.parse().ok() };
    match kind {
        b'+' | b'-' | b':' | b',' | b'#' | b'(' => {
            if kind == b'-' {
                out.push_str("(error) ");
            }
            out.push_str(&escape(line, REPLY_SHOWN));
        }
        b'_' => out.push_str("(nil)"),
        b'$' | b'!' | b'=' => {
            let n = number()?;
            if n < 0 {
                out.push_str("(nil)");
            } else {
                let n = usize::try_from(n).ok()?;
                let data = buf.get(pos..pos + n)?;
                pos += n + 2;
                if kind == b'!' {
                    out.push_str("(error) ");
                    out.push_str(&escape(data, REPLY_SHOWN));
                } else if values {
                    out.push('"');
                    out.push_str(&escape(data, REPLY_SHOWN));
                    out.push('"');
                } else {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    data.hash(&mut h);
                    let _ = write!(out, "<{n} bytes #{:08x}>", h.finish() as u32);
                }
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number()?;
            if n < 0 {
                out.push_str("(nil)");
                return Some(pos);
            }
            let n = usize::try_from(n).ok()?;
            let elements = if matches!(kind, b'%' | b'|') {
                n.checked_mul(2)?
            } else {
                n
            };
            let (open, close) = match kind {
                b'%' | b'|' => ('{', '}'),
                _ => ('[', ']'),
            };
            out.push(open);
            for i in 0..elements {
                if out.len() > REPLY_SHOWN {
                    // Long enough: the rest will be cut anyway.
                    return Some(buf.len());
                }
                if i > 0 {
                    out.push_str(if matches!(kind, b'%' | b'|') && i % 2 == 1 {
                        ": "
                    } else {
                        ", "
                    });
                }
                pos += render_into(buf.get(pos..)?, values, out, depth + 1)?;
            }
            out.push(close);
        }
        _ => return None,
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_hidden_unless_asked_for() {
        let reply = b"*2\r\n$6\r\nsecret\r\n:5\r\n";
        let hidden = render(reply, false);
        assert!(!hidden.contains("secret"), "{hidden}");
        assert!(hidden.starts_with("[<6 bytes #"), "{hidden}");
        assert_eq!(render(reply, true), "[\"secret\", 5]");
        assert_eq!(render(b"-ERR no\r\n", false), "(error) ERR no");
        assert_eq!(render(b"%1\r\n$1\r\nk\r\n:1\r\n", true), "{\"k\": 1}");
    }

    #[test]
    fn long_replies_are_cut() {
        let mut reply = b"*100\r\n".to_vec();
        for _ in 0..100 {
            reply.extend_from_slice(b"$10\r\n0123456789\r\n");
        }
        let shown = render(&reply, true);
        assert!(
            shown.len() <= REPLY_SHOWN + '…'.len_utf8(),
            "{}",
            shown.len()
        );
        assert!(shown.ends_with('…'));
        let garbage = render(b"\x01\x02 not resp", false);
        assert!(garbage.starts_with("raw"), "{garbage}");
    }

    #[test]
    fn counts_reset_but_the_log_stays_bounded() {
        let report = Report::new(2, 3, false);
        for i in 0..5u8 {
            report.log(0, 1, Outcome::Mismatch, &[b'k', i], b":1\r\n", b":2\r\n");
        }
        report.record(1, 1, Outcome::Match);
        assert_eq!(report.counts(0).0[Outcome::Mismatch as usize], 5);
        let recent = report.recent(None, 10);
        assert_eq!(recent.len(), 3);
        assert_eq!(
            recent[0].key, "k\\x02",
            "the first three of the second are logged"
        );
        assert_eq!(report.unlogged(), 2);
        report.reset(0);
        assert_eq!(report.counts(0).0, [0; 5]);
        assert!(report.recent(Some(0), 10).is_empty());
        assert_eq!(report.counts(1).0[Outcome::Match as usize], 1);
    }

    #[test]
    fn at_most_the_log_size_is_rendered_per_second() {
        // A shadow endpoint that answers everything differently: every outcome counts, but
        // only the log's size of them per second is rendered and kept.
        let report = Report::new(1, 4, false);
        for i in 0..1000u32 {
            let key = format!("k{i}");
            if i % 2 == 0 {
                report.log(
                    0,
                    1,
                    Outcome::Mismatch,
                    key.as_bytes(),
                    b"$1\r\nx\r\n",
                    b"_\r\n",
                );
            } else {
                report.log_note(0, 1, Outcome::ShadowError, key.as_bytes(), "timed out");
            }
        }
        let counts = report.counts(0).0;
        assert_eq!(counts[Outcome::Mismatch as usize], 500);
        assert_eq!(counts[Outcome::ShadowError as usize], 500);
        assert_eq!(report.unlogged(), 996);
        let keys: Vec<String> = report
            .recent(None, 100)
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["k3", "k2", "k1", "k0"]);

        // The next window logs again.
        std::thread::sleep(LOG_WINDOW + Duration::from_millis(50));
        report.log(0, 1, Outcome::Mismatch, b"later", b":1\r\n", b":2\r\n");
        assert_eq!(report.recent(None, 1)[0].key, "later");
        assert_eq!(report.unlogged(), 996);
        assert_eq!(report.counts(0).0[Outcome::Mismatch as usize], 501);
    }
}
