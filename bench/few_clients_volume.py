"""Few clients at the dataset's volume (issue 22, case 6): do the robust defaults cost anything with no attacker?

    .venv/bin/python bench/few_clients_volume.py [--devices Danmini_Doorbell Ecobee_Thermostat
        Philips_B120N10_Baby_Monitor] [--benign-rows 175000] [--rounds 10] [--seeds 0] [--robust on off] [--out DIR]

Three clients (one per device), each with N-BaIoT's real benign volume (synthetic rows, `--benign-rows` per device:
~105,000 training rows per client; the issue's case had the Philips monitor's 175,240), trained `--rounds` rounds
with the synthetic config's other settings, once with `train_args.robust: true` (the default) and once with `false`,
in process (`federation.inprocess`: the driver, state and clients of `sh run_simulation.sh`). Per run: every
client's training loss per round, each device's FPR/TPR at the threshold it detects with (its own), pooled FPR/TPR,
ROC-AUC, what the defenses did (aggregation rule used, updates screened out). Then robust on minus off per seed:
pooled FPR and TPR, each device's FPR, and each device's final training loss ratio. Criteria (issue 22): FPR within
+0.005, TPR within -0.005, every device's training loss comparable to its robust-off loss. Writes results.json and
table.md in the study directory, prints the directory last. One 10-round run takes ~20-40 min on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fediot.config import load, validate  # noqa: E402
from fediot.rundir import create_run_dir, write_config, write_json  # noqa: E402

CASE_DEVICES = ["Danmini_Doorbell", "Ecobee_Thermostat", "Philips_B120N10_Baby_Monitor"]
CRITERIA = {"fpr_rise": 0.005, "tpr_drop": 0.005}


def run_cell(devices: list[str], benign_rows: int, rounds: int, seed: int, robust: bool, out: Path) -> dict[str, Any]:
    """One in-process run; its per-round losses, per-device rates at own thresholds and what the defenses did."""
    from data.sources import prepare_data
    from federation.inprocess import run_in_process

    values = load(str(REPO / "config_simulation" / "fedml_config_synthetic.yaml")).values
    values["common_args"].update(random_seed=seed, run_dir_root=str(out / "runs"))
    values["data_args"].update(devices=devices, synthetic_benign_rows=benign_rows,
                               data_cache_dir=str(out / "data"), clients_per_device=1)
    values["train_args"].update(client_num_in_total=len(devices), client_num_per_round=len(devices),
                                comm_round=rounds, robust=robust)
    values["validation_args"]["frequency_of_the_test"] = rounds
    cfg = validate(values)
    data_root, data_info = prepare_data(cfg)
    run_dir = create_run_dir(cfg.common.run_dir_root, "simulation", cfg.data.dataset)
    write_config(run_dir, cfg)
    said: list[str] = []

    def console(line: str) -> None:
        said.append(line)
        print(f"    {line}", flush=True)

    started = time.monotonic()
    run_in_process(cfg, run_dir, data_root, data_info, "federated", console=console)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    records = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    per_device = {d: {k: e["modes"]["device"][k] for k in ("tpr", "fpr", "roc_auc", "tp", "fn", "fp", "tn")}
                  | {"threshold": e["modes"]["device"]["thresholds"]} for d, e in metrics["devices"].items()}
    g = metrics["global"]["modes"]["device"]
    return {"run_dir": str(run_dir), "seconds": round(time.monotonic() - started, 1),
            "losses": [{"round": r["round"], **r.get("client_losses", {})} for r in records if "round" in r],
            "devices": per_device, "pooled": {"tpr": g["tpr"], "fpr": g["fpr"], "roc_auc": g["roc_auc"]},
            "screened_out": sum(len(r.get("screened_out", {})) for r in records),
            "notices": [line for line in said if not line.startswith(("round ", "evaluation after"))][:20]}


def compare(on: dict[str, Any], off: dict[str, Any]) -> dict[str, Any]:
    """Robust on minus off: pooled and per-device rates, each client's last-round loss ratio (on / off)."""
    last_on, last_off = on["losses"][-1], off["losses"][-1]
    return {"pooled_fpr_rise": on["pooled"]["fpr"] - off["pooled"]["fpr"],
            "pooled_tpr_drop": off["pooled"]["tpr"] - on["pooled"]["tpr"],
            "device_fpr_rise": {d: on["devices"][d]["fpr"] - off["devices"][d]["fpr"] for d in on["devices"]},
            "device_tpr_drop": {d: off["devices"][d]["tpr"] - on["devices"][d]["tpr"] for d in on["devices"]},
            "last_loss_ratio": {c: last_on[c] / last_off[c] for c in last_on if c != "round" and last_off.get(c)}}


def table(results: dict[str, Any]) -> str:
    lines = ["| seed | robust | seconds | device | FPR (own threshold) | TPR | ROC-AUC | training loss round 1 -> last |",
             "|---|---|---|---|---|---|---|---|"]
    for key, r in sorted(results.items()):
        if key.startswith("compare"):
            continue
        for d, e in r["devices"].items():
            client = next((c for c in r["losses"][0] if c.startswith(d)), None)
            loss = f"{r['losses'][0][client]:.5f} -> {r['losses'][-1][client]:.5f}" if client else "n/a"
            lines.append(f"| {key.split('|')[0]} | {key.split('|')[1]} | {r['seconds']:.0f} | {d} | {e['fpr']:.4f} | "
                         f"{e['tpr']:.4f} | {e['roc_auc']:.4f} | {loss} |")
    lines += ["", "| seed | pooled FPR on - off | pooled TPR off - on | largest device FPR rise | last-loss ratio on/off "
              "per client | criteria (FPR +0.005, TPR -0.005) |", "|---|---|---|---|---|---|"]
    for key, c in sorted(results.items()):
        if not key.startswith("compare"):
            continue
        worst = max(c["device_fpr_rise"], key=c["device_fpr_rise"].get)
        ok = c["pooled_fpr_rise"] <= CRITERIA["fpr_rise"] and c["pooled_tpr_drop"] <= CRITERIA["tpr_drop"]
        ratios = ", ".join(f"{k}: {v:.3f}" for k, v in c["last_loss_ratio"].items())
        lines.append(f"| {key.split('|')[1]} | {c['pooled_fpr_rise']:+.4f} | {c['pooled_tpr_drop']:+.4f} | "
                     f"{c['device_fpr_rise'][worst]:+.4f} ({worst}) | {ratios} | {'met' if ok else 'MISSED'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", nargs="+", default=CASE_DEVICES)
    p.add_argument("--benign-rows", type=int, default=175000)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--robust", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    out = (a.out or REPO / "runs" / f"few-clients-volume-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    for seed in a.seeds:
        for robust in a.robust:
            key = f"seed{seed}|robust-{robust}"
            if key not in results:
                print(f"{key}: {len(a.devices)} clients x {a.benign_rows} benign rows, {a.rounds} rounds ...", flush=True)
                results[key] = run_cell(a.devices, a.benign_rows, a.rounds, seed, robust == "on", out)
                write_json(results_path, results)
        on, off = results.get(f"seed{seed}|robust-on"), results.get(f"seed{seed}|robust-off")
        if on and off:
            results[f"compare|seed{seed}"] = compare(on, off)
            write_json(results_path, results)
    (out / "table.md").write_text(table(results))
    print(table(results))
    print(out)


if __name__ == "__main__":
    main()
