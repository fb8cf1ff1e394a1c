"""Compare several FedIoT run directories: one table and side-by-side figures.

    python -m compare RUN_DIR [RUN_DIR ...] [--out DIR]
Each run directory may be a simulation, a deployment server run or a baselines run (which
contributes its centralized and local-only results). Writes DIR/compare.md, DIR/compare.png and
DIR/compare_rounds.png (when runs have rounds); the last line of output is DIR.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.metrics import METRIC_KEYS  # noqa: E402
from evaluation.report import Result, _fmt, load_results, save_figure  # noqa: E402
from fediot.console import say  # noqa: E402
from fediot.rundir import create_run_dir, write_atomic  # noqa: E402


def collect(run_dirs: list[Path]) -> list[tuple[str, Result]]:
    rows = []
    for d in run_dirs:
        for r in load_results(d):
            rows.append((f"{d.name} / {r.label}", r))
    return rows


def table(rows: list[tuple[str, Result]]) -> str:
    lines = ["| run / model | data | threshold | devices | " + " | ".join(k.upper().replace("_", "-") for k in METRIC_KEYS) + " |",
             "|---|---|---|---|" + "---|" * len(METRIC_KEYS)]
    for name, r in rows:
        g = r.metrics["global"]
        lines.append(f"| {name} | {r.metrics.get('data', {}).get('source', '?')} | {g.get('threshold_mode', 'global')} | "
                     f"{len(r.metrics['devices'])} | " + " | ".join(_fmt(g.get(k)) for k in METRIC_KEYS) + " |")
    return "\n".join(lines)


def fig_metrics(rows: list[tuple[str, Result]], path: Path) -> None:
    keys = ("tpr", "fpr", "f1", "roc_auc")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4.5))
    for ax, key in zip(axes, keys):
        vals = [r.metrics["global"].get(key) or 0.0 for _, r in rows]
        ax.bar(range(len(rows)), vals, color=plt.cm.tab10(np.arange(len(rows)) % 10))
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([n[-40:] for n, _ in rows], rotation=60, ha="right", fontsize=6)
        ax.set_title(key.upper().replace("_", "-"))
        ax.set_ylabel(key)
        if key == "fpr":
            ax.set_ylim(0, max(0.02, max(vals) * 1.2))
        else:
            ax.set_ylim(min(0.9, min(vals) - 0.02) if vals else 0, 1.0)
    save_figure(fig, path)


def fig_rounds(rows: list[tuple[str, Result]], path: Path) -> bool:
    with_rounds = [(n, r) for n, r in rows if r.rounds]
    if not with_rounds:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in with_rounds:
        ax1.plot([x["round"] for x in r.rounds],
                 [np.mean(list(x["client_losses"].values())) for x in r.rounds], label=name[-40:])
        ev = [x for x in r.rounds if "eval" in x]
        ax2.plot([x["round"] for x in ev], [x["eval"]["global_threshold"]["fpr"] for x in ev], "-o", label=name[-40:])
    ax1.set_yscale("log")
    ax1.set_xlabel("round")
    ax1.set_ylabel("mean client training loss")
    ax2.set_xlabel("round")
    ax2.set_ylabel("FPR (global threshold)")
    ax1.legend(fontsize=6)
    ax2.legend(fontsize=6)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=None, help="output directory (default: runs/<time>-compare-runs)")
    a = p.parse_args(argv)
    try:
        rows = collect(a.run_dirs)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = a.out or create_run_dir("runs", "compare", "runs")
    out.mkdir(parents=True, exist_ok=True)
    md = ["# FedIoT comparison", "", table(rows), ""]
    fig_metrics(rows, out / "compare.png")
    md += ["![TPR, FPR, F1, ROC-AUC per run](compare.png)", ""]
    if fig_rounds(rows, out / "compare_rounds.png"):
        md += ["![loss and FPR per round](compare_rounds.png)", ""]
    write_atomic(out / "compare.md", "\n".join(md) + "\n")
    say(table(rows))
    say(str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
