#!/usr/bin/env bash
# Install what is needed (bash install.sh) and run the whole test suite. Extra args go to pytest.
#   bash run_tests.sh [-k expr]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
bash install.sh
PY=.venv/bin/python
# One compute thread per process: the suite runs four pytest processes and the servers, clients and MPI ranks they
# start on two cores. tests/conftest.py gives torch one thread; numpy's BLAS (OpenBLAS) started a second that only
# spun (tests/test_rounds.py alone, 2026-12-08: 46 s either way, 62 s of CPU with two threads, 46 s with one). Set
# these to override.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" NUMBA_NUM_THREADS="${NUMBA_NUM_THREADS:-1}"
if [ $# -gt 0 ]; then exec "$PY" -m pytest -q tests "$@"; fi  # with pytest arguments: one process, as asked
# Four pytest processes on two cores. The CPU-bound modules run on two xdist workers (`-n 2 --dist loadfile`: each
# module on one worker, its fixtures set up once; slowest first, tests/conftest.py). The modules that mostly wait on
# real time (processes starting, deadlines, slow peers, captures, a browser) run beside them in two more processes:
# the LAN of namespaces alone, the rest in the other. Measured on 2 cores (clean clones): the waiting ones in one
# process beside the rest 5:51 (2026-12-08, uv install); in two such processes and slowest first, see doc/architecture.md.
WAITING_LAN="tests/test_lan.py"
WAITING="tests/test_deployment.py tests/test_status_page.py tests/test_transport_admission.py tests/test_status.py
 tests/test_watch.py tests/test_bench_procmem.py tests/test_download.py tests/test_early_warning.py"
LOG_LAN="$(mktemp)"
LOG="$(mktemp)"
trap 'rm -f "$LOG" "$LOG_LAN"' EXIT
# shellcheck disable=SC2086
"$PY" -m pytest -q --durations=4 $WAITING_LAN > "$LOG_LAN" 2>&1 &
LAN_PID=$!
# shellcheck disable=SC2086
"$PY" -m pytest -q --durations=8 $WAITING > "$LOG" 2>&1 &
WAITING_PID=$!
IGNORE=""
for f in $WAITING_LAN $WAITING; do IGNORE="$IGNORE --ignore=$f"; done
set +e
# shellcheck disable=SC2086
"$PY" -m pytest -q --durations=12 -n 2 --dist loadfile --no-loadscope-reorder tests $IGNORE
MAIN=$?
wait "$LAN_PID"
LAN=$?
wait "$WAITING_PID"
SECOND=$?
set -e
echo "---- $WAITING_LAN ----"
cat "$LOG_LAN"
echo "---- $(echo $WAITING) ----"
cat "$LOG"
[ "$MAIN" -eq 0 ] && [ "$LAN" -eq 0 ] && [ "$SECOND" -eq 0 ]
