# Sourced by scripts that need redis-server and redis-cli. Installs them with apt-get on a
# fresh Debian/Ubuntu machine when run as root; otherwise says exactly what to install.
ensure_redis() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]}; install with: sudo apt-get install -y ${need[*]}" >&2
    return 1
  fi
}
