#!/usr/bin/env bash
# Build FedML MLOps client and server packages (offline, `fedml build`) from a clean copy of the
# sources: our packages, the entry file, requirements and config/ — no data, runs, caches or tests.
#   bash build_mlops_pkg.sh [DEST]      (default DEST: dist/mlops)
# Only needed for FedML's cloud MLOps (TensorOpera); LAN deployment uses run_server.sh/run_client.sh.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DEST="${1:-$HERE/dist/mlops}"
case "$DEST" in /*) ;; *) DEST="$(pwd)/$DEST" ;; esac
if [ -n "${PYTHON:-}" ]; then PYDIR="$(dirname "$PYTHON")"
elif [ -x "$HERE/.venv/bin/fedml" ]; then PYDIR="$HERE/.venv/bin"
else PYDIR="$(dirname "$(command -v python3)")"; fi
FEDML="$PYDIR/fedml"
[ -x "$FEDML" ] || { echo "error: fedml CLI not found next to $PYDIR/python; run bash install.sh" >&2; exit 2; }

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/src" "$STAGE/conf"
cd "$HERE"
# tracked sources only (never .venv, data caches, runs)
git ls-files -- main_fedml_iot.py requirements.txt 'fediot/*.py' 'data/*.py' 'traffic/*.py' 'model/*.py' \
  'evaluation/*.py' 'federation/*.py' 'trainer/*.py' 'deployment/*.py' \
  | while read -r f; do mkdir -p "$STAGE/src/$(dirname "$f")"; cp "$f" "$STAGE/src/$f"; done
cp config/fedml_config.yaml "$STAGE/conf/fedml.yaml"
cp config/grpc_ipconfig.csv "$STAGE/conf/grpc_ipconfig.csv"
mkdir -p "$DEST"
# both packages at once (each `fedml build` spends most of its time importing fedml); each with its own HOME: fedml
# build stages in ~/.fedml/fedml-mlops-build, which it deletes first
for type in client server; do
  mkdir -p "$STAGE/home-$type"
  HOME="$STAGE/home-$type" "$FEDML" build -t "$type" -sf "$STAGE/src" -ep main_fedml_iot.py -cf "$STAGE/conf" -df "$DEST" \
    >"$STAGE/build-$type.log" 2>&1 &
  eval "pid_$type=$!"
done
for type in client server; do
  eval "pid=\$pid_$type"
  wait "$pid" || { cat "$STAGE/build-$type.log" >&2; echo "error: fedml build -t $type failed" >&2; exit 1; }
done
ls "$DEST"/dist-packages/*.zip
