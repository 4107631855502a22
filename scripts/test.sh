#!/usr/bin/env bash
# `npm test`: makes sure the prerequisites are in place, then type-checks and runs every
# test (unit, contract, and end to end against the real container engine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# the metrics tests scrape with a real Prometheus and check rules with promtool
if ! command -v promtool >/dev/null || [ ! -x /usr/bin/prometheus ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "[mgx test] installing prometheus (for the metrics tests)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  else
    echo "[mgx test] prometheus is missing: sudo apt-get install -y prometheus" >&2
  fi
fi
echo "[mgx test] type-checking"
npx tsc -p tsconfig.json --noEmit
echo "[mgx test] running tests"
report="$(mktemp /tmp/mgx-vitest.XXXXXX.json)"
set +e
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
status=$?
set -e
# one plain closing line with the counts
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
' "$report" || true
rm -f "$report"
exit $status
