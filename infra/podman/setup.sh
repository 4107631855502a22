#!/usr/bin/env bash
# Idempotent Podman set-up for mgx on Debian 12: packages, containers.conf, and the
# Docker-compatible API service on $MGX_PODMAN_SOCKET (default /run/podman/podman.sock).
# Quick when everything is already in place.
set -euo pipefail

SOCK="${MGX_PODMAN_SOCKET:-/run/podman/podman.sock}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF=/etc/containers/containers.conf
PKGS=(podman runc uidmap slirp4netns fuse-overlayfs tini)

say() { printf '[mgx setup] %s\n' "$*" >&2; }

ping_socket() {
  [ -S "$SOCK" ] && node -e '
    const req = require("http").get({ socketPath: process.argv[1], path: "/_ping", timeout: 2000 }, (res) => process.exit(res.statusCode === 200 ? 0 : 1));
    req.on("error", () => process.exit(1)); req.on("timeout", () => process.exit(1));' "$SOCK"
}

if ping_socket; then
  say "container API answers on $SOCK"
  exit 0
fi

missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done

if [ "$(id -u)" -ne 0 ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    say "missing packages: ${missing[*]}"
    say "install them as root:  sudo apt-get install -y ${PKGS[*]}"
    say "then run this script as root, or start a service yourself and set CONTAINER_HOST=unix:///path/to/podman.sock"
    exit 1
  fi
  say "not root and nothing answers on $SOCK."
  say "start a rootless service:  podman system service --time=0 unix://\$XDG_RUNTIME_DIR/podman/podman.sock &"
  say "and set CONTAINER_HOST to it, or run this script as root."
  exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p /etc/containers
if ! cmp -s "$HERE/containers.conf" "$CONF"; then
  if [ -f "$CONF" ] && ! grep -q '^# mgx:' "$CONF"; then
    cp "$CONF" "$CONF.before-mgx"
    say "kept the previous $CONF as $CONF.before-mgx"
  fi
  install -m 0644 "$HERE/containers.conf" "$CONF"
  say "wrote $CONF (runtime runc, default ulimits)"
fi

mkdir -p "$(dirname "$SOCK")"
rm -f "$SOCK"
say "starting podman system service on $SOCK"
LOG=/var/log/mgx-podman-service.log
# shellcheck source=../daemon.sh
. "$HERE/../daemon.sh"
start_daemon /var/lib/mgx/podman "$LOG" podman system service --time=0 "unix://$SOCK"

for _ in $(seq 1 100); do
  if ping_socket; then say "container API answers on $SOCK"; exit 0; fi
  sleep 0.1
done
say "podman service did not answer on $SOCK within 10 s; see $LOG"
exit 1
