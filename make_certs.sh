#!/usr/bin/env bash
# A private CA and one certificate per node for mutual TLS (see deployment/certs.py).
#   bash make_certs.sh OUT_DIR N [SERVER_HOST ...]
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/launcher_env.sh"
if [ $# -lt 2 ]; then echo "usage: bash make_certs.sh OUT_DIR N [SERVER_HOST ...]" >&2; exit 2; fi
case "$1" in /*) OUT="$1" ;; *) OUT="$(pwd)/$1" ;; esac
shift
cd "$HERE"
exec "$PY" -m deployment.certs "$OUT" "$@"
