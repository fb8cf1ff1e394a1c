#!/usr/bin/env bash
# Install what is needed (bash install.sh) and run the whole test suite. Extra args go to pytest.
#   bash run_tests.sh [-k expr]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
bash install.sh
exec .venv/bin/python -m pytest -q tests "$@"
