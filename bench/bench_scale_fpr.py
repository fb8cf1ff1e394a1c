"""Detection quality at scale across seeds: global FPR/TPR of the many-client simulation for several seeds.

    .venv/bin/python bench/bench_scale_fpr.py [--per-device 112] [--seeds 0 1 2 3 4 5 6 7] [--workers 2]
        [--compare train_args.model_average_rounds=1 ...]

One run of `sh run_simulation.sh WORKERS` per seed (common_args.random_seed: the synthetic data, the model's
initial weights and the clients' seeds) with the defaults, and one per seed for each --compare setting
(SECTION.KEY=VALUE, YAML value), all in one run of this script. The issue 11 goal (global FPR <= 0.02 at 1,000
clients, 10 per round, 50 rounds) is a single number from one seed in bench_scale.py; this shows how far it
moves with the seed, and whether a setting helps across seeds or only in one. Metrics only (times are not
comparable: run several at once if you like).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from procmem import run_measured
from simruns import REPO, finished_run, synthetic_config


def parse_setting(text: str) -> tuple[str, str, object]:
    """'train_args.model_average_rounds=1' -> ('train_args', 'model_average_rounds', 1)."""
    key, sep, value = text.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot or not section or not name:
        sys.exit(f"--compare {text!r}: expected SECTION.KEY=VALUE, e.g. train_args.model_average_rounds=1")
    return section, name, yaml.safe_load(value)


def run_one(per_device: int, per_round: int, rounds: int, workers: int, seed: int, setting: str | None,
            tmp: Path) -> dict:
    settings: dict[str, dict] = {"common_args": {"random_seed": seed}}
    if setting:
        section, name, value = parse_setting(setting)
        settings.setdefault(section, {})[name] = value
    label = setting or "defaults"
    path = synthetic_config(tmp / f"fpr-{seed}-{abs(hash(label))}.yaml", tmp / "runs", per_device, per_round, rounds,
                            settings=settings)
    run = run_measured(["sh", str(REPO / "run_simulation.sh"), str(workers), str(path)],
                       {**os.environ, "PYTHON": sys.executable})
    run_dir, records, _ = finished_run(run, f"seed {seed}, {label}")
    m = json.loads((run_dir / "metrics.json").read_text())  # per-device FPRs besides the global ones
    evals = [r["eval"]["global_threshold"]["fpr"] for r in records if "eval" in r]
    worst = max(m["devices"].items(), key=lambda kv: kv[1]["fpr"])
    row = {"setting": label, "seed": seed, "tpr": m["global"]["tpr"], "fpr": m["global"]["fpr"],
           "worst_device": worst[0], "worst_device_fpr": worst[1]["fpr"],
           "eval_fpr_range": [min(evals), max(evals)], "run_dir": str(run_dir)}
    print(f"  seed {seed}, {label}: TPR {row['tpr']:.4f}  FPR {row['fpr']:.4f}  (worst device {worst[0]} "
          f"{worst[1]['fpr']:.3f})", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-device", type=int, default=112, help="clients per device (9 devices)")
    p.add_argument("--per-round", type=int, default=10, help="client_num_per_round")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--workers", type=int, default=2, help="worker ranks (metrics do not depend on it)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--compare", nargs="*", default=[], help="settings to compare with the defaults, SECTION.KEY=VALUE")
    a = p.parse_args()
    for setting in a.compare:
        parse_setting(setting)  # a typo fails before the first run, not after an hour
    tmp = Path(tempfile.mkdtemp(prefix="fediot-scale-fpr-"))
    rows = [run_one(a.per_device, a.per_round, a.rounds, a.workers, seed, setting, tmp)
            for seed in a.seeds for setting in [None, *a.compare]]
    labels = ["defaults", *a.compare]
    print(f"\n{9 * a.per_device} clients, {a.per_round} per round, {a.rounds} rounds: global FPR per seed")
    print("| seed | " + " | ".join(f"`{l}`" if l != "defaults" else l for l in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for seed in a.seeds:
        cells = [next(r for r in rows if r["seed"] == seed and r["setting"] == l) for l in labels]
        print(f"| {seed} | " + " | ".join(f"{c['fpr']:.4f}" for c in cells) + " |")
    for stat, fn in (("mean", statistics.mean), ("max", max)):
        print(f"| {stat} | " + " | ".join(f"{fn(r['fpr'] for r in rows if r['setting'] == l):.4f}" for l in labels) + " |")
    print(f"min TPR: {min(r['tpr'] for r in rows):.4f}; seeds with FPR > 0.02: "
          + "; ".join(f"{l}: {[r['seed'] for r in rows if r['setting'] == l and r['fpr'] > 0.02]}" for l in labels))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
