"""Robustness study: attack x number of malicious clients x defenses on/off, as real MPI simulations.

    .venv/bin/python bench/robustness_study.py [--config config_simulation/fedml_config_synthetic.yaml]
        [--attacks data_poisoning model_scaling random_update stats_inflation eval_lies] [--malicious 0 1 2 3]
        [--robust on off] [--out DIR]

Every cell is one `sh run_simulation.sh N CONFIG` with `attack_args` and `train_args.robust` set; the
malicious clients are the ranks MALICIOUS_RANKS[:m] (spread over the devices). What each run's server says is
read from its metrics.json: global TPR/FPR (global threshold, as the server computes them from the reports it
accepted), and the honest devices' own rows at their own thresholds (pooled, and the lowest honest device TPR). Writes results.json
(re-used: cells already there are not run again, so an interrupted study continues), table.md and figure.png
in the study directory, and prints the directory last. A full study (5 attacks x 0-3 malicious x on/off = 32
runs) takes ~50 min on 2 cores; the tests run small versions of the same cells.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from federation.client import ATTACKS  # noqa: E402
from fediot import config as fediot_config  # noqa: E402
from fediot.rundir import write_json  # noqa: E402

MALICIOUS_RANKS = (2, 5, 8)  # the first m of these attack (Ecobee, Provision 737E, SimpleHome 1002 by default)
GOALS = {"tpr": 0.99, "fpr": 0.02, "honest_device_tpr": 0.98}  # issue 10, 2 of 9 malicious, robust on


def cell_key(attack: str, malicious: int, robust: bool) -> str:
    return f"{attack}|{malicious}|{'on' if robust else 'off'}"


def honest_rows(metrics: dict[str, Any], honest: list[str]) -> dict[str, Any]:
    """Pooled counts of the honest devices' own reports, each at the threshold it detects with (its own), and the
    lowest honest device TPR."""
    c = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    device_tpr = {}
    for device in honest:
        e = metrics["devices"].get(device)
        if e is None:
            continue
        g = e["modes"]["device"]
        for k in c:
            c[k] += g[k]
        device_tpr[device] = g["tpr"]
    return {"tpr": c["tp"] / max(c["tp"] + c["fn"], 1), "fpr": c["fp"] / max(c["fp"] + c["tn"], 1),
            "min_device_tpr": min(device_tpr.values()) if device_tpr else None,
            "min_device": min(device_tpr, key=device_tpr.get) if device_tpr else None}


def run_cell(base: dict[str, Any], attack: str, malicious: int, robust: bool, out: Path) -> dict[str, Any]:
    """One simulation; what its server measured."""
    cfg = json.loads(json.dumps(base))
    devices = fediot_config.validate(cfg).devices
    n = len(devices)
    ranks = [r for r in MALICIOUS_RANKS if r <= n][:malicious]
    cfg["train_args"]["robust"] = robust
    cfg["attack_args"] = {**cfg.get("attack_args", {}), "attack": attack if ranks else "none",
                          "malicious_ranks": ranks or None}
    cfg["common_args"]["run_dir_root"] = str(out / "runs")
    path = out / "configs" / f"{attack}-{malicious}-{'robust' if robust else 'plain'}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    started = time.monotonic()
    proc = subprocess.run(["sh", str(REPO / "run_simulation.sh"), str(n), str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    seconds = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        return {"failed": (proc.stderr or proc.stdout)[-1500:], "seconds": seconds}
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    malicious_devices = [devices[r - 1] for r in ranks]
    g = metrics["global"]
    return {
        "run_dir": str(run_dir), "seconds": seconds, "malicious_devices": malicious_devices,
        "global": {"tpr": g["modes"]["global"]["tpr"], "fpr": g["modes"]["global"]["fpr"],
                   "threshold": g["modes"]["global"]["threshold"]},
        "device_thresholds": {"tpr": g["modes"]["device"]["tpr"], "fpr": g["modes"]["device"]["fpr"]},
        "honest": honest_rows(metrics, [d for d in devices if d not in malicious_devices]),
        "defenses": {"screened_out": sum(len(r.get("screened_out", {})) for r in rounds),
                     "threshold_excluded": sum(len(r.get("threshold_excluded", {})) for r in rounds),
                     "reports_rejected": sum(len(r.get("reports_rejected", {})) for r in rounds)},
    }


def f3(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def write_table(results: dict[str, Any], attacks: list[str], malicious: list[int], out: Path) -> Path:
    lines = ["| attack | malicious of 9 | defenses | global TPR | global FPR | honest devices TPR / FPR | "
             "lowest honest device TPR | defenses fired (updates out / validation statistics out / reports out) |", "|---|---|---|---|---|---|---|---|"]
    cells = [("none", 0)] if 0 in malicious else []
    cells += [(attack, m) for attack in attacks for m in malicious if m > 0]
    for name, m in cells:
        for robust in (True, False):
            r = results.get(cell_key(name, m, robust))
            if r is None:
                continue
            if "failed" in r:
                lines.append(f"| {name} | {m} | {'on' if robust else 'off'} | failed | | | | |")
                continue
            h, d = r["honest"], r["defenses"]
            lines.append(f"| {name} | {m} | {'on' if robust else 'off'} | {f3(r['global']['tpr'])} | "
                         f"{f3(r['global']['fpr'])} | {f3(h['tpr'])} / {f3(h['fpr'])} | {f3(h['min_device_tpr'])} | "
                         f"{d['screened_out']} / {d['threshold_excluded']} / {d['reports_rejected']} |")
    path = out / "table.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_figure(results: dict[str, Any], attacks: list[str], malicious: list[int], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(attacks), figsize=(3.2 * len(attacks), 3.2), sharey=True, squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        for robust, style in ((True, "o-"), (False, "s--")):
            xs, ys = [], []
            for m in malicious:
                r = results.get(cell_key(attack if m else "none", m, robust))
                if r and "failed" not in r:
                    xs.append(m)
                    ys.append(r["honest"]["tpr"])
            ax.plot(xs, ys, style, label="defenses on" if robust else "defenses off (FedAvg)")
        ax.set_title(attack, fontsize=9)
        ax.set_xlabel("malicious clients of 9")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(malicious)
    axes[0][0].set_ylabel("honest devices' TPR (own thresholds)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = out / "figure.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "config_simulation" / "fedml_config_synthetic.yaml"))
    p.add_argument("--attacks", nargs="+", default=[a for a in ATTACKS if a != "none"], choices=ATTACKS[1:])
    p.add_argument("--malicious", nargs="+", type=int, default=[0, 1, 2, 3], choices=range(0, len(MALICIOUS_RANKS) + 1))
    p.add_argument("--robust", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--out", default=str(REPO / "runs" / "robustness-study"))
    a = p.parse_args()
    base = yaml.safe_load(Path(a.config).read_text())
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    cells = sorted({(attack if m else "none", m, robust == "on") for attack in a.attacks for m in a.malicious
                    for robust in a.robust}, key=lambda c: (c[1], c[0], not c[2]))
    for i, (attack, m, robust) in enumerate(cells, 1):
        key = cell_key(attack, m, robust)
        if key in results and "failed" not in results[key]:
            print(f"[{i}/{len(cells)}] {key}: done before", flush=True)
            continue
        print(f"[{i}/{len(cells)}] {key} ...", end=" ", flush=True)
        results[key] = run_cell(base, attack, m, robust, out)
        r = results[key]
        print("FAILED" if "failed" in r else f"global TPR {f3(r['global']['tpr'])} FPR {f3(r['global']['fpr'])}, "
              f"lowest honest device TPR {f3(r['honest']['min_device_tpr'])} ({r['seconds']:.0f}s)", flush=True)
        write_json(results_path, results)
    print(f"table: {write_table(results, a.attacks, sorted(set(a.malicious)), out)}")
    print(f"figure: {write_figure(results, a.attacks, sorted(set(a.malicious)), out)}")
    print(out)


if __name__ == "__main__":
    main()
