"""Honest rounds with and without each hostile board, side by side in one run (issue 34).

    .venv/bin/python bench/hostile_side_by_side.py [--rounds 60] [--epochs 5] [--rows 2000] [--repeats 1] [--out DIR]

Each variant is one loopback deployment of `bench/bench_flood.py` (3 boards, mutual TLS, synthetic rows), the same
rounds, epochs and rows, run one after another on this machine, in an order that repeats (none first and last):
- none: no hostile board (3 boards train);
- absent: board 3 does not run (2 boards train): the baseline of the next three, whose attacker holds board 3's
  certificate (a stolen or compromised board's identity);
- lan_bombs: that certificate sends 40 decoding bombs at the limits from 4 threads once round 2 is done;
- slow_upload: that certificate keeps 3 calls open sending 8 MB at ~2 KB/s, reopened when they end, for the whole
  run (issue 34 reproduction 1: this stopped the run);
- valid_flood: that certificate sends, from 4 threads (one connection each) for the whole run, well-formed valid
  UPDATEs of the right model for a round long past (the strongest flood no quarantine counts: the server reads only
  what it asked for, the rest is refused unread);
- connection_flood: the same, a new TLS connection for each message (each a handshake the server pays before any
  of our code runs);
- board_flood: board 1's own runtime sends 3 bombs after each honest answer (attack_args flood);
- overflow: boards 2 and 3 send overflowing feature / validation statistics.
Per variant: the median and the largest wall time of the rounds after round 2 (the honest boards' rounds), their
ratio to the median of their baseline's (the run with as many boards training: absent for 2, none for 3), the server's peak RSS over the run and its growth from idle, refusals
counted, boards quarantined, whether the run finished. Writes results.json and table.md to the run directory and
prints it last.
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

VARIANTS = {"none": ["--messages", "0"], "absent": ["--messages", "0", "--absent"],
            "lan_bombs": ["--messages", "40", "--threads", "4", "--absent"],
            "slow_upload": ["--messages", "0", "--slow-upload", "3", "--absent"],
            "valid_flood": ["--messages", "0", "--valid-flood", "4", "--absent"],
            "connection_flood": ["--messages", "0", "--valid-flood", "4", "--new-connections", "--absent"],
            "board_flood": ["--messages", "0", "--board-flood", "3"], "overflow": ["--messages", "0", "--overflow"],
            # without the connection-level front (comm_args.front: false), beside the front's
            "none_no_front": ["--messages", "0", "--no-front"],
            "valid_flood_no_front": ["--messages", "0", "--valid-flood", "4", "--absent", "--no-front"],
            "connection_flood_no_front": ["--messages", "0", "--valid-flood", "4", "--new-connections", "--absent",
                                          "--no-front"]}
# each variant against the run with the same boards training: 2 (board 3 absent, or quarantined / refused), or 3
BASELINE = {"lan_bombs": "absent", "slow_upload": "absent", "valid_flood": "absent", "connection_flood": "absent",
            "board_flood": "absent", "overflow": "absent", "valid_flood_no_front": "absent",
            "connection_flood_no_front": "absent", "none_no_front": "none"}  # none: none


def run_variant(name: str, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    where = out / name
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_flood.py"), *VARIANTS[name], "--rounds",
                           str(a.rounds), "--epochs", str(a.epochs), "--rows", str(a.rows), "--out", str(where),
                           *(["--pin"] if a.pin else [])],
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
            "rejected": r["rejected_total"], "clients_per_round": sorted(set(r["clients_per_round"])),
            "quarantined": r["quarantined"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # bench_flood's defaults: rounds long enough (~0.3 s) that the run outlasts a flood of 40 bombs (with 20 rounds of
    # 1 epoch on 600 rows, 0.04 s each, the run ended before the bombs did and none reached a round's record)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=1, help="times the variants' sequence runs")
    p.add_argument("--pin", action="store_true", help="bench_flood --pin: the federation on CPU 0, the attacker on CPU 1")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                   help="run only these (with none first and last; absent when one needs it)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    out = a.out or create_run_dir(REPO / "runs", "bench", "hostile")
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(VARIANTS) if a.variants is None else \
        ["none", *(["absent"] if any(BASELINE.get(v) == "absent" for v in a.variants) else []),
         *[v for v in a.variants if v not in ("none", "absent")]]
    order = chosen * a.repeats + ["none"]
    results = []
    for i, name in enumerate(order):
        print(f"{i + 1}/{len(order)}: {name}", file=sys.stderr, flush=True)
        results.append(run_variant(name, a, out / f"{i:02d}"))
        write_json(out / "results.json", results)
    def median_of(variant: str) -> float | None:
        base = [r["round_median_s"] for r in results if r["variant"] == variant and r.get("round_median_s")]
        return statistics.median(base) if base else None

    lines = ["| variant | finished | boards per round | quarantined | round median s (x baseline) | round max s | "
             "server RSS peak MB (growth) | refused |", "|---" * 8 + "|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | error: {r['error'][:80]} | | | | | | |")
            continue
        baseline = BASELINE.get(r["variant"], "none")
        ref = median_of(baseline)
        x = f" ({r['round_median_s'] / ref:.2f}x {baseline})" if ref and r["round_median_s"] else ""
        lines.append(f"| {r['variant']} | {r['finished']} | {r['clients_per_round']} | {r['quarantined'] or ''} | "
                     f"{r['round_median_s']:.3f}{x} | {r['round_max_s']:.3f} | {r['rss_peak_mb']:.0f} "
                     f"(+{r['rss_growth_mb']:.0f}) | {r['rejected']} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
