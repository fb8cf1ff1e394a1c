#!/bin/sh
# Centralized and local-only baselines on the same data, split, normalisation, threshold and metrics
# as the federated run, then a comparison table.
#   bash run_baselines.sh [CONFIG] [FEDERATED_RUN_DIR]
# The last line of output is the run directory (centralized/metrics.json, local/metrics.json).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/launcher_env.sh"
set_config "${1:-$HERE/config_simulation/fedml_config.yaml}"
FED="${2:-}"
if [ -n "$FED" ]; then case "$FED" in /*) ;; *) FED="$(pwd)/$FED" ;; esac; fi
cd "$HERE"
if [ -n "$FED" ]; then
  exec "$PY" -m baselines --cf "$CONFIG" --federated "$FED"
else
  exec "$PY" -m baselines --cf "$CONFIG"
fi
