import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

# Two pytest-xdist workers (run_tests.sh: -n 2 --dist loadgroup). The suite is CPU-bound except these modules,
# which mostly wait on real time (captures, replays, deadlines, processes starting): they share one worker, the
# rest of the suite runs in order on the other.
WAITING_MODULES = ("test_lan.py", "test_deployment.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        waiting = item.nodeid.split("::")[0].endswith(WAITING_MODULES)
        item.add_marker(pytest.mark.xdist_group("waiting" if waiting else "cpu"))
