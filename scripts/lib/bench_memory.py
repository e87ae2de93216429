#!/usr/bin/env python3
"""Idle-connection memory of turnout, for scripts/bench-memory.sh (stdlib only).

Subcommands:
  ports N          print N distinct free loopback ports
  ping PORT        exit 0 if a RESP server on 127.0.0.1:PORT answers PING
  run ...          the measurement (see cmd_run), writes JSON and Markdown

Every socket is on 127.0.0.1; every wait has a deadline. Numbers in the report are read from
/proc/PID/status and turnout's /metrics during this run, nothing else.
"""

import argparse
import datetime
import json
import os
import socket
import sys
import time


def log(msg):
    print("[bench-memory] %s" % msg, file=sys.stderr, flush=True)


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Reader:
    """Reads one RESP reply at a time from a blocking socket (replies used here only)."""

    def __init__(self, sock):
        self.s = sock
        self.buf = bytearray()

    def _fill(self):
        chunk = self.s.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill()

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode(errors="replace"))
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            val = bytes(self.buf[:n])
            del self.buf[:n + 2]
            return val
        raise RuntimeError("unexpected reply %r" % line[:80])


def cmd_ports(n):
    socks = []
    for _ in range(int(n)):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))


def cmd_ping(port):
    try:
        s = socket.create_connection(("127.0.0.1", int(port)), timeout=1.0)
        s.sendall(resp("PING"))
        ok = Reader(s).reply() == b"PONG"
    except Exception:
        ok = False
    sys.exit(0 if ok else 1)


def status(pid):
    """VmRSS, VmHWM, RssAnon of PID in KiB, from /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                out[key] = int(rest.split()[0])
    return out


def gauges(admin_port):
    """turnout_client_connections and the sum of turnout_upstream_connections, from /metrics."""
    s = socket.create_connection(("127.0.0.1", admin_port), timeout=5.0)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = bytearray()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    clients, upstream = 0.0, 0.0
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("turnout_client_connections "):
            clients = float(line.split()[-1])
        elif line.startswith("turnout_upstream_connections"):
            upstream += float(line.split()[-1])
    return int(clients), int(upstream)


def wait_clients(admin_port, want, timeout_s):
    """Waits until turnout counts WANT client connections; returns the last count seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        clients, _ = gauges(admin_port)
        if clients == want or time.monotonic() > deadline:
            return clients
        time.sleep(0.1)


def wait_rss_settled(pid, timeout_s, window_s=2.0):
    """Polls VmRSS until it moved less than 1% (and 256 KiB) over WINDOW_S, or TIMEOUT_S passed.
    Returns (status, seconds waited, settled)."""
    t0 = time.monotonic()
    samples = []
    while True:
        now = time.monotonic()
        samples.append((now, status(pid)["VmRSS"]))
        old = [v for (t, v) in samples if now - t >= window_s]
        if old:
            ref = old[-1]
            cur = samples[-1][1]
            if abs(cur - ref) <= max(256, ref // 100):
                return status(pid), now - t0, True
        if now - t0 > timeout_s:
            return status(pid), now - t0, False
        time.sleep(0.25)


def snapshot(name, pid, admin_port, note, extra=None):
    st = status(pid)
    clients, upstream = gauges(admin_port)
    row = {"phase": name, "vm_rss_kib": st["VmRSS"], "vm_hwm_kib": st["VmHWM"],
           "rss_anon_kib": st.get("RssAnon"), "client_connections": clients,
           "upstream_connections": upstream, "note": note}
    if extra:
        row.update(extra)
    log("%-22s VmRSS %8d KiB  VmHWM %8d KiB  clients %6d  upstream %4d" % (
        name, st["VmRSS"], st["VmHWM"], clients, upstream))
    return row


def open_clients(port, n, deadline):
    conns = []
    while len(conns) < n:
        if time.monotonic() > deadline:
            raise SystemExit("opened only %d of %d connections before the deadline" % (len(conns), n))
        s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(s)
    return conns


def burst(conns, value_size, deadline):
    """SET then GET a VALUE_SIZE value on every connection of CONNS: all requests of a step are
    written before any reply is read, so turnout holds the values of all of them at once."""
    value = b"v" * value_size
    readers = [Reader(s) for s in conns]
    for i, s in enumerate(conns):
        s.settimeout(max(1.0, deadline - time.monotonic()))
        s.sendall(resp("SET", "web:bench-memory:%d" % i, value))
    for i, r in enumerate(readers):
        if r.reply() != b"OK":
            raise SystemExit("burst: SET %d was not answered +OK" % i)
    for i, s in enumerate(conns):
        s.sendall(resp("GET", "web:bench-memory:%d" % i))
    for i, r in enumerate(readers):
        got = r.reply()
        if got is None or len(got) != value_size:
            raise SystemExit("burst: GET %d returned %s bytes" % (i, None if got is None else len(got)))
    for i, s in enumerate(conns):
        s.sendall(resp("DEL", "web:bench-memory:%d" % i))
    for r in readers:
        r.reply()
    for s in conns:
        s.settimeout(5.0)


def cmd_run(argv):
    ap = argparse.ArgumentParser(prog="bench_memory.py run")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--admin", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--connections", type=int, required=True)
    ap.add_argument("--burst-clients", type=int, required=True)
    ap.add_argument("--burst-bytes", type=int, required=True)
    ap.add_argument("--timeout", type=float, required=True, help="bound of the whole run, seconds")
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--out-md", required=True)
    a = ap.parse_args(argv)
    deadline = time.monotonic() + a.timeout
    phases = []

    st, waited, settled = wait_rss_settled(a.pid, 10.0)
    phases.append(snapshot("started", a.pid, a.admin, "turnout started, no client connected",
                           {"settle_seconds": round(waited, 2), "settled": settled}))

    log("opening %d idle client connections" % a.connections)
    t0 = time.monotonic()
    conns = open_clients(a.port, a.connections, deadline)
    seen = wait_clients(a.admin, a.connections, min(60.0, max(1.0, deadline - time.monotonic())))
    if seen != a.connections:
        raise SystemExit("turnout counts %d client connections, expected %d" % (seen, a.connections))
    open_s = time.monotonic() - t0
    st, waited, settled = wait_rss_settled(a.pid, 10.0)
    phases.append(snapshot("idle", a.pid, a.admin,
                           "%d connections open, none has sent anything" % a.connections,
                           {"open_seconds": round(open_s, 2), "settle_seconds": round(waited, 2), "settled": settled}))

    k = min(a.burst_clients, a.connections)
    log("burst: SET + GET of %d bytes on %d of the connections" % (a.burst_bytes, k))
    t0 = time.monotonic()
    burst(conns[:k], a.burst_bytes, deadline)
    phases.append(snapshot("after burst", a.pid, a.admin,
                           "right after the last reply of the burst (VmHWM: peak since start)",
                           {"burst_seconds": round(time.monotonic() - t0, 2)}))

    st, waited, settled = wait_rss_settled(a.pid, min(30.0, max(1.0, deadline - time.monotonic())))
    phases.append(snapshot("idle after burst", a.pid, a.admin,
                           "all %d connections idle again" % a.connections,
                           {"settle_seconds": round(waited, 2), "settled": settled}))

    for s in conns:
        s.close()
    seen = wait_clients(a.admin, 0, min(30.0, max(1.0, deadline - time.monotonic())))
    st, waited, settled = wait_rss_settled(a.pid, min(10.0, max(1.0, deadline - time.monotonic())))
    phases.append(snapshot("closed", a.pid, a.admin, "all client connections closed",
                           {"settle_seconds": round(waited, 2), "settled": settled}))

    report(a, json.load(open(a.meta)), phases)


def report(a, meta, phases):
    by = {p["phase"]: p for p in phases}
    base, idle = by["started"]["vm_rss_kib"], by["idle"]["vm_rss_kib"]
    per_conn = (idle - base) / a.connections
    after, again = by["after burst"]["vm_rss_kib"], by["idle after burst"]["vm_rss_kib"]
    # The bound: 10,000 idle connections add at most 64 MiB (65,536 KiB).
    budget_kib = 64 * 1024 * a.connections / 10000
    result = {
        "meta": meta,
        "connections": a.connections, "burst_clients": min(a.burst_clients, a.connections),
        "burst_bytes": a.burst_bytes,
        "idle_added_kib": idle - base, "idle_kib_per_connection": per_conn,
        "idle_budget_kib": budget_kib, "idle_within_budget": (idle - base) <= budget_kib,
        "burst_added_kib": after - idle, "after_burst_idle_minus_idle_kib": again - idle,
        "peak_vm_hwm_kib": by["after burst"]["vm_hwm_kib"],
        "phases": phases,
    }
    md = ["## turnout idle-connection memory (scripts/bench-memory.sh)", ""]
    md.append("- date: %s; machine: %s, %s CPUs, kernel %s" % (meta["date"], meta["cpu_model"], meta["nproc"], meta["kernel"]))
    md.append("- turnout %s; redis-server %s; allocator: jemalloc with background purging, 1 s decay (turnout's global allocator)" % (meta["turnout_version"], meta["redis_version"]))
    md.append("- config: default plus three namespaces (as scripts/bench.sh), `max_clients = %s`" % meta["max_clients"])
    md.append("- %d idle client connections, opened one after another from one Python process, none sends anything; "
              "then SET + GET of %d-byte values on %d of them (every request of a step written before any reply "
              "is read), DEL, and the connections left idle again" % (a.connections, a.burst_bytes, result["burst_clients"]))
    md.append("- RSS from `/proc/PID/status` (VmRSS; VmHWM is the peak since turnout started), connection counts "
              "from turnout's `/metrics`; \"settled\" means VmRSS moved by less than 1% over 2 s")
    md.append("")
    md.append("| phase | VmRSS KiB | change from start KiB | VmHWM KiB | RssAnon KiB | client conns | upstream conns | note |")
    md.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for p in phases:
        extra = []
        if "settled" in p:
            extra.append("settled" if p["settled"] else "NOT settled after %.1f s" % p["settle_seconds"])
        md.append("| %s | {:,} | {:+,} | {:,} | %s | %d | %d | %s |".format(p["vm_rss_kib"], p["vm_rss_kib"] - base, p["vm_hwm_kib"]) % (
            p["phase"], "{:,}".format(p["rss_anon_kib"]) if p.get("rss_anon_kib") is not None else "—",
            p["client_connections"], p["upstream_connections"], "; ".join([p["note"]] + extra)))
    md.append("")
    md.append("- idle connections: +{:,} KiB for {:,} connections = {:.2f} KiB per connection "
              "(bound from the issue, scaled to this count: {:,.0f} KiB, i.e. 64 MiB per 10,000: {})".format(
                  idle - base, a.connections, per_conn, budget_kib, "within" if result["idle_within_budget"] else "EXCEEDED"))
    md.append("- burst: +{:,} KiB over idle right after it; idle again: {:+,} KiB compared with before the burst".format(
        after - idle, again - idle))
    if meta.get("quick") or a.connections != 10000:
        md.append("")
        md.append("(%d connections instead of the issue's 10,000: a smoke test of the script, not the issue's "
                  "measurement; fixed costs weigh more per connection at small counts)" % a.connections)
    text = "\n".join(md)
    with open(a.out_json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(a.out_md, "w") as f:
        f.write(text + "\n")
    print(text)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ports":
        cmd_ports(*args)
    elif cmd == "ping":
        cmd_ping(*args)
    elif cmd == "run":
        cmd_run(args)
    else:
        raise SystemExit("unknown subcommand %s" % cmd)


if __name__ == "__main__":
    main()
