#!/usr/bin/env bash
# Starts a Docker engine beside Podman for the runtime test matrix (Debian's docker.io,
# no systemd, no bridge, no iptables: agent containers use NetworkMode none anyway), and
# loads the agent image into it from Podman. Idempotent. Prints the socket URL on stdout.
#   MGX_DOCKER_DIR (default /run/mgx-docker), MGX_DOCKER_DATA (default /var/lib/mgx-docker)
set -euo pipefail
DIR="${MGX_DOCKER_DIR:-/run/mgx-docker}"
DATA="${MGX_DOCKER_DATA:-/var/lib/mgx-docker}"
SOCK="$DIR/docker.sock"
IMAGE="${AGENT_CONTAINER_IMAGE:-mgx-agent:latest}"
say() { printf '[mgx docker] %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "needs root to start dockerd"; exit 1; }
if ! command -v dockerd >/dev/null; then
  say "installing docker.io"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null; }
fi
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER="$(command -v docker)"

ping() {
  [ -S "$SOCK" ] && node -e 'require("http").get({ socketPath: process.argv[1], path: "/_ping", timeout: 2000 }, (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on("error", () => process.exit(1))' "$SOCK"
}
if ! ping; then
  mkdir -p "$DIR" "$DATA"
  rm -f "$SOCK"
  # shellcheck source=../daemon.sh
  . "$(dirname "${BASH_SOURCE[0]}")/../daemon.sh"
  start_daemon "$DIR" /var/log/mgx-dockerd.log dockerd --host "unix://$SOCK" --data-root "$DATA" --exec-root "$DIR/exec" \
    --pidfile "$DIR/docker.pid" --bridge=none --iptables=false --ip6tables=false
  for _ in $(seq 1 150); do ping && break; sleep 0.2; done
  ping || { say "dockerd did not answer on $SOCK; see /var/log/mgx-dockerd.log"; exit 1; }
  say "dockerd answers on $SOCK"
fi

WANT="$(podman image inspect "$IMAGE" --format '{{ index .Config.Labels "mgx.build-hash" }}')"
HAVE="$("$DOCKER" -H "unix://$SOCK" image inspect "$IMAGE" --format '{{ index .Config.Labels "mgx.build-hash" }}' 2>/dev/null || true)"
if [ "$WANT" != "$HAVE" ]; then
  say "loading $IMAGE ($WANT) into docker"
  podman save "$IMAGE" | "$DOCKER" -H "unix://$SOCK" load -q >/dev/null
  # podman save names it localhost/…; docker needs the short name too
  "$DOCKER" -H "unix://$SOCK" tag "localhost/$IMAGE" "$IMAGE" 2>/dev/null || true
fi
echo "unix://$SOCK"
