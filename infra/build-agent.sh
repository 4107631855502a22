#!/usr/bin/env bash
# Builds the agent image (AGENT_CONTAINER_IMAGE, default mgx-agent:latest) offline:
# bundles the runner, assembles a minimal root filesystem from this host's node, and builds
# infra/Dockerfile.agent-runner FROM scratch. Skips the build when the image already holds
# exactly these inputs (the label mgx.build-hash). The label mgx.framework-catalog records the
# bundled frameworks (JSON, from `node runner.mjs --catalog`); the server reports them.
#   MGX_BUILD_ENGINE=podman|docker (default podman)   MGX_FORCE_BUILD=1 to rebuild anyway
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${AGENT_CONTAINER_IMAGE:-mgx-agent:latest}"
ENGINE="${MGX_BUILD_ENGINE:-podman}"
AGENT_UID=10001
say() { printf '[build-agent] %s\n' "$*" >&2; }

command -v "$ENGINE" >/dev/null || { say "$ENGINE is not installed; run: sudo npm run setup"; exit 1; }
NODE_BIN="$(readlink -f "$(command -v node)")"
TINI="$(command -v tini-static || true)"
[ -n "$TINI" ] || TINI=/usr/bin/tini-static
[ -x "$TINI" ] || { say "tini-static is missing; install it: sudo apt-get install -y tini"; exit 1; }

(cd "$ROOT/runner" && node ../scripts/build-runner.mjs)
BUNDLE="$ROOT/runner/dist/runner.mjs"

HASH="$( { sha256sum "$BUNDLE" "$ROOT/infra/Dockerfile.agent-runner" "$ROOT/infra/build-agent.sh" "$NODE_BIN" "$TINI" | cut -d' ' -f1; } | sha256sum | cut -c1-16)"
CURRENT="$($ENGINE image inspect "$IMAGE" --format '{{ index .Config.Labels "mgx.build-hash" }}' 2>/dev/null || true)"
if [ "$CURRENT" = "$HASH" ] && [ "${MGX_FORCE_BUILD:-0}" != 1 ]; then
  say "$IMAGE is up to date ($HASH)"
  exit 0
fi

CTX="$(mktemp -d /tmp/mgx-agent-build.XXXXXX)"
trap 'rm -rf "$CTX"' EXIT
R="$CTX/rootfs"
mkdir -p "$R/usr/local/bin" "$R/sbin" "$R/opt/mgx" "$R/etc/ssl/certs" "$R/tmp" "$R/workspace" "$R/run/mgx"

cp "$NODE_BIN" "$R/usr/local/bin/node"
# the shared libraries node links against, at the paths the loader expects
for lib in $(ldd "$NODE_BIN" | grep -oE '/[^ ]+' | sort -u); do
  cp --parents -L "$lib" "$R/"
done
cp "$TINI" "$R/sbin/tini"
cp "$BUNDLE" "$R/opt/mgx/runner.mjs"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/"; fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nmgx:x:%s:%s:mgx agent:/tmp:/sbin/nologin\n' $AGENT_UID $AGENT_UID > "$R/etc/passwd"
printf 'root:x:0:\nmgx:x:%s:\n' $AGENT_UID > "$R/etc/group"
printf 'hosts: files dns\n' > "$R/etc/nsswitch.conf"
chmod 1777 "$R/tmp"
chown "$AGENT_UID:$AGENT_UID" "$R/workspace" 2>/dev/null || chmod 0777 "$R/workspace"
cp "$ROOT/infra/Dockerfile.agent-runner" "$CTX/Dockerfile"

# the frameworks as the bundle itself reports them: the server reads this label for frameworks.list
CATALOG="$("$NODE_BIN" "$BUNDLE" --catalog)"
FRAMEWORKS="$(printf '%s' "$CATALOG" | "$NODE_BIN" -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).map((f) => f.name).join(",")))')"
say "building $IMAGE ($HASH) with $ENGINE: node $("$NODE_BIN" --version), frameworks $FRAMEWORKS"
"$ENGINE" build -q -f "$CTX/Dockerfile" -t "$IMAGE" \
  --label "mgx.build-hash=$HASH" \
  --label "mgx.frameworks=$FRAMEWORKS" \
  --label "mgx.framework-catalog=$CATALOG" \
  --label "mgx.node-version=$("$NODE_BIN" --version)" \
  "$CTX" >/dev/null
say "built $IMAGE ($(du -sh "$R" | cut -f1) root filesystem)"
