#!/usr/bin/env bash
# `npm run demo`: sets up what is missing, starts the platform, runs one real agent
# session through the tRPC API showing its events live, prints a summary, and stops.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec node --import tsx scripts/demo.ts
