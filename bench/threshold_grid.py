"""Which threshold should each device detect with? Threshold rules side by side on a grid of runs, no attacker.

    .venv/bin/python bench/threshold_grid.py [--rounds 5 10 20] [--seeds 0 1 2] [--per-device 1 2]
        [--robust on off] [--out DIR] [--set SECTION.KEY=VALUE ...]

One in-process run (`federation.inprocess`, the driver and clients of `sh run_simulation.sh`) per seed x clients per
device x robust on/off, of config_simulation/fedml_config_synthetic.yaml with `comm_round` = the longest run length
and an evaluation after each run length asked for. Every client trains every round, so the model after round r
(model_average_rounds 1, the lr schedule indexed by round) is the model a run of r rounds evaluates and saves: one
run gives every run length. At each of those evaluations the clients' per-row errors (validation, benign test,
attack files: what their count reports are computed from) are kept, and every rule below is applied to them:

* `server`: the global threshold the server set in that run (robust rules as configured), for every device;
* `client_k<K>`: each client its own validation errors' mean + K x std;
* `device_k<K>`: each device the mean + K x std of its clients' validation errors merged (one client per device:
  the same as `client_k<K>`);
* `global_pooled`: one threshold for every device, mean + k x std of every client's validation errors pooled (what
  `robust: false` sets);
* `global_upper_x<M>`: one threshold for every device, M x the (f + 1)-th highest device threshold (f =
  train_args.byzantine_clients, k = validation_args.threshold_k): an alternative to the server's rule that was
  measured and not taken (doc/benchmarks.md "Thresholds": a margin that frees the no-attack FPR lets one liar's
  inflated statistics blind the global threshold).

Per rule: every device's FPR (benign test rows) and TPR (attack rows), the worst device, and the robust on/off gap.
Writes results.json and table.md in the study directory and prints the directory last.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data.sources import prepare_data  # noqa: E402
from attacks.clients import make_client  # noqa: E402
from federation.client import ClientLoader  # noqa: E402
from federation.driver import quorum, run_federation  # noqa: E402
from federation.inprocess import InProcessGrid  # noqa: E402
from federation.outputs import RunOutputs  # noqa: E402
from federation.state import RoundState  # noqa: E402
from fediot.config import device_of_client, load, validate  # noqa: E402
from fediot.rundir import create_run_dir, write_json  # noqa: E402
from model.detector import ErrorStats, thresholds_of  # noqa: E402

K_GRID = (3.0, 4.0, 5.0)
MARGINS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


class CapturingState(RoundState):
    """The round state of a run, keeping every client's per-row errors at the evaluations asked for."""

    def __init__(self, *args: Any, grid_clients: dict[str, Any], at: set[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grid_clients, self.at = grid_clients, at
        self.captured: dict[int, dict[str, Any]] = {}

    def finish_eval(self, reports: dict[str, dict[str, Any]]) -> str:
        line = super().finish_eval(reports)
        if self.round in self.at:
            self.captured[self.round] = {
                "server": (dict(self.evaluator.thresholds["device"])
                           | {"__global__": self.evaluator.thresholds["global"]}),
                "scores": {c: self.grid_clients[c].scores for c in self.grid_clients},
            }
        return line


def rates(scores: Any, threshold: float) -> dict[str, float]:
    attacks = np.concatenate(list(scores.attacks.values())) if scores.attacks else np.zeros(0)
    return {"fpr": float(np.mean(scores.test > threshold)), "tpr": float(np.mean(attacks > threshold)),
            "threshold": float(threshold)}


def upper_order_statistic(own: dict[str, float], liars: int) -> float:
    """The (liars + 1)-th highest device threshold (at most (n - 1) // 2 left out): with at most `liars` lying devices
    an honest device's own threshold lies at or above it and one at or below it."""
    order = sorted(own.values(), reverse=True)
    return order[min(liars, (len(order) - 1) // 2)]


def rule_thresholds(captured: dict[str, Any], k: float, liars: int) -> dict[str, dict[str, float]]:
    """client -> threshold, per rule."""
    scores = captured["scores"]
    stats = {c: ErrorStats.of(s.validation) for c, s in scores.items()}
    by_device: dict[str, list[ErrorStats]] = {}
    for c, st in stats.items():
        by_device.setdefault(device_of_client(c), []).append(st)
    merged = {d: ErrorStats.merge(parts) for d, parts in by_device.items()}
    rules: dict[str, dict[str, float]] = {"server": {c: captured["server"]["__global__"] for c in scores}}
    for k in K_GRID:
        rules[f"client_k{k:g}"] = {c: st.threshold(k) for c, st in stats.items()}
        rules[f"device_k{k:g}"] = {c: merged[device_of_client(c)].threshold(k) for c in stats}
    rules["global_pooled"] = dict.fromkeys(stats, thresholds_of(stats, k)[0])
    own = {d: st.threshold(k) for d, st in merged.items()}
    for m in MARGINS:
        rules[f"global_upper_x{m:g}"] = dict.fromkeys(stats, m * upper_order_statistic(own, liars))
    return rules


def run_cell(seed: int, per_device: int, robust: bool, rounds: list[int], root: Path,
             overrides: dict[tuple[str, str], Any]) -> dict[str, Any]:
    values = load(str(REPO / "config_simulation" / "fedml_config_synthetic.yaml")).values
    for (section, key), value in overrides.items():
        values[section][key] = value
    values["common_args"].update(random_seed=seed, run_dir_root=str(root / "runs"))
    values["data_args"]["clients_per_device"] = per_device
    values["train_args"].update(client_num_in_total=None, client_num_per_round=9 * per_device, comm_round=max(rounds),
                                robust=robust)
    values["validation_args"]["frequency_of_the_test"] = int(np.gcd.reduce(rounds))
    cfg = validate(values)
    data_root, data_info = prepare_data(cfg)
    run_dir = create_run_dir(cfg.common.run_dir_root, "simulation", cfg.data.dataset)
    loader = ClientLoader(cfg, data_root, run_dir, make_client=make_client)
    grid = InProcessGrid({c: loader(c) for c in cfg.clients}, int(cfg.comm.max_message_mb * 2**20))
    state = CapturingState(cfg, data_info, "federated", grid_clients=grid.clients, at=set(rounds))
    run_federation(state, grid, RunOutputs(run_dir, False, checkpoint=False, console=lambda line: None), quorum(cfg))
    out: dict[str, Any] = {}
    for r in rounds:
        cap = state.captured[r]
        out[str(r)] = {rule: device_rates(cap["scores"], thresholds) for rule, thresholds in
                       rule_thresholds(cap, cfg.validation.threshold_k, cfg.train.byzantine_clients).items()}
    return out


def device_rates(scores: dict[str, Any], thresholds: dict[str, float]) -> dict[str, dict[str, float]]:
    """device -> FPR (benign test rows) and TPR (attack rows) of its clients' rows pooled, each client's rows at its
    threshold, and the benign/attack row counts."""
    acc: dict[str, list[int]] = {}
    for c, s in scores.items():
        t = thresholds[c]
        attacks = np.concatenate(list(s.attacks.values())) if s.attacks else np.zeros(0)
        a = acc.setdefault(device_of_client(c), [0, 0, 0, 0])
        a[0] += int((s.test > t).sum())
        a[1] += len(s.test)
        a[2] += int((attacks > t).sum())
        a[3] += len(attacks)
    return {d: {"fpr": a[0] / max(a[1], 1), "tpr": a[2] / max(a[3], 1), "benign": a[1], "attack": a[3]}
            for d, a in acc.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-device", type=int, nargs="+", default=[1, 2])
    p.add_argument("--robust", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--set", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                   help="config values for the robust-on runs (YAML values), e.g. train_args.aggregation=trimmed_mean")
    a = p.parse_args()
    overrides = {tuple(k.split(".", 1)): yaml.safe_load(v) for k, v in (x.split("=", 1) for x in a.set)}
    out = a.out or REPO / "runs" / f"threshold-grid-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    cells = [(s, d, r) for d in a.per_device for s in a.seeds for r in a.robust]
    for i, (seed, per_device, robust) in enumerate(cells, 1):
        key = f"seed{seed}|{per_device}perdevice|robust-{robust}"
        if key in results:
            continue
        started = time.monotonic()
        print(f"[{i}/{len(cells)}] {key} ...", flush=True)
        results[key] = run_cell(seed, per_device, robust == "on", a.rounds, out, overrides if robust == "on" else {})
        print(f"  {time.monotonic() - started:.0f}s", flush=True)
        write_json(results_path, results)
    (out / "table.md").write_text(table(results))
    print(table(results))
    print(out)


def pooled(per_device: dict[str, dict[str, float]]) -> tuple[float, float]:
    """(FPR, TPR) over every device's rows."""
    fp = sum(v["fpr"] * v["benign"] for v in per_device.values())
    tp = sum(v["tpr"] * v["attack"] for v in per_device.values())
    return fp / sum(v["benign"] for v in per_device.values()), tp / sum(v["attack"] for v in per_device.values())


def table(results: dict[str, Any]) -> str:
    """Per rule and robust setting: the worst device FPR over the grid, the mean pooled FPR, the lowest device TPR;
    then per rule, robust on minus off in the same cell (seed, clients, rounds): pooled FPR and TPR, and the largest
    rise of one device's FPR."""
    lines = ["| rule | robust | worst device FPR (cell) | mean pooled FPR | lowest device TPR |", "|---|---|---|---|---|"]
    by: dict[tuple[str, str], list[tuple[float, float, float, str]]] = {}
    for key, cell in results.items():
        robust = key.split("robust-")[1]
        for r, per_rule in cell.items():
            for rule, per_device in per_rule.items():
                worst = max(per_device, key=lambda d: per_device[d]["fpr"])
                by.setdefault((rule, robust), []).append((per_device[worst]["fpr"], pooled(per_device)[0],
                                                          min(v["tpr"] for v in per_device.values()),
                                                          f"{key.split('|robust')[0]} r{r} {worst}"))
    for (rule, robust), rows in sorted(by.items()):
        worst = max(rows, key=lambda x: x[0])
        lines.append(f"| {rule} | {robust} | {worst[0]:.4f} ({worst[3]}) | {np.mean([x[1] for x in rows]):.4f} | "
                     f"{min(x[2] for x in rows):.4f} |")
    lines += ["", "| rule | max pooled FPR on - off | min pooled TPR on - off | max device FPR rise on - off (cell) |",
              "|---|---|---|---|"]
    gaps: dict[str, list[tuple[float, float, float, str]]] = {}
    for key, cell in results.items():
        if not key.endswith("robust-on") or key.replace("robust-on", "robust-off") not in results:
            continue
        off = results[key.replace("robust-on", "robust-off")]
        for r, per_rule in cell.items():
            for rule, on_dev in per_rule.items():
                if rule not in off[r]:  # a rule added after the robust-off runs were made
                    continue
                off_dev = off[r][rule]
                (f_on, t_on), (f_off, t_off) = pooled(on_dev), pooled(off_dev)
                rise = max(on_dev, key=lambda d: on_dev[d]["fpr"] - off_dev[d]["fpr"])
                gaps.setdefault(rule, []).append((f_on - f_off, t_on - t_off,
                                                  on_dev[rise]["fpr"] - off_dev[rise]["fpr"],
                                                  f"{key.split('|robust')[0]} r{r} {rise}"))
    for rule, rows in sorted(gaps.items()):
        worst = max(rows, key=lambda x: x[2])
        lines.append(f"| {rule} | {max(x[0] for x in rows):+.4f} | {min(x[1] for x in rows):+.4f} | "
                     f"{worst[2]:+.4f} ({worst[3]}) |")
    return "\n".join(lines) + "\n" + global_table(results)


def global_table(results: dict[str, Any]) -> str:
    """Each global rule of the robust-on runs against the global threshold `robust: false` sets (`global_pooled` of the
    robust-off run of the same seed, clients and length): global FPR and TPR gaps (every device's rows at the one
    threshold) and the largest rise of one device's FPR."""
    lines = ["", "| global rule (robust on) vs global_pooled (robust off) | max global FPR on - off | "
             "min global TPR on - off | max device FPR rise (cell) | mean global FPR on / off |", "|---|---|---|---|---|"]
    rows: dict[str, list[tuple[float, float, float, str, float, float]]] = {}
    for key, cell in results.items():
        off_key = key.replace("robust-on", "robust-off")
        if not key.endswith("robust-on") or off_key not in results:
            continue
        for r, per_rule in cell.items():
            off_dev = results[off_key][r]["global_pooled"]
            f_off, t_off = pooled(off_dev)
            for rule, on_dev in per_rule.items():
                if not (rule.startswith("global_") or rule == "server"):
                    continue
                f_on, t_on = pooled(on_dev)
                rise = max(on_dev, key=lambda d: on_dev[d]["fpr"] - off_dev[d]["fpr"])
                rows.setdefault(rule, []).append((f_on - f_off, t_on - t_off, on_dev[rise]["fpr"] - off_dev[rise]["fpr"],
                                                  f"{key.split('|robust')[0]} r{r} {rise}", f_on, f_off))
    for rule, rs in sorted(rows.items()):
        worst = max(rs, key=lambda x: x[2])
        lines.append(f"| {rule} | {max(x[0] for x in rs):+.4f} | {min(x[1] for x in rs):+.4f} | {worst[2]:+.4f} "
                     f"({worst[3]}) | {np.mean([x[4] for x in rs]):.4f} / {np.mean([x[5] for x in rs]):.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
