"""Every federated algorithm over the wire: the 3-board loopback deployment (real processes) per algorithm, its
metrics against the same config run in process.

    .venv/bin/python bench/algorithms_deployment.py [--algorithms FedAvg FedProx ...] [--rounds 3] [--out DIR]

Per algorithm (the settings of bench/algorithms_benchmark.py's ALGORITHMS): `bash run_server.sh` and three
`bash run_client.sh N` on 127.0.0.1 (gRPC + mutual TLS, tests/deploy_helpers.deploy_config: the golden deployment
config, 3 synthetic boards), then the same config in this process (`federation.inprocess`, the grid the deployment's
tests are checked against). Reports per algorithm: exit codes, the rounds rounds.jsonl recorded and the algorithm it
names, the boards' training records (FedProx: the server's mu in each), and whether metrics.json equals the in-process run's (every key; integers exactly, other numbers to 1e-9 relative, as
the goldens). Writes results.json and table.md in the study directory and prints the directory last.
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

import yaml  # noqa: E402

from bench.algorithms_benchmark import ALGORITHMS  # noqa: E402
from fediot.rundir import write_json  # noqa: E402
from tests.deploy_helpers import client, deploy_config, read_rounds, run_dir_of, server  # noqa: E402
from tests.rounds import assert_same_metrics, metrics_of, run  # noqa: E402


def deployed(tmp: Path, train_args: dict[str, Any], rounds: int) -> tuple[dict[str, Any], Path, list[Path], float]:
    """One loopback deployment; (exit codes, the server's run directory, the boards' run directories, seconds)."""
    cfg = deploy_config(tmp, train_args={**train_args, "comm_round": rounds},
                        validation_args={"frequency_of_the_test": rounds})
    started = time.monotonic()
    srv = server(cfg)
    boards = [client(n, cfg) for n in (1, 2, 3)]
    try:
        codes = {"server": srv.finish(600), **{f"board{n}": b.finish(120) for n, b in enumerate(boards, 1)}}
    finally:
        for p in (srv, *boards):
            p.kill()
    if codes["server"] != 0:
        raise RuntimeError(f"server exited {codes['server']}: {srv.stderr[-2000:]}")
    return codes, run_dir_of(srv), [run_dir_of(b) for b in boards], time.monotonic() - started


def one(name: str, rounds: int, root: Path) -> dict[str, Any]:
    tmp = root / name
    codes, run_dir, board_dirs, seconds = deployed(tmp / "wire", ALGORITHMS[name], rounds)
    recorded = read_rounds(run_dir)
    values = yaml.safe_load((run_dir / "config.yaml").read_text())
    values["common_args"]["run_dir_root"] = str(tmp / "inprocess")
    _, _, local_dir = run(values)
    try:
        assert_same_metrics(metrics_of(run_dir), metrics_of(local_dir))
        same = "equal"
    except AssertionError as e:
        same = f"differs: {str(e)[:300]}"
    trained = [json.loads(x) for d in board_dirs for f in d.glob("*.jsonl") if f.name != "rounds.jsonl"
               for x in f.read_text().splitlines()]
    t = values["train_args"]
    return {"codes": codes, "seconds": round(seconds, 1), "rounds": [r["round"] for r in recorded],
            "algorithm": sorted({r.get("algorithm", "FedAvg") for r in recorded}),
            "server_optimizer": t["server_optimizer"] if t["federated_optimizer"] == "FedOpt" else None,
            "board_trainings": len(trained), "boards_prox_mu": sorted({x.get("prox_mu", 0.0) for x in trained}),
            "metrics_vs_inprocess": same,
            "tpr": metrics_of(run_dir)["global"]["tpr"], "fpr": metrics_of(run_dir)["global"]["fpr"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    out = a.out or REPO / "runs" / f"algorithms-deployment-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.algorithms:
            print(f"{name} ...", flush=True)
            results[name] = one(name, a.rounds, Path(tmp))
            print(f"  {results[name]}", flush=True)
            write_json(out / "results.json", results)
    lines = ["| algorithm | exit codes (server, boards) | rounds | rounds.jsonl algorithm | board trainings, their mu | "
             "TPR | FPR | metrics vs in-process | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {', '.join(str(c) for c in r['codes'].values())} | {r['rounds']} | "
                     f"{'/'.join(r['algorithm'])}{' ' + r['server_optimizer'] if r['server_optimizer'] else ''} | "
                     f"{r['board_trainings']}, {r['boards_prox_mu']} | {r['tpr']:.4f} | {r['fpr']:.4f} | "
                     f"{r['metrics_vs_inprocess']} | {r['seconds']} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(out)


if __name__ == "__main__":
    main()
