"""What the scale benchmarks share: a synthetic config with clients split per device and sampled per round,
and the outputs of a finished run (its run directory is the last line it prints)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from procmem import Measured

REPO = Path(__file__).resolve().parents[1]


def synthetic_config(path: Path, runs_root: Path, per_device: int, per_round: int, rounds: int,
                     evaluate_every: int | None = None, settings: dict[str, dict] | None = None) -> Path:
    """config_simulation/fedml_config_synthetic.yaml with 9 x per_device clients, per_round sampled each round
    (at most all of them), `rounds` rounds, evaluation every `evaluate_every` rounds (None: as configured) and
    `settings` ({section: {key: value}}, e.g. another random_seed) on top."""
    cfg = yaml.safe_load((REPO / "config_simulation" / "fedml_config_synthetic.yaml").read_text())
    for section, values in (settings or {}).items():
        cfg.setdefault(section, {}).update(values)
    cfg["common_args"]["run_dir_root"] = str(runs_root)
    cfg["data_args"]["clients_per_device"] = per_device
    cfg["train_args"].update(client_num_in_total=None, client_num_per_round=min(per_round, 9 * per_device),
                             comm_round=rounds)
    if evaluate_every is not None:
        cfg["validation_args"]["frequency_of_the_test"] = evaluate_every
    path.write_text(yaml.safe_dump(cfg))
    return path


def finished_run(m: Measured, what: str) -> tuple[Path, list[dict], dict]:
    """The run directory, rounds.jsonl records and global metrics of a run that succeeded (else exit, saying so)."""
    if m.returncode != 0:
        sys.exit(f"{what} failed (exit {m.returncode}):\n{m.stderr[-3000:]}")
    run_dir = Path(m.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    return run_dir, records, json.loads((run_dir / "metrics.json").read_text())["global"]
