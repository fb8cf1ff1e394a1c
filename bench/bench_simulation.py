"""9-client MPI simulation: round wall time vs the slowest client's training time, peak RSS per rank.

    .venv/bin/python bench/bench_simulation.py [--config config_simulation/fedml_config_synthetic.yaml]
Goal: round wall time / slowest client's training time <= 1.5.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=str(REPO / "config_simulation" / "fedml_config_synthetic.yaml"))
    p.add_argument("--clients", type=int, default=9)
    a = p.parse_args()
    cfg = yaml.safe_load(Path(a.config).read_text())
    tmp = Path(tempfile.mkdtemp(prefix="fediot-bench-"))
    cfg.setdefault("common_args", {})["run_dir_root"] = str(tmp)
    cfg_path = tmp / "bench.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    proc = subprocess.run(["sh", str(REPO / "run_simulation.sh"), str(a.clients), str(cfg_path)],
                          capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    total = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"simulation failed:\n{proc.stderr[-3000:]}")
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    ratios = []
    print(f"run {run_dir}  ({a.clients} clients, total wall time {total:.1f}s incl. start-up)")
    print("| round | wall time (s) | slowest client train (s) | ratio | evaluated |\n|---|---|---|---|---|")
    for r in rounds:
        slowest = max(r["client_train_seconds"].values())
        ratio = r["wall_time_s"] / slowest
        if r["round"] > 1:  # round 1 includes process start-up and the first model broadcast
            ratios.append(ratio)
        print(f"| {r['round']} | {r['wall_time_s']:.2f} | {slowest:.2f} | {ratio:.2f} | {'yes' if 'eval' in r else ''} |")
    if ratios:
        print(f"median ratio over rounds 2..{len(rounds)}: {statistics.median(ratios):.2f} (goal <= 1.5)")
    print("| rank | role | device | peak RSS (MB) |\n|---|---|---|---|")
    for f in sorted((run_dir / "resources").glob("rank*.json"), key=lambda f: int(f.stem[4:])):
        r = json.loads(f.read_text())
        print(f"| {r['rank']} | {r['role']} | {r['device'] or ''} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
