#!/usr/bin/env bash
# Builds the web console (apps/console/dist, served by the server at /) when its sources, or
# the client it is built on, changed since the last build; quick when it is up to date.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dist=apps/console/dist/index.html
sources=(apps/console/src apps/console/public apps/console/index.html apps/console/vite.config.ts apps/console/package.json packages/client/src package-lock.json)
if [ -f "$dist" ] && [ -z "$(find "${sources[@]}" -newer "$dist" -print -quit)" ]; then
  exit 0
fi
printf '[mgx setup] %s\n' "building the web console (apps/console)" >&2
(cd apps/console && npx vite build --logLevel warn)
