"""Federated algorithms x partitions x seeds on one table (issue 25), like the FedIoT and N-BaIoT papers' tables.

    .venv/bin/python bench/algorithms_benchmark.py [--algorithms FedAvg FedProx FedAvgM FedAdam FedYogi FedAdagrad
        FedNova] [--partitions device contiguous2 dirichlet2] [--seeds 0 1 2] [--rounds 10] [--target-loss 0.005]
        [--config config_simulation/fedml_config_synthetic.yaml] [--out DIR]

Each cell is a whole federated run in process (`federation.inprocess`: the driver, state and clients of
`sh run_simulation.sh`) of `--config` with the robust defaults, one algorithm (ALGORITHMS below: the settings each
name stands for), one partition (`device`: one client per device; `contiguousK` / `dirichletK`: each device cut into
K clients by time slices / Dirichlet(partition_alpha) sizes) and one seed. Per cell: pooled TPR and FPR at each
device's own threshold, the worst honest device's FPR, ROC-AUC, the first round whose mean client training loss is at
most `--target-loss` (null: never), and the bytes the training requests and answers took. Then per algorithm and
partition the mean and range over seeds, and figures (FPR and worst-device FPR per algorithm; the loss curves).
Writes results.json, table.md and figures in the study directory and prints the directory last.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fediot.config import load, validate  # noqa: E402
from fediot.rundir import create_run_dir, write_config, write_json  # noqa: E402

# name -> train_args: what each algorithm stands for here (server learning rates: Hsu et al. 2019 for FedAvgM,
# Reddi et al. 2021's range for the adaptive ones; not tuned on this data)
ALGORITHMS: dict[str, dict[str, Any]] = {
    "FedAvg": {"federated_optimizer": "FedAvg"},
    "FedProx": {"federated_optimizer": "FedProx", "fedprox_mu": 0.01},
    "FedAvgM": {"federated_optimizer": "FedOpt", "server_optimizer": "sgd", "server_lr": 0.1, "server_momentum": 0.9},
    "FedAdam": {"federated_optimizer": "FedOpt", "server_optimizer": "adam", "server_lr": 0.03},
    "FedYogi": {"federated_optimizer": "FedOpt", "server_optimizer": "yogi", "server_lr": 0.03},
    "FedAdagrad": {"federated_optimizer": "FedOpt", "server_optimizer": "adagrad", "server_lr": 0.03},
    "FedNova": {"federated_optimizer": "FedNova"},
}


def partition_values(name: str) -> dict[str, Any]:
    """data_args of a partition name: device, contiguousK, dirichletK."""
    if name == "device":
        return {"clients_per_device": 1}
    for kind in ("contiguous", "dirichlet"):
        if name.startswith(kind) and name[len(kind):].isdigit():
            return {"clients_per_device": int(name[len(kind):]), "partition": kind}
    raise SystemExit(f"partition {name!r}: expected device, contiguousK or dirichletK (K clients per device)")


def run_cell(cfg_path: str, algorithm: str, partition: str, seed: int, rounds: int, target_loss: float,
             out: Path, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    from data.sources import prepare_data
    from attacks.clients import make_client
    from federation.inprocess import run_in_process

    values = load(cfg_path).values
    values["common_args"].update(random_seed=seed, run_dir_root=str(out / "runs"))
    values["data_args"].update(partition_values(partition), data_cache_dir=str(out / "data"))
    values["train_args"].update(ALGORITHMS[algorithm], comm_round=rounds, client_num_in_total=None,
                                client_num_per_round=None)  # every client, every round
    values["validation_args"]["frequency_of_the_test"] = rounds
    for section, keys in (extra or {}).items():
        values.setdefault(section, {}).update(keys)
    cfg = validate(values)
    import torch
    torch.set_num_threads(cfg.device.torch_threads)  # as the simulation's ranks: several threads per run oversubscribe
    data_root, data_info = prepare_data(cfg)
    run_dir = create_run_dir(cfg.common.run_dir_root, "simulation", cfg.data.dataset)
    write_config(run_dir, cfg)
    started = time.monotonic()
    run_in_process(cfg, run_dir, data_root, data_info, "federated", console=lambda line: None,
                   make_client=make_client)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    records = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    trained = [r for r in records if "client_losses" in r]
    losses = [sum(r["client_losses"].values()) / len(r["client_losses"]) for r in trained]
    g = metrics["global"]["modes"]["device"]
    per_device = {d: e["modes"]["device"]["fpr"] for d, e in metrics["devices"].items()}
    personal = None
    if "personal" in metrics["global"]["modes"]:  # validation_args.personalise_epochs: the personalised models too
        mine = metrics["global"]["modes"]["personal"]
        fprs = {d: e["modes"]["personal"]["fpr"] for d, e in metrics["devices"].items()}
        personal = {"tpr": mine["tpr"], "fpr": mine["fpr"], "worst_device_fpr": max(fprs.values()),
                    "worst_device": max(fprs, key=fprs.get), "lowest_device_tpr": min(
                        e["modes"]["personal"]["tpr"] for e in metrics["devices"].values()), "device_fpr": fprs}
    malicious = set(cfg.attack.malicious_ranks or [])
    honest = {d: f for d, f in per_device.items() if cfg.clients.index(d) + 1 not in malicious} if d_is_client(cfg) \
        else per_device
    return {"algorithm": algorithm, "partition": partition, "seed": seed, "rounds": rounds,
            "privacy": metrics.get("privacy"), "attack": cfg.attack.attack if malicious else "none",
            "personal": personal, "lowest_device_tpr": min(e["modes"]["device"]["tpr"] for e in metrics["devices"].values()),
            "worst_honest_device_fpr": max(honest.values()),
            "honest_device_tpr_min": min(e["modes"]["device"]["tpr"] for d, e in metrics["devices"].items() if d in honest),
            "seconds": round(time.monotonic() - started, 1), "run_dir": str(run_dir),
            "tpr": g["tpr"], "fpr": g["fpr"], "roc_auc": g["roc_auc"], "worst_device_fpr": max(per_device.values()),
            "worst_device": max(per_device, key=per_device.get), "device_fpr": per_device,
            "round_to_target_loss": next((i + 1 for i, x in enumerate(losses) if x <= target_loss), None),
            "mean_losses": losses,
            "bytes": sum(r.get("bytes_sent", 0) + r.get("bytes_received", 0) for r in trained)}


def d_is_client(cfg) -> bool:
    """One client per device: a client's rank names its device (the attack harness' ranks are clients')."""
    return cfg.data.clients_per_device == 1


def dp_table(cells: list[dict[str, Any]]) -> str:
    lines = ["| setting | partition | attack | seeds | epsilon (delta) | TPR | FPR | worst honest device FPR | "
             "lowest honest device TPR |", "|---|---|---|---|---|---|---|---|---|"]
    for label, partition in dict.fromkeys((c["dp_label"], c["partition"]) for c in cells):
        for attack in dict.fromkeys(c["attack"] for c in cells):
            cs = [c for c in cells if (c["dp_label"], c["partition"], c["attack"]) == (label, partition, attack)]
            if not cs:
                continue
            p = cs[0]["privacy"]
            eps = "-" if p is None else f"{p['epsilon']:.2f} ({p['delta']:g})"

            def mean(key: str) -> str:
                xs = [c[key] for c in cs]
                return f"{sum(xs) / len(xs):.4f} ({min(xs):.4f}-{max(xs):.4f})"

            lines.append(f"| {label} | {partition} | {attack} | {len(cs)} | {eps} | {mean('tpr')} | {mean('fpr')} | "
                         f"{mean('worst_honest_device_fpr')} | {mean('honest_device_tpr_min')} |")
    return "\n".join(lines) + "\n"


def personal_table(cells: list[dict[str, Any]]) -> str:
    lines = ["| algorithm | partition | seeds | shared: worst device FPR | lowest device TPR | personalised: worst device FPR | "
             "lowest device TPR | pooled FPR shared / personalised |", "|---|---|---|---|---|---|---|---|"]
    for partition, algorithm in dict.fromkeys((c["partition"], c["algorithm"]) for c in cells if c.get("personal")):
        cs = [c for c in cells if c["partition"] == partition and c["algorithm"] == algorithm and c.get("personal")]

        def span(xs: list[float]) -> str:
            return f"{sum(xs) / len(xs):.4f} ({min(xs):.4f}-{max(xs):.4f})"

        lines.append(f"| {algorithm} | {partition} | {len(cs)} | {span([c['worst_device_fpr'] for c in cs])} | "
                     f"{span([c['lowest_device_tpr'] for c in cs])} | "
                     f"{span([c['personal']['worst_device_fpr'] for c in cs])} | "
                     f"{span([c['personal']['lowest_device_tpr'] for c in cs])} | "
                     f"{span([c['fpr'] for c in cs])} / {span([c['personal']['fpr'] for c in cs])} |")
    return "\n".join(lines) + "\n"


def summary_table(cells: list[dict[str, Any]], target_loss: float) -> str:
    lines = [f"| algorithm | partition | seeds | TPR | FPR | worst device FPR | ROC-AUC | round to loss <= {target_loss} | MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(c["partition"], c["algorithm"]) for c in cells}, key=lambda k: (k[0], list(ALGORITHMS).index(k[1])))
    for partition, algorithm in keys:
        cs = [c for c in cells if c["partition"] == partition and c["algorithm"] == algorithm]

        def span(key: str, fmt: str = ".4f") -> str:
            xs = [c[key] for c in cs]
            return f"{sum(xs) / len(xs):{fmt}} ({min(xs):{fmt}}-{max(xs):{fmt}})"

        reached = [c["round_to_target_loss"] for c in cs]
        lines.append(f"| {algorithm} | {partition} | {len(cs)} | {span('tpr')} | {span('fpr')} | "
                     f"{span('worst_device_fpr')} | {span('roc_auc')} | "
                     f"{', '.join('never' if r is None else str(r) for r in reached)} | "
                     f"{sum(c['bytes'] for c in cs) / len(cs) / 2**20:.1f} |")
    return "\n".join(lines) + "\n"


def figures(cells: list[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for partition in sorted({c["partition"] for c in cells}):
        cs = [c for c in cells if c["partition"] == partition]
        algs = [a for a in ALGORITHMS if any(c["algorithm"] == a for c in cs)]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
        for i, a in enumerate(algs):
            mine = [c for c in cs if c["algorithm"] == a]
            ax1.scatter([i] * len(mine), [c["fpr"] for c in mine], color="C0", label="pooled FPR" if i == 0 else None)
            ax1.scatter([i + 0.15] * len(mine), [c["worst_device_fpr"] for c in mine], color="C3", marker="x",
                        label="worst device FPR" if i == 0 else None)
            for c in mine:
                ax2.plot(range(1, len(c["mean_losses"]) + 1), c["mean_losses"], color=f"C{i}", alpha=0.7,
                         label=a if c is mine[0] else None)
        ax1.set_xticks(range(len(algs)), algs, rotation=30)
        ax1.set_ylabel("FPR at each device's own threshold")
        ax1.legend()
        ax2.set_yscale("log")
        ax2.set_xlabel("round")
        ax2.set_ylabel("mean client training loss")
        ax2.legend(fontsize=7)
        fig.suptitle(f"partition: {partition}")
        fig.tight_layout()
        path = out / f"algorithms-{partition}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(str(path))
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", nargs="*", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    p.add_argument("--partitions", nargs="+", default=["device", "contiguous2", "dirichlet2"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--target-loss", type=float, default=0.005)
    p.add_argument("--config", default=str(REPO / "config_simulation" / "fedml_config_synthetic.yaml"))
    p.add_argument("--dp-noise", type=float, nargs="*", default=[],
                   help="also: FedAvg with privacy_args.dp at each of these noise multipliers (0 = clipping only), "
                        "beside the robust default without DP, partition --dp-partition: the utility-vs-epsilon curve")
    p.add_argument("--dp-clip", type=float, default=None, help="privacy_args.clip_norm for --dp-noise (default: the config's)")
    p.add_argument("--dp-attack", default=None, help="also each --dp-noise setting with this attack_args.attack by rank 1")
    p.add_argument("--dp-partition", default="device",
                   help="the partition of the --dp-noise runs (e.g. contiguous20: 180 clients, all in every round, "
                        "so the noise on their mean is 20x smaller at the same epsilon)")
    p.add_argument("--server-lr", type=float, default=None,
                   help="train_args.server_lr for the FedOpt algorithms (FedAvgM, FedAdam, FedYogi, FedAdagrad) instead "
                        "of ALGORITHMS' values: a grid over it, one benchmark directory per value")
    p.add_argument("--personalise-epochs", type=int, default=0,
                   help="validation_args.personalise_epochs for every cell: the personalised models measured too")
    p.add_argument("--summarise", type=Path, default=None, metavar="DIR",
                   help="write the tables and figures of an earlier (or interrupted) benchmark's DIR/cells.jsonl")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    if a.summarise is not None:
        cells_read = [json.loads(line) for line in (a.summarise / "cells.jsonl").read_text().splitlines()]
        write_tables([c for c in cells_read if "dp_label" not in c], [c for c in cells_read if "dp_label" in c],
                     a.target_loss, a.summarise)
        print(a.summarise)
        return 0
    for name in a.partitions:
        partition_values(name)
    out = a.out or Path(tempfile.mkdtemp(prefix="algorithms-benchmark-"))
    out.mkdir(parents=True, exist_ok=True)
    cells: list[dict[str, Any]] = []
    done = out / "cells.jsonl"  # each finished cell, so an interrupted benchmark keeps what it measured
    total = len(a.partitions) * len(a.algorithms) * len(a.seeds)
    for partition in a.partitions:
        for algorithm in a.algorithms:
            for seed in a.seeds:
                extra: dict[str, dict[str, Any]] = {"validation_args": {"personalise_epochs": a.personalise_epochs}}
                if a.server_lr is not None and ALGORITHMS[algorithm]["federated_optimizer"] == "FedOpt":
                    extra["train_args"] = {"server_lr": a.server_lr}
                c = run_cell(a.config, algorithm, partition, seed, a.rounds, a.target_loss, out, extra)
                cells.append(c)
                with done.open("a") as f:
                    f.write(json.dumps(c) + "\n")
                print(f"[{len(cells)}/{total}] {partition} {algorithm} seed {seed}: TPR {c['tpr']:.4f} FPR {c['fpr']:.4f} "
                      f"worst device FPR {c['worst_device_fpr']:.4f} ({c['worst_device']}) ({c['seconds']:.0f} s)",
                      flush=True)
    dp_cells: list[dict[str, Any]] = []
    if a.dp_noise:
        settings: list[tuple[str, dict[str, Any]]] = [("robust defaults, no DP", {})]
        for z in a.dp_noise:
            priv = {"dp": True, "noise_multiplier": z, **({"clip_norm": a.dp_clip} if a.dp_clip else {})}
            settings.append((f"DP z={z:g}" + (" (clipping only)" if z == 0 else ""), {"privacy_args": priv}))
        attacks = [None] + ([a.dp_attack] if a.dp_attack else [])
        for label, extra in settings:
            for attack in attacks:
                for seed in a.seeds:
                    more = dict(extra)
                    if attack:
                        more["attack_args"] = {"malicious_ranks": [1], "attack": attack}
                    c = run_cell(a.config, "FedAvg", a.dp_partition, seed, a.rounds, a.target_loss, out, more)
                    c["dp_label"] = label
                    dp_cells.append(c)
                    with done.open("a") as f:
                        f.write(json.dumps(c) + "\n")
                    eps = c["privacy"]["epsilon"] if c["privacy"] else None
                    print(f"[dp] {label} attack {c['attack']} seed {seed}: epsilon {eps} TPR {c['tpr']:.4f} FPR "
                          f"{c['fpr']:.4f} worst honest device FPR {c['worst_honest_device_fpr']:.4f} ({c['seconds']:.0f} s)",
                          flush=True)
    write_json(out / "results.json", {"args": {k: str(v) for k, v in vars(a).items()},
                                      "algorithms": {k: ALGORITHMS[k] for k in a.algorithms}, "cells": cells,
                                      "dp_cells": dp_cells})
    write_tables(cells, dp_cells, a.target_loss, out)
    print(out)
    return 0


def dp_figure(dp_cells: list[dict[str, Any]], out: Path) -> str | None:
    """Utility vs epsilon: per partition (clients per round), TPR and the lowest honest device's TPR of each noise
    setting (mean and range over seeds) against its epsilon (runs without noise, epsilon infinite, are the tables')."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in dp_cells if c["attack"] == "none"]
    if not any(c["privacy"] and c["privacy"]["epsilon"] != float("inf") for c in cells):
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, partition in enumerate(sorted({c["partition"] for c in cells})):
        noisy: dict[float, list[dict[str, Any]]] = {}
        for c in cells:
            if c["partition"] == partition and c["privacy"] and c["privacy"]["epsilon"] != float("inf"):
                noisy.setdefault(c["privacy"]["epsilon"], []).append(c)
        eps = sorted(noisy)
        for key, style, what in (("tpr", "o-", "TPR"), ("honest_device_tpr_min", "s--", "lowest device TPR")):
            ys = [sum(c[key] for c in noisy[e]) / len(noisy[e]) for e in eps]
            lo = [y - min(c[key] for c in noisy[e]) for y, e in zip(ys, eps)]
            hi = [max(c[key] for c in noisy[e]) - y for y, e in zip(ys, eps)]
            ax.errorbar(eps, ys, yerr=[lo, hi], fmt=style, color=f"C{i}", capsize=3,
                        label=f"{partition} ({len(noisy[eps[0]][0]['device_fpr']) * partition_values(partition)['clients_per_device']}"
                              f" clients per round): {what}")
    ax.set_xscale("log")
    delta = next(c["privacy"]["delta"] for c in cells if c["privacy"])
    ax.set_xlabel(f"epsilon at delta {delta:g} after all rounds (log scale)")
    ax.set_ylabel("TPR at each device's own threshold")
    ax.set_ylim(-0.02, 1.05)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "dp-utility-epsilon.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def write_tables(cells: list[dict[str, Any]], dp_cells: list[dict[str, Any]], target_loss: float, out: Path) -> None:
    table = summary_table(cells, target_loss) if cells else ""
    if any(c.get("personal") for c in cells):
        table += "\n" + personal_table(cells)
    if dp_cells:
        table += "\n" + dp_table(dp_cells)
    (out / "table.md").write_text(table)
    print(table)
    for f in figures(cells, out) if cells else []:
        print(f)
    if dp_cells and (path := dp_figure(dp_cells, out)):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
