"""What the status server costs: during a run, and idle.

    .venv/bin/python bench/bench_status.py [--repeats 2] [--idle-seconds 60]

Run cost: README's 9-client synthetic run (config_simulation/fedml_config_synthetic.yaml, in process, one torch
thread), each run in a fresh process, alternately without and with the status server, which a poller reads as an
open page does (/api/status every status_args.refresh_s) and as Prometheus does (/metrics every 15 s). Per run: CPU
seconds of the process, wall seconds, peak RSS (VmHWM); the medians side by side and their ratios.

Idle cost: a process holding a status server (and a store with a finished run's records) that nobody reads, and one
without it, each asleep for --idle-seconds: CPU seconds / wall seconds = cores used (goal <= 0.01 core).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCRAPE_EVERY_S = 15.0  # Prometheus' default scrape interval


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def one_run(with_status: bool) -> dict:
    import torch

    torch.set_num_threads(1)
    from data.sources import prepare_data
    from federation.inprocess import run_in_process
    from fediot.config import load
    from fediot.rundir import create_run_dir, peak_rss_mb
    from monitor.http import StatusServer
    from monitor.metrics import run_metrics
    from monitor.page import render_page
    from monitor.status import StatusStore

    values = load(REPO / "config_simulation" / "fedml_config_synthetic.yaml").values
    values["common_args"]["run_dir_root"] = tempfile.mkdtemp(prefix="bench-status-")
    from fediot.config import validate

    cfg = validate(values)
    data_root, data_info = prepare_data(cfg)
    run_dir = create_run_dir(cfg.common.run_dir_root, "simulation", cfg.data.dataset)
    store = server = None
    polls = {"page": 0, "metrics": 0}
    stop = threading.Event()
    if with_status:
        store = StatusStore({"kind": "federated", "run_dir": str(run_dir), "rounds": cfg.train.comm_round,
                             "clients": {1: list(cfg.clients)}, "config": cfg.values}, cfg.status.keep_rounds)
        server = StatusServer("127.0.0.1", 0, None, store.snapshot, run_metrics(store.snapshot),
                              lambda s: render_page(s, cfg.status.refresh_s), run_dir, store.page_request).start()

        def poll() -> None:
            next_scrape = 0.0
            while not stop.wait(cfg.status.refresh_s):
                urllib.request.urlopen(server.url + "api/status", timeout=10).read()
                polls["page"] += 1
                if time.monotonic() >= next_scrape:
                    urllib.request.urlopen(server.url + "metrics", timeout=10).read()
                    polls["metrics"] += 1
                    next_scrape = time.monotonic() + SCRAPE_EVERY_S

        threading.Thread(target=poll, daemon=True).start()
    c0, t0 = cpu_s(), time.monotonic()
    run_in_process(cfg, run_dir, data_root, data_info, status=store)
    wall, cpu = time.monotonic() - t0, cpu_s() - c0
    stop.set()
    if server is not None:
        server.stop()
    return {"with_status": with_status, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1), "polls": polls}


def idle(with_status: bool, seconds: float) -> dict:
    from monitor.http import StatusServer
    from monitor.metrics import run_metrics
    from monitor.page import render_page
    from monitor.status import StatusStore

    if with_status:
        store = StatusStore({"kind": "federated", "run_dir": tempfile.mkdtemp(), "rounds": 20,
                             "clients": {r: [f"board{r}"] for r in range(1, 10)}, "config": {}}, 1000)
        for r in range(1, 21):
            store.round_record({"round": r, "client_losses": {f"board{k}": 0.01 for k in range(9)}, "wall_time_s": 1.0,
                                "clients": [f"board{k}" for k in range(9)], "dropped": []})
        server = StatusServer("127.0.0.1", 0, None, store.snapshot, run_metrics(store.snapshot),
                              lambda s: render_page(s, 2.0), None, store.page_request).start()
    c0, t0 = cpu_s(), time.monotonic()
    time.sleep(seconds)
    cores = (cpu_s() - c0) / (time.monotonic() - t0)
    if with_status:
        server.stop()
    return {"with_status": with_status, "cores": round(cores, 5)}


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--one", choices=["with", "without"], help=argparse.SUPPRESS)
    p.add_argument("--idle", choices=["with", "without"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one_run(a.one == "with")))
        return
    if a.idle:
        print(json.dumps(idle(a.idle == "with", a.idle_seconds)))
        return
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for i in range(a.repeats):
        for with_status in ((False, True) if i % 2 == 0 else (True, False)):  # alternate: drift hits both alike
            r = child(["--one", "with" if with_status else "without"])
            runs[with_status].append(r)
            print(json.dumps(r), flush=True)
    med = {w: {k: statistics.median(r[k] for r in rs) for k in ("cpu_s", "wall_s", "peak_rss_mb")}
           for w, rs in runs.items()}
    print(f"run, median of {a.repeats}: without {med[False]}  with {med[True]}")
    print("ratios with/without: " + ", ".join(f"{k} {med[True][k] / med[False][k]:.3f}" for k in med[False]))
    idle_runs = [child(["--idle", w, "--idle-seconds", str(a.idle_seconds)]) for w in ("without", "with")]
    print(f"idle for {a.idle_seconds:g}s: without {idle_runs[0]['cores']:.5f} cores, "
          f"with the status server {idle_runs[1]['cores']:.5f} cores")


if __name__ == "__main__":
    main()
