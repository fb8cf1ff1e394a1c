"""FedIoT's MPI simulation beside the same federated run on Flower's simulation engine, in one run of this script.

    .venv/bin/python bench/flower_side_by_side.py [--per-device 1 11 111] [--rounds 50] [--per-round 10]
                                                  [--actors 2] [--out DIR]
    (Flower's side needs its own venv: python3 -m venv .venv-flower &&
     .venv-flower/bin/pip install -r bench/requirements-flower.txt)

For each clients_per_device k (9k clients: 9 devices split, synthetic data), both sides get one config:
client_num_per_round = min(per-round, 9k) sampled by FedML's seeded rule, `rounds` rounds, one evaluation of
every client after the last round. FedIoT: `sh run_simulation.sh W` for each W in --fediot-workers ("round" = clients
per round, the issue's setting; 2 = this machine's cores, as many processes as Flower's actors).
Flower: bench/flower_app.py, the same round driver (on a FlowerGrid) and client answers as Flower ServerApp/ClientApp, one virtual
SuperNode per client, `--actors` Ray actors (one CPU each). Same seeds, plans and aggregation, so the two
sides train the same model: their final global thresholds are compared as a check that the work is the same.
The runs follow each other per client count (FedIoT, then Flower), so machine noise hits both alike.

Reported per side: median round wall time (training rounds after the first), total wall time of the command
(start-up, data, hello, rounds, evaluation, outputs), peak summed PSS of its process tree (bench/procmem.py),
final global TPR/FPR; and FedIoT / Flower ratios. Writes results.json and table.md in --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from procmem import run_measured
from simruns import REPO, finished_run, synthetic_config

FLOWER_PYTHON = REPO / ".venv-flower" / "bin" / "python"


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run one side; its run directory (last stdout line), wall time and peak summed PSS."""
    m = run_measured(cmd, env, REPO)
    log.write_text(m.stderr)
    run_dir, recs, g = finished_run(m, f"{' '.join(cmd)} (log: {log})")
    train_rounds = [r["wall_time_s"] for r in recs[1:] if "eval" not in r] or [r["wall_time_s"] for r in recs]
    return {"total_s": round(m.seconds, 1), "median_round_s": round(statistics.median(train_rounds), 4),
            "peak_pss_mb": round(m.peak_pss_mb), "processes_at_peak": m.peak_processes,
            "tpr": g["tpr"], "fpr": g["fpr"], "threshold": g["threshold"], "run_dir": str(run_dir)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-device", type=int, nargs="+", default=[1, 11, 111], help="clients per device (x 9 clients)")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--actors", type=int, default=2, help="Flower: Ray actors (one CPU each; this machine: 2 cores)")
    p.add_argument("--fediot-workers", nargs="+", default=["round", "2"],
                   help="FedIoT worker ranks per run: 'round' (= clients per round) and/or numbers")
    p.add_argument("--flower-python", default=str(FLOWER_PYTHON))
    p.add_argument("--out", default=None, help="directory for results.json and table.md (default: a temporary one)")
    a = p.parse_args()
    if not Path(a.flower_python).exists():
        sys.exit(f"{a.flower_python} not found: python3 -m venv .venv-flower && "
                 ".venv-flower/bin/pip install -r bench/requirements-flower.txt")
    tmp = Path(tempfile.mkdtemp(prefix="fediot-flower-"))
    out = Path(a.out) if a.out else tmp
    out.mkdir(parents=True, exist_ok=True)
    flwr_version = subprocess.run([a.flower_python, "-c", "import flwr; print(flwr.__version__)"],
                                  capture_output=True, text=True).stdout.strip()
    rows = []
    for k in a.per_device:
        cfg = synthetic_config(tmp / f"clients-{9 * k}.yaml", tmp / "runs", k, a.per_round, a.rounds,
                               evaluate_every=a.rounds)
        per_round = min(a.per_round, 9 * k)
        print(f"{9 * k} clients, {per_round} per round, {a.rounds} rounds ...", file=sys.stderr, flush=True)
        row = {"clients": 9 * k, "per_round": per_round, "rounds": a.rounds, "runs": []}
        for w in dict.fromkeys(min(per_round if w == "round" else int(w), 9 * k) for w in a.fediot_workers):
            m = measure(["sh", str(REPO / "run_simulation.sh"), str(w), str(cfg)],
                        {**os.environ, "PYTHON": sys.executable}, tmp / f"fediot-{9 * k}-{w}.log")
            row["runs"].append({"side": "fediot", "label": f"FedIoT MPI, {w} worker ranks", **m})
            print(f"  {row['runs'][-1]}", file=sys.stderr, flush=True)
        m = measure([a.flower_python, str(REPO / "bench" / "flower_app.py"), str(cfg), "--actors", str(a.actors)],
                    dict(os.environ), tmp / f"flower-{9 * k}.log")
        row["runs"].append({"side": "flower", "label": f"Flower {flwr_version}, {a.actors} Ray actors", **m})
        print(f"  {row['runs'][-1]}", file=sys.stderr, flush=True)
        rows.append(row)
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    lines = ["| clients | per round | run | median round (s) | total (s) | peak summed PSS (MB) | processes | "
             "global TPR | global FPR |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for m in r["runs"]:
            lines.append(f"| {r['clients']} | {r['per_round']} | {m['label']} | {m['median_round_s']} | {m['total_s']} | "
                         f"{m['peak_pss_mb']:,} | {m['processes_at_peak']} | {m['tpr']:.4f} | {m['fpr']:.4f} |")
    lines += ["", "| clients | FedIoT run | FedIoT / Flower: round time | total time | peak memory | same model |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        f = next(m for m in r["runs"] if m["side"] == "flower")
        for o in (m for m in r["runs"] if m["side"] == "fediot"):
            same = abs(o["threshold"] - f["threshold"]) <= 1e-9 * max(1.0, f["threshold"])
            lines.append(f"| {r['clients']} | {o['label']} | {o['median_round_s'] / f['median_round_s']:.2f} | "
                         f"{o['total_s'] / f['total_s']:.2f} | {o['peak_pss_mb'] / f['peak_pss_mb']:.2f} | "
                         f"{'yes (same threshold)' if same else 'NO'} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(out)


if __name__ == "__main__":
    main()
