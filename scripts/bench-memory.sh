#!/usr/bin/env bash
# scripts/bench-memory.sh — turnout's memory per idle client connection, and whether
# per-connection buffers shrink back after a burst of large values.
#
# Starts a fresh redis-server and a release build of turnout (the config of scripts/bench.sh:
# default plus three namespaces, all on that redis-server; max_clients raised to fit), then
# from one Python process (scripts/lib/bench_memory.py):
#   1. reads turnout's RSS (/proc/PID/status) once it has settled;
#   2. opens N client connections that send nothing, waits until turnout's /metrics counts
#      them all, reads RSS again: (RSS - RSS before) / N is the memory per idle connection;
#   3. on K of them, SET then GET a B-byte value (all requests of a step written before any
#      reply is read, so turnout holds all K values at once), then DEL; reads RSS at once
#      (and VmHWM, the peak);
#   4. waits until RSS stops moving, all connections idle again, and reads it: the buffers
#      grown by the burst should be released;
#   5. closes every connection and reads RSS once more.
#
# Usage: scripts/bench-memory.sh [--connections N] [--burst-clients K] [--burst-bytes B]
#                                [--quick] [--help]
#   --connections N     idle client connections (default 10000)
#   --burst-clients K   connections that carry the burst (default 100)
#   --burst-bytes B     value size of the burst (default 1048576, 1 MiB)
#   --quick             N = 500, K = 20: a smoke test of the script, not a measurement
#
# Environment:
#   BENCH_KEEP_TMP=1       keep the temporary directory (logs, config)
#   BENCH_MEMORY_TIMEOUT=S upper bound for the measurement itself (default 300 s)
#   RUST_LOG               passed to turnout (default: info)
#
# Output: Markdown on stdout, also in target/bench/memory.md, and JSON in
# target/bench/memory.json. The script raises `ulimit -n` to fit N (client and turnout side).
# Everything listens on 127.0.0.1 on free ports; every child process is stopped on exit.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$ROOT/target/bench"
PY="$ROOT/scripts/lib/bench_memory.py"
# shellcheck source=lib/bench-proc.sh
source "$ROOT/scripts/lib/bench-proc.sh"

CONNECTIONS=10000
BURST_CLIENTS=100
BURST_BYTES=$((1024 * 1024))
QUICK=0

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
positive() {
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "bench-memory.sh: $1 needs a positive integer (got '$2')" >&2; exit 2; }
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --connections) positive "$1" "${2:-}"; CONNECTIONS="$2"; shift 2 ;;
        --burst-clients) positive "$1" "${2:-}"; BURST_CLIENTS="$2"; shift 2 ;;
        --burst-bytes) positive "$1" "${2:-}"; BURST_BYTES="$2"; shift 2 ;;
        --quick) QUICK=1; CONNECTIONS=500; BURST_CLIENTS=20; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-memory.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
TIMEOUT="${BENCH_MEMORY_TIMEOUT:-300}"
positive BENCH_MEMORY_TIMEOUT "$TIMEOUT"
(( BURST_BYTES <= 512 * 1024 * 1024 )) || { echo "bench-memory.sh: --burst-bytes must be at most 512 MiB" >&2; exit 2; }

log() { printf '[bench-memory] %s\n' "$*" >&2; }
die() { printf '[bench-memory] error: %s\n' "$*" >&2; exit 1; }

for tool in redis-server python3 cargo timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (see scripts/bench.sh --help for the packages)"
done

# The client process holds N sockets, turnout N clients plus up to K upstream links.
raise_nofile $(( CONNECTIONS + BURST_CLIENTS + 1024 )) || exit 1
# Loopback connections from one address need that many ephemeral ports.
read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range
(( eph_hi - eph_lo > CONNECTIONS + 1000 )) || die "ephemeral port range $eph_lo-$eph_hi is too small for $CONNECTIONS connections"

log "building turnout: cargo build --release"
(cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
TURNOUT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/turnout"
[[ "$TURNOUT_BIN" = /* ]] || TURNOUT_BIN="$ROOT/$TURNOUT_BIN"
[[ -x "$TURNOUT_BIN" ]] || die "built, but $TURNOUT_BIN is missing"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/turnout-bench-memory.XXXXXX")"
# shellcheck source=lib/bench-cleanup.sh
source "$ROOT/scripts/lib/bench-cleanup.sh"

# wait_ping NAME PORT PID: until the server answers PING (at most 30 s), or fail.
wait_ping() {
    local deadline=$((SECONDS + 30))
    until python3 "$PY" ping "$2"; do
        kill -0 "$3" 2>/dev/null || die "$1 (pid $3) exited before answering PING; logs in $TMP"
        [[ $SECONDS -lt $deadline ]] || die "$1 did not answer PING on 127.0.0.1:$2 within 30 s"
        sleep 0.1
    done
}

read -r P_REDIS P_TURNOUT P_ADMIN <<<"$(python3 "$PY" ports 3)"

mkdir -p "$TMP/redis"
redis-server --bind 127.0.0.1 --port "$P_REDIS" --save '' --appendonly no --daemonize no \
    --dir "$TMP/redis" --logfile "$TMP/redis.log" --protected-mode yes \
    --maxclients $(( BURST_CLIENTS + 1000 )) &
PID_REDIS=$!
CHILD_PIDS+=("$PID_REDIS")
wait_ping redis-server "$P_REDIS" "$PID_REDIS"

MAX_CLIENTS=$(( CONNECTIONS + 64 ))
cat >"$TMP/turnout.toml" <<EOF
# generated by scripts/bench-memory.sh
[proxy]
listen = "127.0.0.1:$P_TURNOUT"
max_clients = $MAX_CLIENTS

[admin]
listen = "127.0.0.1:$P_ADMIN"

[state]
path = "$TMP/turnout-state.json"

[endpoints.legacy]
address = "127.0.0.1:$P_REDIS"

[[namespaces]]
name = "web-cache"
prefixes = ["web:"]
target = "legacy"

[[namespaces]]
name = "token-cache"
prefixes = ["tok:", "session:"]
target = "legacy"

[[namespaces]]
name = "impact"
prefixes = ["impact:"]
target = "legacy"

[default]
target = "legacy"
EOF
"$TURNOUT_BIN" check --config "$TMP/turnout.toml" >"$TMP/check.log" 2>&1 \
    || { cat "$TMP/check.log" >&2; die "turnout check rejected the generated config"; }
log "starting turnout on 127.0.0.1:$P_TURNOUT (admin 127.0.0.1:$P_ADMIN), max_clients $MAX_CLIENTS"
RUST_LOG="${RUST_LOG:-info}" "$TURNOUT_BIN" run --config "$TMP/turnout.toml" 2>"$TMP/turnout.log" &
PID_TURNOUT=$!
CHILD_PIDS+=("$PID_TURNOUT")
wait_ping turnout "$P_TURNOUT" "$PID_TURNOUT"

turnout_version="$("$TURNOUT_BIN" --version 2>/dev/null | head -n 1 | sed "s/^turnout //" || true)"
rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")"
dirty=""; [[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1)" ]] && dirty="+dirty"
DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" QUICK="$QUICK" MAX_CLIENTS="$MAX_CLIENTS" \
CPU_MODEL="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)" \
NPROC="$(nproc)" KERNEL="$(uname -r)" \
TURNOUT_VERSION="${turnout_version:-?} ($rev$dirty, release profile)" \
REDIS_VERSION="$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p' | head -n 1)" \
python3 -c '
import json, os, sys
e = os.environ
json.dump({"date": e["DATE"], "quick": e["QUICK"] == "1", "max_clients": int(e["MAX_CLIENTS"]),
           "cpu_model": e["CPU_MODEL"] or "unknown", "nproc": int(e["NPROC"]), "kernel": e["KERNEL"],
           "turnout_version": e["TURNOUT_VERSION"], "redis_version": e["REDIS_VERSION"]},
          open(sys.argv[1], "w"), indent=2)' "$TMP/meta.json"

mkdir -p "$OUT_DIR"
# The driver bounds itself (TIMEOUT); `timeout` is the backstop. Run in the background and
# waited for, so that INT/TERM reach the cleanup at once.
timeout --kill-after=5 $(( TIMEOUT + 120 )) python3 "$PY" run \
    --port "$P_TURNOUT" --admin "$P_ADMIN" --pid "$PID_TURNOUT" \
    --connections "$CONNECTIONS" --burst-clients "$BURST_CLIENTS" --burst-bytes "$BURST_BYTES" \
    --timeout "$TIMEOUT" --meta "$TMP/meta.json" \
    --out-json "$OUT_DIR/memory.json" --out-md "$OUT_DIR/memory.md" &
CURRENT_BG=$!
rc=0
wait "$CURRENT_BG" || rc=$?
CURRENT_BG=""
[[ $rc -eq 0 ]] || die "the measurement failed (exit $rc); turnout log: $TMP/turnout.log"
kill -0 "$PID_TURNOUT" 2>/dev/null || die "turnout died during the measurement"
log "wrote $OUT_DIR/memory.md and $OUT_DIR/memory.json"
