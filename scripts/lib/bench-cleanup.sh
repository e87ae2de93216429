# shellcheck shell=bash
# Process bookkeeping shared by the benchmark scripts (sourced, not run).
#
# The sourcing script sets TMP (its temporary directory) and defines `log` first, then adds
# the PIDs of the servers it starts to CHILD_PIDS (and a running foreground job's to
# CURRENT_BG). On any exit every child gets SIGTERM, up to 10 s to exit (turnout's shutdown
# grace may apply), then SIGKILL; TMP is removed unless BENCH_KEEP_TMP is set or the script
# failed (not after a plain Ctrl-C / SIGTERM).

CHILD_PIDS=()
CURRENT_BG=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ -n "$CURRENT_BG" ]]; then kill -TERM "$CURRENT_BG" 2>/dev/null; fi
    local pid
    for pid in "${CHILD_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    local deadline=$((SECONDS + 10)) alive
    while :; do
        alive=0
        for pid in "${CHILD_PIDS[@]}" $CURRENT_BG; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive -eq 0 || $SECONDS -ge $deadline ]] && break
        sleep 0.1
    done
    for pid in "${CHILD_PIDS[@]}" $CURRENT_BG; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [[ "${BENCH_KEEP_TMP:-0}" != "0" || ( $rc -ne 0 && $rc -ne 130 && $rc -ne 143 ) ]]; then
        log "temporary files kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
