"""report.md with PNG figures for a run directory (simulation, deployment server or baselines).

    python -m evaluation.report RUN_DIR
Figures (matplotlib, headless): training loss and TPR/FPR per round, ROC curve per device,
per-device TPR/FPR bars for both threshold modes, per-attack TPR heat map (devices x attack files),
and the federated / centralized / local-only table when those results are available.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import yaml  # noqa: E402

from data import nbaiot  # noqa: E402
from evaluation.metrics import METRIC_KEYS  # noqa: E402
from fediot.config import defaults as defaults_of  # noqa: E402
from fediot.rundir import write_atomic  # noqa: E402


def save_figure(fig: plt.Figure, path: Path) -> bool:
    """Lay out, write as PNG and release a figure; True (the figure was written)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


@dataclass
class Result:
    """One model's results inside a run directory."""

    label: str
    metrics: dict[str, Any]
    rounds: list[dict[str, Any]]
    curves: dict[str, Any] | None
    losses: Any = None


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def load_results(run_dir: Path) -> list[Result]:
    """The results a run directory holds: federated (top level) and/or centralized + local."""
    out = []
    m = _json(run_dir / "metrics.json")
    if m is not None:
        out.append(Result(m.get("kind", "federated"), m, _jsonl(run_dir / "rounds.jsonl"), _json(run_dir / "curves.json")))
    for kind in ("centralized", "local"):
        m = _json(run_dir / kind / "metrics.json")
        if m is not None:
            out.append(Result(kind, m, [], _json(run_dir / kind / "curves.json"), m.get("train_losses")))
    comparison = _json(run_dir / "comparison.json") or {}
    fed = comparison.get("federated_run")
    if fed and not any(r.label.startswith("federated") for r in out):
        fm = _json(Path(fed) / "metrics.json")
        if fm is not None:
            out.insert(0, Result(fm.get("kind", "federated"), fm, _jsonl(Path(fed) / "rounds.jsonl"),
                                 _json(Path(fed) / "curves.json")))
    if not out:
        raise FileNotFoundError(f"{run_dir}: no metrics.json (nor centralized/ or local/ results)")
    return out


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


# ------------------------------------------------------------------------------------------ figures
def fig_training(r: Result, path: Path) -> bool:
    """Loss per round (or per epoch for baselines) and TPR/FPR per evaluated round."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if r.rounds:
        rounds = [x["round"] for x in r.rounds]
        per_client: dict[str, list[tuple[int, float]]] = {}
        for x in r.rounds:
            for dev, loss in x.get("client_losses", {}).items():
                per_client.setdefault(dev, []).append((x["round"], loss))
        for dev, pts in per_client.items():
            ax1.plot(*zip(*pts), lw=0.8, alpha=0.6, label=dev)
        mean = [np.mean(list(x["client_losses"].values())) if x.get("client_losses") else np.nan for x in r.rounds]
        ax1.plot(rounds, mean, "k-", lw=2, label="mean")
        ax1.set_xlabel("round")
        ev = [x for x in r.rounds if "eval" in x]
        if ev:
            er = [x["round"] for x in ev]
            for mode, style in (("global_threshold", "-o"), ("device_threshold", "--s")):
                ax2.plot(er, [x["eval"][mode]["tpr"] for x in ev], style, color="tab:green", label=f"TPR ({mode.replace('_', ' ')})")
                ax2.plot(er, [x["eval"][mode]["fpr"] for x in ev], style, color="tab:red", label=f"FPR ({mode.replace('_', ' ')})")
            ax2.set_xlabel("round")
    elif r.losses:
        series = r.losses if isinstance(r.losses, dict) else {r.label: r.losses}
        for dev, losses in series.items():
            ax1.plot(range(1, len(losses) + 1), losses, lw=1, label=dev)
        ax1.set_xlabel("epoch")
        g = r.metrics["global"]
        ax2.bar(["TPR", "FPR"], [g["tpr"] or 0, g["fpr"] or 0], color=["tab:green", "tab:red"])
        ax2.set_xlabel("final evaluation (no rounds in a baseline)")
    else:
        plt.close(fig)
        return False
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_yscale("log")
    ax1.set_ylabel("training loss (MSE)")
    ax1.set_title(f"{r.label}: training loss")
    ax1.legend(fontsize=6, ncol=2)
    ax2.set_ylabel("rate")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_title(f"{r.label}: TPR / FPR")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=7)
    return save_figure(fig, path)


def fig_roc(r: Result, path: Path) -> bool:
    roc = (r.curves or {}).get("roc")
    if not roc:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, c in roc.items():
        if not c:
            continue
        style = {"color": "k", "lw": 2} if name == "all devices" else {"lw": 1}
        for ax in (ax1, ax2):
            ax.plot(c["fpr"], c["tpr"], label=name, **style)
    ax1.plot([0, 1], [0, 1], ":", color="grey")
    ax1.set_title(f"{r.label}: ROC per device")
    ax2.set_xlim(0, 0.05)
    ax2.set_ylim(0.8, 1.005)
    ax2.set_title("zoom: FPR <= 0.05")
    for ax in (ax1, ax2):
        ax.set_xlabel("false positive rate (benign test rows)")
        ax.set_ylabel("true positive rate (attack rows)")
    ax1.legend(fontsize=6)
    return save_figure(fig, path)


def fig_device_bars(r: Result, path: Path) -> bool:
    devs = list(r.metrics["devices"])
    modes = [m for m in ("global", "device") if m in next(iter(r.metrics["devices"].values()))["modes"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(devs))
    width = 0.8 / len(modes)
    for ax, key in zip(axes, ("tpr", "fpr")):
        for i, mode in enumerate(modes):
            vals = [r.metrics["devices"][d]["modes"][mode][key] or 0 for d in devs]
            ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=f"{mode} threshold")
        ax.set_xticks(x)
        ax.set_xticklabels([d.replace("_", " ")[:22] for d in devs], rotation=40, ha="right", fontsize=7)
        ax.set_ylabel(key.upper())
        ax.set_title(f"{r.label}: {key.upper()} per device")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def fig_attack_heatmap(r: Result, path: Path) -> bool:
    devs = list(r.metrics["devices"])
    attacks = list(nbaiot.all_attack_names())
    grid = np.full((len(devs), len(attacks)), np.nan)
    for i, d in enumerate(devs):
        for j, a in enumerate(attacks):
            entry = r.metrics["devices"][d]["attacks"].get(a)
            if entry is not None:
                grid[i, j] = entry["tpr"]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(devs) + 2))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i in range(len(devs)):
        for j in range(len(attacks)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(attacks)))
    ax.set_xticklabels(attacks, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(devs)))
    ax.set_yticklabels(devs, fontsize=8)
    ax.set_xlabel("attack file")
    ax.set_ylabel("device")
    ax.set_title(f"{r.label}: TPR per attack file ({r.metrics['global'].get('threshold_mode', 'global')} threshold; grey = no file)")
    fig.colorbar(im, ax=ax, label="TPR")
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------ report
def comparison_table(results: list[Result]) -> str:
    lines = ["| model | threshold | " + " | ".join(k.upper().replace("_", "-") for k in METRIC_KEYS) + " |",
             "|---|---|" + "---|" * len(METRIC_KEYS)]
    for r in results:
        g = r.metrics["global"]
        lines.append(f"| {r.label} | {g.get('threshold_mode', 'global')} | " + " | ".join(_fmt(g.get(k)) for k in METRIC_KEYS) + " |")
    return "\n".join(lines)


def threshold_lines(run_dir: Path) -> list[str]:
    """The run's threshold rule in the household's terms (from its config.yaml; nothing when there is none)."""
    try:
        v = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("validation_args") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    defaults = defaults_of()["validation_args"]
    v = {**defaults, **v}
    k = f"mean + {v['threshold_k']:g} x std of the validation errors"
    budget = (f"at most {v['false_alerts_per_day']:g} false alert(s) per device per day on its held-out benign "
              f"rows" + (f" (window alerts closer than {v['alert_gap_s']:g} s count as one)" if v["alert_gap_s"] else ""))
    text = {"mean_std": k, "budget": budget,
            "auto": f"{budget} where the rows carry their rate (captured rows); {k} where not (N-BaIoT's)"}
    return [f"Thresholds (`validation_args.threshold_rule: {v['threshold_rule']}`): {text.get(v['threshold_rule'], '?')}.",
            ""]


def write_report(run_dir: str | Path) -> Path:
    """Write run_dir/report.md and run_dir/figures/*.png; returns the report path."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    data = results[0].metrics.get("data", {})
    md = [f"# FedIoT report: {run_dir.name}", ""]
    if data.get("synthetic"):
        md += ["> **SYNTHETIC DATA** — generated by `data/synthetic.py`, not real N-BaIoT traffic.", ""]
    md += [f"Data source: `{data.get('source', '?')}`" + (f" at `{data['path']}`" if data.get("path") else ""), ""]
    if data.get("attacks"):  # your own devices: no recorded attacks, TPR is on simulated ones
        md += [f"> **Attack rows are simulated** — {data['attacks']}.", ""]
    md += threshold_lines(run_dir)
    md += ["## Summary (pooled over devices)", "", comparison_table(results), ""]
    for r in results:
        slug = r.label.replace(" ", "_")
        md += [f"## {r.label}", ""]
        g = r.metrics["global"]
        md += ["| threshold mode | " + " | ".join(k.upper().replace("_", "-") for k in METRIC_KEYS) + " |",
               "|---|" + "---|" * len(METRIC_KEYS)]
        for mode, m in g["modes"].items():
            md.append(f"| {mode} | " + " | ".join(_fmt(m.get(k)) for k in METRIC_KEYS) + " |")
        w = g.get("window") or {}
        if w:
            md += ["", f"Majority vote over {w.get('size')} consecutive rows: TPR {_fmt(w.get('tpr'))}, FPR {_fmt(w.get('fpr'))}."]
        md += ["", "| device | TPR | FPR | F1 | ROC-AUC | own threshold | TPR (own threshold) | FPR (own threshold) | "
                   "missing attack files |", "|---|---|---|---|---|---|---|---|---|"]
        for d, e in r.metrics["devices"].items():
            dm = e["modes"].get("device", e)
            own = (e.get("thresholds") or {}).get(d)
            md.append(f"| {d} | {_fmt(e['tpr'])} | {_fmt(e['fpr'])} | {_fmt(e['f1'])} | {_fmt(e.get('roc_auc'))} | "
                      f"{_fmt(own)} | {_fmt(dm['tpr'])} | {_fmt(dm['fpr'])} | "
                      f"{', '.join(e.get('missing_attacks', [])) or '-'} |")
        md.append("")
        for name, maker, caption in (
            ("training", fig_training, "Training loss and TPR/FPR"),
            ("roc", fig_roc, "ROC curve per device"),
            ("devices", fig_device_bars, "TPR and FPR per device, both threshold modes"),
            ("attacks", fig_attack_heatmap, "TPR per attack file"),
        ):
            path = fig_dir / f"{slug}_{name}.png"
            if maker(r, path):
                md += [f"![{caption}](figures/{path.name})", ""]
    report = run_dir / "report.md"
    write_atomic(report, "\n".join(md) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m evaluation.report RUN_DIR", file=sys.stderr)
        return 2
    try:
        print(write_report(args[0]))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
