"""FedML's entry and the containment of its side effects: no cloud calls, its logs into the run
directory, and only the configuration keys FedML itself reads."""
from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Iterator

import yaml

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


def disable_fedml_cloud() -> None:
    """Make FedML's config fetch from open.fedml.ai fail at once instead of calling the cloud."""
    from fedml.core.mlops.mlops_configs import MLOpsConfigs

    def _offline(*_args, **_kwargs):
        raise ConnectionError("FedIoT runs without the FedML cloud (LAN / simulation mode)")

    MLOpsConfigs.fetch_all_configs = staticmethod(_offline)  # type: ignore[method-assign]


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
    """After fedml.init(): FedML's logger (now logging.root) and print() go to `path`
    (and to stderr too when also_console)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.FileHandler(path)]
    if also_console:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
    # fedml.init() rebinds logging.root to its own logger; the manager keeps the original root.
    for logger in {logging.root, logging.Logger.manager.root}:
        logger.handlers.clear()
        for h in handlers:
            logger.addHandler(h)
        logger.setLevel(logging.INFO)
    # FedML rebinds sys.stdout.write to its logger: print() lands in the same place.


def init_fedml(cfg: FedIoTConfig, log_file: Path, extra_argv: list[str], check_env: bool = True) -> Any:
    """fedml.init() with its cloud call disabled and its output in log_file; returns FedML's `args`.

    FedML is given a YAML with only the keys it reads (`FedIoTConfig.fedml_values`); FedIoT's own
    settings reach our code through the typed config, never through `args`.
    """
    with tempfile.TemporaryDirectory(prefix="fediot-fedml-") as tmp:
        fedml_yaml = Path(tmp) / "fedml_config.yaml"
        fedml_yaml.write_text(yaml.safe_dump(cfg.fedml_values(), sort_keys=False))
        with fds_to_file(log_file, not cfg.tracking.fedml_console):
            import fedml

            disable_fedml_cloud()
            saved_argv = sys.argv
            sys.argv = [sys.argv[0], "--cf", str(fedml_yaml), *extra_argv]
            try:
                args = fedml.init(check_env=check_env)
            finally:
                sys.argv = saved_argv
    route_logging_to_file(log_file, cfg.tracking.fedml_console)
    return args
