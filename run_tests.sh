#!/usr/bin/env bash
# Install what is needed (bash install.sh) and run the whole test suite. Extra args go to pytest.
#   bash run_tests.sh [-k expr]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
bash install.sh
PY=.venv/bin/python
# One compute thread per process: the suite runs three pytest processes and the servers, clients and MPI ranks they
# start on two cores. tests/conftest.py gives torch one thread; numpy's BLAS (OpenBLAS) started a second that only
# spun (tests/test_rounds.py alone, 2026-12-08: 46 s either way, 62 s of CPU with two threads, 46 s with one). Set
# these to override.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" NUMBA_NUM_THREADS="${NUMBA_NUM_THREADS:-1}"
if [ $# -gt 0 ]; then exec "$PY" -m pytest -q tests "$@"; fi  # with pytest arguments: one process, as asked
# Three pytest processes on two cores. Most modules run on two xdist workers (`-n 2 --dist loadfile`: each module on
# one worker, its fixtures set up once); the LAN of namespaces and the deployments, which mostly wait on real time
# (captures, replays, deadlines, processes starting), run in a third process beside them. Measured (2 cores): with
# two processes (all else beside the waiting ones) the machine was 2/3 busy and the suite took 8 min; with xdist
# 6:01 / 6:27 (clean clone, 2026-12-02). The slowest tests of each are listed (--durations). Its output follows the
# main run's.
WAITING="tests/test_lan.py tests/test_deployment.py tests/test_status_page.py"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
"$PY" -m pytest -q --durations=8 $WAITING > "$LOG" 2>&1 &
WAITING_PID=$!
IGNORE=""
for f in $WAITING; do IGNORE="$IGNORE --ignore=$f"; done
set +e
# shellcheck disable=SC2086
"$PY" -m pytest -q --durations=12 -n 2 --dist loadfile tests $IGNORE
MAIN=$?
wait "$WAITING_PID"
SECOND=$?
set -e
echo "---- $WAITING ----"
cat "$LOG"
[ "$MAIN" -eq 0 ] && [ "$SECOND" -eq 0 ]
