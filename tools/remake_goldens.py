"""Remake tests/data/golden/*.metrics.json with the in-process grid (tests/data/golden/README.md says when and why).

    OMP_NUM_THREADS=1 .venv/bin/python tools/remake_goldens.py

Prints, per golden, which keys changed against the files it replaces, so a change meant to move only some numbers
can be checked to move only those.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from tests.rounds import GOLDEN, deploy_values, metrics_of, run, sim_values  # noqa: E402

RUNS = {"simulation-3-clients.metrics.json": lambda tmp: sim_values(tmp),
        "deployment-3-boards.metrics.json": lambda tmp: deploy_values(tmp, train_args__learning_rate=0.004,
                                                                      train_args__lr_decay=0.5)}


def leaves(x: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(x, dict):
        for k, v in x.items():
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, x


def changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ beyond the goldens' 1e-9 relative tolerance."""
    a, b = dict(leaves(old)), dict(leaves(new))

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return abs(x - y) <= 1e-9 * max(1.0, abs(x))
        return x == y
    return sorted(k for k in set(a) | set(b) if k not in a or k not in b or not same(a[k], b[k]))


def main() -> None:
    torch.set_num_threads(1)
    for name, values in RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            _, _, run_dir = run(values(Path(tmp)))
            metrics = metrics_of(run_dir)
        metrics.get("data", {}).pop("path", None)
        path = GOLDEN / name
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
        diff = changed(old, metrics)
        print(f"{name}: {len(diff)} key(s) changed" + "".join(f"\n  {k}" for k in diff))


if __name__ == "__main__":
    main()
