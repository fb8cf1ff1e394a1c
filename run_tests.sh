#!/usr/bin/env bash
# Install what is needed (bash install.sh) and run the whole test suite. Extra args go to pytest.
#   bash run_tests.sh [-k expr]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
bash install.sh
PY=.venv/bin/python
if [ $# -gt 0 ]; then exec "$PY" -m pytest -q tests "$@"; fi  # with pytest arguments: one process, as asked
# The suite is CPU-bound except the modules that mostly wait on real time (the LAN of namespaces, deployments and
# attacks on them: captures, replays, deadlines, processes starting): those run in a second pytest process beside
# the rest, each module's fixtures set up once (measured: moving the mpirun modules there too was slower, and so was
# moving README's 9-client run there, which also left the LAN test's real-time traffic short of CPU). Its output
# follows the main run's.
WAITING="tests/test_lan.py tests/test_deployment.py tests/test_security.py"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
"$PY" -m pytest -q $WAITING > "$LOG" 2>&1 &
WAITING_PID=$!
IGNORE=""
for f in $WAITING; do IGNORE="$IGNORE --ignore=$f"; done
set +e
# shellcheck disable=SC2086
"$PY" -m pytest -q tests $IGNORE
MAIN=$?
wait "$WAITING_PID"
SECOND=$?
set -e
echo "---- $WAITING ----"
cat "$LOG"
[ "$MAIN" -eq 0 ] && [ "$SECOND" -eq 0 ]
