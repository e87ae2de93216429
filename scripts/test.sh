#!/usr/bin/env bash
# Runs turnout's whole test suite: unit tests, and integration tests against real
# redis-server processes that the harness starts on free loopback ports.
# On a fresh Debian/Ubuntu machine it first installs redis-server (root needed for that).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/ensure-redis.sh
ensure_redis

exec cargo test --locked --all-targets "$@"
