#!/usr/bin/env bash
# Create .venv (Python 3.10 or 3.11) and install FedIoT's requirements into it. Safe to re-run.
#   bash install.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
PY="${PYTHON_FOR_VENV:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$ver" in
  3.10|3.11) ;;
  *) echo "error: FedIoT needs Python 3.10 or 3.11 (fedml 0.9.6 / wandb 0.13.2 fail on 3.12+); found $PY = $ver. Set PYTHON_FOR_VENV=/path/to/python3.11" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $PY ($ver)"
  "$PY" -m venv .venv
fi
stamp=".venv/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing requirements.txt into .venv (first time: several GB, mostly PyTorch)"
  .venv/bin/pip install --disable-pip-version-check -q -r requirements.txt
  echo "$want" > "$stamp"
else
  echo ".venv is up to date with requirements.txt"
fi
