# shellcheck shell=bash
# /proc readings and resource limits shared by scripts/bench.sh and scripts/bench-memory.sh
# (sourced, not run).

# proc_times PID: "utime stime" of the whole process (all threads), in clock ticks.
proc_times() {
    local stat rest
    stat="$(</proc/"$1"/stat)"
    rest="${stat##*) }"            # drop "pid (comm) ", comm may contain spaces
    local -a f
    read -r -a f <<<"$rest"        # f[0] is field 3 (state); utime = field 14, stime = field 15
    echo "${f[11]} ${f[12]}"
}

# cpu_ticks PID: utime+stime of the whole process, in clock ticks.
cpu_ticks() {
    local u s
    read -r u s <<<"$(proc_times "$1")"
    echo $(( u + s ))
}

# raise_nofile N: raises this shell's soft `ulimit -n` to at least N (children inherit it),
# or says why it cannot and fails.
raise_nofile() {
    local need="$1" cur hard
    cur="$(ulimit -Sn)"
    hard="$(ulimit -Hn)"
    [[ "$cur" == unlimited ]] && return 0
    (( cur >= need )) && return 0
    if [[ "$hard" != unlimited ]] && (( hard < need )); then
        echo "need $need open files, but the hard limit (ulimit -Hn) is $hard;" \
            "raise it (e.g. /etc/security/limits.conf) or lower the client count" >&2
        return 1
    fi
    ulimit -Sn "$need"
}
