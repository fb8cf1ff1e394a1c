import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

# Three pytest-xdist workers on two cores (run_tests.sh: -n 3 --dist loadgroup). The suite is CPU-bound except the
# modules that mostly wait on real time (captures and replays, deadlines, processes starting and talking): the LAN of
# namespaces runs on one worker, the deployment and security process tests on another, the rest in order on the third.
GROUPS = {"test_lan.py": "lan", "test_deployment.py": "processes", "test_security.py": "processes"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        item.add_marker(pytest.mark.xdist_group(GROUPS.get(module, "cpu")))
