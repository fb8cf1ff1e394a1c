#!/bin/sh
# MPI simulation: 1 server + N worker ranks, on this machine or, with an Open MPI host file, on several
# (doc/simulation-cluster.md). N = train_args.client_num_per_round (each worker trains the client it is
# assigned that round; 9 with the defaults: one per device) or N = client_num_in_total (one rank per client).
#   sh run_simulation.sh N [CONFIG] [--hostfile FILE]      (default CONFIG: config_simulation/fedml_config.yaml;
#                                                           FEDIOT_HOSTFILE=FILE works too)
# The last line of output is the run directory.
set -u
usage="usage: sh run_simulation.sh N [CONFIG] [--hostfile FILE]   (N = worker ranks: clients per round, 1..64)"
HOSTFILE="${FEDIOT_HOSTFILE:-}"
CONFIG_ARG=""
N=""
while [ $# -gt 0 ]; do
  case "$1" in
    --hostfile) [ $# -ge 2 ] || { echo "error: --hostfile needs a file. $usage" >&2; exit 2; }; HOSTFILE="$2"; shift 2 ;;
    --hostfile=*) HOSTFILE="${1#--hostfile=}"; shift ;;
    -*) echo "error: unknown option $1. $usage" >&2; exit 2 ;;
    *) if [ -z "$N" ]; then N="$1"; elif [ -z "$CONFIG_ARG" ]; then CONFIG_ARG="$1";
       else echo "error: unexpected argument $1. $usage" >&2; exit 2; fi; shift ;;
  esac
done
case "$N" in
  ''|*[!0-9]*) echo "error: N must be a number of worker ranks (1..64). $usage" >&2; exit 2 ;;
esac
if [ "$N" -lt 1 ] || [ "$N" -gt 64 ]; then echo "error: N = $N; expected 1..64. $usage" >&2; exit 2; fi
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/launcher_env.sh"
set_config "${CONFIG_ARG:-$HERE/config_simulation/fedml_config.yaml}"
PYDIR="$(dirname "$PY")"
if [ -x "$PYDIR/mpirun" ]; then MPIRUN="$PYDIR/mpirun"; else MPIRUN="$(command -v mpirun || true)"; fi
if [ -z "$MPIRUN" ]; then echo "error: mpirun not found; install requirements.txt (it provides Open MPI from PyPI)" >&2; exit 2; fi

# N+1 ranks share few cores: let a rank that waits in MPI yield its core instead of spinning.
export OMPI_MCA_mpi_yield_when_idle=1
# ranks write through mpirun's pseudo-terminal: tell them whether the user's stdout is a terminal
if [ -t 1 ]; then export FEDIOT_TTY=1; else export FEDIOT_TTY=0; fi
# one machine: N+1 ranks on its cores; with a host file its slots place the ranks (oversubscribing would let
# mpirun put every rank on the first host), unbound: a host may list more slots than cores (ranks mostly wait)
if [ -n "$HOSTFILE" ]; then MPI_FLAGS="--bind-to none"; else MPI_FLAGS="--oversubscribe"; fi
[ "$(id -u)" = "0" ] && MPI_FLAGS="$MPI_FLAGS --allow-run-as-root"
if [ -n "$HOSTFILE" ]; then
  case "$HOSTFILE" in /*) ;; *) HOSTFILE="$(pwd)/$HOSTFILE" ;; esac
  if [ ! -f "$HOSTFILE" ]; then echo "error: host file $HOSTFILE not found. $usage" >&2; exit 2; fi
  if ! grep -Eq '^[[:space:]]*[^#[:space:]]' "$HOSTFILE"; then
    echo "error: host file $HOSTFILE lists no host (expected lines like: nodeA slots=4)" >&2; exit 2
  fi
  # every rank starts in the same directory with the same Python: the repository and its .venv must sit at
  # the same path on every host; rank 0 (the server, first slot of the first host) writes the run directory;
  # the slots listed must add up to N+1
  MPI_FLAGS="$MPI_FLAGS --hostfile $HOSTFILE"
  echo "hosts from $HOSTFILE: $(grep -Ev '^[[:space:]]*(#|$)' "$HOSTFILE" | awk '{print $1}' | tr '\n' ' ')" >&2
fi
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
