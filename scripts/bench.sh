#!/usr/bin/env bash
# scripts/bench.sh — the single source of turnout's published performance numbers.
#
# In one run, on one machine, it benchmarks the same Redis three ways, interleaved round by
# round, each round starting one target later (A B C, B C A, C A B, ...), and prints medians
# and ratios:
#   A  direct     redis-benchmark -> redis-server
#   B  turnout    redis-benchmark -> turnout   -> redis-server
#   C  twemproxy  redis-benchmark -> nutcracker -> redis-server
# and, in the same rounds, three pairs that need a second turnout process:
#   W5  direct against turnout-split: a second turnout, same config but namespace token-cache
#       on a second redis-server ("second"), so a 10-key MGET is split over two endpoints and
#       merged (twemproxy has one pool, so it is not compared there)
#   N1  turnout against turnout-ns1000: a second turnout, same config plus 997 namespaces
#       with distinct prefixes (1,000 in all), running W1's command line
#   S1  turnout against turnout-shadow: a second turnout, same config, the namespaces S1's
#       keys hit set through the admin API to shadow mode (sample 1.0, writes false): every
#       GET is also sent to a second, empty redis-server and the replies compared
# and, in W1 and W3 only, a fourth target:
#   D  relay      redis-benchmark -> examples/relay.rs -> redis-server: a byte relay with no
#                 RESP work (tokio copy_bidirectional, 128 KiB buffers, one upstream connection
#                 per client): the measured ceiling of any user-space hop for pipelined
#                 requests and for large values
# and, in W2 and W4 only, a fifth:
#   F  mux-relay  redis-benchmark -> examples/mux_relay.rs -> redis-server: the least a
#                 multiplexing proxy on tokio does (every client's requests over one shared
#                 pipelined connection, only counted; replies only split by count and written
#                 to the client by the task that reads them; one thread): the measured
#                 ceiling of a multiplexing proxy for unpipelined clients
# and, with --control, in W1-W4 one more target:
#   E  turnout-again  a second turnout process with the same config as B: turnout against
#                 itself (an A/A control). Its ratio to B is what the machine's noise alone
#                 makes of two identical programs in this run: a ratio to direct or twemproxy
#                 that is no further from its target than that is not told apart by the run.
#
# Targets: the report judges each of the issue's ratio targets (W1-W4 against direct and
# twemproxy, N1, S1) from the per-round ratios (one per round, from runs minutes apart): a
# distribution-free 95% confidence interval for their median (order statistics, as in the
# sign test; with 5 rounds it is [min, max] at 94%), and the verdict `met` (whole interval at
# or above the target), `missed` (whole interval below) or `not resolved` by the run. Fewer
# than 5 rounds give no verdict. The control's intervals should contain 1.00.
#
# Usage: scripts/bench.sh [--quick] [--rounds K] [--placement P] [--control] [--install] [--help]
#        scripts/bench.sh --report-from RESULTS_JSON
#   --quick      small N and 1 round: a smoke test of the script, not a measurement
#   --rounds K   rounds per (workload, target, command); the median is reported (default 5,
#                the fewest that give each target a verdict: see "Targets" below)
#   --placement P  which CPUs the processes may run on (taskset), the same for every target:
#                shared   no pinning: the scheduler places redis-server, the proxy and
#                         redis-benchmark anywhere and moves them (the default)
#                split    redis-benchmark on the last CPU; redis-server(s) and the proxy on
#                         the others (load generator apart from the system under test)
#                sidecar  redis-server(s) on the last CPU; the proxy and redis-benchmark on
#                         the others (the proxy beside its client, as a sidecar runs)
#                split and sidecar need at least 2 CPUs.
#   --control    add turnout-again to W1-W4 (see E above; a quarter to a third more time
#                for those workloads)
#   --install    apt-get install the missing Debian packages, then continue
#   --report-from RESULTS_JSON  benchmark nothing: render the report again from a results.json
#                that an earlier run wrote (with this script's current report, e.g. verdicts for
#                a run made before they existed), to stdout and target/bench/results.{md,json}
#
# Environment:
#   BENCH_WORKLOADS="W1 W3"  run only these workloads, in the usual order (default: all of
#                          W1 W2 W3 W4 W5 N1 S1)
#   BENCH_SKIP_TURNOUT=1   skip building and benchmarking turnout (direct + twemproxy only;
#                          W5, N1 and S1 are dropped)
#   BENCH_SKIP_SHADOW=1    skip workload S1 (turnout's shadow mode against its direct mode)
#   BENCH_SHADOW_SEED=1    also prefill S1's shadow endpoint, so that shadowed GETs match instead
#                          of mismatching (default: the shadow endpoint stays empty)
#   BENCH_PROXY_OPTIONS    extra lines for turnout's [proxy] section, e.g. "multiplex = false"
#   BENCH_KEEP_TMP=1       keep the temporary directory (logs, configs, raw runs)
#   BENCH_RUN_TIMEOUT=S    upper bound for a single redis-benchmark run (default 300 s)
#   BENCH_N1 .. BENCH_N5   requests per run for W1 .. W5 (N1 and S1 use BENCH_N1; defaults below)
#   BENCH_KEYSPACE         -r value, number of distinct keys per prefix (default 100000)
#   BENCH_KEYSPACE3        -r value of W3, whose values are large (default 1000)
#   BENCH_VALUE_SIZE       value size in bytes, every workload but W3 (default 64)
#   BENCH_VALUE_SIZE3      value size of W3 in bytes (default 65536; at most 131000, as the
#                          value is one argument of redis-benchmark's command line)
#   BENCH_CLIENTS          -c value for W1, W2, W5, N1, S1 (default 50)
#   BENCH_CLIENTS3         -c value for W3 (default 10)
#   BENCH_CLIENTS4         -c value for W4 (default 1000; the script raises `ulimit -n`)
#   BENCH_NAMESPACES       namespaces of turnout-ns1000 (default 1000)
#   RUST_LOG               passed to turnout (default: info, as in production)
#
# Output: a Markdown report on stdout, also written to target/bench/results.md, and the raw
# data plus medians as JSON in target/bench/results.json.
#
# Everything listens on 127.0.0.1 on free ports picked at run time; every child process is
# stopped on exit (normal exit, error, Ctrl-C or SIGTERM), and every wait is bounded.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/bench-proc.sh
source "$ROOT/scripts/lib/bench-proc.sh"
# 1-minute load average before this script adds any: work of other programs shows up here.
LOADAVG_START="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
OUT_DIR="$ROOT/target/bench"

# ---------------------------------------------------------------------------------------------
# Parameters

ROUNDS=5
QUICK=0
INSTALL=0
PLACEMENT=shared
CONTROL=0
REPORT_FROM=""

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --rounds)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --rounds needs a positive integer" >&2; exit 2; }
            ROUNDS="$2"; shift 2 ;;
        --rounds=*)
            ROUNDS="${1#--rounds=}"
            [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --rounds needs a positive integer" >&2; exit 2; }
            shift ;;
        --placement)
            [[ $# -ge 2 ]] || { echo "bench.sh: --placement needs shared, split or sidecar" >&2; exit 2; }
            PLACEMENT="$2"; shift 2 ;;
        --placement=*) PLACEMENT="${1#--placement=}"; shift ;;
        --install) INSTALL=1; shift ;;
        --control) CONTROL=1; shift ;;
        --report-from)
            [[ $# -ge 2 && -f "$2" ]] || { echo "bench.sh: --report-from needs a results.json file" >&2; exit 2; }
            REPORT_FROM="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

# Workloads. W1-W3 run SET then GET with redis-benchmark's custom-command form, e.g.
#   redis-benchmark -c 50 -P 16 -n N -r 100000 --csv SET web:__rand_int__ <value>
# instead of `-t get,set`: `-t` always uses keys `key:__rand_int__`, which would only ever
# exercise turnout's [default] route. With `-r R`, redis-benchmark replaces __rand_int__ by a
# 12-digit zero-padded number in [0, R), so W1's keys are web:000000000000..web:000000099999
# (namespace web-cache), W2's session:000000000000.. (namespace token-cache, its second
# prefix), W3's impact:.. (namespace impact) and W4's tok:.. (token-cache, its first prefix).
# Every key of every range is written once before the first run, so GETs always hit.
# The value is a fixed string of BENCH_VALUE_SIZE bytes (the custom-command form ignores -d).
#
#   W1  pipelined:    -c 50 -P 16, N = 1,000,000 per run (throughput-bound)
#   W2  unpipelined:  -c 50 -P 1,  N =   200,000 per run (round-trip-bound)
#   W3  large values: -c 10 -P 1,  N =    50,000 per run, 64 KiB values, -r 1000 (64 MiB of
#                     values on redis), SET then GET
#   W4  many clients: -c 1000 -P 1, N =  200,000 per run, GET only
#   W5  split MGET:   -c 50 -P 1,  N =   200,000 per run, `MGET web:R tok:R web:R ...` (10
#                     keys, each __rand_int__ drawn on its own), against direct (all keys on
#                     one redis-server, for reference) and turnout-split, which routes web:
#                     to redis "legacy" and tok: to redis "second" and merges the two replies
#   N1  namespaces:   W1's command line against turnout (3 namespaces) and turnout-ns1000
#                     (1,000 namespaces with distinct prefixes; W1's web: keys are in one)
#   S1  shadow:       W1's command line (-c 50 -P 16, N1, web: keys) against turnout in
#                     direct mode and against turnout-shadow, whose namespaces hit by the keys
#                     are in shadow mode (sample 1.0, writes false) towards the endpoint "new",
#                     a fresh redis-server that nothing writes to: a shadowed GET of a prefilled
#                     key compares the value with nil (a mismatch), which is still a full
#                     comparison. SETs are not mirrored (writes false). After each shadow-mode
#                     run the script waits for the shadow queues to drain (bounded), then reads
#                     the run's outcomes from GET /v1/shadow and the processes' CPU time.
# N of W1, W2 and S1 is sized for runs of roughly 2-7 s each on a 2-core machine (twemproxy
# is the slowest target on W1, turnout on W2); with every workload, 5 rounds and --control
# the script took about 12 minutes there, the release build included.
# On a noisy machine prefer more rounds over larger N: the median absorbs bursts, and the
# interval narrows (9 rounds: [2nd, 8th] of 9 at 96%). Shorter runs did not help: 15 rounds
# of a third of N gave single-round control ratios of 0.70-1.64 and intervals as wide.
CLIENTS="${BENCH_CLIENTS:-50}"
CLIENTS3="${BENCH_CLIENTS3:-10}"
CLIENTS4="${BENCH_CLIENTS4:-1000}"
KEYSPACE="${BENCH_KEYSPACE:-100000}"
KEYSPACE3="${BENCH_KEYSPACE3:-1000}"
VALUE_SIZE="${BENCH_VALUE_SIZE:-64}"
VALUE_SIZE3="${BENCH_VALUE_SIZE3:-65536}"
NAMESPACES_MANY="${BENCH_NAMESPACES:-1000}"
N1="${BENCH_N1:-1000000}"
N2="${BENCH_N2:-200000}"
N3="${BENCH_N3:-50000}"
N4="${BENCH_N4:-200000}"
N5="${BENCH_N5:-200000}"
if [[ $QUICK -eq 1 ]]; then
    N1="${BENCH_N1:-100000}"
    N2="${BENCH_N2:-20000}"
    N3="${BENCH_N3:-5000}"
    N4="${BENCH_N4:-20000}"
    N5="${BENCH_N5:-20000}"
    KEYSPACE="${BENCH_KEYSPACE:-10000}"
    KEYSPACE3="${BENCH_KEYSPACE3:-100}"
    ROUNDS=1
fi
RUN_TIMEOUT="${BENCH_RUN_TIMEOUT:-300}"
SKIP_TURNOUT="${BENCH_SKIP_TURNOUT:-0}"
[[ "$SKIP_TURNOUT" == "0" || -z "$SKIP_TURNOUT" ]] && SKIP_TURNOUT=0 || SKIP_TURNOUT=1
SKIP_SHADOW="${BENCH_SKIP_SHADOW:-0}"
[[ "$SKIP_SHADOW" == "0" || -z "$SKIP_SHADOW" ]] && SKIP_SHADOW=0 || SKIP_SHADOW=1
SHADOW_SEED="${BENCH_SHADOW_SEED:-0}"
[[ "$SHADOW_SEED" == "0" || -z "$SHADOW_SEED" ]] && SHADOW_SEED=0 || SHADOW_SEED=1
[[ $SKIP_TURNOUT -eq 1 ]] && SKIP_SHADOW=1
# S1's shadow mode, as sent to PUT /v1/routes/NAMESPACE; the target ratio it is reported against.
SHADOW_ENDPOINT="new"
SHADOW_SAMPLE="1.0"
SHADOW_TARGET_RATIO="0.75"
# N1: the issue's bound, 1,000 namespaces cost at most 10% of W1's throughput.
NAMESPACES_TARGET_RATIO="0.90"
# The issue's targets for W1-W4, turnout's ops/s over direct's and over twemproxy's:
# WORKLOAD:AGAINST_DIRECT:AGAINST_TWEMPROXY.
RATIO_TARGETS="W1:0.7:1.3 W2:0.95:1.1 W3:0.7:1.0 W4:0.9:1.0"

# CPU placement: command prefixes for the Redis servers, the proxies and the load generator.
PIN_REDIS=(); PIN_PROXY=(); PIN_LOAD=()
case "$PLACEMENT" in
    shared) ;;
    split|sidecar)
        command -v taskset >/dev/null 2>&1 || { echo "bench.sh: --placement $PLACEMENT needs taskset (util-linux)" >&2; exit 2; }
        NCPU="$(nproc)"
        (( NCPU >= 2 )) || { echo "bench.sh: --placement $PLACEMENT needs at least 2 CPUs (nproc: $NCPU)" >&2; exit 2; }
        CPU_LAST="$((NCPU - 1))"; CPU_REST="0-$((NCPU - 2))"; (( NCPU == 2 )) && CPU_REST=0
        if [[ "$PLACEMENT" == split ]]; then
            PIN_REDIS=(taskset -c "$CPU_REST"); PIN_PROXY=(taskset -c "$CPU_REST"); PIN_LOAD=(taskset -c "$CPU_LAST")
        else
            PIN_REDIS=(taskset -c "$CPU_LAST"); PIN_PROXY=(taskset -c "$CPU_REST"); PIN_LOAD=(taskset -c "$CPU_REST")
        fi ;;
    *) echo "bench.sh: --placement must be shared, split or sidecar (got '$PLACEMENT')" >&2; exit 2 ;;
esac

for v in CLIENTS CLIENTS3 CLIENTS4 KEYSPACE KEYSPACE3 VALUE_SIZE VALUE_SIZE3 NAMESPACES_MANY N1 N2 N3 N4 N5 RUN_TIMEOUT; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: $v must be a positive integer (got '${!v}')" >&2; exit 2; }
done
(( VALUE_SIZE3 <= 131000 )) || { echo "bench.sh: BENCH_VALUE_SIZE3 must be at most 131000 (one argv string)" >&2; exit 2; }
(( NAMESPACES_MANY >= 3 && NAMESPACES_MANY <= 65534 )) || { echo "bench.sh: BENCH_NAMESPACES must be in 3..65534" >&2; exit 2; }

ALL_WORKLOADS="W1 W2 W3 W4 W5 N1 S1"
SELECTED="${BENCH_WORKLOADS:-$ALL_WORKLOADS}"
SELECTED="${SELECTED//,/ }"
for w in $SELECTED; do
    [[ " $ALL_WORKLOADS " == *" $w "* ]] || { echo "bench.sh: unknown workload '$w' in BENCH_WORKLOADS (known: $ALL_WORKLOADS)" >&2; exit 2; }
done
selected() { [[ " $SELECTED " == *" $1 "* ]]; }

if [[ $SKIP_TURNOUT -eq 1 ]]; then CMP_TARGETS="direct,twemproxy"; else CMP_TARGETS="direct,turnout,twemproxy"; fi
# --control: turnout-again joins the targets of W1-W4.
CONTROL_TARGET=""; [[ $CONTROL -eq 1 && $SKIP_TURNOUT -eq 0 ]] && CONTROL_TARGET=",turnout-again"
# One line per workload, fields separated by spaces:
#   name clients pipeline requests keyspace value_size key_prefix(es, "+" between) commands targets
# commands and targets are comma-separated, in the order they run each round.
WORKLOADS=()
# W2 and W4 also run mux-relay (ceiling of a multiplexing proxy), W1 and W3 the relay (ceiling
# of a user-space hop), when turnout is built.
MUX_TARGETS="$CMP_TARGETS"; [[ $SKIP_TURNOUT -eq 0 ]] && MUX_TARGETS="$CMP_TARGETS,mux-relay"
RELAY_TARGETS="$CMP_TARGETS"; [[ $SKIP_TURNOUT -eq 0 ]] && RELAY_TARGETS="$CMP_TARGETS,relay"
selected W1 && WORKLOADS+=("W1 $CLIENTS 16 $N1 $KEYSPACE $VALUE_SIZE web: SET,GET $RELAY_TARGETS$CONTROL_TARGET")
selected W2 && WORKLOADS+=("W2 $CLIENTS 1 $N2 $KEYSPACE $VALUE_SIZE session: SET,GET $MUX_TARGETS$CONTROL_TARGET")
selected W3 && WORKLOADS+=("W3 $CLIENTS3 1 $N3 $KEYSPACE3 $VALUE_SIZE3 impact: SET,GET $RELAY_TARGETS$CONTROL_TARGET")
selected W4 && WORKLOADS+=("W4 $CLIENTS4 1 $N4 $KEYSPACE $VALUE_SIZE tok: GET $MUX_TARGETS$CONTROL_TARGET")
if [[ $SKIP_TURNOUT -eq 0 ]]; then
    selected W5 && WORKLOADS+=("W5 $CLIENTS 1 $N5 $KEYSPACE $VALUE_SIZE web:+tok: MGET direct,turnout-split")
    selected N1 && WORKLOADS+=("N1 $CLIENTS 16 $N1 $KEYSPACE $VALUE_SIZE web: SET,GET turnout,turnout-ns1000")
fi
[[ $SKIP_SHADOW -eq 1 ]] || ! selected S1 || WORKLOADS+=("S1 $CLIENTS 16 $N1 $KEYSPACE $VALUE_SIZE web: SET,GET turnout,turnout-shadow")
[[ ${#WORKLOADS[@]} -gt 0 ]] || { echo "bench.sh: no workload left to run (BENCH_WORKLOADS='$SELECTED')" >&2; exit 2; }
has_workload() { local w; for w in "${WORKLOADS[@]}"; do [[ "${w%% *}" == "$1" ]] && return 0; done; return 1; }
TARGETS=()   # every target of any workload, in first-use order
MAX_CLIENTS_USED=0
for w in "${WORKLOADS[@]}"; do
    read -r _ wclients _ _ _ _ _ _ wtargets <<<"$w"
    (( wclients > MAX_CLIENTS_USED )) && MAX_CLIENTS_USED=$wclients
    IFS=, read -r -a wt <<<"$wtargets"
    for t in "${wt[@]}"; do [[ " ${TARGETS[*]} " == *" $t "* ]] || TARGETS+=("$t"); done
done
has_target() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
has_workload S1 || SKIP_SHADOW=1

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Prerequisites

find_nutcracker() {
    if command -v nutcracker >/dev/null 2>&1; then command -v nutcracker
    elif [[ -x /usr/sbin/nutcracker ]]; then echo /usr/sbin/nutcracker
    else return 1
    fi
}

missing_pkgs=()
[[ -z "$REPORT_FROM" ]] || SKIP_TURNOUT=1
if [[ -n "$REPORT_FROM" ]]; then
    command -v python3 >/dev/null 2>&1 || missing_pkgs+=(python3)
else
    command -v redis-server >/dev/null 2>&1 || missing_pkgs+=(redis-server)
    command -v redis-benchmark >/dev/null 2>&1 || missing_pkgs+=(redis-tools)
    find_nutcracker >/dev/null || missing_pkgs+=(nutcracker)
    command -v python3 >/dev/null 2>&1 || missing_pkgs+=(python3)
    command -v timeout >/dev/null 2>&1 || missing_pkgs+=(coreutils)
fi
if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
    if [[ $INSTALL -eq 1 ]]; then
        sudo_cmd=()
        [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
        log "installing: ${missing_pkgs[*]}"
        "${sudo_cmd[@]}" apt-get update
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing_pkgs[@]}"
    else
        echo "bench.sh: missing tools. Install them with:" >&2
        echo "    sudo apt-get install -y ${missing_pkgs[*]}" >&2
        echo "(or rerun with --install)" >&2
        exit 1
    fi
fi
if [[ $SKIP_TURNOUT -eq 0 ]] && ! command -v cargo >/dev/null 2>&1; then
    echo "bench.sh: cargo not found. Install a Rust toolchain (>= 1.80) with rustup:" >&2
    echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
    echo "(Debian's own 'cargo' package is too old for turnout), or set BENCH_SKIP_TURNOUT=1." >&2
    exit 1
fi
NUTCRACKER="$(find_nutcracker || true)"
CLK_TCK="$(getconf CLK_TCK)"

# File descriptors: with -c C through turnout, turnout holds C client sockets plus C upstream
# sockets (one link per session and endpoint), and redis-server C more. The servers inherit
# this limit; redis-server also gets --maxclients for it, turnout's default max_clients
# (10,000) already allows it, and nutcracker has no limit of its own beyond file descriptors.
NOFILE_NEED=$(( 2 * MAX_CLIENTS_USED + 1024 ))
REDIS_MAXCLIENTS=$(( MAX_CLIENTS_USED + 512 > 10000 ? MAX_CLIENTS_USED + 512 : 10000 ))
[[ -n "$REPORT_FROM" ]] || raise_nofile "$NOFILE_NEED" || exit 1

# ---------------------------------------------------------------------------------------------
# Build

TURNOUT_BIN=""
if [[ $SKIP_TURNOUT -eq 0 ]]; then
    log "building turnout and the relays: cargo build --release --bins --example relay --example mux_relay"
    (cd "$ROOT" && cargo build --release --bins --example relay --example mux_relay) >&2 || die "cargo build --release failed"
    TURNOUT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/turnout"
    [[ "$TURNOUT_BIN" = /* ]] || TURNOUT_BIN="$ROOT/$TURNOUT_BIN"
    [[ -x "$TURNOUT_BIN" ]] || die "built, but $TURNOUT_BIN is missing"
    RELAY_BIN="$(dirname "$TURNOUT_BIN")/examples/relay"
    [[ -x "$RELAY_BIN" ]] || die "built, but $RELAY_BIN is missing"
    MUX_RELAY_BIN="$(dirname "$TURNOUT_BIN")/examples/mux_relay"
    [[ -x "$MUX_RELAY_BIN" ]] || die "built, but $MUX_RELAY_BIN is missing"
fi

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup

TMP="$(mktemp -d "${TMPDIR:-/tmp}/turnout-bench.XXXXXX")"
# shellcheck source=lib/bench-cleanup.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-cleanup.sh"

# ---------------------------------------------------------------------------------------------
# Python helper (stdlib only): free ports, PING, prefill, sanity checks, the final report.

HELPER="$TMP/bench_helper.py"
cat >"$HELPER" <<'PY'
import csv, json, math, os, socket, statistics, sys

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
    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line
    def reply(self):
        line = self._line()
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
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError("connection closed")
                self.buf += chunk
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
        c = Conn(port, timeout=1.0)
        ok = c.cmd("PING") == "PONG"
    except Exception:
        ok = False
    sys.exit(0 if ok else 1)

def cmd_flush(port):
    Conn(port, timeout=60.0).cmd("FLUSHALL")

def cmd_prefill(port, keyspace, value_size, *prefixes):
    # Writes PREFIX%012d for every i in [0, keyspace) — the keys redis-benchmark -r generates.
    c = Conn(port, timeout=60.0)
    value = b"x" * int(value_size)
    keyspace = int(keyspace)
    for p in prefixes:
        batch = max(1, min(10000, (4 << 20) // max(1, int(value_size))))
        for start in range(0, keyspace, batch):
            end = min(start + batch, keyspace)
            c.s.sendall(b"".join(resp("SET", ("%s%012d" % (p, i)).encode(), value) for i in range(start, end)))
            for _ in range(start, end):
                if c.reply() != "OK":
                    raise SystemExit("prefill: unexpected reply")
    print(c.cmd("DBSIZE"))

def cmd_sanity(target, port, direct_port, prefix, value_size):
    # Through the target: GET a prefilled key, SET a fresh key and read it back directly.
    t, d = Conn(port), Conn(direct_port)
    expect = "x" * int(value_size)
    got = t.cmd("GET", "%s%012d" % (prefix, 0))
    if got != expect:
        raise SystemExit("sanity(%s): GET %s%012d returned %r" % (target, prefix, 0, got))
    key = "%ssanity:%s" % (prefix, target)
    if t.cmd("SET", key, target) != "OK":
        raise SystemExit("sanity(%s): SET failed" % target)
    if d.cmd("GET", key) != target:
        raise SystemExit("sanity(%s): key written through %s not found on redis" % (target, target))
    d.cmd("DEL", key)

def cmd_sanity_mget(target, port, *prefixes):
    # Through the target: SET 10 keys alternating over PREFIXES with distinct values, then one
    # MGET of them must return the values in the client's key order (a split MGET's merge).
    t = Conn(port)
    keys = ["%ssanity-mget:%s:%d" % (prefixes[i % len(prefixes)], target, i) for i in range(10)]
    for i, k in enumerate(keys):
        if t.cmd("SET", k, "v%d" % i) != "OK":
            raise SystemExit("sanity_mget(%s): SET %s failed" % (target, k))
    t.s.sendall(resp("MGET", *keys))
    line = t._line()
    if line != b"*10":
        raise SystemExit("sanity_mget(%s): MGET header %r" % (target, line))
    got = [t.reply() for _ in keys]
    if got != ["v%d" % i for i in range(10)]:
        raise SystemExit("sanity_mget(%s): MGET returned %r" % (target, got))
    for k in keys:
        t.cmd("DEL", k)

def admin(port, method, path, body=None):
    # One call to turnout's admin API; a non-2xx answer stops the script with its body.
    import urllib.error, urllib.request
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path), data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise SystemExit("admin %s %s: HTTP %d: %s" % (method, path, e.code, e.read().decode(errors="replace")))

def cmd_set_shadow(admin_port, key_prefix, endpoint, sample, out_json):
    # Puts the namespace(s) KEY_PREFIX's keys fall in (longest matching prefix, else
    # "default") in shadow mode towards ENDPOINT, checks the route table says so, saves it.
    doc = admin(admin_port, "GET", "/v1/routes")
    best, best_len = "default", -1
    for r in doc["routes"]:
        for p in r.get("prefixes") or []:
            if key_prefix.startswith(p) and len(p) > best_len:
                best, best_len = r["namespace"], len(p)
    change = {"mode": "shadow", "shadow": endpoint, "sample": float(sample), "writes": False,
              "reason": "bench"}
    admin(admin_port, "PUT", "/v1/routes/%s" % best, change)
    doc = admin(admin_port, "GET", "/v1/routes")
    route = next(r for r in doc["routes"] if r["namespace"] == best)
    if (route.get("mode"), route.get("shadow"), route.get("sample"), route.get("writes")) != ("shadow", endpoint, float(sample), False):
        raise SystemExit("set_shadow: route of %s is %r after the change" % (best, route))
    json.dump({"request": change, "namespaces": [best], "routes": doc}, open(out_json, "w"), indent=2)
    print(best)

def shadow_totals(admin_port):
    doc = admin(admin_port, "GET", "/v1/shadow")
    keys = ("match", "mismatch", "shadow_error", "dropped", "mirrored")
    tot = [sum(int(n["counts"].get(k, 0)) for n in doc["namespaces"]) for k in keys]
    return tot, int(doc.get("queued_bytes", 0)), doc

def cmd_shadow_counts(admin_port):
    # match mismatch shadow_error dropped mirrored, summed over namespaces.
    print(" ".join(map(str, shadow_totals(admin_port)[0])))

def cmd_shadow_settle(admin_port, timeout_s):
    # Waits until nothing is queued for the shadow and the counts stop moving (bounded), then
    # prints the counts like shadow_counts, the seconds waited and 1 if settled (0 if not).
    import time
    t0 = time.monotonic()
    prev, settled = None, 0
    while True:
        tot, queued, _ = shadow_totals(admin_port)
        if queued == 0 and tot == prev:
            settled = 1
            break
        if time.monotonic() - t0 > float(timeout_s):
            break
        prev = tot
        time.sleep(0.05)
    print(" ".join(map(str, tot)), "%.2f" % (time.monotonic() - t0), settled)

def cmd_shadow_doc(admin_port, out_json):
    json.dump(shadow_totals(admin_port)[2], open(out_json, "w"), indent=2)

def fmt_int(x):
    return "{:,}".format(int(round(x))) if x is not None else "—"

def fmt_ratio(a, b):
    return "%.2f" % (a / b) if a and b else "—"

SHADOW_KEYS = ("match", "mismatch", "shadow_error", "dropped", "mirrored")

# Least coverage of a median's interval for the report to call a target met or missed: 5
# rounds give 94% ([min, max]); 3 rounds only 75%, reported as "too few rounds".
VERDICT_COVERAGE = 0.9

def median_interval(xs, level=0.95):
    # A distribution-free confidence interval for the median of XS (order statistics, as in
    # the sign test): [x_(k), x_(n+1-k)] for the largest k whose coverage,
    # 1 - 2 P(Binomial(n, 1/2) < k), is at least LEVEL. With too few values for LEVEL
    # (n <= 5 for 95%) it is [min, max] with the coverage that has. Returns (lo, hi, coverage).
    n = len(xs)
    if n == 0:
        return None
    s = sorted(xs)
    k, coverage = 1, 1 - 2 * 0.5 ** n
    for j in range(2, n // 2 + 1):
        c = 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2 ** n
        if c < level:
            break
        k, coverage = j, c
    return s[k - 1], s[n - k], coverage

def cmd_selftest():
    # The report's statistics against values worked out by hand, so that a broken interval
    # fails here, before a run of many minutes, not in its verdicts.
    def close(a, b):
        return abs(a - b) < 1e-9
    assert median_interval([]) is None
    lo, hi, c = median_interval([1.0])
    assert (lo, hi) == (1.0, 1.0) and close(c, 0.0)
    lo, hi, c = median_interval([5, 1, 4, 2, 3])
    assert (lo, hi) == (1, 5) and close(c, 1 - 2 / 32), (lo, hi, c)
    lo, hi, c = median_interval(list(range(9, 0, -1)))
    assert (lo, hi) == (2, 8) and close(c, 1 - 2 * 10 / 512), (lo, hi, c)
    lo, hi, c = median_interval(list(range(15)))
    assert (lo, hi) == (3, 11) and close(c, 1 - 2 * 576 / 32768), (lo, hi, c)
    assert median_interval(list(range(9)), level=0.99)[:2] == (0, 8)

def with_ratio_targets(meta, spec):
    # META with the W1-W4 targets of SPEC ("W1:0.7:1.3 ...": workload, against direct, against
    # twemproxy) unless it has its own (a results.json written since they are recorded).
    meta.setdefault("ratio_targets", {w: {"direct": float(d), "twemproxy": float(t)}
                                      for w, d, t in (x.split(":") for x in spec.split())})
    return meta

def cmd_rerender(results_json, out_json, out_md, ratio_targets):
    # The report again, from what an earlier run wrote to results.json: its runs and metadata.
    with open(results_json) as f:
        earlier = json.load(f)
    write_report(earlier["runs"], with_ratio_targets(earlier["meta"], ratio_targets), out_json, out_md)

def cmd_report(runs_tsv, meta_json, out_json, out_md, ratio_targets):
    meta = with_ratio_targets(json.load(open(meta_json)), ratio_targets)
    runs = []
    with open(runs_tsv) as f:
        for line in f:
            (rnd, wl, target, command, n, wall, settle, proxy_ticks, proxy_user_ticks, redis_ticks, shadow_redis_ticks,
             shadow, started_at, other_ticks, window_ticks, busy_ticks, csvline) = line.rstrip("\n").split("\t", 16)
            row = next(csv.reader([csvline]))
            rec = {
                "round": int(rnd), "workload": wl, "target": target, "command": command,
                "requests": int(n), "wall_seconds": float(wall),
                "rps": float(row[1]), "avg_latency_ms": float(row[2]), "p50_latency_ms": float(row[4]),
                "p99_latency_ms": float(row[6]), "max_latency_ms": float(row[7]),
                "proxy_cpu_seconds": (int(proxy_ticks) / meta["clk_tck"]) if proxy_ticks != "-" else None,
                # Of which in user space (utime alone): the rest is the kernel's, system calls on
                # loopback TCP for the most part.
                "proxy_user_cpu_seconds": (int(proxy_user_ticks) / meta["clk_tck"]) if proxy_user_ticks != "-" else None,
                "redis_cpu_seconds": int(redis_ticks) / meta["clk_tck"],
                "shadow_redis_cpu_seconds": int(shadow_redis_ticks) / meta["clk_tck"],
                "started_at": started_at,
                # CPU other programs used during the run, as a share of all the machine's CPUs.
                "other_programs_cpu_share": (int(other_ticks) / int(window_ticks)) if int(window_ticks) else None,
                # CPU ticks not idle during the run (every program, ours included, and the
                # kernel's irq and softirq time, where loopback TCP is largely accounted).
                "machine_busy_share": (int(busy_ticks) / int(window_ticks)) if int(window_ticks) else None,
                "machine_cpu_seconds": int(busy_ticks) / meta["clk_tck"],
            }
            if shadow != "-":
                rec["shadow_outcomes"] = dict(zip(SHADOW_KEYS, map(int, shadow.split(":"))))
                rec["shadow_drain_seconds"] = float(settle)
            runs.append(rec)
    write_report(runs, meta, out_json, out_md)

def write_report(runs, meta, out_json, out_md):
    targets = meta["targets"]
    workloads = [w["name"] for w in meta["workloads"]]
    # W1-W4: direct vs turnout vs twemproxy; W5: direct vs turnout-split. N1: turnout with 3
    # namespaces vs 1,000. S1: turnout direct mode vs shadow mode.
    wmetas = {w["name"]: w for w in meta["workloads"]}
    cmp_workloads = [w["name"] for w in meta["workloads"] if "direct" in w["targets"]]
    ns_workloads = [w["name"] for w in meta["workloads"] if "turnout-ns1000" in w["targets"]]
    shadow_workloads = [w["name"] for w in meta["workloads"] if "turnout-shadow" in w["targets"]]
    def wcmds(wl):
        return wmetas[wl]["commands"]
    def tt(wl):
        # The turnout instance of workload WL's row in the main tables.
        return wmetas[wl].get("turnout_target") or "turnout"
    med = {}
    for wl in workloads:
        for cmd in wcmds(wl):
            for t in targets:
                rs = [r for r in runs if r["workload"] == wl and r["command"] == cmd and r["target"] == t]
                if rs:
                    med[(wl, cmd, t)] = {
                        "rounds": len(rs),
                        "rps": statistics.median(r["rps"] for r in rs),
                        "p50_latency_ms": statistics.median(r["p50_latency_ms"] for r in rs),
                        "p99_latency_ms": statistics.median(r["p99_latency_ms"] for r in rs),
                    }
    cpu = {}
    for wl in workloads:
        for t in targets:
            rs = [r for r in runs if r["workload"] == wl and r["target"] == t]
            ops = sum(r["requests"] for r in rs)
            if not ops:
                continue
            proxy = [r["proxy_cpu_seconds"] for r in rs]
            # Runs recorded before the user/system split (results.json of older runs) lack it.
            proxy_user = [r.get("proxy_user_cpu_seconds") for r in rs]
            busy = sorted(r["machine_busy_share"] for r in rs if r["machine_busy_share"] is not None)
            cpu[(wl, t)] = {
                "operations": ops,
                "machine_busy_share_median": statistics.median(busy) if busy else None,
                "machine_cpu_seconds_per_million_ops": sum(r["machine_cpu_seconds"] for r in rs) / ops * 1e6,
                "proxy_cpu_seconds_per_million_ops": (sum(proxy) / ops * 1e6) if None not in proxy else None,
                "proxy_user_cpu_seconds_per_million_ops": (sum(proxy_user) / ops * 1e6) if None not in proxy_user else None,
                "redis_cpu_seconds_per_million_ops": sum(r["redis_cpu_seconds"] for r in rs) / ops * 1e6,
                "shadow_redis_cpu_seconds_per_million_ops": sum(r["shadow_redis_cpu_seconds"] for r in rs) / ops * 1e6,
            }

    def rps(wl, cmd, t):
        m = med.get((wl, cmd, t))
        return m["rps"] if m else None

    def ratios_by_round(wl, cmd, num, den):
        # ops/s of target NUM over target DEN, round by round (rounds where both ran).
        out = []
        for rnd in sorted({r["round"] for r in runs if r["workload"] == wl}):
            x = [r["rps"] for r in runs if r["workload"] == wl and r["command"] == cmd and r["round"] == rnd and r["target"] == num]
            y = [r["rps"] for r in runs if r["workload"] == wl and r["command"] == cmd and r["round"] == rnd and r["target"] == den]
            if x and y:
                out.append(x[0] / y[0])
        return out

    def interval_of(xs):
        # The per-round ratios XS: their median and the interval for it (see median_interval).
        iv = median_interval(xs)
        if iv is None:
            return {"per_round_median": None, "interval": None, "coverage": None}
        return {"per_round_median": statistics.median(xs), "interval": [iv[0], iv[1]], "coverage": iv[2]}

    def judged(xs, target):
        # interval_of(XS), and whether the run resolves TARGET ("—" when there is none).
        j = interval_of(xs)
        if target is None:
            verdict = "—"
        elif j["interval"] is None:
            verdict = "no data"
        elif j["coverage"] < VERDICT_COVERAGE:
            verdict = "too few rounds"
        else:
            lo, hi = j["interval"]
            verdict = "met" if lo >= target else ("missed" if hi < target else "not resolved")
        return dict(j, verdict=verdict)

    def fmt_proxy_cpu(wl, t, user_label=""):
        # CPU s per million operations of target T's proxy process in WL, its user-space share
        # in brackets when recorded.
        v = cpu.get((wl, t), {})
        total, user = v.get("proxy_cpu_seconds_per_million_ops"), v.get("proxy_user_cpu_seconds_per_million_ops")
        if total is None:
            return "—"
        return "%.3f" % total + (" (%.3f%s)" % (user, user_label) if user is not None else "")

    def fmt_interval(j):
        if j["interval"] is None:
            return "—"
        return "%.2f–%.2f (%.0f%%)" % (j["interval"][0], j["interval"][1], 100 * j["coverage"])

    def fmt_median_interval(j):
        if j["per_round_median"] is None:
            return "—"
        return "%.2f, %s" % (j["per_round_median"], fmt_interval(j))

    md = []
    md.append("## turnout benchmark (scripts/bench.sh)")
    md.append("")
    md.append("- date: %s" % meta["date"])
    md.append("- machine: %s, %s CPUs (nproc), kernel %s; 1-min load average %s when the script started (before its build)"
              % (meta["cpu_model"], meta["nproc"], meta["kernel"], meta["loadavg_at_start"]))
    md.append("- versions: %s; %s; %s; turnout %s" % (meta["redis_version"], meta["nutcracker_version"], meta["rustc_version"], meta["turnout_version"]))
    md.append("- rounds: %d, targets interleaved (%s), each round starting one target later than the one before; "
              "median ops/s per cell" % (meta["rounds"], " ".join(targets)))
    pl = meta["placement"]
    if pl["name"] == "shared":
        md.append("- placement `shared`: redis-server, the proxy and redis-benchmark all share this machine's CPUs, "
                  "placed by the scheduler (loopback TCP)")
    else:
        md.append("- placement `%s` (loopback TCP): redis-server `%s`, the proxies `%s`, redis-benchmark `%s`" % (
            pl["name"], pl["redis_server"] or "any CPU", pl["proxies"] or "any CPU", pl["redis_benchmark"] or "any CPU"))
    shares = sorted(r["other_programs_cpu_share"] for r in runs if r["other_programs_cpu_share"] is not None)
    if shares:
        busy = [r for r in runs if (r["other_programs_cpu_share"] or 0) > 0.05]
        md.append("- CPU taken by other programs during a timed run, share of the machine: median %.1f%%, max %.1f%%; "
                  "%d of %d runs above 5%%%s" % (
                      100 * statistics.median(shares), 100 * shares[-1], len(busy), len(runs),
                      (" (" + ", ".join("%s %s %s r%d %.0f%%" % (r["workload"], r["command"], r["target"], r["round"],
                                                                  100 * r["other_programs_cpu_share"]) for r in busy[:12])
                       + (", …" if len(busy) > 12 else "") + ")") if busy else ""))
    md.append("- twemproxy: one pool, `hash: fnv1a_64`, `distribution: ketama`, one server, defaults otherwise")
    md.append("- every key a workload reads is prefilled with its value size, so every GET hits")
    md.append("- open files (`ulimit -n`) %s, redis-server `--maxclients %d`, turnout `max_clients` default"
              % (meta["nofile_limit"], meta["redis_maxclients"]))
    for w in meta["workloads"]:
        md.append("- %s: `%s`, values of %d bytes (targets: %s)" % (w["name"], w["command_line"], w["value_size"], ", ".join(w["targets"])))
    if any(tt(wl) == "turnout-split" for wl in cmp_workloads):
        md.append("- W5's turnout column is turnout-split, a second turnout with token-cache (`tok:`) on a second "
                  "redis-server, so each MGET is split in two and merged; direct sends the same MGET to one redis-server "
                  "holding all keys; twemproxy is not compared (one pool). One operation is one 10-key MGET; "
                  "W5's redis-server CPU via turnout is both redis-servers together")
    md.append("")
    md.append("| workload | command | direct ops/s | turnout ops/s | twemproxy ops/s | turnout/direct | turnout/twemproxy |")
    md.append("|---|---|---:|---:|---:|---:|---:|")
    for wl in cmp_workloads:
        for cmd in wcmds(wl):
            d, t, c = rps(wl, cmd, "direct"), rps(wl, cmd, tt(wl)), rps(wl, cmd, "twemproxy")
            md.append("| %s | %s | %s | %s | %s | %s | %s |" % (wl, cmd, fmt_int(d), fmt_int(t), fmt_int(c), fmt_ratio(t, d), fmt_ratio(t, c)))
    md.append("")
    target_rows = []
    ratio_targets = meta.get("ratio_targets") or {}
    judged_workloads = [wl for wl in cmp_workloads if wl in ratio_targets and tt(wl) == "turnout"]
    if judged_workloads:
        md.append("### Targets, and what this run resolves")
        md.append("")
        md.append("Each round gives one ratio of turnout to the other target, measured minutes apart at most. "
                  "The interval is a distribution-free confidence interval for the median of those per-round "
                  "ratios (order statistics, as in the sign test; its coverage in brackets). A target is `met` "
                  "when the whole interval lies at or above it, `missed` when the whole interval lies below it, "
                  "and `not resolved` by this run otherwise; below %.0f%% coverage (fewer than 5 rounds) the run "
                  "gives no verdict (`too few rounds`)." % (100 * VERDICT_COVERAGE))
        md.append("")
        md.append("| workload | command | against | target | ratio of medians | median of per-round ratios | interval | verdict |")
        md.append("|---|---|---|---:|---:|---:|---|---|")
        for wl in judged_workloads:
            for cmd in wcmds(wl):
                for den in ("direct", "twemproxy"):
                    goal = ratio_targets[wl].get(den)
                    if goal is None or rps(wl, cmd, den) is None:
                        continue
                    j = judged(ratios_by_round(wl, cmd, "turnout", den), goal)
                    t, d = rps(wl, cmd, "turnout"), rps(wl, cmd, den)
                    target_rows.append(dict(workload=wl, command=cmd, against=den, target=goal,
                                            ratio_of_medians=(t / d) if t and d else None, **j))
                    md.append("| %s | %s | %s | ≥ %s | %s | %s | %s | %s |" % (
                        wl, cmd, den, goal, fmt_ratio(t, d),
                        "%.2f" % j["per_round_median"] if j["per_round_median"] is not None else "—",
                        fmt_interval(j), j["verdict"]))
        md.append("")
    md.append("Latency, median over rounds of redis-benchmark's p50 / p99 (ms):")
    md.append("")
    md.append("| workload | command | direct | turnout | twemproxy |")
    md.append("|---|---|---:|---:|---:|")
    for wl in cmp_workloads:
        for cmd in wcmds(wl):
            cells = []
            for t in ("direct", tt(wl), "twemproxy"):
                m = med.get((wl, cmd, t))
                cells.append("%.3f / %.3f" % (m["p50_latency_ms"], m["p99_latency_ms"]) if m else "—")
            md.append("| %s | %s | %s |" % (wl, cmd, " | ".join(cells)))
    md.append("")
    md.append("CPU seconds per million operations (utime+stime from /proc/PID/stat over all runs of the workload; "
              "for the proxies, of which in user space (utime) in brackets):")
    md.append("")
    md.append("| workload | turnout process | twemproxy process | redis-server (direct) | redis-server (via turnout) | redis-server (via twemproxy) |")
    md.append("|---|---:|---:|---:|---:|---:|")
    for wl in cmp_workloads:
        def c(t, k):
            v = cpu.get((wl, t), {}).get(k)
            return "%.3f" % v if v is not None else "—"
        md.append("| %s | %s | %s | %s | %s | %s |" % (
            wl, fmt_proxy_cpu(wl, tt(wl)), fmt_proxy_cpu(wl, "twemproxy"),
            c("direct", "redis_cpu_seconds_per_million_ops"), c(tt(wl), "redis_cpu_seconds_per_million_ops"),
            c("twemproxy", "redis_cpu_seconds_per_million_ops")))
    md.append("")
    md.append("The whole machine during the timed runs (/proc/stat, every tick not idle: all programs, "
              "redis-benchmark included, and the kernel's irq and softirq time): median share of all CPUs busy, "
              "and CPU seconds per million operations. "
              "A share near 100% means the run was bound by the machine's CPUs, so a target's ops/s follow "
              "the CPU all programs spend per operation through it:")
    md.append("")
    md.append("| workload | direct | turnout | twemproxy |")
    md.append("|---|---:|---:|---:|")
    for wl in cmp_workloads:
        cells = []
        for t in ("direct", tt(wl), "twemproxy"):
            v = cpu.get((wl, t), {})
            b, m = v.get("machine_busy_share_median"), v.get("machine_cpu_seconds_per_million_ops")
            cells.append("%.0f%% busy, %.2f s" % (100 * b, m) if b is not None and m is not None else "—")
        md.append("| %s | %s |" % (wl, " | ".join(cells)))
    md.append("")
    # Ceilings: programs that do less than any real proxy can (relay: bytes only, a connection
    # per client; mux-relay: one shared connection, requests only counted), judged against the
    # same targets as turnout, so a run can say whether a target lies beyond what such a hop
    # reaches on this machine, and how far turnout is from it.
    CEILINGS = [
        ("relay", "the ceiling of a user-space hop",
         "`relay` (examples/relay.rs) forwards bytes between each client and its own upstream connection "
         "with no RESP work at all (tokio `copy_bidirectional_with_sizes`, 128 KiB buffers, tokio's default "
         "worker threads): what any proxy pays to move these requests and replies through user space on this machine."),
        ("mux-relay", "the ceiling of a multiplexing proxy",
         "`mux-relay` (examples/mux_relay.rs) sends the requests of every client over one shared, pipelined "
         "upstream connection, as turnout does for stateless commands, and does nothing else: requests are "
         "only counted, replies only split by count and written to their client by the task that reads "
         "them, on one thread; no routing, classification, connection state, limits or metrics. What it "
         "reaches is about what any multiplexing proxy on tokio reaches on this machine."),
    ]
    ceiling_rows = []
    for prog, title, text in CEILINGS:
        pwls = [wl for wl in cmp_workloads if prog in wmetas[wl]["targets"]]
        if not pwls:
            continue
        md.append("### %s: %s" % ("/".join(pwls), title))
        md.append("")
        md.append(text + " Per-round medians, intervals and verdicts as for the targets above: the verdict "
                  "judges `%s` itself against turnout's target." % prog)
        md.append("")
        md.append("| workload | command | against | %s/against: median, interval | verdict (target) | turnout/%s: median, interval |" % (prog, prog))
        md.append("|---|---|---|---|---|---|")
        for wl in pwls:
            for cmd in wcmds(wl):
                jt = interval_of(ratios_by_round(wl, cmd, tt(wl), prog))
                for den in ("direct", "twemproxy"):
                    goal = ratio_targets.get(wl, {}).get(den)
                    xs = ratios_by_round(wl, cmd, prog, den)
                    jp = judged(xs, goal)
                    ceiling_rows.append({"program": prog, "workload": wl, "command": cmd, "against": den,
                                         "target": goal, "program_rps": rps(wl, cmd, prog), "against_rps": rps(wl, cmd, den),
                                         "turnout_rps": rps(wl, cmd, tt(wl)), "program_over_against": jp,
                                         "turnout_over_program": jt})
                    md.append("| %s | %s | %s | %s | %s | %s |" % (
                        wl, cmd, den, fmt_median_interval(jp),
                        "%s (%s)" % (jp["verdict"], goal) if goal is not None else "—", fmt_median_interval(jt)))
        md.append("")
        for wl in pwls:
            v = cpu.get((wl, prog), {})
            if v.get("proxy_cpu_seconds_per_million_ops") is None:
                continue
            md.append("- %s: %s process %s CPU s per million operations, turnout %s; machine %.0f%% busy." % (
                wl, prog, fmt_proxy_cpu(wl, prog, " in user space"), fmt_proxy_cpu(wl, tt(wl), " in user space"),
                100 * (v.get("machine_busy_share_median") or 0)))
            # Near fully busy, ops/s follow the CPU that all programs spend per operation: a
            # target's over another's is the ratio of ops/s that CPU allows.
            m = {t: cpu.get((wl, t), {}).get("machine_cpu_seconds_per_million_ops") for t in (prog, tt(wl), "direct", "twemproxy")}
            if all(m.values()):
                md.append("  The whole machine per million operations: %.2f CPU s through %s, %.2f through turnout, %.2f "
                          "direct, %.2f through twemproxy; the ratios that CPU alone allows: %s/direct %.2f, "
                          "%s/twemproxy %.2f, turnout/direct %.2f, turnout/twemproxy %.2f." % (
                              m[prog], prog, m[tt(wl)], m["direct"], m["twemproxy"],
                              prog, m["direct"] / m[prog], prog, m["twemproxy"] / m[prog],
                              m["direct"] / m[tt(wl)], m["twemproxy"] / m[tt(wl)]))
        md.append("")

    # --control: turnout against a second, identical turnout process (A/A). What separates
    # the two is the machine's noise alone, so its spread is the resolution of this run's ratios.
    control_rows = []
    control_workloads = [wl for wl in cmp_workloads if "turnout-again" in wmetas[wl]["targets"]]
    if control_workloads:
        md.append("### Control: turnout against itself")
        md.append("")
        md.append("`turnout-again` is a second turnout process with the same config as `turnout`. Nothing but the machine tells the two apart, so `again/turnout` shows how far a ratio of "
                  "identical programs strays from 1.00 in this run: a ratio of turnout to direct or twemproxy that lies "
                  "within that distance of its target is not resolved by the run. Per-round ratios of turnout to "
                  "twemproxy are given beside it for comparison.")
        md.append("")
        md.append("| workload | command | turnout ops/s | turnout-again ops/s | again/turnout | interval (per-round median) | per round | turnout/twemproxy per round |")
        md.append("|---|---|---:|---:|---:|---|---|---|")
        for wl in control_workloads:
            for cmd in wcmds(wl):
                a, b = rps(wl, cmd, "turnout"), rps(wl, cmd, "turnout-again")
                aa = ratios_by_round(wl, cmd, "turnout-again", "turnout")
                tw = ratios_by_round(wl, cmd, "turnout", "twemproxy")
                j = interval_of(aa)
                control_rows.append({"workload": wl, "command": cmd, "turnout_rps": a, "turnout_again_rps": b,
                                     "again_over_turnout": (b / a) if a and b else None,
                                     "per_round_again_over_turnout": aa,
                                     "interval": j["interval"], "coverage": j["coverage"],
                                     "per_round_turnout_over_twemproxy": tw})
                md.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    wl, cmd, fmt_int(a), fmt_int(b), fmt_ratio(b, a), fmt_interval(j),
                    " ".join("%.2f" % x for x in aa) or "—", " ".join("%.2f" % x for x in tw) or "—"))
        medians_aa = [r["again_over_turnout"] for r in control_rows if r["again_over_turnout"]]
        rounds_aa = [x for r in control_rows for x in r["per_round_again_over_turnout"]]
        intervals = [r["interval"] for r in control_rows if r["interval"]]
        if medians_aa and rounds_aa:
            md.append("")
            md.append("Median ratios of turnout-again to turnout: %.2f to %.2f (furthest from 1.00: %.2f); single rounds "
                      "%.2f to %.2f." % (min(medians_aa), max(medians_aa),
                                         max(abs(x - 1) for x in medians_aa), min(rounds_aa), max(rounds_aa)))
        if intervals:
            md.append("The intervals (as in the targets table) contain 1.00 in %d of %d rows: an interval that "
                      "excludes it here shows the interval claiming more than the machine resolves (at 95%% "
                      "coverage, about one row in twenty may by chance)."
                      % (sum(1 for lo, hi in intervals if lo <= 1.0 <= hi), len(intervals)))
        md.append("")

    ns_rows = []
    for wl in ns_workloads:
        wmeta = wmetas[wl]
        md.append("### %s: turnout with %d namespaces against turnout with 3" % (wl, meta["namespaces_many"]))
        md.append("")
        md.append("- same command line as W1 (`-c %d -P %d -n %d -r %d`, keys `%s…`), the two targets interleaved in every round"
                  % (wmeta["clients"], wmeta["pipeline"], wmeta["requests"], wmeta["keyspace"], wmeta["key_prefix"]))
        md.append("- `turnout`: the instance of the table above (namespaces web-cache, token-cache, impact)")
        md.append("- `turnout-ns1000`: a second turnout process, the same config plus namespaces `ns0003` … with prefixes "
                  "`ns0003:` … (%d namespaces, all on the same redis-server); the keys fall in web-cache"
                  % meta["namespaces_many"])
        md.append("")
        md.append("| workload | command | 3 namespaces ops/s | %d namespaces ops/s | ratio | per-round ratio | interval (per-round median) | p50 / p99 ms, 3 | p50 / p99 ms, %d | target | verdict |"
                  % (meta["namespaces_many"], meta["namespaces_many"]))
        md.append("|---|---|---:|---:|---:|---|---|---:|---:|---:|---|")
        for cmd in wcmds(wl):
            a, b = rps(wl, cmd, "turnout"), rps(wl, cmd, "turnout-ns1000")
            per_round = ratios_by_round(wl, cmd, "turnout-ns1000", "turnout")
            ratio = (b / a) if a and b else None
            lat = []
            for t in ("turnout", "turnout-ns1000"):
                m = med.get((wl, cmd, t))
                lat.append("%.3f / %.3f" % (m["p50_latency_ms"], m["p99_latency_ms"]) if m else "—")
            j = judged(per_round, meta["namespaces_target_ratio"])
            ns_rows.append({"workload": wl, "command": cmd, "namespaces": meta["namespaces_many"],
                            "three_namespaces_rps": a, "many_namespaces_rps": b, "many_over_three": ratio,
                            "per_round_many_over_three": per_round, "target_ratio": meta["namespaces_target_ratio"],
                            "meets_target": (ratio >= meta["namespaces_target_ratio"]) if ratio is not None else None,
                            "interval": j["interval"], "coverage": j["coverage"], "verdict": j["verdict"]})
            md.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | ≥ %s | %s |" % (
                wl, cmd, fmt_int(a), fmt_int(b), fmt_ratio(b, a), " ".join("%.2f" % x for x in per_round) or "—",
                fmt_interval(j), lat[0], lat[1], meta["namespaces_target_ratio"], j["verdict"]))
        def f3(v):
            return "%.3f" % v if v is not None else "—"
        md.append("")
        md.append("turnout CPU seconds per million operations in %s: 3 namespaces %s, %d namespaces %s" % (
            wl, f3(cpu.get((wl, "turnout"), {}).get("proxy_cpu_seconds_per_million_ops")), meta["namespaces_many"],
            f3(cpu.get((wl, "turnout-ns1000"), {}).get("proxy_cpu_seconds_per_million_ops"))))
        md.append("")

    shadow_rows = []
    for wl in shadow_workloads:
        wmeta = next(w for w in meta["workloads"] if w["name"] == wl)
        sm = meta.get("shadow_mode") or {}
        md.append("### %s: turnout in shadow mode against turnout in direct mode" % wl)
        md.append("")
        md.append("- same command line as W1 (`-c %d -P %d -n %d -r %d`, keys `%s…`), the two targets interleaved in every round"
                  % (wmeta["clients"], wmeta["pipeline"], wmeta["requests"], wmeta["keyspace"], wmeta["key_prefix"]))
        md.append("- `turnout`: the instance of the table above, every namespace in direct mode")
        md.append("- `turnout-shadow`: a second turnout process with the same config and its own fresh state file; "
                  "namespace(s) %s set with `PUT /v1/routes/NAMESPACE` `%s` before the first run"
                  % (", ".join("`%s`" % n for n in sm.get("namespaces", [])), json.dumps(sm.get("request", {}))))
        if meta.get("shadow_seeded"):
            md.append("- shadow endpoint `%s`: a second redis-server, prefilled with the same keys and values "
                      "(BENCH_SHADOW_SEED=1), so shadowed GETs compare equal; `[shadow]` settings: defaults"
                      % sm.get("request", {}).get("shadow", "?"))
        else:
            md.append("- shadow endpoint `%s`: a second redis-server, empty (writes are not mirrored), so a shadowed GET of a "
                      "prefilled key is compared and counts as a mismatch (value against nil); `[shadow]` settings: defaults"
                      % sm.get("request", {}).get("shadow", "?"))
        md.append("- outcomes from `GET /v1/shadow` (summed over namespaces) before each shadow-mode run and after it, "
                  "once the shadow queues had drained; CPU read after the drain too")
        md.append("")
        md.append("| workload | command | direct-mode ops/s | shadow-mode ops/s | shadow/direct | per-round shadow/direct | interval (per-round median) | target | verdict |")
        md.append("|---|---|---:|---:|---:|---|---|---:|---|")
        for cmd in wcmds(wl):
            d, sh = rps(wl, cmd, "turnout"), rps(wl, cmd, "turnout-shadow")
            per_round = ratios_by_round(wl, cmd, "turnout-shadow", "turnout")
            ratio = (sh / d) if d and sh else None
            srs = [r for r in runs if r["workload"] == wl and r["command"] == cmd and r["target"] == "turnout-shadow"]
            outcomes = {k: sum(r["shadow_outcomes"][k] for r in srs) for k in SHADOW_KEYS}
            requests = sum(r["requests"] for r in srs)
            cpu_cmd = {}
            for t in ("turnout", "turnout-shadow"):
                rs = [r for r in runs if r["workload"] == wl and r["command"] == cmd and r["target"] == t]
                ops = sum(r["requests"] for r in rs)
                if ops:
                    cpu_cmd[t] = {
                        "turnout_cpu_seconds_per_million_ops": sum(r["proxy_cpu_seconds"] for r in rs) / ops * 1e6,
                        "redis_cpu_seconds_per_million_ops": sum(r["redis_cpu_seconds"] for r in rs) / ops * 1e6,
                        "shadow_redis_cpu_seconds_per_million_ops": sum(r["shadow_redis_cpu_seconds"] for r in rs) / ops * 1e6,
                    }
            j = judged(per_round, meta["shadow_target_ratio"])
            shadow_rows.append({
                "workload": wl, "command": cmd, "direct_mode_rps": d, "shadow_mode_rps": sh,
                "shadow_over_direct": ratio, "per_round_shadow_over_direct": per_round,
                "target_ratio": meta["shadow_target_ratio"],
                "meets_target": (ratio >= meta["shadow_target_ratio"]) if ratio is not None else None,
                "interval": j["interval"], "coverage": j["coverage"], "verdict": j["verdict"],
                "shadow_runs": len(srs), "shadow_requests": requests,
                "shadow_outcomes": outcomes, "compared": outcomes["match"] + outcomes["mismatch"],
                "max_drain_seconds": max((r["shadow_drain_seconds"] for r in srs), default=None),
                "cpu": cpu_cmd,
            })
            md.append("| %s | %s | %s | %s | %s | %s | %s | ≥ %s | %s |" % (
                wl, cmd, fmt_int(d), fmt_int(sh), fmt_ratio(sh, d),
                " ".join("%.2f" % x for x in per_round) or "—", fmt_interval(j), meta["shadow_target_ratio"],
                j["verdict"]))
        md.append("")
        md.append("Shadow work during the timed shadow-mode runs (all rounds together):")
        md.append("")
        md.append("| command | requests sent | compared (match + mismatch) | match | mismatch | dropped | shadow_error | mirrored | longest drain after a run |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in (x for x in shadow_rows if x["workload"] == wl):
            o = row["shadow_outcomes"]
            md.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                row["command"], fmt_int(row["shadow_requests"]), fmt_int(row["compared"]), fmt_int(o["match"]),
                fmt_int(o["mismatch"]), fmt_int(o["dropped"]), fmt_int(o["shadow_error"]), fmt_int(o["mirrored"]),
                "%.2f s" % row["max_drain_seconds"] if row["max_drain_seconds"] is not None else "—"))
        md.append("")
        md.append("CPU seconds per million operations in %s (utime+stime; for shadow mode including the drain):" % wl)
        md.append("")
        md.append("| command | turnout, direct mode | turnout, shadow mode | redis-server primary (direct mode) | redis-server primary (shadow mode) | redis-server shadow (shadow mode) |")
        md.append("|---|---:|---:|---:|---:|---:|")
        def f(v):
            return "%.3f" % v if v is not None else "—"
        for row in (x for x in shadow_rows if x["workload"] == wl):
            cd, cs = row["cpu"].get("turnout", {}), row["cpu"].get("turnout-shadow", {})
            md.append("| %s | %s | %s | %s | %s | %s |" % (
                row["command"], f(cd.get("turnout_cpu_seconds_per_million_ops")), f(cs.get("turnout_cpu_seconds_per_million_ops")),
                f(cd.get("redis_cpu_seconds_per_million_ops")), f(cs.get("redis_cpu_seconds_per_million_ops")),
                f(cs.get("shadow_redis_cpu_seconds_per_million_ops"))))
        cd, cs = cpu.get((wl, "turnout"), {}), cpu.get((wl, "turnout-shadow"), {})
        md.append("| both | %s | %s | %s | %s | %s |" % (
            f(cd.get("proxy_cpu_seconds_per_million_ops")), f(cs.get("proxy_cpu_seconds_per_million_ops")),
            f(cd.get("redis_cpu_seconds_per_million_ops")), f(cs.get("redis_cpu_seconds_per_million_ops")),
            f(cs.get("shadow_redis_cpu_seconds_per_million_ops"))))
        md.append("")
    text = "\n".join(md)

    result = {
        "meta": meta,
        "medians": [dict(workload=k[0], command=k[1], target=k[2], **v) for k, v in med.items()],
        "ratios": [
            {"workload": wl, "command": cmd,
             "turnout_target": tt(wl),
             "turnout_over_direct": (rps(wl, cmd, tt(wl)) / rps(wl, cmd, "direct")) if rps(wl, cmd, tt(wl)) and rps(wl, cmd, "direct") else None,
             "turnout_over_twemproxy": (rps(wl, cmd, tt(wl)) / rps(wl, cmd, "twemproxy")) if rps(wl, cmd, tt(wl)) and rps(wl, cmd, "twemproxy") else None,
             "turnout_over_relay": (rps(wl, cmd, tt(wl)) / rps(wl, cmd, "relay")) if rps(wl, cmd, tt(wl)) and rps(wl, cmd, "relay") else None,
             "relay_over_direct": (rps(wl, cmd, "relay") / rps(wl, cmd, "direct")) if rps(wl, cmd, "relay") and rps(wl, cmd, "direct") else None}
            for wl in cmp_workloads for cmd in wcmds(wl)],
        "targets": target_rows,
        "namespaces": ns_rows,
        "shadow": shadow_rows,
        "control": control_rows,
        "ceilings": ceiling_rows,
        "cpu": [dict(workload=k[0], target=k[1], **v) for k, v in cpu.items()],
        "runs": runs,
    }
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(out_md, "w") as f:
        f.write(text + "\n")
    print(text)

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"ports": cmd_ports, "ping": cmd_ping, "flush": cmd_flush, "prefill": cmd_prefill, "sanity": cmd_sanity,
     "sanity_mget": cmd_sanity_mget, "report": cmd_report, "selftest": cmd_selftest, "rerender": cmd_rerender,
     "set_shadow": cmd_set_shadow, "shadow_counts": cmd_shadow_counts, "shadow_settle": cmd_shadow_settle,
     "shadow_doc": cmd_shadow_doc}[cmd](*args)
PY

helper() { python3 "$HELPER" "$@"; }

# wait_ping NAME PORT PID TIMEOUT_S: until the server answers PING, or fail.
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

# cpu_snapshot: sets SNAP_BUSY (machine-wide user+nice+system+steal ticks, all CPUs), SNAP_ALL
# (every field of /proc/stat's cpu line, idle included) and SNAP_OURS (utime+stime of this
# script, of everything it has waited for, redis-benchmark included, and of its servers).
# SNAP_NONIDLE is SNAP_BUSY plus irq and softirq time: every CPU tick not idle.
# Between two snapshots, busy - ours is CPU that other programs took: the report gives it as a
# share of the machine, so a run disturbed by something else on the machine shows. (Softirq
# time, where much of loopback TCP is accounted, is left out of both sides.)
cpu_snapshot() {
    local -a c f
    read -r -a c </proc/stat
    SNAP_BUSY=$(( c[1] + c[2] + c[3] + c[8] ))
    SNAP_NONIDLE=$(( SNAP_BUSY + c[6] + c[7] ))
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

helper selftest || die "the report's own check failed (bench_helper.py selftest)"

if [[ -n "$REPORT_FROM" ]]; then
    mkdir -p "$OUT_DIR"
    helper rerender "$REPORT_FROM" "$OUT_DIR/results.json" "$OUT_DIR/results.md" "$RATIO_TARGETS"
    log "wrote $OUT_DIR/results.md and $OUT_DIR/results.json (from $REPORT_FROM)"
    exit 0
fi

# Seventeen distinct free loopback ports, bound at once by the OS (port 0) then released; the
# servers bind them a moment later (a small race with other programs, never a fixed port).
read -r P_LEGACY P_NEW P_TURNOUT P_ADMIN P_TWEM P_TWEM_STATS P_TURNOUT_SH P_ADMIN_SH \
    P_SECOND P_TURNOUT_SPLIT P_ADMIN_SPLIT P_TURNOUT_NS P_ADMIN_NS P_RELAY \
    P_TURNOUT_AGAIN P_ADMIN_AGAIN P_MUX_RELAY <<<"$(helper ports 17)"

start_redis() {  # NAME PORT -> sets REDIS_PID
    local name="$1" port="$2"
    mkdir -p "$TMP/$name"
    "${PIN_REDIS[@]}" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
        --dir "$TMP/$name" --logfile "$TMP/$name.log" --protected-mode yes --maxclients "$REDIS_MAXCLIENTS" &
    REDIS_PID=$!
    CHILD_PIDS+=("$REDIS_PID")
}

# "legacy" serves every workload (all routes point at it, as before a migration); "new" is
# the second endpoint of turnout's config, started so that the config is a realistic one
# and for workloads that need two endpoints: it is S1's shadow endpoint, and stays empty.
log "starting redis-server legacy on 127.0.0.1:$P_LEGACY and new on 127.0.0.1:$P_NEW"
start_redis legacy "$P_LEGACY"; PID_LEGACY=$REDIS_PID
start_redis new "$P_NEW"; PID_NEW=$REDIS_PID
wait_ping "redis-server legacy" "$P_LEGACY" "$PID_LEGACY" 20 "$TMP/legacy.log"
wait_ping "redis-server new" "$P_NEW" "$PID_NEW" 20 "$TMP/new.log"
# "second" is turnout-split's endpoint for namespace token-cache (W5), started only for W5.
PID_SECOND=""
if has_target turnout-split; then
    log "starting redis-server second on 127.0.0.1:$P_SECOND"
    start_redis second "$P_SECOND"; PID_SECOND=$REDIS_PID
    wait_ping "redis-server second" "$P_SECOND" "$PID_SECOND" 20 "$TMP/second.log"
fi

# write_turnout_config FILE PORT ADMIN_PORT STATE_FILE [VARIANT]: the default config plus
# three namespaces, all on "legacy". VARIANT "split" (turnout-split, W5) adds the endpoint
# "second" and moves token-cache there; "ns1000" (turnout-ns1000, N1) appends namespaces
# ns0003 .. up to BENCH_NAMESPACES in all, prefixes "ns0003:" ..., all on "legacy".
write_turnout_config() {
    local token_target="legacy" second_endpoint=""
    if [[ "${5:-}" == split ]]; then
        token_target="second"
        second_endpoint="$(printf '[endpoints.second]\naddress = "127.0.0.1:%s"\n' "$P_SECOND")"
    fi
    cat >"$1" <<EOF
# generated by scripts/bench.sh
[proxy]
listen = "127.0.0.1:$2"
${BENCH_PROXY_OPTIONS:-}

[admin]
listen = "127.0.0.1:$3"

[state]
path = "$4"

[endpoints.legacy]
address = "127.0.0.1:$P_LEGACY"

[endpoints.new]
address = "127.0.0.1:$P_NEW"
$second_endpoint

[[namespaces]]
name = "web-cache"
prefixes = ["web:"]
target = "legacy"

[[namespaces]]
name = "token-cache"
prefixes = ["tok:", "session:"]
target = "$token_target"

[[namespaces]]
name = "impact"
prefixes = ["impact:"]
target = "legacy"

[default]
target = "legacy"
EOF
    if [[ "${5:-}" == ns1000 ]]; then
        local i
        for (( i = 3; i < NAMESPACES_MANY; i++ )); do
            printf '\n[[namespaces]]\nname = "ns%04d"\nprefixes = ["ns%04d:"]\ntarget = "legacy"\n' "$i" "$i"
        done >>"$1"
    fi
    "$TURNOUT_BIN" check --config "$1" >"$1.check.log" 2>&1 \
        || { cat "$1.check.log" >&2; die "turnout check rejected the generated config $1"; }
}

# start_turnout NAME PORT ADMIN_PORT -> sets TURNOUT_PID. Each instance has its own config
# and a state file that does not exist yet (fresh route table, every namespace direct).
start_turnout() {
    local name="$1" port="$2" admin="$3" variant="${4:-}"
    write_turnout_config "$TMP/$name.toml" "$port" "$admin" "$TMP/$name-state.json" "$variant"
    log "starting $name on 127.0.0.1:$port (admin 127.0.0.1:$admin)"
    RUST_LOG="${RUST_LOG:-info}" "${PIN_PROXY[@]}" "$TURNOUT_BIN" run --config "$TMP/$name.toml" 2>"$TMP/$name.log" &
    TURNOUT_PID=$!
    CHILD_PIDS+=("$TURNOUT_PID")
    wait_ping "$name" "$port" "$TURNOUT_PID" 30 "$TMP/$name.log"
}

PID_TURNOUT=""
PID_TURNOUT_SH=""
PID_TURNOUT_SPLIT=""
PID_TURNOUT_NS=""
PID_TURNOUT_AGAIN=""
if has_target turnout; then
    start_turnout turnout "$P_TURNOUT" "$P_ADMIN"; PID_TURNOUT=$TURNOUT_PID
fi
if has_target turnout-again; then
    start_turnout turnout-again "$P_TURNOUT_AGAIN" "$P_ADMIN_AGAIN"; PID_TURNOUT_AGAIN=$TURNOUT_PID
fi
if has_target turnout-split; then
    start_turnout turnout-split "$P_TURNOUT_SPLIT" "$P_ADMIN_SPLIT" split; PID_TURNOUT_SPLIT=$TURNOUT_PID
fi
if has_target turnout-ns1000; then
    start_turnout turnout-ns1000 "$P_TURNOUT_NS" "$P_ADMIN_NS" ns1000; PID_TURNOUT_NS=$TURNOUT_PID
fi
if [[ $SKIP_SHADOW -eq 0 ]]; then
    start_turnout turnout-shadow "$P_TURNOUT_SH" "$P_ADMIN_SH"; PID_TURNOUT_SH=$TURNOUT_PID
    # The namespaces S1's keys fall in go to shadow mode through the admin API, as an operator
    # would do it; the helper checks the route table afterwards.
    read -r _ _ _ _ _ _ s1_prefix _ <<<"${WORKLOADS[-1]}"
    shadow_ns="$(helper set_shadow "$P_ADMIN_SH" "$s1_prefix" "$SHADOW_ENDPOINT" "$SHADOW_SAMPLE" "$TMP/shadow-mode.json")" \
        || die "could not set shadow mode through the admin API of turnout-shadow"
    log "turnout-shadow: namespace $shadow_ns in shadow mode (shadow $SHADOW_ENDPOINT, sample $SHADOW_SAMPLE, writes false)"
fi

cat >"$TMP/nutcracker.yml" <<EOF
# generated by scripts/bench.sh
bench:
  listen: 127.0.0.1:$P_TWEM
  redis: true
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: false
  servers:
    - 127.0.0.1:$P_LEGACY:1
EOF
"$NUTCRACKER" -t -c "$TMP/nutcracker.yml" >"$TMP/nutcracker-test.log" 2>&1 \
    || { cat "$TMP/nutcracker-test.log" >&2; die "nutcracker rejected its generated config"; }
log "starting twemproxy (nutcracker) on 127.0.0.1:$P_TWEM (stats 127.0.0.1:$P_TWEM_STATS)"
"${PIN_PROXY[@]}" "$NUTCRACKER" -c "$TMP/nutcracker.yml" -s "$P_TWEM_STATS" -a 127.0.0.1 \
    -o "$TMP/nutcracker.log" -p "$TMP/nutcracker.pid" &
PID_TWEM=$!
CHILD_PIDS+=("$PID_TWEM")
wait_ping twemproxy "$P_TWEM" "$PID_TWEM" 20 "$TMP/nutcracker.log"

PID_RELAY=""
if has_target relay; then
    log "starting the relay on 127.0.0.1:$P_RELAY"
    "${PIN_PROXY[@]}" "$RELAY_BIN" "127.0.0.1:$P_RELAY" "127.0.0.1:$P_LEGACY" 2>"$TMP/relay.log" &
    PID_RELAY=$!
    CHILD_PIDS+=("$PID_RELAY")
    wait_ping relay "$P_RELAY" "$PID_RELAY" 20 "$TMP/relay.log"
fi
PID_MUX_RELAY=""
if has_target mux-relay; then
    log "starting mux-relay on 127.0.0.1:$P_MUX_RELAY"
    "${PIN_PROXY[@]}" "$MUX_RELAY_BIN" "127.0.0.1:$P_MUX_RELAY" "127.0.0.1:$P_LEGACY" 2>"$TMP/mux-relay.log" &
    PID_MUX_RELAY=$!
    CHILD_PIDS+=("$PID_MUX_RELAY")
    wait_ping mux-relay "$P_MUX_RELAY" "$PID_MUX_RELAY" 20 "$TMP/mux-relay.log"
fi

target_port() {
    case "$1" in
        direct) echo "$P_LEGACY" ;; turnout) echo "$P_TURNOUT" ;; twemproxy) echo "$P_TWEM" ;;
        relay) echo "$P_RELAY" ;; mux-relay) echo "$P_MUX_RELAY" ;;
        turnout-shadow) echo "$P_TURNOUT_SH" ;; turnout-split) echo "$P_TURNOUT_SPLIT" ;;
        turnout-ns1000) echo "$P_TURNOUT_NS" ;; turnout-again) echo "$P_TURNOUT_AGAIN" ;;
    esac
}
target_pid() {   # the proxy process whose CPU is recorded ("-" for direct)
    case "$1" in
        direct) echo "-" ;; turnout) echo "$PID_TURNOUT" ;; twemproxy) echo "$PID_TWEM" ;;
        relay) echo "$PID_RELAY" ;; mux-relay) echo "$PID_MUX_RELAY" ;;
        turnout-shadow) echo "$PID_TURNOUT_SH" ;; turnout-split) echo "$PID_TURNOUT_SPLIT" ;;
        turnout-ns1000) echo "$PID_TURNOUT_NS" ;; turnout-again) echo "$PID_TURNOUT_AGAIN" ;;
    esac
}
# home_port TARGET PREFIX: the redis-server that holds PREFIX's keys when reached through TARGET.
home_port() {
    if [[ "$1" == turnout-split && ( "$2" == tok: || "$2" == session: ) ]]; then echo "$P_SECOND"
    else echo "$P_LEGACY"
    fi
}
# redis_ticks TARGET: CPU ticks of the redis-server(s) behind TARGET (both for turnout-split).
redis_ticks() {
    local t
    t="$(cpu_ticks "$PID_LEGACY")"
    [[ "$1" == turnout-split ]] && t=$(( t + $(cpu_ticks "$PID_SECOND") ))
    echo "$t"
}

# ---------------------------------------------------------------------------------------------
# Prefill and sanity checks

# Every (prefix, keyspace, value size) the workloads read, each prefix once; W5's "web:+tok:"
# is two prefixes. SPLIT_PREFIXES: those sent to turnout-split, which may live on "second".
PREFILL=()
SPLIT_PREFIXES=" "
for w in "${WORKLOADS[@]}"; do
    read -r _ _ _ _ wkeys wsize wprefixes _ wtargets <<<"$w"
    IFS=+ read -r -a wp <<<"$wprefixes"
    for prefix in "${wp[@]}"; do
        [[ " ${PREFILL[*]} " == *" $prefix|"* ]] || PREFILL+=("$prefix|$wkeys|$wsize")
        [[ ",$wtargets," == *,turnout-split,* ]] && SPLIT_PREFIXES="$SPLIT_PREFIXES$prefix "
    done
done
helper flush "$P_LEGACY"
for entry in "${PREFILL[@]}"; do
    IFS='|' read -r prefix wkeys wsize <<<"$entry"
    log "prefilling $prefix x $wkeys keys of $wsize bytes on legacy"
    dbsize="$(helper prefill "$P_LEGACY" "$wkeys" "$wsize" "$prefix")"
    if [[ "$SPLIT_PREFIXES" == *" $prefix "* && "$(home_port turnout-split "$prefix")" == "$P_SECOND" ]]; then
        log "prefilling $prefix x $wkeys keys of $wsize bytes on second (turnout-split's token-cache)"
        helper prefill "$P_SECOND" "$wkeys" "$wsize" "$prefix" >/dev/null
    fi
done
log "legacy DBSIZE after prefill: $dbsize"
if [[ $SKIP_SHADOW -eq 0 && $SHADOW_SEED -eq 1 ]]; then
    read -r _ _ _ _ _ _ s1_prefix _ <<<"${WORKLOADS[-1]}"
    log "BENCH_SHADOW_SEED=1: prefilling $s1_prefix x $KEYSPACE keys on new (the shadow endpoint)"
    dbsize="$(helper prefill "$P_NEW" "$KEYSPACE" "$VALUE_SIZE" "$s1_prefix")"
    log "new DBSIZE after prefill: $dbsize"
fi
# Through each target, for each prefix a workload sends it: a prefilled GET, a SET read back on
# the redis-server that should hold it. A workload with two prefixes (W5) also gets one MGET
# whose reply must come back merged in the client's key order.
checked=" "
for w in "${WORKLOADS[@]}"; do
    read -r _ _ _ _ _ wsize wprefixes _ wtargets <<<"$w"
    IFS=+ read -r -a wp <<<"$wprefixes"
    IFS=, read -r -a wt <<<"$wtargets"
    for t in "${wt[@]}"; do
        for prefix in "${wp[@]}"; do
            [[ "$checked" == *" $t/$prefix "* ]] && continue
            checked="$checked$t/$prefix "
            helper sanity "$t" "$(target_port "$t")" "$(home_port "$t" "$prefix")" "$prefix" "$wsize" \
                || die "sanity check through $t failed"
        done
        if [[ ${#wp[@]} -gt 1 ]]; then
            helper sanity_mget "$t" "$(target_port "$t")" "${wp[@]}" || die "MGET sanity check through $t failed"
        fi
    done
done

# ---------------------------------------------------------------------------------------------
# Benchmark

RUNS="$TMP/runs.tsv"
: >"$RUNS"

VALUE="" VALUE_LEN=-1
# bench_run TARGET CLIENTS PIPELINE N KEYSPACE VALUE_SIZE PREFIXES COMMAND -> sets BENCH_LINE to
# redis-benchmark's CSV data line, its test name replaced by COMMAND (a SET's name holds the
# whole value). SET and GET take the first prefix; MGET takes 10 keys alternating over them.
# (Not a $(...) subshell: the trap must be able to stop the run, which is started in the
# background and waited for, so that INT/TERM interrupt the wait at once.)
BENCH_LINE=""
bench_run() {
    local target="$1" clients="$2" pipeline="$3" n="$4" keyspace="$5" size="$6" prefixes="$7" command="$8" port
    local -a wp
    IFS=+ read -r -a wp <<<"$prefixes"
    port="$(target_port "$target")"
    if [[ "$command" == SET && $VALUE_LEN -ne $size ]]; then
        VALUE="$(head -c "$size" /dev/zero | tr '\0' 'x')"; VALUE_LEN=$size
    fi
    local -a cmd=(redis-benchmark -h 127.0.0.1 -p "$port" -c "$clients" -P "$pipeline" -n "$n" -r "$keyspace" --csv)
    case "$command" in
        SET) cmd+=(SET "${wp[0]}__rand_int__" "$VALUE") ;;
        GET) cmd+=(GET "${wp[0]}__rand_int__") ;;
        MGET)
            cmd+=(MGET)
            local i
            for (( i = 0; i < 10; i++ )); do cmd+=("${wp[i % ${#wp[@]}]}__rand_int__"); done ;;
        *) die "bench_run: unknown command $command" ;;
    esac
    timeout --kill-after=5 "$RUN_TIMEOUT" "${PIN_LOAD[@]}" "${cmd[@]}" >"$TMP/run.out" 2>"$TMP/run.err" &
    CURRENT_BG=$!
    local rc=0
    wait "$CURRENT_BG" || rc=$?
    CURRENT_BG=""
    if [[ $rc -ne 0 ]]; then
        head -c 4096 "$TMP/run.err" >&2 || true; head -c 4096 "$TMP/run.out" >&2 || true
        [[ $rc -eq 124 ]] && die "redis-benchmark against $target timed out after ${RUN_TIMEOUT}s"
        die "redis-benchmark against $target failed (exit $rc)"
    fi
    local line
    # sed, not bash patterns: those are slow on the 64 KiB test name of a W3 SET.
    line="$(grep -v '^"test"' "$TMP/run.out" | grep '^"' | tail -n 1 | sed -n 's/^"[^"]*",\("[0-9]\)/\1/p' || true)"
    [[ -n "$line" ]] || { head -c 4096 "$TMP/run.out" >&2; head -c 4096 "$TMP/run.err" >&2; die "no CSV result from redis-benchmark against $target"; }
    BENCH_LINE="\"$command\",$line"
}

# Warm-up: one short untimed run per target and workload (connections, page cache, allocator).
log "warm-up"
for w in "${WORKLOADS[@]}"; do
    read -r wname wclients pipeline n wkeys wsize wprefixes wcommands wtargets <<<"$w"
    IFS=, read -r -a wt <<<"$wtargets"
    IFS=, read -r -a wc <<<"$wcommands"
    warm="${wc[-1]}"   # GET, or the workload's only command (MGET)
    for t in "${wt[@]}"; do
        bench_run "$t" "$wclients" "$pipeline" "$(( n / 10 > 1000 ? n / 10 : 1000 ))" "$wkeys" "$wsize" "$wprefixes" "$warm"
    done
done

# The shadow must really be doing the work: after the warm-up GETs it has compared some.
SHADOW_SETTLE_TIMEOUT=30
if [[ $SKIP_SHADOW -eq 0 ]]; then
    read -r m mm se dr mi _ _ <<<"$(helper shadow_settle "$P_ADMIN_SH" "$SHADOW_SETTLE_TIMEOUT")"
    log "turnout-shadow after sanity checks and warm-up: match $m, mismatch $mm, shadow_error $se, dropped $dr, mirrored $mi"
    (( m + mm > 0 )) || die "turnout-shadow compared nothing during the warm-up: shadow mode is not in effect"
fi

total_runs=0
for w in "${WORKLOADS[@]}"; do
    read -r _ _ _ _ _ _ _ wcommands wtargets <<<"$w"
    IFS=, read -r -a wt <<<"$wtargets"
    IFS=, read -r -a wc <<<"$wcommands"
    total_runs=$(( total_runs + ROUNDS * ${#wc[@]} * ${#wt[@]} ))
done
run_no=0
for (( round = 1; round <= ROUNDS; round++ )); do
    for w in "${WORKLOADS[@]}"; do
        read -r wname wclients pipeline n wkeys wsize wprefixes wcommands wtargets <<<"$w"
        IFS=, read -r -a wt <<<"$wtargets"
        IFS=, read -r -a wc <<<"$wcommands"
        # Each round starts one target later (A B C, B C A, C A B, ...), so that what runs
        # just before a target, and its place in the round, is not the same in every round:
        # a second turnout run always after twemproxy (--control) was 4% slower in 4 of 5
        # rounds of W1 GET, and 5% faster in W3 GET, with nothing but its place to tell it apart.
        shift_by=$(( (round - 1) % ${#wt[@]} ))
        wt=("${wt[@]:shift_by}" "${wt[@]:0:shift_by}")
        for command in "${wc[@]}"; do
            for t in "${wt[@]}"; do
                run_no=$((run_no + 1))
                ppid_="$(target_pid "$t")"
                c0=()
                [[ "$t" == turnout-shadow ]] && read -r -a c0 <<<"$(helper shadow_counts "$P_ADMIN_SH")"
                u0="-"; k0="-"
                [[ "$ppid_" != "-" ]] && read -r u0 k0 <<<"$(proc_times "$ppid_")"
                r0="$(redis_ticks "$t")"
                s0="$(cpu_ticks "$PID_NEW")"
                started_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
                cpu_snapshot; b0=$SNAP_BUSY; a0=$SNAP_ALL; o0=$SNAP_OURS; n0=$SNAP_NONIDLE
                t0="$(date +%s.%N)"
                bench_run "$t" "$wclients" "$pipeline" "$n" "$wkeys" "$wsize" "$wprefixes" "$command"
                line="$BENCH_LINE"
                t1="$(date +%s.%N)"
                # Shadow mode: wait for the shadow queues to drain, so that the run's outcomes
                # are complete and the CPU below includes the comparisons still in flight.
                shadow="-"; settle="-"
                if [[ "$t" == turnout-shadow ]]; then
                    read -r -a c1 <<<"$(helper shadow_settle "$P_ADMIN_SH" "$SHADOW_SETTLE_TIMEOUT")"
                    [[ "${c1[6]}" == 1 ]] || log "warning: shadow counts still moving ${SHADOW_SETTLE_TIMEOUT}s after the run"
                    shadow="$(( c1[0] - c0[0] )):$(( c1[1] - c0[1] )):$(( c1[2] - c0[2] )):$(( c1[3] - c0[3] )):$(( c1[4] - c0[4] ))"
                    settle="${c1[5]}"
                fi
                r1="$(redis_ticks "$t")"
                s1="$(cpu_ticks "$PID_NEW")"
                pd="-"; ud="-"
                if [[ "$ppid_" != "-" ]]; then
                    read -r u1 k1 <<<"$(proc_times "$ppid_")"
                    ud=$(( u1 - u0 )); pd=$(( ud + k1 - k0 ))
                fi
                cpu_snapshot
                other=$(( (SNAP_BUSY - b0) - (SNAP_OURS - o0) )); (( other >= 0 )) || other=0
                window=$(( SNAP_ALL - a0 ))
                wall="$(python3 -c "print('%.3f' % ($t1 - $t0))")"
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
                    "$round" "$wname" "$t" "$command" "$n" "$wall" "$settle" "$pd" "$ud" "$((r1 - r0))" "$((s1 - s0))" \
                    "$shadow" "$started_at" "$other" "$window" "$(( SNAP_NONIDLE - n0 ))" "$line" >>"$RUNS"
                rps="$(cut -d, -f2 <<<"$line" | tr -d '"')"
                extra="  other programs $(( window > 0 ? other * 100 / window : 0 ))% CPU"
                [[ "$shadow" != "-" ]] && extra="$extra;  shadow match:mismatch:error:dropped:mirrored $shadow, drained in ${settle}s"
                log "$(printf '[%2d/%d] round %d %s %-3s %-14s %12s ops/s  (%ss)%s' \
                    "$run_no" "$total_runs" "$round" "$wname" "$command" "$t" "$rps" "$wall" "$extra")"
            done
        done
    done
done

# Each proxy must still be alive: a crash mid-run would otherwise go unnoticed.
for pid in $PID_TURNOUT $PID_TURNOUT_SH $PID_TURNOUT_SPLIT $PID_TURNOUT_NS $PID_RELAY $PID_MUX_RELAY $PID_SECOND "$PID_TWEM" "$PID_LEGACY" "$PID_NEW"; do
    kill -0 "$pid" 2>/dev/null || die "process $pid died during the benchmark"
done

# ---------------------------------------------------------------------------------------------
# Report

turnout_version="skipped (BENCH_SKIP_TURNOUT=1)"
if [[ $SKIP_TURNOUT -eq 0 ]]; then
    turnout_version="$("$TURNOUT_BIN" --version 2>/dev/null | head -n 1 | sed "s/^turnout //" || true)"
    [[ -n "$turnout_version" ]] || turnout_version="(no --version)"
    rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")"
    dirty=""; [[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1)" ]] && dirty="+dirty"
    turnout_version="$turnout_version ($rev$dirty, release profile)"
fi

workloads_json="$(
    for w in "${WORKLOADS[@]}"; do
        read -r wname wclients pipeline n wkeys wsize wprefixes wcommands wtargets <<<"$w"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
            "$wname" "$wclients" "$pipeline" "$n" "$wkeys" "$wsize" "$wprefixes" "$wcommands" "$wtargets"
    done
)"
SHADOW_MODE_JSON=""
if [[ $SKIP_SHADOW -eq 0 ]]; then
    helper shadow_doc "$P_ADMIN_SH" "$TMP/shadow-final.json"
    SHADOW_MODE_JSON="$TMP/shadow-mode.json"
fi

META="$TMP/meta.json"
WORKLOADS_TSV="$workloads_json" CLIENTS="$CLIENTS" KEYSPACE="$KEYSPACE" VALUE_SIZE="$VALUE_SIZE" \
ROUNDS="$ROUNDS" QUICK="$QUICK" CLK_TCK="$CLK_TCK" TARGETS="${TARGETS[*]}" \
NAMESPACES_MANY="$NAMESPACES_MANY" NAMESPACES_TARGET_RATIO="$NAMESPACES_TARGET_RATIO" \
NOFILE="$(ulimit -Sn)" REDIS_MAXCLIENTS="$REDIS_MAXCLIENTS" \
CPU_MODEL="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)" \
PLACEMENT="$PLACEMENT" PIN_REDIS="${PIN_REDIS[*]}" PIN_PROXY="${PIN_PROXY[*]}" PIN_LOAD="${PIN_LOAD[*]}" \
NPROC="$(nproc)" KERNEL="$(uname -r)" ARCH="$(uname -m)" \
LOADAVG_START="$LOADAVG_START" SHADOW_SEED="$SHADOW_SEED" \
REDIS_VERSION="redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p' | head -n 1)" \
BENCH_VERSION="$(redis-benchmark --version 2>/dev/null | head -n 1 || true)" \
NUTCRACKER_VERSION="$("$NUTCRACKER" -V 2>&1 | sed -n 's/.*nutcracker-\([^ ]*\).*/nutcracker \1/p' | head -n 1)" \
RUSTC_VERSION="$(rustc --version 2>/dev/null || echo 'rustc n/a')" \
TURNOUT_VERSION="$turnout_version" RUST_LOG_USED="${RUST_LOG:-info}" \
SHADOW_MODE_JSON="$SHADOW_MODE_JSON" SHADOW_FINAL_JSON="$TMP/shadow-final.json" \
SHADOW_TARGET_RATIO="$SHADOW_TARGET_RATIO" \
python3 - "$META" <<'PY'
import datetime, json, os, sys
e = os.environ
workloads = []
commands = []
for line in e["WORKLOADS_TSV"].splitlines():
    name, clients, pipeline, n, keyspace, size, prefixes, wcommands, targets = line.split("\t")
    prefixes, wcommands = prefixes.split("+"), wcommands.split(",")
    commands += [c for c in wcommands if c not in commands]
    base = "redis-benchmark -h 127.0.0.1 -p PORT -c %s -P %s -n %s -r %s --csv" % (clients, pipeline, n, keyspace)
    shown = []
    for c in wcommands:
        if c == "SET":
            shown.append("SET %s__rand_int__ <%s bytes>" % (prefixes[0], size))
        elif c == "GET":
            shown.append("GET %s__rand_int__" % prefixes[0])
        else:
            shown.append("MGET " + " ".join("%s__rand_int__" % prefixes[i % len(prefixes)] for i in range(10)))
    targets = targets.split(",")
    workloads.append({
        "name": name, "clients": int(clients), "pipeline": int(pipeline), "requests": int(n),
        "keyspace": int(keyspace), "value_size": int(size), "key_prefix": prefixes[0], "key_prefixes": prefixes,
        "commands": wcommands, "targets": targets,
        # The turnout instance compared with direct and twemproxy in the main table, if any.
        "turnout_target": next((t for t in ("turnout", "turnout-split") if t in targets and "direct" in targets), None),
        "command_line": "%s %s" % (base, "  /  ... ".join(shown)),
    })
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "quick": e["QUICK"] == "1", "rounds": int(e["ROUNDS"]),
    "targets": e["TARGETS"].split(), "commands": commands,
    "namespaces_many": int(e["NAMESPACES_MANY"]), "namespaces_target_ratio": float(e["NAMESPACES_TARGET_RATIO"]),
    "nofile_limit": e["NOFILE"], "redis_maxclients": int(e["REDIS_MAXCLIENTS"]),
    "value_size": int(e["VALUE_SIZE"]), "keyspace": int(e["KEYSPACE"]), "workloads": workloads,
    "clk_tck": int(e["CLK_TCK"]), "cpu_model": e["CPU_MODEL"] or "unknown", "nproc": int(e["NPROC"]),
    "kernel": e["KERNEL"], "arch": e["ARCH"], "redis_version": e["REDIS_VERSION"],
    "redis_benchmark_version": e["BENCH_VERSION"], "nutcracker_version": e["NUTCRACKER_VERSION"],
    "rustc_version": e["RUSTC_VERSION"], "turnout_version": e["TURNOUT_VERSION"], "turnout_rust_log": e["RUST_LOG_USED"],
    "shadow_target_ratio": float(e["SHADOW_TARGET_RATIO"]), "shadow_seeded": e["SHADOW_SEED"] == "1",
    "loadavg_at_start": e["LOADAVG_START"],
    # Which CPUs each kind of process was allowed (taskset command prefix, "" = any).
    "placement": {"name": e["PLACEMENT"], "redis_server": e["PIN_REDIS"], "proxies": e["PIN_PROXY"],
                  "redis_benchmark": e["PIN_LOAD"]},
}
if e["SHADOW_MODE_JSON"]:
    # S1: the mode change sent to turnout-shadow, its route table after it, and its
    # GET /v1/shadow at the end (counts since the mode was set: sanity, warm-up and timed runs).
    meta["shadow_mode"] = json.load(open(e["SHADOW_MODE_JSON"]))
    meta["shadow_mode"]["final_shadow_report"] = json.load(open(e["SHADOW_FINAL_JSON"]))
    meta["shadow_mode"]["instance"] = "turnout-shadow"
json.dump(meta, open(sys.argv[1], "w"), indent=2)
PY

mkdir -p "$OUT_DIR"
helper report "$RUNS" "$META" "$OUT_DIR/results.json" "$OUT_DIR/results.md" "$RATIO_TARGETS"
if [[ $QUICK -eq 1 ]]; then
    echo
    echo "(--quick: smoke-test sizes and a single round; do not publish these numbers)"
fi
log "wrote $OUT_DIR/results.md and $OUT_DIR/results.json"
