#!/usr/bin/env bash
# Runs `turnout demo`: two local redis-server processes (legacy, and new as its replica)
# and the proxy in front of them, with config/demo.toml. Ctrl-C stops everything.
# On a fresh Debian/Ubuntu machine it first installs redis-server (root needed for that).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/ensure-redis.sh
ensure_redis

exec cargo run --release --locked -- demo "$@"
