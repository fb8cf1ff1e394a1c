"""Deployment footprint on 127.0.0.1: idle CPU of a waiting server/client, RSS, round time, bytes.

    .venv/bin/python bench/bench_deployment.py [--idle-seconds 10] [--rounds 10]
Goals: an idle server or client waiting for messages uses <= 0.05 of a core; a client's peak RSS
<= RSS of what a node imports (torch and FedML's comm classes: trainer.fedml_glue.fedml_comm_only) + 100 MB. Run it with
another venv's python to measure that venv (e.g. CPU-only torch, as boards get; the launchers use sys.executable).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.deploy_helpers import client, deploy_config, server  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def python_pid(launcher_pid: int) -> int:
    """run_*.sh exec's python, so the launcher pid is the python pid."""
    return launcher_pid


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def idle_cores(pid: int, seconds: float) -> float:
    a, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - a) / (time.monotonic() - t0)


def import_rss_mb() -> float:
    code = ("import resource, torch; from trainer.fedml_glue import fedml_comm_only; fedml_comm_only(); "
            "import fedml.core.distributed.fedml_comm_manager; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=10)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fediot-deploy-bench-"))

    # 1. idle: server waiting for 2 clients, one of them connected and waiting for the first round
    cfg = deploy_config(tmp / "idle", n_clients=2, comm_args={"retry_interval_s": 2.0, "wait_for_clients_s": 3600})
    srv = server(cfg)
    c1 = client(1, cfg)
    try:
        srv.wait_for("waiting for clients: 1/2 connected")
        time.sleep(2)
        srv_idle = idle_cores(srv.p.pid, a.idle_seconds)
        cl_idle = idle_cores(c1.p.pid, a.idle_seconds)
    finally:
        srv.kill()
        c1.kill()

    # 2. a real run: 3 clients, default-sized synthetic data (1,800 training rows each, 5 epochs/round)
    cfg = deploy_config(tmp / "run", train_args={"comm_round": a.rounds, "epochs": 5},
                        data_args={"synthetic_benign_rows": 3000, "synthetic_attack_rows": 600, "attack_test_rows": 600},
                        validation_args={"frequency_of_the_test": a.rounds})
    srv = server(cfg)
    clients = [client(n, cfg) for n in (1, 2, 3)]
    for proc in (srv, *clients):
        if proc.finish(600) != 0:
            sys.exit(f"a deployment process failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    run_dir = Path(srv.lines[-1])
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    resources = {}
    for proc in clients:
        cdir = Path(proc.lines[-1])
        r = json.loads(next((cdir / "resources").glob("rank*.json")).read_text())
        resources[r["rank"]] = r
    srv_res = json.loads((run_dir / "resources" / "rank0.json").read_text())
    base = import_rss_mb()

    print(f"idle (over {a.idle_seconds:.0f}s): server {srv_idle:.3f} cores, connected client {cl_idle:.3f} cores "
          f"(goal <= 0.05; FedML's own gRPC loop: ~0.8)")
    print("| process | peak RSS (MB) | bytes sent | bytes received |\n|---|---|---|---|")
    print(f"| server | {srv_res['peak_rss_mb']:.0f} | {srv_res['bytes_sent']:,} | {srv_res['bytes_received']:,} |")
    for rank, r in sorted(resources.items()):
        print(f"| client {rank} | {r['peak_rss_mb']:.0f} | {r['bytes_sent']:,} | {r['bytes_received']:,} |")
    import torch

    print(f"torch {torch.__version__} and FedML's comm classes alone: {base:.0f} MB -> client goal <= {base + 100:.0f} MB")
    per_client = {d: statistics.median(r["client_train_seconds"][d] for r in rounds) for d in rounds[0]["client_train_seconds"]}
    print("median training time per round per client (s): "
          + ", ".join(f"{d} {s:.2f}" for d, s in per_client.items()))
    print(f"median round wall time: {statistics.median(r['wall_time_s'] for r in rounds):.2f}s; "
          f"median bytes per round: sent {statistics.median(r['bytes_sent'] for r in rounds):,.0f}, "
          f"received {statistics.median(r['bytes_received'] for r in rounds):,.0f} (server side, 3 clients)")


if __name__ == "__main__":
    main()
