#!/bin/sh
# MPI simulation on one machine: N clients (one per configured device) + 1 server = N+1 ranks.
#   sh run_simulation.sh N [CONFIG]      (default CONFIG: config_simulation/fedml_config.yaml)
# The last line of output is the run directory.
set -u
usage="usage: sh run_simulation.sh N [CONFIG]   (N = number of clients, 1..9)"
N="${1:-}"
case "$N" in
  ''|*[!0-9]*) echo "error: N must be a number of clients (1..9). $usage" >&2; exit 2 ;;
esac
if [ "$N" -lt 1 ] || [ "$N" -gt 9 ]; then echo "error: N = $N; expected 1..9. $usage" >&2; exit 2; fi
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/launcher_env.sh"
set_config "${2:-$HERE/config_simulation/fedml_config.yaml}"
PYDIR="$(dirname "$PY")"
if [ -x "$PYDIR/mpirun" ]; then MPIRUN="$PYDIR/mpirun"; else MPIRUN="$(command -v mpirun || true)"; fi
if [ -z "$MPIRUN" ]; then echo "error: mpirun not found; install requirements.txt (it provides Open MPI from PyPI)" >&2; exit 2; fi

# N+1 ranks share few cores: let a rank that waits in MPI yield its core instead of spinning.
export OMPI_MCA_mpi_yield_when_idle=1
# ranks write through mpirun's pseudo-terminal: tell them whether the user's stdout is a terminal
if [ -t 1 ]; then export FEDIOT_TTY=1; else export FEDIOT_TTY=0; fi
MPI_FLAGS="--oversubscribe"
[ "$(id -u)" = "0" ] && MPI_FLAGS="$MPI_FLAGS --allow-run-as-root"
TMP="$(mktemp -d)"
RUN_DIR_FILE="$TMP/run_dir"
ERR_FIFO="$TMP/stderr"
mkfifo "$ERR_FIFO"
trap 'rm -rf "$TMP"' EXIT
# mpirun adds a boxed "process exited with non-zero status" notice after our own one-line error;
# drop that redundant box (other mpirun notices, e.g. MPI_ABORT after a crash, are kept).
awk '
  /^----------------------------------------+$/ {
    if (inbox) { box = box $0 "\n"; if (box !~ /exited with non-zero status/) printf "%s", box; inbox = 0; box = "" }
    else { inbox = 1; box = $0 "\n" }
    next
  }
  inbox { box = box $0 "\n"; next }
  { print; fflush() }
  END { if (inbox) printf "%s", box }
' < "$ERR_FIFO" >&2 &
FILTER=$!
cd "$HERE"
# shellcheck disable=SC2086
"$MPIRUN" $MPI_FLAGS -np "$((N + 1))" "$PY" -m main_fedml_iot --cf "$CONFIG" --run_dir_file "$RUN_DIR_FILE" 2> "$ERR_FIFO"
rc=$?
wait "$FILTER"
if [ "$rc" -eq 0 ] && [ -s "$RUN_DIR_FILE" ]; then
  cat "$RUN_DIR_FILE"
elif [ -s "$RUN_DIR_FILE" ]; then
  echo "simulation failed (exit $rc); partial outputs and logs in $(cat "$RUN_DIR_FILE")" >&2
fi
exit "$rc"
