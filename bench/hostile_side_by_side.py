"""Honest rounds with and without each hostile board, side by side in one run (issue 34).

    .venv/bin/python bench/hostile_side_by_side.py [--rounds 60] [--epochs 5] [--rows 2000] [--repeats 1] [--out DIR]

Each variant is one loopback deployment of `bench/bench_flood.py` (3 boards, mutual TLS, synthetic rows), the same
rounds, epochs and rows, run one after another on this machine, in an order that repeats (none first and last):
- none: no hostile board;
- lan_bombs: board 3's certificate sends 40 decoding bombs at the limits from 4 threads while the run trains;
- board_flood: board 1's own runtime sends 3 bombs after each honest answer (attack_args flood);
- overflow: boards 2 and 3 send overflowing feature / validation statistics (refused; the run goes on with 1 and 3).
Per variant: the median and the largest wall time of the rounds after round 2 (the honest boards' rounds), their
ratio to `none`'s, the server's peak RSS over the run and its growth from idle, refusals counted, whether the run
finished. Not here: slow uploads (a board that holds gRPC's call slots stops the run today: doc/security.md).
Writes results.json and table.md to the run directory and prints it last.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fediot.rundir import create_run_dir, write_json  # noqa: E402

VARIANTS = {"none": ["--messages", "0"], "lan_bombs": ["--messages", "40", "--threads", "4"],
            "board_flood": ["--messages", "0", "--board-flood", "3"], "overflow": ["--messages", "0", "--overflow"]}


def run_variant(name: str, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    where = out / name
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_flood.py"), *VARIANTS[name], "--rounds",
                           str(a.rounds), "--epochs", str(a.epochs), "--rows", str(a.rows), "--out", str(where)],
                          capture_output=True, text=True, timeout=3600, cwd=REPO)
    text = proc.stdout
    if "{" not in text:
        return {"variant": name, "error": (proc.stderr or text)[-500:]}
    r = json.loads(text[text.index("{"):text.rindex("}") + 1])
    walls = r["round_wall_time_s"][2:]
    return {"variant": name, "finished": r["run_finished"], "rounds": len(r["rounds"]),
            "round_median_s": statistics.median(walls) if walls else None, "round_max_s": max(walls) if walls else None,
            "rss_idle_mb": r["server_rss_idle_mb"], "rss_peak_mb": r["server_rss_peak_mb"],
            "rss_growth_mb": round(r["server_rss_peak_mb"] - r["server_rss_idle_mb"], 1),
            "rejected": r["rejected_total"], "clients_per_round": sorted(set(r["clients_per_round"]))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # bench_flood's defaults: rounds long enough (~0.3 s) that the run outlasts a flood of 40 bombs (with 20 rounds of
    # 1 epoch on 600 rows, 0.04 s each, the run ended before the bombs did and none reached a round's record)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=1, help="times the variants' sequence runs")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    out = a.out or create_run_dir(REPO / "runs", "bench", "hostile")
    out.mkdir(parents=True, exist_ok=True)
    order = [*VARIANTS] * a.repeats + ["none"]
    results = []
    for i, name in enumerate(order):
        print(f"{i + 1}/{len(order)}: {name}", file=sys.stderr, flush=True)
        results.append(run_variant(name, a, out / f"{i:02d}"))
        write_json(out / "results.json", results)
    base = [r["round_median_s"] for r in results if r["variant"] == "none" and r.get("round_median_s")]
    ref = statistics.median(base) if base else None
    lines = ["| variant | finished | boards per round | round median s (x none) | round max s | server RSS peak MB "
             "(growth) | refused |", "|---" * 7 + "|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | error: {r['error'][:80]} | | | | | |")
            continue
        x = f" ({r['round_median_s'] / ref:.2f}x)" if ref and r["round_median_s"] else ""
        lines.append(f"| {r['variant']} | {r['finished']} | {r['clients_per_round']} | {r['round_median_s']:.3f}{x} | "
                     f"{r['round_max_s']:.3f} | {r['rss_peak_mb']:.0f} (+{r['rss_growth_mb']:.0f}) | {r['rejected']} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
