#!/usr/bin/env bash
# Everything mgx needs on this machine, idempotent and quick when already done: Podman and
# its API service, Prometheus (its server and promtool, for the metrics tests), the npm
# dependencies, the web console's build, and the agent image. `npm run setup`, `npm run demo`, `npm test`,
# `npm run bench` and .ci/run call it; run it as root on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '[mgx setup] %s\n' "$*" >&2; }

bash infra/podman/setup.sh

# Debian packages the tests use: a real Prometheus and promtool (metrics tests), and a
# Chromium for the browser tests (puppeteer-core drives it and downloads no browser)
missing=()
{ command -v promtool >/dev/null && [ -x /usr/bin/prometheus ]; } || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    say "installing ${missing[*]} (for the metrics and browser tests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
  else
    say "${missing[*]} missing (the metrics and browser tests need them): sudo apt-get install -y ${missing[*]}"
  fi
fi

if [ ! -x node_modules/.bin/tsx ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
bash scripts/build-console.sh
bash infra/build-agent.sh
