#!/usr/bin/env bash
# Install the Debian packages hubmgr needs, when missing. Usage: system-deps.sh run|test
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ]; }
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
have docker-registry || need+=(docker-registry)
have redis-server || need+=(redis-server)
if [ "${1:-run}" = test ]; then
  have skopeo || need+=(skopeo)
  have chromium || need+=(chromium)
  have docker-compose || need+=(docker-compose)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "hubmgr needs these Debian packages: ${need[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
# Debian starts services from packages; hubmgr runs its own, private instances.
for svc in docker-registry redis-server; do
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
done
