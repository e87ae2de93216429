#!/usr/bin/env bash
# scripts/bench-cutover.sh — the client-visible pause of a fenced cutover under a pipelined
# write load: p50, p99 and max across 20 cutovers (the source of the README's table under
# "Performance" > "Cutover pause"). Goal: a maximum pause under 50 ms when replication lag is
# under 5 ms.
#
# Usage: scripts/bench-cutover.sh [--cutovers N] [--quick] [--install] [--help]
#   --cutovers N  measured cutovers (default 20)
#   --quick       5 cutovers and shorter waits: a smoke test of the script, not a measurement
#   --install     apt-get install the missing Debian packages, then continue
#
# Environment:
#   BENCH_CLIENTS=50          client connections of the load
#   BENCH_PIPELINE=16         commands per pipelined batch of each client
#   BENCH_SETTLE_MS=1000      steady load between a reset and the next measured cutover
#   BENCH_TIMEOUT_MS=2000     the cutovers' timeout_ms
#   BENCH_CUTOVER_PROMOTE=1   measured cutovers use "promote": true; each reset then makes new a
#                             replica of legacy again (REPLICAOF, a full resync) before the next
#   BENCH_MAX_SECONDS=600     bound on the load generator's whole run
#   BENCH_KEEP_TMP=1          keep the temporary directory (logs, configs, raw results)
#   RUST_LOG                  passed to turnout (default: info, as in production)
#
# Setup, all on 127.0.0.1, ports picked at run time:
#   legacy  redis-server, the master (--repl-diskless-sync-delay 0, so a replica syncs at once)
#   new     redis-server --replicaof legacy --replica-read-only no; the script waits until the
#           link is up and a probe key written on legacy is readable on new
#   turnout release build; namespace web-cache (prefix web:) and the default route on legacy
#   load    examples/cutover_load.rs (release): 50 connections to turnout, each pipelining
#           batches of 16 writes (INCR web:cutbench:<c>:n and SET web:cutbench:<c>:<k> <32 B>,
#           alternately), non-stop from before the first cutover to after the last one
#
# What is measured, 20 times: POST /v1/routes/web-cache/cutover?wait=true with
#   {"to": "new", "fence": "replication", "timeout_ms": 2000, "promote": false}
# The client-visible pause of one cutover is the largest gap between two consecutive replies
# (two reads that each completed at least one reply) of any client that overlaps the window
# from sending the POST to reading its answer; turnout's own pause_ms (hold to release) and
# each step's took_ms come from the report. Just before each cutover, under the same load, the
# replication lag is estimated twice: a probe key is SET directly on legacy and new is polled
# until it returns it (probe lag, ms), and INFO gives legacy's master_repl_offset minus new's
# slave_repl_offset (bytes; new's is read first, so this is an upper bound). The fence step's took_ms is the lag again, once the namespace is
# held. As a baseline, the same largest-gap measure over a window of the same length in the
# middle of the steady period before each cutover shows what the load alone produces.
#
# Why one direction with promote=false, and a reset in between: a replication fence needs the
# target to replicate from the source. After legacy -> new, legacy is not a replica of new, so
# new -> legacy cannot be fenced on replication: alternating directions would measure two
# different things. So every measured cutover is the same one, legacy (master) -> new (its
# writable replica, link up, caught up), and after each the namespace goes back with an
# unmeasured cutover {"to": "legacy", "fence": "drain"} (a drain still keeps every client's
# order; writes made on new meanwhile are not on legacy, which does not matter for a pause
# measurement), followed by BENCH_SETTLE_MS of steady load while new replicates legacy again.
# With promote=true every measured cutover would also leave new a master, and the reset would
# need a full resync (REPLICAOF) each time; BENCH_CUTOVER_PROMOTE=1 does exactly that, for the
# pause with REPLICAOF NO ONE included, but the default measures the fence on its own.
#
# Output: a Markdown report on stdout, also written to target/bench/cutover.md, and the raw
# per-cutover data plus the percentiles and machine details as JSON in target/bench/cutover.json.
# Every child process is stopped on exit (normal exit, error, Ctrl-C or SIGTERM), and every
# wait and loop is bounded in count and time.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOADAVG_START="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
OUT_DIR="$ROOT/target/bench"

# ---------------------------------------------------------------------------------------------
# Parameters

CUTOVERS=20
QUICK=0
INSTALL=0

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --cutovers)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "bench-cutover.sh: --cutovers needs a positive integer" >&2; exit 2; }
            CUTOVERS="$2"; shift 2 ;;
        --cutovers=*)
            CUTOVERS="${1#--cutovers=}"
            [[ "$CUTOVERS" =~ ^[1-9][0-9]*$ ]] || { echo "bench-cutover.sh: --cutovers needs a positive integer" >&2; exit 2; }
            shift ;;
        --quick) QUICK=1; shift ;;
        --install) INSTALL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-cutover.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

CLIENTS="${BENCH_CLIENTS:-50}"
PIPELINE="${BENCH_PIPELINE:-16}"
SETTLE_MS="${BENCH_SETTLE_MS:-1000}"
TIMEOUT_MS="${BENCH_TIMEOUT_MS:-2000}"
MAX_SECONDS="${BENCH_MAX_SECONDS:-600}"
WARMUP_MS=2000
AFTER_MS=300
PROMOTE="${BENCH_CUTOVER_PROMOTE:-0}"
[[ "$PROMOTE" == "0" || -z "$PROMOTE" ]] && PROMOTE=0 || PROMOTE=1
if [[ $QUICK -eq 1 ]]; then
    CUTOVERS=5
    SETTLE_MS="${BENCH_SETTLE_MS:-300}"
    WARMUP_MS=500
fi
for v in CUTOVERS CLIENTS PIPELINE SETTLE_MS TIMEOUT_MS MAX_SECONDS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "bench-cutover.sh: $v must be a positive integer (got '${!v}')" >&2; exit 2; }
done
NAMESPACE="web-cache"
PREFIX="web:"
# The goal the report checks the run against.
GOAL_PAUSE_MS=50
GOAL_LAG_MS=5

log() { printf '[bench-cutover] %s\n' "$*" >&2; }
die() { printf '[bench-cutover] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Prerequisites

missing_pkgs=()
command -v redis-server >/dev/null 2>&1 || missing_pkgs+=(redis-server)
command -v python3 >/dev/null 2>&1 || missing_pkgs+=(python3)
command -v timeout >/dev/null 2>&1 || missing_pkgs+=(coreutils)
if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
    if [[ $INSTALL -eq 1 ]]; then
        sudo_cmd=()
        [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
        log "installing: ${missing_pkgs[*]}"
        "${sudo_cmd[@]}" apt-get update
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing_pkgs[@]}"
    else
        echo "bench-cutover.sh: missing tools. Install them with:" >&2
        echo "    sudo apt-get install -y ${missing_pkgs[*]}" >&2
        echo "(or rerun with --install)" >&2
        exit 1
    fi
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "bench-cutover.sh: cargo not found. Install a Rust toolchain (>= 1.80) with rustup:" >&2
    echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
    exit 1
fi
CLK_TCK="$(getconf CLK_TCK)"

# ---------------------------------------------------------------------------------------------
# Build

log "building turnout and the load generator: cargo build --release --bin turnout --example cutover_load"
(cd "$ROOT" && cargo build --release --bin turnout --example cutover_load) >&2 \
    || die "cargo build --release failed"
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
[[ "$BIN_DIR" = /* ]] || BIN_DIR="$ROOT/$BIN_DIR"
TURNOUT_BIN="$BIN_DIR/turnout"
LOAD_BIN="$BIN_DIR/examples/cutover_load"
[[ -x "$TURNOUT_BIN" ]] || die "built, but $TURNOUT_BIN is missing"
[[ -x "$LOAD_BIN" ]] || die "built, but $LOAD_BIN is missing"

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup

TMP="$(mktemp -d "${TMPDIR:-/tmp}/turnout-bench-cutover.XXXXXX")"
# shellcheck source=lib/bench-cleanup.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-cleanup.sh"

# ---------------------------------------------------------------------------------------------
# Python helper (stdlib only): free ports, PING, the replication wait, the report.

HELPER="$TMP/bench_cutover_helper.py"
cat >"$HELPER" <<'PY'
import json, math, os, socket, statistics, sys, time

def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)

class Conn:
    def __init__(self, port, timeout=2.0):
        self.s = socket.create_connection(("127.0.0.1", int(port)), timeout=timeout)
        self.buf = b""
    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk
    def reply(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        t, rest = line[:1], line[1:]
        if t in (b"+", b":"):
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            val, self.buf = self.buf[:n], self.buf[n + 2:]
            return val.decode()
        raise RuntimeError("unexpected reply %r" % line)
    def cmd(self, *args):
        self.s.sendall(resp(*args))
        return self.reply()

def cmd_ports(n):
    socks = []
    for _ in range(int(n)):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))

def cmd_ping(port):
    try:
        ok = Conn(port, timeout=1.0).cmd("PING") == "PONG"
    except Exception:
        ok = False
    sys.exit(0 if ok else 1)

def cmd_wait_replica(legacy_port, new_port, timeout_s):
    # Until new's link to legacy is up and a probe key written on legacy is readable on new.
    t0 = time.monotonic()
    end = t0 + float(timeout_s)
    for _ in range(100000):
        try:
            info = Conn(new_port).cmd("INFO", "replication")
            if "master_link_status:up" in info:
                break
        except Exception:
            pass
        if time.monotonic() > end:
            raise SystemExit("new did not link to legacy within %ss" % timeout_s)
        time.sleep(0.05)
    legacy, new = Conn(legacy_port), Conn(new_port)
    key, token = "cutbench:startup-probe", "%d:%d" % (os.getpid(), time.time_ns())
    legacy.cmd("SET", key, token)
    for _ in range(1000000):
        if new.cmd("GET", key) == token:
            legacy.cmd("DEL", key)
            print("%.2f" % (time.monotonic() - t0))
            return
        if time.monotonic() > end:
            break
        time.sleep(0.001)
    raise SystemExit("a probe key written on legacy was not readable on new within %ss" % timeout_s)

def pct(values, p):
    # Linear interpolation between closest ranks (numpy's default, "type 7").
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

def f2(x):
    return "%.2f" % x if x is not None else "—"

def cmd_report(raw_json, meta_json, out_json, out_md):
    raw, meta = json.load(open(raw_json)), json.load(open(meta_json))
    cs = raw["cutovers"]
    n = len(cs)
    metrics = [
        ("client_max_gap_ms", "client-visible pause: largest gap between consecutive replies of any client, overlapping the cutover window", "ms"),
        ("pause_ms", "turnout's pause_ms (hold to release, from the report)", "ms"),
        ("window_ms", "cutover window (POST sent to its answer read)", "ms"),
        ("drain_ms", "drain step took_ms", "ms"),
        ("fence_ms", "fence step took_ms (fence key written on legacy until readable on new, namespace held)", "ms"),
        ("promote_ms", "promote step took_ms", "ms"),
        ("flip_ms", "flip step took_ms", "ms"),
        ("probe_lag_ms", "replication lag before the cutover, under load: probe key SET on legacy until GET on new returns it", "ms"),
        ("repl_offset_lag_bytes", "replication lag before the cutover: legacy master_repl_offset − new slave_repl_offset (read first; an upper bound)", "bytes"),
        ("baseline_max_gap_ms", "baseline: largest gap between consecutive replies in a window as long, without a cutover", "ms"),
        ("held_commands", "commands held in sessions when the hold ended (from the report)", ""),
        ("held_sessions", "sessions holding a command when the hold ended (from the report, older turnout)", ""),
    ]
    summary = {}
    for key, label, unit in metrics:
        vals = [c[key] for c in cs if c.get(key) is not None]
        if not vals:
            continue
        summary[key] = {"label": label, "unit": unit, "count": len(vals),
                        "p50": pct(vals, 50), "p99": pct(vals, 99), "max": max(vals), "min": min(vals)}
    completed = sum(1 for c in cs if c["outcome"] == "completed")
    lagged = [c for c in cs if c.get("probe_lag_ms") is not None and c.get("fence_ms") is not None]
    under = [c for c in lagged if c["probe_lag_ms"] < meta["goal_lag_ms"] and c["fence_ms"] < meta["goal_lag_ms"]]
    worst_under = max((c["client_max_gap_ms"] for c in under if c.get("client_max_gap_ms") is not None), default=None)
    worst_under_report = max((c["pause_ms"] for c in under if c.get("pause_ms") is not None), default=None)
    goal = {
        "pause_ms_below": meta["goal_pause_ms"], "when_lag_ms_below": meta["goal_lag_ms"],
        "cutovers_with_lag_below": len(under), "cutovers": n,
        "max_client_visible_pause_ms_among_them": worst_under,
        "max_reported_pause_ms_among_them": worst_under_report,
        "met": (worst_under is not None and worst_under < meta["goal_pause_ms"]
                and (worst_under_report is None or worst_under_report < meta["goal_pause_ms"])) if under else None,
    }
    load = raw["load"]
    p = raw["params"]
    # Where the run's largest gap was: in a measured cutover, a reset, or steady load.
    where = "—"
    span = load.get("largest_gap_whole_run_span_ms")
    if span:
        where = "steady load"
        for c in cs:
            for key, what in (("window_at_ms", "measured cutover %d"), ("reset_window_at_ms", "reset after cutover %d")):
                w = c.get(key)
                if w and span[1] >= w[0] and span[0] <= w[1]:
                    where = what % c["n"]
        if span[0] < load.get("load_started_ms", 0) + p["warmup_ms"] and where == "steady load":
            where = "warm-up"
    load["largest_gap_whole_run_where"] = where
    md = []
    md.append("## turnout fenced cutover pause (scripts/bench-cutover.sh)")
    md.append("")
    md.append("- date: %s; commit %s" % (meta["date"], meta["turnout_version"]))
    md.append("- machine: %s, %s CPUs (nproc), kernel %s; 1-min load average %s when the script started (before its build)"
              % (meta["cpu_model"], meta["nproc"], meta["kernel"], meta["loadavg_at_start"]))
    md.append("- versions: %s; %s" % (meta["redis_version"], meta["rustc_version"]))
    if meta.get("machine_busy_share") is not None:
        md.append("- CPU during the load, share of the machine: busy %.1f%% (user+nice+system+irq+softirq+steal), of which "
                  "this benchmark's processes %.1f%% (utime+stime; loopback softirq work is charged to them in part, so "
                  "the difference, %.1f%%, is only a rough bound on other programs)"
                  % (100 * meta["machine_busy_share"], 100 * meta["our_processes_share"], 100 * meta["other_programs_cpu_share"]))
    md.append("- legacy: redis-server master; new: `--replicaof legacy --replica-read-only no`; turnout (release), "
              "namespace `%s` (`%s`) on legacy; all on loopback, sharing the machine's CPUs" % (p["namespace"], p["prefix"]))
    md.append("- load: %d clients through turnout, %s; %s replies in %.1f s (%s/s), %d error replies; "
              "largest gap between consecutive replies of any client over the whole run (resets included): %s ms (%s)"
              % (p["clients"], p["commands"], "{:,}".format(load["replies"]), load["seconds"],
                 "{:,}".format(int(load["replies_per_second"])), load["error_replies"],
                 f2(load.get("largest_gap_whole_run_ms")), where))
    md.append("- %d measured cutovers `{\"to\": \"new\", \"fence\": \"replication\", \"timeout_ms\": %d, \"promote\": %s}`, "
              "each after %d ms of steady load and followed by an unmeasured reset `{\"to\": \"legacy\", \"fence\": \"drain\"}`%s; "
              "%d of %d completed"
              % (n, p["timeout_ms"], "true" if p["promote"] else "false", p["settle_ms"],
                 " and `REPLICAOF legacy` on new" if p["promote"] else "", completed, n))
    md.append("- percentiles: linear interpolation between closest ranks over the %d cutovers (with 20, p99 lies between the 19th and 20th value)" % n)
    md.append("")
    md.append("| per cutover | p50 | p99 | max |")
    md.append("|---|---:|---:|---:|")
    for key, label, unit in metrics:
        s = summary.get(key)
        if not s:
            continue
        if unit == "bytes" or unit == "":
            cells = ["{:,}".format(int(round(s[k]))) for k in ("p50", "p99", "max")]
        else:
            cells = [f2(s[k]) for k in ("p50", "p99", "max")]
        md.append("| %s%s | %s | %s | %s |" % (label, " (%s)" % unit if unit else "", *cells))
    md.append("")
    if goal["met"] is None:
        md.append("Goal (max pause < %d ms when replication lag < %d ms): no cutover had a probe lag and a fence step under %d ms."
                  % (goal["pause_ms_below"], goal["when_lag_ms_below"], goal["when_lag_ms_below"]))
    else:
        md.append("Goal (max pause < %d ms when replication lag < %d ms): %s — %d of %d cutovers had both the probe lag and the fence step "
                  "under %d ms; among them the largest client-visible pause was %s ms and the largest reported pause_ms %s ms "
                  "(over all %d cutovers: %s ms and %s ms)."
                  % (goal["pause_ms_below"], goal["when_lag_ms_below"], "met" if goal["met"] else "NOT met",
                     len(under), n, goal["when_lag_ms_below"], f2(worst_under), f2(worst_under_report), n,
                     f2(summary.get("client_max_gap_ms", {}).get("max")), f2(summary.get("pause_ms", {}).get("max"))))
    md.append("")
    md.append("Per cutover (ms unless stated):")
    md.append("")
    held_key, held_label = ("held_commands", "held commands") if any(c.get("held_commands") is not None for c in cs) else ("held_sessions", "held sessions")
    md.append("| # | outcome | client pause | pause_ms | window | drain | fence | flip | probe lag | offset lag (B) | baseline gap | %s |" % held_label)
    md.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cs:
        md.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            c["n"], c["outcome"], f2(c.get("client_max_gap_ms")), f2(c.get("pause_ms")), f2(c.get("window_ms")),
            f2(c.get("drain_ms")), f2(c.get("fence_ms")), f2(c.get("flip_ms")), f2(c.get("probe_lag_ms")),
            "{:,}".format(c["repl_offset_lag_bytes"]), f2(c.get("baseline_max_gap_ms")),
            c.get(held_key) if c.get(held_key) is not None else "—"))
    md.append("")
    text = "\n".join(md)
    result = {"meta": meta, "params": p, "load": load, "summary": summary, "goal": goal, "cutovers": cs}
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(out_md, "w") as f:
        f.write(text + "\n")
    print(text)

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"ports": cmd_ports, "ping": cmd_ping, "wait_replica": cmd_wait_replica, "report": cmd_report}[cmd](*args)
PY

helper() { python3 "$HELPER" "$@"; }

# wait_ping NAME PORT PID TIMEOUT_S LOG: until the server answers PING, or fail.
wait_ping() {
    local name="$1" port="$2" pid="$3" timeout_s="$4" logfile="${5:-}"
    local deadline=$((SECONDS + timeout_s))
    while ! helper ping "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            [[ -n "$logfile" && -f "$logfile" ]] && tail -n 30 "$logfile" >&2
            die "$name (pid $pid) exited before answering PING on 127.0.0.1:$port"
        fi
        if [[ $SECONDS -ge $deadline ]]; then
            [[ -n "$logfile" && -f "$logfile" ]] && tail -n 30 "$logfile" >&2
            die "$name did not answer PING on 127.0.0.1:$port within ${timeout_s}s"
        fi
        sleep 0.1
    done
}

# cpu_snapshot: SNAP_BUSY (machine-wide user+nice+system+irq+softirq+steal ticks), SNAP_ALL (all ticks),
# SNAP_OURS (this script, the children it has waited for, and its live servers); between two
# snapshots busy - ours is CPU other programs took (as in scripts/bench.sh).
cpu_snapshot() {
    local -a c f
    read -r -a c </proc/stat
    SNAP_BUSY=$(( c[1] + c[2] + c[3] + c[6] + c[7] + c[8] ))
    SNAP_ALL=0
    local x
    for x in "${c[@]:1:8}"; do SNAP_ALL=$(( SNAP_ALL + x )); done
    local stat
    stat="$(</proc/$$/stat)"
    read -r -a f <<<"${stat##*) }"
    SNAP_OURS=$(( f[11] + f[12] + f[13] + f[14] ))
    local pid
    for pid in "${CHILD_PIDS[@]}"; do
        stat="$(</proc/"$pid"/stat)" || continue
        read -r -a f <<<"${stat##*) }"
        SNAP_OURS=$(( SNAP_OURS + f[11] + f[12] ))
    done
}

# ---------------------------------------------------------------------------------------------
# Start the servers

read -r P_LEGACY P_NEW P_TURNOUT P_ADMIN <<<"$(helper ports 4)"

start_redis() {  # NAME PORT EXTRA_ARGS... -> sets REDIS_PID
    local name="$1" port="$2"
    shift 2
    mkdir -p "$TMP/$name"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
        --dir "$TMP/$name" --logfile "$TMP/$name.log" --protected-mode yes \
        --repl-diskless-sync-delay 0 "$@" &
    REDIS_PID=$!
    CHILD_PIDS+=("$REDIS_PID")
}

log "starting redis-server legacy on 127.0.0.1:$P_LEGACY and new (its replica) on 127.0.0.1:$P_NEW"
start_redis legacy "$P_LEGACY"; PID_LEGACY=$REDIS_PID
wait_ping "redis-server legacy" "$P_LEGACY" "$PID_LEGACY" 20 "$TMP/legacy.log"
start_redis new "$P_NEW" --replicaof 127.0.0.1 "$P_LEGACY" --replica-read-only no; PID_NEW=$REDIS_PID
wait_ping "redis-server new" "$P_NEW" "$PID_NEW" 20 "$TMP/new.log"
took="$(helper wait_replica "$P_LEGACY" "$P_NEW" 30)" || { tail -n 20 "$TMP/new.log" >&2; die "new did not become a caught-up replica of legacy"; }
log "new replicates legacy (link up, probe key readable on new after ${took}s)"

cat >"$TMP/turnout.toml" <<EOF
# generated by scripts/bench-cutover.sh
[proxy]
listen = "127.0.0.1:$P_TURNOUT"

[admin]
listen = "127.0.0.1:$P_ADMIN"

[state]
path = "$TMP/turnout-state.json"

[endpoints.legacy]
address = "127.0.0.1:$P_LEGACY"

[endpoints.new]
address = "127.0.0.1:$P_NEW"

[[namespaces]]
name = "$NAMESPACE"
prefixes = ["$PREFIX"]
target = "legacy"

[default]
target = "legacy"
EOF
"$TURNOUT_BIN" check --config "$TMP/turnout.toml" >"$TMP/turnout-check.log" 2>&1 \
    || { cat "$TMP/turnout-check.log" >&2; die "turnout check rejected the generated config"; }
log "starting turnout on 127.0.0.1:$P_TURNOUT (admin 127.0.0.1:$P_ADMIN)"
RUST_LOG="${RUST_LOG:-info}" "$TURNOUT_BIN" run --config "$TMP/turnout.toml" 2>"$TMP/turnout.log" &
PID_TURNOUT=$!
CHILD_PIDS+=("$PID_TURNOUT")
wait_ping turnout "$P_TURNOUT" "$PID_TURNOUT" 30 "$TMP/turnout.log"

# ---------------------------------------------------------------------------------------------
# Run: the load and the cutovers (bounded by --max-seconds inside, and by timeout outside)

load_args=(--proxy "127.0.0.1:$P_TURNOUT" --admin "127.0.0.1:$P_ADMIN"
    --legacy "127.0.0.1:$P_LEGACY" --new "127.0.0.1:$P_NEW"
    --namespace "$NAMESPACE" --prefix "$PREFIX" --clients "$CLIENTS" --pipeline "$PIPELINE"
    --cutovers "$CUTOVERS" --warmup-ms "$WARMUP_MS" --settle-ms "$SETTLE_MS" --after-ms "$AFTER_MS"
    --timeout-ms "$TIMEOUT_MS" --max-seconds "$MAX_SECONDS" --out "$TMP/raw.json")
[[ $PROMOTE -eq 1 ]] && load_args+=(--promote)
log "running $CUTOVERS cutovers under $CLIENTS pipelining clients (-P $PIPELINE)"
cpu_snapshot; b0=$SNAP_BUSY; a0=$SNAP_ALL; o0=$SNAP_OURS
timeout --kill-after=5 "$((MAX_SECONDS + 30))" "$LOAD_BIN" "${load_args[@]}" &
CURRENT_BG=$!
rc=0
wait "$CURRENT_BG" || rc=$?
CURRENT_BG=""
[[ $rc -eq 0 ]] || { tail -n 30 "$TMP/turnout.log" >&2; die "the load generator failed (exit $rc)"; }
cpu_snapshot
busy=$(( SNAP_BUSY - b0 ))
ours=$(( SNAP_OURS - o0 ))
other=$(( busy - ours )); (( other >= 0 )) || other=0
window=$(( SNAP_ALL - a0 ))
for pid in "$PID_TURNOUT" "$PID_LEGACY" "$PID_NEW"; do
    kill -0 "$pid" 2>/dev/null || die "process $pid died during the benchmark"
done

# ---------------------------------------------------------------------------------------------
# Report

rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")"
dirty=""; [[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1)" ]] && dirty="+dirty"
META="$TMP/meta.json"
CPU_MODEL="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)" \
NPROC="$(nproc)" KERNEL="$(uname -r)" ARCH="$(uname -m)" LOADAVG_START="$LOADAVG_START" \
REDIS_VERSION="redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p' | head -n 1)" \
RUSTC_VERSION="$(rustc --version 2>/dev/null || echo 'rustc n/a')" \
TURNOUT_VERSION="$rev$dirty, release profile" RUST_LOG_USED="${RUST_LOG:-info}" QUICK="$QUICK" \
OTHER_TICKS="$other" BUSY_TICKS="$busy" OUR_TICKS="$ours" WINDOW_TICKS="$window" GOAL_PAUSE_MS="$GOAL_PAUSE_MS" GOAL_LAG_MS="$GOAL_LAG_MS" \
python3 - "$META" <<'PY'
import datetime, json, os, sys
e = os.environ
window = int(e["WINDOW_TICKS"])
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "script": "scripts/bench-cutover.sh", "quick": e["QUICK"] == "1",
    "cpu_model": e["CPU_MODEL"] or "unknown", "nproc": int(e["NPROC"]), "kernel": e["KERNEL"], "arch": e["ARCH"],
    "redis_version": e["REDIS_VERSION"], "rustc_version": e["RUSTC_VERSION"],
    "turnout_version": e["TURNOUT_VERSION"], "turnout_rust_log": e["RUST_LOG_USED"],
    "loadavg_at_start": e["LOADAVG_START"],
    "machine_busy_share": (int(e["BUSY_TICKS"]) / window) if window else None,
    "our_processes_share": (int(e["OUR_TICKS"]) / window) if window else None,
    "other_programs_cpu_share": (int(e["OTHER_TICKS"]) / window) if window else None,
    "goal_pause_ms": float(e["GOAL_PAUSE_MS"]), "goal_lag_ms": float(e["GOAL_LAG_MS"]),
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
PY

mkdir -p "$OUT_DIR"
helper report "$TMP/raw.json" "$META" "$OUT_DIR/cutover.json" "$OUT_DIR/cutover.md"
if [[ $QUICK -eq 1 ]]; then
    echo
    echo "(--quick: 5 cutovers and short waits; do not publish these numbers)"
fi
log "wrote $OUT_DIR/cutover.md and $OUT_DIR/cutover.json"
