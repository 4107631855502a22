#!/usr/bin/env bash
# Everything mgx needs on this machine, idempotent and quick when already done:
# Podman and its API service, the npm dependencies, and the agent image.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '[mgx setup] %s\n' "$*" >&2; }

bash infra/podman/setup.sh
if [ ! -x node_modules/.bin/tsx ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
bash infra/build-agent.sh
