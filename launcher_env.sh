# Sourced by the launchers (POSIX sh), after they set HERE to the repository root.
# PY: $PYTHON if set, else the repository's .venv, else python3 on PATH.
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$HERE/.venv/bin/python" ]; then PY="$HERE/.venv/bin/python"
else PY="$(command -v python3)"; fi

# set_config PATH: CONFIG = PATH made absolute (launchers cd to the repository); exit 2 if missing.
set_config() {
  case "$1" in /*) CONFIG="$1" ;; *) CONFIG="$(pwd)/$1" ;; esac
  if [ ! -f "$CONFIG" ]; then echo "error: config file $CONFIG not found" >&2; exit 2; fi
}
