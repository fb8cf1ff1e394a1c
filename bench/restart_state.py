"""A board restarted in the middle of its device's week: false window alerts with and without `detect --state`.

    .venv/bin/python bench/restart_state.py [--model RUN_DIR/detector/model.npz] [--points 6] [--gap-s 300]

For each real week-long capture (../shared/data/real-iot-pcaps/) and the household federation's model of its device
(bench/household.py's run: each device's first 80 % of time captured and federated; default: the newest
runs/*-bench-household), `detect.run_detection` watches the device (by IP) for an hour starting at each of --points
moments spread over the held-out last 20 % of time, three ways:
- continuous: the board watched from the capture's start (the hour's alerts counted);
- restarted afresh: the board starts at the hour (a fresh extractor: every stream new, the fan-out warm-up again);
- restarted with its state: the board watched until --gap-s before the hour, stopped (its state written), and
  started again at the hour with that state (detect --state).
The held-out time holds no attack: every window alert is a false one. Writes results.json and table.md to a run
directory and prints it last.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import detect  # noqa: E402
from fediot.config import validate  # noqa: E402
from fediot.rundir import create_run_dir, finish_table, write_json  # noqa: E402
from model.lean import LeanDetector  # noqa: E402
from traffic.packets import PacketBatch, SkipCounts, read_capture  # noqa: E402
# the household bench's devices and held-out split: this bench watches the held-out time of the model it made
from household import DEVICES, TRAIN_SHARE  # noqa: E402

HOUR_S = 3600.0


def between(batches: list[PacketBatch], t0: float, t1: float) -> Iterator[tuple[PacketBatch, SkipCounts]]:
    """The capture's packets with t0 <= time < t1, in its own batches (as detect reads a pcap)."""
    for b in batches:
        t = np.asarray(b.time)
        idx = np.flatnonzero((t >= t0) & (t < t1))
        if len(idx):
            yield b.subset(idx), SkipCounts()


def window_alerts(det: LeanDetector, batches: list[PacketBatch], name: str, ip: str, t0: float, t1: float,
                  count_from: float, work: Path, state: Path | None = None) -> int:
    """Window alerts at packet times >= count_from of a board watching `name` from t0 to t1."""
    cfg = validate({})
    out = work / "alerts.jsonl"
    with out.open("w") as sink:
        detect.run_detection(det, between(batches, t0, t1), None, cfg.validation.vote_window, sink,
                             [detect.parse_watch(f"{name}={ip}")], cfg.detect, state_path=state)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    return sum(1 for x in lines if x["window_alert"] and x["time"] >= count_from)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pcaps", type=Path, default=REPO.parent / "shared" / "data" / "real-iot-pcaps")
    p.add_argument("--model", type=Path, help="the household federation's detector/model.npz (default: the newest "
                                              "runs/*-bench-household)")
    p.add_argument("--points", type=int, default=6)
    p.add_argument("--gap-s", type=float, default=300.0, help="how long the board was down before each restart")
    a = p.parse_args(argv)
    model = a.model
    if model is None:
        found = sorted(REPO.glob("runs/*-bench-household/seed*/runs/*-server-local/detector/model.npz"))
        if not found:
            raise SystemExit("no runs/*-bench-household model: run bench/household.py first, or give --model")
        model = found[-1]
    det = LeanDetector.load(model)
    cfg = validate({})
    out = create_run_dir(REPO / "runs", "bench", "restart_state")
    results = []
    for name, (pcap_name, ip) in DEVICES.items():
        batches = [b for b, _ in read_capture(a.pcaps / pcap_name, batch_size=cfg.detect.batch_packets)]
        first, last = batches[0].time[0], batches[-1].time[-1]
        held_from = first + TRAIN_SHARE * (last - first)
        points = np.linspace(held_from, last - HOUR_S, a.points)
        for k, start in enumerate(points):
            end = start + HOUR_S
            with tempfile.TemporaryDirectory() as tmp_s:
                work, state = Path(tmp_s), Path(tmp_s) / "state.npz"
                r = {"device": name, "point": k, "hour_from_held_out_start_h": round((start - held_from) / 3600, 2),
                     "continuous": window_alerts(det, batches, name, ip, first, end, start, work),
                     "afresh": window_alerts(det, batches, name, ip, start, end, start, work)}
                window_alerts(det, batches, name, ip, first, start - a.gap_s, np.inf, work, state)
                r["with_state"] = window_alerts(det, batches, name, ip, start, end, start, work, state)
            results.append(r)
            print(r, file=sys.stderr, flush=True)
    write_json(out / "results.json", {"model": str(model), "gap_s": a.gap_s, "results": results})
    lines = [f"model {model}; each restart after {a.gap_s:g} s down; false window alerts in the hour after it", "",
             "| device | hour (h into held-out time) | continuous | restarted afresh | restarted with its state |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['hour_from_held_out_start_h']} | {r['continuous']} | {r['afresh']} | "
              f"{r['with_state']} |" for r in results]
    for name in DEVICES:
        mine = [r for r in results if r["device"] == name]
        lines.append(f"| {name} | all {len(mine)} hours | {sum(r['continuous'] for r in mine)} | "
                     f"{sum(r['afresh'] for r in mine)} | {sum(r['with_state'] for r in mine)} |")
    return finish_table(out, lines)


if __name__ == "__main__":
    sys.exit(main())
