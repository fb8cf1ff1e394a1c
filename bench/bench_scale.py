"""Many clients on few processes: the MPI simulation with clients_per_device x 9 devices, N worker ranks.

    .venv/bin/python bench/bench_scale.py [--per-device 2 112] [--workers 10 2] [--per-round 10] [--rounds 50]

For each worker count and clients_per_device value, one `sh run_simulation.sh WORKERS` with
client_num_per_round = --per-round (a seeded sample each round) on synthetic data, all in one run of this
script. Reports peak summed PSS of the run's process tree (bench/procmem.py), the median over rounds 2.. of
round wall time / the slowest worker's training time in that round (a worker trains its sampled clients one
after the other: their sum), total time, and the final global TPR/FPR. Goals (issue 11): 1,000+ clients
finish; peak summed PSS <= 8 GB; median ratio <= 1.5; TPR >= 0.99, FPR <= 0.02; memory with many clients
within 10 % of memory with few at the same worker count.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from procmem import run_measured
from simruns import REPO, finished_run, synthetic_config


def slowest_worker_training(record: dict) -> float:
    """The round's longest training time of one worker: a worker that trains several of its clients in a round
    trains them one after the other (`workers` maps client -> rank; absent when every rank is one client)."""
    per_rank: dict = {}
    for client, seconds in record["client_train_seconds"].items():
        rank = record.get("workers", {}).get(client, client)
        per_rank[rank] = per_rank.get(rank, 0.0) + seconds
    return max(per_rank.values())


def run_one(per_device: int, workers: int, per_round: int, rounds: int, tmp: Path) -> dict:
    path = synthetic_config(tmp / f"scale-{per_device}-{workers}.yaml", tmp / "runs", per_device, per_round, rounds)
    m = run_measured(["sh", str(REPO / "run_simulation.sh"), str(workers), str(path)],
                     {**os.environ, "PYTHON": sys.executable})
    run_dir, recs, g = finished_run(m, f"simulation with clients_per_device {per_device}")
    ratios = [r["wall_time_s"] / slowest_worker_training(r) for r in recs[1:] if "eval" not in r]
    return {"clients": 9 * per_device, "workers": workers, "rounds": rounds, "total_s": round(m.seconds, 1),
            "peak_pss_mb": round(m.peak_pss_mb), "median_round_ratio": round(statistics.median(ratios), 2),
            "median_round_s": round(statistics.median(r["wall_time_s"] for r in recs[1:]), 3),
            "tpr": g["tpr"], "fpr": g["fpr"], "run_dir": str(run_dir)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-device", type=int, nargs="+", default=[2, 112])
    p.add_argument("--workers", type=int, nargs="+", default=[10, 2], help="worker ranks (10: one per sampled "
                   "client, the issue's setting; 2: this machine's cores)")
    p.add_argument("--per-round", type=int, default=10, help="client_num_per_round")
    p.add_argument("--rounds", type=int, default=50)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fediot-scale-"))
    rows = [run_one(k, w, a.per_round, a.rounds, tmp) for w in a.workers for k in a.per_device]
    print("| clients | worker ranks | rounds | total (s) | peak summed PSS (MB) | median round (s) | "
          "median round / slowest training (rounds without evaluation) | global TPR | global FPR |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['workers']} | {r['rounds']} | {r['total_s']} | {r['peak_pss_mb']:,} | "
              f"{r['median_round_s']} | {r['median_round_ratio']} | {r['tpr']:.4f} | {r['fpr']:.4f} |")
    for w in a.workers:
        same = [r for r in rows if r["workers"] == w]
        if len(same) > 1:
            print(f"memory with {w} workers, {same[-1]['clients']} vs {same[0]['clients']} clients: "
                  f"{same[-1]['peak_pss_mb'] / same[0]['peak_pss_mb']:.3f}x (goal <= 1.10)")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
