#!/usr/bin/env bash
# Install what is needed (bash install.sh) and run the whole test suite. Extra args go to pytest.
#   bash run_tests.sh [-k expr]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
bash install.sh
# three workers: the modules that mostly wait on real time beside the CPU-bound rest (tests/conftest.py)
exec .venv/bin/python -m pytest -q -n 3 --dist loadgroup tests "$@"
