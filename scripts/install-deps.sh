#!/usr/bin/env bash
# Installs everything the tests and the local stack need on a fresh Debian 12 machine.
# Idempotent: each step checks first, so a warm machine spends a few seconds here.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[install-deps] %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu)
command -v socat >/dev/null || need_apt+=(base)
command -v musl-gcc >/dev/null || need_apt+=(base)
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(base)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt: installing system packages"
  export DEBIAN_FRONTEND=noninteractive
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" |
      $SUDO tee /etc/apt/sources.list.d/backports.list >/dev/null
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends \
    openipmi ipmitool socat musl-tools gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
    qemu-user-static dnsmasq-base busybox-static iproute2 >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports \
    qemu-system-x86 >/dev/null
fi

# PostgreSQL binaries (initdb, pg_ctl): the manager's tests start a throwaway cluster.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "apt: installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

log "rust: musl targets"
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

VENV=${OUTBAND_VENV:-/opt/outband-venv}
# Python test peers: vncdotool (independent VNC client), schemathesis (API fuzzing),
# sushy-tools (Redfish BMC emulator), pyghmi (second IPMI BMC), websockify (WebSocket
# VNC/serial), websocket-client. The stamp holds the requirements file, so a change to it
# reinstalls.
REQ=scripts/requirements-test.txt
if ! cmp -s "$REQ" "$VENV/.outband-requirements" 2>/dev/null; then
  log "python: test peers from $REQ into $VENV"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/.outband-requirements"
fi
log "done"
