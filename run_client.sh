#!/usr/bin/env bash
# FedIoT deployment client N (N = 1..number of devices in the config; client N holds devices[N-1]).
#   bash run_client.sh N [CONFIG]      (default CONFIG: config/fedml_config.yaml)
# The last line of output is the client's run directory.
set -u
N="${1:-}"
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/launcher_env.sh"
case "$N" in ''|*[!0-9]*)
  set_config "${2:-$HERE/config/fedml_config.yaml}"
  COUNT="$(cd "$HERE" && "$PY" -c 'import sys; from fediot.config import load; print(len(load(sys.argv[1]).devices))' "$CONFIG" 2>/dev/null || echo "the number of devices in the config")"
  echo "error: usage: bash run_client.sh N [CONFIG]  (N = client rank, 1..$COUNT: client N holds data_args.devices[N-1] of $CONFIG)" >&2
  exit 2 ;;
esac
set_config "${2:-$HERE/config/fedml_config.yaml}"
cd "$HERE"
exec "$PY" -m main_fedml_iot --cf "$CONFIG" --role client --rank "$N"
