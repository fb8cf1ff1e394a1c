import os

# One torch thread per process, in this one and in the processes tests start (they inherit the variable): the
# autoencoder's matrices are small, and a second thread only adds synchronisation. Measured, README's 9-client run in
# process: 51 s with one thread vs 114 s with torch's default of one per core (2 here); and run_tests.sh runs two
# pytest processes side by side.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
except ImportError:  # the board install's tests run without torch
    pass


# The slowest modules first (measured in run_tests.sh's layout, 2026-12-08: 70 s down to 10 s each), the rest after in
# their usual order: pytest-xdist (`--dist loadfile --no-loadscope-reorder`) hands each idle worker the next module, so
# a long module started last would leave the other worker idle at the end.
SLOWEST_FIRST = ("test_security", "test_readme_run", "test_rounds", "test_simulation", "test_detect", "test_afterimage",
                 "test_real_sample", "test_triage", "test_hardening", "test_mlops_pkg", "test_capture",
                 "test_lean_detector")


def pytest_collection_modifyitems(session, config, items) -> None:  # noqa: ARG001 - pytest's hook signature
    """Order the modules slowest first (a stable sort: tests within a module keep their order)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))
