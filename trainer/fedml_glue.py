"""FedML in FedIoT's processes, contained: its communication classes without its package initialisers (no
`fedml.init()`, so no cloud call, no environment collection, no torchvision), its output into the run directory,
and only the configuration keys FedML itself reads in its `args`."""
from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterator

from fediot.config import FedIoTConfig


# FedML's packages whose initialisers a process that only needs FedML's communication classes skips: `fedml` (its
# collect_env, MLOps and every algorithm), `fedml.core` (trainers, attackers -> torchvision -> torch._dynamo) and
# `fedml.core.mlops` (metrics, device perfs). Measured on x86_64, 2026-12-07: importing the deployment's node modules
# took 8.6 s (7.7 s CPU) and 981 MB RSS with them, 2.4 s and 586 MB (most of it torch) without.
COMM_ONLY_PACKAGES = ("fedml", "fedml.core", "fedml.core.mlops")


def fedml_comm_only() -> bool:
    """Make FedML's communication classes (`FedMLCommManager`, `Message`, `BaseCommunicationManager`, `Observer`)
    importable without running FedML's package initialisers; a process that calls this must not need `fedml.init()`
    or anything else of FedML (a deployment's server and boards: their transport, messages and rounds are FedIoT's).
    Returns False, doing nothing, when FedML is already imported (then the full package is there)."""
    if "fedml" in sys.modules:
        return False
    spec = importlib.util.find_spec("fedml")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("fedml is not installed (bash install.sh)")
    root = Path(list(spec.submodule_search_locations)[0])
    for name in COMM_ONLY_PACKAGES:
        path = root.joinpath(*name.split(".")[1:])
        module_spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module_spec.submodule_search_locations = [str(path)]
        module = types.ModuleType(name, f"FedML's {name} package, its initialiser skipped (trainer.fedml_glue)")
        module.__path__ = [str(path)]
        module.__spec__ = module_spec
        module.__package__ = name
        sys.modules[name] = module
    return True


@contextlib.contextmanager
def fds_to_file(path: Path, enabled: bool = True) -> Iterator[None]:
    """Send everything written to fds 1 and 2 (Python and C level) to `path` for the block.

    With enabled=False (tracking_args.fedml_console: true) output stays on the console.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def route_logging_to_file(path: Path, also_console: bool = False) -> None:
    """FedML's logging (and ours, through logging.root) goes to `path` (and to stderr too when also_console)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.FileHandler(path)]
    if also_console:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
    # the root logger and the manager's root: the same object unless something rebound logging.root (fedml.init did)
    for logger in {logging.root, logging.Logger.manager.root}:
        logger.handlers.clear()
        for h in handlers:
            logger.addHandler(h)
        logger.setLevel(logging.INFO)


def fedml_node(cfg: FedIoTConfig, run_dir: Path, rank: int, role: str) -> tuple[Any, Path]:
    """A node process's FedML: its comm classes without FedML's initialisers (`fedml_comm_only`), its logging into
    RUN_DIR/logs/fedml-rank<rank>.log, and the `args` `FedMLCommManager` keeps (the keys FedML reads,
    `FedIoTConfig.fedml_values`, with the node's rank and role; FedIoT's code reads the typed config, never these).
    Returns (args, log file)."""
    fedml_comm_only()
    log_file = run_dir / "logs" / f"fedml-rank{rank}.log"
    route_logging_to_file(log_file, cfg.tracking.fedml_console)
    flat = {k: v for keys in cfg.fedml_values().values() for k, v in keys.items()}
    args = types.SimpleNamespace(**{**flat, "rank": rank, "role": role, "run_id": str(cfg.common.run_id)})
    return args, log_file
