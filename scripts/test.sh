#!/usr/bin/env bash
# `npm test`: sets up what is missing (scripts/setup.sh), then type-checks and runs every
# test: unit, contract, and end to end against real Podman; then the runtime suite again
# against a Docker engine (the engine matrix). Set MGX_TEST_DOCKER=0 to leave Docker out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# set-up is scripts/setup.sh's: here only a check that says what is missing and how to get it
if ! command -v promtool >/dev/null || [ ! -x /usr/bin/prometheus ]; then
  echo "[mgx test] prometheus is missing, so the metrics tests will fail: run \`npm run setup\` as root," \
    "or sudo apt-get install -y prometheus" >&2
fi

echo "[mgx test] type-checking"
npx tsc -p tsconfig.json --noEmit

reports=()
status=0
run() { # label, env..., -- vitest args...
  local label=$1; shift
  local report; report="$(mktemp /tmp/mgx-vitest.XXXXXX.json)"
  reports+=("$report")
  echo "[mgx test] $label"
  env "$@" --reporter=default --reporter=json --outputFile.json="$report" || status=1
}

run "all tests on podman" npx vitest run "$@"

if [ "${MGX_TEST_DOCKER:-1}" != 0 ] && [ $# -eq 0 ]; then
  if [ "$(id -u)" -eq 0 ] && docker_host="$(bash infra/docker/setup.sh)"; then
    run "runtime suite on docker ($docker_host)" CONTAINER_HOST="$docker_host" npx vitest run packages/runtime test/e2e/endings.test.ts
  else
    echo "[mgx test] SKIPPED the docker engine matrix: needs root to start dockerd (or MGX_TEST_DOCKER=0)"
  fi
fi

# one plain closing line with the counts of every run
node -e '
  let p = 0, f = 0, s = 0;
  for (const file of process.argv.slice(1)) {
    try {
      const r = JSON.parse(require("fs").readFileSync(file, "utf8"));
      p += r.numPassedTests; f += r.numFailedTests; s += r.numPendingTests + r.numTodoTests;
    } catch { f += 1; }
  }
  console.log(`tests: ${p} passed, ${f} failed, ${s} skipped`);
' "${reports[@]}"
rm -f "${reports[@]}"
exit $status
