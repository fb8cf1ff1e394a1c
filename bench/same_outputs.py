"""One config through every grid of the one round driver; their metrics.json must be equal.

    .venv/bin/python bench/same_outputs.py [CONFIG] [--workers N] [--no-flower] [--out DIR]

Runs CONFIG (a simulation config; default config_simulation/fedml_config_synthetic.yaml) as the MPI simulation
(`sh run_simulation.sh N`), in this process on the in-process grid, and on Flower's simulation engine
(`bench/flower_app.py` in `.venv-flower`, see bench/requirements-flower.txt; skipped with --no-flower or when that
venv is missing), then compares their metrics.json (counts exactly, other numbers to 1e-9 relative; data.path
aside). Exit status 1 when any two differ. The CI tests check the MPI and gRPC paths against runs made before the
driver existed (tests/data/golden); Flower is not in CI's venv, so this script is where its path is checked.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

FLOWER_PYTHON = REPO / ".venv-flower" / "bin" / "python"


def last_line(proc: subprocess.CompletedProcess, what: str) -> Path:
    if proc.returncode != 0:
        sys.exit(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default=str(REPO / "config_simulation" / "fedml_config_synthetic.yaml"))
    p.add_argument("--workers", type=int, default=None, help="MPI worker ranks (default: one per client)")
    p.add_argument("--no-flower", action="store_true")
    p.add_argument("--out", default=None, help="where the runs go (default: a temporary directory)")
    a = p.parse_args()
    from fediot.config import load
    from tests.rounds import assert_same_metrics, metrics_of, run

    out = Path(a.out or tempfile.mkdtemp(prefix="fediot-same-outputs-"))
    values = load(a.config).values
    values["common_args"]["run_dir_root"] = str(out / "runs")
    cfg_path = out / "config.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(values))
    env = {**os.environ, "PYTHON": sys.executable}
    runs: dict[str, Path] = {}
    workers = str(a.workers or len(load(str(cfg_path)).clients))
    print(f"MPI simulation ({workers} worker ranks) ...", flush=True)
    runs["mpi"] = last_line(subprocess.run(["sh", str(REPO / "run_simulation.sh"), workers, str(cfg_path)],
                                           capture_output=True, text=True, env=env, cwd=REPO), "MPI simulation")
    print("in-process grid ...", flush=True)
    runs["in-process"] = run(values)[2]
    if not a.no_flower and FLOWER_PYTHON.exists():
        print("Flower ...", flush=True)
        runs["flower"] = last_line(subprocess.run([str(FLOWER_PYTHON), str(REPO / "bench" / "flower_app.py"),
                                                   str(cfg_path)], capture_output=True, text=True, cwd=REPO), "Flower")
    elif not a.no_flower:
        print(f"Flower skipped: no {FLOWER_PYTHON}", flush=True)
    reference = metrics_of(runs["mpi"])
    failed = False
    for name, run_dir in runs.items():
        try:
            assert_same_metrics(metrics_of(run_dir), reference)
            verdict = "equal"
        except AssertionError as exc:
            verdict, failed = f"DIFFERENT: {exc}", True
        g = metrics_of(run_dir)["global"]
        print(f"{name:11s} TPR {g['tpr']:.4f}  FPR {g['fpr']:.4f}  threshold {g['threshold']:.6f}  {verdict}  {run_dir}")
    (out / "same_outputs.json").write_text(json.dumps({k: str(v) for k, v in runs.items()}, indent=1))
    print(out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
