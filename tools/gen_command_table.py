#!/usr/bin/env python3
"""Generate turnout's Redis command table (src/command/table.rs) from a live redis-server.

By default this starts its own throw-away `redis-server` on a free loopback port,
asks it `COMMAND INFO` (falling back to `COMMAND`), and writes Rust source built
from the types in `src/command/spec.rs`. With --host/--port it queries an already
running server instead. Python 3 standard library only.

    python3 tools/gen_command_table.py                 # rewrite src/command/table.rs
    python3 tools/gen_command_table.py --stdout        # print instead
    python3 tools/gen_command_table.py --port 6379     # use a running server
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "src" / "command" / "table.rs"

# Redis command flag -> `flags::` constant.
COMMAND_FLAGS = {
    "write": "WRITE",
    "readonly": "READONLY",
    "admin": "ADMIN",
    "pubsub": "PUBSUB",
    "noscript": "NOSCRIPT",
    "blocking": "BLOCKING",
    "movablekeys": "MOVABLE_KEYS",
    "no_multi": "NO_MULTI",
    "denyoom": "DENYOOM",
}
# ACL category -> `flags::` constant.
ACL_FLAGS = {
    "@transaction": "TRANSACTION",
    "@connection": "CONNECTION",
    "@scripting": "SCRIPTING",
    "@dangerous": "DANGEROUS",
}
# Command tip (COMMAND INFO element 7; matched exactly) -> `flags::` constant. Tips such as
# `request_policy:...` and `response_policy:...` are not kept.
TIP_FLAGS = {
    "nondeterministic_output": "NONDETERMINISTIC_OUTPUT",
    "nondeterministic_output_order": "UNORDERED_OUTPUT",
}
# Order the bits are written in (the bit order of `flags` in spec.rs).
FLAG_ORDER = [
    "WRITE", "READONLY", "ADMIN", "PUBSUB", "NOSCRIPT", "BLOCKING", "MOVABLE_KEYS",
    "NO_MULTI", "DENYOOM", "TRANSACTION", "CONNECTION", "SCRIPTING", "DANGEROUS", "CONTAINER",
    "NONDETERMINISTIC_OUTPUT", "UNORDERED_OUTPUT",
]
# Key-spec flags kept (matched case-insensitively); ACCESS/UPDATE/INSERT/DELETE are dropped.
KEY_FLAG_ORDER = ["RO", "RW", "OW", "RM", "INCOMPLETE", "NOT_KEY", "VARIABLE_FLAGS"]


# --------------------------------------------------------------------------- RESP2


class RedisError(Exception):
    """An error reply (`-ERR ...`) from the server."""


class Resp:
    """A minimal blocking RESP2 client over a raw socket."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def call(self, *args: str) -> object:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        reply = self._read()
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line, self.buf = self.buf[:i], self.buf[i + 2:]
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _read(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            # Nested error replies are kept as values; only a top-level one raises.
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ValueError(f"unexpected RESP reply line: {line!r}")


# --------------------------------------------------------------------------- model


@dataclass
class KeySpec:
    begin: str
    find: str
    flags: list[str]


@dataclass
class Command:
    name: str
    arity: int
    flags: list[str]
    first_key: int
    last_key: int
    step: int
    key_specs: list[KeySpec] = field(default_factory=list)
    subcommands: list["Command"] = field(default_factory=list)
    raw_key_flags: list[list[str]] = field(default_factory=list)
    begin_types: list[str] = field(default_factory=list)
    find_types: list[str] = field(default_factory=list)


def pairs(flat: object) -> dict[str, object]:
    """A RESP2 flattened map ([k1, v1, k2, v2, ...]) as a dict."""
    if not isinstance(flat, list) or len(flat) % 2:
        raise ValueError(f"expected a flat key/value array, got {flat!r}")
    return {str(flat[i]).lower(): flat[i + 1] for i in range(0, len(flat), 2)}


def check(value: int, lo: int, hi: int, what: str) -> int:
    if not lo <= value <= hi:
        raise ValueError(f"{what} = {value} does not fit [{lo}, {hi}]")
    return value


def rust_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_key_spec(cmd: str, raw: object) -> tuple[KeySpec, list[str], str, str]:
    spec = pairs(raw)
    raw_flags = [str(f) for f in (spec.get("flags") or [])]
    upper = {f.upper() for f in raw_flags}
    kflags = [f for f in KEY_FLAG_ORDER if f in upper]

    bs = pairs(spec["begin_search"])
    btype = str(bs["type"])
    bspec = pairs(bs.get("spec") or [])
    if btype == "index":
        begin = f"BeginSearch::Index({check(int(bspec['index']), 0, 0xFFFF, cmd + ' begin index')})"
    elif btype == "keyword":
        start = check(int(bspec["startfrom"]), -0x8000, 0x7FFF, cmd + " startfrom")
        begin = f"BeginSearch::Keyword {{ keyword: {rust_str(str(bspec['keyword']))}, start_from: {start} }}"
    elif btype == "unknown":
        begin = "BeginSearch::Unknown"
    else:
        raise ValueError(f"{cmd}: unknown begin_search type {btype!r}")

    fk = pairs(spec["find_keys"])
    ftype = str(fk["type"])
    fspec = pairs(fk.get("spec") or [])
    if ftype == "range":
        last = check(int(fspec["lastkey"]), -0x8000, 0x7FFF, cmd + " lastkey")
        step = check(int(fspec["keystep"]), 0, 0xFFFF, cmd + " keystep")
        limit = check(int(fspec["limit"]), 0, 0xFFFF, cmd + " limit")
        find = f"FindKeys::Range {{ last_key: {last}, step: {step}, limit: {limit} }}"
    elif ftype == "keynum":
        idx = check(int(fspec["keynumidx"]), 0, 0xFFFF, cmd + " keynumidx")
        first = check(int(fspec["firstkey"]), 0, 0xFFFF, cmd + " firstkey")
        step = check(int(fspec["keystep"]), 0, 0xFFFF, cmd + " keystep")
        find = f"FindKeys::Keynum {{ keynum_idx: {idx}, first_key: {first}, step: {step} }}"
    elif ftype == "unknown":
        find = "FindKeys::Unknown"
    else:
        raise ValueError(f"{cmd}: unknown find_keys type {ftype!r}")

    return KeySpec(begin, find, kflags), raw_flags, btype, ftype


def parse_command(raw: object) -> Command:
    if not isinstance(raw, list) or len(raw) < 6:
        raise ValueError(f"unexpected COMMAND entry: {raw!r}")
    name = str(raw[0]).lower()
    redis_flags = {str(f).lower() for f in raw[2]}
    acl = {str(c).lower() for c in raw[6]} if len(raw) > 6 and raw[6] else set()
    tips = {str(t).lower() for t in raw[7]} if len(raw) > 7 and raw[7] else set()
    key_specs_raw = raw[8] if len(raw) > 8 and raw[8] else []
    subs_raw = raw[9] if len(raw) > 9 and raw[9] else []

    bits = {COMMAND_FLAGS[f] for f in redis_flags if f in COMMAND_FLAGS}
    bits |= {ACL_FLAGS[c] for c in acl if c in ACL_FLAGS}
    bits |= {TIP_FLAGS[t] for t in tips if t in TIP_FLAGS}
    subcommands = sorted((parse_command(s) for s in subs_raw), key=lambda c: c.name.encode())
    if subcommands:
        bits.add("CONTAINER")

    cmd = Command(
        name=name,
        arity=check(int(raw[1]), -0x8000, 0x7FFF, name + " arity"),
        flags=[f for f in FLAG_ORDER if f in bits],
        first_key=check(int(raw[3]), -0x8000, 0x7FFF, name + " first key"),
        last_key=check(int(raw[4]), -0x8000, 0x7FFF, name + " last key"),
        step=check(int(raw[5]), -0x8000, 0x7FFF, name + " step"),
        subcommands=subcommands,
    )
    for ks in key_specs_raw:
        spec, raw_flags, btype, ftype = parse_key_spec(name, ks)
        cmd.key_specs.append(spec)
        cmd.raw_key_flags.append(raw_flags)
        cmd.begin_types.append(btype)
        cmd.find_types.append(ftype)
    return cmd


# --------------------------------------------------------------------------- output


def emit_command(cmd: Command, indent: str, out: list[str]) -> None:
    flags = " | ".join(f"flags::{f}" for f in cmd.flags) or "0"
    out.append(f"{indent}CommandSpec {{")
    inner = indent + "    "
    out.append(
        f"{inner}name: {rust_str(cmd.name)}, arity: {cmd.arity}, flags: {flags}, "
        f"first_key: {cmd.first_key}, last_key: {cmd.last_key}, step: {cmd.step},"
    )
    if cmd.key_specs:
        out.append(f"{inner}key_specs: &[")
        for ks in cmd.key_specs:
            kf = " | ".join(f"key_flags::{f}" for f in ks.flags) or "0"
            out.append(f"{inner}    KeySpec {{ begin: {ks.begin}, find: {ks.find}, flags: {kf} }},")
        out.append(f"{inner}],")
    else:
        out.append(f"{inner}key_specs: &[],")
    if cmd.subcommands:
        out.append(f"{inner}subcommands: &[")
        for sub in cmd.subcommands:
            emit_command(sub, inner + "    ", out)
        out.append(f"{inner}],")
    else:
        out.append(f"{inner}subcommands: &[],")
    out.append(f"{indent}}},")


def render(commands: list[Command], version: str) -> str:
    out = [
        f"// @generated by tools/gen_command_table.py from Redis {version} — do not edit",
        "//! The Redis command table: every command and subcommand with its flags and key specs.",
        "// rustfmt formats `@generated` files too; keep this one as generated (one line per key spec).",
        "#![cfg_attr(rustfmt, rustfmt::skip)]",
        "",
        "use super::spec::{flags, key_flags, BeginSearch, CommandSpec, FindKeys, KeySpec};",
        "",
        f"/// Every command of Redis {version}, sorted by name.",
        "pub static COMMANDS: &[CommandSpec] = &[",
    ]
    for cmd in commands:
        emit_command(cmd, "    ", out)
    out += [
        "];",
        "",
        "/// The Redis version the table was generated from.",
        f"pub const REDIS_VERSION: &str = {rust_str(version)};",
        "",
    ]
    return "\n".join(out)


def summary(commands: list[Command]) -> str:
    lines = []
    every = [c for top in commands for c in [top, *top.subcommands]]
    n_sub = sum(len(c.subcommands) for c in commands)
    lines.append(f"{len(commands)} commands, {n_sub} subcommands")
    odd = []
    for c in every:
        for i, ks in enumerate(c.key_specs):
            notes = []
            if "INCOMPLETE" in ks.flags:
                notes.append("INCOMPLETE")
            if "VARIABLE_FLAGS" in ks.flags:
                notes.append("VARIABLE_FLAGS")
            if "NOT_KEY" in ks.flags:
                notes.append("NOT_KEY")
            if c.begin_types[i] == "unknown":
                notes.append("begin_search unknown")
            if c.find_types[i] == "unknown":
                notes.append("find_keys unknown")
            if notes:
                odd.append(f"  {c.name} spec#{i}: {', '.join(notes)}")
    if odd:
        lines.append("key specs worth a look:")
        lines += odd
    for flag in TIP_FLAGS.values():
        names = [c.name for c in every if flag in c.flags]
        lines.append(f"{flag} ({len(names)}): {' '.join(names)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary: str, workdir: str) -> tuple[subprocess.Popen, int]:
    last_err: Exception | None = None
    for _ in range(5):  # the free port may be taken between probing and binding
        port = free_port()
        log_path = os.path.join(workdir, f"redis-{port}.log")
        log_file = open(log_path, "wb")
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", workdir, "--logfile", ""],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )
        log_file.close()  # the child holds its own descriptor
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                conn = Resp("127.0.0.1", port, timeout=2)
                try:
                    if conn.call("PING") == "PONG":
                        return proc, port
                finally:
                    conn.close()
            except (OSError, RedisError) as e:
                last_err = e
                time.sleep(0.05)
        stop_server(proc)
        with open(log_path, "rb") as f:
            log = f.read().decode(errors="replace")
        last_err = RuntimeError(f"redis-server did not come up on port {port}:\n{log}")
    raise RuntimeError(f"could not start redis-server: {last_err}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fetch(host: str, port: int) -> tuple[list[Command], str]:
    conn = Resp(host, port)
    try:
        info = conn.call("INFO", "server")
        version = next(
            (l.split(":", 1)[1].strip() for l in str(info).splitlines() if l.startswith("redis_version:")),
            None,
        )
        if not version:
            raise RuntimeError("INFO server reported no redis_version")
        try:
            raw = conn.call("COMMAND", "INFO")
        except RedisError:
            raw = None
        if not raw:  # older servers: COMMAND INFO needs names
            raw = conn.call("COMMAND")
    finally:
        conn.close()
    if not isinstance(raw, list):
        raise RuntimeError(f"unexpected COMMAND reply: {raw!r}")
    commands = [parse_command(c) for c in raw if c is not None]
    commands.sort(key=lambda c: c.name.encode())
    names = [c.name for c in commands]
    if len(set(names)) != len(names):
        raise RuntimeError("duplicate command names in COMMAND reply")
    return commands, version


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default=None, help="query a running server instead of starting one")
    ap.add_argument("--port", type=int, default=None, help="port of a running server (host defaults to 127.0.0.1)")
    ap.add_argument("--redis-server", default="redis-server", help="redis-server binary to start (default: from PATH)")
    ap.add_argument("--stdout", action="store_true", help="print the Rust source instead of writing it")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"output file (default: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})")
    args = ap.parse_args()

    if args.host is not None or args.port is not None:
        commands, version = fetch(args.host or "127.0.0.1", args.port or 6379)
    else:
        with tempfile.TemporaryDirectory(prefix="gen_command_table.") as workdir:
            proc, port = start_server(args.redis_server, workdir)
            try:
                commands, version = fetch("127.0.0.1", port)
            finally:
                stop_server(proc)

    source = render(commands, version)
    if args.stdout:
        sys.stdout.write(source)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(source, encoding="utf-8")
        os.replace(tmp, args.output)
        print(f"wrote {args.output} (Redis {version})", file=sys.stderr)
    print(summary(commands), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
