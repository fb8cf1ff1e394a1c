"""The LAN test's pipeline without the LAN (issue 23): does a short capture of an emulated device teach its board
enough that the board does not raise false alarms on the same device's later traffic?

    .venv/bin/python bench/lan_capture_study.py [--behaviour-every 8 2] [--seeds 0 1 2 3 4] [--capture-s 40]
        [--live-from 90 --live-to 125] [--out DIR]

Per behaviour cap S (`tools/lan.py replay --behaviour-every S`, traffic.simulator.DeviceKind.every_behaviour_within)
and seed offset: the LAN test's three cameras (tests/test_lan.py's kinds and names, simulator seeds offset+0..2)
are simulated for the whole test; seconds [3, 3 + capture-s) of each device's traffic are what its board captures
(`python -m capture --pcap`, the test's simulated attacks), the three boards train federated in process with the
test's training settings (`federation.inprocess`: the driver and clients of a deployment), and `python -m detect
--pcap` scores seconds [live-from, live-to) of each device's traffic with the final model and the device's own
threshold, from a fresh extractor as the test's detect starts (the test's boards start watching ~90 s into their
devices' traffic). Per device: the federation's held-out benign FPR and the share of its later packets that raise
window alerts (the test's bound: 0.01). No namespaces, no real time: the same frames at their simulated times, so
the result depends on the capture's coverage of the device's behaviour and not on the machine's load.
Writes results.json and table.md in the study directory and prints the directory last.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fediot.config import validate  # noqa: E402
from fediot.rundir import create_run_dir, write_config, write_json  # noqa: E402
from traffic.simulator import EPOCH, TrafficSimulator, write_pcap  # noqa: E402

KINDS = ["Provision_PT_838_Security_Camera", "SimpleHome_XCS7_1002_WHT_Security_Camera", "Samsung_SNH_1011_N_Webcam"]
DEVICES = ["porch-cam", "garage-cam", "nursery-cam"]
CAPTURE_FROM_S = 3.0  # the test's boards start capturing ~3 s into their devices' traffic


def device_frames(k: int, seed: int, behaviour_every: float | None, seconds: float) -> list[tuple[float, bytes]]:
    sim = TrafficSimulator(KINDS[k], seed + k, ip=f"10.231.0.{101 + k}", mac=bytes.fromhex(f"02000ae701{k + 1:02x}"),
                           gateway_mac=bytes.fromhex(f"02000ae702{k + 1:02x}"))
    if behaviour_every is not None:
        sim.kind = sim.kind.every_behaviour_within(behaviour_every)
    return [(t - EPOCH, f) for t, f in sim.capture(seconds, start=EPOCH)]  # seconds into the device's traffic


def run(cmd: list[str]) -> str:
    proc = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def cell(seed: int, behaviour_every: float | None, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    from data.sources import prepare_data
    from federation.inprocess import run_in_process

    work = out / f"S{behaviour_every}-r{a.rounds}-e{a.epochs}-seed{seed}"
    local = work / "local"
    frames = [device_frames(k, seed, behaviour_every, a.live_to + 1) for k in range(3)]
    for k, f in enumerate(frames):
        cap = write_pcap(work / f"capture{k + 1}.pcap",
                         [(EPOCH + t, p) for t, p in f if CAPTURE_FROM_S <= t < CAPTURE_FROM_S + a.capture_s])
        run(["-m", "capture", "--pcap", str(cap), "--device", f"{DEVICES[k]}=10.231.0.{101 + k}", "--out", str(local),
             "--simulate-attacks", "mirai_syn,mirai_scan,gafgyt_udp", "--attack-seconds", "10", "--seed", str(seed)])
    values = {"common_args": {"training_type": "simulation", "random_seed": seed, "run_dir_root": str(work / "runs")},
              "data_args": {"dataset": "local", "devices": DEVICES, "local_data_dir": str(local), "attack_test_rows": 500},
              "train_args": {"comm_round": a.rounds, "epochs": a.epochs},
              "validation_args": {"frequency_of_the_test": 1}}
    cfg = validate(values)
    data_root, data_info = prepare_data(cfg)
    run_dir = create_run_dir(cfg.common.run_dir_root, "simulation", cfg.data.dataset)
    write_config(run_dir, cfg)
    run_in_process(cfg, run_dir, data_root, data_info, "federated", console=lambda line: None)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    row: dict[str, Any] = {"seed": seed, "behaviour_every": behaviour_every, "rounds": a.rounds, "epochs": a.epochs,
                           "devices": {}}
    for k, f in enumerate(frames):
        live = write_pcap(work / f"live{k + 1}.pcap", [(EPOCH + t, p) for t, p in f if a.live_from <= t < a.live_to])
        alerts = work / f"alerts{k + 1}.jsonl"
        summary = json.loads(run(["-m", "detect", str(run_dir), "--pcap", str(live), "--watch",
                                  f"{DEVICES[k]}=10.231.0.{101 + k}", "--out", str(alerts)]).strip().splitlines()[-1])
        d = summary["devices"][DEVICES[k]]
        m = metrics["devices"][DEVICES[k]]
        row["devices"][DEVICES[k]] = {
            "held_out_fpr": m["fpr"], "held_out_window_fpr": m["window"]["fpr"], "threshold": m["thresholds"][DEVICES[k]],
            "live_packets": d["packets"], "live_window_alerts": d["window_alerts"],
            "live_window_alert_rate": d["window_alerts"] / max(1, d["packets"])}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--behaviour-every", type=float, nargs="+", default=[8.0, 2.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--capture-s", type=float, default=40.0)
    p.add_argument("--live-from", type=float, default=90.0)
    p.add_argument("--live-to", type=float, default=125.0)
    p.add_argument("--rounds", type=int, default=3, help="train_args.comm_round (the LAN test's: 3)")
    p.add_argument("--epochs", type=int, default=5, help="train_args.epochs (the LAN test's: 5)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="lan-capture-study-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in a.behaviour_every:
        for seed in a.seeds:
            started = time.monotonic()
            rows.append(cell(seed, s, a, out))
            worst = max(v["live_window_alert_rate"] for v in rows[-1]["devices"].values())
            print(f"S={s} seed={seed}: worst live window-alert rate {worst:.4f} "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
    write_json(out / "results.json", {"args": {k: v for k, v in vars(a).items() if k != "out"}, "cells": rows})
    lines = ["| behaviour every (s) | seed | device | threshold | held-out FPR | live packets | live window alerts | rate |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for d, v in r["devices"].items():
            lines.append(f"| {r['behaviour_every']} | {r['seed']} | {d} | {v['threshold']:.3g} | {v['held_out_fpr']:.4f} | "
                         f"{v['live_packets']} | {v['live_window_alerts']} | {v['live_window_alert_rate']:.4f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
