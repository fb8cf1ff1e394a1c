"""Robustness study: attack x number of malicious clients x defenses on/off x seeds x run lengths.

    .venv/bin/python bench/robustness_study.py [--config config_simulation/fedml_config_synthetic.yaml]
        [--attacks data_poisoning model_scaling ...] [--malicious 0 1 2] [--robust on off] [--seeds 0 1 2]
        [--rounds 10 20] [--engine inprocess|mpi] [--out DIR]

Each cell sets `attack_args` (the malicious clients are the ranks MALICIOUS_RANKS[:m], spread over the devices),
`train_args.robust` and `common_args.random_seed`. `--engine inprocess` (default) runs the simulation's driver,
round state and clients in this process (`federation.inprocess`; its metrics equal `sh run_simulation.sh`'s, asserted
by tests/test_simulation.py) as one run of the longest length with an evaluation after each length asked for: every
client trains every round and the lr schedule is indexed by round, so the evaluation after round r is what a run of
r rounds writes to metrics.json. `--engine mpi` runs `sh run_simulation.sh N CONFIG` per cell and length (real
processes; ~4x slower). What each server says is read from its metrics: global TPR/FPR (global threshold, for
devices outside the federation), the honest devices' own rows at the thresholds they detect with (their own), the
worst honest device FPR and lowest honest device TPR, and the global threshold. Writes results.json (re-used: cells
already there are not run again, so an interrupted study continues), table.md and figure.png in the study
directory, and prints the directory last. Full default grid in process: 10 attacks x 1-2 malicious x on/off x 3
seeds + no attacker = 126 runs of 20 rounds, ~1 min each on 2 cores.
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

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attacks.clients import make_client  # noqa: E402
from attacks.settings import ATTACKS  # noqa: E402
from fediot import config as fediot_config  # noqa: E402
from fediot.rundir import write_json  # noqa: E402

MALICIOUS_RANKS = (2, 5, 8)  # the first m of these attack (Ecobee, Provision 737E, SimpleHome 1002 by default)
GOALS = {"tpr": 0.99, "fpr": 0.02, "honest_device_tpr": 0.98}  # issue 10, 2 of 9 malicious, robust on


def cell_key(attack: str, malicious: int, robust: bool, seed: int, rounds: int) -> str:
    return f"{attack}|{malicious}|{'on' if robust else 'off'}|seed{seed}|r{rounds}"


def honest_rows(metrics: dict[str, Any], honest: list[str]) -> dict[str, Any]:
    """Pooled counts of the honest devices' own reports, each at the threshold it detects with (its own), the lowest
    honest device TPR and the highest honest device FPR."""
    c = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    device_tpr, device_fpr = {}, {}
    for device in honest:
        e = metrics["devices"].get(device)
        if e is None:
            continue
        g = e["modes"]["device"]
        for k in c:
            c[k] += g[k]
        device_tpr[device], device_fpr[device] = g["tpr"], g["fpr"]
    return {"tpr": c["tp"] / max(c["tp"] + c["fn"], 1), "fpr": c["fp"] / max(c["fp"] + c["tn"], 1),
            "min_device_tpr": min(device_tpr.values()) if device_tpr else None,
            "min_device": min(device_tpr, key=device_tpr.get) if device_tpr else None,
            "max_device_fpr": max(device_fpr.values()) if device_fpr else None,
            "max_fpr_device": max(device_fpr, key=device_fpr.get) if device_fpr else None}


def cell_config(base: dict[str, Any], attack: str, malicious: int, robust: bool, seed: int, rounds: int,
                evaluate_at: list[int], out: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """The cell's config values, its devices and its malicious devices."""
    cfg = json.loads(json.dumps(base))
    devices = fediot_config.validate(json.loads(json.dumps(cfg))).devices
    ranks = [r for r in MALICIOUS_RANKS if r <= len(devices)][:malicious]
    cfg["train_args"].update(robust=robust, comm_round=rounds)
    cfg["common_args"].update(random_seed=seed, run_dir_root=str(out / "runs"))
    cfg["validation_args"]["frequency_of_the_test"] = int(np.gcd.reduce(evaluate_at))
    cfg["attack_args"] = {**cfg.get("attack_args", {}), "attack": attack if ranks else "none",
                          "malicious_ranks": ranks or None}
    return cfg, devices, [devices[r - 1] for r in ranks]


def summary(metrics: dict[str, Any], records: list[dict[str, Any]], devices: list[str], malicious: list[str],
            rounds: int) -> dict[str, Any]:
    """What a server measured after `rounds` rounds (its metrics then, the defenses that fired up to then)."""
    g = metrics["global"]
    upto = [r for r in records if r.get("round", 0) <= rounds]
    return {
        "malicious_devices": malicious,
        "global": {"tpr": g["modes"]["global"]["tpr"], "fpr": g["modes"]["global"]["fpr"],
                   "threshold": g["modes"]["global"]["threshold"]},
        "device_thresholds": {"tpr": g["modes"]["device"]["tpr"], "fpr": g["modes"]["device"]["fpr"]},
        "honest": honest_rows(metrics, [d for d in devices if d not in malicious]),
        "honest_thresholds": {d: metrics["devices"][d]["modes"]["device"]["thresholds"] for d in devices
                              if d not in malicious and d in metrics["devices"]},
        "defenses": {"screened_out": sum(len(r.get("screened_out", {})) for r in upto),
                     "threshold_excluded": sum(len(r.get("threshold_excluded", {})) for r in upto),
                     "reports_rejected": sum(len(r.get("reports_rejected", {})) for r in upto),
                     "messages_rejected": sum(r.get("rejected", 0) for r in upto)},
    }


def run_inprocess(base: dict[str, Any], attack: str, malicious: int, robust: bool, seed: int, lengths: list[int],
                  out: Path) -> dict[int, dict[str, Any]]:
    """One in-process run of the longest length; what its server measured after each length."""
    from data.sources import prepare_data
    from federation.client import ClientLoader
    from federation.driver import quorum, run_federation
    from federation.inprocess import InProcessGrid
    from federation.outputs import RunOutputs
    from federation.state import RoundState
    from fediot.rundir import create_run_dir, write_config

    values, devices, bad = cell_config(base, attack, malicious, robust, seed, max(lengths), lengths, out)
    cfg = fediot_config.validate(values)
    data_root, data_info = prepare_data(cfg)
    run_dir = create_run_dir(cfg.common.run_dir_root, "simulation", cfg.data.dataset)
    write_config(run_dir, cfg)
    at: dict[int, dict[str, Any]] = {}

    class Capturing(RoundState):
        def finish_eval(self, reports: dict[str, dict[str, Any]]) -> str:
            line = super().finish_eval(reports)
            if self.round in lengths:
                at[self.round] = json.loads(json.dumps(self.evaluator.metrics))
            return line

    loader = ClientLoader(cfg, data_root, run_dir, make_client=make_client)
    grid = InProcessGrid({c: loader(c) for c in cfg.clients}, int(cfg.comm.max_message_mb * 2**20))
    state = Capturing(cfg, data_info, "federated")
    run_federation(state, grid, RunOutputs(run_dir, False, checkpoint=False, console=lambda line: None), quorum(cfg))
    records = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    return {r: {**summary(at[r], records, devices, bad, r), "run_dir": str(run_dir)} for r in lengths}


def run_mpi(base: dict[str, Any], attack: str, malicious: int, robust: bool, seed: int, lengths: list[int],
            out: Path) -> dict[int, dict[str, Any]]:
    """One `sh run_simulation.sh` per length (real MPI processes); what each server measured."""
    results = {}
    for rounds in lengths:
        values, devices, bad = cell_config(base, attack, malicious, robust, seed, rounds, [rounds], out)
        path = out / "configs" / f"{attack}-{malicious}-{'robust' if robust else 'plain'}-seed{seed}-r{rounds}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(values))
        proc = subprocess.run(["sh", str(REPO / "run_simulation.sh"), str(len(devices)), str(path)],
                              capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
        if proc.returncode != 0:
            results[rounds] = {"failed": (proc.stderr or proc.stdout)[-1500:]}
            continue
        run_dir = Path(proc.stdout.strip().splitlines()[-1])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        records = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
        results[rounds] = {**summary(metrics, records, devices, bad, rounds), "run_dir": str(run_dir)}
    return results


def f3(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def cells_of(results: dict[str, Any], attack: str, m: int, robust: bool, rounds: int) -> list[dict[str, Any]]:
    """The finished seeds of one table cell."""
    prefix = f"{attack}|{m}|{'on' if robust else 'off'}|seed"
    return [r for k, r in results.items() if k.startswith(prefix) and k.endswith(f"|r{rounds}") and "failed" not in r]


def write_table(results: dict[str, Any], attacks: list[str], malicious: list[int], lengths: list[int],
                out: Path) -> Path:
    """Per attack x malicious x defenses x run length, over the seeds: means, and the worst seed for the honest
    devices (lowest device TPR, highest device FPR); the global threshold relative to the no-attack run of the same
    seed, defenses and length."""
    lines = ["| attack | malicious of 9 | rounds | defenses | seeds | global TPR | global FPR | global threshold x no attack "
             "(max) | honest devices TPR / FPR (own thresholds) | lowest honest device TPR | highest honest device FPR | "
             "defenses fired per run (updates out / validation statistics out / reports out / messages refused) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [("none", 0)] + [(attack, m) for attack in attacks for m in malicious if m > 0]
    for name, m in rows:
        for rounds in lengths:
            for robust in (True, False):
                cells = cells_of(results, name, m, robust, rounds)
                if not cells:
                    continue
                ratios = []
                for key, r in results.items():
                    if r in cells:
                        seed = key.split("|")[3]
                        base = results.get(f"none|0|{'on' if robust else 'off'}|{seed}|r{rounds}")
                        if base and "failed" not in base and base["global"]["threshold"]:
                            ratios.append(r["global"]["threshold"] / base["global"]["threshold"])
                mean = lambda f: sum(f(c) for c in cells) / len(cells)  # noqa: E731
                fired = "/".join(f"{mean(lambda c: c['defenses'][k]):.1f}" for k in
                                 ("screened_out", "threshold_excluded", "reports_rejected", "messages_rejected"))
                lines.append(
                    f"| {name} | {m} | {rounds} | {'on' if robust else 'off'} | {len(cells)} | "
                    f"{f3(mean(lambda c: c['global']['tpr']))} | {f3(mean(lambda c: c['global']['fpr']))} | "
                    f"{f'{max(ratios):.2f}' if ratios else 'n/a'} | {f3(mean(lambda c: c['honest']['tpr']))} / "
                    f"{f3(mean(lambda c: c['honest']['fpr']))} | {f3(min(c['honest']['min_device_tpr'] for c in cells))} | "
                    f"{f3(max(c['honest']['max_device_fpr'] for c in cells))} | {fired} |")
    path = out / "table.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_figure(results: dict[str, Any], attacks: list[str], malicious: list[int], rounds: int, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(attacks), figsize=(3.2 * len(attacks), 3.2), sharey=True, squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        for robust, style in ((True, "o-"), (False, "s--")):
            xs, ys = [], []
            for m in sorted({0, *malicious}):
                cells = cells_of(results, attack if m else "none", m, robust, rounds)
                if cells:
                    xs.append(m)
                    ys.append(min(c["honest"]["min_device_tpr"] for c in cells))
            ax.plot(xs, ys, style, label="defenses on" if robust else "defenses off (FedAvg)")
        ax.set_title(attack, fontsize=9)
        ax.set_xlabel("malicious clients of 9")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(sorted({0, *malicious}))
    axes[0][0].set_ylabel(f"lowest honest device TPR\n(own threshold, worst seed, {rounds} rounds)")
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
    p.add_argument("--malicious", nargs="+", type=int, default=[0, 1, 2], choices=range(0, len(MALICIOUS_RANKS) + 1))
    p.add_argument("--robust", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", nargs="+", type=int, default=[10, 20], help="run lengths")
    p.add_argument("--engine", default="inprocess", choices=["inprocess", "mpi"])
    p.add_argument("--out", default=str(REPO / "runs" / "robustness-study"))
    p.add_argument("--table-only", action="store_true", help="write the table and figure from the results so far; run nothing")
    p.add_argument("--merge", nargs="*", default=[], type=Path,
                   help="other study directories (e.g. run in parallel on other attacks) whose cells join this one's")
    a = p.parse_args()
    base = yaml.safe_load(Path(a.config).read_text())
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for other in a.merge:
        results.update({k: v for k, v in json.loads((other / "results.json").read_text()).items() if k not in results})
    lengths = sorted(set(a.rounds))
    cells = sorted({(attack if m else "none", m, robust == "on", seed) for attack in a.attacks for m in a.malicious
                    for robust in a.robust for seed in a.seeds}, key=lambda c: (c[1], c[0], c[3], not c[2]))
    run = run_inprocess if a.engine == "inprocess" else run_mpi
    for i, (attack, m, robust, seed) in enumerate([] if a.table_only else cells, 1):
        keys = {r: cell_key(attack, m, robust, seed, r) for r in lengths}
        if all(k in results and "failed" not in results[k] for k in keys.values()):
            print(f"[{i}/{len(cells)}] {keys[lengths[-1]]}: done before", flush=True)
            continue
        print(f"[{i}/{len(cells)}] {attack}|{m}|{'on' if robust else 'off'}|seed{seed} ...", end=" ", flush=True)
        started = time.monotonic()
        try:
            measured = run(base, attack, m, robust, seed, lengths, out)
        except Exception as exc:  # noqa: BLE001 - a cell that fails is recorded as failed, the study goes on
            measured = {r: {"failed": f"{type(exc).__name__}: {exc}"} for r in lengths}
        for r, result in measured.items():
            results[keys[r]] = {**result, "seconds": round(time.monotonic() - started, 1)}
        last = measured[lengths[-1]]
        print("FAILED " + last["failed"][-300:] if "failed" in last else
              f"global TPR {f3(last['global']['tpr'])} FPR {f3(last['global']['fpr'])}, lowest honest device TPR "
              f"{f3(last['honest']['min_device_tpr'])} ({time.monotonic() - started:.0f}s)", flush=True)
        write_json(results_path, results)
    write_json(results_path, results)
    print(f"table: {write_table(results, a.attacks, sorted(set(a.malicious)), lengths, out)}")
    print(f"figure: {write_figure(results, a.attacks, sorted(set(a.malicious)), lengths[-1], out)}")
    print(out)


if __name__ == "__main__":
    main()
