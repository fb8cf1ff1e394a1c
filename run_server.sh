#!/usr/bin/env bash
# FedIoT deployment server (gRPC on the LAN, no cloud).
#   bash run_server.sh [CONFIG] [--resume RUN_DIR]      (default CONFIG: config/fedml_config.yaml)
# The last line of output is the run directory.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
CONFIG="$HERE/config/fedml_config.yaml"
RESUME=()
while [ $# -gt 0 ]; do
  case "$1" in
    --resume) [ $# -ge 2 ] || { echo "error: --resume needs a run directory" >&2; exit 2; }
              RESUME=(--resume "$(cd "$2" 2>/dev/null && pwd || echo "$2")"); shift 2 ;;
    -h|--help) sed -n 2,4p "$0"; exit 0 ;;
    *) CONFIG="$1"; shift ;;
  esac
done
. "$HERE/launcher_env.sh"
set_config "$CONFIG"
cd "$HERE"
exec "$PY" -m main_fedml_iot --cf "$CONFIG" --role server --rank 0 "${RESUME[@]}"
