#!/usr/bin/env bash
# `npm test`: sets up what is missing (scripts/setup.sh), then type-checks and runs every
# test: unit, contract, and end to end against real Podman; then the runtime suite, and the
# endings and usage end-to-end tests, again against a Docker engine (the engine matrix). Set
# MGX_TEST_DOCKER=0 to leave Docker out.
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

# the Docker engine first: the runtime suite runs on it below, and the fleet test runs a
# worker on it (MGX_TEST_DOCKER_HOST) beside one on Podman
docker_host=""
status=0
if [ "${MGX_TEST_DOCKER:-1}" != 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "[mgx test] SKIPPED the docker engine matrix: needs root to start dockerd (or MGX_TEST_DOCKER=0)"
  elif docker_host="$(timeout 600 bash infra/docker/setup.sh)"; then
    export MGX_TEST_DOCKER_HOST="$docker_host"
  else
    docker_host=""
    echo "[mgx test] the Docker engine did not start (see /var/log/mgx-dockerd.log): the docker matrix fails" >&2
    status=1
  fi
fi

reports=()
# a run that hangs fails here instead of holding the machine: a full run takes about 10 minutes
RUN_LIMIT="${MGX_TEST_RUN_LIMIT:-30m}"
run() { # label, env..., -- vitest args...
  local label=$1; shift
  local report; report="$(mktemp /tmp/mgx-vitest.XXXXXX.json)"
  reports+=("$report")
  echo "[mgx test] $label"
  local rc=0
  timeout -k 30 "$RUN_LIMIT" env "$@" --reporter=default --reporter=json --outputFile.json="$report" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "[mgx test] $label: stopped after $RUN_LIMIT (MGX_TEST_RUN_LIMIT): a test hangs" >&2
  fi
  [ "$rc" -eq 0 ] || status=1
}

run "all tests on podman" npx vitest run "$@"

if [ -n "$docker_host" ] && [ $# -eq 0 ]; then
  run "runtime suite on docker ($docker_host)" CONTAINER_HOST="$docker_host" npx vitest run packages/runtime test/e2e/endings.test.ts test/e2e/usage.test.ts
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
