#!/usr/bin/env bash
# Install what is needed (bash install.sh) and run the whole test suite. Extra args go to pytest.
#   bash run_tests.sh [-k expr]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
bash install.sh
PY=.venv/bin/python
if [ $# -gt 0 ]; then exec "$PY" -m pytest -q tests "$@"; fi  # with pytest arguments: one process, as asked
# Four pytest processes on two cores. Most modules run on two xdist workers (`-n 2 --dist loadfile`: each module on
# one worker, its fixtures set up once); the LAN of namespaces, and the deployments with the status page, which mostly
# wait on real time (captures, replays, deadlines, processes starting), run in two more processes beside them.
# Measured (2 cores, clean clones): all waiting tests in one process beside the main run: 604 s for CI, that process
# 413 s and the main run 437 s (2026-12-07); split in two, see doc/architecture.md "Tests in layers". The slowest
# tests of each are listed (--durations); the waiting processes' output follows the main run's.
WAITING_GROUPS=("tests/test_lan.py" "tests/test_deployment.py tests/test_status_page.py")
LOGS=()
PIDS=()
IGNORE=""
for group in "${WAITING_GROUPS[@]}"; do
  log="$(mktemp)"
  LOGS+=("$log")
  # shellcheck disable=SC2086
  "$PY" -m pytest -q --durations=8 $group > "$log" 2>&1 &
  PIDS+=($!)
  for f in $group; do IGNORE="$IGNORE --ignore=$f"; done
done
trap 'rm -f "${LOGS[@]}"' EXIT
set +e
# shellcheck disable=SC2086
"$PY" -m pytest -q --durations=12 -n 2 --dist loadfile tests $IGNORE
STATUS=$?
for i in "${!PIDS[@]}"; do
  wait "${PIDS[$i]}"
  rc=$?
  [ "$rc" -eq 0 ] || STATUS=$rc
  echo "---- ${WAITING_GROUPS[$i]} ----"
  cat "${LOGS[$i]}"
done
set -e
exit "$STATUS"
