#!/usr/bin/env bash
# Everything mgx needs on this machine, idempotent and quick when already done: Podman and
# its API service, Prometheus (its server and promtool, for the metrics tests), the npm
# dependencies, and the agent image. `npm run setup`, `npm run demo`, `npm test`,
# `npm run bench` and .ci/run call it; run it as root on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '[mgx setup] %s\n' "$*" >&2; }

bash infra/podman/setup.sh

# the metrics tests scrape with a real Prometheus and check rules with promtool
if ! command -v promtool >/dev/null || [ ! -x /usr/bin/prometheus ]; then
  if [ "$(id -u)" -eq 0 ]; then
    say "installing prometheus (for the metrics tests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  else
    say "prometheus is missing (the metrics tests need it): sudo apt-get install -y prometheus"
  fi
fi

if [ ! -x node_modules/.bin/tsx ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
bash infra/build-agent.sh
